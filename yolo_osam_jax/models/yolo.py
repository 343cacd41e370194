"""YOLOv5 / YOLO-OSAM: CSPDarknet53 backbone, PANet neck, optional stride-4 fusion branch, Detect head.

The network is described as a flat layer table, like yolov5's yaml: every layer has an index, the
indices of its inputs, a kind and its arguments. The Flax module runs the table; the weight converter
maps `model.<index>.…` keys onto submodules named `layer_<index>`. For the two published networks the
table reproduces their indices exactly (yolov5s: Detect at 24; yolov5new/YOLO-OSAM: SPEC §2.1, Detect at
32), so published weights load one-to-one; other variants are numbered the same way, in build order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from yolo_osam_jax.models import attention as attention_lib
from yolo_osam_jax.models import heads
from yolo_osam_jax.models.layers import (C3, CBL, SPPF, compute_dtype, detection_strides,
                                         run_layer_table, stride_ascending, torch_conv_init)

INPUT = -1  # source index of the image

# yolov5's scale table: size -> (width multiple, depth multiple, max_channels); `models.scale_of` reads
# it. yolov5 has no channel cap (None); s is the paper's size.
SCALES = {'yolo_osam': {
    'n': (0.25, 0.33, None),
    's': (0.50, 0.33, None),
    'm': (0.75, 0.67, None),
    'l': (1.00, 1.00, None),
    'x': (1.25, 1.33, None),
}}


@dataclasses.dataclass(frozen=True)
class LayerDef:
  index: int
  sources: tuple[int, ...]
  kind: str                    # cbl | c3 | sppf | upsample | concat | attention | detect
  channels: int                # output channels (0 for detect)
  stride: int                  # output stride relative to the input image
  kernel: int = 1
  conv_stride: int = 1
  padding: int | None = None
  n: int = 1
  shortcut: bool = True
  factor: int = 2


def make_divisible(x: float, divisor: int = 8) -> int:
  return int(math.ceil(x / divisor) * divisor)


class _TableBuilder:
  """Appends layers in yaml order and tracks channels/strides so arguments can be derived."""

  def __init__(self, width: float, depth: float, attention_config):
    self.width, self.depth = width, depth
    self.att = attention_config
    self.layers: list[LayerDef] = []

  def _add(self, sources, kind, channels, stride, **kw) -> int:
    index = len(self.layers)
    self.layers.append(LayerDef(index, tuple(sources), kind, channels, stride, **kw))
    return index

  def ch(self, i):
    return self.layers[i].channels

  def st(self, i):
    return 1 if i == INPUT else self.layers[i].stride

  def cbl(self, src, c, k, s, p=None):
    return self._add([src], 'cbl', make_divisible(c * self.width), self.st(src) * s,
                     kernel=k, conv_stride=s, padding=p)

  def c3(self, src, c, n, shortcut=True):
    n = max(round(n * self.depth), 1) if n > 1 else n
    return self._add([src], 'c3', make_divisible(c * self.width), self.st(src), n=n, shortcut=shortcut)

  def sppf(self, src, c, k=5):
    return self._add([src], 'sppf', make_divisible(c * self.width), self.st(src), kernel=k)

  def upsample(self, src, factor=2):
    return self._add([src], 'upsample', self.ch(src), self.st(src) // factor, factor=factor)

  def concat(self, *srcs):
    return self._add(srcs, 'concat', sum(self.ch(s) for s in srcs), self.st(srcs[0]))

  def gate(self, src, place):
    """An attention layer on `src` when the config puts one at `place`; else `src` itself."""
    if self.att.kind == 'none' or self.att.where != place:
      return src
    return self._add([src], 'attention', self.ch(src), self.st(src))

  def detect(self, srcs):
    return self._add(srcs, 'detect', 0, 0)


def layer_table(model_config) -> tuple[LayerDef, ...]:
  """The layer table of the configured network (yolov5 yaml base channels, scaled by width/depth)."""
  from yolo_osam_jax import models  # pylint: disable=g-import-not-at-top (the registry imports us)
  attention_lib.validate(model_config.attention)
  fusion = model_config.fusion
  if fusion not in heads.DETECT_ORDER:
    raise ValueError(f"model.fusion must be one of {sorted(heads.DETECT_ORDER)}, got {fusion!r}")
  width, depth, _ = models.scale_of(model_config)
  t = _TableBuilder(width, depth, model_config.attention)
  uses_p2 = fusion != 'none'

  # CSPDarknet53 backbone. Gates are side branches: the next stage reads the C3 output itself, the
  # neck reads the gate (SPEC §2.1 rows 3–13); after SPPF the gate is on the main path.
  x = t.cbl(INPUT, 64, 6, 2, p=2)
  x = t.cbl(x, 128, 3, 2)
  c2 = t.c3(x, 128, 3)
  p2 = t.gate(c2, 'backbone') if uses_p2 else c2
  x = t.cbl(c2, 256, 3, 2)
  c3 = t.c3(x, 256, 6)
  p3 = t.gate(c3, 'backbone')
  x = t.cbl(c3, 512, 3, 2)
  c4 = t.c3(x, 512, 9)
  p4 = t.gate(c4, 'backbone')
  x = t.cbl(c4, 1024, 3, 2)
  x = t.c3(x, 1024, 3)
  x = t.sppf(x, 1024, 5)
  p5 = t.gate(x, 'backbone')

  # PANet neck, top-down then bottom-up.
  h10 = t.cbl(p5, 512, 1, 1)
  x = t.concat(t.upsample(h10), p4)
  x = t.c3(x, 512, 3, False)
  h14 = t.cbl(x, 256, 1, 1)
  x = t.concat(t.upsample(h14), p3)
  if fusion == 'fpn':
    # Textbook P2: one more top-down step to stride 4, then a bottom-up path through every level.
    n3_td = t.c3(x, 256, 3, False)
    h18 = t.cbl(n3_td, 128, 1, 1)
    x = t.concat(t.upsample(h18), p2)
    n2 = t.c3(x, 128, 3, False)
    x = t.concat(t.cbl(n2, 128, 3, 2), h18)
    n3 = t.c3(x, 256, 3, False)
  else:
    n3 = t.c3(x, 256, 3, False)
  x = t.concat(t.cbl(n3, 256, 3, 2), h14)
  n4 = t.c3(x, 512, 3, False)
  x = t.concat(t.cbl(n4, 512, 3, 2), h10)
  n5 = t.c3(x, 1024, 3, False)

  if fusion == 'reference':
    # The published fusion branch (SPEC §2.1 rows 28–31): only backbone stride-4 features, joined with
    # an ×1 "upsample" (an identity kept so layer indices match the published weights).
    x = t.c3(p2, 128, 3, True)
    x = t.concat(t.upsample(x, factor=1), p2)
    n2 = t.c3(x, 128, 3, False)

  by_stride = {8: n3, 16: n4, 32: n5}
  if uses_p2:
    by_stride[4] = n2
  # "Neck" attention sits between each neck output and its head only.
  head_inputs = [t.gate(by_stride[s], 'neck') for s in heads.DETECT_ORDER[fusion]]
  t.detect(head_inputs)
  return tuple(t.layers)


class Detect(nn.Module):
  """One 1×1 conv per level; returns raw [B, H, W, A, 5 + nc] per level in the given order."""
  num_classes: int
  num_anchors: int
  strides: tuple[int, ...]     # per input, in Detect order
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, xs):
    no = 5 + self.num_classes
    outs = []
    for i, (x, stride) in enumerate(zip(xs, self.strides)):
      prior = np.zeros((self.num_anchors, no), np.float32)
      prior[:, 4] = math.log(8 / (640 / stride) ** 2)          # ~8 objects per 640² image
      prior[:, 5:] = math.log(0.6 / (self.num_classes - 0.99))  # class prior
      y = nn.Conv(self.num_anchors * no, (1, 1), use_bias=True, kernel_init=torch_conv_init,
                  bias_init=lambda *_, p=prior.reshape(-1): jnp.asarray(p),
                  dtype=self.dtype, name=f'm_{i}')(x)
      b, h, w, _ = y.shape
      outs.append(y.reshape(b, h, w, self.num_anchors, no))
    return outs


def decode(raw_level, stride: int, anchors_px):
  """yolov5 decoding of one level: xy = (2σ − 0.5 + grid)·stride, wh = (2σ)²·anchor, σ on the rest."""
  b, h, w, a, no = raw_level.shape
  s = jax.nn.sigmoid(raw_level.astype(jnp.float32))
  gy, gx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing='ij')
  grid = jnp.stack([gx, gy], axis=-1)[None, :, :, None, :]  # [1, H, W, 1, 2]
  xy = (s[..., 0:2] * 2 - 0.5 + grid) * stride
  wh = (s[..., 2:4] * 2) ** 2 * jnp.asarray(anchors_px, jnp.float32)[None, None, None]
  return jnp.concatenate([xy, wh, s[..., 4:]], axis=-1).reshape(b, h * w * a, no)


class YOLO(nn.Module):
  """The detector. `__call__(images, train)` → (predictions [B, N, 5+nc], raw list by stride ascending)."""
  layers: tuple[LayerDef, ...]
  num_classes: int
  anchors: tuple  # per level stride ascending: ((w, h), ...) in pixels
  act: str = 'leaky_relu'
  gate: str = 'softmax'
  cbl_repeats: int = 3
  attention_kind: str = 'none'
  dtype: Any = jnp.float32

  @property
  def strides(self) -> tuple[int, ...]:
    """Detection strides, ascending (the order of `raw`)."""
    return detection_strides(self.layers)

  def _layer(self, L: LayerDef):
    kw = dict(dtype=self.dtype, name=f'layer_{L.index}')
    if L.kind == 'cbl':
      return CBL(L.channels, L.kernel, L.conv_stride, L.padding, act=self.act, **kw)
    if L.kind == 'c3':
      return C3(L.channels, L.n, L.shortcut, act=self.act, **kw)
    if L.kind == 'sppf':
      return SPPF(L.channels, L.kernel, act=self.act, **kw)
    if L.kind == 'attention':
      return attention_lib.Attention(self.attention_kind, self.gate, self.cbl_repeats, self.act, **kw)
    raise ValueError(f'layer {L.index}: unknown kind {L.kind!r}')

  @nn.compact
  def __call__(self, images, train: bool = False):
    head_inputs, head_strides = run_layer_table(self.layers, images.astype(self.dtype), self._layer,
                                                train)
    raw = stride_ascending(Detect(self.num_classes, len(self.anchors[0]), head_strides, dtype=self.dtype,
                                  name=f'layer_{self.layers[-1].index}')(head_inputs), head_strides)
    strides = sorted(head_strides)
    predictions = jnp.concatenate(
        [decode(r, s, a) for r, s, a in zip(raw, strides, self.anchors)], axis=1)
    return predictions, raw


def build(model_config) -> YOLO:
  """The yolov5 / YOLO-OSAM module for `config.model` (`models.build` dispatches here by arch)."""
  levels = heads.levels(model_config)
  anchors = tuple(tuple(tuple(float(v) for v in wh) for wh in lv.anchors) for lv in levels)
  if len({len(a) for a in anchors}) != 1:
    raise ValueError(f'model.anchors: every level needs the same number of anchors, got {anchors}')
  nc = int(model_config.num_classes)
  if nc < 1:
    raise ValueError(f'model.num_classes must be ≥ 1, got {nc}')
  dtype = compute_dtype(model_config.dtype)
  att = model_config.attention
  return YOLO(layers=layer_table(model_config), num_classes=nc, anchors=anchors,
              act=model_config.activation, gate=att.gate, cbl_repeats=int(att.cbl_repeats),
              attention_kind=att.kind, dtype=dtype)
