"""fts_lmdb drops the postings of expunged mail whatever order the
expunges come in.

Found by the soak test: an expunge of a UID below the highest one
already in the mailbox's expunge list was dropped, so its postings were
never purged and the index grew for ever (search answers stayed right,
since the postings' messages no longer exist). Here 150 of 200 messages
are expunged in descending UID order, `doveadm fts optimize` purges,
and the index must hold postings for exactly the 50 that are left.
"""

from __future__ import annotations

import re

from fts_lmdb_helpers import block_tokens, dump_db, require_plugin
from partial_helpers import RawImap


def test_expunges_in_descending_order_are_purged(dovecot):
    require_plugin()
    dc = dovecot(mail_plugins="fts fts_lmdb", users=["alice"],
                 plugin_settings={"fts": "lmdb", "fts_autoindex": "no"})
    for n in range(1, 201):
        dc.deliver("alice", (f"From: a@example.com\r\nSubject: m{n}\r\n"
                             f"Message-ID: <m{n}@example.com>\r\n\r\n"
                             f"word uniq{n}x here\r\n").encode())
    dc.doveadm("index", "-u", "alice", "INBOX", check=True)
    imap = RawImap(dc.imap_port, "alice", readonly=False)
    for hi in range(150, 0, -5):
        imap.must(f"UID STORE {hi - 4}:{hi} +FLAGS.SILENT (\\Deleted)")
        imap.must(f"UID EXPUNGE {hi - 4}:{hi}")
    imap.logout()
    dc.doveadm("fts", "optimize", "-u", "alice", check=True)
    tokens = b"\n".join(b"\n".join(block_tokens(value)) for _, value in
                        dump_db(dc.maildir("alice") / "fts-lmdb", "blocks"))
    held = {int(n) for n in re.findall(rb"UNIQ(\d+)X", tokens)}
    assert held == set(range(151, 201)), (
        f"the index holds postings for {len(held)} messages, 50 are left; "
        f"expunged but still indexed: {sorted(held - set(range(151, 201)))[:20]}")
