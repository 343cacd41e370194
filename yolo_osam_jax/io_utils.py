"""Small file helpers shared by the trainer and the ablation runner."""

from __future__ import annotations

import json
import os

# File endings treated as images, by dataset builders (data/common.py) and by prediction (sources.py):
# what OpenCV and Pillow decode. A file that still fails to decode is reported as unreadable, never
# skipped silently.
IMAGE_EXTENSIONS = ('.bmp', '.dng', '.exr', '.hdr', '.jp2', '.jpeg', '.jpg', '.mpo', '.pbm', '.pfm', '.pgm',
                    '.pic', '.png', '.pnm', '.ppm', '.pxm', '.ras', '.sr', '.tif', '.tiff', '.webp')


def write_json_atomic(path: str, value, *, indent: int = 2, sort_keys: bool = False) -> None:
  """Writes `value` as JSON to `path` through a temporary file and a rename, creating its directory.

  A crash mid-write leaves the previous file (or none), never a half-written one that a resumed run would
  read back.
  A failure to write (a full disk, a read-only folder) is one errors.OutputError naming `path`; the
  previous file stays whole.
  """
  from yolo_osam_jax import errors  # pylint: disable=g-import-not-at-top
  tmp = path + '.tmp'
  try:
    directory = os.path.dirname(path)
    if directory:
      os.makedirs(directory, exist_ok=True)
    with open(tmp, 'w') as f:
      json.dump(value, f, indent=indent, sort_keys=sort_keys)
    os.replace(tmp, path)
  except OSError as e:
    discard(tmp)
    raise errors.output_error(path, e) from e


def discard(path: str) -> None:
  """Removes `path` if it exists (a temporary file left by a failed write)."""
  try:
    os.remove(path)
  except OSError:
    pass
