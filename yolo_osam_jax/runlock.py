"""One training per workdir at a time: an advisory lock file that says who holds it.

The lock is `fcntl.flock` on `<workdir>/train.lock`: the kernel drops it when the holder exits, is
killed or crashes, so a stale file never blocks the next run. The file's text (pid, host, start time) is
only there to tell the second run who holds it.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket

from yolo_osam_jax import errors

LOCK_FILE = 'train.lock'


class WorkdirLock:
  """Holds `<workdir>/train.lock` from `acquire()` to `release()` (or the end of a `with` block)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> 'WorkdirLock':
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise errors.output_error(self.path, e) from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 512, 0).decode('utf-8', 'replace').strip() or 'an unknown process'
      os.close(fd)
      raise errors.LockedError(f'{os.path.dirname(self.path)} is in use by another training ({holder}); '
                               f'wait for it to end, or use another --workdir') from None
    started = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()} since {started}\n'.encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      # The file stays: deleting it would let a third run lock a new inode while a second holds the old.
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
