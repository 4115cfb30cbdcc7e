"""The rules file replaced while sessions run.

One imap and one pop3 process serve every session (service_count = 0,
process_limit = 1), so logins after a change go through the per-process
cache of the parsed rules, next to sessions that were logged in before
the change. The file is replaced atomically (rename, as the helpers'
write_rules does), rewritten in place (truncate + write, as `cat >`
and many editors do, to another size), and replaced by a malformed
version both ways. After each change:

* new sessions follow the new rules, or are refused with the internal
  error and the file:line in the log when the file is malformed (fail
  closed: the old rules are not kept in force);
* the sessions that were running go on working (NOOP, SELECT, FETCH,
  STAT, RETR) and end with a clean LOGOUT/QUIT;
* no process crashes.

Then the change lands exactly while a login is reading the file: strace
holds the login's close() of the rules file (after its read(), before
the plugin records the file's stat for its cache) while the test
replaces the file. That login decides by the content it read; every
login after it must see the new file. And the compiled rules (mapped
into the process) are rewritten in place under a process that caches
them.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import threading

import pytest

from access_rules_helpers import _server_log_on_failure  # noqa: F401 (fixture)
from access_rules_helpers import (IMAP_INTERNAL_ERROR, assert_no_crash,
                                  login_pid, make_message, run_tool,
                                  server_fixture, try_session, wait_log)
from fault_helpers import delay_at, wait_read

ONE_PROCESS = "".join(f"service {s} {{\n  service_count = 0\n  process_limit = 1\n"
                      "  client_limit = 20\n}\n" for s in ("imap", "pop3"))

server = server_fixture(users=["alice", "bob"], extra_conf=ONE_PROCESS)


@pytest.fixture(autouse=True)
def _no_crash(request, server):
    """No Panic, Fatal or killed process in the log during a test that
    passed (one that failed, or is an expected failure, says why itself)."""
    mark = server.dc.log_mark()
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed:
        assert_no_crash(server.dc, mark)


def _rewrite_in_place(path, text: str) -> None:
    """Truncate and write, same inode (not atomic)."""
    with open(path, "r+") as f:
        f.truncate(0)
        f.flush()
        f.write(text)


def _decision_of(srv, proto, user):
    out, dec = try_session(srv, proto, user)
    out.close()
    return out, dec


def _expect(srv, proto, user, action, line, reason=None):
    out, dec = _decision_of(srv, proto, user)
    assert (dec.action, dec.line) == (action, line), dec.text
    assert dec.file == str(srv.rules_path), dec.text
    assert out.refused == (action == "deny"), (out, dec.text)
    if reason is not None:
        assert out.reply.endswith(reason), out.reply
    return dec


def _expect_refused_malformed(srv, proto, user, line):
    """Refused with the internal error; the log names file:line."""
    dc = srv.dc
    mark = dc.log_mark()
    if proto == "imap":
        c = dc.imap_connect()
        typ, data = c.login(user, "secret")
        assert typ == "OK" and data == [b"Logged in, but initialization failed."], data
        with pytest.raises(imaplib.IMAP4.abort) as exc:
            c.noop()
        assert str(exc.value).endswith(IMAP_INTERNAL_ERROR), exc.value
        c.shutdown()
    else:
        p = dc.pop3_connect()
        p.user(user)
        with pytest.raises(poplib.error_proto) as exc:
            p.pass_("secret")
        assert IMAP_INTERNAL_ERROR in exc.value.args[0].decode(), exc.value
        p.close()
    wait_log(dc, rf"{proto}\({user}\)<\d+><[^>]*>: Error: access_rules: "
                 rf"{srv.rules_path}:{line}: ", mark)


class Running:
    """A logged-in session that is used after every change."""

    def __init__(self, srv, proto, user):
        self.proto, self.user = proto, user
        if proto == "imap":
            self.c = srv.dc.imap(user)
            typ, data = self.c.select("INBOX")
            assert typ == "OK", data
        else:
            self.c = srv.dc.pop3(user)

    def use(self, what: str) -> None:
        try:
            if self.proto == "imap":
                assert self.c.noop()[0] == "OK"
                typ, data = self.c.select("INBOX")
                assert typ == "OK", data
                typ, data = self.c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER])")
                assert typ == "OK", data
            else:
                count, _ = self.c.stat()
                assert count >= 1
                assert self.c.retr(1)[0].startswith(b"+OK")
                assert self.c.noop().startswith(b"+OK")
        except (imaplib.IMAP4.error, poplib.error_proto, OSError, EOFError) as e:
            raise AssertionError(f"running {self.proto} session of {self.user} "
                                 f"broke after {what}: {e!r}") from e

    def close(self) -> None:
        if self.proto == "imap":
            assert self.c.logout()[0] == "BYE"
        else:
            assert self.c.quit().startswith(b"+OK")


def test_replaced_while_sessions_run(server):
    dc = server.dc
    for user in ("alice", "bob"):
        dc.deliver(user, make_message(f"for {user}"))
    # (a client-name rule: an ID after login is then fed to the rules)
    server.write_rules('deny client-name evil\nallow\n')
    running = [Running(server, proto, user)
               for proto in ("imap", "pop3") for user in ("alice", "bob")]
    # a session whose first ID comes after the file turned malformed: the
    # rules are asked again (docs: IMAP ID), and can't answer
    late_id = Running(server, "imap", "alice")
    path = server.rules_path
    steps = [
        ("atomic replace", lambda: server.write_rules(
            'deny user bob reason "v2: no bob"\nallow\n'),
         {"alice": ("allow", 2), "bob": ("deny", 1)}),
        ("rewrite in place, longer", lambda: _rewrite_in_place(
            path, '# v3\n# a longer file than before\n'
                  'deny user alice reason "v3: no alice"\nallow\n'),
         {"alice": ("deny", 3), "bob": ("allow", 4)}),
        ("malformed, atomic", lambda: server.write_rules(
            'allow\ndeny protocol imap4\n'),
         {"alice": ("malformed", 2), "bob": ("malformed", 2)}),
        ("rewrite in place, shorter", lambda: _rewrite_in_place(
            path, 'deny user bob\nallow\n'),
         {"alice": ("allow", 2), "bob": ("deny", 1)}),
        ("malformed, in place", lambda: _rewrite_in_place(
            path, 'deny user alice\nallow sessions 0\n'),
         {"alice": ("malformed", 2), "bob": ("malformed", 2)}),
        ("rewrite in place, same size", lambda: _rewrite_in_place(
            path, 'deny user bobo\nallow sessions 9\n'),
         {"alice": ("allow", 2), "bob": ("allow", 2)}),
    ]
    pids = set()
    for what, change, expect in steps:
        change()
        for s in running:
            s.use(what)
        if what == "malformed, atomic":
            mark = dc.log_mark()
            typ, data = late_id.c._simple_command("ID", '("name" "late")')
            assert typ == "OK", data
            with pytest.raises(imaplib.IMAP4.error) as exc:
                late_id.c.noop()
            assert "invalid access rules" in str(exc.value), exc.value
            wait_log(dc, r"imap\(alice\)<\d+><[^>]*>: Error: access_rules: "
                         r"Refusing the session: the rules file .* is invalid", mark)
            late_id.c.shutdown()
        for proto in ("imap", "pop3"):
            for user, (action, line) in expect.items():
                mark = dc.log_mark()
                if action == "malformed":
                    _expect_refused_malformed(server, proto, user, line)
                else:
                    _expect(server, proto, user, action, line)
                pids.add(login_pid(dc, proto, user, mark))
        for s in running:
            s.use(what)
    for s in running:
        s.close()
    # the cache was in play: one process per protocol served every login
    assert len(pids) == 2, pids


def _hold_login_while_replacing(srv, proto, user, replace, tmp_path):
    """Log in while strace holds the process's close() of the rules file
    (after the read); replace the file during the hold. Returns the
    decision of that login."""
    dc = srv.dc
    size = srv.rules_path.stat().st_size
    pid, = dc.worker_pids(proto)
    result = {}

    def login():
        try:
            result["r"] = _decision_of(srv, proto, user)
        except BaseException as e:  # reported below
            result["e"] = e

    with delay_at(pid, "close", 700_000, tmp_path / "strace.out",
                  [srv.rules_path]) as st:
        t = threading.Thread(target=login)
        t.start()
        try:
            wait_read(pid, srv.rules_path, size)
            replace()
        finally:
            t.join(20)
    assert "(DELAYED)" in st.trace(), st.trace()
    if "e" in result:
        raise result["e"]
    return result["r"]


# Found by this test: access_rules_get() recorded the file's stat()
# after reading it, so a file replaced between the read's open() and that
# stat() left the old rules cached under the new file's stat.


@pytest.mark.parametrize("how", ["rename", "in-place"])
@pytest.mark.parametrize("proto", ["imap", "pop3"])
def test_replaced_while_a_login_reads_it(server, tmp_path, proto, how):
    server.dc.deliver("alice", make_message("race"))
    server.write_rules("allow user alice\n")
    _expect(server, proto, "alice", "allow", 1)   # the process exists
    # changed, so that the next login reads the file again
    server.write_rules("# still allowed\nallow user alice\n")
    new = 'deny user alice reason "replaced during the read"\n'
    if how == "rename":
        replace = lambda: server.write_rules(new)                 # noqa: E731
    else:
        replace = lambda: _rewrite_in_place(server.rules_path, new)  # noqa: E731
    out, dec = _hold_login_while_replacing(server, proto, "alice", replace,
                                           tmp_path)
    # that login read the old text: allowed by it
    assert (dec.action, dec.line) == ("allow", 2), dec.text
    # every login after it must follow the file as it is now
    for _ in range(2):
        _expect(server, proto, "alice", "deny", 1, "replaced during the read")


# Found by this test: a process caching compiled rules revalidated only
# the text file, and the compiled file cut short in place made its next
# login read past the end of the mapping (SIGBUS).
def test_compiled_rules_rewritten_in_place(server, tmp_path):
    """The compiled file is mapped by the process that caches it. It is
    rewritten in place (cp over it: truncate, then write) with the
    compiled form of other rules, and its text file is replaced the same
    way; logins in that process must follow the new rules (or refuse),
    never crash."""
    dc = server.dc
    dc.deliver("bob", make_message("compiled"))
    first = "".join(f"deny user nobody{i}\n" for i in range(300)) + "allow\n"
    second = ("".join(f"deny user nobody{i}\n" for i in range(200)) +
              'deny user bob reason "compiled v2"\nallow\n')
    server.write_rules(first)
    res = run_tool("compile", str(server.rules_path))
    assert res.returncode == 0, res.stderr
    compiled = server.rules_path.with_name(server.rules_path.name + ".compiled")
    for proto in ("imap", "pop3"):
        _expect(server, proto, "bob", "allow", 301)

    other = tmp_path / "rules.conf"
    other.write_text(second)
    res = run_tool("compile", str(other))
    assert res.returncode == 0, res.stderr
    new_compiled = other.with_name(other.name + ".compiled").read_bytes()
    # in place, as cp does: first cut to nothing, use, then the rest
    with open(compiled, "r+b") as f:
        f.truncate(0)
        f.flush()
        for proto in ("imap", "pop3"):
            mark = dc.log_mark()
            try:
                _decision_of(server, proto, "bob")
            except (AssertionError, imaplib.IMAP4.error, poplib.error_proto,
                    OSError) as e:
                error = e
            else:
                error = None
            try:
                assert_no_crash(dc, mark)
            except AssertionError as e:
                raise AssertionError(
                    f"{proto} login with {compiled.name} cut to 0 bytes "
                    f"under the process that maps it: {e}") from None
            assert error is None, error
        f.write(new_compiled)
    _rewrite_in_place(server.rules_path, second)
    for proto in ("imap", "pop3"):
        _expect(server, proto, "bob", "deny", 201, "compiled v2")
    os.unlink(compiled)
