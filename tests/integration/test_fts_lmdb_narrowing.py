"""fts_lmdb searches only the index's candidates, and that never changes an answer.

fts_lmdb moves Dovecot's per-message search loop past every message that
the index's answers rule out (plugins/fts_lmdb/fts-lmdb-search.c). These
tests compare with stock Dovecot the searches where that could go wrong:

* fts keys ANDed and ORed with keys the index doesn't answer: flags, UID
  and sequence sets, sizes, a header outside fts_lmdb_headers;
* NOT of a key, of an AND list and of an OR list; nested lists; keys
  that match nothing;
* the other commands that search: SORT, THREAD, ESEARCH (MIN MAX COUNT
  ALL), SEARCHRES ($) and CONTEXT=SEARCH updates (RETURN (UPDATE));
* a virtual mailbox over two real ones (not narrowed itself, but its
  lookups go through the same code).

The mailbox has flags, and expunged messages so that sequence numbers
aren't UIDs; more mail arrives after the index was built. With
mail_debug the plugin logs how many messages a search stepped through;
the tests check that log too, since the comparisons alone would pass as
well without any narrowing.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from fts_helpers import SearchClient, compare_with_stock, load_maildir
from fts_lmdb_helpers import (append, assert_log_clean, assert_no_errors,
                              assert_same, doveadm_ok, expunge_uids,
                              gen_message, imap_ok, session, start_pair)

USER = "alice"
COUNT = 240
LATE = 20
WORDS = {"alphaword": 3, "betaword": 5, "gammaword": 7}

SENTINEL = 'BODY "narrowx2"'
STEPPED_RE = re.compile(r"Search of INBOX steps through (\d+) of (\d+) messages")


def message(i: int) -> bytes:
    words = [w for w, n in WORDS.items() if i % n == 0]
    padding = "filler line\n" * 300 if i % 9 == 0 else ""
    return gen_message("narrow", i, " ".join(words) + "\n" + padding,
                       {"X-Tag": f"t{i % 4}"})


QUERIES = [
    # header keys first: with fts_enforced = no, unlike body keys, they
    # don't make the fts plugin index the late mail
    'SUBJECT "narrow subject 25"',
    'FROM "user25" NOT FLAGGED',
    'OR SUBJECT "narrow subject 24" FROM "user25"',
    'BODY "alphaword"',
    'BODY "alphaword" FLAGGED',
    'BODY "alphaword" UNFLAGGED',
    'BODY "alphaword" NOT FLAGGED',
    'BODY "alphaword" SEEN',
    'BODY "alphaword" UID 20:120',
    'UID 20:120 BODY "alphaword"',
    'BODY "alphaword" 10:60',
    '1:5 BODY "alphaword"',
    'BODY "alphaword" LARGER 3000',
    'BODY "alphaword" HEADER X-Tag "t2"',
    'HEADER X-Tag "t3" BODY "betaword"',
    'OR HEADER X-Tag "t3" BODY "betaword"',
    'OR BODY "alphaword" FLAGGED',
    'OR FLAGGED BODY "alphaword"',
    'OR BODY "alphaword" BODY "betaword"',
    'OR BODY "alphaword" SUBJECT "narrow subject 7"',
    'OR (BODY "alphaword" FLAGGED) BODY "betaword"',
    'OR (BODY "alphaword" SEEN) (BODY "betaword" FLAGGED)',
    'OR (OR BODY "alphaword" BODY "betaword") SEEN',
    'OR (OR BODY "alphaword" BODY "betaword") BODY "gammaword"',
    '(OR BODY "alphaword" BODY "betaword") (OR BODY "gammaword" FLAGGED)',
    'BODY "alphaword" (OR BODY "betaword" FLAGGED)',
    'BODY "alphaword" (OR BODY "betaword" BODY "gammaword")',
    'NOT BODY "alphaword"',
    'NOT BODY "alphaword" FLAGGED',
    'NOT (BODY "alphaword" BODY "betaword")',
    'NOT (OR BODY "alphaword" BODY "betaword")',
    'NOT (OR BODY "alphaword" FLAGGED)',
    'BODY "alphaword" NOT (BODY "betaword")',
    'OR NOT BODY "alphaword" BODY "betaword"',
    'BODY "alphaword" BODY "betaword" BODY "gammaword"',
    'TEXT "betaword" FROM "narrow.example"',
    'BODY "nosuchwordanywhere"',
    'BODY "nosuchwordanywhere" FLAGGED',
    'OR BODY "nosuchwordanywhere" FLAGGED',
    'BODY "narrowx1"',
    'ALL',
]

# the other commands that run a search; their whole untagged answer is
# compared, in order
COMMANDS = [
    'UID SORT (SIZE ARRIVAL) UTF-8 BODY "alphaword" UNFLAGGED',
    'UID SORT (REVERSE SUBJECT) UTF-8 OR BODY "betaword" SEEN',
    'UID THREAD REFERENCES UTF-8 BODY "gammaword"',
    'UID SEARCH RETURN (MIN MAX COUNT ALL) BODY "alphaword" UNSEEN',
    'SEARCH RETURN (COUNT) OR BODY "betaword" BODY "gammaword"',
]


def make_pair(dovecot, enforced: str = "yes"):
    """(fts, stock) holding the same mail, flags and expunges; the fts
    index built by doveadm before the last LATE messages arrived."""
    fts, stock = start_pair(dovecot, {"fts_enforced": enforced}, debug=True)
    for dc in (fts, stock):
        append(dc, USER, "INBOX", [message(i) for i in range(1, COUNT + 1)])
        with session(dc, USER) as c:
            imap_ok(*c.select("INBOX"), "SELECT")
            for n, flag in ((4, r"\Flagged"), (6, r"\Seen")):
                uids = ",".join(str(u) for u in range(n, COUNT + 1, n))
                imap_ok(*c.uid("STORE", uids, "+FLAGS.SILENT", f"({flag})"),
                        f"STORE {flag}")
        expunge_uids(dc, USER, "INBOX", list(range(11, COUNT + 1, 11)))
    doveadm_ok(fts, "index", "-u", USER, "INBOX")
    for dc in (fts, stock):
        append(dc, USER, "INBOX",
               [message(i) for i in range(COUNT + 1, COUNT + LATE + 1)])
    return fts, stock


@pytest.fixture
def pair(dovecot):
    return make_pair(dovecot)


def stepped(dc, since: int) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in STEPPED_RE.findall(dc.log_text()[since:])]


# fts_enforced = no: searches on headers alone don't index the late mail
# first, so their lookups leave it to Dovecot's own search
@pytest.mark.parametrize("enforced", ["yes", "no"])
def test_answers_equal_stock(dovecot, enforced):
    fts, stock = make_pair(dovecot, enforced)
    mark = fts.log_mark()
    assert_same(fts, stock, USER, QUERIES, step="narrowed searches")
    # the late messages were indexed by the first search, so each query
    # after it stepped through fewer messages than the mailbox has
    steps = stepped(fts, mark)
    assert steps, "no 'Search of INBOX steps through' debug line: the " \
        "searches were not narrowed"
    assert any(a < b for a, b in steps), f"no search skipped a message: {steps}"
    assert_no_errors(fts, mark, "narrowed searches")
    assert_log_clean(fts)


def test_narrowing_only_where_the_answer_allows(pair):
    fts, stock = pair
    # (query, the part the index answers, or None if the search can't be
    # narrowed)
    cases = [('BODY "gammaword"', 'BODY "gammaword"'),
             ('BODY "gammaword" FLAGGED', 'BODY "gammaword"'),
             ('OR BODY "gammaword" BODY "betaword"',
              'OR BODY "gammaword" BODY "betaword"'),
             ('BODY "gammaword" (OR BODY "betaword" FLAGGED)',
              'BODY "gammaword"'),
             ('NOT BODY "gammaword"', 'NOT BODY "gammaword"'),
             # Dovecot's simplifier turns this into NOT ... NOT ...
             ('NOT (OR BODY "gammaword" BODY "betaword")',
              'NOT BODY "gammaword" NOT BODY "betaword"'),
             ('OR BODY "gammaword" FLAGGED', None),
             ('OR (BODY "gammaword" FLAGGED) SEEN', None),
             ('NOT (BODY "gammaword" FLAGGED)', None)]
    with SearchClient(fts, USER) as c:
        c.search('BODY "alphaword"')  # indexes the late mail first
        total = len(c.search("ALL").uids)
        candidates = {a: len(c.search(a).uids) for _, a in cases if a}
        # a search after each case marks where its log lines end (the
        # log is written by another process, a little later)
        sentinel = (len(c.search(SENTINEL).uids), total)
        assert sentinel[0] not in candidates.values()
        for query, answered in cases:
            mark = fts.log_mark()
            c.search(query)
            c.search(SENTINEL)
            deadline = time.monotonic() + 10
            while (stepped(fts, mark)[-1:] != [sentinel] and
                   time.monotonic() < deadline):
                time.sleep(0.05)
            steps = stepped(fts, mark)
            assert steps[-1:] == [sentinel], (query, steps)
            # the index's answers are exact here (whole words, every
            # message indexed): it steps through just those
            want = [(candidates[answered], total)] if answered else []
            assert steps[:-1] == want, (query, steps[:-1], want)


def test_other_search_commands_equal_stock(pair):
    fts, stock = pair
    answers = {}
    for dc in (fts, stock):
        with SearchClient(dc, USER) as c:
            out = []
            for cmd in COMMANDS:
                untagged, status = c.command(cmd)
                assert status.startswith("OK"), (dc, cmd, status)
                # ESEARCH names the command's tag, which is the same on
                # both sides (same commands in the same order)
                out.append((cmd, [line for line in untagged
                                  if not line.startswith(b"* OK")]))
            answers[dc] = out
    for (cmd, got), (_, want) in zip(answers[fts], answers[stock]):
        assert got == want, f"{cmd}: fts {got} != stock {want}"
    assert any(b"ESEARCH" in b"".join(lines) for _, lines in answers[stock])


def test_saved_result_and_updates_equal_stock(pair):
    """SEARCHRES's $ and CONTEXT=SEARCH's RETURN (UPDATE): a saved result
    is searched again and kept up to date as flags change and mail
    arrives; every line both servers send must be the same."""
    fts, stock = pair
    transcripts = {}
    for dc in (fts, stock):
        lines = []
        with SearchClient(dc, USER) as c, session(dc, USER) as other:
            imap_ok(*other.select("INBOX"), "SELECT")
            for cmd in ('SEARCH RETURN (SAVE) BODY "alphaword"',
                        'UID SEARCH $ BODY "betaword"',
                        'UID SEARCH OR $ FLAGGED',
                        'UID SEARCH NOT $ BODY "gammaword"',
                        'UID SEARCH RETURN (UPDATE) BODY "alphaword" FLAGGED',
                        'UID SEARCH RETURN (UPDATE) OR BODY "betaword" SEEN'):
                untagged, status = c.command(cmd)
                lines.append((cmd, status.split()[0], untagged))
            # 3 has alphaword and isn't flagged, 12 has it and is
            # flagged, 7 has neither betaword nor \Seen; the new
            # message has alphaword
            imap_ok(*other.uid("STORE", "3", "+FLAGS.SILENT", r"(\Flagged)"),
                    "STORE")
            imap_ok(*other.uid("STORE", "12", "-FLAGS.SILENT", r"(\Flagged)"),
                    "STORE")
            imap_ok(*other.uid("STORE", "7", "+FLAGS.SILENT", r"(\Seen)"),
                    "STORE")
            imap_ok(*other.append("INBOX", r"(\Flagged)", None,
                                  message(COUNT + LATE + 1)), "APPEND")
            untagged, status = c.command("NOOP")
            lines.append(("NOOP", status.split()[0],
                          [line for line in untagged
                           if line.startswith(b"* ESEARCH")]))
        transcripts[dc] = lines
    assert transcripts[fts] == transcripts[stock]
    updates = transcripts[stock][-1][2]
    assert any(b"ADDTO" in line for line in updates), updates
    assert any(b"REMOVEFROM" in line for line in updates), updates


VIRTUAL_CONF = """
namespace inbox {
  inbox = yes
  separator = /
}
namespace virtual {
  prefix = Virtual/
  separator = /
  location = virtual:~/virtual
}
"""


def test_virtual_mailbox_equal_stock(dovecot):
    """A virtual mailbox over INBOX and Work: the fts plugin looks up
    both real mailboxes at once (the backend's lookup_multi), and the
    virtual storage searches each of them; neither may lose a match."""
    fts, stock = start_pair(dovecot, mail_plugins="virtual",
                            extra_conf=VIRTUAL_CONF, debug=True)
    for dc in (fts, stock):
        load_maildir(dc, USER, [message(i) for i in range(1, 121)])
        load_maildir(dc, USER, [message(i) for i in range(121, 201)],
                     mailbox="Work")
        home = dc.home(USER)
        # the virtual mailbox numbers messages by received date (the
        # files' mtime in Maildir): the same on both sides
        files = sorted((dc.maildir(USER) / "cur").iterdir()) + \
            sorted((dc.maildir(USER) / ".Work" / "cur").iterdir())
        for n, path in enumerate(files):
            os.utime(path, (1_500_000_000 + n * 60,) * 2)
        st = os.stat(home)
        for d in (home / "virtual", home / "virtual" / "All"):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chown(d, st.st_uid, st.st_gid)
        spec = home / "virtual" / "All" / "dovecot-virtual"
        spec.write_text("INBOX\nWork\n  all\n")
        os.chown(spec, st.st_uid, st.st_gid)
    doveadm_ok(fts, "index", "-u", USER, "INBOX")
    mark = fts.log_mark()
    mismatches = compare_with_stock(fts, stock, USER, QUERIES,
                                    mailbox="Virtual/All")
    assert not mismatches, "\n".join(str(m) for m in mismatches)
    with SearchClient(fts, USER, mailbox="Virtual/All") as c:
        assert len(c.search("ALL").uids) == 200
        assert len(c.search('BODY "alphaword"').uids) == 200 // 3
    assert_no_errors(fts, mark, "searches of a virtual mailbox")
    assert_log_clean(fts)
