"""access_rules and the IMAP ID command.

After login: the first ID is fed to the rules and a changed decision
applies at once (a deny ends the session with BYE after the ID reply);
later IDs are ignored.

Before login: with `imap_id_retain = yes`, imap-login hands the ID to auth
as %{client_id}; a passwd-file extra field
`userdb_access_rules_client_id=%{client_id}` passes it on to the plugin,
which then decides at login and ignores later IDs."""

from __future__ import annotations

import imaplib

import pytest

from access_rules_helpers import (ArServer, RawConn,
                                  _server_log_on_failure,  # noqa: F401
                                  assert_no_crash, decisions, imap_attempt,
                                  imap_select, imap_text, server_fixture,
                                  session_logged_out, wait_decision)

USERS = [
    "plain",                 # no pre-login ID field
    {"name": "pre", "fields": {"access_rules_client_id": "%{client_id}"}},
]
RULES = ('deny client-name "Evil*" reason "No evil clients"\n'
         'readonly client-name Outlook* client-version 1.* reason "Old Outlook reads"\n'
         "allow\n")

# mail_debug=yes here (not log_debug): allow decisions are logged at debug
server = server_fixture(users=USERS, extra_conf="imap_id_retain = yes\n",
                        debug_rules=False, debug=True)


@pytest.fixture(autouse=True)
def _rules(server):
    mark = server.dc.log_mark()
    server.rules(RULES)
    yield
    assert_no_crash(server.dc, mark)


def _login(r, user):
    assert r.readline().startswith("* OK ")
    r.send(f"a LOGIN {user} secret\r\n")
    lines = r.read_until("a ")
    assert lines[-1].startswith("a OK "), lines


# ------------------------------------------------------------------ after login

def test_id_after_login_denies_after_the_id_reply(server):
    dc = server.dc
    mark = dc.log_mark()
    with RawConn("127.0.0.1", dc.imap_port) as r:
        _login(r, "plain")
        r.send('b ID ("name" "EvilMail" "version" "6.6")\r\n')
        lines = r.read_all()
    assert lines[0].startswith("* ID "), lines
    assert lines[1].startswith("b OK ID completed"), lines
    assert lines[2:] == ["* BYE [NOPERM] No evil clients"], lines
    login = wait_decision(dc, "plain", "imap", mark, count=1)
    assert (login.action, login.line, login.level) == ("allow", 3, "Debug")
    dec = wait_decision(dc, "plain", "imap", mark, count=2)
    assert (dec.action, dec.line, dec.level, dec.reason) == \
        ("deny", 1, "Info", "No evil clients"), dec.text


def test_second_id_is_ignored(server):
    dc = server.dc
    mark = dc.log_mark()
    out = imap_attempt(dc, "plain", keep=True)
    c = out.client
    assert c._simple_command("ID", '("name" "Thunderbird" "version" "115")')[0] == "OK"
    assert c._simple_command("ID", '("name" "EvilMail")')[0] == "OK"
    assert c.noop()[0] == "OK"
    assert imap_select(c, "INBOX") == ("OK", False)
    out.close()
    session_logged_out(dc, "imap", "plain", mark)
    found = decisions(dc, mark, "plain", "imap")
    assert [(d.action, d.line) for d in found] == [("allow", 3), ("allow", 3)], \
        [d.text for d in found]


def test_id_after_login_can_make_session_readonly(server):
    dc = server.dc
    mark = dc.log_mark()
    out = imap_attempt(dc, "plain", keep=True)
    c = out.client
    assert imap_select(c, "INBOX") == ("OK", False)
    assert c.unselect()[0] == "OK"
    assert c._simple_command("ID", '("name" "Outlook" "version" "1.2")')[0] == "OK"
    assert imap_select(c, "INBOX") == ("OK", True)
    typ, data = c.create("NewFolder")
    assert typ == "NO" and imap_text(data) == "[NOPERM] Read-only session: Old Outlook reads"
    out.close()
    dec = wait_decision(dc, "plain", "imap", mark, count=2)
    assert (dec.action, dec.line, dec.level) == ("readonly", 2, "Info"), dec.text


def test_id_without_client_rules_is_not_evaluated(server):
    """A rule set that never looks at the ID isn't evaluated again."""
    dc = server.dc
    server.rules("allow\n")
    mark = dc.log_mark()
    out = imap_attempt(dc, "plain", keep=True)
    assert out.client._simple_command("ID", '("name" "EvilMail")')[0] == "OK"
    assert out.client.noop()[0] == "OK"
    out.close()
    session_logged_out(dc, "imap", "plain", mark)
    assert len(decisions(dc, mark, "plain", "imap")) == 1


# ------------------------------------------------------------------ before login

def test_prelogin_id_denies_at_login(server):
    dc = server.dc
    mark = dc.log_mark()
    with RawConn("127.0.0.1", dc.imap_port) as r:
        assert r.readline().startswith("* OK ")
        r.send('x ID ("name" "EvilMail")\r\n')
        assert r.read_until("x ")[-1].startswith("x OK ")
        r.send("a LOGIN pre secret\r\n")
        lines = r.read_all()
    assert lines[0].startswith("a OK "), lines
    assert lines[1:] == ["* BYE [NOPERM] No evil clients"], lines
    session_logged_out(dc, "imap", "pre", mark)
    found = decisions(dc, mark, "pre", "imap")
    assert [(d.action, d.line) for d in found] == [("deny", 1)], [d.text for d in found]


def test_prelogin_id_version(server):
    dc = server.dc
    mark = dc.log_mark()
    c = dc.imap_connect()
    assert c._simple_command("ID", '("name" "Outlook" "version" "1.9")')[0] == "OK"
    assert c.login("pre", "secret")[0] == "OK"
    assert imap_select(c, "INBOX") == ("OK", True)
    c.logout()
    dec = wait_decision(dc, "pre", "imap", mark)
    assert (dec.action, dec.line) == ("readonly", 2), dec.text


def test_prelogin_id_later_ids_ignored(server):
    dc = server.dc
    mark = dc.log_mark()
    c = dc.imap_connect()
    assert c._simple_command("ID", '("name" "Thunderbird")')[0] == "OK"
    assert c.login("pre", "secret")[0] == "OK"
    assert c._simple_command("ID", '("name" "EvilMail")')[0] == "OK"
    assert c.noop()[0] == "OK"
    assert imap_select(c, "INBOX") == ("OK", False)
    c.logout()
    session_logged_out(dc, "imap", "pre", mark)
    found = decisions(dc, mark, "pre", "imap")
    assert [(d.action, d.line) for d in found] == [("allow", 3)], [d.text for d in found]


def test_no_prelogin_id_then_first_id_after_login_counts(server):
    """The same user without a pre-login ID: %{client_id} is empty (Dovecot
    hands the plugin "yes" for an empty userdb field), so the first ID after
    login must still be evaluated."""
    dc = server.dc
    mark = dc.log_mark()
    out = imap_attempt(dc, "pre", client_id='("name" "EvilMail")')
    assert out.refused and out.reply == "[NOPERM] No evil clients"
    session_logged_out(dc, "imap", "pre", mark)
    found = decisions(dc, mark, "pre", "imap")
    assert [(d.action, d.line) for d in found] == [("allow", 3), ("deny", 1)], \
        [d.text for d in found]



def test_prelogin_id_via_userdb_default_fields():
    """The other documented way: `default_fields =
    access_rules_client_id=%{client_id}` in the userdb block. The harness
    has no setting for userdb options, so this patches its generated
    dovecot.conf and reloads."""
    with ArServer(users=["plain"], extra_conf="imap_id_retain = yes\n") as srv:
        dc = srv.dc
        srv.rules(RULES)
        block = f"userdb {{\n  driver = passwd-file\n  args = {dc.passwd_path}\n"
        conf = dc.config_path.read_text()
        assert block in conf
        dc.config_path.write_text(conf.replace(
            block, block + "  default_fields = access_rules_client_id=%{client_id}\n"))
        mark = dc.log_mark()
        dc.doveadm("reload", check=True)
        dc.wait_for_log(r"SIGHUP received - reloading configuration", since=mark)

        mark = dc.log_mark()
        c = dc.imap_connect()
        assert c._simple_command("ID", '("name" "EvilMail")')[0] == "OK"
        assert c.login("plain", "secret")[0] == "OK"
        with pytest.raises(imaplib.IMAP4.abort, match=r"\[NOPERM\] No evil clients"):
            c.noop()
        c.shutdown()
        session_logged_out(dc, "imap", "plain", mark)
        found = decisions(dc, mark, "plain", "imap")
        assert [(d.action, d.line) for d in found] == [("deny", 1)]

        # no pre-login ID: the first ID after login still counts
        out = imap_attempt(dc, "plain", client_id='("name" "EvilMail")')
        assert out.refused and out.reply == "[NOPERM] No evil clients"
        assert_no_crash(dc)
