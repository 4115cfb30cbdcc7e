#!/usr/bin/python3
"""make bench: side-by-side measurements, one run, ratios and medians.

access_rules:
  1. the cost of evaluating one session against 1, 100 and 10,000 rules
     (build/bench-access-rules, in process);
  2. login-to-SELECT latency on a real Dovecot with the plugin against the
     same Dovecot without it, both running at once, requests interleaved.

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


def rules_file(count):
    """A rules file of `count` rules in the shape admins write: per-user
    and per-network rules, ending with catch-alls. The benchmark user
    falls through all of them to the last allow."""
    lines = []
    for i in range(count - 2):
        if i % 2 == 0:
            lines.append(f"deny user user{i}@example.com reason \"r{i}\"")
        else:
            lines.append(f"readonly from 10.{(i // 256) % 256}.{i % 256}.0/24")
    lines.append("deny protocol pop3 from !127.0.0.0/8")
    lines.append("allow tls no")
    return "deny user mallory reason \"bench check\"\n" + "\n".join(lines) + "\n"


def login_select(port):
    """Seconds from connect to the tagged OK of SELECT INBOX."""
    start = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(b"a LOGIN alice secret\r\nb SELECT INBOX\r\n")
    while not reader.readline().startswith(b"b OK"):
        pass
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


def start_plugged(rule_count, compiled, other_plugins="", extra_conf=""):
    dc = DovecotInstance(mail_plugins=f"{other_plugins} access_rules".strip(),
                         users=["alice", "mallory"],
                         extra_conf=extra_conf).start()
    path = dc.write_file("rules.conf", rules_file(rule_count))
    if compiled:
        subprocess.run([str(REPO / "build" / "access-rules"), "compile", path],
                       check=True, capture_output=True)
    dc.plugin_settings = {"access_rules_file": path}
    dc.reload()
    time.sleep(1)
    # make sure the plugin is really in the path being timed
    try:
        dc.imap("mallory").noop()
        raise SystemExit("bench: access_rules did not refuse mallory; "
                         "the plugin is not active")
    except Exception as e:
        if "bench check" not in str(e):
            raise
    return dc


def bench_login_select(rounds, report):
    # (name, baseline it is compared with)
    plan = [("stock", None), ("stock, 2nd instance", "stock"),
            ("no-op module", "stock"),
            ("rules 3 text", "stock"), ("rules 3 text", "no-op module"),
            ("rules 100 text", "stock"),
            ("rules 10k text", "stock"), ("rules 10k compiled", "stock"),
            ("quota", None), ("quota + rules 10k compiled", "quota"),
            ("reused: stock", None), ("reused: rules 3 text", "reused: stock"),
            ("reused: rules 10k compiled", "reused: stock")]
    # every side has the same users, so that only the plugin differs
    sides = {"stock": DovecotInstance(users=["alice", "mallory"]).start()}
    try:
        # the same stock server twice: what two instances differ by with
        # no plugin at all is the resolution of every other comparison
        sides["stock, 2nd instance"] = DovecotInstance(
            users=["alice", "mallory"]).start()
        sides["no-op module"] = DovecotInstance(
            plugin_dir=NOOP_DIR, mail_plugins="bench_noop",
            users=["alice", "mallory"]).start()
        sides["rules 3 text"] = start_plugged(3, False)
        sides["rules 100 text"] = start_plugged(100, False)
        sides["rules 10k text"] = start_plugged(10000, False)
        sides["rules 10k compiled"] = start_plugged(10000, True)
        sides["quota"] = DovecotInstance(mail_plugins="quota",
                                         users=["alice", "mallory"]).start()
        sides["quota + rules 10k compiled"] = start_plugged(10000, True, "quota")
        sides["reused: stock"] = DovecotInstance(
            users=["alice", "mallory"], extra_conf=REUSE_CONF).start()
        sides["reused: rules 3 text"] = start_plugged(
            3, False, extra_conf=REUSE_CONF)
        sides["reused: rules 10k compiled"] = start_plugged(
            10000, True, extra_conf=REUSE_CONF)
        for dc in sides.values():
            for _ in range(20):  # warm up caches and the process pools
                login_select(dc.imap_port)
        times = {name: [] for name in sides}
        names = list(sides)
        for i in range(rounds):
            # rotate which side goes first, so drift hits all equally
            for name in names[i % len(names):] + names[:i % len(names)]:
                times[name].append(login_select(sides[name].imap_port))
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        p95 = {k: percentile(v, 95) * 1000 for k, v in times.items()}
        report(f"login-to-SELECT, {rounds} interleaved rounds (one new imap "
               "process per login, Dovecot's default):")
        for name, baseline in plan:
            ratio = "" if baseline is None else \
                f"   vs {baseline}: {(med[name] / med[baseline] - 1) * 100:+.1f}%"
            report(f"  {name:<27} median {med[name]:7.3f} ms   "
                   f"p95 {p95[name]:7.3f} ms{ratio}")
        report("  (reused: one imap process serves login after login, "
               "service_count = 0)")
    finally:
        for dc in sides.values():
            dc.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
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
