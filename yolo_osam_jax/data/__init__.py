"""Dataset registry: builder modules are imported by name only when used.

Importing a builder module registers its class with TFDS; doing it lazily keeps `import
yolo_osam_jax.data` cheap and lets grain workers import only the builder they read. TFDS itself is
imported inside the functions that use it: prediction imports `yolo_osam_jax.data.transforms`, which
runs this file, and should start without TFDS's import time.
"""

from __future__ import annotations

import importlib
import os
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
  import_builder(name)
  if config:
    kwargs['config'] = config
  return tfds.builder(name, data_dir=_data_dir(data_dir), **kwargs)


def build(name: str, data_dir: str | os.PathLike | None = None,
          manual_dir: str | os.PathLike | None = None, config: str | None = None,
          **kwargs) -> tfds.core.DatasetBuilder:
  """Prepares dataset `name` as array_record files (once; later calls reuse them) and returns the builder.

  `manual_dir` is the folder holding the files the user downloaded (the layout each builder documents).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import_builder(name)
  if manual_dir and getattr(tfds.builder_cls(name), 'MANUAL_DIR_AT_INIT', False):
    # e.g. yolo_folder: its class names come from the data.yaml in manual_dir.
    kwargs['manual_dir'] = manual_dir
  builder = get_builder(name, data_dir=data_dir, config=config, **kwargs)
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(os.fspath(manual_dir)) if manual_dir else None)
  builder.download_and_prepare(file_format='array_record', download_config=download_config)
  return builder


def class_names(name: str, data_dir: str | os.PathLike | None = None,
                config: str | None = None, **kwargs) -> list[str]:
  """Class names of dataset `name` in label order (from its dataset info).

  For a prepared yolo_folder dataset pass its config name; TFDS then reads the info from data_dir.
  """
  builder = get_builder(name, data_dir=data_dir, config=config, **kwargs)
  return list(builder.info.features['objects']['label'].names)

