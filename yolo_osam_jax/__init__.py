"""yolo_osam_jax: the YOLO-OSAM facial-expression detector in JAX/Flax.

  from yolo_osam_jax import Recognizer
  detections = Recognizer.from_checkpoint('runs/train/1/best').predict('photo.jpg')

`Recognizer` and `Detection` are imported on first use, so `import yolo_osam_jax` stays light (no JAX,
OpenCV or TFDS until something needs them).
"""

import importlib

__version__ = '0.1.0'

_LAZY = {'Recognizer': 'yolo_osam_jax.predict', 'Detection': 'yolo_osam_jax.predict'}

__all__ = ['Detection', 'Recognizer', '__version__']


def __getattr__(name):
  if name in _LAZY:
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted(set(globals()) | set(_LAZY))
