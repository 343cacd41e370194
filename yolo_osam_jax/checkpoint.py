"""Model checkpoints: an orbax directory with the variables and the resolved config beside them.

Layout of a model checkpoint directory (written by weight conversion, by training for its best/last
weights, read by eval/predict/export):
  <dir>/config.json    the full resolved config (model section needed to rebuild the network)
  <dir>/variables/     orbax StandardCheckpointer tree {'params', 'batch_stats'}
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import shutil
import tempfile

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from yolo_osam_jax import errors

CONFIG_FILE = 'config.json'
VARIABLES_DIR = 'variables'

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
try:
  _RENAMEAT2 = ctypes.CDLL(None, use_errno=True).renameat2
except (AttributeError, OSError):  # not glibc ≥ 2.28 / not Linux: fall back to two renames
  _RENAMEAT2 = None


def _exchange(a: str, b: str) -> bool:
  """Atomically swaps the paths `a` and `b` (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
  if _RENAMEAT2 is None:
    return False
  if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  code = ctypes.get_errno()
  if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system or kernel without it
    return False
  raise OSError(code, os.strerror(code), b)


def save_model(directory: str, variables, config: ml_collections.ConfigDict) -> str:
  """Writes `variables` and `config` to `directory`; an existing checkpoint there is replaced atomically.

  The new checkpoint is written in full to a sibling folder first, then swapped in with one rename, so
  a kill at any moment leaves `directory` holding the old or the new checkpoint, never a part of one, and
  a concurrent `load_model` sees one or the other.
  """
  directory = os.path.abspath(directory)
  parent, name = os.path.split(directory)
  # Leftovers of a save killed midway (one writer per folder: training holds its workdir's lock). An
  # `.old-*` copy is only a leftover while `directory` itself exists; otherwise it is the checkpoint.
  leftovers = glob.glob(os.path.join(parent, f'.{name}.saving-*'))
  if os.path.isdir(directory):
    leftovers += glob.glob(os.path.join(parent, f'.{name}.old-*'))
  for leftover in leftovers:
    shutil.rmtree(leftover, ignore_errors=True)
  try:
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f'.{name}.saving-', dir=parent)
  except OSError as e:
    raise errors.output_error(parent, e) from e
  try:
    tree = jax.tree_util.tree_map(np.asarray, {k: variables[k] for k in ('params', 'batch_stats')
                                               if k in variables})
    check_finite(tree, directory)
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(os.path.join(staging, VARIABLES_DIR), tree, force=True)
    with open(os.path.join(staging, CONFIG_FILE), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    if not os.path.exists(directory):
      os.rename(staging, directory)
      for leftover in glob.glob(os.path.join(parent, f'.{name}.old-*')):  # superseded fallback copies
        shutil.rmtree(leftover, ignore_errors=True)
    elif _exchange(staging, directory):
      shutil.rmtree(staging)  # now the old checkpoint
    else:
      # Without an atomic swap the old copy is moved aside first; a kill between the two renames leaves
      # it in `.<name>.old-*`, which load_model falls back to.
      old = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=parent)
      os.rmdir(old)
      os.rename(directory, old)
      os.rename(staging, directory)
      shutil.rmtree(old)
  except OSError as e:
    shutil.rmtree(staging, ignore_errors=True)
    raise errors.output_error(directory, e) from e
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return directory


def check_finite(tree, where: str) -> None:
  """Raises InputError naming the first key of `tree` holding NaN or Inf values."""
  for path, leaf in traverse_util.flatten_dict(dict(tree), sep='/').items() if isinstance(tree, dict) else ():
    value = np.asarray(leaf)
    if np.issubdtype(value.dtype, np.inexact) and not np.all(np.isfinite(value)):
      bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
      raise errors.InputError(f'{where}: {path} holds {bad} NaN/Inf value(s) of {np.size(value)}')


def read_config_json(directory: str, what: str = 'a model checkpoint') -> ml_collections.ConfigDict:
  """The config.json in `directory` (a model checkpoint or a training run's workdir)."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(path):
    if not os.path.isdir(directory):
      raise errors.MissingError(f'{directory}: not {what} (no such folder)')
    raise errors.MissingError(f'{path}: not found; {directory} is not {what} (no {CONFIG_FILE})')
  try:
    with open(path, encoding='utf-8') as f:
      data = json.load(f)
  except UnicodeDecodeError as e:
    raise errors.InputError(f'{path}: not UTF-8 text (byte {e.start}): not a config.json we wrote') from None
  except json.JSONDecodeError as e:
    raise errors.InputError(f'{path}: line {e.lineno} column {e.colno}: malformed JSON ({e.msg})') from None
  if not isinstance(data, dict) or not isinstance(data.get('model'), dict):
    raise errors.InputError(f'{path}: expected a JSON object with a "model" section (a resolved config)')
  return ml_collections.ConfigDict(data)


def _load_once(directory: str):
  config = read_config_json(directory)
  vdir = os.path.join(directory, VARIABLES_DIR)
  if not os.path.isdir(vdir):
    raise errors.MissingError(f'{vdir}: not a model checkpoint (no {VARIABLES_DIR}/)')
  try:
    with ocp.StandardCheckpointer() as ckpt:
      variables = ckpt.restore(vdir)
  except (ValueError, OSError, KeyError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.InputError(f'{vdir}: unreadable model checkpoint ({reason[:200]})') from e
  return config, variables


def _identity(directory: str):
  try:
    st = os.stat(directory)
  except FileNotFoundError:
    return None
  return st.st_ino, st.st_mtime_ns


def _fallback_copy(directory: str) -> str | None:
  """A `.<name>.old-*` copy left by a kill in the middle of a non-atomic replace (see save_model)."""
  parent, name = os.path.split(directory)
  old = sorted(glob.glob(os.path.join(parent, f'.{name}.old-*')))
  return old[-1] if old else None


def load_model(directory: str, retries: int = 5):
  """(config, variables) from a model checkpoint directory.

  A checkpoint replaced while it is read (training saves best/ while predict reads it) is read again;
  every float tensor is checked for NaN/Inf (an error names the key).
  """
  directory = os.path.abspath(directory)
  if not os.path.exists(directory) and _fallback_copy(directory):
    directory = _fallback_copy(directory)
  for attempt in range(retries + 1):
    before = _identity(directory)
    try:
      config, variables = _load_once(directory)
    except errors.UserError:
      if attempt == retries or _identity(directory) == before:
        raise
      continue
    if _identity(directory) == before:
      break
  check_finite(variables, os.path.join(directory, VARIABLES_DIR))
  return config, variables
