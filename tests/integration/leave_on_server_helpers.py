"""Shared helpers for the leave_on_server integration tests.

One Dovecot instance per test module, started with every account the
module's tests need (each test has its own account, so tests don't see
each other's mail or devices). Policies and other settings come from
plugin { } or, per account, from userdb fields.

A device is a login alias: logging in as "<account>-<device>" opens the
account's mailbox with the userdb field pop3_device=<device>; logging in
as "<account>" itself is the device "default".

The helpers observe what the server really did: what a POP3 client got
(poplib, raw sockets, fetchmail, getmail), the mailbox as doveadm and
IMAP see it, the device state the plugin stored (the mail_attribute_dict
file), and the log. Expiry and quota cleanup run after the client is
disconnected, so every session helper waits until the session's pop3
process has exited (service_count = 1: one process per session) before
anything is checked.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

import pytest

from access_rules_helpers import RawConn, wait_pid_gone
from dovecot_instance import BUILD_DIR as PLUGIN_BUILD_DIR, DovecotInstance

# LEAVE_ON_SERVER_BUILD_DIR lets the suite run against another build of the
# plugin and tool (default: <repo>/build, what `make` produces).
BUILD_DIR = Path(os.environ.get("LEAVE_ON_SERVER_BUILD_DIR", PLUGIN_BUILD_DIR))
TOOL = BUILD_DIR / "leave-on-server"
PLUGIN = BUILD_DIR / "lib20_leave_on_server_plugin.so"
PASSWORD = "secret"

INTERNAL_ERROR = ("-ERR [SYS/TEMP] Internal error occurred. "
                  "Refer to server log for more information.")

BASE_CONF = """\
mail_attribute_dict = file:%h/dovecot-attributes:lock=fcntl
protocol pop3 {
  mail_plugins = $mail_plugins leave_on_server
}
"""

ATTR_FILE = "dovecot-attributes"
DEVICE_KEY_RE = re.compile(
    r"^priv/(?P<guid>[0-9a-f]{32})/vendor/vendor\.dovecot/pvt/"
    r"leave-on-server/device/(?P<device>.+)$")


# ------------------------------------------------------------------ accounts

def account(name: str, devices: Iterable[str] = ("phone", "laptop"),
            fields: Optional[Mapping[str, object]] = None,
            device_field: str = "pop3_device",
            device_fields: Optional[Mapping[str, str]] = None) -> list[dict]:
    """User specs for one mailbox and its devices.

    name:          the account (its own login is the device "default");
                   fields are its userdb fields, e.g. per-user settings.
    devices:       one login alias "<name>-<device>" each, with
                   device_field=<device>.
    device_fields: extra aliases {alias suffix: device value}, for device
                   names that can't be part of a login name.
    """
    out = [{"name": name, "fields": dict(fields or {})}]
    aliases = {dev: dev for dev in devices}
    aliases.update(device_fields or {})
    for suffix, value in aliases.items():
        out.append({"name": f"{name}-{suffix}",
                    "passdb_fields": {"user": name},
                    "fields": {device_field: value}})
    return out


def login(user: str, device: Optional[str] = None) -> str:
    return user if device in (None, "default") else f"{user}-{device}"


# ------------------------------------------------------------------ server

def make_server(users, settings: Optional[Mapping[str, object]] = None, *,
                extra_conf: str = "", mail_plugins: str = "",
                base_conf: str = BASE_CONF, **kw) -> DovecotInstance:
    return DovecotInstance(plugin_dir=BUILD_DIR, mail_plugins=mail_plugins,
                           plugin_settings=dict(settings or {}),
                           users=list(users), extra_conf=base_conf + extra_conf,
                           **kw)


def server_fixture(users, settings=None, **kw):
    """A module-scoped `server` fixture: a started DovecotInstance."""

    @pytest.fixture(scope="module")
    def server():
        if not PLUGIN.is_file():
            pytest.fail(f"{PLUGIN} missing: run `make build-all`", pytrace=False)
        dc = make_server(users, settings, **kw)
        dc.start()
        try:
            yield dc
        finally:
            dc.stop()

    return server


@pytest.fixture
def allow_log_errors(request):
    """Request it in a test that expects Error lines in the server log."""
    request.node._los_allow_errors = True


@pytest.fixture(autouse=True)
def _server_log_checks(request, server):
    """Fail a test whose server logged a panic, fatal error or crash, or
    (unless the test requested allow_log_errors) any Error line; print the
    log tail when a test fails."""
    mark = server.log_mark()
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and server.dir is not None:
        tail = "\n".join(server.log_text()[mark:].splitlines()[-80:])
        print(f"--- {server.log_path} (this test's lines, tail) ---\n{tail}")
        return
    if rep is None or not rep.passed:
        return
    lines = server.log_text()[mark:].splitlines()
    crashes = [l for l in lines
               if re.search(r"\b(Panic|Fatal): |killed with signal", l)]
    assert not crashes, "server crashed:\n" + "\n".join(crashes)
    if not getattr(request.node, "_los_allow_errors", False):
        errors = [l for l in lines if re.search(r"\bError: ", l)]
        assert not errors, "unexpected errors in the server log:\n" + "\n".join(errors)


# ------------------------------------------------------------------ mail

def make_mail(msgid: str, subject: str = "Test", size: int = 0) -> bytes:
    """A message with the given Message-ID (without <>), padded with
    short body lines to about `size` bytes."""
    head = (f"From: sender@example.com\r\nTo: user@example.com\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{msgid}>\r\n"
            f"Date: {formatdate(usegmt=True)}\r\n\r\n")
    body = "Hello.\r\n"
    line = "0123456789" * 7 + "\r\n"
    while len(head) + len(body) + len(line) <= size:
        body += line
    if size and len(head) + len(body) < size:
        body += "x" * (size - len(head) - len(body) - 2) + "\r\n"
    return (head + body).encode()


def new_msgid(tag: str = "m") -> str:
    return f"{tag}.{secrets.token_hex(6)}@test.example"


def deliver(dc: DovecotInstance, user: str, count: int = 1, tag: str = "m",
            size: int = 0, sizes: Optional[list[int]] = None) -> list[str]:
    """Deliver messages over LMTP; returns their Message-IDs (without <>)
    in delivery order, which is UID order."""
    sizes = sizes if sizes is not None else [size] * count
    ids = []
    for i, sz in enumerate(sizes):
        msgid = new_msgid(f"{tag}{i + 1}")
        dc.deliver(user, make_mail(msgid, f"{tag} {i + 1}", sz))
        ids.append(msgid)
    return ids


MSGID_RE = re.compile(rb"^Message-ID:\s*<([^>\r\n]+)>", re.M | re.I)


def msgid_of(raw: bytes) -> str:
    """The Message-ID of a raw message (header only)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    m = MSGID_RE.search(head)
    assert m, f"no Message-ID in {raw[:300]!r}"
    return m.group(1).decode()


def msgids_in(data: bytes) -> list[str]:
    """Every Message-ID header line in a concatenation of messages."""
    return [m.decode() for m in MSGID_RE.findall(data)]


@dataclass(frozen=True)
class Msg:
    uid: int
    flags: frozenset
    msgid: str
    vsize: int


def messages(dc: DovecotInstance, user: str, box: str = "INBOX") -> list[Msg]:
    """The mailbox as doveadm sees it, in UID order ([] if it doesn't
    exist). \\Recent is left out: it only says which session saw a
    message first."""
    res = dc.doveadm("-f", "tab", "fetch", "-u", user,
                     "uid flags size.virtual hdr.message-id", "mailbox", box)
    if res.returncode != 0:
        if re.search(r"[Mm]ailbox doesn't exist|not found", res.stderr):
            return []
        raise AssertionError(f"doveadm fetch failed: {res.stderr}")
    out = []
    for row in res.stdout.splitlines()[1:]:
        if not row:
            continue
        uid, flags, vsize, mid = row.split("\t", 3)
        out.append(Msg(int(uid),
                       frozenset(f for f in flags.split() if f != "\\Recent"),
                       mid.strip().strip("<>"), int(vsize)))
    return sorted(out, key=lambda m: m.uid)


def msgids(dc: DovecotInstance, user: str, box: str = "INBOX") -> list[str]:
    return [m.msgid for m in messages(dc, user, box)]


def seen_ids(dc: DovecotInstance, user: str, box: str = "INBOX") -> set[str]:
    return {m.msgid for m in messages(dc, user, box) if "\\Seen" in m.flags}


def imap_view(dc: DovecotInstance, user: str,
              box: str = "INBOX") -> dict[str, frozenset]:
    """{Message-ID: flags} as an IMAP client sees the mailbox (EXAMINE,
    so that looking changes nothing)."""
    c = dc.imap(user)
    try:
        typ, data = c.select(box, readonly=True)
        assert typ == "OK", data
        if int(data[0]) == 0:
            return {}
        typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK", data
        out = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode()
            out[msgid_of(item[1] + b"\r\n")] = frozenset(
                f for f in flags.split() if f != "\\Recent")
        return out
    finally:
        c.logout()


# ------------------------------------------------------------------ log

def wait_log(dc: DovecotInstance, pattern: str, since: int,
             timeout: float = 5.0) -> re.Match:
    try:
        return dc.wait_for_log(pattern, timeout=timeout, since=since)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


def settle_log(dc: DovecotInstance, quiet: float = 0.15,
               timeout: float = 3.0) -> None:
    """Wait until the log stops growing for `quiet` seconds, before
    asserting that some line is absent (the log process writes
    asynchronously)."""
    deadline = time.monotonic() + timeout
    size = len(dc.log_text())
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.03)
        now = len(dc.log_text())
        if now != size:
            size, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            return


def plugin_lines(dc: DovecotInstance, since: int, level: str = r"\w+",
                 pid: Optional[int] = None) -> list[str]:
    """leave_on_server's own log lines (the text after 'leave_on_server: ')."""
    pid_re = str(pid) if pid is not None else r"\d+"
    rx = re.compile(rf"^.* pop3\((?:[^)]*\)<{pid_re}>|{pid_re}\))[^:]*: {level}: "
                    r"leave_on_server: (.*)$", re.M)
    return [m.group(1) for m in rx.finditer(dc.log_text()[since:])]


# ------------------------------------------------------------------ POP3

_source_counter = itertools.count()


def _next_source() -> str:
    """A loopback source address per session, so that the session's login
    line (rip=...) and with it its process can be told apart from others."""
    return f"127.0.{next(_source_counter) % 200 + 10}.{os.getpid() % 200 + 10}"


class Pop3Session:
    """One POP3 session as one device, with poplib.

    Records what it retrieved (RETR) as Message-IDs. quit() and drop()
    return only when the session's pop3 process has exited, i.e. after any
    expiry or cleanup the plugin runs after the client is gone.
    """

    def __init__(self, dc: DovecotInstance, user: str,
                 device: Optional[str] = None, password: str = PASSWORD):
        self.dc = dc
        self.login = login(user, device)
        self.source = _next_source()
        self.mark = dc.log_mark()
        self.client = dc.pop3(self.login, password, source_address=self.source)
        m = wait_log(dc, rf"pop3-login: Info: Login: user=<[^>]*>, .*"
                         rf"rip={re.escape(self.source)}, .*mpid=(\d+)", self.mark)
        self.pid = int(m.group(1))
        self.retrieved: list[str] = []
        self.closed = False

    # -- commands
    def stat(self) -> tuple[int, int]:
        return self.client.stat()

    def count(self) -> int:
        return self.stat()[0]

    def listing(self) -> list[int]:
        _, lines, _ = self.client.list()
        return [int(l.split()[0]) for l in lines]

    def uidls(self) -> dict[int, str]:
        _, lines, _ = self.client.uidl()
        return {int(l.split()[0]): l.split()[1].decode() for l in lines}

    def uidl(self, num: int) -> str:
        resp = self.client.uidl(num).split()
        assert resp[0] == b"+OK" and int(resp[1]) == num, resp
        return resp[2].decode()

    def header_id(self, num: int) -> str:
        """The Message-ID of message num, with TOP (which retrieves nothing)."""
        _, lines, _ = self.client.top(num, 0)
        return msgid_of(b"\r\n".join(lines) + b"\r\n\r\n")

    def listed_ids(self) -> dict[int, str]:
        return {num: self.header_id(num) for num in self.listing()}

    def retr(self, num: int) -> bytes:
        resp, lines, _ = self.client.retr(num)
        assert resp.startswith(b"+OK"), resp
        raw = b"\r\n".join(lines) + b"\r\n"
        self.retrieved.append(msgid_of(raw))
        return raw

    def retr_all(self, dele: bool = False) -> list[str]:
        """RETR (and DELE) every listed message; their Message-IDs."""
        got = []
        for num in self.listing():
            self.retr(num)
            got.append(self.retrieved[-1])
            if dele:
                self.dele(num)
        return got

    def top(self, num: int, lines: int = 0) -> bytes:
        _, data, _ = self.client.top(num, lines)
        return b"\r\n".join(data)

    def dele(self, num: int) -> bytes:
        return self.client.dele(num)

    def capa(self) -> dict[str, list[str]]:
        return self.client.capa()

    # -- ending
    def quit(self) -> bytes:
        try:
            return self.client.quit()
        finally:
            self.closed = True
            wait_pid_gone(self.pid)

    def drop(self) -> None:
        """End the session without QUIT: close the connection."""
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.client.close()
        self.closed = True
        wait_pid_gone(self.pid)

    def log_lines(self) -> list[str]:
        """This session's lines in the server log (so far)."""
        rx = re.compile(rf"^.* pop3\((?:[^)]*\)<{self.pid}>|{self.pid}\)).*$", re.M)
        return rx.findall(self.dc.log_text()[self.mark:])

    def __enter__(self) -> "Pop3Session":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if not self.closed:
            if exc_type is None:
                self.quit()
            else:
                self.drop()


def pop3(dc: DovecotInstance, user: str, device: Optional[str] = None) -> Pop3Session:
    return Pop3Session(dc, user, device)


def fetch(dc: DovecotInstance, user: str, device: Optional[str] = None, *,
          dele: bool = False, only: Optional[Callable[[str], bool]] = None,
          quit: bool = True) -> list[str]:
    """One session: RETR (and DELE) every listed message, or those whose
    Message-ID `only` accepts; QUIT. Returns what was retrieved."""
    s = Pop3Session(dc, user, device)
    try:
        for num, mid in s.listed_ids().items():
            if only is not None and not only(mid):
                continue
            s.retr(num)
            if dele:
                s.dele(num)
    except BaseException:
        s.drop()
        raise
    if quit:
        s.quit()
    else:
        s.drop()
    return s.retrieved


def listed(dc: DovecotInstance, user: str, device: Optional[str] = None) -> list[str]:
    """The Message-IDs a device gets listed (TOP only), then QUIT."""
    with Pop3Session(dc, user, device) as s:
        return list(s.listed_ids().values())


def register(dc: DovecotInstance, user: str, device: Optional[str] = None) -> None:
    """Log a device in once (which registers it), retrieve nothing, QUIT."""
    with Pop3Session(dc, user, device) as s:
        s.stat()


class RawPop3(RawConn):
    """A raw POP3 connection, for pipelined commands and exact replies."""

    def __init__(self, dc: DovecotInstance, timeout: float = 10):
        self.source = _next_source()
        super().__init__("127.0.0.1", dc.pop3_port, source_address=self.source,
                         timeout=timeout)

    def read_all(self) -> list[str]:
        lines = []
        while (line := self.readline()) is not None:
            lines.append(line)
        return lines


# ------------------------------------------------------------------ state

def uidset(text: str) -> set[int]:
    """IMAP sequence-set syntax ("1:3,7") to a set of UIDs."""
    out: set[int] = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        out.update(range(min(a, b), max(a, b) + 1))
    return out


@dataclass
class DeviceState:
    uidvalidity: int
    last_seen: int
    hidden: set[int]
    days: dict[int, set[int]] = field(default_factory=dict)

    @property
    def done(self) -> set[int]:
        return set().union(*self.days.values()) if self.days else set()


def parse_state(value: str) -> DeviceState:
    """The documented value format:
    1 <uidvalidity> <last_seen> H=<uidset> D<day>=<uidset> ..."""
    parts = value.split()
    assert len(parts) >= 4 and parts[0] == "1", value
    assert parts[3].startswith("H="), value
    st = DeviceState(int(parts[1]), int(parts[2]), uidset(parts[3][2:]))
    for p in parts[4:]:
        m = re.fullmatch(r"D(\d+)=([0-9:,]*)", p)
        assert m, f"bad day {p!r} in {value!r}"
        st.days.setdefault(int(m.group(1)), set()).update(uidset(m.group(2)))
    return st


def attr_path(dc: DovecotInstance, user: str) -> Path:
    return dc.home(user) / ATTR_FILE


def read_attrs(dc: DovecotInstance, user: str) -> list[tuple[str, str]]:
    """The dict-file's key/value pairs (alternating lines)."""
    try:
        lines = attr_path(dc, user).read_text().split("\n")
    except FileNotFoundError:
        return []
    if lines and lines[-1] == "":
        lines.pop()
    assert len(lines) % 2 == 0, lines
    return list(zip(lines[0::2], lines[1::2]))


def device_values(dc: DovecotInstance, user: str) -> dict[str, str]:
    out = {}
    for key, value in read_attrs(dc, user):
        m = DEVICE_KEY_RE.match(key)
        if m:
            out[m.group("device")] = value
    return out


def device_states(dc: DovecotInstance, user: str) -> dict[str, DeviceState]:
    return {dev: parse_state(v) for dev, v in device_values(dc, user).items()}


def rewrite_attrs(dc: DovecotInstance, user: str,
                  change: Callable[[str, str], str]) -> None:
    """Rewrite every device's value with change(device, value), replacing
    the file (a new inode, which is how the dict-file driver notices a
    change) with the same owner and mode. Only while no session runs."""
    path = attr_path(dc, user)
    st = path.stat()
    lines = []
    for key, value in read_attrs(dc, user):
        m = DEVICE_KEY_RE.match(key)
        if m:
            value = change(m.group("device"), value)
        assert "\n" not in value and "\t" not in value
        lines += [key, value]
    tmp = path.with_name(path.name + ".test-tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, path)


def set_device_value(dc: DovecotInstance, user: str, device: str, value: str) -> None:
    assert device in device_values(dc, user), f"no device {device} for {user}"
    rewrite_attrs(dc, user, lambda dev, v: value if dev == device else v)


def backdate(dc: DovecotInstance, user: str, device: str, days: int) -> None:
    """Make everything `device` retrieved look `days` days older."""
    def change(dev: str, value: str) -> str:
        if dev != device:
            return value
        return re.sub(r"\bD(\d+)=", lambda m: f"D{int(m.group(1)) - days}=", value)
    assert device in device_values(dc, user), f"no device {device} for {user}"
    rewrite_attrs(dc, user, change)


def set_last_seen(dc: DovecotInstance, user: str, device: str, when: int) -> None:
    """Rewrite the stored last_seen (unix time) of `device`."""
    def change(dev: str, value: str) -> str:
        if dev != device:
            return value
        parts = value.split(" ")
        parts[2] = str(when)
        return " ".join(parts)
    assert device in device_values(dc, user), f"no device {device} for {user}"
    rewrite_attrs(dc, user, change)


def today() -> int:
    return int(time.time()) // 86400


def avoid_midnight(margin_s: int = 60) -> None:
    """Tests that compare day numbers don't want the UTC day to change
    between a session and the check."""
    left = 86400 - int(time.time()) % 86400
    if left < margin_s:
        time.sleep(left + 1)


# ------------------------------------------------------------------ tool

def run_tool(dc: Optional[DovecotInstance], *args: str,
             env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
    cmd = [str(TOOL)] + (["-c", str(dc.config_path)] if dc is not None else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                          env=None if env is None else {**os.environ, **env})


LIST_LINE_RE = re.compile(
    r"^(?P<name>[^\t]+)\tlast_seen=(?P<last_seen>[^\t]+)\tretrieved=(?P<retrieved>\d+)"
    r"\thidden=(?P<hidden>\d+)(?P<rest>.*)$")


def tool_list(dc: DovecotInstance, user: str) -> dict[str, re.Match]:
    res = run_tool(dc, "list", "-u", user)
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    out = {}
    for line in res.stdout.splitlines():
        m = LIST_LINE_RE.match(line)
        assert m, f"bad list line {line!r}"
        out[m.group("name")] = m
    return out
