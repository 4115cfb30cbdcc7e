"""fts_lmdb keeps its index in step with the mailboxes: mail delivered
over LMTP, APPENDed, COPYed and MOVEd is indexed (on arrival with
fts_autoindex = yes, by the first SEARCH without it), expunged mail
drops out of the answers at once, `doveadm fts rescan` and `optimize`
leave the answers intact, users and mailboxes don't see each other's
mail, fts_lmdb_path moves the index, a 1 MB initial map grows, and a
mailbox shared through the acl plugin is searched with the owner's mail
and the reader's rights.

After every step a handful of BODY/TEXT/SUBJECT/FROM/NOT/OR queries on
the messages the step touched go to fts_lmdb and to stock Dovecot
holding the same mail under the same UIDs; the answers must be equal.
No test may leave a Panic, Fatal or "killed with signal" in the log.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from fts_helpers import load_maildir
from fts_lmdb_helpers import (CORPUS_QUERIES, IS_LMDB, append, assert_lmdb_ok,
                              assert_log_clean, assert_no_errors, assert_same,
                              corpus_paths, data_mdb, doveadm_ok, expunge_uids,
                              file_state, fts_files, gen_message, gen_queries,
                              imap_ok, index_dir, indexing_lines, lmdb_kwargs,
                              make_mail_dir, require_plugin, session, start_pair,
                              stock_kwargs, uid_command, wait_file_changed,
                              wait_indexed)


@pytest.fixture
def mail_tmp():
    """A directory outside the instances that the mail user can write in
    (pytest's tmp_path is not reachable for `nobody`)."""
    d = Path(tempfile.mkdtemp(prefix="fts-lmdb-test-", dir="/tmp"))
    make_mail_dir(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def both(pair, fn, *args):
    for dc in pair:
        fn(dc, *args)


# ------------------------------------------------------------ fts_autoindex=yes

def test_deliveries_under_autoindex_keep_their_order(dovecot):
    """The harness's deliver_in_order(), which the autoindex tests
    compare with stock by: 60 LMTP deliveries get UIDs in their order.
    (Plain deliver() swapped some in 3 of 5 runs of this test: the
    indexer-worker holds the maildir's uidlist lock when LMTP only tries
    it.)"""
    fts, _ = start_pair(dovecot, autoindex=True, users=["alice"])
    fts.deliver_in_order("alice", [gen_message("order", i)
                                   for i in range(60)])
    with session(fts, "alice") as c:
        imap_ok(*c.select("INBOX", readonly=True), "EXAMINE INBOX")
        typ, data = c.uid("FETCH", "1:*",
                          "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        imap_ok(typ, data, "UID FETCH")
    subjects = b"".join(part[1] for part in data if isinstance(part, tuple))
    order = [int(n) for n in re.findall(rb"order subject (\d+)", subjects)]
    assert order == list(range(60)), f"UIDs out of delivery order: {order}"


def test_autoindex_lmtp_append_copy_move_expunge(dovecot):
    """fts_autoindex = yes: every way mail arrives is indexed right away,
    so a later SEARCH finds everything already indexed (no "Indexing UID"
    line after it) and answers as stock does."""
    fts, stock = start_pair(dovecot, autoindex=True, debug=True, users=["alice"])
    pair = (fts, stock)
    mdb = data_mdb(fts, "alice")

    def searched_without_indexing(step, queries, mailbox="INBOX"):
        mark = fts.log_mark()
        assert_same(fts, stock, "alice", queries, mailbox, step=step)
        extra = indexing_lines(fts, mark, "alice")
        assert not extra, (f"step {step}: SEARCH in {mailbox} still had to "
                           f"index after fts_autoindex: {extra[:5]}")

    # LMTP delivery: UIDs 1-6
    before = file_state(mdb)
    mark = fts.log_mark()
    for dc in pair:
        # (the indexer-worker that autoindexing starts can make LMTP
        # deliveries swap UIDs)
        dc.deliver_in_order("alice", [gen_message("deliv", i)
                                      for i in range(1, 7)])
    wait_indexed(fts, "alice", mark, 6)
    if IS_LMDB:
        wait_file_changed(mdb, before)
    searched_without_indexing("lmtp", gen_queries("deliv", range(1, 7)))

    # APPEND: UIDs 7-10
    before = file_state(mdb)
    mark = fts.log_mark()
    for dc in pair:
        append(dc, "alice", "INBOX", [gen_message("appd", i) for i in range(1, 5)])
    wait_indexed(fts, "alice", mark, 10)
    if IS_LMDB:
        wait_file_changed(mdb, before)
    searched_without_indexing("append", gen_queries("appd", range(1, 5)) +
                              gen_queries("deliv", [2, 5]))

    # COPY deliv 1-3 and appd 1 (UIDs 1:3,7) to Archive: Archive UIDs 1-4
    mark = fts.log_mark()
    for dc in pair:
        with session(dc, "alice") as c:
            imap_ok(*c.create("Archive"), "CREATE Archive")
        uid_command(dc, "alice", "INBOX", "COPY", "1:3,7", "Archive")
    wait_indexed(fts, "alice", mark, 4, "Archive")
    searched_without_indexing("copy", gen_queries("deliv", [1, 2, 3]) +
                              gen_queries("appd", [1]), "Archive")
    searched_without_indexing("copy (source)", gen_queries("deliv", [1, 2, 3]))

    # MOVE deliv 4, 5 and appd 2 (UIDs 4:5,8): Archive UIDs 5-7
    mark = fts.log_mark()
    for dc in pair:
        uid_command(dc, "alice", "INBOX", "MOVE", "4:5,8", "Archive")
    wait_indexed(fts, "alice", mark, 7, "Archive")
    queries = gen_queries("deliv", [3, 4, 5]) + gen_queries("appd", [1, 2, 3])
    searched_without_indexing("move (target)", queries, "Archive")
    searched_without_indexing("move (source)", queries)

    # EXPUNGE: gone from the answers immediately
    for dc in pair:
        expunge_uids(dc, "alice", "INBOX", [6, 9])
        expunge_uids(dc, "alice", "Archive", [2, 6])
    queries = gen_queries("deliv", [2, 6]) + gen_queries("appd", [2, 3])
    assert_same(fts, stock, "alice", queries, "INBOX", step="expunge")
    assert_same(fts, stock, "alice", queries, "Archive", step="expunge")

    # and new mail after the expunges still goes in
    mark = fts.log_mark()
    for dc in pair:
        dc.deliver("alice", gen_message("late", 1))
    wait_indexed(fts, "alice", mark, 11)
    searched_without_indexing("lmtp after expunge", gen_queries("late", [1]) +
                              gen_queries("deliv", [6]))

    assert_lmdb_ok(fts, "alice", "after the autoindex steps")
    assert_log_clean(fts)
    assert_no_errors(fts)


# ------------------------------------------------------------ fts_autoindex=no

def test_first_search_indexes_then_expunge(dovecot):
    """fts_autoindex = no: nothing is indexed until the first SEARCH,
    which indexes the whole mailbox; mail delivered later is indexed by
    the next SEARCH; expunged mail leaves the answers at once."""
    fts, stock = start_pair(dovecot, debug=True, users=["alice"])
    msgs = [p.read_bytes() for p in corpus_paths(400)]
    msgs += [gen_message("load", i) for i in range(1, 21)]  # UIDs 401-420
    for dc in (fts, stock):
        load_maildir(dc, "alice", msgs)
    assert not indexing_lines(fts, 0), "indexed before any SEARCH"

    queries = CORPUS_QUERIES + gen_queries("load", range(1, 21))
    mark = fts.log_mark()
    assert_same(fts, stock, "alice", queries, step="first search")
    assert indexing_lines(fts, mark, "alice", "INBOX"), \
        "the first SEARCH did not index the mailbox (no 'Indexing UID' line)"
    if IS_LMDB:
        assert data_mdb(fts, "alice").is_file(), \
            f"no {data_mdb(fts, 'alice')} after the first SEARCH: {fts_files(fts, 'alice')}"

    mark = fts.log_mark()
    assert_same(fts, stock, "alice", queries, step="second search")
    assert not indexing_lines(fts, mark), "the second SEARCH indexed again"

    # LMTP without autoindex: the next SEARCH indexes UIDs 421-425 only
    for dc in (fts, stock):
        for i in range(1, 6):
            dc.deliver("alice", gen_message("later", i))
    mark = fts.log_mark()
    assert_same(fts, stock, "alice", gen_queries("later", range(1, 6)) +
                gen_queries("load", [3]), step="search after delivery")
    lines = indexing_lines(fts, mark, "alice", "INBOX")
    assert lines and all(int(line.rsplit("=", 1)[1]) > 420 for line in lines), \
        f"the SEARCH after delivery indexed {lines[:5]} (expected only UIDs 421-425)"

    # expunge 100 corpus messages and some generated ones
    gone = list(range(1, 401, 4)) + [402, 410, 423]
    for dc in (fts, stock):
        expunge_uids(dc, "alice", "INBOX", gone)
    assert_same(fts, stock, "alice", queries + gen_queries("later", [3, 4]),
                step="after expunging 103")

    assert_lmdb_ok(fts, "alice", "after expunge")
    assert_log_clean(fts)
    assert_no_errors(fts)


def test_expunges_do_not_grow_index_without_bound(dovecot):
    """Six rounds of: APPEND 300 messages (many words of their own), index,
    expunge them all, `doveadm fts optimize`. The LMDB file may not keep
    growing with each round: freed pages must be reused."""
    fts, stock = start_pair(dovecot, users=["alice"])
    sizes = []
    uid = 0
    for rnd in range(6):
        tag = f"churn{rnd}"
        msgs = [gen_message(tag, i, extra_body=" ".join(
                f"w{rnd}n{i}k{j}" for j in range(150)) + "\n")
                for i in range(1, 301)]
        for dc in (fts, stock):
            append(dc, "alice", "INBOX", msgs)
        doveadm_ok(fts, "index", "-u", "alice", "INBOX")
        assert_same(fts, stock, "alice", gen_queries(tag, [1, 150, 300]) +
                    [f'BODY "w{rnd}n7k99"'], step=f"round {rnd} indexed")
        uids = list(range(uid + 1, uid + 301))
        uid += 300
        for dc in (fts, stock):
            expunge_uids(dc, "alice", "INBOX", uids)
        assert_same(fts, stock, "alice", gen_queries(tag, [1, 150, 300]) +
                    ["ALL"], step=f"round {rnd} expunged")
        doveadm_ok(fts, "fts", "optimize", "-u", "alice")
        if IS_LMDB:
            sizes.append(data_mdb(fts, "alice").stat().st_size)
    print(f"data.mdb size after each round: {sizes}")
    if IS_LMDB:
        assert sizes[-1] <= max(2 * sizes[1], sizes[1] + (4 << 20)), \
            f"data.mdb keeps growing although all mail is expunged: sizes {sizes}"
        assert_lmdb_ok(fts, "alice", "after the expunge rounds", nonempty=False)
    assert_log_clean(fts)
    assert_no_errors(fts)


# ------------------------------------------------------------ doveadm fts

def test_doveadm_fts_rescan_and_optimize(dovecot):
    fts, stock = start_pair(dovecot, users=["alice"])
    msgs = [p.read_bytes() for p in corpus_paths(300)]
    msgs += [gen_message("resc", i) for i in range(1, 11)]  # UIDs 301-310
    for dc in (fts, stock):
        load_maildir(dc, "alice", msgs)
    queries = CORPUS_QUERIES + gen_queries("resc", range(1, 11))
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    assert_same(fts, stock, "alice", queries, step="indexed")

    doveadm_ok(fts, "fts", "rescan", "-u", "alice")
    assert_same(fts, stock, "alice", queries, step="after fts rescan")

    # changes after a rescan are picked up too
    for dc in (fts, stock):
        for i in range(11, 14):
            dc.deliver("alice", gen_message("resc", i))
        expunge_uids(dc, "alice", "INBOX", [5, 302])
    queries += gen_queries("resc", range(11, 14))
    doveadm_ok(fts, "fts", "rescan", "-u", "alice")
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    assert_same(fts, stock, "alice", queries, step="rescan + index after changes")

    doveadm_ok(fts, "fts", "optimize", "-u", "alice")
    assert_same(fts, stock, "alice", queries, step="after fts optimize")
    for dc in (fts, stock):
        expunge_uids(dc, "alice", "INBOX", [303, 311])
    doveadm_ok(fts, "fts", "optimize", "-u", "alice")
    assert_same(fts, stock, "alice", queries, step="expunge + optimize")

    assert_lmdb_ok(fts, "alice", "after rescan/optimize")
    assert_log_clean(fts)
    assert_no_errors(fts)


# ------------------------------------------------------------ users, mailboxes

def test_two_users_several_mailboxes(dovecot):
    """alice and bob, two mailboxes each, some indexed by doveadm, some by
    SEARCH: every mailbox answers its own queries and the other user's
    (which match nothing) as stock does; each user has an environment."""
    fts, stock = start_pair(dovecot, users=["alice", "bob"])
    corpus = [p.read_bytes() for p in corpus_paths(300)]
    boxes = {("alice", "INBOX"): ("ali", corpus[:150]),
             ("alice", "Work"): ("aliwork", []),
             ("bob", "INBOX"): ("bob", corpus[150:]),
             ("bob", "Lists"): ("boblist", corpus[:40])}
    for (user, box), (tag, extra) in boxes.items():
        msgs = extra + [gen_message(tag, i) for i in range(1, 9)]
        for dc in (fts, stock):
            load_maildir(dc, user, msgs, mailbox=box)
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    doveadm_ok(fts, "index", "-u", "bob", "*")   # alice's Work: by SEARCH

    all_queries = {tag: gen_queries(tag, [1, 4, 8]) for tag, _ in boxes.values()}
    for rnd in ("indexed", "after delivery"):
        for (user, box), (tag, extra) in boxes.items():
            others = [q for t, qs in all_queries.items() if t != tag for q in qs[:2]]
            queries = all_queries[tag] + others + (CORPUS_QUERIES[:4] if extra else [])
            assert_same(fts, stock, user, queries, box, step=rnd)
        if rnd == "indexed":
            for dc in (fts, stock):
                dc.deliver("alice", gen_message("ali", 9))
                dc.deliver("bob", gen_message("bob", 9))
            all_queries["ali"] += gen_queries("ali", [9])
            all_queries["bob"] += gen_queries("bob", [9])

    if IS_LMDB:
        a, b = index_dir(fts, "alice"), index_dir(fts, "bob")
        assert a != b
        for user in ("alice", "bob"):
            assert_lmdb_ok(fts, user, f"{user}'s environment")
    assert_log_clean(fts)
    assert_no_errors(fts)


def test_custom_index_path(dovecot, mail_tmp):
    """fts_lmdb_path = <dir>/%u: each user's environment is there, and
    nothing fts-lmdb is created in the default place."""
    root = make_mail_dir(mail_tmp / "idx")
    fts, stock = start_pair(dovecot, users=["alice", "bob"],
                            settings={"fts_lmdb_path": f"{root}/%u"})
    for user in ("alice", "bob"):
        msgs = [gen_message(user + "p", i) for i in range(1, 31)]
        for dc in (fts, stock):
            load_maildir(dc, user, msgs)
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    assert_same(fts, stock, "alice", gen_queries("alicep", [1, 15, 30]), step="doveadm index")
    assert_same(fts, stock, "bob", gen_queries("bobp", [2, 30]), step="search-triggered")
    if IS_LMDB:
        for user in ("alice", "bob"):
            assert (root / user / "data.mdb").is_file(), \
                f"no {root}/{user}/data.mdb; {root} holds {sorted(root.rglob('*'))}"
            default = fts.maildir(user) / "fts-lmdb"
            assert not default.exists(), f"{default} exists although fts_lmdb_path is set"
            assert fts_files(fts, user) == [], \
                f"LMDB files under {user}'s home: {fts_files(fts, user)}"
            assert_lmdb_ok(fts, user, f"{user}'s environment in {root}")
    assert_log_clean(fts)
    assert_no_errors(fts)


def test_default_index_path(dovecot):
    """Without fts_lmdb_path the environment is <mail index root>/fts-lmdb
    (for maildir:~/Maildir: ~/Maildir/fts-lmdb/{data,lock}.mdb)."""
    fts, stock = start_pair(dovecot, users=["alice"])
    msgs = [gen_message("defp", i) for i in range(1, 11)]
    for dc in (fts, stock):
        load_maildir(dc, "alice", msgs)
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    assert_same(fts, stock, "alice", gen_queries("defp", [1, 10]), step="indexed")
    if IS_LMDB:
        d = fts.maildir("alice") / "fts-lmdb"
        assert (d / "data.mdb").is_file() and (d / "lock.mdb").is_file(), \
            f"no {d}/data.mdb + lock.mdb; LMDB files: {fts_files(fts, 'alice')}"
        assert_lmdb_ok(fts, "alice")
    assert_log_clean(fts)


def test_tiny_map_grows(dovecot):
    """fts_lmdb_map_mb = 1 with 3,000 corpus messages: the map must grow
    (MDB_MAP_FULL handled), the answers stay those of stock."""
    fts, stock = start_pair(dovecot, users=["alice"],
                            settings={"fts_lmdb_map_mb": 1})
    msgs = [p.read_bytes() for p in corpus_paths(3000)]
    msgs += [gen_message("tiny", i) for i in range(1, 6)]  # UIDs 3001-3005
    for dc in (fts, stock):
        load_maildir(dc, "alice", msgs)
    doveadm_ok(fts, "index", "-u", "alice", "INBOX", timeout=600)
    assert_same(fts, stock, "alice", CORPUS_QUERIES + gen_queries("tiny", [1, 5]),
                step="indexed with fts_lmdb_map_mb=1")
    # grows again on new mail
    for dc in (fts, stock):
        for i in range(6, 9):
            dc.deliver("alice", gen_message("tiny", i))
    assert_same(fts, stock, "alice", gen_queries("tiny", [6, 8]), step="delivered")
    if IS_LMDB:
        size = data_mdb(fts, "alice").stat().st_size
        assert size > 1 << 20, f"data.mdb is only {size} bytes: was everything indexed?"
        assert_lmdb_ok(fts, "alice", "after map growth")
    assert_log_clean(fts)
    assert_no_errors(fts)


# ------------------------------------------------------------ shared mailbox

def acl_conf(dict_path: Path) -> tuple[str, dict]:
    """Dovecot 2.3 shared mailboxes (wiki SharedMailboxes/Shared): a
    private namespace, a shared one per other user, vfile ACLs and a
    shared-mailbox dict so that LIST can show them."""
    conf = """\
namespace inbox {
  inbox = yes
  separator = /
  prefix =
}
namespace shared {
  type = shared
  separator = /
  prefix = shared/%%u/
  location = maildir:%%h/Maildir:INDEX=~/shared/%%u
  subscriptions = no
  list = children
}
protocol imap {
  mail_plugins = $mail_plugins imap_acl
}
"""
    return conf, {"acl": "vfile", "acl_shared_dict": f"file:{dict_path}"}


def test_shared_mailbox_acl(dovecot, mail_tmp):
    require_plugin()
    users = ["alice", "bob", "carol"]
    conf, settings = acl_conf(make_mail_dir(mail_tmp / "fts") / "shared.db")
    fts = dovecot(**lmdb_kwargs(settings, mail_plugins="acl", extra_conf=conf,
                                users=users))
    conf, settings = acl_conf(make_mail_dir(mail_tmp / "stock") / "shared.db")
    stock = dovecot(**stock_kwargs("acl", conf, settings, users=users))
    corpus = [p.read_bytes() for p in corpus_paths(200)]
    shared_msgs = corpus[:120] + [gen_message("shar", i) for i in range(1, 11)]
    for dc in (fts, stock):
        load_maildir(dc, "alice", shared_msgs, mailbox="Shared")
        load_maildir(dc, "alice", [gen_message("priv", i) for i in range(1, 6)])
        doveadm_ok(dc, "acl", "set", "-u", "alice", "Shared", "user=bob",
                   "lookup", "read")
    view = "shared/alice/Shared"
    queries = CORPUS_QUERIES[:5] + gen_queries("shar", [1, 5, 10]) + \
        gen_queries("priv", [1, 5])[:3]

    # bob's SEARCH indexes it through the shared namespace
    assert_same(fts, stock, "bob", queries, view, step="bob, search-triggered",
                stock_user="alice", stock_mailbox="Shared")
    assert_same(fts, stock, "bob", queries, view, step="bob vs stock bob")
    doveadm_ok(fts, "index", "-u", "alice", "Shared")
    assert_same(fts, stock, "alice", queries, "Shared", step="alice, own folder")

    # new mail in alice's folder shows up in bob's view
    for dc in (fts, stock):
        dc.deliver("alice", gen_message("priv", 6))  # INBOX, not shared
        append(dc, "alice", "Shared", [gen_message("shar", i) for i in (11, 12)])
        expunge_uids(dc, "alice", "Shared", [3, 122])
    queries += gen_queries("shar", [11, 12]) + gen_queries("priv", [6])[:2]
    assert_same(fts, stock, "bob", queries, view, step="bob after changes",
                stock_user="alice", stock_mailbox="Shared")
    assert_same(fts, stock, "alice", queries, "Shared", step="alice after changes")

    # carol has no rights: SELECT and EXAMINE fail (on both servers)
    for dc in (fts, stock):
        with session(dc, "carol") as c:
            for cmd in ("SELECT", "EXAMINE"):
                typ, data = c._simple_command(cmd, f'"{view}"')
                assert typ == "NO", f"carol could {cmd} {view}: {typ} {data}"
            typ, data = c.list("shared/", "*")
            assert not any(view.encode() in (d or b"") for d in data), \
                f"carol sees {view} in LIST: {data}"
    # bob can't read alice's unshared INBOX either
    with session(fts, "bob") as c:
        typ, data = c.select('"shared/alice/INBOX"', readonly=True)
        assert typ == "NO", f"bob could EXAMINE alice's INBOX: {typ} {data}"

    assert_log_clean(fts)
    assert_no_errors(fts)
