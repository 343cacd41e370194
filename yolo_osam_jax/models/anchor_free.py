"""The anchor-free YOLO family (YOLOv8, YOLO11) in Flax linen, NHWC, numerically equal to the PyTorch
reference (checked against shared/fixtures/ultralytics_nc7).

Written from the published architecture description (the yaml layer tables and scale tables, the block
definitions) only; no reference code is copied or imported.

As in models/yolo.py the network is a flat layer table whose rows are the yaml rows, so the weight
converter (convert_ultralytics.py) maps `model.<i>.…` keys onto submodules named `layer_<i>`. Inside a
layer, a submodule called `name_<j>[_<k>…]` is the PyTorch child `name.<j>[.<k>…]` (`m_0` ↔ `m.0`,
`cv3_1_0_1` ↔ `cv3.1.0.1`), and Conv blocks have `conv` / `bn` children like PyTorch's.

Activation: SiLU everywhere, always. `model.activation` (whose default 'leaky_relu' is YOLO-OSAM's) is
ignored for this family: the published networks and every checkpoint of them assume SiLU, and a
baseline is only a baseline with its own activation.

BatchNorm: eps 1e-3, momentum 0.03 (PyTorch convention) like models/layers.py, but the running variance
is updated with the *unbiased* batch variance, as PyTorch does (flax's nn.BatchNorm uses the biased
one: on the 4×4 maps of a 128² input at batch 2 that differs by 0.03·var/31 ≈ 1e-3 per step), and the
batch variance is computed in two passes in float32. Parameter and statistic names equal nn.BatchNorm's.

Contract (same as the yolov5 family): `module.apply(variables, images, train=False)` with float32 NHWC
RGB in [0, 1] returns `(predictions, raw)`: raw = per level, strides ascending, `[B, H, W, 4·REG_MAX +
nc]` logits (box-distribution logits side-major l, t, r, b × REG_MAX bins, then nc class logits, in the
compute dtype); predictions `[B, N, 4 + nc]` float32 = (cx, cy, w, h in input pixels, class sigmoid
probabilities), no objectness, levels concatenated, each flattened row-major (y then x).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from yolo_osam_jax.models.layers import (compute_dtype, detection_strides, max_pool_same,
                                         run_layer_table, stride_ascending, torch_conv_init)

INPUT = -1  # source index of the image
REG_MAX = 16  # bins of the box-side distribution (DFL)
ACT = 'silu'
BN_EPS = 1e-3
BN_MOMENTUM = 0.97  # PyTorch momentum 0.03

# The published scale tables: size -> (width multiple, depth multiple, max_channels). The yaml files
# write them as [depth, width, max_channels]; `models.scale_of` reads these (and applies overrides).
SCALES = {
    'yolov8': {
        'n': (0.25, 0.33, 1024),
        's': (0.50, 0.33, 1024),
        'm': (0.75, 0.67, 768),
        'l': (1.00, 1.00, 512),
        'x': (1.25, 1.00, 512),
    },
    'yolo11': {
        'n': (0.25, 0.50, 1024),
        's': (0.50, 0.50, 1024),
        'm': (1.00, 0.50, 512),
        'l': (1.00, 1.00, 512),
        'x': (1.50, 1.00, 512),
    },
}
# YOLO11's C3k2 rows use C3k blocks at these sizes whatever the yaml row says (the published parser).
C3K_SIZES = ('m', 'l', 'x')


def fixed_parameter_count(model_config) -> int:  # pylint: disable=unused-argument
  """Parameters PyTorch counts that are constants here: the DFL projection (REG_MAX weights)."""
  return REG_MAX


# --------------------------------------------------------------------------------------------------
# Layers


class BatchNorm(nn.Module):
  """nn.BatchNorm's variables and eval math; training updates running_var with the unbiased batch
  variance as PyTorch does (see the module docstring)."""
  use_running_average: bool = True
  momentum: float = BN_MOMENTUM
  epsilon: float = BN_EPS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(jnp.float32)
      mean = jnp.mean(xf, axis=axes)
      var = jnp.mean(jnp.square(xf - mean), axis=axes)
      n = x.size // c
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var * (n / max(n - 1, 1))
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    y = (x.astype(jnp.float32) - mean) * mul + bias if self.dtype == jnp.float32 else (
        (x - mean.astype(self.dtype)) * mul.astype(self.dtype) + bias.astype(self.dtype))
    return y.astype(self.dtype)


class Conv(nn.Module):
  """Conv (no bias, padding k // 2, optional groups) → BatchNorm → SiLU (or none); ultralytics' Conv."""
  features: int
  kernel: int = 1
  stride: int = 1
  groups: int = 1
  act: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    p = self.kernel // 2
    x = nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                padding=((p, p), (p, p)), feature_group_count=self.groups, use_bias=False,
                kernel_init=torch_conv_init, dtype=self.dtype, name='conv')(x)
    x = BatchNorm(use_running_average=not train, dtype=self.dtype, name='bn')(x)
    return nn.silu(x) if self.act else x


class Bottleneck(nn.Module):
  """k1×k1 Conv to `hidden`, k2×k2 Conv back to `features`, residual when shapes allow."""
  features: int
  hidden: int
  shortcut: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = Conv(self.hidden, 3, dtype=self.dtype, name='cv1')(x, train)
    y = Conv(self.features, 3, dtype=self.dtype, name='cv2')(y, train)
    return x + y if self.shortcut and x.shape[-1] == self.features else y


class C3k(nn.Module):
  """CSP block with three Convs and n 3×3/3×3 Bottlenecks at half width (YOLO11's inner block)."""
  features: int
  n: int = 2
  shortcut: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    hidden = int(self.features * 0.5)
    a = Conv(hidden, 1, dtype=self.dtype, name='cv1')(x, train)
    for j in range(self.n):
      a = Bottleneck(hidden, hidden, self.shortcut, self.dtype, name=f'm_{j}')(a, train)
    b = Conv(hidden, 1, dtype=self.dtype, name='cv2')(x, train)
    return Conv(self.features, 1, dtype=self.dtype, name='cv3')(jnp.concatenate([a, b], -1), train)


class C2f(nn.Module):
  """1×1 Conv to 2c, split in halves, n blocks chained on the second half, every output concatenated,
  1×1 Conv. `block`: 'c2f' = Bottleneck(c, c) (YOLOv8), 'c3k2' = Bottleneck(c, c/2) (YOLO11), 'c3k' =
  C3k(c, n=2) (YOLO11 with c3k)."""
  features: int
  n: int = 1
  shortcut: bool = False
  expansion: float = 0.5
  block: str = 'c2f'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = int(self.features * self.expansion)
    y = Conv(2 * c, 1, dtype=self.dtype, name='cv1')(x, train)
    ys = [y[..., :c], y[..., c:]]
    for j in range(self.n):
      if self.block == 'c3k':
        m = C3k(c, 2, self.shortcut, self.dtype, name=f'm_{j}')
      else:
        m = Bottleneck(c, c if self.block == 'c2f' else int(c * 0.5), self.shortcut, self.dtype,
                       name=f'm_{j}')
      ys.append(m(ys[-1], train))
    return Conv(self.features, 1, dtype=self.dtype, name='cv2')(jnp.concatenate(ys, -1), train)


class SPPF(nn.Module):
  """1×1 Conv to c/2, three chained k×k max-pools, concat, 1×1 Conv."""
  features: int
  k: int = 5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = Conv(x.shape[-1] // 2, 1, dtype=self.dtype, name='cv1')(x, train)
    y1 = max_pool_same(x, self.k)
    y2 = max_pool_same(y1, self.k)
    y3 = max_pool_same(y2, self.k)
    return Conv(self.features, 1, dtype=self.dtype, name='cv2')(
        jnp.concatenate([x, y1, y2, y3], axis=-1), train)


class Attention(nn.Module):
  """Multi-head self-attention over positions with a depthwise 3×3 positional conv on the values.

  qkv: 1×1 Conv (no act) to heads·(2·key_dim + head_dim) channels, grouped per head as
  [q key_dim, k key_dim, v head_dim]; softmax(qᵀk · key_dim^-0.5) over key positions; out = v·attnᵀ +
  pe(v); then a 1×1 Conv (no act)."""
  num_heads: int
  attn_ratio: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    b, h, w, c = x.shape
    head_dim = c // self.num_heads
    key_dim = int(head_dim * self.attn_ratio)
    scale = key_dim ** -0.5
    nh = self.num_heads
    qkv = Conv(c + 2 * key_dim * nh, 1, act=False, dtype=self.dtype, name='qkv')(x, train)
    qkv = qkv.reshape(b, h * w, nh, 2 * key_dim + head_dim)
    q, k, v = (qkv[..., :key_dim], qkv[..., key_dim:2 * key_dim], qkv[..., 2 * key_dim:])
    logits = jnp.einsum('bihd,bjhd->bhij', q, k, preferred_element_type=jnp.float32) * scale
    attn = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum('bhij,bjhd->bihd', attn, v).reshape(b, h, w, c)
    v_map = v.reshape(b, h, w, c)
    out = out + Conv(c, 3, groups=c, act=False, dtype=self.dtype, name='pe')(v_map, train)
    return Conv(c, 1, act=False, dtype=self.dtype, name='proj')(out, train)


class PSABlock(nn.Module):
  """x + Attention(x), then x + FFN(x) with FFN = 1×1 Conv to 2c (SiLU) → 1×1 Conv (no act)."""
  num_heads: int
  attn_ratio: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    x = x + Attention(self.num_heads, self.attn_ratio, self.dtype, name='attn')(x, train)
    y = Conv(2 * c, 1, dtype=self.dtype, name='ffn_0')(x, train)
    y = Conv(c, 1, act=False, dtype=self.dtype, name='ffn_1')(y, train)
    return x + y


class C2PSA(nn.Module):
  """1×1 Conv to 2c, n PSABlocks (c // 64 heads) on the second half, concat, 1×1 Conv back."""
  features: int
  n: int = 1
  expansion: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.shape[-1] != self.features:
      raise ValueError(f'C2PSA needs equal input and output channels, got {x.shape[-1]} → {self.features}')
    c = int(self.features * self.expansion)
    y = Conv(2 * c, 1, dtype=self.dtype, name='cv1')(x, train)
    a, t = y[..., :c], y[..., c:]
    for j in range(self.n):
      t = PSABlock(max(c // 64, 1), 0.5, self.dtype, name=f'm_{j}')(t, train)
    return Conv(self.features, 1, dtype=self.dtype, name='cv2')(jnp.concatenate([a, t], -1), train)


def head_widths(ch0: int, num_classes: int) -> tuple[int, int]:
  """(box branch width c2, class branch width c3) of the Detect head from its first input's channels."""
  return max(16, ch0 // 4, 4 * REG_MAX), max(ch0, min(num_classes, 100))


def class_bias(num_classes: int, stride: int) -> float:
  """Initial class logit: ~5 objects per 640² image spread over the classes."""
  return math.log(5 / num_classes / (640 / stride) ** 2)


BOX_BIAS = 2.0  # initial box-distribution logits


class Detect(nn.Module):
  """Per level: box branch (3×3 Conv, 3×3 Conv, 1×1 conv → 4·REG_MAX) and class branch (legacy: 3×3
  Conv, 3×3 Conv; else [depthwise 3×3 Conv, 1×1 Conv] × 2; then 1×1 conv → nc). Returns raw
  [B, H, W, 4·REG_MAX + nc] per level, in the order of its inputs."""
  num_classes: int
  strides: tuple[int, ...]
  legacy: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs, train: bool = False):
    c2, c3 = head_widths(xs[0].shape[-1], self.num_classes)
    kw = dict(dtype=self.dtype)
    outs = []
    for i, (x, stride) in enumerate(zip(xs, self.strides)):
      box = Conv(c2, 3, name=f'cv2_{i}_0', **kw)(x, train)
      box = Conv(c2, 3, name=f'cv2_{i}_1', **kw)(box, train)
      box = nn.Conv(4 * REG_MAX, (1, 1), use_bias=True, kernel_init=torch_conv_init,
                    bias_init=nn.initializers.constant(BOX_BIAS), name=f'cv2_{i}_2', **kw)(box)
      if self.legacy:
        cls = Conv(c3, 3, name=f'cv3_{i}_0', **kw)(x, train)
        cls = Conv(c3, 3, name=f'cv3_{i}_1', **kw)(cls, train)
      else:
        cls = x
        for j in range(2):
          cin = cls.shape[-1]
          cls = Conv(cin, 3, groups=cin, name=f'cv3_{i}_{j}_0', **kw)(cls, train)
          cls = Conv(c3, 1, name=f'cv3_{i}_{j}_1', **kw)(cls, train)
      cls = nn.Conv(self.num_classes, (1, 1), use_bias=True, kernel_init=torch_conv_init,
                    bias_init=nn.initializers.constant(class_bias(self.num_classes, stride)),
                    name=f'cv3_{i}_2', **kw)(cls)
      outs.append(jnp.concatenate([box, cls], axis=-1))
    return outs


# --------------------------------------------------------------------------------------------------
# Layer table


@dataclasses.dataclass(frozen=True)
class LayerDef:
  index: int
  sources: tuple[int, ...]
  kind: str                 # conv | c2f | c3k2 | sppf | c2psa | upsample | concat | detect
  channels: int             # output channels (0 for detect)
  stride: int               # output stride relative to the input image
  kernel: int = 1
  conv_stride: int = 1
  n: int = 1
  shortcut: bool = True
  c3k: bool = False
  expansion: float = 0.5
  factor: int = 2


def make_divisible(x: float, divisor: int = 8) -> int:
  return int(math.ceil(x / divisor) * divisor)


class _TableBuilder:
  """Appends layers in yaml order, scaling channels (capped at max_channels) and repeats."""

  def __init__(self, width: float, depth: float, max_channels: int | None):
    self.width, self.depth, self.max_channels = width, depth, max_channels
    self.layers: list[LayerDef] = []

  def _add(self, sources, kind, channels, stride, **kw) -> int:
    index = len(self.layers)
    self.layers.append(LayerDef(index, tuple(sources), kind, channels, stride, **kw))
    return index

  def channels(self, c: int) -> int:
    c = c if self.max_channels is None else min(c, self.max_channels)
    return make_divisible(c * self.width, 8)

  def repeats(self, n: int) -> int:
    return max(round(n * self.depth), 1) if n > 1 else n

  def ch(self, i):
    return self.layers[i].channels

  def st(self, i):
    return 1 if i == INPUT else self.layers[i].stride

  def conv(self, src, c, k, s):
    return self._add([src], 'conv', self.channels(c), self.st(src) * s, kernel=k, conv_stride=s)

  def c2f(self, src, c, n, shortcut=False):
    return self._add([src], 'c2f', self.channels(c), self.st(src), n=self.repeats(n), shortcut=shortcut)

  def c3k2(self, src, c, n, c3k, e=0.5):
    return self._add([src], 'c3k2', self.channels(c), self.st(src), n=self.repeats(n), shortcut=True,
                     c3k=c3k, expansion=e)

  def sppf(self, src, c, k=5):
    return self._add([src], 'sppf', self.channels(c), self.st(src), kernel=k)

  def c2psa(self, src, c, n):
    return self._add([src], 'c2psa', self.channels(c), self.st(src), n=self.repeats(n))

  def upsample(self, src, factor=2):
    return self._add([src], 'upsample', self.ch(src), self.st(src) // factor, factor=factor)

  def concat(self, *srcs):
    return self._add(srcs, 'concat', sum(self.ch(s) for s in srcs), self.st(srcs[0]))

  def detect(self, srcs):
    return self._add(srcs, 'detect', 0, 0)


def _yolov8(t: _TableBuilder) -> None:
  x = t.conv(INPUT, 64, 3, 2)           # 0  P1/2
  x = t.conv(x, 128, 3, 2)              # 1  P2/4
  x = t.c2f(x, 128, 3, True)            # 2
  x = t.conv(x, 256, 3, 2)              # 3  P3/8
  p3 = t.c2f(x, 256, 6, True)           # 4
  x = t.conv(p3, 512, 3, 2)             # 5  P4/16
  p4 = t.c2f(x, 512, 6, True)           # 6
  x = t.conv(p4, 1024, 3, 2)            # 7  P5/32
  x = t.c2f(x, 1024, 3, True)           # 8
  p5 = t.sppf(x, 1024, 5)               # 9
  x = t.concat(t.upsample(p5), p4)      # 10, 11
  h12 = t.c2f(x, 512, 3)                # 12
  x = t.concat(t.upsample(h12), p3)     # 13, 14
  n3 = t.c2f(x, 256, 3)                 # 15 (P3/8)
  x = t.concat(t.conv(n3, 256, 3, 2), h12)  # 16, 17
  n4 = t.c2f(x, 512, 3)                 # 18 (P4/16)
  x = t.concat(t.conv(n4, 512, 3, 2), p5)   # 19, 20
  n5 = t.c2f(x, 1024, 3)                # 21 (P5/32)
  t.detect([n3, n4, n5])                # 22


def _yolo11(t: _TableBuilder, c3k_forced: bool) -> None:
  k = lambda c3k: c3k or c3k_forced  # noqa: E731
  x = t.conv(INPUT, 64, 3, 2)           # 0  P1/2
  x = t.conv(x, 128, 3, 2)              # 1  P2/4
  x = t.c3k2(x, 256, 2, k(False), 0.25)  # 2
  x = t.conv(x, 256, 3, 2)              # 3  P3/8
  p3 = t.c3k2(x, 512, 2, k(False), 0.25)  # 4
  x = t.conv(p3, 512, 3, 2)             # 5  P4/16
  p4 = t.c3k2(x, 512, 2, k(True))       # 6
  x = t.conv(p4, 1024, 3, 2)            # 7  P5/32
  x = t.c3k2(x, 1024, 2, k(True))       # 8
  x = t.sppf(x, 1024, 5)                # 9
  p5 = t.c2psa(x, 1024, 2)              # 10
  x = t.concat(t.upsample(p5), p4)      # 11, 12
  h13 = t.c3k2(x, 512, 2, k(False))     # 13
  x = t.concat(t.upsample(h13), p3)     # 14, 15
  n3 = t.c3k2(x, 256, 2, k(False))      # 16 (P3/8)
  x = t.concat(t.conv(n3, 256, 3, 2), h13)  # 17, 18
  n4 = t.c3k2(x, 512, 2, k(False))      # 19 (P4/16)
  x = t.concat(t.conv(n4, 512, 3, 2), p5)   # 20, 21
  n5 = t.c3k2(x, 1024, 2, k(True))      # 22 (P5/32)
  t.detect([n3, n4, n5])                # 23


def layer_table(model_config) -> tuple[LayerDef, ...]:
  """The layer table of the configured network (yaml base channels, scaled and capped)."""
  from yolo_osam_jax import models  # pylint: disable=g-import-not-at-top (the registry imports us)
  arch = models.arch_of(model_config)
  if arch not in SCALES:
    raise ValueError(f'anchor_free: arch must be one of {", ".join(SCALES)}, got {arch!r}')
  width, depth, max_channels = models.scale_of(model_config)
  t = _TableBuilder(width, depth, max_channels)
  if arch == 'yolov8':
    _yolov8(t)
  else:
    _yolo11(t, (model_config.get('size', None) or 's') in C3K_SIZES)
  return tuple(t.layers)


def strides(model_config) -> tuple[int, ...]:
  """The Detect levels' strides, ascending: (8, 16, 32)."""
  table = layer_table(model_config)
  return tuple(sorted(table[s].stride for s in table[-1].sources))


def is_legacy_head(model_config) -> bool:
  """YOLOv8's class branch is two 3×3 Convs; YOLO11's is two depthwise-separable pairs."""
  from yolo_osam_jax import models  # pylint: disable=g-import-not-at-top
  return models.arch_of(model_config) == 'yolov8'


# --------------------------------------------------------------------------------------------------
# Decoding and the module


def make_anchor_points(h: int, w: int) -> jax.Array:
  """Cell centres (x + 0.5, y + 0.5) in grid units, [H·W, 2], row-major (y then x)."""
  gy, gx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5, jnp.arange(w, dtype=jnp.float32) + 0.5,
                        indexing='ij')
  return jnp.stack([gx, gy], axis=-1).reshape(h * w, 2)


def anchors_of(level_shapes, level_strides) -> tuple[jax.Array, jax.Array]:
  """All levels' anchor points in grid units [N, 2] and their strides [N, 1], levels concatenated in
  the given order (strides ascending for `raw`), each row-major: the N axis of the predictions.
  `level_shapes`: (H, W) per level (e.g. `[r.shape[1:3] for r in raw]`)."""
  points = [make_anchor_points(h, w) for h, w in level_shapes]
  stride = [jnp.full((h * w, 1), s, jnp.float32) for (h, w), s in zip(level_shapes, level_strides)]
  return jnp.concatenate(points, axis=0), jnp.concatenate(stride, axis=0)


def dfl_expectation(box_logits) -> jax.Array:
  """[..., 4·REG_MAX] side-major logits → [..., 4] expected distances (l, t, r, b) in grid units."""
  x = box_logits.astype(jnp.float32).reshape(box_logits.shape[:-1] + (4, REG_MAX))
  p = jax.nn.softmax(x, axis=-1)
  return jnp.sum(p * jnp.arange(REG_MAX, dtype=jnp.float32), axis=-1)


def decode(raw_level, stride: int) -> jax.Array:
  """One level [B, H, W, 4·REG_MAX + nc] → [B, H·W, 4 + nc] float32 (cx, cy, w, h px, class probs)."""
  b, h, w, no = raw_level.shape
  raw = raw_level.astype(jnp.float32).reshape(b, h * w, no)
  dist = dfl_expectation(raw[..., :4 * REG_MAX])
  anchors = make_anchor_points(h, w)[None]
  x1y1 = anchors - dist[..., :2]
  x2y2 = anchors + dist[..., 2:]
  cxy = (x1y1 + x2y2) / 2
  wh = x2y2 - x1y1
  return jnp.concatenate([cxy * stride, wh * stride, jax.nn.sigmoid(raw[..., 4 * REG_MAX:])], axis=-1)


class AnchorFreeYOLO(nn.Module):
  """The detector. `__call__(images, train)` → (predictions [B, N, 4+nc], raw list by stride ascending)."""
  layers: tuple[LayerDef, ...]
  num_classes: int
  legacy_head: bool = False
  dtype: Any = jnp.float32

  @property
  def strides(self) -> tuple[int, ...]:
    """Detection strides, ascending (the order of `raw`)."""
    return detection_strides(self.layers)

  def _layer(self, L: LayerDef):
    kw = dict(dtype=self.dtype, name=f'layer_{L.index}')
    if L.kind == 'conv':
      return Conv(L.channels, L.kernel, L.conv_stride, **kw)
    if L.kind == 'c2f':
      return C2f(L.channels, L.n, L.shortcut, L.expansion, 'c2f', **kw)
    if L.kind == 'c3k2':
      return C2f(L.channels, L.n, L.shortcut, L.expansion, 'c3k' if L.c3k else 'c3k2', **kw)
    if L.kind == 'sppf':
      return SPPF(L.channels, L.kernel, **kw)
    if L.kind == 'c2psa':
      return C2PSA(L.channels, L.n, **kw)
    raise ValueError(f'layer {L.index}: unknown kind {L.kind!r}')

  @nn.compact
  def __call__(self, images, train: bool = False):
    head_inputs, head_strides = run_layer_table(self.layers, images.astype(self.dtype), self._layer,
                                                train)
    raw = stride_ascending(Detect(self.num_classes, head_strides, self.legacy_head, dtype=self.dtype,
                                  name=f'layer_{self.layers[-1].index}')(head_inputs, train), head_strides)
    level_strides = sorted(head_strides)
    predictions = jnp.concatenate([decode(r, s) for r, s in zip(raw, level_strides)], axis=1)
    return predictions, raw


def build(model_config) -> AnchorFreeYOLO:
  """The YOLOv8 / YOLO11 module for `config.model` (`models.build` dispatches here by arch)."""
  nc = int(model_config.num_classes)
  if nc < 1:
    raise ValueError(f'model.num_classes must be ≥ 1, got {nc}')
  return AnchorFreeYOLO(layers=layer_table(model_config), num_classes=nc,
                        legacy_head=is_legacy_head(model_config),
                        dtype=compute_dtype(model_config.get('dtype', None) or 'float32'))


def neck_layers(model_config) -> tuple[int, ...]:
  """Indices of the layers whose outputs enter the Detect head, in Detect order."""
  return layer_table(model_config)[-1].sources


def layer_param_counts(model_config, img_size: int = 64) -> list[tuple[int, str, int]]:
  """(index, kind, trainable parameter count) per layer, from shapes only (no compile); the Detect row
  includes the fixed DFL weights as PyTorch counts them."""
  module = build(model_config)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, img_size, img_size, 3), jnp.float32))
  params = shapes['params']
  rows = []
  for L in module.layers:
    n = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params.get(f'layer_{L.index}', {}))))
    if L.kind == 'detect':
      n += fixed_parameter_count(model_config)
    rows.append((L.index, L.kind, n))
  return rows
