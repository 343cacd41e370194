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
  """GFLOPs for one image counted as yolov5's model_info does (thop, then × 2).

  thop counts a convolution as output elements × (k·k·c_in) [+ 1 for a bias], an unfused BatchNorm as
  2 × its elements, and activations, pooling and nearest upsampling as zero; yolov5 doubles the sum.
  Convolutions without bias here are exactly the ones followed by a BatchNorm (CBL).
  """
  _, records = _conv_records(models.build(model_config), img_size)
  ops = 0
  for _, kshape, oshape, bias in records:
    kh, kw, cin, _ = kshape
    numel = int(np.prod(oshape[1:]))
    ops += numel * kh * kw * cin + (numel if bias else 2 * numel)
  return 2 * ops / 1e9


def layer_rows(model_config, img_size: int):
  """One row per layer: (name, kind, sources, output shape, parameter count)."""
  module = models.build(model_config)
  variables = jax.eval_shape(
      lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, img_size, img_size, 3))))
  params = variables['params']
  rows = []
  for L in module.layers:
    name = f'layer_{L.index}'
    n = count_params(params.get(name, {}))
    if L.kind == 'detect':
      nl = len(L.sources)
      no = 5 + model_config.num_classes
      shapes = [(img_size // module.layers[s].stride,) * 2 + (len(module.anchors[0]), no) for s in L.sources]
      shape = ' '.join(str(s) for s in shapes)
    else:
      hw = img_size // L.stride
      shape = str((hw, hw, L.channels))
    rows.append((L.index, L.kind, L.sources, shape, n))
  return rows, count_params(params)
