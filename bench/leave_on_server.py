"""leave_on_server: the "check for new mail" session of a POP3 client
that leaves mail on the server (login, STAT, UIDL, QUIT), with 10 new
messages in a mailbox of N kept ones.

Two servers hold the same mail, side by side in one run:
  stock   Dovecot keeping everything: the client's UIDL lists all of it
  plugin  leave_on_server, policy keep, new-only view: the device's
          earlier session DELEted (hid) the N kept messages, so it is
          listed only the 10 new ones

Each size runs in two deployments, both servers alike:
  default  Maildir, and a new pop3-login and pop3 process per session
           (Dovecot's defaults)
  tuned    sdbox, Dovecot's high-performance login mode and pop3
           processes that serve session after session (service_count =
           0, process_min_avail), as a busy POP3 server runs

The N kept messages are written straight into a Maildir (generating
them over LMTP would take longer than the measurement); the default
deployment indexes them there, the tuned one imports them into sdbox
once (`doveadm import`) and the second server gets a copy of the first
one's mailbox. Then the device's first session hides them, as a real
client would have done over time.
"""

import os
import shutil
import socket
import statistics
import time

from dovecot_instance import DovecotInstance, make_message

PLUGIN_CONF = """
maildir_very_dirty_syncs = yes
mail_attribute_dict = file:%h/dovecot-attributes:lock=fcntl
protocol pop3 {
  mail_plugins = $mail_plugins leave_on_server
}
"""


TUNED_CONF = """
service pop3-login {
  service_count = 0
  process_min_avail = 2
}
service pop3 {
  service_count = 0
  process_min_avail = 2
}
mail_location = sdbox:~/sdbox
"""
DEPLOYMENTS = ("default", "tuned")


def chown_tree(path):
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), 65534, 65534)
    os.chown(path, 65534, 65534)


def fill_maildir(dc, user, count):
    """Writes count small messages into user's Maildir/cur, owned by the
    mail user, as a long-running mailbox would hold them."""
    cur = dc.maildir(user) / "cur"
    for sub in ("cur", "new", "tmp"):
        (dc.maildir(user) / sub).mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    for i in range(count):
        body = f"Kept message {i}.\n" + "Some text of an ordinary mail.\n" * 20
        msg = make_message(subject=f"kept {i}", body=body)
        path = cur / f"{now - count + i}.M{i}P{os.getpid()}.bench:2,S"
        path.write_bytes(msg)
    chown_tree(dc.home(user))


def pop3_session(port, user, commands, pipeline=False):
    """Runs one session over a raw socket; returns (seconds from connect
    to QUIT's reply, the replies). Commands go one at a time, each after
    the previous reply, as POP3 clients do; pipeline=True sends them in
    batches (for setting up 100k DELEs quickly)."""
    start = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    reader.readline()
    for line in (f"USER {user}", "PASS secret"):
        sock.sendall(line.encode() + b"\r\n")
        reply = reader.readline()
        assert reply.startswith(b"+OK"), reply
    replies = []
    batch = 200 if pipeline else 1
    for at, command in enumerate(commands):
        if at % batch == 0:
            # batches, not everything at once: that could fill both
            # directions' socket buffers and wait forever
            sock.sendall("".join(c + "\r\n" for c in commands[at:at + batch]).encode())
        line = reader.readline()
        assert line.startswith(b"+OK"), (command, line)
        reply = [line]
        if command in ("UIDL", "LIST") or command.startswith("RETR"):
            while True:
                line = reader.readline()
                if line == b".\r\n":
                    break
                reply.append(line)
        replies.append(reply)
    elapsed = time.perf_counter() - start
    reader.close()
    sock.close()
    return elapsed, replies


def check_new_mail(dc, user):
    return pop3_session(dc.pop3_port, user, ["STAT", "UIDL", "QUIT"])


def start_side(kept, plugin, deployment="default", copy_from=None):
    """A started server holding `kept` messages for alice. With
    copy_from (a tuned server), its sdbox is copied instead of imported
    again."""
    conf = PLUGIN_CONF if plugin else "maildir_very_dirty_syncs = yes\n"
    if deployment == "tuned":
        conf += TUNED_CONF
    dc = DovecotInstance(
        users=["alice"], extra_conf=conf,
        plugin_settings={"leave_on_server_policy": "keep",
                         "leave_on_server_new_only": "yes"} if plugin else {})
    dc.start()
    if deployment == "default":
        fill_maildir(dc, "alice", kept)
        # index, and cache the sizes POP3 needs, before anything is timed
        dc.doveadm("force-resync", "-u", "alice", "INBOX")
    elif copy_from is not None:
        shutil.copytree(copy_from.home("alice") / "sdbox",
                        dc.home("alice") / "sdbox", symlinks=True)
        chown_tree(dc.home("alice"))
    else:
        fill_maildir(dc, "alice", kept)
        dc.doveadm("import", "-u", "alice", f"maildir:{dc.maildir('alice')}",
                   "", "all", check=True, timeout=7200)
        shutil.rmtree(dc.maildir("alice"))
    _, (stat, uidl, _) = check_new_mail(dc, "alice")
    assert len(uidl) - 1 == kept, (len(uidl), kept)
    if plugin:
        # the device's history: it has already dealt with the kept mail
        pop3_session(dc.pop3_port, "alice",
                     [f"DELE {i}" for i in range(1, kept + 1)] + ["QUIT"],
                     pipeline=True)
    return dc


def deliver_new(dc):
    for i in range(10):
        dc.deliver("alice", make_message(subject=f"new {i}"))


def bench(sizes, rounds, report, deployments=DEPLOYMENTS):
    for deployment in deployments:
        report(f"  deployment: {deployment}")
        for kept in sizes:
            bench_one(kept, rounds, report, deployment)


def bench_one(kept, rounds, report, deployment):
    sides = {}
    try:
        sides["stock"] = start_side(kept, False, deployment)
        sides["leave_on_server"] = start_side(
            kept, True, deployment,
            copy_from=sides["stock"] if deployment == "tuned" else None)
        listed = {}
        for name, dc in sides.items():
            deliver_new(dc)
            for _ in range(5):  # warm up
                _, replies = check_new_mail(dc, "alice")
            listed[name] = len(replies[1]) - 1
        assert listed["leave_on_server"] == 10, listed
        assert listed["stock"] == kept + 10, listed
        times = {name: [] for name in sides}
        names = list(sides)
        for i in range(rounds):
            for name in names[i % 2:] + names[:i % 2]:
                times[name].append(check_new_mail(sides[name], "alice")[0])
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        report(f"  {kept:>6} kept + 10 new, {rounds} interleaved rounds:")
        for name in names:
            report(f"    {name:<16} lists {listed[name]:>6}   "
                   f"median {med[name]:8.2f} ms")
        report(f"    ratio stock / leave_on_server: "
               f"{med['stock'] / med['leave_on_server']:.1f}x")
    finally:
        for dc in sides.values():
            dc.stop()
