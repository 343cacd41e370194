"""Weights between yolov5-family PyTorch state dicts and this project's Flax variables.

State dicts travel as `.npz` or `.safetensors` files of plain arrays (keys as in PyTorch,
`model.0.conv.weight`, `model.24.m.2.bias`, …); we never unpickle `.pt` files. README shows the three
lines that write one from a `.pt` in a PyTorch environment.

Key mapping (layer indices are those of `models.layer_table`, equal to the published ones):
  model.<i>            ↔ layer_<i>
  .m.<j>               ↔ m_<j>            (C3 bottlenecks, Detect convolutions)
  conv.weight (OIHW)   ↔ conv/kernel (HWIO);  Linear weight (out, in) ↔ Dense kernel (in, out)
  bn.weight/bias       ↔ bn/scale, bn/bias;   bn.running_mean/var ↔ batch_stats bn/mean, bn/var
  published attention  spatial, spatiall, spatialll ↔ spatial/max_0..2;
                       spatiala, spatialla, spatiallla ↔ spatial/mean_0..2;  spatialc ↔ spatial/fuse
`num_batches_tracked` is PyTorch bookkeeping that BatchNorm with a fixed momentum never reads: it is
accepted on import and written back with a chosen value on export. `model.<detect>.anchors` (grid units,
Detect order) is checked against the config's anchors.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from typing import Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from yolo_osam_jax import errors, models
from yolo_osam_jax.models import heads

log = logging.getLogger(__name__)

_LEAF_TO_TORCH = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
                  ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
                  ('batch_stats', 'var'): 'running_var'}


class ConversionError(errors.InputError):
  """A state dict that does not fit the configured model; the message names the key."""


def torch_key(collection: str, path: tuple[str, ...]) -> str:
  """The PyTorch state-dict key of the Flax leaf at `path` in `collection`."""
  parts: list[str] = []
  for i, p in enumerate(path[:-1]):
    nxt = path[i + 1]
    if p.startswith('layer_'):
      parts += ['model', p[len('layer_'):]]
    elif re.fullmatch(r'm_\d+', p):
      parts += ['m', p[2:]]
    elif p == 'spatial':
      if nxt in ('conv', 'bn'):   # SAM (no published layout): keep it under its own name
        parts.append('sam')
      # OSAM: the published module has its convolutions at the top level of the layer
    elif re.fullmatch(r'max_\d+', p):
      parts.append('spatia' + 'l' * (int(p[4:]) + 1))          # spatial, spatiall, spatialll
    elif re.fullmatch(r'mean_\d+', p):
      parts.append('spatia' + 'l' * (int(p[5:]) + 1) + 'a')    # spatiala, spatialla, spatiallla
    elif p == 'fuse':
      parts.append('spatialc')
    else:
      parts.append(p)
  leaf = _LEAF_TO_TORCH.get((collection, path[-1]))
  if leaf is None:
    raise ConversionError(f'no PyTorch name for {collection}/{"/".join(path)}')
  return '.'.join(parts + [leaf])


def _to_torch_layout(x: np.ndarray) -> np.ndarray:
  if x.ndim == 4:
    return np.transpose(x, (3, 2, 0, 1))  # HWIO → OIHW
  if x.ndim == 2:
    return x.T                            # Dense (in, out) → Linear (out, in)
  return x


def _from_torch_layout(x: np.ndarray) -> np.ndarray:
  if x.ndim == 4:
    return np.transpose(x, (2, 3, 1, 0))  # OIHW → HWIO
  if x.ndim == 2:
    return x.T
  return x


def _detect_index(model_config) -> int:
  return models.layer_table(model_config)[-1].index


def _anchors_grid(model_config) -> np.ndarray:
  """Anchors as the `anchors` buffer holds them: [nl, A, 2] in grid units, Detect order."""
  lv = sorted(heads.levels(model_config), key=lambda l: l.detect_index)
  return np.stack([l.anchors / l.stride for l in lv]).astype(np.float32)


def anchors_from_state_dict(state_dict: Mapping[str, np.ndarray], model_config) -> list[list[float]]:
  """The checkpoint's anchors in the `model.anchors` config format (pixels, stride ascending)."""
  key = f'model.{_detect_index(model_config)}.anchors'
  if key not in state_dict:
    raise ConversionError(f'{key}: missing from the state dict')
  grid = np.asarray(state_dict[key], np.float32)
  lv = heads.levels(model_config)
  if grid.shape[0] != len(lv):
    raise ConversionError(f'{key}: {grid.shape[0]} levels, the model has {len(lv)}')
  return [(grid[l.detect_index] * l.stride).reshape(-1).tolist() for l in lv]


def init_variables(model_config, rng=None, img_size: int = 64):
  """Freshly initialised variables (one compiled init: much faster than running it op by op)."""
  module = models.build(model_config)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  return jax.jit(module.init)(rng, jnp.zeros((1, img_size, img_size, 3), jnp.float32))


def variable_shapes(model_config, img_size: int = 64):
  """The variables' shapes and dtypes, without computing any value."""
  module = models.build(model_config)
  return jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, img_size, img_size, 3)))


def from_yolov5_state_dict(state_dict: Mapping[str, np.ndarray], model_config, rng=None,
                           check_anchors: bool = True) -> dict:
  """Flax variables ({'params', 'batch_stats'}) for `model_config` from a yolov5-family state dict.

  Every key must be used and every shape must fit, except that when the checkpoint's class count
  differs from the config's (transfer from COCO weights) the class rows of the Detect convolutions keep
  their fresh initialisation; that is logged.
  """
  template = flax.core.unfreeze(variable_shapes(model_config))
  fresh = None  # real initial values, computed only if some class rows must keep them
  nc = int(model_config.num_classes)
  det = _detect_index(model_config)
  no = 5 + nc
  consumed: set[str] = set()
  partial_classes = []

  flat = {}
  for collection in ('params', 'batch_stats'):
    for path, value in flax.traverse_util.flatten_dict(template.get(collection, {})).items():
      key = torch_key(collection, path)
      if key not in state_dict:
        raise ConversionError(f'{key}: missing from the state dict (needed for {collection}/{"/".join(path)})')
      src = _from_torch_layout(np.asarray(state_dict[key]))
      if np.issubdtype(src.dtype, np.inexact) and not np.all(np.isfinite(src)):
        raise ConversionError(f'{key}: {int(np.size(src) - np.count_nonzero(np.isfinite(src)))} NaN/Inf '
                              f'value(s) of {np.size(src)} in the state dict')
      target = value
      if src.shape != target.shape:
        is_detect = key.startswith(f'model.{det}.m.')
        if is_detect and src.shape[:-1] == target.shape[:-1] and src.shape[-1] % 3 == 0:
          # Different class count: copy box + objectness rows per anchor, keep the fresh class rows.
          if fresh is None:
            fresh = flax.core.unfreeze(init_variables(model_config, rng))
          init_value = np.asarray(flax.traverse_util.flatten_dict(fresh[collection])[path])
          a = target.shape[-1] // no
          src_no = src.shape[-1] // a
          src_r = src.reshape(src.shape[:-1] + (a, src_no))
          out = init_value.reshape(target.shape[:-1] + (a, no)).copy()
          out[..., :5] = src_r[..., :5]
          src = out.reshape(target.shape)
          partial_classes.append(key)
        else:
          want = _to_torch_layout(np.empty(target.shape, np.float32)).shape
          raise ConversionError(f'{key}: shape {tuple(np.shape(state_dict[key]))} in the state dict, '
                                f'the model needs {want}')
      flat[(collection,) + path] = jnp.asarray(src, dtype=target.dtype)
      consumed.add(key)

  anchor_key = f'model.{det}.anchors'
  if anchor_key in state_dict:
    consumed.add(anchor_key)
    if check_anchors:
      got = np.asarray(state_dict[anchor_key], np.float32)
      want = _anchors_grid(model_config)
      if got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
        raise ConversionError(
            f'{anchor_key}: the checkpoint anchors {got.tolist()} (grid units) differ from the config '
            f'{want.tolist()}; set model.anchors = convert.anchors_from_state_dict(...) '
            '(scripts/convert_yolov5.py does this)')
  unused = sorted(k for k in state_dict if k not in consumed and not k.endswith('num_batches_tracked'))
  if unused:
    raise ConversionError(f'{unused[0]}: not used by the configured model '
                          f'({len(unused)} unused keys: {unused[:5]}{" …" if len(unused) > 5 else ""})')
  if partial_classes:
    log.warning('class count differs from the checkpoint: loaded everything but the class rows of %s',
                ', '.join(partial_classes))
  return flax.traverse_util.unflatten_dict(
      {k: v for k, v in flat.items()}, sep=None)


def torch_tensors(variables, key_of, num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
  """Every leaf of `variables` as a PyTorch-layout float32 tensor under `key_of(collection, path)`,
  with BatchNorm's `num_batches_tracked` (int64) beside each running_var; both families' exports."""
  out: dict[str, np.ndarray] = {}
  for collection in ('params', 'batch_stats'):
    for path, value in flax.traverse_util.flatten_dict(
        flax.core.unfreeze(variables.get(collection, {}))).items():
      key = key_of(collection, path)
      out[key] = np.ascontiguousarray(_to_torch_layout(np.asarray(value, np.float32)))
      if collection == 'batch_stats' and path[-1] == 'var':
        out[key.replace('running_var', 'num_batches_tracked')] = np.asarray(num_batches_tracked, np.int64)
  return out


def to_yolov5_state_dict(variables, model_config, num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
  """The yolov5-layout state dict (numpy, float32 tensors) of `variables`."""
  out = torch_tensors(variables, torch_key, num_batches_tracked)
  out[f'model.{_detect_index(model_config)}.anchors'] = _anchors_grid(model_config)
  return out


def from_ultralytics_state_dict(state_dict: Mapping[str, np.ndarray], model_config, rng=None) -> dict:
  """Flax variables for a YOLOv8 / YOLO11 `model_config` from an ultralytics state dict
  (convert_ultralytics.py holds that family's key mapping)."""
  from yolo_osam_jax import convert_ultralytics  # pylint: disable=g-import-not-at-top (imports us)
  return convert_ultralytics.from_ultralytics_state_dict(state_dict, model_config, rng)


def to_ultralytics_state_dict(variables, model_config, num_batches_tracked: int = 0) -> dict:
  """The ultralytics-layout state dict (PyTorch key order) of YOLOv8 / YOLO11 `variables`."""
  from yolo_osam_jax import convert_ultralytics  # pylint: disable=g-import-not-at-top
  return convert_ultralytics.to_ultralytics_state_dict(variables, model_config, num_batches_tracked)


def from_state_dict(state_dict: Mapping[str, np.ndarray], model_config, rng=None) -> dict:
  """Variables for `model_config` from its family's PyTorch state dict: the ultralytics layout for the
  anchor-free archs, yolov5's for yolo_osam and yolov3."""
  if models.is_anchor_free(model_config):
    return from_ultralytics_state_dict(state_dict, model_config, rng)
  return from_yolov5_state_dict(state_dict, model_config, rng)


def to_state_dict(variables, model_config) -> dict[str, np.ndarray]:
  """The PyTorch state dict of `variables` in its family's layout (see `from_state_dict`)."""
  if models.is_anchor_free(model_config):
    return to_ultralytics_state_dict(variables, model_config)
  return to_yolov5_state_dict(variables, model_config)


def load_state_dict_file(path: str) -> dict[str, np.ndarray]:
  """Reads a state dict saved as .npz or .safetensors."""
  if not os.path.exists(path):
    raise errors.MissingError(f'{path}: no such file')
  if os.path.isdir(path):
    raise ConversionError(f'{path}: is a folder, not a state dict file')
  if os.path.getsize(path) == 0:
    raise ConversionError(f'{path}: empty file (0 bytes), not a state dict')
  if path.endswith('.npz'):
    with open(path, 'rb') as f:
      magic = f.read(4)
    if magic != b'PK\x03\x04':  # numpy would try it as a pickle and suggest allow_pickle=True: never
      raise ConversionError(f'{path}: not a .npz archive (no zip header); write it with np.savez')
    try:
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
      raise ConversionError(f'{path}: damaged or truncated .npz archive ({type(e).__name__}: '
                            f'{str(e).splitlines()[0][:120] if str(e) else "no detail"})') from None
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file
    try:
      return load_file(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError on bad headers
      raise ConversionError(f'{path}: not a readable .safetensors file ({type(e).__name__}: '
                            f'{str(e).splitlines()[0][:120] if str(e) else "no detail"})') from None
  raise ConversionError(f'{path}: expected a .npz or .safetensors state dict (we never unpickle .pt files)')


def save_state_dict_file(state_dict: Mapping[str, np.ndarray], path: str) -> None:
  if path.endswith('.npz'):
    np.savez(path, **state_dict)
  elif path.endswith('.safetensors'):
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in state_dict.items()}, path)
  else:
    raise ValueError(f'{path}: expected a .npz or .safetensors file name')
