"""Helpers for full-text-search tests and benchmarks on a real Dovecot.

* fts_instance_kwargs(backend): DovecotInstance arguments for stock Dovecot
  or Dovecot with an fts backend (lucene, xapian, lmdb).
* load_maildir(dc, user, messages): put many messages into a mailbox fast
  (Maildir files written directly, then one sync), with the same UIDs on
  every instance loaded from the same list.
* SearchClient: a minimal IMAP client for UID SEARCH that takes queries in
  IMAP syntax, non-ASCII included, and times them.
* compare_with_stock(fts_dc, stock_dc, user, queries): the queries whose
  answers differ between an fts-enabled instance and stock Dovecot, which
  is the reference (no answer is ever hard-coded).

No pytest dependency: bench/fts.py uses this module too.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from dovecot_instance import (BUILD_DIR, DEFAULT_PASSWORD, REPO_ROOT, DovecotInstance,
                              dovecot_module_dir)

# ------------------------------------------------------------ backends

# Settings every fts backend gets, with the reasons:
#  fts_autoindex = no   Nothing indexes behind our back while mail is loaded;
#                       the index is built by `doveadm index` (which the
#                       benchmark times) or on the first body SEARCH.
#  fts_enforced = yes   Without it a failing backend lookup silently falls
#                       back to opening every message, so a broken index
#                       would look correct (only slow). With it, SEARCH
#                       fails with NO instead, and header searches (FROM,
#                       SUBJECT, HEADER) also bring the index up to date
#                       first instead of falling back to the cache file.
COMMON_FTS_SETTINGS = {
    "fts_autoindex": "no",
    "fts_enforced": "yes",
}

# Per backend: mail_plugins (added to any given), plugin {} settings and
# the module file that must exist. Settings follow each backend's own docs
# (Dovecot wiki Plugins.FTS.Lucene; fts-xapian's README).
BACKENDS = {
    "stock": {"plugins": "", "settings": {}},
    # Debian's defaults: English stemming (libstemmer), no whitespace_chars.
    "lucene": {"plugins": "fts fts_lucene",
               "settings": {"fts": "lucene"},
               "module": "lib21_fts_lucene_plugin.so"},
    # fts_no_autofuzzy = yes makes Dovecot treat lucene's hits as "maybe"
    # and check each one against the message, so only false negatives are
    # left. Not in the default benchmark set; see docs/fts-bench.md.
    "lucene-verified": {"plugins": "fts fts_lucene",
                        "settings": {"fts": "lucene",
                                     "fts_no_autofuzzy": "yes"},
                        "module": "lib21_fts_lucene_plugin.so"},
    # partial/full: the n-gram lengths indexed for every word (the README's
    # example and the plugin's defaults), which is what lets it answer
    # substring searches at all.
    "xapian": {"plugins": "fts fts_xapian",
               "settings": {"fts": "xapian",
                            "fts_xapian": "partial=3 full=20"},
               "module": "lib21_fts_xapian_plugin.so"},
    # Ours. Every mailbox of a test gets the trigram filter (by default
    # only mailboxes of 4,096 blocks do), so that every comparison with
    # stock goes through it; the benchmark passes None to keep the
    # default.
    "lmdb": {"plugins": "fts fts_lmdb",
             "settings": {"fts": "lmdb", "fts_lmdb_trigram_min_blocks": "0"},
             "module_glob": "lib*_fts_lmdb_plugin.so"},
}

# If a SEARCH does find unindexed mail, the indexer-worker service builds
# the index, and its default 256 MB address-space limit is too small for
# xapian (its README asks for 2 GB or more). fts_lmdb maps its whole
# index file, which counts toward the same limit in imap processes too:
# at 100,000 messages the map outgrows 256 MB (docs/fts_lmdb.md).
FTS_EXTRA_CONF = """\
service indexer-worker {
  vsz_limit = 2G
}
service imap {
  vsz_limit = 2G
}
"""


def backend_available(backend: str, plugin_dir: Optional[Path] = None) -> Optional[str]:
    """None if `backend` can run here, else why not (for a skip message)."""
    spec = BACKENDS[backend]
    if "module" in spec:
        if not (dovecot_module_dir() / spec["module"]).exists():
            return f"{spec['module']} not installed"
    if "module_glob" in spec:
        build = plugin_dir or BUILD_DIR
        if not any(build.glob(spec["module_glob"])):
            return f"not built (no build/{spec['module_glob']})"
    return None


def fts_instance_kwargs(backend: str, mail_plugins: str = "",
                        plugin_settings: Optional[dict] = None,
                        extra_conf: str = "", **kwargs) -> dict:
    """DovecotInstance(**fts_instance_kwargs("xapian", users=["alice"]))."""
    spec = BACKENDS[backend]
    settings = {}
    if spec["plugins"]:
        settings.update(COMMON_FTS_SETTINGS)
        extra_conf = FTS_EXTRA_CONF + extra_conf
    settings.update(spec["settings"])
    settings.update(plugin_settings or {})
    # None: the plugin's default
    settings = {k: v for k, v in settings.items() if v is not None}
    plugins = " ".join(p for p in (mail_plugins, spec["plugins"]) if p)
    return dict(mail_plugins=plugins, plugin_settings=settings,
                extra_conf=extra_conf, **kwargs)


# ------------------------------------------------------------ loading mail

# Maildir file names start with a delivery timestamp, and Dovecot assigns
# UIDs to newly seen files in timestamp order (maildir_filename_sort_cmp),
# not directory order. Numbering the files from a fixed base makes message
# i get UID i+1 on every instance, which compare_with_stock relies on.
_MAILDIR_TIME_BASE = 1_000_000_000


def _mailbox_dir(dc: DovecotInstance, user: str, mailbox: str) -> Path:
    # Maildir++ layout (the harness's mail_location = maildir:~/Maildir):
    # INBOX is the root, other mailboxes are dot-prefixed subdirectories.
    root = dc.maildir(user)
    return root if mailbox.upper() == "INBOX" else root / ("." + mailbox)


def load_maildir(dc: DovecotInstance, user: str,
                 messages: Iterable[Union[bytes, os.PathLike]],
                 mailbox: str = "INBOX", link: bool = True,
                 timeout: float = 600) -> int:
    """Put `messages` (raw bytes, or paths of .eml files) into `mailbox`.

    Much faster than LMTP or `doveadm import`: the files are written (or,
    for paths on the same file system and link=True, hard-linked: Dovecot
    never rewrites a Maildir file in place, it only renames and unlinks)
    straight into cur/, then one `doveadm force-resync` indexes them.
    Works on a running instance; the mailbox should be empty, so that the
    new messages get UIDs 1..n in the given order. Returns the message
    count Dovecot reports afterwards.
    """
    home = dc.home(user)
    st = os.stat(home)  # the harness made it for the mail user
    if mailbox.upper() != "INBOX":
        dc.doveadm("mailbox", "create", "-u", user, mailbox)
    box = _mailbox_dir(dc, user, mailbox)
    for d in (dc.maildir(user), box, box / "cur", box / "new", box / "tmp"):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chown(d, st.st_uid, st.st_gid)

    cur = box / "cur"
    existing = len(os.listdir(cur)) + len(os.listdir(box / "new"))
    count = 0
    for i, msg in enumerate(messages):
        if isinstance(msg, (bytes, bytearray)):
            size = len(msg)
        else:
            size = os.stat(msg).st_size
        name = (f"{_MAILDIR_TIME_BASE + existing + i}.M{i}P0.load,S={size}:2,")
        dest = cur / name
        if isinstance(msg, (bytes, bytearray)):
            dest.write_bytes(msg)
            os.chown(dest, st.st_uid, st.st_gid)
        else:
            _link_or_copy(Path(msg), dest, link, st)
        count += 1

    res = dc.doveadm("force-resync", "-u", user, mailbox, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"doveadm force-resync failed: {res.stderr}")
    have = mailbox_count(dc, user, mailbox)
    if have != existing + count:
        raise RuntimeError(f"{mailbox} of {user} has {have} messages after "
                           f"loading {count} (had {existing})")
    _check_uid_order(dc, user, mailbox, existing, count)
    return have


def _check_uid_order(dc: DovecotInstance, user: str, mailbox: str,
                     existing: int, count: int) -> None:
    """Message i of the list must have got the i-th new UID: comparisons
    between instances depend on it. (A Maildir message's GUID is its base
    file name, which starts with the number we gave it.)"""
    res = dc.doveadm("-f", "tab", "fetch", "-u", user, "uid guid",
                     "mailbox", mailbox, "all", check=True, timeout=600)
    rows = sorted((int(uid), guid) for uid, guid in
                  (line.split("\t", 1) for line in res.stdout.splitlines()[1:]))
    for i, (uid, guid) in enumerate(rows[existing:]):
        if not guid.startswith(f"{_MAILDIR_TIME_BASE + existing + i}."):
            raise RuntimeError(f"{mailbox} of {user}: UID {uid} is {guid}, "
                               f"expected loaded message {i}")


def _link_or_copy(src: Path, dest: Path, link: bool, st: os.stat_result) -> None:
    if link:
        try:
            os.link(src, dest)
            # A shared inode keeps its owner: fine as long as the mail user
            # can read it (it never needs to write it).
            if os.stat(dest).st_mode & 0o004:
                return
            dest.unlink()
        except OSError as e:
            # other file system, no permission, too many links: copy instead
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES,
                               errno.EMLINK):
                raise
    shutil.copyfile(src, dest)
    os.chown(dest, st.st_uid, st.st_gid)


def mailbox_count(dc: DovecotInstance, user: str, mailbox: str = "INBOX") -> int:
    res = dc.doveadm("mailbox", "status", "-u", user, "messages", mailbox,
                     check=True)
    m = re.search(r"messages=(\d+)", res.stdout)
    if not m:
        raise RuntimeError(f"unexpected doveadm output: {res.stdout!r}")
    return int(m.group(1))


# ------------------------------------------------------------ searching

_TOKEN_RE = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


def tokenize(query: str) -> list[tuple[str, str]]:
    """IMAP search syntax -> [(kind, text)], kind in {"(", ")", "str", "atom"}."""
    tokens, pos = [], 0
    query = query.strip()
    while pos < len(query):
        m = _TOKEN_RE.match(query, pos)
        if not m or m.end() == pos:
            raise ValueError(f"can't parse search query at {pos}: {query!r}")
        pos = m.end()
        if m.group(1):
            tokens.append(("(", "("))
        elif m.group(2):
            tokens.append((")", ")"))
        elif m.group(3) is not None:
            tokens.append(("str", re.sub(r"\\(.)", r"\1", m.group(3))))
        else:
            tokens.append(("atom", m.group(4)))
    return tokens


def quote(value: str) -> str:
    """A search string for query text: '"' + escaped value + '"'."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def search_command(tag: str, query: str) -> bytes:
    """The wire form of `tag UID SEARCH <query>`.

    Strings with non-ASCII characters (or CR/LF) can't be quoted strings in
    IMAP; they go as non-synchronizing literals ({n+}, LITERAL+, which
    Dovecot always advertises), so one command can carry several of them
    without waiting for continuation responses. CHARSET UTF-8 is added
    when any string needs it (unless the query names a charset itself).
    """
    body = b""
    needs_charset = False
    prev = "("
    for kind, text in tokenize(query):
        if kind != "str":
            part = text.encode("ascii")
        elif all(0x20 <= ord(c) < 0x7f for c in text):
            part = quote(text).encode("ascii")
        else:
            data = text.encode("utf-8")
            part = b"{%d+}\r\n" % len(data) + data
            needs_charset = needs_charset or not text.isascii()
        # IMAP's grammar has no space after "(" or before ")"
        body += part if prev == "(" or kind == ")" else b" " + part
        prev = kind
    prefix = b"CHARSET UTF-8 " if needs_charset and \
        not query.lstrip().upper().startswith("CHARSET") else b""
    return tag.encode() + b" UID SEARCH " + prefix + body + b"\r\n"


@dataclass
class SearchResult:
    uids: Optional[list[int]]   # None when the server said NO or BAD
    status: str                 # the tagged reply, e.g. "OK Search completed"
    seconds: float


class SearchClient:
    """One logged-in IMAP session with a mailbox EXAMINEd (read-only, so
    searches change no flags and both sides of a comparison stay alike).

    A raw socket rather than imaplib: imaplib can send only one literal per
    command (queries may hold several non-ASCII strings), caps response
    lines at 1 MB (a SEARCH over 100k messages can exceed it), and adds its
    own overhead to the timings.
    """

    def __init__(self, dc: DovecotInstance, user: str,
                 password: str = DEFAULT_PASSWORD, mailbox: str = "INBOX",
                 timeout: float = 600):
        self.sock = socket.create_connection(("127.0.0.1", dc.imap_port),
                                             timeout=timeout)
        self.reader = self.sock.makefile("rb")
        self.counter = 0
        self.reader.readline()  # greeting
        self._simple(f"LOGIN {quote(user)} {quote(password)}")
        self._simple(f"EXAMINE {quote(mailbox)}")

    def _next_tag(self) -> str:
        self.counter += 1
        return f"s{self.counter}"

    def _read_until(self, tag: str) -> tuple[list[bytes], str]:
        untagged = []
        prefix = tag.encode() + b" "
        while True:
            line = self.reader.readline()
            if not line:
                raise ConnectionError("IMAP server closed the connection")
            if line.startswith(prefix):
                return untagged, line[len(prefix):].decode(errors="replace").strip()
            untagged.append(line)

    def _simple(self, command: str) -> None:
        tag = self._next_tag()
        self.sock.sendall(f"{tag} {command}\r\n".encode())
        _, status = self._read_until(tag)
        if not status.startswith("OK"):
            raise RuntimeError(f"{command.split()[0]} failed: {status}")

    def search(self, query: str) -> SearchResult:
        tag = self._next_tag()
        command = search_command(tag, query)
        start = time.perf_counter()
        self.sock.sendall(command)
        untagged, status = self._read_until(tag)
        elapsed = time.perf_counter() - start
        if not status.startswith("OK"):
            return SearchResult(None, status, elapsed)
        uids: list[int] = []
        for line in untagged:
            # Other untagged lines are progress ("* OK Searched 10% ...")
            # or mailbox changes; only SEARCH carries the answer.
            if line.startswith(b"* SEARCH"):
                uids.extend(int(x) for x in line[8:].split())
        return SearchResult(sorted(uids), status, elapsed)

    def command(self, text: str) -> tuple[list[bytes], str]:
        """Any command (ASCII, no literals): its untagged lines, and the
        tagged status line without the tag."""
        tag = self._next_tag()
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        return self._read_until(tag)

    def close(self) -> None:
        try:
            tag = self._next_tag()
            self.sock.sendall(f"{tag} LOGOUT\r\n".encode())
            self._read_until(tag)
        except OSError:
            pass
        finally:
            self.reader.close()
            self.sock.close()

    def __enter__(self) -> "SearchClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------ comparing

@dataclass
class Mismatch:
    query: str
    stock: Optional[list[int]]      # None: stock answered NO/BAD
    fts: Optional[list[int]]        # None: the fts instance answered NO/BAD
    stock_status: str = ""
    fts_status: str = ""
    missing: list[int] = field(default_factory=list)  # stock has, fts lacks
    extra: list[int] = field(default_factory=list)    # fts has, stock lacks

    def __str__(self) -> str:
        def side(uids, status):
            return status if uids is None else f"{len(uids)} UIDs"
        text = (f"{self.query}: stock {side(self.stock, self.stock_status)}, "
                f"fts {side(self.fts, self.fts_status)}")
        if self.stock is not None and self.fts is not None:
            text += (f" (missing {_uid_sample(self.missing)}, "
                     f"extra {_uid_sample(self.extra)})")
        return text


def _uid_sample(uids: list[int], limit: int = 8) -> str:
    shown = ",".join(map(str, uids[:limit]))
    more = f",... {len(uids)} in all" if len(uids) > limit else ""
    return f"[{shown}{more}]"


def diff_answers(query: str, stock: SearchResult,
                 fts: SearchResult) -> Optional[Mismatch]:
    """A Mismatch if the two answers to `query` differ, else None."""
    if stock.uids is not None and stock.uids == fts.uids:
        return None
    if stock.uids is None and fts.uids is None:
        return None  # both refused it (e.g. a syntax error): nothing to compare
    mm = Mismatch(query, stock.uids, fts.uids, stock.status, fts.status)
    if stock.uids is not None and fts.uids is not None:
        s, f = set(stock.uids), set(fts.uids)
        mm.missing, mm.extra = sorted(s - f), sorted(f - s)
    return mm


def compare_with_stock(fts_instance: DovecotInstance,
                       stock_instance: DovecotInstance, user: str,
                       queries: Sequence[str], mailbox: str = "INBOX",
                       password: str = DEFAULT_PASSWORD) -> list[Mismatch]:
    """Run every query on both instances; return those answered differently.

    Both mailboxes must hold the same messages under the same UIDs (load
    both with load_maildir from the same list); that is checked first with
    UID SEARCH ALL. Queries are IMAP SEARCH syntax as a client types it,
    e.g. 'OR FROM "taint.org" BODY "für"'.
    """
    with SearchClient(stock_instance, user, password, mailbox) as stock, \
            SearchClient(fts_instance, user, password, mailbox) as fts:
        all_stock, all_fts = stock.search("ALL"), fts.search("ALL")
        if all_stock.uids != all_fts.uids or all_stock.uids is None:
            raise ValueError(
                f"{mailbox} differs between the instances: stock "
                f"{all_stock.status} with {len(all_stock.uids or [])} UIDs, "
                f"fts {all_fts.status} with {len(all_fts.uids or [])} UIDs")
        mismatches = []
        for query in queries:
            mm = diff_answers(query, stock.search(query), fts.search(query))
            if mm is not None:
                mismatches.append(mm)
        return mismatches
