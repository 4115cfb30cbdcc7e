"""A real, throwaway Dovecot 2.3 server for integration tests and demos.

Everything lives in one temporary directory (config, sockets, state, log,
mail homes, TLS cert) and the server only listens on loopback ports picked at
start-up, so several instances can run side by side next to (and without
touching) a system-wide Dovecot.

    with DovecotInstance(mail_plugins="access_rules") as dc:
        client = dc.imap("alice")
        ...

The module has no pytest dependency so standalone demo/bench scripts can use
it too; tests normally go through the ``dovecot`` fixture in conftest.py.
"""

from __future__ import annotations

import atexit
import grp
import imaplib
import os
import poplib
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

REPO_ROOT = Path(__file__).resolve().parents[2]
# `make test SANITIZE=1` builds into build/asan and says so here.
BUILD_DIR = Path(os.environ.get("PLUGIN_BUILD_DIR") or REPO_ROOT / "build")
DEFAULT_PLUGIN_DIR = BUILD_DIR
# The sanitizer runtime the plugins were built with. Dovecot's binaries
# aren't instrumented, and ASan must be the first library of a process
# to load an instrumented module, so every Dovecot process preloads it.
SANITIZER_PRELOAD = os.environ.get("SANITIZER_PRELOAD", "")
DOVECOT_CONFIG = Path("/usr/lib/dovecot/dovecot-config")
DEFAULT_PASSWORD = "secret"
DEFAULT_USERS = ("alice", "bob", "carol")

# Services whose default `chroot` needs root; cleared when running unprivileged.
_CHROOTED_SERVICES = ("anvil", "ipc", "imap-login", "pop3-login")

UserSpec = Union[str, Mapping[str, object]]


class DovecotStartError(RuntimeError):
    """Dovecot did not come up; the message carries its stderr and log tail."""


class SanitizerError(AssertionError):
    """A sanitized plugin reported an error; the message holds the reports."""


def dovecot_module_dir() -> Path:
    """Stock module dir as recorded by the installed dovecot-dev package."""
    try:
        text = DOVECOT_CONFIG.read_text()
    except OSError:
        text = ""
    m = re.search(r"^dovecot_moduledir=\"?([^\"\n]+)\"?$", text, re.M)
    return Path(m.group(1)) if m else Path("/usr/lib/dovecot/modules")


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _port_free(family: int, host: str, port: int) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # Same option Dovecot uses, so TIME_WAIT leftovers don't count.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        return True
    except OSError:
        return False


def pick_free_ports(count: int, ipv6: bool) -> list[int]:
    """Ports currently free on 127.0.0.1 (and ::1 when `ipv6`).

    Inherently racy (we close the socket before Dovecot binds it), which is
    why start() retries with new ports on "Address already in use".
    """
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in ports:
            continue
        if ipv6 and not _port_free(socket.AF_INET6, "::1", port):
            continue
        ports.append(port)
    return ports


def _others_can_traverse(path: Path) -> bool:
    """True if a non-owner, non-group user can reach `path` (o+x on ancestors)."""
    path = path.resolve()
    for p in [path, *path.parents]:
        try:
            if not os.stat(p).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _tcp_connect(host: str, port: int, timeout: Optional[float],
                 source_address: Optional[str]) -> socket.socket:
    src = (source_address, 0) if source_address else None
    return socket.create_connection((host, port), timeout, src)


def _greets(host: str, port: int, tls: bool, greeting: bytes, bye: bytes,
            timeout: float) -> bool:
    """Connect, (TLS-handshake,) read the server greeting, say goodbye."""
    try:
        with _tcp_connect(host, port, min(timeout, 5), None) as raw:
            sock = (_unverified_context().wrap_socket(raw, server_hostname=host)
                    if tls else raw)
            with sock, sock.makefile("rb") as f:
                ok = f.readline().startswith(greeting)
                if ok:
                    sock.sendall(bye)
                return ok
    except (OSError, ssl.SSLError):
        return False


def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# imaplib/poplib can't pick a source address; these subclasses only swap the
# socket creation so tests can appear to come from e.g. 127.0.0.5 (all of
# 127/8 is routed to lo on Linux, no interface setup needed).
class _IMAP4(imaplib.IMAP4):
    def __init__(self, host, port, timeout=None, source_address=None):
        self._source_address = source_address
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return _tcp_connect(self.host, self.port, timeout, self._source_address)


class _IMAP4_SSL(imaplib.IMAP4_SSL):
    def __init__(self, host, port, timeout=None, source_address=None):
        self._source_address = source_address
        super().__init__(host, port, ssl_context=_unverified_context(),
                         timeout=timeout)

    def _create_socket(self, timeout):
        sock = _tcp_connect(self.host, self.port, timeout, self._source_address)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class _POP3(poplib.POP3):
    def __init__(self, host, port, timeout=None, source_address=None):
        self._source_address = source_address
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return _tcp_connect(self.host, self.port, timeout, self._source_address)


class _POP3_SSL(poplib.POP3_SSL):
    def __init__(self, host, port, timeout=None, source_address=None):
        self._source_address = source_address
        super().__init__(host, port, timeout=timeout,
                         context=_unverified_context())

    def _create_socket(self, timeout):
        sock = _tcp_connect(self.host, self.port, timeout, self._source_address)
        return self.context.wrap_socket(sock, server_hostname=self.host)


# Instances still running at interpreter exit (e.g. a demo script that
# crashed before stop()) get stopped so no dovecot is left behind.
_live_instances: "set[DovecotInstance]" = set()


@atexit.register
def _stop_leftovers() -> None:
    for inst in list(_live_instances):
        try:
            inst.stop()
        except Exception:
            pass


class DovecotInstance:
    """One private Dovecot server. Call start()/stop() or use `with`."""

    START_TIMEOUT = 20.0
    STOP_TIMEOUT = 10.0

    def __init__(self,
                 plugin_dir: Union[str, os.PathLike, None] = None,
                 mail_plugins: str = "",
                 plugin_settings: Optional[Mapping[str, object]] = None,
                 users: Optional[Iterable[UserSpec]] = None,
                 extra_conf: str = "",
                 protocols: str = "imap pop3 lmtp",
                 debug: bool = False):
        """
        plugin_dir:      dir with built lib*_plugin.so files (default <repo>/build;
                         may be missing or empty).
        mail_plugins:    value of the global `mail_plugins` setting.
        plugin_settings: key/values written into `plugin { }`.
        users:           names (password "secret") and/or dicts with keys
                         name, password (optional), fields (optional dict of
                         userdb extra fields, e.g. {"access_rules_groups": "a,b"}),
                         passdb_fields (optional dict of passdb extra fields,
                         e.g. {"user": "alice"} to make a login alias).
                         Default: alice, bob, carol.
        extra_conf:      raw text appended to dovecot.conf.
        protocols:       value of `protocols`.
        debug:           turn on mail_debug.
        """
        self.plugin_dir = Path(plugin_dir) if plugin_dir else DEFAULT_PLUGIN_DIR
        self.mail_plugins = mail_plugins
        self.plugin_settings = dict(plugin_settings or {})
        self.users = self._normalize_users(
            DEFAULT_USERS if users is None else users)
        self.extra_conf = extra_conf
        self.protocols = protocols
        self.debug = debug

        self.is_root = os.geteuid() == 0
        self.ipv6 = ipv6_loopback_available()
        self.listen_addresses = ["127.0.0.1"] + (["::1"] if self.ipv6 else [])

        self.dir: Optional[Path] = None
        self.instance_name = "dovecot-test-" + secrets.token_hex(4)
        self.proc: Optional[subprocess.Popen] = None
        self.imap_port = self.imaps_port = 0
        self.pop3_port = self.pop3s_port = 0
        self.lmtp_port = 0

    # ----------------------------------------------------------- paths

    @property
    def config_path(self) -> Path:
        return self._path("dovecot.conf")

    @property
    def log_path(self) -> Path:
        return self._path("dovecot.log")

    @property
    def base_dir(self) -> Path:
        return self._path("run")

    @property
    def lmtp_socket(self) -> Path:
        return self.base_dir / "lmtp"

    @property
    def mail_plugin_dir(self) -> Path:
        return self._path("modules")

    @property
    def passwd_path(self) -> Path:
        return self._path("passwd")

    def home(self, user: str) -> Path:
        return self._path("home", user)

    def maildir(self, user: str) -> Path:
        return self.home(user) / "Maildir"

    def _path(self, *parts: str) -> Path:
        if self.dir is None:
            raise RuntimeError("instance directory not created yet (call start())")
        return self.dir.joinpath(*parts)

    # ----------------------------------------------------------- setup

    @staticmethod
    def _normalize_users(users: Iterable[UserSpec]) -> list[dict]:
        out = []
        for u in users:
            if isinstance(u, str):
                u = {"name": u}
            name = str(u["name"])
            password = str(u.get("password", DEFAULT_PASSWORD))
            fields = {str(k): str(v) for k, v in dict(u.get("fields") or {}).items()}
            passdb_fields = {str(k): str(v) for k, v in
                             dict(u.get("passdb_fields") or {}).items()}
            # auth_username_format=%Lu lowercases the login name, and
            # passwd-file lines are ':'-separated with space-separated extras.
            if name != name.lower() or re.search(r"[\s:]", name):
                raise ValueError(f"user name must be lowercase, no ':'/space: {name!r}")
            if ":" in password or "\n" in password:
                raise ValueError(f"password for {name} can't contain ':' or newline")
            for k, v in list(fields.items()) + list(passdb_fields.items()):
                if re.search(r"[\s:]", k + v):
                    raise ValueError(
                        f"extra field {k}={v!r} for {name}: passwd-file extra "
                        "fields can't contain whitespace or ':'")
            out.append({"name": name, "password": password, "fields": fields,
                        "passdb_fields": passdb_fields})
        return out

    def _accounts(self):
        """(internal_user, internal_group, login_user, mail_uid, mail_gid)."""
        if self.is_root:
            # Mail processes must not run as root; `nobody` exists everywhere
            # and is deliberately distinct from Dovecot's own service users.
            nobody = pwd.getpwnam("nobody")
            return ("dovecot", "dovecot", "dovenull", nobody.pw_uid, nobody.pw_gid)
        uid, gid = os.getuid(), os.getgid()
        user = pwd.getpwuid(uid).pw_name
        group = grp.getgrgid(gid).gr_name
        return (user, group, user, uid, gid)

    def _make_dir(self) -> None:
        parent = None
        # Unix socket paths are limited to ~108 bytes, and as root the mail
        # user (nobody) must be able to traverse down to its home.
        tmp = Path(tempfile.gettempdir())
        if len(str(tmp)) > 40 or (self.is_root and not _others_can_traverse(tmp)):
            parent = "/tmp"
        self.dir = Path(tempfile.mkdtemp(prefix="dovecot-test-", dir=parent)).resolve()
        os.chmod(self.dir, 0o755)
        for sub in ("run", "state", "home", "modules", "sanitizer"):
            self._path(sub).mkdir(mode=0o755)
        # mkdir's mode is filtered by the umask; be explicit.
        for sub in ("run", "state", "home", "modules"):
            os.chmod(self._path(sub), 0o755)
        # Any mail process, whatever its uid, may have to write a report.
        os.chmod(self._path("sanitizer"), 0o1777)

    def _make_homes(self, uid: int, gid: int) -> None:
        for u in self.users:
            home = self.home(u["name"])
            home.mkdir(mode=0o700, exist_ok=True)
            if self.is_root:
                os.chown(home, uid, gid)

    def _write_passwd(self, uid: int, gid: int) -> None:
        # One file serves as passdb and userdb: passwd-file hands the 8th
        # column's userdb_-prefixed fields to the userdb lookup.
        lines = []
        for u in self.users:
            extra = " ".join([f"{k}={v}" for k, v in u["passdb_fields"].items()] +
                             [f"userdb_{k}={v}" for k, v in u["fields"].items()])
            lines.append(f"{u['name']}:{{PLAIN}}{u['password']}:{uid}:{gid}::"
                         f"{self.home(u['name'])}::{extra}\n")
        self.passwd_path.write_text("".join(lines))
        # The auth process reads it as the internal user.
        os.chmod(self.passwd_path, 0o644)

    def _make_cert(self) -> None:
        cert, key = self._path("ssl-cert.pem"), self._path("ssl-key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
            check=True, capture_output=True)
        os.chmod(key, 0o600)

    def _populate_plugin_dir(self) -> None:
        """Stock modules + our build/*.so in one dir, since mail_plugin_dir is
        a single path and we need e.g. quota/acl next to our own plugins."""
        target = self.mail_plugin_dir
        for entry in sorted(dovecot_module_dir().iterdir()):
            (target / entry.name).symlink_to(entry)
        if not self.plugin_dir.is_dir():
            return
        copy = self.is_root and not _others_can_traverse(self.plugin_dir)
        for so in sorted(self.plugin_dir.glob("*.so")):
            link = target / so.name
            if link.is_symlink() or link.exists():
                link.unlink()  # a freshly built module wins over a stock one
            if copy:
                # Mail processes (nobody) couldn't follow a symlink into it.
                shutil.copy2(so, link)
                os.chmod(link, 0o644)
            else:
                link.symlink_to(so.resolve())

    def _check_mail_plugins(self) -> None:
        available = {m.group(1) for p in self.mail_plugin_dir.iterdir()
                     if (m := re.fullmatch(r"lib(?:\d+_)?(\w+?)(?:_plugin)?\.so", p.name))}
        missing = [name for name in re.split(r"[\s,]+", self.mail_plugins)
                   if name and not name.startswith("$") and name not in available]
        if missing:
            raise DovecotStartError(
                f"mail plugin(s) {', '.join(missing)} not found in "
                f"{self.plugin_dir} or {dovecot_module_dir()} (run `make` first?)")

    def _pick_ports(self) -> None:
        (self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port,
         self.lmtp_port) = pick_free_ports(5, self.ipv6)

    @staticmethod
    def _conf_value(value: object) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)

    def _render_config(self) -> str:
        internal_user, internal_group, login_user, _, _ = self._accounts()
        plugin_lines = "".join(f"  {k} = {self._conf_value(v)}\n"
                               for k, v in self.plugin_settings.items()
                               if v is not None)
        unprivileged = ""
        if not self.is_root:
            unprivileged = "".join(f"service {s} {{\n  chroot =\n}}\n"
                                   for s in _CHROOTED_SERVICES)
        return f"""\
# Generated by {Path(__file__).name}; throwaway instance in {self.dir}
instance_name = {self.instance_name}
base_dir = {self.base_dir}
state_dir = {self._path("state")}
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = {self.protocols}
listen = {", ".join(self.listen_addresses)}

default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 0

mail_location = maildir:~/Maildir
mail_plugin_dir = {self.mail_plugin_dir}
mail_plugins = {self.mail_plugins}
mail_debug = {"yes" if self.debug else "no"}
mail_max_userip_connections = 1000

auth_mechanisms = plain login
auth_username_format = %Lu
auth_verbose = yes
# The default 2 s delay per failed login only slows tests down (Dovecot
# still batches failure replies every 0.5 s).
auth_failure_delay = 0
disable_plaintext_auth = no
# Likewise anvil's growing per-IP penalty after failed logins (documented
# way to turn it off: auth can't connect to a mode-0 listener).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

ssl = yes
ssl_cert = <{self._path("ssl-cert.pem")}
ssl_key = <{self._path("ssl-key.pem")}

passdb {{
  driver = passwd-file
  args = {self.passwd_path}
}}
userdb {{
  driver = passwd-file
  args = {self.passwd_path}
}}

service imap-login {{
  process_min_avail = 0
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  process_min_avail = 0
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    port = {self.lmtp_port}
  }}
}}

protocol lmtp {{
  postmaster_address = postmaster@example.com
}}
lmtp_save_to_detail_mailbox = no

{unprivileged}
plugin {{
{plugin_lines}}}

{self.extra_conf}
{self._sanitizer_conf()}"""

    # ----------------------------------------------------------- sanitizers

    @property
    def sanitizer_dir(self) -> Path:
        return self._path("sanitizer")

    def sanitizer_env(self) -> dict:
        """What a sanitized plugin needs in any process that loads it."""
        if not SANITIZER_PRELOAD:
            return {}
        log = self.sanitizer_dir / "report"
        # Leaks are left to valgrind on the unit tests: in a mail process
        # LeakSanitizer would mostly report Dovecot's own exit-time memory.
        return {"LD_PRELOAD": SANITIZER_PRELOAD,
                "ASAN_OPTIONS": f"detect_leaks=0:abort_on_error=1:log_path={log}",
                "UBSAN_OPTIONS": f"print_stacktrace=1:log_path={log}"}

    def _sanitizer_conf(self) -> str:
        env = self.sanitizer_env()
        if not env:
            return ""
        pairs = " ".join(f"{k}={v}" for k, v in env.items())
        # ASan reserves terabytes of address space for its shadow memory,
        # which no vsz_limit leaves room for.
        return ("import_environment = TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID "
                f"LISTEN_FDS {pairs}\ndefault_vsz_limit = 0\n")

    def _disable_vsz_limits(self, text: str) -> str:
        if not SANITIZER_PRELOAD:
            return text
        return re.sub(r"(?m)^(\s*vsz_limit\s*=\s*)\S+", r"\g<1>0", text)

    def sanitizer_reports(self) -> list[str]:
        """Texts of every ASan/UBSan report a process of this instance wrote."""
        if self.dir is None or not self.sanitizer_dir.is_dir():
            return []
        return [p.read_text(errors="replace")
                for p in sorted(self.sanitizer_dir.iterdir())]

    # ----------------------------------------------------------- lifecycle

    def start(self) -> "DovecotInstance":
        if self.proc is not None:
            return self
        self._make_dir()
        try:
            self._make_cert()
            self._populate_plugin_dir()
            for attempt in range(3):
                self._pick_ports()
                self._write_config_files()
                try:
                    self._spawn_and_wait()
                    break
                except DovecotStartError as e:
                    if attempt == 2 or "Address already in use" not in str(e):
                        raise
                    # Lost the port race against another process; try again,
                    # keeping that attempt's errors out of the log tests see.
                    if self.log_path.exists():
                        self.log_path.rename(f"{self.log_path}.attempt{attempt}")
        except BaseException:
            self.stop()
            raise
        return self

    def _write_config_files(self) -> None:
        """(Re)write homes, passwd-file and dovecot.conf from the attributes."""
        _, _, _, uid, gid = self._accounts()
        self.users = self._normalize_users(self.users)
        self._check_mail_plugins()
        self._make_homes(uid, gid)
        self._write_passwd(uid, gid)
        self.config_path.write_text(
            self._disable_vsz_limits(self._render_config()))

    def _spawn_and_wait(self) -> None:
        stderr_path = self._path("dovecot.stderr")
        with open(stderr_path, "ab") as err:
            # Own session => own process group, so stop() can reap every
            # child even if the master dies abnormally.
            self.proc = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                start_new_session=True)
        _live_instances.add(self)
        deadline = time.monotonic() + self.START_TIMEOUT
        # The master binds every listener before forking anything, so a bare
        # connect() succeeds long before login/auth/stats processes are up;
        # stopping such a half-started instance makes the master sit out its
        # 5 s child-wait. A protocol greeting means the whole chain is ready.
        pending = [(host, *listener) for host in self.listen_addresses
                   for listener in self._listeners()]
        while pending:
            if self.proc.poll() is not None:
                self._fail_start(f"dovecot exited with status {self.proc.returncode}")
            if time.monotonic() > deadline:
                self._fail_start(f"no greeting from {[p[:2] for p in pending]} "
                                 f"after {self.START_TIMEOUT}s")
            if _greets(*pending[0], timeout=max(0.1, deadline - time.monotonic())):
                pending.pop(0)
            else:
                time.sleep(0.05)

    def _fail_start(self, reason: str) -> None:
        stderr = self._path("dovecot.stderr").read_text(errors="replace")
        log_tail = "\n".join(self.log_text().splitlines()[-30:])
        self._terminate()
        raise DovecotStartError(
            f"{reason}\n--- stderr ---\n{stderr}\n--- {self.log_path} (tail) ---\n"
            f"{log_tail}")

    def _listeners(self) -> list[tuple[int, bool, bytes, bytes]]:
        """(port, tls, greeting prefix, goodbye command) per enabled listener."""
        protos = set(self.protocols.split())
        out = []
        if "imap" in protos:
            out += [(self.imap_port, False, b"* OK", b"a LOGOUT\r\n"),
                    (self.imaps_port, True, b"* OK", b"a LOGOUT\r\n")]
        if "pop3" in protos:
            out += [(self.pop3_port, False, b"+OK", b"QUIT\r\n"),
                    (self.pop3s_port, True, b"+OK", b"QUIT\r\n")]
        if "lmtp" in protos:
            out.append((self.lmtp_port, False, b"220 ", b"QUIT\r\n"))
        return out

    def enabled_ports(self) -> list[int]:
        return [port for port, *_ in self._listeners()]

    def _terminate(self) -> None:
        """Stop the master and make sure nothing from its process group lingers."""
        proc, self.proc = self.proc, None
        _live_instances.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            # SIGTERM is what `doveadm stop` sends, but doveadm then polls the
            # master's pid, which stays a zombie until we reap it, so doveadm
            # always sat out its full timeout. Signal and wait ourselves.
            proc.terminate()
            try:
                proc.wait(self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.STOP_TIMEOUT)
        # The master SIGTERMs its children on shutdown; give them a moment,
        # then SIGKILL whatever is left of the process group.
        pgid = proc.pid
        grace_end = time.monotonic() + 2
        deadline = time.monotonic() + self.STOP_TIMEOUT
        while process_group_alive(pgid) and time.monotonic() < deadline:
            if time.monotonic() > grace_end:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    break
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server and delete its directory (kept if KEEP_DOVECOT=1).

        Raises SanitizerError if a process of the instance reported a
        memory or undefined-behaviour error, so that no test passes over
        one."""
        self._terminate()
        if self.dir is None:
            return
        reports = self.sanitizer_reports()
        if os.environ.get("KEEP_DOVECOT") == "1":
            print(f"KEEP_DOVECOT=1: leaving {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        if reports:
            raise SanitizerError("\n".join(reports))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "DovecotInstance":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"<DovecotInstance {self.instance_name} dir={self.dir} "
                f"imap={self.imap_port} running={self.running}>")

    # ----------------------------------------------------------- admin

    def doveadm(self, *args: str, check: bool = False,
                input: Optional[str] = None,
                timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["doveadm", "-c", str(self.config_path), *args],
                              capture_output=True, text=True, check=check,
                              input=input, timeout=timeout, env=self.env())

    def env(self) -> dict:
        """The environment for a Dovecot program run beside the instance
        (doveadm, the plugins' tools): the caller's, plus what sanitized
        plugins need."""
        return {**os.environ, **self.sanitizer_env()}

    def reload(self) -> None:
        """Apply changed attributes (plugin_settings, mail_plugins, users,
        extra_conf, debug) to the running server.

        Rewrites dovecot.conf and the passwd-file (ports stay), then SIGHUPs
        the master and waits until it has picked the change up. Sessions that
        are already logged in keep their old settings.
        """
        self._write_config_files()
        old_workers = self._worker_pids("lmtp")
        mark = self.log_mark()
        self.doveadm("reload", check=True)
        self.wait_for_log(r"SIGHUP received - reloading configuration", since=mark)
        # An lmtp process of the old configuration can still take a
        # delivery and end it with "421 Shutting down" (sometimes after
        # saving the message), so wait until the old ones are gone.
        deadline = time.monotonic() + 5
        while old_workers & self._worker_pids("lmtp") and time.monotonic() < deadline:
            time.sleep(0.02)

    def _worker_pids(self, service: str) -> "set[int]":
        """Live pids of this instance's `service` processes."""
        if self.proc is None:
            return set()
        pids = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat_line = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            fields = stat_line.rsplit(")", 1)[1].split()
            # titles read "<instance_name>/<service>"
            title = cmdline.split(b"\0")[0].decode(errors="replace")
            if (int(fields[2]) == self.proc.pid and fields[0] != "Z" and
                    title.split(" ")[0].endswith(f"/{service}")):
                pids.add(int(entry.name))
        return pids

    def worker_pids(self, service: str) -> "set[int]":
        """Live pids of this instance's `service` processes (e.g. "pop3")."""
        return self._worker_pids(service)

    def wait_workers_gone(self, service: str, timeout: float = 10.0) -> None:
        """Wait until no `service` process of this instance is left.

        A mail process goes on working after its client is gone (e.g. a
        pop3 process after QUIT: autoexpunge, plugins' cleanup), and with
        the default service_count = 1 it exits when that is done.
        """
        deadline = time.monotonic() + timeout
        while (pids := self._worker_pids(service)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} processes {sorted(pids)} still "
                                   f"running after {timeout}s")
            time.sleep(0.02)

    def write_file(self, relpath: str, text: str, mode: int = 0o644) -> Path:
        """Write a file (e.g. a rules file) inside the instance dir.

        World-readable by default because mail processes run as the mail user.
        """
        path = self._path(relpath)
        if self.dir not in path.resolve().parents:
            raise ValueError(f"{relpath!r} is not inside the instance dir")
        path.parent.mkdir(parents=True, exist_ok=True)
        for p in [path.parent, *path.parent.parents]:
            if p == self.dir:
                break
            os.chmod(p, 0o755)
        path.write_text(text)
        os.chmod(path, mode)
        return path

    # ----------------------------------------------------------- log

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Current log length; pass as `since` to only look at newer lines."""
        return len(self.log_text())

    def wait_for_log(self, pattern: str, timeout: float = 5.0,
                     since: int = 0) -> re.Match:
        """Wait until `pattern` (regex, multiline) shows up in the log.

        Dovecot logs asynchronously through its log process, so a line for an
        action that just finished may take a moment to appear.
        """
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text(), since)
            if m:
                return m
            if time.monotonic() > deadline:
                tail = "\n".join(self.log_text()[since:].splitlines()[-30:])
                raise TimeoutError(
                    f"{pattern!r} not in {self.log_path} after {timeout}s; "
                    f"tail:\n{tail}")
            time.sleep(0.05)

    def log_errors(self, since: int = 0) -> list[str]:
        """Log lines at Error/Fatal/Panic level."""
        return [line for line in self.log_text()[since:].splitlines()
                if re.search(r"\b(Error|Fatal|Panic): ", line)]

    # ----------------------------------------------------------- clients

    def _host(self, ipv6: bool) -> str:
        if ipv6 and not self.ipv6:
            raise RuntimeError("IPv6 loopback (::1) not available on this host")
        return "::1" if ipv6 else "127.0.0.1"

    def imap_connect(self, ssl: bool = False, ipv6: bool = False,
                     source_address: Optional[str] = None,
                     timeout: float = 10) -> imaplib.IMAP4:
        """Unauthenticated IMAP client (greeting already read)."""
        cls, port = (_IMAP4_SSL, self.imaps_port) if ssl else (_IMAP4, self.imap_port)
        return cls(self._host(ipv6), port, timeout=timeout,
                   source_address=source_address)

    def imap(self, user: str, password: str = DEFAULT_PASSWORD, **kw) -> imaplib.IMAP4:
        """Logged-in IMAP client; kw as for imap_connect()."""
        client = self.imap_connect(**kw)
        try:
            client.login(user, password)
        except BaseException:
            client.shutdown()
            raise
        return client

    def pop3_connect(self, ssl: bool = False, ipv6: bool = False,
                     source_address: Optional[str] = None,
                     timeout: float = 10) -> poplib.POP3:
        cls, port = (_POP3_SSL, self.pop3s_port) if ssl else (_POP3, self.pop3_port)
        return cls(self._host(ipv6), port, timeout=timeout,
                   source_address=source_address)

    def pop3(self, user: str, password: str = DEFAULT_PASSWORD, **kw) -> poplib.POP3:
        """Logged-in POP3 client; kw as for pop3_connect()."""
        client = self.pop3_connect(**kw)
        try:
            client.user(user)
            client.pass_(password)
        except BaseException:
            client.close()
            raise
        return client

    def deliver(self, user: str, message: Union[bytes, str],
                sender: str = "sender@example.com") -> None:
        """Deliver one message to `user` over LMTP (TCP); raises on rejection."""
        with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=10) as lmtp:
            refused = lmtp.sendmail(sender, [user], message)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)

    def deliver_in_order(self, user: str, messages: Sequence[Union[bytes, str]],
                         mailbox: str = "INBOX") -> None:
        """Deliver messages over LMTP so that their UIDs follow their order.

        A maildir LMTP save only tries the dovecot-uidlist lock: when another
        process holds it (an indexer-worker under fts_autoindex), the mail
        waits in new/ without a UID and gets one at the next sync, in
        directory order, so that two deliveries can swap UIDs (Dovecot's
        maildir-save.c, MAILDIR_UIDLIST_SYNC_TRYLOCK). A doveadm search
        after each one syncs the mailbox with a full read, waiting for the
        lock (doveadm-mail-iter.c), without an IMAP login that access rules
        or a session count would see."""
        for message in messages:
            self.deliver(user, message)
            self.doveadm("search", "-u", user, "mailbox", mailbox, "all",
                         check=True)


def process_group_alive(pgid: int) -> bool:
    """Any non-zombie process left in `pgid`? (Zombies can't hold sockets or
    files, and may linger if PID 1 doesn't reap, e.g. in containers.)"""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised comm: state ppid pgrp ...
        fields = stat_line.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def make_message(subject: str = "Test", body: str = "Hello.\n",
                 sender: str = "sender@example.com", to: str = "user@example.com",
                 headers: Optional[Mapping[str, str]] = None) -> bytes:
    """A minimal RFC 5322 message for deliver()."""
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}",
             f"Message-ID: <{secrets.token_hex(8)}@example.com>",
             "Date: Thu, 01 Jan 2015 00:00:00 +0000"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()
