#!/usr/bin/python3
"""Full-text search: stock Dovecot against its fts backends, side by side.

    /usr/bin/python3 bench/fts.py [--sizes full,100000]
                                  [--backends stock,lucene,xapian,lmdb]

For every mailbox size and backend, one real Dovecot instance: the corpus
(bench/corpus.py) goes into alice's INBOX, `doveadm index` builds the
index (timed: build time), the index files are measured, then the query
set (bench/queries.py) runs over IMAP: a warm-up pass, then --repeat timed
passes in which every query goes to all instances in turn (the first one
rotating), so that drift on a noisy machine hits every side alike. Each
answer is compared with stock Dovecot's, which is the reference.

Prints a table and writes it, with the command line, to
build/bench/fts-results.txt; every query whose answer differs from stock is
listed in build/bench/fts-mismatches-<size>.txt. See docs/fts-bench.md.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import corpus  # noqa: E402
import queries as query_set  # noqa: E402
from dovecot_instance import DovecotInstance  # noqa: E402
from fts_helpers import (BACKENDS, SearchClient, backend_available,  # noqa: E402
                         diff_answers, fts_instance_kwargs, load_maildir)

OUT_DIR = REPO / "build" / "bench"
USER = "alice"


@dataclass
class Side:
    """One backend at one mailbox size."""
    backend: str
    note: str = ""                  # why it has no figures (skipped, ...)
    dc: Optional[DovecotInstance] = None
    load_s: float = 0.0
    build_s: float = 0.0
    mail_bytes: int = 0
    index_bytes: int = 0            # the backend's own files
    dovecot_bytes: int = 0          # dovecot.index*, uidlist, ...
    index_dirs: set = field(default_factory=set)
    answers: dict = field(default_factory=dict)     # query -> SearchResult
    times: dict = field(default_factory=dict)       # query -> [seconds]
    unstable: list = field(default_factory=list)    # answers that changed


def measure(home: Path) -> tuple[int, int, int, set]:
    """(mail, dovecot's own, fts backend) bytes under `home`, apparent size.

    Anything that is neither a message file (in cur/, new/ or tmp/) nor one
    of Dovecot's own files is counted as the fts backend's: lucene-indexes/,
    xapian-indexes/, and whatever fts_lmdb will create, without having to
    know its layout here.
    """
    mail = own = fts = 0
    dirs = set()
    for root, _, files in os.walk(home):
        rel = Path(root).relative_to(home)
        for name in files:
            size = os.lstat(Path(root) / name).st_size
            if rel.name in ("cur", "new", "tmp"):
                mail += size
            elif name.startswith(("dovecot", ".dovecot")) or \
                    name in ("subscriptions", "maildirfolder"):
                own += size
            else:
                fts += size
                # name the backend's directory, e.g. Maildir/lucene-indexes
                top = rel.parts[:2] if rel.parts[:1] == ("Maildir",) else rel.parts[:1]
                dirs.add(str(Path(*top)) if top else name)
    return mail, own, fts, dirs


def start_side(backend: str, paths: list[Path], skipped: bool,
               args, log) -> Side:
    side = Side(backend)
    why = backend_available(backend)
    if why:
        side.note = why + ", skipped"
        return side
    if skipped:
        side.note = "skipped (--skip)"
        return side

    # the plugins' defaults, not the tests' settings, unless asked for
    dc = DovecotInstance(**fts_instance_kwargs(
        backend, users=[USER],
        plugin_settings={"fts_lmdb_trigram_min_blocks":
                         args.trigram_min_blocks})).start()
    side.dc = dc
    t = time.perf_counter()
    load_maildir(dc, USER, paths, timeout=args.index_timeout)
    side.load_s = time.perf_counter() - t
    log(f"  {backend}: loaded {len(paths)} messages in {side.load_s:.1f} s, "
        "indexing ...")

    mark = dc.log_mark()
    t = time.perf_counter()
    try:
        res = dc.doveadm("index", "-u", USER, "INBOX", timeout=args.index_timeout)
    except subprocess.TimeoutExpired:
        # subprocess.run kills doveadm; the half-built index is useless,
        # so this side gets no query figures.
        side.note = f"indexing timed out after {args.index_timeout:.0f} s"
        log(f"  {backend}: {side.note}")
        dc.stop()
        side.dc = None
        return side
    side.build_s = time.perf_counter() - t
    errors = [line for line in res.stderr.splitlines() if "Error" in line] + \
        dc.log_errors(mark)
    if res.returncode != 0 or errors:
        side.note = (f"doveadm index failed (exit {res.returncode}): "
                     + " | ".join(errors or res.stderr.splitlines())[:300])
        log(f"  {backend}: {side.note}")
        dc.stop()
        side.dc = None
        return side
    side.mail_bytes, side.dovecot_bytes, side.index_bytes, side.index_dirs = \
        measure(dc.home(USER))
    if BACKENDS[backend]["plugins"] and not side.index_bytes:
        side.note = "doveadm index wrote no index files"
    log(f"  {backend}: indexed in {side.build_s:.1f} s, "
        f"{side.index_bytes / 1e6:.1f} MB in {', '.join(sorted(side.index_dirs)) or '-'}")
    return side


def run_queries(sides: list[Side], queries: list, repeat: int, log) -> None:
    live = [s for s in sides if s.dc is not None]
    clients = {s.backend: SearchClient(s.dc, USER) for s in live}
    try:
        # Warm-up: first use of a header fills Dovecot's cache file, the
        # index files get into the page cache. Its answers are the ones
        # compared; timed passes only check that they don't change.
        t = time.perf_counter()
        for q in queries:
            for s in live:
                s.answers[q.text] = clients[s.backend].search(q.text)
        log(f"  warm-up pass: {time.perf_counter() - t:.0f} s")
        for rep in range(repeat):
            t = time.perf_counter()
            for i, q in enumerate(queries):
                k = (rep + i) % len(live)
                for s in live[k:] + live[:k]:
                    r = clients[s.backend].search(q.text)
                    s.times.setdefault(q.text, []).append(r.seconds)
                    if r.uids != s.answers[q.text].uids:
                        s.unstable.append(q.text)
            log(f"  timed pass {rep + 1}/{repeat}: {time.perf_counter() - t:.0f} s")
        if repeat == 0:
            for s in live:
                s.times = {q: [r.seconds] for q, r in s.answers.items()}
    finally:
        for c in clients.values():
            c.close()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def report_size(size_label: str, paths: list[Path], sides: list[Side],
                queries: list, args, out) -> None:
    stock = next(s for s in sides if s.backend == "stock")
    mail_mb = corpus.total_bytes(paths) / 1e6
    runs = (f"warm-up + {args.repeat} timed runs each" if args.repeat
            else "one run each (the warm-up pass, timed)")
    out(f"## {len(paths)} messages ({mail_mb:.1f} MB), {len(queries)} queries, "
        f"{runs}")
    out()
    out(f"{'backend':<16} {'load s':>7} {'build s':>8} {'index MB':>9} "
        f"{'idx/mail':>9} {'p50 ms':>8} {'p95 ms':>8}  differing from stock")
    details = []
    for s in sides:
        if s.dc is None and not s.answers:
            out(f"{s.backend:<16} {s.note}")
            continue
        medians = [statistics.median(v) * 1000 for v in s.times.values()]
        fts = bool(BACKENDS[s.backend]["plugins"])
        index_mb = f"{s.index_bytes / 1e6:9.1f}" if fts else f"{'-':>9}"
        ratio = (f"{s.index_bytes / s.mail_bytes * 100:8.1f}%"
                 if fts and s.mail_bytes else f"{'-':>9}")
        if s is stock:
            differ = "(reference)"
        else:
            mms = [(q, diff_answers(q.text, stock.answers[q.text],
                                    s.answers[q.text])) for q in queries]
            mms = [(q, m) for q, m in mms if m is not None]
            kinds = collections.Counter(_kind(m) for _, m in mms)
            differ = f"{len(mms)}/{len(queries)}"
            if mms:
                differ += " (" + ", ".join(f"{v} {k}" for k, v in
                                           sorted(kinds.items())) + ")"
            details.append((s, mms))
        out(f"{s.backend:<16} {s.load_s:7.1f} {s.build_s:8.1f} {index_mb} "
            f"{ratio} {statistics.median(medians):8.1f} "
            f"{percentile(medians, 95):8.1f}  {differ}")
        if s.unstable:
            out(f"{'':<16} ! {len(s.unstable)} answers changed between runs")
        if s.note:
            out(f"{'':<16} ! {s.note}")
    out()
    out("Latency: per query the median of its timed runs, then p50/p95 over "
        "the queries. build s: `doveadm index` (stock: only fills the cache "
        "file). index MB: the backend's own files; idx/mail: of the "
        f"message files. Dovecot's own index files: {stock.dovecot_bytes / 1e6:.1f} MB "
        "for stock after `doveadm index`.")
    if not details:
        return
    out()
    out("Queries differing from stock, by category (differing/total):")
    cats = list(dict.fromkeys(q.category for q in queries))
    totals = collections.Counter(q.category for q in queries)
    out(f"  {'category':<18}" + "".join(f"{s.backend:>16}" for s, _ in details))
    for cat in cats:
        cells = []
        for _, mms in details:
            n = sum(1 for q, _ in mms if q.category == cat)
            cells.append(f"{n}/{totals[cat]}")
        out(f"  {cat:<18}" + "".join(f"{c:>16}" for c in cells))
    write_mismatches(size_label, details)


def _kind(m) -> str:
    if m.fts is None:
        return "errors"
    if m.missing and m.extra:
        return "missing+extra"
    return "missing" if m.missing else "extra"


def write_mismatches(size_label: str, details) -> None:
    path = OUT_DIR / f"fts-mismatches-{size_label}.txt"
    lines = []
    for s, mms in details:
        lines.append(f"# {s.backend}: {len(mms)} queries differ from stock")
        for q, m in mms:
            lines.append(f"{q.category:<18} {m}")
        lines.append("")
    path.write_text("\n".join(lines))


def write_query_times(size_label: str, sides: list[Side], queries: list) -> None:
    """Per query: its category, how many messages stock found, and each
    backend's median in ms, slowest lmdb (else last backend) first: which
    query is the median, and what it waits for, is not in p50/p95."""
    live = [s for s in sides if s.times]
    if not live:
        return
    key_side = next((s for s in live if s.backend == "lmdb"), live[-1])
    stock = next(s for s in sides if s.backend == "stock")

    def ms(s, q):
        v = s.times.get(q.text)
        return statistics.median(v) * 1000 if v else float("nan")

    rows = sorted(queries, key=lambda q: -ms(key_side, q))
    lines = ["\t".join(["category", "found by stock"] +
                       [f"{s.backend} ms" for s in live] + ["query"])]
    for q in rows:
        found = stock.answers.get(q.text)
        n = len(found.uids) if found is not None and found.uids is not None else "-"
        lines.append("\t".join([q.category, str(n)] +
                               [f"{ms(s, q):.1f}" for s in live] + [q.text]))
    (OUT_DIR / f"fts-times-{size_label}.tsv").write_text("\n".join(lines) + "\n")


def parse_skip(values: list[str]) -> dict:
    skip: dict[str, set] = {}
    for v in values:
        backend, _, size = v.partition("@")
        skip.setdefault(size or "*", set()).add(backend)
    return skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sizes: 'full' is the whole corpus (6,046 messages); a number "
               "up to that takes its first messages, a larger one repeats it "
               "with altered copies (bench/corpus.py scaled_corpus).")
    parser.add_argument("--sizes", default="full",
                        help="comma-separated mailbox sizes (default: full)")
    parser.add_argument("--backends", default="stock,lucene,xapian,lmdb",
                        help="comma-separated, from: " + ", ".join(BACKENDS)
                        + " (stock always runs: it is the reference)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs per query after the warm-up "
                             "(0: time the warm-up pass itself)")
    parser.add_argument("--skip", action="append", default=[],
                        metavar="BACKEND@SIZE",
                        help="don't run BACKEND at SIZE, e.g. xapian@100000 "
                             "(repeatable)")
    parser.add_argument("--index-timeout", type=float, default=1200,
                        help="seconds `doveadm index` may take before the "
                             "backend is reported as timed out (default 1200)")
    parser.add_argument("--output", default="build/bench/fts-results.txt",
                        help="where the table goes, relative to the repository "
                             "(default build/bench/fts-results.txt)")
    parser.add_argument("--query-limit", type=int, default=0,
                        help="use only N of the queries, spread evenly over "
                             "the set (for quick runs on large mailboxes)")
    parser.add_argument("--trigram-min-blocks", default=None, metavar="N",
                        help="fts_lmdb_trigram_min_blocks for the lmdb side "
                             "(default: the plugin's default)")
    args = parser.parse_args()

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(unknown)}")
    if "stock" in backends:
        backends.remove("stock")
    backends.insert(0, "stock")
    skip = parse_skip(args.skip)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO)
    out("# " + shlex.join(["/usr/bin/python3", script, *sys.argv[1:]]))
    out(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
        f"Dovecot {_version(['dovecot', '--version'])}, "
        f"dovecot-lucene {_deb_version('dovecot-lucene')}, "
        f"dovecot-fts-xapian {_deb_version('dovecot-fts-xapian')}")

    log("building the query set ...")
    queries = query_set.build_queries()
    if args.query_limit and args.query_limit < len(queries):
        step = len(queries) / args.query_limit
        queries = [queries[int(i * step)] for i in range(args.query_limit)]

    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        paths = corpus.ensure_corpus() if size == "full" else \
            corpus.scaled_corpus(int(size))
        label = str(len(paths))
        skipped = skip.get(label, set()) | skip.get(size, set()) | \
            skip.get("*", set())
        log(f"{label} messages:")
        sides = []
        try:
            for backend in backends:
                sides.append(start_side(backend, paths, backend in skipped,
                                        args, log))
            if sides[0].dc is None:
                raise SystemExit(f"stock Dovecot did not come up: {sides[0].note}")
            run_queries(sides, queries, args.repeat, log)
            out()
            report_size(label, paths, sides, queries, args, out)
            write_query_times(label, sides, queries)
        finally:
            for s in sides:
                if s.dc is not None:
                    s.dc.stop()
                    s.dc = None
    out()
    out(f"# whole run: {(time.perf_counter() - started) / 60:.1f} min")
    output = REPO / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {args.output} (differing queries: "
          f"{OUT_DIR.relative_to(REPO)}/fts-mismatches-<size>.txt, per query "
          f"times: {OUT_DIR.relative_to(REPO)}/fts-times-<size>.tsv)")


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.split()[0]
    except (OSError, IndexError):
        return "?"


def _deb_version(package: str) -> str:
    try:
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                           capture_output=True, text=True).stdout.strip()
        return v or "not installed"
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
