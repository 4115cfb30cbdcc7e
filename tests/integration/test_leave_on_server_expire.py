"""leave_on_server_policy = expire: a message kept for the devices is
expunged leave_on_server_expire_days whole UTC days after every
registered device retrieved it (expire_from = all) or after the first
one did (= first), at the end of a POP3 session that ended with QUIT.

The expected survivors are computed from what each device really
retrieved in the test. Days are tested without waiting: the retrieval
days in the stored device state are moved into the past (the state file
is read again by each session)."""

from __future__ import annotations

from leave_on_server_helpers import (_server_log_checks,  # noqa: F401  (fixtures)
                                     account, avoid_midnight, backdate,
                                     deliver, device_states, fetch, listed,
                                     msgids, plugin_lines, pop3, register,
                                     server_fixture, set_device_value, today,
                                     wait_log)

DEVICES = ("phone", "laptop", "tablet")
FIRST = {"leave_on_server_expire_from": "first"}

USERS = [
    *account("all0", DEVICES),
    *account("first0", DEVICES, fields=FIRST),
    *account("all3", DEVICES, fields={"leave_on_server_expire_days": "3"}),
    *account("first3", DEVICES, fields={"leave_on_server_expire_days": "3", **FIRST}),
    *account("top0", fields=FIRST),
    *account("mvexp", fields={"leave_on_server_move_to": "Expired", **FIRST}),
    *account("dmgexp"),
    *account("keepnever", fields={"leave_on_server_policy": "keep"}),
    *account("later"),
    *account("dropreg"),
]

# plugin { }: the policy for every account that doesn't say otherwise
server = server_fixture(USERS, {"leave_on_server_policy": "expire",
                                "leave_on_server_expire_days": 0})


def expired_lines(dc, since):
    return [l for l in plugin_lines(dc, since, "Info") if l.startswith("Expired ")]


def test_expire_all_zero_days(server):
    """Expunged at the end of the session in which the last registered
    device retrieved it, not before."""
    avoid_midnight()
    ids = deliver(server, "all0", 5)
    register(server, "all0", "tablet")      # registered, retrieves nothing yet
    got = {}
    got["phone"] = fetch(server, "all0", "phone", only=lambda m: m in ids[0:3])
    assert msgids(server, "all0") == ids
    got["laptop"] = fetch(server, "all0", "laptop", only=lambda m: m in ids[1:4])
    assert msgids(server, "all0") == ids    # the tablet hasn't retrieved any
    mark = server.log_mark()
    got["tablet"] = fetch(server, "all0", "tablet",
                          only=lambda m: m in (ids[2], ids[4]))
    gone = set(got["phone"]) & set(got["laptop"]) & set(got["tablet"])
    assert gone, got
    assert msgids(server, "all0") == [m for m in ids if m not in gone]
    lines = wait_log(server, r"leave_on_server: Expired (\d+) message", mark)
    assert int(lines.group(1)) == len(gone)

    # a message goes with the last device to retrieve it
    got["phone"] += fetch(server, "all0", "phone", only=lambda m: m == ids[4])
    assert ids[4] in msgids(server, "all0")         # the laptop hasn't
    got["laptop"] += fetch(server, "all0", "laptop", only=lambda m: m == ids[4])
    assert ids[4] not in msgids(server, "all0")
    got["tablet"] += fetch(server, "all0", "tablet", only=lambda m: m == ids[1])
    gone = set(got["phone"]) & set(got["laptop"]) & set(got["tablet"])
    assert gone == {ids[1], ids[2], ids[4]}
    assert msgids(server, "all0") == [m for m in ids if m not in gone]


def test_expire_first_zero_days(server):
    avoid_midnight()
    ids = deliver(server, "first0", 4)
    register(server, "first0", "laptop")
    mark = server.log_mark()
    with pop3(server, "first0", "phone") as s:
        for num, mid in s.listed_ids().items():
            if mid in ids[:2]:
                s.retr(num)
        reply = s.quit()
    got = s.retrieved
    assert reply.startswith(b"+OK")
    assert msgids(server, "first0") == [m for m in ids if m not in got]
    wait_log(server, rf"leave_on_server: Expired {len(got)} message\(s\) "
                     r"retrieved 0 or more days ago$", mark)
    # after the client was let go
    lines = s.log_lines()
    disconnected = [i for i, l in enumerate(lines) if ": Disconnected: Logged out" in l]
    expired = [i for i, l in enumerate(lines) if "leave_on_server: Expired" in l]
    assert disconnected and expired and disconnected[0] < expired[0], lines
    # TOP isn't retrieval; RETR in the next session is
    with pop3(server, "first0", "laptop") as s:
        assert len(s.listing()) == 2
        s.top(1, 5)
    assert msgids(server, "first0") == ids[2:]
    got2 = fetch(server, "first0", "laptop", only=lambda m: m == ids[3])
    assert msgids(server, "first0") == [ids[2]]
    assert got2 == [ids[3]]


def test_expire_all_after_n_days(server):
    avoid_midnight()
    ids = deliver(server, "all3", 5)
    register(server, "all3", "tablet")
    got = {"phone": fetch(server, "all3", "phone", only=lambda m: m in ids[0:3]),
           "laptop": fetch(server, "all3", "laptop", only=lambda m: m in ids[1:4]),
           "tablet": fetch(server, "all3", "tablet", only=lambda m: m in ids[1:5])}
    assert msgids(server, "all3") == ids            # retrieved today
    both = set(got["phone"]) & set(got["laptop"]) & set(got["tablet"])

    backdate(server, "all3", "phone", 3)
    backdate(server, "all3", "tablet", 5)
    backdate(server, "all3", "laptop", 2)           # one day short
    register(server, "all3", "phone")               # a QUIT session
    assert msgids(server, "all3") == ids
    # the state really says what the test thinks it says
    states = device_states(server, "all3")
    assert set(states["laptop"].days) == {today() - 2}
    assert max(states["phone"].days) == today() - 3

    backdate(server, "all3", "laptop", 1)           # now 3 days
    mark = server.log_mark()
    register(server, "all3", "laptop")
    assert msgids(server, "all3") == [m for m in ids if m not in both]
    wait_log(server, rf"leave_on_server: Expired {len(both)} message\(s\) "
                     r"retrieved 3 or more days ago$", mark)


def test_expire_first_after_n_days(server):
    avoid_midnight()
    ids = deliver(server, "first3", 5)
    p = fetch(server, "first3", "phone", only=lambda m: m in ids[0:2])
    l = fetch(server, "first3", "laptop", only=lambda m: m in ids[1:4])
    assert msgids(server, "first3") == ids
    backdate(server, "first3", "phone", 3)
    backdate(server, "first3", "laptop", 2)
    register(server, "first3", "tablet")
    # the phone's are 3 days old: gone, whatever the others did
    assert msgids(server, "first3") == [m for m in ids if m not in p]
    backdate(server, "first3", "laptop", 1)
    register(server, "first3", "tablet")
    assert msgids(server, "first3") == [m for m in ids if m not in p + l]
    assert msgids(server, "first3") == [ids[4]]


def test_top_is_not_retrieval(server):
    ids = deliver(server, "top0", 3)
    with pop3(server, "top0", "phone") as s:
        for num in s.listing():
            s.top(num, 100)
    assert msgids(server, "top0") == ids
    fetch(server, "top0", "phone", only=lambda m: m == ids[1])
    assert msgids(server, "top0") == [ids[0], ids[2]]


def test_expire_moves_to_move_to(server):
    ids = deliver(server, "mvexp", 3)
    mark = server.log_mark()
    got = fetch(server, "mvexp", "phone", only=lambda m: m != ids[1])
    assert msgids(server, "mvexp") == [ids[1]]
    assert msgids(server, "mvexp", "Expired") == got == [ids[0], ids[2]]
    wait_log(server, r"leave_on_server: Expired 2 message\(s\) retrieved 0 or "
                     r"more days ago \(moved to Expired\)$", mark)


def test_damaged_state_expires_nothing_on_its_account(server):
    ids = deliver(server, "dmgexp", 3)
    register(server, "dmgexp", "laptop")
    assert fetch(server, "dmgexp", "phone") == ids
    assert msgids(server, "dmgexp") == ids
    set_device_value(server, "dmgexp", "phone", "1 garbage")
    mark = server.log_mark()
    assert fetch(server, "dmgexp", "laptop") == ids
    # the phone retrieved everything, but its record is unreadable
    assert msgids(server, "dmgexp") == ids
    warnings = [l for l in plugin_lines(server, mark, "Warning")
                if "phone" in l and "damaged" in l]
    assert warnings, server.log_text()[mark:]
    # once the phone has retrieved its mail again, it expires
    assert fetch(server, "dmgexp", "phone") == ids
    assert msgids(server, "dmgexp") == []


def test_keep_policy_never_expunges(server):
    ids = deliver(server, "keepnever", 2)
    for dev in ("phone", "laptop"):
        assert fetch(server, "keepnever", dev) == ids
        backdate(server, "keepnever", dev, 400)
    register(server, "keepnever", "phone")
    assert msgids(server, "keepnever") == ids


def test_device_registered_later_gets_everything_left(server):
    """With expire_from = all, what every device registered at the time
    retrieved is gone; a device that registers later gets the rest."""
    ids = deliver(server, "later", 3)
    fetch(server, "later", "phone", only=lambda m: m != ids[2])
    assert msgids(server, "later") == [ids[2]]
    assert listed(server, "later", "laptop") == [ids[2]]
    # now the laptop is registered: the phone's retrieval alone is not enough
    new = deliver(server, "later", 1, tag="new")
    fetch(server, "later", "phone")
    assert msgids(server, "later") == [ids[2]] + new
    fetch(server, "later", "laptop")
    assert msgids(server, "later") == []


def test_device_registered_by_a_session_without_quit(server):
    """Registration happens at login, so a device whose first session
    was dropped still counts: mail waits for it."""
    ids = deliver(server, "dropreg", 2)
    with pop3(server, "dropreg", "phone") as s:
        s.retr(1)
        s.drop()
    assert fetch(server, "dropreg", "laptop") == ids
    assert msgids(server, "dropreg") == ids
    assert fetch(server, "dropreg", "phone") == ids
    assert msgids(server, "dropreg") == []
