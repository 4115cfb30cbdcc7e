"""fts_lmdb tells an index of this mailbox from an index of a diverged
copy of it, without mistaking a session that lags behind for one.

An index carried over from a copy of the mailbox that got other mail
under the same UIDs (test_scaleout.py builds that with dsync) is found
out by comparing the GUID the index recorded for the newest UID it and
the session both know. A session's view lags behind what other processes
delivered, indexed and expunged since its last sync: the index then
covers UIDs the view doesn't have, and lacks the GUIDs of messages the
view still has. Neither may look like another copy, or every search by a
session that is one command behind would throw the index away.
"""

from __future__ import annotations

from fts_helpers import load_maildir
from fts_lmdb_helpers import (assert_log_clean, dump_db, indexing_lines,
                              log_lines, require_plugin)
from partial_helpers import RawImap

OTHER_COPY = r"is another message than the index has"


def _message(n: int) -> bytes:
    return (f"From: a@example.com\r\nSubject: m{n}\r\n"
            f"Message-ID: <cp{n}@example.com>\r\n\r\n"
            f"word uniq{n}x here\r\n").encode()


def _search(imap: RawImap, word: str) -> list[int]:
    reply = imap.must(f"UID SEARCH BODY {word}")
    uids = []
    for line in reply.untagged:
        if line.startswith(b"* SEARCH"):
            uids += [int(u) for u in line.split()[2:]]
    return sorted(uids)


def test_a_session_behind_the_index_keeps_it(dovecot):
    require_plugin()
    dc = dovecot(mail_plugins="fts fts_lmdb", users=["alice"], debug=True,
                 plugin_settings={"fts": "lmdb", "fts_autoindex": "no",
                                  "fts_enforced": "yes"})
    for n in range(1, 11):
        dc.deliver("alice", _message(n))
    dc.doveadm("index", "-u", "alice", "INBOX", check=True)

    # behind on new mail: the index covers UIDs 11-15, the view ends at 10
    behind = RawImap(dc.imap_port, "alice")
    for n in range(11, 16):
        dc.deliver("alice", _message(n))
    dc.doveadm("index", "-u", "alice", "INBOX", check=True)
    mark = len(dc.log_text())
    assert _search(behind, "uniq3x") == [3]
    behind.logout()

    # behind on expunges: the view's newest messages are gone from the
    # index (their GUIDs with them), older ones are still there
    behind = RawImap(dc.imap_port, "alice")
    other = RawImap(dc.imap_port, "alice", readonly=False)
    other.must("UID STORE 11:15 +FLAGS.SILENT (\\Deleted)")
    other.must("UID EXPUNGE 11:15")
    other.logout()
    dc.doveadm("fts", "optimize", "-u", "alice", check=True)
    assert _search(behind, "uniq4x") == [4]
    behind.logout()

    fresh = RawImap(dc.imap_port, "alice")
    assert _search(fresh, "uniq12x") == []
    assert _search(fresh, "here") == list(range(1, 11))
    fresh.logout()

    assert_log_clean(dc, mark)
    assert not log_lines(dc, OTHER_COPY, mark), \
        "a session behind the index took it for another copy's"
    assert not indexing_lines(dc, mark, "alice"), \
        "the index was rebuilt for a session that was only behind"


def _guid_records(dc) -> dict[int, bool]:
    """UID -> whether the guids database keeps it as expunged (a value of
    the 8-byte hash, a tombstone byte, then the 4-byte checksum)."""
    out = {}
    for key, value in dump_db(dc.maildir("alice") / "fts-lmdb", "guids"):
        assert len(value) in (12, 13), f"guids value of {len(value)} bytes"
        out[int.from_bytes(key[-4:], "big")] = len(value) == 13
    return out


def test_expunged_mail_keeps_its_guid_up_to_a_bound(dovecot):
    """An expunge keeps the message's GUID hash as a tombstone (what tells
    a diverged copy's mail under that UID from it). Tombstones are kept
    for the highest UIDs, at most as many as the index's messages or
    1,024: here 1,250 of 1,300 messages are expunged in 25 sessions."""
    require_plugin()
    dc = dovecot(mail_plugins="fts fts_lmdb", users=["alice"],
                 plugin_settings={"fts": "lmdb", "fts_autoindex": "no"})
    total, left = 1300, 50
    load_maildir(dc, "alice", [_message(n) for n in range(1, total + 1)])
    dc.doveadm("index", "-u", "alice", "INBOX", check=True)
    assert _guid_records(dc) == {uid: False for uid in range(1, total + 1)}
    mark = len(dc.log_text())

    imap = RawImap(dc.imap_port, "alice", readonly=False)
    for lo in range(1, total - left + 1, 50):
        imap.must(f"UID STORE {lo}:{lo + 49} +FLAGS.SILENT (\\Deleted)")
        imap.must(f"UID EXPUNGE {lo}:{lo + 49}")
    assert _search(imap, "here") == list(range(total - left + 1, total + 1))
    imap.logout()

    records = _guid_records(dc)
    live = sorted(uid for uid, gone in records.items() if not gone)
    tombs = sorted(uid for uid, gone in records.items() if gone)
    assert live == list(range(total - left + 1, total + 1))
    # pruning keeps half of what the mailbox may hold, so the last ones
    # pruned were 512 at least
    assert 512 <= len(tombs) <= 1024, f"{len(tombs)} tombstones kept"
    assert tombs == list(range(tombs[0], total - left + 1)), \
        "the tombstones kept are not those of the highest expunged UIDs"
    assert_log_clean(dc, mark)
    assert not log_lines(dc, OTHER_COPY, mark)
