#!/usr/bin/python3
"""make bench: side-by-side measurements, one run, ratios and medians.

access_rules:
  1. the cost of evaluating one session against 1, 100 and 10,000 rules
     (build/bench-access-rules, in process);
  2. login-to-SELECT latency on a real Dovecot, users with the plugin
     against users without it on the same instance (userdb sets each
     user's mail_plugins and rules file), requests interleaved.

leave_on_server:
  3. the check-for-new-mail POP3 session (STAT, UIDL, QUIT) with 10 new
     messages among 6,000 and 100,000 kept ones, against stock Dovecot
     keeping the same mail (bench/leave_on_server.py).
fts_lmdb:
  4. index build time, index size and search latency p50/p95 over the
     query set, with every answer compared with stock Dovecot's, for
     stock, fts-lucene, fts-xapian and fts_lmdb side by side
     (bench/fts.py; its own table goes to build/bench/fts-results.txt).
  5. partial fetch of a 30 MB attachment in a 40 MB message, stock
     against fts_lmdb: 64 KiB BODY/BINARY slices and BINARY.SIZE on fresh
     connections; the server CPU that fetching the whole attachment in
     slices, a connection each, adds over empty sessions, against one
     whole fetch (reused imap processes read from /proc/<pid>/schedstat,
     and a process per connection); size of the part maps
     (bench/partial.py; its table goes to build/bench/partial-results.txt;
     --partial-args --profile adds a perf profile of the slices).

Results are printed and written to build/bench/results.txt. Nothing here is
a pass/fail test: machines are noisy, so compare the ratios.
"""

import argparse
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from dovecot_instance import DovecotInstance  # noqa: E402
import leave_on_server as bench_leave_on_server  # noqa: E402

OUT = REPO / "build" / "bench" / "results.txt"


def rules_file(count, check_user):
    """A rules file of `count` rules in the shape admins write: per-user
    and per-network rules, ending with catch-alls. The benchmark users
    fall through all of them to the last allow; check_user is refused
    by the first, to show that the plugin is in the timed path."""
    lines = []
    for i in range(count - 2):
        if i % 2 == 0:
            lines.append(f"deny user user{i}@example.com reason \"r{i}\"")
        else:
            lines.append(f"readonly from 10.{(i // 256) % 256}.{i % 256}.0/24")
    lines.append("deny protocol pop3 from !127.0.0.0/8")
    lines.append("allow tls no")
    return (f"deny user {check_user} reason \"bench check\"\n"
            + "\n".join(lines) + "\n")


def login_select(port, user):
    """Seconds from connect to the tagged OK of SELECT INBOX."""
    start = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(f"a LOGIN {user} secret\r\nb SELECT INBOX\r\n".encode())
    while True:
        line = reader.readline()
        if not line:
            raise SystemExit(f"bench: {user}: the server closed the "
                             "connection before SELECT's OK (see its log)")
        if line.startswith(b"b OK"):
            break
    elapsed = time.perf_counter() - start
    sock.sendall(b"c LOGOUT\r\n")
    reader.close()
    sock.close()
    return elapsed


def percentile(values, pct):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


# Dovecot's default starts a new imap process for every login; a busy
# server often lets one process serve login after login instead.
REUSE_CONF = """service imap {
  service_count = 0
  process_min_avail = 1
}
"""
NOOP_DIR = REPO / "build" / "bench-noop"
# access_rules and the no-op module side by side, for one instance
PLUGINS_DIR = REPO / "build" / "bench-plugins"

# Every side is a user of one Dovecot instance. The userdb gives each
# its own mail_plugins and rules file (userdb fields override settings,
# and unknown ones are plugin settings), so that the sides share one
# master, one auth process and one imap service and differ only in the
# plugin. (Earlier runs used an instance per side: 13 instances on 2
# cores, and two identical stock instances differed by up to 1.3%.)
# (side, user, mail_plugins, rule count, compiled, baseline, own dir).
# "own dir": the user's mail_plugin_dir holds only the plugins it loads,
# instead of Dovecot's module dir (42 files on Debian), which Dovecot's
# loader lists and matches file by file when mail_plugins is not empty.
SIDES = [
    ("no plugin", "plain", "", 0, False, None, False),
    ("no plugin, 2nd user", "plain2", "", 0, False, "no plugin", False),
    ("no-op module", "noop", "bench_noop", 0, False, "no plugin", False),
    ("rules 3 text", "r3", "access_rules", 3, False, "no plugin", False),
    ("rules 100 text", "r100", "access_rules", 100, False, "no plugin",
     False),
    ("rules 10k text", "r10kt", "access_rules", 10000, False, "no plugin",
     False),
    ("rules 10k compiled", "r10kc", "access_rules", 10000, True,
     "no plugin", False),
    ("no-op module, own dir", "noopd", "bench_noop", 0, False, "no plugin",
     True),
    ("rules 3 text, own dir", "r3d", "access_rules", 3, False, "no plugin",
     True),
]
REUSED_SIDES = ["no plugin", "no plugin, 2nd user", "rules 3 text",
                "rules 10k compiled"]
INSTRUCTION_SIDES = ["no plugin", "no-op module", "rules 3 text",
                     "rules 10k compiled", "no-op module, own dir",
                     "rules 3 text, own dir"]


def _plugins_dir():
    PLUGINS_DIR.mkdir(parents=True, exist_ok=True)
    for so in list(REPO.glob("build/lib*_access_rules_plugin.so")) + \
            list(NOOP_DIR.glob("lib*_plugin.so")):
        link = PLUGINS_DIR / so.name
        if not link.exists():
            link.symlink_to(so)
    return PLUGINS_DIR


def start_sides(sides, extra_conf=""):
    """One instance with a user per side (and a refused user per rules
    file), checked to refuse the latter before anything is timed."""
    users, checks = [], []
    for name, user, plugins, count, compiled, _, own_dir in sides:
        fields = {}
        if plugins:
            fields["mail_plugins"] = plugins
        if own_dir:
            fields["mail_plugin_dir"] = str(_plugins_dir())
        if count:
            fields["access_rules_file"] = f"@{user}"
            checks.append(f"check{user}")
            users.append({"name": f"check{user}", "fields": dict(fields)})
        users.append({"name": user, "fields": fields})
    dc = DovecotInstance(plugin_dir=_plugins_dir(), users=users,
                         extra_conf=extra_conf)
    dc.start()
    for name, user, plugins, count, compiled, _, _ in sides:
        if not count:
            continue
        path = dc.write_file(f"rules-{user}.conf",
                             rules_file(count, f"check{user}"))
        if compiled:
            subprocess.run([str(REPO / "build" / "access-rules"), "compile",
                            path], check=True, capture_output=True)
        for u in dc.users:
            if u["fields"].get("access_rules_file") == f"@{user}":
                u["fields"]["access_rules_file"] = str(path)
    dc.reload()
    time.sleep(1)
    # make sure the plugin is really in the path being timed
    for check in checks:
        try:
            dc.imap(check).noop()
            raise SystemExit(f"bench: access_rules did not refuse {check}; "
                             "the plugin is not active")
        except Exception as e:
            if "bench check" not in str(e):
                raise
    return dc


def bench_login_select(rounds, report):
    default = start_sides(SIDES)
    reused = None
    try:
        reused = start_sides([s for s in SIDES if s[0] in REUSED_SIDES],
                             extra_conf=REUSE_CONF)
        plan = [(dc, label, side) for dc, label, sides in
                ((default, "", SIDES),
                 (reused, "reused: ", [s for s in SIDES
                                       if s[0] in REUSED_SIDES]))
                for side in sides]
        for dc, _, side in plan:
            for _ in range(20):  # warm up caches and the process pools
                login_select(dc.imap_port, side[1])
        times = [[] for _ in plan]
        rng = random.Random(1993)
        for _ in range(rounds):
            # a new order every round: drift hits all sides equally, and
            # no side always follows the same one (a rotation timed the
            # side after "rules 10k text" while that 30 ms process was
            # still exiting)
            order = list(range(len(plan)))
            rng.shuffle(order)
            for j in order:
                dc, _, side = plan[j]
                times[j].append(login_select(dc.imap_port, side[1]))
        med = {label + side[0]: statistics.median(t) * 1000
               for (_, label, side), t in zip(plan, times)}
        p95 = {label + side[0]: percentile(t, 95) * 1000
               for (_, label, side), t in zip(plan, times)}
        report(f"login-to-SELECT, {rounds} interleaved rounds, one instance "
               "per process model, a user per side:")
        for _, label, side in plan:
            name = label + side[0]
            base = None if side[5] is None else label + side[5]
            ratio = "" if base is None else \
                f"   vs {base}: {(med[name] / med[base] - 1) * 100:+.1f}%"
            report(f"  {name:<29} median {med[name]:7.3f} ms   "
                   f"p95 {p95[name]:7.3f} ms{ratio}")
        report("  (a new imap process per login, Dovecot's default; reused: "
               "one imap process serves login after login, "
               "service_count = 0)")
    finally:
        default.stop()
        if reused is not None:
            reused.stop()


# Instruction counts, which a noisy machine doesn't change: the imap and
# imap-login processes of each login run under callgrind (wrappers that
# the instance's services execute), one login at a time.
CALLGRIND_DIR = REPO / "build" / "bench" / "callgrind"
WRAPPER = """#!/bin/sh
# callgrind writes at exit, after the process dropped its privileges
out={dir}/{name}.$$
: > "$out" && chmod 666 "$out"
exec valgrind -q --tool=callgrind --callgrind-out-file="$out" \\
  {binary} "$@"
"""


def _callgrind_conf():
    CALLGRIND_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(CALLGRIND_DIR, 0o1777)
    conf = ""
    for name in ("imap", "imap-login"):
        wrapper = CALLGRIND_DIR / f"{name}.sh"
        wrapper.write_text(WRAPPER.format(
            dir=CALLGRIND_DIR, name=name,
            binary=Path("/usr/lib/dovecot") / name))
        wrapper.chmod(0o755)
        # valgrind's address space is over the default vsz_limit, and
        # a chrooted imap-login couldn't write its counts
        conf += (f"service {name} {{\n  executable = {wrapper}\n"
                 f"  vsz_limit = 0\n"
                 + ("  chroot =\n" if name == "imap-login" else "")
                 + "}\n")
    return conf


def _callgrind_totals(before, timeout=60):
    """The instruction totals of the imap and imap-login processes that
    appeared since `before`, once both have exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        totals = {}
        for f in set(CALLGRIND_DIR.iterdir()) - before:
            if f.suffix == ".sh":
                continue
            for line in f.read_text().splitlines():
                if line.startswith("summary:"):
                    totals[f.name.rsplit(".", 1)[0]] = int(line.split()[1])
        if len(totals) == 2:
            return totals
        time.sleep(0.05)
    raise SystemExit("bench: callgrind counts of a login did not appear in "
                     f"{CALLGRIND_DIR.relative_to(REPO)}")


def bench_instructions(rounds, report):
    sides = [s for s in SIDES if s[0] in INSTRUCTION_SIDES]
    for f in CALLGRIND_DIR.glob("*"):
        f.unlink()
    dc = start_sides(sides, extra_conf=_callgrind_conf())
    try:
        counts = {s[0]: {"imap": [], "imap-login": []} for s in sides}
        for side in sides:
            # the first logins of a user create its mailbox and index
            # files; the counts are the same from the fourth on
            for i in range(rounds + 3):
                before = set(CALLGRIND_DIR.iterdir())
                login_select(dc.imap_port, side[1])
                totals = _callgrind_totals(before)
                if i >= 3:
                    for name, n in totals.items():
                        counts[side[0]][name].append(n)
    finally:
        dc.stop()
    med = {side: {name: statistics.median(v) for name, v in c.items()}
           for side, c in counts.items()}
    base = med["no plugin"]
    login = base["imap"] + base["imap-login"]
    report(f"instructions per login (callgrind, median of {rounds}; "
           "the imap and imap-login processes):")
    for side in counts:
        m = med[side]
        extra = m["imap"] - base["imap"]
        report(f"  {side:<24} imap {m['imap']:>10,.0f}   imap-login "
               f"{m['imap-login']:>11,.0f}   imap {extra:+9,.0f} = "
               f"{extra / login * 100:+.2f}% of both")
    report("  (not counted: the kernel's work, and the long-lived master "
           "and auth processes)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--instruction-rounds", type=int, default=5,
                        help="logins per side counted under callgrind "
                             "(0: skip)")
    parser.add_argument("--pop3-sizes", default="6000,100000",
                        help="kept messages for the leave_on_server bench")
    parser.add_argument("--pop3-rounds", type=int, default=30)
    parser.add_argument("--pop3-deployments", default="default,tuned",
                        help="default (Maildir, a process per session) "
                             "and/or tuned (sdbox, reused processes)")
    parser.add_argument("--fts-args", default="--sizes full",
                        help="arguments for bench/fts.py, e.g. "
                             "'--sizes full,100000 --skip xapian@100000'")
    parser.add_argument("--partial-args", default="",
                        help="arguments for bench/partial.py, e.g. "
                             "'--repeat 15 --attachment-mb 30'")
    parser.add_argument("--only",
                        choices=["access_rules", "leave_on_server", "fts",
                                 "partial"])
    args = parser.parse_args()

    OUT.parent.mkdir(parents=True, exist_ok=True)
    lines = []

    def report(line=""):
        print(line, flush=True)
        lines.append(line)

    report(f"# make bench, {time.strftime('%Y-%m-%d %H:%M:%S')}, "
           f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores")
    if args.only in (None, "access_rules"):
        report()
        report("## access_rules: evaluating one session (build/bench-access-rules)")
        out = subprocess.run([str(REPO / "build" / "bench-access-rules")],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            report("  " + line)
        report()
        report("## access_rules: login-to-SELECT, stock Dovecot vs with the plugin")
        bench_login_select(args.rounds, report)
        if args.instruction_rounds > 0:
            report()
            report("## access_rules: instructions per login, stock Dovecot "
                   "vs with the plugin")
            bench_instructions(args.instruction_rounds, report)
    if args.only in (None, "leave_on_server"):
        report()
        report("## leave_on_server: check for new mail (login, STAT, UIDL, QUIT)")
        bench_leave_on_server.bench(
            [int(n) for n in args.pop3_sizes.split(",")], args.pop3_rounds,
            report, args.pop3_deployments.split(","))
    def run_script(title, script, script_args):
        report()
        report(title)
        out = subprocess.run([sys.executable, str(REPO / "bench" / script),
                              *shlex.split(script_args)],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
        for line in out.splitlines():
            report("  " + line)

    if args.only in (None, "fts"):
        run_script("## fts: stock vs fts-lucene vs fts-xapian vs fts_lmdb (bench/fts.py)",
                   "fts.py", args.fts_args)
    if args.only in (None, "partial"):
        run_script("## fts_lmdb partial fetch: stock vs fts_lmdb (bench/partial.py)",
                   "partial.py", args.partial_args)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
