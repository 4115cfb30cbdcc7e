"""Helpers for the fts_lmdb indexing, bad-input and crash tests.

Every test runs two throwaway Dovecots side by side with the same mail
under the same UIDs: stock Dovecot (no fts), which is the reference
answer, and Dovecot with `fts fts_lmdb`. Nothing expected is hard-coded:
after each step the same queries go to both and must get the same UIDs.

* lmdb_kwargs / stock_kwargs / start_pair: the two instances.
* gen_message / gen_queries: small generated messages with words of
  their own, so that a query can pick out the messages a step touched.
* assert_same / compare_views: the comparison, failing with the step,
  the query and the UIDs missing and extra.
* assert_log_clean: no Panic, Fatal or "killed with signal" (except
  for processes a test killed itself) in the Dovecot log.
* lmdb_verify: opens an LMDB environment read-only (liblmdb through
  ctypes, in a child process running as the mail user, so a SIGBUS on a
  damaged file can't take pytest down and no root-owned file is left
  behind) and reads every record of every database.

The module under test is build/lib21_fts_lmdb_plugin.so; until it is
built, every test fails with a message saying so (never a skip).
FTS_LMDB_TEST_BACKEND=stock|lucene runs the same steps with another
backend in place of lmdb, to check the harness itself (lmdb-specific file
checks are then left out, and since lucene's answers are not exact,
differences from stock are printed instead of failing the test).
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import pwd
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from dovecot_instance import BUILD_DIR, DEFAULT_PASSWORD, REPO_ROOT, DovecotInstance  # noqa: E402
from fts_helpers import (BACKENDS, COMMON_FTS_SETTINGS, SearchClient,  # noqa: E402
                         backend_available, diff_answers)

LMDB_MODULE = "lib21_fts_lmdb_plugin.so"
BACKEND = os.environ.get("FTS_LMDB_TEST_BACKEND", "lmdb")
IS_LMDB = BACKEND == "lmdb"

# ------------------------------------------------------------ instances


def require_plugin() -> None:
    """Fail (never skip) the calling test if the module isn't built."""
    if IS_LMDB:
        if not (BUILD_DIR / LMDB_MODULE).exists():
            pytest.fail(f"build/{LMDB_MODULE} is not built (run `make`): "
                        "fts_lmdb can't be tested", pytrace=False)
    else:
        why = backend_available(BACKEND)
        if why:
            pytest.fail(f"FTS_LMDB_TEST_BACKEND={BACKEND}: {why}", pytrace=False)


def indexer_conf(vsz_limit: str = "256M") -> str:
    return f"service indexer-worker {{\n  vsz_limit = {vsz_limit}\n}}\n"


def lmdb_kwargs(settings: Optional[dict] = None, autoindex: bool = False,
                mail_plugins: str = "", extra_conf: str = "",
                vsz_limit: str = "256M", **kw) -> dict:
    """DovecotInstance arguments for Dovecot with fts_lmdb.

    fts_enforced = yes (as in fts_helpers.COMMON_FTS_SETTINGS): a failing
    backend must not be hidden by Dovecot's fallback; with it, a lookup
    error makes SEARCH answer NO, which the comparison reports."""
    spec = BACKENDS[BACKEND]
    plugin_settings = {}
    if spec["plugins"]:
        plugin_settings.update(COMMON_FTS_SETTINGS)
    plugin_settings.update(spec["settings"])
    if autoindex and spec["plugins"]:
        plugin_settings["fts_autoindex"] = "yes"
    for k, v in (settings or {}).items():
        if IS_LMDB or not k.startswith("fts_lmdb_"):
            plugin_settings[k] = v
    plugins = " ".join(p for p in (mail_plugins, spec["plugins"]) if p)
    return dict(mail_plugins=plugins, plugin_settings=plugin_settings,
                extra_conf=indexer_conf(vsz_limit) + extra_conf, **kw)


def stock_kwargs(mail_plugins: str = "", extra_conf: str = "",
                 settings: Optional[dict] = None, **kw) -> dict:
    """The reference: the same server without fts."""
    plugin_settings = {k: v for k, v in (settings or {}).items()
                       if not k.startswith("fts")}
    kw.pop("debug", None)
    return dict(mail_plugins=mail_plugins, plugin_settings=plugin_settings,
                extra_conf=extra_conf, **kw)


def start_pair(dovecot, settings: Optional[dict] = None, autoindex: bool = False,
               mail_plugins: str = "", extra_conf: str = "",
               vsz_limit: str = "256M", **kw):
    """(fts, stock): started instances, same users and mail_plugins."""
    require_plugin()
    fts = dovecot(**lmdb_kwargs(settings, autoindex, mail_plugins, extra_conf,
                                vsz_limit, **kw))
    stock = dovecot(**stock_kwargs(mail_plugins, extra_conf, settings, **kw))
    return fts, stock


def mail_ids() -> tuple[int, int]:
    """uid, gid the mail processes run as (nobody when we are root)."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return nobody.pw_uid, nobody.pw_gid
    return os.getuid(), os.getgid()


def make_mail_dir(path: Path, mode: int = 0o755) -> Path:
    """A directory the mail processes can write in (created by us)."""
    path.mkdir(parents=True, exist_ok=True)
    uid, gid = mail_ids()
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def index_dir(dc: DovecotInstance, user: str) -> Path:
    """Where the user's LMDB environment lives: fts_lmdb_path (%u, %n, %h
    expanded as Dovecot does), else <mail index root>/fts-lmdb, which for
    the harness's maildir:~/Maildir is ~/Maildir/fts-lmdb."""
    path = dc.plugin_settings.get("fts_lmdb_path")
    if not path:
        return dc.maildir(user) / "fts-lmdb"
    path = (str(path).replace("%u", user).replace("%n", user)
            .replace("%h", str(dc.home(user))))
    if path.startswith("~/"):
        path = str(dc.home(user)) + path[1:]
    return Path(path)


def data_mdb(dc: DovecotInstance, user: str) -> Path:
    return index_dir(dc, user) / "data.mdb"


def file_state(path: Path) -> Optional[tuple[int, int]]:
    """(size, mtime_ns) or None if missing."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def wait_file_changed(path: Path, before: Optional[tuple[int, int]],
                      timeout: float = 15) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        now = file_state(path)
        if now is not None and now != before:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} not written within {timeout}s "
                                 f"(state before {before}, now {now})")
        time.sleep(0.05)


def dump_db(path_dir: Path, name: str) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of one database of the environment in
    path_dir, in key order, read with mdb_dump."""
    out = subprocess.run(["mdb_dump", "-s", name, str(path_dir)], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    start = out.index("HEADER=END") + 1
    end = out.index("DATA=END")
    lines = [bytes.fromhex(line.strip()) for line in out[start:end]]
    return list(zip(lines[0::2], lines[1::2]))


def _numpack(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7f) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def block_tokens(value: bytes) -> list[bytes]:
    """The tokens a value of the blocks database holds, as
    docs/fts_lmdb.md describes the format (its checksum left out)."""
    next_size, pos = _numpack(value, 0)
    pos += max(next_size - 1, 0)
    count, pos = _numpack(value, pos)
    text_size, pos = _numpack(value, pos)
    end = pos + text_size
    tokens: list[bytes] = []
    while pos < end:
        shared, pos = _numpack(value, pos)
        rest, pos = _numpack(value, pos)
        prev = tokens[-1] if tokens else b""
        assert shared <= len(prev), (shared, prev)
        tokens.append(prev[:shared] + value[pos:pos + rest])
        pos += rest
    assert pos == end and len(tokens) == count, (count, tokens)
    return tokens


def fts_files(dc: DovecotInstance, user: str) -> list[Path]:
    """Files under the user's home named data.mdb/lock.mdb (anywhere)."""
    return sorted(p for p in dc.home(user).rglob("*.mdb"))


# ------------------------------------------------------------ messages

VOCAB = ("apple banana cherry delta echo foxtrot golf hotel india juliet "
         "kilo lima mike november oscar papa quebec romeo sierra tango "
         "uniform victor whiskey xray yankee zulu harbour lantern meadow "
         "pebble quartz saffron thistle velvet willow").split()


def token(tag: str, i: int) -> str:
    """The word only message i of group `tag` has (e.g. "delivx3q")."""
    return f"{tag}x{i}q"


def gen_message(tag: str, i: int, extra_body: str = "",
                extra_headers: Optional[dict] = None) -> bytes:
    """A small message with words of its own: token(tag, i) in the body,
    "<tag> subject <i>" as Subject, user<i>@<tag>.example as From, and a
    few vocabulary words chosen from a seeded generator."""
    rng = random.Random(f"{tag}:{i}")
    words = " ".join(rng.choice(VOCAB) for _ in range(12))
    lines = [f"From: Sender {tag.title()} {i} <user{i}@{tag}.example>",
             f"To: rcpt{i % 3}@example.org",
             f"Subject: {tag} subject {i} {rng.choice(VOCAB)}",
             f"Message-ID: <{tag}.{i}@gen.example>",
             "Date: Thu, 01 Jan 2015 00:00:00 +0000",
             "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=utf-8"]
    lines += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
    body = (f"Hello, this is message {i} of {tag}.\n{words}\n"
            f"The marker is {token(tag, i)} here.\ncommonword für alle\n"
            + extra_body)
    return ("\r\n".join(lines) + "\r\n\r\n" +
            body.replace("\n", "\r\n")).encode("utf-8")


def gen_queries(tag: str, indices: Sequence[int]) -> list[str]:
    """A handful of BODY/TEXT/SUBJECT/FROM/NOT/OR queries on the messages
    `indices` of group `tag`."""
    idx = list(indices)
    a = idx[0]
    b = idx[-1]
    mid = idx[len(idx) // 2]
    rng = random.Random(f"q:{tag}:{idx}")
    return [
        f'BODY "{token(tag, a)}"',
        f'TEXT "{token(tag, b)}"',
        f'BODY "{tag}x"',                         # substring of all tokens
        f'BODY "{token(tag, mid).upper()}"',      # case-insensitive
        f'SUBJECT "{tag} subject {mid}"',
        f'FROM "user{b}@{tag}.example"',
        f'FROM "{tag}.example"',
        f'NOT BODY "{token(tag, a)}"',
        f'OR BODY "{token(tag, a)}" SUBJECT "{tag} subject {b}"',
        f'BODY "{token(tag, mid)}" NOT FROM "user{a}@"',
        f'BODY "{rng.choice(VOCAB)}"',
        'TEXT "commonword"',
        'BODY "für"',
    ]


CORPUS_QUERIES = ['BODY "razor"', 'BODY "spamassassin"', 'TEXT "taint.org"',
                  'FROM "@example.com"', 'SUBJECT "re:"', 'BODY "click here"',
                  'NOT BODY "the"', 'OR BODY "viagra" SUBJECT "perl"']


def corpus_paths(count: Optional[int] = None) -> list[Path]:
    from corpus import ensure_corpus
    paths = ensure_corpus()
    return paths if count is None else paths[:count]


# ------------------------------------------------------------ comparing

def compare_views(fts: DovecotInstance, fts_user: str, fts_mailbox: str,
                  stock: DovecotInstance, stock_user: str, stock_mailbox: str,
                  queries: Iterable[str]) -> list:
    """Like fts_helpers.compare_with_stock, but each side names its own
    user and mailbox (e.g. bob's view of shared/alice/Shared against
    alice's Shared on stock)."""
    with SearchClient(stock, stock_user, DEFAULT_PASSWORD, stock_mailbox) as s, \
            SearchClient(fts, fts_user, DEFAULT_PASSWORD, fts_mailbox) as f:
        all_s, all_f = s.search("ALL"), f.search("ALL")
        if all_s.uids is None or all_s.uids != all_f.uids:
            raise AssertionError(
                f"{fts_user}:{fts_mailbox} (fts) and {stock_user}:"
                f"{stock_mailbox} (stock) don't hold the same UIDs: stock "
                f"{all_s.status} {len(all_s.uids or [])}, fts {all_f.status} "
                f"{len(all_f.uids or [])}")
        out = []
        for q in queries:
            mm = diff_answers(q, s.search(q), f.search(q))
            if mm is not None:
                out.append(mm)
        return out


def format_mismatches(mism: list) -> str:
    """One line per differing query; queries the fts side refused (NO/BAD)
    are grouped under their status."""
    lines, refused = [], {}
    for m in mism:
        if m.fts is None and m.stock is not None:
            status = re.sub(r"\s*\[\d{4}-\d\d-\d\d [\d:]+\]|\s*\([\d.+ ]+secs\)\.?",
                            "", m.fts_status)
            refused.setdefault(status, []).append(m.query)
        else:
            lines.append(str(m))
    for status, queries in refused.items():
        lines.append(f"fts answered {status!r} to {len(queries)} queries: "
                     + "; ".join(queries[:6]) + (" ..." if len(queries) > 6 else ""))
    return "\n  ".join(lines)


def assert_same(fts: DovecotInstance, stock: DovecotInstance, user: str,
                queries: Iterable[str], mailbox: str = "INBOX", step: str = "",
                stock_user: Optional[str] = None,
                stock_mailbox: Optional[str] = None) -> None:
    """Every query answered alike by both, else fail naming the step,
    the queries and the UIDs (plus the fts instance's recent log)."""
    mark = fts.log_mark()
    try:
        mism = compare_views(fts, user, mailbox, stock, stock_user or user,
                             stock_mailbox or mailbox, queries)
    except (ConnectionError, OSError) as e:
        time.sleep(0.3)
        crashes = crash_lines(fts, mark) or crash_lines(stock, 0)
        raise AssertionError(
            f"step {step or '?'}: {user}:{mailbox}: connection lost during "
            f"SEARCH ({e}); log:\n" + "\n".join(crashes[:6])) from e
    if mism and not IS_LMDB:
        # harness check with another backend: its answers aren't exact
        print(f"[{BACKEND}] step {step}: {user}:{mailbox}: " +
              "; ".join(str(m) for m in mism))
        return
    if mism:
        tail = "\n".join(fts.log_text()[mark:].splitlines()[-12:])
        raise AssertionError(
            f"step {step or '?'}: {user}:{mailbox}: {len(mism)} queries "
            f"answered differently from stock:\n  " + format_mismatches(mism) +
            f"\n--- fts log since the step began (tail) ---\n{tail}")


# ------------------------------------------------------------ logs

CRASH_RE = re.compile(r"Panic|Fatal|killed with signal")
LMDB_CORRUPTION_RE = re.compile(
    r"MDB_CORRUPTED|MDB_PANIC|MDB_PAGE_NOTFOUND|MDB_INVALID|MDB_BAD_TXN|"
    r"MDB_VERSION_MISMATCH|Located page was wrong type|"
    r"Update of meta page failed|Requested page not found|"
    r"File is not an LMDB file|fts-lmdb.*(?i:corrupt)")


def crash_lines(dc: DovecotInstance, since: int = 0,
                killed: Iterable[int] = ()) -> list[str]:
    """Log lines with Panic, Fatal or "killed with signal", leaving out the
    master's report of a process the test SIGKILLed itself."""
    killed = set(killed)
    out = []
    for line in dc.log_text()[since:].splitlines():
        if not CRASH_RE.search(line):
            continue
        m = re.search(r"child (\d+) killed with signal 9\b", line)
        if m and int(m.group(1)) in killed:
            continue
        out.append(line)
    return out


def assert_log_clean(dc: DovecotInstance, since: int = 0,
                     killed: Iterable[int] = (), what: str = "") -> None:
    # The log process writes asynchronously; give it a moment.
    time.sleep(0.2)
    bad = crash_lines(dc, since, killed)
    assert not bad, (f"{what or 'Dovecot'} log shows crashes:\n" +
                     "\n".join(bad[:20]))


def log_lines(dc: DovecotInstance, pattern: str, since: int = 0) -> list[str]:
    rx = re.compile(pattern)
    return [line for line in dc.log_text()[since:].splitlines() if rx.search(line)]


def wait_log(dc: DovecotInstance, pattern: str, since: int = 0,
             timeout: float = 15) -> re.Match:
    return dc.wait_for_log(pattern, timeout=timeout, since=since)


def wait_indexed(dc: DovecotInstance, user: str, since: int, uid: int,
                 mailbox: str = "INBOX", timeout: float = 30) -> None:
    """With mail_debug: wait until an indexer-worker of `user` logged
    "Mailbox <mailbox>: Indexing UID=<uid>" and then finished that run
    ("Indexed N messages")."""
    prefix = rf"indexer-worker\({re.escape(user)}\).*: Mailbox {re.escape(mailbox)}: "
    m = wait_log(dc, prefix + rf"Indexing UID={uid}\b", since, timeout)
    wait_log(dc, prefix + r"Indexed \d+ messages", m.end(), timeout)


def indexing_lines(dc: DovecotInstance, since: int, user: str = "",
                   mailbox: str = "") -> list[str]:
    """mail_debug lines of messages being indexed (by an indexer-worker,
    or by doveadm index) since the mark."""
    who = re.escape(user) if user else "[^)]*"
    box = re.escape(mailbox) if mailbox else "[^:]*"
    return log_lines(dc, rf"\({who}\).*: Mailbox {box}: Indexing UID=\d+", since)


# Errors stock Dovecot 2.3.19 logs by itself: with fts_autoindex, an imap
# process that queues indexing after COPY/MOVE talks to the indexer socket
# without the handshake it expects.
KNOWN_STOCK_ERRORS = re.compile(
    r"indexer: Error: conn unix:indexer \(pid=\d+,uid=\d+\): "
    r"didn't reply with a valid VERSION line")


def unexpected_errors(dc: DovecotInstance, since: int = 0) -> list[str]:
    """Error/Fatal/Panic lines, without the known stock ones."""
    return [line for line in dc.log_errors(since)
            if not KNOWN_STOCK_ERRORS.search(line)]


def assert_no_errors(dc: DovecotInstance, since: int = 0, what: str = "") -> None:
    time.sleep(0.2)
    bad = unexpected_errors(dc, since)
    if bad and not IS_LMDB:
        print(f"[{BACKEND}] errors logged: " + " | ".join(bad[:3]))
        return
    assert not bad, f"{what or 'Dovecot'} logged errors:\n" + "\n".join(bad[:20])


# ------------------------------------------------------------ IMAP

def imap_ok(typ, data, what: str):
    assert typ == "OK", f"{what}: {typ} {data}"
    return data


@contextlib.contextmanager
def session(dc: DovecotInstance, user: str):
    """A logged-in imaplib client; if the server drops the connection
    (e.g. the imap process crashed), fail with the crash lines of the log
    instead of a bare socket error."""
    mark = dc.log_mark()
    c = dc.imap(user)
    try:
        yield c
        c.logout()
    except (imaplib.IMAP4.abort, OSError) as e:
        time.sleep(0.3)
        crashes = crash_lines(dc, mark)
        raise AssertionError(
            f"IMAP session of {user} broke off ({e}); log:\n" +
            "\n".join(crashes[:6] or dc.log_text()[mark:].splitlines()[-10:])) from e


def append(dc: DovecotInstance, user: str, mailbox: str,
           messages: Iterable[bytes]) -> None:
    with session(dc, user) as c:
        for msg in messages:
            imap_ok(*c.append(mailbox, None, None, msg), f"APPEND to {mailbox}")


def uid_command(dc: DovecotInstance, user: str, mailbox: str, command: str,
                *args: str):
    with session(dc, user) as c:
        imap_ok(*c.select(mailbox), f"SELECT {mailbox}")
        return imap_ok(*c.uid(command, *args), f"UID {command} {args}")


def expunge_uids(dc: DovecotInstance, user: str, mailbox: str,
                 uids: Sequence[int]) -> None:
    with session(dc, user) as c:
        imap_ok(*c.select(mailbox), f"SELECT {mailbox}")
        for i in range(0, len(uids), 500):
            chunk = ",".join(map(str, uids[i:i + 500]))
            imap_ok(*c.uid("STORE", chunk, "+FLAGS.SILENT", r"(\Deleted)"),
                    "STORE \\Deleted")
        imap_ok(*c.expunge(), "EXPUNGE")


def all_uids(dc: DovecotInstance, user: str, mailbox: str = "INBOX") -> list[int]:
    with SearchClient(dc, user, mailbox=mailbox) as c:
        return c.search("ALL").uids or []


def doveadm_ok(dc: DovecotInstance, *args: str, timeout: float = 300):
    res = dc.doveadm(*args, timeout=timeout)
    assert res.returncode == 0, (f"doveadm {' '.join(args)} exited "
                                 f"{res.returncode}: {res.stderr.strip()}")
    return res


def deliver_both(pair, user: str, messages: Sequence[bytes]) -> None:
    for dc in pair:
        for msg in messages:
            dc.deliver(user, msg)


# ------------------------------------------------------------ processes

def holders(path: Path) -> list[int]:
    """Pids of processes with `path` open or mapped."""
    target = str(path)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = False
        try:
            for fd in (entry / "fd").iterdir():
                try:
                    if os.readlink(fd) == target:
                        found = True
                        break
                except OSError:
                    continue
            if not found:
                found = target in (entry / "maps").read_text()
        except OSError:
            continue
        if found:
            pids.append(int(entry.name))
    return pids


def sigkill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def wait_pid_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except OSError:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {pid} still there after {timeout}s")
        time.sleep(0.02)


def release_index(dc: DovecotInstance, user: str, timeout: float = 5) -> list[int]:
    """Wait until no process holds the user's data.mdb (imap sessions end,
    an idle indexer-worker may keep it); SIGKILL what still holds it after
    `timeout`. Returns the pids killed (for crash_lines' `killed`)."""
    path = data_mdb(dc, user)
    deadline = time.monotonic() + timeout
    while (pids := [p for p in holders(path) if p != os.getpid()]):
        if time.monotonic() > deadline:
            for p in pids:
                sigkill(p)
            for p in pids:
                wait_pid_gone(p)
            return pids
        time.sleep(0.1)
    return []


# ------------------------------------------------------------ LMDB check

_VERIFY_SCRIPT = r"""
import ctypes, json, os, sys
path = sys.argv[1]
lib = ctypes.CDLL("liblmdb.so.0")
class Val(ctypes.Structure):
    _fields_ = [("size", ctypes.c_size_t), ("data", ctypes.c_void_p)]
class Info(ctypes.Structure):
    _fields_ = [("mapaddr", ctypes.c_void_p), ("mapsize", ctypes.c_size_t),
                ("last_pgno", ctypes.c_size_t), ("last_txnid", ctypes.c_size_t),
                ("maxreaders", ctypes.c_uint), ("numreaders", ctypes.c_uint)]
class Stat(ctypes.Structure):
    _fields_ = [("psize", ctypes.c_uint), ("depth", ctypes.c_uint),
                ("branch", ctypes.c_size_t), ("leaf", ctypes.c_size_t),
                ("overflow", ctypes.c_size_t), ("entries", ctypes.c_size_t)]
lib.mdb_strerror.restype = ctypes.c_char_p
def err(what, rc):
    print(json.dumps({"ok": False, "error": "%s: %s (%d)" % (
        what, lib.mdb_strerror(rc).decode(errors="replace"), rc)}))
    sys.exit(0)
def call(what, rc):
    if rc != 0:
        err(what, rc)
MDB_RDONLY, MDB_NOLOCK, MDB_NOTFOUND, MDB_INCOMPATIBLE = 0x20000, 0x400000, -30798, -30784
env = ctypes.c_void_p()
call("mdb_env_create", lib.mdb_env_create(ctypes.byref(env)))
call("mdb_env_set_maxdbs", lib.mdb_env_set_maxdbs(env, 1024))
flags = MDB_RDONLY
if not os.path.exists(os.path.join(path, "lock.mdb")):
    flags |= MDB_NOLOCK
call("mdb_env_open", lib.mdb_env_open(env, path.encode(), flags, 0o600))
info = Info()
call("mdb_env_info", lib.mdb_env_info(env, ctypes.byref(info)))
txn = ctypes.c_void_p()
call("mdb_txn_begin", lib.mdb_txn_begin(env, None, MDB_RDONLY, ctypes.byref(txn)))
st = Stat()
MAIN_DBI = 1  # 0 is LMDB's free-page DB
call("mdb_stat", lib.mdb_stat(txn, MAIN_DBI, ctypes.byref(st)))
size = os.path.getsize(os.path.join(path, "data.mdb"))
need = (info.last_pgno + 1) * st.psize
if size < need:
    print(json.dumps({"ok": False, "error": "data.mdb is %d bytes, its meta "
          "page says pages up to %d (%d bytes)" % (size, info.last_pgno, need)}))
    sys.exit(0)
def walk(dbi, name, names):
    cur = ctypes.c_void_p()
    call("mdb_cursor_open %s" % name, lib.mdb_cursor_open(txn, dbi, ctypes.byref(cur)))
    k, v = Val(), Val()
    n, nbytes, op = 0, 0, 0  # MDB_FIRST, then MDB_NEXT
    while True:
        rc = lib.mdb_cursor_get(cur, ctypes.byref(k), ctypes.byref(v), op)
        if rc == MDB_NOTFOUND:
            break
        if rc != 0:
            err("reading %s after %d records" % (name, n), rc)
        key = ctypes.string_at(k.data, k.size)
        nbytes += len(ctypes.string_at(v.data, v.size)) if v.size else 0
        if names is not None:
            names.append(key)
        n += 1
        op = 8
    lib.mdb_cursor_close(cur)
    return n, nbytes
names = []
dbs = {"(free pages)": walk(0, "free", None)[0]}
dbs[""] = walk(MAIN_DBI, "main", names)[0]
for key in names:
    if b"\0" in key or not key:
        continue
    dbi = ctypes.c_uint()
    rc = lib.mdb_dbi_open(txn, key, 0, ctypes.byref(dbi))
    if rc == MDB_INCOMPATIBLE or rc == MDB_NOTFOUND:
        continue
    call("mdb_dbi_open %r" % key, rc)
    dbs[key.decode(errors="replace")] = walk(dbi, key, None)[0]
print(json.dumps({"ok": True, "dbs": dbs, "last_pgno": info.last_pgno,
                  "psize": st.psize, "size": size,
                  "last_txnid": info.last_txnid}))
"""


def lmdb_verify(directory: Path, timeout: float = 120) -> dict:
    """Read every record of the environment in `directory`.

    {"ok": True, "dbs": {name: records}, ...} or {"ok": False, "error": ...}.
    Runs in a child process as the mail user: a damaged file can SIGBUS the
    reader, and as root LMDB could otherwise create a root-owned lock.mdb
    that the mail processes could not open any more."""
    uid, gid = mail_ids()

    def drop():
        if os.geteuid() == 0:
            os.setgid(gid)
            os.setuid(uid)

    res = subprocess.run([sys.executable, "-c", _VERIFY_SCRIPT, str(directory)],
                         capture_output=True, text=True, timeout=timeout,
                         preexec_fn=drop, cwd="/")
    if res.returncode < 0:
        return {"ok": False, "error": f"reader killed by signal "
                f"{signal.Signals(-res.returncode).name} "
                f"(stderr: {res.stderr.strip()[-300:]})"}
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"reader exited {res.returncode}: "
                f"{res.stdout.strip()[-300:]} {res.stderr.strip()[-500:]}"}


def assert_lmdb_ok(dc: DovecotInstance, user: str, what: str = "",
                   nonempty: bool = True) -> dict:
    """The user's environment exists, every record of every database can
    be read, and (nonempty) some named database holds records."""
    if not IS_LMDB:
        return {}
    directory = index_dir(dc, user)
    assert (directory / "data.mdb").is_file(), \
        f"{what}: no {directory}/data.mdb (files: {fts_files(dc, user)})"
    res = lmdb_verify(directory)
    assert res["ok"], f"{what}: LMDB environment {directory} is damaged: {res['error']}"
    if nonempty:
        named = {k: v for k, v in res["dbs"].items() if k not in ("", "(free pages)")}
        assert sum(named.values()) > 0, \
            f"{what}: the LMDB environment {directory} holds no records: {res['dbs']}"
    return res


LMDB_MAGIC = b"\xde\xc0\xef\xbe"  # MDB_MAGIC 0xBEEFC0DE, little-endian


def has_lmdb_magic(path: Path) -> bool:
    """Both meta pages carry LMDB's magic (page header 16 bytes, then
    mm_magic); a freshly rebuilt file has it, garbage hasn't."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return len(head) == 20 and head[16:20] == LMDB_MAGIC
