"""Weights between ultralytics (YOLOv8 / YOLO11) PyTorch state dicts and this project's Flax variables.

State dicts are plain arrays keyed as in PyTorch (`model.<i>.cv1.conv.weight`, …), e.g. the `.npz` /
`.safetensors` files `convert.load_state_dict_file` reads; no `.pt` is ever unpickled.

Key mapping (layer indices are those of `anchor_free.layer_table`, equal to the yaml rows):
  model.<i>                  ↔ layer_<i>
  <name>.<j>[.<k>…]          ↔ <name>_<j>[_<k>…]   (m.0 ↔ m_0, ffn.1 ↔ ffn_1, cv3.1.0.1 ↔ cv3_1_0_1)
  conv.weight (OIHW)         ↔ conv/kernel (HWIO); depthwise [c, 1, 3, 3] ↔ [3, 3, 1, c]
  bn.weight/bias             ↔ bn/scale, bn/bias;  bn.running_mean/var ↔ batch_stats bn/mean, bn/var
  model.<detect>.dfl.conv.weight: the fixed arange(REG_MAX) projection, a constant here; checked on
                             import, written on export.
`num_batches_tracked` (PyTorch bookkeeping a fixed-momentum BatchNorm never reads) is accepted on import
and written on export with a chosen value.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from yolo_osam_jax import models
from yolo_osam_jax.convert import (_LEAF_TO_TORCH, ConversionError, _from_torch_layout,
                                   _to_torch_layout, torch_tensors)
from yolo_osam_jax.models import anchor_free

log = logging.getLogger(__name__)

_INDEXED = re.compile(r'([A-Za-z]\w*?)((?:_\d+)+)')
_LEAF_ORDER = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
# Siblings whose PyTorch registration order is not alphabetical; the others are (cv1 < cv2 < cv3 < m,
# attn < ffn, cv2 < cv3 < dfl).
_CHILD_ORDER = {'conv': 0, 'bn': 1, 'qkv': 0, 'proj': 1, 'pe': 2}


def torch_key(collection: str, path: tuple[str, ...]) -> str:
  """The PyTorch state-dict key of the Flax leaf at `path` in `collection`."""
  parts: list[str] = []
  for p in path[:-1]:
    if p.startswith('layer_'):
      parts += ['model', p[len('layer_'):]]
      continue
    m = _INDEXED.fullmatch(p)
    if m:
      parts.append(m.group(1))
      parts += m.group(2)[1:].split('_')
    else:
      parts.append(p)
  leaf = _LEAF_TO_TORCH.get((collection, path[-1]))
  if leaf is None:
    raise ConversionError(f'no PyTorch name for {collection}/{"/".join(path)}')
  return '.'.join(parts + [leaf])


def _detect_index(model_config) -> int:
  return anchor_free.layer_table(model_config)[-1].index


def dfl_key(model_config) -> str:
  return f'model.{_detect_index(model_config)}.dfl.conv.weight'


def _dfl_weight() -> np.ndarray:
  return np.arange(anchor_free.REG_MAX, dtype=np.float32).reshape(1, anchor_free.REG_MAX, 1, 1)


def _torch_order(key: str):
  """Sort key giving PyTorch's registration order of this family's state dicts: numeric parts as
  numbers, named children as _CHILD_ORDER then alphabetically, leaves in weight, bias, running_mean,
  running_var, num_batches_tracked order."""
  parts = key.split('.')
  leaf = parts[-1]
  body = tuple((0, int(p), '') if p.isdigit() else (1, _CHILD_ORDER.get(p, 9), p) for p in parts[:-1])
  return body, _LEAF_ORDER.index(leaf) if leaf in _LEAF_ORDER else len(_LEAF_ORDER)


def variable_shapes(model_config, img_size: int = 64):
  """The variables' shapes and dtypes, without computing any value (traced once per config; the
  result is shared, do not modify it)."""
  return _variable_shapes(json.dumps(model_config.to_dict(), sort_keys=True, default=str), img_size)


@functools.lru_cache(maxsize=16)
def _variable_shapes(config_json: str, img_size: int):
  module = anchor_free.build(ml_collections.ConfigDict(json.loads(config_json)))
  return jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, img_size, img_size, 3)))


def init_variables(model_config, rng=None, img_size: int = 64):
  """Freshly initialised variables (one compiled init)."""
  module = anchor_free.build(model_config)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  return jax.jit(module.init)(rng, jnp.zeros((1, img_size, img_size, 3), jnp.float32))


def _fresh_value(collection: str, path: tuple[str, ...], shape, model_config, rng) -> np.ndarray:
  """A freshly initialised value for one leaf, drawn in numpy from the module's own init
  distributions (conv kernels U(±1/sqrt(fan_in)) as layers.torch_conv_init, BatchNorm 1/0, the Detect
  biases anchor_free.BOX_BIAS / class_bias): no XLA compile, which for even the head alone costs
  seconds."""
  leaf, owner = path[-1], path[-2]
  if collection == 'batch_stats':
    return np.ones(shape, np.float32) if leaf == 'var' else np.zeros(shape, np.float32)
  if leaf == 'kernel':
    limit = 1.0 / np.sqrt(float(np.prod(shape[:-1])))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)
  if leaf == 'scale':
    return np.ones(shape, np.float32)
  m = re.fullmatch(r'cv([23])_(\d+)_2', owner)
  if leaf == 'bias' and m:  # the final 1×1 convs of the Detect branches
    if m.group(1) == '2':
      return np.full(shape, anchor_free.BOX_BIAS, np.float32)
    stride = anchor_free.strides(model_config)[int(m.group(2))]
    return np.full(shape, anchor_free.class_bias(int(model_config.num_classes), stride), np.float32)
  return np.zeros(shape, np.float32)


def _checkpoint_classes(state_dict, det: int) -> int | None:
  key = f'model.{det}.cv3.0.2.bias'
  return int(np.shape(state_dict[key])[0]) if key in state_dict else None


def from_ultralytics_state_dict(state_dict: Mapping[str, np.ndarray], model_config, rng=None) -> dict:
  """Flax variables ({'params', 'batch_stats'}) for `model_config` (arch yolov8 / yolo11) from an
  ultralytics state dict.

  Every key must be used and every shape must fit, with one exception: when the checkpoint's class
  count differs from the config's (e.g. COCO nc=80 weights into nc=7), the class-branch tensors whose
  shape depends on it (the final class convs, and the class-branch width max(ch0, min(nc, 100)) where it
  changes) keep their fresh initialisation; that is logged.
  """
  if not models.is_anchor_free(model_config):
    raise ValueError(f'from_ultralytics_state_dict: model.arch must be one of {models.ANCHOR_FREE}')
  template = flax.core.unfreeze(variable_shapes(model_config))
  det = _detect_index(model_config)
  nc = int(model_config.num_classes)
  src_nc = _checkpoint_classes(state_dict, det)
  transfer = src_nc is not None and src_nc != nc
  np_rng = np.random.default_rng(
      0 if rng is None else np.asarray(jax.random.key_data(rng)).astype(np.uint64).ravel().tolist())
  consumed: set[str] = set()
  kept_fresh: list[str] = []
  flat = {}
  for collection in ('params', 'batch_stats'):
    for path, target in flax.traverse_util.flatten_dict(template.get(collection, {})).items():
      key = torch_key(collection, path)
      if key not in state_dict:
        raise ConversionError(f'{key}: missing from the state dict (needed for {collection}/{"/".join(path)})')
      src = _from_torch_layout(np.asarray(state_dict[key]))
      consumed.add(key)
      if src.shape != target.shape:
        if transfer and key.startswith(f'model.{det}.cv3.'):
          src = _fresh_value(collection, path, target.shape, model_config, np_rng)
          kept_fresh.append(key)
        else:
          want = _to_torch_layout(np.empty(target.shape, np.float32)).shape
          raise ConversionError(f'{key}: shape {tuple(np.shape(state_dict[key]))} in the state dict, '
                                f'the model needs {want}')
      flat[(collection,) + path] = jnp.asarray(src, dtype=target.dtype)

  dkey = dfl_key(model_config)
  if dkey not in state_dict:
    raise ConversionError(f'{dkey}: missing from the state dict (the fixed DFL projection)')
  got = np.asarray(state_dict[dkey], np.float32)
  if got.shape != _dfl_weight().shape or not np.array_equal(got, _dfl_weight()):
    raise ConversionError(f'{dkey}: expected the fixed arange({anchor_free.REG_MAX}) projection of shape '
                          f'{_dfl_weight().shape}, got shape {got.shape}')
  consumed.add(dkey)
  unused = sorted((k for k in state_dict if k not in consumed and not k.endswith('num_batches_tracked')),
                  key=_torch_order)
  if unused:
    raise ConversionError(f'{unused[0]}: not used by the configured model '
                          f'({len(unused)} unused keys: {unused[:5]}{" …" if len(unused) > 5 else ""})')
  stray = [k for k in state_dict if k.endswith('num_batches_tracked')
           and k.replace('num_batches_tracked', 'running_var') not in consumed]
  if stray:
    raise ConversionError(f'{stray[0]}: not used by the configured model (no BatchNorm there)')
  if kept_fresh:
    log.warning('class count %d in the checkpoint, %d in the config: loaded everything but %d '
                'class-branch tensors, which keep their fresh initialisation: %s',
                src_nc, nc, len(kept_fresh), ', '.join(kept_fresh))
  return flax.traverse_util.unflatten_dict(flat)


def to_ultralytics_state_dict(variables, model_config,
                              num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
  """The ultralytics-layout state dict (numpy; float32 tensors, int64 num_batches_tracked) of
  `variables`, keys in PyTorch's order, the DFL projection included."""
  out = torch_tensors(variables, torch_key, num_batches_tracked)
  out[dfl_key(model_config)] = _dfl_weight()
  return {k: out[k] for k in sorted(out, key=_torch_order)}
