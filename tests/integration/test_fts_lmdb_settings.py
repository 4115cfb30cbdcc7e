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

import subprocess

from fts_lmdb_helpers import (assert_log_clean, assert_same, dump_db,
                              gen_message, gen_queries, index_dir, log_lines,
                              start_pair)

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


# ------------------------------------------------- an index built otherwise

def _meta_format(path_dir) -> bytes:
    return dict(dump_db(path_dir, "meta"))[b"format"]


def _write_meta_format(path_dir, value: bytes) -> None:
    """Overwrites meta's format entry in place with mdb_load (meta's
    values carry no checksum, so that any version can read the format)."""
    dump = subprocess.run(["mdb_dump", "-s", "meta", str(path_dir)],
                          check=True, capture_output=True,
                          text=True).stdout.splitlines()
    header = dump[:dump.index("HEADER=END") + 1]
    lines = header + [" " + b"format".hex(), " " + value.hex(), "DATA=END"]
    subprocess.run(["mdb_load", "-s", "meta", str(path_dir)],
                   input="\n".join(lines) + "\n", check=True,
                   capture_output=True, text=True)


def _tombstones(path_dir) -> list[int]:
    return [int.from_bytes(k[-4:], "big")
            for k, v in dump_db(path_dir, "guids") if len(v) == 13]


@pytest.mark.parametrize("case", ["older-format", "other-headers"])
def test_an_index_built_otherwise_is_rebuilt(dovecot, case):
    """An index written by an earlier index format, or with another
    fts_lmdb_headers list, is rebuilt at its first use (an upgrade to a
    version with a new format must never read the old one as its own).
    Expunged mail leaves tombstones in the old index; a rebuilt one has
    none, which tells a rebuild from an index kept."""
    fts, stock = start_pair(dovecot, users=["alice"])
    messages = [gen_message("fmtx", i) for i in range(8)]
    for msg in messages:
        fts.deliver("alice", msg)
        stock.deliver("alice", msg)
    queries = gen_queries("fmtx", range(8)) + ["SUBJECT fmtx", "FROM example"]
    assert_same(fts, stock, "alice", queries, step="first index")
    for dc in (fts, stock):
        imap = dc.imap("alice")
        imap.select("INBOX")
        imap.uid("STORE", "2:3", "+FLAGS.SILENT", "(\\Deleted)")
        imap.expunge()
        imap.logout()
    path_dir = index_dir(fts, "alice")
    assert _tombstones(path_dir) == [2, 3]
    ours = _meta_format(path_dir)
    version, rest = re.fullmatch(rb"(\d+)(.*)", ours, re.S).groups()

    mark = len(fts.log_text())
    if case == "older-format":
        older = str(int(version) - 1).encode() + rest
        _write_meta_format(path_dir, older)
        says = older
    else:
        fts.plugin_settings["fts_lmdb_headers"] = "Subject X-Mailer"
        fts.reload()
        says = ours
    assert_same(fts, stock, "alice", queries, step=case)

    rebuilt = log_lines(fts, r"fts-lmdb: .*was built with other settings "
                        r"\(" + re.escape(says.decode()) + r"\), rebuilding it",
                        mark)
    assert rebuilt, f"no log line says the index of {says!r} was rebuilt"
    now = _meta_format(path_dir)
    assert re.fullmatch(rb"(\d+)(.*)", now, re.S).group(1) == version
    assert (now == ours) == (case == "older-format")
    assert _tombstones(path_dir) == [], \
        "the old index's tombstones are still there: it was not rebuilt"
    assert_log_clean(fts, mark, what=case)
