"""Hostile mail and a damaged index don't crash fts_lmdb or change answers.

Each kind of bad message sits between normal ones, in two mailboxes:
INBOX, indexed by `doveadm index`, and Trig, indexed by the first
SEARCH (in an indexer-worker with Dovecot's default vsz_limit of
256 MB). The message is indexed or skipped, never a crash, and every
answer equals stock Dovecot's for the same mailbox. The big messages (a
50 MB single-line body, 20 MB of text as base64) are generated into
pytest's tmp dir, never kept in the repo.

Then the index itself goes bad: data.mdb overwritten with garbage or cut
to half its size while nothing uses it, the index directory unreadable
(chmod 000; the mail processes run as `nobody` even when the tests run
as root, so permissions apply), fts_lmdb_path naming a regular file.
Searches must still answer as stock does (the plugin falls back to
reading the messages), the log must say what is wrong with an
"fts-lmdb" line, and after that the index is rebuilt.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

from fts_helpers import load_maildir
from fts_lmdb_helpers import (CORPUS_QUERIES, IS_LMDB, assert_lmdb_ok,
                              assert_log_clean, assert_same, corpus_paths,
                              data_mdb, doveadm_ok, gen_message, gen_queries,
                              has_lmdb_magic, index_dir, log_lines,
                              make_mail_dir, release_index, start_pair)

MB = 1 << 20


# ------------------------------------------------------------ messages

def _head(subject: str, ctype: str = "text/plain; charset=us-ascii",
          extra: str = "") -> bytes:
    return (f"From: Bad Sender <bad@badinput.example>\r\n"
            f"To: alice@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@badinput.example>\r\n"
            f"Date: Thu, 01 Jan 2015 00:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: {ctype}\r\n{extra}\r\n").encode()


def malformed_mime(_tmp: Path) -> list:
    no_boundary = _head("nobnd mime", 'multipart/mixed; boundary="=_never"') + (
        b"This multipart has no boundary lines at all: nobndmarker\r\n"
        b"--=_other\r\nContent-Type: text/plain\r\n\r\nnobndinner\r\n")
    unclosed = _head("unclosed mime", 'multipart/mixed; boundary="b1"') + (
        b"preamble unclpreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
        b"first part unclfirst\r\n--b1\r\nContent-Type: text/plain\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" +
        base64.encodebytes(b"encoded unclbase64 text").replace(b"\n", b"\r\n") +
        b"--b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n"
        b"--b2\r\nContent-Type: text/html\r\n\r\n<p>uncl<b>html</b>marker\r\n"
        b"and never closed unclend\r\n")
    empty_boundary = _head("emptybnd mime", 'multipart/mixed; boundary=""') + (
        b"--\r\nContent-Type: text/plain\r\n\r\nemptybndmarker\r\n----\r\n")
    broken_qp = _head("qp mime", "text/plain; charset=utf-8",
                      "Content-Transfer-Encoding: quoted-printable\r\n") + (
        b"soft=\r\nbreak qpjoined =ZZ bad =E2=82 truncated =\r\n=C3=A4qpumlaut"
        b" =\r\n")
    bad_b64 = _head("b64 mime", "text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: base64\r\n") + (
        b"!!!! not base64 at all ####\r\n" +
        base64.b64encode(b"partly valid b64valid text") + b"===\r\nQUJD\r\n")
    return [no_boundary, unclosed, empty_boundary, broken_qp, bad_b64]


def bad_headers(_tmp: Path) -> list:
    a = (b"This is not a header line at all\r\n"
         b"From: Head Case <head@badinput.example>\r\n"
         b": no name hdrnoname\r\n"
         b"Subject: =?utf-8?B?!!!invalid===?= hdrsubjmarker =?utf-8?Q?caf=C3=A9?=\r\n"
         b"X-Ctl: \x01\x02\x7f ctlvalue\r\n"
         b"Subject: second subject hdrsecondsubj\r\n"
         b"Content-Type: text/plain; charset=no-such-charset\r\n"
         b"Content-Type: text/html; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: x-bogus-encoding\r\n"
         b"X-8bit: caf\xe9 \xff\xfe hdr8bitmarker\r\n"
         b"\r\nbody after bad headers hdrbodymarker caf\xe9\r\n")
    b = (b" continuation with nothing before it hdrcontmarker\r\n"
         b"\tsecond continuation\r\n"
         b"From:no-space@badinput.example\r\n"
         b"Subject:nospace hdrnospacemarker\r\n"
         b"Subject " + b"x" * 2000 + b": header name too long\r\n"
         b"To: \"unterminated quote <to@badinput.example>\r\n"
         b"Cc: <<<>>>@@@, hdrccmarker@\r\n"
         b"body without a blank line first hdrnoblank\r\n")
    return [a, b]


def nul_bytes(_tmp: Path) -> list:
    a = (_head("nul\0subject nulsubjmarker", extra="X-Nul: a\0b nulhdrmarker\r\n") +
         b"before nulbefore\0\0\0nulafter after\r\n" + b"\0" * 4096 +
         b"\r\nafter the nul block nulblockmarker\r\n")
    b = (_head("nul base64", "text/plain; charset=utf-8",
               "Content-Transfer-Encoding: base64\r\n") +
         base64.encodebytes(b"decoded nul\0nulb64marker\0end").replace(b"\n", b"\r\n"))
    return [a, b]


def invalid_utf8(_tmp: Path) -> list:
    a = (_head("utf8 bad", "text/plain; charset=utf-8") +
         b"valid start utfvalid f\xc3\xbcr\r\n"
         b"invalid \xff\xfe\xc3\x28 utfinvalidmarker\r\n"
         b"overlong \xc0\xaf surrogate \xed\xa0\x80 end \xf4\x90\x80\x80\r\n"
         b"truncated at end utftrunc \xe2\x82")
    b = (_head("=?utf-8?B?" + base64.b64encode(b"subj \xff\xfe utfsubj").decode() + "?=",
               "text/plain; charset=iso-2022-jp") +
         b"broken escape \x1b$B\x30\x21\x1b(X utfjismarker \x1b$B\r\n")
    c = (_head("latin as utf8", "text/plain; charset=x-unknown-charset") +
         b"caf\xe9 na\xefve utfunknownmarker \x80\x81\x82\r\n")
    d = (_head("utf16", "text/plain; charset=utf-16") +
         "utf16marker text".encode("utf-16-le") + b"\xd8\x00\r\n")
    return [a, b, c, d]


def huge_line(tmp: Path) -> list:
    """50 MB body on one line: a 25 MB run of letters without a break (one
    giant "word"), then 25 MB of words with a new one every kilobyte."""
    path = tmp / "huge-line.eml"
    if not path.exists():
        giant = b"abcdefghij" * (25 * MB // 10)
        block = " ".join(random.Random(1).choice(
            ["lorem", "ipsum", "dolor", "sit", "amet", "harbour", "meadow"])
            for _ in range(160)).encode()
        words = b" ".join(block + b" uniq%dz" % k for k in range(25 * MB // len(block)))
        with open(path, "wb") as f:
            f.write(_head("huge line hugesubjmarker"))
            f.write(b"hugestartmarker " + giant + b" hugemiddlemarker " + words +
                    b" needle123 hugeendmarker\r\n")
    return [path]


def siblings(_tmp: Path) -> list:
    parts = [_head("ten thousand siblings", 'multipart/mixed; boundary="sib"')]
    for i in range(1, 10_001):
        parts.append(b"--sib\r\nContent-Type: text/plain\r\n\r\npart %d sibtok%dq\r\n"
                     % (i, i))
    parts.append(b"--sib--\r\nsibepilogue\r\n")
    return [b"".join(parts)]


def _nested(depth: int, tag: str) -> bytes:
    head = _head(f"nested {depth} {tag}", f'multipart/mixed; boundary="{tag}0"')
    opening, closing = [], []
    for d in range(depth):
        opening.append(
            f"--{tag}{d}\r\nContent-Type: text/plain\r\n\r\n{tag}lvl{d}q\r\n"
            f"--{tag}{d}\r\nContent-Type: multipart/mixed; boundary=\"{tag}{d + 1}\"\r\n\r\n"
            .encode())
        closing.append(f"--{tag}{d}--\r\n".encode())
    inner = (f"--{tag}{depth}\r\nContent-Type: text/plain\r\n\r\n{tag}innermost\r\n"
             f"--{tag}{depth}--\r\n").encode()
    return head + b"".join(opening) + inner + b"".join(reversed(closing))


def deep_nesting(_tmp: Path) -> list:
    # 99 levels: within Dovecot's limit of 100 nested parts; 10,000: far
    # beyond it (the parser then treats the rest as text).
    return [_nested(99, "dn"), _nested(10_000, "dx")]


def huge_header(_tmp: Path) -> list:
    one_line = (b"From: Big Header <big@badinput.example>\r\nTo: alice@example.org\r\n"
                b"Subject: one line header bighdrsubj\r\n"
                b"X-Huge: " + b"hugeword " * (MB // 9) + b"bighdrendmarker\r\n"
                b"\r\nbody of the 1 MB header message bighdrbody\r\n")
    folded = [b"From: Big Subject <bigsubj@badinput.example>\r\nSubject: start"]
    for i in range(MB // 64):
        folded.append(b"\r\n folded subject line %d bigsubjword" % i)
    folded.append(b" bigsubjendmarker\r\n\r\nbody of the folded one bigsubjbody\r\n")
    many = [b"From: Many <many@badinput.example>\r\nSubject: many headers manyhdr\r\n"]
    many += [b"X-H%d: value %d manyhdrval%dq\r\n" % (i, i, i) for i in range(20_000)]
    many.append(b"\r\nbody manyhdrbody\r\n")
    return [one_line, b"".join(folded), b"".join(many)]


def base64_bomb(tmp: Path) -> list:
    """20 MB of one repeated sentence, as base64 (27 MB)."""
    path = tmp / "base64-bomb.eml"
    if not path.exists():
        text = (b"The quick brown fox jumps over the lazy dog bombword. " *
                (20 * MB // 54)) + b"bombendmarker\n"
        with open(path, "wb") as f:
            f.write(_head("bomb", "text/plain; charset=us-ascii",
                          "Content-Transfer-Encoding: base64\r\n"))
            f.write(base64.encodebytes(b"bombstartmarker " + text))
    return [path]


def empty(_tmp: Path) -> list:
    return [b"",
            b"Subject: only headers emptyhdronly\r\nFrom: e@badinput.example\r\n",
            b"\r\nbody only, no headers emptybodyonly\r\n",
            b"\r\n\r\n   \r\n"]


KINDS = {
    "malformed_mime": (malformed_mime, [
        "nobndmarker", "nobndinner", "unclpreamble", "unclfirst", "unclbase64",
        "unclend", "emptybndmarker", "qpjoined", "qpumlaut", "b64valid"]),
    "bad_headers": (bad_headers, [
        "hdrnoname", "hdrsubjmarker", "ctlvalue", "hdrsecondsubj", "hdr8bitmarker",
        "hdrbodymarker", "hdrcontmarker", "hdrnospacemarker", "hdrccmarker",
        "hdrnoblank", "café"]),
    "nul_bytes": (nul_bytes, ["nulsubjmarker", "nulhdrmarker", "nulbefore",
                              "nulafter", "nulblockmarker", "nulb64marker"]),
    "invalid_utf8": (invalid_utf8, ["utfvalid", "für", "utfinvalidmarker",
                                    "utftrunc", "utfsubj", "utfjismarker",
                                    "utfunknownmarker", "utf16marker"]),
    "huge_line_50mb": (huge_line, ["hugesubjmarker", "hugestartmarker",
                                   "hugemiddlemarker", "hugeendmarker",
                                   "jabcdefghija", "uniq77z", "needle123"]),
    "siblings_10000": (siblings, ["sibtok1q", "sibtok5000q", "sibtok9998q",
                                  "sibtok10000q", "sibepilogue"]),
    "deep_nesting": (deep_nesting, ["dnlvl0q", "dnlvl98q", "dninnermost",
                                    "dxlvl0q", "dxlvl99q", "dxlvl150q",
                                    "dxlvl9999q", "dxinnermost"]),
    "huge_header_1mb": (huge_header, ["bighdrsubj", "bighdrendmarker", "bighdrbody",
                                      "bigsubjendmarker", "bigsubjbody",
                                      "manyhdrval19999q", "manyhdrbody"]),
    "base64_bomb": (base64_bomb, ["bombstartmarker", "bombendmarker", "bombword",
                                  "lazy dog"]),
    "empty": (empty, ["emptyhdronly", "emptybodyonly"]),
}


def kind_queries(words: list[str]) -> list[str]:
    q = []
    for i, w in enumerate(words):
        q.append(f'TEXT "{w}"')
        if i % 2:
            q.append(f'BODY "{w}"')
    q += [f'NOT BODY "{words[0]}"', f'SUBJECT "{words[0]}"',
          f'OR TEXT "{words[-1]}" FROM "badinput.example"',
          'FROM "badinput"', 'HEADER X-Huge "bighdrendmarker"']
    norm = gen_queries("norm", [1, 3, 5])
    return q + [norm[0], norm[2], norm[5], norm[7], norm[11]]


@pytest.fixture(scope="module")
def big_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("fts-lmdb-badinput")


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_message(dovecot, big_tmp, kind):
    make, words = KINDS[kind]
    fts, stock = start_pair(dovecot, users=["alice"], vsz_limit="256M")
    bad = make(big_tmp)
    msgs = ([gen_message("norm", i) for i in (1, 2, 3)] + bad +
            [gen_message("norm", i) for i in (4, 5)])
    for dc in (fts, stock):
        load_maildir(dc, "alice", msgs, link=True)
        load_maildir(dc, "alice", msgs, mailbox="Trig", link=True)
    queries = kind_queries(words)

    res = fts.doveadm("index", "-u", "alice", "INBOX", timeout=600)
    assert res.returncode == 0, (f"{kind}: doveadm index exited {res.returncode}: "
                                 f"{res.stderr.strip()[-2000:]}")
    assert_log_clean(fts, what=f"{kind}, after doveadm index")
    assert_same(fts, stock, "alice", queries, "INBOX", step=f"{kind}: doveadm index")
    # indexing done by SEARCH, in an indexer-worker (vsz_limit 256M)
    assert_same(fts, stock, "alice", queries, "Trig", step=f"{kind}: search-triggered")
    # again, now that both are indexed
    assert_same(fts, stock, "alice", queries[:6], "INBOX", step=f"{kind}: repeated")
    assert_log_clean(fts, what=kind)
    assert_lmdb_ok(fts, "alice", kind)


def test_too_many_tokens_verified(dovecot):
    """A mail with more distinct tokens than fts_lmdb_max_mail_tokens is
    not indexed, but SEARCH still finds it (by reading it), and a warning
    says so."""
    fts, stock = start_pair(dovecot, users=["alice"],
                            settings={"fts_lmdb_max_mail_tokens": 200})
    many = [gen_message("many", i, extra_body=" ".join(
        f"tok{i}n{j}z" for j in range(1000)) + "\n") for i in (1, 2)]
    msgs = [gen_message("norm", i) for i in (1, 2, 3)] + many + \
        [gen_message("norm", i) for i in (4, 5)]
    for dc in (fts, stock):
        load_maildir(dc, "alice", msgs)
        load_maildir(dc, "alice", msgs, mailbox="Trig")
    queries = ['BODY "tok1n999z"', 'BODY "tok2n0z"', 'TEXT "n500z"',
               'NOT BODY "tok1n5z"', 'OR BODY "tok2n7z" BODY "normx1q"'] + \
        gen_queries("many", [1, 2]) + gen_queries("norm", [1, 5])
    mark = fts.log_mark()
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    assert_same(fts, stock, "alice", queries, "INBOX", step="doveadm index")
    assert_same(fts, stock, "alice", queries, "Trig", step="search-triggered")
    if IS_LMDB:
        warn = log_lines(fts, r"fts-lmdb", mark)
        assert any("Warning" in line for line in warn), \
            f"no fts-lmdb warning about the over-long mails; fts-lmdb lines: {warn[:5]}"
    assert_log_clean(fts)
    assert_lmdb_ok(fts, "alice")


# ------------------------------------------------------------ damaged index

def _indexed_pair(dovecot, **kw):
    fts, stock = start_pair(dovecot, users=["alice"], **kw)
    msgs = [p.read_bytes() for p in corpus_paths(300)]
    msgs += [gen_message("dmg", i) for i in range(1, 11)]  # UIDs 301-310
    for dc in (fts, stock):
        load_maildir(dc, "alice", msgs)
    return fts, stock


QUERIES = CORPUS_QUERIES + gen_queries("dmg", [1, 5, 10])


def _fts_lmdb_lines(dc, since):
    return log_lines(dc, r"fts-lmdb", since)


@pytest.mark.parametrize("damage", ["garbage", "half", "zero_meta"])
def test_corrupt_index_falls_back_and_rebuilds(dovecot, damage):
    fts, stock = _indexed_pair(dovecot)
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    assert_same(fts, stock, "alice", QUERIES, step="before the damage")

    killed = release_index(fts, "alice")
    path = data_mdb(fts, "alice")
    if IS_LMDB:
        assert path.is_file(), f"no {path} after doveadm index"
        size = path.stat().st_size
        if damage == "garbage":
            with open(path, "r+b") as f:  # same inode, same size
                f.write(random.Random(7).randbytes(size))
        elif damage == "half":
            os.truncate(path, size // 2)
        else:  # both meta pages zeroed: no valid root at all
            with open(path, "r+b") as f:
                f.write(b"\0" * 8192)
    mark = fts.log_mark()
    assert_same(fts, stock, "alice", QUERIES, step=f"first search after {damage}")
    if IS_LMDB:
        lines = _fts_lmdb_lines(fts, mark)
        assert lines, f"nothing logged with 'fts-lmdb' after the {damage} damage"
    assert_same(fts, stock, "alice", QUERIES, step=f"second search after {damage}")

    for dc in (fts, stock):
        dc.deliver("alice", gen_message("dmg", 11))
    assert_same(fts, stock, "alice", QUERIES + gen_queries("dmg", [11]),
                step=f"after {damage}, new mail")
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    assert_same(fts, stock, "alice", QUERIES + gen_queries("dmg", [11]),
                step=f"after {damage}, doveadm index")
    if IS_LMDB:
        assert has_lmdb_magic(path), f"{path} was not rebuilt (no LMDB meta page)"
        assert_lmdb_ok(fts, "alice", f"rebuilt after {damage}")
    assert_log_clean(fts, killed=killed)


def _force_resync_ok(dc, what: str) -> None:
    """`doveadm force-resync` must not fail because the fts index is
    unusable (fts runs its optimize as part of it)."""
    res = dc.doveadm("force-resync", "-u", "alice", "INBOX", timeout=300)
    assert res.returncode == 0, (f"{what}: doveadm force-resync INBOX exited "
                                 f"{res.returncode}: {res.stderr.strip()[-1000:]}")


def test_unreadable_index_dir(dovecot):
    fts, stock = _indexed_pair(dovecot)
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    assert_same(fts, stock, "alice", QUERIES, step="indexed")
    killed = release_index(fts, "alice")
    d = index_dir(fts, "alice")
    mode = d.stat().st_mode if d.exists() else None
    try:
        if IS_LMDB:
            os.chmod(d, 0)
        mark = fts.log_mark()
        assert_same(fts, stock, "alice", QUERIES, step="index dir mode 000")
        for dc in (fts, stock):
            dc.deliver("alice", gen_message("dmg", 11))
        assert_same(fts, stock, "alice", QUERIES + gen_queries("dmg", [11]),
                    step="mode 000, new mail")
        fts.doveadm("index", "-u", "alice", "INBOX", timeout=300)  # may fail
        assert_same(fts, stock, "alice", gen_queries("dmg", [11]),
                    step="mode 000, after doveadm index")
        assert_log_clean(fts, killed=killed, what="with the index dir at mode 000")
        if IS_LMDB:
            lines = _fts_lmdb_lines(fts, mark)
            assert any("Error" in line or "Warning" in line for line in lines), \
                f"no fts-lmdb error for the unreadable {d}: {lines[:5]}"
        _force_resync_ok(fts, "index dir at mode 000")
    finally:
        if mode is not None:
            os.chmod(d, mode & 0o7777)
    # readable again: answers still right, index usable again
    assert_same(fts, stock, "alice", QUERIES + gen_queries("dmg", [11]),
                step="mode restored")
    doveadm_ok(fts, "index", "-u", "alice", "INBOX")
    assert_lmdb_ok(fts, "alice", "after the mode was restored")
    assert_log_clean(fts, killed=killed)


def test_index_path_is_a_regular_file(dovecot):
    """fts_lmdb_path names a regular file (set by a reload after the mail
    was loaded, the way an admin's mistake would arrive)."""
    d = Path(tempfile.mkdtemp(prefix="fts-lmdb-test-", dir="/tmp"))
    try:
        make_mail_dir(d)
        f = d / "not-a-directory"
        f.write_text("this is a file, not an index directory\n")
        os.chown(f, os.stat(d).st_uid, os.stat(d).st_gid)
        fts, stock = _indexed_pair(dovecot)
        if IS_LMDB:
            fts.plugin_settings["fts_lmdb_path"] = str(f)
            fts.reload()
        mark = fts.log_mark()
        fts.doveadm("index", "-u", "alice", "INBOX", timeout=300)  # may fail
        assert_log_clean(fts, what="after doveadm index")
        assert_same(fts, stock, "alice", QUERIES, step="fts_lmdb_path is a file")
        for dc in (fts, stock):
            dc.deliver("alice", gen_message("dmg", 11))
        assert_same(fts, stock, "alice", QUERIES + gen_queries("dmg", [11]),
                    step="fts_lmdb_path is a file, new mail")
        assert_log_clean(fts)
        if IS_LMDB:
            lines = _fts_lmdb_lines(fts, mark)
            assert any("Error" in line or "Warning" in line for line in lines), \
                f"no fts-lmdb error for fts_lmdb_path={f}: {lines[:5]}"
            assert f.read_text().startswith("this is a file"), f"{f} was overwritten"
        _force_resync_ok(fts, "fts_lmdb_path is a file")
    finally:
        shutil.rmtree(d, ignore_errors=True)
