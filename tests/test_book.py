"""Tests of the book: its configuration and sources, and (marker book_html) the built site.

The book_html tests read _build/html. `make test` runs them right after building the book, with
INTERP_REQUIRE_BOOK_HTML=1 so that a missing site fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import plotly
import pytest
import yaml
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
# The build scripts of .ci/ import their shared module (buildlib) from their own folder, which
# `python .ci/book.py` puts on sys.path; so do the tests.
CI = ROOT / ".ci"
if str(CI) not in sys.path:
    sys.path.insert(0, str(CI))

import buildlib  # noqa: E402

import book as ci_book  # noqa: E402  (.ci/book.py, once .ci/ is on sys.path)

if str(ROOT / "book" / "_ext") not in sys.path:
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
import interp_book  # noqa: E402  (book/_ext/interp_book.py: the verdict directive's parser)

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
DOCS = buildlib.toc_files(TOC)
CHAPTERS = buildlib.chapters()


def _chapter_id(p: Path) -> str:
    return str(p.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------
# Configuration and sources


def test_build_is_strict():
    ex = CONFIG["execute"]
    assert ex["execute_notebooks"] in ("cache", "force"), "chapters must be executed by the build"
    assert ex.get("allow_errors") is False
    assert ex.get("stderr_output") in ("warn", "error", "severe"), "stderr must not pass silently"
    sphinx_cfg = CONFIG["sphinx"]["config"]
    assert sphinx_cfg.get("nb_execution_raise_on_error") is True
    # -W turns myst-nb's stderr/glue warnings into a failed build; --keep-going reports them all.
    src = (ROOT / ".ci" / "book.py").read_text()
    assert '"-W", "--keep-going"' in src
    makefile = (ROOT / "Makefile").read_text()
    assert "BOOK := $(BIN)/python .ci/book.py" in makefile
    assert re.search(r"^book:.*\n\t\$\(BOOK\) build\s*$", makefile, re.M), (
        "`make book` goes through .ci/book.py"
    )
    assert re.search(r"^book-cached:.*\n\t\$\(BOOK\) build --expect-cached", makefile, re.M)


def test_everything_served_locally_is_configured():
    cfg = CONFIG["sphinx"]["config"]
    assert not str(cfg["mathjax_path"]).startswith(("http:", "https:", "//"))
    assert (ROOT / "book" / "_static" / cfg["mathjax_path"]).is_file()
    assert "interp_book" in CONFIG["sphinx"]["local_extensions"]


def test_launch_buttons_configured():
    repo = CONFIG["repository"]
    assert repo["url"].startswith("https://github.com/") and repo["branch"]
    lb = CONFIG["launch_buttons"]
    assert lb.get("binderhub_url") and lb.get("colab_url")


def test_every_toc_entry_exists():
    assert DOCS[0] == TOC["root"]
    missing = [d for d in DOCS if buildlib.source_of(d) is None]
    assert not missing, f"_toc.yml lists missing files: {missing}"
    assert len(set(DOCS)) == len(DOCS), "a file is listed twice in _toc.yml"


def test_every_page_under_book_is_in_the_toc():
    listed = {ROOT / f"{d}.md" for d in DOCS} | {ROOT / f"{d}.ipynb" for d in DOCS}
    pages = [
        p
        for p in (ROOT / "book").rglob("*.md")
        if not {"_static", "_ext", "_build"} & set(p.relative_to(ROOT / "book").parts)
    ]
    orphans = [str(p.relative_to(ROOT)) for p in pages if p not in listed]
    assert not orphans, f"pages not in _toc.yml (never built): {orphans}"


def test_there_is_a_chapter():
    assert CHAPTERS, "no executable chapter in _toc.yml"


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("src", CHAPTERS, ids=_chapter_id)
def test_chapter_header_and_setup_cell(src):
    nb = ci_book.read_as_myst_nb(src)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first = _code_cells(nb)[0]
    assert "plots.setup()" in first.source, "the first code cell must call interp_lib.site.plots.setup()"
    tags = first.metadata.get("tags", [])
    assert "remove-cell" in tags or "remove-input" in tags, "the setup cell is hidden on the site"


GLUE_ROLE = re.compile(r"\{glue(?::(?:any|text|md|figure|math))?\}`([^`]+)`")
GLUE_DIRECTIVE = re.compile(r"^[`:]{3,}\{glue(?::(?:any|text|md|figure|math))?\}\s+(\S+)", re.M)
GLUE_CALL = re.compile(r"""\bglue\(\s*(?:f?["'])([^"']+)["']""")
VERDICT_ANY = re.compile(r"^\s*(?:[-*+]\s+|\d+[.)]\s+)?(`{3,}|:{3,})\{verdict\}[ \t]+(\S+)", re.M)
HIDDEN_CELL_LINES = 12
PROSE_WORDS = 5


def prose_in_code(source: str) -> list[str]:
    """String literals of ``source`` that read as a sentence (at least PROSE_WORDS words), and
    calls that build Markdown: what a hidden cell must not hold."""
    import io
    import tokenize

    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            words = re.findall(r"[A-Za-z][A-Za-z'-]*", re.sub(r"\{[^}]*\}", " ", tok.string))
            if len(words) >= PROSE_WORDS:
                found.append(tok.string[:60])
    found += [f"{m.group(0)}...)" for m in re.finditer(r"\b(Markdown|verdict)\(", source)]
    return found


@pytest.mark.parametrize("src", CHAPTERS, ids=_chapter_id)
def test_hidden_cells_only_glue_values(src):
    """A hidden (remove-cell) code cell glues values and findings: at most HIDDEN_CELL_LINES
    lines, and no sentence built in Python (conclusions are verdict blocks in the Markdown)."""
    nb = ci_book.read_as_myst_nb(src)
    problems = []
    for i, c in enumerate(_code_cells(nb)):
        if "remove-cell" not in c.metadata.get("tags", []):
            continue
        lines = [ln for ln in c.source.splitlines() if ln.strip()]
        if len(lines) > HIDDEN_CELL_LINES:
            problems.append(f"code cell {i}: {len(lines)} lines")
        problems += [f"code cell {i}: prose {p!r}" for p in prose_in_code(c.source)]
    assert not problems, f"{_chapter_id(src)}: " + "; ".join(problems)


def test_hidden_cell_check_catches_prose():
    assert prose_in_code('glue("x", Markdown(evidence.verdict(f, "a", "b")))')
    assert prose_in_code('glue("x", "The feature raises its word more than chance")')
    assert prose_in_code('glue("x", f"The feature chosen on {n} prompts raises it")')
    assert not prose_in_code('glue("n_select", len(SELECTION), display=False)')
    assert not prose_in_code('glue("up_holds", evidence.outcome(found[0]), display=False)')


def test_verdicts_read_as_prose():
    text = "a\n\n```{verdict} k\nYes 0.5.\n+++\nNo.\n```\nb\n"
    assert "Yes 0.5." in _prose(text) and "+++" not in _prose(text)
    nested = "- ````{verdict} k\n  Yes,\n  ```{verdict} j\n  in 0.7.\n  +++\n  out.\n  ```\n  +++\n  No.\n  ````\n"
    assert "in 0.7." in _prose(nested) and "No." in _prose(nested) and "+++" not in _prose(nested)
    assert {m.group(2) for m in VERDICT_ANY.finditer(nested)} == {"k", "j"}


def _referenced_glue_keys(text: str) -> set[str]:
    keys = set()
    for m in GLUE_ROLE.finditer(text):
        ref = m.group(1)
        key = (
            ref.split("::")[-1].split(":")[0]
            if "::" not in ref
            else ref.split("::")[1].split(":")[0]
        )
        keys.add(key.strip())
    keys |= {m.group(1).split("::")[-1] for m in GLUE_DIRECTIVE.finditer(text)}
    return keys


@pytest.mark.parametrize("src", CHAPTERS, ids=_chapter_id)
def test_every_glue_reference_is_glued(src):
    """Every glue role, glue directive and verdict block names a key a code cell glues (the
    build also fails on a verdict whose key is missing: a warning under -W)."""
    text = src.read_text()
    nb = ci_book.read_as_myst_nb(src)
    glued = {m.group(1) for c in _code_cells(nb) for m in GLUE_CALL.finditer(c.source)}
    referenced = _referenced_glue_keys(text) | {m.group(2) for m in VERDICT_ANY.finditer(text)}
    missing = sorted(referenced - glued)
    assert not missing, f"pasted but never glued: {missing}"


def _verdicts_as_prose(text: str) -> str:
    """Verdict blocks replaced by their branches (prose, checked like the rest), nested ones and
    ones in list items too."""
    return interp_book.verdict_branches_text(text)


def _prose(text: str) -> str:
    """The Markdown prose of a chapter: no front matter, fences, math, inline code or links (the
    branches of verdict blocks are prose)."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    text = _verdicts_as_prose(text)
    text = re.sub(r"^(`{3,}|:{3,}).*?^\1\s*$", "", text, flags=re.S | re.M)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    text = re.sub(r"\$[^$\n]+\$", "", text)
    text = re.sub(r"\{[\w:-]+\}`[^`]*`", "", text)  # roles, glue included
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"\]\([^)]*\)|<https?://[^>]*>|https?://\S+", "", text)
    text = "\n".join(line for line in text.splitlines() if "<!-- number-ok -->" not in line)
    return text


TYPED_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:\.\d+)\b|(?<![\w.])\d+(?:\.\d+)?\s?%")


@pytest.mark.parametrize("src", CHAPTERS, ids=_chapter_id)
def test_no_measured_number_typed_into_prose(src):
    """Decimals and percentages in a chapter's prose must come from glue (a heuristic: whole
    numbers such as layer indices are allowed; end a line with <!-- number-ok --> to exempt it)."""
    found = TYPED_NUMBER.findall(_prose(src.read_text()))
    assert not found, f"numbers typed into the prose (glue them instead): {found}"


NUMBER_WORDS = (
    "two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
    "hundred|thousand|million|dozen"
)
WHOLE_NUMBER = re.compile(
    rf"(?<![\w.$-])(?:\d[\d,]*|(?:{NUMBER_WORDS})(?:[- ](?:{NUMBER_WORDS}))*)(?![\w]|[.,]\d)",
    re.IGNORECASE,
)
# Whole numbers that are part of the set-up, not results: names, references and constants.
CONTEXT_OK = re.compile(
    r"(chapter|chapters|section|equation|layer|layers|block|blocks|step|position|positions|"
    r"figure|version|python|gpt-|k =|k=|top|et al\.?|,)\s*$",
    re.IGNORECASE,
)
ALLOWED_NUMBER_PHRASES = (
    # constants of the set-up, true on every profile; one entry per phrase, lower case
    "seven categories",
    "seven kinds",
    "ten texts",
    "ten of each",
    "two sae",
    "two saes",
    "two trainers",
    "two things",
    "two ways",
    "two steps",
    "two questions",
    "two random directions",
    "three questions",
    "two directions",
    "three tools",
    "four tools",
    "two sides",
)


def typed_whole_numbers(prose: str) -> list[str]:
    """Whole numbers and number words in ``prose`` that are neither a reference (chapter 3, layer
    15, Bricken et al. 2023) nor an allowed set-up phrase: results that should be glued."""
    found = []
    for line in prose.splitlines():
        line = re.sub(r"^\s*(\d+\.|[-*])\s", "", line)  # list numbering
        low = line.lower()
        for m in WHOLE_NUMBER.finditer(line):
            before = line[: m.start()]
            after = low[m.start() :]
            if CONTEXT_OK.search(before) or re.match(r"(19|20)\d\d\b", m.group(0)):
                continue
            if any(
                after.startswith(p) or low[: m.end()].endswith(p) for p in ALLOWED_NUMBER_PHRASES
            ):
                continue
            found.append(line[max(0, m.start() - 20) : m.end() + 20].strip())
    return found


@pytest.mark.parametrize("src", CHAPTERS, ids=_chapter_id)
def test_no_whole_or_spelled_out_result_number_typed_into_prose(src):
    """Whole and spelled-out numbers ("two hundred steps", "nine of ten") in prose must be glued,
    unless they are references or allowed constants of the set-up (ALLOWED_NUMBER_PHRASES)."""
    found = typed_whole_numbers(_prose(src.read_text()))
    assert not found, f"{len(found)} whole numbers typed into the prose (glue them): {found[:25]}"


def test_whole_number_check_catches_results_and_spares_references():
    prose = "It took two hundred steps; nine of ten matched.\n"
    found = typed_whole_numbers(prose)
    assert [f for f in found if "two hundred" in f] and [f for f in found if "ten matched" in f]
    spared = "As in chapter 3, at layer 15 (Bricken et al. 2023), over the seven categories.\n"
    assert typed_whole_numbers(spared + "1. a list item\n- a 135M-parameter model\n") == []


def test_library_is_clean_for_ruff():
    """Undefined names, unused imports and unsorted imports in the library fail here (ruff check,
    settings in pyproject.toml); `ruff format` keeps the layout."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "interp_lib"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


def test_glue_key_regexes():
    text = "a {glue:text}`l0:.1f` b {glue}`fve` c {glue:text}`other.ipynb::k2:,`\n```{glue:figure} fig1\n```"
    assert _referenced_glue_keys(text) == {"l0", "fve", "k2", "fig1"}
    assert TYPED_NUMBER.findall(_prose("FVE was 0.97 and 12% dead, layer 12, 2024.")) == [
        "0.97",
        "12%",
    ]


# Widest line of a chapter's code (what a reader sees in a code cell, on the site and in Colab)
# and of the library's source.
CHAPTER_CODE_WIDTH = 88
LIBRARY_WIDTH = 100
_CODE_CELL = re.compile(r"^(`{3,}|~{3,})\{code-cell\}")
_CELL_OPTION = re.compile(r"^:[\w-]+:")


def _code_cell_lines(src: Path) -> list[list[tuple[str, str]]]:
    """A chapter's code cells, each as its ("file:line", line) pairs, cell options left out."""
    rel = src.relative_to(ROOT).as_posix()
    if src.suffix == ".ipynb":
        nb = json.loads(src.read_text(encoding="utf-8"))
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        return [
            [
                (f"{rel}:cell {i}:{n}", line)
                for n, line in enumerate("".join(c["source"]).splitlines(), 1)
            ]
            for i, c in enumerate(code, 1)
        ]
    cells, fence, body = [], None, []
    for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            m = _CODE_CELL.match(line)
            if m:
                fence, body = m.group(1), []
            continue
        if line.strip() and line.strip().strip(fence[0]) == "" and len(line.strip()) >= len(fence):
            cells.append(_without_options(body))
            fence = None
        else:
            body.append((f"{rel}:{n}", line))
    assert fence is None, f"{rel}: a code cell is never closed"
    return cells


def _without_options(body: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A MyST code cell's lines without its options (a `---` YAML block or `:key: value` lines)."""
    if body and body[0][1].strip() == "---":
        end = next(i for i in range(1, len(body)) if body[i][1].strip() == "---")
        return body[end + 1 :]
    i = 0
    while i < len(body) and _CELL_OPTION.match(body[i][1]):
        i += 1
    return body[i:]


def _too_long(lines: list[tuple[str, str]], width: int) -> str:
    """The failure message: how many lines are wider than `width`, and where (the first 30)."""
    shown = "\n".join(f"  {where}: {len(line)} characters" for where, line in lines[:30])
    more = f"\n  ... and {len(lines) - 30} more" if len(lines) > 30 else ""
    return f"{len(lines)} line(s) longer than {width} characters:\n{shown}{more}"


def test_code_cells_are_read_as_myst_nb_reads_them():
    """The line-width check below reads the chapters' code cells as myst-nb does."""
    for src in CHAPTERS:
        ours = ["\n".join(line for _, line in cell) for cell in _code_cell_lines(src)]
        theirs = [c.source for c in _code_cells(ci_book.read_as_myst_nb(src))]
        assert [c.strip() for c in ours] == [c.strip() for c in theirs], _chapter_id(src)


def test_chapter_code_lines_at_most_88_characters():
    wide = [
        (where, line)
        for src in CHAPTERS
        for cell in _code_cell_lines(src)
        for where, line in cell
        if len(line) > CHAPTER_CODE_WIDTH
    ]
    if wide:
        pytest.fail(_too_long(wide, CHAPTER_CODE_WIDTH), pytrace=False)


def test_library_lines_at_most_100_characters():
    wide = [
        (f"{path.relative_to(ROOT).as_posix()}:{n}", line)
        for path in sorted((ROOT / "interp_lib").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if len(line) > LIBRARY_WIDTH
    ]
    if wide:
        pytest.fail(_too_long(wide, LIBRARY_WIDTH), pytrace=False)


# ---------------------------------------------------------------------------------------------
# The built site

require_html = os.environ.get("INTERP_REQUIRE_BOOK_HTML") == "1"
book_html = pytest.mark.book_html


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").is_file():
        if require_html:
            pytest.fail(f"no built book at {HTML}")
        pytest.skip("book not built (make book)")
    return HTML


def _page(doc: str) -> Path:
    return HTML / f"{doc}.html"


def _read(doc: str) -> str:
    return _page(doc).read_text(encoding="utf-8")


@book_html
def test_every_toc_entry_was_built(site):
    missing = [d for d in DOCS if not _page(d).is_file()]
    assert not missing


CHAPTER_DOCS = [str(p.relative_to(ROOT).with_suffix("")) for p in CHAPTERS]


@book_html
@pytest.mark.parametrize("doc", CHAPTER_DOCS)
def test_chapter_page_is_clean(site, doc):
    html = _read(doc)
    soup = BeautifulSoup(html, "html.parser")
    assert not soup.select("div.output.traceback, div.output.error"), "a traceback is on the page"
    assert not soup.select("div.output.stderr"), (
        "stderr (a warning, a log line or a progress bar) is on the page"
    )
    outputs = "\n".join(o.get_text("\n") for o in soup.select("div.cell_output"))
    assert "Traceback (most recent call last)" not in outputs
    assert not re.search(r"\b\w*Warning\b[:(]", outputs), "a warning is printed in an output"
    assert "application/vnd.jupyter.widget" not in html, "a widget (e.g. a tqdm bar) was saved"
    assert "require.min.js" not in html and "require.js" not in html, (
        "require.js hides window.Plotly"
    )
    assert "cdn.plot.ly" not in html


@book_html
@pytest.mark.parametrize("doc", DOCS)
def test_page_loads_nothing_remote(site, doc):
    soup = BeautifulSoup(_read(doc), "html.parser")
    remote = [
        s["src"] for s in soup.find_all("script", src=True) if re.match(r"(https?:)?//", s["src"])
    ]
    remote += [
        x["href"]
        for x in soup.find_all("link", href=True)
        if "stylesheet" in (x.get("rel") or []) and re.match(r"(https?:)?//", x["href"])
    ]
    assert not remote, f"the page needs the network: {remote}"


@book_html
@pytest.mark.parametrize("doc", DOCS)
def test_plotly_js_once_per_page_with_figures(site, doc):
    html = _read(doc)
    n_figs = html.count('class="plotly-graph-div')
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]*plotly[^"]*)"', html)
    if n_figs:
        assert len(scripts) == 1, f"{n_figs} figure(s) but {len(scripts)} plotly.js script(s)"
        path = (_page(doc).parent / scripts[0].split("?")[0]).resolve()
        assert path.is_file() and path.name == f"plotly-{plotly.__version__}.min.js"
        assert "Plotly.newPlot" in html
    else:
        assert not scripts, "plotly.js loaded on a page without figures"
    # plotly.js itself (several MB) is never inlined
    assert len(html) < 2_000_000 or "plotly.js v" not in html


@book_html
@pytest.mark.parametrize("doc", DOCS)
def test_no_markdown_table_shown_as_raw_pipes(site, doc):
    """A Markdown table printed by a cell (not rendered) shows on the page as pipes and dashes."""
    soup = BeautifulSoup(_read(doc), "html.parser")
    for code in soup.select("div.cell_input"):  # a cell's code may hold a table on purpose
        code.decompose()
    text = soup.get_text()
    rows = [line for line in text.splitlines() if re.search(r"\|\s*:?-{3,}:?\s*\|", line)]
    assert not rows, f"raw Markdown table on the page: {rows[:3]}"


@book_html
def test_some_chapter_has_a_figure_and_glued_numbers(site):
    pages = [_read(d) for d in CHAPTER_DOCS]
    assert any('class="plotly-graph-div' in p for p in pages)
    assert all(
        "pasted-text" in p or "{glue" not in (ROOT / f"{d}.md").read_text()
        for d, p in zip(CHAPTER_DOCS, pages)
        if (ROOT / f"{d}.md").is_file()
    )


@book_html
@pytest.mark.parametrize("doc", CHAPTER_DOCS)
def test_launch_buttons_on_chapters(site, doc):
    html = _read(doc)
    repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    assert f"https://mybinder.org/v2/gh/{repo}/{CONFIG['repository']['branch']}" in html
    assert "/./" not in re.sub(
        r"https?://", "", " ".join(re.findall(r'href="(https://mybinder[^"]*)"', html))
    )
