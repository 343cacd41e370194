"""Detection-level layout: strides, anchors and loss balance per head, from the model config.

Every consumer (model, loss, AutoAnchor, converter) asks this module which levels a model has, so the
published network's odd Detect order (strides 8, 16, 32, 4) is handled in one place. Levels are always
listed by stride ascending, the order in which the model returns its raw outputs; `detect_index` keeps
the position of the level in the published Detect module (its `m.<i>` state-dict key and loss balance).
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Anchors in pixels, (w, h), three per level.
YOLOV5_ANCHORS = {
    8: ((10, 13), (16, 30), (33, 23)),
    16: ((30, 61), (62, 45), (59, 119)),
    32: ((116, 90), (156, 198), (373, 326)),
}
# The published yolov5new after yolov5's anchor-order check (SPEC §2.2): Detect order 8, 16, 32, 4.
PUBLISHED_ANCHORS = {
    8: ((30, 61), (62, 45), (59, 119)),
    16: ((116, 90), (156, 198), (373, 326)),
    32: ((30, 61), (62, 45), (59, 119)),
    4: ((10, 13), (16, 30), (33, 23)),
}
# Textbook P2 extension: yolov5s's anchors on strides 8/16/32 and half of the stride-8 set on stride 4.
# These are starting points only; AutoAnchor refits them to the data before training.
P2_ANCHORS = {
    4: ((5, 6), (8, 15), (16, 11)),
    **YOLOV5_ANCHORS,
}

# yolov5 ComputeLoss balance, indexed by Detect position (SPEC §3).
BALANCE = {3: (4.0, 1.0, 0.4), 4: (4.0, 1.0, 0.25, 0.06)}

# Detect input order per fusion mode (strides).
DETECT_ORDER = {
    'none': (8, 16, 32),
    'reference': (8, 16, 32, 4),
    'fpn': (4, 8, 16, 32),
}


@dataclasses.dataclass(frozen=True)
class Level:
  stride: int
  anchors: np.ndarray  # [A, 2] pixels (w, h)
  balance: float
  detect_index: int


def default_anchors(fusion: str) -> dict[int, tuple]:
  if fusion == 'none':
    return YOLOV5_ANCHORS
  if fusion == 'reference':
    return PUBLISHED_ANCHORS
  if fusion == 'fpn':
    return P2_ANCHORS
  raise ValueError(f"model.fusion must be one of {sorted(DETECT_ORDER)}, got {fusion!r}")


def levels(model_config) -> tuple[Level, ...]:
  """The detection levels of `model_config`, stride ascending.

  `model_config.anchors`, when set, overrides the defaults: a list with one entry per level in stride
  ascending order, each a flat [w0, h0, w1, h1, w2, h2] or nested [[w, h], ...] list in pixels.
  """
  fusion = model_config.fusion
  order = DETECT_ORDER.get(fusion)
  if order is None:
    raise ValueError(f"model.fusion must be one of {sorted(DETECT_ORDER)}, got {fusion!r}")
  strides = sorted(order)
  custom = model_config.get('anchors', None)
  if custom is not None:
    custom = [np.asarray(a, np.float32).reshape(-1, 2) for a in custom]
    if len(custom) != len(strides):
      raise ValueError(
          f"model.anchors has {len(custom)} levels but fusion={fusion!r} has {len(strides)} "
          f"(strides {strides})")
    anchors = dict(zip(strides, custom))
  else:
    anchors = {s: np.asarray(a, np.float32) for s, a in default_anchors(fusion).items()}
  balance = BALANCE[len(order)]
  return tuple(
      Level(stride=s, anchors=np.asarray(anchors[s], np.float32), balance=balance[order.index(s)],
            detect_index=order.index(s))
      for s in strides)
