"""leave_on_server on each mailbox format Dovecot ships: Maildir, sdbox
and mdbox.

The formats differ in when a mailbox gets the GUID that its attributes
(the devices' state) are stored under: sdbox and mdbox open a mailbox
while creating it, before it has one. The first POP3 login to an empty
account creates INBOX in exactly that way, which once crashed the pop3
process (Dovecot's assertion on a mailbox without a GUID).
"""

from __future__ import annotations

import re

import pytest

from leave_on_server_helpers import (PLUGIN, account, deliver,
                                     device_states, fetch, listed,
                                     make_server, msgids, pop3)

FORMATS = {
    "maildir": "maildir:~/Maildir",
    "sdbox": "sdbox:~/sdbox",
    "mdbox": "mdbox:~/mdbox",
}

USERS = [*account("fresh"), *account("kept")]


@pytest.fixture(scope="module", params=sorted(FORMATS))
def server(request):
    if not PLUGIN.is_file():
        pytest.fail(f"{PLUGIN} missing: run `make build-all`", pytrace=False)
    # the harness writes Maildir's location first; the later one wins
    dc = make_server(USERS, extra_conf=f"mail_location = {FORMATS[request.param]}\n")
    dc.start()
    try:
        yield dc
    finally:
        dc.stop()


def crashes(dc, since=0):
    return [line for line in dc.log_text()[since:].splitlines()
            if re.search(r"\b(Panic|Fatal): |killed with signal|\bError: ", line)]


def test_the_format_is_in_use(server):
    out = server.doveadm("config", "-h", "mail_location", check=True).stdout
    assert out.split(":")[0] in FORMATS and out.strip() in FORMATS.values()


def test_first_login_to_an_empty_account_registers_the_device(server):
    mark = server.log_mark()
    with pop3(server, "fresh", "phone") as s:
        assert s.stat() == (0, 0)
    assert crashes(server, mark) == []
    assert "phone" in device_states(server, "fresh")
    # and the mailbox it created works for delivery and the next session
    ids = deliver(server, "fresh", 2)
    assert listed(server, "fresh", "phone") == ids
    assert crashes(server, mark) == []


def test_keep_policy_hides_only_from_the_device_that_deleted(server):
    mark = server.log_mark()
    ids = deliver(server, "kept", 3)
    assert fetch(server, "kept", "phone", dele=True) == ids
    assert msgids(server, "kept") == ids          # nothing expunged
    assert listed(server, "kept", "phone") == []  # hidden for the phone
    assert listed(server, "kept", "laptop") == ids
    assert crashes(server, mark) == []
