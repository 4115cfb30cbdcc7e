#!/usr/bin/python3
"""Partial fetch of a large attachment: stock Dovecot against fts_lmdb.

    /usr/bin/python3 bench/partial.py [--repeat 9] [--attachment-mb 30]

One generated (seeded) message of about 40 MB: part 1 a text part, part 2
an attachment of 30 MB of random bytes as base64 in 76-character lines.
It is delivered over LMTP (so it is stored as Dovecot stores delivered
mail, with LF line ends) to two instances running at once: stock Dovecot
and Dovecot with fts_lmdb (fts = lmdb, fts_lmdb_partial_fetch at its
default), which `doveadm index` then indexes. A third, fts_lmdb with
fts_lmdb_partial_fetch = no, only serves the index size comparison.

Measured, stock and fts_lmdb side by side, each fetch on a fresh
connection (connect, LOGIN, SELECT, FETCH, LOGOUT; with Dovecot's default
service_count = 1, set explicitly here, that is a new imap process each
time), as medians of --repeat runs, with the two instances interleaved:
  * 64 KiB slices at the start, middle and end of part 2, with
    BODY.PEEK[2]<o.65536> and BINARY.PEEK[2]<o.65536>: the FETCH command
    alone and the whole connection;
  * BINARY.SIZE[2];
  * the server CPU to fetch the whole attachment in 64 KiB BINARY.PEEK
    slices, one connection each, against one BINARY.PEEK[2] of the whole
    part. Server CPU is what the master's cutime + cstime
    (/proc/<master>/stat) grow by: the imap and imap-login processes are
    its children and are added when it reaps them, so every reading waits
    until no such child (not even a zombie) is left;
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

# Both instances get the same services. service_count = 1 (Dovecot's
# default, set explicitly because the CPU accounting depends on it): one
# connection per imap and imap-login process, so each exits, and is
# reaped by the master, after its session.
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

def _children(master: int, names: tuple[str, ...]) -> list[int]:
    """Children of `master` whose command name is in `names`, zombies
    included (their CPU time reaches the master only when reaped)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == master and comm in names:
            out.append(int(entry.name))
    return out


def wait_reaped(dc: DovecotInstance, timeout: float = 60) -> None:
    master = dc.proc.pid
    deadline = time.monotonic() + timeout
    while _children(master, ("imap", "imap-login")):
        if time.monotonic() > deadline:
            raise SystemExit(f"imap processes of {dc.instance_name} still "
                             f"there after {timeout}s")
        time.sleep(0.02)


def children_cpu(dc: DovecotInstance) -> float:
    """Seconds of CPU of the master's reaped children (cutime + cstime),
    read once every imap/imap-login process is gone."""
    wait_reaped(dc)
    stat = Path(f"/proc/{dc.proc.pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


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
    log("server CPU: empty sessions ...")
    empty = 20
    cpu_empty = {}
    for name, dc in pair.items():
        before = children_cpu(dc)
        for _ in range(empty):
            session(dc, "NOOP")
        cpu_empty[name] = (children_cpu(dc) - before) / empty

    log("server CPU: one whole BINARY.PEEK[2] ...")
    cpu_full, wall_full, full = {}, {}, {}
    for name, dc in pair.items():
        before = children_cpu(dc)
        full[name], _, wall_full[name] = session(dc, "FETCH 1 BINARY.PEEK[2]")
        cpu_full[name] = children_cpu(dc) - before
    checker.check("FETCH 1 BINARY.PEEK[2]", full["stock"], full["lmdb"])
    whole = fetched_value(full["stock"], b"BINARY[2]")

    offsets = list(range(0, decoded, SLICE))
    log(f"server CPU: the attachment in {len(offsets)} slices, one "
        "connection each (stock takes a while) ...")
    cpu_slices, wall_slices = {}, {n: 0.0 for n in pair}
    before = {n: children_cpu(dc) for n, dc in pair.items()}
    pieces = []
    for i, o in enumerate(offsets):
        cmd = f"FETCH 1 BINARY.PEEK[2]<{o}.{SLICE}>"
        replies = {}
        for name, dc in pair.items():
            replies[name], _, wall = session(dc, cmd)
            wall_slices[name] += wall
        checker.check(cmd, replies["stock"], replies["lmdb"])
        pieces.append(fetched_value(replies["stock"], b"BINARY[2]") or b"")
        if i % 100 == 99:
            log(f"  {i + 1}/{len(offsets)}")
    for name, dc in pair.items():
        cpu_slices[name] = children_cpu(dc) - before[name]
    joined_ok = b"".join(pieces) == whole and whole is not None and \
        len(whole) == decoded

    out()
    out("Server CPU (imap and imap-login processes, as the dovecot master's "
        "cutime + cstime grow when it reaps them; s):")
    out()
    out(f"{'':<52}{'stock':>9}{'lmdb':>9}{'ratio':>9}")
    out(f"{'empty session (LOGIN, SELECT, NOOP, LOGOUT), each':<52}"
        f"{cpu_empty['stock']:9.3f}{cpu_empty['lmdb']:9.3f}"
        f"{ratio(cpu_empty['stock'], cpu_empty['lmdb']):>9}")
    out(f"{'one BINARY.PEEK[2] (whole part), CPU':<52}"
        f"{cpu_full['stock']:9.2f}{cpu_full['lmdb']:9.2f}"
        f"{ratio(cpu_full['stock'], cpu_full['lmdb']):>9}")
    out(f"{'  wall (connect to LOGOUT)':<52}"
        f"{wall_full['stock']:9.2f}{wall_full['lmdb']:9.2f}"
        f"{ratio(wall_full['stock'], wall_full['lmdb']):>9}")
    label = f"{len(offsets)} x BINARY.PEEK[2]<o.{SLICE}>, a connection each"
    out(f"{label + ', CPU':<52}"
        f"{cpu_slices['stock']:9.2f}{cpu_slices['lmdb']:9.2f}"
        f"{ratio(cpu_slices['stock'], cpu_slices['lmdb']):>9}")
    out(f"{'  wall, all connections':<52}"
        f"{wall_slices['stock']:9.2f}{wall_slices['lmdb']:9.2f}"
        f"{ratio(wall_slices['stock'], wall_slices['lmdb']):>9}")
    out(f"{'  slices / one whole fetch, CPU':<52}"
        f"{cpu_slices['stock'] / max(cpu_full['stock'], 1e-9):8.1f}x"
        f"{cpu_slices['lmdb'] / max(cpu_full['lmdb'], 1e-9):8.1f}x")
    if min(cpu_full.values()) <= 0:
        out("  ! a whole-part fetch showed no CPU: the accounting did not "
            "work (are imap processes reaped by the master?)")
    out(f"  (clock ticks of {1000 / CLK_TCK:.0f} ms; the slices put together "
        f"{'equal' if joined_ok else 'DO NOT equal'} stock's whole BINARY[2])")

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
