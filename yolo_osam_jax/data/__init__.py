"""Dataset registry: builder modules are imported by name only when used.

Importing a builder module registers its class with TFDS; doing it lazily keeps `import
yolo_osam_jax.data` cheap and lets grain workers import only the builder they read. TFDS itself is
imported inside the functions that use it: prediction imports `yolo_osam_jax.data.transforms`, which
runs this file, and should start without TFDS's import time.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  import tensorflow_datasets as tfds

# TFDS dataset name -> module that defines (and registers) its builder.
BUILDERS = {
    'synthetic_faces': 'yolo_osam_jax.data.synthetic_faces',
    'yolo_folder': 'yolo_osam_jax.data.yolo_folder',
    'rafdb_basic': 'yolo_osam_jax.data.rafdb',
    'rafdb_compound': 'yolo_osam_jax.data.rafdb',
    'ckplus': 'yolo_osam_jax.data.ckplus',
    'fer2013': 'yolo_osam_jax.data.fer2013',
}


def import_builder(name: str) -> None:
  """Imports the module that registers dataset `name`."""
  if name not in BUILDERS:
    raise ValueError(f'unknown dataset {name!r}; known: {", ".join(sorted(BUILDERS))}')
  importlib.import_module(BUILDERS[name])


def _data_dir(data_dir: str | os.PathLike | None) -> str | None:
  # '' (the config default) means TFDS's default location (~/tensorflow_datasets or $TFDS_DATA_DIR).
  return os.fspath(os.path.expanduser(data_dir)) if data_dir else None


def get_builder(name: str, data_dir: str | os.PathLike | None = None, config: str | None = None,
                **kwargs) -> tfds.core.DatasetBuilder:
  """The builder of dataset `name` (config `config`); kwargs go to the builder's constructor."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax import errors  # pylint: disable=g-import-not-at-top
  import_builder(name)
  if config:
    kwargs['config'] = config
  try:
    return tfds.builder(name, data_dir=_data_dir(data_dir), **kwargs)
  except errors.UserError as e:
    # TFDS re-raises with 'Failed to construct dataset "<name>", builder_kwargs "{...}": ' in front.
    message = re.sub(r'^Failed to construct dataset "[^"]*", builder_kwargs "\{.*?\}": ', '', str(e),
                     flags=re.DOTALL)
    raise type(e)(message) from None


def build(name: str, data_dir: str | os.PathLike | None = None,
          manual_dir: str | os.PathLike | None = None, config: str | None = None,
          rebuild: bool = False, **kwargs) -> tfds.core.DatasetBuilder:
  """Prepares dataset `name` as array_record files (once; later calls reuse them) and returns the builder.

  `manual_dir` is the folder holding the files the user downloaded (the layout each builder documents).
  A prepared dataset is reused only when `manual_dir` has the fingerprint recorded at its build
  (source_fingerprint.py); otherwise this raises errors.InputError saying how to rebuild, or, with
  `rebuild`, builds it again (the old copy is kept until the new build has succeeded). The returned
  builder's `reused` attribute says whether a build happened.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax import errors  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax.data import source_fingerprint  # pylint: disable=g-import-not-at-top
  import_builder(name)
  if manual_dir and not os.path.exists(os.path.expanduser(os.fspath(manual_dir))):
    raise errors.MissingError(f'{manual_dir}: --manual_dir does not exist')
  if manual_dir and getattr(tfds.builder_cls(name), 'MANUAL_DIR_AT_INIT', False):
    # e.g. yolo_folder: its class names come from the data.yaml in manual_dir.
    kwargs['manual_dir'] = manual_dir
  builder = get_builder(name, data_dir=data_dir, config=config, **kwargs)
  fingerprint = source_fingerprint.compute(manual_dir, exclude=builder.data_dir_root)
  data_path = os.fspath(builder.data_path)
  aside = None
  if os.path.isdir(data_path):
    stored = source_fingerprint.read(data_path)
    same = fingerprint is None or (stored is not None and stored.get('digest') == fingerprint['digest'])
    if same and not rebuild:
      builder.reused = True
      return builder
    if not rebuild:
      if stored is not None and stored.get('source') == fingerprint['source']:
        what = (f"from {fingerprint['source']}, whose files have changed since ({stored.get('files')} files, "
                f"{stored.get('bytes')} bytes then; {fingerprint['files']} files, {fingerprint['bytes']} bytes "
                'now, or other modification times)')
      else:
        what = (f'from {source_fingerprint.describe(stored)}, not from '
                f'{source_fingerprint.describe(fingerprint)}')
      raise errors.InputError(f'{data_path} holds {builder.info.full_name} built {what}: rebuild it with '
                              '`prepare_data.py ... --rebuild` (or use another --data_dir)')
    # The old build is moved aside, not deleted, until the new one has succeeded.
    aside = f'{data_path}.old-{os.getpid()}'
    os.rename(data_path, aside)
    builder = get_builder(name, data_dir=data_dir, config=config, **kwargs)
  builder._source_fingerprint = fingerprint  # pylint: disable=protected-access (written by the build)
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(os.fspath(manual_dir)) if manual_dir else None)
  try:
    builder.download_and_prepare(file_format='array_record', download_config=download_config)
  except BaseException as e:
    if aside is not None and not os.path.exists(data_path):
      os.rename(aside, data_path)
    if isinstance(e, AssertionError) and str(e).startswith('Manual directory'):
      # TFDS's several lines of instructions, said in one.
      instructions = ' '.join(str(getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', '')).split())
      raise errors.MissingError(f'{manual_dir or "--manual_dir"}: missing or empty; {name} needs the files '
                                f'you downloaded there. {instructions}') from None
    raise
  if aside is not None:
    shutil.rmtree(aside)
  builder.reused = False
  return builder


def class_names(name: str, data_dir: str | os.PathLike | None = None,
                config: str | None = None, **kwargs) -> list[str]:
  """Class names of dataset `name` in label order (from its dataset info).

  For a prepared yolo_folder dataset pass its config name; TFDS then reads the info from data_dir.
  """
  builder = get_builder(name, data_dir=data_dir, config=config, **kwargs)
  return list(builder.info.features['objects']['label'].names)

