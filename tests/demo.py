#!/usr/bin/python3
"""make demo: start a real Dovecot on loopback with this project's plugins,
load sample mail, and walk through what each plugin does.

It uses the mail_plugins and plugin { } settings of dovecot.conf.example and
the rules of docs/access_rules.conf.example. The server keeps running at the
end so you can try it yourself; the last lines say how to stop it. With
--stop it is stopped right away (the test suite runs the demo that way).
"""

import argparse
import base64
import imaplib
import poplib
import re
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from dovecot_instance import BUILD_DIR, DovecotInstance, _live_instances, make_message  # noqa: E402

OFFICE = "127.0.0.1"
OUTSIDE = "127.0.2.7"
GUEST = "127.0.1.9"


def example_settings():
    """mail_plugins and the plugin { } block of dovecot.conf.example."""
    text = (REPO / "dovecot.conf.example").read_text()
    plugins = []
    for m in re.finditer(r"^mail_plugins\s*=\s*(.*)$", text, re.M):
        plugins += [p for p in m.group(1).split() if not p.startswith("$")]
    block = re.search(r"^plugin\s*\{(.*?)^\}", text, re.M | re.S).group(1)
    settings = {}
    for line in block.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    # top-level settings the plugins need beside plugin { }
    extra = "".join(m.group(0) + "\n" for m in
                    re.finditer(r"^mail_attribute_dict\s*=.*$", text, re.M))
    return " ".join(plugins), settings, extra


def _search_args(query):
    """The search key as a literal: imaplib would send UTF-8 as an atom."""
    key, _, value = query.rpartition(" ")
    return key.split(), value.strip('"').encode()


def step(title):
    print(f"\n=== {title}")


def show(label, value):
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    print(f"  {label:<34} {value}")


def imap_try(dc, user, **kw):
    """Log in and run a NOOP; returns (client or None, what the server said)."""
    try:
        client = dc.imap(user, **kw)
        client.noop()
        return client, "logged in"
    except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError) as e:
        return None, str(e)


def raw_imap(dc, source, commands):
    """Runs IMAP commands over a plain socket; returns the dialogue, so the
    reader sees exactly what the server said."""
    sock = socket.create_connection(("127.0.0.1", dc.imap_port), timeout=10,
                                    source_address=(source, 0))
    reader = sock.makefile("rb")
    reader.readline()
    dialogue = []
    for n, command in enumerate(commands, 1):
        tag = f"a{n}"
        dialogue.append(f"C: {tag} {command}")
        sock.sendall(f"{tag} {command}\r\n".encode())
        while True:
            line = reader.readline().decode(errors="replace").rstrip()
            if not line:
                break
            if line.startswith(("* OK [", "* NO", "* BYE")) or line.startswith(tag):
                dialogue.append("S: " + line)
            if line.startswith(tag):
                break
    sock.close()
    return dialogue


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stop", action="store_true",
                        help="stop the server at the end instead of leaving it running")
    args = parser.parse_args()

    mail_plugins, settings, extra_conf = example_settings()
    dc = DovecotInstance(mail_plugins=mail_plugins, extra_conf=extra_conf, users=[
        {"name": "alice", "fields": {"access_rules_groups": "staff"}},
        # alice's two POP3 devices: login aliases that name the device
        {"name": "alice-phone", "passdb_fields": {"user": "alice"},
         "fields": {"pop3_device": "phone"}},
        {"name": "alice-laptop", "passdb_fields": {"user": "alice"},
         "fields": {"pop3_device": "laptop"}},
        {"name": "bob", "fields": {"access_rules_groups": "finance"}},
        {"name": "carol"},
    ])
    dc.start()
    for user in ("alice", "bob", "carol"):
        for i in range(3):
            dc.deliver(user, make_message(subject=f"Welcome {user} #{i + 1}",
                                          body=f"Sample message {i + 1} for {user}.\n"))
    rules = dc.write_file("access_rules.conf",
                          (REPO / "docs" / "access_rules.conf.example").read_text())
    settings["access_rules_file"] = rules
    dc.plugin_settings = settings
    dc.reload()

    print("Dovecot is running on loopback with: mail_plugins =", mail_plugins)
    print("Rules:", rules, "(a copy of docs/access_rules.conf.example)")
    show("sample mail", "3 messages each for alice, bob and carol (via LMTP)")

    step("access_rules: alice (group staff) over IMAP from the office, " + OFFICE)
    client, said = imap_try(dc, "alice", source_address=OFFICE)
    show("login", said)
    client.create("Shared")
    show("LIST", " | ".join(x.decode() for x in client.list()[1]))
    client.logout()

    step("access_rules: alice over IMAP from outside, " + OUTSIDE)
    client, said = imap_try(dc, "alice", source_address=OUTSIDE)
    show("login", said)
    show("LIST (Shared* is hidden)", " | ".join(x.decode() for x in client.list()[1]))
    show("SELECT Shared", client.select("Shared")[1][0])
    client.logout()

    step("access_rules: alice over POP3 from outside, " + OUTSIDE)
    try:
        dc.pop3("alice", source_address=OUTSIDE)
        show("PASS", "+OK (unexpected)")
    except poplib.error_proto as e:
        show("PASS answered", e.args[0])
    pop = dc.pop3("alice", source_address=OFFICE)
    show("from the office, STAT", "+OK %d messages, %d bytes" % pop.stat())
    pop.quit()

    step("access_rules: bob (group finance) without and with TLS")
    client, said = imap_try(dc, "bob", source_address=OFFICE)
    show("plaintext IMAP", said)
    client, said = imap_try(dc, "bob", ssl=True, source_address=OFFICE)
    show("IMAPS", said)
    client.logout()

    step("access_rules: carol from the guest network, " + GUEST)
    for line in raw_imap(dc, GUEST, ["LOGIN carol secret", "SELECT INBOX",
                                     "STORE 1 +FLAGS (\\Deleted)", "EXPUNGE",
                                     "CREATE Archive", "LOGOUT"]):
        print("  " + (line if len(line) < 110 else line[:100] + " ..."))

    step("leave_on_server: alice's phone downloads and deletes everything "
         "(policy keep)")
    pop = dc.pop3("alice-phone", source_address=OFFICE)
    show("CAPA after login", ", ".join(f"{k} {' '.join(v)}".strip()
                                       for k, v in pop.capa().items()
                                       if k == "EXPIRE"))
    count = pop.stat()[0]
    for i in range(1, count + 1):
        pop.retr(i)
        pop.dele(i)
    show("RETR + DELE", f"{count} messages; QUIT says: {pop.quit().decode()}")
    pop = dc.pop3("alice-laptop", source_address=OFFICE)
    show("the laptop's STAT", "+OK %d messages, %d bytes" % pop.stat())
    pop.quit()
    client = dc.imap("alice")
    show("IMAP SELECT INBOX", f"{client.select('INBOX')[1][0].decode()} messages")
    client.logout()
    dc.deliver("alice", make_message(subject="New for alice",
                                     body="Arrived after the phone's visit.\n"))
    pop = dc.pop3("alice-phone", source_address=OFFICE)
    show("one new message; the phone's STAT", "+OK %d messages, %d bytes "
         "(new-only view)" % pop.stat())
    pop.quit()
    cmd = [str(BUILD_DIR / "leave-on-server"), "-c", str(dc.config_path),
           "list", "-u", "alice"]
    print("  $ leave-on-server list -u alice")
    for line in subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines():
        print("  " + line)

    step("fts_lmdb: SEARCH answered from the index, with stock Dovecot's answers")
    html = ("Content-Type: text/html; charset=utf-8\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" +
            base64.encodebytes("<p>Filtered by <b>SpamAssassin</b> at "
                               "mail.taint.org, für Müller</p>".encode()).decode())
    dc.deliver("alice", ("From: Jörg <joerg@taint.org>\r\nTo: alice@example.com\r\n"
                         "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" + html).encode())
    client = dc.imap("alice", source_address=OFFICE)
    client.select("INBOX", readonly=True)
    for query in ('BODY "assassin"', 'BODY "<b>spam"', 'TEXT "taint.org"',
                  'SUBJECT "GRÜ"', 'FROM "jörg"', 'NOT BODY "müller"'):
        key, value = _search_args(query)
        client.literal = value
        typ, data = client.uid("SEARCH", "CHARSET", "UTF-8", *key)
        show("UID SEARCH " + query, data[0].decode() or "(none)")
    client.logout()
    show("index", "~alice/Maildir/fts-lmdb (data.mdb, lock.mdb); substrings "
         "inside words, raw HTML, decoded base64 and headers, as stock "
         "Dovecot matches them")

    step("The log says why, with the rule's file:line")
    for line in dc.log_text().splitlines():
        m = re.search(r"(\w+\([^)]*\))<[^ ]*: \w+: ((?:access_rules|leave_on_server): .*)", line)
        if m:
            print(f"  {m.group(1)}: {m.group(2)}")

    step("The access-rules tool gives the same answer offline")
    cmd = [str(BUILD_DIR / "access-rules"), "test", rules,
           "--user", "alice", "--protocol", "pop3", "--ip", OUTSIDE]
    print("  $ access-rules test <rules> --user alice --protocol pop3 --ip " + OUTSIDE)
    print("  " + subprocess.run(cmd, capture_output=True, text=True).stdout.strip())

    print()
    if args.stop:
        dc.stop()
        print("Demo finished; the server is stopped.")
        return
    # leave it running for the reader: don't let the atexit hook stop it
    _live_instances.discard(dc)
    print("The server keeps running, so you can try it yourself:")
    print(f"  IMAP 127.0.0.1:{dc.imap_port}  IMAPS :{dc.imaps_port}  "
          f"POP3 :{dc.pop3_port}  POP3S :{dc.pop3s_port}  "
          "(users alice, bob, carol; password secret)")
    print(f"  config {dc.config_path}, log {dc.log_path}")
    print(f"Stop it with: doveadm -c {dc.config_path} stop; rm -rf {dc.dir}")


if __name__ == "__main__":
    main()
