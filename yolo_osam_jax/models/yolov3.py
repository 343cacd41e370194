"""YOLOv3 as the paper's repository runs it: Darknet-53 backbone, FPN head, yolov5's Detect, anchors and loss.

The paper's repository is a yolov5 fork; its YOLOv3 is the `yolov3.yaml` of yolov5's `models/hub`
(Table 1's YOLOv3 row, SPEC §7), trained by the yolov5 code. The network, as that yaml lists it
([from, number, module, args]; indices are the state-dict indices `model.<i>`):

   0 Conv 32 3×3          1 Conv 64 3×3 s2 (P1/2)    2 Bottleneck 64
   3 Conv 128 3×3 s2      4 2 × Bottleneck 128       5 Conv 256 3×3 s2 (P3/8)
   6 8 × Bottleneck 256   7 Conv 512 3×3 s2 (P4/16)  8 8 × Bottleneck 512
   9 Conv 1024 3×3 s2    10 4 × Bottleneck 1024
  11 Bottleneck 1024, no shortcut                    12 Conv 512 1×1
  13 Conv 1024 3×3       14 Conv 512 1×1             15 Conv 1024 3×3        (P5/32 output)
  16 Conv 256 1×1 on 14  17 upsample ×2              18 concat 17 + 8 (backbone P4)
  19 Bottleneck 512, no shortcut                     20 Bottleneck 512, no shortcut
  21 Conv 256 1×1        22 Conv 512 3×3                                     (P4/16 output)
  23 Conv 128 1×1 on 21  24 upsample ×2              25 concat 24 + 6 (backbone P3)
  26 Bottleneck 256, no shortcut                     27 2 × Bottleneck 256, no shortcut (P3/8 output)
  28 Detect(27, 22, 15)

yolov5's Bottleneck(c1, c2, shortcut, e=0.5): cv1 Conv c1 → c2/2 1×1, cv2 Conv c2/2 → c2 3×3, plus the
input when `shortcut` and c1 == c2. A row with number n > 1 is an nn.Sequential of n Bottlenecks
(state-dict keys `model.<i>.<j>.cv1…`), n = 1 the Bottleneck itself (`model.<i>.cv1…`); the Flax
submodules are named the same way (`layer_<i>/<j>/cv1`), so `convert.from_yolov5_state_dict` loads a
yolov3 state dict one-to-one. 61,949,149 parameters at 80 classes (yolov5's model summary of this yaml).

Choices:
  size       The yaml has one size (depth and width multiples 1.0); `model.size` accepts only 's', which
             here names that network (throughout the project 's' is "the paper's size"). `model.width`
             and `model.depth` still scale it the yolov5 way (channels × width rounded up to 8, repeats
             n > 1 × depth), for smoke tests.
  heads      Three levels, strides 8/16/32, yolov5s's anchors (the yaml's), loss balance (4.0, 1.0, 0.4):
             `model.fusion` must be 'none' (models/heads.py reads it).
  attention  'none' only. The paper's repository also ships yolov3-AM/-OAM yamls, whose layer tables
             are not known here.
  activation `model.activation` as for yolov5 (leaky_relu, the published fork's Conv, by default).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolo_osam_jax.models import heads
from yolo_osam_jax.models import yolo
from yolo_osam_jax.models.layers import CBL, compute_dtype
from yolo_osam_jax.models.yolo import INPUT, LayerDef, make_divisible

# One published size (see the module docstring); `models.scale_of` reads this.
SCALES = {'yolov3': {'s': (1.0, 1.0, None)}}


class _Builder(yolo._TableBuilder):  # pylint: disable=protected-access (same family, same table rules)

  def bottleneck(self, src, c, n=1, shortcut=True):
    # yolov5's parse_model: repeats n > 1 scale with depth, channels with width.
    n = max(round(n * self.depth), 1) if n > 1 else n
    return self._add([src], 'bottleneck', make_divisible(c * self.width), self.st(src), n=n,
                     shortcut=shortcut)


def check_config(model_config) -> None:
  """Raises a ValueError naming the key when `model_config` asks for something yolov3 does not have."""
  if model_config.fusion != 'none':
    raise ValueError(f"model.arch='yolov3' has three heads (strides 8, 16, 32): set model.fusion='none', "
                     f"got {model_config.fusion!r}")
  kind = model_config.attention.kind
  if kind != 'none':
    raise ValueError(f"model.arch='yolov3' supports model.attention.kind='none' only, got {kind!r}")


def layer_table(model_config) -> tuple[LayerDef, ...]:
  """The yolov3.yaml layer table (indices = state-dict indices; see the module docstring)."""
  from yolo_osam_jax import models  # pylint: disable=g-import-not-at-top (the registry imports us)
  check_config(model_config)
  width, depth, _ = models.scale_of(model_config)
  t = _Builder(width, depth, model_config.attention)

  # Darknet-53.
  x = t.cbl(INPUT, 32, 3, 1)                               # 0
  x = t.cbl(x, 64, 3, 2)                                   # 1
  x = t.bottleneck(x, 64, 1)                               # 2
  x = t.cbl(x, 128, 3, 2)                                  # 3
  x = t.bottleneck(x, 128, 2)                              # 4
  x = t.cbl(x, 256, 3, 2)                                  # 5
  b3 = t.bottleneck(x, 256, 8)                             # 6  P3/8
  x = t.cbl(b3, 512, 3, 2)                                 # 7
  b4 = t.bottleneck(x, 512, 8)                             # 8  P4/16
  x = t.cbl(b4, 1024, 3, 2)                                # 9
  x = t.bottleneck(x, 1024, 4)                             # 10 P5/32

  # FPN head.
  x = t.bottleneck(x, 1024, 1, False)                      # 11
  x = t.cbl(x, 512, 1, 1)                                  # 12
  x = t.cbl(x, 1024, 3, 1)                                 # 13
  h14 = t.cbl(x, 512, 1, 1)                                # 14
  p5 = t.cbl(h14, 1024, 3, 1)                              # 15 P5 output
  x = t.upsample(t.cbl(h14, 256, 1, 1))                    # 16, 17
  x = t.concat(x, b4)                                      # 18
  x = t.bottleneck(x, 512, 1, False)                       # 19
  x = t.bottleneck(x, 512, 1, False)                       # 20
  h21 = t.cbl(x, 256, 1, 1)                                # 21
  p4 = t.cbl(h21, 512, 3, 1)                               # 22 P4 output
  x = t.upsample(t.cbl(h21, 128, 1, 1))                    # 23, 24
  x = t.concat(x, b3)                                      # 25
  x = t.bottleneck(x, 256, 1, False)                       # 26
  p3 = t.bottleneck(x, 256, 2, False)                      # 27 P3 output
  t.detect([p3, p4, p5])                                   # 28
  return tuple(t.layers)


class Bottleneck(nn.Module):
  """yolov5's Bottleneck with e = 0.5: 1×1 to features/2, 3×3 to features, residual when shapes allow."""
  features: int
  shortcut: bool = True
  act: str = 'leaky_relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = CBL(int(self.features * 0.5), 1, act=self.act, dtype=self.dtype, name='cv1')(x, train)
    y = CBL(self.features, 3, act=self.act, dtype=self.dtype, name='cv2')(y, train)
    return x + y if self.shortcut and x.shape[-1] == self.features else y


class BottleneckStack(nn.Module):
  """n Bottlenecks in sequence, submodules named '0' … 'n-1' like the nn.Sequential's state-dict keys."""
  features: int
  n: int
  shortcut: bool = True
  act: str = 'leaky_relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    for j in range(self.n):
      x = Bottleneck(self.features, self.shortcut, self.act, self.dtype, name=str(j))(x, train)
    return x


class YOLOv3(yolo.YOLO):
  """yolo.YOLO running the yolov3 table: the same forward, Detect and decoding, plus Bottleneck rows."""

  def _layer(self, L: LayerDef):
    if L.kind == 'bottleneck':
      kw = dict(act=self.act, dtype=self.dtype, name=f'layer_{L.index}')
      if L.n == 1:
        return Bottleneck(L.channels, L.shortcut, **kw)
      return BottleneckStack(L.channels, L.n, L.shortcut, **kw)
    return super()._layer(L)


def build(model_config) -> YOLOv3:
  """The yolov3 module for `config.model` (`models.build` dispatches here for arch 'yolov3')."""
  table = layer_table(model_config)
  levels = heads.levels(model_config)
  anchors = tuple(tuple(tuple(float(v) for v in wh) for wh in lv.anchors) for lv in levels)
  if len({len(a) for a in anchors}) != 1:
    raise ValueError(f'model.anchors: every level needs the same number of anchors, got {anchors}')
  nc = int(model_config.num_classes)
  if nc < 1:
    raise ValueError(f'model.num_classes must be ≥ 1, got {nc}')
  return YOLOv3(layers=table, num_classes=nc, anchors=anchors, act=model_config.activation,
                dtype=compute_dtype(model_config.dtype))
