"""Generated MIME messages for the partial-fetch tests and benchmark.

Every message is built by hand, byte by byte, so that line endings,
base64 line lengths, quoted-printable soft breaks and the bad input are
exactly what the test wants (no email library re-encoding anything).
Nothing is stored in the repository: the same seed gives the same bytes.

    corpus(seed)            -> list of Msg (name, raw bytes, clean flag)
    variant_corpus(seed)    -> smaller set, same shapes as a few of corpus()
                               but other contents and sizes (for "another
                               message with the same UID" checks)
    big_message(seed, ...)  -> the benchmark's message: text part 1,
                               large base64 attachment as part 2

`clean` says that every base64 and quoted-printable part of the message
is valid (what fts_lmdb's partial fetch is expected to serve from its
index); the answers themselves are never hard-coded, they always come
from stock Dovecot.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from typing import Optional, Sequence

CRLF = b"\r\n"
LF = b"\n"

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet "
         "kilo lima mike november oscar papa quebec romeo sierra tango "
         "uniform victor whiskey xray yankee zulu").split()


@dataclass
class Msg:
    name: str
    raw: bytes
    clean: bool = True      # all base64/QP parts valid


# ------------------------------------------------------------ building blocks

def text(rng: random.Random, nbytes: int, width: int = 72,
         eol: bytes = CRLF) -> bytes:
    """ASCII words in lines of at most `width` characters, ~nbytes long."""
    out, line, size = [], [], 0
    while size < nbytes:
        w = rng.choice(WORDS)
        if line and len(" ".join(line)) + 1 + len(w) > width:
            out.append(" ".join(line).encode())
            size += len(out[-1]) + len(eol)
            line = []
        line.append(w)
    if line:
        out.append(" ".join(line).encode())
    return eol.join(out) + eol


def b64(data: bytes, line_len: int = 76, eol: bytes = CRLF,
        final_eol: bool = True) -> bytes:
    """base64 of `data` in lines of `line_len` characters (0: one line)."""
    enc = base64.b64encode(data)
    if line_len <= 0:
        lines = [enc] if enc else []
    else:
        lines = [enc[i:i + line_len] for i in range(0, len(enc), line_len)]
    body = eol.join(lines)
    if lines and final_eol:
        body += eol
    return body


def headers(*lines: str, eol: bytes = CRLF) -> bytes:
    """Header lines, then the empty line."""
    return b"".join(h.encode("latin-1") + eol for h in lines) + eol


def part(ctype: str, body: bytes, cte: Optional[str] = None,
         eol: bytes = CRLF, extra: Sequence[str] = ()) -> bytes:
    """One MIME entity: its headers and body."""
    lines = [f"Content-Type: {ctype}"]
    if cte is not None:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    lines += list(extra)
    return headers(*lines, eol=eol) + body


def multipart_body(parts: Sequence[bytes], boundary: str, eol: bytes = CRLF,
                   preamble: bytes = b"", epilogue: bytes = b"",
                   close: bool = True) -> bytes:
    """Parts between boundary lines. The line break before each boundary
    belongs to the boundary (RFC 2046), so a part that ends with a line
    break of its own keeps it in its body."""
    bnd = boundary.encode()
    out = preamble + eol if preamble else b""
    for i, p in enumerate(parts):
        out += (eol if i else b"") + b"--" + bnd + eol + p
    if close:
        out += eol + b"--" + bnd + b"--" + eol + epilogue
    return out


def multipart(subtype: str, parts: Sequence[bytes], boundary: str,
              eol: bytes = CRLF, **kw) -> bytes:
    """A multipart entity (headers and body)."""
    return part(f'multipart/{subtype}; boundary="{boundary}"',
                multipart_body(parts, boundary, eol, **kw), eol=eol)


def message(name: str, entity: bytes, eol: bytes = CRLF,
            extra: Sequence[str] = ()) -> bytes:
    """Top-level headers, then `entity` (which starts with its own
    Content-* headers, ending the header block)."""
    top = ["From: Partial Tester <tester@partial.example>",
           "To: alice@example.org",
           f"Subject: partial fetch {name}",
           f"Message-ID: <{name}@partial.example>",
           "Date: Thu, 01 Jan 2015 00:00:00 +0000",
           "MIME-Version: 1.0", *extra]
    return b"".join(h.encode() + eol for h in top) + entity


# ------------------------------------------------------------ the corpus

def _qp_good(eol: bytes, rng: random.Random) -> bytes:
    """Valid quoted-printable with everything a decoder has to handle."""
    long_soft = b"".join(
        b"soft " + rng.choice(WORDS).encode() * 12 + b" =" + eol
        for _ in range(8))
    return (b"Plain line" + eol +
            b"caf=C3=A9 na=c3=afve =3D equals =3d lower" + eol +
            b"trailing spaces   " + eol +
            b"trailing tab\t" + eol +
            b"encoded trailing space=20" + eol +
            b"encoded tab=09" + eol +
            b"soft break with blanks after the equals sign =   " + eol +
            b"continues here" + eol +
            long_soft + b"end of soft run" + eol +
            b"x" * 500 + b" a 500-character line, no soft break" + eol +
            b"=E2=82=AC euro, =F0=9F=98=80 emoji, raw 8bit \xc3\xbc" + eol +
            b"exactly seventy-six characters long then a soft break.......=" + eol +
            b"joined" + eol +
            text(rng, 3000, 76, eol) +
            b"the last line ends with a soft break=" + eol)


def corpus(seed: int = 4) -> list[Msg]:
    rng = random.Random(seed)
    rb = rng.randbytes
    msgs: list[Msg] = []

    def add(name, entity, eol=CRLF, clean=True, extra=()):
        msgs.append(Msg(name, message(name, entity, eol, extra), clean))

    # 1. single-part text, 7bit
    add("plain", part("text/plain; charset=us-ascii",
                      text(rng, 2500), "7bit"))

    # 2. single-part base64 (the body is section 1), 76-char lines, CRLF
    add("single-b64", part("application/octet-stream",
                           b64(rb(70_001)), "base64"))

    # 3. single-part quoted-printable, LF line endings
    add("single-qp-lf", part("text/plain; charset=utf-8",
                             _qp_good(LF, rng), "quoted-printable", eol=LF),
        eol=LF)

    # 4. multipart/mixed: QP text, base64 76 CRLF, base64 without breaks
    add("mixed", multipart("mixed", [
        part("text/plain; charset=utf-8", _qp_good(CRLF, rng),
             "quoted-printable"),
        part("application/octet-stream", b64(rb(150_000)), "base64"),
        part("image/png", b64(rb(40_002), 0), "base64"),
    ], "mixed-bnd-1"))

    # 5. three levels, LF: mixed > alternative > related
    add("nested-lf", multipart("mixed", [
        multipart("alternative", [
            part("text/plain; charset=utf-8", _qp_good(LF, rng),
                 "quoted-printable", eol=LF),
            multipart("related", [
                part("text/html; charset=utf-8",
                     b64(b"<html><body>" + text(rng, 20_000, eol=LF) +
                         b"</body></html>", 76, LF), "base64", eol=LF),
                part("image/gif", b64(rb(30_001), 61, LF), "base64", eol=LF),
            ], "rel-bnd-3", LF),
        ], "alt-bnd-2", LF),
        part("application/pdf", b64(rb(90_000), 75, LF), "base64", eol=LF),
        part("text/plain; charset=utf-8",
             "8bit text: gr\u00fc\u00dfe, \u20ac, \u65e5\u672c\n".encode() * 50,
             "8bit", eol=LF),
    ], "mix-bnd-1", LF, preamble=b"This is a preamble.",
        epilogue=b"This is the epilogue." + LF), eol=LF)

    # 6. multipart/mixed inside multipart/alternative, CRLF, 3 levels
    add("alt-mixed", multipart("alternative", [
        part("text/plain", text(rng, 1000), "7bit"),
        multipart("mixed", [
            part("text/html", b64(text(rng, 9_000), 76), "base64"),
            multipart("mixed", [
                part("application/octet-stream", b64(rb(5_000), 1),
                     "base64"),
                part("text/plain; charset=utf-8", _qp_good(CRLF, rng),
                     "quoted-printable"),
            ], "deep-bnd-3"),
        ], "inner-bnd-2"),
    ], "outer-bnd-1"))

    # 7. base64 line lengths: 75, 61, 1, 4, 77 and 300, CRLF and LF
    for eol, tag in ((CRLF, "crlf"), (LF, "lf")):
        add(f"b64-lines-{tag}", multipart("mixed", [
            part("application/octet-stream", b64(rb(12_000), 75, eol),
                 "base64", eol=eol),
            part("application/octet-stream", b64(rb(12_001), 61, eol),
                 "base64", eol=eol),
            part("application/octet-stream", b64(rb(1_502), 1, eol),
                 "base64", eol=eol),
            part("application/octet-stream", b64(rb(3_000), 4, eol),
                 "base64", eol=eol),
            part("application/octet-stream", b64(rb(20_002), 77, eol),
                 "base64", eol=eol),
            part("application/octet-stream", b64(rb(60_000), 300, eol),
                 "base64", eol=eol),
            part("application/octet-stream",
                 b64(rb(10_000), 76, eol, final_eol=False), "base64", eol=eol),
        ], f"lines-bnd-{tag}", eol), eol=eol)

    # 8. base64 with trailing blanks on its lines, and mixed line endings
    lines = base64.b64encode(rb(9_000))
    lines = [lines[i:i + 76] for i in range(0, len(lines), 76)]
    add("b64-blanks-mixed-eol", multipart("mixed", [
        part("application/octet-stream",
             b"".join(ln + b" \t" + CRLF for ln in lines), "base64"),
        part("application/octet-stream",
             b"".join(ln + (LF if i % 3 else CRLF) for i, ln in enumerate(lines)),
             "base64"),
        part("text/plain", b"a bare CR\rin text, then LF only\nthen CRLF\r\n"
             b"end without a line break", "7bit"),
    ], "blank-bnd"), clean=False)

    # 9. 8bit and binary (NULs, bare CR and LF), CRLF and LF messages
    binary = rb(20_000) + b"\0\0\0\r\n\n\r" + rb(5_000)
    for eol, tag in ((CRLF, "crlf"), (LF, "lf")):
        add(f"binary-{tag}", multipart("mixed", [
            part("text/plain; charset=iso-8859-1",
                 b"Latin-1 \xe9\xe8\xe0 text" + eol + b"UTF-8 \xc3\xa9" + eol +
                 b"with a NUL \0 inside" + eol, "8bit", eol=eol),
            part("application/octet-stream", binary, "binary", eol=eol),
            part("application/octet-stream", b"\0" * 3000, "binary", eol=eol),
            part("text/plain", text(rng, 4000, eol=eol), "8bit", eol=eol),
        ], f"bin-bnd-{tag}", eol), eol=eol)

    # 10. single-part binary with NULs
    add("single-binary", part("application/octet-stream",
                              rb(7_000) + b"\0" + rb(100), "binary"))

    # 11. message/rfc822 with its own multipart and base64 parts
    inner = message("inner-1", multipart("mixed", [
        part("text/plain; charset=utf-8", _qp_good(CRLF, rng),
             "quoted-printable"),
        part("application/octet-stream", b64(rb(33_333)), "base64"),
        part("image/jpeg", b64(rb(8_000), 0), "base64"),
    ], "inner-bnd"))
    inner_single = message("inner-2", part("application/zip",
                                           b64(rb(20_000), 76), "base64"))
    deeper = message("inner-3", multipart("mixed", [
        part("text/plain", text(rng, 500), "7bit"),
        part("message/rfc822", inner_single),
    ], "deeper-bnd"))
    add("rfc822", multipart("mixed", [
        part("text/plain", text(rng, 800), "7bit"),
        part("message/rfc822", inner),
        part("message/rfc822", inner_single, extra=[
            'Content-Disposition: attachment; filename="fwd.eml"']),
        part("message/rfc822", deeper),
    ], "rfc-bnd"))

    # 12. a large base64 part (4 MB of random bytes), far-away slices
    add("large-b64", multipart("mixed", [
        part("text/plain", text(rng, 2000), "7bit"),
        part("application/octet-stream", b64(rb(4 * 1024 * 1024 + 1)),
             "base64"),
        part("text/plain", _qp_good(CRLF, rng), "quoted-printable"),
    ], "large-bnd"))

    # 12b. the same, stored as Dovecot stores delivered mail (LF): BODY
    # offsets far into the part are CRLF offsets of an LF file
    add("large-lf", multipart("mixed", [
        part("text/plain", text(rng, 2000, eol=LF), "7bit", eol=LF),
        part("application/octet-stream", b64(rb(600_000), 76, LF),
             "base64", eol=LF),
        part("text/plain", _qp_good(LF, rng) * 20, "quoted-printable",
             eol=LF),
    ], "large-lf-bnd", LF), eol=LF)

    # 13. empty parts
    add("empty-parts", multipart("mixed", [
        part("application/octet-stream", b"", "base64"),
        part("text/plain", b"", "quoted-printable"),
        part("text/plain", b"", "7bit"),
        part("application/octet-stream", CRLF, "base64"),
        part("text/plain", b"=" + CRLF, "quoted-printable"),
        b"Content-Type: text/plain" + CRLF,    # headers only, no blank line
        part("application/octet-stream", b64(b"x"), "base64"),
    ], "empty-bnd"), clean=False)
    add("empty-single-b64", part("application/octet-stream", b"", "base64"))

    # 14.-16. bad input, one case per message: stock answers BINARY[n] of
    # a good part even when another part is bad, but BINARY.SIZE of any
    # part fails as soon as one part of the message can't be decoded, and
    # some errors are NO [PARSE] while others end the connection (BYE).
    good = base64.b64encode(rb(3_000))

    def bad(name, body, cte="base64", eol=CRLF):
        add(name, multipart("mixed", [
            part("text/plain", text(rng, 200, eol=eol), "7bit", eol=eol),
            part("application/octet-stream", b64(rb(5_000), 76, eol),
                 "base64", eol=eol),
            part("application/octet-stream", body, cte, eol=eol),
            part("text/plain", b"after the bad part =3D" + eol,
                 "quoted-printable", eol=eol),
        ], f"bad-bnd-{name}", eol), eol=eol, clean=False)

    # invalid base64
    bad("b64-bad-chars",
        good[:400] + b"*!@" + good[400:800] + CRLF + good[800:] + CRLF)
    bad("b64-missing-padding", good[:1000] + b"QQ" + CRLF)
    bad("b64-short-quantum", good[:1000] + b"QUJDR" + CRLF)
    bad("b64-one-pad-of-two", b"QQ=" + CRLF)
    bad("b64-three-pads", b"QQ===" + CRLF)
    bad("b64-pad-after-full", b"QUJD=" + CRLF)
    bad("b64-eq-in-middle", good[:100] + b"QQ==" + good[100:300] + CRLF)
    bad("b64-eq-first", b"=QUJD" + CRLF)
    bad("b64-8bit-bytes", good[:80] + b"\xc3\xa9\x00" + good[80:160] + CRLF)
    bad("b64-blanks-inside", b"QU JD RE VG" + CRLF + good[:200] + CRLF)
    add("b64-bad-single", part("application/octet-stream",
                               good[:1000] + b"=" + good[1000:], "base64"),
        clean=False)
    # truncated and invalid quoted-printable
    bad("qp-lone-eq-at-end", b"ends in a lone equals sign =",
        "quoted-printable")
    bad("qp-half-escape-at-end", b"ends in half an escape =4",
        "quoted-printable")
    bad("qp-bad-hex", b"bad hex =G1 and =4X and =\t tab" + CRLF +
        b"=ZZ more" + CRLF, "quoted-printable")
    bad("qp-long-then-half-escape", _qp_good(LF, rng)[:-1] + b"=4",
        "quoted-printable", LF)
    add("qp-bad-single-lf", part("text/plain", b"truncated=" + LF + b"=4",
                                 "quoted-printable", eol=LF),
        eol=LF, clean=False)
    # unknown Content-Transfer-Encoding
    bad("cte-x-uuencode", b64(rb(2_000)), "x-uuencode")
    add("cte-unknown-single", part("application/octet-stream",
                                   b64(rb(4_000)), "x-gzip64"), clean=False)
    # odd spellings that do decode
    add("cte-spellings", multipart("mixed", [
        part("application/octet-stream", b64(rb(2_001)), "BASE64"),
        part("text/plain", b"Quoted=3DPrintable=20" + CRLF, "Quoted-Printable"),
        part("application/octet-stream", b64(rb(1_000)), "base64 (comment)"),
        part("application/octet-stream", b64(rb(1_000)), " base64 "),
        part("application/octet-stream", b64(rb(1_000)), "7bit"),
        part("application/octet-stream", b64(rb(1_000)), None),
    ], "cte-bnd"), clean=False)

    # 17. multipart without its closing boundary, last part base64 to EOF
    add("unclosed", multipart("mixed", [
        part("text/plain", text(rng, 300), "7bit"),
        part("application/octet-stream", b64(rb(6_000), 76, CRLF, False),
             "base64"),
    ], "open-bnd", close=False))

    # 18. multipart/digest: parts default to message/rfc822
    add("digest", multipart("digest", [
        CRLF + message("dig-1", part("application/octet-stream",
                                     b64(rb(3_000)), "base64")),
        CRLF + message("dig-2", part("text/plain", _qp_good(CRLF, rng),
                                     "quoted-printable")),
    ], "digest-bnd"))

    return msgs


def variant_corpus(seed: int = 5) -> list[Msg]:
    """Messages shaped like some of corpus()'s but with other sizes and
    contents: for a mailbox recreated with other mail under the same
    UIDs."""
    rng = random.Random(seed)
    rb = rng.randbytes
    out = []
    for i in range(4):
        eol = CRLF if i % 2 == 0 else LF
        entity = multipart("mixed", [
            part("text/plain; charset=utf-8", _qp_good(eol, rng),
                 "quoted-printable", eol=eol),
            part("application/octet-stream",
                 b64(rb(rng.randrange(20_000, 200_000)),
                     rng.choice((76, 64, 75, 0)), eol), "base64", eol=eol),
            part("image/png", b64(rb(rng.randrange(1_000, 9_000)), 76, eol),
                 "base64", eol=eol),
        ], f"var-bnd-{seed}-{i}", eol)
        name = f"variant-{seed}-{i}"
        out.append(Msg(name, message(name, entity, eol)))
    return out


def big_message(seed: int = 40, attachment_bytes: int = 30_000_000,
                text_bytes: int = 200_000, eol: bytes = CRLF) -> bytes:
    """The benchmark's message: part 1 text, part 2 a base64 attachment of
    `attachment_bytes` random bytes in 76-character lines."""
    rng = random.Random(seed)
    data = rng.randbytes(attachment_bytes)
    return message("big", multipart("mixed", [
        part("text/plain; charset=us-ascii", text(rng, text_bytes, eol=eol),
             "7bit", eol=eol),
        part('application/octet-stream; name="big.bin"', b64(data, 76, eol),
             "base64", eol=eol,
             extra=['Content-Disposition: attachment; filename="big.bin"']),
    ], f"big-bnd-{seed}", eol), eol)
