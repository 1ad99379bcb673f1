"""Files the library writes and reads: written atomically, checked when read.

* :func:`atomic_file` and :func:`atomic_dir`: write into a temporary file or folder beside the
  target, then rename it into place. Whatever stops the writer (Ctrl-C, SIGTERM, SIGKILL, a full
  disk), a reader and the next run see the old output or the new one, complete, never a
  half-written one. Two processes writing the same output each rename a complete one into place
  (the last one wins). Temporaries left behind by a killed process are removed by the next write
  of the same output.
* :func:`write_text_atomic`: a text file (a JSON record) written that way.
* :func:`read_json`: a JSON file whose damage is reported as
  :class:`~interp_lib.errors.DamagedFileError` naming it (and its absence as
  :class:`~interp_lib.errors.MissingFileError`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from interp_lib.errors import DamagedFileError, InvalidArgumentError, MissingFileError

__all__ = ["atomic_file", "atomic_dir", "write_text_atomic", "read_json"]

_TEMP, _OLD = ".tmp-", ".old-"


def _temp_path(target: Path, tag: str, *, keep_suffix: bool = False) -> Path:
    """A unique hidden name beside ``target`` that records its owner (host and process id)."""
    owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    return target.with_name(f".{target.name}{tag}{owner}{target.suffix if keep_suffix else ''}")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _sweep_stale(target: Path) -> None:
    """Remove the temporaries of ``target`` left by processes of this machine that have died."""
    host = socket.gethostname()
    pattern = re.compile(
        rf"^\.{re.escape(target.name)}(?:{re.escape(_TEMP)}|{re.escape(_OLD)})"
        r"(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}"
    )
    if not target.parent.is_dir():
        return
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if not match or match["host"] != host or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a written file to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (main thread only) until the block ends, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is not None:  # None: installed outside Python, cannot be restored
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one rename."""
    target = Path(os.path.abspath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target)
    tmp = _temp_path(target, _TEMP, keep_suffix=True)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; on success it takes the place of ``path``
    (``replace=False``: unless another folder is there by then, which is kept)."""
    target = Path(os.path.abspath(path))
    if target.is_file():  # one stat: another writer may swap the folder between two
        raise InvalidArgumentError(f"{target} is a file, not a folder: choose another output path")
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target)
    tmp = _temp_path(target, _TEMP)
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync(file)
        _swap_dir(tmp, target, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_dir(tmp: Path, target: Path, replace: bool) -> None:
    """Rename folder ``tmp`` to ``target``, moving an existing ``target`` aside and deleting it
    (``replace=False``: deleting ``tmp`` instead)."""
    for _ in range(100):
        try:
            os.rename(tmp, target)  # also replaces an empty folder
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        aside = _temp_path(target, _OLD)
        done = False
        try:
            with _signals_deferred():  # between the two renames the output is absent
                os.rename(target, aside)
                try:
                    os.rename(tmp, target)
                    done = True
                except OSError as exc:  # another writer got its folder in first: try again
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
        except FileNotFoundError:  # another writer moved target aside first: try again
            pass
        finally:
            shutil.rmtree(aside, ignore_errors=True)
        if done:
            return
    raise OSError(f"could not rename {tmp} to {target}: other processes keep replacing it")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`); returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_json(path: str | os.PathLike, remedy: str, *, expect: type = dict) -> Any:
    """The JSON value in ``path`` (of type ``expect``); damage or absence raises an error naming
    the file and ``remedy``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingFileError(p, "is missing", remedy) from None
    except UnicodeDecodeError as exc:
        raise DamagedFileError(p, f"is not UTF-8 text ({exc.reason})", remedy) from None
    except OSError as exc:
        raise DamagedFileError(p, f"cannot be read ({exc.strerror or exc})", remedy) from None
    if not text.strip():
        raise DamagedFileError(p, "is empty", remedy)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DamagedFileError(p, f"is not valid JSON ({exc})", remedy) from None
    if not isinstance(value, expect):
        raise DamagedFileError(
            p, f"holds a JSON {type(value).__name__} where a {expect.__name__} was expected", remedy
        )
    return value
