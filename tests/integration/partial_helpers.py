"""A raw IMAP client for FETCH comparisons, and a BODYSTRUCTURE reader.

Used by tests/integration/test_fts_lmdb_partial.py and bench/partial.py
to compare, byte for byte, what stock Dovecot and Dovecot with fts_lmdb
answer to BINARY[...]<o.n>, BINARY.SIZE[...], BODY[...]<o.n> and friends.

imaplib is not used: it doesn't read literal8 (~{n}) the way these
comparisons need, hides the raw bytes of a response, and adds its own
overhead to timings. RawImap sends one command at a time and returns
every untagged response whole (literals included, as sent on the wire)
plus the tagged status line without the tag and with Dovecot's timing
note ("(0.001 + 0.000 secs)") replaced by a fixed text, since it differs
from run to run.

No pytest dependency: the bench uses this module too.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from typing import Optional, Union

DEFAULT_PASSWORD = "secret"

# "{123}\r\n" or "~{123}\r\n" (and the LITERAL+ forms) at the end of a line
_LITERAL_RE = re.compile(rb"~?\{(\d+)\+?\}\r\n\Z")
# Dovecot 2.3 appends "(0.001 + 0.000 + 0.001 secs)." to tagged replies
_TIMING_RE = re.compile(rb" \(\d+\.\d+(?: \+ \d+\.\d+)* secs\)")
# ... and "[2026-01-01 12:00:00]" to internal-error texts (tagged NO, BYE)
_STAMP_RE = re.compile(rb" \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]")
_STATUS_RESP_RE = re.compile(rb"\* (?:OK|NO|BAD|BYE|PREAUTH)\b")


def mask(status_line: bytes) -> bytes:
    """A status response with its run-dependent parts (timing, time
    stamp) replaced by fixed text."""
    return _STAMP_RE.sub(b" [stamp]", _TIMING_RE.sub(b" (timing)", status_line))


class ImapConnectionLost(ConnectionError):
    pass


DISCONNECTED = b"<connection closed by the server>"


@dataclass
class Reply:
    untagged: list[bytes]    # every untagged response, literals included
    status: bytes            # tagged reply without the tag, timing masked
    seconds: float           # from sending the command to the tagged reply

    @property
    def ok(self) -> bool:
        return self.status.startswith(b"OK")

    def wire(self) -> bytes:
        """What is compared between two servers: every byte of the
        untagged responses (status responses such as "* BYE ... [time]"
        with their time stamps masked) and the tagged reply."""
        parts = [mask(u) if _STATUS_RESP_RE.match(u) else u
                 for u in self.untagged]
        return b"".join(parts) + b"<tag> " + self.status

    def fetch_data(self) -> list[bytes]:
        """The untagged FETCH responses only."""
        return [u for u in self.untagged if re.match(rb"\* \d+ FETCH ", u)]


class RawImap:
    """One IMAP session: connect, LOGIN, optionally SELECT/EXAMINE."""

    def __init__(self, port: int, user: str, password: str = DEFAULT_PASSWORD,
                 mailbox: Optional[str] = "INBOX", readonly: bool = True,
                 timeout: float = 120, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb", buffering=1 << 16)
        self.counter = 0
        self.alive = True
        self.partial = b""
        self.greeting = self.reader.readline()
        if not self.greeting.startswith(b"* OK"):
            raise ImapConnectionLost(f"bad greeting {self.greeting!r}")
        self.must(f'LOGIN "{user}" "{password}"')
        self.select_reply: Optional[Reply] = None
        if mailbox is not None:
            self.select(mailbox, readonly)

    # ------------------------------------------------------------ protocol

    def _next_tag(self) -> bytes:
        self.counter += 1
        return b"p%d" % self.counter

    def _read_response(self) -> bytes:
        """One whole response: a line, plus any literals and the lines
        that follow them. What was read before the server closed the
        connection is left in self.partial."""
        parts = []
        while True:
            line = self.reader.readline()
            parts.append(line)
            if not line.endswith(b"\n"):
                self.partial = b"".join(parts)
                raise ImapConnectionLost("server closed the connection")
            m = _LITERAL_RE.search(line)
            if not m:
                return b"".join(parts)
            size = int(m.group(1))
            data = self.reader.read(size)
            parts.append(data)
            if len(data) != size:
                self.partial = b"".join(parts)
                raise ImapConnectionLost(
                    f"connection closed inside a {size}-byte literal")

    def command(self, cmd: Union[str, bytes]) -> Reply:
        """Send one command and read up to its tagged reply. If the server
        closes the connection first (Dovecot does when a message turns
        out unreadable in the middle of a literal), the reply's status is
        DISCONNECTED and its last untagged entry holds the bytes that came
        before the close; the client is then unusable (self.alive)."""
        if isinstance(cmd, str):
            cmd = cmd.encode()
        if not self.alive:
            raise ImapConnectionLost("connection already closed")
        tag = self._next_tag()
        prefix = tag + b" "
        start = time.perf_counter()
        self.sock.sendall(prefix + cmd + b"\r\n")
        untagged = []
        while True:
            try:
                resp = self._read_response()
            except (ImapConnectionLost, ConnectionResetError):
                self.alive = False
                untagged.append(self.partial)
                return Reply(untagged, DISCONNECTED,
                             time.perf_counter() - start)
            if resp.startswith(prefix):
                elapsed = time.perf_counter() - start
                status = mask(resp[len(prefix):])
                return Reply(untagged, status, elapsed)
            if resp.startswith(b"+"):
                raise RuntimeError(f"unexpected continuation for {cmd!r}")
            untagged.append(resp)

    def must(self, cmd: Union[str, bytes]) -> Reply:
        r = self.command(cmd)
        if not r.ok:
            raise RuntimeError(f"{cmd!r} failed: {r.status!r}")
        return r

    def append(self, mailbox: str, raw: bytes) -> Reply:
        """APPEND with a non-synchronizing literal (LITERAL+); literal8
        (BINARY) when the message holds NUL bytes."""
        lit = b"~{%d+}" if b"\0" in raw else b"{%d+}"
        return self.must(f'APPEND "{mailbox}" '.encode() + lit % len(raw) +
                         b"\r\n" + raw)

    def select(self, mailbox: str, readonly: bool = True) -> Reply:
        self.select_reply = self.must(
            f'{"EXAMINE" if readonly else "SELECT"} "{mailbox}"')
        return self.select_reply

    def logout(self) -> None:
        try:
            if self.alive:
                self.command("LOGOUT")
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()

    def __enter__(self) -> "RawImap":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.logout()
        else:
            self.close()


def one_shot(port: int, user: str, cmd: str, mailbox: str = "INBOX",
             readonly: bool = True) -> Reply:
    """A fresh connection for one command: connect, login, select, command,
    logout."""
    with RawImap(port, user, mailbox=mailbox, readonly=readonly) as c:
        return c.command(cmd)


# ------------------------------------------------------------ parsing

_ATOM_RE = re.compile(rb'[^\s()"{~\[\]]+')


class _Parser:
    """IMAP data (parenthesized lists, NIL, numbers, quoted strings,
    literals and literal8) into Python lists, bytes, ints and None."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _skip_space(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos:self.pos + 1] in b" \r\n":
            self.pos += 1

    def value(self):
        self._skip_space()
        d = self.data
        c = d[self.pos:self.pos + 1]
        if c == b"(":
            self.pos += 1
            out = []
            while True:
                self._skip_space()
                if d[self.pos:self.pos + 1] == b")":
                    self.pos += 1
                    return out
                out.append(self.value())
        if c == b'"':
            end = self.pos + 1
            buf = bytearray()
            while d[end:end + 1] != b'"':
                if d[end:end + 1] == b"\\":
                    end += 1
                buf += d[end:end + 1]
                end += 1
            self.pos = end + 1
            return bytes(buf)
        if c in (b"{", b"~"):
            m = re.compile(rb"~?\{(\d+)\+?\}\r\n").match(d, self.pos)
            if not m:
                raise ValueError(f"bad literal at {self.pos}: {d[self.pos:self.pos + 20]!r}")
            start = m.end()
            self.pos = start + int(m.group(1))
            return d[start:self.pos]
        m = _ATOM_RE.match(d, self.pos)
        if not m:
            raise ValueError(f"can't parse at {self.pos}: {d[self.pos:self.pos + 40]!r}")
        self.pos = m.end()
        atom = m.group(0)
        # section specs: BODY[1.2]<0> stays one token
        while self.pos < len(d) and d[self.pos:self.pos + 1] == b"[":
            end = d.index(b"]", self.pos)
            atom += d[self.pos:end + 1]
            self.pos = end + 1
            m = _ATOM_RE.match(d, self.pos)
            if m:
                atom += m.group(0)
                self.pos = m.end()
        if atom.upper() == b"NIL":
            return None
        if atom.isdigit():
            return int(atom)
        return atom


def parse_fetch(response: bytes) -> dict:
    """b'* 3 FETCH (UID 3 BINARY[1] {4}\\r\\nabcd)\\r\\n' ->
    {b'UID': 3, b'BINARY[1]': b'abcd'} (item names upper-cased)."""
    m = re.match(rb"\* \d+ FETCH ", response)
    if not m:
        raise ValueError(f"not a FETCH response: {response[:60]!r}")
    items = _Parser(response[m.end():]).value()
    return {items[i].upper(): items[i + 1] for i in range(0, len(items), 2)}


@dataclass
class Section:
    section: str          # "1", "2.1.3", ...
    kind: str             # "leaf" or "multipart"
    ctype: str            # "text/plain", "multipart/mixed", ...
    cte: str              # Content-Transfer-Encoding as the server reports it
    rfc822: bool = False  # a message/rfc822 part (has .HEADER and .TEXT)


def _leading_lists(bs: list) -> list:
    """A multipart's children: the lists before its subtype string."""
    out = []
    for x in bs:
        if not isinstance(x, list):
            break
        out.append(x)
    return out


def sections(bodystructure) -> list[Section]:
    """Every part section of a message, from its parsed BODYSTRUCTURE,
    in IMAP numbering (RFC 3501 6.4.5)."""
    out: list[Section] = []

    def lower(v) -> str:
        return v.decode(errors="replace").lower() if isinstance(v, bytes) else str(v)

    def walk(bs, sec: str) -> None:
        if isinstance(bs[0], list):        # multipart: children, then subtype
            children = _leading_lists(bs)
            subtype = lower(bs[len(children)]) if len(bs) > len(children) else "?"
            if sec:
                out.append(Section(sec, "multipart", "multipart/" + subtype, ""))
            for i, child in enumerate(children, 1):
                walk(child, f"{sec}.{i}" if sec else str(i))
            return
        ctype = f"{lower(bs[0])}/{lower(bs[1])}"
        me = sec or "1"
        rfc822 = ctype == "message/rfc822" and len(bs) > 8 and isinstance(bs[8], list)
        out.append(Section(me, "leaf", ctype, lower(bs[5]) if bs[5] else "",
                           rfc822))
        if rfc822:
            inner = bs[8]
            if isinstance(inner[0], list):
                children = _leading_lists(inner)
                for i, child in enumerate(children, 1):
                    walk(child, f"{me}.{i}")
            else:
                walk(inner, f"{me}.1")

    walk(bodystructure, "")
    return out


def message_sections(client: RawImap, seq: int) -> list[Section]:
    """The part sections of message `seq`, as the server sees them."""
    r = client.must(f"FETCH {seq} BODYSTRUCTURE")
    for u in r.fetch_data():
        items = parse_fetch(u)
        if b"BODYSTRUCTURE" in items:
            return sections(items[b"BODYSTRUCTURE"])
    raise RuntimeError(f"no BODYSTRUCTURE for message {seq}: {r.untagged!r}")


def fetched_value(reply: Reply, item_prefix: bytes) -> Optional[bytes]:
    """The data of the first FETCH item whose name starts with
    `item_prefix` (e.g. b"BINARY[2]"), or None."""
    for u in reply.fetch_data():
        for name, value in parse_fetch(u).items():
            if name.startswith(item_prefix.upper()):
                return value
    return None


def describe_difference(cmd: str, stock: Reply, other: Reply,
                        other_name: str = "fts_lmdb") -> str:
    """One readable paragraph: the command, both statuses, where the
    responses start to differ and a little of each from there."""
    a, b = stock.wire(), other.wire()
    at = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]),
              min(len(a), len(b)))
    return (f"{cmd}: stock {stock.status.strip()[:70]!r} ({len(a)} bytes), "
            f"{other_name} {other.status.strip()[:70]!r} ({len(b)} bytes); "
            f"first difference at byte {at}: stock "
            f"{a[max(0, at - 20):at + 40]!r} vs {other_name} "
            f"{b[max(0, at - 20):at + 40]!r}")
