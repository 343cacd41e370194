"""Flat detection / ground-truth containers and the IoU formulas of the two reference evaluators.

Every evaluator in this package works on the same two containers: all boxes of a split in one flat array
with an image index per box, boxes as COCO (x, y, w, h) in original-image pixels, float64. Keeping COCO's
(x, y, w, h) as the stored form matters: pycocotools computes x2 = x + w from the file's numbers, and a
round trip through (x1, y1, x2, y2) would change the last bits of some IoUs.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class GroundTruth:
  """Ground-truth boxes of `num_images` images; `image` indexes `image_ids`."""
  image: np.ndarray        # int64 [n]
  boxes: np.ndarray        # float64 [n, 4] x, y, w, h (pixels)
  classes: np.ndarray      # int64 [n], 0..num_classes-1
  area: np.ndarray         # float64 [n]; COCO's `area` field (w * h when a file does not give one)
  iscrowd: np.ndarray      # bool [n]
  image_ids: list          # [num_images] ids in evaluation order
  class_names: list        # [num_classes]

  @property
  def num_images(self) -> int:
    return len(self.image_ids)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


@dataclasses.dataclass
class Detections:
  image: np.ndarray        # int64 [n]
  boxes: np.ndarray        # float64 [n, 4] x, y, w, h (pixels)
  classes: np.ndarray      # int64 [n]
  scores: np.ndarray       # float64 [n]


def make_ground_truth(image, boxes, classes, image_ids, class_names, area=None, iscrowd=None):
  """Builds and checks a GroundTruth; `area` defaults to w * h and `iscrowd` to False."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  n = boxes.shape[0]
  gt = GroundTruth(
      image=np.asarray(image, np.int64).reshape(n),
      boxes=boxes,
      classes=np.asarray(classes, np.int64).reshape(n),
      area=(boxes[:, 2] * boxes[:, 3] if area is None else np.asarray(area, np.float64).reshape(n)),
      iscrowd=(np.zeros(n, bool) if iscrowd is None else np.asarray(iscrowd, bool).reshape(n)),
      image_ids=list(image_ids),
      class_names=list(class_names),
  )
  _check_common('ground truth', gt.image, gt.boxes, gt.classes, gt.num_images, gt.num_classes)
  if not np.all(np.isfinite(gt.area)):
    raise ValueError(f"ground truth: area of box {int(np.flatnonzero(~np.isfinite(gt.area))[0])} "
                     "is not finite")
  return gt


def make_detections(image, boxes, classes, scores, num_images, num_classes):
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  n = boxes.shape[0]
  dt = Detections(
      image=np.asarray(image, np.int64).reshape(n),
      boxes=boxes,
      classes=np.asarray(classes, np.int64).reshape(n),
      scores=np.asarray(scores, np.float64).reshape(n),
  )
  _check_common('detections', dt.image, dt.boxes, dt.classes, num_images, num_classes)
  bad = np.flatnonzero(~np.isfinite(dt.scores))
  if bad.size:
    raise ValueError(f"detections: score of detection {int(bad[0])} is {dt.scores[bad[0]]}, "
                     "expected a finite number")
  return dt


def _check_common(what, image, boxes, classes, num_images, num_classes):
  for name, values, upper in (('image index', image, num_images), ('class', classes, num_classes)):
    bad = np.flatnonzero((values < 0) | (values >= upper))
    if bad.size:
      raise ValueError(f"{what}: {name} of box {int(bad[0])} is {int(values[bad[0]])}, "
                       f"expected 0..{upper - 1}")
  bad = np.flatnonzero(~np.all(np.isfinite(boxes), axis=1) | np.any(boxes[:, 2:] < 0, axis=1))
  if bad.size:
    raise ValueError(f"{what}: box {int(bad[0])} = {boxes[bad[0]].tolist()} is not a finite "
                     "(x, y, w, h) with w, h >= 0")


def xywh_to_xyxy(boxes):
  boxes = np.asarray(boxes, np.float64)
  return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes):
  boxes = np.asarray(boxes, np.float64)
  return np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)


def coco_pair_iou(det_xywh, gt_xywh, gt_crowd):
  """pycocotools' bbox IoU for matched-up pairs (det i with gt i), same operation order as its C code.

  For a crowd ground truth the union is the detection's own area (COCO's crowd regions).
  """
  dx, dy, dw, dh = det_xywh.T
  gx, gy, gw, gh = gt_xywh.T
  w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
  h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
  det_area = dw * dh
  inter = w * h
  union = np.where(gt_crowd, det_area, det_area + gw * gh - inter)
  with np.errstate(divide='ignore', invalid='ignore'):
    iou = inter / union
  return np.where((w > 0) & (h > 0), iou, 0.0)


def yolov5_box_iou(a_xyxy, b_xyxy, eps=1e-7):
  """yolov5's `box_iou` ([n, m] matrix); the eps in the union is part of its numbers."""
  a = np.asarray(a_xyxy, np.float64)[:, None, :]
  b = np.asarray(b_xyxy, np.float64)[None, :, :]
  wh = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None)
  inter = wh[..., 0] * wh[..., 1]
  area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
  area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  return inter / (area_a + area_b - inter + eps)


def yolov5_pair_iou(a_xyxy, b_xyxy, eps=1e-7):
  """`yolov5_box_iou` for matched-up pairs (a[i] with b[i])."""
  a = np.asarray(a_xyxy, np.float64)
  b = np.asarray(b_xyxy, np.float64)
  wh = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None)
  inter = wh[:, 0] * wh[:, 1]
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  return inter / (area_a + area_b - inter + eps)


def pairs_within_groups(left_group, right_group, num_groups):
  """All (left, right) index pairs whose group ids are equal.

  Pairs come out ordered by left index, then right index: the order the reference loops visit them.
  """
  left_group = np.asarray(left_group, np.int64)
  right_group = np.asarray(right_group, np.int64)
  right_order = np.argsort(right_group, kind='stable')
  right_count = np.bincount(right_group, minlength=num_groups)
  right_start = np.cumsum(right_count) - right_count
  per_left = right_count[left_group]
  left_idx = np.repeat(np.arange(left_group.size), per_left)
  first_pair = np.cumsum(per_left) - per_left
  offset = np.arange(left_idx.size) - np.repeat(first_pair, per_left)
  right_idx = right_order[right_start[left_group[left_idx]] + offset]
  return left_idx, right_idx
