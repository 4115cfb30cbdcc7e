"""Shared helpers for the access_rules integration tests.

One Dovecot instance per test module (`ArServer`), whose rules file the
tests rewrite as they go: the plugin stat()s the file at every login and
reloads it when it changed, so no `doveadm reload` is needed between tests.

The helpers observe what the server actually did: the reply a real client
got (imaplib, poplib, curl or a raw socket), the decision line the plugin
logged (with the rule's file:line), and the mailbox state as doveadm sees
it (doveadm is never restricted by the rules).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import pytest

from dovecot_instance import BUILD_DIR as PLUGIN_BUILD_DIR, DovecotInstance, make_message

# imaplib (3.11) doesn't know RFC 2971 ID; allow it in every state.
imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED", "LOGOUT"))

# ACCESS_RULES_BUILD_DIR lets the suite run against another build of the
# plugin and tool (default: <repo>/build, what `make` produces).
BUILD_DIR = Path(os.environ.get("ACCESS_RULES_BUILD_DIR", PLUGIN_BUILD_DIR))
TOOL = BUILD_DIR / "access-rules"
PASSWORD = "secret"

IMAP_INTERNAL_ERROR = "Internal error occurred. Refer to server log for more information."
DEFAULT_DENY_REASON = "Access denied by the server's policy."
DEFAULT_READONLY_ERROR = "Read-only session: changes are not allowed from here."


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ------------------------------------------------------------------ server

class ArServer:
    """A Dovecot with the access_rules plugin and a rules directory.

    users: as for DovecotInstance, or a function of the rules directory
    returning them (for per-user access_rules_file fields).

    The rules live in a world-readable directory outside the instance dir
    (mail processes run as an unprivileged user), so that the file's path
    is known before the server starts and can go into dovecot.conf.
    """

    def __init__(self, users, *, global_rules: bool = True,
                 debug_rules: bool = True, extra_conf: str = "",
                 plugin_settings: Optional[dict] = None, **kw):
        self.rules_dir = Path(tempfile.mkdtemp(prefix="access-rules-", dir="/tmp"))
        os.chmod(self.rules_dir, 0o755)
        self.rules_path = self.rules_dir / "rules.conf"
        self.write_rules("")
        settings = dict(plugin_settings or {})
        if global_rules:
            settings.setdefault("access_rules_file", str(self.rules_path))
        if debug_rules:
            extra_conf = "log_debug = category=access_rules\n" + extra_conf
        if callable(users):     # users(rules_dir), for per-user rule paths
            users = users(self.rules_dir)
        self.dc = DovecotInstance(plugin_dir=BUILD_DIR, mail_plugins="access_rules",
                                  plugin_settings=settings, users=list(users),
                                  extra_conf=extra_conf, **kw)

    def start(self) -> "ArServer":
        try:
            self.dc.start()
        except BaseException:
            shutil.rmtree(self.rules_dir, ignore_errors=True)
            raise
        return self

    def stop(self) -> None:
        self.dc.stop()
        shutil.rmtree(self.rules_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def path(self, name: str) -> Path:
        return self.rules_dir / name

    def write_rules(self, text: str, name: str = "rules.conf",
                    mode: int = 0o644) -> Path:
        """Replace a rules file atomically (a new inode, so the plugin's
        cache always notices)."""
        path = self.rules_dir / name
        tmp = self.rules_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        return path

    def rules(self, text: str, name: str = "rules.conf") -> str:
        """Install rules; returns the path as a string for log matching."""
        return str(self.write_rules(text, name))


def server_fixture(**kw):
    """A module-scoped pytest fixture yielding a started ArServer."""

    @pytest.fixture(scope="module")
    def server():
        srv = ArServer(**kw).start()
        try:
            yield srv
        finally:
            srv.stop()

    return server


@pytest.fixture(autouse=True)
def _server_log_on_failure(request):
    """Print the tail of the module server's log when a test fails."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed:
        return
    for value in request.node.funcargs.values():
        if isinstance(value, ArServer) and value.dc.dir is not None:
            tail = "\n".join(value.dc.log_text().splitlines()[-60:])
            print(f"--- {value.dc.log_path} (tail) ---\n{tail}")


@pytest.fixture(autouse=True)
def _no_crash(server):
    """No Panic, Fatal or killed process in the log during the test
    (active in modules that import it and have a `server` fixture)."""
    mark = server.dc.log_mark()
    yield
    assert_no_crash(server.dc, mark)


# ------------------------------------------------------------------ log

DECISION_RE = (
    r"^\S+ \S+ \S+ (?P<proto>imap|pop3)\((?P<user>[^)]*)\)<(?P<pid>\d+)><[^>]*>: "
    r"(?P<level>Info|Debug): access_rules: "
    r"(?P<action>allow|deny|readonly|limit)(?P<refused>: session refused)? by "
    r"(?P<file>/[^:\s]+)(?::(?P<line>\d+))?"
    r"(?P<default> \(default\)| \(built-in default\))?"
    r"(?:: (?P<reason>.*)|(?P<rest>.*))$")


@dataclass
class Decision:
    action: str
    level: str
    file: str
    line: Optional[int]     # None for the built-in default
    default: str            # "", "default" or "built-in default"
    reason: Optional[str]   # what a refused session was told
    rest: str               # e.g. " (visible mailboxes: INBOX,Sent)"
    pid: int
    text: str               # the whole log line

    @property
    def where(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"


def _decision(m: re.Match) -> Decision:
    return Decision(action=m["action"], level=m["level"], file=m["file"],
                    line=int(m["line"]) if m["line"] else None,
                    default=(m["default"] or "").strip(" ()"),
                    reason=m["reason"], rest=m["rest"] or "",
                    pid=int(m["pid"]), text=m.group(0))


def decisions(dc: DovecotInstance, since: int = 0, user: Optional[str] = None,
              proto: Optional[str] = None, pid: Optional[int] = None) -> list[Decision]:
    out = []
    for m in re.finditer(DECISION_RE, dc.log_text()[since:], re.M):
        if (user is None or m["user"] == user) and (proto is None or m["proto"] == proto) \
                and (pid is None or int(m["pid"]) == pid):
            out.append(_decision(m))
    return out


def wait_decision(dc: DovecotInstance, user: str, proto: str, since: int,
                  timeout: float = 5.0, count: int = 1,
                  pid: Optional[int] = None) -> Decision:
    """The `count`th decision logged for user/proto (and mail process pid)
    after `since`."""
    deadline = time.monotonic() + timeout
    while True:
        found = decisions(dc, since, user, proto, pid)
        if len(found) >= count:
            return found[count - 1]
        if time.monotonic() > deadline:
            tail = "\n".join(dc.log_text()[since:].splitlines()[-30:])
            raise AssertionError(
                f"no access_rules decision #{count} for {proto}({user}) in "
                f"{timeout}s; log tail:\n{tail}")
        time.sleep(0.03)


def wait_log(dc: DovecotInstance, pattern: str, since: int,
             timeout: float = 5.0) -> re.Match:
    try:
        return dc.wait_for_log(pattern, timeout=timeout, since=since)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


def assert_no_crash(dc: DovecotInstance, since: int = 0) -> None:
    """No panic or crash since `since` (SIGKILL is only sent by tests)."""
    bad = [l for l in dc.log_text()[since:].splitlines()
           if re.search(r"\b(Panic|Fatal): |killed with signal", l)
           and not re.search(r"killed with signal 9\b", l)]
    assert not bad, "server crashed:\n" + "\n".join(bad)


def session_logged_out(dc: DovecotInstance, proto: str, user: str, since: int,
                       timeout: float = 5.0) -> re.Match:
    """Wait for the mail process's 'Disconnected:' line (it comes after the
    decision line, so a missing decision line is then really missing), of
    the session that logged in after `since`: an earlier session of the
    same user may log its own line after `since`."""
    pid = login_pid(dc, proto, user, since)
    return wait_log(dc, rf"^.* {proto}\({re.escape(user)}\)<{pid}><[^>]*>: "
                        r"Info: Disconnected: .*$", since, timeout)


def login_pid(dc: DovecotInstance, proto: str, user: str, since: int) -> int:
    m = wait_log(dc, rf"{proto}-login: Info: Login: user=<{re.escape(user)}>.*"
                     r"mpid=(\d+)", since)
    return int(m.group(1))


# ------------------------------------------------------------------ clients

@dataclass
class Outcome:
    """How a login went, as the client saw it."""
    proto: str
    refused: bool
    reply: str          # IMAP: the BYE text; POP3: the -ERR line ('' if allowed)
    client: object = None

    def close(self) -> None:
        c, self.client = self.client, None
        if c is None:
            return
        try:
            if isinstance(c, imaplib.IMAP4):
                c.logout()
            else:
                c.quit()
        except (imaplib.IMAP4.error, poplib.error_proto, OSError, EOFError):
            pass


def imap_attempt(dc: DovecotInstance, user: str, password: str = PASSWORD, *,
                 keep: bool = False, client_id: Optional[str] = None,
                 starttls: bool = False, **conn) -> Outcome:
    """Log in with imaplib and run NOOP. A session the plugin refuses gets
    `* BYE [...] reason` after the login reply, which imaplib reports as
    an abort carrying the BYE text."""
    c = dc.imap_connect(**conn)
    try:
        if starttls:
            c.starttls(ssl_context=tls_context())
        typ, data = c.login(user, password)
        assert typ == "OK", (typ, data)
        try:
            if client_id is not None:
                c._simple_command("ID", client_id)
            typ, data = c.noop()
        except imaplib.IMAP4.abort as e:
            text = str(e)
            text = text.split(" => ", 1)[1] if " => " in text else text
            c.shutdown()
            return Outcome("imap", True, text)
        assert typ == "OK", (typ, data)
    except BaseException:
        try:
            c.shutdown()
        except OSError:
            pass
        raise
    out = Outcome("imap", False, "", c)
    if not keep:
        out.close()
    return out


def pop3_attempt(dc: DovecotInstance, user: str, password: str = PASSWORD, *,
                 keep: bool = False, stls: bool = False, **conn) -> Outcome:
    p = dc.pop3_connect(**conn)
    try:
        if stls:
            p.stls(context=tls_context())
        p.user(user)
        try:
            resp = p.pass_(password)
        except poplib.error_proto as e:
            p.close()
            return Outcome("pop3", True, e.args[0].decode())
        assert resp.startswith(b"+OK"), resp
        p.stat()
    except BaseException:
        p.close()
        raise
    out = Outcome("pop3", False, "", p)
    if not keep:
        out.close()
    return out


def attempt(dc: DovecotInstance, proto: str, user: str, **kw) -> Outcome:
    return (imap_attempt if proto == "imap" else pop3_attempt)(dc, user, **kw)


def try_session(srv_or_dc, proto: str, user: str, **kw) -> tuple[Outcome, Decision]:
    """Log in and return what the client saw plus the decision the plugin
    logged for that session (needs allow decisions logged, i.e. debug)."""
    dc = srv_or_dc.dc if isinstance(srv_or_dc, ArServer) else srv_or_dc
    mark = dc.log_mark()
    out = attempt(dc, proto, user, **kw)
    # The session's own mail process: a late line from an earlier session
    # of the same user must not be taken for this one's.
    pid = login_pid(dc, proto, user, mark)
    # an ID after login that the rules look at is a second decision
    count = 2 if kw.get("client_id") is not None else 1
    return out, wait_decision(dc, user, proto, mark, count=count, pid=pid)


def expect_allowed(srv: ArServer, proto: str, user: str, line: Optional[int],
                   **kw) -> Decision:
    """The session works, and the plugin logged an allow (at debug) by
    rules-file:line (line None: the built-in default)."""
    out, dec = try_session(srv, proto, user, **kw)
    assert not out.refused, f"{proto} {user} refused: {out.reply}"
    assert (dec.action, dec.level, dec.line) == ("allow", "Debug", line), dec.text
    assert dec.file == str(srv.rules_path), dec.text
    return dec


def expect_denied(srv: ArServer, proto: str, user: str, line: Optional[int],
                  reason: str, **kw) -> Decision:
    """A deny must reach the client with its reason and be logged at info
    with the rule's file:line."""
    out, dec = try_session(srv, proto, user, **kw)
    assert out.refused, f"{proto} {user} was let in (expected deny by line {line})"
    if proto == "imap":
        assert out.reply == f"[NOPERM] {reason}", out.reply
    else:
        assert out.reply == f"-ERR [SYS/PERM] {reason}", out.reply
    assert (dec.action, dec.level, dec.line, dec.reason) == \
        ("deny", "Info", line, reason), dec.text
    assert dec.file == str(srv.rules_path), dec.text
    return dec


def imap_select(c: imaplib.IMAP4, box: str) -> tuple[str, bool]:
    """SELECT; returns (status, read_only) without imaplib's READ-ONLY
    exception getting in the way."""
    try:
        typ, _ = c.select(box)
    except imaplib.IMAP4.readonly:
        c.is_readonly = True
        return "OK", True
    return typ, bool(c.untagged_responses.get("READ-ONLY"))


# ------------------------------------------------------------------ raw

class RawConn:
    """A line-oriented raw connection, to see exactly what the server sends
    (order of replies, what comes after a refusal, EOF)."""

    def __init__(self, host: str, port: int, tls: bool = False,
                 source_address: Optional[str] = None, timeout: float = 10):
        src = (source_address, 0) if source_address else None
        sock = socket.create_connection((host, port), timeout, src)
        if tls:
            sock = tls_context().wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.buf = b""

    def send(self, data: str) -> None:
        self.sock.sendall(data.encode())

    def readline(self) -> Optional[str]:
        """One line without CRLF; None at EOF (or reset)."""
        while b"\r\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError, socket.timeout):
                chunk = b""
            if not chunk:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line.decode(errors="replace")
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def read_until(self, prefix: str) -> list[str]:
        """Lines up to and including the first starting with prefix (or
        up to EOF)."""
        lines = []
        while True:
            line = self.readline()
            if line is None:
                return lines
            lines.append(line)
            if line.startswith(prefix):
                return lines

    def read_all(self) -> list[str]:
        lines = []
        while (line := self.readline()) is not None:
            lines.append(line)
        return lines

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------ curl

def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run curl quietly but with errors; -v output goes to stderr."""
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args],
                          capture_output=True, text=True, timeout=timeout)


def curl_received(res: subprocess.CompletedProcess) -> list[str]:
    """The server lines curl's -v trace shows it received."""
    return [l[2:] for l in res.stderr.splitlines() if l.startswith("< ")]


# ------------------------------------------------------------------ state

def mailbox_state(dc: DovecotInstance, user: str,
                  boxes: Optional[Iterable[str]] = None) -> dict[str, list[tuple[int, str]]]:
    """{mailbox: [(uid, flags), ...]} as doveadm sees it."""
    if boxes is None:
        res = dc.doveadm("mailbox", "list", "-u", user, check=True)
        boxes = sorted(res.stdout.split("\n"))
    state = {}
    for box in boxes:
        if not box:
            continue
        res = dc.doveadm("-f", "tab", "fetch", "-u", user, "uid flags",
                         "mailbox", box, check=True)
        rows = res.stdout.splitlines()[1:]
        # \Recent only says which session saw a message first
        state[box] = sorted(
            (int(r.split("\t")[0]),
             " ".join(f for f in r.split("\t")[1].split() if f != "\\Recent"))
            for r in rows if r)
    return state


def deliver(dc: DovecotInstance, user: str, subject: str = "Test") -> None:
    dc.deliver(user, make_message(subject))


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_pid_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still running after {timeout}s")
        time.sleep(0.02)


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOOL), *args], capture_output=True, text=True,
                          timeout=10)


def now_minutes() -> int:
    t = time.localtime()
    return t.tm_hour * 60 + t.tm_min


def hhmm(minutes: int) -> str:
    minutes %= 24 * 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def avoid_midnight(margin_s: int = 120) -> None:
    """Time/day tests compute windows from the local time; don't let the
    day change under them."""
    t = time.localtime()
    left = 86400 - (t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec)
    if left < margin_s:
        time.sleep(left + 2)


DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # tm_wday order


def today_index() -> int:
    return time.localtime().tm_wday


_TIMING_RE = re.compile(r" \(\d+\.\d+(?: \+ \d+\.\d+)* secs\)(?=\.?$)")


def imap_text(data) -> str:
    """The text of an imaplib reply, without the command timing Dovecot
    appends ("... (0.001 + 0.000 secs).") and without a final dot."""
    first = data[0] if isinstance(data, (list, tuple)) and data else data
    if isinstance(first, tuple):
        first = first[0]
    text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
    return _TIMING_RE.sub("", text).rstrip(".")


def imap_list_names(c: imaplib.IMAP4, command: str = "LIST",
                    pattern: str = "*") -> list[str]:
    """Mailbox names from LIST/LSUB (unquoted)."""
    typ, data = (c.list('""', pattern) if command == "LIST"
                 else c.lsub('""', pattern))
    assert typ == "OK", data
    names = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):       # a literal name
            names.append(item[1].decode())
            continue
        m = re.match(rb'\([^)]*\) (?:"[^"]*"|NIL) (.*)$', item)
        assert m, item
        name = m.group(1).decode()
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        names.append(name)
    return sorted(names)
