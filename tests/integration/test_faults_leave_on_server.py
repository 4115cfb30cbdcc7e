"""The pop3 process killed (SIGKILL) in the middle of QUIT's UPDATE.

A device retrieves every message and deletes every other one, then
QUITs; strace kills the pop3 process when it enters one exact system
call of the UPDATE:

* state-rename: the rename() that replaces dovecot-attributes (the
  mail_attribute_dict file holding the device's state), before it runs;
* index-write: the first write to dovecot.index.log after that, i.e.
  the mailbox transaction (expunges, \\Seen) not yet written;
* mid-sync: the second unlink()/rename() of a message file, i.e. the
  maildir sync half done.

The client gets no "+OK" (the kill comes first), so whatever it asked for
may or may not have happened, but per message it must be all or nothing,
and the device's state must agree with the mailbox
(docs/leave_on_server.md, "RFC 1939's UPDATE state" and "Where the state
lives"):

* nothing the policy keeps is expunged (everything not DELEd; under
  keep, everything);
* the device is then listed the messages it retrieved (and didn't
  delete) either all again (pre-state) or, under new_only, none of them
  (post-state): the state is written whole or not at all;
* a DELEd message under `delete` is either gone or listed again: one
  that stays on the server while the device is not listed it any more
  would never be deleted;
* the log has the master's line for the killed process, and no other
  crash.

The server's mail_attribute_dict is the documented dict-file with
`:lock=fcntl`: with the dict-file's default dotlock, a kill at the state
write stalled the user's later state writes for a minute (found by
test_state_write_killed_with_the_documented_dict, which now checks the
configuration dovecot.conf.example gives).

The expire policy's cleanup, which runs after QUIT's reply, is killed as
it writes its expunges; then as the phone's state write is killed,
nothing may expire on the strength of a retrieval that wasn't recorded.
In both cases the next session's cleanup must expunge exactly what every
device has retrieved.
"""

from __future__ import annotations

import os
import poplib
import re
import signal
import time

import pytest

from dovecot_instance import REPO_ROOT
from fault_helpers import kill_at, killed_lines, require_strace, wait_gone
from leave_on_server_helpers import (ATTR_FILE, BASE_CONF, account, deliver,
                                     fetch, listed, login, make_server, msgids,
                                     pop3, seen_ids, server_fixture, settle_log,
                                     wait_log)

POLICIES = {
    "delete-newonly": {"leave_on_server_policy": "delete",
                       "leave_on_server_new_only": "yes"},
    "delete": {"leave_on_server_policy": "delete"},
    "keep-newonly": {"leave_on_server_policy": "keep",
                     "leave_on_server_new_only": "yes"},
}
POINTS = ["state-rename", "index-write", "mid-sync"]
# mark_seen = no: the cleanup's unlink()s then name the files as delivered
# (\Seen would rename them first)
EXPIRE = {"leave_on_server_policy": "expire", "leave_on_server_expire_days": "0",
          "leave_on_server_new_only": "yes", "leave_on_server_mark_seen": "no"}


def _user(policy: str, point: str) -> str:
    return f"{policy.replace('-', '')}{point.replace('-', '')}"


USERS = [u for policy, fields in POLICIES.items() for point in POINTS
         for u in account(_user(policy, point), fields=fields)]
USERS += account("expcleanup", fields=EXPIRE)
USERS += account("expstate", fields=EXPIRE)

# fcntl locking: a process killed while it holds the lock loses it at
# once. With the dict-file's default dotlock, the lock file stays behind
# and the next state write waits a minute for it to go stale (see
# test_state_write_killed_with_the_documented_dict).
assert "dovecot-attributes:lock=fcntl" in BASE_CONF
server = server_fixture(USERS)
# the dict-file writes <file>.tmp and renames it over the file
STATE_TMP = ATTR_FILE + ".tmp"

# The master's line for a process the test killed; anything else like it
# is a crash.
CRASH_RE = re.compile(r"\b(Panic|Fatal): |killed with signal")


def _message_files(dc, user: str) -> list:
    cur = dc.maildir(user) / "cur"
    return sorted(cur.iterdir())


def _kill_point(dc, user: str, pid: int, point: str, out):
    if point == "state-rename":
        # (strace -P matches rename()'s source)
        return kill_at(pid, ["rename"], 1, out, [dc.home(user) / STATE_TMP])
    if point == "index-write":
        return kill_at(pid, ["write", "pwrite64", "writev"], 1, out,
                       [dc.maildir(user) / "dovecot.index.log"])
    assert point == "mid-sync"
    return kill_at(pid, ["unlink", "rename"], 2, out, _message_files(dc, user))


def _quit_killed(s, st) -> None:
    """Send QUIT; the kill must come before the reply."""
    try:
        reply = s.client.quit()
    except (poplib.error_proto, OSError, EOFError):
        reply = None
    st.wait()
    wait_gone(s.pid)
    s.closed = True
    assert st.killed, (f"pop3 {s.pid} wasn't killed at the injected call; "
                       f"trace:\n{st.trace()[-1500:]}")
    assert reply is None, f"QUIT was answered before the kill: {reply!r}"


def _check_log(dc, mark: int, pid: int) -> None:
    wait_log(dc, rf"child {pid} killed with signal 9", mark)
    settle_log(dc)
    text = dc.log_text()[mark:]
    crashes = [l for l in text.splitlines() if CRASH_RE.search(l)
               and l not in killed_lines(text, [pid])]
    assert not crashes, "crash besides the injected kill:\n" + "\n".join(crashes)
    errors = [l for l in text.splitlines()
              if re.search(r"(Error|Panic): .*leave_on_server", l)]
    assert not errors, "leave_on_server errors after the kill:\n" + "\n".join(errors)


# Found by this test: Dovecot commits the mail_attribute_dict transaction
# (the device state) before the mailbox transaction that holds QUIT's
# expunges. The plugin used to record the DELEd messages as done in that
# state, so a kill between the two left them on the server and, with
# new_only, never listed again. Now the UIDs QUIT expunges under delete
# are never recorded as done.


def _update_params():
    for policy in POLICIES:
        for point in POINTS:
            yield pytest.param(policy, point, id=f"{policy}-{point}")


@pytest.mark.parametrize("policy,point", list(_update_params()))
def test_pop3_killed_during_update(server, tmp_path, policy, point):
    require_strace()
    user = _user(policy, point)
    fields = POLICIES[policy]
    deleting = fields["leave_on_server_policy"] == "delete"
    new_only = fields.get("leave_on_server_new_only") == "yes"

    ids = deliver(server, user, 8)
    assert listed(server, user, "phone") == ids  # registers the device
    s = pop3(server, user, "phone")
    dele = set()
    for num, mid in s.listed_ids().items():
        s.retr(num)
        if num % 2:
            s.dele(num)
            dele.add(mid)
    mark = server.log_mark()
    with _kill_point(server, user, s.pid, point, tmp_path / "strace.out") as st:
        _quit_killed(s, st)
    _check_log(server, mark, s.pid)

    after = msgids(server, user)
    lost = [m for m in ids if m not in after and (not deleting or m not in dele)]
    assert not lost, f"killed at {point}: expunged what {policy} keeps: {lost}"
    assert set(after) <= set(ids)
    now_listed = listed(server, user, "phone")
    assert set(now_listed) <= set(after)
    # the retrieved messages that weren't deleted: the state that records
    # them is written at once or not at all, so all are listed again
    # (pre-state) or, under new_only, none (post-state)
    kept = [m for m in ids if m not in dele]
    pre, post = kept, ([] if new_only else kept)
    again = [m for m in kept if m in now_listed]
    assert again in (pre, post), (
        f"killed at {point}: of the retrieved messages {kept} the device is "
        f"listed {again}: neither the pre-state nor the post-state")
    if deleting:
        stuck = [m for m in dele if m in after and m not in now_listed]
        assert not stuck, (
            f"killed at {point}: DELEd under {policy}, still on the server, "
            f"and no longer listed to the device (so never deleted): {stuck}; "
            f"on the server {after}, listed {now_listed}")
    if point == "mid-sync":
        # the transaction was committed before the kill: its expunges
        # are finished by the next sync, and \Seen is set
        assert after == [m for m in ids if not (deleting and m in dele)]
        assert seen_ids(server, user) == set(after)
    # the device goes on working: another session deletes what it is
    # listed; under delete that leaves on the server only what was not
    # listed (retrieved, not deleted, under new_only), under keep all
    fetch(server, user, "phone", dele=True)
    left = msgids(server, user)
    keeps = [m for m in after if m not in now_listed] if deleting else ids
    assert left == keeps, (
        f"killed at {point}: after a clean session that deleted everything "
        f"it was listed, the server holds {left} (expected {keeps})")
    assert listed(server, user, "phone") == []


def test_expire_cleanup_killed(server, tmp_path):
    """expire 0 days, from all devices: the laptop has retrieved the first
    four messages, the phone retrieves all eight and QUITs. After QUIT's
    reply the cleanup expunges the four that both have, in one append of
    expunge requests to dovecot.index.log (the second write to it after
    QUIT: the first is QUIT's own transaction); the kill comes as it
    enters that write. The cleanup of the next session (of any device)
    must then expunge them, and only them."""
    require_strace()
    user = "expcleanup"
    ids = deliver(server, user, 8)
    assert listed(server, user, "phone") == ids
    assert fetch(server, user, "laptop", only=lambda m: m in ids[:4]) == ids[:4]
    assert msgids(server, user) == ids
    s = pop3(server, user, "phone")
    s.retr_all()
    mark = server.log_mark()
    with kill_at(s.pid, ["write", "pwrite64", "writev"], 2, tmp_path / "strace.out",
                 [server.maildir(user) / "dovecot.index.log"]) as st:
        reply = s.client.quit()
        assert reply.startswith(b"+OK"), reply   # the cleanup comes after it
        st.wait()
        wait_gone(s.pid)
        s.closed = True
        assert st.killed, st.trace()[-1500:]
    _check_log(server, mark, s.pid)
    after = msgids(server, user)
    assert after == ids, f"killed before the cleanup's expunges, yet {after}"
    assert listed(server, user, "phone") == []      # QUIT's state was written
    # the next session's cleanup (it takes nothing itself) does the job
    assert fetch(server, user, "laptop", only=lambda m: False) == []
    assert msgids(server, user) == ids[4:]
    assert listed(server, user, "laptop") == ids[4:]


def test_expire_state_write_killed(server, tmp_path):
    """expire 0 days: the phone's state write is killed (before the
    rename). Nothing may expire, then or at the next session's cleanup,
    on the strength of a retrieval that wasn't recorded."""
    require_strace()
    user = "expstate"
    ids = deliver(server, user, 6)
    assert listed(server, user, "phone") == ids     # both registered
    assert fetch(server, user, "laptop") == ids
    s = pop3(server, user, "phone")
    s.retr_all()
    mark = server.log_mark()
    with kill_at(s.pid, ["rename"], 1, tmp_path / "strace.out",
                 [server.home(user) / STATE_TMP]) as st:
        _quit_killed(s, st)
    _check_log(server, mark, s.pid)
    assert msgids(server, user) == ids
    assert listed(server, user, "phone") == ids     # not recorded: listed again
    assert msgids(server, user) == ids              # that session expired nothing
    assert fetch(server, user, "phone") == ids
    assert msgids(server, user) == []


# ------------------------------------------------------------ documented dict

def documented_attribute_dict() -> str:
    text = (REPO_ROOT / "dovecot.conf.example").read_text()
    m = re.search(r"^mail_attribute_dict\s*=.*$", text, re.M)
    assert m, "dovecot.conf.example sets no mail_attribute_dict"
    return m.group(0)


@pytest.fixture(scope="module")
def documented_server():
    """The mail_attribute_dict that dovecot.conf.example (and the docs)
    give. With the dict-file's default locking, a dotlock, this test
    found that a killed state write stalls the user's later writes."""
    conf = re.sub(r"(?m)^mail_attribute_dict\s*=.*$",
                  documented_attribute_dict(), BASE_CONF)
    dc = make_server(account("dotlock"), base_conf=conf)
    dc.start()
    try:
        yield dc
    finally:
        dc.stop()


def test_state_write_killed_with_the_documented_dict(documented_server, tmp_path):
    require_strace()
    dc, user = documented_server, "dotlock"
    ids = deliver(dc, user, 4)
    assert listed(dc, user, "phone") == ids
    s = pop3(dc, user, "phone")
    s.retr_all()
    mark = dc.log_mark()
    lock = dc.home(user) / (ATTR_FILE + ".lock")
    # killed as the new state replaces the old one, holding the lock:
    # dict-file renames <file>.tmp (fcntl, flock) or <file>.lock (its
    # dotlock) over the file
    with kill_at(s.pid, ["rename"], 1, tmp_path / "strace.out",
                 [dc.home(user) / (ATTR_FILE + ".tmp"), lock]) as st:
        _quit_killed(s, st)
    _check_log(dc, mark, s.pid)
    assert listed(dc, user, "phone") == ids           # pre-state: fine
    # the next session that records something must not hang in QUIT
    # (it normally takes milliseconds)
    p = dc.pop3(login(user, "phone"), timeout=4)
    try:
        p.retr(1)
        start = time.monotonic()
        try:
            reply = p.quit()
        except (OSError, poplib.error_proto) as e:
            reply = f"no reply after {time.monotonic() - start:.1f}s ({e})"
    finally:
        p.close()
        for pid in dc.worker_pids("pop3"):   # one waiting for the lock
            os.kill(pid, signal.SIGKILL)
    assert isinstance(reply, bytes) and reply.startswith(b"+OK"), (
        f"QUIT after the killed state write: {reply}; {lock} "
        f"{'is still there' if lock.exists() else 'is gone'}")
