"""The yolov5 detection loss (ComputeLoss of yolov5 v6.x, hyperparameters of hyp.scratch-low), SPEC §3.

Everything has static shapes so one training step jits once: the targets arrive padded to [B, M] with a
mask, and target assignment is evaluated for every (image, offset, anchor, target) candidate at once,
with invalid candidates masked out instead of filtered away.

Per level (strides ascending, as the model returns `raw`):
  * a target goes to anchor a when max(r, 1/r) < anchor_t for both w and h, r = target_wh / anchor_wh,
    everything in grid units (pixels / stride);
  * besides its own cell it also goes to up to two neighbour cells (g = 0.5): left when frac(x) < 0.5 and
    x > 1, up when frac(y) < 0.5 and y > 1, right when frac(W - x) < 0.5 and W - x > 1, down likewise;
  * box loss 1 - CIoU between the decoded prediction (xy = 2σ - 0.5, wh = (2σ)² · anchor) and the target
    (xy - cell, wh), averaged over assigned candidates;
  * objectness target = detached CIoU clamped at 0 at assigned (cell, anchor), 0 elsewhere; BCE averaged
    over every cell and anchor, times the level's balance;
  * class loss BCE with one-hot targets, averaged over assigned candidates and classes (only when nc > 1,
    as the published code does).
Gains: box · 3/nl, cls · nc/80 · 3/nl, obj · (img/640)² · 3/nl; total = (lbox + lobj + lcls) · batch.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from yolo_osam_jax.models import heads

# yolov5 hyp.scratch-low values; `config.loss` in configs/base.py carries the same keys.
DEFAULT_HYP = {
    'box': 0.05,
    'cls': 0.5,
    'obj': 1.0,
    'cls_pw': 1.0,
    'obj_pw': 1.0,
    'anchor_t': 4.0,
    'label_smoothing': 0.0,
}

# Candidate cells in yolov5's order: own cell, left, up, right, down. The cell of a candidate is
# trunc(xy - offset · g), so offset (1, 0) with g = 0.5 moves a target with frac(x) < 0.5 one cell left.
NEIGHBOUR_OFFSETS = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
NEIGHBOUR_BIAS = 0.5  # yolov5's g
CIOU_EPS = 1e-7


def resolve_hyp(hyp: Mapping[str, Any] | None, defaults: Mapping[str, float] = DEFAULT_HYP,
                what: str = 'loss') -> dict[str, float]:
  """`defaults` (yolov5's `DEFAULT_HYP`) updated with `hyp` (a dict or ConfigDict such as
  `config.loss`); an unknown key is an error naming it."""
  resolved = dict(defaults)
  if hyp is None:
    return resolved
  for key, value in hyp.items():
    if key not in defaults:
      raise ValueError(f"{what} hyperparameter {key!r} is unknown; expected a subset of {sorted(defaults)}")
    resolved[key] = float(value)
  return resolved


def bce_with_logits(logits: jax.Array, targets: jax.Array, pos_weight: float = 1.0) -> jax.Array:
  """Elementwise binary cross-entropy on logits, with PyTorch's `pos_weight` on the positive term.

  loss = pw · y · softplus(-x) + (1 - y) · softplus(x) = -[pw · y · log σ(x) + (1 - y) · log(1 - σ(x))],
  written so it stays finite for large |x|.
  """
  return pos_weight * targets * jax.nn.softplus(-logits) + (1.0 - targets) * jax.nn.softplus(logits)


def bbox_ciou(box1: jax.Array, box2: jax.Array, eps: float = CIOU_EPS) -> jax.Array:
  """Complete IoU of (cx, cy, w, h) boxes along the last axis (Zheng et al. 2020, as yolov5 computes it).

  α = v / (v - IoU + 1 + eps) is a weight, not a function to differentiate: it is under stop_gradient.
  The aspect term uses atan(w / (h + eps)) so a prediction whose height underflows to 0 stays finite.
  """
  x1, y1, w1, h1 = jnp.moveaxis(box1, -1, 0)
  x2, y2, w2, h2 = jnp.moveaxis(box2, -1, 0)
  b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
  b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
  inter = (jnp.clip(jnp.minimum(b1_x2, b2_x2) - jnp.maximum(b1_x1, b2_x1), 0) *
           jnp.clip(jnp.minimum(b1_y2, b2_y2) - jnp.maximum(b1_y1, b2_y1), 0))
  union = w1 * h1 + w2 * h2 - inter + eps
  iou = inter / union
  # Smallest enclosing box: its squared diagonal normalises the squared centre distance.
  enclose_w = jnp.maximum(b1_x2, b2_x2) - jnp.minimum(b1_x1, b2_x1)
  enclose_h = jnp.maximum(b1_y2, b2_y2) - jnp.minimum(b1_y1, b2_y1)
  diagonal2 = enclose_w**2 + enclose_h**2 + eps
  centre_distance2 = (x2 - x1)**2 + (y2 - y1)**2
  v = (4 / math.pi**2) * (jnp.arctan(w2 / (h2 + eps)) - jnp.arctan(w1 / (h1 + eps)))**2
  alpha = jax.lax.stop_gradient(v / (v - iou + (1 + eps)))
  return iou - (centre_distance2 / diagonal2 + v * alpha)


def build_targets(boxes: jax.Array, classes: jax.Array, mask: jax.Array, grid_hw: tuple[int, int],
                  anchors_grid: jax.Array, anchor_t: float) -> dict[str, jax.Array]:
  """yolov5's target assignment on one level, for every candidate at once.

  Args:
    boxes: [B, M, 4] normalised (cx, cy, w, h).
    classes: [B, M] int.
    mask: [B, M] bool, False for padding rows.
    grid_hw: (H, W) of the level.
    anchors_grid: [A, 2] anchors (w, h) in grid units.
    anchor_t: the wh-ratio threshold.

  Returns a dict of arrays laid out [B, O, A, M] (O = 5 neighbour offsets, in yolov5's order, so the
  flattened (O, A, M) position of a candidate is the order in which yolov5 writes it):
    'valid': bool, the candidate is a real assignment;
    'gi', 'gj': int32 cell column/row, clamped into the grid;
    'tbox': [..., 4] float32 target (x - gi, y - gj, w, h) in grid units, measured from the unclamped
      cell as yolov5 does;
    'classes': int32.
  """
  grid_h, grid_w = grid_hw
  boxes = boxes.astype(jnp.float32)
  grid_scale = jnp.array([grid_w, grid_h], jnp.float32)
  gxy = boxes[..., :2] * grid_scale              # [B, M, 2]
  gwh = boxes[..., 2:4] * grid_scale             # [B, M, 2]

  # Anchor filter: the worst of the two side ratios must be under anchor_t.
  ratio = gwh[:, None, :, :] / anchors_grid[None, :, None, :]            # [B, A, M, 2]
  worst_ratio = jnp.max(jnp.maximum(ratio, 1 / ratio), axis=-1)         # [B, A, M]
  anchor_ok = (worst_ratio < anchor_t) & mask[:, None, :]

  # Neighbour cells. `gxy_inverse` measures from the right/bottom border.
  g = NEIGHBOUR_BIAS
  gxy_inverse = grid_scale - gxy
  near_low = (jnp.mod(gxy, 1.0) < g) & (gxy > 1.0)                      # [B, M, 2]: left, up
  near_high = (jnp.mod(gxy_inverse, 1.0) < g) & (gxy_inverse > 1.0)     # [B, M, 2]: right, down
  offset_ok = jnp.stack([jnp.ones_like(near_low[..., 0]), near_low[..., 0], near_low[..., 1],
                         near_high[..., 0], near_high[..., 1]], axis=1)  # [B, O, M]
  valid = anchor_ok[:, None, :, :] & offset_ok[:, :, None, :]           # [B, O, A, M]

  offsets = jnp.asarray(NEIGHBOUR_OFFSETS) * g                           # [O, 2]
  # float -> int conversion truncates toward zero, as torch's .long() does.
  cell = (gxy[:, None, :, :] - offsets[None, :, None, :]).astype(jnp.int32)  # [B, O, M, 2]
  tbox_xy = gxy[:, None, :, :] - cell.astype(jnp.float32)
  tbox = jnp.concatenate([tbox_xy, jnp.broadcast_to(gwh[:, None], tbox_xy.shape)], axis=-1)
  gi = jnp.clip(cell[..., 0], 0, grid_w - 1)
  gj = jnp.clip(cell[..., 1], 0, grid_h - 1)

  shape = valid.shape
  def per_anchor(x):  # [B, O, M, ...] -> [B, O, A, M, ...]
    return jnp.broadcast_to(x[:, :, None], shape + x.shape[3:])
  return {
      'valid': valid,
      'gi': per_anchor(gi),
      'gj': per_anchor(gj),
      'tbox': per_anchor(tbox),
      'classes': jnp.broadcast_to(classes.astype(jnp.int32)[:, None, None, :], shape),
  }


def check_targets(targets: Mapping[str, Any], num_classes: int) -> None:
  """Clear errors for bad targets; values are only checked when concrete (outside jit)."""
  for key in ('boxes', 'classes', 'mask'):
    if key not in targets:
      raise ValueError(f"loss targets need 'boxes', 'classes' and 'mask'; {key!r} is missing")
  boxes, classes, mask = targets['boxes'], targets['classes'], targets['mask']
  if boxes.ndim != 3 or boxes.shape[-1] != 4:
    raise ValueError(f"targets['boxes'] must be [B, M, 4], got shape {boxes.shape}")
  if classes.shape != boxes.shape[:2] or mask.shape != boxes.shape[:2]:
    raise ValueError(f"targets['classes'] {classes.shape} and targets['mask'] {mask.shape} must both be "
                     f"[B, M] = {boxes.shape[:2]}")
  if any(isinstance(x, jax.core.Tracer) for x in (boxes, classes, mask)):
    return
  boxes, classes, mask = np.asarray(boxes), np.asarray(classes), np.asarray(mask).astype(bool)
  real_boxes, real_classes = boxes[mask], classes[mask]
  if not np.all(np.isfinite(real_boxes)):
    b, m = np.argwhere(mask & ~np.all(np.isfinite(boxes), axis=-1))[0]
    raise ValueError(f"targets['boxes'][{b}, {m}] = {boxes[b, m]} is not finite")
  if np.any(real_boxes[:, 2:] <= 0):
    b, m = np.argwhere(mask & np.any(boxes[..., 2:] <= 0, axis=-1))[0]
    raise ValueError(f"targets['boxes'][{b}, {m}] = {boxes[b, m]} has a non-positive width or height")
  if np.any((real_classes < 0) | (real_classes >= num_classes)):
    b, m = np.argwhere(mask & ((classes < 0) | (classes >= num_classes)))[0]
    raise ValueError(f"targets['classes'][{b}, {m}] = {classes[b, m]} is outside [0, {num_classes})")


def yolo_loss(raw: Sequence[jax.Array], targets: Mapping[str, jax.Array], model_config, img_size: int,
              hyp: Mapping[str, Any] | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """yolov5's ComputeLoss.

  Args:
    raw: per level, stride ascending, [B, H, W, A, 5 + nc] logits as the model returns them.
    targets: {'boxes': [B, M, 4] normalised (cx, cy, w, h), 'classes': [B, M] int, 'mask': [B, M] bool}.
    model_config: the model config (`heads.levels` gives strides, anchors and balance).
    img_size: the square training size S in pixels (the objectness gain scales with (S / 640)²).
    hyp: loss hyperparameters like `config.loss`; None = `DEFAULT_HYP`.

  Returns:
    (total, {'box', 'obj', 'cls'}): total = (box + obj + cls) · B; the components are after their gains
    and before the batch factor, as yolov5 reports them.

  Where several candidates land on the same (image, cell, anchor) the objectness target is the CIoU of
  the one yolov5 writes last: its candidates are written offset-major (own cell, left, up, right, down),
  then anchor, then target index, and PyTorch's index assignment keeps the last write. Here a scatter-max
  of that write order picks the same winner deterministically (e.g. target 3 through its own cell loses to
  target 1 through a neighbour offset; between two targets through the same offset the higher index wins).
  """
  hyp = resolve_hyp(hyp)
  level_defs = heads.levels(model_config)
  num_levels = len(level_defs)
  num_classes = int(model_config.num_classes)
  if len(raw) != num_levels:
    raise ValueError(f"raw has {len(raw)} levels but the model config has {num_levels} "
                     f"(strides {[lv.stride for lv in level_defs]})")
  check_targets(targets, num_classes)

  if targets['boxes'].shape[0] != raw[0].shape[0]:
    raise ValueError(f"targets have batch {targets['boxes'].shape[0]} but raw has {raw[0].shape[0]}")
  batch = raw[0].shape[0]

  mask = jnp.asarray(targets['mask'], bool)
  # Padding rows get a harmless box so nothing NaN reaches a masked-out gradient.
  boxes = jnp.where(mask[..., None], jnp.asarray(targets['boxes'], jnp.float32),
                    jnp.array([0.5, 0.5, 0.1, 0.1], jnp.float32))
  classes = jnp.asarray(targets['classes'], jnp.int32)
  class_positive = 1.0 - 0.5 * hyp['label_smoothing']
  class_negative = 0.5 * hyp['label_smoothing']

  lbox = lobj = lcls = jnp.zeros((), jnp.float32)
  for level, level_raw in zip(level_defs, raw):
    num_anchors = level.anchors.shape[0]
    expected = (batch, img_size // level.stride, img_size // level.stride, num_anchors, 5 + num_classes)
    if tuple(level_raw.shape) != expected or img_size % level.stride:
      raise ValueError(
          f"raw output for stride {level.stride} has shape {tuple(level_raw.shape)}; expected {expected} "
          f"for img_size {img_size}, {num_anchors} anchors and {num_classes} classes")
    level_raw = level_raw.astype(jnp.float32)
    _, grid_h, grid_w, _, channels = level_raw.shape
    anchors_grid = jnp.asarray(level.anchors / level.stride, jnp.float32)  # [A, 2]

    assigned = build_targets(boxes, classes, mask, (grid_h, grid_w), anchors_grid, hyp['anchor_t'])
    valid = assigned['valid']                                              # [B, O, A, M]
    cand_shape = valid.shape
    anchor_index = jnp.arange(num_anchors)[None, None, :, None]
    image_index = jnp.arange(batch)[:, None, None, None]
    cell_id = ((image_index * grid_h + assigned['gj']) * grid_w + assigned['gi']) * num_anchors + anchor_index
    flat_raw = level_raw.reshape(-1, channels)
    pred = flat_raw[cell_id]                                               # [B, O, A, M, C]

    pxy = jax.nn.sigmoid(pred[..., 0:2]) * 2 - 0.5
    pwh = (jax.nn.sigmoid(pred[..., 2:4]) * 2)**2 * anchors_grid[None, None, :, None, :]
    tbox = jnp.where(valid[..., None], assigned['tbox'], jnp.array([0.5, 0.5, 1.0, 1.0], jnp.float32))
    ciou = bbox_ciou(jnp.concatenate([pxy, pwh], axis=-1), tbox)

    num_assigned = jnp.sum(valid)
    denominator = jnp.maximum(num_assigned, 1).astype(jnp.float32)       # zero assigned -> zero loss
    lbox += jnp.sum(jnp.where(valid, 1.0 - ciou, 0.0)) / denominator

    # Objectness targets: one winner per (image, cell, anchor), the candidate yolov5 writes last.
    per_image_order = jnp.arange(np.prod(cand_shape[1:]), dtype=jnp.int32).reshape(cand_shape[1:])
    write_order = jnp.where(valid, per_image_order[None], -1)
    num_cells = flat_raw.shape[0]
    last_write = jnp.full((num_cells,), -1, jnp.int32).at[cell_id.ravel()].max(write_order.ravel())
    winner = valid & (last_write[cell_id] == write_order)
    obj_value = jax.lax.stop_gradient(jnp.clip(ciou, 0.0))
    obj_target = jnp.zeros((num_cells,), jnp.float32).at[cell_id.ravel()].add(
        jnp.where(winner, obj_value, 0.0).ravel())
    lobj += jnp.mean(bce_with_logits(flat_raw[:, 4], obj_target, hyp['obj_pw'])) * level.balance

    if num_classes > 1:  # yolov5 has no class loss for a single class
      class_target = jnp.where(jax.nn.one_hot(assigned['classes'], num_classes) > 0, class_positive,
                               class_negative)
      class_loss = bce_with_logits(pred[..., 5:], class_target, hyp['cls_pw'])
      lcls += jnp.sum(jnp.where(valid[..., None], class_loss, 0.0)) / (denominator * num_classes)

  box_gain = hyp['box'] * 3 / num_levels
  cls_gain = hyp['cls'] * num_classes / 80 * 3 / num_levels
  obj_gain = hyp['obj'] * (img_size / 640)**2 * 3 / num_levels
  lbox, lobj, lcls = lbox * box_gain, lobj * obj_gain, lcls * cls_gain
  total = (lbox + lobj + lcls) * batch
  return total, {'box': lbox, 'obj': lobj, 'cls': lcls}


# ---------------------------------------------------------------------------------------------------
# The loss of each detector family, chosen by `model.arch`.

# Components each family's loss reports (after gains, before the batch factor), in logging order.
COMPONENTS = {'anchor_based': ('box', 'obj', 'cls'), 'anchor_free': ('box', 'cls', 'dfl')}


def components(model_config) -> tuple[str, ...]:
  """The names of the loss components `detection_loss` returns for this model."""
  from yolo_osam_jax import models  # pylint: disable=g-import-not-at-top (models imports nothing of ours)
  return COMPONENTS['anchor_free' if models.is_anchor_free(model_config) else 'anchor_based']


def hyp_of(config):
  """The loss hyperparameters of `config`'s model family: `config.loss` (yolov5's ComputeLoss) or
  `config.anchor_free_loss` (the task-aligned loss of YOLOv8/YOLO11). The two sections share key names
  (box, cls) with gains two orders of magnitude apart, so each family reads only its own."""
  from yolo_osam_jax import models  # pylint: disable=g-import-not-at-top
  if models.is_anchor_free(config.model):
    return config.get('anchor_free_loss', None)
  return config.get('loss', None)


def detection_loss(raw: Sequence[jax.Array], targets: Mapping[str, jax.Array], model_config,
                   img_size: int, hyp: Mapping[str, Any] | None = None):
  """(total, components) of the model family's loss: `yolo_loss` for yolo_osam, the task-aligned
  loss (tal_loss.py) for the anchor-free family. `hyp` is that family's section (`hyp_of`)."""
  from yolo_osam_jax import models  # pylint: disable=g-import-not-at-top
  if models.is_anchor_free(model_config):
    from yolo_osam_jax import tal_loss  # pylint: disable=g-import-not-at-top
    strides = tuple(img_size // int(level.shape[1]) for level in raw)
    return tal_loss.tal_loss(raw, targets, img_size, strides, hyp)
  return yolo_loss(raw, targets, model_config, img_size, hyp)
