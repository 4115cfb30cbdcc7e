"""Bad fts_lmdb_* settings fail closed: the backend doesn't start, the log
names the setting and its value, and SEARCH and FETCH answer as stock
Dovecot does (without the index: slower, never wrong). Nothing crashes.

Each case starts fts_lmdb with one bad value beside stock Dovecot, delivers
the same generated mail to both, and compares SEARCH answers; a FETCH of a
base64 part slice, BINARY.SIZE included, is compared byte for byte.
"""

from __future__ import annotations

import base64
import random
import re

import pytest

from fts_lmdb_helpers import (assert_log_clean, assert_same, gen_message,
                              gen_queries, start_pair)

# case -> (setting, bad value, what the log line must also say)
BAD = {
    "fts_lmdb_batch_mb=0": ("fts_lmdb_batch_mb", "0", "=0"),
    "fts_lmdb_batch_mb=abc": ("fts_lmdb_batch_mb", "abc", "=abc"),
    "fts_lmdb_map_mb=-1": ("fts_lmdb_map_mb", "-1", "=-1"),
    "fts_lmdb_max_mail_tokens=5": ("fts_lmdb_max_mail_tokens", "5", "=5"),
    "fts_lmdb_path=relative": ("fts_lmdb_path", "relative/dir",
                               "=relative/dir"),
    "fts_lmdb_headers=bad name": ("fts_lmdb_headers", "Subject Bad:Name",
                                  "Bad:Name"),
    "fts_lmdb_headers=16": ("fts_lmdb_headers",
                            " ".join(f"X-H{i}" for i in range(16)),
                            "more than 15"),
    "fts_lmdb_partial_fetch=maybe": ("fts_lmdb_partial_fetch", "maybe",
                                     "=maybe"),
    "fts_lmdb_trigram_min_blocks=-1": ("fts_lmdb_trigram_min_blocks", "-1",
                                       "=-1"),
    "fts_lmdb_trigram_min_blocks=many": ("fts_lmdb_trigram_min_blocks",
                                         "many", "=many"),
}


def attachment_message() -> bytes:
    data = random.Random(11).randbytes(300_000)
    b64 = base64.encodebytes(data)
    return (b"From: a@example.com\nTo: alice@example.com\n"
            b"Subject: settings attachment\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=B\n\n"
            b"--B\nContent-Type: text/plain\n\nsee attached settingsword\n"
            b"--B\nContent-Type: application/octet-stream\n"
            b"Content-Transfer-Encoding: base64\n\n" + b64 + b"--B--\n")


def fetch_replies(dc, commands):
    imap = dc.imap("alice")
    try:
        imap.select("INBOX", readonly=True)
        out = []
        for cmd in commands:
            typ, data = imap.uid(*cmd)
            out.append((typ, data))
        return out
    finally:
        imap.logout()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_setting_fails_closed(dovecot, case):
    name, value, says = BAD[case]
    fts, stock = start_pair(dovecot, settings={name: value},
                            users=["alice"])
    messages = [gen_message("setx", i) for i in range(6)]
    messages.append(attachment_message())
    for msg in messages:
        fts.deliver("alice", msg)
        stock.deliver("alice", msg)
    queries = gen_queries("setx", range(6)) + ["BODY settingsword"]
    assert_same(fts, stock, "alice", queries, step=case)

    commands = [("FETCH", "7", "(BINARY.SIZE[2])"),
                ("FETCH", "7", "(BINARY.PEEK[2]<150000.4096>)"),
                ("FETCH", "7", "(BODY.PEEK[2]<200000.4096>)")]
    assert fetch_replies(fts, commands) == fetch_replies(stock, commands)

    log = fts.log_text()
    lines = [line for line in log.splitlines()
             if "fts-lmdb" in line and name in line and says in line]
    assert lines, (f"no log line names {name} and says {says!r}:\n" +
                   "\n".join(log.splitlines()[-20:]))
    assert not re.search(r"partial (fetch|size|seek) from index", log)
    assert_log_clean(fts, what=case)
