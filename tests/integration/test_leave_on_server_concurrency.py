"""Two devices' POP3 sessions and an IMAP session (APPEND, flag changes)
working on the same mailbox at once, in threads. Nothing may get lost:
with keep + new_only every message ends up on the server and received
exactly once by each device; with expire (0 days, all devices) every
message is received exactly once by each device and is expunged only
once both have it."""

from __future__ import annotations

import poplib
import random
import threading
import time

import pytest

from leave_on_server_helpers import (_server_log_checks,  # noqa: F401  (fixtures)
                                     account, deliver, make_mail, msgids,
                                     new_msgid, pop3, server_fixture)

NEW_ONLY = {"leave_on_server_new_only": "yes"}

USERS = [
    *account("conckeep", fields=NEW_ONLY),
    *account("concexp", fields={"leave_on_server_policy": "expire",
                                "leave_on_server_expire_days": "0", **NEW_ONLY}),
]

server = server_fixture(USERS)

ROUNDS = 8
APPENDS = 30


class Run:
    def __init__(self, dc, user):
        self.dc, self.user = dc, user
        self.received = {"phone": [], "laptop": []}
        self.appended: list[str] = []
        self.gone_under_session: list[str] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()

    def device_session(self, dev):
        with pop3(self.dc, self.user, dev) as s:
            for num in s.listing():
                try:
                    s.retr(num)
                except poplib.error_proto as e:
                    # expunged by someone else while listed to us
                    self.gone_under_session.append(f"{dev} #{num}: {e}")
        self.received[dev] += s.retrieved

    def device_loop(self, dev):
        rng = random.Random(dev)
        try:
            for _ in range(ROUNDS):
                self.device_session(dev)
                time.sleep(rng.uniform(0, 0.05))
        except BaseException as e:
            self.errors.append(e)

    def imap_loop(self):
        rng = random.Random(1)
        try:
            c = self.dc.imap(self.user)
            c.select("INBOX")
            for i in range(APPENDS):
                mid = new_msgid(f"imap{i}")
                typ, data = c.append("INBOX", None, None, make_mail(mid))
                assert typ == "OK", data
                self.appended.append(mid)
                flag = rng.choice(["\\Flagged", "\\Answered", "$Label1", "\\Seen"])
                op = rng.choice(["+FLAGS", "-FLAGS"])
                typ, data = c.uid("STORE", "1:*", op, f"({flag})")
                assert typ == "OK", data
                c.noop()
                time.sleep(rng.uniform(0, 0.03))
            c.logout()
        except BaseException as e:
            self.errors.append(e)

    def go(self):
        threads = [threading.Thread(target=self.device_loop, args=("phone",)),
                   threading.Thread(target=self.device_loop, args=("laptop",)),
                   threading.Thread(target=self.imap_loop)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        if self.errors:
            raise self.errors[0]
        self.dc.wait_workers_gone("pop3")


@pytest.mark.parametrize("user", ["conckeep", "concexp"])
def test_concurrent_devices_and_imap_lose_nothing(server, user):
    run = Run(server, user)
    # both devices registered first (expiry waits for registered devices only)
    for dev in ("phone", "laptop"):
        run.device_session(dev)
    initial = deliver(server, user, 5)
    run.go()
    everything = initial + run.appended
    on_server = msgids(server, user)
    # whatever got expunged meanwhile had been received by both devices
    both = set(run.received["phone"]) & set(run.received["laptop"])
    lost = set(everything) - set(on_server) - both
    assert not lost, (f"expunged before both devices had them: {sorted(lost)}; "
                      f"phone got {run.received['phone']}, laptop got "
                      f"{run.received['laptop']}; errors: {run.gone_under_session}")
    assert set(on_server) <= set(everything)
    # each device finishes with what is left for it
    for dev in ("phone", "laptop"):
        run.device_session(dev)
    assert not run.gone_under_session, run.gone_under_session
    for dev, got in run.received.items():
        assert len(got) == len(set(got)), f"{dev} got a message twice"
        assert set(got) == set(everything), f"{dev} missed {set(everything) - set(got)}"
    on_server = msgids(server, user)
    if user == "conckeep":
        assert sorted(on_server) == sorted(everything)
    else:
        assert on_server == []
