"""The library's own errors, and how the command line shows them.

Every file or argument a reader hands the library that it cannot use ends in one of these, with a
message that names the file (or argument), says what is wrong and what to do. Each subclasses the
built-in a caller would already catch, so ``except ValueError`` / ``except FileNotFoundError``
keep working:

* :class:`DamagedFileError` (``ValueError``): a file is truncated, malformed or does not match
  what it should hold (an SAE's ``cfg.json`` against its weights, say). Carries ``path``.
* :class:`MissingFileError` (``FileNotFoundError``): a file the library needs is not there.
* :class:`InvalidArgumentError` (``ValueError``): an argument out of range, unknown, or not
  matching what it goes with (an SAE's width against the model's hooks).
* :class:`HubUnavailableError` (``ConnectionError``): the Hugging Face hub cannot be reached and
  its local cache lacks what was asked for.

All four derive from :class:`InterpLibError`. :func:`cli_errors` is the command line's boundary:
inside it these errors exit with status 2 and one ``prog: error: ...`` line, as argparse does,
while any other exception keeps its traceback (it is a bug, not a reader's mistake).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = [
    "InterpLibError",
    "DamagedFileError",
    "MissingFileError",
    "InvalidArgumentError",
    "HubUnavailableError",
    "cli_errors",
]


class InterpLibError(Exception):
    """Base of the library's own errors: a reader's file, argument or set-up it cannot use."""


class _FileProblem:
    """What the two file errors share: the path, what is wrong with it, and what to do."""

    def __init__(self, path: str | os.PathLike, problem: str, remedy: str):
        self.path = Path(path)
        self.problem = problem
        self.remedy = remedy
        super().__init__(f"{self.path}: {problem}. {remedy}")

    def __reduce__(self):
        return type(self), (self.path, self.problem, self.remedy)


class DamagedFileError(_FileProblem, InterpLibError, ValueError):
    """A file is truncated, malformed or does not match what it should hold."""


class MissingFileError(_FileProblem, InterpLibError, FileNotFoundError):
    """A file the library needs is not there."""


class InvalidArgumentError(InterpLibError, ValueError):
    """An argument out of range, unknown, or not matching what it goes with."""


class HubUnavailableError(InterpLibError, ConnectionError):
    """The Hugging Face hub cannot be reached and the model is not in the local hub cache."""


@contextmanager
def cli_errors(parser: argparse.ArgumentParser) -> Iterator[None]:
    """Run a command's body: the library's own errors exit 2 with one line, SIGTERM and Ctrl-C
    stop it cleanly (temporary files removed, no traceback); other errors keep their traceback."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    except InterpLibError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted; no output was left half-written\n")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like an exception, so that temporary files are removed."""
    print("interp_lib: terminated; no output was left half-written", file=sys.stderr)
    raise SystemExit(128 + signum)
