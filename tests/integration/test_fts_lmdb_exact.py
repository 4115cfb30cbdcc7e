"""fts_lmdb answers IMAP SEARCH exactly like stock Dovecot (edge cases).

Every test runs the same query set (fts_edge_corpus.edge_queries(), several
hundred queries on BODY, TEXT, SUBJECT, FROM, TO, CC, BCC, HEADER, alone
and combined) against a stock Dovecot and a Dovecot with fts_lmdb, both
holding the same hand-made edge-case messages under the same UIDs, and
fails on any query whose answer differs. Stock Dovecot is the reference;
no expected answer is written down anywhere.

Variants: index built by `doveadm index` first; index built by the first
SEARCH (of each kind of key); a second mailbox and a second user next to
the first; mail added and expunged (by doveadm and IMAP, a few and most of
it) after indexing; a mailbox renamed, deleted and recreated, mail copied;
`doveadm fts optimize`/`rescan`, UIDVALIDITY and mailbox GUID changes;
non-default settings (header list, index path, batch, map and token-limit
sizes). Besides the answers, each test checks that the index files are
where the settings put them and that the fts server logged no errors.

A failure lists every differing query with the UIDs missing and extra,
and for each UID the edge message's name, what it tests and where the
query's text shows in it. Run one test with -k, e.g.
    /usr/bin/python3 -m pytest -q tests/integration/test_fts_lmdb_exact.py -k after_doveadm

The lmdb module must be built (`make`, build/lib*_fts_lmdb_plugin.so):
without it these tests fail, they are never skipped.

FTS_TEST_BACKEND=lucene (or xapian, stock) runs the same tests against
another backend, which is only useful to debug the harness: the other
backends are known to differ from stock (docs/fts-bench.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from fts_edge_corpus import (EdgeMessage, edge_messages, edge_queries,
                             format_mismatches)
from fts_helpers import (SearchClient, backend_available, compare_with_stock,
                         fts_instance_kwargs, load_maildir)

BACKEND = os.environ.get("FTS_TEST_BACKEND", "lmdb")
USERS = ["alice", "bob"]


def require_backend() -> None:
    why = backend_available(BACKEND)
    if why is not None:
        pytest.fail(f"fts backend {BACKEND!r} can't run: {why}; build it with "
                    "`make` (these tests fail rather than skip without it)",
                    pytrace=False)


@pytest.fixture
def start_pair(dovecot):
    """start_pair(**plugin_settings) -> (stock, fts) started instances."""
    def start(**plugin_settings):
        require_backend()
        stock = dovecot(**fts_instance_kwargs("stock", users=USERS))
        fts = dovecot(**fts_instance_kwargs(BACKEND, users=USERS,
                                            plugin_settings=plugin_settings))
        return stock, fts
    return start


def load_both(stock, fts, user: str, messages: list[EdgeMessage],
              mailbox: str = "INBOX") -> None:
    raws = [m.raw for m in messages]
    for dc in (stock, fts):
        load_maildir(dc, user, raws, mailbox=mailbox)


def doveadm_failure(res) -> str:
    """A failed doveadm run in brief: exit code, first line of stderr and,
    for a panic, the function names of the backtrace."""
    lines = res.stderr.strip().splitlines() or ["(no output)"]
    frames = re.findall(r"#\d+ ([\w.]+)\[", res.stderr)
    return (f"exit {res.returncode}: {lines[0][:400]}"
            + (f"; backtrace: {' <- '.join(frames[5:15])}" if frames else ""))


def doveadm_index(dc, user: str, mailbox: str = "INBOX") -> None:
    res = dc.doveadm("index", "-u", user, mailbox, timeout=600)
    if res.returncode != 0:
        pytest.fail(f"doveadm index -u {user} {mailbox} failed: "
                    f"{doveadm_failure(res)}\nlog errors: {dc.log_errors()}",
                    pytrace=False)


def mismatch_report(fts, stock, user: str, messages: list[EdgeMessage],
                    queries: list[str], mailbox: str = "INBOX",
                    stage: str = "") -> str:
    """'' if every query gets stock's answer, else a report naming the
    edge messages behind each missing or extra UID."""
    mismatches = compare_with_stock(fts, stock, user, queries, mailbox)
    if not mismatches:
        return ""
    return (f"{stage + ': ' if stage else ''}{user}/{mailbox}: {len(mismatches)} "
            f"of {len(queries)} queries answered differently from stock:\n"
            + format_mismatches(mismatches, messages))


def backend_errors(fts) -> str:
    """Error/Fatal/Panic lines of the fts instance's log: with
    fts_enforced = yes a failing lookup shows up as a NO reply (a
    mismatch), but indexing errors could hide behind a fallback."""
    errors = fts.log_errors()
    return ("errors in the fts instance's log:\n" + "\n".join(errors[:30])
            if errors else "")


def index_files(home: Path, where: str) -> list[Path]:
    root = home / where
    return [p for p in root.rglob("*") if p.is_file() and p.stat().st_size > 0] \
        if root.is_dir() else []


def index_missing(fts, user: str, where: str) -> str:
    """For lmdb: '' if the index is where the settings say (relative to
    the user's home). Other backends keep their own layout, not checked."""
    if BACKEND != "lmdb" or index_files(fts.home(user), where):
        return ""
    listing = sorted(str(p.relative_to(fts.home(user)))
                     for p in fts.home(user).rglob("*") if p.is_dir())
    return (f"no fts_lmdb index files under ~{user}/{where}; the home's "
            f"directories: {listing}")


def fail_if_any(*problems: str) -> None:
    """One failure with every problem found, so that the first one does
    not hide the others."""
    problems = [p for p in problems if p]
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


# ------------------------------------------------------------ the tests

def test_edge_corpus_after_doveadm_index(start_pair):
    stock, fts = start_pair()
    messages, queries = edge_messages(), edge_queries()
    load_both(stock, fts, "alice", messages)
    doveadm_index(fts, "alice")
    fail_if_any(index_missing(fts, "alice", "Maildir/fts-lmdb"),
                mismatch_report(fts, stock, "alice", messages, queries),
                backend_errors(fts))


# The first SEARCH of a session on unindexed mail, by kind of key.
FIRST_QUERIES = {
    "body": 'BODY "spamassassin"',
    "subject": 'SUBJECT "grüße"',
    "from": 'FROM "taint.org"',
    "unindexed-header": 'HEADER X-Foo "beta"',
    "not": 'NOT TEXT "hello world"',
}


@pytest.mark.parametrize("first", sorted(FIRST_QUERIES))
def test_edge_corpus_indexed_by_first_search(start_pair, first):
    """No `doveadm index`: with fts_enforced = yes the first SEARCH has to
    bring the index up to date itself before answering, whatever kind of
    key it has (header searches too). All queries after a BODY search,
    every third after the others."""
    stock, fts = start_pair()
    messages, rest = edge_messages(), edge_queries()
    if first != "body":
        rest = rest[::3]
    queries = [FIRST_QUERIES[first]] + [q for q in rest
                                        if q != FIRST_QUERIES[first]]
    load_both(stock, fts, "alice", messages)
    fail_if_any(mismatch_report(fts, stock, "alice", messages, queries),
                index_missing(fts, "alice", "Maildir/fts-lmdb"),
                backend_errors(fts))


def test_second_mailbox_and_second_user(start_pair):
    """alice's INBOX and Archive hold the same messages in opposite order
    (so the same message has different UIDs in each), bob's INBOX every
    other one: an index that mixes up mailboxes or users gives other
    UIDs. alice is indexed by `doveadm index` (both mailboxes at once),
    bob by his first SEARCH."""
    stock, fts = start_pair()
    messages, queries = edge_messages(), edge_queries()
    layouts = [("alice", "INBOX", messages),
               ("alice", "Archive", messages[::-1]),
               ("bob", "INBOX", messages[1::2])]
    for user, mailbox, msgs in layouts:
        load_both(stock, fts, user, msgs, mailbox)
    doveadm_index(fts, "alice", "*")
    fail_if_any(*[mismatch_report(fts, stock, user, msgs, queries, mailbox)
                  for user, mailbox, msgs in layouts],
                index_missing(fts, "alice", "Maildir/fts-lmdb"),
                index_missing(fts, "bob", "Maildir/fts-lmdb"),
                backend_errors(fts))


def test_new_mail_and_expunges_after_indexing(start_pair):
    """The index kept right while the mailbox changes: mail arriving after
    `doveadm index` (the next SEARCH must index it), a few messages
    expunged by doveadm and by an IMAP client, then most of the older
    mail expunged at once (enough for an index to compact itself), new
    mail after that, mail expunged before it was ever indexed, and a
    final `doveadm index`. Intermediate stages run every third query."""
    stock, fts = start_pair()
    messages, queries = edge_messages(), edge_queries()
    some = queries[::3]
    n = len(messages)
    # UIDs are never reused: UID i stays timeline[i-1] in every report
    timeline = messages + messages + messages[:20]
    load_both(stock, fts, "alice", messages)
    doveadm_index(fts, "alice")
    for dc in (stock, fts):
        load_maildir(dc, "alice", [m.raw for m in messages])
    problems = [mismatch_report(fts, stock, "alice", timeline, some,
                                stage="after new mail")]

    def expunge_both(how: str, uids: list[int]) -> bool:
        uidset = ",".join(map(str, uids))
        failed = [f"{how} of UIDs {uidset} on the {side} server: {err}"
                  for side, dc in (("stock", stock), ("fts", fts))
                  if (err := expunge(dc, "alice", uidset,
                                     imap=how.startswith("IMAP")))]
        problems.extend(failed)
        return not failed

    stages = [("doveadm expunge", [3, 7, n - 1, n + 1]),
              ("IMAP EXPUNGE", [n + 2, 2 * n - 1, 2 * n]),
              ("doveadm expunge", list(range(10, n - 10)))]
    for how, uids in stages:
        if not expunge_both(how, uids):
            fail_if_any(*problems, backend_errors(fts))
        problems.append(mismatch_report(
            fts, stock, "alice", timeline, some,
            stage=f"after {how} of {len(uids)} messages ({uids[0]}..{uids[-1]})"))

    for dc in (stock, fts):
        load_maildir(dc, "alice", [m.raw for m in messages[:20]])
    if expunge_both("doveadm expunge", [2 * n + 1, 2 * n + 20]):
        problems.append(mismatch_report(
            fts, stock, "alice", timeline, some,
            stage="after new mail, partly expunged before any SEARCH"))
    doveadm_index(fts, "alice")
    problems.append(mismatch_report(fts, stock, "alice", timeline, queries,
                                    stage="after a final doveadm index"))
    fail_if_any(*problems, backend_errors(fts))


def test_mailbox_renamed_recreated_and_copied(start_pair):
    """After indexing: a mailbox renamed, then deleted and created again
    under its old name with other messages (the same UIDs now mean other
    mail: stale index entries would show up as extra UIDs), and messages
    copied by IMAP into a new mailbox (new UIDs for indexed mail). Every
    third query, except for the recreated mailbox."""
    stock, fts = start_pair()
    messages, queries = edge_messages(), edge_queries()
    some = queries[::3]
    reversed_msgs, thirds = messages[::-1], messages[::3]
    load_both(stock, fts, "alice", messages)
    load_both(stock, fts, "alice", reversed_msgs, "Archive")
    doveadm_index(fts, "alice", "*")
    problems = []

    def step(what: str, *doveadm_args: str) -> bool:
        for side, dc in (("stock", stock), ("fts", fts)):
            res = dc.doveadm(*doveadm_args)
            if res.returncode != 0:
                problems.append(f"{what} failed on the {side} server: "
                                f"{doveadm_failure(res)}")
                return False
        return True

    if step("rename Archive -> Renamed", "mailbox", "rename", "-u", "alice",
            "Archive", "Renamed"):
        problems.append(mismatch_report(fts, stock, "alice", reversed_msgs, some,
                                        "Renamed", stage="after rename"))
    if step("delete Renamed", "mailbox", "delete", "-u", "alice", "Renamed"):
        load_both(stock, fts, "alice", thirds, "Renamed")
        problems.append(mismatch_report(fts, stock, "alice", thirds, queries,
                                        "Renamed", stage="recreated with other mail"))
    # COPY in UID order gives the copies UIDs 1..n in the same order on both
    copied = messages[10:40]
    for side, dc in (("stock", stock), ("fts", fts)):
        client = dc.imap("alice")
        try:
            client.create("Copies")
            client.select("INBOX")
            typ, data = client.uid("COPY", "11:40", "Copies")
            if typ != "OK":
                problems.append(f"COPY on the {side} server: {typ} {data}")
        finally:
            client.logout()
    problems.append(mismatch_report(fts, stock, "alice", copied, some, "Copies",
                                    stage="after COPY of UIDs 11:40"))
    problems.append(mismatch_report(fts, stock, "alice", messages, some,
                                    stage="INBOX after all that"))
    fail_if_any(*problems, backend_errors(fts))


def test_maintenance_commands(start_pair):
    """`doveadm fts optimize` and `doveadm fts rescan`, a changed
    UIDVALIDITY and a changed mailbox GUID (the index must notice that
    what it holds is no longer this mailbox's), expunges followed by a
    rescan. Every third query, all of them at the end."""
    stock, fts = start_pair()
    messages, queries = edge_messages(), edge_queries()
    some = queries[::3]
    load_both(stock, fts, "alice", messages)
    load_both(stock, fts, "alice", messages[::-1], "Archive")
    doveadm_index(fts, "alice", "*")
    problems = []

    def run(what: str, *args: str, both: bool = False) -> bool:
        for side, dc in ((("stock", stock),) if both else ()) + (("fts", fts),):
            res = dc.doveadm(*args)
            if res.returncode != 0:
                problems.append(f"{what} failed on the {side} server: "
                                f"{doveadm_failure(res)}")
                return False
        return True

    def compare(stage: str, qs=some) -> None:
        problems.append(mismatch_report(fts, stock, "alice", messages, qs,
                                        stage=stage))
        problems.append(mismatch_report(fts, stock, "alice", messages[::-1], qs,
                                        "Archive", stage=stage))

    if run("doveadm fts optimize", "fts", "optimize", "-u", "alice"):
        compare("after fts optimize")
    if run("changing INBOX's UIDVALIDITY", "mailbox", "update", "-u", "alice",
           "--uid-validity", "4242", "INBOX", both=True):
        compare("after a UIDVALIDITY change")
    if run("changing Archive's mailbox GUID", "mailbox", "update", "-u", "alice",
           "--mailbox-guid", "0123456789abcdef0123456789abcdef", "Archive",
           both=True):
        compare("after a mailbox GUID change")
    doveadm_index(fts, "alice", "*")
    compare("after doveadm index")
    uidset = "2,5,40:60"
    errors = [f"expunge of UIDs {uidset} on the {side} server: {err}"
              for side, dc in (("stock", stock), ("fts", fts))
              if (err := expunge(dc, "alice", uidset, imap=False))]
    if errors:
        fail_if_any(*problems, *errors, backend_errors(fts))
    if run("doveadm fts rescan", "fts", "rescan", "-u", "alice"):
        compare("after expunges and fts rescan")
    if run("doveadm fts optimize", "fts", "optimize", "-u", "alice"):
        compare("after expunges, fts rescan and fts optimize", queries)
    fail_if_any(*problems, backend_errors(fts))


def expunge(dc, user: str, uidset: str, imap: bool) -> str:
    """Expunge UIDs; '' on success, else what went wrong."""
    if not imap:
        res = dc.doveadm("expunge", "-u", user, "mailbox", "INBOX", "uid", uidset)
        if res.returncode == 0:
            return ""
        return doveadm_failure(res)
    mark = dc.log_mark()
    try:
        client = dc.imap(user)
        try:
            client.select("INBOX")
            typ, data = client.uid("STORE", uidset, "+FLAGS.SILENT", r"(\Deleted)")
            if typ != "OK":
                return f"STORE: {typ} {data}"
            typ, data = client.expunge()
            if typ != "OK":
                return f"EXPUNGE: {typ} {data}"
        finally:
            try:
                client.logout()
            except Exception:
                pass
    except Exception as e:  # the server process died under the client
        errors = dc.log_errors(since=mark)
        return f"{type(e).__name__}: {e}; log: {errors[:3]}"
    return ""


# Non-default settings. "where" is the index directory relative to home.
SETTINGS_VARIANTS = {
    # Few headers: FROM, TO, HEADER X-Mailer, ... are no longer in the
    # index and must still be answered exactly. A tiny map that has to
    # grow while indexing, tiny batches, an index path of its own.
    "few-headers-small-map": (
        {"fts_lmdb_headers": "subject X-FOO", "fts_lmdb_path": "%h/custom-lmdb",
         "fts_lmdb_batch_mb": 1, "fts_lmdb_map_mb": 1},
        "custom-lmdb"),
    # As many headers as allowed, names in any case and order, some that
    # occur in MIME parts only, some repeated in messages.
    "many-headers": (
        {"fts_lmdb_headers": "Received X-Foo X-Folded content-type "
                             "Organization Subject From to CC bcc REPLY-TO "
                             "X-Long-Header Content-Description Date X-Inner-Header"},
        "Maildir/fts-lmdb"),
    # The lowest per-message token limit: the longer messages (large,
    # long line, long runs, deep nesting) are not indexed and every
    # search has to read them.
    "token-limit": (
        {"fts_lmdb_max_mail_tokens": 100},
        "Maildir/fts-lmdb"),
}


@pytest.mark.parametrize("variant", sorted(SETTINGS_VARIANTS))
def test_non_default_settings(start_pair, variant):
    settings, where = SETTINGS_VARIANTS[variant]
    stock, fts = start_pair(**settings)
    messages, queries = edge_messages(), edge_queries()
    load_both(stock, fts, "alice", messages)
    doveadm_index(fts, "alice")
    stray = ""
    if (BACKEND == "lmdb" and where != "Maildir/fts-lmdb" and
            index_files(fts.home("alice"), "Maildir/fts-lmdb")):
        stray = ("fts_lmdb_path is set, but index files were written to the "
                 "default ~/Maildir/fts-lmdb as well")
    # (warnings, e.g. about messages over the token limit, are fine)
    fail_if_any(index_missing(fts, "alice", where), stray,
                mismatch_report(fts, stock, "alice", messages, queries),
                backend_errors(fts))


# ------------------------------------------------------------ the harness

def test_edge_queries_discriminate(dovecot):
    """The query set is worth running: on stock Dovecot most queries
    match some message, and many match some but not all. (Stock only:
    needs no fts module.)"""
    stock = dovecot(**fts_instance_kwargs("stock", users=["alice"]))
    messages, queries = edge_messages(), edge_queries()
    load_maildir(stock, "alice", [m.raw for m in messages])
    assert len(messages) >= 60 and len(queries) >= 150
    none, some, refused = [], 0, []
    with SearchClient(stock, "alice") as client:
        total = len(client.search("ALL").uids)
        for q in queries:
            res = client.search(q)
            if res.uids is None:
                refused.append(f"{q}: {res.status}")
            elif not res.uids:
                none.append(q)
            elif len(res.uids) < total:
                some += 1
    # Only the deliberately bad CHARSET may be refused.
    assert [r for r in refused if "X-EDGE-UNKNOWN" not in r] == []
    assert len(none) < len(queries) * 0.35, \
        f"{len(none)} queries match nothing on stock: {none}"
    assert some > len(queries) * 0.5


def test_comparison_detects_a_difference(dovecot):
    """compare_with_stock is not vacuous: two stock servers whose
    mailboxes differ in one message's body are reported as differing
    on the queries that look at that body, and only on those."""
    messages = edge_messages()
    index = next(i for i, m in enumerate(messages) if m.name == "substr-words")
    altered = [m.raw for m in messages]
    altered[index] = altered[index].replace(b"SpamAssassin 3.4", b"SpamKiller 3.4")
    a = dovecot(**fts_instance_kwargs("stock", users=["alice"]))
    b = dovecot(**fts_instance_kwargs("stock", users=["alice"]))
    load_maildir(a, "alice", [m.raw for m in messages])
    load_maildir(b, "alice", altered)
    queries = ['BODY "SpamAssassin 3.4"', 'BODY "killer"', 'BODY "hello"',
               'SUBJECT "spamassassin"']
    mismatches = compare_with_stock(b, a, "alice", queries)
    assert [(mm.query, mm.missing, mm.extra) for mm in mismatches] == [
        ('BODY "SpamAssassin 3.4"', [index + 1], []),
        ('BODY "killer"', [], [index + 1])]
