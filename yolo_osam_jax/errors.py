"""One exception family for errors the user can fix, and the one way scripts report them.

A `UserError` says what is wrong and where (a file, a line, a config field) in one line. The library
raises it; every script runs its `main` through `run_main`, which prints `error: <message>` on stderr and
exits non-zero without a traceback. `--debug` on the command line or YOLO_OSAM_DEBUG=1 in the environment
shows the traceback too. Any other exception is a bug or an unforeseen failure and keeps its traceback.

The subclasses also derive from the builtin type that callers caught before (ValueError,
FileNotFoundError, ...), so `except ValueError` around library calls keeps working.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Callable, Sequence

DEBUG_ENV = 'YOLO_OSAM_DEBUG'
DEBUG_FLAG = '--debug'
# Exit status of a user error (argparse uses 2 for bad usage too).
USER_ERROR_STATUS = 2


class UserError(Exception):
  """An error in what the user gave (a file, a flag, a config field): one line, naming the thing."""


class InputError(UserError, ValueError):
  """A value in a file, a flag or a config field is wrong."""


class MissingError(UserError, FileNotFoundError):
  """A file, folder or prepared dataset the user named does not exist."""

  def __str__(self) -> str:
    # FileNotFoundError(msg) prints msg; keep that even when errno-style arguments are given.
    return str(self.args[0]) if self.args else ''


class OutputError(UserError, OSError):
  """An output cannot be written (read-only folder, an existing file in the way, a full disk)."""

  def __str__(self) -> str:
    return str(self.args[0]) if self.args else ''


class RunExistsError(UserError):
  """A workdir already holds a run that a fresh run would replace."""


class LockedError(UserError):
  """Another process holds the lock of a workdir."""


def output_error(path: str | os.PathLike, error: OSError) -> OutputError:
  """An OSError raised while writing `path` as a one-line OutputError (a full disk is named as such)."""
  if error.errno == errno.ENOSPC:
    return OutputError(f'no space left on device while writing {os.fspath(path)}')
  reason = error.strerror or str(error)
  return OutputError(f'{os.fspath(path)}: cannot write ({reason})')


def check_output_dir(path: str | os.PathLike, what: str = 'output folder') -> str:
  """Creates folder `path` (and parents) or raises one OutputError line naming it and the reason."""
  path = os.fspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise OutputError(f'{path}: {what} is an existing file, not a folder')
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise output_error(path, e) from e
  if not os.access(path, os.W_OK | os.X_OK):
    raise OutputError(f'{path}: {what} is not writable')
  return path


def debug_requested(argv: Sequence[str]) -> bool:
  return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def run_main(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
  """Runs `main(argv)` (without `--debug`); a UserError, or a full disk, becomes `error: <message>`.

  Returns main's status, or USER_ERROR_STATUS after a user error. With --debug or YOLO_OSAM_DEBUG=1 the
  traceback is printed before the error line.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = debug_requested(argv)
  argv = [a for a in argv if a != DEBUG_FLAG]
  try:
    return main(argv)
  except UserError as e:
    message = str(e)
    if debug:
      traceback.print_exc()
  except OSError as e:
    if e.errno != errno.ENOSPC:
      raise
    # The disk filled up somewhere below us; the path is in the OSError when the OS gave one.
    message = f'no space left on device while writing {e.filename or "a file"}'
    if debug:
      traceback.print_exc()
  print(f'error: {message}', file=sys.stderr)
  return USER_ERROR_STATUS


def script_main(main: Callable[[list[str]], int]) -> Callable[..., int]:
  """Decorates a script's `main(argv)` so that calling it goes through `run_main`."""

  def wrapped(argv: Sequence[str] | None = None) -> int:
    return run_main(main, argv)

  wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__ = main.__name__, main.__doc__, main
  return wrapped


def read_text(path: str | os.PathLike, what: str = 'text file') -> str:
  """The UTF-8 text of `path` (a leading byte-order mark removed); bytes that are not UTF-8 raise
  InputError naming the file and the line, instead of a bare UnicodeDecodeError."""
  path = os.fspath(path)
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except FileNotFoundError:
    raise MissingError(f'{path}: no such {what}') from None
  try:
    return data.decode('utf-8').removeprefix('\ufeff')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise InputError(f'{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); '
                     f'save the {what} as UTF-8') from None
