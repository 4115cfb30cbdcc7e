"""access_rules with FILE.compiled: a real server gives the same answers
from the compiled file as from the text, ignores a stale compiled file
after the text was edited, and falls back to the text (with a warning)
when the compiled file is damaged."""

import os
import poplib
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dovecot_instance import BUILD_DIR

TOOL = BUILD_DIR / "access-rules"

RULES = """\
deny user mallory reason "mallory is locked out"
readonly from 127.0.3.0/24 reason "read-only network"
deny protocol pop3 from 127.0.4.0/24 reason "no POP3 from .4"
allow user alice from 127.0.5.0/24 mailboxes INBOX
deny from 127.0.5.0/24 reason "only alice from .5"
"""

# (user, protocol, source address) -> what the client must see
CASES = [
    ("mallory", "imap", "127.0.0.1", "BYE [NOPERM] mallory is locked out"),
    ("bob", "imap", "127.0.3.9", "READ-ONLY"),
    ("bob", "imap", "127.0.0.1", "READ-WRITE"),
    ("bob", "pop3", "127.0.4.2", "-ERR [SYS/PERM] no POP3 from .4"),
    ("bob", "pop3", "127.0.0.1", "+OK"),
    ("alice", "imap", "127.0.5.5", "READ-WRITE"),
    ("bob", "imap", "127.0.5.5", "BYE [NOPERM] only alice from .5"),
]


def imap_outcome(dc, user, source):
    """LOGIN then SELECT INBOX over a raw socket; returns the server's
    telling line."""
    sock = socket.create_connection(("127.0.0.1", dc.imap_port), timeout=10,
                                    source_address=(source, 0))
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(f"a LOGIN {user} secret\r\nb SELECT INBOX\r\n".encode())
    lines = []
    while True:
        line = reader.readline().decode(errors="replace").rstrip()
        if not line:
            break
        lines.append(line)
        if line.startswith("* BYE"):
            sock.close()
            return line[2:]
        if line.startswith("b "):
            break
    sock.close()
    for code in ("READ-ONLY", "READ-WRITE"):
        if any(f"[{code}]" in line for line in lines):
            return code
    return " | ".join(lines)


def pop3_outcome(dc, user, source):
    try:
        client = dc.pop3(user, source_address=source)
    except poplib.error_proto as e:
        return e.args[0].decode()
    client.quit()
    return "+OK"


def outcome(dc, user, protocol, source):
    if protocol == "imap":
        return imap_outcome(dc, user, source)
    return pop3_outcome(dc, user, source)


@pytest.fixture
def server(dovecot):
    rules_dir = Path(tempfile.mkdtemp(prefix="access-rules-compiled-", dir="/tmp"))
    os.chmod(rules_dir, 0o755)
    path = rules_dir / "rules.conf"
    path.write_text(RULES)
    os.chmod(path, 0o644)
    dc = dovecot(mail_plugins="access_rules", users=["alice", "bob", "mallory"],
                 plugin_settings={"access_rules_file": str(path)})
    yield dc, path
    for f in rules_dir.iterdir():
        f.unlink()
    rules_dir.rmdir()


def compile_rules(path):
    result = subprocess.run([str(TOOL), "compile", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    compiled = Path(str(path) + ".compiled")
    assert compiled.exists()
    os.chmod(compiled, 0o644)
    return compiled


SESSION_END_RE = re.compile(r"^.* (imap|pop3)\([^)]*\)<\d+><[^>]*>: Info: "
                            r"Disconnected", re.M)


def wait_sessions_logged(dc, since, count, timeout=5.0):
    """Dovecot logs through its log process, so wait until the mail
    processes of the last `count` sessions have written their last line:
    any warning of theirs is then in the log, and its absence is real."""
    deadline = time.monotonic() + timeout
    while True:
        log = dc.log_text()[since:]
        if len(SESSION_END_RE.findall(log)) >= count:
            return log
        assert time.monotonic() < deadline, \
            f"only {len(SESSION_END_RE.findall(log))} of {count} sessions logged:\n{log}"
        time.sleep(0.05)


def check_answers(dc):
    for user, protocol, source, expected in CASES:
        got = outcome(dc, user, protocol, source)
        assert got.startswith(expected), (user, protocol, source, got)


def test_compiled_gives_the_texts_answers(server):
    dc, path = server
    check_answers(dc)                      # from the text
    compile_rules(path)
    check = subprocess.run([str(TOOL), "check", str(path)],
                           capture_output=True, text=True)
    assert "rules.conf.compiled: up to date" in check.stdout
    mark = len(dc.log_text())
    check_answers(dc)                      # from the compiled file
    log = wait_sessions_logged(dc, mark, len(CASES))
    assert "Using the text rules" not in log


def test_stale_compiled_file_is_ignored(server):
    dc, path = server
    compile_rules(path)
    assert outcome(dc, "bob", "imap", "127.0.0.1") == "READ-WRITE"
    # the edit must win at once, without recompiling
    time.sleep(0.01)
    path.write_text('deny user bob reason "bob edited out"\n' + RULES)
    assert outcome(dc, "bob", "imap", "127.0.0.1") == "BYE [NOPERM] bob edited out"
    check = subprocess.run([str(TOOL), "check", str(path)],
                           capture_output=True, text=True)
    assert "rules.conf.compiled: out of date" in check.stdout


def test_damaged_compiled_file_falls_back_to_text(server):
    dc, path = server
    compiled = compile_rules(path)
    data = bytearray(compiled.read_bytes())
    # damage the text of the rule that decides for mallory: the per-rule
    # CRC must catch it, and the text must decide instead
    at = data.index(b"deny user mallory")
    data[at + 10] ^= 0x01
    compiled.write_bytes(bytes(data))
    stat = path.stat()
    # keep the compiled file "fresh" for the text it was made from
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    mark = len(dc.log_text())
    assert outcome(dc, "mallory", "imap", "127.0.0.1").startswith(
        "BYE [NOPERM] mallory is locked out")
    log = wait_sessions_logged(dc, mark, 1)
    assert "Using the text rules" in log and "is damaged" in log

    # a truncated file is never used either
    compiled.write_bytes(bytes(data[:len(data) // 2]))
    mark = len(dc.log_text())
    check_answers(dc)
    assert "Using the text rules" in wait_sessions_logged(dc, mark, len(CASES))
