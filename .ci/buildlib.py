"""What .ci/book.py and .ci/publish.py share: the repository's layout, the chapters that _toc.yml
lists, and bringing up the loopback interface of a network namespace of one's own.

Both scripts import it plainly (`import buildlib`): a script's own folder is on sys.path when it
runs as `python .ci/book.py`; the tests put .ci/ on sys.path themselves.

Only the standard library is imported at the top: publish.py's `launch-check`, `serve` and `lint`
run on the bare interpreter, before or outside the project's .venv. Listing the chapters needs
PyYAML and myst-nb, which only .venv has (they are imported where they are used).
"""

from __future__ import annotations

import fcntl
import socket
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
HTML = BUILD / "html"


def load_yaml(path: Path) -> object:
    """A YAML file of the repository, parsed."""
    import yaml  # .venv only (see the module docstring)

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def toc_files(toc: dict | None = None) -> list[str]:
    """Every `file:` of _toc.yml (without suffix), in reading order, root first."""
    toc = load_yaml(ROOT / "_toc.yml") if toc is None else toc
    out = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return out


def source_of(docname: str) -> Path | None:
    """The source file (.md or .ipynb) of a _toc.yml entry, or None when there is none."""
    for suffix in (".md", ".ipynb"):
        path = ROOT / f"{docname}{suffix}"
        if path.is_file():
            return path
    return None


def is_notebook(path: Path) -> bool:
    """Whether a page is executable: an .ipynb, or a MyST Markdown notebook (as myst-nb decides)."""
    if path.suffix == ".ipynb":
        return True
    from myst_nb.core.read import is_myst_markdown_notebook  # .venv only (see the module docstring)

    return is_myst_markdown_notebook(path.read_text(encoding="utf-8"))


def chapters() -> list[Path]:
    """Sources of the executable pages listed in _toc.yml (MyST notebooks and .ipynb)."""
    out = []
    for doc in toc_files():
        src = source_of(doc)
        if src is None:
            raise SystemExit(f"_toc.yml lists {doc!r} but neither {doc}.md nor {doc}.ipynb exists")
        if is_notebook(src):
            out.append(src)
    return out


def loopback_up() -> None:
    """Bring `lo` up (a new network namespace starts with it down), with the standard library."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


def network_is_cut(host: str, who: str) -> bool:
    """(inside `unshare -n`) Bring `lo` up, then check that ``host`` does not answer; if it does,
    say so on stderr as ``who``."""
    loopback_up()
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError:
        return True
    print(f"{who}: the network is NOT cut ({host} answered)", file=sys.stderr)
    return False
