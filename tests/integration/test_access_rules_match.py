"""access_rules: every match kind, for IMAP and POP3, against the real
server. Each test installs its own rules (the plugin reloads the file when
it changes) and checks both what the client got and the decision the
plugin logged, with the rule's file:line."""

from __future__ import annotations

import imaplib

import pytest

from access_rules_helpers import (DAY_NAMES, IMAP_INTERNAL_ERROR,
                                  _server_log_on_failure, _no_crash,  # noqa: F401
                                  assert_no_crash, avoid_midnight, curl,
                                  curl_received, expect_allowed,
                                  expect_denied, hhmm, imap_attempt,
                                  now_minutes, pop3_attempt, server_fixture,
                                  today_index, try_session, wait_log)

USERS = [
    "alice@example.com",
    "bob@example.org",
    {"name": "carol", "fields": {"access_rules_groups": "finance,staff"}},
    {"name": "gina", "fields": {"access_rules_groups": "staff"}},
    {"name": "dave", "fields": {"access_rules_ruleset": "strict"}},
    {"name": "erin", "fields": {"access_rules_ruleset": "nosuch"}},
]
ALICE, BOB = "alice@example.com", "bob@example.org"
PROTOS = ["imap", "pop3"]

server = server_fixture(users=USERS)



def _ports(dc, proto):
    """(plain port, SSL port) of the protocol."""
    return ((dc.imap_port, dc.imaps_port) if proto == "imap"
            else (dc.pop3_port, dc.pop3s_port))


@pytest.mark.parametrize("proto", PROTOS)
def test_protocol(server, proto):
    other = "pop3" if proto == "imap" else "imap"
    server.rules(f'deny protocol {proto} reason "no {proto} here"\n'
                 "allow\n")
    expect_denied(server, proto, ALICE, 1, f"no {proto} here")
    expect_allowed(server, other, ALICE, 2)

    # negation: every protocol but this one
    server.rules(f'deny protocol !{other} reason "only {other}"\n'
                 "allow protocol imap,pop3\n")
    expect_denied(server, proto, ALICE, 1, f"only {other}")
    expect_allowed(server, other, ALICE, 2)


@pytest.mark.parametrize("proto", PROTOS)
def test_user_glob(server, proto):
    server.rules('deny user b?b@* reason "glob ?"\n'
                 'deny user *@EXAMPLE.COM,!carol reason "glob *, case-insensitive"\n'
                 "allow\n")
    expect_denied(server, proto, BOB, 1, "glob ?")
    expect_denied(server, proto, ALICE, 2, "glob *, case-insensitive")
    expect_allowed(server, proto, "carol", 3)

    # a negated value excludes a user the positive glob covers
    server.rules('deny user *,!alice@* reason "all but alice"\n'
                 "allow\n")
    expect_allowed(server, proto, ALICE, 2)
    expect_denied(server, proto, BOB, 1, "all but alice")


@pytest.mark.parametrize("proto", PROTOS)
def test_domain(server, proto):
    server.rules('deny domain example.org reason "org domain"\n'
                 "allow\n")
    expect_denied(server, proto, BOB, 1, "org domain")
    expect_allowed(server, proto, ALICE, 2)
    expect_allowed(server, proto, "carol", 2)

    # negated: a user without a domain doesn't match, not even "!x"
    server.rules('deny domain !example.com reason "not example.com"\n'
                 "allow\n")
    expect_denied(server, proto, BOB, 1, "not example.com")
    expect_allowed(server, proto, ALICE, 2)
    expect_allowed(server, proto, "carol", 2)

    server.rules('deny domain example.* reason "domain glob"\n'
                 "allow\n")
    expect_denied(server, proto, ALICE, 1, "domain glob")
    expect_denied(server, proto, BOB, 1, "domain glob")


@pytest.mark.parametrize("proto", PROTOS)
def test_group(server, proto):
    server.rules('deny group finance reason "finance"\n'
                 "allow\n")
    expect_denied(server, proto, "carol", 1, "finance")
    expect_allowed(server, proto, "gina", 2)
    expect_allowed(server, proto, ALICE, 2)

    # any of the user's groups counts; a negated group excludes its members
    server.rules('deny group staff,!finance reason "staff, not finance"\n'
                 "allow\n")
    expect_denied(server, proto, "gina", 1, "staff, not finance")
    expect_allowed(server, proto, "carol", 2)


@pytest.mark.parametrize("proto", PROTOS)
def test_from_ipv4(server, proto):
    server.rules('deny from 127.0.0.2,127.0.0.3/32 reason "single hosts"\n'
                 'deny from 127.0.1.0/24,!127.0.1.7 reason "a /24 but .7"\n'
                 "allow\n")
    expect_allowed(server, proto, ALICE, 3, source_address="127.0.0.1")
    expect_denied(server, proto, ALICE, 1, "single hosts", source_address="127.0.0.2")
    expect_denied(server, proto, ALICE, 1, "single hosts", source_address="127.0.0.3")
    expect_allowed(server, proto, ALICE, 3, source_address="127.0.0.4")
    expect_denied(server, proto, ALICE, 2, "a /24 but .7", source_address="127.0.1.5")
    expect_allowed(server, proto, ALICE, 3, source_address="127.0.1.7")


@pytest.mark.parametrize("proto", PROTOS)
def test_from_ipv6(server, proto):
    if not server.dc.ipv6:
        pytest.skip("no IPv6 loopback")
    server.rules('deny from 127.0.0.0/8 reason "v4 loopback"\n'
                 'deny from ::1 reason "v6 loopback"\n'
                 "allow\n")
    expect_denied(server, proto, ALICE, 1, "v4 loopback")
    expect_denied(server, proto, ALICE, 2, "v6 loopback", ipv6=True)

    # an IPv4 network never matches an IPv6 client, also not negated ones
    server.rules('deny from !127.0.0.0/8 reason "not v4 loopback"\n'
                 "allow\n")
    expect_denied(server, proto, ALICE, 1, "not v4 loopback", ipv6=True)
    expect_allowed(server, proto, ALICE, 2)

    server.rules("allow from ::/0\n"
                 'default deny reason "IPv6 only"\n')
    expect_allowed(server, proto, ALICE, 1, ipv6=True)
    expect_denied(server, proto, ALICE, 2, "IPv6 only")


def test_from_ipv6_curl(server):
    """curl over [::1] for both protocols, matched by an IPv6 rule."""
    if not server.dc.ipv6:
        pytest.skip("no IPv6 loopback")
    dc = server.dc
    server.rules('deny from 127.0.0.0/8 reason "use IPv6"\n'
                 "allow from ::1\n")
    res = curl("--ipv6", f"imap://[::1]:{dc.imap_port}/", "-u", f"{ALICE}:secret")
    assert res.returncode == 0, res.stderr
    assert '"." INBOX' in res.stdout
    res = curl("--ipv6", f"pop3://[::1]:{dc.pop3_port}/", "-u", f"{ALICE}:secret")
    assert res.returncode == 0, res.stderr

    res = curl("-v", f"pop3://127.0.0.1:{dc.pop3_port}/", "-u", f"{ALICE}:secret")
    assert res.returncode == 67, res.stderr           # CURLE_LOGIN_DENIED
    assert "-ERR [SYS/PERM] use IPv6" in curl_received(res)
    res = curl("-v", f"imap://127.0.0.1:{dc.imap_port}/", "-u", f"{ALICE}:secret")
    assert res.returncode != 0
    assert "* BYE [NOPERM] use IPv6" in curl_received(res)


@pytest.mark.parametrize("proto", PROTOS)
def test_port(server, proto):
    plain, ssl_port = _ports(server.dc, proto)
    server.rules(f'deny port {ssl_port} reason "not on the SSL port"\n'
                 "allow\n")
    expect_allowed(server, proto, ALICE, 2)
    expect_denied(server, proto, ALICE, 1, "not on the SSL port", ssl=True)

    server.rules(f'deny port !{plain} reason "plain port only"\n'
                 f"allow port {min(plain, ssl_port)}-{max(plain, ssl_port)}\n")
    expect_allowed(server, proto, ALICE, 2)
    expect_denied(server, proto, ALICE, 1, "plain port only", ssl=True)


@pytest.mark.parametrize("proto", PROTOS)
def test_tls(server, proto):
    starttls = {"starttls": True} if proto == "imap" else {"stls": True}
    server.rules('deny tls no reason "TLS required"\n'
                 "allow tls yes\n")
    # plaintext from localhost is still "tls no"
    expect_denied(server, proto, ALICE, 1, "TLS required")
    expect_allowed(server, proto, ALICE, 2, ssl=True)
    expect_allowed(server, proto, ALICE, 2, **starttls)

    server.rules('deny tls yes reason "no TLS here"\n'
                 "allow tls no\n")
    expect_denied(server, proto, ALICE, 1, "no TLS here", ssl=True)
    expect_denied(server, proto, ALICE, 1, "no TLS here", **starttls)
    expect_allowed(server, proto, ALICE, 2)


def test_tls_curl(server):
    dc = server.dc
    server.rules('deny tls no reason "TLS required"\n'
                 "allow\n")
    for url in (f"imaps://127.0.0.1:{dc.imaps_port}/",
                f"pop3s://127.0.0.1:{dc.pop3s_port}/"):
        res = curl("-k", url, "-u", f"{ALICE}:secret")
        assert res.returncode == 0, (url, res.stderr)
    # STARTTLS / STLS
    for url in (f"imap://127.0.0.1:{dc.imap_port}/",
                f"pop3://127.0.0.1:{dc.pop3_port}/"):
        res = curl("-k", "--ssl-reqd", url, "-u", f"{ALICE}:secret")
        assert res.returncode == 0, (url, res.stderr)
    res = curl("-v", f"pop3://127.0.0.1:{dc.pop3_port}/", "-u", f"{ALICE}:secret")
    assert res.returncode == 67
    assert "-ERR [SYS/PERM] TLS required" in curl_received(res)


def test_client_name_and_version(server):
    """IMAP ID name/version globs (the ID is sent after login here)."""
    server.rules('deny client-name "Evil*" reason "evil client"\n'
                 'deny client-name good* client-version 1.* reason "too old"\n'
                 "allow\n")

    def idarg(name, version=None):
        s = f'("name" "{name}"'
        return s + (f' "version" "{version}")' if version else ")")

    expect_denied(server, "imap", ALICE, 1, "evil client", client_id=idarg("EvilMail"))
    expect_denied(server, "imap", ALICE, 1, "evil client", client_id=idarg("evil"))
    expect_denied(server, "imap", ALICE, 2, "too old", client_id=idarg("GoodMail", "1.5"))
    expect_allowed(server, "imap", ALICE, 3, client_id=idarg("GoodMail", "2.0"))
    # no version: the version condition can't hold
    expect_allowed(server, "imap", ALICE, 3, client_id=idarg("GoodMail"))
    expect_allowed(server, "imap", ALICE, 3, client_id=idarg("Thunderbird"))
    # without an ID nothing client-related can match
    expect_allowed(server, "imap", ALICE, 3)


def test_client_name_never_matches_without_id(server):
    """POP3 sessions and IMAP clients without an ID match no client-name
    condition, not even a negated one."""
    server.rules('deny client-name !Thunderbird reason "Thunderbird only"\n'
                 "allow\n")
    expect_allowed(server, "pop3", ALICE, 2)
    expect_allowed(server, "imap", ALICE, 2)
    expect_denied(server, "imap", ALICE, 1, "Thunderbird only",
                  client_id='("name" "Outlook")')
    expect_allowed(server, "imap", ALICE, 2, client_id='("name" "Thunderbird")')

    server.rules('deny client-name * reason "any client name"\n'
                 'deny client-version * reason "any version"\n'
                 "allow\n")
    expect_allowed(server, "pop3", ALICE, 3)
    expect_allowed(server, "imap", ALICE, 3)


@pytest.mark.parametrize("proto", PROTOS)
def test_time(server, proto):
    """Windows computed from the local time now: one 3 h window ahead of
    now (doesn't contain it), one around it (does)."""
    avoid_midnight()
    m = now_minutes()
    outside = f"{hhmm(m + 90)}-{hhmm(m + 270)}"
    inside = f"{hhmm(m - 90)}-{hhmm(m + 90)}"
    server.rules(f'deny time {outside} reason "outside {outside}"\n'
                 f'deny time {inside} reason "inside {inside}"\n'
                 "allow\n")
    expect_denied(server, proto, ALICE, 2, f"inside {inside}")

    # the end of a window is excluded, its start included
    server.rules(f'deny time {hhmm(m - 120)}-{hhmm(m)} reason "ended"\n'
                 f'deny time {hhmm(m)}-{hhmm(m + 120)} reason "started"\n'
                 "allow\n")
    expect_denied(server, proto, ALICE, 2, "started")


@pytest.mark.parametrize("proto", PROTOS)
def test_time_wraps_past_midnight(server, proto):
    """A window whose start is after its end covers midnight (22:00-06:00)."""
    avoid_midnight()
    m = now_minutes()
    # a wrapping window that contains now
    inside = (f"{hhmm(m - 60)}-00:30" if m >= 120 else f"23:00-{hhmm(m + 60)}")
    # a wrapping window that doesn't: its gap contains now
    outside = f"{hhmm(m + 60) if m + 60 < 1440 else '24:00'}-{hhmm(max(m - 60, 0))}"
    start, end = (int(x[:2]) * 60 + int(x[3:]) for x in inside.split("-"))
    assert start > end, inside
    server.rules(f'deny time {outside} reason "wrap, outside"\n'
                 f'deny time {inside} reason "wrap, inside"\n'
                 "allow\n")
    expect_denied(server, proto, ALICE, 2, "wrap, inside")


@pytest.mark.parametrize("proto", PROTOS)
def test_days(server, proto):
    avoid_midnight()
    d = today_index()
    today, tomorrow = DAY_NAMES[d], DAY_NAMES[(d + 1) % 7]
    others = ",".join(DAY_NAMES[(d + i) % 7] for i in range(1, 7))
    # a range that wraps around the week and skips today
    not_today = f"{DAY_NAMES[(d + 1) % 7]}-{DAY_NAMES[(d + 6) % 7]}"
    server.rules(f'deny days {others} reason "not today (list)"\n'
                 f'deny days {not_today} reason "not today (range)"\n'
                 f'deny days {today.upper()},{tomorrow} reason "today"\n'
                 "allow\n")
    expect_denied(server, proto, ALICE, 3, "today")

    # days and time together: both must hold
    m = now_minutes()
    server.rules(f'deny days {today} time {hhmm(m + 120)}-{hhmm(m + 240)} reason "later today"\n'
                 f'deny days {tomorrow} time {hhmm(m - 60)}-{hhmm(m + 60)} reason "tomorrow now"\n'
                 f'readonly days {DAY_NAMES[(d + 6) % 7]}-{tomorrow} '
                 f'time {hhmm(m - 60)}-{hhmm(m + 60)} reason "yesterday to tomorrow, now"\n'
                 "allow\n")
    out, dec = try_session(server, proto, ALICE)
    assert not out.refused
    assert (dec.action, dec.line, dec.level) == ("readonly", 3, "Info"), dec.text


@pytest.mark.parametrize("proto", PROTOS)
def test_first_match_wins_and_default(server, proto):
    path = server.rules("# comment lines count\n"
                        f"allow user {ALICE}\n"
                        'deny domain example.com reason "not reached for alice"\n'
                        'readonly user bob@* reason "bob reads"\n'
                        'deny user bob@* reason "not reached for bob"\n'
                        'default deny reason "nobody else"\n')
    expect_allowed(server, proto, ALICE, 2)
    out, dec = try_session(server, proto, BOB)
    assert not out.refused
    assert (dec.action, dec.line, dec.default) == ("readonly", 4, ""), dec.text
    dec = expect_denied(server, proto, "carol", 6, "nobody else")
    assert dec.default == "default"
    assert f"by {path}:6 (default): nobody else" in dec.text

    # no matching rule and no default line: the built-in allow
    server.rules("deny user nobody\n")
    dec = expect_allowed(server, proto, "carol", None)
    assert dec.default == "built-in default"
    assert dec.text.endswith(f"allow by {server.rules_path} (built-in default)")

    # default without a reason
    server.rules("allow user carol\n"
                 "default deny\n")
    expect_denied(server, proto, ALICE, 2, "Access denied by the server's policy.")


@pytest.mark.parametrize("proto", PROTOS)
def test_ruleset_per_user(server, proto):
    server.rules('deny user dave reason "default set: not used for dave"\n'
                 "allow\n"
                 "\n"
                 "ruleset strict\n"
                 "allow protocol imap tls yes\n"
                 'default deny reason "strict: IMAPS only"\n')
    expect_allowed(server, proto, ALICE, 2)
    if proto == "imap":
        expect_allowed(server, proto, "dave", 5, ssl=True)
    else:
        dec = expect_denied(server, proto, "dave", 6, "strict: IMAPS only", ssl=True)
        assert dec.default == "default"
    expect_denied(server, proto, "dave", 6, "strict: IMAPS only")


def test_unknown_ruleset_refuses(server):
    path = server.rules("allow\n"
                        "ruleset strict\n"
                        "allow\n")
    dc = server.dc
    mark = dc.log_mark()
    c = dc.imap_connect()
    typ, data = c.login("erin", "secret")
    # the login itself succeeded, the session did not
    assert typ == "OK" and b"initialization failed" in data[0], data
    with pytest.raises(imaplib.IMAP4.abort) as exc:
        c.noop()
    assert IMAP_INTERNAL_ERROR in str(exc.value)
    c.shutdown()
    wait_log(dc, rf"imap\(erin\).*Error: access_rules: Refusing the session: "
                 rf"access_rules_ruleset=nosuch: no (such )?rule set.* in {path}$", mark)

    mark = dc.log_mark()
    out = pop3_attempt(dc, "erin")
    assert out.refused and out.reply == f"-ERR [SYS/TEMP] {IMAP_INTERNAL_ERROR}"
    wait_log(dc, rf"pop3\(erin\).*Error: access_rules: Refusing the session: "
                 rf"access_rules_ruleset=nosuch: no (such )?rule set.* in {path}$", mark)
    # other users are unaffected
    assert not imap_attempt(dc, ALICE).refused
