"""The offline training corpus: installed text, chunked, classified, split, keyed and tokenised.

:func:`build_corpus` uses only text that is already on any machine with this project installed,
so that the book runs with no network at all:

- ``stdlib``: the Python standard library's ``.py`` sources (``sysconfig`` paths; the test
  suites and the generated codec tables are left out): code, with docstrings and comments;
- ``pydoc``: ``pydoc_data.topics``, the language reference that ``help()`` shows, one
  document per topic: English technical prose with small code examples;
- ``metadata``: the long descriptions (README) in installed packages' ``METADATA``
  (:mod:`importlib.metadata`): Markdown / reStructuredText prose;
- ``package-docs``: README-like ``.md`` / ``.rst`` / ``.txt`` files inside site-packages
  (licence files and packaging records excluded) and, where a package ships gettext
  catalogues (``.po``, e.g. Sphinx's), their translated strings: the only non-English text
  one can count on finding offline, and only when such a package is installed.

Four more sources are opt-in (:data:`EXTRA_SOURCES`; ``build_corpus(sources=ALL_SOURCES)``),
for SAEs that should see more than English software text; the first three read the same listed
packages:

- ``licences``: their licence, copyright and notice files: legal English (formal text);
- ``code-files``: their code in languages other than Python (C and C++ headers and sources,
  JavaScript and TypeScript, shell, YAML, TOML, HTML templates, CSS, SQL), minified files left out;
- ``maths``: docstrings of their Python modules that are dense in mathematical notation
  (LaTeX, ``.. math::``, Unicode symbols; SymPy, PyTorch and NetworkX give most of it);
- ``written``: text written for the project, because social-media and conversational text has no
  offline source in installed packages and other languages next to none: everyday dialogue,
  chat-assistant exchanges, spoken monologue, posts with emoji and hashtags, reviews, forum
  threads and formal letters and minutes in English, and dialogue, posts, notices, recipes and
  encyclopedic paragraphs in 17 other languages (:data:`WRITTEN_DIR`, one file per genre and
  language; about 92k characters, 42k tokens). None of it is an evaluation or probe text
  (tested: no run of 30 characters in common).

:data:`SOURCE_CAPS` bounds the big ones. :func:`corpus_report` shows each kind's share
(:func:`interp_lib.data.textkinds.text_kind`), so what a corpus lacks is measured, not guessed.

Documents are cut into chunks of at most ``chunk_chars`` characters at line boundaries, tiny
ones are skipped, exact duplicates are dropped (by content hash), undecodable or binary files
are skipped. Each :class:`Document` carries its ``source``, a rough content ``kind``
(``'code'``, ``'prose'`` or ``'other'``: neither code nor English prose, e.g. non-English text,
tables, lists of names) from simple line heuristics, and a ``name`` saying where it came from.
The order is deterministic (no randomness: each source's files are visited in the order of a
hash of their names, which is fixed but unrelated to the alphabet) and interleaves the sources
so that any prefix is a fair mix, with code and non-code characters kept roughly level while
both last. ``build_corpus(max_chars=3_000_000)`` is therefore a sensible few-MB corpus.

This corpus is narrow: English-language software text, heavy on Python. It is enough for an
SAE on a small model to learn readable features in minutes on a CPU, and the book says so.

:func:`split_corpus` holds out whole source files by a stable hash of their names,
:func:`corpus_key` is the short content hash that activation caches are keyed on, and
:func:`corpus_report` tabulates the composition.

**Online alternative.** A reader with access to the Hugging Face hub can swap in a broad web
corpus, for example (not imported here; ``pip install datasets``)::

    from datasets import load_dataset
    from interp_lib.data import Document

    stream = load_dataset("monology/pile-uncopyrighted", split="train", streaming=True)
    docs = [Document(row["text"], "pile", "prose", f"pile:{i}")
            for i, row in zip(range(20_000), stream)]
    # or the small, non-streaming "NeelNanda/pile-10k" (10k documents of the Pile)

and hand ``docs`` to :func:`split_corpus` and :func:`tokenize_corpus` as usual.

Tokenising (:func:`tokenize_corpus`) joins documents with the tokenizer's EOS token, cuts the
stream into rows of ``ctx_len - 1`` tokens and puts BOS at position 0 of every row. That
position is an attention sink with a huge activation norm; the rest of the library drops it.
"""

from __future__ import annotations

import email
import functools
import hashlib
import importlib.metadata
import os
import re
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple, Sequence

from interp_lib.errors import DamagedFileError, InvalidArgumentError

if TYPE_CHECKING:  # heavy imports stay lazy: importing interp_lib.data must not pay for them
    import pandas
    import torch

__all__ = [
    "SOURCES",
    "EXTRA_SOURCES",
    "ALL_SOURCES",
    "SOURCE_CAPS",
    "KINDS",
    "DEFAULT_CHUNK_CHARS",
    "MIN_DOC_CHARS",
    "CORPUS_PACKAGES",
    "WRITTEN_DIR",
    "written_documents",
    "Document",
    "build_corpus",
    "split_corpus",
    "corpus_report",
    "corpus_key",
    "tokenize_corpus",
]

SOURCES: tuple[str, ...] = ("stdlib", "pydoc", "metadata", "package-docs")
"""The default sources: the corpus the chapters read (the shipped SAEs were trained on these
and three opt-in ones, ``interp_lib.sae.zoo.ZOO_RECIPE["sources"]``)."""
EXTRA_SOURCES: tuple[str, ...] = ("licences", "code-files", "maths", "written")
"""Opt-in sources that widen the corpus beyond English software text (module doc)."""
ALL_SOURCES: tuple[str, ...] = SOURCES + EXTRA_SOURCES
KINDS: tuple[str, ...] = ("code", "prose", "other")

_CODE_SOURCES = frozenset({"stdlib", "code-files"})  # mostly code (used to interleave)
SOURCE_CAPS: dict[str, int] = {"code-files": 1_500_000, "maths": 1_500_000}
"""Most characters taken from a source (the rest of it is left out; the order is fixed)."""
DEFAULT_CHUNK_CHARS = 4000  # longest document after splitting (about 1,000-1,500 tokens)
MIN_DOC_CHARS = 200  # shorter documents (and trailing chunks) are skipped
_MAX_FILE_BYTES = 4_000_000  # bigger files are data, not text worth reading


class Document(NamedTuple):
    """One corpus document (a file, a topic, a long description, or a chunk of one)."""

    text: str
    source: str  # one of ALL_SOURCES (or 'evalset' for the evaluation texts)
    kind: str  # 'code' | 'prose' | 'other'
    name: str  # where it came from, e.g. 'stdlib:json/decoder.py#1'


def _order_key(name: str) -> str:
    """A fixed order unrelated to the alphabet, so a prefix samples the whole source."""
    return hashlib.sha1(name.encode("utf-8")).hexdigest()


def _round_robin(items: list[tuple[str, Path]]) -> tuple[tuple[str, Path], ...]:
    """Order (relative path, path) pairs so that top-level packages take turns.

    Packages (first path component) are visited in hash order, one file each per round, files
    within a package in hash order: a prefix samples many packages instead of the biggest one.
    """
    groups: dict[str, list[tuple[str, Path]]] = {}
    for item in items:
        groups.setdefault(item[0].split("/", 1)[0], []).append(item)
    queues = [
        sorted(groups[g], key=lambda item: _order_key(item[0]))
        for g in sorted(groups, key=_order_key)
    ]
    out: list[tuple[str, Path]] = []
    for round_ in range(max((len(q) for q in queues), default=0)):
        out.extend(q[round_] for q in queues if round_ < len(q))
    return tuple(out)


def _clean(text: str) -> str | None:
    """Normalise newlines and reject binary-looking text."""
    if "\x00" in text:
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    return text if text.strip() else None


def _read_text(path: Path) -> str | None:
    """A file's text as strict UTF-8, or None for binary, undecodable or huge files."""
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return _clean(text.lstrip("\ufeff"))


# Raw documents: (name, loader) pairs in a deterministic order; loaders read lazily so a small
# max_chars only reads the files it needs.
_Raw = tuple[str, Callable[[], "str | None"]]

_STDLIB_SKIP_DIRS = {
    "site-packages",
    "dist-packages",
    "__pycache__",
    "test",
    "tests",
    "idle_test",
    "pydoc_data",
}


@functools.lru_cache(maxsize=1)
def _stdlib_files() -> tuple[tuple[str, Path], ...]:
    """The stdlib's .py files outside test suites, as (relative name, path), hash-ordered."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_SKIP_DIRS)
        for fn in sorted(filenames):
            if fn.endswith(".py"):
                path = Path(dirpath, fn)
                found.append((path.relative_to(root).as_posix(), path))
    return _round_robin(found)


def _stdlib_loader(path: Path) -> Callable[[], str | None]:
    def load() -> str | None:
        text = _read_text(path)
        # generated charmap codecs (encodings/cp1252.py ...) are 256-entry tables, not code
        if text is None or "decoding_table = (" in text:
            return None
        return text

    return load


def _raw_stdlib() -> Iterator[_Raw]:
    for rel, path in _stdlib_files():
        yield f"stdlib:{rel}", _stdlib_loader(path)


def _raw_pydoc() -> Iterator[_Raw]:
    try:
        from pydoc_data.topics import topics  # big optional module: only this source reads it
    except ImportError:  # some distributions strip pydoc_data
        return
    for key in sorted(topics, key=lambda k: _order_key(f"pydoc:{k}")):
        text = topics[key]
        yield f"pydoc:{key}", (lambda text=text: _clean(text))


def _description(meta: Any) -> str | None:
    """A distribution's long description: the METADATA body, else its Description header."""
    body = meta.get_payload() if hasattr(meta, "get_payload") else None
    if not isinstance(body, str) or not body.strip():
        body = meta.get("Description") or ""
        # old-style headers indent continuation lines with 8 spaces or '       |'
        body = re.sub(r"\n(?:        |       \|)", "\n", body)
    return _clean(body) if body else None


CORPUS_PACKAGES: frozenset[str] = frozenset(
    {
        "numpy",
        "pandas",
        "torch",
        "transformers",
        "tokenizers",
        "safetensors",
        "huggingface-hub",
        "sae-lens",
        "transformer-lens",
        "plotly",
        "tqdm",
        "jupyter-book",
        "sphinx",
        "sphinx-book-theme",
        "pydata-sphinx-theme",
        "docutils",
        "myst-parser",
        "myst-nb",
        "ipython",
        "jinja2",
        "pygments",
        "requests",
        "urllib3",
        "pyyaml",
        "jsonschema",
        "networkx",
        "sympy",
        "nbformat",
        "jupytext",
        "sphinxcontrib-bibtex",
        "sphinx-design",
        "sphinx-togglebutton",
        "sphinx-copybutton",
    }
)
"""Distributions whose descriptions and docs join the corpus: the project's own dependencies.

A fixed list, so installing an unrelated package (or a test tool) does not change the corpus,
its key, or the activation caches built on it. A listed package that is not installed is skipped.
"""


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def _corpus_top_levels() -> frozenset[str]:
    """Top-level import folders in site-packages that belong to CORPUS_PACKAGES."""
    mapping = importlib.metadata.packages_distributions()
    return frozenset(
        top for top, dists in mapping.items() if any(_dist_key(d) in CORPUS_PACKAGES for d in dists)
    )


@functools.lru_cache(maxsize=1)
def _metadata_entries() -> tuple[tuple[str, str], ...]:
    """(name, description) for each installed distribution, first one on sys.path wins.

    The METADATA file is parsed here rather than read through ``dist.metadata``: once the
    ``importlib_metadata`` backport is imported (Jupyter Book does), that property dedents the
    description, and the corpus (with its key and every activation cache) would differ between a
    script and the book build."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        try:
            metadata_file = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
            meta = email.message_from_string(metadata_file)
            name = meta["Name"]
        except Exception:  # a broken dist-info must not break the corpus
            continue
        if not name:
            continue
        key = _dist_key(name)
        if key in seen or key not in CORPUS_PACKAGES:
            continue
        text = _description(meta)
        if text:
            seen[key] = text
    return tuple(sorted(seen.items(), key=lambda kv: _order_key(f"metadata:{kv[0]}")))


def _raw_metadata() -> Iterator[_Raw]:
    for key, text in _metadata_entries():
        yield f"metadata:{key}", (lambda text=text: text)


_DOC_SUFFIXES = {".md", ".rst", ".txt", ".po"}
_SKIP_DOC_STEMS = re.compile(
    r"^(licen[cs]e|copying|copyright|notice|authors|contributors|record|top_level|entry_points|"
    r"dependency_links|sources|requires|requirements.*|installer|requested|namespace_packages|"
    r"not-zip-safe|api_tests|vendor|third_party_notices|thirdpartynotices|citation)",
    re.IGNORECASE,
)
_SKIP_DOC_DIRS = {
    "__pycache__",
    "node_modules",
    ".git",
    "test",
    "tests",
    "testing",
    "testdata",
    "test_data",
    "data",
    "datasets",
    "fixtures",
    "samples",
}
_MAX_DOC_FILE_BYTES = 500_000  # a README-like file is never this big; such files are data


def _site_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    roots: list[Path] = []
    for key in ("purelib", "platlib"):
        p = Path(paths[key])
        if p.is_dir() and p not in roots:
            roots.append(p)
    return roots


def _listed_files(accept: Callable[[str], bool], dist_info: bool = False) -> list[tuple[str, Path]]:
    """(relative name, path) of the files ``accept(file name)`` takes inside the listed packages'
    folders in site-packages (and, with ``dist_info``, their ``.dist-info`` folders), test and
    data folders left out."""
    found: list[tuple[str, Path]] = []
    allowed = _corpus_top_levels()
    for root in _site_dirs():
        for dirpath, dirnames, filenames in os.walk(root):
            if Path(dirpath) == root:
                dirnames[:] = [
                    d
                    for d in dirnames
                    if d in allowed
                    or (
                        dist_info
                        and d.endswith(".dist-info")
                        and _dist_key(d[: -len(".dist-info")].rsplit("-", 1)[0]) in CORPUS_PACKAGES
                    )
                ]
                continue  # loose files at the top of site-packages belong to no listed package
            dirnames[:] = sorted(
                d
                for d in dirnames
                if d not in _SKIP_DOC_DIRS and not d.endswith((".dist-info", ".egg-info"))
            )
            for fn in sorted(filenames):
                if accept(fn):
                    path = Path(dirpath, fn)
                    found.append((path.relative_to(root).as_posix(), path))
    return found


@functools.lru_cache(maxsize=1)
def _package_doc_files() -> tuple[tuple[str, Path], ...]:
    """README-like files and gettext catalogues inside site-packages, hash-ordered."""

    def is_doc(fn: str) -> bool:
        stem, suffix = os.path.splitext(fn)
        return suffix.lower() in _DOC_SUFFIXES and not _SKIP_DOC_STEMS.match(stem)

    return _round_robin(_listed_files(is_doc))


_PO_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _po_translations(text: str) -> str | None:
    """The translated strings (msgstr) of a non-English gettext .po catalogue, one per line."""
    language = re.search(r'^"Language: ([A-Za-z_@-]+)', text, re.MULTILINE)
    if language is None or language.group(1).lower().startswith("en"):
        return None
    strings: list[str] = []
    msgid: list[str] = []
    msgstr: list[str] = []
    field: list[str] | None = None  # the list that continuation lines ("...") extend

    def flush() -> None:
        translated = "".join(msgstr)
        if translated and "".join(msgid):  # the header is the msgstr of the empty msgid
            strings.append(translated)

    for line in text.split("\n"):
        if line.startswith(("msgctxt", "msgid ")):  # a new entry
            flush()
            msgid, msgstr = [], []
            field = msgid if line.startswith("msgid ") else None
        elif line.startswith(("msgstr ", "msgstr[0]")):
            field = msgstr
        elif line.startswith(("msgid_plural", "msgstr[")):
            field = None  # plural forms: the singular is enough
        elif not line.startswith('"'):
            field = None
            continue
        if field is not None:
            field.extend(_PO_STRING.findall(line))
    flush()
    cleaned = []
    for s in strings:
        s = (
            s.replace("\\n", " ")
            .replace('\\"', '"')
            .replace("\\t", " ")
            .replace("\\\\", "\\")
            .strip()
        )
        if s:
            cleaned.append(s)
    return _clean("\n".join(cleaned)) if cleaned else None


def _package_doc_loader(path: Path) -> Callable[[], str | None]:
    def load() -> str | None:
        try:
            if path.stat().st_size > _MAX_DOC_FILE_BYTES:
                return None
        except OSError:
            return None
        text = _read_text(path)
        if text is not None and path.suffix.lower() == ".po":
            return _po_translations(text)
        return text

    return load


def _raw_package_docs() -> Iterator[_Raw]:
    for rel, path in _package_doc_files():
        yield f"package-docs:{rel}", _package_doc_loader(path)


_LICENCE = re.compile(r"^(licen[cs]e|copying|copyright|notice)", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _licence_files() -> tuple[tuple[str, Path], ...]:
    """Licence, copyright and notice files of the listed packages, hash-ordered."""
    return _round_robin(_listed_files(lambda fn: bool(_LICENCE.match(fn)), dist_info=True))


def _raw_licences() -> Iterator[_Raw]:
    for rel, path in _licence_files():
        yield f"licences:{rel}", _package_doc_loader(path)


_CODE_SUFFIXES = frozenset(
    ".c .h .cc .cpp .hpp .cu .cuh .js .mjs .ts .sh .bash .yaml .yml .toml .html .css .sql .rs .go "
    ".java".split()
)


@functools.lru_cache(maxsize=1)
def _code_files() -> tuple[tuple[str, Path], ...]:
    """Non-Python code files of the listed packages, hash-ordered."""
    return _round_robin(_listed_files(lambda fn: os.path.splitext(fn)[1] in _CODE_SUFFIXES))


def _code_loader(path: Path) -> Callable[[], str | None]:
    def load() -> str | None:
        text = _package_doc_loader(path)()
        if text is None:
            return None
        lengths = [len(line) for line in text.split("\n")]
        if max(lengths) > 1000 or sum(lengths) / len(lengths) > 100:  # minified or generated
            return None
        return text

    return load


def _raw_code_files() -> Iterator[_Raw]:
    for rel, path in _code_files():
        yield f"code-files:{rel}", _code_loader(path)


_DOCSTRING = re.compile(r'^[ \t]*[rRuU]?("""|\'\'\')(.*?)\1', re.DOTALL | re.MULTILINE)
_MATH_MARK = re.compile(
    r"\\(?:frac|sum|int|sqrt|mathbb|mathcal|left|right|partial|alpha|beta|lambda|sigma|theta|"
    r"cdot|leq|geq|infty)(?![A-Za-z])|\.\. math::|:math:`|[∫∑∏√∞≈≡≠≤≥∈∂∇±·²]"
)
_MIN_MATH_MARKS = 10  # a docstring with fewer marks is not mathematical text


@functools.lru_cache(maxsize=1)
def _python_files() -> tuple[tuple[str, Path], ...]:
    """Python modules of the listed packages, hash-ordered."""
    return _round_robin(_listed_files(lambda fn: fn.endswith(".py")))


def _maths_loader(path: Path) -> Callable[[], str | None]:
    def load() -> str | None:
        text = _package_doc_loader(path)()
        if text is None or len(_MATH_MARK.findall(text)) < _MIN_MATH_MARKS:
            return None
        docs = []
        for match in _DOCSTRING.finditer(text):
            body = textwrap.dedent(match.group(2)).strip("\n")
            if len(_MATH_MARK.findall(body)) >= _MIN_MATH_MARKS:
                docs.append(body)
        return _clean("\n\n".join(docs)) if docs else None

    return load


def _raw_maths() -> Iterator[_Raw]:
    for rel, path in _python_files():
        yield f"maths:{rel}", _maths_loader(path)


WRITTEN_DIR = Path(__file__).parent / "written"
"""Text written for the project (the ``written`` source): one file per genre and language,
``<genre>.<language>.txt``, documents separated by a line ``====``."""
_WRITTEN_SEPARATOR = re.compile(r"\n====\n")


def written_documents(path: Path) -> list[str]:
    """The documents of one ``written`` file, a document shorter than :data:`MIN_DOC_CHARS`
    joined to the next (a short chat in Chinese is one, and the corpus skips short pieces)."""
    text = _read_text(path)
    if text is None:
        raise DamagedFileError(
            path,
            "not readable UTF-8 text (a file of the written corpus source)",
            "Restore it from the project's repository (git checkout -- <path>).",
        )
    docs: list[str] = []
    pending = ""
    for part in _WRITTEN_SEPARATOR.split(text):
        part = part.strip()
        if not part:
            continue
        pending = f"{pending}\n\n{part}" if pending else part
        if len(pending) >= MIN_DOC_CHARS:
            docs.append(pending)
            pending = ""
    if pending:  # a short last document goes with the one before it
        docs[-1:] = [f"{docs[-1]}\n\n{pending}"] if docs else [pending]
    return docs


def _raw_written() -> Iterator[_Raw]:
    files = sorted(WRITTEN_DIR.glob("*.txt"), key=lambda p: _order_key(p.name))
    per_file = [
        [(f"written:{p.name}:{i}", d) for i, d in enumerate(written_documents(p))] for p in files
    ]
    for round_ in range(max((len(docs) for docs in per_file), default=0)):  # files take turns
        for docs in per_file:
            if round_ < len(docs):
                name, text = docs[round_]
                yield name, functools.partial(str, text)


_RAW_SOURCES: dict[str, Callable[[], Iterator[_Raw]]] = {
    "stdlib": _raw_stdlib,
    "pydoc": _raw_pydoc,
    "metadata": _raw_metadata,
    "package-docs": _raw_package_docs,
    "licences": _raw_licences,
    "code-files": _raw_code_files,
    "maths": _raw_maths,
    "written": _raw_written,
}


def _chunks(text: str, limit: int) -> list[str]:
    """Split text at line boundaries into pieces of at most `limit` characters."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.split("\n"):
        while len(line) > limit:  # a single enormous line: hard split
            if current:
                pieces.append("\n".join(current))
                current, size = [], 0
            pieces.append(line[:limit])
            line = line[limit:]
        extra = len(line) + (1 if current else 0)
        if current and size + extra > limit:
            pieces.append("\n".join(current))
            current, size = [], 0
            extra = len(line)
        current.append(line)
        size += extra
    if current:
        pieces.append("\n".join(current))
    return [p.strip("\n") for p in pieces if p.strip()]


_CODE_START = re.compile(
    r"^\s*(?:def |class |import |from [\w.]+ import |return\b|if .*:$|elif .*:$|else:|"
    r"for .* in .*:$|while .*:$|try:|except\b.*:$|finally:|with .*:$|raise\b|yield\b|"
    r"assert\b|@[\w.]+|pass$|break$|continue$|async |await |self\.|super\(|lambda\b|"
    r"[\w.\[\]'\"]+\s*(?:[-+*/|&%]?=)\s*\S|[\w.]+\(.*\)$|[)\]}],?$|print\()"
)
_STOPWORDS = frozenset(
    "the a an of to in and is are was be been for that this it its as on by or not with from "
    "can you we if which will at has have when but all any there these those then than into "
    "must may should one also only more such".split()
)


def _looks_like_text(text: str) -> bool:
    """False for numeric tables, hex dumps and the like (too few letters)."""
    visible = sum(1 for c in text if not c.isspace())
    return visible > 0 and sum(1 for c in text if c.isalpha()) / visible >= 0.35


def _classify(text: str) -> str:
    """Rough content type: 'code', 'prose' (English) or 'other'."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "other"
    if sum(ord(c) > 127 for c in letters) / len(letters) > 0.25:
        return "other"
    # '#' lines are neutral: Python comments and Markdown headings look alike
    lines = [ln for ln in text.split("\n") if ln.strip() and not ln.lstrip().startswith("#")]
    code_like = sum(1 for ln in lines if _CODE_START.match(ln))
    if lines and code_like / len(lines) >= 0.4:
        return "code"
    words = re.findall(r"[A-Za-z]+", text)
    if len(words) >= 20 and sum(w.lower() in _STOPWORDS for w in words) / len(words) >= 0.12:
        return "prose"
    return "other"


def _iter_source(source: str, chunk_chars: int) -> Iterator[Document]:
    """One source's documents, chunked, classified, in the source's fixed order."""
    for name, load in _RAW_SOURCES[source]():
        text = load()
        if text is None:
            continue
        pieces = _chunks(text, chunk_chars)
        for i, piece in enumerate(pieces):
            if len(piece) < MIN_DOC_CHARS or not _looks_like_text(piece):
                continue
            doc_name = name if len(pieces) == 1 else f"{name}#{i}"
            yield Document(piece, source, _classify(piece), doc_name)


def _text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def build_corpus(
    max_chars: int | None = None,
    *,
    sources: Sequence[str] = SOURCES,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
) -> list[Document]:
    """Offline corpus of installed text, deterministic, deduplicated, sources interleaved."""
    if max_chars is not None and (
        isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0
    ):
        raise InvalidArgumentError(f"max_chars must be a positive int or None, got {max_chars!r}")
    if isinstance(sources, str):
        raise TypeError(f"sources must be a sequence of source names, e.g. {SOURCES!r}, not a str")
    sources = tuple(sources)
    bad = [s for s in sources if s not in ALL_SOURCES]
    if bad or not sources:
        raise InvalidArgumentError(
            f"unknown or no sources {bad!r}; valid sources: {', '.join(ALL_SOURCES)}"
        )
    if not isinstance(chunk_chars, int) or chunk_chars < MIN_DOC_CHARS:
        raise InvalidArgumentError(
            f"chunk_chars must be an int >= {MIN_DOC_CHARS}, got {chunk_chars!r}"
        )
    sources = tuple(dict.fromkeys(sources))

    # Interleave: whenever code characters lag behind the rest, the next document comes from a
    # code source (the stdlib), else from a text source; within a group the source that has
    # given the fewest characters so far goes next. Once one group runs dry the other goes on.
    streams = {s: _iter_source(s, chunk_chars) for s in sources}
    live = list(sources)
    emitted = dict.fromkeys(sources, 0)  # characters taken from each source
    by_group = {"code": 0, "text": 0}  # by each document's own kind
    seen: set[bytes] = set()
    docs: list[Document] = []
    total = 0
    while live:
        want = "code" if by_group["code"] <= by_group["text"] else "text"
        preferred = [s for s in live if (s in _CODE_SOURCES) == (want == "code")]
        source = min(preferred or live, key=lambda s: (emitted[s], sources.index(s)))
        doc = next(streams[source], None)
        if doc is None:
            live.remove(source)
            continue
        if emitted[source] + len(doc.text) > SOURCE_CAPS.get(source, sys.maxsize):
            live.remove(source)  # this source has given its share
            continue
        digest = _text_hash(doc.text)
        if digest in seen:
            continue
        if max_chars is not None and total + len(doc.text) > max_chars:
            break
        seen.add(digest)
        docs.append(doc)
        total += len(doc.text)
        emitted[source] += len(doc.text)
        by_group["code" if doc.kind == "code" else "text"] += len(doc.text)
    return docs


def _check_docs(docs: Any) -> list[Document]:
    docs = list(docs)
    for d in docs:
        if not isinstance(d, Document):
            raise TypeError(f"expected interp_lib.data.Document items, got {type(d).__name__}")
    return docs


def _split_value(doc: Document) -> float:
    """A stable number in [0, 1) from the name of the file a document came from.

    Chunks of one file (``name#1``, ``name#2``, ...) share it, so whole files are held out.
    """
    h = hashlib.sha256(doc.name.split("#")[0].encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_corpus(
    docs: Iterable[Document], held_out_fraction: float = 0.1
) -> tuple[list[Document], list[Document]]:
    """Split into (train, held_out) by a stable hash of the source file; held out never trains."""
    if (
        isinstance(held_out_fraction, bool)
        or not isinstance(held_out_fraction, (int, float))
        or not 0.0 <= held_out_fraction <= 1.0
    ):
        raise InvalidArgumentError(
            f"held_out_fraction must be a number in [0, 1], got {held_out_fraction!r}"
        )
    docs = _check_docs(docs)
    held_texts = {d.text for d in docs if _split_value(d) < held_out_fraction}
    # a text that is repeated under another name goes wholly to held-out: no leak into training
    train = [d for d in docs if d.text not in held_texts]
    held_out = [d for d in docs if d.text in held_texts]
    return train, held_out


def corpus_report(docs: Iterable[Document]) -> "pandas.DataFrame":
    """Composition table: rows per source, per kind and per text kind (the seven kinds of the
    evaluation set and ``prose``, by :func:`~interp_lib.data.textkinds.text_kind`), with
    documents, characters and share."""
    import pandas as pd  # heavy optional dependency: only the report needs it

    from interp_lib.data.textkinds import TEXT_KINDS, text_kind

    docs = _check_docs(docs)
    total = sum(len(d.text) for d in docs)
    text_kinds = [text_kind(d.text) for d in docs]
    rows = []
    for by, values, of in (
        ("source", ALL_SOURCES, [d.source for d in docs]),
        ("kind", KINDS, [d.kind for d in docs]),
        ("text kind", TEXT_KINDS, text_kinds),
    ):
        present = list(values) + sorted(set(of) - set(values))
        for value in present:
            group = [d for d, v in zip(docs, of) if v == value]
            if not group:
                continue
            chars = sum(len(d.text) for d in group)
            rows.append(
                {
                    "by": by,
                    "group": value,
                    "documents": len(group),
                    "characters": chars,
                    "share": chars / total if total else 0.0,
                }
            )
    return pd.DataFrame(rows, columns=["by", "group", "documents", "characters", "share"])


def corpus_key(docs: Iterable[Document]) -> str:
    """Short stable hash (16 hex digits) of the documents' content and order, for cache keys."""
    h = hashlib.sha256()
    for d in _check_docs(docs):
        for part in (d.source, d.kind, d.name, d.text):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def _resolve_tokenizer(model_or_tokenizer: Any) -> Any:
    """A Hugging Face tokenizer, given one or an object holding one (a TransformerLens model)."""
    obj = model_or_tokenizer
    if not (callable(obj) and hasattr(obj, "eos_token_id")):
        obj = getattr(obj, "tokenizer", None)
    if obj is None or not (callable(obj) and hasattr(obj, "eos_token_id")):
        raise TypeError(
            "expected a Hugging Face tokenizer or a model with a .tokenizer (e.g. a "
            f"TransformerLens HookedTransformer), got {type(model_or_tokenizer).__name__}"
        )
    return obj


def tokenize_corpus(
    tokenizer: Any,
    docs: Iterable[Document | str],
    ctx_len: int = 128,
    max_tokens: int | None = None,
    *,
    batch_size: int = 256,
) -> "torch.Tensor":
    """LongTensor[n_ctx, ctx_len]: EOS-joined documents in rows of BOS + (ctx_len - 1) tokens."""
    import torch  # heavy dependency: building or splitting a corpus must not import it

    tok = _resolve_tokenizer(tokenizer)
    if isinstance(ctx_len, bool) or not isinstance(ctx_len, int) or ctx_len < 2:
        raise InvalidArgumentError(
            f"ctx_len must be an int >= 2 (BOS plus at least one token), got {ctx_len!r}"
        )
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < ctx_len
    ):
        raise InvalidArgumentError(
            f"max_tokens must be None or an int >= ctx_len ({ctx_len}), got {max_tokens!r}"
        )
    texts = [d.text if isinstance(d, Document) else d for d in docs]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("docs must be Document objects or strings")
    eos = tok.eos_token_id
    bos = tok.bos_token_id if tok.bos_token_id is not None else eos
    if eos is None:
        raise InvalidArgumentError("the tokenizer has no eos_token_id to separate documents with")
    body = ctx_len - 1
    max_rows = None if max_tokens is None else max_tokens // ctx_len
    needed = None if max_rows is None else max_rows * body
    ids: list[int] = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        encoded = tok(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)[
            "input_ids"
        ]
        for seq in encoded:
            ids.extend(seq)
            ids.append(eos)
        if needed is not None and len(ids) >= needed:
            break
    n_rows = len(ids) // body if max_rows is None else min(len(ids) // body, max_rows)
    if n_rows == 0:
        raise InvalidArgumentError(
            f"too little text: {len(ids)} tokens do not fill one context of {ctx_len}"
        )
    rows = torch.tensor(ids[: n_rows * body], dtype=torch.long).view(n_rows, body)
    return torch.cat([torch.full((n_rows, 1), bos, dtype=torch.long), rows], dim=1)
