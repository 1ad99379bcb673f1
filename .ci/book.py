#!/usr/bin/env python3
"""The book's build machinery: each chapter runs once per `make test`, through nbmake.

    python .ci/book.py chapters            # list the chapters (MyST notebooks in _toc.yml)
    python .ci/book.py notebooks           # jupytext: book/x.md -> .nbmake/book/x.ipynb
    python .ci/book.py nbmake              # pytest --nbmake --overwrite on those notebooks
    python .ci/book.py cache               # executed notebooks -> myst-nb's jupyter-cache
    python .ci/book.py build [--expect-cached]   # jupyter-book build -W, log in _build/logs/

How a chapter is executed only once in `make test`:
1. `notebooks` writes each chapter as an .ipynb under .nbmake/, at the same relative
   path as its .md, and links the other entries of the chapter's folder and of the repository
   root next to it, so that relative paths resolve as they do when the book builds (the
   working directory of a chapter is its own folder, book/).
2. `nbmake` runs them (`pytest --nbmake --overwrite`), leaving the outputs in the .ipynb files.
3. `cache` stores those outputs in the jupyter-cache that myst-nb uses (execute_notebooks:
   cache). It keys a notebook on its code cells' sources and metadata and its kernelspec, so
   the notebook stored is myst-nb's own reading of the .md, with the outputs of the nbmake run
   copied in cell by cell; a chapter whose code cells don't line up is refused, not cached.
4. `build --expect-cached` builds the site and fails if any chapter was executed again.

The cache also remembers a fingerprint of the library (interp_lib's files) and of the profile
(INTERP_PROFILE): when either changes, `build` empties the cache, since cached outputs would no
longer be what the code gives.

The chapter list (_toc.yml) and the loopback set-up come from .ci/buildlib.py, shared with
.ci/publish.py.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import jupytext
import nbformat
from buildlib import BUILD, HTML, ROOT, chapters, load_yaml, loopback_up
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from myst_nb.core.read import read_myst_markdown_notebook
from myst_parser.config.main import MdParserConfig

from interp_lib.files import atomic_dir

# nbmake refuses any notebook with "_build" in its path, so the executed copies live here.
NOTEBOOKS = ROOT / ".nbmake"
CACHE = BUILD / ".jupyter_cache"
LOGS = BUILD / "logs"
FINGERPRINT = BUILD / ".library-fingerprint"
# Where jupyter-book builds (its html/, doctrees, jupyter_execute/) before the site is swapped in.
STAGING = BUILD / ".staging"
# Environment a chapter runs under in every build (nbmake's and the book's).
BUILD_ENV = {"INTERP_BOOK_BUILD": "1", "TQDM_DISABLE": "1"}


def notebook_for(src: Path) -> Path:
    """Where `notebooks` writes the .ipynb that nbmake runs for chapter `src`."""
    return NOTEBOOKS / src.relative_to(ROOT).with_suffix(".ipynb")


# Never linked next to the notebooks: the build itself, and what pytest would pick up as its own
# configuration or as tests when it runs the notebooks.
_NO_LINK_ROOT = {"_build", ".git", ".venv", "tests", ".pytest_cache", ".ci", ".nbmake"}
_NO_LINK = {"_build", "conftest.py", "pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini",
            ".pytest_cache"}


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        return
    link.symlink_to(os.path.relpath(target, link.parent))


def cmd_notebooks(args) -> int:
    srcs = chapters()
    chapter_set = set(srcs)
    if NOTEBOOKS.exists():
        shutil.rmtree(NOTEBOOKS)
    NOTEBOOKS.mkdir(parents=True)
    parents = {s.parent for s in srcs}
    for entry in ROOT.iterdir():  # "../data" from a chapter's folder resolves as in the repository
        if entry.is_dir() and entry not in parents and entry.name not in _NO_LINK_ROOT:
            _link(entry, NOTEBOOKS / entry.name)
    for src in srcs:
        dest = notebook_for(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for sibling in src.parent.iterdir():  # data and images next to the chapter
            if (sibling in chapter_set or sibling.suffix in (".md", ".ipynb")
                    or sibling.name in _NO_LINK):
                continue
            _link(sibling, dest.parent / sibling.name)
        nb = jupytext.read(src)
        nb.metadata.pop("jupytext", None)
        jupytext.write(nb, dest, fmt="ipynb")
        print(f"notebook: {src.relative_to(ROOT)} -> {dest.relative_to(ROOT)}")
    # The library these notebooks are about to run with (see `cache`).
    (NOTEBOOKS / ".library-fingerprint").write_text(library_fingerprint())
    return 0


def cmd_nbmake(args) -> int:
    """Run every chapter notebook once with nbmake, keeping the outputs (--overwrite)."""
    nbs = [notebook_for(src) for src in chapters()]
    missing = [str(nb.relative_to(ROOT)) for nb in nbs if not nb.is_file()]
    if missing:
        print(f"nbmake: run `book.py notebooks` first; missing {missing}", file=sys.stderr)
        return 1
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
           f"--nbmake-timeout={args.timeout}", "--overwrite",
           *[str(nb.relative_to(ROOT)) for nb in nbs]]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, **BUILD_ENV}).returncode


# Environment variables that change what the chapters compute (the model profile).
FINGERPRINT_ENV = ("INTERP_PROFILE",)


def library_fingerprint() -> str:
    """Hash of the library's files and of the profile: cached chapter outputs are valid for one
    library and one profile only (jupyter-cache itself keys on the chapter's code alone)."""
    h = hashlib.sha256()
    for name in FINGERPRINT_ENV:
        h.update(f"{name}={os.environ.get(name, '')}\n".encode())
    for path in sorted((ROOT / "interp_lib").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    for name in ("pyproject.toml",):
        if (ROOT / name).is_file():
            h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def cache_is_stale(fingerprint: str) -> bool:
    """Whether the jupyter-cache holds outputs made with another library or profile."""
    return CACHE.exists() and (not FINGERPRINT.is_file() or FINGERPRINT.read_text() != fingerprint)


def read_as_myst_nb(src: Path) -> nbformat.NotebookNode:
    """The notebook exactly as myst-nb reads the chapter during the build."""
    if src.suffix == ".ipynb":
        return nbformat.reads(src.read_text(encoding="utf-8"), as_version=4)
    parse = load_yaml(ROOT / "_config.yml").get("parse", {}) or {}
    config = MdParserConfig(enable_extensions=set(parse.get("myst_enable_extensions", []) or []))
    return read_myst_markdown_notebook(src.read_text(encoding="utf-8"), config=config,
                                       add_source_map=True, path=str(src))


def _seconds(cell) -> float:
    meta = cell.get("metadata", {}).get("execution", {})
    try:
        start = datetime.fromisoformat(meta["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(meta["shell.execute_reply"].replace("Z", "+00:00"))
        return max(0.0, (end - start).total_seconds())
    except (KeyError, ValueError):
        return 0.0


def cmd_cache(args) -> int:
    ran_with = NOTEBOOKS / ".library-fingerprint"
    ran_with = ran_with.read_text() if ran_with.is_file() else "unknown"
    if cache_is_stale(ran_with):
        shutil.rmtree(CACHE)  # entries made with another library are not to be reused
    cache = get_cache(str(CACHE))
    failed = 0
    for src in chapters():
        rel = src.relative_to(ROOT)
        executed_path = notebook_for(src)
        if not executed_path.is_file():
            print(f"cache: {rel}: no executed notebook at {executed_path.relative_to(ROOT)}",
                  file=sys.stderr)
            failed += 1
            continue
        executed = nbformat.read(executed_path, as_version=4)
        nb = read_as_myst_nb(src)
        code = [c for c in nb.cells if c.cell_type == "code"]
        done = [c for c in executed.cells if c.cell_type == "code"]
        problem = None
        if len(code) != len(done):
            problem = f"{len(code)} code cells in the .md, {len(done)} in the executed notebook"
        elif any(a.source.strip() != b.source.strip() for a, b in zip(code, done)):
            problem = "code cell sources differ between jupytext and myst-nb"
        elif any(b.get("execution_count") is None for b in done):
            problem = "not every code cell was executed (did nbmake run it?)"
        elif any(o.get("output_type") == "error" for b in done for o in b.get("outputs", [])):
            problem = "the executed notebook contains an error"
        if problem:
            print(f"cache: {rel}: not cached: {problem}", file=sys.stderr)
            failed += 1
            continue
        for a, b in zip(code, done):
            a.outputs = b.outputs
            a.execution_count = b.execution_count
        if "language_info" in executed.metadata:
            nb.metadata["language_info"] = executed.metadata["language_info"]
        seconds = sum(_seconds(c) for c in done)
        record = cache.cache_notebook_bundle(
            CacheBundleIn(nb, str(src),
                          data={"execution_seconds": seconds, "executed_by": "nbmake"}),
            check_validity=False,
            overwrite=True,
        )
        assert cache.match_cache_notebook(nb).pk == record.pk
        print(f"cache: {rel}: cached as ID={record.pk} ({seconds:.1f} s of execution)")
    # Outputs are valid for the library the notebooks ran with, recorded before nbmake started
    # (a library edited during the run makes the next `build` run every chapter again).
    FINGERPRINT.parent.mkdir(parents=True, exist_ok=True)
    FINGERPRINT.write_text(ran_with)
    return 1 if failed else 0


# Lines of the build log worth showing on the console; everything is kept in the log file.
_SHOW = re.compile(
    r"\[mystnb\]|WARNING|ERROR|Error|Traceback|build (finished|succeeded)|non-zero exit")
_HIDE = re.compile(r"\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption")


def cmd_build(args) -> int:
    fingerprint = library_fingerprint()
    if cache_is_stale(fingerprint):
        if args.expect_cached:
            print("build: the library or INTERP_PROFILE changed since the chapters were cached",
                  file=sys.stderr)
            return 1
        print("build: interp_lib or INTERP_PROFILE changed since the cached executions: "
              "every chapter runs again")
        shutil.rmtree(CACHE)
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / "book.log"
    env = {**os.environ, **BUILD_ENV}
    # jupyter-book writes into STAGING; the finished site then takes the place of _build/html in
    # one rename (interp_lib.files.atomic_dir), so a build that fails or is killed leaves the
    # previous site (or none) there, never a half-written one.
    shutil.rmtree(STAGING / "_build" / "html", ignore_errors=True)
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", "-W", "--keep-going",
           "--all", "--path-output", str(STAGING), str(ROOT)]
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        executed, cached = [], []
        for line in proc.stdout:
            log.write(line)
            plain = re.sub(r"\x1b\[[0-9;]*m", "", line.rstrip())
            if "Executing notebook" in plain:
                executed.append(plain.split(":")[0])
            if "Using cached notebook" in plain:
                cached.append(plain.split(":")[0])
            if _SHOW.search(plain) and not _HIDE.search(plain):
                print(plain)
        rc = proc.wait()
    dt = time.time() - t0
    FINGERPRINT.parent.mkdir(parents=True, exist_ok=True)
    FINGERPRINT.write_text(fingerprint)
    print(f"build: {len(executed)} chapter(s) executed, {len(cached)} from the cache, {dt:.1f} s; "
          f"log: {log_path.relative_to(ROOT)}")
    if rc != 0:
        print(f"build: FAILED (jupyter-book exit {rc}); {HTML.relative_to(ROOT)} left as it was",
              file=sys.stderr)
        return rc
    if args.expect_cached and executed:
        print(f"build: FAILED: chapters executed a second time: {executed}", file=sys.stderr)
        return 1
    with atomic_dir(HTML) as tmp:
        os.rename(STAGING / "_build" / "html", tmp)
    print(f"build: site in {HTML.relative_to(ROOT)}/index.html")
    return 0


def ensure_loopback() -> None:
    """Jupyter kernels talk to the builder over 127.0.0.1; a fresh `unshare -n` namespace starts
    with `lo` down (no network at all, not even loopback), so bring it up there. Nothing outside
    is reachable."""
    try:
        with socket.create_server(("127.0.0.1", 0)) as server:
            socket.create_connection(server.getsockname(), timeout=2).close()
            return
    except OSError:
        pass
    try:
        loopback_up()
    except OSError as err:
        print(f"book: the loopback interface is down and cannot be brought up ({err}); "
              "kernels will not start", file=sys.stderr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("chapters", help="list the chapters")
    c.add_argument("--ipynb", action="store_true", help="list the notebooks nbmake runs instead")
    sub.add_parser("notebooks", help="write the chapters as .ipynb for nbmake")
    sub.add_parser("cache", help="put the executed notebooks into myst-nb's cache")
    n = sub.add_parser("nbmake",
                       help="run the chapter notebooks with nbmake (pytest --nbmake --overwrite)")
    n.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    b = sub.add_parser("build", help="build the site")
    b.add_argument("--expect-cached", action="store_true", help="fail if any chapter executes")
    args = p.parse_args(argv)
    if args.cmd in ("nbmake", "build"):
        ensure_loopback()
    if args.cmd == "chapters":
        for src in chapters():
            print((notebook_for(src) if args.ipynb else src).relative_to(ROOT))
        return 0
    commands = {"notebooks": cmd_notebooks, "nbmake": cmd_nbmake, "cache": cmd_cache,
                "build": cmd_build}
    return commands[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
