"""YOLOv5 building blocks in Flax linen, NHWC, numerically equal to the PyTorch originals.

Padding is always explicit (k // 2 unless stated) because PyTorch pads symmetrically while XLA's "SAME"
pads the extra pixel on the bottom/right for even inputs with stride 2; explicit padding keeps both
equal. BatchNorm uses yolov5's eps 1e-3 and momentum 0.03 (flax momentum = 1 − 0.03).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_EPS = 1e-3
BN_MOMENTUM = 0.97  # PyTorch momentum 0.03
# Batch variance in training: flax's default E[x²] − E[x]² (True) or two-pass mean((x − mean)²) as
# PyTorch computes it (False). The fast form loses digits when |mean| ≫ std: one train step on 8 devices
# differs from 1 device by 1.1e-2 relative with it and by 1.1e-4 with two passes (measured). Two passes
# are the better default, but they change training trajectories, and the seed-tuned trained-model tests
# (overfit to mAP50 ≥ 0.9, the prediction fixture) need re-tuning first; until then the fast form stays.
BN_FAST_VARIANCE = True

# PyTorch's default Conv2d init (kaiming_uniform with a = sqrt(5)) is U(±1/sqrt(fan_in)), i.e. variance
# 1/(3·fan_in); keeping it makes from-scratch training behave like the reference code.
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'leaky_relu': lambda x: nn.leaky_relu(x, negative_slope=0.01),
    'silu': nn.silu,
    'relu': nn.relu,
}


DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def compute_dtype(name: str):
  """The jnp dtype of `model.dtype` (the compute dtype; parameters stay float32)."""
  if name not in DTYPES:
    raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}, got {name!r}")
  return DTYPES[name]


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ValueError(f"model.activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
  return ACTIVATIONS[name]


class CBL(nn.Module):
  """Conv (no bias) → BatchNorm → activation; yolov5's `Conv`."""
  features: int
  kernel: int = 1
  stride: int = 1
  padding: int | None = None  # None = kernel // 2
  act: str | None = 'leaky_relu'  # None = no activation
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    p = self.kernel // 2 if self.padding is None else self.padding
    x = nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                padding=((p, p), (p, p)), use_bias=False, kernel_init=torch_conv_init,
                dtype=self.dtype, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                     use_fast_variance=BN_FAST_VARIANCE, dtype=self.dtype, name='bn')(x)
    return x if self.act is None else activation_fn(self.act)(x)


class Bottleneck(nn.Module):
  features: int
  shortcut: bool = True
  act: str = 'leaky_relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = CBL(self.features, 1, act=self.act, dtype=self.dtype, name='cv1')(x, train)
    y = CBL(self.features, 3, act=self.act, dtype=self.dtype, name='cv2')(y, train)
    return x + y if self.shortcut and x.shape[-1] == self.features else y


class C3(nn.Module):
  """CSP bottleneck with three convolutions: two 1×1 branches, n Bottlenecks on the first, concat, 1×1."""
  features: int
  n: int = 1
  shortcut: bool = True
  act: str = 'leaky_relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    hidden = self.features // 2
    a = CBL(hidden, 1, act=self.act, dtype=self.dtype, name='cv1')(x, train)
    for j in range(self.n):
      a = Bottleneck(hidden, self.shortcut, self.act, self.dtype, name=f'm_{j}')(a, train)
    b = CBL(hidden, 1, act=self.act, dtype=self.dtype, name='cv2')(x, train)
    return CBL(self.features, 1, act=self.act, dtype=self.dtype, name='cv3')(
        jnp.concatenate([a, b], axis=-1), train)


def max_pool_same(x, k: int):
  """k×k max-pool, stride 1, k // 2 padding on every side (PyTorch's MaxPool2d(k, 1, k // 2)).

  For odd k, 'SAME' is exactly that padding (and -inf pads, as PyTorch); written this way because
  jax2onnx's flax max_pool converter accepts only string paddings.
  """
  if k % 2 != 1:
    raise ValueError(f'SPPF pooling needs an odd kernel, got {k}')
  return nn.max_pool(x, window_shape=(k, k), strides=(1, 1), padding='SAME')


class SPPF(nn.Module):
  """Spatial pyramid pooling, fast: three chained k×k max-pools, concat with the input, 1×1."""
  features: int
  k: int = 5
  act: str = 'leaky_relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = CBL(x.shape[-1] // 2, 1, act=self.act, dtype=self.dtype, name='cv1')(x, train)
    y1 = max_pool_same(x, self.k)
    y2 = max_pool_same(y1, self.k)
    y3 = max_pool_same(y2, self.k)
    return CBL(self.features, 1, act=self.act, dtype=self.dtype, name='cv2')(
        jnp.concatenate([x, y1, y2, y3], axis=-1), train)


def upsample_nearest(x, factor: int = 2):
  if factor == 1:
    return x
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def concat(xs: Sequence[jax.Array]):
  return jnp.concatenate(list(xs), axis=-1)


def run_layer_table(layers, images, make_layer, train: bool):
  """Runs a layer table (models/yolo.py, models/anchor_free.py): every row but the last, the head, in
  order, each reading its `sources` (-1 = the image); upsample and concat rows are plain functions, the
  others the module `make_layer(row)` returns. Returns (the head's inputs in its order, their strides)."""
  outputs = []
  for L in layers[:-1]:
    ins = [images if s == -1 else outputs[s] for s in L.sources]
    if L.kind == 'upsample':
      y = upsample_nearest(ins[0], L.factor)
    elif L.kind == 'concat':
      y = concat(ins)
    else:
      y = make_layer(L)(ins[0], train)
    outputs.append(y)
  head = layers[-1]
  return [outputs[s] for s in head.sources], tuple(layers[s].stride for s in head.sources)


def detection_strides(layers) -> tuple[int, ...]:
  """The strides of a layer table's head inputs, ascending (the order of a detector's `raw`)."""
  return tuple(sorted(layers[s].stride for s in layers[-1].sources))


def stride_ascending(per_input, input_strides):
  """`per_input` (one entry per head input, in the head's order) re-ordered by stride, ascending."""
  return [per_input[input_strides.index(s)] for s in sorted(input_strides)]
