"""leave_on_server_policy = quota (set in plugin { }), with Dovecot's quota
plugin (count backend, 20 KiB limit): at the end of a POP3 session that
ended with QUIT, if usage is above leave_on_server_quota_high of the
limit, the oldest messages that every registered device has retrieved
are expunged until usage is at most leave_on_server_quota_low.

What should go is derived from the rule above and what the devices
really retrieved; the result is also checked against the quota plugin's
own figures (doveadm quota get)."""

from __future__ import annotations

from leave_on_server_helpers import (_server_log_checks, allow_log_errors,  # noqa: F401  (fixtures)
                                     account, deliver, fetch, messages, msgids,
                                     plugin_lines, pop3, register,
                                     server_fixture, settle_log, wait_log)

LIMIT = 20 * 1024
# what we deliver; LMTP adds ~220 bytes of headers to each, and all of
# them come to ~19 KB: above the default 90 % (18432 bytes), below the limit
SIZES = [1300, 2300, 1600, 2000, 1800, 1900, 1700, 2100, 2400]

USERS = [
    *account("q1"),
    *account("q2"),
    *account("q3", ("phone", "laptop", "tablet")),
    *account("q4", fields={"leave_on_server_quota_high": "50%",
                           "leave_on_server_quota_low": "20"}),
    *account("q5"),
    *account("qcapa", devices=()),
    *account("qmv", fields={"leave_on_server_move_to": "Removed"}),
    *account("qmvfull", fields={"leave_on_server_move_to": "Full"}),
]

server = server_fixture(
    USERS,
    {"quota": "count:User quota", "quota_rule": "*:storage=20K",
     # what moves to leave_on_server_move_to must stop counting, or moving
     # it frees nothing (and the copy itself is over quota)
     "quota_rule2": "Removed:ignore",
     "quota_vsizes": "yes", "leave_on_server_policy": "quota"},
    mail_plugins="$mail_plugins quota")


def quota_storage(dc, user) -> tuple[int, int]:
    """(value, limit) of STORAGE in KiB, as the quota plugin reports it."""
    res = dc.doveadm("-f", "tab", "quota", "get", "-u", user, check=True)
    rows = [r.split("\t") for r in res.stdout.splitlines()]
    head = rows[0]
    for r in rows[1:]:
        row = dict(zip(head, r))
        if row["Type"] == "STORAGE":
            return int(row["Value"]), int(row["Limit"])
    raise AssertionError(res.stdout)


def expected_cleanup(msgs, eligible, high, low) -> list[str]:
    """What the documented rule removes: nothing unless usage > high % of
    the limit; else the lowest-UID eligible messages until usage <= low %."""
    usage = sum(m.vsize for m in msgs)
    if usage * 100 <= LIMIT * high:
        return []
    gone = []
    for m in sorted(msgs, key=lambda m: m.uid):
        if usage * 100 <= LIMIT * low:
            break
        if m.msgid in eligible:
            gone.append(m.msgid)
            usage -= m.vsize
    return gone


def check_cleanup(dc, user, before, eligible, high=90, low=80, since=0,
                  moved_to=None):
    gone = expected_cleanup(before, eligible, high, low)
    left = [m for m in before if m.msgid not in gone]
    assert msgids(dc, user) == [m.msgid for m in left]
    usage = sum(m.vsize for m in left)
    if gone:
        # enough went: at most low %, and one message fewer would not do
        assert usage * 100 <= LIMIT * low
        last = next(m for m in before if m.msgid == gone[-1])
        assert (usage + last.vsize) * 100 > LIMIT * low
        m = wait_log(dc, r"leave_on_server: Quota above (\d+)%: removed (\d+) "
                         r"message\(s\), (\d+) bytes, that every device has "
                         r"retrieved(?: \(moved to (\S+)\))?$", since)
        assert (int(m.group(1)), int(m.group(2))) == (high, len(gone))
        assert m.group(4) == moved_to
        assert int(m.group(3)) == sum(x.vsize for x in before if x.msgid in gone)
    value_kib, limit_kib = quota_storage(dc, user)
    assert limit_kib == LIMIT // 1024
    assert value_kib == -(-usage // 1024)     # doveadm rounds up
    return gone


def test_quota_cleanup_removes_oldest_mail_every_device_retrieved(server):
    ids = deliver(server, "q1", sizes=SIZES)
    before = messages(server, "q1")
    assert LIMIT * 90 < sum(m.vsize for m in before) * 100 < LIMIT * 100
    register(server, "q1", "laptop")
    p = fetch(server, "q1", "phone", only=lambda m: m in ids[:6])
    assert msgids(server, "q1") == ids      # the laptop has retrieved nothing
    mark = server.log_mark()
    l = fetch(server, "q1", "laptop", only=lambda m: m in ids[1:7])
    eligible = set(p) & set(l)
    gone = check_cleanup(server, "q1", before, eligible, since=mark)
    # the oldest message stays: the laptop never retrieved it
    assert gone and ids[0] not in gone


def test_quota_below_high_removes_nothing(server):
    ids = deliver(server, "q2", sizes=SIZES[:-2])
    before = messages(server, "q2")
    assert sum(m.vsize for m in before) * 100 <= LIMIT * 90
    for dev in ("phone", "laptop"):
        assert fetch(server, "q2", dev) == ids
    settle_log(server)
    assert msgids(server, "q2") == ids
    # above it after new mail, at the next QUIT
    mark = server.log_mark()
    new = deliver(server, "q2", sizes=SIZES[-2:], tag="new")
    before = messages(server, "q2")
    register(server, "q2", "phone")
    check_cleanup(server, "q2", before, set(ids), since=mark)
    assert set(new) <= set(msgids(server, "q2"))


def test_quota_waits_for_every_registered_device(server):
    ids = deliver(server, "q3", sizes=SIZES)
    before = messages(server, "q3")
    register(server, "q3", "tablet")
    for dev in ("phone", "laptop"):
        assert fetch(server, "q3", dev) == ids
    assert msgids(server, "q3") == ids
    mark = server.log_mark()
    t = fetch(server, "q3", "tablet", only=lambda m: m in ids[2:])
    check_cleanup(server, "q3", before, set(t), since=mark)


def test_quota_thresholds_per_user(server):
    ids = deliver(server, "q4", sizes=SIZES[:6])
    before = messages(server, "q4")
    assert sum(m.vsize for m in before) * 100 > LIMIT * 50
    register(server, "q4", "laptop")
    p = fetch(server, "q4", "phone")
    assert msgids(server, "q4") == ids
    mark = server.log_mark()
    l = fetch(server, "q4", "laptop")
    assert p == l == ids
    gone = check_cleanup(server, "q4", before, set(ids), high=50, low=20, since=mark)
    assert len(gone) < len(ids)


def test_quota_cleanup_needs_quit(server):
    ids = deliver(server, "q5", sizes=SIZES)
    before = messages(server, "q5")
    register(server, "q5", "laptop")
    assert fetch(server, "q5", "phone") == ids
    assert fetch(server, "q5", "laptop", quit=False) == ids
    settle_log(server)
    assert msgids(server, "q5") == ids
    # the laptop's retrievals didn't count: its next QUIT session without
    # RETR still finds nothing that every device retrieved
    register(server, "q5", "laptop")
    assert msgids(server, "q5") == ids
    mark = server.log_mark()
    assert fetch(server, "q5", "laptop") == ids
    check_cleanup(server, "q5", before, set(ids), since=mark)


def test_quota_cleanup_moves_to_move_to(server):
    ids = deliver(server, "qmv", sizes=SIZES)
    before = messages(server, "qmv")
    register(server, "qmv", "laptop")
    fetch(server, "qmv", "phone")
    mark = server.log_mark()
    fetch(server, "qmv", "laptop", only=lambda m: m != ids[1])
    eligible = set(ids) - {ids[1]}
    gone = check_cleanup(server, "qmv", before, eligible, since=mark,
                         moved_to="Removed")
    assert msgids(server, "qmv", "Removed") == gone


def test_quota_move_to_a_full_mailbox_loses_nothing(server, allow_log_errors):
    """Moving into a mailbox the same quota counts needs room the user
    doesn't have: the copy fails, and then nothing may be expunged."""
    ids = deliver(server, "qmvfull", sizes=SIZES)
    register(server, "qmvfull", "laptop")
    fetch(server, "qmvfull", "phone")
    mark = server.log_mark()
    fetch(server, "qmvfull", "laptop")
    settle_log(server)
    assert msgids(server, "qmvfull") == ids
    assert msgids(server, "qmvfull", "Full") == []
    assert plugin_lines(server, mark, "Error"), server.log_text()[mark:]


def test_quota_capa_has_no_expire(server):
    with pop3(server, "qcapa") as s:
        capa = s.capa()
    assert "EXPIRE" not in capa, capa
    assert "UIDL" in capa
