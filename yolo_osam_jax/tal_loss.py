"""The detection loss of the anchor-free YOLO family (YOLOv8, YOLO11): ultralytics' v8DetectionLoss (8.4.190).

Written from the published description (Feng et al. 2021, TOOD, for the task-aligned assigner; Li et al.
2020, GFL, for the distribution focal loss) and checked against the PyTorch reference outputs in
shared/fixtures/ultralytics_nc7 (their README is the specification of the details below).

As in `losses`, every shape is static so one training step jits once: the targets arrive padded to
[B, M] with a mask, and the assignment is evaluated for every (image, target, anchor) at once, padding
rows masked out instead of filtered away.

Per image, N anchors = the cells of every level (levels in stride order, each flattened row-major: y then
x), each at its cell centre (x + 0.5, y + 0.5) in grid units of its level:
  * the head predicts, per anchor, 4 · reg_max box-distribution logits (side-major l, t, r, b, reg_max
    bins each) and nc class logits; a side's distance is the expectation Σ_k softmax(logits)_k · k, and
    the box is (ax - l, ay - t, ax + r, ay + b);
  * the task-aligned assigner (`tal_assign`) picks the positives on detached predictions, in pixels;
  * cls = Σ BCE(class logits, target scores) over every anchor and class; box = Σ w · (1 - CIoU) and
    dfl = Σ w · DFL over the foreground anchors, w = the anchor's target-score sum; all three divided by
    max(Σ target scores, 1) over the whole batch.
Gains: box 7.5, cls 0.5, dfl 1.5; total = (box + cls + dfl) · B.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from yolo_osam_jax import losses

# ultralytics' default.yaml gains.
DEFAULT_HYP = {
    'box': 7.5,
    'cls': 0.5,
    'dfl': 1.5,
}

REG_MAX = 16          # bins per box side
TAL_TOPK = 10         # v8DetectionLoss builds its assigner with topk 10 (the class default is 13)
TAL_ALPHA = 0.5       # score exponent of the alignment metric
TAL_BETA = 6.0        # overlap exponent of the alignment metric
TAL_EPS = 1e-9        # in the metric normalisation
CANDIDATE_EPS = 1e-9  # an anchor centre must be this far inside a target box
CIOU_EPS = losses.CIOU_EPS


def resolve_hyp(hyp: Mapping[str, Any] | None) -> dict[str, float]:
  """`DEFAULT_HYP` updated with `hyp` (a dict or ConfigDict); unknown keys are an error."""
  return losses.resolve_hyp(hyp, DEFAULT_HYP, 'anchor-free loss')


# --------------------------------------------------------------------------------------------------
# Geometry.

def make_anchors(grid_shapes: Sequence[tuple[int, int]], strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Anchor points of all levels, concatenated in level order, each level row-major (y then x).

  Args:
    grid_shapes: (H, W) per level.
    strides: the stride per level.

  Returns:
    (points [N, 2] float32 (x, y) cell centres in grid units of their own level, strides [N] float32).
  """
  points, point_strides = [], []
  for (height, width), stride in zip(grid_shapes, strides):
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32) + 0.5, np.arange(width, dtype=np.float32) + 0.5,
                         indexing='ij')
    points.append(np.stack([xs.ravel(), ys.ravel()], axis=-1))
    point_strides.append(np.full((height * width,), stride, np.float32))
  return np.concatenate(points), np.concatenate(point_strides)


def decode_distances(box_logits: jax.Array, reg_max: int = REG_MAX) -> jax.Array:
  """[..., 4 · reg_max] side-major logits -> [..., 4] distances (l, t, r, b): Σ_k softmax_k · k."""
  probs = jax.nn.softmax(box_logits.reshape(box_logits.shape[:-1] + (4, reg_max)), axis=-1)
  return probs @ jnp.arange(reg_max, dtype=probs.dtype)


def distances_to_xyxy(anchor_points: jax.Array, distances: jax.Array) -> jax.Array:
  """(l, t, r, b) distances from anchor points (x, y) -> (x1, y1, x2, y2), in the same units."""
  return jnp.concatenate([anchor_points - distances[..., :2], anchor_points + distances[..., 2:]], axis=-1)


def xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
  return jnp.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1)


def cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
  return jnp.concatenate([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], axis=-1)


def bbox_ciou_xyxy(box1: jax.Array, box2: jax.Array, eps: float = CIOU_EPS) -> jax.Array:
  """Complete IoU of (x1, y1, x2, y2) boxes along the last axis: `losses.bbox_ciou` on their centre form.

  Same formula as ultralytics' xyxy CIoU up to where eps enters the height (ultralytics adds it to h in
  the union as well, a relative difference of eps / h); α is under stop_gradient as there.
  """
  return losses.bbox_ciou(xyxy_to_cxcywh(box1), xyxy_to_cxcywh(box2), eps)


def dfl_loss(box_logits: jax.Array, target_distances: jax.Array, reg_max: int = REG_MAX) -> jax.Array:
  """Distribution focal loss per anchor, averaged over the 4 sides.

  Args:
    box_logits: [..., 4 · reg_max] side-major logits.
    target_distances: [..., 4] target (l, t, r, b) in grid units; clamped to [0, reg_max - 1 - 0.01].

  Returns:
    [...]: mean over sides of CE(logits, ⌊t⌋) · (⌊t⌋ + 1 - t) + CE(logits, ⌊t⌋ + 1) · (t - ⌊t⌋).
  """
  log_probs = jax.nn.log_softmax(box_logits.reshape(box_logits.shape[:-1] + (4, reg_max)), axis=-1)
  target = jnp.clip(target_distances, 0.0, reg_max - 1 - 0.01)
  left = jnp.floor(target)
  weight_left = left + 1.0 - target
  weight_right = 1.0 - weight_left
  left_index = left.astype(jnp.int32)[..., None]
  ce_left = -jnp.take_along_axis(log_probs, left_index, axis=-1)[..., 0]
  ce_right = -jnp.take_along_axis(log_probs, left_index + 1, axis=-1)[..., 0]
  return jnp.mean(ce_left * weight_left + ce_right * weight_right, axis=-1)


# --------------------------------------------------------------------------------------------------
# Task-aligned assigner.

def candidates_in_gts(anchor_points: jax.Array, gt_bboxes: jax.Array, min_side: float,
                      eps: float = CANDIDATE_EPS) -> jax.Array:
  """Which anchor centres lie strictly inside which target boxes.

  Args:
    anchor_points: [N, 2] (x, y), pixels.
    gt_bboxes: [B, M, 4] xyxy, pixels.
    min_side: a target side shorter than this is widened to it about the box centre, for this test only
      (ultralytics 8.4.190 uses strides[1], or strides[0] with one level); 0 disables it.
    eps: the margin: min(x - x1, y - y1, x2 - x, y2 - y) must exceed it.

  Returns:
    [B, M, N] bool.
  """
  centre_size = xyxy_to_cxcywh(gt_bboxes)
  size = centre_size[..., 2:]
  size = jnp.where(size < min_side, jnp.asarray(min_side, size.dtype), size)
  widened = cxcywh_to_xyxy(jnp.concatenate([centre_size[..., :2], size], axis=-1))
  points = anchor_points[None, None]                         # [1, 1, N, 2]
  deltas = jnp.concatenate([points - widened[:, :, None, :2], widened[:, :, None, 2:] - points], axis=-1)
  return jnp.min(deltas, axis=-1) > eps


def tal_assign(pd_scores: jax.Array, pd_bboxes: jax.Array, anchor_points: jax.Array, gt_labels: jax.Array,
               gt_bboxes: jax.Array, gt_mask: jax.Array, *, min_side: float, topk: int = TAL_TOPK,
               alpha: float = TAL_ALPHA, beta: float = TAL_BETA, eps: float = TAL_EPS
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The task-aligned assigner (TOOD) as ultralytics 8.4.190 runs it; no gradient flows through it.

  Args:
    pd_scores: [B, N, nc] predicted class probabilities (after the sigmoid).
    pd_bboxes: [B, N, 4] predicted boxes xyxy, pixels.
    anchor_points: [N, 2] anchor centres, pixels.
    gt_labels: [B, M] int classes.
    gt_bboxes: [B, M, 4] target boxes xyxy, pixels.
    gt_mask: [B, M] bool, False for padding rows (which change nothing).
    min_side: see `candidates_in_gts`.
    topk, alpha, beta, eps: the assigner's parameters.

  Returns:
    fg_mask: [B, N] bool, the anchor is a positive.
    target_gt_idx: [B, N] int32, index of its target among the image's M rows (0 for background).
    target_bboxes: [B, N, 4] xyxy pixels of that target (target 0's box for background, zeros when
      target 0 is padding).
    target_scores: [B, N, nc] float32: one-hot(label) · normalised alignment metric, 0 for background.

  Steps: candidates = anchors inside the (small-side-widened) target; for every (target, anchor)
  candidate, overlap = CIoU(target, prediction) clamped at 0 and metric = score(target class)^α ·
  overlap^β (0 elsewhere); a target's positives are its top-k anchors by metric that are candidates; an
  anchor positive for several targets keeps the one of largest overlap over all targets (first on ties);
  an anchor's score is max over targets of metric · (target's best positive overlap / (target's best
  positive metric + eps)) over its positives.

  Ties: among equal metrics `lax.top_k` takes the lower anchor index first. The metric is exactly 0 only
  for a candidate whose CIoU is ≤ 0 (or whose score underflows); when a target has fewer than k
  non-zero candidates, which of its zero-metric candidates enter its top k is the tie order, which
  PyTorch leaves unspecified. Such an anchor gets target score 0 from that target, so it adds nothing to
  any loss term unless it is also another target's positive (then the overlap rule picks between them).
  On the nc7 fixtures every positive has a non-zero metric.
  """
  pd_scores, pd_bboxes, gt_bboxes = (jax.lax.stop_gradient(x.astype(jnp.float32))
                                     for x in (pd_scores, pd_bboxes, gt_bboxes))
  gt_mask = gt_mask.astype(bool)
  gt_labels = jnp.where(gt_mask, gt_labels.astype(jnp.int32), 0)
  batch, num_anchors, num_classes = pd_scores.shape
  num_gts = gt_bboxes.shape[1]

  in_gts = candidates_in_gts(anchor_points, gt_bboxes, min_side) & gt_mask[..., None]      # [B, M, N]
  overlaps = jnp.clip(bbox_ciou_xyxy(gt_bboxes[:, :, None, :], pd_bboxes[:, None, :, :]), 0.0)
  overlaps = jnp.where(in_gts, overlaps, 0.0)
  # The score of each target's class at every anchor: [B, N, nc] -> [B, M, N].
  gt_scores = jnp.take_along_axis(jnp.swapaxes(pd_scores, 1, 2), gt_labels[..., None], axis=1)
  gt_scores = jnp.where(in_gts, gt_scores, 0.0)
  align_metric = gt_scores**alpha * overlaps**beta                                           # [B, M, N]

  k = min(topk, num_anchors)
  _, top_index = jax.lax.top_k(align_metric, k)                                              # [B, M, k]
  in_topk = jnp.zeros((batch, num_gts, num_anchors), bool)
  in_topk = in_topk.at[jnp.arange(batch)[:, None, None], jnp.arange(num_gts)[None, :, None],
                       top_index].set(True)
  mask_pos = in_topk & in_gts                                                                # [B, M, N]

  # One target per anchor: where several claim it, the one with the largest overlap over all targets.
  claims = jnp.sum(mask_pos, axis=1)                                                         # [B, N]
  best_overlap = jax.nn.one_hot(jnp.argmax(overlaps, axis=1), num_gts, axis=1, dtype=bool)   # [B, M, N]
  mask_pos = jnp.where((claims > 1)[:, None, :], best_overlap, mask_pos)
  fg_mask = jnp.any(mask_pos, axis=1)
  target_gt_idx = jnp.argmax(mask_pos, axis=1).astype(jnp.int32)                             # [B, N]

  target_labels = jnp.take_along_axis(gt_labels, target_gt_idx, axis=1)                      # [B, N]
  safe_boxes = jnp.where(gt_mask[..., None], gt_bboxes, 0.0)
  target_bboxes = jnp.take_along_axis(safe_boxes, target_gt_idx[..., None], axis=1)         # [B, N, 4]

  pos_metric = jnp.where(mask_pos, align_metric, 0.0)
  best_metric = jnp.max(pos_metric, axis=2, keepdims=True)                                   # [B, M, 1]
  best_pos_overlap = jnp.max(jnp.where(mask_pos, overlaps, 0.0), axis=2, keepdims=True)      # [B, M, 1]
  norm_metric = jnp.max(pos_metric * best_pos_overlap / (best_metric + eps), axis=1)         # [B, N]
  target_scores = (jax.nn.one_hot(target_labels, num_classes, dtype=jnp.float32)
                   * (fg_mask * norm_metric)[..., None])
  return fg_mask, target_gt_idx, target_bboxes, target_scores


# --------------------------------------------------------------------------------------------------
# The loss.

def _flatten_raw(raw: Sequence[jax.Array], img_size: int, strides: Sequence[int], reg_max: int):
  """Checks the levels and returns (box logits [B, N, 4·reg_max], class logits [B, N, nc], anchor
  points [N, 2] grid units, anchor strides [N])."""
  if len(raw) != len(strides):
    raise ValueError(f"raw has {len(raw)} levels but strides {list(strides)} has {len(strides)}")
  if list(strides) != sorted(strides):
    raise ValueError(f"strides must be ascending (as raw's levels are), got {list(strides)}")
  batch, channels = raw[0].shape[0], raw[0].shape[-1]
  num_classes = channels - 4 * reg_max
  if num_classes < 1:
    raise ValueError(f"raw has {channels} channels; expected 4 · reg_max ({4 * reg_max}) + nc with nc ≥ 1")
  grid_shapes = []
  for level_raw, stride in zip(raw, strides):
    expected = (batch, img_size // stride, img_size // stride, channels)
    if tuple(level_raw.shape) != expected or img_size % stride:
      raise ValueError(f"raw output for stride {stride} has shape {tuple(level_raw.shape)}; expected "
                       f"{expected} (NHWC) for img_size {img_size}")
    grid_shapes.append(expected[1:3])
  flat = jnp.concatenate([jnp.asarray(r, jnp.float32).reshape(batch, -1, channels) for r in raw], axis=1)
  points, point_strides = make_anchors(grid_shapes, strides)
  return flat[..., :4 * reg_max], flat[..., 4 * reg_max:], jnp.asarray(points), jnp.asarray(point_strides)


def _gt_pixels(targets: Mapping[str, Any], img_size: int):
  """(labels [B, M] int32, boxes [B, M, 4] xyxy pixels with padding rows zero, mask [B, M] bool)."""
  mask = jnp.asarray(targets['mask'], bool)
  boxes = cxcywh_to_xyxy(jnp.asarray(targets['boxes'], jnp.float32) * img_size)
  boxes = jnp.where(mask[..., None], boxes, 0.0)
  labels = jnp.where(mask, jnp.asarray(targets['classes'], jnp.int32), 0)
  return labels, boxes, mask


def default_min_side(strides: Sequence[int]) -> float:
  """The small-target widening size of ultralytics 8.4.190: strides[1], or strides[0] with one level."""
  return float(strides[1] if len(strides) > 1 else strides[0])


def _assign(box_logits, cls_logits, points, point_strides, targets, img_size, strides, reg_max):
  num_classes = cls_logits.shape[-1]
  losses.check_targets(targets, num_classes)
  if targets['boxes'].shape[0] != box_logits.shape[0]:
    raise ValueError(f"targets have batch {targets['boxes'].shape[0]} but raw has {box_logits.shape[0]}")
  labels, gt_boxes, mask = _gt_pixels(targets, img_size)
  pred_xyxy = distances_to_xyxy(points, decode_distances(box_logits, reg_max))             # grid units
  stride_col = point_strides[:, None]
  assigned = tal_assign(jax.nn.sigmoid(jax.lax.stop_gradient(cls_logits)),
                        jax.lax.stop_gradient(pred_xyxy) * stride_col, points * stride_col,
                        labels, gt_boxes, mask, min_side=default_min_side(strides))
  return assigned, pred_xyxy


def assign_targets(raw: Sequence[jax.Array], targets: Mapping[str, Any], img_size: int,
                   strides: Sequence[int], reg_max: int = REG_MAX
                   ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """`tal_assign` on the network's raw output, exactly as `tal_loss` calls it (args as `tal_loss`).

  Returns (fg_mask [B, N] bool, target_gt_idx [B, N] int32, target_bboxes [B, N, 4] xyxy pixels,
  target_scores [B, N, nc]); N = the anchors of all levels in `make_anchors` order.
  """
  box_logits, cls_logits, points, point_strides = _flatten_raw(raw, img_size, strides, reg_max)
  assigned, _ = _assign(box_logits, cls_logits, points, point_strides, targets, img_size, strides, reg_max)
  return assigned


def tal_loss(raw: Sequence[jax.Array], targets: Mapping[str, Any], img_size: int, strides: Sequence[int],
             hyp: Mapping[str, Any] | None = None, reg_max: int = REG_MAX
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """ultralytics' v8DetectionLoss (8.4.190) for YOLOv8 / YOLO11 heads.

  Args:
    raw: per level, strides ascending, [B, H, W, 4 · reg_max + nc] logits (NHWC): channels 0 … 4·reg_max-1
      the box-distribution logits (side-major l, t, r, b, reg_max consecutive bins each), then the nc
      class logits.
    targets: {'boxes': [B, M, 4] normalised (cx, cy, w, h), 'classes': [B, M] int, 'mask': [B, M] bool};
      padding rows (mask False) change nothing.
    img_size: the square input size in pixels.
    strides: the stride of each level (static Python ints).
    hyp: gains {'box', 'cls', 'dfl'}; None = `DEFAULT_HYP`.
    reg_max: bins per side.

  Returns:
    (total, {'box', 'cls', 'dfl'}): the components after their gains and before the batch factor
    (ultralytics' loss items); total = (box + cls + dfl) · B (the sum of ultralytics' loss vector, what
    its trainer differentiates).
  """
  hyp = resolve_hyp(hyp)
  box_logits, cls_logits, points, point_strides = _flatten_raw(raw, img_size, strides, reg_max)
  batch = box_logits.shape[0]
  (fg_mask, _, target_bboxes, target_scores), pred_xyxy = _assign(
      box_logits, cls_logits, points, point_strides, targets, img_size, strides, reg_max)

  target_scores_sum = jnp.maximum(jnp.sum(target_scores), 1.0)
  lcls = jnp.sum(losses.bce_with_logits(cls_logits, target_scores)) / target_scores_sum

  # Box and DFL on the foreground, in grid units; background anchors get a harmless unit box so that no
  # NaN can reach a masked-out gradient.
  weight = jnp.where(fg_mask, jnp.sum(target_scores, axis=-1), 0.0)                          # [B, N]
  unit_box = jnp.concatenate([points - 0.5, points + 0.5], axis=-1)[None]
  target_grid = jnp.where(fg_mask[..., None], target_bboxes / point_strides[:, None], unit_box)
  ciou = bbox_ciou_xyxy(pred_xyxy, target_grid)
  lbox = jnp.sum(weight * (1.0 - ciou)) / target_scores_sum
  target_ltrb = jnp.concatenate([points - target_grid[..., :2], target_grid[..., 2:] - points], axis=-1)
  ldfl = jnp.sum(weight * dfl_loss(box_logits, target_ltrb, reg_max)) / target_scores_sum

  lbox, lcls, ldfl = lbox * hyp['box'], lcls * hyp['cls'], ldfl * hyp['dfl']
  total = (lbox + lcls + ldfl) * batch
  return total, {'box': lbox, 'cls': lcls, 'dfl': ldfl}
