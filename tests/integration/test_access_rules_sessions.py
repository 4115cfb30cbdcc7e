"""access_rules session caps (sessions, imap-sessions, pop3-sessions)
against the real server: sessions are held open with real clients, the
one over the cap is refused (IMAP `* BYE [LIMIT]`, POP3 `-ERR [IN-USE]`),
closing or killing a session frees its slot, and concurrent logins never
get past the cap. Each test uses its own user so that no slot leaks from
one test into the next."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from access_rules_helpers import (_server_log_on_failure, _no_crash,  # noqa: F401
                                  assert_no_crash, attempt, login_pid,
                                  server_fixture, try_session, wait_pid_gone)

USERS = [f"cap{i}" for i in range(1, 9)]

server = server_fixture(users=USERS)



def limit_reply(proto: str, text: str) -> str:
    return f"[LIMIT] {text}" if proto == "imap" else f"-ERR [IN-USE] {text}"


class Held:
    """Sessions held open, with the pid of each session's mail process."""

    def __init__(self, server):
        self.server = server
        self.sessions = []          # (Outcome, pid)

    def open(self, proto: str, user: str):
        dc = self.server.dc
        mark = dc.log_mark()
        # waits for the decision line too, so that it can't be taken for
        # the next session's
        out, dec = try_session(self.server, proto, user, keep=True)
        assert not out.refused, f"{proto} session of {user} refused: {out.reply}"
        assert dec.action == "allow", dec.text
        pid = login_pid(dc, proto, user, mark)
        assert dec.pid == pid, (dec.text, pid)
        self.sessions.append((out, pid))
        return out, pid

    def close(self, index: int = 0) -> None:
        """Log out and wait until the session's process is gone (that is
        when its slot is released)."""
        out, pid = self.sessions.pop(index)
        out.close()
        wait_pid_gone(pid)

    def close_all(self) -> None:
        while self.sessions:
            self.close()


@pytest.fixture
def held(server):
    h = Held(server)
    yield h
    h.close_all()


def expect_limit(server, proto, user, text, line):
    out, dec = try_session(server, proto, user)
    assert out.refused, f"{proto} session of {user} over the cap was let in"
    assert out.reply == limit_reply(proto, text), out.reply
    assert (dec.action, dec.level, dec.line, dec.reason) == ("limit", "Info", line, text), \
        dec.text
    assert dec.text.endswith(f"limit: session refused by {server.rules_path}:{line}: {text}")


def session_files(server, user):
    d = server.dc.home(user) / ".dovecot.access-sessions"
    return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_sessions_cap_both_protocols(server, held, proto):
    user = "cap1" if proto == "imap" else "cap2"
    server.rules(f"allow user {user} sessions 2\n")
    held.open("imap", user)
    held.open("pop3", user)
    text = "Too many sessions (at most 2 at a time)."
    expect_limit(server, proto, user, text, 1)
    other = "pop3" if proto == "imap" else "imap"
    expect_limit(server, other, user, text, 1)
    # refused sessions don't hold a slot: still refused, still 2 files
    expect_limit(server, proto, user, text, 1)
    assert len(session_files(server, user)) == 2

    held.close(0)
    out, dec = try_session(server, proto, user, keep=True)
    assert not out.refused, out.reply
    assert (dec.action, dec.line) == ("allow", 1)
    out.close()


def test_imap_sessions_cap(server, held):
    server.rules("allow user cap3 imap-sessions 1\n")
    held.open("imap", "cap3")
    expect_limit(server, "imap", "cap3", "Too many IMAP sessions (at most 1 at a time).", 1)
    # POP3 isn't capped
    held.open("pop3", "cap3")
    held.open("pop3", "cap3")
    held.close(0)
    held.open("imap", "cap3")


def test_pop3_sessions_cap(server, held):
    server.rules("allow user cap4 pop3-sessions 1 imap-sessions 3\n")
    held.open("pop3", "cap4")
    expect_limit(server, "pop3", "cap4", "Too many POP3 sessions (at most 1 at a time).", 1)
    held.open("imap", "cap4")
    held.open("imap", "cap4")
    held.open("imap", "cap4")
    expect_limit(server, "imap", "cap4", "Too many IMAP sessions (at most 3 at a time).", 1)
    held.close(0)
    held.open("pop3", "cap4")


def test_uncapped_rule_sessions_still_count(server, held):
    """Every session of a user whose rule set has caps is counted, also
    one admitted by a rule without a cap."""
    server.rules("allow user cap5 protocol pop3\n"
                 "allow user cap5 sessions 1\n")
    held.open("pop3", "cap5")
    expect_limit(server, "imap", "cap5", "Too many sessions (at most 1 at a time).", 2)


def test_killed_session_stops_counting(server, held):
    server.rules("allow user cap6 sessions 2\n")
    out1, pid1 = held.open("imap", "cap6")
    held.open("imap", "cap6")
    expect_limit(server, "imap", "cap6", "Too many sessions (at most 2 at a time).", 1)
    files = session_files(server, "cap6")
    assert len(files) == 2 and any(f".{pid1}." in f for f in files), files

    os.kill(pid1, signal.SIGKILL)
    wait_pid_gone(pid1)
    held.sessions = [s for s in held.sessions if s[1] != pid1]
    out1.client.shutdown()

    # the kernel dropped the dead process's lock: its slot is free now
    out, pid3 = held.open("imap", "cap6")
    files = session_files(server, "cap6")
    # and its file was removed by that count
    assert len(files) == 2 and not any(f".{pid1}." in f for f in files), files
    assert any(f".{pid3}." in f for f in files), files
    expect_limit(server, "pop3", "cap6", "Too many sessions (at most 2 at a time).", 1)


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_concurrent_logins_never_exceed_cap(server, proto):
    user = "cap7" if proto == "imap" else "cap8"
    cap, clients = 3, 12
    server.rules(f"allow user {user} sessions {cap}\n")
    barrier = threading.Barrier(clients)
    results = [None] * clients

    def login(i):
        barrier.wait()
        try:
            results[i] = attempt(server.dc, proto, user, keep=True)
        except Exception as e:              # reported below
            results[i] = e

    threads = [threading.Thread(target=login, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        errors = [r for r in results if isinstance(r, Exception) or r is None]
        assert not errors, errors
        allowed = [r for r in results if not r.refused]
        refused = [r for r in results if r.refused]
        # nobody left, so exactly the first `cap` got in
        assert len(allowed) == cap, [r.reply for r in results]
        text = f"Too many sessions (at most {cap} at a time)."
        assert all(r.reply == limit_reply(proto, text) for r in refused), \
            [r.reply for r in refused]
        # the allowed ones really work
        for r in allowed:
            if proto == "imap":
                assert r.client.noop()[0] == "OK"
            else:
                assert r.client.stat()[0] >= 0
    finally:
        for r in results:
            if not isinstance(r, Exception) and r is not None:
                r.close()
