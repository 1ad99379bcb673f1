"""Sphinx extension of the book (loaded from _config.yml, `sphinx: local_extensions`).

* Marks the process as a book build before any chapter kernel starts (kernels inherit the
  environment): ``INTERP_BOOK_BUILD=1`` makes `interp_lib.site.plots.setup()` emit figures for the
  static site, ``TQDM_DISABLE=1`` keeps progress bars out of the pages.
* Serves plotly.js from the site itself: copies ``plotly.min.js`` out of the installed plotly
  package (so its version always matches the figures) to ``_static/plotly-<version>.min.js``
  and adds one ``<script>`` for it to each page that contains a Plotly figure, and to no other.
* Drops the duplicate inline script that sphinx-thebe adds to every page (a console error).
* Points the Colab and Binder launch buttons of a chapter at its generated notebook,
  notebooks/<path under book/>.ipynb (made by .ci/publish.py, committed: Colab opens only .ipynb
  files that exist in the repository). The theme builds both links from _config.yml's
  `repository` (url, branch) and the page's own source (book/x.md); only the path is changed,
  and only when that notebook exists (otherwise Binder keeps the .md and Colab is dropped).
* Adds the feature pages (`interp_lib.site.feature_pages`): at the end of the HTML build, when every
  chapter page is written, it scans them for links to ``features/<slug>/<n>.html`` and renders a
  page for each linked feature plus the top features of every shipped SAE, an index per SAE and
  ``features/index.html``, all in the site's theme (Sphinx's ``html-collect-pages``; plotly.js is
  added to them as to chapter pages). Their data is cached under ``interp_lib.cache_dir()``.
  With them come the dashboards of every feature of every shipped SAE
  (`interp_lib.site.dashboards`): sharded data files, a page at every feature's stable address
  that has no full page, and the viewer and search pages (``features/dashboard.html``,
  ``features/search.html``) in the site's theme.
  A link to a feature page that cannot exist is a warning (so -W fails the build).
  ``INTERP_FEATURE_PAGES=0`` skips them.
* Adds the live pages, ``lens.html`` and ``steer.html``, at the site's root
  (`interp_lib.site.live_site`: the model runs in the reader's browser). They need the npm packages of
  package.json (node_modules, ``npm ci``); without them the rest of the site is built and one line
  says so. The model's ONNX export is made once and cached (`interp_lib.site.browser_model`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

PLOTLY_DIV_MARK = "plotly-graph-div"


def plotly_js() -> tuple[Path, str]:
    """(path of the installed plotly.min.js, the file name the site serves it under)."""
    import plotly

    src = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not src.is_file():  # pragma: no cover - a broken plotly install
        raise FileNotFoundError(f"plotly.min.js not found in the plotly package: {src}")
    return src, f"plotly-{plotly.__version__}.min.js"


def _copy_plotly(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    src, name = plotly_js()
    dest = Path(app.outdir) / "_static" / name
    if not dest.exists() or dest.stat().st_size != src.stat().st_size:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


NOTEBOOKS_DIR = "notebooks"
_INTERFACE_PREFIX = {"classic": "tree", "jupyterlab": "lab/tree"}


def notebook_for_page(pagename: str) -> str:
    """Repository path of the notebook generated for a page ("book/x" -> "notebooks/x.ipynb").
    The same rule as `notebook_rel` in .ci/publish.py (tests/test_publish.py checks both)."""
    parts = pagename.split("/")
    if parts[0] == "book":
        parts = parts[1:]
    return "/".join([NOTEBOOKS_DIR, *parts]) + ".ipynb"


def retarget_launch_buttons(header_buttons, notebook: str | None, launch: dict, branch: str) -> None:
    """Rewrite the Binder and Colab links of the theme's launch group to open `notebook`
    (a repository-relative path) on `branch`, or, when there is none, drop Colab (it cannot
    open .md files)."""
    colab = (launch.get("colab_url") or "").rstrip("/")
    binder = (launch.get("binderhub_url") or "").rstrip("/")
    ui = _INTERFACE_PREFIX.get(launch.get("notebook_interface", "classic"), "tree")
    for group in header_buttons or []:
        if group.get("label") != "launch-buttons":
            continue
        kept = []
        for button in group.get("buttons", []):
            url = button.get("url") or ""
            if colab and url.startswith(colab + "/github/"):
                if notebook is None:
                    continue
                head, _, _ = url.partition("/blob/")
                button["url"] = f"{head}/blob/{branch}/{notebook}"
            elif binder and url.startswith(binder + "/") and notebook is not None:
                button["url"] = f"{url.partition('?urlpath=')[0]}?urlpath={ui}/{notebook}"
            kept.append(button)
        group["buttons"] = kept


def _launch_buttons(app, pagename, context):
    launch = (app.config.html_theme_options or {}).get("launch_buttons") or {}
    if not launch or not context.get("header_buttons"):
        return
    opts = app.config.html_theme_options
    book_root = Path(app.srcdir)
    # path_to_book: where the book lies inside the repository; notebooks/ is at the repository root.
    rel = str(opts.get("path_to_docs") or "").strip("/")
    repo_root = book_root.parents[len(Path(rel).parts) - 1] if rel else book_root
    notebook = notebook_for_page(pagename)
    retarget_launch_buttons(context["header_buttons"], notebook if (repo_root / notebook).is_file() else None,
                            launch, opts.get("repository_branch") or "master")  # the theme's own default


def _page_context(app, pagename, templatename, context, doctree):
    body = context.get("body") or ""
    if PLOTLY_DIV_MARK in body:
        _, name = plotly_js()
        # Called inside html-page-context, add_js_file applies to this page only. No defer/async:
        # the inline Plotly.newPlot scripts in the body need window.Plotly when they run.
        app.add_js_file(name, priority=200)
    # sphinx-thebe (always loaded by Jupyter Book) registers its inline config script twice
    # (once with filename None, once with ""), and the second `const THEBE_JS_URL` is a
    # SyntaxError in every page's console. Keep the first of identical scripts.
    seen, scripts = set(), []
    for js in context.get("script_files") or []:
        key = (getattr(js, "filename", js) or "", getattr(js, "priority", 0),
               tuple(sorted((getattr(js, "attributes", None) or {}).items())))
        if key not in seen:
            seen.add(key)
            scripts.append(js)
    context["script_files"] = scripts
    _launch_buttons(app, pagename, context)


def _feature_pages(app):
    """html-collect-pages: the feature pages, as (pagename, context, template) for the theme's page.html."""
    if app.builder.format != "html":
        return []
    from interp_lib.site import feature_pages

    if os.environ.get(feature_pages.ENV_DISABLE, "1").strip().lower() in ("0", "false", "no"):
        return []
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    outdir = Path(app.outdir)
    # Pages of features that nothing links to any more must not linger from an earlier build.
    shutil.rmtree(outdir / feature_pages.FEATURES_DIR, ignore_errors=True)
    pages, problems = feature_pages.site_pages(outdir, log=logger.info)
    for problem in problems:
        logger.warning(f"dead link to a feature page: {problem}")
    return [(page.pagename, {"title": page.title, "body": page.body}, "page.html") for page in pages]


def _live_pages(app, exception):
    """build-finished: lens.html and steer.html at the site's root, or one line saying why not."""
    if exception is not None or app.builder.format != "html":
        return
    from sphinx.util import logging

    from interp_lib.site import live_site

    logger = logging.getLogger(__name__)
    node_modules = Path(app.srcdir) / "node_modules"
    missing = live_site.missing_vendor_files(node_modules)
    if missing:
        logger.info(f"live pages (lens.html, steer.html) left out: they need node and the npm "
                    f"packages of package.json (npm ci, make env); missing {missing[0]}")
        return
    logger.info("live pages: the model's browser export (made once, about 3 min), SAE files")
    live_site.write_live_site(Path(app.outdir), node_modules)


VERDICT_SEP = "+++"
OUTCOMES = ("holds", "does not hold", "not settled")


def verdict_branch(value: str, n_branches: int) -> int:
    """Which branch (0-based) a glued outcome selects, from its ``text/plain`` repr."""
    v = value.strip().strip("'\"")
    index = {"True": 0, "False": 1}.get(v, OUTCOMES.index(v) if v in OUTCOMES else None)
    if index is None:
        raise ValueError(f"glued value {value!r} is not an outcome ({', '.join(OUTCOMES)}) "
                         "nor a bool")
    if n_branches not in (2, 3):
        raise ValueError(f"a verdict has 2 or 3 branches separated by {VERDICT_SEP!r}, got "
                         f"{n_branches}")
    return min(index, n_branches - 1)


_FENCE = re.compile(r"^\s*(`{3,}|:{3,})(.*)$")


def split_branches(lines: list[str]) -> list[list[str]]:
    """The directive's content cut at the lines that hold only ``+++``, outside any fenced block
    nested in it (a verdict inside a branch keeps its own separators)."""
    out: list[list[str]] = [[]]
    open_fences: list[str] = []
    for line in lines:
        m = _FENCE.match(line)
        if m and open_fences and m.group(1) == open_fences[-1] and not m.group(2).strip():
            open_fences.pop()
        elif m and m.group(2).strip():
            open_fences.append(m.group(1))
        if line.strip() == VERDICT_SEP and not open_fences:
            out.append([])
        else:
            out[-1].append(line)
    return out


_VERDICT_OPEN = re.compile(r"^([ \t]*(?:[-*+][ \t]+|\d+[.)][ \t]+)?)(`{3,}|:{3,})\{verdict\}[ \t]+(\S+)[ \t]*$")


def verdict_blocks(lines: list[str]) -> list[tuple[int, int, str, str, list[str]]]:
    """The outermost verdict blocks of Markdown ``lines``: (first line, line after the closing
    fence, the prefix before the fence (indentation, a list marker), key, content dedented). A
    block may sit in a list item; nested blocks stay in their parent's content."""
    out, i = [], 0
    while i < len(lines):
        m = _VERDICT_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        prefix, fence, key = m.groups()
        j = i + 1
        while j < len(lines):
            t = lines[j].strip()
            if t and set(t) == {fence[0]} and len(t) >= len(fence):
                break
            j += 1
        body = [ln[len(prefix):] if ln[: len(prefix)].strip() == "" else ln.lstrip()
                for ln in lines[i + 1 : j]]
        out.append((i, j + 1, prefix, key, body))
        i = j + 1
    return out


def verdict_branches_text(text: str) -> str:
    """``text`` with every verdict block (nested ones too) replaced by the text of all its
    branches: the prose a reader may see, for checks."""
    lines = text.splitlines()
    for start, end, prefix, _key, body in reversed(verdict_blocks(lines)):
        inner = verdict_branches_text("\n".join(ln for ln in body if ln.strip() != VERDICT_SEP))
        lines[start:end] = [prefix + inner.replace("\n", "\n" + " " * len(prefix))]
    return "\n".join(lines)


def verdict_as_markdown(text: str) -> str:
    """A Markdown cell's verdict blocks written out for a notebook, which has no build to pick a
    branch: every branch, labelled with the finding (glue key) and the outcome that selects it;
    a nested verdict is written out inside its parent's branch."""
    lines = text.splitlines()
    for start, end, prefix, key, body in reversed(verdict_blocks(lines)):
        branches = split_branches(body)
        labels = OUTCOMES if len(branches) == 3 else ("holds", "does not hold")
        flat = [" ".join(ln.strip() for ln in verdict_as_markdown("\n".join(b)).splitlines()
                         if ln.strip()) for b in branches]
        pad = " " * len(prefix)
        said = [f"**If `{key}` {label}:** {words}" for label, words in zip(labels, flat)]
        lines[start:end] = [prefix + said[0]] + [part for s in said[1:] for part in ("", pad + s)]
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _verdict_directive():
    from docutils import nodes
    from docutils.parsers.rst import Directive
    from docutils.statemachine import StringList
    from myst_nb.core.variables import RetrievalError
    from myst_nb.ext.glue.utils import retrieve_glue_data

    class VerdictDirective(Directive):
        """The branch of a concluding sentence that a glued finding selects."""

        required_arguments = 1
        has_content = True

        def run(self):
            key = self.arguments[0]
            branches = split_branches(list(self.content))
            document = self.state.document
            try:
                data = retrieve_glue_data(document, key)
                plain = data.data.get("text/plain", "")
                chosen = branches[verdict_branch(plain, len(branches))]
            except (RetrievalError, ValueError) as e:
                return [document.reporter.warning(f"verdict {key!r}: {e}", line=self.lineno)]
            container = nodes.container(classes=["verdict"])
            self.state.nested_parse(StringList(chosen, parent=self.content.parent,
                                               parent_offset=self.content_offset),
                                    self.content_offset, container)
            return container.children

    return VerdictDirective


def setup(app):
    app.add_directive("verdict", _verdict_directive())
    os.environ.setdefault("INTERP_BOOK_BUILD", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    app.connect("html-page-context", _page_context, priority=900)  # after other extensions
    app.connect("build-finished", _copy_plotly)
    app.connect("build-finished", _live_pages)
    app.connect("html-collect-pages", _feature_pages)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
