#!/usr/bin/python3
"""Index build time of two or more fts_lmdb builds, side by side.

    /usr/bin/python3 bench/fts-build.py --builds old=DIR,new=build
                                        [--size 100000] [--rounds 3]

Each build (a directory holding lib21_fts_lmdb_plugin.so, e.g. one made
with `make BUILD=DIR` from an older commit) gets a Dovecot instance of
its own with the same mailbox (bench/corpus.py). A first build per
instance fills Dovecot's cache file and the page cache (shown, not
compared: it varies with what the machine did before); then every round
removes each instance's index directory and times `doveadm index`, the
builds taking turns at going first, so that drift on a noisy machine
hits every side alike. Prints each build's median and its ratio to the
first build's, and writes them, with the command line, to --output.

For a question bench/fts.py can't answer in one run: whether a change to
the plugin made the build slower, and by how much (docs/fts-bench.md).
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import corpus  # noqa: E402
from dovecot_instance import DovecotInstance  # noqa: E402
from fts_helpers import fts_instance_kwargs, load_maildir  # noqa: E402

USER = "alice"
PLUGIN = "lib21_fts_lmdb_plugin.so"


def index_dir(dc: DovecotInstance) -> Path:
    """The LMDB environment's directory (fts_lmdb_path's default)."""
    found = [Path(root) for root, dirs, _ in os.walk(dc.home(USER))
             if Path(root).name == "fts-lmdb"]
    if len(found) != 1:
        raise SystemExit(f"expected one fts-lmdb directory, found {found}")
    return found[0]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build_once(dc: DovecotInstance, timeout: float) -> tuple[float, float]:
    """(wall, CPU) seconds of `doveadm index`, which indexes in its own
    process: its CPU time is what the plugin costs, with less of the
    machine's noise in it than the wall time."""
    mark = dc.log_mark()
    cpu = _children_cpu()
    t = time.perf_counter()
    res = dc.doveadm("index", "-u", USER, "INBOX", timeout=timeout)
    seconds = time.perf_counter() - t
    cpu = _children_cpu() - cpu
    errors = [l for l in res.stderr.splitlines() if "Error" in l] + \
        dc.log_errors(mark)
    if res.returncode != 0 or errors:
        raise SystemExit(f"doveadm index failed (exit {res.returncode}): "
                         + " | ".join(errors or res.stderr.splitlines())[:300])
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", required=True,
                        help="LABEL=DIR,... (DIR relative to the repository "
                             "or absolute; the first is the baseline)")
    parser.add_argument("--size", default="100000",
                        help="messages: 'full' (6,046) or a number "
                             "(default 100000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed builds per side (default 3)")
    parser.add_argument("--index-timeout", type=float, default=1200)
    parser.add_argument("--output", default="build/bench/fts-build.txt",
                        help="relative to the repository "
                             "(default build/bench/fts-build.txt)")
    args = parser.parse_args()

    builds = []
    for item in args.builds.split(","):
        label, sep, path = item.partition("=")
        plugin_dir = (REPO / path).resolve() if sep else None
        if not sep or not (plugin_dir / PLUGIN).is_file():
            parser.error(f"{item!r}: expected LABEL=DIR with DIR/{PLUGIN}")
        builds.append((label, plugin_dir))
    if len(builds) < 2:
        parser.error("--builds needs two builds or more")

    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO)
    out("# " + shlex.join(["/usr/bin/python3", script, *sys.argv[1:]]))
    out(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores")
    paths = corpus.ensure_corpus() if args.size == "full" else \
        corpus.scaled_corpus(int(args.size))

    sides = []
    first = []      # the builds that also filled Dovecot's cache file
    try:
        for label, plugin_dir in builds:
            dc = DovecotInstance(**fts_instance_kwargs(
                "lmdb", users=[USER], plugin_dir=plugin_dir)).start()
            sides.append((label, dc, []))
            load_maildir(dc, USER, paths, timeout=args.index_timeout)
            first.append(build_once(dc, args.index_timeout))
            log(f"{label}: loaded {len(paths)} messages; first build "
                f"{first[-1][0]:.1f} s")
        for rnd in range(args.rounds):
            k = rnd % len(sides)
            for label, dc, times in sides[k:] + sides[:k]:
                shutil.rmtree(index_dir(dc))
                times.append(build_once(dc, args.index_timeout))
                log(f"round {rnd + 1}: {label} {times[-1][0]:.1f} s, "
                    f"CPU {times[-1][1]:.1f} s")
    finally:
        for _, dc, _ in sides:
            dc.stop()

    out()
    out(f"{len(paths)} messages, {args.rounds} timed builds each "
        "(`doveadm index` into an empty index, Dovecot's cache file warm)")
    out()
    out(f"{'build':<12} {'wall s':>7} {'ratio':>6} {'CPU s':>7} {'ratio':>6}"
        "  every timed build, wall/CPU s; first build")
    base = [statistics.median(t[i] for t in sides[0][2]) for i in (0, 1)]
    for (label, _, times), cold in zip(sides, first):
        wall, cpu = (statistics.median(t[i] for t in times) for i in (0, 1))
        out(f"{label:<12} {wall:7.1f} {wall / base[0]:6.2f} {cpu:7.1f} "
            f"{cpu / base[1]:6.2f}  "
            + " ".join(f"{w:.1f}/{c:.1f}" for w, c in times)
            + f"; {cold[0]:.1f}/{cold[1]:.1f}")
    out()
    out("Medians. CPU: user+system time of the doveadm process. First "
        "build: the one that also filled Dovecot's cache file, the "
        "instances' mail loaded one after the other; not compared.")
    output = REPO / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
