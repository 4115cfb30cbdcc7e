"""leave_on_server policies seen through POP3 (poplib), IMAP and doveadm:
delete, keep, the new-only view, \\Seen at QUIT, move_to, stable UIDLs,
CAPA EXPIRE, large messages, and what a damaged device state does.

The server's plugin { } has no leave_on_server settings, so `keep` is the
built-in default; each account picks its policy and options through
userdb fields (per-user settings)."""

from __future__ import annotations

import pytest

from leave_on_server_helpers import (_server_log_checks,  # noqa: F401  (fixtures)
                                     account, deliver, device_states,
                                     device_values, fetch, imap_view, listed,
                                     messages, msgids, plugin_lines, pop3,
                                     seen_ids, server_fixture,
                                     set_device_value, today)

DELETE = {"leave_on_server_policy": "delete"}
NEW_ONLY = {"leave_on_server_new_only": "yes"}

USERS = [
    *account("del", fields=DELETE),
    *account("keep"),
    *account("keepsome"),
    *account("again"),
    *account("newonly", fields=NEW_ONLY),
    *account("twodev", fields=NEW_ONLY),
    *account("twodele"),
    *account("uidlkeep"),
    *account("uidlnew", fields=NEW_ONLY),
    *account("seen"),
    *account("noseen", fields={"leave_on_server_mark_seen": "no", **NEW_ONLY}),
    *account("capkeep", devices=()),
    *account("capnew", devices=(), fields=NEW_ONLY),
    *account("capdel", devices=(), fields=DELETE),
    *account("capexp0", devices=(), fields={"leave_on_server_policy": "expire",
                                            "leave_on_server_expire_days": "0"}),
    *account("capexp7", devices=(), fields={"leave_on_server_policy": "expire",
                                            "leave_on_server_expire_days": "7",
                                            "leave_on_server_expire_from": "first"}),
    *account("mvdel", fields={**DELETE, "leave_on_server_move_to": "Removed"}),
    *account("big"),
    *account("dmg", fields=NEW_ONLY),
]

server = server_fixture(USERS)


# ------------------------------------------------------------------ delete

def test_delete_policy_expunges_what_was_deleted_at_quit(server):
    ids = deliver(server, "del", 4)
    with pop3(server, "del", "phone") as s:
        assert s.listed_ids() == dict(enumerate(ids, 1))
        s.retr(1)
        s.retr(2)
        assert s.dele(1).startswith(b"+OK")
        assert s.dele(3).startswith(b"+OK")
        # DELE only marks: nothing is gone before QUIT
        assert msgids(server, "del") == ids
        assert s.quit().startswith(b"+OK")
    kept = [ids[1], ids[3]]
    assert msgids(server, "del") == kept
    assert set(imap_view(server, "del")) == set(kept)
    # for every device: it is gone from the mailbox
    assert listed(server, "del", "laptop") == kept
    assert listed(server, "del") == kept


# ------------------------------------------------------------------ keep

def test_keep_dele_hides_only_from_that_device(server):
    ids = deliver(server, "keep", 3)
    with pop3(server, "keep", "phone") as s:
        got = s.retr_all(dele=True)
        assert s.count() == 0
        reply = s.quit()
    assert got == ids
    assert reply.startswith(b"+OK"), reply
    # nothing expunged: IMAP and the other devices still see everything
    assert msgids(server, "keep") == ids
    assert set(imap_view(server, "keep")) == set(ids)
    assert listed(server, "keep", "laptop") == ids
    assert listed(server, "keep") == ids
    # ... only the phone doesn't any more, and it does see new mail
    assert listed(server, "keep", "phone") == []
    new = deliver(server, "keep", 2, tag="new")
    assert listed(server, "keep", "phone") == new
    assert listed(server, "keep", "laptop") == ids + new
    assert msgids(server, "keep") == ids + new


def test_keep_dele_of_some_messages(server):
    ids = deliver(server, "keepsome", 5)
    with pop3(server, "keepsome", "phone") as s:
        s.dele(2)               # without RETR
        s.retr(3)
        s.dele(3)
    assert listed(server, "keepsome", "phone") == [ids[0], ids[3], ids[4]]
    with pop3(server, "keepsome", "phone") as s:
        assert s.listed_ids() == {1: ids[0], 2: ids[3], 3: ids[4]}
        s.retr(3)               # ids[4]
        s.dele(3)
    assert listed(server, "keepsome", "phone") == [ids[0], ids[3]]
    assert listed(server, "keepsome", "laptop") == ids
    assert msgids(server, "keepsome") == ids


def test_keep_lists_retrieved_mail_again_without_new_only(server):
    ids = deliver(server, "again", 3)
    assert fetch(server, "again", "phone",
                 only=lambda m: m in ids[:2]) == ids[:2]
    assert listed(server, "again", "phone") == ids
    assert msgids(server, "again") == ids
    # the retrieval was recorded all the same
    phone = device_states(server, "again")["phone"]
    uids = {m.msgid: m.uid for m in messages(server, "again")}
    assert phone.done == {uids[ids[0]], uids[ids[1]]}
    assert phone.hidden == set()


# ------------------------------------------------------------------ new only

def test_new_only_lists_what_the_device_has_not_retrieved(server):
    ids = deliver(server, "newonly", 4)
    with pop3(server, "newonly", "phone") as s:
        s.retr(1)
        s.top(2, 5)             # TOP only peeks
        s.retr(3)
        s.dele(4)               # DELEted without RETR: not listed again either
    assert listed(server, "newonly", "phone") == [ids[1]]
    new = deliver(server, "newonly", 2, tag="new")
    assert listed(server, "newonly", "phone") == [ids[1]] + new
    assert listed(server, "newonly", "laptop") == ids + new
    assert msgids(server, "newonly") == ids + new


@pytest.mark.parametrize("user,dele", [("twodev", False), ("twodele", True)],
                         ids=["new_only-retr", "keep-retr+dele"])
def test_two_devices_each_get_every_message_once(server, user, dele):
    """new_only (the devices only RETR) or keep (they RETR and DELE): each
    device gets every message exactly once, new mail arriving between the
    sessions included, and the server keeps everything."""
    got = {"phone": [], "laptop": []}
    all_ids = deliver(server, user, 3, tag="a")

    def session(dev):
        got[dev] += fetch(server, user, dev, dele=dele)

    session("phone")
    all_ids += deliver(server, user, 2, tag="b")
    session("laptop")
    session("phone")
    all_ids += deliver(server, user, 1, tag="c")
    session("phone")
    session("phone")
    session("laptop")
    all_ids += deliver(server, user, 2, tag="d")
    session("laptop")
    session("phone")
    for dev, ids in got.items():
        assert ids == all_ids, f"{dev} got {ids}, expected {all_ids}"
    assert msgids(server, user) == all_ids


# ------------------------------------------------------------------ UIDL

def _uidls_by_id(s) -> dict[str, str]:
    ids = s.listed_ids()
    uidls = s.uidls()
    assert sorted(uidls) == sorted(ids), (uidls, ids)
    for num, uidl in uidls.items():
        assert s.uidl(num) == uidl          # UIDL n agrees with UIDL
    return {ids[num]: uidl for num, uidl in uidls.items()}


@pytest.mark.parametrize("user,hide", [("uidlkeep", "dele"), ("uidlnew", "retr")])
def test_uidls_stable_across_sessions_and_devices(server, user, hide):
    """A message has the same UIDL in every session of every device, also
    once the device no longer gets some messages listed (DELE under keep,
    or RETR under new_only) and their message numbers shift."""
    ids = deliver(server, user, 5)
    with pop3(server, user, "phone") as s:
        first = _uidls_by_id(s)
    assert sorted(first) == sorted(ids)
    assert len(set(first.values())) == len(ids)
    with pop3(server, user, "laptop") as s:
        assert _uidls_by_id(s) == first

    with pop3(server, user, "phone") as s:
        for num in (1, 3):
            s.retr(num) if hide == "retr" else s.dele(num)
    remaining = [ids[1], ids[3], ids[4]]
    with pop3(server, user, "phone") as s:
        assert s.listed_ids() == dict(enumerate(remaining, 1))
        assert _uidls_by_id(s) == {m: first[m] for m in remaining}
    with pop3(server, user, "laptop") as s:
        assert _uidls_by_id(s) == first

    new = deliver(server, user, 1, tag="new")
    with pop3(server, user, "phone") as s:
        now = _uidls_by_id(s)
    assert {m: now[m] for m in remaining} == {m: first[m] for m in remaining}
    assert now[new[0]] not in first.values()


# ------------------------------------------------------------------ \Seen

def test_mark_seen_sets_seen_at_quit_for_retrieved_mail(server):
    ids = deliver(server, "seen", 4)
    with pop3(server, "seen", "phone") as s:
        s.retr(1)
        s.top(2, 10)
        s.retr(3)
        s.dele(3)
        assert seen_ids(server, "seen") == set()    # not before QUIT
    assert seen_ids(server, "seen") == {ids[0], ids[2]}
    view = imap_view(server, "seen")
    assert {m for m, flags in view.items() if "\\Seen" in flags} == {ids[0], ids[2]}
    assert set(view) == set(ids)


def test_mark_seen_no_never_sets_seen(server):
    ids = deliver(server, "noseen", 3)
    c = server.imap("noseen")
    c.select("INBOX")
    assert c.store("3", "+FLAGS", "(\\Seen)")[0] == "OK"
    c.logout()
    assert fetch(server, "noseen", "phone") == ids
    assert fetch(server, "noseen", "laptop", dele=True) == ids
    # \Seen only where IMAP put it, and POP3 took nothing away
    assert seen_ids(server, "noseen") == {ids[2]}
    # the retrievals were recorded all the same (new_only)
    assert listed(server, "noseen", "phone") == []
    assert listed(server, "noseen", "laptop") == []
    # IMAP clients still set \Seen as they like
    c = server.imap("noseen")
    c.select("INBOX")
    assert c.store("1", "+FLAGS", "(\\Seen)")[0] == "OK"
    c.logout()
    assert seen_ids(server, "noseen") == {ids[0], ids[2]}


# ------------------------------------------------------------------ CAPA

@pytest.mark.parametrize("user,expire", [
    ("capkeep", ["NEVER"]),
    ("capnew", ["NEVER"]),
    ("capexp0", ["0"]),
    ("capexp7", ["7"]),
    ("capdel", None),
])
def test_capa_expire_per_policy(server, user, expire):
    with pop3(server, user) as s:
        capa = s.capa()
    with pop3(server, "capdel") as s:
        baseline = s.capa()
    assert capa.get("EXPIRE") == expire, capa
    # the plugin adds the EXPIRE line and changes nothing else
    rest = {k: v for k, v in capa.items() if k != "EXPIRE"}
    assert rest == baseline
    assert {"TOP", "UIDL", "USER"} & set(rest)


def test_capa_after_commands_and_twice(server):
    """CAPA works as often as asked, between other commands."""
    ids = deliver(server, "capkeep", 2)
    with pop3(server, "capkeep") as s:
        assert s.capa().get("EXPIRE") == ["NEVER"]
        assert s.listed_ids() == dict(enumerate(ids, 1))
        s.retr(1)
        assert s.capa().get("EXPIRE") == ["NEVER"]
        resp = s.client._shortcmd("NOOP")
        assert resp.startswith(b"+OK")


# ------------------------------------------------------------------ move_to

def test_move_to_with_delete_policy(server):
    ids = deliver(server, "mvdel", 3)
    assert messages(server, "mvdel", "Removed") == []
    before = {m.msgid: m.vsize for m in messages(server, "mvdel")}
    with pop3(server, "mvdel", "phone") as s:
        s.retr(1)
        s.dele(1)
        s.dele(3)
    assert msgids(server, "mvdel") == [ids[1]]
    moved = messages(server, "mvdel", "Removed")
    assert [m.msgid for m in moved] == [ids[0], ids[2]]
    assert all(m.vsize == before[m.msgid] for m in moved)
    assert set(imap_view(server, "mvdel", "Removed")) == {ids[0], ids[2]}
    # the next expunge goes to the existing folder
    with pop3(server, "mvdel", "laptop") as s:
        s.dele(1)
    assert msgids(server, "mvdel") == []
    assert msgids(server, "mvdel", "Removed") == [ids[0], ids[2], ids[1]]


# ------------------------------------------------------------------ big mail

def test_large_message_retr(server):
    """A message much larger than the socket buffers goes through the
    session's output (which the plugin wraps for CAPA) intact."""
    ids = deliver(server, "big", sizes=[3_000_000, 1000])
    size = messages(server, "big")[0].vsize
    with pop3(server, "big", "phone") as s:
        assert s.capa().get("EXPIRE") == ["NEVER"]
        raw = s.retr(1)
        assert len(raw) == size
        assert raw.endswith(b"\r\n")
        s.retr(2)
        assert s.capa().get("EXPIRE") == ["NEVER"]
    assert s.retrieved == ids


# ------------------------------------------------------------------ damaged state

def test_damaged_state_lists_everything_again(server):
    ids = deliver(server, "dmg", 3)
    assert fetch(server, "dmg", "phone") == ids
    assert fetch(server, "dmg", "laptop", only=lambda m: m == ids[0]) == [ids[0]]
    assert listed(server, "dmg", "phone") == []
    uv = device_states(server, "dmg")["phone"].uidvalidity
    day = today()
    laptop_value = device_values(server, "dmg")["laptop"]
    for garbage in ["garbage",
                    f"2 {uv} 1700000000 H=",
                    f"1 {uv} 1700000000",
                    f"1 {uv} yesterday H=",
                    f"1 {uv} 1700000000 H=1:x",
                    f"1 {uv} 1700000000 H= Dx=1:3",
                    f"1 {uv} 1700000000 H= D{day}=1:*"]:
        set_device_value(server, "dmg", "phone", garbage)
        mark = server.log_mark()
        with pop3(server, "dmg", "phone") as s:
            assert list(s.listed_ids().values()) == ids, garbage
            s.retr_all()
        warnings = plugin_lines(server, mark, "Warning", pid=s.pid)
        assert any("phone" in w and "damaged" in w for w in warnings), \
            (garbage, warnings, s.log_lines())
        # written anew at that QUIT: listed nothing again
        assert listed(server, "dmg", "phone") == [], garbage
        assert device_states(server, "dmg")["phone"].uidvalidity == uv
    # the other device's state was left alone
    assert device_values(server, "dmg")["laptop"] == laptop_value
    assert listed(server, "dmg", "laptop") == ids[1:]
    assert msgids(server, "dmg") == ids
