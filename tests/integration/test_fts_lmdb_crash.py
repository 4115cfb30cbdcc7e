"""fts_lmdb survives being killed in the middle of indexing.

kill -9 lands on the process writing the index at random moments (seeded,
so a failure can be replayed; spread over the time a full run takes, as
measured first): `doveadm index` (which indexes in its own process), and,
for indexing started by a SEARCH, the indexer-worker doing it, the imap
process waiting for it, or both. After every kill:

* the LMDB environment must still be readable record by record
  (lmdb_verify, liblmdb's own reader, before anything touches it again);
* searches, which finish the indexing, must answer as stock Dovecot does,
  in the mailbox that was being indexed and in those indexed before;
* the log may show the kills (only for the pids the test killed) but no
  Panic, Fatal, other "killed with signal" or LMDB corruption.

fts_lmdb_batch_mb = 1 makes the plugin commit often, so kills fall both
inside and between write transactions.
"""

from __future__ import annotations

import random
import subprocess
import time

from fts_helpers import SearchClient, load_maildir, search_command
from fts_lmdb_helpers import (CORPUS_QUERIES, LMDB_CORRUPTION_RE,
                              assert_lmdb_ok, assert_log_clean,
                              assert_same, corpus_paths, doveadm_ok,
                              gen_message, gen_queries, log_lines, sigkill,
                              start_pair, wait_pid_gone)

SEED = 20240611
SETTINGS = {"fts_lmdb_batch_mb": 1}


def _load_boxes(pair, boxes: dict) -> None:
    for box, msgs in boxes.items():
        for dc in pair:
            load_maildir(dc, "alice", msgs, mailbox=box)


def _box_messages(corpus, start: int, count: int, tag: str) -> list:
    return corpus[start:start + count] + [gen_message(tag, i) for i in range(1, 6)]


def _queries(tag: str) -> list[str]:
    return CORPUS_QUERIES[:5] + gen_queries(tag, [1, 3, 5])


def _assert_no_corruption(dc, since: int = 0) -> None:
    """No LMDB corruption reported, and no fts-lmdb error at all: LMDB's
    transactions and robust locks make a killed writer a non-event."""
    bad = log_lines(dc, LMDB_CORRUPTION_RE.pattern, since)
    assert not bad, "LMDB corruption in the log:\n" + "\n".join(bad[:10])
    errors = log_lines(dc, r"(Error|Fatal|Panic): fts-lmdb", since)
    assert not errors, "fts-lmdb errors after a kill:\n" + "\n".join(errors[:10])


def test_kill_doveadm_index(dovecot):
    fts, stock = start_pair(dovecot, users=["alice"], settings=SETTINGS)
    corpus = [p.read_bytes() for p in corpus_paths(6000)]
    boxes = {f"Box{k}": _box_messages(corpus, 1000 * k, 2000, f"crash{k}")
             for k in range(5)}
    _load_boxes((fts, stock), boxes)

    # A full, uninterrupted run sets the time scale for the kills.
    start = time.monotonic()
    doveadm_ok(fts, "index", "-u", "alice", "Box0", timeout=600)
    full = time.monotonic() - start
    assert_same(fts, stock, "alice", _queries("crash0"), "Box0", step="uninterrupted")

    rng = random.Random(SEED)
    kills = []
    for k in range(1, 5):
        box = f"Box{k}"
        # Two kills in a row in Box1 and Box3 (the second one resumes a
        # broken run).
        for attempt in range(2 if k in (1, 3) else 1):
            delay = rng.uniform(0.03, max(0.06, 0.5 * full))
            proc = subprocess.Popen(
                ["doveadm", "-c", str(fts.config_path), "index", "-u", "alice", box],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=fts.env())
            time.sleep(delay)
            killed = proc.poll() is None and sigkill(proc.pid)
            proc.wait(60)
            kills.append((box, round(delay, 3), "killed" if killed else
                          f"finished first (exit {proc.returncode})"))
            what = f"after kill -9 of doveadm index {box} at {delay:.2f}s"
            assert_lmdb_ok(fts, "alice", what)
            _assert_no_corruption(fts)
        assert_same(fts, stock, "alice", _queries(f"crash{k}"), box,
                    step=f"search after kill in {box} ({kills})")
        for j in range(k):  # what was indexed before is still right
            assert_same(fts, stock, "alice", _queries(f"crash{j}")[-3:], f"Box{j}",
                        step=f"earlier Box{j} after kill in {box}")

    # a sanity check of the test itself: most kills must hit a running index
    assert sum(1 for *_, r in kills if r == "killed") >= 3, \
        f"too few kills landed while indexing ran (full run {full:.2f}s): {kills}"
    # and a clean complete run afterwards
    doveadm_ok(fts, "index", "-u", "alice", "*", timeout=600)
    for k in range(5):
        assert_same(fts, stock, "alice", _queries(f"crash{k}")[-4:], f"Box{k}",
                    step="final doveadm index")
    assert_lmdb_ok(fts, "alice", "at the end")
    _assert_no_corruption(fts)
    assert_log_clean(fts)
    print(f"full run {full:.2f}s; kills: {kills}")


def _send_search(dc, box: str, query: str) -> SearchClient:
    c = SearchClient(dc, "alice", mailbox=box)
    c.sock.sendall(search_command("k1", query))
    return c


def test_kill_search_triggered_indexing(dovecot):
    fts, stock = start_pair(dovecot, users=["alice"], settings=SETTINGS)
    corpus = [p.read_bytes() for p in corpus_paths(6000)]
    boxes = {"Cal": _box_messages(corpus, 0, 1000, "cal")}
    boxes.update({f"R{k}": _box_messages(corpus, 1000 * k, 1000, f"rnd{k}")
                  for k in range(1, 6)})
    _load_boxes((fts, stock), boxes)

    start = time.monotonic()
    with SearchClient(fts, "alice", mailbox="Cal") as c:
        res = c.search('BODY "calx1q"')
        assert res.uids is not None, f"first SEARCH in Cal failed: {res.status}"
    full = time.monotonic() - start
    assert_same(fts, stock, "alice", _queries("cal"), "Cal", step="uninterrupted")

    rng = random.Random(SEED + 1)
    victims = ["indexer-worker", "imap", "both", "indexer-worker", "both"]
    killed_pids: set[int] = set()
    log = []
    for k, victim in enumerate(victims, 1):
        box = f"R{k}"
        before_imap = fts.worker_pids("imap")
        client = _send_search(fts, box, f'BODY "rnd{k}x2q"')
        delay = rng.uniform(0.03, max(0.06, 0.7 * full))
        time.sleep(delay)
        pids = set()
        if victim in ("indexer-worker", "both"):
            pids |= fts.worker_pids("indexer-worker")
        if victim in ("imap", "both"):
            pids |= fts.worker_pids("imap") - before_imap
        for pid in pids:
            if sigkill(pid):
                killed_pids.add(pid)
        for pid in pids:
            wait_pid_gone(pid)
        client.sock.close()
        client.reader.close()
        log.append((box, victim, round(delay, 3), sorted(pids)))
        what = f"after kill -9 of {victim} {sorted(pids)} at {delay:.2f}s in {box}"
        assert_lmdb_ok(fts, "alice", what)
        _assert_no_corruption(fts)
        assert_same(fts, stock, "alice", _queries(f"rnd{k}"), box,
                    step=f"search after {what}")
        assert_same(fts, stock, "alice", _queries("cal")[-3:], "Cal",
                    step=f"Cal after {what}")

    assert killed_pids, f"no process was killed: {log}"
    assert_lmdb_ok(fts, "alice", "at the end")
    _assert_no_corruption(fts)
    assert_log_clean(fts, killed=killed_pids)
    print(f"calibration search {full:.2f}s; kills: {log}")
