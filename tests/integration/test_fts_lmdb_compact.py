"""fts_lmdb gives LMDB's free pages back: a build in many batches, and
`doveadm fts optimize`, end with the data file copied without them
(docs/fts_lmdb.md, "Compaction").

LMDB frees the pages a transaction replaced but never shrinks its file,
so a build of many batches leaves most of the file on its free list. The
copy is made under LMDB's write lock and renamed over data.mdb; other
processes open the new file at their next transaction. What must hold:

* after a build in batches (fts_lmdb_batch_mb = 1) and after `doveadm
  fts optimize`, the file has no free pages left, reads record by record,
  and searches answer as stock Dovecot does;
* an IMAP session that had the old file open answers right after the
  swap, and maps the old file no more;
* a writer that was waiting for the lock while the copy was made writes
  its batch into the new file, not into the one that was replaced (the
  test stops `doveadm fts optimize` with SIGSTOP while it holds the lock,
  and starts `doveadm index` then);
* kill -9 of the compacting process loses nothing: the half-made copy is
  left aside, the index stays as it was, and the next compaction
  replaces the leftover;
* a batch written after the index lost the batches before it (here: the
  index files removed in the middle of a build) is not recorded as if
  the mail under it were indexed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from fts_helpers import SearchClient, load_maildir
from fts_lmdb_helpers import (CORPUS_QUERIES, IS_LMDB, assert_lmdb_ok,
                              assert_log_clean, assert_no_errors, assert_same,
                              block_tokens, corpus_paths, data_mdb,
                              deliver_both, doveadm_ok, dump_db, expunge_uids,
                              file_state, gen_message, gen_queries, holders,
                              index_dir, session, sigkill, start_pair, token,
                              wait_file_changed, wait_pid_gone)

pytestmark = pytest.mark.skipif(not IS_LMDB, reason="LMDB backend only")

SETTINGS = {"fts_lmdb_batch_mb": 1}


def env_stat(directory) -> dict:
    """mdb_stat -ef: pages in use, free pages, last transaction id."""
    out = subprocess.run(["mdb_stat", "-ef", str(directory)], check=True,
                         capture_output=True, text=True).stdout

    def field(name):
        m = re.search(rf"^\s*{name}: (\d+)$", out, re.M)
        assert m, f"no '{name}' in mdb_stat output:\n{out}"
        return int(m.group(1))
    return {"used": field("Number of pages used"), "free": field("Free pages"),
            "txnid": field("Last transaction ID")}


def build(pair, count: int, tag: str, mailbox: str = "INBOX") -> list[bytes]:
    msgs = [p.read_bytes() for p in corpus_paths(count)]
    msgs += [gen_message(tag, i) for i in range(1, 6)]
    for dc in pair:
        load_maildir(dc, "alice", msgs, mailbox=mailbox)
    return msgs


def queries(tag: str) -> list[str]:
    return CORPUS_QUERIES[:6] + gen_queries(tag, [1, 3, 5])


def indexed_tokens(dc) -> set[bytes]:
    """Every token in the blocks of the user's index (upper case, as the
    casemap folds them)."""
    found = set()
    for _, value in dump_db(index_dir(dc, "alice"), "blocks"):
        found.update(block_tokens(value[:-4]))
    return found


def maps_deleted_index(pid: int, dc) -> bool:
    path = str(data_mdb(dc, "alice"))
    try:
        maps = open(f"/proc/{pid}/maps").read()
    except OSError:
        return False
    return f"{path} (deleted)" in maps


def imap_holders(dc) -> list[int]:
    """imap processes that have the user's data.mdb open or mapped."""
    pids = []
    for pid in holders(data_mdb(dc, "alice")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
        except OSError:
            continue
        if cmd.endswith(b"imap") or cmd.startswith(b"dovecot/imap"):
            pids.append(pid)
    return pids


def stock_uids(stock, query: str) -> list[int]:
    with SearchClient(stock, "alice") as c:
        return c.search(query).uids or []


def doveadm_popen(dc, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["doveadm", "-c", str(dc.config_path), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dc.env())


def stop_while_copying(dc, attempts: int = 20):
    """Start `doveadm fts optimize` and SIGSTOP it while it holds the
    write lock with its copy not yet renamed (data.mdb.compact there).
    After a miss (the copy was renamed first) one more delivery, indexed,
    frees some pages for the next try. Returns the stopped process."""
    tmp = index_dir(dc, "alice") / "data.mdb.compact"
    for attempt in range(attempts):
        proc = doveadm_popen(dc, "fts", "optimize", "-u", "alice")
        deadline = time.monotonic() + 60
        while not tmp.exists() and proc.poll() is None and \
                time.monotonic() < deadline:
            pass
        if proc.poll() is None and tmp.exists():
            os.kill(proc.pid, signal.SIGSTOP)
            if tmp.exists():
                return proc
            os.kill(proc.pid, signal.SIGCONT)
        proc.wait(60)
        # free pages for the next try: any write frees some
        dc.deliver("alice", gen_message("retry", attempt))
        doveadm_ok(dc, "index", "-u", "alice", "INBOX")
    raise AssertionError(f"never caught doveadm fts optimize holding the lock "
                         f"in {attempts} tries")


def indexed_with_expunges(dovecot, count: int, tag: str):
    """(fts, stock) with `count` corpus messages indexed in batches, then
    every 50th expunged: too few for a purge (which would compact by
    itself), enough for some free pages."""
    fts, stock = start_pair(dovecot, users=["alice"], settings=SETTINGS)
    build((fts, stock), count, tag)
    doveadm_ok(fts, "index", "-u", "alice", "INBOX", timeout=600)
    for dc in (fts, stock):
        expunge_uids(dc, "alice", "INBOX", list(range(1, count + 6, 50)))
    return fts, stock


def assert_sound(fts, what: str) -> None:
    assert_lmdb_ok(fts, "alice", what)
    assert_no_errors(fts)
    assert_log_clean(fts)


# ------------------------------------------------------------ tests

def test_build_in_batches_is_compacted(dovecot):
    fts, stock = start_pair(dovecot, users=["alice"], settings=SETTINGS)
    build((fts, stock), 3000, "cbuild")
    doveadm_ok(fts, "index", "-u", "alice", "INBOX", timeout=600)
    st = env_stat(index_dir(fts, "alice"))
    # many write transactions, and none of the pages they freed is left
    assert st["txnid"] >= 5, st
    assert st["free"] == 0, f"the build left free pages: {st}"
    assert not (index_dir(fts, "alice") / "data.mdb.compact").exists()
    assert_same(fts, stock, "alice", queries("cbuild"), step="after the build")
    assert_sound(fts, "after the build")


def test_optimize_compacts_and_open_sessions_follow(dovecot):
    """Two IMAP sessions keep lock.mdb open across each compaction, so
    that the new file is read with the lock file as it was, whose last
    transaction id (even or odd) picks one of the meta pages: rounds go
    on until both have been read."""
    fts, stock = indexed_with_expunges(dovecot, 1500, "copt")
    with session(fts, "alice") as c1, session(fts, "alice") as c2:
        for c in (c1, c2):
            c.select("INBOX")
            assert c.uid("SEARCH", "BODY", "razor")[0] == "OK"
        session_pids = imap_holders(fts)
        assert len(session_pids) == 2, session_pids
        parities = set()
        for rnd in range(8):
            if rnd > 0:
                # a small write: some free pages again
                deliver_both((fts, stock), "alice", [gen_message("copt", 10 + rnd)])
                doveadm_ok(fts, "index", "-u", "alice", "INBOX")
            size_before = data_mdb(fts, "alice").stat().st_size
            assert env_stat(index_dir(fts, "alice"))["free"] > 0
            doveadm_ok(fts, "fts", "optimize", "-u", "alice")
            st = env_stat(index_dir(fts, "alice"))
            assert st["free"] == 0, f"optimize left free pages: {st}"
            assert data_mdb(fts, "alice").stat().st_size < size_before
            parities.add(st["txnid"] & 1)
            assert all(maps_deleted_index(p, fts) for p in session_pids), \
                "the test meant the sessions to have the replaced file mapped"
            # read beside them, with their lock file
            assert_lmdb_ok(fts, "alice", f"round {rnd}: after fts optimize")
            c1.noop()
            want = stock_uids(stock, f'BODY "{token("copt", 10 + rnd)}"')
            typ, data = c1.uid("SEARCH", "BODY", token("copt", 10 + rnd))
            assert typ == "OK"
            assert [int(u) for u in data[0].split()] == want, (rnd, data, want)
            assert not maps_deleted_index(session_pids[0], fts), \
                "imap still maps the replaced data.mdb after a search"
            if rnd >= 1 and len(parities) == 2:
                break
        assert len(parities) == 2, f"only one parity of txnid met: {parities}"
    assert_same(fts, stock, "alice", queries("copt"), step="after fts optimize")
    assert_sound(fts, "after fts optimize")


def test_writer_waiting_for_the_lock_writes_to_the_new_file(dovecot):
    fts, stock = indexed_with_expunges(dovecot, 2000, "cwait")

    optimize = stop_while_copying(fts)
    late = [gen_message("clate", 1), gen_message("clate", 2)]
    try:
        deliver_both((fts, stock), "alice", late)
        writer = doveadm_popen(fts, "index", "-u", "alice", "INBOX")
        # it opens the old file and waits for the lock
        time.sleep(2)
        assert writer.poll() is None, (
            "doveadm index did not wait for the write lock held by the "
            f"stopped compaction (exit {writer.returncode})")
    finally:
        os.kill(optimize.pid, signal.SIGCONT)
    assert optimize.wait(120) == 0, optimize.stderr.read()
    assert writer.wait(120) == 0, writer.stderr.read()
    found = indexed_tokens(fts)
    for i in (1, 2):
        assert token("clate", i).upper().encode() in found, (
            f"the batch written after the compaction is not in the new "
            f"data.mdb ({token('clate', i)} missing): it went to the "
            f"replaced file")
    assert_same(fts, stock, "alice", queries("cwait") + gen_queries("clate", [1, 2]),
                step="after a write that waited for the compaction")
    assert_sound(fts, "after the waiting write")


def test_compaction_killed(dovecot):
    fts, stock = indexed_with_expunges(dovecot, 1500, "ckill")
    inode = data_mdb(fts, "alice").stat().st_ino

    optimize = stop_while_copying(fts)
    # kill -9 the compaction holding the lock, and its copying child
    for line in open(f"/proc/{optimize.pid}/task/{optimize.pid}/children").read().split():
        sigkill(int(line))
    sigkill(optimize.pid)
    optimize.wait(30)
    wait_pid_gone(optimize.pid)
    tmp = index_dir(fts, "alice") / "data.mdb.compact"
    assert tmp.exists(), "the test meant to kill the compaction mid-way"
    assert data_mdb(fts, "alice").stat().st_ino == inode, \
        "data.mdb was replaced by a compaction that was killed"
    assert_lmdb_ok(fts, "alice", "after kill -9 of the compaction")

    # the lock the dead process held is taken over, new mail is indexed
    late = [gen_message("ckilled", i) for i in (1, 2)]
    deliver_both((fts, stock), "alice", late)
    q = queries("ckill") + gen_queries("ckilled", [1, 2])
    assert_same(fts, stock, "alice", q, step="after kill -9 of the compaction")
    doveadm_ok(fts, "fts", "optimize", "-u", "alice")
    assert not tmp.exists(), "the next compaction left the leftover copy"
    assert data_mdb(fts, "alice").stat().st_ino != inode
    assert env_stat(index_dir(fts, "alice"))["free"] == 0
    assert_same(fts, stock, "alice", q, step="after the next compaction")
    assert_sound(fts, "after the next compaction")


def test_batch_after_lost_batches_is_not_recorded(dovecot):
    fts, stock = start_pair(dovecot, users=["alice"], settings=SETTINGS)
    build((fts, stock), 3000, "cgap")
    mdb = data_mdb(fts, "alice")
    before = file_state(mdb)
    proc = doveadm_popen(fts, "index", "-u", "alice", "INBOX")
    try:
        # the first batch is committed; stop the build there
        wait_file_changed(mdb, before, timeout=120)
        os.kill(proc.pid, signal.SIGSTOP)
        assert proc.poll() is None
        # an admin removes the index to have it rebuilt
        for name in ("data.mdb", "lock.mdb"):
            (index_dir(fts, "alice") / name).unlink()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(600) == 0, proc.stderr.read()
    # whatever the rest of the build wrote must not claim the mail
    # of the batches that were removed: answers equal stock's
    assert_same(fts, stock, "alice", queries("cgap"),
                step="after the index was removed under a build")
    assert_sound(fts, "after the index was removed")
