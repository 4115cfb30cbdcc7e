"""A scale-out cluster on loopback for tests/integration/test_scaleout.py.

    proxy (Dovecot, proxy=y)  --->  backend A (plugins)
                              +-->  backend B (plugins)
    stock (plain Dovecot, the reference for SEARCH answers)

* The proxy has no mail plugins. Its passwd-file passdb routes every login
  to a backend with the fields proxy=y host=127.0.0.1 port=... (the IMAP or
  POP3 port by %s), checks the password itself and forwards it. Each login
  L also exists as "L-tlshop": the same user (destuser=L), but the proxy
  talks TLS to the backend's imaps/pop3s port (ssl=any-cert).
* Both backends load access_rules, fts + fts_lmdb (global mail_plugins)
  and leave_on_server (pop3), read one rules file (in a shared directory,
  as a replicated rules file would be), and trust only the proxy's address:
  login_trusted_networks = 127.0.0.1 ::1. Clients play themselves from
  other 127.0.0.x addresses, which Linux routes to lo without set-up.
* The proxy forwards the client's TLS state as a forward_ field
  (forward_tls=tls|plaintext from %{secured}); the backends' userdb hands
  it to the plugin as access_rules_client_tls (see docs/scaling.md). That setting
  is the fix proposed for the TLS-through-proxy gap; the plugin of this
  revision ignores it.
* Users move between backends with dsync: `doveadm -c A.conf backup -u U
  env -i doveadm -c B.conf dsync-server -u U` (each side with its own
  config; `env -i` because doveadm passes its configuration to the command
  it starts through the environment, so without it the "remote" doveadm
  would serve A's mailbox again).

Nothing here edits the shared harness: Backend subclasses DovecotInstance
only to add a userdb line to its generated config.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional

from access_rules_helpers import RawConn, wait_pid_gone
from dovecot_instance import BUILD_DIR, DEFAULT_PASSWORD, DovecotInstance
from fts_lmdb_helpers import crash_lines  # noqa: F401  (re-exported)

PASSWORD = DEFAULT_PASSWORD
PROXY_ADDRESS = "127.0.0.1"          # the proxy's source address towards the backends
TRUSTED = "127.0.0.1 ::1"            # the backends' login_trusted_networks

OFFICE_NET = "127.0.0.16/28"
OFFICE_CLIENT = "127.0.0.20"         # inside OFFICE_NET
OUTSIDE_CLIENT = "127.0.0.40"        # outside it
UNTRUSTED_DIRECT = "127.0.0.5"       # talks to a backend directly, not trusted
SPOOF_TARGET = OFFICE_CLIENT         # the address spoofers claim to have

PROBE_ADDRESSES = ("127.0.0.1", "::1", UNTRUSTED_DIRECT, OFFICE_CLIENT,
                   OUTSIDE_CLIENT, "127.0.0.41", "10.1.2.3")
TLS_REQUIRED = "TLS required"
OFFICE_ONLY = "Only from the office network"


def rules_text(port_labels: Optional[Mapping[str, int]] = None) -> str:
    """The rules file both backends read (one file, replicated as is).

    probe:  refuses every session with a reason naming what the backend's
            rules saw: "seen <address> tls=<yes|no>" ("seen other" for an
            address not listed), so a test reads the plugin's view off the
            client's reply.
    office: only clients from OFFICE_NET.
    tls:    only clients that use TLS.
    fwd:    refuses every session with a reason naming the local port
            the rules saw (port_labels: label -> port) and whether the
            client's IMAP ID named it "fwdtest": "port=<label> name=<...>".
    default (rules before the first ruleset line): allow.
    """
    lines = ["# default rule set: the accounts of the move and search tests",
             "allow", "", "ruleset probe"]
    for addr in PROBE_ADDRESSES:
        for tls in ("yes", "no"):
            lines.append(f'deny from {addr} tls {tls} reason "seen {addr} tls={tls}"')
    lines += ['default deny reason "seen other"', "",
              "ruleset office",
              f'deny from !{OFFICE_NET} reason "{OFFICE_ONLY}"',
              "allow", "",
              "ruleset tls",
              f'deny tls no reason "{TLS_REQUIRED}"',
              "allow", "", "ruleset fwd"]
    for label, port in (port_labels or {}).items():
        lines.append(f'deny port {port} client-name fwdtest '
                     f'reason "port={label} name=fwdtest"')
        lines.append(f'deny port {port} reason "port={label} name=none"')
    lines += ['default deny reason "port=other"', ""]
    return "\n".join(lines)


def write_rules(path: Path, text: str) -> None:
    """Replace the rules file atomically (a new inode: the plugin's cache
    notices at the next login)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


PROBE_RE = re.compile(r"seen (\S+) tls=(yes|no)|seen other")

# ------------------------------------------------------------ instances

BACKEND_CONF = f"""\
login_trusted_networks = {TRUSTED}
imap_id_retain = yes
mail_attribute_dict = file:%h/dovecot-attributes
protocol pop3 {{
  mail_plugins = $mail_plugins leave_on_server
}}
service indexer-worker {{
  vsz_limit = 512M
}}
"""

# The userdb line of the proposed fix: the client's TLS state as the proxy
# forwarded it. For a client that talks to the backend directly there is
# no forwarded field; the value expands empty, which reaches the mail
# process as "yes". A passwd-file extra field can't hold ':', hence
# override_fields.
CLIENT_TLS_USERDB_LINE = "  override_fields = access_rules_client_tls=%{passdb:forward_tls}\n"


class Backend(DovecotInstance):
    """A backend: DovecotInstance plus one userdb line (see above)."""

    def _render_config(self) -> str:
        conf = super()._render_config()
        marker = "userdb {\n  driver = passwd-file\n"
        assert marker in conf, "harness config layout changed"
        return conf.replace(marker, marker + CLIENT_TLS_USERDB_LINE, 1)


def _port_expr(imap_port: int, pop3_port: int) -> str:
    # %s is the service (imap or pop3) in auth's variables
    return f"%{{if;%s;eq;pop3;{pop3_port};{imap_port}}}"


# The proxy's view of the client's TLS: %{secured} is "TLS" for a TLS
# connection (SSL port or STARTTLS), "secured" for a trusted or
# same-address one, else "". Forwarded as "tls" or "plaintext", never
# empty and never "yes": Dovecot hands an empty userdb field to the mail
# process as "yes", which is also what a backend's userdb gives a client
# that came without the field (straight to the backend).
FORWARD_TLS = "%{if;%{secured};eq;TLS;tls;plaintext}"
FORWARDED_TLS_VALUES = ("tls", "plaintext")


@dataclass
class Cluster:
    users: list                     # backend user specs (DovecotInstance form)
    stock_users: list               # users of the stock instance
    debug: bool = True
    rules_dir: Optional[Path] = None
    a: Optional[Backend] = None
    b: Optional[Backend] = None
    stock: Optional[DovecotInstance] = None
    proxy: Optional[DovecotInstance] = None
    initial_routes: dict = field(default_factory=dict)  # login -> "b" (default "a")
    routes: dict = field(default_factory=dict)      # login -> "a" | "b"

    # -------------------------------------------------------- life cycle
    def start(self) -> "Cluster":
        try:
            self.rules_dir = Path(tempfile.mkdtemp(prefix="scaleout-rules-", dir="/tmp"))
            os.chmod(self.rules_dir, 0o755)
            write_rules(self.rules_path, rules_text())
            settings = {
                "access_rules_file": str(self.rules_path),
                "fts": "lmdb",
                "fts_autoindex": "yes",
                "fts_enforced": "yes",
                "leave_on_server_policy": "keep",
                "leave_on_server_new_only": "yes",
            }
            for name in ("a", "b"):
                inst = Backend(plugin_dir=BUILD_DIR,
                               mail_plugins="access_rules fts fts_lmdb",
                               plugin_settings=settings, users=self.users,
                               extra_conf=BACKEND_CONF, debug=self.debug)
                setattr(self, name, inst)
                inst.start()
            self.stock = DovecotInstance(plugin_dir=BUILD_DIR,
                                         users=self.stock_users).start()
            logins = [u["name"] if isinstance(u, dict) else u for u in self.users]
            self.routes = {login: self.initial_routes.get(login, "a")
                           for login in logins}
            self.proxy = DovecotInstance(plugin_dir=BUILD_DIR,
                                         users=self._proxy_users(),
                                         protocols="imap pop3",
                                         extra_conf="imap_id_retain = yes\n")
            self.proxy.start()
            # now that the ports are known: the fwd rule set
            write_rules(self.rules_path, rules_text({
                "proxy-imap": self.proxy.imap_port,
                "proxy-imaps": self.proxy.imaps_port,
                "proxy-pop3": self.proxy.pop3_port,
                "proxy-pop3s": self.proxy.pop3s_port,
                **{f"{n}-{svc}": getattr(self.backend(n), f"{svc}_port")
                   for n in ("a", "b") for svc in ("imap", "imaps", "pop3", "pop3s")}}))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for inst in (self.proxy, self.a, self.b, self.stock):
            if inst is not None:
                inst.stop()
        if self.rules_dir is not None:
            shutil.rmtree(self.rules_dir, ignore_errors=True)

    @property
    def rules_path(self) -> Path:
        return self.rules_dir / "rules.conf"

    def backend(self, name: str) -> Backend:
        return {"a": self.a, "b": self.b}[name]

    def instances(self) -> list[DovecotInstance]:
        return [i for i in (self.proxy, self.a, self.b, self.stock) if i is not None]

    # -------------------------------------------------------- routing
    def _proxy_users(self) -> list[dict]:
        out = []
        for login, where in self.routes.items():
            be = self.backend(where)
            common = {"proxy": "y", "host": "127.0.0.1", "forward_tls": FORWARD_TLS}
            out.append({"name": login, "passdb_fields": {
                **common, "port": _port_expr(be.imap_port, be.pop3_port)}})
            out.append({"name": f"{login}-tlshop", "passdb_fields": {
                **common, "destuser": login, "ssl": "any-cert",
                "port": _port_expr(be.imaps_port, be.pop3s_port)}})
        return out

    def route(self, logins: Iterable[str], where: str) -> None:
        """Send these logins to backend `where` from now on (what a
        director or a passdb update does when a user is moved)."""
        for login in logins:
            assert login in self.routes, login
            self.routes[login] = where
        self.proxy.users = self._proxy_users()
        self.proxy.reload()

    # -------------------------------------------------------- moving users
    def dsync(self, src: str, dst: str, user: str, command: str = "backup",
              timeout: float = 60) -> subprocess.CompletedProcess:
        """doveadm backup|sync of `user` from backend src to dst."""
        s, d = self.backend(src), self.backend(dst)
        res = subprocess.run(
            ["doveadm", "-c", str(s.config_path), command, "-u", user,
             "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
             "doveadm", "-c", str(d.config_path), "dsync-server", "-u", user],
            capture_output=True, text=True, timeout=timeout)
        assert res.returncode == 0, (f"doveadm {command} {src}->{dst} of {user} "
                                     f"exited {res.returncode}: {res.stderr}")
        return res


def mailbox_status(dc: DovecotInstance, user: str, box: str = "INBOX") -> dict:
    res = dc.doveadm("mailbox", "status", "-u", user,
                     "messages uidnext uidvalidity guid", box)
    assert res.returncode == 0, res.stderr
    return dict(kv.split("=", 1) for kv in res.stdout.split()[1:])


# ------------------------------------------------------------ raw sessions

_sources = itertools.count()


def fresh_source() -> str:
    """A loopback source address of its own for one session (so the
    backend's login line, rip=..., tells its process apart)."""
    n = next(_sources)
    return f"127.0.{100 + (n // 200) % 100}.{10 + n % 200}"


@dataclass
class Outcome:
    allowed: bool
    reason: Optional[str]       # what a refused session was told
    lines: list                 # everything the client got

    def probe(self) -> tuple:
        """(address, tls) the probe rule set saw, ("other", None) if the
        address wasn't listed; fails if the reply isn't a probe reply."""
        m = PROBE_RE.search(self.reason or "")
        assert m, f"not a probe reply: {self.lines}"
        return ("other", None) if m.group(1) is None else (m.group(1), m.group(2) == "yes")


def _imap_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_id_args(pairs: Mapping[str, str]) -> str:
    return "(" + " ".join(f"{_imap_quote(k)} {_imap_quote(v)}"
                          for k, v in pairs.items()) + ")"


def imap_attempt(port: int, user: str, *, source: str, tls: bool = False,
                 pre_login_id: Optional[Mapping[str, str]] = None,
                 post_login_id: Optional[Mapping[str, str]] = None,
                 password: str = PASSWORD) -> Outcome:
    """LOGIN, then SELECT INBOX: allowed if SELECT says OK, refused with
    the BYE's text if the session is ended (the plugin's refusal comes as
    a BYE right after the LOGIN reply, relayed by the proxy)."""
    lines: list = []
    with RawConn("127.0.0.1", port, tls=tls, source_address=source) as c:
        lines.append(c.readline())
        if pre_login_id is not None:
            c.send(f"i ID {imap_id_args(pre_login_id)}\r\n")
            lines += c.read_until("i ")
        c.send(f"l LOGIN {_imap_quote(user)} {_imap_quote(password)}\r\n")
        got = c.read_until("l ")
        lines += got
        if not got or not got[-1].startswith("l OK"):
            return Outcome(False, got[-1] if got else None, lines)
        got = []
        try:
            if post_login_id is not None:
                c.send(f"p ID {imap_id_args(post_login_id)}\r\n")
                lines += c.read_until("p ")
            c.send("s SELECT INBOX\r\n")
            got = c.read_until("s ")
            lines += got
        except OSError:
            # a refused session is closed after its BYE; what was read
            # before the close is in `lines` (and the buffer)
            pass
        lines += [l for l in iter(c.readline, None)] if not got else []
        bye = [l for l in lines if l.startswith("* BYE")]
        if bye:
            return Outcome(False, re.sub(r"^\* BYE (\[[A-Z]+\] )?", "", bye[0]), lines)
        if got and got[-1].startswith("s OK"):
            c.send("o LOGOUT\r\n")
            lines += c.read_until("o ")
            return Outcome(True, None, lines)
        return Outcome(False, got[-1] if got else None, lines)


def pop3_attempt(port: int, user: str, *, source: str, tls: bool = False,
                 xclient: Optional[str] = None,
                 password: str = PASSWORD) -> Outcome:
    """USER/PASS, then STAT: allowed if both say +OK; refused with the
    -ERR text otherwise (the plugin answers -ERR in place of +OK)."""
    lines: list = []
    with RawConn("127.0.0.1", port, tls=tls, source_address=source) as c:
        lines.append(c.readline())
        if xclient is not None:
            c.send(f"XCLIENT {xclient}\r\n")
            lines.append(c.readline())
        c.send(f"USER {user}\r\n")
        lines.append(c.readline())
        c.send(f"PASS {password}\r\n")
        reply = c.readline()
        lines.append(reply)
        if reply is None or not reply.startswith("+OK"):
            reason = re.sub(r"^-ERR (\[[A-Z/-]+\] )?", "", reply or "")
            return Outcome(False, reason, lines)
        c.send("STAT\r\n")
        stat = c.readline()
        lines.append(stat)
        c.send("QUIT\r\n")
        lines.append(c.readline())
        return Outcome(stat is not None and stat.startswith("+OK"), None, lines)


def attempt(proto: str, port: int, user: str, **kw) -> Outcome:
    return (imap_attempt if proto == "imap" else pop3_attempt)(port, user, **kw)


def ports(dc: DovecotInstance, proto: str, tls: bool) -> int:
    if proto == "imap":
        return dc.imaps_port if tls else dc.imap_port
    return dc.pop3s_port if tls else dc.pop3_port


# ------------------------------------------------------------ POP3 devices

class ProxiedPop3:
    """One POP3 session of a device, through the proxy, with poplib.

    The session's pop3 process runs on a backend; quit()/drop() return
    once it has exited (found by the backend's login line for this
    session's source address), so whatever the plugin writes at QUIT is
    on disk when they return.
    """

    def __init__(self, proxy: DovecotInstance, backend: DovecotInstance,
                 login: str):
        self.backend = backend
        self.source = fresh_source()
        mark = backend.log_mark()
        self.client = proxy.pop3(login, PASSWORD, source_address=self.source)
        m = backend.wait_for_log(
            rf"pop3-login: Info: Login: user=<[^>]*>, .*rip={re.escape(self.source)}, "
            rf".*mpid=(\d+)", since=mark, timeout=10)
        self.pid = int(m.group(1))

    def listing(self) -> list:
        """[(uidl, message-id)] in POP3 order, by UIDL and TOP n 0 (which
        retrieves nothing)."""
        _, lines, _ = self.client.uidl()
        out = []
        for line in lines:
            num, uidl = line.decode().split()
            _, head, _ = self.client.top(int(num), 0)
            mid = next((h.split(b":", 1)[1].strip().decode() for h in head
                        if h.lower().startswith(b"message-id:")), "")
            out.append((uidl, mid))
        return out

    def retr(self, num: int) -> None:
        resp, _, _ = self.client.retr(num)
        assert resp.startswith(b"+OK"), resp

    def dele(self, num: int) -> None:
        assert self.client.dele(num).startswith(b"+OK")

    def quit(self) -> None:
        try:
            self.client.quit()
        finally:
            wait_pid_gone(self.pid)

    def drop(self) -> None:
        """End without QUIT: RFC 1939 says nothing changes, and the plugin
        writes no state."""
        try:
            self.client.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.client.close()
        wait_pid_gone(self.pid)


def listing_without_changes(proxy: DovecotInstance, backend: DovecotInstance,
                            login: str) -> list:
    s = ProxiedPop3(proxy, backend, login)
    try:
        return s.listing()
    finally:
        s.drop()


# ------------------------------------------------------------ logs

def login_line(dc: DovecotInstance, proto: str, source: str, since: int,
               timeout: float = 5) -> re.Match:
    """The backend's own record of a login: <proto>-login: Login: ...
    rip=<client>, lip=..."""
    return dc.wait_for_log(rf"{proto}-login: Info: Login: user=<(?P<user>[^>]*)>, "
                           rf".*rip=(?P<rip>{re.escape(source)}), lip=(?P<lip>[^,]+),"
                           r"(?P<rest>.*)$", since=since, timeout=timeout)
