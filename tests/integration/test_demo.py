"""make demo runs end to end and shows what each plugin does."""

import subprocess
import sys

from dovecot_instance import REPO_ROOT


def test_demo_walkthrough():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "demo.py"), "--stop"],
                            capture_output=True, text=True, timeout=180)
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    # a client allowed, one denied with its reason, a read-only session
    assert "-ERR [SYS/PERM] POP3 is only available from the office network" in out
    assert "[NOPERM] Finance accounts need TLS" in out
    assert "OK [READ-ONLY] Select completed" in out
    assert "NO [NOPERM] Read-only session: Guest network: read-only access" in out
    assert "LIST (Shared* is hidden)" in out and "Mailbox doesn't exist: Shared" in out
    # the log explains each decision with file:line
    assert "access_rules.conf:6: POP3 is only available" in out
    assert "Demo finished; the server is stopped." in out
