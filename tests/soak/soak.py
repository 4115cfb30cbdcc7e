#!/usr/bin/python3
"""Bounded soak test: one Dovecot with every plugin, many concurrent clients.

    /usr/bin/python3 tests/soak/soak.py [--seconds 120] [--max-requests N]
        [--imap-clients 8] [--pop3-devices 4] [--deliverers 2] [--seed 1]

One throwaway Dovecot (tests/integration/dovecot_instance.py) on loopback
with access_rules, leave_on_server and fts fts_lmdb loaded for every
protocol, as dovecot.conf.example does, and its mail, imap, pop3, lmtp,
login and indexer-worker processes made long-lived (service_count = 0,
process_min_avail), so that they serve thousands of sessions each and a
leak would show in their memory. One Python process (this one) drives it
with one thread per client:

  * IMAP clients log in as a random user, SELECT INBOX or Archive, and
    SEARCH (BODY/TEXT/SUBJECT/FROM/HEADER substrings, NOT/OR, phrases,
    non-ASCII), FETCH slices (BODY.PEEK[TEXT|1|2]<o.n>, BINARY.PEEK[2]<o.n>,
    BINARY.SIZE), STORE flags and keywords, UID MOVE to Archive and
    UID EXPUNGE (only messages they claimed, so accounting stays exact);
    they keep each mailbox near a target size so the server reaches a
    steady state. One user is read-only by an access rule; its clients
    also try STORE/EXPUNGE/MOVE and must be refused.
  * POP3 devices (login aliases with their own pop3_device, policy keep,
    half of them new-only) run STAT/UIDL/RETR/DELE/QUIT sessions.
  * LMTP deliverers add generated mail (unique Message-IDs, some to two
    recipients at once) over long LMTP sessions.

Every answer the driver can predict is checked while the load runs: FETCH
slices against the generated message, a search for a message's unique
word must find exactly that message, RETR returns the delivered message,
a keep device is never listed mail it deleted (or, new-only, retrieved),
the read-only user can change nothing, a UID EXPUNGE or UID MOVE that
answers OK reports each of its UIDs expunged. The run stops after --seconds or
--max-requests requests, whichever comes first, and then checks:

  1. zero protocol errors (unexpected NO/BAD/-ERR/LMTP failure, wrong
     data, exceptions, timeouts);
  2. no Panic/Fatal/"killed with signal"/segfault (nor Error) in the log;
  3. every delivered message accounted for: per user, the Message-IDs
     delivered (and preloaded) are exactly those in the mailboxes plus
     those the IMAP clients expunged (POP3 with keep removed none), and
     nothing was expunged that wasn't delivered;
  4. every search answer equal to stock Dovecot's: a stock Dovecot (no
     plugins) on a copy of the final maildirs answers the same queries,
     per user per mailbox (plus FETCH slices, compared byte for byte);
  5. memory of the long-lived processes flat (see MEMORY below);
  6. with plugins built by `make SANITIZE=1` (PLUGIN_BUILD_DIR and
     SANITIZER_PRELOAD set, as soak.mk passes them): no ASan/UBSan report
     (memory is then not judged);

and prints the throughput it held, per window (did it hold?), and how
the index files grew (see DISK below). Exit status 0 when every check
passed, 1 when one failed (each failure is a line starting with FAIL),
2 when the server could not be set up. Results also go to
build/soak/results.txt and build/soak/results.json (with every memory
sample). See docs/soak.md.
"""

from __future__ import annotations

import argparse
import base64
import collections
import functools
import json
import os
import poplib
import quopri
import random
import re
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import dovecot_instance  # noqa: E402
from dovecot_instance import DovecotInstance, DovecotStartError  # noqa: E402
from fts_helpers import (SearchClient, diff_answers, load_maildir,  # noqa: E402
                         search_command)
from partial_helpers import (RawImap, describe_difference,  # noqa: E402
                             parse_fetch)

OUT_DIR = REPO / "build" / "soak"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PASSWORD = "secret"

RW_USERS = ("alice", "bob", "carol", "dave")
RO_USER = "erin"                      # read-only by an access rule
USERS = RW_USERS + (RO_USER,)
MAILBOXES = ("INBOX", "Archive")
PRELOAD = {"INBOX": 200, "Archive": 60}      # messages per user at start
TARGET = {"INBOX": 260, "Archive": 100}      # IMAP clients expunge above
IO_TIMEOUT = 60.0                            # any single reply

# MEMORY. Every process of the instance is sampled (/proc/<pid>/status:
# VmRSS, RssAnon, RssFile, VmSize) every --sample-interval seconds, and
# the size of every user's index files (DISK below). The first third of
# the run is warm-up: processes fill their caches and pools, the mailboxes
# reach the size the IMAP clients then hold them at (TARGET). A process
# counts as long-lived if it was up before the warm-up ended and was
# sampled to the end.
#
# What is judged is RssAnon, the process's own allocations, where a leak
# shows. RssFile (mapped files: the libraries, the session's
# dovecot.index.cache and LMDB data.mdb) moves with the user a process
# is serving and with the size of those files, which the soak changes at
# a hundred times a person's rate; it is reported, with the files' sizes,
# but not judged. glibc's mmap threshold is held fixed in Dovecot's
# processes (see service_conf), so that RssAnon follows live memory
# instead of stepping up once per process at a random moment. Two
# criteria, both on RssAnon:
#
#  * per process: max over the last third - median over the middle third
#    <= max(PROC_TOLERANCE_MB, PROC_TOLERANCE_PCT of that median). Runs of
#    40 s to 600 s on the project's machine measured at most +1.0 MB
#    (imap, pop3, lmtp and indexer-worker processes hold 1.5-3 MB each).
#    A process leaking about 2 KB per request fails a 120 s run (each of
#    the ~16 imap processes serves some 1,000-1,500 requests per third).
#  * per service, summed over its long-lived processes: median over the
#    last third - median over the middle third <= max(SERVICE_TOLERANCE_MB,
#    SERVICE_TOLERANCE_PCT of that median). Measured: at most +0.7 MB
#    (imap, 16 processes, ~31 MB in all). Medians of a sum over many
#    processes hide per-session moves, and a leak in every process adds
#    up: some 100-150 bytes per IMAP request fail a 120 s run.
#
# Longer runs (--seconds) catch smaller leaks.
#
# DISK. The same samples hold the size of every user's mail, fts index
# (fts-lmdb/), Dovecot index files and leave_on_server state. With the
# mailboxes held at a steady size these should level off; the report
# shows them and how much the fts index grew per delivered message over
# the judged two thirds, but doesn't judge them: an LMDB file only levels
# off once its free pages cover the churn, which takes longer than a CI
# run (docs/soak.md shows both shapes).
PROC_TOLERANCE_MB = 2.0
PROC_TOLERANCE_PCT = 50.0
SERVICE_TOLERANCE_MB = 2.0
SERVICE_TOLERANCE_PCT = 5.0

VOCAB = ("apple banana cherry delta echo foxtrot golf hotel india juliet "
         "kilo lima mike november oscar papa quebec romeo sierra tango "
         "uniform victor whiskey xray yankee zulu harbour lantern meadow "
         "pebble quartz saffron thistle velvet willow amber cobalt "
         "granite hazel indigo jasper marble onyx").split()
NONASCII = ("für", "Grüße", "naïve", "smörgåsbord", "crème", "Ærøskøbing")
DOMAINS = ("north", "south", "east", "west", "central")
KEYWORDS = ("$Soak1", "$Soak2")


def log(msg: str) -> None:
    print(msg, flush=True)


# =================================================================== mail

def body_token(src: int, n: int) -> str:
    """The word only message (src, n) has in its body; the z/q delimiters
    make it no substring of another message's token."""
    return f"zq{src}x{n}zq"


def subject_token(src: int, n: int) -> str:
    return f"sj{src}x{n}sj"


def attach_token(src: int, n: int) -> str:
    return f"at{src}x{n}at"


def soak_key(src: int, n: int) -> str:
    return f"k{src}x{n}k"


def message_id(src: int, n: int) -> str:
    return f"soak.{src}.{n}@soak.example"


MSGID_RE = re.compile(r"soak\.(\d+)\.(\d+)@soak\.example")


def parse_msgid(text: str) -> Optional[tuple[int, int]]:
    m = MSGID_RE.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass
class Msg:
    src: int                  # 0: preloaded, 1..: deliverer
    n: int
    kind: str                 # plain, large, qp, mixed_text, mixed_bin
    raw: bytes                # CRLF, as delivered
    text: bytes               # BODY[TEXT]
    parts: dict               # section -> (BODY[section], decoded or None)

    @property
    def msgid(self) -> str:
        return message_id(self.src, self.n)


def _words(rng: random.Random, count: int, nonascii: float = 0.05) -> list[str]:
    return [rng.choice(NONASCII) if rng.random() < nonascii else rng.choice(VOCAB)
            for _ in range(count)]


def _text_lines(rng: random.Random, lines: int, token: str) -> str:
    out = []
    at = rng.randrange(lines)
    for i in range(lines):
        words = _words(rng, rng.randint(4, 12))
        if i == at:
            words.insert(rng.randrange(len(words) + 1), token)
        out.append(" ".join(words))
    return "\r\n".join(out) + "\r\n"


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


@functools.lru_cache(maxsize=2048)
def gen_message(seed: int, src: int, n: int) -> Msg:
    """Message (src, n), always the same for a seed."""
    rng = random.Random(f"{seed}:{src}:{n}")
    r = rng.random()
    kind = ("plain" if r < 0.55 else "large" if r < 0.60 else
            "qp" if r < 0.70 else "mixed_text" if r < 0.85 else "mixed_bin")
    w = _words(rng, 3, 0)
    sender = f"{w[0]}.{w[1]}@{rng.choice(DOMAINS)}.example"
    headers = [
        f"From: {w[0].title()} {w[1].title()} <{sender}>",
        f"To: {rng.choice(VOCAB)}-list@{rng.choice(DOMAINS)}.soak.example",
        f"Subject: {' '.join(_words(rng, 2, 0))} {subject_token(src, n)} "
        f"{' '.join(_words(rng, 2, 0.2))}",
        f"Message-ID: <{message_id(src, n)}>",
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(1.5e9 + n * 60))}",
        f"X-Soak-Key: {soak_key(src, n)}",
        "MIME-Version: 1.0",
    ]
    if rng.random() < 0.3:
        headers.insert(2, f"Cc: {rng.choice(VOCAB)}@{rng.choice(DOMAINS)}.example")
    token = body_token(src, n)
    parts = {}
    if kind in ("plain", "large"):
        lines = rng.randint(4, 40) if kind == "plain" else rng.randint(900, 2000)
        body = _text_lines(rng, lines, token).encode()
        headers += ["Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit"]
        parts["1"] = (body, None)
    elif kind == "qp":
        decoded = _text_lines(rng, rng.randint(4, 60), token).encode()
        # quopri works on LF text; hard breaks become CRLF on the wire
        body = quopri.encodestring(decoded.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
        headers += ["Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: quoted-printable"]
        parts["1"] = (body, None)
    else:
        boundary = f"=_soak_{src}_{n}_{rng.randrange(1 << 30):x}"
        text1 = _text_lines(rng, rng.randint(3, 20), token).encode()
        if kind == "mixed_text":
            decoded = _text_lines(rng, rng.randint(5, 300), attach_token(src, n)).encode()
            ctype = 'text/plain; charset=utf-8; name="notes.txt"'
        else:
            size = rng.choice((rng.randint(200, 8000), rng.randint(8000, 60000),
                               rng.randint(60000, 220000)))
            decoded = rng.randbytes(size)
            ctype = 'application/octet-stream; name="blob.bin"'
        enc = _b64(decoded)
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = (b"This is a multi-part message in MIME format.\r\n"
                b"--" + boundary.encode() + b"\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text1 +
                b"\r\n--" + boundary.encode() + b"\r\n"
                b"Content-Type: " + ctype.encode() + b"\r\n"
                b"Content-Disposition: attachment\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n" + enc +
                b"\r\n--" + boundary.encode() + b"--\r\n")
        parts["1"] = (text1, None)
        parts["2"] = (enc, decoded)
    raw = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
    return Msg(src, n, kind, raw, body, parts)


# ================================================================= ledger

class Stop(Exception):
    pass


class Ledger:
    """Everything the clients share: counters, latencies, errors, what
    was delivered and expunged, and the UIDs claimed for expunge/move."""

    def __init__(self, max_requests: int):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.max_requests = max_requests
        self.requests = 0
        self.counts: collections.Counter = collections.Counter()
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: list[str] = []
        self.error_count = 0
        self.wrong: list[str] = []          # wrong answers (data checks)
        self.wrong_count = 0
        self.expected_no: collections.Counter = collections.Counter()
        self.checks: collections.Counter = collections.Counter()
        # accounting, per user: Message-IDs
        self.delivered: dict[str, set] = collections.defaultdict(set)
        self.expunged: dict[str, set] = collections.defaultdict(set)
        self.moved = 0
        self.pop3_deleted = 0
        self.pop3_retrieved = 0
        self.recipients = 0
        # (user, mailbox, uid) claimed by one client for expunge/move
        self.claimed: set = set()
        # (user, mailbox, uid) -> (src, n), learned from FETCHes
        self.keys: dict = {}
        # (user, Message-ID) -> [(t, what happened)]: for failure reports
        self.history: dict = collections.defaultdict(list)
        self.t0 = time.monotonic()
        # --trace: every IMAP client's exchange goes to trace_dir/imapN.log
        self.trace_dir: Optional[Path] = None

    # -------------------------------------------------------- counting

    def count(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.counts[kind] += 1
            self.latency[kind].append(seconds)
            self.requests += 1
            if self.max_requests and self.requests >= self.max_requests:
                self.stop.set()

    def error(self, who: str, msg: str) -> None:
        with self.lock:
            self.error_count += 1
            if len(self.errors) < 200:
                self.errors.append(f"{who}: {msg}")

    def wrong_answer(self, who: str, msg: str) -> None:
        with self.lock:
            self.wrong_count += 1
            if len(self.wrong) < 200:
                self.wrong.append(f"{who}: {msg}")

    def expect_no(self, what: str) -> None:
        with self.lock:
            self.expected_no[what] += 1

    def checked(self, what: str) -> None:
        with self.lock:
            self.checks[what] += 1

    # -------------------------------------------------------- claims

    def claim(self, user: str, mailbox: str, uids, limit: int) -> list[int]:
        out = []
        with self.lock:
            for uid in uids:
                if len(out) >= limit:
                    break
                k = (user, mailbox, uid)
                if k not in self.claimed:
                    self.claimed.add(k)
                    out.append(uid)
        return out

    def is_claimed(self, user: str, mailbox: str, uid: int) -> bool:
        with self.lock:
            return (user, mailbox, uid) in self.claimed

    def any_claimed(self, user: str, mailbox: str, uids) -> bool:
        with self.lock:
            return any((user, mailbox, u) in self.claimed for u in uids)

    def note(self, user: str, msgid: str, what: str) -> None:
        """Record an event in a message's life (caller holds no lock)."""
        with self.lock:
            self.history[(user, msgid)].append(
                (round(time.monotonic() - self.t0, 2), what))

    def user_size(self, user: str) -> int:
        with self.lock:
            return len(self.delivered[user]) - len(self.expunged[user])


# ================================================================= clients

class ImapClient:
    """One IMAP client thread: sessions of random users, one after another."""

    def __init__(self, ix: int, dc: DovecotInstance, ledger: Ledger, seed: int):
        self.ix = ix
        self.dc = dc
        self.ledger = ledger
        self.seed = seed
        self.rng = random.Random(f"{seed}:imap:{ix}")
        self.name = f"imap{ix}"
        self.conn: Optional[RawImap] = None
        self.user = ""
        self.mailbox = ""
        self.readonly = False
        self.view: list[int] = []
        self.last_fetch = None      # the reply of the last fetch_keys()
        self.trace = None
        if ledger.trace_dir is not None:
            self.trace = open(ledger.trace_dir / f"{self.name}.log", "w", buffering=1 << 16)

    def tr(self, line: str) -> None:
        if self.trace is not None:
            self.trace.write(f"{time.monotonic() - self.ledger.t0:9.3f} {line}\n")

    # -------------------------------------------------------- plumbing

    def cmd(self, kind: str, command, uids=()) -> Optional[object]:
        """Send one command, count it; None (after recording an error)
        unless the reply is OK or an expected refusal."""
        start = time.perf_counter()
        if self.trace is not None:
            c = command if isinstance(command, str) else command.decode(errors="replace")
            self.tr(f"C: {self.user} {self.mailbox}: {c[:300]}")
        reply = self.conn.command(command)
        self.ledger.count(kind, time.perf_counter() - start)
        if self.trace is not None:
            for u in reply.untagged:
                self.tr(f"S: {u[:200]!r}")
            self.tr(f"S: {reply.status[:200]!r}")
        if reply.ok:
            for u in reply.untagged if kind != "imap.logout" else ():
                if u.startswith(b"* BYE"):
                    self.ledger.error(self.name, f"{self.user}: {command!r}: {u!r}")
                    self.conn.alive = False
                elif u.startswith((b"* NO", b"* BAD")):
                    # a failed mailbox sync: Dovecot reports it untagged and
                    # still answers the command OK (an EXPUNGE then stays
                    # pending in the index)
                    self.ledger.error(self.name, f"{self.user} {self.mailbox}: "
                                                 f"{str(command)[:160]!r}: "
                                                 f"{u.strip()[:200]!r} before the OK")
            return reply
        text = reply.status.decode(errors="replace").strip()
        if uids and self.ledger.any_claimed(self.user, self.mailbox, uids) and \
                reply.status.startswith(b"NO"):
            self.ledger.expect_no("race with another client's expunge/move")
            return None
        cmd_text = command if isinstance(command, str) else command.decode(errors="replace")
        self.ledger.error(self.name, f"{self.user} {self.mailbox}: {cmd_text.strip()[:160]!r}"
                                     f" -> {text[:200]}")
        return None

    def refused(self, kind: str, command: str) -> None:
        """The read-only user: the command must get NO [NOPERM]."""
        start = time.perf_counter()
        reply = self.conn.command(command)
        self.ledger.count(kind, time.perf_counter() - start)
        if reply.status.startswith(b"NO") and b"NOPERM" in reply.status:
            self.ledger.expect_no("read-only user refused")
            return
        self.ledger.wrong_answer(self.name, f"{self.user} (read-only): {command!r} -> "
                                            f"{reply.status!r}, expected NO [NOPERM]")

    def run(self) -> None:
        while not self.ledger.stop.is_set():
            try:
                self.session()
            except Stop:
                pass
            except Exception as e:      # noqa: BLE001 - everything counts
                self.ledger.error(self.name, f"{self.user} {self.mailbox}: "
                                             f"{type(e).__name__}: {e}")
                time.sleep(0.2)
            finally:
                if self.conn is not None:
                    try:
                        self.conn.close()
                    except OSError:
                        pass
                    self.conn = None
                if self.trace is not None:
                    self.trace.flush()

    def session(self) -> None:
        rng = self.rng
        self.user = RO_USER if rng.random() < 0.15 else rng.choice(RW_USERS)
        self.readonly = self.user == RO_USER
        start = time.perf_counter()
        self.conn = RawImap(self.dc.imap_port, self.user, mailbox=None,
                            timeout=IO_TIMEOUT)
        self.tr(f"-- session {self.user} from port {self.conn.sock.getsockname()[1]}")
        self.ledger.count("imap.login", time.perf_counter() - start)
        self.select(rng.choice(MAILBOXES) if rng.random() < 0.3 else "INBOX")
        for _ in range(rng.randint(10, 60)):
            if self.ledger.stop.is_set() or not self.conn.alive:
                break
            self.operation()
        if self.conn.alive:
            self.cmd("imap.logout", "LOGOUT")

    def select(self, mailbox: str) -> None:
        self.mailbox = mailbox
        reply = self.cmd("imap.select", f'SELECT "{mailbox}"')
        if reply is None:
            raise Stop()
        if self.readonly and b"[READ-ONLY]" not in reply.status:
            self.ledger.wrong_answer(self.name, f"{self.user}: SELECT {mailbox} "
                                                f"not READ-ONLY: {reply.status!r}")
        if not self.readonly and b"[READ-WRITE]" not in reply.status:
            # a read-only mailbox answers STORE and EXPUNGE with OK and
            # ignores them
            self.ledger.wrong_answer(self.name, f"{self.user}: SELECT {mailbox} "
                                                f"not READ-WRITE: {reply.status!r}")
        self.refresh()
        if not self.readonly:
            over = len(self.view) - TARGET[mailbox]
            if over > 0:
                self.expunge(min(over + self.rng.randint(0, 5), 25))

    def refresh(self) -> None:
        reply = self.cmd("imap.search", "UID SEARCH ALL")
        if reply is None:
            raise Stop()
        self.view = [int(x) for u in reply.untagged if u.startswith(b"* SEARCH")
                     for x in u[8:].split()]

    def pick(self, count: int = 1) -> list[int]:
        """Up to `count` UIDs of the view that nobody claimed."""
        if not self.view:
            return []
        out = []
        for _ in range(count * 4):
            uid = self.rng.choice(self.view)
            if uid not in out and not self.ledger.is_claimed(self.user, self.mailbox, uid):
                out.append(uid)
                if len(out) == count:
                    break
        return out

    def pick_keyed(self) -> Optional[tuple[int, tuple[int, int]]]:
        """An unclaimed UID of the view and its (src, n), or None."""
        uids = self.pick(1)
        if not uids:
            return None
        key = self.key_of(uids[0])
        return None if key is None else (uids[0], key)

    def key_of(self, uid: int) -> Optional[tuple[int, int]]:
        k = (self.user, self.mailbox, uid)
        with self.ledger.lock:
            if k in self.ledger.keys:
                return self.ledger.keys[k]
        keys = self.fetch_keys([uid])
        return keys.get(uid)

    def fetch_keys(self, uids: list[int], racy: bool = True) -> dict[int, tuple[int, int]]:
        """(src, n) of each UID, from its Message-ID. racy: the UIDs are
        not ours, another client may expunge them meanwhile."""
        reply = self.cmd("imap.fetch", "UID FETCH %s (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
                         % ",".join(map(str, uids)), uids if racy else ())
        self.last_fetch = reply
        out = {}
        if reply is None:
            return out
        for u in reply.fetch_data():
            items = parse_fetch(u)
            uid = items.get(b"UID")
            value = next((v for k, v in items.items() if k.startswith(b"BODY[HEADER")), None)
            if value is None:
                continue    # another session's flag change, reported to us
            key = parse_msgid(value.decode(errors="replace"))
            if uid is None or key is None:
                self.ledger.wrong_answer(self.name, f"{self.user} {self.mailbox}: "
                                                    f"no Message-ID in {u[:200]!r}")
                continue
            out[uid] = key
        with self.ledger.lock:
            for uid, key in out.items():
                self.ledger.keys[(self.user, self.mailbox, uid)] = key
        return out

    # -------------------------------------------------------- operations

    def operation(self) -> None:
        r = self.rng.random()
        if r < 0.05:
            self.select(self.rng.choice(MAILBOXES))
        elif r < 0.10:
            self.refresh()
        elif r < 0.42:
            self.search()
        elif r < 0.77:
            self.fetch()
        elif r < 0.92:
            self.store()
        elif r < 0.96:
            self.expunge(self.rng.randint(1, 3))
        else:
            self.move()

    def search(self) -> None:
        rng = self.rng
        if rng.random() < 0.4:
            self.search_unique()
            return
        w1, w2 = rng.choice(VOCAB), rng.choice(VOCAB)
        query = rng.choice([
            f'BODY "{w1}"', f'TEXT "{w1}"', f'SUBJECT "{w1}"', f'FROM "{w1}"',
            f'TO "{rng.choice(DOMAINS)}.soak"', f'CC "{w1}"',
            f'NOT BODY "{w1}"', f'OR BODY "{w1}" SUBJECT "{w2}"',
            f'BODY "{w1} {w2}"', f'FLAGGED BODY "{w1}"',
            f'KEYWORD {rng.choice(KEYWORDS)} TEXT "{w1}"',
            f'UNSEEN BODY "{w1}"', f'LARGER 60000 BODY "{w1}"',
            f'BODY "{rng.choice(NONASCII)}"', f'TEXT "{rng.choice(NONASCII).upper()}"',
            f'BODY "zq{rng.randint(0, 3)}x"', f'HEADER X-Soak-Key "k{rng.randint(0, 3)}x"',
            f'BODY "{w1[1:4]}"',
        ])
        cmd = search_command("x", query)[2:-2]
        self.cmd("imap.search", cmd)

    def search_unique(self) -> None:
        """A query only one message of the mailbox matches: the answer must
        be exactly its UID, unless someone claimed it meanwhile."""
        picked = self.pick_keyed()
        if picked is None:
            return
        uid, key = picked
        src, n = key
        query = self.rng.choice([
            f'BODY "{body_token(src, n)}"', f'TEXT "{body_token(src, n).upper()}"',
            f'SUBJECT "{subject_token(src, n)}"', f'TEXT "{subject_token(src, n)}"',
            f'HEADER X-Soak-Key "{soak_key(src, n)}"',
            f'HEADER Message-ID "{message_id(src, n)}"',
            f'OR BODY "{body_token(src, n)}" BODY "{body_token(src, n + 100000)}"',
        ])
        reply = self.cmd("imap.search", f"UID SEARCH {query}", [uid])
        if reply is None:
            return
        found = sorted(int(x) for u in reply.untagged if u.startswith(b"* SEARCH")
                       for x in u[8:].split())
        if found == [uid]:
            self.ledger.checked("unique search")
            return
        if self.ledger.is_claimed(self.user, self.mailbox, uid) and found == []:
            return
        self.ledger.wrong_answer(self.name, f"{self.user} {self.mailbox}: UID SEARCH {query} "
                                            f"-> {found[:10]}, expected [{uid}]")

    def fetch(self) -> None:
        picked = self.pick_keyed()
        if picked is None:
            return
        uid, key = picked
        msg = gen_message(self.seed, *key)
        rng = self.rng
        choices = ["text", "part1"]
        if "2" in msg.parts:
            choices += ["body2", "binary2", "binary2", "size2"]
        else:
            choices += ["binary1", "size1"]
        if rng.random() < 0.1:
            choices = ["whole"]
        what = rng.choice(choices)
        section = {"text": "TEXT", "part1": "1", "body2": "2", "binary2": "2",
                   "binary1": "1", "size1": "1", "size2": "2", "whole": ""}[what]
        if what.startswith("size"):
            item = f"BINARY.SIZE[{section}]"
            expected = None
        else:
            if what == "text":
                data = msg.text
            elif what.startswith("binary"):
                data = msg.parts[section][1]     # None: not checked in-run
            elif what == "whole":
                data = None
            else:
                data = msg.parts[section][0]
            total = len(data) if data is not None else len(msg.raw)
            r = rng.random()
            if r < 0.2:
                offset = 0
            elif r < 0.35:
                offset = max(0, total - rng.randint(0, 200))
            else:
                offset = rng.randint(0, max(0, total))
            length = rng.choice((rng.randint(1, 512), rng.randint(512, 65536), 65536))
            peek = "BINARY.PEEK" if what.startswith("binary") else "BODY.PEEK"
            item = f"{peek}[{section}]<{offset}.{length}>"
            expected = None if data is None else data[offset:offset + length]
        reply = self.cmd("imap.fetch", f"UID FETCH {uid} ({item})", [uid])
        if reply is None:
            return
        name = item.split("<")[0].replace(".PEEK", "").encode()
        value = None
        got = False
        for u in reply.fetch_data():
            for k, v in parse_fetch(u).items():
                if k.startswith(name):
                    value, got = v, True
        if not got or value is None:
            # Another client expunged it after we picked it: Dovecot then
            # answers NIL (or nothing) and OK [EXPUNGEISSUED], as stock does.
            if self.ledger.is_claimed(self.user, self.mailbox, uid):
                self.ledger.expect_no("FETCH of mail another client expunged")
            else:
                self.ledger.wrong_answer(self.name, f"{self.user} {self.mailbox}: UID FETCH "
                                                    f"{uid} ({item}): {'NIL' if got else 'no data'}"
                                                    f", {reply.status!r}")
            return
        if expected is not None:
            # data that was sent must be right, expunged meanwhile or not
            if value != expected:
                self.ledger.wrong_answer(
                    self.name, f"{self.user} {self.mailbox}: UID FETCH {uid} ({item}) of "
                    f"{msg.msgid} ({msg.kind}): {len(value)} bytes "
                    f"{value[:40]!r}..., expected {len(expected)} bytes "
                    f"{expected[:40]!r}...")
            else:
                self.ledger.checked("fetch slice")

    def store(self) -> None:
        rng = self.rng
        flag = rng.choice(("\\Flagged", "\\Seen", "\\Answered") + KEYWORDS)
        op = rng.choice(("+FLAGS", "-FLAGS", "+FLAGS.SILENT", "-FLAGS.SILENT"))
        if self.readonly:
            uids = self.pick(1) or [1]
            self.refused("imap.store", f"UID STORE {uids[0]} {op} ({flag})")
            return
        uids = self.pick(rng.randint(1, 3))
        if uids:
            self.cmd("imap.store", f"UID STORE {','.join(map(str, uids))} {op} ({flag})",
                     uids)

    def expunge(self, count: int) -> None:
        if self.readonly:
            uids = self.pick(1) or [1]
            self.refused("imap.expunge", f"UID EXPUNGE {uids[0]}")
            return
        # oldest first, so mail doesn't only churn at the top
        candidates = sorted(self.view)[:count * 3] if self.rng.random() < 0.5 else \
            self.rng.sample(self.view, min(len(self.view), count * 3))
        uids = self.ledger.claim(self.user, self.mailbox, candidates, count)
        if not uids:
            return
        ids = self.claimed_ids(uids)
        if ids is None:
            return
        fetched = self.last_fetch
        uidset = ",".join(map(str, uids))
        stored = self.cmd("imap.store", f"UID STORE {uidset} +FLAGS.SILENT (\\Deleted)")
        if stored is None:
            return
        reply = self.cmd("imap.expunge", f"UID EXPUNGE {uidset}")
        if reply is None:
            return
        with self.ledger.lock:
            self.ledger.expunged[self.user].update(ids)
        self.view = [u for u in self.view if u not in uids]
        self.check_removed("UID EXPUNGE", uids, ids, fetched, stored, reply)

    def check_removed(self, what: str, uids: list[int], ids: list[str], fetched,
                      stored, reply) -> None:
        """A UID EXPUNGE or UID MOVE of claimed UIDs answered OK: the
        session must have been told that each of them was expunged, by an
        EXPUNGE response of that command (other sessions' expunges add
        more of them, so counting proves nothing: the responses are
        followed through the UIDs' sequence numbers, as learned from the
        FETCH of their Message-IDs). Also recorded in each message's
        history, which the accounting prints if a message stayed."""
        before, during = expunged_by(uids, [fetched, stored], [reply])
        uidset = ",".join(map(str, uids))
        status = reply.status.decode(errors="replace").strip()
        if b"ignored" in reply.status.lower():
            self.ledger.wrong_answer(self.name, f"{self.user} {self.mailbox}: {what} {uidset} "
                                                f"-> {status}")
        if before:
            self.ledger.wrong_answer(self.name, f"{self.user} {self.mailbox}: claimed UIDs "
                                                f"{sorted(before)} expunged by someone else "
                                                f"before {what} {uidset}")
        kept = [u for u in uids if u not in during and u not in before]
        if kept:
            self.ledger.wrong_answer(self.name, f"{self.user} {self.mailbox}: {what} {uidset} "
                                                f"-> {status}, but no EXPUNGE response for "
                                                f"UIDs {kept}")
        for _ in during:
            self.ledger.checked(f"{what.split()[-1].lower()} reported")
        self.tr(f"== {what} {uidset}: reported expunged {sorted(during)}, before "
                f"{sorted(before)}, not {kept}")
        for uid, msgid in zip(uids, ids):
            told = ("reported expunged" if uid in during else
                    "expunged BEFORE the command" if uid in before else
                    "NOT reported expunged")
            self.ledger.note(self.user, msgid, f"{self.name}: {self.mailbox} UID {uid} "
                                               f"{what} {uidset}: {status}, {told}")

    def claimed_ids(self, uids: list[int]) -> Optional[list[str]]:
        """Message-IDs of UIDs this client claimed; they must all exist
        (nobody else may remove them: POP3 runs with the keep policy)."""
        keys = self.fetch_keys(uids, racy=False)
        if not keys and not self.conn.alive:
            return None
        missing = [u for u in uids if u not in keys]
        if missing:
            self.ledger.wrong_answer(self.name, f"{self.user} {self.mailbox}: claimed UIDs "
                                                f"{missing} are gone (who removed them?)")
            return None
        return [message_id(*keys[u]) for u in uids]

    def move(self) -> None:
        if self.mailbox != "INBOX":
            return
        if self.readonly:
            uids = self.pick(1) or [1]
            self.refused("imap.move", f"UID MOVE {uids[0]} Archive")
            return
        uids = self.ledger.claim(self.user, self.mailbox, self.pick(3),
                                 self.rng.randint(1, 3))
        ids = self.claimed_ids(uids) if uids else None
        if not ids:
            return
        fetched = self.last_fetch
        reply = self.cmd("imap.move", f"UID MOVE {','.join(map(str, uids))} Archive")
        if reply is not None:
            with self.ledger.lock:
                self.ledger.moved += len(uids)
            self.view = [u for u in self.view if u not in uids]
            copyuid = next((m.group(0).decode() for u in reply.untagged + [reply.status]
                            if (m := re.search(rb"\[COPYUID [^\]]*\]", u))), "no COPYUID")
            for uid, msgid in zip(uids, ids):
                self.ledger.note(self.user, msgid, f"{self.name}: INBOX UID {uid} moved to "
                                                   f"Archive, {copyuid}")
            self.check_removed("UID MOVE", uids, ids, fetched, None, reply)


def expunged_by(uids: list[int], earlier: list, replies: list) -> tuple[set, set]:
    """Which of `uids` the untagged EXPUNGE responses report expunged: in
    the `earlier` replies (a FETCH naming the UIDs, then e.g. a STORE) and
    in `replies`. A UID's sequence number is learned from a FETCH response
    that names it and followed through the EXPUNGE responses after it."""
    seq_of: dict[int, int] = {}
    found: tuple[set, set] = (set(), set())
    for which, group in enumerate((earlier, replies)):
        for reply in group:
            for u in (reply.untagged if reply is not None else ()):
                m = re.match(rb"\* (\d+) (EXPUNGE|FETCH)\b", u)
                if not m:
                    continue
                n = int(m.group(1))
                if m.group(2) == b"FETCH":
                    k = re.search(rb"\bUID (\d+)", u.split(b"\r\n", 1)[0])
                    if k and int(k.group(1)) in uids:
                        seq_of[int(k.group(1))] = n
                    continue
                for uid, seq in list(seq_of.items()):
                    if seq == n:
                        found[which].add(uid)
                        del seq_of[uid]
                    elif seq > n:
                        seq_of[uid] = seq - 1
    return found


class Pop3Device:
    """One POP3 device (a login alias with its own pop3_device) running
    sessions back to back; leave_on_server policy keep."""

    def __init__(self, ix: int, dc: DovecotInstance, ledger: Ledger, seed: int,
                 user: str, login: str, new_only: bool):
        self.ix = ix
        self.dc = dc
        self.ledger = ledger
        self.seed = seed
        self.user = user
        self.login = login
        self.new_only = new_only
        self.rng = random.Random(f"{seed}:pop3:{ix}")
        self.name = f"pop3-{login}"
        self.deleted: set[int] = set()      # UIDs DELE'd in QUIT sessions
        self.retrieved: set[int] = set()

    def timed(self, kind: str, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.ledger.count(kind, time.perf_counter() - start)

    def run(self) -> None:
        while not self.ledger.stop.is_set():
            try:
                self.session()
            except Exception as e:      # noqa: BLE001
                self.ledger.error(self.name, f"{type(e).__name__}: {e}")
                time.sleep(0.2)

    def session(self) -> None:
        start = time.perf_counter()
        p = self.dc.pop3_connect(timeout=IO_TIMEOUT)
        try:
            p.user(self.login)
            p.pass_(PASSWORD)
            self.ledger.count("pop3.login", time.perf_counter() - start)
            self.timed("pop3.stat", p.stat)
            _, lines, _ = self.timed("pop3.uidl", p.uidl)
            listing = {}
            for line in lines:
                num, uidl = line.split()
                listing[int(num)] = int(uidl[:8], 16)
            for num, uid in listing.items():
                if uid in self.deleted or (self.new_only and uid in self.retrieved):
                    self.ledger.wrong_answer(
                        self.name, f"UIDL lists UID {uid}, which this device "
                        f"{'deleted' if uid in self.deleted else 'retrieved'} "
                        f"(keep{', new-only' if self.new_only else ''})")
            nums = list(listing)
            self.rng.shuffle(nums)
            retr, dele = [], []
            for num in nums[:self.rng.randint(1, 6)]:
                if self.ledger.stop.is_set():
                    break
                uid = listing[num]
                try:
                    _, body, _ = self.timed("pop3.retr", p.retr, num)
                except poplib.error_proto as e:
                    if self.ledger.is_claimed(self.user, "INBOX", uid):
                        self.ledger.expect_no("POP3 RETR of mail an IMAP client expunged")
                        continue
                    raise RuntimeError(f"RETR {num} (UID {uid}): {e}") from None
                self.check_retr(uid, b"\r\n".join(body) + b"\r\n")
                retr.append(uid)
                if self.rng.random() < 0.5:
                    self.timed("pop3.dele", p.dele, num)
                    dele.append(uid)
            self.timed("pop3.quit", p.quit)
            self.retrieved.update(retr)
            self.deleted.update(dele)
            with self.ledger.lock:
                self.ledger.pop3_retrieved += len(retr)
                self.ledger.pop3_deleted += len(dele)
        finally:
            p.close()

    def check_retr(self, uid: int, data: bytes) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
        key = parse_msgid(head)
        if key is None:
            self.ledger.wrong_answer(self.name, f"RETR of UID {uid}: no soak Message-ID")
            return
        msg = gen_message(self.seed, *key)
        if not data.endswith(msg.raw):
            self.ledger.wrong_answer(self.name, f"RETR of UID {uid} ({msg.msgid}): "
                                                f"{len(data)} bytes don't end with the "
                                                f"{len(msg.raw)} delivered")
        else:
            self.ledger.checked("pop3 retr")


class LmtpSession:
    """A minimal LMTP client: one reply per recipient after DATA, which
    smtplib.LMTP doesn't read."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.f = self.sock.makefile("rb")
        self.expect(220, self.reply())
        self.send(b"LHLO soak.example")
        self.expect(250, self.reply())

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\r\n")

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.f.readline()
            if not line.endswith(b"\n"):
                raise ConnectionError(f"LMTP connection closed ({b''.join(lines)!r})")
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), b"".join(lines).decode(errors="replace").strip()

    @staticmethod
    def expect(code: int, reply: tuple[int, str]) -> None:
        if reply[0] != code:
            raise RuntimeError(f"LMTP: expected {code}, got {reply[1]!r}")

    def deliver(self, rcpts: list[str], raw: bytes) -> list[tuple[str, int, str]]:
        self.send(b"MAIL FROM:<sender@soak.example> BODY=8BITMIME")
        self.expect(250, self.reply())
        accepted, out = [], []
        for r in rcpts:
            self.send(f"RCPT TO:<{r}>".encode())
            code, text = self.reply()
            (accepted.append(r) if code == 250 else out.append((r, code, text)))
        if not accepted:
            self.send(b"RSET")
            self.reply()
            return out
        self.send(b"DATA")
        self.expect(354, self.reply())
        data = re.sub(rb"(?m)^\.", b"..", raw)
        self.sock.sendall(data + b".\r\n")
        for r in accepted:
            code, text = self.reply()
            out.append((r, code, text))
        return out

    def close(self) -> None:
        try:
            self.send(b"QUIT")
            self.reply()
        except OSError:
            pass
        finally:
            self.f.close()
            self.sock.close()


class Deliverer:
    def __init__(self, ix: int, dc: DovecotInstance, ledger: Ledger, seed: int):
        self.src = ix + 1
        self.dc = dc
        self.ledger = ledger
        self.seed = seed
        self.rng = random.Random(f"{seed}:lmtp:{ix}")
        self.name = f"lmtp{ix}"
        self.n = 0

    def recipients(self) -> list[str]:
        users = [u for u in RW_USERS]
        if self.ledger.user_size(RO_USER) < sum(PRELOAD.values()) + 60:
            users.append(RO_USER)   # nobody expunges its mail: cap it
        count = 2 if self.rng.random() < 0.15 else 1
        return self.rng.sample(users, count)

    def run(self) -> None:
        while not self.ledger.stop.is_set():
            conn = None
            inflight: tuple = (None, [])    # a delivery without its replies yet
            try:
                conn = LmtpSession(self.dc.lmtp_port)
                for _ in range(self.rng.randint(5, 50)):
                    if self.ledger.stop.is_set():
                        break
                    self.n += 1
                    msg = gen_message(self.seed, self.src, self.n)
                    rcpts = self.recipients()
                    inflight = (msg, rcpts)
                    start = time.perf_counter()
                    results = conn.deliver(rcpts, msg.raw)
                    self.ledger.count("lmtp.deliver", time.perf_counter() - start)
                    inflight = (None, [])
                    for r, code, text in results:
                        if code == 250:
                            with self.ledger.lock:
                                self.ledger.delivered[r].add(msg.msgid)
                                self.ledger.recipients += 1
                            self.ledger.note(r, msg.msgid, f"{self.name}: delivered")
                        else:
                            self.ledger.error(self.name, f"{msg.msgid} to {r}: {text}")
                            self.ledger.note(r, msg.msgid, f"{self.name}: refused: {text}")
            except Exception as e:      # noqa: BLE001
                self.ledger.error(self.name, f"{type(e).__name__}: {e}")
                lost, rcpts = inflight
                for r in rcpts:     # it may have been stored all the same
                    self.ledger.note(r, lost.msgid, f"{self.name}: delivery failed: "
                                                    f"{type(e).__name__}: {e}")
                time.sleep(0.2)
            finally:
                if conn is not None:
                    conn.close()


# ================================================================= memory

STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "VmSize")


def instance_processes(master: int) -> dict[int, str]:
    """pid -> service name of the master and its children."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat_line.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        if fields[0] == "Z" or (pid != master and int(fields[1]) != master):
            continue
        title = cmdline.split(b"\0")[0].decode(errors="replace").split(" ")[0]
        out[pid] = "master" if pid == master else title.split("/", 1)[-1]
    return out


def read_status(pid: int) -> Optional[dict]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in STATUS_FIELDS:
            out[k] = int(v.split()[0])      # kB
    return out


def cpu_seconds(master: int) -> float:
    """CPU used by the instance: the master with its reaped children
    (cutime/cstime) plus every live child."""
    total = 0
    for pid in instance_processes(master):
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def disk_usage(homes: dict) -> dict:
    """Bytes, summed over the users: the fts index, Dovecot's own index
    files (cache, transaction logs, the rest), the leave_on_server state
    and the mail."""
    out = collections.Counter()
    for home in homes.values():
        for root, dirs, files in os.walk(home):
            rel = Path(root).name
            for name in files:
                try:
                    size = os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    continue
                if rel == "fts-lmdb":
                    out["fts-lmdb"] += size
                elif rel in ("cur", "new", "tmp"):
                    out["mail"] += size
                elif name.startswith("dovecot.index.cache"):
                    out["index.cache"] += size
                elif ".log" in name and name.startswith("dovecot"):
                    out["index.log"] += size
                elif name == "dovecot-attributes":
                    out["attributes"] += size
                elif name.startswith("dovecot"):
                    out["index other"] += size
    return dict(out)


class MemorySampler(threading.Thread):
    def __init__(self, master: int, interval: float, homes: dict):
        super().__init__(name="memory", daemon=True)
        self.master = master
        self.interval = interval
        self.homes = homes
        # {"t": s, "procs": {pid: {service, VmRSS, ...}}, "disk": {what: bytes}}
        self.samples: list[dict] = []
        self.t0 = time.monotonic()
        self.done = threading.Event()

    def sample(self) -> None:
        procs = {}
        for pid, service in instance_processes(self.master).items():
            st = read_status(pid)
            if st and "VmRSS" in st:
                procs[pid] = {"service": service, **st}
        self.samples.append({"t": round(time.monotonic() - self.t0, 2), "procs": procs,
                             "disk": disk_usage(self.homes)})

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)


@dataclass
class ProcMemory:
    pid: int
    service: str
    base: float         # MB RssAnon, median of the middle third
    last_max: float     # MB RssAnon, max of the last third
    allowed: float
    rss_base: float     # MB VmRSS, median of the middle third
    rss_last_max: float
    vmsize_max: float
    series: list = field(default_factory=list)      # (t, RssAnon MB)

    @property
    def growth(self) -> float:
        return self.last_max - self.base

    @property
    def ok(self) -> bool:
        return self.growth <= self.allowed


@dataclass
class ServiceMemory:
    service: str
    procs: int
    base: float         # MB, median of the summed RssAnon, middle third
    last: float         # MB, median of the summed RssAnon, last third
    allowed: float
    rss_base: float     # the same for VmRSS (reported only)
    rss_last: float
    series: list = field(default_factory=list)      # (t, RssAnon MB, VmRSS MB)

    @property
    def growth(self) -> float:
        return self.last - self.base

    @property
    def ok(self) -> bool:
        return self.growth <= self.allowed


def _thirds(series: list, duration: float) -> tuple[list, list]:
    third = duration / 3
    return ([v for t, v in series if third <= t < 2 * third],
            [v for t, v in series if t >= 2 * third])


def analyse_memory(samples: list[dict], duration: float) -> list[ProcMemory]:
    """Per long-lived process: see MEMORY at the top."""
    if not samples:
        return []
    third = duration / 3
    t_start = samples[0]["t"]
    by_pid: dict = collections.defaultdict(list)
    for s in samples:
        for pid, p in s["procs"].items():
            by_pid[int(pid)].append((s["t"] - t_start, p))
    out = []
    for pid, series in sorted(by_pid.items()):
        # long-lived: up before the warm-up ended and alive to the end
        # (an extra process forked later is still warming up)
        middle, last = _thirds(series, duration)
        if series[0][0] > third or len(middle) < 3 or len(last) < 3:
            continue
        base = statistics.median(p.get("RssAnon", 0) for p in middle) / 1024
        out.append(ProcMemory(
            pid, series[0][1]["service"], base,
            max(p.get("RssAnon", 0) for p in last) / 1024,
            max(PROC_TOLERANCE_MB, base * PROC_TOLERANCE_PCT / 100),
            statistics.median(p["VmRSS"] for p in middle) / 1024,
            max(p["VmRSS"] for p in last) / 1024,
            max(p.get("VmSize", 0) for _, p in series) / 1024,
            [(round(t, 1), round(p.get("RssAnon", 0) / 1024, 1)) for t, p in series]))
    return out


def analyse_services(samples: list[dict], duration: float,
                     procs: list[ProcMemory]) -> list[ServiceMemory]:
    """Per service, summed over its long-lived processes."""
    if not samples:
        return []
    t_start = samples[0]["t"]
    long_lived = {p.pid for p in procs}
    out = []
    for service in sorted({p.service for p in procs}):
        series = []
        for s in samples:
            mine = [p for pid, p in s["procs"].items()
                    if int(pid) in long_lived and p["service"] == service]
            series.append((s["t"] - t_start, sum(p.get("RssAnon", 0) for p in mine) / 1024,
                           sum(p["VmRSS"] for p in mine) / 1024))
        middle, last = _thirds([(t, a) for t, a, _ in series], duration)
        rss_middle, rss_last = _thirds([(t, r) for t, _, r in series], duration)
        if not middle or not last:
            continue
        base = statistics.median(middle)
        out.append(ServiceMemory(
            service, sum(1 for p in procs if p.service == service), base,
            statistics.median(last),
            max(SERVICE_TOLERANCE_MB, base * SERVICE_TOLERANCE_PCT / 100),
            statistics.median(rss_middle), statistics.median(rss_last),
            [(round(t, 1), round(a, 1), round(r, 1)) for t, a, r in series]))
    return out


# ================================================================= server

def rules_text() -> str:
    return (f'readonly user {RO_USER} reason "soak: read-only account"\n'
            "allow protocol pop3 mailboxes INBOX\n"
            "allow\n")


MALLOC_ENV = "MALLOC_MMAP_THRESHOLD_"
MALLOC_MMAP_THRESHOLD = "131072"     # glibc's initial value, kept fixed


def service_conf(args, cores: int) -> str:
    imap_procs = args.imap_clients + 4       # + the final comparison's clients
    return f"""\
mail_attribute_dict = file:%h/dovecot-attributes
# glibc raises its mmap threshold the first time a process frees a large
# block, and from then on keeps such blocks in the heap: each process's
# RSS steps up once, at whatever moment its first large message comes
# along, which looks like growth to a memory check. A fixed threshold
# (MALLOC_MMAP_THRESHOLD_, set in the driver's environment, which the
# master passes on) keeps RSS following live memory.
import_environment = TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS NOTIFY_SOCKET {MALLOC_ENV}
# Every session reads its mailbox's transaction log (dovecot.index.log)
# into memory. Dovecot rotates it at 1 MB, or past 32 KB once it is 5
# minutes old: in a mailbox that a soak changes a hundred times faster
# than a person does, that is only reached after the run, so mail
# processes would grow with the logs throughout. Rotating at 128 KB
# lets the processes reach their steady size within the warm-up.
mail_index_log_rotate_max_size = 128k
# Long-lived processes: each serves many sessions (one at a time, as
# Dovecot recommends for mail processes), and process_min_avail ones are
# never idle-killed, so the same processes live through the whole run.
service imap {{
  service_count = 0
  client_limit = 1
  process_min_avail = {imap_procs}
  process_limit = {imap_procs + 4}
}}
service pop3 {{
  service_count = 0
  client_limit = 1
  process_min_avail = {args.pop3_devices + 1}
  process_limit = {args.pop3_devices + 4}
}}
service lmtp {{
  service_count = 0
  client_limit = 1
  process_min_avail = {args.deliverers + 1}
  process_limit = {args.deliverers + 4}
}}
service indexer-worker {{
  process_min_avail = {cores}
  process_limit = {cores}
}}
service imap-login {{
  service_count = 0
  process_min_avail = {cores}
}}
service pop3-login {{
  service_count = 0
  process_min_avail = {cores}
}}
"""


def make_users(args) -> list[dict]:
    users = [{"name": u} for u in USERS]
    for i in range(args.pop3_devices):
        owner = RW_USERS[i % len(RW_USERS)]
        users.append({"name": f"{owner}-d{i}", "passdb_fields": {"user": owner},
                      "fields": {"pop3_device": f"d{i}",
                                 "leave_on_server_new_only": "yes" if i % 2 == 0 else "no"}})
    return users


def devices(args) -> list[tuple[str, str, bool]]:
    return [(RW_USERS[i % len(RW_USERS)], f"{RW_USERS[i % len(RW_USERS)]}-d{i}", i % 2 == 0)
            for i in range(args.pop3_devices)]


# Where the plugins are: build/, or what PLUGIN_BUILD_DIR names (make
# SANITIZE=1 sets it to build/asan, with SANITIZER_PRELOAD, which the
# harness then preloads into every Dovecot process).
DEFAULT_PLUGIN_DIR = Path(getattr(dovecot_instance, "DEFAULT_PLUGIN_DIR", REPO / "build"))
SANITIZED = bool(getattr(dovecot_instance, "SANITIZER_PRELOAD", ""))


def private_plugin_dir(work: Path, source: Path) -> Path:
    """A copy of the built *.so: other work may rebuild build/ during the run."""
    target = work / "plugins"
    target.mkdir()
    sos = sorted(source.glob("*.so"))
    missing = [name for name in ("access_rules", "leave_on_server", "fts_lmdb")
               if not any(name in p.name for p in sos)]
    if missing:
        raise RuntimeError(f"no {', '.join(missing)} plugin in {source}; "
                           "run `make` first")
    for so in sos:
        shutil.copy2(so, target / so.name)
    os.chmod(work, 0o755)
    os.chmod(target, 0o755)
    return target


def start_server(args, work: Path) -> DovecotInstance:
    os.environ[MALLOC_ENV] = MALLOC_MMAP_THRESHOLD
    rules = work / "access_rules.conf"
    rules.write_text(rules_text())
    os.chmod(rules, 0o644)
    cores = os.cpu_count() or 1
    dc = DovecotInstance(
        plugin_dir=private_plugin_dir(work, args.plugin_dir),
        mail_plugins="access_rules leave_on_server fts fts_lmdb"
                     + (" notify mail_log" if args.trace else ""),
        plugin_settings={
            **({"mail_log_events": "delete undelete expunge copy flag_change save",
                "mail_log_fields": "uid box msgid flags"} if args.trace else {}),
            "access_rules_file": str(rules),
            "leave_on_server_policy": "keep",
            "fts": "lmdb",
            "fts_autoindex": "yes",
            # a failing lookup must answer NO, not fall back silently
            "fts_enforced": "yes",
        },
        users=make_users(args), extra_conf=service_conf(args, cores))
    dc.START_TIMEOUT = 60
    return dc.start()


def preload(dc: DovecotInstance, ledger: Ledger, seed: int) -> None:
    n = 0
    for user in USERS:
        for mailbox in MAILBOXES:
            msgs = []
            for _ in range(PRELOAD[mailbox]):
                n += 1
                msgs.append(gen_message(seed, 0, n))
            load_maildir(dc, user, [m.raw for m in msgs], mailbox=mailbox)
            ledger.delivered[user].update(m.msgid for m in msgs)
        res = dc.doveadm("index", "-u", user, "*", timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"doveadm index -u {user}: {res.stderr}")


# ================================================================= checks

def final_contents(dc: DovecotInstance, user: str) -> list[tuple[str, int, str]]:
    """(mailbox, uid, Message-ID) of every message of the user."""
    res = dc.doveadm("-f", "tab", "fetch", "-u", user, "mailbox uid hdr.message-id",
                     "all", timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"doveadm fetch -u {user}: {res.stderr}")
    out = []
    for line in res.stdout.splitlines()[1:]:
        mailbox, uid, msgid = (line.split("\t") + ["", ""])[:3]
        out.append((mailbox, int(uid), msgid.strip().strip("<>")))
    return out


def check_accounting(dc: DovecotInstance, ledger: Ledger) -> tuple[list[str], str, dict]:
    fails = []
    totals = collections.Counter()
    contents = {}
    for user in USERS:
        rows = final_contents(dc, user)
        contents[user] = rows
        present = collections.Counter(msgid for _, _, msgid in rows)
        dupes = [m for m, c in present.items() if c > 1]
        delivered, expunged = ledger.delivered[user], ledger.expunged[user]
        present_set = set(present)
        lost = delivered - present_set - expunged
        unknown = present_set - delivered
        # a delivery whose reply was lost (the LMTP process died, say) may
        # still have been stored: whether an IMAP client then expunged it
        # or it stayed, it was never delivered as far as the driver knows
        ghosts = expunged - delivered
        back = present_set & expunged
        totals["delivered"] += len(delivered)
        totals["present"] += len(present_set)
        totals["expunged"] += len(expunged)
        where = collections.defaultdict(list)
        for mailbox, uid, msgid in rows:
            where[msgid].append(f"{mailbox} UID {uid}")
        for what, ids in (("missing (neither present nor expunged by IMAP)", lost),
                          ("present but never delivered", unknown),
                          ("present although expunged", back),
                          ("expunged by IMAP but never delivered", ghosts),
                          ("present more than once", dupes)):
            if ids:
                fails.append(f"{user}: {len(ids)} messages {what}: "
                             + ", ".join(sorted(ids)[:5]))
                for msgid in sorted(ids)[:3]:
                    events = "; ".join(f"t={t} {e}" for t, e in
                                       ledger.history.get((user, msgid), []))
                    fails.append(f"  {msgid} now at {where.get(msgid) or 'nowhere'}; "
                                 f"history: {events or '(preloaded, nothing recorded)'}")
    summary = (f"{totals['delivered']} delivered (incl. preload) = "
               f"{totals['present']} present + {totals['expunged']} expunged by IMAP "
               f"(IMAP moved {ledger.moved}; POP3 retrieved {ledger.pop3_retrieved}, "
               f"deleted {ledger.pop3_deleted} under keep, removed none)")
    return fails, summary, contents


def check_log(dc: DovecotInstance) -> tuple[list[str], list[str]]:
    """(crash lines, Error lines) of the whole log."""
    text = dc.log_text()
    crashes = [l for l in text.splitlines()
               if re.search(r"\b(Panic|Fatal): |killed with signal|segfault", l)]
    errors = [l for l in text.splitlines() if re.search(r"\bError: ", l)]
    return crashes, errors


def copy_maildir(src: Path, dst: Path, uid: int, gid: int) -> None:
    """The mail itself (cur/new files, uidlist, keywords, subfolders),
    without Dovecot's indexes or the fts index."""
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        dirs[:] = [d for d in dirs if d != "fts-lmdb" and not d.startswith("fts")]
        target = dst / rel
        target.mkdir(mode=0o700, exist_ok=True)
        os.chown(target, uid, gid)
        for name in files:
            keep = (rel.name in ("cur", "new") or name in
                    ("dovecot-uidlist", "dovecot-keywords", "subscriptions",
                     "maildirfolder"))
            if not keep or rel.name == "tmp":
                continue
            shutil.copy2(Path(root) / name, target / name)
            os.chown(target / name, uid, gid)


def search_queries(rng: random.Random, rows: list[tuple[int, str]],
                   gone: list[str]) -> list[str]:
    """Queries on one mailbox: unique words of sampled present messages,
    of expunged ones, and vocabulary queries with flags and keywords."""
    qs = ["ALL"]
    for _, msgid in rng.sample(rows, min(len(rows), 25)):
        key = parse_msgid(msgid)
        if key is None:
            continue
        src, n = key
        qs += [f'BODY "{body_token(src, n)}"', f'TEXT "{subject_token(src, n)}"',
               f'SUBJECT "{subject_token(src, n)}"', f'BODY "{attach_token(src, n)}"',
               f'HEADER X-Soak-Key "{soak_key(src, n)}"']
    for msgid in gone[:8]:
        key = parse_msgid(msgid)
        if key:
            qs.append(f'BODY "{body_token(*key)}"')
    for w in rng.sample(VOCAB, 10):
        w2 = rng.choice(VOCAB)
        qs += [f'BODY "{w}"', f'TEXT "{w}"', f'SUBJECT "{w}"', f'FROM "{w}"',
               f'NOT BODY "{w}"', f'OR BODY "{w}" SUBJECT "{w2}"',
               f'BODY "{w} {w2}"', f'FLAGGED BODY "{w}"', f'SEEN TEXT "{w}"',
               f'KEYWORD $Soak1 BODY "{w}"', f'LARGER 60000 TEXT "{w}"']
    qs += [f'BODY "{w}"' for w in NONASCII] + [f'TEXT "{w.upper()}"' for w in NONASCII]
    qs += ['BODY "zq1x"', 'BODY "zq0x1"', 'BODY "at"', 'TO "soak.example"',
           'HEADER Received "LMTP"', 'CC "example"', 'UNKEYWORD $Soak2 BODY "zq"',
           'ANSWERED', 'FLAGGED', 'KEYWORD $Soak2']
    return qs


def fetch_items(rng: random.Random, seed: int, key: tuple[int, int]) -> list[str]:
    msg = gen_message(seed, *key)
    items = []
    for section, (body, _) in msg.parts.items():
        o = rng.randint(0, len(body))
        items += [f"BINARY.SIZE[{section}]", f"BINARY.PEEK[{section}]<{o}.{rng.randint(1, 70000)}>",
                  f"BODY.PEEK[{section}]<{o}.{rng.randint(1, 70000)}>"]
    items.append(f"BODY.PEEK[TEXT]<{rng.randint(0, len(msg.text))}.65536>")
    return items


def compare_with_stock(dc: DovecotInstance, work: Path, seed: int,
                       contents: dict, ledger: Ledger) -> tuple[list[str], str]:
    rng = random.Random(f"{seed}:final")
    stock = DovecotInstance(users=list(USERS), protocols="imap")
    fails: list[str] = []
    n_queries = n_fetches = 0
    boxes = 0
    try:
        stock.start()
        for user in USERS:
            st = os.stat(stock.home(user))
            copy_maildir(dc.maildir(user), stock.maildir(user), st.st_uid, st.st_gid)
        for user in USERS:
            rows = contents[user]
            for mailbox in MAILBOXES:
                boxes += 1
                mine = [(uid, m) for mb, uid, m in rows if mb == mailbox]
                present = {m for _, _, m in rows}
                gone = sorted(ledger.expunged[user] - present)
                queries = search_queries(rng, mine, rng.sample(gone, min(8, len(gone))))
                with SearchClient(stock, user, PASSWORD, mailbox) as s, \
                        SearchClient(dc, user, PASSWORD, mailbox) as f:
                    for q in queries:
                        n_queries += 1
                        mm = diff_answers(q, s.search(q), f.search(q))
                        if mm is not None:
                            fails.append(f"{user} {mailbox}: {mm}")
                # FETCH slices of indexed mail, byte for byte
                with RawImap(stock.imap_port, user, mailbox=mailbox) as s, \
                        RawImap(dc.imap_port, user, mailbox=mailbox) as f:
                    for uid, msgid in rng.sample(mine, min(len(mine), 12)):
                        key = parse_msgid(msgid)
                        if key is None:
                            continue
                        for item in fetch_items(rng, seed, key):
                            cmd = f"UID FETCH {uid} ({item})"
                            n_fetches += 1
                            a, b = s.command(cmd), f.command(cmd)
                            if a.wire() != b.wire():
                                fails.append(f"{user} {mailbox}: "
                                             + describe_difference(cmd, a, b))
    finally:
        stock.stop()
    return fails, (f"{n_queries} searches and {n_fetches} FETCH slices over {boxes} "
                   f"mailboxes of {len(USERS)} users")


# ================================================================= report

def disk_summary(samples: list[dict], duration: float, timeline: list) -> str:
    """How the fts index and the mail changed over the judged two thirds."""
    if len(samples) < 3:
        return ""
    t_start = samples[0]["t"]
    third = duration / 3
    judged = [s for s in samples if s["t"] - t_start >= third]
    if len(judged) < 2:
        return ""
    first, last = judged[0], judged[-1]
    # deliveries between the two samples, from the per-window counts
    def delivered_at(t: float) -> float:
        for (ta, ca), (tb, cb) in zip(timeline, timeline[1:]):
            if ta <= t <= tb:
                frac = (t - ta) / max(tb - ta, 1e-6)
                return ca["lmtp.deliver"] + frac * (cb["lmtp.deliver"] - ca["lmtp.deliver"])
        return timeline[-1][1]["lmtp.deliver"]
    n = delivered_at(last["t"] - t_start) - delivered_at(first["t"] - t_start)
    fts0, fts1 = first["disk"].get("fts-lmdb", 0), last["disk"].get("fts-lmdb", 0)
    mail0, mail1 = first["disk"].get("mail", 0), last["disk"].get("mail", 0)
    per = f", {(fts1 - fts0) / n:.0f} bytes per delivered message" if n > 0 else ""
    return (f"from t={first['t'] - t_start:.0f} s to {last['t'] - t_start:.0f} s the fts index "
            f"went {fts0 / 1e6:.1f} -> {fts1 / 1e6:.1f} MB ({(fts1 - fts0) / 1e6:+.1f}{per}) "
            f"while the mail went {mail0 / 1e6:.1f} -> {mail1 / 1e6:.1f} MB")


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> int:
    global RW_USERS, USERS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--max-requests", type=int, default=1_000_000,
                    help="stop after this many requests (0: no limit)")
    ap.add_argument("--imap-clients", type=int, default=8)
    ap.add_argument("--pop3-devices", type=int, default=4)
    ap.add_argument("--deliverers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sample-interval", type=float, default=0,
                    help="seconds between memory samples (default: --seconds/90, 0.5-5)")
    ap.add_argument("--plugin-dir", type=Path, default=DEFAULT_PLUGIN_DIR,
                    help="where the built plugins are (default: %(default)s)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the instance directory (also KEEP_DOVECOT=1)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--trace", action="store_true",
                    help="diagnosis: log every IMAP client's exchange to OUT/trace/, and "
                         "expunges, copies and flag changes in Dovecot's log (mail_log; "
                         "its pop3 'expunge' lines are DELEs leave_on_server only hid)")
    ap.add_argument("--rw-users", type=int, default=len(RW_USERS), choices=range(2, 5),
                    help="diagnosis: load only the first N read-write users (more "
                         "contention per mailbox; default %(default)s)")
    args = ap.parse_args()
    RW_USERS = RW_USERS[:args.rw_users]
    USERS = RW_USERS + (RO_USER,)
    if args.imap_clients < 1 or args.pop3_devices < 0 or args.deliverers < 1:
        ap.error("need at least one IMAP client and one deliverer")
    if args.keep:
        os.environ["KEEP_DOVECOT"] = "1"
    interval = args.sample_interval or min(5.0, max(0.5, args.seconds / 90))
    cores = os.cpu_count() or 1

    log(f"soak: {args.seconds:g} s (max {args.max_requests} requests), "
        f"{args.imap_clients} IMAP clients, {args.pop3_devices} POP3 devices, "
        f"{args.deliverers} LMTP deliverers, seed {args.seed}, {cores} cores")
    work = Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp"))
    ledger = Ledger(args.max_requests)
    if args.trace:
        ledger.trace_dir = args.out / "trace"
        ledger.trace_dir.mkdir(parents=True, exist_ok=True)
    dc = None
    rc = 2
    try:
        try:
            dc = start_server(args, work)
            t = time.perf_counter()
            preload(dc, ledger, args.seed)
            log(f"server {dc.dir}: imap {dc.imap_port}, pop3 {dc.pop3_port}, "
                f"lmtp {dc.lmtp_port}; plugins from {args.plugin_dir}"
                f"{' (sanitized)' if SANITIZED else ''}; preloaded "
                f"{sum(PRELOAD.values())} messages per user x {len(USERS)} users "
                f"and indexed them in {time.perf_counter() - t:.1f} s")
        except (DovecotStartError, RuntimeError, OSError) as e:
            log(f"FAIL setup: {e}")
        else:
            rc = run(args, dc, ledger, work, interval, cores)
    finally:
        if dc is not None:
            try:
                dc.stop()
            except AssertionError as e:     # the harness's SanitizerError
                log(f"FAIL sanitizer reports written at shutdown:\n{str(e)[:4000]}")
                rc = 1
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"--keep: leaving {work}")
    return rc


def run(args, dc: DovecotInstance, ledger: Ledger, work: Path, interval: float,
        cores: int) -> int:
    workers = []
    for i in range(args.imap_clients):
        workers.append(threading.Thread(target=ImapClient(i, dc, ledger, args.seed).run,
                                        name=f"imap{i}", daemon=True))
    for i, (user, login, new_only) in enumerate(devices(args)):
        workers.append(threading.Thread(
            target=Pop3Device(i, dc, ledger, args.seed, user, login, new_only).run,
            name=f"pop3-{login}", daemon=True))
    for i in range(args.deliverers):
        workers.append(threading.Thread(target=Deliverer(i, dc, ledger, args.seed).run,
                                        name=f"lmtp{i}", daemon=True))

    sampler = MemorySampler(dc.proc.pid, interval, {u: dc.home(u) for u in USERS})
    cpu0 = cpu_seconds(dc.proc.pid)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    load0 = os.getloadavg()
    t0 = time.monotonic()
    sampler.start()
    for w in workers:
        w.start()
    deadline = t0 + args.seconds
    window = max(5.0, args.seconds / 12)
    next_progress = t0 + window
    timeline = [(0.0, collections.Counter())]   # (t, counts so far)
    try:
        while not ledger.stop.is_set() and time.monotonic() < deadline:
            ledger.stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= next_progress:
                next_progress += window
                el = time.monotonic() - t0
                with ledger.lock:
                    timeline.append((el, collections.Counter(ledger.counts)))
                log(f"  {el:5.0f} s: {ledger.requests} requests "
                    f"({ledger.requests / el:.0f}/s), {ledger.counts['lmtp.deliver']} "
                    f"deliveries, {ledger.error_count} errors, {ledger.wrong_count} "
                    f"wrong answers")
    except KeyboardInterrupt:
        ledger.stop.set()
        raise
    ledger.stop.set()
    load1 = os.getloadavg()
    elapsed = time.monotonic() - t0
    with ledger.lock:
        # throughput counts what was done in the timed run, not the
        # LOGOUTs and QUITs of draining
        stop_counts = collections.Counter(ledger.counts)
        if elapsed - timeline[-1][0] > 1:
            timeline.append((elapsed, stop_counts))
    cpu1 = cpu_seconds(dc.proc.pid)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    hung = []
    for w in workers:
        w.join(IO_TIMEOUT + 10)
        if w.is_alive():
            hung.append(w.name)
    sampler.sample()
    sampler.done.set()
    sampler.join()
    drained = time.monotonic() - t0 - elapsed
    for name in hung:
        ledger.error(name, "did not stop (hung on a reply?)")

    # the last QUITs' flag updates are written before the reply; give the
    # indexer a moment so the log has everything (answers don't depend on it)
    time.sleep(1.0)

    results: dict = {"args": {k: (str(v) if isinstance(v, Path) else v)
                              for k, v in vars(args).items()},
                     "cores": cores, "elapsed_s": round(elapsed, 2)}
    fails: list[str] = []
    lines: list[str] = []

    def out(line: str = "") -> None:
        lines.append(line)
        log(line)

    # ------------------------------------------------------------ throughput
    out("")
    out(f"== throughput over {elapsed:.1f} s ({cores} cores; "
        f"{drained:.1f} s to drain the clients)")
    out(f"  {'request':<15}{'count':>9}{'per s':>9}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}")
    total = 0
    for kind in sorted(stop_counts):
        c = stop_counts[kind]
        total += c
        lat = [x * 1000 for x in ledger.latency[kind]]
        out(f"  {kind:<15}{c:>9}{c / elapsed:>9.1f}{pct(lat, 50):>9.1f}"
            f"{pct(lat, 95):>9.1f}{pct(lat, 99):>9.1f}{max(lat):>9.1f}")
    deliveries = stop_counts["lmtp.deliver"]
    dovecot_cpu = cpu1 - cpu0
    driver_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    out(f"  total: {total} requests, {total / elapsed:.1f}/s, "
        f"{total / elapsed / cores:.1f}/s per core")
    out(f"  deliveries: {deliveries} ({ledger.recipients} recipients), "
        f"{deliveries / elapsed:.1f}/s, {deliveries / elapsed / cores:.1f}/s per core")
    out(f"  machine load average (1 min) {load0[0]:.1f} at the start, {load1[0]:.1f} at "
        f"the end (this run's own load is about {(dovecot_cpu + driver_cpu) / elapsed:.1f})")
    out(f"  CPU: Dovecot {dovecot_cpu:.1f} s ({dovecot_cpu / elapsed / cores * 100:.0f}% "
        f"of {cores} cores, {dovecot_cpu / max(total, 1) * 1000:.2f} ms per request), "
        f"driver {driver_cpu:.1f} s ({driver_cpu / elapsed / cores * 100:.0f}%)")
    # did it hold? requests/s per window, by protocol
    out(f"  requests/s per {window:.0f} s window (imap / pop3 / lmtp deliveries / total):")
    rows = []
    for (ta, ca), (tb, cb) in zip(timeline, timeline[1:]):
        d = cb - ca
        dt = max(tb - ta, 1e-6)
        group = {g: sum(v for k, v in d.items() if k.startswith(g)) / dt
                 for g in ("imap", "pop3", "lmtp")}
        rows.append((ta, tb, group, sum(d.values()) / dt))
    for ta, tb, g, tot in rows:
        out(f"    {ta:5.0f}-{tb:4.0f} s: {g['imap']:7.1f} {g['pop3']:7.1f} {g['lmtp']:6.1f}"
            f" {tot:8.1f}")
    results["timeline"] = [{"from_s": round(a, 1), "to_s": round(b, 1),
                            "per_s": {k: round(v, 1) for k, v in g.items()},
                            "total_per_s": round(t, 1)} for a, b, g, t in rows]
    out("  in-run checks passed: " + ", ".join(f"{v} {k}" for k, v in
                                                 sorted(ledger.checks.items())))
    if ledger.expected_no:
        out("  expected refusals: " + ", ".join(f"{v} {k}" for k, v in
                                                 sorted(ledger.expected_no.items())))
    results["throughput"] = {
        "requests": dict(stop_counts), "total": total,
        "per_s": round(total / elapsed, 1), "per_s_per_core": round(total / elapsed / cores, 1),
        "deliveries_per_s": round(deliveries / elapsed, 1),
        "dovecot_cpu_s": round(dovecot_cpu, 1), "driver_cpu_s": round(driver_cpu, 1),
        "loadavg_start": load0, "loadavg_end": load1,
        "latency_ms": {k: {"p50": round(pct(v, 50) * 1000, 2), "p95": round(pct(v, 95) * 1000, 2),
                           "max": round(max(v) * 1000, 2)}
                       for k, v in ledger.latency.items()},
        "checks": dict(ledger.checks), "expected_refusals": dict(ledger.expected_no)}

    # ------------------------------------------------------------ memory
    mem = analyse_memory(sampler.samples, elapsed)
    svc_mem = analyse_services(sampler.samples, elapsed, mem)
    mem_fails: list[str] = []
    out("")
    out(f"== memory: {len(sampler.samples)} samples every {interval:g} s, MB; first third "
        f"warm-up; judged on RssAnon (VmRSS shown)")
    out(f"  per long-lived process, RssAnon middle-third median -> last-third max, allowed "
        f"growth max({PROC_TOLERANCE_MB:g} MB, {PROC_TOLERANCE_PCT:g}%):")
    by_service: dict[str, list[ProcMemory]] = collections.defaultdict(list)
    for pm in mem:
        by_service[pm.service].append(pm)
    for service, pms in sorted(by_service.items()):
        worst = max(pms, key=lambda p: p.growth - p.allowed)
        out(f"    {service:<15}{len(pms):>3} procs  RssAnon {min(p.base for p in pms):4.1f}-"
            f"{max(p.base for p in pms):4.1f} -> max {max(p.last_max for p in pms):4.1f}, "
            f"growth max {worst.growth:+4.1f} (pid {worst.pid});  VmRSS "
            f"{min(p.rss_base for p in pms):4.1f}-{max(p.rss_base for p in pms):4.1f} -> max "
            f"{max(p.rss_last_max for p in pms):4.1f};  VmSize max "
            f"{max(p.vmsize_max for p in pms):4.0f}")
    for pm in mem:
        if not pm.ok:
            mem_fails.append(f"memory: {pm.service} pid {pm.pid}: RssAnon grew {pm.growth:+.1f} MB "
                         f"({pm.base:.1f} -> {pm.last_max:.1f}), allowed {pm.allowed:.1f}; "
                         f"(t, MB) {pm.series[::max(1, len(pm.series) // 12)]}")
    out(f"  per service, summed RssAnon, middle-third median -> last-third median, allowed "
        f"growth max({SERVICE_TOLERANCE_MB:g} MB, {SERVICE_TOLERANCE_PCT:g}%):")
    for sm in svc_mem:
        out(f"    {sm.service:<15}{sm.procs:>3} procs  RssAnon {sm.base:6.1f} -> {sm.last:6.1f} "
            f"({sm.growth:+5.1f}, allowed {sm.allowed:4.1f});  VmRSS {sm.rss_base:6.1f} -> "
            f"{sm.rss_last:6.1f}")
        if not sm.ok:
            mem_fails.append(f"memory: {sm.service} ({sm.procs} processes): RssAnon grew "
                         f"{sm.growth:+.1f} MB in all ({sm.base:.1f} -> {sm.last:.1f}), allowed "
                         f"{sm.allowed:.1f}; (t, RssAnon, VmRSS) "
                         f"{sm.series[::max(1, len(sm.series) // 12)]}")
    if svc_mem:
        step = max(1, len(svc_mem[0].series) // 10)
        out("  samples, summed per service, RssAnon/VmRSS MB at t = "
            + " ".join(f"{t:.0f}" for t, _, _ in svc_mem[0].series[::step]) + " s:")
        for sm in svc_mem:
            if max(a for _, a, _ in sm.series) < 1:
                continue
            out(f"    {sm.service:<15}" + " ".join(f"{a:5.1f}/{r:<5.1f}"
                                                    for _, a, r in sm.series[::step]))
    if sampler.samples:
        step = max(1, len(sampler.samples) // 10)
        picked = sampler.samples[::step]
        if picked[-1] is not sampler.samples[-1]:
            picked.append(sampler.samples[-1])
        out("  on disk, all users, MB at the same times:")
        for what in ("mail", "fts-lmdb", "index.cache", "index.log", "index other",
                     "attributes"):
            out(f"    {what:<15}" + " ".join(f"{s['disk'].get(what, 0) / 1e6:11.2f}"
                                             for s in picked))
    results["memory"] = {
        "interval_s": interval,
        "tolerance": {"process_mb": PROC_TOLERANCE_MB, "process_pct": PROC_TOLERANCE_PCT,
                      "service_mb": SERVICE_TOLERANCE_MB, "service_pct": SERVICE_TOLERANCE_PCT},
        "processes": [{"pid": p.pid, "service": p.service, "anon_base_mb": round(p.base, 2),
                       "anon_last_max_mb": round(p.last_max, 2),
                       "anon_growth_mb": round(p.growth, 2), "allowed_mb": round(p.allowed, 2),
                       "rss_base_mb": round(p.rss_base, 2),
                       "rss_last_max_mb": round(p.rss_last_max, 2),
                       "vmsize_max_mb": round(p.vmsize_max, 1)} for p in mem],
        "services": [{"service": m.service, "procs": m.procs, "anon_base_mb": round(m.base, 2),
                      "anon_last_mb": round(m.last, 2), "anon_growth_mb": round(m.growth, 2),
                      "allowed_mb": round(m.allowed, 2), "rss_base_mb": round(m.rss_base, 2),
                      "rss_last_mb": round(m.rss_last, 2)} for m in svc_mem],
        "samples": sampler.samples}

    # ------------------------------------------------------------ checks
    out("")
    out("== checks")
    errors = ledger.error_count + ledger.wrong_count
    if errors:
        fails.append(f"protocol errors: {ledger.error_count} errors, "
                     f"{ledger.wrong_count} wrong answers")
        for e in (ledger.errors[:15] + ledger.wrong[:15]):
            out(f"    {e}")
    else:
        out("  PASS protocol: 0 errors, 0 wrong answers")

    reports = dc.sanitizer_reports() if hasattr(dc, "sanitizer_reports") else []
    if reports:
        fails.append(f"sanitizer: {len(reports)} ASan/UBSan reports: "
                     + " | ".join(r.strip()[:600] for r in reports[:3]))
    elif SANITIZED:
        out("  PASS sanitizer: no ASan/UBSan report")

    crashes, log_errors = check_log(dc)
    if crashes:
        fails.append(f"log: {len(crashes)} Panic/Fatal/killed/segfault lines: "
                     + " | ".join(crashes[:5]))
    else:
        out("  PASS log: no Panic, Fatal, killed with signal or segfault")
    if log_errors:
        fails.append(f"log: {len(log_errors)} Error lines: " + " | ".join(log_errors[:5]))
    else:
        out("  PASS log: no Error lines")
    warnings = [l for l in dc.log_text().splitlines() if re.search(r"\bWarning: ", l)]
    if warnings:
        out(f"  INFO log: {len(warnings)} Warning lines, e.g. " + " | ".join(
            w[:200] for w in warnings[:3]))

    try:
        acc_fails, acc_summary, contents = check_accounting(dc, ledger)
    except (RuntimeError, OSError) as e:
        acc_fails, acc_summary, contents = [f"could not read the mailboxes: {e}"], "", None
    if acc_fails:
        fails += [f"accounting: {f}" for f in acc_fails]
    else:
        out(f"  PASS accounting: {acc_summary}")
    results["accounting"] = acc_summary

    if contents is not None:
        try:
            cmp_fails, cmp_summary = compare_with_stock(dc, work, args.seed, contents, ledger)
        except Exception as e:      # noqa: BLE001
            cmp_fails, cmp_summary = [f"comparison failed to run: {type(e).__name__}: {e}\n"
                                      + traceback.format_exc()], ""
        if cmp_fails:
            fails += [f"stock comparison: {f}" for f in cmp_fails[:40]]
            if len(cmp_fails) > 40:
                fails.append(f"stock comparison: ... {len(cmp_fails)} differences in all")
        else:
            out(f"  PASS stock comparison: {cmp_summary} equal to stock Dovecot's")
        results["stock_comparison"] = cmp_summary

    disk_line = disk_summary(sampler.samples, elapsed, timeline)
    if disk_line:
        out(f"  INFO disk: {disk_line}")
        results["disk"] = disk_line
    if SANITIZED:
        out("  SKIP memory: not judged under ASan (its quarantine and shadow memory grow "
            "by design)")
    elif mem_fails:
        fails += mem_fails
    elif mem:
        out(f"  PASS memory: {len(mem)} long-lived processes of {len(svc_mem)} services flat "
            f"(largest RssAnon growth: one process {max(p.growth for p in mem):+.1f} MB, "
            f"a service {max(m.growth for m in svc_mem):+.1f} MB)")
    else:
        fails.append(f"memory: the run was too short to judge ({elapsed:.1f} s, "
                     f"{len(sampler.samples)} samples: no process was sampled through the "
                     "middle and last thirds); give it more --seconds or --max-requests")

    for f in fails:
        out(f"FAIL {f}")
    out(f"RESULT: {'FAIL' if fails else 'PASS'}")
    results["fails"] = fails
    results["result"] = "FAIL" if fails else "PASS"

    try:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.txt").write_text(
            "$ " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) + "\n"
            + "\n".join(lines) + "\n")
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    except OSError as e:
        log(f"(could not write results to {args.out}: {e})")
    if fails:
        log(f"(Dovecot log: {dc.log_path}" + (", kept)" if args.keep else
                                              "; run with --keep to keep it)"))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
