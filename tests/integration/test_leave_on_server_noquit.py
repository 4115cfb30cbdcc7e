"""A POP3 session that doesn't end with QUIT (RFC 1939: no UPDATE state)
changes nothing: nothing is expunged, whatever the policy, and the
device's retrievals and deletions of that session are not recorded, so
it gets the same messages listed again. Covered: the client closes the
connection after RETR/DELE, the client process is killed, and RSET."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from leave_on_server_helpers import (_server_log_checks,  # noqa: F401  (fixtures)
                                     account, deliver, device_states,
                                     device_values, set_last_seen, fetch,
                                     listed, login, msgids, pop3, register,
                                     seen_ids, server_fixture, settle_log)

DELETE = {"leave_on_server_policy": "delete"}
NEW_ONLY = {"leave_on_server_new_only": "yes"}
EXPIRE0 = {"leave_on_server_policy": "expire", "leave_on_server_expire_days": "0",
           "leave_on_server_expire_from": "first"}

USERS = [
    *account("dropdel", fields=DELETE),
    *account("dropnew", fields=NEW_ONLY),
    *account("dropexp", fields={**EXPIRE0, **NEW_ONLY}),
    *account("dropseen"),
    *account("dropstate", fields=NEW_ONLY),
    *account("killdel", fields=DELETE),
    *account("killnew", fields=NEW_ONLY),
    *account("killexp", fields=EXPIRE0),
    *account("rsetdel", fields=DELETE),
    *account("rsetnew", fields=NEW_ONLY),
]

server = server_fixture(USERS)


def nothing_recorded(dc, user, device):
    st = device_states(dc, user)[device]
    return st.done == set() and st.hidden == set()


def test_dropped_connection_delete_policy(server):
    ids = deliver(server, "dropdel", 3)
    with pop3(server, "dropdel", "phone") as s:
        s.retr(1)
        s.dele(1)
        s.dele(2)
        s.drop()
    settle_log(server)
    assert msgids(server, "dropdel") == ids
    assert listed(server, "dropdel", "phone") == ids
    assert listed(server, "dropdel", "laptop") == ids


def test_dropped_connection_new_only(server):
    ids = deliver(server, "dropnew", 3)
    with pop3(server, "dropnew", "phone") as s:
        s.retr_all()
        s.dele(1)
        s.drop()
    assert nothing_recorded(server, "dropnew", "phone")
    assert listed(server, "dropnew", "phone") == ids
    # an earlier QUIT session's record stays, a later dropped one adds nothing
    assert fetch(server, "dropnew", "phone", only=lambda m: m == ids[0]) == [ids[0]]
    with pop3(server, "dropnew", "phone") as s:
        s.retr_all()
        s.dele(1)
        s.drop()
    assert listed(server, "dropnew", "phone") == ids[1:]
    assert msgids(server, "dropnew") == ids


def test_dropped_connection_expires_nothing(server):
    ids = deliver(server, "dropexp", 3)
    with pop3(server, "dropexp", "phone") as s:
        assert s.retr_all() == ids
        s.drop()
    settle_log(server)
    assert msgids(server, "dropexp") == ids
    # a later QUIT session doesn't expire what the dropped one retrieved
    register(server, "dropexp", "phone")
    assert msgids(server, "dropexp") == ids
    assert nothing_recorded(server, "dropexp", "phone")
    # only retrieval in a QUIT session counts
    assert fetch(server, "dropexp", "phone", only=lambda m: m == ids[1]) == [ids[1]]
    assert msgids(server, "dropexp") == [ids[0], ids[2]]


def test_dropped_connection_leaves_device_state_alone(server):
    """Not even last_seen: the stored value stays byte for byte (it is
    made two hours old first, so that any rewrite would show)."""
    ids = deliver(server, "dropstate", 3)
    fetch(server, "dropstate", "phone", only=lambda m: m == ids[0])
    set_last_seen(server, "dropstate", "phone", int(time.time()) - 7200)
    before = device_values(server, "dropstate")
    time.sleep(1.1)
    with pop3(server, "dropstate", "phone") as s:
        assert list(s.listed_ids().values()) == ids[1:]
        s.retr(1)
        s.dele(2)
        s.drop()
    assert device_values(server, "dropstate") == before
    assert msgids(server, "dropstate") == ids


def test_dropped_connection_sets_no_seen_flag(server):
    """\\Seen is set at QUIT (leave_on_server_mark_seen), so a session
    that never got there leaves the flags as they were."""
    ids = deliver(server, "dropseen", 3)
    with pop3(server, "dropseen", "phone") as s:
        s.retr(1)
        s.retr(2)
        s.drop()
    assert seen_ids(server, "dropseen") == set()
    assert msgids(server, "dropseen") == ids


CLIENT = r"""
import poplib, sys, time
p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=30)
p.user(sys.argv[2])
p.pass_("secret")
for num in range(1, int(sys.argv[3]) + 1):
    p.retr(num)
    p.dele(num)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("user", ["killdel", "killnew", "killexp"])
def test_killed_client_changes_nothing(server, user):
    ids = deliver(server, user, 3)
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, str(server.pop3_port),
                             login(user, "phone"), "2"],
                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline() == b"ready\n"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    server.wait_workers_gone("pop3")
    settle_log(server)
    assert msgids(server, user) == ids
    assert nothing_recorded(server, user, "phone")
    # flags too (\Seen is for QUIT: see test_dropped_connection_sets_no_seen_flag)
    assert seen_ids(server, user) == set()
    assert listed(server, user, "phone") == ids


@pytest.mark.parametrize("user", ["rsetdel", "rsetnew"])
def test_rset_undoes_dele(server, user):
    ids = deliver(server, user, 3)
    with pop3(server, user, "phone") as s:
        s.dele(1)
        s.dele(2)
        assert s.client.rset().startswith(b"+OK")
        assert s.count() == 3
        s.dele(3)
    assert msgids(server, user) == (ids if user == "rsetnew" else ids[:2])
    assert listed(server, user, "phone") == ids[:2]
