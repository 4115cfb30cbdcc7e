"""Hand-made edge-case messages and IMAP SEARCH queries for FTS tests.

The messages are small RFC 5322 mails (bytes), each built to exercise one
thing a full-text index can get wrong when it has to give the exact
answers of stock Dovecot's SEARCH (a case-insensitive substring match over
decoded text, i;unicode-casemap): substrings inside words, punctuation and
addresses, case folding beyond ASCII, Unicode normalization, charsets,
MIME encoded-words, transfer encodings, HTML, nested MIME, attached
messages, non-text parts, preamble/epilogue, repeated and long headers,
whitespace and line-ending variants, degenerate messages, long words and
URLs, text at part boundaries.

The queries are derived from the words put into the messages (substrings,
case variants, combinations), never from an expected answer: what a query
should match is whatever stock Dovecot answers (see
fts_helpers.compare_with_stock).

    from fts_edge_corpus import edge_messages, edge_corpus, edge_queries
    msgs = edge_messages()        # [EdgeMessage(name, note, raw)], fixed order
    raws = edge_corpus()          # [bytes], message i gets UID i+1
    queries = edge_queries()      # [str], IMAP SEARCH syntax (fts_helpers)

CLI: /usr/bin/python3 tests/integration/fts_edge_corpus.py [--queries]
[--dump DIR] lists the messages (or queries), or writes them as .eml files.

No pytest dependency (and no dependency on a running Dovecot).
"""

from __future__ import annotations

import argparse
import base64
import random
import re
import sys
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

DOMAIN = "edge.test"
DATE = "Thu, 01 Jan 2015 12:00:00 +0000"


@dataclass(frozen=True)
class EdgeMessage:
    name: str    # short unique id, e.g. "qp-soft-breaks"
    note: str    # what it exercises (for mismatch reports)
    raw: bytes   # the message as stored


def quote(value: str) -> str:
    """An IMAP quoted string (same as fts_helpers.quote)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


# ------------------------------------------------------------ encoders

def b64_lines(data: bytes, width: int = 76) -> str:
    enc = base64.b64encode(data).decode("ascii")
    return "\n".join(enc[i:i + width] for i in range(0, len(enc), width))


def ew_q(text: str, charset: str = "utf-8") -> str:
    """A Q encoded-word: =?charset?Q?...?= ("_" for space)."""
    out = []
    for byte in text.encode(charset):
        c = chr(byte)
        if c == " ":
            out.append("_")
        elif c.isalnum() and byte < 0x80:
            out.append(c)
        else:
            out.append("=%02X" % byte)
    return f"=?{charset}?Q?{''.join(out)}?="


def ew_b(text: str, charset: str = "utf-8") -> str:
    """A B encoded-word: =?charset?B?base64?=."""
    enc = base64.b64encode(text.encode(charset)).decode("ascii")
    return f"=?{charset}?B?{enc}?="


def qp_encode(text: str, charset: str = "utf-8") -> str:
    """Quoted-printable with every non-ASCII byte escaped, no soft breaks."""
    out = []
    for byte in text.encode(charset):
        c = chr(byte)
        if c == "\n":
            out.append("\n")
        elif byte < 0x80 and c != "=" and (c.isprintable() or c == "\t"):
            out.append(c)
        else:
            out.append("=%02X" % byte)
    return "".join(out)


# ------------------------------------------------------------ building

Body = Union[str, bytes]


class _Builder:
    def __init__(self) -> None:
        self.messages: list[EdgeMessage] = []
        self.queries: list[str] = []
        self._names: set[str] = set()
        self._seen: set[str] = set()

    # ---- messages

    def add(self, name: str, note: str, headers: Sequence[str], body: Body = "",
            eol: Optional[str] = "\r\n", separator: bool = True,
            header_bytes: Optional[bytes] = None) -> None:
        """headers: header lines ("Name: value", folds as "\\n "), body: str
        (UTF-8) or bytes. eol: the line ending all "\\n" become (None: the
        bytes are kept exactly as given). separator: the blank line
        between header and body. header_bytes: extra raw header lines
        (bytes, "\\n"-terminated) appended after `headers`."""
        if name in self._names:
            raise ValueError(f"duplicate message name {name}")
        self._names.add(name)
        head = "".join(h + "\n" for h in headers).encode("utf-8")
        if header_bytes:
            head += header_bytes
        data = body.encode("utf-8") if isinstance(body, str) else body
        raw = head + (b"\n" if separator else b"") + data
        if eol is not None and eol != "\n":
            raw = raw.replace(b"\n", eol.encode("ascii"))
        self.messages.append(EdgeMessage(name, note, raw))

    # ---- queries

    def q(self, *queries: str) -> None:
        for query in queries:
            if query not in self._seen:
                self._seen.add(query)
                self.queries.append(query)

    def k(self, key: str, *values: str) -> None:
        """`key "value"` for each value, e.g. k("BODY", "café", "cafe")."""
        for v in values:
            self.q(f"{key} {quote(v)}")


def std(name: str, subject: Optional[str] = None,
        frm: Optional[str] = "Edge Sender <sender@edge.test>",
        to: Optional[str] = "Edge Reader <reader@edge.test>",
        extra: Iterable[str] = (), mime: Optional[str] = None,
        cte: Optional[str] = None) -> list[str]:
    """Standard header lines; None leaves a header out."""
    lines = []
    if frm is not None:
        lines.append(f"From: {frm}")
    if to is not None:
        lines.append(f"To: {to}")
    if subject is not None:
        lines.append(f"Subject: {subject}")
    lines += [f"Date: {DATE}", f"Message-ID: <{name}.edge@{DOMAIN}>"]
    if mime is not None:
        lines += ["MIME-Version: 1.0", f"Content-Type: {mime}"]
        if cte is not None:
            lines.append(f"Content-Transfer-Encoding: {cte}")
    lines += list(extra)
    return lines


def text_plain(charset: str = "utf-8") -> str:
    return f"text/plain; charset={charset}"


# ------------------------------------------------------------ the cases

def _substrings(b: _Builder) -> None:
    word = "spamassassin"
    b.add("substr-words", "substrings inside words",
          std("substr-words", subject="Filter report: SpamAssassin rules"),
          "Our mail filter is SpamAssassin 3.4; the spamassassin-tools package\n"
          "helps. An assassination plot is not spam, it is a nation's worry.\n")
    b.k("BODY", word, word[4:], word[2:7], word[5:9], word[:4], word.upper(),
        "SpamAssassin 3.4", "3.4;", "tools pack", "ssination", "assassinat",
        "nation", "nation's", "zzyzx-nowhere", "spamassassins")
    b.k("TEXT", word[4:], "report: spam")
    b.k("SUBJECT", word[4:], "report:", word[:7].upper(), "rules")
    # decoy: the same letters, but not adjacent
    b.add("substr-decoy", "the query's letters split by spaces and markup",
          std("substr-decoy", subject="spam and assassin apart"),
          "spam assassin, spam-assassin, spam_assassin, SPAM\nASSASSIN\n")
    b.k("BODY", "spam assassin", "spam-assassin", "spam_assassin",
        "m assa", "m-a", "m_a")


def _punctuation(b: _Builder) -> None:
    b.add("punct-addresses", "punctuation, domains and addresses in body and headers",
          std("punct-addresses", subject="Punctuation: taint.org & o'brien",
              frm='"Justin Mason" <jm@jmason.taint.org>',
              to="o'brien@example.com, \"User Name\" <user@host>",
              extra=["Cc: <cc-only@example.com>, Pat <pat@sub.example.com>"]),
          "Mail jm@jmason.taint.org or see http://taint.org/ and www.taint.org.\n"
          "Ask o'brien (O'Brien) at <user@host>; e.g. foo-bar, foo_bar, foo.bar.\n"
          "C++ costs $100 (50% off!) -- really?! #hashtag @mention a&b x/y\n"
          'He said "hello there" and used C:\\back\\slash paths.\n')
    b.k("BODY", "taint.org", "taint.org/", ".org", "org.", "o'brien", "O'BRIEN",
        "brien", "<user@host>", "user@host>", "@host", "e.g.", "foo-bar",
        "foo_bar", "foo.bar", "c++", "$100", "50%", "off!)", "?!", "#hashtag",
        "@mention", "a&b", "x/y", "--", '"hello there"', "\\back\\slash",
        "jm@jmason", "http://taint.org/")
    b.k("FROM", "taint.org", "@jmason.taint.org", "jm@", "Justin Mason",
        '"Justin', "justin mason <jm", "<jm@jmason.taint.org>", "mason <")
    b.k("TO", "o'brien", "o'brien@example.com", "<user@host>", "User Name <user",
        '"User', "@example.com", "com, user")
    b.k("CC", "<cc-only@example.com>", "cc-only@", "pat <pat", "sub.example",
        "@example.com")
    b.k("HEADER From", '"Justin Mason"', "jmason")
    b.k("HEADER To", "o'brien", '"User Name" <user@host>')
    b.k("HEADER Cc", "cc-only")
    b.k("SUBJECT", "taint.org &", "o'brien", "punctuation:")
    b.k("TEXT", "taint.org", "o'brien@example")

    forms = [
        ("addr-comment", "jm2@taint.org (Justin Comment)", "address with a comment as name"),
        ("addr-angle-only", "<bare@edge.test>", "address in angle brackets, no name"),
        ("addr-bare", "bare2@edge.test", "bare address"),
        ("addr-quoted-comma", '"Doe, John" <jdoe@example.org>', "quoted name with a comma"),
        ("addr-encoded-comma", ew_q("Döe, Jöhn") + " <jdoe2@example.org>",
         "encoded-word name with a comma"),
        ("addr-quoted-quotes", '"Quoted \\"Nick\\" Name" <nick@example.org>',
         "escaped quotes inside a quoted name"),
        ("addr-literal", "pat@[192.0.2.1]", "domain literal"),
        ("addr-quoted-local", '"very.unusual.@.unusual.com"@example.com',
         "quoted local part"),
        ("addr-no-at", "MAILER-DAEMON", "no @ at all"),
        ("addr-broken", "Broken <missing-end@example.org", "missing closing bracket"),
    ]
    for name, frm, note in forms:
        b.add(name, note, std(name, subject=f"Address form {name}", frm=frm),
              f"This message tests {note}.\n")
    b.k("FROM", "Justin Comment", "(Justin", "comment)", "<bare@edge.test>",
        "bare@edge.test", "<bare2@", "bare2@edge.test", "Doe, John", '"Doe, John"',
        "döe, jöhn", "jöhn", "nick", '"nick"', '\\"nick', "192.0.2.1", "[192.0.2.1]",
        "unusual.@", '"very.unusual', "mailer-daemon", "missing-end",
        "<missing-end@example.org>", "broken <")
    b.k("HEADER From", "(Justin Comment)", "<bare@edge.test>", "=?utf-8?q?")

    b.add("addr-groups", "group syntax in To and Cc",
          std("addr-groups", subject="Groups", to="undisclosed-recipients:;",
              extra=["Cc: Team: alpha@example.org, beta@example.org;"]),
          "Group addresses.\n")
    b.k("TO", "undisclosed-recipients", "undisclosed-recipients:;", "recipients:")
    b.k("CC", "team:", "beta@example.org", "alpha@example.org, beta", "team")
    b.k("HEADER To", "undisclosed")


def _case_folding(b: _Builder) -> None:
    german = "Die Straße in München. GRÜSSE! Große Grüße, GROẞE Freude, Fußball."
    b.add("fold-german", "German sharp s and umlauts",
          std("fold-german", subject="Grüße aus der Straße", mime=text_plain(),
              cte="8bit"), german + "\n")
    b.k("BODY", "straße", "STRASSE", "strasse", "STRAßE", "münchen", "MÜNCHEN",
        "Munchen", "mu", "grüsse", "GRÜẞE", "große", "GROẞE", "großE", "ß", "ẞ",
        "ss", "fußball", "FUSSBALL", "ü")
    b.k("SUBJECT", "GRÜẞE", "grüße aus", "strasse")

    turkish = "İstanbul'da KIRMIZI ıspanak ve İzmir; DİYARBAKIR, ılık."
    b.add("fold-turkish", "Turkish dotted capital I and dotless i",
          std("fold-turkish", subject="İstanbul ve İzmir", mime=text_plain(),
              cte="8bit"), turkish + "\n")
    b.k("BODY", "istanbul", "İSTANBUL", "İstanbul", "i\u0307stanbul", "stanbul",
        "kırmızı", "kirmizi", "KIRMIZI", "ıspanak", "ISPANAK", "ispanak", "izmir",
        "İzmir", "i\u0307", "İ", "ı", "diyarbakır", "DİYARBAKIR", "ılık", "ILIK")
    b.k("SUBJECT", "istanbul", "İZMİR")

    greek = ("ΟΔΥΣΣΕΥΣ ταξίδεψε. Ο Οδυσσεύς και ο οδυσσευς. Σίσυφος, "
             "ΣΊΣΥΦΟΣ. Τελικό ς σε λέξεις.")
    b.add("fold-greek", "Greek sigma forms and tonos",
          std("fold-greek", subject="Ο Οδυσσεύς", mime=text_plain(), cte="8bit"),
          greek + "\n")
    b.k("BODY", "οδυσσευς", "ΟΔΥΣΣΕΥΣ", "οδυσσευσ", "Οδυσσεύς", "οδυσσεύς",
        "ς", "σ", "σίσυφος", "ΣΊΣΥΦΟΣ", "σισυφος", "ταξίδεψε", "ΤΑΞΊΔΕΨΕ",
        "λέξεις")
    b.k("SUBJECT", "ΟΔΥΣΣΕΎΣ", "οδυσσευσ")

    composed = "Le café de la résumé naïve à Noël, Ångström et crème brûlée."
    b.add("fold-nfc", "accents, composed (NFC)",
          std("fold-nfc", subject="Café résumé (NFC)", mime=text_plain(), cte="8bit"),
          composed + "\n")
    decomposed = nfd("Le bistro café et l'été; Ångström, pâté, crème fraîche.")
    b.add("fold-nfd", "accents, decomposed (NFD)",
          std("fold-nfd", subject=nfd("Café été (NFD)"), mime=text_plain(),
              cte="8bit"), decomposed + "\n")
    b.add("fold-signs", "Angstrom, Kelvin and Ohm signs, ligatures, digraphs",
          std("fold-signs", subject="Signs and ligatures", mime=text_plain(),
              cte="8bit"),
          "Units: 5 \u212b unit, 300 \u212aelvin, 10 \u2126hm.\n"
          "The \ufb01nance o\ufb03ce, \u01c5emal \u01c6ungla, x\u00b2 and \u216b.\n")
    b.k("BODY", "café", nfd("café"), "cafe", "CAFÉ", nfd("CAFÉ"), "été", "ete",
        "ångström", nfd("ångström"), "ANGSTROM", "angstr", "\u00e9", "e\u0301",
        "\u0301", "crème", "noël", "NOËL", "naïve", "naive", "à noël", "pâté",
        "fraîche", "brûlée", "å unit", "\u212b unit", "kelvin", "\u212aelvin",
        "ohm", "finance", "\ufb01nance", "office", "FINANCE", "džemal",
        "\u01c4EMAL", "\u01c6ungla", "x2", "x\u00b2", "xii", "\u216b")
    b.k("SUBJECT", "café", nfd("café"), "cafe", "ÉTÉ", "résumé")
    b.k("TEXT", "café", nfd("été"))

    b.add("fold-fullwidth", "fullwidth and halfwidth forms",
          std("fold-fullwidth", subject="Ｆｕｌｌｗｉｄｔｈ ｓｕｂｊｅｃｔ",
              mime=text_plain(), cte="8bit"),
          "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ ａｎｄ ＡＢＣ１２３ ｈａｌｆ ﾊﾝｶｸ ｶﾀｶﾅ\n")
    b.k("BODY", "fullwidth", "ＦＵＬＬＷＩＤＴＨ", "ｆｕｌｌｗｉｄｔｈ", "abc123",
        "ＡＢＣ", "１２３", "123", "text and", "ｔｅｘｔ ａｎｄ", "ハンカク", "ﾊﾝｶｸ",
        "ｶﾀｶﾅ", "カタカナ")
    b.k("SUBJECT", "fullwidth", "ｓｕｂｊｅｃｔ")

    cjk = "日本語のテキストです。中文测试内容。한국어 텍스트입니다。"
    b.add("fold-cjk", "CJK text without spaces",
          std("fold-cjk", subject="日本語の件名", mime=text_plain(), cte="8bit"),
          cjk + "\n")
    b.k("BODY", "日本語", "本語", "テキスト", "キス", "中文测试", "测试内容", "한국어",
        "텍스트", "국", "。", "の", "日", "です。中文")
    b.k("SUBJECT", "件名", "日本語の件名")

    b.add("fold-emoji", "emoji, skin tones, ZWJ sequences, flags",
          std("fold-emoji", subject="Pizza 🍕 party 🎉", mime=text_plain(), cte="8bit"),
          "I \u2764\ufe0f pizza 🍕! Thumbs 👍🏽 up. Family: 👨\u200d👩\u200d👧. "
          "Flags 🇩🇪🇫🇷 end.\n")
    b.k("BODY", "🍕", "pizza 🍕", "\u2764", "\u2764\ufe0f", "👍", "👍🏽", "🏽",
        "👨\u200d👩\u200d👧", "👩", "🇩🇪", "🇪🇫", "🇫🇷 end", "pizza")
    b.k("SUBJECT", "🎉", "🍕 party")

    b.add("fold-ascii-mixed", "mixed-case ASCII",
          std("fold-ascii-mixed", subject="MiXeD CaSe SuBjEcT"),
          "MiXeD CaSe WoRdS and UPPER lower Title Words.\n")
    b.k("BODY", "mixed case words", "MIXED", "ed ca", "upper lower title",
        "UPPER LOWER", "wOrDs AnD")
    b.k("SUBJECT", "mixed case subject", "CASE SUB")


def _charsets(b: _Builder) -> None:
    bodies = [
        ("cs-latin1", "iso-8859-1", "8bit",
         "Grüße aus Köln! Naïve façade, 50°C, ½ price, ÿ end.",
         ["köln", "KÖLN", "grüße", "façade", "50°c", "½", "ÿ end", "aus köln"]),
        ("cs-latin2", "iso-8859-2", "8bit",
         "Zażółć gęślą jaźń. Łódź i Kraków.",
         ["gęślą", "łódź", "ŁÓDŹ", "zażółć", "kraków", "jaźń", "lodz"]),
        ("cs-cp1252", "windows-1252", "8bit",
         "“Smart quotes” cost €5 – dash — em… ellipsis ‘single’ ™.",
         ["€5", "“smart quotes”", "smart quotes", "–", "—", "…", "™", "‘single’"]),
        ("cs-koi8r", "koi8-r", "8bit",
         "Привет, мир! Москва - столица.",
         ["привет", "МОСКВА", "мир!", "столица", "ПРИВЕТ, МИР"]),
        ("cs-sjis", "shift_jis", "8bit",
         "こんにちは世界。東京タワーに行きます。",
         ["東京", "タワー", "こんにちは", "世界。東京"]),
        ("cs-gb2312", "gb2312", "8bit",
         "你好世界，北京欢迎你。",
         ["北京", "欢迎你", "你好"]),
        ("cs-latin1-alias", "latin1", "8bit",
         "Déjà vu: latin1alias body.",
         ["déjà vu", "latin1alias"]),
        ("cs-utf8-upper", '"UTF8"', "8bit",
         "Ünïcödé with an unusual charset spelling utf8spelling.",
         ["ünïcödé", "utf8spelling"]),
    ]
    for name, charset, cte, text, needles in bodies:
        codec = charset.strip('"').lower()
        codec = {"latin1": "latin-1", "utf8": "utf-8"}.get(codec, codec)
        b.add(name, f"text/plain body in {charset}",
              std(name, subject=f"Charset {charset}", mime=text_plain(charset),
                  cte=cte),
              (text + "\n").encode(codec))
        b.k("BODY", *needles)
    b.k("TEXT", "köln", "привет")

    b.add("cs-iso2022jp", "iso-2022-jp (7bit with escape sequences)",
          std("cs-iso2022jp", subject="ISO-2022-JP", mime=text_plain("iso-2022-jp"),
              cte="7bit"),
          "日本語メール本文です。\n".encode("iso2022_jp"))
    b.k("BODY", "メール本文", "日本語")

    b.add("cs-utf16", "utf-16 text in base64",
          std("cs-utf16", subject="UTF-16", mime=text_plain("utf-16"), cte="base64"),
          b64_lines("UTF-16 körper text utf16word.\n".encode("utf-16")) + "\n")
    b.k("BODY", "körper", "utf16word")

    b.add("cs-unknown", "unknown charset with 8-bit bytes",
          std("cs-unknown", subject="Unknown charset",
              mime=text_plain("x-edge-unknown"), cte="8bit"),
          b"unknowncharsetword caf\xe9 na\xefve end\n")
    b.k("BODY", "unknowncharsetword", "caf", "café", "naïve", "ve end")

    b.add("cs-invalid-utf8", "declared UTF-8 with invalid bytes",
          std("cs-invalid-utf8", subject="Invalid UTF-8", mime=text_plain(),
              cte="8bit"),
          b"invalidutf8word \xff\xfe broken \xc3 sequence end \xe2\x82 x\n")
    b.k("BODY", "invalidutf8word", "broken", "sequence end", "\ufffd", "broken  sequence")

    b.add("cs-no-charset", "Content-Type without charset, UTF-8 8bit body",
          std("cs-no-charset", subject="No charset", mime="text/plain", cte="8bit"),
          "nocharsetword naïve résumé without charset\n")
    b.add("cs-no-charset-latin1", "Content-Type without charset, Latin-1 bytes",
          std("cs-no-charset-latin1", subject="No charset latin1", mime="text/plain"),
          b"nocharsetlatin caf\xe9 cr\xe8me\n")
    b.add("cs-undeclared-8bit", "no MIME headers, raw UTF-8 body",
          std("cs-undeclared-8bit", subject="Undeclared 8bit"),
          "undeclaredword Straße Ærøskøbing 東京\n")
    b.add("cs-undeclared-latin1", "no MIME headers, raw Latin-1 body",
          std("cs-undeclared-latin1", subject="Undeclared latin1"),
          b"undeclaredlatin Stra\xdfe K\xf6ln\n")
    b.add("cs-ascii-lie", "charset=us-ascii but UTF-8 content",
          std("cs-ascii-lie", subject="ASCII lie", mime=text_plain("us-ascii"),
              cte="7bit"),
          "asciilieword Grüße\n")
    b.k("BODY", "nocharsetword", "naïve résumé", "nocharsetlatin", "café", "crème",
        "undeclaredword", "straße", "ærøskøbing", "東京", "undeclaredlatin", "köln",
        "asciilieword", "grüße", "caf")

    # Encoded-words in the charsets above.
    subjects = [
        ("ew-latin2", ew_q("Pozdrowienia z Łodzi", "iso-8859-2"), ["łodzi", "pozdrowienia z"]),
        ("ew-koi8r", ew_b("Привет из Москвы", "koi8-r"), ["москвы", "привет из"]),
        ("ew-sjis", ew_b("東京からこんにちは", "shift_jis"), ["東京から", "こんにちは"]),
        ("ew-gb2312", ew_b("来自北京的问候", "gb2312"), ["北京", "问候"]),
        ("ew-cp1252", ew_q("“quoted” €uro", "windows-1252"), ["“quoted”", "€uro"]),
        ("ew-unknown", "=?x-edge-unknown?Q?mystery=E9text?=", ["mystery", "text"]),
    ]
    for name, subject, needles in subjects:
        b.add(name, "encoded-word Subject in a non-UTF-8 charset",
              std(name, subject=subject), f"Body of {name}.\n")
        b.k("SUBJECT", *needles)
    b.k("TEXT", "москвы", "東京から")


def _encoded_words(b: _Builder) -> None:
    cases = [
        ("ew-q-utf8", ew_q("Grüße aus München"), "Q encoded-word"),
        ("ew-b-utf8", ew_b("Base64 Betreff über alles"), "B encoded-word"),
        ("ew-adjacent", ew_q("adjacent") + " " + ew_q("words"),
         "adjacent encoded-words (space between them is dropped)"),
        ("ew-adjacent-folded", ew_q("folded encoded") + "\n " + ew_q(" continues here"),
         "adjacent encoded-words on folded lines"),
        ("ew-mixed", "Plain start " + ew_q("café", "iso-8859-1") + " plain end",
         "encoded-word between plain words"),
        ("ew-inside-word", "pre=?utf-8?q?fix?=suffix",
         "encoded-word glued inside a word (not allowed by RFC 2047)"),
        ("ew-unterminated", "=?utf-8?q?unterminated_word", "malformed encoded-word"),
        ("ew-lowercase", "=?utf-8?b?" + base64.b64encode("lowercase b enc ö".encode()).decode()
         + "?= and =?UTF-8?q?lowercase_q_enc_=C3=B6?=",
         "lowercase encoding letters"),
        ("ew-underscore", "=?utf-8?Q?snake=5Fcase_and_space?=", "=5F vs _ in Q"),
        ("ew-folded-plain", "This is a folded\n subject line\n\twith a tab fold",
         "folded plain header"),
    ]
    for name, subject, note in cases:
        b.add(name, note, std(name, subject=subject), f"Body of {name}.\n")
    b.k("SUBJECT", "grüße aus", "München", "MÜNCHEN", "=?utf-8", "gr=c3",
        "betreff über", "ÜBER ALLES", "adjacentwords", "adjacent words",
        "folded encodedcontinues", "folded encoded continues", "encoded continues here",
        "start café plain", "plain start", "prefix", "fixsuffix", "pre=?utf-8?q?fix?=suffix",
        "unterminated", "unterminated_word", "unterminated word", "lowercase b enc ö",
        "lowercase q enc ö", "snake_case", "snake case", "case and space",
        "folded subject", "a folded subject line", "subject line with",
        "line with a tab", "line\twith", "folded  subject")
    b.k("TEXT", "adjacentwords", "grüße aus", "subject: grüße", "subject: this is")
    b.k("HEADER Subject", "adjacentwords", "folded subject", "line  with",
        "line\twith", "line with a tab")

    b.add("ew-from-to", "encoded-words in From, To, Cc and Bcc names",
          std("ew-from-to", subject="Encoded names",
              frm=ew_q("François Müller", "iso-8859-1") + " <francois@example.fr>",
              to=ew_b("Élodie Dupré") + " <elodie@example.fr>",
              extra=["Cc: " + ew_q("Søren Ærø") + " <soren@example.dk>",
                     'Bcc: "Hidden Reader" <hidden@example.net>, '
                     + ew_b("Ärger Blind") + " <blind@example.net>"]),
          "Body with names.\n")
    b.k("FROM", "françois", "müller", "Francois", "FRANÇOIS MÜLLER", "müller <francois",
        "françois müller <francois@example.fr>", "=?iso-8859-1")
    b.k("TO", "élodie", "elodie", "ÉLODIE DUPRÉ", "dupré <")
    b.k("CC", "søren", "ærø", "soren@")
    b.k("BCC", "hidden", "Hidden Reader", "hidden reader <hidden", "ärger", "blind@",
        "@example.net")
    b.k("HEADER Bcc", "hidden reader")
    b.k("HEADER From", "françois", "fran=e7ois")


def _transfer_encodings(b: _Builder) -> None:
    b.add("qp-soft-breaks", "quoted-printable: soft breaks and =XX inside words",
          std("qp-soft-breaks", subject="QP body", mime=text_plain(),
              cte="quoted-printable"),
          "This is a super=\ncalifragilistic word.\n"
          "Coffee: caf=C3=A9 au lait, sp=61mfilter, =3D equals sign.\n"
          "A split multibyte Gr=C3=\n=BC=C3=9Fe here, lower hex caf=c3=a9 too.\n"
          "Trailing encoded space=20\n"
          "soft=\nbreak=\nchain done\n")
    b.k("BODY", "supercalifragilistic", "super=", "califragilistic",
        "super califragilistic", "café au lait", "caf=C3", "spamfilter", "sp=61m",
        "= equals", "=3D", "grüße here", "gr=c3", "lower hex café", "space ",
        "softbreakchain", "soft=", "chain done")

    text = ("Base64 body with an unmistakable "
            "pneumonoultramicroscopicsilicovolcanoconiosis word and Ünïcödé text "
            "that goes on for a while so the encoded lines wrap twice at least.\n")
    enc = b64_lines(text.encode("utf-8"))
    b.add("b64-split", "base64 text whose encoded lines split words",
          std("b64-split", subject="Base64 body", mime=text_plain(), cte="base64"),
          enc + "\n")
    b.k("BODY", "pneumonoultramicroscopicsilicovolcanoconiosis", "silicovolcano",
        "ünïcödé", "ünïcödé text", "wrap twice", enc.split("\n")[0][4:20],
        enc.split("\n")[1][:12])
    b.k("TEXT", "pneumono", enc.split("\n")[0][4:20])

    b.add("b64-sloppy", "base64 with odd line lengths, missing padding and junk",
          std("b64-sloppy", subject="Sloppy base64", mime=text_plain(),
              cte="BASE64"),
          b64_lines(b"sloppybase64word in a body without its padding",
                    width=13).rstrip("=") + "\n")
    b.k("BODY", "sloppybase64word", "no padding", "padd")

    b.add("qp-uppercase-cte", "Content-Transfer-Encoding in odd case",
          std("qp-uppercase-cte", subject="QP case", mime=text_plain("ISO-8859-1"),
              cte="Quoted-Printable"),
          "oddcasecte caf=E9 na=EFve\n")
    b.k("BODY", "oddcasecte", "café naïve")


def _html(b: _Builder) -> None:
    html = ("<html><head><title>htmltitleword</title>"
            "<style>.hidden{display:none} p{color:red}</style>"
            "<script>var secretscript=1; // scriptcomment</script></head>\n"
            "<body><p>Visit <a href=\"http://linkhref.example.com/path\" "
            "title=\"attrtitle\">our site</a> for spam<b>assassin</b> rules "
            "&amp; more, &eacute;t&eacute; caf&eacute; &lt;tag&gt; &#233;t&#xE9;"
            "<!-- hiddencomment --> nbsp&nbsp;here<br>line<br/>break</p>\n"
            "<div class=\"classattr\">div text</div></body></html>\n")
    b.add("html-basic", "HTML: tags, entities, attributes, comments, script/style",
          std("html-basic", subject="HTML body",
              mime="text/html; charset=utf-8", cte="8bit"), html)
    b.k("BODY", "spamassassin", "spam<b>assassin", "assassin</b>", "<b>", "&amp;",
        "rules & more", "rules &amp; more", "été", "&eacute;t&eacute;", "café",
        "caf&eacute;", "linkhref", "attrtitle", "hiddencomment", "display:none",
        "secretscript", "scriptcomment", "our site", "<tag>", "&lt;tag&gt;", "nbsp",
        "nbsp here", "nbsp&nbsp;here", "href", "htmltitleword", "linebreak",
        "line break", "classattr", "div text", "<p>", "&#233;")
    b.k("TEXT", "spam<b>assassin", "attrtitle")

    b.add("html-qp-latin1", "HTML in quoted-printable Latin-1, tags split by soft breaks",
          std("html-qp-latin1", subject="HTML QP",
              mime="text/html; charset=iso-8859-1", cte="quoted-printable"),
          "<p>Caf=E9 cr=E8me with spam<b>assa=\nssin</b> and <i>ital</i>ic"
          "s text.</p><p>qphtmlword &nbsp;&copy; 2002</p>\n")
    b.k("BODY", "café crème", "assa ssin", "ssin</b>", "<i>ital</i>ics", "italics",
        "qphtmlword", "&copy; 2002", "© 2002")

    b.add("html-malformed", "HTML with an unclosed attribute quote and stray <",
          std("html-malformed", subject="Malformed HTML",
              mime="text/html; charset=utf-8"),
          '<p>before <a href="unclosed>text after badquote</a> a < b and c > d '
          "<unknowntag foo=bar>inner</unknowntag> slots end</p>\n")
    b.k("BODY", "badquote", "text after", "a < b", "c > d", "unknowntag", "slots",
        "lots", "inner")


def _mime_structure(b: _Builder) -> None:
    bnd, alt = "=_edge_mixed_0001", "=_edge_alt_0002"
    pdf = b64_lines(b"%PDF-1.4 pdfstreamword binary\x00\x01\x02 data")
    body = (f"This is the preamblewordx text, not shown.\n"
            f"--{bnd}\n"
            f"Content-Type: multipart/alternative; boundary=\"{alt}\"\n\n"
            f"--{alt}\n"
            "Content-Type: text/plain; charset=utf-8\n"
            "Content-Description: partdescription plain\n\n"
            "plainalt version of the text: kürbis soup\n"
            f"--{alt}\n"
            "Content-Type: text/html; charset=utf-8\n\n"
            "<p>htmlalt version of the <em>text</em>: k&uuml;rbis soup</p>\n"
            f"--{alt}--\n"
            f"--{bnd}\n"
            "Content-Type: text/plain; charset=us-ascii; name=\"notes.txt\"\n"
            "Content-Disposition: attachment; filename=\"notes.txt\"\n\n"
            "attached notes text lives here\n"
            f"--{bnd}\n"
            "Content-Type: application/pdf; name=\"report.pdf\"\n"
            "Content-Transfer-Encoding: base64\n"
            "Content-Disposition: attachment; filename=\"report.pdf\"\n\n"
            f"{pdf}\n"
            f"--{bnd}--\n"
            "This is the epiloguewordx text.\n")
    b.add("mime-nested", "multipart/mixed with alternative, attachments, "
          "preamble and epilogue",
          std("mime-nested", subject="Nested multipart",
              mime=f"multipart/mixed; boundary=\"{bnd}\""), body)
    b.k("BODY", "plainalt", "htmlalt", "kürbis soup", "k&uuml;rbis", "<em>text</em>",
        "attached notes", "partdescription", "notes.txt", "report.pdf",
        "pdfstreamword", "preamblewordx", "epiloguewordx", "=_edge_mixed",
        "multipart/alternative", "content-type", "charset=utf-8", "text: kürbis")
    b.k("TEXT", "partdescription", "notes.txt", "multipart/alternative",
        "pdfstreamword", "preamblewordx", "epiloguewordx", "=_edge_alt",
        "content-description: partdescription", "attached notes",
        "Content-Disposition: attachment")
    b.k("HEADER Content-Description", "partdescription")
    b.k("HEADER Content-Type", "multipart/mixed", "notes.txt")

    inner_bnd = "=_inner_0003"
    inner = ("From: Inner Sender <inner.sender@inner.test>\n"
             "To: inner.rcpt@inner.test\n"
             f"Subject: innersubjectword {ew_q('und Grüße')}\n"
             "X-Inner-Header: innerheaderword\n"
             "MIME-Version: 1.0\n"
             f"Content-Type: multipart/mixed; boundary=\"{inner_bnd}\"\n\n"
             f"--{inner_bnd}\n"
             "Content-Type: text/plain; charset=utf-8\n"
             "Content-Transfer-Encoding: base64\n\n"
             + b64_lines("innerbodyword with ümlauts inside\n".encode()) + "\n"
             f"--{inner_bnd}\n"
             "Content-Type: application/octet-stream\n"
             "Content-Transfer-Encoding: base64\n\n"
             + b64_lines(b"innerbinaryword\x00\xff") + "\n"
             f"--{inner_bnd}--\n")
    obnd = "=_outer_0004"
    b.add("mime-rfc822", "message/rfc822 attachment with headers, base64 text "
          "and a binary part",
          std("mime-rfc822", subject="Fwd: forwarded message",
              mime=f"multipart/mixed; boundary=\"{obnd}\""),
          f"--{obnd}\n"
          "Content-Type: text/plain; charset=utf-8\n\n"
          "See the forwarded message below: outerbodyword\n"
          f"--{obnd}\n"
          "Content-Type: message/rfc822\n"
          "Content-Disposition: attachment; filename=\"forwarded.eml\"\n\n"
          + inner +
          f"--{obnd}--\n")
    b.k("BODY", "innerbodyword", "ümlauts inside", "innersubjectword",
        "innerheaderword", "inner.sender", "innerbinaryword", "outerbodyword",
        "und grüße", "forwarded.eml", "x-inner-header")
    b.k("TEXT", "innerbodyword", "innersubjectword", "innerheaderword",
        "inner.sender@inner.test", "und grüße", "innersubjectword und grüße",
        "innerbinaryword", "X-Inner-Header: innerheaderword", "forwarded.eml")
    b.k("SUBJECT", "innersubjectword", "forwarded")
    b.k("FROM", "inner.sender", "inner sender")
    b.k("TO", "inner.rcpt")
    b.k("HEADER X-Inner-Header", "innerheaderword")

    b.add("mime-rfc822-only", "top-level message/rfc822 (a bounce-like wrapper)",
          std("mime-rfc822-only", subject="Wrapped", mime="message/rfc822"),
          "From: wrapped@inner.test\nSubject: wrappedsubjectword\n\n"
          "wrappedbodyword text\n")
    b.k("BODY", "wrappedbodyword", "wrappedsubjectword")
    b.k("TEXT", "wrappedbodyword", "wrappedsubjectword")

    png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01tEXtComment\x00"
           b"pngcommentword in an image\x00IEND\xaeB`\x82")
    nbnd = "=_nontext_0005"
    b.add("mime-nontext", "non-text parts holding searchable-looking ASCII",
          std("mime-nontext", subject="Attachments",
              mime=f"multipart/mixed; boundary=\"{nbnd}\""),
          f"--{nbnd}\n"
          "Content-Type: text/plain\n\n"
          "See attachments: visibletextword\n"
          f"--{nbnd}\n"
          "Content-Type: application/octet-stream; name=\"data.bin\"\n"
          "Content-Transfer-Encoding: base64\n\n"
          + b64_lines(b"binaryattachmentword \x00\x01\x02 more binary") + "\n"
          f"--{nbnd}\n"
          "Content-Type: image/png; name=\"pngfilename.png\"\n"
          "Content-Transfer-Encoding: base64\n\n"
          + b64_lines(png) + "\n"
          f"--{nbnd}\n"
          "Content-Type: application/octet-stream\n\n"
          "plainoctetword sent without encoding\n"
          f"--{nbnd}\n"
          "Content-Type: application/json\n\n"
          "{\"field\": \"jsonfieldword\"}\n"
          f"--{nbnd}\n"
          "Content-Type: text/x-custom; charset=utf-8\n\n"
          "customtextword in an unusual text subtype\n"
          f"--{nbnd}\n"
          "Content-Type: TEXT/PLAIN; CHARSET=UTF-8\n\n"
          "uppercasetypeword grün\n"
          f"--{nbnd}--\n")
    b.k("BODY", "visibletextword", "binaryattachmentword", "pngcommentword",
        "plainoctetword", "jsonfieldword", "customtextword", "uppercasetypeword grün",
        "data.bin", "pngfilename.png", "ihdr")
    b.k("TEXT", "binaryattachmentword", "pngcommentword", "plainoctetword",
        "jsonfieldword", "pngfilename.png", "data.bin")

    b.add("mime-toplevel-binary", "single-part application/octet-stream message",
          std("mime-toplevel-binary", subject="Top-level binary",
              mime="application/octet-stream"),
          "toplevelbinaryword in plain ASCII\n")
    b.k("BODY", "toplevelbinaryword")
    b.k("TEXT", "toplevelbinaryword")

    pbnd = "=_parts_0006"
    b.add("mime-boundaries", "text right at part boundaries, no final newline",
          std("mime-boundaries", subject="Part boundaries",
              mime=f"multipart/mixed; boundary=\"{pbnd}\""),
          f"--{pbnd}\n"
          "Content-Type: text/plain\n\n"
          "first part text endofpartone\n"
          f"--{pbnd}\n"
          "Content-Type: text/plain\n\n"
          "startofparttwo second part text\n"
          f"--{pbnd}\n"
          "Content-Type: text/plain\n"
          "Content-Transfer-Encoding: base64\n\n"
          + base64.b64encode(b"b64 part ends with b64endword").decode() + "\n"
          f"--{pbnd}\n"
          "Content-Type: text/plain\n\n"
          f"--{pbnd}\n"
          "Content-Type: text/plain\n\n"
          f"lastpartword right before the end\n--{pbnd}--")
    b.k("BODY", "endofpartone", "startofparttwo", "endofpartone startofparttwo",
        "partone startofpart", "b64endword", "lastpartword", "before the end",
        "the end--", "--=_parts")

    b.add("mime-body-no-eol", "final word with no newline after it",
          std("mime-body-no-eol", subject="No final newline"),
          "the message ends in finalwordnoeol")
    b.k("BODY", "finalwordnoeol", "ends in finalwordnoeol")


def _headers(b: _Builder) -> None:
    b.add("hdr-list", "mailing-list headers (indexed and not indexed names)",
          std("hdr-list", subject="[edge-talk] List message",
              extra=["Sender: owner-edge-talk@lists.edge.test",
                     "Reply-To: edge-talk@lists.edge.test",
                     "List-Id: Edge Discussion <edge-talk.lists.edge.test>",
                     "X-Mailer: EdgeMailer 4.2 (Build 1234)",
                     "In-Reply-To: <parent.1234@edge.test>",
                     "References: <root.1@edge.test> <parent.1234@edge.test>",
                     "Organization: Edge Testing Org",
                     "X-Spam-Status: No, score=-2.6 required=5.0",
                     "Received: from mx.edge.test (mx.edge.test [192.0.2.25])\n"
                     "\tby mail.edge.test with ESMTP id RCVD4242;\n"
                     "\tThu, 1 Jan 2015 12:00:00 +0000"]),
          "A list message.\n")
    b.add("hdr-list-2", "a second list message with other values",
          std("hdr-list-2", subject="Re: [edge-talk] List message",
              extra=["List-Id: <other-list.lists.edge.test>",
                     "X-Mailer: Microsoft Outlook Express 6.00.2800.1106",
                     "In-Reply-To: <hdr-list.edge@edge.test>",
                     "Reply-To: \"Other\" <other@lists.edge.test>",
                     "Sender: other-owner@lists.edge.test",
                     "Organization: Another Org"]),
          "Another list message.\n")
    for name, values in [
            ("Sender", ["owner-edge-talk", "lists.edge.test", "OWNER-"]),
            ("Reply-To", ["edge-talk@lists", "\"other\"", "other <other"]),
            ("List-Id", ["edge-talk.lists", "<edge-talk.lists.edge.test>",
                         "edge discussion", "other-list"]),
            ("X-Mailer", ["EdgeMailer", "edgemailer 4.2", "(build 1234)", "outlook",
                          "6.00.2800"]),
            ("Message-ID", ["hdr-list.edge", "<hdr-list.edge@edge.test>", "edge.test",
                            "substr-words"]),
            ("In-Reply-To", ["parent.1234", "hdr-list.edge"]),
            ("References", ["root.1@", "<parent.1234@edge.test>", "test> <parent"]),
            ("Organization", ["edge testing", "org"]),
            ("X-Spam-Status", ["score=-2.6", "no, score"]),
            ("Received", ["mx.edge.test", "RCVD4242", "192.0.2.25", "esmtp id",
                          "with esmtp"]),
            ("Date", ["2015", "01 jan"])]:
        b.k(f"HEADER {name}", *values)
    b.k("HEADER x-mailer", "edgemailer")
    b.k("HEADER X-MAILER", "OUTLOOK EXPRESS")
    b.k("HEADER list-id", "edge-talk")
    b.k("HEADER MESSAGE-ID", "fold-greek")
    b.k("TEXT", "edgemailer", "rcvd4242", "x-mailer: edgemailer", "list-id:",
        "edge-talk.lists", "in-reply-to: <parent")
    b.k("SUBJECT", "[edge-talk]", "re: [edge", "list message")

    b.add("hdr-repeated", "repeated headers of the same name",
          std("hdr-repeated", subject="firstsubjectword",
              to="first-to@example.org",
              extra=["Subject: secondsubjectword",
                     "To: second-to@example.org",
                     "X-Foo: alpha-foo",
                     "X-Foo: beta-foo value",
                     "X-Foo: gamma-foo",
                     "Received: from first.relay.test by edge.test",
                     "Received: from second.relay.test by edge.test",
                     "X-Empty:",
                     "X-Nospace:nospacevalue",
                     "X-Trailing: trailingvalue   ",
                     "x-lower-name: lowernamevalue",
                     "SUBJECT: thirdsubjectword in an upper-case name"]),
          "Repeated headers.\n")
    b.k("SUBJECT", "firstsubjectword", "secondsubjectword", "thirdsubjectword")
    b.k("TO", "first-to", "second-to")
    b.k("HEADER X-Foo", "alpha", "beta-foo", "GAMMA", "beta-foo value", "foo", "")
    b.k("HEADER x-foo", "beta")
    b.k("HEADER Received", "first.relay", "second.relay")
    b.k("HEADER X-Empty", "", " ")
    b.k("HEADER X-Nospace", "nospacevalue", ":nospace")
    b.k("HEADER X-Trailing", "trailingvalue", "trailingvalue ", "trailingvalue   ")
    b.k("HEADER X-Lower-Name", "lowernamevalue")
    b.k("HEADER X-Not-There", "", "anything")
    b.k("HEADER Subject", "secondsubjectword", "thirdsubject", "")
    b.k("TEXT", "x-foo: beta", "gamma-foo", "x-nospace:nospacevalue",
        "secondsubjectword", "trailingvalue")

    rnd = random.Random(20150101)
    long_subject = " ".join(
        "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 9)))
        for _ in range(90)) + " longsubjecttailword"
    long_x = "x" + "-".join(f"seg{i:04d}" for i in range(300)) + " xlongtailword"
    refs = " ".join(f"<ref{i}.{'r' * (i % 7)}@refs.edge.test>" for i in range(40))
    folded_refs = "\n ".join(refs.split(" "))
    b.add("hdr-long", "long header lines, unfolded and folded many times",
          std("hdr-long", subject=long_subject,
              extra=[f"X-Long-Header: {long_x}", f"References: {folded_refs}",
                     "X-Folded: first line\n second line\n\tthird line\n    fourth"]),
          "Long headers.\n")
    b.k("SUBJECT", "longsubjecttailword", long_subject[:70], long_subject[-140:],
        long_subject[200:263])
    b.k("HEADER Subject", long_subject[-100:])
    b.k("HEADER X-Long-Header", "xlongtailword", "seg0299 xlong", long_x[1000:1150])
    b.k("HEADER References", "<ref19.rrrrr@", "ref39", "refs.edge.test> <ref3",
        "test> <ref1", "test>  <ref1")
    b.k("HEADER X-Folded", "line second", "first line second line",
        "second line third", "line  second", "line\tthird", "third line fourth",
        "line    fourth", "line fourth")
    b.k("TEXT", "xlongtailword", "longsubjecttailword", "first line second")

    b.add("hdr-raw-8bit", "raw 8-bit UTF-8 and Latin-1 in unencoded headers",
          std("hdr-raw-8bit", subject="Raw UTF-8 Grüße im Betreff",
              frm="Jürgen Raw <juergen@example.de>"),
          "Raw headers.\n",
          header_bytes=b"X-Latin1: Raw latin1 Gr\xfc\xdfe K\xf6ln\n")
    b.k("SUBJECT", "grüße im", "GRÜSSE")
    b.k("FROM", "jürgen", "juergen")
    b.k("HEADER X-Latin1", "raw latin1", "köln", "gr")


def _whitespace(b: _Builder) -> None:
    b.add("ws-one-line", "hello world on one line",
          std("ws-one-line", subject="Spacing one"), "Well, hello world and more.\n")
    b.add("ws-line-break", "hello / world across a line break",
          std("ws-line-break", subject="Spacing two"), "Well, hello\nworld and more.\n")
    b.add("ws-double", "double spaces",
          std("ws-double", subject="Spacing  with   double spaces\there"),
          "Well, hello  world and  double  spaced  words.\n")
    b.add("ws-tab", "tab between words",
          std("ws-tab", subject="Spacing tab"),
          "Well, hello\tworld and tab\tseparated\twords.\n")
    b.add("ws-trailing", "trailing spaces and tabs at line ends",
          std("ws-trailing", subject="Spacing trailing"),
          "trailing spaces here   \nand tabs here\t\t\nnbsp\u00a0space here\n")
    b.add("ws-lf-only", "LF line endings (no CR)",
          std("ws-lf-only", subject="LF only line endings"),
          "lfonlyword line one\nline two lfonlyend\n", eol="\n")
    b.add("ws-mixed-eol", "mixed CRLF, LF and a bare CR",
          ["From: Edge Sender <sender@edge.test>", "Subject: Mixed line endings",
           f"Date: {DATE}", f"Message-ID: <ws-mixed-eol.edge@{DOMAIN}>"],
          b"mixedeolword crlf line\r\nlf line\nbare\rcr line\r\nend\r\n", eol=None)
    b.k("BODY", "hello world", "hello  world", " hello", "world ", "hello\tworld",
        "hello", "world", " ", "  ", "hello world and", "hello  world and", "double spaced", "double  spaced  words", "tab\tseparated",
        "tab separated", "spaces here ", "spaces here   ", "here\t", "nbsp\u00a0space",
        "nbsp space", "lfonlyword", "line one", "lfonlyend", "mixedeolword",
        "barecr", "cr line", "lf line")
    b.k("TEXT", "hello world", "hello  world", "spacing  with", "spacing with")
    b.k("SUBJECT", "with double spaces", "with   double", "spacing  with",
        "spaces here", "spaces\there", "double spaces here", " spacing", "tab ")
    b.k("HEADER Subject", "with   double", "with double", "spaces\there", "spaces here")


def _degenerate(b: _Builder) -> None:
    b.add("deg-empty-body", "headers, blank line, no body",
          std("deg-empty-body", subject="Empty body"), "")
    b.add("deg-no-separator", "only headers, no blank line, no final newline",
          ["X-Only: headers here", "X-Another: nobodyseparatorword"], "",
          separator=False)
    # the builder appends "\n" to every header line; drop the last one
    last = b.messages.pop()
    b.messages.append(EdgeMessage(last.name, last.note, last.raw.rstrip(b"\r\n")))
    b.add("deg-body-only", "a blank first line: no headers at all",
          [], "bodyonlyword without any header\n")
    b.add("deg-garbage-first", "a first line that is not a header",
          ["This is not a header line garbagelineword", "Subject: after garbage"],
          "garbagebodyword\n")
    b.add("deg-empty-subject", "empty Subject and From headers",
          ["From:", "Subject:", f"Date: {DATE}"], "emptysubjectbodyword\n")
    b.add("deg-nul", "NUL byte inside the body",
          std("deg-nul", subject="NUL byte"), b"nul\x00byte word nulbodyword\n")
    b.add("deg-headerish-body", "body lines that look like headers",
          std("deg-headerish-body", subject="Header-like body"),
          "Subject: fakesubjectword in the body\nFrom: fake@fake.test\n")
    b.k("BODY", "nobodyseparatorword", "bodyonlyword", "garbagelineword",
        "garbagebodyword", "emptysubjectbodyword", "nul", "byte word", "nulbodyword",
        "fakesubjectword", "subject: fakesubject")
    b.k("TEXT", "nobodyseparatorword", "bodyonlyword", "garbagelineword",
        "x-another: nobody", "after garbage", "fakesubjectword")
    b.k("HEADER X-Another", "nobodyseparatorword")
    b.k("SUBJECT", "after garbage", "fakesubjectword", "")
    b.k("FROM", "", "fake@fake.test")
    b.k("TO", "")
    b.k("CC", "")
    b.k("BCC", "")


def _long_words(b: _Builder) -> None:
    rnd = random.Random(424242)
    word = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(240))
    url = ("https://www.example.com/very/long/path/segment-one/segment-two/"
           "segment-three/and/even/more/segments/to/make/it/long/index.html"
           "?query=param&other=value&session=0123456789abcdef0123456789abcdef"
           "&utm_source=edgecorpus#fragment-part")
    sentence = ("The quick brown fox jumps over the lazy dog while the "
                "longsentenceword keeps going well past one hundred and "
                "twenty-eight bytes of plain text.")
    b.add("long-word-url", "a 240-letter word, a long URL, a long sentence",
          std("long-word-url", subject="Long word and URL"),
          f"Word: {word} end.\nLink: {url}\n{sentence}\n")
    b.k("BODY", word, word[:70], word[-130:], word[100:103], word[:1] + word[1:2],
        word + " end", "word: " + word[:40], url, url[:64], "example.com/very/long",
        "query=param&other", "index.html", url[-150:], sentence, sentence[:65],
        sentence[20:150], "#fragment-part")
    b.k("TEXT", word[50:200], url)

    rnd2 = random.Random(99)
    filler = " ".join("".join(rnd2.choice("aeioubcdfgklmnprst") for _ in range(6))
                      for _ in range(2500))
    b.add("long-line", "one 17,000-character line",
          std("long-line", subject="Long line"),
          filler[:15000] + " needleinlongline " + filler[15000:] + "\n")
    b.k("BODY", "needleinlongline", filler[14990:15000] + " needle")

    para = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do "
            "eiusmod tempor incididunt ut labore et dolore magna aliqua.\n")
    big = "".join(f"{i:05d} {para}" for i in range(2000))
    b.add("large-message", "a 250 kB body with a word at the very end",
          std("large-message", subject="Large message"),
          big + "endoflargemessage\n")
    b.k("BODY", "endoflargemessage", "01999 lorem", "magna aliqua.", "tempor")


def _token_boundaries(b: _Builder) -> None:
    """Long runs without spaces, read at every interesting offset: an
    index that cuts long words into pieces (e.g. 128-byte pieces every 64
    bytes) must still find every substring, whatever its length and
    wherever it starts."""
    rnd = random.Random(7)
    ascii_runs = {n: "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz")
                             for _ in range(n)) for n in (64, 65, 128, 129, 192, 193, 300)}
    cjk = "".join(rnd.choice("日本語中文字漢東京北海道大阪神戸名古屋福岡札幌仙台広島")
                  for _ in range(110))  # 330 bytes of UTF-8
    accented = "".join(rnd.choice("éèêëàâäôöûüçñ") for _ in range(90))  # 180 bytes
    body = "\n".join(f"run{n}: {w} :end{n}" for n, w in ascii_runs.items())
    body += f"\ncjk: {cjk} :endcjk\naccented: {accented} :endacc\n"
    b.add("token-boundaries", "runs of 64-330 bytes without spaces",
          std("token-boundaries", subject="Long runs " + ascii_runs[129][:100],
              extra=["X-Long-Run: " + ascii_runs[300]]),
          body)

    def pieces(word: str, lengths, step: int, critical) -> list[str]:
        out = []
        for length in lengths:
            if length > len(word):
                continue
            starts = set(range(0, len(word) - length + 1, step))
            starts |= {c for c in critical if 0 <= c <= len(word) - length}
            starts.add(len(word) - length)
            out += [word[i:i + length] for i in sorted(starts)]
        return out

    critical = (1, 62, 63, 64, 65, 66, 126, 127, 128, 129, 130, 190, 191, 192, 193)
    for n, word in ascii_runs.items():
        if n in (64, 65, 128):
            b.k("BODY", word, word[1:], word[:-1], word[n // 2:])
            continue
        b.k("BODY", *pieces(word, (3, 64, 65, 66, 128, 129), 53, critical))
        b.k("BODY", f"{word} :end{n}", f"run{n}: {word[:70]}", word + "x")
    b.k("HEADER X-Long-Run", *pieces(ascii_runs[300], (5, 65, 66, 130), 61, critical))
    b.k("SUBJECT", ascii_runs[129][:100], ascii_runs[129][35:100], "runs " + ascii_runs[129][:3])
    b.k("TEXT", ascii_runs[300][100:165], "x-long-run: " + ascii_runs[300][:60])
    # by characters: a byte-wise cut can fall inside a character
    b.k("BODY", *pieces(cjk, (1, 2, 21, 22, 23, 43, 44), 17, (20, 21, 22, 42, 43, 64)))
    b.k("BODY", *pieces(accented, (1, 2, 32, 33, 64), 19, (31, 32, 33, 63, 64)))
    b.k("BODY", cjk[-5:] + " :endcjk",
        accented.upper()[40:70], nfd(accented[10:40]))


def _invisible(b: _Builder) -> None:
    b.add("invisible-chars", "soft hyphen, zero-width characters, BOM, NBSP, "
          "ideographic space, control characters",
          std("invisible-chars", subject="Invi\u00adsible co\u200bntrols",
              mime=text_plain(), cte="8bit"),
          "co\u00adoperate zero\u200bwidth join\u200dword bom\ufeffmark "
          "nb\u00a0sp ideo\u3000space ctl\x01char bell\x07x del\x7fchar "
          "vt\x0bff\x0cend\n")
    b.k("BODY", "co\u00adoperate", "cooperate", "\u00ad", "zero\u200bwidth", "zerowidth",
        "zero width", "\u200b", "join\u200dword", "joinword", "bom\ufeffmark",
        "bommark", "\ufeff", "nb\u00a0sp", "nb sp", "ideo\u3000space", "ideo space",
        "ctl\x01char", "ctl char", "\x01", "bell", "del\x7fchar", "\x7f", "vt ff end",
        "vt\x0bff\x0cend")
    b.k("SUBJECT", "invisible", "invi\u00adsible", "controls", "co\u200bntrols")


def _broken_mime(b: _Builder) -> None:
    b.add("mime-prefix-boundary", "inner boundary is a prefix of the outer one",
          std("mime-prefix-boundary", subject="Prefix boundaries",
              mime='multipart/mixed; boundary="=_b"'),
          "--=_b\n"
          'Content-Type: multipart/alternative; boundary="=_b2"\n\n'
          "--=_b2\nContent-Type: text/plain\n\nprefixinnerword one\n"
          "--=_b2\nContent-Type: text/plain\n\nprefixsecondword two\n"
          "--=_b2--\n"
          "--=_b\nContent-Type: text/plain\n\nprefixouterword three\n"
          "--=_b--\n")
    b.add("mime-no-close", "multipart without its closing boundary",
          std("mime-no-close", subject="No closing boundary",
              mime='multipart/mixed; boundary="open"'),
          "--open\nContent-Type: text/plain\n\nnocloseword first\n"
          "--open\n\nnoheaderpartword in a part without headers\n")
    b.add("mime-no-boundary-param", "multipart Content-Type without boundary",
          std("mime-no-boundary-param", subject="No boundary",
              mime="multipart/mixed"),
          "--x\nContent-Type: text/plain\n\nnoboundaryword text\n--x--\n")
    b.add("mime-empty-multipart", "multipart with no parts, only preamble",
          std("mime-empty-multipart", subject="Empty multipart",
              mime='multipart/mixed; boundary="never"'),
          "emptymultipartword in the preamble only\n")
    digest = ("--dg\n\nFrom: digest1@digest.test\nSubject: digestsubjectword\n\n"
              "digestbodyword one\n--dg\n\nSubject: second\n\ndigestsecondword\n--dg--\n")
    b.add("mime-digest", "multipart/digest: parts default to message/rfc822",
          std("mime-digest", subject="Digest", mime='multipart/digest; boundary="dg"'),
          digest)
    depth = 105
    nested = "".join(f'--n{i}\nContent-Type: multipart/mixed; boundary="n{i + 1}"\n\n'
                     for i in range(depth))
    nested += f"--n{depth}\nContent-Type: text/plain\n\ndeepestpartword here\n"
    nested += "".join(f"--n{i}--\n" for i in range(depth, -1, -1))
    b.add("mime-deep", f"{depth} nested multiparts (beyond Dovecot's limit of 100)",
          std("mime-deep", subject="Deep nesting",
              mime='multipart/mixed; boundary="n0"'), nested)
    b.add("mime-cte-on-multipart", "base64 declared on a multipart (not allowed)",
          std("mime-cte-on-multipart", subject="CTE on multipart",
              mime='multipart/mixed; boundary="cm"', cte="base64"),
          "--cm\nContent-Type: text/plain\n\nctemultipartword plain\n--cm--\n")
    b.k("BODY", "prefixinnerword", "prefixsecondword", "prefixouterword", "=_b2",
        "nocloseword", "noheaderpartword", "noboundaryword", "--x", "emptymultipartword",
        "digestbodyword", "digestsecondword", "digestsubjectword", "deepestpartword",
        "n104", "ctemultipartword")
    b.k("TEXT", "prefixinnerword", "nocloseword", "noboundaryword", "emptymultipartword",
        "digestsubjectword", "digest1@digest", "deepestpartword", "boundary=\"n50\"",
        "ctemultipartword")


def _short_and_empty_queries(b: _Builder) -> None:
    # 1-3 characters (ASCII, non-ASCII, digits, punctuation)
    b.k("BODY", "a", "z", "q", "é", "日", "ß", "42", "ab", "xyz", "ing", "the", "€",
        "é.", "an ", " a", "3.")
    b.k("TEXT", "x", "zz", "ed")
    b.k("SUBJECT", "a", "re", "ü")
    b.k("FROM", "a", "@")
    b.k("TO", "@e")
    # strings that leave nothing (or only separators) for a tokenizer
    for key in ("BODY", "TEXT", "SUBJECT", "FROM", "TO", "CC", "BCC"):
        b.k(key, "")
    b.k("BODY", " ", "   ", ".", "...", "-", "--", "'", "@", "<>", "!?", "\u00ad",
        "\u200b", "\u0301", "\u3000", "\t", "_")
    b.k("TEXT", " ", ".", "\u0301")
    b.k("SUBJECT", " ", ":")
    b.k("FROM", " ", "<", ".")
    b.k("HEADER X-Mailer", "", " ", ".")
    b.k("HEADER Message-ID", "", "<", "@")


def _combinations(b: _Builder) -> None:
    b.q('NOT BODY "spamassassin"', 'NOT TEXT "taint.org"', 'NOT SUBJECT "grüße"',
        'NOT FROM "taint.org"', 'NOT TO "example.com"', 'NOT CC "cc-only"',
        'NOT BCC "hidden"', 'NOT HEADER X-Foo "beta"', 'NOT HEADER Message-ID "edge.test"',
        'NOT HEADER X-Mailer "EdgeMailer"', 'NOT HEADER List-Id "edge-talk"',
        'NOT BODY "café"', 'NOT BODY "a"', 'NOT TEXT "edge"', 'NOT SUBJECT "spacing"',
        'NOT FROM "edge.test"', 'NOT HEADER Received "relay"', 'NOT BODY ""',
        'NOT HEADER X-Foo ""', 'NOT SUBJECT ""', 'NOT HEADER X-Not-There ""')
    b.q('BODY "spam" BODY "assassin"', 'BODY "hello" TEXT "world"',
        'SUBJECT "grüße" FROM "müller"', 'FROM "taint.org" BODY "o\'brien"',
        'BODY "café" BODY "crème"', 'TEXT "edge" BODY "hello world"',
        'BODY "spam" BODY "spam"', 'HEADER X-Foo "alpha" HEADER X-Foo "gamma"',
        'FROM "sender" TO "reader" SUBJECT "spacing"')
    b.q('OR BODY "köln" BODY "łódź"', 'OR SUBJECT "adjacentwords" FROM "françois"',
        'OR OR BODY "東京" BODY "北京" BODY "привет"',
        'OR HEADER X-Foo "alpha" HEADER X-Mailer "edgemailer"',
        'OR BODY "innerbodyword" TEXT "innersubjectword"',
        'OR BCC "hidden" CC "søren"', 'OR BODY "zzyzx-nowhere" BODY "hello"',
        'OR TO "undisclosed" HEADER Sender "owner"')
    b.q('NOT (BODY "spam" BODY "assassin")',
        'OR (BODY "café" NOT BODY "crème") SUBJECT "münchen"',
        '(OR BODY "hello" BODY "world") NOT TEXT "tab"',
        'NOT OR BODY "htmlalt" BODY "plainalt"',
        'OR NOT BODY "a" NOT BODY "e"',
        'NOT NOT BODY "spamassassin"',
        'BODY "spam" NOT (OR BODY "tools" SUBJECT "html")',
        '(BODY "spamassassin") (NOT FROM "jm")',
        'OR (SUBJECT "charset" BODY "ö") (HEADER X-Mailer "outlook" NOT BODY "zzz")',
        'NOT (OR FROM "edge.test" OR TO "edge.test" CC "example")',
        '(OR (BODY "hello" NOT BODY "tab") (TEXT "innerheaderword")) NOT SUBJECT "two"',
        'OR OR OR BODY "endofpartone" BODY "b64endword" TEXT "preamblewordx" '
        'BODY "epiloguewordx"')
    # NOT, OR and AND over keys an index can answer alone, keys it can
    # only narrow down (with spaces) and headers it does not index
    b.q('NOT (BODY "hello" HEADER Received "relay")',
        'OR NOT BODY "hello" HEADER X-Spam-Status "score"',
        'OR (NOT BODY "a") (NOT HEADER Received "edge")',
        'NOT OR HEADER X-Foo "alpha" BODY "spamassassin"',
        'BODY "hello" NOT HEADER X-Foo "beta" NOT BODY "tab"',
        'NOT BODY "hello world"', 'NOT SUBJECT "with double"',
        'OR NOT BODY "hello world" NOT BODY "double spaced"',
        'NOT (OR BODY "hello world" SUBJECT "spacing two")',
        'OR BODY "hello world" HEADER X-Foo "alpha"',
        'BODY "hello world" NOT BODY "and more"',
        'OR (BODY "café" HEADER Organization "org") (NOT TEXT " " TEXT "edge")',
        'NOT NOT NOT BODY "spam"', 'NOT (NOT BODY "café" NOT BODY "crème")',
        'OR OR HEADER X-Foo "gamma" HEADER X-Mailer "outlook" NOT FROM "edge.test"',
        'TEXT "x-foo: alpha-foo" NOT HEADER X-Foo "delta"',
        'OR BODY "needleinlongline" BODY "endoflargemessage"',
        'NOT BODY "needleinlongline"')
    # fts keys next to keys the index has nothing to do with
    b.q('BODY "spam" UID 1:20', 'NOT BODY "spam" UID 5:*', 'TEXT "edge" LARGER 2000',
        'OR BODY "café" SMALLER 500', 'BODY "hello" ALL', 'SUBJECT "re" NOT UID 1',
        'UNSEEN BODY "world"', 'OR SEEN BODY "köln"',
        'CHARSET UTF-8 BODY "hello"', 'CHARSET US-ASCII BODY "hello"',
        'CHARSET X-EDGE-UNKNOWN BODY "hello"')


_CASES = (_substrings, _punctuation, _case_folding, _charsets, _encoded_words,
          _transfer_encodings, _html, _mime_structure, _headers, _whitespace,
          _degenerate, _long_words, _token_boundaries, _invisible, _broken_mime,
          _short_and_empty_queries, _combinations)


@lru_cache(maxsize=1)
def _build() -> _Builder:
    b = _Builder()
    for case in _CASES:
        case(b)
    return b


def edge_messages() -> list[EdgeMessage]:
    """The messages, in a fixed order (message i gets UID i+1 when loaded
    into an empty mailbox with fts_helpers.load_maildir)."""
    return list(_build().messages)


def edge_corpus() -> list[bytes]:
    return [m.raw for m in _build().messages]


def edge_queries() -> list[str]:
    """The queries, IMAP SEARCH syntax as fts_helpers.search_command takes."""
    return list(_build().queries)


# ------------------------------------------------------------ reports

_TERM_RE = re.compile(r'(BODY|TEXT|SUBJECT|FROM|TO|CC|BCC|HEADER\s+\S+)\s+'
                      r'"((?:[^"\\]|\\.)*)"', re.I)


def query_terms(query: str) -> list[tuple[str, str]]:
    """(key, string) per search key of a query, e.g.
    'OR BODY "a" HEADER X-Foo "b"' -> [("BODY", "a"), ("HEADER X-Foo", "b")]."""
    return [(m.group(1).upper() if not m.group(1).upper().startswith("HEADER")
             else m.group(1), re.sub(r"\\(.)", r"\1", m.group(2)))
            for m in _TERM_RE.finditer(query)]


def _find(text: str, needle: str, width: int) -> Optional[str]:
    candidates = [needle] + sorted(re.findall(r"\w{3,}", needle), key=len,
                                   reverse=True)
    low = text.lower()
    for cand in candidates:
        if cand.strip():
            pos = low.find(cand.lower())
            if pos >= 0:
                start = max(0, pos - width)
                end = min(len(text), pos + len(cand) + width)
                return repr(text[start:end])[:3 * width + 60]
    return None


def _decoded_parts(raw: bytes) -> list[tuple[str, str]]:
    """(content type, text) of each leaf part as Python decodes it; only
    a hint for reports (Dovecot's decoding is the reference)."""
    import email
    import email.header
    import email.policy
    out = []
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        for part in msg.walk():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            try:
                text = payload.decode(charset, errors="replace")
            except LookupError:
                text = payload.decode("utf-8", errors="replace")
            out.append((part.get_content_type(), text))
        headers = []
        for name, value in msg.items():
            try:
                value = str(email.header.make_header(
                    email.header.decode_header(value)))
            except Exception:
                pass
            headers.append(f"{name}: {value}")
        out.insert(0, ("header", "\n".join(headers)))
    except Exception:  # a report helper must never fail the report
        pass
    return out


def snippet(raw: bytes, needle: str, key: str = "TEXT", width: int = 50) -> str:
    """Where `needle` (or its longest word) shows in the message, ignoring
    case: in the raw header for header keys, in the raw body for BODY,
    anywhere for TEXT; failing that, in the parts as Python decodes them
    (marked "decoded"). Only a pointer for a human reading a mismatch."""
    text = raw.decode("utf-8", errors="replace")
    m = re.search(r"\r?\n\r?\n", text)
    head, body = (text[:m.start()], text[m.end():]) if m else (text, "")
    if key.upper() == "BODY":
        regions = [("body", body)]
    elif key.upper() == "TEXT":
        regions = [("header", head), ("body", body)]
    else:
        regions = [("header", head)]
    for label, region in regions:
        found = _find(region, needle, width)
        if found:
            return f"{label} {found}"
    for ctype, decoded in _decoded_parts(raw):
        found = _find(decoded, needle, width)
        if found:
            return f"decoded {ctype} {found}"
    return "(not found in the message as Python reads it)"


def describe_uids(query: str, uids: Iterable[int],
                  messages: Sequence[EdgeMessage], limit: int = 6) -> list[str]:
    """One line per UID (messages[uid-1]): its name, note and where the
    query's strings show in it."""
    terms = [(k, s) for k, s in query_terms(query) if s.strip()]
    lines = []
    uids = list(uids)
    for uid in uids[:limit]:
        if not 1 <= uid <= len(messages):
            lines.append(f"    UID {uid}: (not in the loaded list)")
            continue
        m = messages[uid - 1]
        lines.append(f"    UID {uid} = {m.name} ({m.note})")
        for key, s in terms[:3]:
            lines.append(f"        {key} {s!r}: {snippet(m.raw, s, key)}")
    if len(uids) > limit:
        lines.append(f"    ... and {len(uids) - limit} more")
    return lines


def format_mismatches(mismatches, messages: Sequence[EdgeMessage]) -> str:
    """fts_helpers.Mismatch list -> a readable report naming the messages."""
    out = []
    for mm in mismatches:
        out.append(str(mm))
        if mm.stock is None or mm.fts is None:
            continue
        if mm.missing:
            out.append("  missing (stock matches, fts does not):")
            out += describe_uids(mm.query, mm.missing, messages)
        if mm.extra:
            out.append("  extra (fts matches, stock does not):")
            out += describe_uids(mm.query, mm.extra, messages)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", action="store_true", help="list the queries")
    parser.add_argument("--dump", metavar="DIR", help="write NNN-name.eml files")
    args = parser.parse_args()
    msgs = edge_messages()
    if args.dump:
        out = Path(args.dump)
        out.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(msgs, 1):
            (out / f"{i:03d}-{m.name}.eml").write_bytes(m.raw)
    if args.queries:
        for q in edge_queries():
            print(q)
    else:
        for i, m in enumerate(msgs, 1):
            print(f"{i:3d} {m.name:<24} {len(m.raw):7d}  {m.note}")
    print(f"# {len(msgs)} messages, {len(edge_queries())} queries", file=sys.stderr)


if __name__ == "__main__":
    main()
