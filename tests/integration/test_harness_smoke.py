"""Smoke tests for the Dovecot test harness itself (no custom plugin needed)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import subprocess
import tempfile

import pytest

from dovecot_instance import (DovecotInstance, DovecotStartError, make_message,
                              process_group_alive)


@pytest.fixture(scope="module")
def empty_plugin_dir():
    with tempfile.TemporaryDirectory() as d:
        yield d


@pytest.fixture(scope="module")
def server(empty_plugin_dir):
    """One stock instance shared by the read-only login checks (start/stop
    costs ~1 s, mostly Dovecot's own shutdown wait)."""
    with DovecotInstance(plugin_dir=empty_plugin_dir) as dc:
        yield dc


def _need_ipv6(dc, ipv6):
    if ipv6 and not dc.ipv6:
        pytest.skip("no IPv6 loopback")


def _rip(ipv6):
    return "::1" if ipv6 else "127.0.0.1"


@pytest.mark.parametrize("ssl", [False, True], ids=["imap", "imaps"])
@pytest.mark.parametrize("ipv6", [False, True], ids=["v4", "v6"])
def test_imap_login(server, ssl, ipv6):
    _need_ipv6(server, ipv6)
    mark = server.log_mark()
    client = server.imap("alice", ssl=ssl, ipv6=ipv6)
    typ, boxes = client.list()
    assert typ == "OK" and any(b"INBOX" in b for b in boxes)
    client.logout()
    server.wait_for_log(rf"imap-login: Info: Login: user=<alice>.*rip={_rip(ipv6)},"
                        rf".*{'TLS' if ssl else 'secured'}", since=mark)


@pytest.mark.parametrize("ssl", [False, True], ids=["pop3", "pop3s"])
@pytest.mark.parametrize("ipv6", [False, True], ids=["v4", "v6"])
def test_pop3_login(server, ssl, ipv6):
    _need_ipv6(server, ipv6)
    mark = server.log_mark()
    client = server.pop3("bob", ssl=ssl, ipv6=ipv6)
    count, _size = client.stat()
    assert count >= 0
    client.quit()
    server.wait_for_log(rf"pop3-login: Info: Login: user=<bob>.*rip={_rip(ipv6)},",
                        since=mark)


def test_wrong_password_is_rejected(server):
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        server.imap("alice", "wrong")
    with pytest.raises(poplib.error_proto):
        server.pop3("alice", "wrong")


def test_unauthenticated_clients(server):
    client = server.imap_connect(ssl=True)
    assert "AUTH=PLAIN" in client.capabilities
    client.logout()
    pop = server.pop3_connect()
    assert pop.getwelcome().startswith(b"+OK")
    pop.quit()


def test_source_address_shows_up_as_remote_ip(server):
    mark = server.log_mark()
    server.imap("carol", source_address="127.0.0.5").logout()
    server.pop3("carol", ssl=True, source_address="127.0.0.6").quit()
    server.wait_for_log(r"imap-login: Info: Login: user=<carol>.*rip=127\.0\.0\.5,",
                        since=mark)
    server.wait_for_log(r"pop3-login: Info: Login: user=<carol>.*rip=127\.0\.0\.6,",
                        since=mark)


def _curl(*args):
    # -g: don't treat the brackets of [::1] as a glob; -k: self-signed cert.
    return subprocess.run(["curl", "-gksS", "--max-time", "10", *args],
                          capture_output=True, text=True)


@pytest.mark.parametrize("scheme", ["imap", "imaps", "pop3", "pop3s"])
@pytest.mark.parametrize("ipv6", [False, True], ids=["v4", "v6"])
def test_curl_login(server, scheme, ipv6):
    _need_ipv6(server, ipv6)
    port = getattr(server, f"{scheme}_port")
    host = "[::1]" if ipv6 else "127.0.0.1"
    url = f"{scheme}://{host}:{port}/"
    ok = _curl("--user", "alice:secret", url)
    assert ok.returncode == 0, ok.stderr
    if scheme.startswith("imap"):
        assert "INBOX" in ok.stdout
    bad = _curl("--user", "alice:wrong", url)
    assert bad.returncode == 67, (bad.returncode, bad.stderr)  # login denied


def test_lmtp_delivery_then_fetch(server):
    server.deliver("bob", make_message(subject="smoke delivery", body="payload\n"))
    server.wait_for_log(r"lmtp\(bob\).*saved mail to INBOX")

    client = server.imap("bob")
    typ, data = client.select("INBOX", readonly=True)
    assert typ == "OK"
    typ, hits = client.search(None, 'SUBJECT "smoke delivery"')
    assert typ == "OK" and hits[0], hits
    num = hits[0].split()[-1]
    typ, msg = client.fetch(num, "(BODY.PEEK[])")
    assert b"payload" in msg[0][1]
    client.logout()

    pop = server.pop3("bob")
    count, _ = pop.stat()
    assert count >= 1
    _, lines, _ = pop.retr(count)
    assert b"Subject: smoke delivery" in lines
    pop.quit()

    url = f"pop3://127.0.0.1:{server.pop3_port}/{count}"
    got = _curl("--user", "bob:secret", url)
    assert got.returncode == 0 and "smoke delivery" in got.stdout


def test_lmtp_unix_socket_and_unknown_recipient(server):
    with smtplib.LMTP(str(server.lmtp_socket)) as lmtp:
        assert not lmtp.sendmail("s@example.com", ["carol"], make_message("via socket"))
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        server.deliver("nosuchuser", make_message())


def test_log_has_no_errors(server):
    # Runs after the flows above on the shared instance.
    assert server.log_errors() == []


def test_userdb_fields_and_plugin_settings(dovecot, empty_plugin_dir):
    dc = dovecot(
        plugin_dir=empty_plugin_dir,
        users=["alice",
               {"name": "dave", "password": "pw",
                "fields": {"access_rules_groups": "finance,staff"}}],
        plugin_settings={"smoke_setting": "some value", "smoke_flag": True})
    user = dc.doveadm("user", "dave")
    assert user.returncode == 0, user.stderr
    assert "access_rules_groups\tfinance,staff" in user.stdout
    assert f"home\t{dc.home('dave')}" in user.stdout
    dc.imap("dave", "pw").logout()
    conf = subprocess.run(["doveconf", "-c", str(dc.config_path), "-h",
                           "plugin/smoke_setting", "plugin/smoke_flag"],
                          capture_output=True, text=True)
    assert conf.stdout.split("\n")[:2] == ["some value", "yes"], conf


def test_stock_plugins_load_from_merged_plugin_dir(dovecot, empty_plugin_dir):
    dc = dovecot(
        plugin_dir=empty_plugin_dir,
        mail_plugins="quota",
        plugin_settings={"quota": "maildir:User quota",
                         "quota_rule": "*:storage=1M"},
        extra_conf="protocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\n")
    client = dc.imap("alice")
    typ, data = client.getquotaroot("INBOX")
    assert typ == "OK" and b"STORAGE 0 1024" in data[1][0], data
    client.logout()


def test_built_plugins_are_linked(tmp_path):
    # A stand-in .so only needs to show up in mail_plugin_dir; it is never
    # loaded because mail_plugins doesn't name it.
    (tmp_path / "lib99_fake_plugin.so").write_bytes(b"")
    with DovecotInstance(plugin_dir=tmp_path) as dc:
        link = dc.mail_plugin_dir / "lib99_fake_plugin.so"
        assert link.exists()
        assert (dc.mail_plugin_dir / "lib20_fts_plugin.so").exists()


def test_missing_plugin_fails_clearly(dovecot, empty_plugin_dir):
    with pytest.raises(DovecotStartError, match="no_such_thing.*not found"):
        dovecot(plugin_dir=empty_plugin_dir, mail_plugins="no_such_thing")


def test_bad_config_reports_log(empty_plugin_dir):
    dc = DovecotInstance(plugin_dir=empty_plugin_dir,
                         extra_conf="no_such_setting = 1\n")
    with pytest.raises(DovecotStartError, match="no_such_setting"):
        dc.start()
    assert dc.dir is None and not dc.running


def test_write_file_and_reload(dovecot, empty_plugin_dir):
    dc = dovecot(plugin_dir=empty_plugin_dir)
    path = dc.write_file("rules/test.rules", "allow all\n")
    assert path == dc.dir / "rules" / "test.rules"
    assert path.read_text() == "allow all\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(ValueError):
        dc.write_file("../escape", "x")

    dc.plugin_settings["smoke_rules"] = str(path)
    dc.users.append({"name": "erin", "password": "pw2"})
    dc.reload()
    conf = subprocess.run(["doveconf", "-c", str(dc.config_path), "-h",
                           "plugin/smoke_rules"], capture_output=True, text=True)
    assert conf.stdout.strip() == str(path)
    dc.imap("erin", "pw2").logout()
    dc.imap("alice").logout()


def test_instances_run_side_by_side_and_clean_up(empty_plugin_dir):
    a = DovecotInstance(plugin_dir=empty_plugin_dir).start()
    b = DovecotInstance(plugin_dir=empty_plugin_dir).start()
    try:
        assert a.imap_port != b.imap_port and a.dir != b.dir
        a.deliver("alice", make_message("to a"))
        assert a.imap("alice").select()[1] == [b"1"]
        assert b.imap("alice").select()[1] == [b"0"]
    finally:
        dirs, pids = (a.dir, b.dir), (a.proc.pid, b.proc.pid)
        a.stop()
        b.stop()
    for d in dirs:
        assert not d.exists()
    for pid in pids:
        # Whole process group gone, not just the master. (Zombies may linger
        # until PID 1 reaps them; they hold no sockets or files.)
        assert not process_group_alive(pid)
