#!/usr/bin/python3
"""A deterministic set of IMAP SEARCH queries drawn from the corpus.

The queries exercise what a full-text index has to get right to give the
answers of IMAP SEARCH, which are case-insensitive substring matches:
whole words of every frequency, fragments from inside words, phrases,
addresses and domains, mixed case, non-ASCII words, on the keys BODY,
TEXT, SUBJECT, FROM, TO, CC and HEADER <name>, alone and combined with
AND, OR and NOT.

Only the query strings come from here. What they should match is always
what stock Dovecot answers (tests/integration/fts_helpers.py), never
something computed in Python: Dovecot's charset and MIME decoding is the
reference, and e.g. Python's email package decodes some broken messages
differently.

    from queries import build_queries
    for q in build_queries():          # the same list on every run
        print(q.category, q.text)

CLI: /usr/bin/python3 bench/queries.py [--seed N] [--json]
"""

from __future__ import annotations

import argparse
import collections
import email
import email.errors
import email.header
import email.utils
import json
import random
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import corpus  # noqa: E402
from fts_helpers import quote  # noqa: E402

SEED = 1993  # any fixed value; changing it gives another, equally valid set

# The queries the fts_lmdb issue names; always present, listed first.
NAMED = ['BODY "assassin"', 'BODY "spamassassin"', 'BODY "taint.org"',
         'TEXT "taint.org"', 'TEXT "hello"', 'BODY "razor"']

# Headers searched with HEADER <name>: common in the corpus, with values
# of different shapes (product names, list ids, message ids, addresses,
# free text, host names).
HEADER_KEYS = {"X-Mailer": 5, "List-Id": 4, "Message-ID": 4, "Reply-To": 3,
               "User-Agent": 3, "Organization": 3, "Received": 3}


@dataclass(frozen=True)
class Query:
    category: str  # what it exercises, e.g. "body-fragment" (for reports)
    text: str      # IMAP SEARCH syntax, as after "UID SEARCH"


# ------------------------------------------------------------ corpus stats

_ASCII_WORD = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z]{3,20}(?![A-Za-z0-9_])")
_WORD = re.compile(r"\w+")
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+")


def _decode_header(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return value


def _part_text(part) -> tuple[str, bool]:
    """(text, trustworthy): trustworthy only when the part declared a
    charset that decoded cleanly, so non-ASCII words taken from it are what
    the sender wrote and not mojibake of a wrong guess."""
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset()
    if charset:
        try:
            return payload.decode(charset), True
        except (LookupError, UnicodeError):
            pass
    return payload.decode("latin-1"), False


class CorpusStats:
    """Document frequencies of the corpus' words, addresses and headers."""

    def __init__(self, paths: Iterable[Path]):
        self.body_df = collections.Counter()      # lowercase ASCII words
        self.subject_df = collections.Counter()
        self.nonascii_df = collections.Counter()  # words as written
        self.cjk_df = collections.Counter()       # CJK runs
        self.addr_df = {k: collections.Counter() for k in ("from", "to", "cc")}
        self.domain_df = {k: collections.Counter() for k in ("from", "to", "cc")}
        self.name_df = collections.Counter()      # From display-name words
        self.header_values: dict[str, list[str]] = {k: [] for k in HEADER_KEYS}
        self.phrases = collections.Counter()      # "word word" from bodies
        self.count = 0
        for path in paths:
            self._add(email.message_from_bytes(path.read_bytes()))

    def _add(self, msg) -> None:
        self.count += 1
        subject = _decode_header(msg.get("Subject", "") or "")
        self.subject_df.update({w.lower() for w in _ASCII_WORD.findall(subject)})
        self._add_nonascii(subject)

        for key in ("from", "to", "cc"):
            values = [_decode_header(v) for v in msg.get_all(key, [])]
            addrs = {a.lower() for _, a in email.utils.getaddresses(values)
                     if _ADDRESS.fullmatch(a)}
            self.addr_df[key].update(addrs)
            self.domain_df[key].update({a.split("@", 1)[1] for a in addrs})
            if key == "from":
                for name, _ in email.utils.getaddresses(values):
                    self.name_df.update({w.lower() for w in
                                         _ASCII_WORD.findall(name) if len(w) >= 4})

        for key in HEADER_KEYS:
            self.header_values[key].extend(str(v) for v in msg.get_all(key, []))

        words: set[str] = set()
        for part in msg.walk():
            if part.is_multipart() or part.get_content_maintype() != "text":
                continue
            text, trusted = _part_text(part)
            words.update(w.lower() for w in _ASCII_WORD.findall(text)
                         if len(w) >= 4)
            if trusted:
                self._add_nonascii(text)
            # Two words separated by one space: phrases an index must keep
            # in order (only from plain text, where they are really adjacent).
            if part.get_content_subtype() == "plain":
                self.phrases.update(set(re.findall(
                    r"(?<![\w-])([a-z]{4,12} [a-z]{4,12})(?![\w-])", text)))
        self.body_df.update(words)

    def _add_nonascii(self, text: str) -> None:
        self.nonascii_df.update({w for w in _WORD.findall(text)
                                 if not w.isascii() and w.isalpha()
                                 and len(w) >= 4 and not _CJK.search(w)})
        self.cjk_df.update(set(_CJK.findall(text)))


# ------------------------------------------------------------ picking

class Builder:
    def __init__(self, stats: CorpusStats, seed: int):
        self.stats = stats
        self.rng = random.Random(seed)
        self.queries: list[Query] = []
        self.seen: set[str] = set()
        self.broad: set[str] = set()  # queries on words in 500+ messages

    def add(self, category: str, text: str) -> bool:
        if text in self.seen:
            return False
        self.seen.add(text)
        self.queries.append(Query(category, text))
        return True

    def pick(self, counter: collections.Counter, n: int, lo: int = 1,
             hi: int = 10**9, pred=lambda w: True) -> list[str]:
        """n distinct keys with lo <= frequency <= hi, sampled
        deterministically (candidates sorted, then a seeded sample)."""
        pool = sorted(k for k, c in counter.items()
                      if lo <= c <= hi and pred(k))
        return self.rng.sample(pool, min(n, len(pool)))

    def simple(self, category: str, key: str, values: Iterable[str]) -> None:
        for v in values:
            self.add(category, f"{key} {quote(v)}")

    def mixed_case(self, word: str) -> str:
        styles = [str.upper, str.title,
                  lambda w: "".join(c.upper() if self.rng.random() < 0.5
                                    else c for c in w)]
        out = self.rng.choice(styles)(word)
        return out if out != word else word.upper()


def _fragment(rng: random.Random, word: str, where: str) -> str:
    """A 3-6 letter piece of `word`: from inside it (neither its first nor
    its last letter), or its start or end."""
    if where == "prefix":
        return word[:rng.randint(4, min(6, len(word) - 1))]
    if where == "suffix":
        return word[-rng.randint(4, min(6, len(word) - 1)):]
    start = rng.randint(1, len(word) - 4)
    length = rng.randint(3, min(6, len(word) - 1 - start))
    return word[start:start + length]


def build_queries(paths: Optional[list[Path]] = None,
                  seed: int = SEED) -> list[Query]:
    """About 260 queries from the corpus (default: the whole of it)."""
    stats = CorpusStats(paths if paths is not None else corpus.ensure_corpus())
    b = Builder(stats, seed)
    rng = b.rng
    body, subj = stats.body_df, stats.subject_df

    for text in NAMED:
        b.add("named", text)

    # Whole words at three document frequencies: rare ones are what people
    # look for, common ones stress the size of posting lists.
    for lo, hi in ((2, 5), (20, 200), (500, 4000)):
        b.simple("body-word", "BODY", b.pick(body, 10, lo, hi))
        b.simple("text-word", "TEXT", b.pick(body, 5, lo, hi))
    b.broad.update(q.text for q in b.queries[-15:])

    # Fragments: IMAP SEARCH is substring search, so "ssass" must find
    # "spamassassin". Taken from words long enough to have an inside.
    long_words = b.pick(body, 60, 3, 10**9, lambda w: len(w) >= 7)
    for w in long_words[:25]:
        b.add("body-fragment", f"BODY {quote(_fragment(rng, w, 'inside'))}")
    for w in long_words[25:30]:
        b.add("body-prefix", f"BODY {quote(_fragment(rng, w, 'prefix'))}")
    for w in long_words[30:35]:
        b.add("body-suffix", f"BODY {quote(_fragment(rng, w, 'suffix'))}")
    for w in long_words[35:43]:
        b.add("text-fragment", f"TEXT {quote(_fragment(rng, w, 'inside'))}")

    b.simple("body-phrase", "BODY", b.pick(stats.phrases, 8, 3, 500))

    b.simple("subject-word", "SUBJECT", b.pick(subj, 15, 2, 1000,
                                                lambda w: len(w) >= 4))
    for w in b.pick(subj, 8, 2, 10**9, lambda w: len(w) >= 7):
        b.add("subject-fragment", f"SUBJECT {quote(_fragment(rng, w, 'inside'))}")

    # Addresses and domains. "@domain" is how people narrow to a domain;
    # a bare domain also matches subdomains and other headers' text.
    for key, n_addr, n_dom in (("from", 8, 8), ("to", 6, 6), ("cc", 4, 4)):
        up = key.upper()
        b.simple(f"{key}-address", up, b.pick(stats.addr_df[key], n_addr, 2))
        for i, d in enumerate(b.pick(stats.domain_df[key], n_dom, 2)):
            b.add(f"{key}-domain", f"{up} {quote(('@' if i % 2 else '') + d)}")
    b.simple("from-name", "FROM", b.pick(stats.name_df, 6, 2))

    for name, n in HEADER_KEYS.items():
        b.simple("header", f"HEADER {name}", _header_needles(b, name, n))

    # Mixed case: SEARCH is case-insensitive (i;unicode-casemap).
    for w in b.pick(body, 8, 5, 2000, lambda w: len(w) >= 5):
        b.add("mixed-case", f"BODY {quote(b.mixed_case(w))}")
    for w in b.pick(subj, 4, 3, 1000, lambda w: len(w) >= 5):
        b.add("mixed-case", f"SUBJECT {quote(b.mixed_case(w))}")
    for d in b.pick(stats.domain_df["from"], 3, 10):
        b.add("mixed-case", f"FROM {quote(b.mixed_case(d))}")

    # Non-ASCII: accented Latin words and pieces of CJK text (which has no
    # spaces, so any run of characters is a "fragment").
    for i, w in enumerate(b.pick(stats.nonascii_df, 9, 2)):
        key = ("BODY", "TEXT", "BODY")[i % 3]
        b.add("non-ascii", f"{key} {quote(w)}")
    for run in b.pick(stats.cjk_df, 3, 2, 10**9, lambda r: len(r) >= 4):
        start = rng.randint(0, len(run) - 2)
        b.add("non-ascii", f"BODY {quote(run[start:start + rng.randint(2, 3)])}")

    _combinations(b)
    return b.queries


def _header_needles(b: Builder, name: str, n: int) -> list[str]:
    """Search strings for HEADER <name>: frequent tokens of its values."""
    values = b.stats.header_values[name]
    df = collections.Counter()
    for v in values:
        if name == "Message-ID":
            # the right-hand side: which host or software made the id
            df.update(set(re.findall(r"@([\w.-]+\.\w+)", v)))
        elif name == "List-Id":
            df.update(set(re.findall(r"<([^<>\s]+)>", v)))
        elif name == "Reply-To":
            df.update({a.lower() for _, a in email.utils.getaddresses([v])
                       if _ADDRESS.fullmatch(a)})
        elif name == "Received":
            df.update(set(re.findall(r"\b(?:from|by) ([a-z][\w-]*(?:\.[\w-]+)+)", v)))
        else:
            df.update({w.lower() for w in _ASCII_WORD.findall(v) if len(w) >= 4})
    return b.pick(df, n, 3)


def _combinations(b: Builder) -> None:
    """AND, OR, NOT and nesting over the single-key queries picked above."""
    singles = [q.text for q in b.queries
               if q.category not in ("named", "non-ascii")]
    # Two independent rare terms almost never meet in one message, so each
    # AND gets one term that matches hundreds of messages (the common words).
    broad = [q.text for q in b.queries if q.text in b.broad]
    rng = b.rng

    def two():
        return rng.sample(singles, 2)

    for _ in range(12):
        b.add("and", f"{rng.choice(singles)} {rng.choice(broad)}")
    for _ in range(12):
        x, y = two()
        b.add("or", f"OR {x} {y}")
    for _ in range(4):
        b.add("not", f"NOT {rng.choice(singles)}")
    for _ in range(4):
        x, y = two()
        b.add("not", f"{x} NOT {y}")
    for _ in range(3):
        x, y = two()
        z = rng.choice(singles)
        b.add("nested", f"OR ({x} {y}) NOT {z}")
    for _ in range(3):
        x, y = two()
        z = rng.choice(singles)
        b.add("nested", f"(OR {x} {y}) {z}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    queries = build_queries(seed=args.seed)
    if args.json:
        json.dump([asdict(q) for q in queries], sys.stdout, ensure_ascii=False,
                  indent=1)
        print()
        return
    for q in queries:
        print(f"{q.category:<18} {q.text}")
    counts = collections.Counter(q.category for q in queries)
    print(f"# {len(queries)} queries: " +
          ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
