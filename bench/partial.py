#!/usr/bin/python3
"""Partial fetch of a large attachment: stock Dovecot against fts_lmdb.

    /usr/bin/python3 bench/partial.py [--repeat 9] [--attachment-mb 30]
        [--cpu-repeat 5] [--stock-cpu-repeat 3] [--cpu-block 50] [--profile]

One generated (seeded) message of about 40 MB: part 1 a text part, part 2
an attachment of 30 MB of random bytes as base64 in 76-character lines.
It is delivered over LMTP (so it is stored as Dovecot stores delivered
mail, with LF line ends) to two instances running at once: stock Dovecot
and Dovecot with fts_lmdb (fts = lmdb, fts_lmdb_partial_fetch at its
default), which `doveadm index` then indexes. A third, fts_lmdb with
fts_lmdb_partial_fetch = no, only serves the index size comparison.

Measured, stock and fts_lmdb side by side, as medians, with the two
instances interleaved:
  * 64 KiB slices at the start, middle and end of part 2, with
    BODY.PEEK[2]<o.65536> and BINARY.PEEK[2]<o.65536>, each on a fresh
    connection (connect, LOGIN, SELECT, FETCH, LOGOUT) with Dovecot's
    default service_count = 1 (a new imap process each time): the FETCH
    command alone and the whole connection, median of --repeat;
  * BINARY.SIZE[2];
  * the server CPU of fetching the whole attachment in 64 KiB slices, a
    connection each, against one fetch of the whole part, for
    BINARY.PEEK and BODY.PEEK. What is compared is what the FETCH
    commands add: the CPU of N sessions with one slice FETCH each minus
    that of N empty sessions (LOGIN, SELECT, NOOP, LOGOUT), against what
    one whole fetch adds over an empty session. Slice sessions, empty
    ones and one whole fetch alternate in blocks of --cpu-block slices,
    so that all three see the same load. Two deployments:
      - reused processes (service_count = 0 for imap and imap-login, one
        long-lived process of each): their CPU is read from
        /proc/<pid>/schedstat (nanoseconds) whenever they have gone idle,
        --cpu-repeat runs (stock's slices only in the first
        --stock-cpu-repeat, they take long);
      - a new process per connection (service_count = 1, the default):
        one run, read from the master's cutime + cstime, which grow when
        it reaps its children (in clock ticks of 10 ms, so each block's
        reading is off by up to 10 ms);
    CPU is that of the imap and imap-login processes; "all" adds the
    master, auth, anvil, log, config and stats;
  * with --profile, where the fts_lmdb imap process spends the CPU of the
    slice sessions against empty ones (perf record -g on the long-lived
    imap process), into build/bench/partial-profile.txt;
  * the size of the "parts" database (mdb_stat -s parts) against the mail,
    and the whole index with fts_lmdb_partial_fetch = yes and = no.

Every fts_lmdb answer is compared with stock's, byte for byte; at the end
the fts_lmdb instance is switched to mail_debug to check that its fetches
were served from the index. Nothing here is pass/fail on timing.
The table goes to build/bench/partial-results.txt and stdout.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from dovecot_instance import DovecotInstance  # noqa: E402
from fts_helpers import COMMON_FTS_SETTINGS, backend_available  # noqa: E402
from partial_corpus import big_message  # noqa: E402
from partial_helpers import (RawImap, Reply, describe_difference,  # noqa: E402
                             fetched_value, parse_fetch)

USER = "alice"
SLICE = 65536
OUT = REPO / "build" / "bench" / "partial-results.txt"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Both instances get the same services. SERVICE_CONF: service_count = 1
# (Dovecot's default, set explicitly because the CPU accounting depends
# on it): one connection per imap and imap-login process, so each exits,
# and is reaped by the master, after its session.
SERVICE_CONF = """\
service imap {
  service_count = 1
  vsz_limit = 2G
}
service imap-login {
  service_count = 1
}
service indexer-worker {
  vsz_limit = 2G
}
"""

# REUSE_CONF, for the precise CPU figures: one imap process serving one
# connection after the other (service_count = 0, client_limit stays 1)
# and imap-login in high-performance mode, one process of each
# (process_limit = 1, so no second one is forked when a connection comes
# in while the first is still ending the previous session), both started
# with the master and kept (process_min_avail = 1: never idle-killed), so
# their CPU can be read from /proc/<pid>/schedstat at any time.
REUSE_CONF = """\
service imap {
  service_count = 0
  process_min_avail = 1
  process_limit = 1
  vsz_limit = 2G
}
service imap-login {
  service_count = 0
  process_min_avail = 1
  process_limit = 1
}
service indexer-worker {
  vsz_limit = 2G
}
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------ instances

def start(kind: str) -> DovecotInstance:
    if kind == "stock":
        return DovecotInstance(users=[USER], extra_conf=SERVICE_CONF).start()
    settings = {**COMMON_FTS_SETTINGS, "fts": "lmdb"}
    if kind == "lmdb-off":
        settings["fts_lmdb_partial_fetch"] = "no"
    return DovecotInstance(mail_plugins="fts fts_lmdb",
                           plugin_settings=settings, users=[USER],
                           extra_conf=SERVICE_CONF).start()


def index_dir(dc: DovecotInstance) -> Path:
    return dc.maildir(USER) / "fts-lmdb"


def mail_file(dc: DovecotInstance) -> Path:
    files = [p for d in ("cur", "new") for p in (dc.maildir(USER) / d).iterdir()]
    if len(files) != 1:
        raise SystemExit(f"expected one message in {dc.maildir(USER)}, found {files}")
    return files[0]


# ------------------------------------------------------------ server CPU

NS_PER_TICK = 1e9 / CLK_TCK
SESSION_PROCS = ("imap", "imap-login")


class CpuSnapshot:
    """CPU so far of one instance's processes, in ns, by group: "imap"
    and "imap-login" (live processes, /proc/<pid>/schedstat), "reaped"
    (the master's cutime + cstime: every child it has reaped, in clock
    ticks) and "other" (the master itself and its other children)."""

    def __init__(self, master: int):
        self.groups = {"imap": 0, "imap-login": 0, "reaped": 0, "other": 0}
        self.zombies = False
        self.live: dict[int, int] = {}      # pid -> ns, imap + imap-login
        self.imap_pids: list[int] = []
        stat = Path(f"/proc/{master}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        self.groups["reaped"] = (int(fields[13]) + int(fields[14])) * NS_PER_TICK
        self.groups["other"] = _schedstat(master) or 0
        try:
            kids = Path(f"/proc/{master}/task/{master}/children").read_text()
        except OSError:
            kids = ""
        for pid in map(int, kids.split()):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            ns = _schedstat(pid)
            if ns is None:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            self.zombies |= stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
            if comm in SESSION_PROCS:
                self.groups[comm] += ns
                self.live[pid] = ns
                if comm == "imap":
                    self.imap_pids.append(pid)
            else:
                self.groups["other"] += ns

    @property
    def session(self) -> float:
        """imap + imap-login, live and reaped."""
        g = self.groups
        return g["imap"] + g["imap-login"] + g["reaped"]

    @property
    def all(self) -> float:
        return sum(self.groups.values())

    def key(self) -> tuple:
        return (tuple(sorted(self.live.items())), self.groups["reaped"])


def _schedstat(pid: int) -> Optional[int]:
    """Nanoseconds the task has run (its main thread: Dovecot's processes
    have no others)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def settle(dc: DovecotInstance, timeout: float = 60) -> CpuSnapshot:
    """A snapshot taken once the instance's imap and imap-login processes
    have stopped working: two readings 10 ms apart that agree, and no
    child waiting to be reaped (its time moves from schedstat to the
    master's cutime in between)."""
    deadline = time.monotonic() + timeout
    prev = CpuSnapshot(dc.proc.pid)
    while True:
        time.sleep(0.01)
        snap = CpuSnapshot(dc.proc.pid)
        if snap.key() == prev.key() and not snap.zombies:
            return snap
        if time.monotonic() > deadline:
            raise SystemExit(f"the imap processes of {dc.instance_name} "
                             f"are still busy after {timeout}s")
        prev = snap


def use_services(dc: DovecotInstance, conf: str) -> None:
    """Switch the running instance to other service settings and wait
    until its imap processes are those of the new ones."""
    dc.extra_conf = conf
    dc.reload()
    deadline = time.monotonic() + 30
    want = 1 if "process_min_avail = 1" in conf else 0
    while True:
        snap = settle(dc)
        if len(snap.imap_pids) == want:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{dc.instance_name}: {len(snap.imap_pids)} "
                             f"imap processes after the reload, not {want}")
        time.sleep(0.1)


# ------------------------------------------------------------ sessions

def session(dc: DovecotInstance, cmd: str) -> tuple[Reply, float, float]:
    """(reply, FETCH seconds, whole connection seconds) for one fresh
    connection: connect, LOGIN, SELECT INBOX, `cmd`, LOGOUT."""
    t0 = time.perf_counter()
    c = RawImap(dc.imap_port, USER, mailbox="INBOX", readonly=False)
    reply = c.command(cmd)
    c.logout()
    return reply, reply.seconds, time.perf_counter() - t0


class Checker:
    """Every fts_lmdb answer against stock's."""

    def __init__(self):
        self.count = 0
        self.differences: list[str] = []

    def check(self, cmd: str, stock: Reply, lmdb: Reply) -> None:
        self.count += 1
        if not stock.ok:
            self.differences.append(f"{cmd}: stock answered "
                                    f"{stock.status.strip()!r}")
        elif stock.wire() != lmdb.wire():
            self.differences.append(describe_difference(cmd, stock, lmdb))


def timed(sides: dict, cmd: str, repeat: int, checker: Checker) -> dict:
    """{side: (median FETCH s, median connection s)}, the sides interleaved
    and their order alternating."""
    names = list(sides)
    fetch = {n: [] for n in names}
    conn = {n: [] for n in names}
    for i in range(repeat):
        order = names if i % 2 == 0 else names[::-1]
        replies = {}
        for n in order:
            replies[n], f, c = session(sides[n], cmd)
            fetch[n].append(f)
            conn[n].append(c)
        checker.check(cmd, replies["stock"], replies["lmdb"])
    return {n: (statistics.median(fetch[n]), statistics.median(conn[n]))
            for n in names}


# ------------------------------------------------------------ CPU of slicing

class Slicing:
    """Part 2 fetched whole, or in SLICE-byte slices from offset 0 to
    `size`: BINARY.PEEK counts decoded bytes, BODY.PEEK encoded ones."""

    def __init__(self, kind: str, size: int):
        self.kind = kind                    # "BINARY" or "BODY"
        self.size = size
        self.offsets = list(range(0, size, SLICE))
        self.whole_cmd = f"FETCH 1 {kind}.PEEK[2]"
        self.cmds = [f"FETCH 1 {kind}.PEEK[2]<{o}.{SLICE}>"
                     for o in self.offsets]
        self.prefix = f"{kind}[2]".encode()

    @property
    def label(self) -> str:
        return f"{self.kind}.PEEK[2]<o.{SLICE}>"


def cpu_batch(dc: DovecotInstance, cmds: list[str]) -> tuple[float, float,
                                                            list[Reply]]:
    """(ns of imap + imap-login, ns of all processes, replies) of one
    session per command, one after the other."""
    before = settle(dc)
    replies = [session(dc, c)[0] for c in cmds]
    after = settle(dc)
    return after.session - before.session, after.all - before.all, replies


def cpu_run(sides: dict, sl: Slicing, block: int, checker: Checker,
            ref: dict) -> dict:
    """One run of the slicing on each side: a session per slice, as many
    empty ones (NOOP instead of the FETCH) and, per block of `block`
    slices, one session fetching the whole part, so that the whole
    fetches are spread over the run like the slices. The order of the
    sides and of the three kinds of batch changes from block to block.
    Every fts_lmdb answer is compared with stock's (ref: stock's latest
    answer per command, so that runs without stock are checked too).
    Returns per side the ns of the empty sessions and of the slice
    sessions (summed) and of each whole-fetch session, for imap +
    imap-login ("_all": every process)."""
    names = list(sides)
    res = {n: {"empty": 0.0, "slices": 0.0, "empty_all": 0.0,
               "slices_all": 0.0, "whole": [], "whole_all": []}
           for n in names}

    def compare(cmds: list[str], got: dict) -> None:
        if "stock" in got:
            ref.update(zip(cmds, got["stock"]))
        if "lmdb" in got:
            for cmd, reply in zip(cmds, got["lmdb"]):
                checker.check(cmd, ref[cmd], reply)

    for b, start in enumerate(range(0, len(sl.cmds), block)):
        cmds = sl.cmds[start:start + block]
        order = names if b % 2 == 0 else names[::-1]
        kinds = [("slices", cmds), ("empty", ["NOOP"] * len(cmds)),
                 ("whole", [sl.whole_cmd])]
        kinds = kinds[b % 3:] + kinds[:b % 3]
        got, got_whole = {}, {}
        for n in order:
            for kind, batch in kinds:
                ns, ns_all, replies = cpu_batch(sides[n], batch)
                if kind == "whole":
                    res[n]["whole"].append(ns)
                    res[n]["whole_all"].append(ns_all)
                    got_whole[n] = replies
                else:
                    res[n][kind] += ns
                    res[n][kind + "_all"] += ns_all
                    if kind == "slices":
                        got[n] = replies
        compare(cmds, got)
        compare([sl.whole_cmd], got_whole)
    return res


def slicing_joined_ok(sl: Slicing, ref: dict) -> bool:
    """Do stock's slices put together equal its whole fetch?"""
    whole = fetched_value(ref[sl.whole_cmd], sl.prefix)
    joined = b"".join(fetched_value(ref[c], sl.prefix) or b""
                      for c in sl.cmds)
    return whole is not None and len(whole) == sl.size and joined == whole


def cpu_figures(run: dict, n: int) -> dict:
    """ms figures of one run of one side."""
    ms = 1e-6
    empty = run["empty"] / n
    whole = statistics.mean(run["whole"])
    empty_all = run["empty_all"] / n
    whole_all = statistics.mean(run["whole_all"])
    f = {"empty": empty * ms,
         "slice": run["slices"] / n * ms,
         "all_sessions": run["slices"] * ms,
         "inc_slice": (run["slices"] - run["empty"]) / n * ms,
         "inc_all_slices": (run["slices"] - run["empty"]) * ms,
         "whole": whole * ms,
         "inc_whole": (whole - empty) * ms,
         "empty_allp": empty_all * ms,
         "inc_all_slices_allp": (run["slices_all"] - run["empty_all"]) * ms,
         "inc_whole_allp": (whole_all - empty_all) * ms}
    f["ratio"] = f["inc_all_slices"] / f["inc_whole"]
    f["ratio_allp"] = f["inc_all_slices_allp"] / f["inc_whole_allp"]
    return f


def cpu_table(out, title: str, slicings: list, runs: dict) -> dict:
    """runs: {slicing kind: [ {side: raw run} per run ]}. Prints the
    medians; returns {kind: {side: {figure: median}}} plus the lmdb
    per-run ratios under "ratios"."""
    summary = {}
    out()
    out(title)
    for sl in slicings:
        per_side: dict[str, list[dict]] = {}
        for r in runs[sl.kind]:
            for side, raw in r.items():
                per_side.setdefault(side, []).append(
                    cpu_figures(raw, len(sl.offsets)))
        med = {side: {k: statistics.median(f[k] for f in fs)
                      for k in fs[0]}
               for side, fs in per_side.items()}
        counts = {side: len(fs) for side, fs in per_side.items()}
        summary[sl.kind] = med
        summary[sl.kind + " ratios"] = [f["ratio"] for f in per_side["lmdb"]]
        stock, lmdb = med["stock"], med["lmdb"]
        n = len(sl.offsets)
        out()
        out(f"{sl.label}: {n} slices, {sl.size} bytes "
            f"(runs: stock {counts['stock']}, fts_lmdb {counts['lmdb']})"
            f"{'':>4}{'stock':>12}{'fts_lmdb':>12}")
        rows = [
            ("empty session (LOGIN, SELECT, NOOP, LOGOUT), each", "empty", 3),
            ("session with one slice FETCH, each", "slice", 3),
            (f"all {n} slice sessions, sessions included", "all_sessions", 1),
            ("FETCH increment, per slice", "inc_slice", 3),
            (f"FETCH increment, all {n} slices", "inc_all_slices", 1),
            (f"session with one whole {sl.kind}.PEEK[2]", "whole", 1),
            ("whole fetch's increment over an empty session", "inc_whole", 1),
        ]
        for text, key, prec in rows:
            out(f"  {text:<72}{stock[key]:12.{prec}f}{lmdb[key]:12.{prec}f}")
        rlist = sorted(summary[sl.kind + " ratios"])
        out(f"  {'all slices / whole fetch, FETCH increments':<72}"
            f"{stock['ratio']:11.2f}x{lmdb['ratio']:11.3f}x")
        if len(rlist) > 1:
            out(f"  {'  fts_lmdb per run':<72}"
                + ", ".join(f"{r:.3f}" for r in rlist))
        out(f"  {'fts_lmdb all slices / stock whole fetch, FETCH increments':<72}"
            f"{'':>12}{lmdb['inc_all_slices'] / stock['inc_whole']:11.3f}x")
        out(f"  {'every process (+ master, auth, anvil, log, ...): empty session':<72}"
            f"{stock['empty_allp']:12.3f}{lmdb['empty_allp']:12.3f}")
        out(f"  {'  all slices / whole fetch, FETCH increments':<72}"
            f"{stock['ratio_allp']:11.2f}x{lmdb['ratio_allp']:11.3f}x")
    return summary


# ------------------------------------------------------------ profile

PROFILE_OUT = REPO / "build" / "bench" / "partial-profile.txt"


def _any(*names: str):
    return lambda frames: any(n in frames for n in names)


# Where a sample of the imap process goes: the first category one of
# whose frames is on its call stack.
PROFILE_CATEGORIES = [
    ("fts_lmdb: LMDB environment open (fts_lmdb_backend_open)",
     _any("fts_lmdb_backend_open")),
    ("fts_lmdb: LMDB environment close at session end (fts_lmdb_db_unref)",
     _any("fts_lmdb_db_unref", "mdb_env_close")),
    ("Dovecot: maildir uidlist sync to find the mail file (lock, readdir)",
     _any("maildir_storage_sync_force")),
    ("fts_lmdb: part map read (records, decode, GUID, size)",
     _any("fts_lmdb_mail_have_map")),
    ("fts_lmdb: decoding from the checkpoint up to the slice",
     _any("fts_lmdb_istream_position")),
    ("fts_lmdb: decoding the slice", _any("fts_lmdb_istream_read")),
    ("fts_lmdb: BODY: CRLF offset from its checkpoint",
     _any("fts_lmdb_virtual_offset")),
    ("fts_lmdb: other (seek hint, stream setup)",
     _any("fts_lmdb_mail_seek_hint", "fts_lmdb_mail_get_binary_stream",
          "fts_lmdb_istream_create")),
    ("Dovecot: reading the slice's bytes (BODY: mail file, CRLF, range)",
     lambda f: "o_stream_send_istream" in f and (
         "i_stream_read" in f or "i_stream_read_memarea" in f)),
    ("Dovecot: writing the literal to the client",
     _any("o_stream_send_istream", "o_stream_flush", "o_stream_sendv")),
    ("Dovecot: mail_prefetch (posix_fadvise WILLNEED on the mail file)",
     _any("index_mail_prefetch")),
    ("Dovecot: rest of FETCH (parsing, search, parts, streams, reply)",
     _any("cmd_fetch", "imap_fetch_more", "imap_fetch_begin",
          "imap_fetch_init_handler")),
    ("Dovecot: SELECT", _any("cmd_select_full", "cmd_select")),
    ("Dovecot: LOGOUT, session end",
     _any("cmd_logout", "client_destroy", "mail_user_unref",
          "mail_user_deinit")),
    ("Dovecot: login handoff, user and storage init",
     _any("client_create_from_input", "mail_storage_service_lookup_next",
          "mail_storage_service_next_with_session_suffix",
          "master_login_auth_request", "imap_client_created")),
    ("other (ioloop, kernel, unresolved frames)", lambda f: True),
]


def perf_samples(data: Path) -> list[tuple[int, list[str]]]:
    """(period in ns, frame names leaf first) per sample."""
    res = subprocess.run(["perf", "script", "-i", str(data),
                          "-F", "comm,period,ip,sym,dso"],
                         capture_output=True, text=True, errors="replace")
    samples, frames, period = [], None, 0
    for line in res.stdout.splitlines():
        if line.startswith("\t"):
            parts = line.strip().split(None, 1)
            if frames is not None and len(parts) == 2:
                frames.append(parts[1].rsplit(" (", 1)[0])
        elif line.strip():
            if frames is not None:
                samples.append((period, frames))
            period, frames = int(line.split()[-1]), []
    if frames is not None:
        samples.append((period, frames))
    return samples


def perf_categories(samples) -> dict:
    """{category: ns}."""
    out = {label: 0 for label, _ in PROFILE_CATEGORIES}
    for period, frames in samples:
        fset = set(frames)
        for label, match in PROFILE_CATEGORIES:
            if match(fset):
                out[label] += period
                break
    return out


def perf_top(data: Path, count: int = 25) -> list[str]:
    res = subprocess.run(["perf", "report", "-i", str(data), "--stdio",
                          "--no-children", "--sort", "dso,sym", "-g", "none"],
                         capture_output=True, text=True, errors="replace")
    lines = [ln for ln in res.stdout.splitlines()
             if ln.strip() and not ln.startswith("#")]
    return lines[:count]


def profile(dc: DovecotInstance, slicings: list, out) -> None:
    """perf record -g on fts_lmdb's long-lived imap process while it
    serves every slice of part 2, then as many empty sessions; where the
    CPU goes, per session, into PROFILE_OUT."""
    import shutil
    import signal
    import tempfile
    if shutil.which("perf") is None:
        out("Profile: perf not found, skipped")
        return
    pids = settle(dc).imap_pids
    if len(pids) != 1:
        out(f"Profile: {len(pids)} imap processes, not one: skipped")
        return
    runs = [(f"{sl.kind} slices", sl.cmds) for sl in slicings]
    runs.insert(1, ("empty sessions", ["NOOP"] * len(slicings[0].cmds)))
    report = ["# perf record -e cpu-clock -F 4000 --call-graph dwarf on "
              "fts_lmdb's imap process (reused, service_count = 0)", ""]
    cats, tops, sessions = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="partial-perf-") as tmp:
        for name, cmds in runs:
            data = Path(tmp) / "perf.data"
            rec = subprocess.Popen(
                ["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000",
                 "--call-graph", "dwarf,16384", "-p", str(pids[0]),
                 "-o", str(data)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
            for cmd in cmds:
                session(dc, cmd)
            settle(dc)
            rec.send_signal(signal.SIGINT)
            rec.wait(120)
            cats[name] = perf_categories(perf_samples(data))
            tops[name] = perf_top(data)
            sessions[name] = len(cmds)
            data.unlink()
    names = [n for n, _ in runs]
    empty = "empty sessions"
    header = (f"{'ms of CPU per session':<68}" +
              "".join(f"{n.split()[0]:>12}" for n in names) +
              "".join(f"{'+' + n.split()[0]:>12}" for n in names
                      if n != empty))
    names_note = ("columns: " + ", ".join(
        f"{n.split()[0]}: {len(dict(runs)[n])} {n}" for n in names) +
        "; '+X': X minus empty")
    table = [header]
    for label, _ in PROFILE_CATEGORIES:
        per = {n: cats[n][label] / sessions[n] / 1e6 for n in names}
        table.append(f"{label:<68}" +
                     "".join(f"{per[n]:12.3f}" for n in names) +
                     "".join(f"{per[n] - per[empty]:12.3f}" for n in names
                             if n != empty))
    totals = {n: sum(cats[n].values()) / sessions[n] / 1e6 for n in names}
    table.append(f"{'total':<68}" +
                 "".join(f"{totals[n]:12.3f}" for n in names) +
                 "".join(f"{totals[n] - totals[empty]:12.3f}" for n in names
                         if n != empty))
    table.insert(0, names_note)
    report += ["Per session, by where on the call stack the samples are "
               "(first matching category).", ""] + table
    for n in names:
        report += ["", f"Top symbols, {n} (perf report --no-children):"]
        report += tops[n]
    PROFILE_OUT.parent.mkdir(parents=True, exist_ok=True)
    PROFILE_OUT.write_text("\n".join(report) + "\n")
    out()
    out(f"Profile of fts_lmdb's imap process (perf, reused processes; "
        f"whole report in {os.path.relpath(PROFILE_OUT, REPO)}):")
    out()
    for line in table:
        out("  " + line)


# ------------------------------------------------------------ LMDB sizes

def _drop_privileges():
    if os.geteuid() == 0:
        import pwd
        nobody = pwd.getpwnam("nobody")
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)


def mdb_stat(env: Path, *args: str) -> Optional[dict]:
    """mdb_stat's numbers as {"Page size": 4096, "Entries": 2, ...}, or
    None if it fails (e.g. no such database). Run as the mail user, like
    the mail processes, so no root-owned file can appear."""
    res = subprocess.run(["mdb_stat", *args, str(env)], capture_output=True,
                         text=True, preexec_fn=_drop_privileges, cwd="/")
    if res.returncode != 0:
        return None
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"^\s+([A-Za-z][A-Za-z ]*?):\s+(\d+)\s*$",
                        res.stdout, re.M)}


def index_sizes(dc: DovecotInstance) -> dict:
    env = index_dir(dc)
    info = mdb_stat(env, "-e") or {}
    parts = mdb_stat(env, "-e", "-s", "parts")
    psize = info.get("Page size", 4096)
    out = {"file": (env / "data.mdb").stat().st_size,
           "used": info.get("Number of pages used", 0) * psize,
           "psize": psize, "parts": None}
    if parts is not None:
        pages = (parts.get("Branch pages", 0) + parts.get("Leaf pages", 0) +
                 parts.get("Overflow pages", 0))
        out["parts"] = {"entries": parts.get("Entries", 0), "pages": pages,
                        "bytes": pages * psize}
    return out


# ------------------------------------------------------------ the bench

def fmt_ms(s: float) -> str:
    return f"{s * 1000:9.1f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:7.1f}x" if b > 0 else "      -"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=9,
                        help="fresh connections per timed fetch and side "
                             "(medians; default 9)")
    parser.add_argument("--attachment-mb", type=float, default=30,
                        help="decoded size of part 2 in MB (default 30)")
    parser.add_argument("--seed", type=int, default=40)
    parser.add_argument("--cpu-repeat", type=int, default=5,
                        help="runs of the whole attachment in slices with "
                             "reused processes (medians; default 5)")
    parser.add_argument("--stock-cpu-repeat", type=int, default=3,
                        help="of those, how many stock takes part in "
                             "(default 3; each takes minutes)")
    parser.add_argument("--cpu-block", type=int, default=50,
                        help="empty and slice sessions alternate in blocks "
                             "of this many (default 50)")
    parser.add_argument("--profile", action="store_true",
                        help="perf record the fts_lmdb imap process serving "
                             "the slices (needs perf)")
    parser.add_argument("--output", default=str(OUT.relative_to(REPO)),
                        help="where the table goes, relative to the repository")
    args = parser.parse_args()

    why = backend_available("lmdb")
    if why:
        raise SystemExit(f"fts_lmdb can't run: {why}")

    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    started = time.perf_counter()
    script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO)
    version = subprocess.run(["dovecot", "--version"], capture_output=True,
                             text=True).stdout.strip()
    out("# " + shlex.join(["/usr/bin/python3", script, *sys.argv[1:]]))
    out(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
        f"Dovecot {version}")

    attachment = int(args.attachment_mb * 1_000_000)
    log(f"generating the message (seed {args.seed}) ...")
    raw = big_message(args.seed, attachment)

    sides: dict[str, DovecotInstance] = {}
    try:
        for kind in ("stock", "lmdb", "lmdb-off"):
            sides[kind] = start(kind)
        for kind, dc in sides.items():
            t = time.perf_counter()
            dc.deliver(USER, raw)
            log(f"  {kind}: delivered {len(raw) / 1e6:.1f} MB over LMTP in "
                f"{time.perf_counter() - t:.1f} s")
        index_s = {}
        for kind in ("lmdb", "lmdb-off"):
            t = time.perf_counter()
            res = sides[kind].doveadm("index", "-u", USER, "INBOX", timeout=600)
            index_s[kind] = time.perf_counter() - t
            if res.returncode != 0:
                raise SystemExit(f"doveadm index on {kind} failed: {res.stderr}")
            log(f"  {kind}: indexed in {index_s[kind]:.1f} s")
        run(sides, raw, attachment, index_s, args, out)
    finally:
        for dc in sides.values():
            dc.stop()
    out()
    out(f"# whole run: {(time.perf_counter() - started) / 60:.1f} min")
    output = REPO / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {args.output}")


def run(sides: dict, raw: bytes, attachment: int, index_s: dict, args,
        out) -> None:
    stock, lmdb = sides["stock"], sides["lmdb"]
    pair = {"stock": stock, "lmdb": lmdb}
    checker = Checker()

    # The first BINARY.SIZE ever: stock decodes the whole message, then
    # keeps the sizes in its cache file (binary.parts), so later ones on
    # any connection are cheap.
    first = {}
    for name, dc in pair.items():
        reply, f, c = session(dc, "FETCH 1 BINARY.SIZE[2]")
        first[name] = (reply, f, c)
    checker.check("FETCH 1 BINARY.SIZE[2] (first)", first["stock"][0],
                  first["lmdb"][0])

    # what stock says part 2 is
    r, _, _ = session(stock, "FETCH 1 (BODYSTRUCTURE BINARY.SIZE[2])")
    items = parse_fetch(r.fetch_data()[0])
    encoded = items[b"BODYSTRUCTURE"][1][6]      # part 2's body octets
    decoded = items[b"BINARY.SIZE[2]"]
    if decoded != attachment:
        raise SystemExit(f"stock says part 2 decodes to {decoded} bytes, "
                         f"the generator wrote {attachment}")
    stored = mail_file(stock).stat().st_size
    out()
    out(f"message: {len(raw) / 1e6:.1f} MB generated, stored by LMTP as "
        f"{stored / 1e6:.1f} MB (LF line ends); part 2: {decoded / 1e6:.1f} MB "
        f"decoded, {encoded / 1e6:.1f} MB of base64 in 76-character lines")
    out(f"fts_lmdb: `doveadm index` took {index_s['lmdb']:.1f} s "
        f"({index_s['lmdb-off']:.1f} s with fts_lmdb_partial_fetch = no)")

    # warm-up: page cache, cache files, process pools
    for dc in pair.values():
        for _ in range(3):
            session(dc, "FETCH 1 (BODY.PEEK[2]<0.100> BINARY.PEEK[2]<0.100>)")

    log("timed slices ...")
    plan = []
    for where, frac in (("start", 0.0), ("middle", 0.5), ("end", 1.0)):
        o_body = min(int(encoded * frac), encoded - SLICE)
        o_bin = min(int(decoded * frac), decoded - SLICE)
        plan.append((f"BODY.PEEK[2]<{o_body}.{SLICE}>", f"BODY.PEEK {where}"))
        plan.append((f"BINARY.PEEK[2]<{o_bin}.{SLICE}>", f"BINARY.PEEK {where}"))
    plan.sort(key=lambda p: not p[1].startswith("BODY"))
    plan.append(("BINARY.SIZE[2]", "BINARY.SIZE"))
    results = []
    for item, label in plan:
        results.append((item, label, timed(pair, f"FETCH 1 {item}",
                                           args.repeat, checker)))
        log(f"  {item}: done")

    out()
    out(f"Fresh connection per fetch, median of {args.repeat}; FETCH: the "
        "FETCH command alone, conn: connect to LOGOUT (ms). ratio: stock / "
        "fts_lmdb.")
    out()
    out(f"{'fetch':<33}{'stock FETCH':>12}{'lmdb FETCH':>12}{'ratio':>9}"
        f"{'stock conn':>12}{'lmdb conn':>12}{'ratio':>9}")
    for item, label, res in results:
        sf, sc = res["stock"]
        lf, lc = res["lmdb"]
        out(f"{item:<33}{fmt_ms(sf):>12}{fmt_ms(lf):>12}{ratio(sf, lf):>9}"
            f"{fmt_ms(sc):>12}{fmt_ms(lc):>12}{ratio(sc, lc):>9}")
    (_, sf, sc), (_, lf, lc) = first["stock"], first["lmdb"]
    item = "BINARY.SIZE[2], first (1 run)"
    out(f"{item:<33}{fmt_ms(sf):>12}{fmt_ms(lf):>12}{ratio(sf, lf):>9}"
        f"{fmt_ms(sc):>12}{fmt_ms(lc):>12}{ratio(sc, lc):>9}")
    out("  (stock computes BINARY.SIZE by decoding the whole message once and "
        "keeps the result in its cache file; the timed BINARY.SIZE rows above "
        "come after that)")

    # ---------------------------------------------------------- CPU
    slicings = [Slicing("BINARY", decoded), Slicing("BODY", encoded)]
    out()
    out("Server CPU of fetching all of part 2 in 64 KiB slices, a connection "
        "each, against one fetch of the whole part. ms of CPU of the imap "
        "and imap-login processes. FETCH increment: a session with the "
        "FETCH minus an empty session (LOGIN, SELECT, NOOP, LOGOUT); slice "
        "sessions, empty ones and a whole fetch alternate in blocks. The "
        "target: all slices' increment at most 1.05x the whole fetch's.")

    log("server CPU, a new process per connection: slices and empty "
        "sessions (stock takes a while) ...")
    ref: dict[str, Reply] = {}
    default_runs = {}
    for sl in slicings:
        default_runs[sl.kind] = [cpu_run(pair, sl, args.cpu_block, checker,
                                         ref)]
        log(f"  {sl.label}: done")
    joined = {sl.kind: slicing_joined_ok(sl, ref) for sl in slicings}
    cpu_table(out, "A new process per connection (service_count = 1, "
              "Dovecot's default); CPU as the master's cutime + cstime "
              f"(clock ticks of {1000 / CLK_TCK:.0f} ms) grow, "
              f"blocks of {args.cpu_block} sessions; 1 run:", slicings, default_runs)

    log("server CPU, reused processes ...")
    for dc in pair.values():
        use_services(dc, REUSE_CONF)
        for sl in slicings:
            for cmd in sl.cmds[::max(1, len(sl.cmds) // 8)]:
                session(dc, cmd)
        session(dc, "NOOP")
    reuse_runs = {sl.kind: [] for sl in slicings}
    for r in range(args.cpu_repeat):
        run_sides = pair if r < args.stock_cpu_repeat else {"lmdb": lmdb}
        for sl in slicings:
            reuse_runs[sl.kind].append(
                cpu_run(run_sides, sl, args.cpu_block, checker, ref))
        log(f"  run {r + 1}/{args.cpu_repeat}: done")
    summary = cpu_table(
        out, "Reused processes (service_count = 0: one long-lived imap and "
        "one imap-login process); CPU from /proc/<pid>/schedstat (ns), "
        f"blocks of {args.cpu_block} sessions; medians of "
        f"{args.cpu_repeat} runs (stock: {args.stock_cpu_repeat}):",
        slicings, reuse_runs)
    out()
    for sl in slicings:
        lm = summary[sl.kind]["lmdb"]
        verdict = "met" if lm["ratio"] <= 1.05 else "NOT met"
        out(f"Target for {sl.label} (reused processes): all slices' FETCH "
            f"CPU {lm['inc_all_slices']:.1f} ms against "
            f"{lm['inc_whole']:.1f} ms for the whole fetch, "
            f"{lm['ratio']:.3f}x: {verdict}")
    for sl in slicings:
        out(f"  the {len(sl.cmds)} {sl.kind} slices put together "
            f"{'equal' if joined[sl.kind] else 'DO NOT equal'} stock's whole "
            f"{sl.kind}[2]")

    if args.profile:
        log("profile ...")
        profile(lmdb, slicings, out)

    # ---------------------------------------------------------- sizes
    on, off = index_sizes(lmdb), index_sizes(sides["lmdb-off"])
    out()
    out("Index size:")
    if on["parts"] is None:
        out("  'parts' database: none (mdb_stat -s parts found no such database)")
    else:
        p = on["parts"]
        out(f"  'parts' database: {p['entries']} entries, {p['pages']} pages "
            f"of {on['psize']} B = {p['bytes'] / 1024:.1f} KiB, "
            f"{p['bytes'] / stored * 100:.4f}% of the stored mail")
    out(f"  whole environment, fts_lmdb_partial_fetch = yes: "
        f"{on['used'] / 1024:.0f} KiB in use, data.mdb {on['file'] / 1024:.0f} KiB")
    out(f"  whole environment, fts_lmdb_partial_fetch = no:  "
        f"{off['used'] / 1024:.0f} KiB in use, data.mdb {off['file'] / 1024:.0f} KiB")

    # ---------------------------------------------------------- checks
    out()
    if checker.differences:
        out(f"Correctness: {len(checker.differences)} of {checker.count} "
            "fts_lmdb answers differ from stock's:")
        for d in checker.differences[:10]:
            out("  " + d[:300])
    else:
        out(f"Correctness: all {checker.count} fts_lmdb answers equal to "
            "stock's, byte for byte.")
    out(fast_path_check(lmdb, encoded, decoded))


def fast_path_check(dc: DovecotInstance, encoded: int, decoded: int) -> str:
    """Switch mail_debug on and see which path fetches take."""
    dc.debug = True
    dc.reload()
    mark = dc.log_mark()
    cmds = {"partial fetch from index": f"BINARY.PEEK[2]<{decoded // 2}.{SLICE}>",
            "partial size from index": "BINARY.SIZE[2]",
            "partial seek from index": f"BODY.PEEK[2]<{encoded // 2}.{SLICE}>"}
    seen = []
    for needle, item in cmds.items():
        start = dc.log_mark()
        session(dc, f"FETCH 1 {item}")
        try:
            dc.wait_for_log(re.escape(needle), 5, start)
            seen.append(f"{item}: {needle}")
        except TimeoutError:
            seen.append(f"{item}: NOT served from the index")
    fallbacks = [ln for ln in dc.log_text()[mark:].splitlines()
                 if "partial fetch fallback" in ln]
    text = "Fast path (mail_debug, after the run): " + "; ".join(seen)
    if fallbacks:
        text += f"\n  fallback: {fallbacks[0].split('Debug: ')[-1]}"
    return text


if __name__ == "__main__":
    main()
