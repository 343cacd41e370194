"""Model size and cost: per-layer table, parameter count, GFLOPs (the numbers yolov5's model_info prints)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from yolo_osam_jax import models


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def _conv_records(module, img_size: int):
  """(module path, kernel shape, output shape, has bias) of every nn.Conv, traced abstractly."""
  records = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, nn.Conv) and context.method_name == '__call__':
      k = context.module.variables['params']['kernel']
      records.append(('/'.join(context.module.path), tuple(k.shape), tuple(out.shape),
                      context.module.use_bias))
    return out

  def run():
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, img_size, img_size, 3)))
    with nn.intercept_methods(interceptor):
      module.apply(variables, jnp.zeros((1, img_size, img_size, 3)))
    return variables

  variables = jax.eval_shape(run)
  return variables, records


def gflops(model_config, img_size: int) -> float:
  """GFLOPs for one image counted as yolov5's and ultralytics' model info do (thop, then × 2).

  thop counts a convolution as output elements × (k·k·c_in / groups) multiply-adds (its bias is free),
  an affine BatchNorm as 4 × its elements (2 for normalising, × 2 for the affine part), and
  activations, pooling, nearest upsampling and functional ops (the attention matmuls, the DFL
  expectation) as zero; the total is doubled. Convolutions without bias here are exactly the ones
  followed by a BatchNorm.
  """
  _, records = _conv_records(models.build(model_config), img_size)
  ops = 0
  for _, kshape, oshape, bias in records:
    kh, kw, cin_per_group, _ = kshape
    numel = int(np.prod(oshape[1:]))
    ops += numel * kh * kw * cin_per_group + (0 if bias else 4 * numel)
  return 2 * ops / 1e9


def fixed_parameter_count(model_config) -> int:
  """Parameters the PyTorch original counts that are constants here: the anchor-free head's DFL
  projection (16 fixed weights, not trained, so not a Flax param); 0 for the other families."""
  if models.is_anchor_free(model_config):
    from yolo_osam_jax.models import anchor_free  # pylint: disable=g-import-not-at-top
    return anchor_free.fixed_parameter_count(model_config)
  return 0


def layer_rows(model_config, img_size: int):
  """One row per layer: (name, kind, sources, output shape, parameter count), and the total parameter
  count as the PyTorch original counts it (`fixed_parameter_count` included, on the Detect row)."""
  module = models.build(model_config)
  variables = jax.eval_shape(
      lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, img_size, img_size, 3))))
  params = variables['params']
  nc = int(model_config.num_classes)
  fixed = fixed_parameter_count(model_config)
  if models.is_anchor_free(model_config):
    from yolo_osam_jax.models import anchor_free  # pylint: disable=g-import-not-at-top
    per_cell = (4 * anchor_free.REG_MAX + nc,)  # box-distribution logits, then class logits
  else:
    per_cell = (len(module.anchors[0]), 5 + nc)
  rows = []
  for L in module.layers:
    n = count_params(params.get(f'layer_{L.index}', {}))
    if L.kind == 'detect':
      n += fixed
      shape = ' '.join(str((img_size // module.layers[s].stride,) * 2 + per_cell) for s in L.sources)
    else:
      hw = img_size // L.stride
      shape = str((hw, hw, L.channels))
    rows.append((L.index, L.kind, L.sources, shape, n))
  return rows, count_params(params) + fixed
