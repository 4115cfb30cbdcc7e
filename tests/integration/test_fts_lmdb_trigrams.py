"""fts_lmdb's trigram filter (docs/fts_lmdb.md "Trigrams").

The other fts_lmdb tests run with fts_lmdb_trigram_min_blocks = 0, so
that every comparison with stock goes through the filter from the first
batch on. Here a mailbox starts below the threshold, without a filter,
and grows past it: the filter it gets then must hold the tokens of the
mail indexed before, not only those of the batch that crossed."""

from __future__ import annotations

import subprocess

import pytest

from fts_helpers import load_maildir
from fts_lmdb_helpers import (CORPUS_QUERIES, IS_LMDB, assert_lmdb_ok,
                              assert_same, corpus_paths, doveadm_ok, dump_db,
                              gen_message, gen_queries, index_dir,
                              start_pair)

pytestmark = pytest.mark.skipif(not IS_LMDB, reason="LMDB backend only")


def grams_keys(dc) -> list[bytes]:
    try:
        return [k for k, _ in dump_db(index_dir(dc, "alice"), "grams")]
    except subprocess.CalledProcessError:
        return []


def block_count(dc) -> int:
    return len(dump_db(index_dir(dc, "alice"), "blocks"))


def test_filter_of_a_mailbox_that_grows_past_the_threshold(dovecot):
    fts, stock = start_pair(dovecot, users=["alice"],
                            settings={"fts_lmdb_trigram_min_blocks":
                                      "1000000"})
    paths = corpus_paths(400)
    first = [p.read_bytes() for p in paths[:200]]
    first += [gen_message("tgfirst", i) for i in range(1, 6)]
    for dc in (fts, stock):
        load_maildir(dc, "alice", first)
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    assert grams_keys(fts) == [], "a mailbox below the threshold has a filter"
    before = block_count(fts)

    fts.plugin_settings["fts_lmdb_trigram_min_blocks"] = str(before + 1)
    fts.reload()
    second = [p.read_bytes() for p in paths[200:]]
    second += [gen_message("tgsecond", i) for i in range(1, 6)]
    for dc in (fts, stock):
        load_maildir(dc, "alice", second)
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    after = block_count(fts)
    assert after > before, (before, after)
    # the head (the box number alone), and pages from trigram 0 on,
    # each naming the next one's key (docs/fts_lmdb.md "Trigrams")
    entries = dump_db(index_dir(fts, "alice"), "grams")
    assert any(len(k) == 1 for k, _ in entries), \
        "no filter past the threshold"
    pages = [(k[1:], v) for k, v in entries if len(k) == 4]
    assert len(pages) > 1 and pages[0][0] == b"\0\0\0", pages[:2]
    for (low, value), nxt in zip(pages, pages[1:] + [None]):
        if nxt is None:
            assert value[0] == 0, f"the last page {low!r} names a next one"
        else:
            assert value[0] == 1 and value[1:4] == nxt[0], \
                f"page {low!r} doesn't name the next page {nxt[0]!r}"
    # words of the first mail only, which the crossing batch didn't add
    assert_same(fts, stock, "alice",
                CORPUS_QUERIES + gen_queries("tgfirst", [1, 3, 5]) +
                gen_queries("tgsecond", [1, 3, 5]),
                step="after the mailbox grew past the threshold")
    assert_lmdb_ok(fts, "alice", "after the filter was built")
