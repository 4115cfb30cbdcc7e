"""fts_lmdb partial fetch (issue 4): answers are stock Dovecot's, byte for byte.

When fts_lmdb indexes a message it records the MIME structure and, for
base64 and quoted-printable leaf parts, the decoded size and checkpoints
from decoded to encoded offsets; BINARY[s]<o.n>, BINARY.PEEK[s]<o.n>,
BINARY.SIZE[s] (and BODY[s]<o.n>) then seek instead of decoding from the
start of the part. Whatever it does, the IMAP answer must be the one
stock Dovecot gives for the same file.

Two instances run side by side with the same Maildir files under the
same UIDs: stock Dovecot (no fts), the reference, and Dovecot with
`fts fts_lmdb`, indexed with `doveadm index`. The messages come from
partial_corpus.py (built byte by byte: nested multiparts, base64 with
all kinds of line lengths and line endings, quoted-printable with soft
breaks and escapes, 8bit and binary parts with NULs, message/rfc822, a
4 MB base64 part, empty parts, invalid base64 and quoted-printable,
unknown Content-Transfer-Encodings). The sections to fetch are read from
stock's BODYSTRUCTURE and the offsets from stock's sizes, so nothing
expected is written down here: every untagged response and the tagged
reply (tag, timing and time stamps masked) must be equal.

The "fast path" checks look at the mail_debug lines of each fresh
session: indexed messages must be served from their records ("partial
fetch from index", "partial size from index", and "partial seek from
index" for BODY slices far into large LF-stored mail), mail without a
record must not ("partial fetch fallback"). Fetching unindexed mail
queues its mailbox to the indexer (even with fts_autoindex = no), so the
tests that need mail to stay unindexed make the indexer unreachable.

What stock does, which the plugin has to match (found by these tests):
- BINARY of a part whose encoding is broken: NO [PARSE] for bad base64
  characters or padding, NO [UNKNOWN-CTE] for an unknown
  Content-Transfer-Encoding, but "* BYE Internal error" and a closed
  connection for truncated input (base64 without its padding, "=" or
  "=4" at the end of quoted-printable). A closed connection is compared
  too: the bytes sent before it and the fact.
- BINARY.SIZE of any part converts the whole message: it fails when any
  other part doesn't decode, and for mail stored with LF line ends it is
  wrong (even negative, printed as 2^64 - n) for parts followed by other
  base64/QP parts. See test_binary_size_every_section.
- Offsets past the end give an empty literal ({0}); <o.n> with n up to
  2^32-1 and beyond is accepted; BINARY of a multipart or message/rfc822
  section returns it with its parts decoded and their headers saying
  "Content-Transfer-Encoding: binary"; BINARY of a section that doesn't
  exist is empty and its BINARY.SIZE 0; BODY turns NUL bytes into 0x80,
  BINARY keeps them (literal8).

Random slices use a seed printed by each test; PARTIAL_SEED=<n> replays it.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import pytest

from dovecot_instance import DovecotInstance
from fts_helpers import load_maildir
from fts_lmdb_helpers import (assert_log_clean, doveadm_ok, index_dir,
                              lmdb_kwargs, lmdb_verify, require_plugin,
                              stock_kwargs, wait_indexed)
from partial_corpus import Msg, corpus, variant_corpus
from partial_helpers import (RawImap, Reply, Section, describe_difference,
                             fetched_value, one_shot, parse_fetch, sections)

USER = "alice"
U32 = 4294967295
SEED = int(os.environ.get("PARTIAL_SEED") or
           random.SystemRandom().randrange(1 << 31))

FAST_LINE = "partial fetch from index"
SIZE_LINE = "partial size from index"
# Dovecot's BINARY.SIZE of a part sums over a conversion of the whole
# message, reaching past the part in LF-stored mail; where that sum isn't
# the part's decoded size the plugin leaves the answer to Dovecot
SIZE_FALLBACK_LINE = "partial size fallback"
FALLBACK_LINE = "partial fetch fallback"
SEEK_LINE = "partial seek from index"      # BODY slice from a CRLF checkpoint
ENCODED = ("base64", "quoted-printable")

# A few messages of each kind, for the tests that start instances of
# their own.
SUBSET = ("single-b64", "single-qp-lf", "mixed", "nested-lf", "rfc822",
          "b64-lines-lf", "binary-lf", "b64-bad-chars", "qp-lone-eq-at-end",
          "cte-x-uuencode", "digest")


def seed_note() -> str:
    return f"(PARTIAL_SEED={SEED})"


# ------------------------------------------------------------ instances

class Pair:
    """fts_lmdb and stock instances holding the same mail."""

    def __init__(self, fts: DovecotInstance, stock: DovecotInstance):
        self.fts = fts
        self.stock = stock

    def __iter__(self):
        return iter((self.fts, self.stock))

    def load(self, msgs: Sequence[Msg], mailbox: str = "INBOX") -> None:
        for dc in self:
            load_maildir(dc, USER, [m.raw for m in msgs], mailbox)

    def index(self, mailbox: str = "INBOX") -> None:
        doveadm_ok(self.fts, "index", "-u", USER, mailbox)


# fts_lmdb queues a mailbox to the indexer service when a client fetches
# mail that has no record yet (even with fts_autoindex = no). Tests that
# need mail to stay unindexed make the indexer's socket unusable: the
# plugin then only logs (debug) that it couldn't queue the mailbox.
NO_INDEXER_CONF = """\
service indexer {
  unix_listener indexer {
    mode = 0
  }
}
"""


def start_instances(settings: Optional[dict] = None, autoindex: bool = False,
                    extra_conf: str = ""):
    require_plugin()
    fts = DovecotInstance(**lmdb_kwargs(settings, autoindex, debug=True,
                                        users=[USER], extra_conf=extra_conf))
    stock = DovecotInstance(**stock_kwargs(users=[USER], settings=settings,
                                           extra_conf=extra_conf))
    try:
        fts.start()
        stock.start()
    except BaseException:
        fts.stop()
        stock.stop()
        raise
    return Pair(fts, stock)


@pytest.fixture
def pair_factory():
    """Starts pairs; they are stopped at the end of the test (each test
    checks their logs for crashes itself)."""
    pairs: list[Pair] = []

    def make(**kw) -> Pair:
        p = start_instances(**kw)
        pairs.append(p)
        return p

    yield make
    for p in pairs:
        for dc in p:
            dc.stop()


@pytest.fixture(scope="module")
def indexed():
    """The whole corpus in INBOX on both instances, indexed on fts_lmdb,
    and the plan (sections and sizes) read from stock."""
    p = start_instances()
    try:
        msgs = corpus()
        p.load(msgs)
        p.index()
        with Comparer(p) as cmp:
            plans = plan_messages(cmp, msgs)
        # compared in test_corpus_in_place, so that one difference here
        # doesn't turn every test of the module into an error
        yield p, msgs, plans, cmp
        assert_log_clean(p.fts, what="fts_lmdb instance")
        assert_log_clean(p.stock, what="stock instance")
    finally:
        for dc in p:
            dc.stop()


# ------------------------------------------------------------ comparing

class Side:
    """One IMAP session on one instance, reopened after the server
    closed it (stock does that on some decoding errors)."""

    def __init__(self, dc: DovecotInstance, mailbox: str, readonly: bool):
        self.dc, self.mailbox, self.readonly = dc, mailbox, readonly
        self.client: Optional[RawImap] = None
        self.reconnects = 0

    def command(self, cmd: str) -> Reply:
        if self.client is None or not self.client.alive:
            if self.client is not None:
                self.reconnects += 1
            self.client = RawImap(self.dc.imap_port, USER,
                                  mailbox=self.mailbox, readonly=self.readonly)
        return self.client.command(cmd)

    def close(self) -> None:
        if self.client is not None:
            self.client.logout()
            self.client = None


class Comparer:
    """Sends each command to stock, then to fts_lmdb, and keeps every
    pair of answers that differ in any byte."""

    def __init__(self, pair: Pair, mailbox: str = "INBOX",
                 readonly: bool = True):
        self.pair = pair
        self.stock = Side(pair.stock, mailbox, readonly)
        self.fts = Side(pair.fts, mailbox, readonly)
        self.count = 0
        self.ok_with_data = 0
        self.mismatches: list[str] = []

    def run(self, cmd: str) -> Reply:
        s = self.stock.command(cmd)
        f = self.fts.command(cmd)
        self.compare(cmd, s, f)
        return s

    def compare(self, cmd: str, s: Reply, f: Reply) -> None:
        self.count += 1
        if s.ok and any(len(u) > 40 for u in s.fetch_data()):
            self.ok_with_data += 1
        if s.wire() != f.wire():
            self.mismatches.append(describe_difference(cmd, s, f))

    def assert_equal(self, what: str, min_commands: int = 1) -> None:
        assert self.count >= min_commands, \
            f"{what}: only {self.count} commands compared"
        assert not self.mismatches, (
            f"{what}: {len(self.mismatches)} of {self.count} answers differ "
            f"from stock ({items_summary(self.mismatches)}) {seed_note()}:\n  " +
            "\n  ".join(self.mismatches[:25]) + fts_log_tail(self.pair.fts))

    def close(self) -> None:
        self.stock.close()
        self.fts.close()

    def __enter__(self) -> "Comparer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def items_summary(differences: Sequence[str]) -> str:
    """How many of the differing commands asked for each kind of item
    (the text of each starts with its command)."""
    counts: dict[str, int] = {}
    for d in differences:
        cmd = d.split(": stock ", 1)[0]
        for item in sorted(set(re.findall(r"BINARY\.SIZE|BINARY(?:\.PEEK)?\[|"
                                          r"BODY(?:\.PEEK)?\[|BODYSTRUCTURE", cmd))):
            key = item.rstrip("[").replace(".PEEK", "")
            counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} in {v}" for k, v in sorted(counts.items()))


def fts_log_tail(dc: DovecotInstance, lines: int = 15) -> str:
    """The last fts-lmdb, error and crash lines of the log."""
    rx = re.compile(r"fts-lmdb|Error|Panic|Fatal|killed")
    picked = [ln for ln in dc.log_text().splitlines() if rx.search(ln)]
    return ("\n--- fts_lmdb log (fts-lmdb/error lines, tail) ---\n" +
            "\n".join(picked[-lines:]))


def compare_one_shot(pair: Pair, cmd: str, mailbox: str = "INBOX",
                     readonly: bool = True) -> tuple[Reply, Reply]:
    """The same command on a fresh connection to each instance (a new
    imap process: nothing cached in it)."""
    return (one_shot(pair.stock.imap_port, USER, cmd, mailbox, readonly),
            one_shot(pair.fts.imap_port, USER, cmd, mailbox, readonly))


# ------------------------------------------------------------ planning

@dataclass
class Target:
    """One section of one message, with stock's sizes."""
    seq: int
    section: str                 # "" for the whole message
    kind: str                    # leaf, multipart, whole
    cte: str = ""
    rfc822: bool = False
    bin_len: Optional[int] = None   # decoded length; None: stock refuses
    body_len: int = 0               # length of BODY[section]

    @property
    def slice_len(self) -> int:
        return self.bin_len if self.bin_len is not None else self.body_len


@dataclass
class MessagePlan:
    seq: int
    msg: Msg
    sections: list[Section]
    targets: list[Target] = field(default_factory=list)

    def leaves(self) -> list[Target]:
        return [t for t in self.targets if t.kind == "leaf"]


def _literal_len(reply: Reply, prefix: bytes) -> Optional[int]:
    value = fetched_value(reply, prefix) if reply.ok else None
    return len(value) if isinstance(value, bytes) else None


def plan_messages(cmp: Comparer, msgs: Sequence[Msg], first_seq: int = 1,
                  whole: bool = True) -> list[MessagePlan]:
    """BODYSTRUCTURE, BINARY.SIZE, BODY.PEEK and BINARY.PEEK of every
    section, compared on the way; stock's answers give the sections and
    the lengths the slices are cut from."""
    plans = []
    for i, msg in enumerate(msgs):
        seq = first_seq + i
        r = cmp.run(f"FETCH {seq} BODYSTRUCTURE")
        bs = next(parse_fetch(u)[b"BODYSTRUCTURE"] for u in r.fetch_data())
        plan = MessagePlan(seq, msg, sections(bs))
        targets = [Target(seq, s.section, s.kind, s.cte, s.rfc822)
                   for s in plan.sections]
        if whole:
            targets.insert(0, Target(seq, "", "whole"))
        for t in targets:
            # Slices are cut from the length of what stock's BINARY
            # returns, not from its BINARY.SIZE: for LF-stored mail that
            # can be wrong (see test_binary_size_lf_stored).
            cmp.run(f"FETCH {seq} BINARY.SIZE[{t.section}]")
            full = cmp.run(f"FETCH {seq} BINARY.PEEK[{t.section}]")
            t.bin_len = _literal_len(full, b"BINARY[")
            body = cmp.run(f"FETCH {seq} BODY.PEEK[{t.section}]")
            t.body_len = _literal_len(body, b"BODY[") or 0
        plan.targets = targets
        plans.append(plan)
    return plans


def edge_slices(length: int) -> list[tuple[int, int]]:
    """Offsets at 0, inside, at the end and past the end; lengths 0, 1,
    the whole part and more."""
    L = length
    cand = [(0, 0), (0, 1), (0, L), (0, L + 10), (1, max(L - 2, 0)),
            (L // 2, 1), (L // 2, 1000), (L // 3, 65536), (max(L - 1, 0), 1),
            (max(L - 1, 0), 100), (L, 0), (L, 1), (L + 1, 10), (L + 1000, 1),
            (3, U32), (U32, 1)]
    return list(dict.fromkeys(cand))


def random_slices(rng: random.Random, length: int, count: int) -> list[tuple[int, int]]:
    out = []
    for _ in range(count):
        o = rng.choice((rng.randrange(0, length + 1),
                        rng.randrange(0, max(1, length // 16)),
                        max(0, length - rng.randrange(0, 200)),
                        length + rng.randrange(0, 40)))
        n = rng.choice((rng.randrange(0, 17), rng.randrange(1, 5000),
                        rng.randrange(1, length + 3), 65536))
        out.append((o, n))
    return out


def body_only_sections(plan: MessagePlan) -> list[str]:
    """BODY sections that aren't parts: TEXT, HEADER, MIME headers,
    HEADER.FIELDS, and the header/text of message/rfc822 parts."""
    out = ["TEXT", "HEADER", "HEADER.FIELDS (Subject Content-Type)"]
    for s in plan.sections:
        if "." in s.section or len(plan.sections) > 1:
            out.append(f"{s.section}.MIME")
        if s.rfc822:
            out += [f"{s.section}.HEADER", f"{s.section}.TEXT"]
    return out


def compare_plans(cmp: Comparer, plans: Iterable[MessagePlan],
                  rng: random.Random, random_count: int = 4,
                  body_extra: bool = True) -> None:
    """Every slice kind on every section of every message, one session."""
    for plan in plans:
        seq = plan.seq
        for t in plan.targets:
            sec = t.section
            for o, n in edge_slices(t.slice_len) + \
                    random_slices(rng, t.slice_len, random_count):
                cmp.run(f"FETCH {seq} BINARY.PEEK[{sec}]<{o}.{n}>")
            for o, n in edge_slices(t.body_len) + \
                    random_slices(rng, t.body_len, random_count // 2):
                cmp.run(f"FETCH {seq} BODY.PEEK[{sec}]<{o}.{n}>")
        if body_extra:
            for sec in body_only_sections(plan):
                cmp.run(f"FETCH {seq} BODY.PEEK[{sec}]")
                cmp.run(f"FETCH {seq} BODY.PEEK[{sec}]<7.20>")


# ------------------------------------------------------------ log checks

# the end of a session: "Logged out", or "Disconnected: <why>"
LOGOUT_RE = r"imap\({user}\)<(\d+)><[^>]*>: Info: (?:Disconnected|Logged out)"


def session_log(dc: DovecotInstance, since: int, timeout: float = 10) -> list[str]:
    """The log lines of the (one) imap session that ran since `since`, up
    to its last line ("Logged out" or "Disconnected"). The imap process writes its lines in order,
    so once that line is there the debug lines before it are too."""
    try:
        m = dc.wait_for_log(LOGOUT_RE.format(user=USER), timeout, since)
        text = dc.log_text()[since:m.end()]
    except TimeoutError:
        text = dc.log_text()[since:]
    return text.splitlines()


def probe(pair: Pair, cmd: str, mailbox: str = "INBOX",
          readonly: bool = True) -> tuple[Reply, Reply, list[str]]:
    """`cmd` on a fresh connection to each instance: stock's reply,
    fts_lmdb's reply and the fts_lmdb session's log lines."""
    s = one_shot(pair.stock.imap_port, USER, cmd, mailbox, readonly)
    mark = pair.fts.log_mark()
    f = one_shot(pair.fts.imap_port, USER, cmd, mailbox, readonly)
    return s, f, session_log(pair.fts, mark)


def has(lines: list[str], needle: str) -> bool:
    return any(needle in line for line in lines)


def encoded_leaves(plans: Iterable[MessagePlan], clean_only: bool = True):
    """(plan, target) for base64/QP leaf parts with content."""
    for plan in plans:
        if clean_only and not plan.msg.clean:
            continue
        for t in plan.leaves():
            if t.cte in ENCODED and t.bin_len:
                yield plan, t


class FastPathCheck:
    """Collects what the log says about fresh-connection fetches."""

    def __init__(self, pair: Pair):
        self.pair = pair
        self.failures: list[str] = []
        self.differences: list[str] = []
        self.probes = 0

    def run(self, cmd: str, want: Sequence[str] = (),
            refuse: Sequence[str] = (), mailbox: str = "INBOX",
            readonly: bool = True, want_any: Sequence[str] = ()) -> None:
        s, f, lines = probe(self.pair, cmd, mailbox, readonly)
        self.probes += 1
        if s.wire() != f.wire():
            self.differences.append(describe_difference(cmd, s, f))
        missing = [w for w in want if not has(lines, w)]
        if want_any and not any(has(lines, w) for w in want_any):
            missing.append(" or ".join(want_any))
        present = [r for r in refuse if has(lines, r)]
        if missing or present:
            shown = [ln for ln in lines if "partial" in ln][:3]
            self.failures.append(
                f"{mailbox} {cmd}: " +
                (f"no {missing} line" if missing else "") +
                (" and " if missing and present else "") +
                (f"{present} logged" if present else "") +
                f" (partial lines of the session: {shown})")

    def assert_ok(self, what: str, min_probes: int = 1) -> None:
        assert self.probes >= min_probes, f"{what}: only {self.probes} probes"
        problems = []
        if self.failures:
            problems.append(
                f"{len(self.failures)} of {self.probes} fetches on a fresh "
                "connection did not take the expected path:\n  " +
                "\n  ".join(self.failures[:25]))
        if self.differences:
            problems.append(
                f"{len(self.differences)} answers differ from stock "
                f"({items_summary(self.differences)}):\n  " +
                "\n  ".join(self.differences[:15]))
        assert not problems, f"{what}: " + "\n".join(problems)


def mid(t: Target) -> tuple[int, int]:
    """A slice well inside the part."""
    L = t.bin_len or 0
    return L // 2, min(4096, max(1, L // 4))


# ------------------------------------------------------------ the indexed mailbox

def test_corpus_in_place(indexed):
    """The harness itself: both instances hold the corpus under the same
    UIDs, and stock's answers have real content (the comparisons below
    can't pass on two empty mailboxes)."""
    pair, msgs, plans, planning = indexed
    planning.assert_equal("BODYSTRUCTURE, BINARY.SIZE, BINARY.PEEK and "
                          "BODY.PEEK of every section", min_commands=300)
    with Comparer(pair) as cmp:
        r = cmp.run("FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        cmp.assert_equal("UIDs, sizes and Message-IDs")
    assert len(r.fetch_data()) == len(msgs), \
        f"stock holds {len(r.fetch_data())} messages, the corpus {len(msgs)}"
    for plan, u in zip(plans, r.fetch_data()):
        assert f"<{plan.msg.name}@partial.example>".encode() in u, \
            f"message {plan.seq} is not {plan.msg.name}: {u[:200]!r}"
    n_leaves = sum(len(p.leaves()) for p in plans)
    decoded = [t for p in plans for t in p.leaves()
               if t.cte in ENCODED and t.bin_len]
    assert n_leaves >= 100 and len(decoded) >= 60, (n_leaves, len(decoded))
    big = max(t.bin_len or 0 for p in plans for t in p.leaves())
    assert big > 4_000_000, f"the large part decodes to {big} bytes only"


def test_slices_one_session(indexed):
    """Every section, edge and random slices of BINARY.PEEK and BODY.PEEK,
    plus TEXT/HEADER/MIME sections, on one EXAMINE session each."""
    pair, msgs, plans, _ = indexed
    print(f"random slices: PARTIAL_SEED={SEED}")
    rng = random.Random(f"{SEED}:one-session")
    with Comparer(pair) as cmp:
        compare_plans(cmp, plans, rng)
        # several items and several messages in one command
        for plan in plans:
            leaves = plan.leaves()[:4]
            items = " ".join(
                f"BINARY.PEEK[{t.section}]<{o}.{n}> BINARY.SIZE[{t.section}] "
                f"BODY.PEEK[{t.section}]<{o // 2}.{n}>"
                for t in leaves for o, n in [mid(t)])
            cmp.run(f"FETCH {plan.seq} ({items})")
            cmp.run(f"UID FETCH {plan.seq} (BINARY.PEEK[1]<5.50> "
                    f"BINARY.PEEK[1]<0.5> BINARY.PEEK[1]<5.50>)")
        cmp.run("FETCH 1:* (BINARY.SIZE[1] BINARY.PEEK[1]<100.100>)")
        cmp.run("FETCH 1:* (BINARY.SIZE[2] BINARY.PEEK[2]<1000.64> "
                "BODY.PEEK[2]<1000.64>)")
        cmp.run("UID FETCH 1:* (BINARY.PEEK[1.1]<3.3> BINARY.SIZE[1.2])")
        cmp.assert_equal("one session", min_commands=5000)
        assert cmp.ok_with_data > 2000, cmp.ok_with_data
        print(f"{cmp.count} commands compared, {cmp.stock.reconnects} "
              "reconnects after stock closed the connection")


def test_slices_fresh_connections(indexed):
    """One fetch per connection (a new imap process each time): a slice
    inside each part, BINARY.SIZE, a BODY slice, and BINARY of the whole
    part."""
    pair, msgs, plans, _ = indexed
    print(f"PARTIAL_SEED={SEED}")
    rng = random.Random(f"{SEED}:fresh")
    differences, count = [], 0
    for plan in plans:
        for t in plan.targets:
            if t.kind == "multipart" and rng.random() < 0.5:
                continue
            o, n = mid(t) if t.bin_len else (0, 10)
            cmds = [f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<{o}.{n}>",
                    f"FETCH {plan.seq} BINARY.SIZE[{t.section}]"]
            if t.cte in ENCODED or t.kind != "leaf":
                L = t.body_len
                cmds.append(f"FETCH {plan.seq} BODY.PEEK[{t.section}]"
                            f"<{rng.randrange(0, L + 1)}.{rng.randrange(1, 3000)}>")
            if t.bin_len and t.bin_len < 200_000 and rng.random() < 0.3:
                cmds.append(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]")
            for cmd in cmds:
                s, f = compare_one_shot(pair, cmd)
                count += 1
                if s.wire() != f.wire():
                    differences.append(describe_difference(cmd, s, f))
    assert count > 200, count
    assert not differences, (
        f"{len(differences)} of {count} fresh-connection fetches differ "
        f"({items_summary(differences)}) {seed_note()}:\n  " +
        "\n  ".join(differences[:25]))


def test_sequential_and_backwards(indexed):
    """Many slices of one part on one connection: forwards in order,
    backwards, and alternating between parts; the 4 MB part in 256 KiB
    slices and medium parts in odd-sized ones."""
    pair, msgs, plans, _ = indexed
    print(f"PARTIAL_SEED={SEED}")
    rng = random.Random(f"{SEED}:sequential")
    parts = sorted((t for _, t in encoded_leaves(plans, clean_only=False)),
                   key=lambda t: -(t.bin_len or 0))
    large = parts[0]
    medium = [t for t in parts if 20_000 < (t.bin_len or 0) < 400_000][:8]
    assert large.bin_len > 4_000_000 and len(medium) >= 5
    with Comparer(pair) as cmp:
        step = 256 * 1024
        offsets = list(range(0, large.bin_len + step, step))
        for o in offsets:
            cmp.run(f"FETCH {large.seq} BINARY.PEEK[{large.section}]<{o}.{step}>")
        for o in reversed(offsets):
            cmp.run(f"FETCH {large.seq} BINARY.PEEK[{large.section}]<{o}.{step}>")
        # BODY (encoded) slices across the whole encoded part, backwards
        for o in range(large.body_len, -1, -(large.body_len // 9)):
            cmp.run(f"FETCH {large.seq} BODY.PEEK[{large.section}]<{o}.70000>")
        for t in medium:
            step = rng.choice((997, 1000, 4096, 7777))
            offsets = list(range(0, t.bin_len + step, step))
            for o in offsets:
                cmp.run(f"FETCH {t.seq} BINARY.PEEK[{t.section}]<{o}.{step}>")
            for o in reversed(offsets[::3]):
                cmp.run(f"FETCH {t.seq} BINARY.PEEK[{t.section}]<{o}.{step}>")
        # alternating between parts and messages
        for _ in range(150):
            t = rng.choice(medium + [large])
            o = rng.randrange(0, t.bin_len + 10)
            cmp.run(f"FETCH {t.seq} BINARY.PEEK[{t.section}]<{o}.{rng.randrange(0, 3000)}>")
            if rng.random() < 0.2:
                cmp.run(f"FETCH {t.seq} BINARY.SIZE[{t.section}]")
        cmp.assert_equal("sequential and backwards slices", min_commands=300)


def test_binary_size_every_section(indexed):
    """BINARY.SIZE of every section, alone on a fresh connection, all of
    a message's in one command, and of part 1 and 2 of every message in
    one command. Stock has two habits worth knowing, and the failure
    message sorts differences by them:
    - it computes the size of any part by converting the whole message,
      so BINARY.SIZE of a good part is NO (or BYE) as soon as another
      part of the message doesn't decode, while BINARY[] of that part
      works;
    - for mail stored with LF line ends it adds the converted parts that
      start within the part's CRLF length (index_mail_get_binary_size:
      end_offset = physical_pos + virtual size), so a part followed by
      other base64/QP parts gets a size that differs from the length of
      its own BINARY[] (even wrapped below zero)."""
    pair, msgs, plans, _ = indexed
    sorted_out: dict[str, list[str]] = {}

    def note(cmd: str, s: Reply, f: Reply, t: Optional[Target]) -> None:
        if s.wire() == f.wire():
            return
        value = fetched_value(s, b"BINARY.SIZE[") if s.ok else None
        if not s.ok:
            why = "stock refuses (another part of the message doesn't decode?)"
        elif t is not None and isinstance(value, int) and value != t.bin_len:
            why = "stock's BINARY.SIZE differs from its own BINARY[] length"
        elif t is None:
            why = "several sizes in one command (see the single ones)"
        else:
            why = "other"
        sorted_out.setdefault(why, []).append(describe_difference(cmd, s, f))

    count = 0
    for plan in plans:
        for t in plan.targets:
            cmd = f"FETCH {plan.seq} BINARY.SIZE[{t.section}]"
            s, f = compare_one_shot(pair, cmd)
            note(cmd, s, f, t)
            count += 1
        items = " ".join(f"BINARY.SIZE[{t.section}]" for t in plan.targets)
        cmd = f"FETCH {plan.seq} ({items})"
        s, f = compare_one_shot(pair, cmd)
        note(cmd, s, f, None)
    with Comparer(pair) as cmp:
        for cmd in ("FETCH 1:* (BINARY.SIZE[1] BINARY.SIZE[2])",
                    "UID FETCH 1:* BINARY.SIZE[1]"):
            s = cmp.stock.command(cmd)
            f = cmp.fts.command(cmd)
            note(cmd, s, f, None)
    assert count > 100, count
    assert not sorted_out, "BINARY.SIZE answers differ from stock:\n" + \
        "\n".join(f"  {why}: {len(d)} commands, e.g.\n    " + "\n    ".join(d[:4])
                  for why, d in sorted_out.items())


def test_non_peek_sets_seen(indexed):
    """BINARY[s]<o.n> and BODY[s]<o.n> set \\Seen like stock (the FLAGS in
    the FETCH response are compared too), in a SELECTed mailbox; under
    EXAMINE they don't."""
    pair, msgs, plans, _ = indexed
    with Comparer(pair, readonly=False) as cmp:
        for plan in plans:
            leaves = plan.leaves()
            t = leaves[len(leaves) // 2]
            o, n = mid(t) if t.bin_len else (0, 10)
            cmp.run(f"FETCH {plan.seq} BINARY[{t.section}]<{o}.{n}>")
            cmp.run(f"FETCH {plan.seq} BINARY[{t.section}]<0.{n}>")
            cmp.run(f"FETCH {plan.seq} FLAGS")
            cmp.run(f"STORE {plan.seq} -FLAGS.SILENT (\\Seen)")
            cmp.run(f"FETCH {plan.seq} BODY[{t.section}]<{o}.{n}>")
            cmp.run(f"STORE {plan.seq} -FLAGS.SILENT (\\Seen)")
            cmp.run(f"UID FETCH {plan.seq} (BINARY.SIZE[{t.section}] "
                    f"BINARY[{t.section}]<1.{n}>)")
            cmp.run(f"FETCH {plan.seq} FLAGS")
        cmp.run("STORE 1:* -FLAGS.SILENT (\\Seen)")
        cmp.assert_equal("BINARY/BODY with \\Seen", min_commands=100)
    with Comparer(pair, readonly=True) as cmp:
        for plan in plans[:10]:
            t = plan.leaves()[0]
            cmp.run(f"FETCH {plan.seq} BINARY[{t.section}]<0.100>")
            cmp.run(f"FETCH {plan.seq} FLAGS")
        cmp.assert_equal("BINARY under EXAMINE", min_commands=20)


def test_fast_path_taken_for_indexed_messages(indexed):
    """With the records written by `doveadm index`, a fresh connection's
    BINARY.PEEK[s]<o.n> and BINARY[s]<o.n> of a base64 or
    quoted-printable part are served by seeking ("partial fetch from
    index", no "partial fetch fallback") and BINARY.SIZE from the record
    ("partial size from index"); the answers are stock's. Fails until the
    C code of issue 4 is in."""
    pair, msgs, plans, _ = indexed
    check = FastPathCheck(pair)
    for plan, t in encoded_leaves(plans):
        o, n = mid(t)
        check.run(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<{o}.{n}>",
                  want=[FAST_LINE], refuse=[FALLBACK_LINE])
        # the last base64/QP part of a message has nothing after it for
        # Dovecot's sum to reach: the record must answer
        last = [x for x in plan.leaves() if x.cte in ENCODED][-1]
        if t is last:
            check.run(f"FETCH {plan.seq} BINARY.SIZE[{t.section}]",
                      want=[SIZE_LINE])
        else:
            check.run(f"FETCH {plan.seq} BINARY.SIZE[{t.section}]",
                      want_any=[SIZE_LINE, SIZE_FALLBACK_LINE])
    for plan, t in list(encoded_leaves(plans))[::5]:
        check.run(f"FETCH {plan.seq} BINARY[{t.section}]<{t.bin_len - 1}.10>",
                  want=[FAST_LINE], readonly=False)
    # BODY slices far into large LF-stored mail start from a CRLF
    # checkpoint ("partial seek from index"). Checkpoints are 64 KiB of
    # file apart, so an offset 150 KiB into the section always has one
    # between the section's start and itself.
    far = 150 * 1024
    lf_big = [p for p in plans if p.msg.clean and is_lf_stored(p.msg.raw)
              and p.targets[0].body_len > far + 2000]
    assert len(lf_big) >= 3, [p.msg.name for p in lf_big]
    for plan in lf_big:
        size = plan.targets[0].body_len
        cmds = [f"BODY.PEEK[]<{size - 500}.100>",
                f"BODY.PEEK[TEXT]<{size - 2000}.100>"]
        for t in plan.leaves():
            if t.body_len > far + 100:
                cmds += [f"BODY.PEEK[{t.section}]<{t.body_len - 100}.50>",
                         f"BODY[{t.section}]<{far}.5000>"]
        for cmd in cmds:
            check.run(f"FETCH {plan.seq} {cmd}", want=[SEEK_LINE],
                      readonly=not cmd.startswith("BODY["))
    check.assert_ok("indexed messages", min_probes=60)


def test_parts_records_written(indexed):
    """`doveadm index` wrote the "parts" database into the user's LMDB
    environment, and every database still reads cleanly. Fails until the
    C code of issue 4 is in."""
    pair, msgs, plans, _ = indexed
    env = index_dir(pair.fts, USER)
    res = lmdb_verify(env)
    assert res["ok"], f"{env}: {res.get('error')}"
    assert res["dbs"].get("parts", 0) > 0, \
        f"no records in a 'parts' database of {env}: {res['dbs']}"


# ------------------------------------------------------------ instances of their own

def is_lf_stored(raw: bytes) -> bool:
    """Mail whose lines end in a bare LF (as Dovecot itself stores mail
    with mail_save_crlf = no): IMAP's offsets differ from the file's."""
    head = raw.split(b"\n\n", 1)[0]
    return b"\r\n" not in head


def pick(msgs: Sequence[Msg], names: Iterable[str]) -> list[Msg]:
    by_name = {m.name: m for m in msgs}
    return [by_name[n] for n in names]


def test_unindexed_messages_fall_back(pair_factory):
    """Messages delivered after `doveadm index` (fts_autoindex = no, and
    the indexer service out of reach, so they stay unindexed) have no
    record: stock's answers, and every fresh-connection fetch of them
    logs "partial fetch fallback" and never "from index", while the
    indexed ones next to them are served from the index."""
    pair = pair_factory(extra_conf=NO_INDEXER_CONF)
    first = pick(corpus(), SUBSET)
    later = variant_corpus(7) + pick(corpus(), ("mixed", "single-qp-lf",
                                                "b64-lines-crlf"))
    pair.load(first)
    pair.index()
    pair.load(later)
    rng = random.Random(f"{SEED}:unindexed")
    print(f"PARTIAL_SEED={SEED}")
    with Comparer(pair) as cmp:
        plans = plan_messages(cmp, first + later)
        compare_plans(cmp, plans, rng, random_count=2)
        cmp.assert_equal("indexed and unindexed messages", min_commands=500)

    check = FastPathCheck(pair)
    new = plans[len(first):]
    for plan, t in encoded_leaves(new):
        o, n = mid(t)
        check.run(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<{o}.{n}>",
                  want=[FALLBACK_LINE], refuse=[FAST_LINE])
        check.run(f"FETCH {plan.seq} BINARY.SIZE[{t.section}]",
                  want=[FALLBACK_LINE], refuse=[SIZE_LINE])
    for plan, t in list(encoded_leaves(plans[:len(first)]))[:6]:
        o, n = mid(t)
        check.run(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<{o}.{n}>",
                  want=[FAST_LINE], refuse=[FALLBACK_LINE])
    check.assert_ok("unindexed messages", min_probes=20)
    assert_log_clean(pair.fts)


def test_first_fetch_queues_indexing(pair_factory):
    """fts_autoindex = no, indexer reachable: the first fetch of mail
    without a record falls back and queues the mailbox to the indexer;
    once the indexer has indexed it, fetches seek. Stock's answers
    before, during and after."""
    pair = pair_factory()
    first = pick(corpus(), ("single-b64", "mixed"))
    later = pick(corpus(), ("nested-lf", "rfc822", "b64-lines-lf"))
    pair.load(first)
    pair.index()
    pair.load(later)
    seq = len(first) + 1                 # nested-lf: 1.2.2 is base64
    mark = pair.fts.log_mark()
    check = FastPathCheck(pair)
    check.run(f"FETCH {seq} BINARY.PEEK[1.2.2]<1000.100>",
              want=[FALLBACK_LINE], refuse=[FAST_LINE])
    # queued: an indexer-worker indexes the new mail
    wait_indexed(pair.fts, USER, mark, len(first) + len(later))
    rng = random.Random(f"{SEED}:queue")
    print(f"PARTIAL_SEED={SEED}")
    with Comparer(pair) as cmp:
        plans = plan_messages(cmp, first + later)
        compare_plans(cmp, plans, rng, random_count=2, body_extra=False)
        cmp.assert_equal("after the queued indexing", min_commands=300)
    for plan, t in encoded_leaves(plans[len(first):]):
        o, n = mid(t)
        check.run(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<{o}.{n}>",
                  want=[FAST_LINE], refuse=[FALLBACK_LINE])
    check.assert_ok("mail indexed because it was fetched", min_probes=8)
    assert_log_clean(pair.fts)


def test_partial_fetch_off(pair_factory):
    """fts_lmdb_partial_fetch = no: answers are stock's and nothing is
    served from the index, though the messages are indexed."""
    pair = pair_factory(settings={"fts_lmdb_partial_fetch": "no"})
    msgs = pick(corpus(), SUBSET)
    pair.load(msgs)
    pair.index()
    mark = pair.fts.log_mark()
    rng = random.Random(f"{SEED}:off")
    print(f"PARTIAL_SEED={SEED}")
    with Comparer(pair) as cmp:
        plans = plan_messages(cmp, msgs)
        compare_plans(cmp, plans, rng, random_count=2, body_extra=False)
        cmp.assert_equal("fts_lmdb_partial_fetch = no", min_commands=300)
    check = FastPathCheck(pair)
    for plan, t in encoded_leaves(plans):
        o, n = mid(t)
        check.run(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<{o}.{n}>",
                  refuse=[FAST_LINE])
        check.run(f"FETCH {plan.seq} BINARY.SIZE[{t.section}]",
                  refuse=[SIZE_LINE])
    check.assert_ok("fts_lmdb_partial_fetch = no", min_probes=10)
    served = [ln for ln in pair.fts.log_text()[mark:].splitlines()
              if FAST_LINE in ln or SIZE_LINE in ln]
    assert not served, f"served from the index although off: {served[:5]}"
    assert (index_dir(pair.fts, USER) / "data.mdb").is_file(), \
        "the messages were not indexed at all"
    assert_log_clean(pair.fts)


def test_expunge_then_refetch(pair_factory):
    """Expunge some indexed messages (from another session while one
    stays open), then fetch the others, by sequence number and by UID,
    on the old session and on new ones; then more mail, indexed."""
    pair = pair_factory()
    msgs = pick(corpus(), SUBSET)
    pair.load(msgs)
    pair.index()
    rng = random.Random(f"{SEED}:expunge")
    print(f"PARTIAL_SEED={SEED}")
    with Comparer(pair, readonly=False) as open_session:
        plans = plan_messages(open_session, msgs)
        for plan in plans[:4]:
            t = plan.leaves()[-1]
            open_session.run(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<10.100>")
        gone = {2, 4, 5, 9}          # sequence numbers = UIDs here
        with Comparer(pair, readonly=False) as other:
            other.run(f"STORE {','.join(map(str, sorted(gone)))} "
                      "+FLAGS.SILENT (\\Deleted)")
            other.run("EXPUNGE")
            other.assert_equal("expunge")
        open_session.run("NOOP")     # the EXPUNGE responses
        kept = [p for p in plans if p.seq not in gone]
        for plan in kept:
            for t in plan.leaves():
                o, n = mid(t) if t.bin_len else (0, 10)
                open_session.run(f"UID FETCH {plan.seq} "
                                 f"BINARY.PEEK[{t.section}]<{o}.{n}>")
                open_session.run(f"UID FETCH {plan.seq} BINARY.SIZE[{t.section}]")
        for plan in plans:           # the expunged UIDs too
            open_session.run(f"UID FETCH {plan.seq} BINARY.PEEK[1]<0.20>")
        open_session.assert_equal("the session open during the expunge",
                                  min_commands=40)

    # renumbered: plan again on fresh sessions (sequence numbers moved)
    with Comparer(pair) as cmp:
        new_plans = plan_messages(cmp, [p.msg for p in kept])
        compare_plans(cmp, new_plans, rng, random_count=2, body_extra=False)
        cmp.assert_equal("after the expunge", min_commands=200)
    more = variant_corpus(11)
    pair.load(more)
    pair.index()
    with Comparer(pair) as cmp:
        plans = plan_messages(cmp, [p.msg for p in kept] + more)
        compare_plans(cmp, plans[len(kept):], rng, random_count=2,
                      body_extra=False)
        cmp.assert_equal("mail indexed after the expunge", min_commands=100)
    check = FastPathCheck(pair)
    for plan, t in list(encoded_leaves(plans))[::2]:
        o, n = mid(t)           # sequence numbers: renumbered after the expunge
        check.run(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<{o}.{n}>",
                  want=[FAST_LINE], refuse=[FALLBACK_LINE])
    check.assert_ok("after the expunge", min_probes=5)
    assert_log_clean(pair.fts)


def test_recreated_mailbox_same_uids(pair_factory):
    """Records written for UIDs 1..n of a mailbox, which is then deleted
    and created again and gets other mail under the same UIDs: before
    and after indexing the new mail, the answers are stock's; before,
    nothing is served from the old records."""
    box = "Recreated"
    pair = pair_factory(extra_conf=NO_INDEXER_CONF)
    first = pick(corpus(), ("mixed", "single-b64", "nested-lf", "rfc822"))
    second = variant_corpus(13)
    pair.load(first, box)
    pair.index(box)
    rng = random.Random(f"{SEED}:recreate")
    print(f"PARTIAL_SEED={SEED}")
    with Comparer(pair, box) as cmp:
        plans = plan_messages(cmp, first)
        compare_plans(cmp, plans, rng, random_count=2, body_extra=False)
        cmp.assert_equal("first mail", min_commands=100)
    for dc in pair:
        with RawImap(dc.imap_port, USER, mailbox=None) as c:
            c.must(f'DELETE "{box}"')
            c.must(f'CREATE "{box}"')
    pair.load(second, box)

    with Comparer(pair, box) as cmp:
        plans = plan_messages(cmp, second)
        compare_plans(cmp, plans, rng, random_count=3, body_extra=False)
        cmp.assert_equal("other mail under the same UIDs, not indexed",
                         min_commands=100)
    stale = FastPathCheck(pair)
    for plan, t in encoded_leaves(plans):
        o, n = mid(t)
        stale.run(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<{o}.{n}>",
                  refuse=[FAST_LINE], mailbox=box)
        stale.run(f"FETCH {plan.seq} BINARY.SIZE[{t.section}]",
                  refuse=[SIZE_LINE], mailbox=box)

    pair.index(box)
    with Comparer(pair, box) as cmp:
        plans = plan_messages(cmp, second)
        compare_plans(cmp, plans, rng, random_count=3, body_extra=False)
        cmp.assert_equal("other mail under the same UIDs, indexed",
                         min_commands=100)
    stale.assert_ok("recreated mailbox, not indexed", min_probes=8)
    fresh = FastPathCheck(pair)
    for plan, t in encoded_leaves(plans):
        o, n = mid(t)
        fresh.run(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<{o}.{n}>",
                  want=[FAST_LINE], mailbox=box)
    fresh.assert_ok("recreated mailbox, indexed", min_probes=8)
    assert_log_clean(pair.fts)


def test_autoindex_append_and_lmtp(pair_factory):
    """fts_autoindex = yes: mail APPENDed (stored by Dovecot itself) and
    delivered over LMTP is indexed on arrival; answers are stock's and
    come from the index. (LMTP adds Received headers that differ between
    the instances, so for those only part sections are compared.)"""
    pair = pair_factory(autoindex=True)
    appended = pick(corpus(), ("mixed", "nested-lf", "single-qp-lf",
                               "binary-crlf", "b64-bad-chars"))
    delivered = pick(corpus(), ("rfc822", "b64-lines-crlf"))
    mark = pair.fts.log_mark()
    for dc in pair:
        with RawImap(dc.imap_port, USER, mailbox=None) as c:
            for m in appended:
                c.append("INBOX", m.raw)
        # (the indexer-worker that autoindexing starts can make LMTP
        # deliveries swap UIDs)
        dc.deliver_in_order(USER, [m.raw for m in delivered])
    wait_indexed(pair.fts, USER, mark, len(appended) + len(delivered))
    rng = random.Random(f"{SEED}:autoindex")
    print(f"PARTIAL_SEED={SEED}")
    with Comparer(pair) as cmp:
        plans = plan_messages(cmp, appended)
        plans += plan_messages(cmp, delivered, first_seq=len(appended) + 1,
                               whole=False)
        compare_plans(cmp, plans[:len(appended)], rng, random_count=2)
        compare_plans(cmp, plans[len(appended):], rng, random_count=2,
                      body_extra=False)
        cmp.assert_equal("APPEND and LMTP with fts_autoindex", min_commands=300)
    check = FastPathCheck(pair)
    for plan, t in encoded_leaves(plans):
        o, n = mid(t)
        check.run(f"FETCH {plan.seq} BINARY.PEEK[{t.section}]<{o}.{n}>",
                  want=[FAST_LINE])
    check.assert_ok("autoindexed mail", min_probes=10)
    assert_log_clean(pair.fts)
