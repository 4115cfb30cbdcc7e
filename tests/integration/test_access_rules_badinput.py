"""access_rules with a bad or missing rules file: every IMAP and POP3
session is refused (fail closed) and the log says why, with file:line for
each syntax error; LMTP delivery and doveadm keep working, even under a
`deny` for everybody. A rules file replaced while the server runs takes
effect at the next login, without a reload.

There is no global access_rules_file here: each user points to its own
file through the userdb field of the same name. The imap and pop3
processes serve many sessions each (service_count = 0), so that the
per-process cache of the parsed rules is exercised too."""

from __future__ import annotations

import imaplib
import os
import re

import pytest

from access_rules_helpers import (IMAP_INTERNAL_ERROR, _server_log_on_failure, _no_crash,  # noqa: F401
                                  assert_no_crash, login_pid, make_message,
                                  mailbox_state, pop3_attempt, run_tool,
                                  server_fixture, try_session, wait_log)

BROKEN = """\
# one error on each of several lines
allow user alice

deny protocol imap4 reason "typo"
deny from 10.1.2.3/8
allow user bob reason "allow has no reason"
frobnicate user carol
deny user "unterminated
readonly time 25:00-26:00 \\
    days mon
allow sessions 0
deny user dave mailboxes INBOX
default maybe
"""
BROKEN_LINES = [4, 5, 6, 7, 8, 9, 11, 12, 13]
GOOD = 'deny protocol pop3 reason "No POP3"\nallow\n'


def _users(rules_dir):
    def field(user, path):
        return {"name": user, "fields": {"access_rules_file": str(path)}}
    return [
        "unset",
        field("relative", "rules.conf"),
        field("missing", rules_dir / "missing.conf"),
        field("unreadable", rules_dir / "unreadable.conf"),
        field("dirpath", rules_dir),
        field("broken", rules_dir / "broken.conf"),
        field("live", rules_dir / "live.conf"),
        field("denyall", rules_dir / "denyall.conf"),
    ]


server = server_fixture(
    users=_users, global_rules=False,
    extra_conf="service imap {\n  service_count = 0\n}\n"
               "service pop3 {\n  service_count = 0\n}\n")

BAD_USERS = ["unset", "relative", "missing", "unreadable", "dirpath", "broken"]


@pytest.fixture(scope="module", autouse=True)
def files(server):
    server.write_rules(BROKEN, "broken.conf")
    server.write_rules("allow\n", "unreadable.conf", mode=0o000)
    server.write_rules('deny reason "Nobody gets in"\n', "denyall.conf")
    server.write_rules(GOOD, "live.conf")



def expect_refused_internal(dc, proto, user):
    """A session refused because no decision could be made: the client
    gets Dovecot's internal-error reply, nothing else."""
    if proto == "imap":
        c = dc.imap_connect()
        typ, data = c.login(user, "secret")
        assert typ == "OK" and data == [b"Logged in, but initialization failed."], data
        with pytest.raises(imaplib.IMAP4.abort) as exc:
            c.noop()
        assert str(exc.value).endswith(IMAP_INTERNAL_ERROR), exc.value
        c.shutdown()
    else:
        out = pop3_attempt(dc, user)
        assert out.refused and out.reply == f"-ERR [SYS/TEMP] {IMAP_INTERNAL_ERROR}", \
            out.reply


def refusal_log(dc, proto, user, since, message):
    return wait_log(dc, rf"^.* {proto}\({user}\)<\d+><[^>]*>: Error: access_rules: "
                        + re.escape(message) + "$", since)


@pytest.mark.parametrize("proto", ["imap", "pop3"])
@pytest.mark.parametrize("user,messages", [
    ("unset", ["Refusing the session: access_rules_file is not set, refusing "
               "access (set it to the rules file's path)"]),
    ("relative", ["Refusing the session: access_rules_file=rules.conf: must be "
                  "an absolute path"]),
    ("missing", ["{dir}/missing.conf: can't open the rules file: No such file or "
                 "directory",
                 "Refusing the session: the rules file {dir}/missing.conf is invalid"]),
    ("unreadable", ["{dir}/unreadable.conf: can't open the rules file: Permission "
                    "denied",
                    "Refusing the session: the rules file {dir}/unreadable.conf is "
                    "invalid"]),
    ("dirpath", ["Refusing the session: the rules file {dir} is invalid"]),
])
def test_unusable_rules_file_refuses(server, proto, user, messages):
    dc = server.dc
    mark = dc.log_mark()
    expect_refused_internal(dc, proto, user)
    for message in messages:
        refusal_log(dc, proto, user, mark, message.format(dir=server.rules_dir))


def test_unreadable_only_for_the_mail_user(server):
    """The mode-000 file is unreadable for the mail processes' uid, which is
    what the test above relies on (root could read it)."""
    path = server.path("unreadable.conf")
    assert os.stat(path).st_mode & 0o777 == 0
    assert os.stat(server.dc.home("unreadable")).st_uid != 0


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_malformed_file_every_error_logged(server, proto):
    dc = server.dc
    path = server.path("broken.conf")
    mark = dc.log_mark()
    expect_refused_internal(dc, proto, "broken")
    last = refusal_log(dc, proto, "broken", mark,
                       f"Refusing the session: the rules file {path} is invalid")
    errors = re.findall(rf"^.* {proto}\(broken\)<\d+><[^>]*>: Error: access_rules: "
                        rf"({re.escape(str(path))}:(\d+): .*)$",
                        dc.log_text()[mark:last.end()], re.M)
    assert [int(line) for _, line in errors] == BROKEN_LINES, errors
    # the same messages as the access-rules tool prints
    res = run_tool("check", str(path))
    assert res.returncode == 1
    assert [text for text, _ in errors] == res.stderr.splitlines()
    texts = "\n".join(text for text, _ in errors)
    assert f'{path}:4: unknown protocol "imap4" (expected imap or pop3)' in texts
    assert (f'{path}:5: network "10.1.2.3/8" has host bits set '
            "(did you mean 10.0.0.0/8?)") in texts


def test_bad_files_dont_block_lmtp_or_doveadm(server):
    dc = server.dc
    for user in BAD_USERS + ["denyall"]:
        before = len(mailbox_state(dc, user, ["INBOX"])["INBOX"])
        dc.deliver(user, make_message(f"to {user}"))
        state = mailbox_state(dc, user, ["INBOX"])["INBOX"]
        assert len(state) == before + 1, user
        res = dc.doveadm("mailbox", "create", "-u", user, "ByDoveadm")
        assert res.returncode == 0, (user, res.stderr)
        uid = state[-1][0]
        res = dc.doveadm("flags", "add", "-u", user, "\\Flagged", "mailbox", "INBOX",
                         "uid", str(uid))
        assert res.returncode == 0, (user, res.stderr)
        res = dc.doveadm("search", "-u", user, "mailbox", "INBOX", "FLAGGED")
        assert res.returncode == 0 and res.stdout.strip(), (user, res.stderr)
        assert dc.doveadm("mailbox", "delete", "-u", user, "ByDoveadm").returncode == 0
        res = dc.doveadm("expunge", "-u", user, "mailbox", "INBOX", "uid", str(uid))
        assert res.returncode == 0, (user, res.stderr)
        assert len(mailbox_state(dc, user, ["INBOX"])["INBOX"]) == before
    assert not [l for l in dc.log_text().splitlines()
                if re.search(r"(lmtp|doveadm)\(.*access_rules", l)]


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_deny_everything_still_denies(server, proto):
    """The control for the test above: the same user is refused over
    IMAP and POP3."""
    out, dec = try_session(server, proto, "denyall")
    assert out.refused and out.reply.endswith("Nobody gets in")
    assert (dec.action, dec.line) == ("deny", 1)


def test_file_replaced_while_running(server):
    dc = server.dc
    path = str(server.path("live.conf"))
    pids = []

    def login(proto):
        mark = dc.log_mark()
        out, dec = try_session(dc, proto, "live")
        pids.append(login_pid(dc, proto, "live", mark))
        return out, dec

    reload_mark = dc.log_mark()
    server.write_rules(GOOD, "live.conf")
    out, dec = login("imap")
    assert not out.refused and (dec.action, dec.line, dec.file) == ("allow", 2, path)
    out, dec = login("pop3")
    assert out.refused and (dec.action, dec.line) == ("deny", 1)

    # broken now: refused, and the old rules are not kept in force
    server.write_rules("allow\ndeny protocol imap4\n", "live.conf")
    for proto in ("imap", "pop3"):
        mark = dc.log_mark()
        expect_refused_internal(dc, proto, "live")
        refusal_log(dc, proto, "live", mark,
                    f'{path}:2: unknown protocol "imap4" (expected imap or pop3)')
        pids.append(login_pid(dc, proto, "live", mark))

    # fixed, differently: both allowed by the new line 1
    server.write_rules("allow protocol imap,pop3\n", "live.conf")
    for proto in ("imap", "pop3"):
        out, dec = login(proto)
        assert not out.refused and (dec.action, dec.line) == ("allow", 1)

    # rewritten in place (same inode), same size as before
    with open(path, "r+") as f:
        f.write("deny  protocol imap,pop3\n"[:len("allow protocol imap,pop3\n")])
    out, dec = login("imap")
    assert out.refused and (dec.action, dec.line) == ("deny", 1), dec.text

    assert "SIGHUP" not in dc.log_text()[reload_mark:]
    # the cache was really in play: some process served several logins
    assert len(set(pids)) < len(pids), pids
