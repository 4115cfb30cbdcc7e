"""access_rules actions against the real server: allow, deny (with the
reason the client is told), read-only (every writing IMAP command and
POP3 DELE/QUIT, checked afterwards with doveadm), mailbox visibility, and
how decisions are logged (deny/readonly at info, allow only at debug).

This server logs at the default level: allow decisions only show up for
the user with mail_debug=yes."""

from __future__ import annotations

import poplib
from collections import Counter

import pytest

from access_rules_helpers import (DEFAULT_DENY_REASON, DEFAULT_READONLY_ERROR,
                                  RawConn, _server_log_on_failure, _no_crash,  # noqa: F401
                                  assert_no_crash, curl, curl_received,
                                  decisions, imap_attempt, imap_list_names,
                                  imap_select, imap_text, mailbox_state,
                                  make_message, pop3_attempt, server_fixture,
                                  session_logged_out, try_session,
                                  wait_decision, wait_log)

USERS = ["ro", "rw", "vis", "denyu", "plain",
         {"name": "dbg", "fields": {"mail_debug": "yes"}}]
VIS_BOXES = ["Sent", "Drafts", "Archive", "Shared", "Shared.Team", "Sent Items"]

server = server_fixture(users=USERS, debug_rules=False)


def _save(dc, user, box, subject):
    dc.doveadm("save", "-u", user, "-m", box, input=make_message(subject).decode(),
               check=True)


@pytest.fixture(scope="module", autouse=True)
def seeded(server):
    dc = server.dc
    for user in ("ro", "rw", "vis", "denyu"):
        dc.doveadm("mailbox", "create", "-s", "-u", user, "Sent", check=True)
        for i in range(3):
            dc.deliver(user, make_message(f"{user} message {i + 1}"))
        _save(dc, user, "Sent", f"{user} sent")
    # uid 3 of ro's INBOX is \Deleted, so EXPUNGE/CLOSE would remove it
    dc.doveadm("flags", "add", "-u", "ro", "\\Deleted", "mailbox", "INBOX", "uid", "3",
               check=True)
    dc.doveadm("mailbox", "create", "-s", "-u", "vis", *VIS_BOXES[1:], check=True)
    for box in ("Drafts", "Shared.Team", "Sent Items"):
        _save(dc, "vis", box, f"vis {box}")



# ------------------------------------------------------------------ allow

def test_allow_session_can_write(server):
    """Control for the read-only tests: the same commands work when the
    rule allows."""
    dc = server.dc
    server.rules("allow user rw\n")
    before = mailbox_state(dc, "rw", ["INBOX"])["INBOX"]
    out = imap_attempt(dc, "rw", keep=True)
    c = out.client
    assert imap_select(c, "INBOX") == ("OK", False)
    typ, data = c.fetch("1", "(BODY[])")
    assert typ == "OK" and b"rw message 1" in data[0][1]
    assert c.store("2", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert c.create("RwNew")[0] == "OK"
    out.close()
    after = dict(mailbox_state(dc, "rw", ["INBOX"])["INBOX"])
    assert "\\Seen" in after[before[0][0]]          # FETCH BODY[] set \Seen
    assert "\\Flagged" in after[before[1][0]]
    assert "RwNew" in dc.doveadm("mailbox", "list", "-u", "rw").stdout.split("\n")
    dc.doveadm("mailbox", "delete", "-u", "rw", "RwNew", check=True)
    dc.doveadm("flags", "remove", "-u", "rw", "\\Seen \\Flagged", "mailbox", "INBOX",
               "all", check=True)


# ------------------------------------------------------------------ deny

def test_deny_imap_bye_after_login_reply(server):
    dc = server.dc
    path = server.rules('deny user denyu reason "Account locked, call the helpdesk"\n')
    mark = dc.log_mark()
    with RawConn("127.0.0.1", dc.imap_port) as r:
        assert r.readline().startswith("* OK ")
        r.send("a LOGIN denyu secret\r\n")
        lines = r.read_all()
    assert lines[0].startswith("a OK ") and "Logged in" in lines[0], lines
    assert lines[1:] == ["* BYE [NOPERM] Account locked, call the helpdesk"], lines
    dec = wait_decision(dc, "denyu", "imap", mark)
    assert dec.level == "Info" and dec.text.endswith(
        f"deny: session refused by {path}:1: Account locked, call the helpdesk")


def test_deny_imap_bye_reaches_tls_clients_that_send_at_once(server):
    """imaplib sends NOOP as soon as LOGIN's OK arrives, while the refused
    session is sending its BYE. Over TLS imap-login proxies, and if the
    session closed its socket at once, the proxy could fail to pass on the
    NOOP and drop the BYE with it: before the half-close this lost the
    BYE in 1 to 6 of 100 attempts in the ASan suite (never seen in 400
    with the normal build, where the session is quicker), so it is tried
    many times."""
    dc = server.dc
    server.rules('deny user denyu reason "Account locked"\n')
    replies = Counter(imap_attempt(dc, "denyu", ssl=True).reply
                      for _ in range(150))
    assert replies == {"[NOPERM] Account locked": 150}, replies


def test_deny_imap_client_that_stays_is_disconnected(server):
    """After the BYE the session waits for the client to close, but not
    for ever."""
    dc = server.dc
    server.rules('deny user denyu reason "Account locked"\n')
    mark = dc.log_mark()
    with RawConn("127.0.0.1", dc.imap_port) as r:
        r.readline()
        r.send("a LOGIN denyu secret\r\n")
        assert r.read_all()[1:] == ["* BYE [NOPERM] Account locked"]
        # the client neither closes nor stops sending
        r.send("b NOOP\r\n")
        dc.wait_for_log(r"imap\(denyu\).*Disconnected: Account locked",
                        timeout=10, since=mark)


def test_deny_pop3_err_in_place_of_ok(server):
    dc = server.dc
    path = server.rules('deny user denyu reason "Account locked"\n')
    mark = dc.log_mark()
    with RawConn("127.0.0.1", dc.pop3_port) as r:
        assert r.readline().startswith("+OK")
        r.send("USER denyu\r\n")
        assert r.readline().startswith("+OK")
        r.send("PASS secret\r\n")
        lines = r.read_all()
    assert lines == ["-ERR [SYS/PERM] Account locked"], lines
    dec = wait_decision(dc, "denyu", "pop3", mark)
    assert dec.text.endswith(f"deny: session refused by {path}:1: Account locked")


def test_deny_default_reason(server):
    server.rules("deny user denyu\n")
    out = imap_attempt(server.dc, "denyu")
    assert out.refused and out.reply == f"[NOPERM] {DEFAULT_DENY_REASON}"
    out = pop3_attempt(server.dc, "denyu")
    assert out.refused and out.reply == f"-ERR [SYS/PERM] {DEFAULT_DENY_REASON}"


def test_deny_curl(server):
    dc = server.dc
    server.rules('deny user denyu reason "No access for you"\n')
    res = curl("-v", f"imap://127.0.0.1:{dc.imap_port}/", "-u", "denyu:secret")
    assert res.returncode != 0, res.stdout
    assert "* BYE [NOPERM] No access for you" in curl_received(res)
    assert "LIST" not in res.stdout
    res = curl("-v", f"pop3://127.0.0.1:{dc.pop3_port}/", "-u", "denyu:secret")
    assert res.returncode == 67, res.stderr           # CURLE_LOGIN_DENIED
    received = curl_received(res)
    assert "-ERR [SYS/PERM] No access for you" in received
    assert not any(l.startswith("+OK Logged in") for l in received)


def test_denied_session_pipelined_commands_change_nothing(server):
    """Commands pipelined behind LOGIN reach the refused session before it
    is closed; the storage refuses all of them."""
    dc = server.dc
    server.rules('deny user denyu reason "Denied"\n')
    before = mailbox_state(dc, "denyu")
    with RawConn("127.0.0.1", dc.imap_port) as r:
        r.readline()
        r.send("a LOGIN denyu secret\r\n"
               "b SELECT INBOX\r\n"
               "c STORE 1 +FLAGS (\\Deleted)\r\n"
               "d EXPUNGE\r\n"
               "e CREATE Pipelined\r\n"
               "f DELETE Sent\r\n"
               "g STATUS Sent (MESSAGES)\r\n")
        lines = r.read_all()
    assert lines[1] == "* BYE [NOPERM] Denied", lines
    assert not [l for l in lines[2:] if l[:2] in ("b ", "e ", "f ", "g ")
                and " OK " in l], lines
    assert mailbox_state(dc, "denyu") == before

    with RawConn("127.0.0.1", dc.pop3_port) as r:
        r.readline()
        r.send("USER denyu\r\nPASS secret\r\nDELE 1\r\nQUIT\r\n")
        lines = r.read_all()
    assert lines == ["+OK", "-ERR [SYS/PERM] Denied"], lines
    assert mailbox_state(dc, "denyu") == before


# ------------------------------------------------------------------ read-only

READONLY_COMMANDS = {
    "STORE": lambda c: c.store("1", "+FLAGS", "(\\Flagged)"),
    "UID STORE": lambda c: c.uid("STORE", "1", "+FLAGS", "(\\Seen)"),
    "EXPUNGE": lambda c: c.expunge(),
    "UID EXPUNGE": lambda c: c.uid("EXPUNGE", "3"),
    "APPEND": lambda c: c.append("INBOX", None, None, make_message("appended")),
    "COPY": lambda c: c.copy("1", "Sent"),
    "UID COPY": lambda c: c.uid("COPY", "1", "Sent"),
    "MOVE": lambda c: c._simple_command("MOVE", "1", "Sent"),
    "UID MOVE": lambda c: c.uid("MOVE", "2", "Sent"),
    "CREATE": lambda c: c.create("NewBox"),
    "DELETE": lambda c: c.delete("Sent"),
    "RENAME": lambda c: c.rename("Sent", "Renamed"),
}


@pytest.fixture
def ro_rules(server):
    return server.rules('readonly user ro reason "Guest network"\n')


@pytest.mark.parametrize("command", list(READONLY_COMMANDS))
def test_readonly_imap_command_refused(server, ro_rules, command):
    dc = server.dc
    before = mailbox_state(dc, "ro")
    out = imap_attempt(dc, "ro", keep=True)
    c = out.client
    try:
        status, readonly = imap_select(c, "INBOX")
        assert (status, readonly) == ("OK", True)
        typ, data = READONLY_COMMANDS[command](c)
        assert typ == "NO", (typ, data)
        assert imap_text(data) == "[NOPERM] Read-only session: Guest network"
        typ, _ = c.noop()                 # the session goes on
        assert typ == "OK"
    finally:
        out.close()
    assert mailbox_state(dc, "ro") == before


def test_readonly_select_fetch_close(server, ro_rules):
    """SELECT is [READ-ONLY], reading doesn't set \\Seen, CLOSE expunges
    nothing (uid 3 is \\Deleted)."""
    dc = server.dc
    before = mailbox_state(dc, "ro")
    assert "\\Deleted" in dict(before["INBOX"])[3]
    mark = dc.log_mark()
    out = imap_attempt(dc, "ro", keep=True)
    c = out.client
    typ, _ = c._simple_command("SELECT", "INBOX")     # raw: see the tagged code
    assert typ == "OK"
    assert c.untagged_responses.get("READ-ONLY") == [b""]
    c.is_readonly = True
    c.state = "SELECTED"
    typ, data = c.fetch("1:*", "(BODY[])")
    assert typ == "OK" and b"ro message 1" in data[0][1]
    typ, data = c.uid("FETCH", "1", "(BODY[TEXT])")
    assert typ == "OK"
    assert c.close()[0] == "OK"
    out.close()
    assert mailbox_state(dc, "ro") == before
    dec = wait_decision(dc, "ro", "imap", mark)
    assert (dec.action, dec.level, dec.line) == ("readonly", "Info", 1), dec.text
    assert dec.text.endswith(f"readonly by {server.rules_path}:1")


def test_readonly_default_reason(server):
    server.rules("readonly user ro\n")
    out = imap_attempt(server.dc, "ro", keep=True)
    c = out.client
    imap_select(c, "INBOX")
    typ, data = c.store("1", "+FLAGS", "(\\Flagged)")
    out.close()
    assert typ == "NO" and imap_text(data) == f"[NOPERM] {DEFAULT_READONLY_ERROR.rstrip('.')}"


def test_readonly_curl(server, ro_rules):
    dc = server.dc
    before = mailbox_state(dc, "ro")
    base = f"imap://127.0.0.1:{dc.imap_port}"
    res = curl("-v", f"{base}/INBOX", "-u", "ro:secret", "-X", "STORE 1 +FLAGS (\\Deleted)")
    assert res.returncode == 21, res.stderr          # CURLE_QUOTE_ERROR
    assert any("NO [NOPERM] Read-only session: Guest network" in l
               for l in curl_received(res)), res.stderr
    res = curl(f"{base}/Sent", "-u", "ro:secret", "-X", "DELETE Sent")
    assert res.returncode == 21, res.stderr
    # reading works
    res = curl(f"{base}/INBOX;UID=1", "-u", "ro:secret")
    assert res.returncode == 0 and "ro message 1" in res.stdout
    assert mailbox_state(dc, "ro") == before


def test_readonly_pop3_dele_quit(server, ro_rules):
    dc = server.dc
    before = mailbox_state(dc, "ro")
    out = pop3_attempt(dc, "ro", keep=True)
    p = out.client
    assert p.stat()[0] == 3
    assert p.dele(1).startswith(b"+OK")       # accepted, as RFC 1939 requires
    with pytest.raises(poplib.error_proto) as exc:
        p.quit()
    assert exc.value.args[0] == b"-ERR [SYS/PERM] Read-only session: Guest network"
    assert mailbox_state(dc, "ro") == before


def test_readonly_pop3_retr_keeps_unseen(server, ro_rules):
    dc = server.dc
    before = mailbox_state(dc, "ro")
    out = pop3_attempt(dc, "ro", keep=True)
    p = out.client
    resp, lines, _ = p.retr(1)
    assert resp.startswith(b"+OK") and b"Subject: ro message 1" in lines
    assert p.quit().startswith(b"+OK")
    assert mailbox_state(dc, "ro") == before


def test_pop3_control_retr_and_dele(server):
    """Control for the two tests above: with allow, RETR sets \\Seen and
    DELE+QUIT expunges."""
    dc = server.dc
    server.rules("allow user rw\n")
    before = mailbox_state(dc, "rw", ["INBOX"])["INBOX"]
    out = pop3_attempt(dc, "rw", keep=True)
    p = out.client
    p.retr(1)
    p.dele(2)
    assert p.quit().startswith(b"+OK")
    after = mailbox_state(dc, "rw", ["INBOX"])["INBOX"]
    assert len(after) == len(before) - 1
    assert "\\Seen" in dict(after)[before[0][0]]
    dc.deliver("rw", make_message("rw refill"))
    dc.doveadm("flags", "remove", "-u", "rw", "\\Seen", "mailbox", "INBOX", "all",
               check=True)


# ------------------------------------------------------------------ mailboxes

def _vis_session(server):
    out = imap_attempt(server.dc, "vis", keep=True)
    return out, out.client


def test_mailboxes_visible_list(server):
    dc = server.dc
    server.rules("allow user vis mailboxes INBOX,Sent\n")
    all_boxes = set(dc.doveadm("mailbox", "list", "-u", "vis").stdout.split())
    assert {"Drafts", "Archive", "Shared.Team"} <= all_boxes
    out, c = _vis_session(server)
    assert imap_list_names(c) == ["INBOX", "Sent"]
    assert imap_list_names(c, pattern="%") == ["INBOX", "Sent"]
    assert imap_list_names(c, "LSUB") == ["Sent"]
    typ, data = c.status("Sent", "(MESSAGES)")
    assert typ == "OK" and b"MESSAGES 1" in data[0]
    out.close()

    res = curl(f"imap://127.0.0.1:{dc.imap_port}/", "-u", "vis:secret")
    assert res.returncode == 0, res.stderr
    listed = sorted(l.rsplit(" ", 1)[1] for l in res.stdout.splitlines())
    assert listed == ["INBOX", "Sent"], res.stdout


def test_hidden_mailbox_looks_nonexistent(server):
    dc = server.dc
    server.rules("allow user vis mailboxes INBOX,Sent\n")
    before = mailbox_state(dc, "vis")
    out, c = _vis_session(server)
    try:
        for hidden in ("Drafts", "Shared.Team", "Archive"):
            for op in (lambda b: c.select(b),
                       lambda b: c.select(b, readonly=True),
                       lambda b: c.status(b, "(MESSAGES)"),
                       lambda b: c.append(b, None, None, make_message("x"))):
                typ_h, data_h = op(hidden)
                typ_n, data_n = op("NoSuchBox")
                assert typ_h == typ_n == "NO", (hidden, data_h)
                assert imap_text(data_h) == imap_text(data_n).replace("NoSuchBox", hidden)
        assert imap_select(c, "INBOX") == ("OK", False)
        for cmd in (lambda b: c.copy("1", b), lambda b: c._simple_command("MOVE", "1", b)):
            typ_h, data_h = cmd("Drafts")
            typ_n, data_n = cmd("NoSuchBox")
            assert typ_h == typ_n == "NO", data_h
            assert imap_text(data_h) == imap_text(data_n).replace("NoSuchBox", "Drafts")
            assert b"TRYCREATE" in data_h[0]
    finally:
        out.close()
    assert mailbox_state(dc, "vis") == before


def test_negated_mailboxes(server):
    dc = server.dc
    path = server.rules("allow user vis mailboxes !Shared*\n")
    mark = dc.log_mark()
    out, c = _vis_session(server)
    assert imap_list_names(c) == sorted(["INBOX", "Sent", "Drafts", "Archive", "Sent Items"])
    typ, data = c.select("Shared.Team")
    typ_n, data_n = c.select("NoSuchBox")
    assert typ == typ_n == "NO"
    assert imap_text(data) == imap_text(data_n).replace("NoSuchBox", "Shared.Team")
    assert "Shared.Team" in imap_text(data)
    assert imap_select(c, "Sent Items") == ("OK", False)
    out.close()
    dec = wait_decision(dc, "vis", "imap", mark)
    assert dec.level == "Info"       # a restricted allow is logged at info
    assert dec.text.endswith(f"allow by {path}:1 (hidden mailboxes: Shared*)")


def test_quoted_mailbox_names(server):
    path = server.rules('allow user vis mailboxes INBOX, "Sent Items"\n')
    mark = server.dc.log_mark()
    out, c = _vis_session(server)
    assert imap_list_names(c) == ["INBOX", "Sent Items"]
    out.close()
    dec = wait_decision(server.dc, "vis", "imap", mark)
    assert dec.text.endswith(f"allow by {path}:1 (visible mailboxes: INBOX,Sent Items)")


def test_readonly_with_mailboxes(server):
    dc = server.dc
    server.rules('readonly user vis reason "Look only" mailboxes INBOX,Drafts\n')
    before = mailbox_state(dc, "vis")
    out, c = _vis_session(server)
    assert imap_list_names(c) == ["Drafts", "INBOX"]
    assert imap_select(c, "Drafts") == ("OK", True)
    typ, data = c.copy("1", "INBOX")
    assert typ == "NO" and imap_text(data) == "[NOPERM] Read-only session: Look only"
    out.close()
    assert mailbox_state(dc, "vis") == before


def test_pop3_mailboxes_inbox(server):
    dc = server.dc
    server.rules("allow user vis mailboxes INBOX\n")
    count = len(mailbox_state(dc, "vis", ["INBOX"])["INBOX"])
    out = pop3_attempt(dc, "vis", keep=True)
    assert out.client.stat()[0] == count == 3
    resp, lines, _ = out.client.retr(1)
    assert b"Subject: vis message 1" in lines
    out.close()
    res = curl(f"pop3://127.0.0.1:{dc.pop3_port}/", "-u", "vis:secret")
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 3, res


def test_pop3_hidden_inbox_fails_cleanly(server):
    """POP3 can only reach INBOX; a rule that hides it ends the session
    with an error in the log (and no crash). The client has already had
    "+OK Logged in." (Dovecot sends it before it opens INBOX)."""
    dc = server.dc
    server.rules("allow user vis mailboxes Sent\n")
    before = mailbox_state(dc, "vis")
    mark = dc.log_mark()
    with RawConn("127.0.0.1", dc.pop3_port) as r:
        r.readline()
        r.send("USER vis\r\nPASS secret\r\nSTAT\r\n")
        lines = r.read_all()
    assert lines[0] == "+OK"
    assert not any(l.startswith("+OK ") and l[4:].split()[0].isdigit() for l in lines), lines
    wait_log(dc, r"pop3\(vis\).*Error: Couldn't open INBOX", mark)
    assert mailbox_state(dc, "vis") == before


# ------------------------------------------------------------------ logging

def test_allow_logged_only_at_debug(server):
    dc = server.dc
    path = server.rules("allow user plain\n"
                        "allow user dbg\n")
    mark = dc.log_mark()
    for proto in ("imap", "pop3"):
        assert not (imap_attempt if proto == "imap" else pop3_attempt)(dc, "plain").refused
        session_logged_out(dc, proto, "plain", mark)
    assert decisions(dc, mark, "plain") == []
    assert not [l for l in dc.log_text()[mark:].splitlines() if "access_rules" in l]

    for proto, line in (("imap", 2), ("pop3", 2)):
        out, dec = try_session(server, proto, "dbg")
        assert not out.refused
        assert (dec.action, dec.level, dec.line) == ("allow", "Debug", line), dec.text
        assert dec.text.endswith(f"Debug: access_rules: allow by {path}:{line}")


@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_refusals_and_readonly_logged_at_info(server, proto):
    path = server.rules('deny user denyu reason "No"\n'
                        "readonly user ro\n"
                        "allow user vis mailboxes INBOX,Sent\n"
                        'default deny reason "Default says no"\n')
    expected = {
        "denyu": f"Info: access_rules: deny: session refused by {path}:1: No",
        "ro": f"Info: access_rules: readonly by {path}:2",
        "vis": f"Info: access_rules: allow by {path}:3 (visible mailboxes: INBOX,Sent)",
        "plain": f"Info: access_rules: deny: session refused by {path}:4 (default): "
                 "Default says no",
    }
    for user, text in expected.items():
        out, dec = try_session(server, proto, user)
        assert dec.text.endswith(text), dec.text
        assert out.refused == (user in ("denyu", "plain"))
