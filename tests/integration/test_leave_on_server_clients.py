"""Real POP3 clients from Debian against the policies: fetchmail (keep,
nokeep, uidl, flush) and getmail6 (delete, delete_after, read_all),
run non-interactively over plain POP3 on the loopback port. Checked:
what each client delivered locally (Message-IDs), what stays on the
server, and what each device gets next time.

Each client run uses its own directory (fetchmail's FETCHMAILHOME and
idfile, getmail's --getmaildir with its oldmail file), one per device,
like two separate machines."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import pytest

from leave_on_server_helpers import (_server_log_checks,  # noqa: F401  (fixtures)
                                     PASSWORD, account, deliver, imap_view,
                                     listed, login, msgid_of, msgids,
                                     msgids_in, server_fixture, settle_log)

FETCHMAIL = shutil.which("fetchmail") or "/usr/bin/fetchmail"
GETMAIL = shutil.which("getmail") or "/usr/bin/getmail"

DELETE = {"leave_on_server_policy": "delete"}
NEW_ONLY = {"leave_on_server_new_only": "yes"}

USERS = [
    *account("fmdel", fields=DELETE),
    *account("fmkeep"),
    *account("fmuidl"),
    *account("fmnew", fields=NEW_ONLY),
    *account("fmflushdel", fields=DELETE),
    *account("fmflushkeep"),
    *account("fmkill", fields=DELETE),
    *account("gmdel", fields=DELETE),
    *account("gmkeep"),
    *account("gmreadall"),
    *account("gmnew", fields=NEW_ONLY),
    *account("gmafterdel", fields=DELETE),
    *account("gmafterkeep"),
    *account("mixexp", fields={"leave_on_server_policy": "expire",
                               "leave_on_server_expire_days": "0"}),
]

server = server_fixture(USERS)


@pytest.fixture(scope="module", autouse=True)
def _clients_installed():
    for tool in (FETCHMAIL, GETMAIL):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} missing (Debian packages fetchmail, getmail6; "
                        "`make deps` installs them)", pytrace=False)


@pytest.fixture
def tmp_path():
    """A work directory the unprivileged getmail delivery user (nobody,
    when running as root) can reach: pytest's own tmp_path sits below a
    mode 0700 directory."""
    path = Path(tempfile.mkdtemp(prefix="los-clients-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _world_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return path


class Fetchmail:
    """fetchmail for one device: its own FETCHMAILHOME, idfile and mbox
    (delivered with an MDA, so no MTA is involved)."""

    def __init__(self, dc, user: str, device: str, tmp: Path):
        self.dc = dc
        self.login = login(user, device)
        self.dir = _world_dir(tmp / f"fetchmail-{self.login}")
        self.mbox = self.dir / "mbox"
        self.mbox.touch()
        self.got: list[str] = []

    def rcfile(self, options: str, mda: str) -> Path:
        # uidl is a server option (before the user part), the rest
        # (keep, nokeep, flush, ...) are user options
        words = options.split()
        server_opts = " uidl" if "uidl" in words else ""
        user_opts = " ".join(w for w in words if w != "uidl")
        rc = self.dir / "fetchmailrc"
        rc.write_text(
            "set no syslog\n"
            f'set idfile "{self.dir}/fetchids"\n'
            f"poll 127.0.0.1 service {self.dc.pop3_port} proto pop3 "
            f"auth password timeout 30{server_opts}\n"
            f'  user "{self.login}" there with password "{PASSWORD}"\n'
            f"  {user_opts}\n"
            "  sslproto ''\n"
            f'  mda "{mda}"\n')
        os.chmod(rc, 0o600)     # fetchmail refuses a readable rc file
        return rc

    def argv(self, options: str, mda: Optional[str] = None) -> tuple[list, dict]:
        rc = self.rcfile(options, mda or f"cat >> {self.mbox}")
        env = {**os.environ, "HOME": str(self.dir), "FETCHMAILHOME": str(self.dir),
               "LC_ALL": "C"}
        return [FETCHMAIL, "-f", str(rc), "-v", "--nodetach"], env

    def run(self, options: str) -> list[str]:
        """Run once; returns the Message-IDs it delivered this time."""
        before = self.mbox.stat().st_size
        argv, env = self.argv(options)
        res = subprocess.run(argv, env=env, capture_output=True, text=True,
                             timeout=120)
        self.dc.wait_workers_gone("pop3")
        # 0: got mail, 1: no mail; anything else is an error
        assert res.returncode in (0, 1), \
            f"fetchmail exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        with open(self.mbox, "rb") as f:
            f.seek(before)
            new = msgids_in(f.read())
        self.got += new
        return new


class Getmail:
    """getmail6 for one device: its own --getmaildir (oldmail file) and
    Maildir destination."""

    def __init__(self, dc, user: str, device: str, tmp: Path):
        self.dc = dc
        self.login = login(user, device)
        self.dir = _world_dir(tmp / f"getmail-{self.login}")
        self.maildir = self.dir / "Maildir"
        for sub in ("", "cur", "new", "tmp"):
            d = _world_dir(self.maildir / sub)
            if os.geteuid() == 0:
                # getmail won't deliver as root; its destination runs as
                # `user` (below), which must be able to write here
                nobody = pwd.getpwnam("nobody")
                os.chown(d, nobody.pw_uid, nobody.pw_gid)
        self.seen_files: set[str] = set()
        self.got: list[str] = []

    def run(self, **options) -> list[str]:
        opts = {"verbose": 2, "read_all": True, "delete": False}
        opts.update(options)
        rc = self.dir / "getmailrc"
        user_line = "user = nobody\n" if os.geteuid() == 0 else ""
        rc.write_text(
            "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\n"
            f"port = {self.dc.pop3_port}\nusername = {self.login}\n"
            f"password = {PASSWORD}\n\n"
            f"[destination]\ntype = Maildir\npath = {self.maildir}/\n{user_line}\n"
            "[options]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()))
        res = subprocess.run([GETMAIL, "--getmaildir", str(self.dir),
                              "--rcfile", str(rc)],
                             capture_output=True, text=True, timeout=120)
        self.dc.wait_workers_gone("pop3")
        assert res.returncode == 0, \
            f"getmail exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        new = []
        files = sorted((self.maildir / "new").iterdir(), key=lambda p: p.stat().st_mtime_ns)
        for f in files:
            if f.name not in self.seen_files:
                self.seen_files.add(f.name)
                new.append(msgid_of(f.read_bytes()))
        self.got += new
        return new

    def backdate_oldmail(self, days: int) -> int:
        """Make getmail think it first saw every message `days` days ago
        (its oldmail file: one "<uidl>\\0<unix time>" per line)."""
        files = list(self.dir.glob("oldmail-*"))
        assert len(files) == 1, files
        lines = files[0].read_text().splitlines()
        out = []
        for line in lines:
            uidl, ts = line.split("\0")
            out.append(f"{uidl}\0{int(ts) - days * 86400}")
        files[0].write_text("".join(l + "\n" for l in out))
        return len(out)


def assert_once(got: list[str], expected: list[str], who: str) -> None:
    assert sorted(got) == sorted(expected), \
        f"{who} got {got}, expected each of {expected} once"


def two_device_rounds(dc, user, run_phone, run_laptop):
    """Devices fetch in turns while new mail arrives; returns all ids."""
    all_ids = deliver(dc, user, 3, tag="a")
    run_phone()
    all_ids += deliver(dc, user, 2, tag="b")
    run_laptop()
    run_phone()
    all_ids += deliver(dc, user, 1, tag="c")
    run_phone()
    run_laptop()
    run_laptop()
    return all_ids


# ------------------------------------------------------------------ fetchmail

def test_fetchmail_nokeep_under_delete_policy(server, tmp_path):
    ids = deliver(server, "fmdel", 3)
    fm = Fetchmail(server, "fmdel", "phone", tmp_path)
    assert fm.run("nokeep") == ids
    assert msgids(server, "fmdel") == []
    assert imap_view(server, "fmdel") == {}
    new = deliver(server, "fmdel", 1, tag="new")
    assert fm.run("nokeep") == new
    assert msgids(server, "fmdel") == []


def test_fetchmail_nokeep_two_devices_under_keep(server, tmp_path):
    """nokeep (RETR + DELE) on each device: each gets every message once,
    and the server keeps everything for IMAP."""
    phone = Fetchmail(server, "fmkeep", "phone", tmp_path)
    laptop = Fetchmail(server, "fmkeep", "laptop", tmp_path)
    all_ids = two_device_rounds(server, "fmkeep", lambda: phone.run("nokeep"),
                                lambda: laptop.run("nokeep"))
    assert_once(phone.got, all_ids, "phone")
    assert_once(laptop.got, all_ids, "laptop")
    assert msgids(server, "fmkeep") == all_ids
    assert set(imap_view(server, "fmkeep")) == set(all_ids)


def test_fetchmail_keep_uidl_two_devices(server, tmp_path):
    """keep + uidl: the client's own UIDL tracking, nothing hidden.
    (fetchmail then downloads with TOP n 99999999, not RETR.)"""
    phone = Fetchmail(server, "fmuidl", "phone", tmp_path)
    laptop = Fetchmail(server, "fmuidl", "laptop", tmp_path)
    all_ids = two_device_rounds(server, "fmuidl", lambda: phone.run("keep uidl"),
                                lambda: laptop.run("keep uidl"))
    assert_once(phone.got, all_ids, "phone")
    assert_once(laptop.got, all_ids, "laptop")
    assert msgids(server, "fmuidl") == all_ids


def test_fetchmail_keep_two_devices_under_new_only(server, tmp_path):
    """keep (RETR; fetchmail also remembers UIDLs in its idfile) under
    new_only: the server lists each device only its new mail."""
    phone = Fetchmail(server, "fmnew", "phone", tmp_path)
    laptop = Fetchmail(server, "fmnew", "laptop", tmp_path)
    all_ids = two_device_rounds(server, "fmnew", lambda: phone.run("keep"),
                                lambda: laptop.run("keep"))
    assert_once(phone.got, all_ids, "phone")
    assert_once(laptop.got, all_ids, "laptop")
    assert msgids(server, "fmnew") == all_ids


@pytest.mark.parametrize("user", ["fmflushdel", "fmflushkeep"])
def test_fetchmail_flush(server, tmp_path, user):
    """keep, then keep + flush: flush deletes the mail fetchmail already
    has. Under delete that expunges it; under keep it only stops being
    listed to this device."""
    phone = Fetchmail(server, user, "phone", tmp_path)
    old = deliver(server, user, 3, tag="old")
    assert phone.run("keep uidl") == old
    new = deliver(server, user, 2, tag="new")
    assert phone.run("keep uidl flush") == new
    if user == "fmflushdel":
        assert msgids(server, user) == new
    else:
        assert msgids(server, user) == old + new
        assert listed(server, user, "laptop") == old + new
        assert set(imap_view(server, user)) == set(old + new)
    # the device goes on polling as usual
    newer = deliver(server, user, 1, tag="newer")
    assert phone.run("keep uidl") == newer
    assert_once(phone.got, old + new + newer, "phone")


def test_fetchmail_killed_mid_session_changes_nothing(server, tmp_path):
    """nokeep under delete, and fetchmail is killed (SIGKILL) after it
    delivered two messages, so after their DELE but before QUIT."""
    ids = deliver(server, "fmkill", 4)
    fm = Fetchmail(server, "fmkill", "phone", tmp_path)
    ready = fm.dir / "ready"
    count = fm.dir / "count"
    mda = fm.dir / "mda.sh"
    mda.write_text(f"#!/bin/sh\ncat >> {fm.mbox}\necho x >> {count}\n"
                   f'if [ "$(wc -l < {count})" -ge 3 ]; then touch {ready}; '
                   "exec sleep 60; fi\n")
    os.chmod(mda, 0o755)
    argv, env = fm.argv("nokeep", mda=str(mda))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, "fetchmail ended early"
            assert time.monotonic() < deadline, "fetchmail never got to message 3"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    server.wait_workers_gone("pop3")
    settle_log(server)
    assert msgids_in(fm.mbox.read_bytes()) == ids[:3]
    assert msgids(server, "fmkill") == ids
    assert listed(server, "fmkill", "phone") == ids


# ------------------------------------------------------------------ getmail

def test_getmail_delete_under_delete_policy(server, tmp_path):
    ids = deliver(server, "gmdel", 3)
    gm = Getmail(server, "gmdel", "phone", tmp_path)
    assert gm.run(delete=True) == ids
    assert msgids(server, "gmdel") == []
    new = deliver(server, "gmdel", 2, tag="new")
    assert gm.run(delete=True) == new
    assert msgids(server, "gmdel") == []


def test_getmail_delete_two_devices_under_keep(server, tmp_path):
    phone = Getmail(server, "gmkeep", "phone", tmp_path)
    laptop = Getmail(server, "gmkeep", "laptop", tmp_path)
    all_ids = two_device_rounds(server, "gmkeep", lambda: phone.run(delete=True),
                                lambda: laptop.run(delete=True))
    assert_once(phone.got, all_ids, "phone")
    assert_once(laptop.got, all_ids, "laptop")
    assert msgids(server, "gmkeep") == all_ids
    assert set(imap_view(server, "gmkeep")) == set(all_ids)


def test_getmail_read_all_false_two_devices(server, tmp_path):
    """read_all = false: getmail's own UIDL tracking, nothing hidden."""
    phone = Getmail(server, "gmreadall", "phone", tmp_path)
    laptop = Getmail(server, "gmreadall", "laptop", tmp_path)
    all_ids = two_device_rounds(server, "gmreadall",
                                lambda: phone.run(read_all=False),
                                lambda: laptop.run(read_all=False))
    assert_once(phone.got, all_ids, "phone")
    assert_once(laptop.got, all_ids, "laptop")
    assert msgids(server, "gmreadall") == all_ids


def test_getmail_read_all_under_new_only(server, tmp_path):
    """read_all = true relies on the server: new_only lists only new mail."""
    phone = Getmail(server, "gmnew", "phone", tmp_path)
    laptop = Getmail(server, "gmnew", "laptop", tmp_path)
    all_ids = two_device_rounds(server, "gmnew", lambda: phone.run(read_all=True),
                                lambda: laptop.run(read_all=True))
    assert_once(phone.got, all_ids, "phone")
    assert_once(laptop.got, all_ids, "laptop")
    assert msgids(server, "gmnew") == all_ids


@pytest.mark.parametrize("user", ["gmafterdel", "gmafterkeep"])
def test_getmail_delete_after(server, tmp_path, user):
    """delete_after = 1: getmail DELEs what it first saw over a day ago.
    Under delete that expunges it; under keep it is only hidden from this
    device."""
    phone = Getmail(server, user, "phone", tmp_path)
    opts = {"read_all": False, "delete_after": 1}
    old = deliver(server, user, 3, tag="old")
    assert phone.run(**opts) == old
    assert msgids(server, user) == old          # not a day old yet
    assert phone.backdate_oldmail(2) == 3
    new = deliver(server, user, 2, tag="new")
    assert phone.run(**opts) == new
    if user == "gmafterdel":
        assert msgids(server, user) == new
    else:
        assert msgids(server, user) == old + new
        assert listed(server, user, "phone") == new
        assert listed(server, user, "laptop") == old + new
    newer = deliver(server, user, 1, tag="newer")
    assert phone.run(**opts) == newer
    assert_once(phone.got, old + new + newer, "phone")


# ------------------------------------------------------------------ mixed

def test_expire_with_fetchmail_and_getmail(server, tmp_path):
    """expire, 0 days, all devices: mail goes once both clients have
    retrieved it (fetchmail `keep` fetches with RETR and remembers what it
    has in its idfile; getmail read_all = false likewise in oldmail)."""
    phone = Fetchmail(server, "mixexp", "phone", tmp_path)
    laptop = Getmail(server, "mixexp", "laptop", tmp_path)
    assert phone.run("keep") == []
    assert laptop.run(read_all=False) == []
    ids = deliver(server, "mixexp", 3)
    assert phone.run("keep") == ids
    assert msgids(server, "mixexp") == ids
    assert laptop.run(read_all=False) == ids
    assert msgids(server, "mixexp") == []
    new = deliver(server, "mixexp", 2, tag="new")
    assert laptop.run(read_all=False) == new
    assert msgids(server, "mixexp") == new
    assert phone.run("keep") == new
    assert msgids(server, "mixexp") == []
