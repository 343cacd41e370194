"""Non-maximum suppression as yolov5's `non_max_suppression` (SPEC §5): a jit-able batched version and a
plain numpy reference.

Rules (both versions):
1. A prediction is a candidate when its objectness > conf_thres (strict).
2. Its class scores become objectness x class probability. Multi-label: every class whose score >
   conf_thres is a separate candidate (order: prediction index, then class). Single-label: the best class
   only (the first of equal maxima), kept when its score > conf_thres.
3. Candidates are ordered by score, descending; equal scores keep candidate order. Only the first
   `max_candidates` are kept (yolov5's max_nms = 30000).
4. Greedy class-aware NMS: a candidate is dropped when its IoU with an already kept box *of the same class*
   is > iou_thres (strict, as torchvision). yolov5 separates classes by adding class x 7680 to the
   coordinates; comparing classes directly gives the same result for boxes inside 7680 px without the
   float32 rounding that offset adds to the coordinates.
5. At most `max_det` boxes are kept, best first.

Outputs are boxes (x1, y1, x2, y2) in input-image pixels, scores, classes.

The batched version has static shapes: it returns [B, max_det] arrays plus a `valid` mask. It runs the
greedy loop as "pick the best box still alive, kill its same-class overlaps" up to max_det times, which
selects exactly the boxes of the classic greedy pass in O(max_det x K) instead of forming the K x K IoU
matrix (K = candidate cap).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MAX_CANDIDATES = 30000  # yolov5's max_nms


class NmsOutput(NamedTuple):
  boxes: jax.Array    # [B, max_det, 4] x1 y1 x2 y2 (input pixels)
  scores: jax.Array   # [B, max_det]
  classes: jax.Array  # [B, max_det] int32
  valid: jax.Array    # [B, max_det] bool
  index: jax.Array    # [B, max_det] int32: the prediction row each detection came from (0 when invalid)


def with_objectness(predictions, num_classes: int):
  """Predictions in the layout NMS reads, [..., 5 + nc] (cx, cy, w, h, objectness, class probabilities).

  The two detector families differ in one column: yolo_osam (yolov5) predicts an objectness, the
  anchor-free family (YOLOv8, YOLO11) does not and returns [..., 4 + nc]. The width tells them apart
  (nc is known). An anchor-free prediction gets objectness 1, so rule 1 below always passes and the
  score objectness × class probability is the class probability: exactly that family's own NMS rule (a
  candidate is a class score above conf_thres). Works on numpy and JAX arrays.
  """
  width = predictions.shape[-1]
  if width == 5 + num_classes:
    return predictions
  if width != 4 + num_classes:
    raise ValueError(f"predictions have {width} columns; expected {5 + num_classes} (with objectness) "
                     f"or {4 + num_classes} (anchor-free) for {num_classes} classes")
  xp = np if isinstance(predictions, np.ndarray) else jnp
  ones = xp.ones(predictions.shape[:-1] + (1,), predictions.dtype)
  return xp.concatenate([predictions[..., :4], ones, predictions[..., 4:]], axis=-1)


def _candidates(prediction, conf_thres, multi_label):
  """One image's candidates: boxes [N*, 4] xyxy, scores [N*] (-inf = not a candidate), classes [N*],
  and the prediction row [N*] each candidate comes from."""
  num_classes = prediction.shape[-1] - 5
  cx, cy, w, h = (prediction[:, i] for i in range(4))
  boxes = jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
  objectness = prediction[:, 4]
  class_scores = prediction[:, 5:] * objectness[:, None]
  is_object = objectness > conf_thres
  if multi_label and num_classes > 1:
    keep = is_object[:, None] & (class_scores > conf_thres)
    scores = jnp.where(keep, class_scores, -jnp.inf).reshape(-1)
    classes = jnp.tile(jnp.arange(num_classes, dtype=jnp.int32), prediction.shape[0])
    boxes = jnp.repeat(boxes, num_classes, axis=0)
    rows = jnp.repeat(jnp.arange(prediction.shape[0], dtype=jnp.int32), num_classes)
  else:
    best = jnp.max(class_scores, axis=-1)
    classes = jnp.argmax(class_scores, axis=-1).astype(jnp.int32)
    scores = jnp.where(is_object & (best > conf_thres), best, -jnp.inf)
    rows = jnp.arange(prediction.shape[0], dtype=jnp.int32)
  return boxes, scores, classes, rows


def _nms_one(prediction, *, conf_thres, iou_thres, max_det, multi_label, max_candidates):
  boxes, scores, classes, rows = _candidates(prediction, conf_thres, multi_label)
  k = min(max_candidates, scores.shape[0])
  # lax.top_k puts the lower index first among equal values: the stable order of rule 3.
  top_scores, top_index = jax.lax.top_k(scores, k)
  top_boxes = boxes[top_index]
  top_classes = classes[top_index]
  areas = (top_boxes[:, 2] - top_boxes[:, 0]) * (top_boxes[:, 3] - top_boxes[:, 1])
  positions = jnp.arange(k)

  def cond(state):
    count, alive, _ = state
    return (count < max_det) & jnp.any(alive)

  def body(state):
    count, alive, picked = state
    best = jnp.argmax(alive)  # alive boxes are in score order, so the first alive one is the best
    box = top_boxes[best]
    wh = jnp.clip(jnp.minimum(box[2:], top_boxes[:, 2:]) - jnp.maximum(box[:2], top_boxes[:, :2]), 0)
    inter = wh[:, 0] * wh[:, 1]
    iou = inter / (areas[best] + areas - inter)
    overlaps = (iou > iou_thres) & (top_classes == top_classes[best])
    alive = alive & ~overlaps & (positions != best)
    picked = picked.at[count].set(best)
    return count + 1, alive, picked

  alive = top_scores > -jnp.inf
  picked = jnp.zeros((max_det,), jnp.int32)
  count, _, picked = jax.lax.while_loop(cond, body, (jnp.int32(0), alive, picked))
  valid = jnp.arange(max_det) < count
  out_boxes = jnp.where(valid[:, None], top_boxes[picked], 0)
  out_scores = jnp.where(valid, top_scores[picked], 0)
  out_classes = jnp.where(valid, top_classes[picked], 0)
  out_index = jnp.where(valid, rows[top_index[picked]], 0)
  return NmsOutput(out_boxes, out_scores, out_classes, valid, out_index)


@functools.partial(jax.jit, static_argnames=('conf_thres', 'iou_thres', 'max_det', 'multi_label',
                                             'max_candidates'))
def batched_nms(predictions, *, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
                multi_label: bool = True, max_candidates: int = MAX_CANDIDATES) -> NmsOutput:
  """NMS over a batch of decoded predictions [B, N, 5 + nc] (cx, cy, w, h, obj, class probs)."""
  one = functools.partial(_nms_one, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det,
                          multi_label=multi_label, max_candidates=max_candidates)
  return jax.vmap(one)(jnp.asarray(predictions))


def nms_numpy(prediction, *, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300,
              multi_label: bool = True, max_candidates: int = MAX_CANDIDATES):
  """Reference NMS for one image [N, 5 + nc]: the textbook greedy pass with explicit loops.

  Returns (boxes [n, 4] xyxy, scores [n], classes [n]), n <= max_det, best first.
  """
  prediction = np.asarray(prediction)
  dtype = prediction.dtype
  num_classes = prediction.shape[-1] - 5
  rows = []  # (score, box, class) in candidate order
  for p in prediction:
    objectness = p[4]
    if not objectness > conf_thres:
      continue
    cx, cy, w, h = p[:4]
    box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype)
    class_scores = (p[5:] * objectness).astype(dtype)
    if multi_label and num_classes > 1:
      for c in range(num_classes):
        if class_scores[c] > conf_thres:
          rows.append((class_scores[c], box, c))
    else:
      c = int(np.argmax(class_scores))
      if class_scores[c] > conf_thres:
        rows.append((class_scores[c], box, c))
  order = sorted(range(len(rows)), key=lambda i: -rows[i][0])  # Python's sort is stable
  order = order[:max_candidates]
  kept = []
  for i in order:
    score, box, cls = rows[i]
    suppressed = False
    for j in kept:
      other = rows[j][1]
      if rows[j][2] != cls:
        continue
      iw = max(min(box[2], other[2]) - max(box[0], other[0]), 0)
      ih = max(min(box[3], other[3]) - max(box[1], other[1]), 0)
      inter = iw * ih
      union = ((box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1])
               - inter)
      if inter / union > iou_thres:
        suppressed = True
        break
    if not suppressed:
      kept.append(i)
      if len(kept) == max_det:
        break
  boxes = np.array([rows[i][1] for i in kept], dtype).reshape(-1, 4)
  scores = np.array([rows[i][0] for i in kept], dtype)
  classes = np.array([rows[i][2] for i in kept], np.int64)
  return boxes, scores, classes
