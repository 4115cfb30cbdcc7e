"""fts_lmdb under faults: kills in the middle of an LMDB write, a full
disk, damaged index files, also under a session that has the index open.

Every answer is compared with a stock Dovecot holding the same mail under
the same UIDs (fts_lmdb_helpers.assert_same); nothing expected is
hard-coded. One pair of instances (fts_lmdb with fts_lmdb_batch_mb = 1,
so that indexing commits often, and stock) serves the module; each test
has a user of its own, so each has its own index.

Kills (strace delivers SIGKILL as the process enters a system call on
data.mdb, see fault_helpers.kill_at):
* indexer-worker, during indexing started by a SEARCH: at the first and
  at the third commit's fdatasync() (its pages written, its meta page
  not: a torn commit), and at a page write in the middle of a commit;
* imap, at the commit that records an EXPUNGE in the index;
* pop3, at the same commit for DELE + QUIT (leave_on_server, policy
  delete, which is loaded for pop3 on the fts side).
Afterwards LMDB reads every record (lmdb_verify), searches answer as
stock's (finishing the indexing), and the log has the kill and no other
crash.

Disk full: a 3 MB tmpfs is mounted over the user's index directory (and
unmounted at the end, whatever happened). With the index half built, the
tmpfs is filled; more mail comes (loaded, and delivered over LMTP with
fts_autoindex); searches must answer as stock's, deliveries must all
arrive, the log must say "No space left on device". Space freed, the
index catches up. A user whose index is created on the full disk is a
second test.

Damage: data.mdb cut to nothing, garbage in its middle, replaced by a
file of garbage; lock.mdb garbage or cut to nothing. First with no
process holding the index (it is rebuilt), then under an IMAP session
that has it open and searches again.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from dovecot_instance import BUILD_DIR, DovecotInstance
from fault_helpers import alive, fill, kill_at, require_strace, tmpfs, wait_gone
from fts_helpers import SearchClient, diff_answers, load_maildir, search_command
from fts_lmdb_helpers import (CORPUS_QUERIES, IS_LMDB, all_uids,
                              assert_lmdb_ok, assert_same, compare_views,
                              corpus_paths, format_mismatches,
                              crash_lines, data_mdb, doveadm_ok, dump_db,
                              expunge_uids, gen_message,
                              gen_queries, index_dir, lmdb_kwargs, log_lines,
                              mail_ids, release_index, require_plugin,
                              stock_kwargs)
from leave_on_server_helpers import BASE_CONF

pytestmark = pytest.mark.skipif(not IS_LMDB, reason="fts_lmdb's own files")

KILL_USERS = ["killfirst", "killthird", "killpages", "killimap", "killpop3"]
# data-page-*: one page of garbage somewhere past the meta pages, the
# damage that leaves the rest of the tree intact
GARBAGE = ["data-middle", "data-page-a", "data-page-b", "data-page-c",
           "data-page-d"]
DAMAGE = ["data-empty", "data-middle", "data-page-a", "data-page-b",
          "data-page-c", "data-page-d", "data-replaced", "lock-garbage",
          "lock-empty"]
OPEN_DAMAGE = ["data-half", "data-empty", "data-middle", "data-page-a",
               "data-page-b", "data-replaced",
               "lock-garbage", "lock-empty"]
LOST = ["contains", "exact", "prefix", "span"]
LOST_LISTS = ["unindexed", "long", "expunged"]
USERS = (KILL_USERS + ["diskfull", "diskfresh"] +
         [f"lost{k}" for k in LOST] +
         [f"list{k}" for k in LOST_LISTS] + ["changedblock"] +
         ["lostgrambucket", "lostgramdir"] +
         [f"dmg{k.replace('-', '')}" for k in DAMAGE] +
         [f"open{k.replace('-', '')}" for k in OPEN_DAMAGE])
SETTINGS = {"fts_lmdb_batch_mb": 1, "leave_on_server_policy": "delete"}


@pytest.fixture(scope="module")
def pair():
    require_plugin()
    fts = DovecotInstance(plugin_dir=BUILD_DIR, **lmdb_kwargs(
        SETTINGS, autoindex=True, users=USERS, extra_conf=BASE_CONF))
    stock = DovecotInstance(plugin_dir=BUILD_DIR, **stock_kwargs(users=USERS))
    try:
        fts.start()
        stock.start()
        yield fts, stock
    finally:
        fts.stop()
        stock.stop()


@pytest.fixture(autouse=True)
def _log_on_failure(request, pair):
    mark = pair[0].log_mark()
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and pair[0].dir is not None:
        tail = "\n".join(pair[0].log_text()[mark:].splitlines()[-40:])
        print(f"--- fts instance log, this test (tail) ---\n{tail}")


@pytest.fixture(scope="module")
def corpus():
    return [p.read_bytes() for p in corpus_paths(350)]


def _load(pair, user, messages, box="INBOX"):
    for dc in pair:
        load_maildir(dc, user, messages, mailbox=box)


def _queries(tag: str, nums=(1, 3)) -> list[str]:
    return CORPUS_QUERIES[:4] + gen_queries(tag, list(nums))[:6]


def _crashes(dc, since, killed=()) -> list[str]:
    time.sleep(0.2)   # the log process writes asynchronously
    return crash_lines(dc, since, killed)


def _no_other_crash(dc, since, killed=(), what=""):
    bad = _crashes(dc, since, killed)
    assert not bad, f"{what}: crash in the log:\n" + "\n".join(bad[:10])


def _same_expunges(fts, stock, user, box="INBOX"):
    """Expunge on stock what is gone on the fts side (the kill decided
    which of the expunges happened); both must then hold the same UIDs."""
    gone = sorted(set(all_uids(stock, user, box)) - set(all_uids(fts, user, box)))
    if gone:
        doveadm_ok(stock, "expunge", "-u", user, "mailbox", box, "uid",
                   ",".join(map(str, gone)))
    return gone


def _records(dc, user) -> int:
    """Records in the user's LMDB environment (named databases)."""
    res = assert_lmdb_ok(dc, user, nonempty=False)
    return sum(n for name, n in res["dbs"].items() if name not in ("", "(free pages)"))


# ------------------------------------------------------------ kills

@pytest.mark.parametrize("user,call,when", [
    ("killfirst", "fdatasync", 1),                 # first commit torn
    ("killthird", "fdatasync", 3),                 # third commit torn
    ("killpages", "writev,pwrite64", 6),           # among a commit's pages
])
def test_indexer_worker_killed_mid_commit(pair, corpus, tmp_path, user, call, when):
    require_strace()
    fts, stock = pair
    tag = user
    _load(pair, user, corpus[:2], box="Warm")
    big = corpus[:350] + [gen_message(tag, i) for i in range(1, 6)]
    _load(pair, user, big, box="Big")
    # an indexer-worker that has this user's index open once (data.mdb
    # exists), idle now
    with SearchClient(fts, user, mailbox="Warm") as c:
        assert c.search('BODY "razor"').uids is not None
    before = _records(fts, user)
    workers = sorted(fts.worker_pids("indexer-worker"))
    assert workers, "no indexer-worker after the first search"
    mark = fts.log_mark()
    # whichever worker takes the job is killed
    traces = [kill_at(w, call.split(","), when, tmp_path / f"strace.{w}",
                      [data_mdb(fts, user)]) for w in workers]
    try:
        c = SearchClient(fts, user, mailbox="Big")
        c.sock.sendall(search_command("k1", f'BODY "{tag}x1q"'))
        deadline = time.monotonic() + 120
        while not any(st.killed for st in traces):
            assert time.monotonic() < deadline, "no indexer-worker was killed"
            if not any(alive(w) for w in workers):
                # strace writes its "killed by SIGKILL" line after the
                # process is gone (CI once looked in between)
                gone = time.monotonic() + 5
                while not any(st.killed for st in traces) and \
                        time.monotonic() < gone:
                    time.sleep(0.05)
                assert any(st.killed for st in traces), \
                    "the indexer-workers ended unkilled"
                break
            time.sleep(0.02)
    finally:
        for st in traces:
            if not st.killed:
                st.stop()
    st = next(st for st in traces if st.killed)
    pid = st.pid
    st.wait()
    wait_gone(pid)
    # the SEARCH that was waiting for the index: NO (fts_enforced) or
    # stock's answer, never another one
    c.sock.settimeout(30)
    reply = c._read_until("k1")
    c.sock.close()
    c.reader.close()
    if reply[1].startswith("OK"):
        with SearchClient(stock, user, mailbox="Big") as s:
            want = s.search(f'BODY "{tag}x1q"').uids
        got = sorted(int(x) for line in reply[0] if line.startswith(b"* SEARCH")
                     for x in line[8:].split())
        assert got == want, f"the interrupted SEARCH answered {got}, stock {want}"
    else:
        assert reply[1].startswith("NO"), reply[1]
    fts.wait_for_log(rf"child {pid} killed with signal 9", since=mark)
    assert_lmdb_ok(fts, user, f"after kill -9 of the indexer-worker at {call} #{when}")
    if call == "fdatasync":
        # commits before the torn one are there, nothing of the torn one
        killed_at = _records(fts, user)
        if when == 1:
            assert killed_at == before, (before, killed_at)
        else:
            assert killed_at > before, (before, killed_at)
    _no_other_crash(fts, mark, [pid], "indexer-worker kill")
    bad = log_lines(fts, r"fts-lmdb.*(Error|Panic)|MDB_", mark)
    assert not bad, "fts-lmdb errors after the kill:\n" + "\n".join(bad[:5])
    assert_same(fts, stock, user, _queries(tag), "Big", step=f"after kill at {call} #{when}")
    assert_same(fts, stock, user, _queries(tag)[:3], "Warm", step="Warm after the kill")
    assert_lmdb_ok(fts, user, "after the searches")


def test_imap_killed_recording_expunge(pair, corpus, tmp_path):
    require_strace()
    fts, stock = pair
    user = "killimap"
    msgs = corpus[:300] + [gen_message(user, i) for i in range(1, 6)]
    _load(pair, user, msgs)
    doveadm_ok(fts, "index", "-u", user, "INBOX")
    c = fts.imap(user)
    c.select("INBOX")
    pid = max(fts.worker_pids("imap"))
    mark = fts.log_mark()
    with kill_at(pid, ["fdatasync"], 1, tmp_path / "strace.out",
                 [data_mdb(fts, user)]) as st:
        typ, data = c.uid("STORE", "1:40,301:302", "+FLAGS.SILENT", r"(\Deleted)")
        assert typ == "OK", data
        try:
            c.expunge()
        except Exception:   # the server is gone: EOF
            pass
        st.wait(30)
    assert st.killed, st.trace()[-1000:]
    c.shutdown()
    wait_gone(pid)
    fts.wait_for_log(rf"child {pid} killed with signal 9", since=mark)
    gone = _same_expunges(fts, stock, user)
    assert gone in ([], list(range(1, 41)) + [301, 302]), \
        f"the EXPUNGE happened for only some messages: {gone}"
    assert_lmdb_ok(fts, user, "after kill -9 of imap recording an expunge")
    assert_same(fts, stock, user, _queries(user, (1, 2, 3)),
                step="after imap was killed recording the expunge")
    _no_other_crash(fts, mark, [pid], "imap kill")


def test_pop3_killed_recording_expunge(pair, corpus, tmp_path):
    """leave_on_server (policy delete) for pop3: DELE + QUIT expunges, and
    the fts plugin in the pop3 process records it in the index."""
    require_strace()
    fts, stock = pair
    user = "killpop3"
    msgs = corpus[:200] + [gen_message(user, i) for i in range(1, 6)]
    _load(pair, user, msgs)
    doveadm_ok(fts, "index", "-u", user, "INBOX")
    p = fts.pop3(user)
    pid = max(fts.worker_pids("pop3"))
    for num in list(range(1, 11)) + [201, 202]:
        p.dele(num)
    mark = fts.log_mark()
    with kill_at(pid, ["fdatasync"], 1, tmp_path / "strace.out",
                 [data_mdb(fts, user)]) as st:
        try:
            p.quit()
        except Exception:
            pass
        st.wait(30)
    assert st.killed, st.trace()[-1000:]
    p.close()
    wait_gone(pid)
    fts.wait_for_log(rf"child {pid} killed with signal 9", since=mark)
    gone = _same_expunges(fts, stock, user)
    assert gone in ([], list(range(1, 11)) + [201, 202]), \
        f"QUIT's expunges happened for only some messages: {gone}"
    assert_lmdb_ok(fts, user, "after kill -9 of pop3 recording expunges")
    assert_same(fts, stock, user, _queries(user, (1, 2, 3)),
                step="after pop3 was killed recording the expunges")
    _no_other_crash(fts, mark, [pid], "pop3 kill")


# ------------------------------------------------------------ disk full

def test_disk_full(pair, corpus):
    fts, stock = pair
    user = "diskfull"
    first = corpus[:100] + [gen_message("dfa", i) for i in range(1, 4)]
    _load(pair, user, first)
    uid, gid = mail_ids()
    with tmpfs(index_dir(fts, user), "3m", uid, gid) as mnt:
        doveadm_ok(fts, "index", "-u", user, "INBOX")
        assert_same(fts, stock, user, _queries("dfa"), step="before the disk filled")
        before = _records(fts, user)
        filler = fill(mnt, leave=96 * 1024)   # a little room: some commits fit
        mark = fts.log_mark()
        # more mail while the disk is full: loaded, and delivered (LMTP,
        # fts_autoindex queues the indexing)
        _load(pair, user, corpus[100:300] + [gen_message("dfb", i) for i in range(1, 4)])
        for dc in pair:
            # (the indexer-worker that autoindexing starts can make LMTP
            # deliveries swap UIDs)
            dc.deliver_in_order(user, [gen_message("dfc", i)
                                       for i in range(1, 4)])
        assert all_uids(fts, user) == all_uids(stock, user), "a delivery got lost"
        queries = _queries("dfa", (1,))[:4] + gen_queries("dfb", [2])[:2] + \
            gen_queries("dfc", [3])[:2]
        assert_same(fts, stock, user, queries, step="disk full")
        # LMDB reports a write cut short by the full disk as EIO, one
        # that wrote nothing as ENOSPC
        fts.wait_for_log(r"fts-lmdb: Writing to .* failed: .*"
                         r"(No space left on device|Input/output error)", since=mark)
        assert_lmdb_ok(fts, user, "with the disk full")
        _no_other_crash(fts, mark, what="disk full")
        full_records = _records(fts, user)

        os.unlink(filler)
        mark = fts.log_mark()
        assert_same(fts, stock, user, queries + ['TEXT "dfbx1q"'], step="space freed")
        assert_same(fts, stock, user, queries[:3], step="space freed, again")
        assert not log_lines(fts, r"fts-lmdb.*Error", mark), \
            "errors after the space was freed"
        after = _records(fts, user)
        assert after > full_records >= before, (before, full_records, after)
        assert_lmdb_ok(fts, user, "after the space was freed")
        _no_other_crash(fts, mark, what="space freed")


def test_index_created_on_full_disk(pair, corpus):
    fts, stock = pair
    user = "diskfresh"
    _load(pair, user, corpus[:100] + [gen_message("dfr", i) for i in range(1, 4)])
    uid, gid = mail_ids()
    with tmpfs(index_dir(fts, user), "1m", uid, gid) as mnt:
        filler = fill(mnt)
        mark = fts.log_mark()
        assert_same(fts, stock, user, _queries("dfr"), step="index created on a full disk")
        _no_other_crash(fts, mark, what="index created on a full disk")
        fts.wait_for_log(r"fts-lmdb: .*No space left on device", since=mark)
        os.unlink(filler)
        assert_same(fts, stock, user, _queries("dfr"), step="space freed")
        assert_lmdb_ok(fts, user, "after the space was freed")


# ------------------------------------------------------------ damage

def _damage(path_dir: Path, kind: str) -> None:
    data, lock = path_dir / "data.mdb", path_dir / "lock.mdb"
    rng = random.Random(kind)
    size = data.stat().st_size
    if kind == "data-empty":
        os.truncate(data, 0)
    elif kind == "data-half":
        os.truncate(data, size // 2)
    elif kind == "data-middle":      # a third of the file, past the meta pages
        with open(data, "r+b") as f:
            f.seek(size // 3)
            f.write(rng.randbytes(size // 3))
    elif kind.startswith("data-page-"):
        page = rng.randrange(2, size // 4096)
        with open(data, "r+b") as f:
            f.seek(page * 4096)
            f.write(rng.randbytes(4096))
    elif kind == "data-replaced":    # a new file of garbage renamed over it
        tmp = path_dir / "data.mdb.new"
        tmp.write_bytes(rng.randbytes(size // 2 + 4096))
        st = data.stat()
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o777)
        os.replace(tmp, data)
    elif kind == "lock-garbage":
        with open(lock, "r+b") as f:
            f.write(rng.randbytes(lock.stat().st_size))
    elif kind == "lock-empty":
        os.truncate(lock, 0)
    else:
        raise ValueError(kind)


def _indexed(pair, corpus, user):
    msgs = corpus[:150] + [gen_message(user, i) for i in range(1, 6)]
    _load(pair, user, msgs)
    doveadm_ok(pair[0], "index", "-u", user, "INBOX")
    queries = _queries(user, (1, 2, 3))
    assert_same(*pair, user, queries, step="before the damage")
    return queries


def _garbage_in_the_middle(fts, stock, user, queries, mark, killed, kind):
    """LMDB 0.9 has no page checksums: garbage that leaves a page looking
    valid (right type, offsets inside the map) is read as data. Every
    value carries a checksum of its key and itself, and every block the
    chain of blocks names must be there, so such garbage is found
    and the index rebuilt; garbage that sends LMDB out of the page or the
    file is caught around each LMDB call. So here: no crash, and stock's
    answers. (The plugin before the checksums answered these with
    nothing: BODY "spamassassin" 0 UIDs instead of 8.)"""
    try:
        mism = compare_views(fts, user, "INBOX", stock, user, "INBOX", queries)
    except (ConnectionError, OSError) as e:
        raise AssertionError(f"connection lost during SEARCH ({e}):\n" +
                             "\n".join(_crashes(fts, mark, killed)[:6])) from e
    _no_other_crash(fts, mark, killed, kind)
    assert not mism, (f"answers after {kind} differ from stock's: "
                      + format_mismatches(mism)[:600])


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_index_files(pair, corpus, kind):
    """Nothing holds the index while it is damaged."""
    fts, stock = pair
    user = f"dmg{kind.replace('-', '')}"
    queries = _indexed(pair, corpus, user)
    killed = release_index(fts, user)
    mark = fts.log_mark()
    _damage(index_dir(fts, user), kind)
    if kind in GARBAGE:
        _garbage_in_the_middle(fts, stock, user, queries, mark, killed, kind)
    assert_same(fts, stock, user, queries, step=f"first search after {kind}")
    assert_same(fts, stock, user, queries, step=f"second search after {kind}")
    if kind in ("data-middle", "data-replaced"):
        # (a page of garbage may land on a free page and change nothing;
        # an empty data.mdb is a new environment to LMDB, and a damaged
        # lock file is reinitialised: nothing is wrong any more)
        assert log_lines(fts, r"fts-lmdb: .*(damaged|Error)", mark), \
            f"nothing logged by fts-lmdb about the {kind} damage"
    for dc in pair:
        dc.deliver(user, gen_message(user, 9))
    doveadm_ok(fts, "index", "-u", user, "INBOX")
    assert_same(fts, stock, user, queries + gen_queries(user, [9])[:3],
                step=f"after {kind}, new mail, doveadm index")
    assert_lmdb_ok(fts, user, f"rebuilt after {kind}")
    _no_other_crash(fts, mark, killed, kind)


@pytest.mark.parametrize("kind", OPEN_DAMAGE)
def test_damage_under_an_open_session(pair, corpus, kind):
    """An IMAP session has searched (its process has the environment
    open) when the files are damaged; it searches again."""
    fts, stock = pair
    user = f"open{kind.replace('-', '')}"
    queries = _indexed(pair, corpus, user)
    session = SearchClient(fts, user)
    reference = SearchClient(stock, user)
    try:
        assert session.search(queries[0]).uids == reference.search(queries[0]).uids
        mark = fts.log_mark()
        _damage(index_dir(fts, user), kind)
        differ = []
        for q in queries:
            try:
                got = session.search(q)
            except (ConnectionError, OSError) as e:
                crashes = _crashes(fts, mark)
                raise AssertionError(
                    f"the session broke off at {q!r} after {kind} ({e}); log:\n"
                    + "\n".join(crashes[:4])) from None
            mm = diff_answers(q, reference.search(q), got)
            if mm is not None:
                differ.append(str(mm))
        assert not differ, (f"the open session answered differently from stock "
                            f"after {kind}:\n  " + "\n  ".join(differ[:6]))
    finally:
        session.close()
        reference.close()
    assert_same(fts, stock, user, queries, step=f"new session after {kind}")
    _no_other_crash(fts, mark, what=f"{kind} under an open session")
    # (a page of garbage may land on a free page and change nothing)
    assert kind.startswith("data-page-") or \
        log_lines(fts, r"fts-lmdb: .*(damaged|Error)", mark), \
        f"nothing logged by fts-lmdb about the {kind} damage"
    doveadm_ok(fts, "index", "-u", user, "INBOX")
    assert_lmdb_ok(fts, user, f"after {kind} under an open session")


# ------------------------------------------------------------ a lost block

LOST_BODY = "alphaxq bravocharlie deltazulu"
# another message where the last word of a phrase has a token of its own
# with the same prefix
LOST_BODY_2 = "bravocharlie deltazebra"
# tokens with one prefix that take several blocks (about 4 KB each)
SPAN_BODY = " ".join(f"zzspan{i:04d}" for i in range(900))
# the query, and a token whose block is taken out of the blocks
# database. A single-word key scans every block. A key that starts with
# a space has no first word to scan for: its next word is an exact
# lookup, its last a prefix lookup, each from the block whose range
# holds the word. "span": the prefix lookup finds the first blocks of
# the range and must not take them for the whole answer.
LOST_CASES = {
    "contains": ('BODY "bravocharlie"', "bravocharlie"),
    "exact": ('BODY " bravocharlie deltazulu"', "bravocharlie"),
    "prefix": ('BODY " bravocharlie deltazu"', "deltazulu"),
    "span": ('BODY " zzspan"', "zzspan0450"),
}


def _rewrite_without(path_dir: Path, database: str, choose,
                     tmp_path: Path) -> None:
    """Rewrites the environment without the entry of `database` whose
    key choose(keys) picks (keys: that database's, in order): what
    garbage in a branch page that still looks valid does to a lookup.
    Every value keeps its checksum."""
    dump = subprocess.run(["mdb_dump", "-a", str(path_dir)], check=True,
                          capture_output=True, text=True).stdout.splitlines()
    db, data_at, keys = None, None, {}
    for i, line in enumerate(dump):
        if line.startswith("VERSION="):
            db, data_at = None, None
        elif line.startswith("database="):
            db = line.split("=", 1)[1]
        elif line == "HEADER=END":
            data_at = i + 1
        elif line == "DATA=END":
            data_at = None
        elif data_at is not None and db == database and \
                (i - data_at) % 2 == 0:
            keys[bytes.fromhex(line.strip())] = i
    key = choose(sorted(keys))
    skip = keys[key]
    out = dump[:skip] + dump[skip + 2:]
    (tmp_path / "dump").write_text("\n".join(out) + "\n")
    fresh = tmp_path / "env"
    fresh.mkdir()
    subprocess.run(["mdb_load", "-f", str(tmp_path / "dump"), str(fresh)],
                   check=True, capture_output=True)
    data = path_dir / "data.mdb"
    st = data.stat()
    os.chown(fresh / "data.mdb", st.st_uid, st.st_gid)
    os.chmod(fresh / "data.mdb", st.st_mode & 0o777)
    os.replace(fresh / "data.mdb", data)


def _token_list_key(key_hex: str):
    """The tokens database's key for key_hex after the box number (one
    numpacked byte here)."""
    def choose(keys):
        found = [k for k in keys if k[0] < 0x80 and k[1:].hex() == key_hex]
        assert len(found) == 1, f"{key_hex}: {len(found)} keys in the dump"
        return found[0]
    return choose


def _block_of(token: bytes):
    """The key of the block whose range holds token: the greatest key of
    the mailbox at or below it. The mailbox's first block has the box
    number alone as its key."""
    def choose(keys):
        firsts = [k for k in keys if len(k) == 1]
        assert len(firsts) == 1, f"{len(firsts)} mailboxes have blocks"
        box = firsts[0]
        return max(k for k in keys
                   if k.startswith(box) and k <= box + token)
    return choose


def _lose_key(pair, user: str, query: str, database: str, choose,
              tmp_path: Path, what: str, damage: str) -> None:
    """Stock's answer before the key is taken out, when it is gone (the
    damage logged), and after the rebuild."""
    fts, stock = pair
    assert_same(fts, stock, user, [query], step="before the loss")
    killed = release_index(fts, user)
    _rewrite_without(index_dir(fts, user), database, choose, tmp_path)
    mark = fts.log_mark()
    assert_same(fts, stock, user, [query], step=f"{what} lost")
    assert log_lines(fts, r"fts-lmdb: .*damaged.*" + damage, mark), \
        f"losing {what} was not reported as damage"
    assert_same(fts, stock, user, [query], step="after the rebuild")
    assert_lmdb_ok(fts, user, f"rebuilt after losing {what}")
    _no_other_crash(fts, mark, killed, f"lost {what}")


@pytest.mark.parametrize("case", LOST)
def test_lost_block_is_damage(pair, corpus, tmp_path, case):
    """A block that the chain names but the blocks database lacks is
    damage, whichever way the lookup went: the search answers as stock,
    and the index is rebuilt."""
    fts = pair[0]
    user = f"lost{case}"
    query, token = LOST_CASES[case]
    _load(pair, user, corpus[:40] + [gen_message(user, 1, LOST_BODY),
                                     gen_message(user, 2, LOST_BODY_2),
                                     gen_message(user, 3, SPAN_BODY)])
    doveadm_ok(fts, "index", "-u", user, "INBOX")
    # the index holds tokens as the normalizer left them (upper case)
    _lose_key(pair, user, query, "blocks", _block_of(token.upper().encode()),
              tmp_path, what=f"the block of {token}", damage=r"block")


def _gram_key(rest: bytes):
    """The grams database's key for rest after the box number: b"" for
    the mailbox's head, a trigram for the page whose range holds it
    (the greatest page key at or below it)."""
    def choose(keys):
        if not rest:
            found = [k for k in keys if len(k) == 1 and k[0] < 0x80]
        else:
            pages = [k for k in keys if len(k) == 1 + len(rest) and
                     k[0] < 0x80 and k[1:] <= rest]
            found = pages[-1:]
        assert len(found) == 1, f"{rest!r}: {len(found)} keys in the dump"
        return found[0]
    return choose


def test_lost_trigram_page_is_damage(pair, corpus, tmp_path):
    """A substring search reads only the blocks that the trigram filter
    names. A page of trigrams that the chain names but the grams
    database lacks would leave blocks out of the answer: it is damage.
    The search answers as stock, and the index is rebuilt."""
    fts = pair[0]
    user = "lostgrambucket"
    _load(pair, user, corpus[:40] + [gen_message(user, 1, LOST_BODY),
                                     gen_message(user, 2, LOST_BODY_2)])
    doveadm_ok(fts, "index", "-u", user, "INBOX")
    # the page that holds BRAVOCHARLIE's first trigram
    _lose_key(pair, user, 'BODY "bravocharlie"', "grams", _gram_key(b"BRA"),
              tmp_path, what="a trigram page", damage=r"trigram")


def test_lost_trigram_directory_scans(pair, corpus, tmp_path):
    """Without its head a mailbox has no trigram filter, as a mailbox
    below fts_lmdb_trigram_min_blocks has: its searches scan every
    block, and answer as stock."""
    fts, stock = pair
    user = "lostgramdir"
    _load(pair, user, corpus[:40] + [gen_message(user, 1, LOST_BODY),
                                     gen_message(user, 2, LOST_BODY_2)])
    doveadm_ok(fts, "index", "-u", user, "INBOX")
    queries = ['BODY "bravocharlie"', 'BODY "avocharl"', 'BODY "zulu"',
               'BODY "deltaz"']
    assert_same(fts, stock, user, queries, step="before the loss")
    killed = release_index(fts, user)
    _rewrite_without(index_dir(fts, user), "grams", _gram_key(b""),
                     tmp_path)
    mark = fts.log_mark()
    assert_same(fts, stock, user, queries, step="without the head")
    # The next batch builds the filter again from the chain. The pages
    # the lost head left must go first: a lookup would land on one of
    # them and miss the new token's trigrams.
    pages = [k for k, _ in dump_db(index_dir(fts, user), "grams")
             if len(k) == 4]
    assert len(pages) > 1, f"the filter has {len(pages)} page(s)"
    _load(pair, user, [gen_message(user, 3, "zyzzogeton wyvernquay")])
    doveadm_ok(fts, "index", "-u", user, "INBOX")
    later = queries + ['BODY "zyzzog"', 'BODY "vernqu"', 'BODY "yvern"']
    assert_same(fts, stock, user, later, step="after the next batch")
    keys = [k for k, _ in dump_db(index_dir(fts, user), "grams")]
    assert any(len(k) == 1 for k in keys), "the filter's head was not rebuilt"
    _no_other_crash(fts, mark, killed, "lost trigram head")


def test_block_changed_under_an_open_session(pair, corpus):
    """A process that has scanned a mailbox's blocks reads them again
    without their checksums while the data file is unchanged (same
    inode, size, ctime and snapshot; docs/fts_lmdb.md "Checked once per
    change"). A token's text changed in place by another writer, LMDB's
    pages intact, must still be found: the open session answers as
    stock, and the damage is logged."""
    fts, stock = pair
    user = "changedblock"
    query = 'BODY "bravocharlie"'
    _load(pair, user, corpus[:40] + [gen_message(user, 1, LOST_BODY),
                                     gen_message(user, 2, LOST_BODY_2)])
    doveadm_ok(fts, "index", "-u", user, "INBOX")
    session = SearchClient(fts, user)
    reference = SearchClient(stock, user)
    try:
        expected = reference.search(query).uids
        assert len(expected) == 2, expected
        # the first scan checks every block, the second trusts them
        for _ in range(2):
            assert session.search(query).uids == expected
        data = index_dir(fts, user) / "data.mdb"
        raw = data.read_bytes()
        # a block writes a token after what it shares with the one
        # before: numpack(shared), numpack(rest), the rest
        token = b"BRAVOCHARLIE"
        found = [(m.start(), shared) for shared in range(len(token))
                 for m in re.finditer(re.escape(
                     bytes([shared, len(token) - shared]) + token[shared:]),
                     raw)]
        assert len(found) == 1, found
        at, shared = found[0]
        with open(data, "r+b") as f:
            # the token's last byte
            f.seek(at + 2 + len(token) - shared - 1)
            f.write(b"X")
        mark = fts.log_mark()
        got = session.search(query).uids
        assert got == expected, (f"after a block's text changed under the "
                                 f"open session: {got}, stock {expected}")
        assert log_lines(fts, r"fts-lmdb: .*damaged", mark), \
            "the changed block was not reported as damage"
    finally:
        session.close()
        reference.close()


# ------------------------------------------------------------ a lost list

def _long_token() -> str:
    rng = random.Random("long-token")
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                   for _ in range(200))


# A key of 100 bytes from offset 50 of a 200-byte token: no stored chunk
# (128 bytes, every 64) holds it, so only the list of messages with long
# tokens makes that message a candidate.
LONG_KEY = _long_token()[50:150]
# more distinct tokens than fts_lmdb_max_mail_tokens (200,000 by default)
UNINDEXED_BODY = " ".join(f"q{i:06d}z" for i in range(200_010))
# (query, the list's key after the box number, in hex)
LIST_CASES = {
    "unindexed": ('BODY "q150000z"', "0a01"),
    "long": (f'BODY "{LONG_KEY}"', "0a"),
    "expunged": ('NOT BODY "bravocharlie"', "0a03"),
}


@pytest.mark.parametrize("case", LOST_LISTS)
def test_lost_list_is_damage(pair, corpus, tmp_path, case):
    """The lists of messages kept under special keys (mail that couldn't
    be indexed, mail with long tokens, expunged mail not yet purged) have
    no key when they are empty: the mailbox's record counts them, and a
    lost list is damage. Without the counts, the first two answered
    without the message the list names."""
    fts = pair[0]
    user = f"list{case}"
    query, key_hex = LIST_CASES[case]
    special = {"unindexed": UNINDEXED_BODY, "long": _long_token(),
               "expunged": LOST_BODY}[case]
    _load(pair, user, corpus[:30] + [gen_message(user, 1, special),
                                     gen_message(user, 2, LOST_BODY_2)])
    doveadm_ok(fts, "index", "-u", user, "INBOX")
    if case == "expunged":
        # indexed mail expunged: listed until a purge (64 or more)
        for dc in pair:
            expunge_uids(dc, user, "INBOX", [3])
    _lose_key(pair, user, query, "tokens", _token_list_key(key_hex), tmp_path,
              what=f"the {case} list", damage=r"a list of")
