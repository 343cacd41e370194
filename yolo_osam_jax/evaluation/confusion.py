"""yolov5's detection confusion matrix (utils/metrics.py ConfusionMatrix as val.py uses it).

Matrix [nc + 1, nc + 1], rows = predicted class, columns = true class, index nc = background.
Per image with labels: detections with score > conf (0.25) are kept; (label, detection) pairs with IoU >
iou_thres (0.45, strict, any class) are sorted by IoU descending, each detection keeps its best label,
then (re-sorted by IoU) each label keeps its best detection. A matched label adds 1 at [det class, label
class]; an unmatched label at [background, label class]; an unmatched detection at [det class, background].

yolov5 quirks kept by default (`yolov5_exact=True`) so the matrix equals the validator's: images without
labels are never passed to it (val.py only calls it when an image has labels), and unmatched detections
are counted only when the image had at least one match (its `if n:`). With `yolov5_exact=False` every
unmatched detection above conf counts as a false positive.
"""

from __future__ import annotations

import numpy as np

from yolo_osam_jax.evaluation import boxes as boxes_lib


def _desc(values):
  # yolov5's argsort()[::-1]: equal values come out later-first.
  return np.argsort(values, kind='stable')[::-1]


def detection_confusion(gt: boxes_lib.GroundTruth, dt: boxes_lib.Detections, conf: float = 0.25,
                        iou_thres: float = 0.45, yolov5_exact: bool = True):
  nc = gt.num_classes
  matrix = np.zeros((nc + 1, nc + 1), np.int64)
  labels_mask = ~gt.iscrowd
  gt_by_image = np.argsort(gt.image[labels_mask], kind='stable')
  gt_index = np.flatnonzero(labels_mask)[gt_by_image]
  det_order = np.lexsort((-dt.scores, dt.image))
  gt_bounds = np.searchsorted(gt.image[gt_index], np.arange(gt.num_images + 1))
  det_bounds = np.searchsorted(dt.image[det_order], np.arange(gt.num_images + 1))
  for im in range(gt.num_images):
    labels = gt_index[gt_bounds[im]:gt_bounds[im + 1]]
    dets = det_order[det_bounds[im]:det_bounds[im + 1]]
    if labels.size == 0 and yolov5_exact:
      continue
    label_classes = gt.classes[labels]
    dets = dets[dt.scores[dets] > conf]
    det_classes = dt.classes[dets]
    iou = boxes_lib.yolov5_box_iou(boxes_lib.xywh_to_xyxy(gt.boxes[labels]),
                                   boxes_lib.xywh_to_xyxy(dt.boxes[dets]))
    li, di = np.nonzero(iou > iou_thres)
    matches = np.stack([li, di, iou[li, di]], 1) if li.size else np.zeros((0, 3))
    if matches.shape[0] > 1:
      matches = matches[_desc(matches[:, 2])]
      matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
      matches = matches[_desc(matches[:, 2])]
      matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
    matched_label = matches[:, 0].astype(np.int64)
    matched_det = matches[:, 1].astype(np.int64)
    for i, label_class in enumerate(label_classes):
      hit = np.flatnonzero(matched_label == i)
      if hit.size == 1:
        matrix[det_classes[matched_det[hit[0]]], label_class] += 1
      else:
        matrix[nc, label_class] += 1
    if matches.shape[0] > 0 or not yolov5_exact:
      for j, det_class in enumerate(det_classes):
        if not np.any(matched_det == j):
          matrix[det_class, nc] += 1
  return matrix
