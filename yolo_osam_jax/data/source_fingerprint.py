"""What a prepared dataset was built from, so a build is never reused for a different source.

The fingerprint of a `--manual_dir` lists every file under it (relative path, size, modification time in
ns) and hashes that list: another folder, an added or removed image, an edited label file all change it,
while reading the files' contents is not needed (a build of RAF-DB stats 30,000 files in well under a
second). When manual_dir is a file (yolo_folder's data.yaml), the file and its folder are fingerprinted.
It is written as `source_fingerprint.json` next to the dataset's files, inside the same temporary folder
TFDS renames into place at the end of a build, so a build and its fingerprint appear together.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

FILE_NAME = 'source_fingerprint.json'


def compute(manual_dir: str | os.PathLike | None,
            exclude: str | os.PathLike | None = None) -> dict[str, Any] | None:
  """{'source', 'files', 'bytes', 'digest'} of `manual_dir` (None when there is none).

  `exclude`: a folder left out of the listing (the data_dir, when it lies inside the source folder: the
  build's own output must not change its source's fingerprint).
  """
  if not manual_dir:
    return None
  source = os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))
  root = os.path.dirname(source) if os.path.isfile(source) else source
  excluded = os.path.abspath(os.path.expanduser(os.fspath(exclude))) if exclude else None
  entries = []
  for folder, dirs, names in os.walk(root):
    dirs[:] = sorted(d for d in dirs if os.path.join(folder, d) != excluded)
    for name in sorted(names):
      path = os.path.join(folder, name)
      try:
        st = os.stat(path)
      except OSError:  # a dangling link: part of the listing all the same
        entries.append((os.path.relpath(path, root), -1, -1))
        continue
      entries.append((os.path.relpath(path, root), st.st_size, st.st_mtime_ns))
  digest = hashlib.sha256(json.dumps(entries).encode('utf-8')).hexdigest()
  return {'source': source, 'files': len(entries), 'bytes': sum(max(e[1], 0) for e in entries),
          'digest': digest}


def read(data_path: str | os.PathLike) -> dict[str, Any] | None:
  """The fingerprint stored with a prepared dataset (None when it was built without one)."""
  path = os.path.join(os.fspath(data_path), FILE_NAME)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  except (OSError, ValueError):
    return {'source': f'(unreadable {path})', 'files': -1, 'bytes': -1, 'digest': ''}
  return data if isinstance(data, dict) else None


def write(data_path: str | os.PathLike, fingerprint: dict[str, Any]) -> None:
  with open(os.path.join(os.fspath(data_path), FILE_NAME), 'w', encoding='utf-8') as f:
    json.dump(fingerprint, f, indent=2)
    f.write('\n')


def describe(fingerprint: dict[str, Any] | None) -> str:
  if not fingerprint:
    return 'an unrecorded source'
  return f"{fingerprint.get('source')} ({fingerprint.get('files')} files, {fingerprint.get('bytes')} bytes)"
