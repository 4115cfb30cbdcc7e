"""The access-rules tool: `check` (exit status, OK line, the same
file:line messages the plugin logs) and `test` (the decision and the
rule's file:line), checked against what the real server decides for the
same inputs."""

from __future__ import annotations

import re

import pytest

from access_rules_helpers import (DAY_NAMES, TOOL, _server_log_on_failure, _no_crash,  # noqa: F401
                                  assert_no_crash, attempt, avoid_midnight,
                                  hhmm, now_minutes, run_tool,
                                  server_fixture, today_index, try_session,
                                  wait_log)

USERS = [
    {"name": "ann@corp.example", "fields": {"access_rules_groups": "sales"}},
    {"name": "ben@corp.example", "fields": {"access_rules_groups": "finance,staff"}},
    {"name": "eve@corp.example", "fields": {"access_rules_groups": "staff"}},
    {"name": "cid", "fields": {"access_rules_ruleset": "contractors"}},
    "dan@other.example",
]
USER_ARGS = {   # what the tool must be told that the server gets from userdb
    "ann@corp.example": ["--groups", "sales"],
    "ben@corp.example": ["--groups", "finance,staff"],
    "eve@corp.example": ["--groups", "staff"],
    "cid": ["--ruleset", "contractors"],
    "dan@other.example": [],
}

server = server_fixture(users=USERS)

TOOL_LINE_RE = re.compile(
    r"^(?P<action>allow|deny|readonly) by "
    r"(?:(?P<file>/\S+?):(?P<line>\d+)(?: \(default of rule set (?P<set>\S+)\))?"
    r"|the built-in default \(no rule of set (?P<bset>\S+) matched\))"
    r"(?:: (?P<reason>.*))?$")



def test_tool_is_built():
    assert TOOL.is_file(), f"{TOOL} missing: run `make build-all`"


# ------------------------------------------------------------------ check

def test_check_ok(server):
    path = server.rules("# two sets\n"
                        "allow user a\n"
                        'deny user b reason "no"\n'
                        "ruleset other\n"
                        "readonly\n"
                        "default deny\n", "ok.conf")
    res = run_tool("check", path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == f"{path}: OK, 3 rules in 2 rule sets"
    assert res.stderr == ""

    empty = server.rules("", "empty.conf")
    res = run_tool("check", empty)
    assert res.returncode == 0
    assert res.stdout.splitlines()[0] == f"{empty}: OK, 0 rules in 1 rule sets"


BROKEN = """\
allow user a \\
      from 10.0.0.0/8 \\
      protocol imap4
deny user b user c
ruleset dup
ruleset dup
allow port 0
deny tls maybe
readonly days someday
deny !user x
allow mailboxes ""
default allow reason "allow has no reason"
deny from 192.0.2.0/33
"""


def test_check_errors_match_plugin_log(server):
    """For one malformed file: the tool's stderr lines are exactly the lines
    the plugin logs (IMAP and POP3), in order, each with file:line."""
    dc = server.dc
    path = server.rules(BROKEN)
    res = run_tool("check", path)
    assert res.returncode == 1
    assert res.stdout == ""
    tool_lines = res.stderr.splitlines()
    assert all(l.startswith(f"{path}:") for l in tool_lines), tool_lines
    assert [int(l.split(":")[1]) for l in tool_lines] == [1, 4, 6, 7, 8, 9, 10, 11, 12, 13]

    for proto in ("imap", "pop3"):
        mark = dc.log_mark()
        out = attempt(dc, proto, "dan@other.example")
        assert out.refused, proto
        last = wait_log(dc, rf"{proto}\(dan@other.example\).*Error: access_rules: "
                            rf"Refusing the session: the rules file {path} is invalid",
                        mark)
        logged = re.findall(rf"^.* {proto}\(dan@other.example\)<\d+><[^>]*>: Error: "
                            rf"access_rules: ({re.escape(path)}:\d+: .*)$",
                            dc.log_text()[mark:last.end()], re.M)
        assert logged == tool_lines, proto


def test_check_missing_file_and_usage(server):
    missing = str(server.path("nope.conf"))
    res = run_tool("check", missing)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        f"{missing}: can't open the rules file: No such file or directory"]

    for args in ([], ["check"], ["check", "a", "b"], ["frobnicate"],
                 ["test", missing], ["test", missing, "--user", "x", "--protocol", "imap4",
                                     "--ip", "127.0.0.1"],
                 ["test", missing, "--user", "x", "--protocol", "imap",
                  "--ip", "not-an-ip"],
                 ["test", missing, "--user", "x", "--protocol", "imap",
                  "--ip", "127.0.0.1", "--time", "tomorrow"]):
        res = run_tool(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "usage: access-rules" in res.stderr, args


# ------------------------------------------------------------------ test

def tool_decide(path, user, proto, ip, *extra):
    res = run_tool("test", path, "--user", user, "--protocol", proto, "--ip", ip,
                   *USER_ARGS.get(user, []), *extra)
    assert res.returncode == 0, (res.stdout, res.stderr)
    lines = res.stdout.splitlines()
    m = TOOL_LINE_RE.match(lines[0])
    assert m, lines
    return m, lines[1:]


def test_tool_test_output(server):
    path = server.rules("allow user ann@* mailboxes INBOX,Sent sessions 4 pop3-sessions 1\n"
                        'deny domain other.example reason "Not you"\n'
                        "\n"
                        "ruleset contractors\n"
                        'default deny reason "Contractors: no"\n', "out.conf")
    m, rest = tool_decide(path, "ann@corp.example", "imap", "192.0.2.1")
    assert (m["action"], m["file"], m["line"], m["reason"]) == ("allow", path, "1", None)
    assert rest == ["visible mailboxes: INBOX, Sent", "sessions: at most 4",
                    "pop3 sessions: at most 1"]
    m, rest = tool_decide(path, "dan@other.example", "pop3", "2001:db8::1")
    assert (m["action"], m["line"], m["reason"]) == ("deny", "2", "Not you")
    m, _ = tool_decide(path, "cid", "imap", "127.0.0.1")
    assert (m["action"], m["line"], m["set"], m["reason"]) == \
        ("deny", "5", "contractors", "Contractors: no")
    m, _ = tool_decide(path, "eve@corp.example", "imap", "127.0.0.1")
    assert (m["action"], m["bset"]) == ("allow", "default")

    res = run_tool("test", path, "--user", "x", "--protocol", "imap", "--ip", "127.0.0.1",
                   "--ruleset", "nosuch")
    assert res.returncode == 1 and "nosuch" in res.stderr


def test_tool_time_and_days(server):
    path = server.rules('deny days sat,sun reason "weekend"\n'
                        'deny time 22:00-06:00 reason "night"\n'
                        "allow time 06:00-22:00 days mon-fri\n", "time.conf")
    for when, action, line in (("2024-01-06 12:00", "deny", "1"),     # a Saturday
                               ("2024-01-07 23:59", "deny", "1"),     # Sunday
                               ("2024-01-08 23:30", "deny", "2"),     # Monday night
                               ("2024-01-09 05:59", "deny", "2"),
                               ("2024-01-09 06:00", "allow", "3"),
                               ("2024-01-12 21:59", "allow", "3")):   # Friday
        m, _ = tool_decide(path, "ann@corp.example", "imap", "127.0.0.1", "--time", when)
        assert (m["action"], m["line"]) == (action, line), when


def _agreement_rules(dc):
    avoid_midnight()
    m, d = now_minutes(), today_index()
    return (
        "# tool and server must agree on these\n"                               # 1
        'deny protocol pop3 from !127.0.0.0/30 reason "POP3 only from the office"\n'  # 2
        'readonly group finance tls no reason "Finance: TLS for changes"\n'    # 3
        "allow user ann@* from 127.0.0.5 mailboxes INBOX,Sent\n"               # 4
        f'deny domain other.example port {dc.imaps_port} reason "not on IMAPS"\n'  # 5
        'deny client-name "Evil*" reason "No evil clients"\n'                  # 6
        f"readonly user eve@* time {hhmm(m - 90)}-{hhmm(m + 90)} "
        f"days {DAY_NAMES[d]}\n"                                               # 7
        "allow domain corp.example sessions 5\n"                               # 8
        'default deny reason "Only corp.example"\n'                            # 9
        "\n"                                                                   # 10
        "ruleset contractors\n"                                                # 11
        "allow from 127.0.0.0/29 tls yes\n"                                    # 12
        'default deny reason "Contractors: TLS from the office only"\n')       # 13


# (user, protocol, source address, TLS port, client name, expected action, line)
AGREEMENT_CASES = [
    ("ann@corp.example", "imap", "127.0.0.1", False, None, "allow", 8),
    ("ann@corp.example", "pop3", "127.0.0.9", False, None, "deny", 2),
    ("ann@corp.example", "pop3", "127.0.0.2", True, None, "allow", 8),
    ("ann@corp.example", "imap", "127.0.0.5", False, None, "allow", 4),
    ("ann@corp.example", "imap", "127.0.0.1", False, "EvilMail", "deny", 6),
    ("ann@corp.example", "imap", "127.0.0.1", False, "Thunderbird", "allow", 8),
    ("ben@corp.example", "imap", "127.0.0.1", False, None, "readonly", 3),
    ("ben@corp.example", "imap", "127.0.0.1", True, None, "allow", 8),
    ("ben@corp.example", "pop3", "127.0.0.1", False, None, "readonly", 3),
    ("eve@corp.example", "imap", "127.0.0.1", True, None, "readonly", 7),
    ("dan@other.example", "imap", "127.0.0.1", True, None, "deny", 5),
    ("dan@other.example", "imap", "127.0.0.1", False, None, "deny", 9),
    ("dan@other.example", "pop3", "127.0.0.3", True, None, "deny", 9),
    ("cid", "imap", "127.0.0.1", False, None, "deny", 13),
    ("cid", "imap", "127.0.0.7", True, None, "allow", 12),
    ("cid", "imap", "127.0.0.9", True, None, "deny", 13),
    ("cid", "pop3", "127.0.0.2", True, None, "allow", 12),
]


def test_tool_agrees_with_server(server):
    dc = server.dc
    path = server.rules(_agreement_rules(dc))
    for user, proto, ip, tls, name, action, line in AGREEMENT_CASES:
        case = (user, proto, ip, tls, name)
        port = {("imap", False): dc.imap_port, ("imap", True): dc.imaps_port,
                ("pop3", False): dc.pop3_port, ("pop3", True): dc.pop3s_port}[proto, tls]
        extra = ["--port", str(port)] + (["--tls"] if tls else []) + \
            (["--client-id", name] if name else [])
        m, _ = tool_decide(path, user, proto, ip, *extra)
        assert m["file"] == path, case
        assert (m["action"], int(m["line"])) == (action, line), case

        kw = {"source_address": ip, "ssl": tls}
        if name:
            kw["client_id"] = f'("name" "{name}")'
        out, dec = try_session(server, proto, user, **kw)
        assert (dec.action, dec.line, dec.file) == (m["action"], int(m["line"]), path), \
            (case, dec.text)
        assert out.refused == (action == "deny"), (case, out.reply)
        if action == "deny":
            assert out.reply.endswith(m["reason"]), (case, out.reply)
