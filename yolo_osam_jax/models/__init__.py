"""Model family and registry: `build(config.model)` returns the Flax detector that `model.arch` names.

Detectors (trained by `training.loop`):
  yolo_osam   yolov5 / YOLO-OSAM (models/yolo.py): anchor-based, predictions [B, N, 5 + nc]
  yolov3      yolov5's yolov3.yaml (models/yolov3.py): the same anchor-based family, Detect and loss
  yolov8      the anchor-free family (models/anchor_free.py): predictions [B, N, 4 + nc]
  yolo11
Classifiers (`cspdarknet_cls`, `alexnet`, `vgg16`; models/classifiers.py) are built by
`classifiers.build_classifier` and trained by `yolo_osam_jax.classify`.

`arch_of` and `scale_of` are the only places that read `model.arch`, `model.size`, `model.width`,
`model.depth` and `model.max_channels`; everything else asks them.
"""

from __future__ import annotations

import importlib

from yolo_osam_jax import errors

from yolo_osam_jax.models.heads import levels
from yolo_osam_jax.models.yolo import YOLO, decode

# Detector arch -> module with `build(model_config)` and `SCALES[arch]` = {size: (width, depth,
# max_channels)}, the published scale table.
DETECTORS = {
    'yolo_osam': 'yolo_osam_jax.models.yolo',
    'yolov3': 'yolo_osam_jax.models.yolov3',
    'yolov8': 'yolo_osam_jax.models.anchor_free',
    'yolo11': 'yolo_osam_jax.models.anchor_free',
}
CLASSIFIERS = ('cspdarknet_cls', 'alexnet', 'vgg16')
ARCHS = tuple(DETECTORS) + CLASSIFIERS
ANCHOR_FREE = ('yolov8', 'yolo11')
# Configs written before `model.arch` existed, and the ablation tables of that time, said 'yolo'.
_LEGACY_ARCHS = {'yolo': 'yolo_osam'}


def arch_of(model_config) -> str:
  """`model.arch` (a config that predates the field is a yolo_osam one)."""
  arch = model_config.get('arch', None) or 'yolo_osam'
  arch = _LEGACY_ARCHS.get(arch, arch)
  if arch not in ARCHS:
    raise errors.InputError(f"model.arch must be one of {', '.join(ARCHS)}, got {arch!r}")
  return arch


def is_anchor_free(model_config) -> bool:
  """True for the anchor-free family: no objectness column, predictions [B, N, 4 + nc]."""
  return arch_of(model_config) in ANCHOR_FREE


def _module(arch: str):
  return importlib.import_module(DETECTORS.get(arch, 'yolo_osam_jax.models.yolo'))


def scale_of(model_config) -> tuple[float, float, int | None]:
  """(width, depth, max_channels): the published scale table's row for `model.size` (n/s/m/l/x) of
  the arch, with `model.width` / `model.depth` / `model.max_channels` overriding it when set."""
  arch = arch_of(model_config)
  # The classifiers' CSPDarknet53 is the yolov5 backbone and scales like it.
  scales = _module(arch).SCALES[arch if arch in DETECTORS else 'yolo_osam']
  size = model_config.get('size', None) or 's'
  if size not in scales:
    raise errors.InputError(f"model.size must be one of {', '.join(scales)} for arch {arch!r}, got "
                            f"{size!r}")
  width, depth, max_channels = scales[size]
  override = lambda key, default: default if model_config.get(key, None) is None else model_config[key]  # noqa: E731
  return (float(override('width', width)), float(override('depth', depth)),
          override('max_channels', max_channels))


def layer_table(model_config):
  """The detector's layer table (yolo_osam, yolov3: indices = the published state-dict indices)."""
  module = _module(arch_of(model_config))
  if not hasattr(module, 'layer_table'):
    raise ValueError(f'model.arch={arch_of(model_config)!r} has no layer table')
  return module.layer_table(model_config)


def build(model_config):
  """The Flax detector for `config.model` (see configs/base.py for the keys)."""
  arch = arch_of(model_config)
  if arch in CLASSIFIERS:
    raise ValueError(f"model.arch={arch!r} is a classifier baseline: build it with "
                     "models.classifiers.build_classifier and train it with yolo_osam_jax.classify")
  return _module(arch).build(model_config)


__all__ = ['ANCHOR_FREE', 'ARCHS', 'CLASSIFIERS', 'DETECTORS', 'YOLO', 'arch_of', 'build', 'decode',
           'is_anchor_free', 'layer_table', 'levels', 'scale_of']
