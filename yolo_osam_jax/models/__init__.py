"""Model family: `build(config.model)` returns the Flax module."""

from yolo_osam_jax.models.heads import levels
from yolo_osam_jax.models.yolo import YOLO, build, decode, layer_table

__all__ = ['YOLO', 'build', 'decode', 'layer_table', 'levels']
