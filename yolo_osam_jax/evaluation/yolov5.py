"""yolov5's validator metrics (val.py `process_batch` + utils/metrics.py `ap_per_class`), numpy.

Matching, per image and per IoU threshold t in 0.50:0.05:0.95 (yolov5 >= 6.2 matches per threshold):
candidate (label, detection) pairs have equal class and IoU >= t (yolov5's box_iou, eps 1e-7 in the
union). Pairs are sorted by IoU descending; each detection keeps its first pair (its best label); the
survivors are then in detection order, and each label keeps its first survivor, i.e. the *earliest*
detection (detections of an image are in NMS order, best score first), not the highest-IoU one - this is
what yolov5's code does (its re-sort by IoU before the second `np.unique` is commented out). Equal IoUs:
yolov5's reversed argsort puts the later (label, detection) pair first; so does this module.

AP per class (classes that have labels): detections of all images sorted by confidence (stable: equal
scores keep image order; yolov5's unstable argsort leaves that order unspecified), recall = tp / (n_labels
+ 1e-16), precision = tp / (tp + fp), envelope over [1, p..., 0] / [0, r..., 1], then np.interp at 101
recall points integrated with the trapezoid rule. P and R curves are interpolated on a 1000-point
confidence grid (left = 0 for recall, 1 for precision); F1 = 2PR / (P + R + 1e-16); the reported P, R, F1
are read at the grid index maximising the box-smoothed (fraction 0.1) mean F1. A class without
detections has AP = P = R = 0. As in val.py, everything is 0 when no detection is correct at any
threshold.

mAP50 = mean over classes of AP at 0.5; mAP50-95 = mean over classes of the mean over thresholds.
"""

from __future__ import annotations

import numpy as np

from yolo_osam_jax.evaluation import boxes as boxes_lib

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
CONFIDENCE_GRID = np.linspace(0, 1, 1000)


def sort_detections(dt: boxes_lib.Detections):
  """Detection order of yolov5's per-image arrays: by image, then score descending (stable)."""
  return np.lexsort((-dt.scores, dt.image))


def match(gt: boxes_lib.GroundTruth, dt: boxes_lib.Detections, order=None):
  """`correct` [n_det, T] bools for the detections in `order` (default `sort_detections(dt)`)."""
  if order is None:
    order = sort_detections(dt)
  num_t = len(IOU_THRESHOLDS)
  correct = np.zeros((order.size, num_t), bool)
  label_mask = ~gt.iscrowd
  labels = np.flatnonzero(label_mask)
  group_size = gt.num_images * gt.num_classes
  det_group = dt.image[order] * gt.num_classes + dt.classes[order]
  label_group = gt.image[labels] * gt.num_classes + gt.classes[labels]
  # Pairs ordered by (label, detection), the row-major order of torch.where over the [labels, dets] IoU.
  lab, det = boxes_lib.pairs_within_groups(label_group, det_group, group_size)
  label_xyxy = boxes_lib.xywh_to_xyxy(gt.boxes[labels])
  det_xyxy = boxes_lib.xywh_to_xyxy(dt.boxes[order])
  iou = boxes_lib.yolov5_pair_iou(label_xyxy[lab], det_xyxy[det])
  useful = iou >= IOU_THRESHOLDS[0]
  lab, det, iou = lab[useful], det[useful], iou[useful]
  position = np.arange(lab.size)
  for t, threshold in enumerate(IOU_THRESHOLDS):
    m = iou >= threshold
    l, d, v, pos = lab[m], det[m], iou[m], position[m]
    # Step 1: per detection the highest IoU, ties to the later pair.
    step1 = np.lexsort((-pos, -v, d))
    d1 = d[step1]
    first = np.concatenate([[True], d1[1:] != d1[:-1]]) if d1.size else np.zeros(0, bool)
    survivors = step1[first]             # one per detection, in detection order
    # Step 2: per label the earliest detection among the survivors.
    l2 = l[survivors]
    step2 = np.lexsort((d[survivors], l2))
    l2s = l2[step2]
    first = np.concatenate([[True], l2s[1:] != l2s[:-1]]) if l2s.size else np.zeros(0, bool)
    correct[d[survivors[step2[first]]], t] = True
  return correct


def smooth(y, fraction=0.05):
  """yolov5's box filter: odd width round(len * fraction * 2) // 2 + 1, edges padded with end values."""
  width = round(len(y) * fraction * 2) // 2 + 1
  pad = np.ones(width // 2)
  padded = np.concatenate((pad * y[0], y, pad * y[-1]), 0)
  return np.convolve(padded, np.ones(width) / width, mode='valid')


def compute_ap(recall, precision):
  """101-point interpolated AP with the trapezoid rule; returns (ap, envelope precision, recall)."""
  mrec = np.concatenate(([0.0], recall, [1.0]))
  mpre = np.concatenate(([1.0], precision, [0.0]))
  mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
  x = np.linspace(0, 1, 101)
  return np.trapezoid(np.interp(x, mrec, mpre), x), mpre, mrec


def ap_per_class(correct, confidence, pred_classes, target_classes, num_classes, eps=1e-16):
  """yolov5's ap_per_class. Returns a dict of per-class arrays over the classes present in the labels."""
  order = np.argsort(-confidence, kind='stable')
  correct, confidence, pred_classes = correct[order], confidence[order], pred_classes[order]
  classes, n_labels = np.unique(target_classes, return_counts=True)
  nc = classes.size
  num_t = correct.shape[1]
  px = CONFIDENCE_GRID
  ap = np.zeros((nc, num_t))
  p_curve = np.zeros((nc, px.size))
  r_curve = np.zeros((nc, px.size))
  pr_curve = np.zeros((nc, px.size))   # precision vs recall at IoU 0.5, on the recall grid px
  for ci, c in enumerate(classes):
    mine = pred_classes == c
    if not mine.any():
      continue
    tpc = correct[mine].cumsum(0)
    fpc = (1 - correct[mine]).cumsum(0)
    recall = tpc / (n_labels[ci] + eps)
    precision = tpc / (tpc + fpc)
    r_curve[ci] = np.interp(-px, -confidence[mine], recall[:, 0], left=0)
    p_curve[ci] = np.interp(-px, -confidence[mine], precision[:, 0], left=1)
    for j in range(num_t):
      ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
      if j == 0:
        pr_curve[ci] = np.interp(px, mrec, mpre)
  f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
  best = int(smooth(f1_curve.mean(0), 0.1).argmax()) if nc else 0
  return {
      'classes': classes,
      'n_labels': n_labels,
      'ap': ap,
      'precision': p_curve[:, best],
      'recall': r_curve[:, best],
      'f1': f1_curve[:, best],
      'best_index': best,
      'confidence_threshold': float(px[best]),
      'curves': {'confidence': px, 'precision': p_curve, 'recall': r_curve, 'f1': f1_curve,
                 'recall_grid': px, 'pr': pr_curve},
  }


def evaluate(gt: boxes_lib.GroundTruth, dt: boxes_lib.Detections) -> dict:
  """yolov5-mode metrics: {'stats': {precision, recall, f1, map50, map50_95, per_class},
  'confidence_threshold' (where P, R, F1 are read), 'curves' (None when nothing is correct)}.

  `f1` is the mean over classes of the per-class F1 at the chosen confidence (the quantity maximised).
  Crowd ground truth is not a label in yolov5 and is left out.
  """
  order = sort_detections(dt)
  correct = match(gt, dt, order)
  target_classes = gt.classes[~gt.iscrowd]
  stats = {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'map50': 0.0, 'map50_95': 0.0}
  curves = None
  confidence_threshold = None
  per_class = []
  labels_per_class = np.bincount(target_classes, minlength=gt.num_classes)
  if correct.any():
    result = ap_per_class(correct, dt.scores[order], dt.classes[order], target_classes, gt.num_classes)
    ap50, ap = result['ap'][:, 0], result['ap'].mean(1)
    stats.update(precision=float(result['precision'].mean()), recall=float(result['recall'].mean()),
                 f1=float(result['f1'].mean()), map50=float(ap50.mean()), map50_95=float(ap.mean()))
    confidence_threshold = result['confidence_threshold']
    curves = dict(result['curves'], classes=result['classes'])
    for i, c in enumerate(result['classes']):
      per_class.append({
          'class': gt.class_names[c], 'labels': int(result['n_labels'][i]),
          'precision': float(result['precision'][i]), 'recall': float(result['recall'][i]),
          'f1': float(result['f1'][i]), 'ap50': float(ap50[i]), 'ap50_95': float(ap[i])})
  else:
    for c in np.flatnonzero(labels_per_class):
      per_class.append({'class': gt.class_names[c], 'labels': int(labels_per_class[c]),
                        'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'ap50': 0.0, 'ap50_95': 0.0})
  stats['per_class'] = per_class
  return {'stats': stats, 'confidence_threshold': confidence_threshold, 'curves': curves}
