"""Bad leave_on_server settings and device names refuse the POP3 session:
the client gets Dovecot's internal-error reply to PASS, the log has an
Error line `leave_on_server: <setting>=<value>: <what is wrong>`, and the
plugin never falls back to another policy (least of all delete): a
client that pipelines DELE and QUIT after PASS expunges nothing.

The settings come per user from userdb fields, on a server whose
plugin { } says policy = delete: a good per-user value overrides it, a
bad one refuses only that user. A second server has no
mail_attribute_dict at all."""

from __future__ import annotations

import re

import pytest

from leave_on_server_helpers import (_server_log_checks, allow_log_errors,  # noqa: F401  (fixtures)
                                     INTERNAL_ERROR, RawPop3, account, deliver,
                                     device_values, listed, login, make_server,
                                     msgids, pop3, seen_ids, server_fixture,
                                     wait_log, wait_pid_gone)

P = "leave_on_server_"
PERCENT = "must be a percentage of the quota limit from 1% to 100%"
DAYS = "must be a whole number from 0 to 36500"

# user -> (its userdb fields, what the Error line must start with (the
# setting named), what else it must say). Dovecot expands %-variables in
# plugin settings and userdb fields, so the plugin gets "150%" as "150":
# the logged value may lack the '%'.
BAD_SETTINGS = {
    "badpolicy": ({P + "policy": "bogus"}, "leave_on_server_policy=bogus: ",
                  "unknown policy (use delete, keep, expire or quota)"),
    "typopolicy": ({P + "policy": "deletee"}, "leave_on_server_policy=deletee: ",
                   "unknown policy"),
    "negdays": ({P + "policy": "expire", P + "expire_days": "-3"},
                "leave_on_server_expire_days=-3: ", DAYS),
    "bigdays": ({P + "policy": "expire", P + "expire_days": "36501"},
                "leave_on_server_expire_days=36501: ", DAYS),
    "worddays": ({P + "policy": "expire", P + "expire_days": "7d"},
                 "leave_on_server_expire_days=7d: ", DAYS),
    "keepdays": ({P + "policy": "keep", P + "expire_days": "x"},
                 "leave_on_server_expire_days=x: ", DAYS),
    "nodays": ({P + "policy": "expire"}, "leave_on_server_expire_days is not set",
               ""),
    "badfrom": ({P + "policy": "expire", P + "expire_days": "1",
                 P + "expire_from": "last"}, "leave_on_server_expire_from=last: ", ""),
    "badhigh": ({P + "quota_high": "9x0%"}, "leave_on_server_quota_high=9x0",
                PERCENT),
    "overhigh": ({P + "quota_high": "150%"}, "leave_on_server_quota_high=150",
                 PERCENT),
    "zerolow": ({P + "quota_low": "0%"}, "leave_on_server_quota_low=0", PERCENT),
    "neglow": ({P + "quota_low": "-5%"}, "leave_on_server_quota_low=-5", PERCENT),
    "lowhigh": ({P + "quota_high": "80%", P + "quota_low": "90%"},
                "leave_on_server_quota_", re.compile(
                    r"quota_low=90%.*quota_high=80%|quota_high=80%.*quota_low=90%")),
    "lowishigh": ({P + "quota_high": "85", P + "quota_low": "85%"},
                  "leave_on_server_quota_", re.compile(
                      r"quota_low=85%.*quota_high=85%|quota_high=85%.*quota_low=85%")),
    "noquota": ({P + "policy": "quota"}, "leave_on_server_policy=quota: ",
                "the quota plugin is not loaded"),
    "badseen": ({P + "mark_seen": "maybe"}, "leave_on_server_mark_seen=maybe: ", ""),
    "badnew": ({P + "new_only": "perhaps"}, "leave_on_server_new_only=perhaps: ", ""),
}

# alias suffix -> device name that must be refused (login "dev-<suffix>")
BAD_DEVICES = {
    "slash": "bad/name",
    "long": "d" * 65,
    "comma": "a,b",
    "umlaut": "gerät",
    "dotdot": "../x",
}
GOOD_DEVICES = {"ok64": "d" * 64, "chars": "a.b_c-d+e@f.9"}

USERS = [
    *[u for name, (fields, _, _) in BAD_SETTINGS.items()
      for u in account(name, devices=("phone",), fields=fields)],
    *account("dev", devices=(), device_fields={**BAD_DEVICES, **GOOD_DEVICES}),
    *account("fielddev", devices=(), fields={P + "device_field": "client_dev"},
             device_field="client_dev",
             device_fields={"tablet": "tablet", "badtab": "x/y"}),
    *account("overkeep", fields={P + "policy": "keep"}),
    *account("plain"),
]

# plugin { }: delete, so that a bad per-user value that fell back to the
# global setting would show as expunged mail
server = server_fixture(USERS, {P + "policy": "delete"})


@pytest.fixture(scope="module", autouse=True)
def mail(server):
    """Two messages in every mailbox, before any test runs."""
    ids = {}
    for u in USERS:
        if "passdb_fields" not in u:
            ids[u["name"]] = deliver(server, u["name"], 2)
    return ids


def refused(dc, login_name: str, since: int) -> tuple[list[str], int]:
    """Log in with pipelined commands that would expunge both messages if
    the session got through; returns the replies and the session's pid."""
    c = RawPop3(dc)
    try:
        assert c.readline().startswith("+OK")
        c.send(f"USER {login_name}\r\nPASS secret\r\nSTAT\r\nRETR 1\r\n"
               "DELE 1\r\nDELE 2\r\nQUIT\r\n")
        replies = c.read_all()
    finally:
        c.close()
    m = wait_log(dc, rf"pop3-login: Info: Login: user=<[^>]*>, .*"
                     rf"rip={re.escape(c.source)}, .*mpid=(\d+)", since)
    pid = int(m.group(1))
    wait_pid_gone(pid)
    return replies, pid


def expect_refused(dc, user: str, login_name: str, start: str, ids, says=""):
    state = device_values(dc, user)
    mark = dc.log_mark()
    replies, pid = refused(dc, login_name, mark)
    assert replies[:2] == ["+OK", INTERNAL_ERROR], replies
    assert len(replies) == 2, f"session went on after the refusal: {replies}"
    m = wait_log(dc, rf"^.* pop3\((?:[^)]*\)<{pid}>|{pid}\))[^:]*: Error: "
                     r"leave_on_server: (.*)$", mark)
    text = m.group(1)
    assert text.startswith(start), (text, start)
    if isinstance(says, re.Pattern):
        assert says.search(text), (text, says)
    else:
        assert says in text, (text, says)
    # never a fallback: nothing expunged, nothing flagged, nothing recorded
    assert msgids(dc, user) == ids
    assert seen_ids(dc, user) == set()
    assert device_values(dc, user) == state
    return text


@pytest.mark.parametrize("user", sorted(BAD_SETTINGS))
def test_bad_setting_refuses_session(server, mail, user, allow_log_errors):
    fields, start, says = BAD_SETTINGS[user]
    for name in (user, login(user, "phone")):
        expect_refused(server, user, name, start, mail[user], says)
    assert device_values(server, user) == {}


@pytest.mark.parametrize("suffix", sorted(BAD_DEVICES))
def test_bad_device_name_refuses_session(server, mail, suffix, allow_log_errors):
    expect_refused(server, "dev", f"dev-{suffix}",
                   f"pop3_device={BAD_DEVICES[suffix]}: ", mail["dev"], "device name")


@pytest.mark.parametrize("suffix", sorted(GOOD_DEVICES))
def test_good_device_names(server, mail, suffix):
    with pop3(server, "dev", suffix) as s:
        assert s.count() == 2
    assert GOOD_DEVICES[suffix] in device_values(server, "dev")


def test_device_field_setting(server, mail, allow_log_errors):
    with pop3(server, "fielddev", "tablet") as s:
        assert s.count() == 2
    assert list(device_values(server, "fielddev")) == ["tablet"]
    mark = server.log_mark()
    replies, pid = refused(server, "fielddev-badtab", mark)
    assert replies[:2] == ["+OK", INTERNAL_ERROR], replies
    wait_log(server, rf"pop3\({pid}\): Error: leave_on_server: client_dev=x/y: ", mark)
    assert msgids(server, "fielddev") == mail["fielddev"]
    assert list(device_values(server, "fielddev")) == ["tablet"]


def test_per_user_override_and_only_bad_users_refused(server, mail):
    # plugin { } says delete: the plain account expunges with DELE + QUIT
    ids = mail["plain"]
    with pop3(server, "plain", "phone") as s:
        s.retr(1)
        s.dele(1)
    assert msgids(server, "plain") == ids[1:]
    # its userdb field says keep: DELE only hides it from the device
    ids = mail["overkeep"]
    with pop3(server, "overkeep", "phone") as s:
        assert s.capa().get("EXPIRE") == ["NEVER"]
        s.retr(1)
        s.dele(1)
    assert msgids(server, "overkeep") == ids
    assert listed(server, "overkeep", "phone") == ids[1:]
    assert listed(server, "overkeep", "laptop") == ids


def test_imap_unaffected_by_bad_pop3_settings(server, mail):
    """The plugin is only loaded for POP3: IMAP works for a user whose
    leave_on_server settings are bad (and sees the untouched mailbox)."""
    c = server.imap("badpolicy")
    typ, data = c.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == 2
    c.logout()


# ------------------------------------------------------------------ no attribute dict

@pytest.fixture(scope="module")
def noattr():
    dc = make_server(account("na", devices=("phone",)),
                     base_conf="protocol pop3 {\n  mail_plugins = $mail_plugins "
                               "leave_on_server\n}\n")
    dc.start()
    try:
        yield dc
    finally:
        dc.stop()


def test_missing_mail_attribute_dict_refuses_session(noattr, server, allow_log_errors):
    ids = deliver(noattr, "na", 2)
    for name in ("na", "na-phone"):
        mark = noattr.log_mark()
        replies, pid = refused(noattr, name, mark)
        assert replies == ["+OK", INTERNAL_ERROR], replies
        m = wait_log(noattr, rf"pop3\({pid}\): Error: leave_on_server: (.*)$", mark)
        assert m.group(1).startswith("mail_attribute_dict is not set"), m.group(1)
    assert msgids(noattr, "na") == ids
    assert seen_ids(noattr, "na") == set()
    crashes = [l for l in noattr.log_text().splitlines()
               if re.search(r"\b(Panic|Fatal): |killed with signal", l)]
    assert not crashes
