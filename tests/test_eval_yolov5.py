"""yolov5 mode: hand-computed AP / P / R / F1 where it differs from coco mode, and its matching rule."""

import numpy as np
import pytest

from yolo_osam_jax.evaluation import boxes as boxes_lib
from yolo_osam_jax.evaluation import coco, yolov5


def _one_image(gt_boxes, gt_classes, det_boxes, det_classes, scores, num_classes=1):
  gt = boxes_lib.make_ground_truth(np.zeros(len(gt_boxes)), gt_boxes, gt_classes, ['img'],
                                   [f'c{i}' for i in range(num_classes)])
  dt = boxes_lib.make_detections(np.zeros(len(det_boxes)), det_boxes, det_classes, scores, 1,
                                 num_classes)
  return gt, dt


def test_hand_case_differs_from_coco():
  # 2 faces; two detections with the same score 0.5: the first on face A (IoU 1), the second nowhere.
  gt, dt = _one_image([[0, 0, 10, 10], [50, 50, 10, 10]], [0, 0],
                      [[0, 0, 10, 10], [200, 200, 10, 10]], [0, 0], [0.5, 0.5])
  # yolov5: recall [0.5, 0.5], precision [1, 0.5]; mrec [0, .5, .5, 1], envelope [1, 1, .5, 0].
  # np.interp on x = 0, 0.01, ..., 1: 1 for x < 0.5; at x = 0.5 the last of the equal mrec, 0.5;
  # then 1 - x. Trapezoid: 49 * 0.01 + 0.75 * 0.01 + sum_{i=50}^{99} (1 - (i + 0.5) / 100) * 0.01
  # = 0.49 + 0.0075 + 0.125 = 0.6225 at every threshold.
  result = yolov5.evaluate(gt, dt)['stats']
  assert result['map50'] == pytest.approx(0.6225, abs=1e-12)
  assert result['map50_95'] == pytest.approx(0.6225, abs=1e-12)
  # P and R curves are steps at confidence 0.5: for grid confidence < 0.5, P = 0.5 and R = 0.5, so
  # F1 = 0.5 there and 0 above; the smoothed mean F1 is maximal (first) at index 0.
  assert result['precision'] == pytest.approx(0.5, abs=1e-12)
  assert result['recall'] == pytest.approx(0.5, abs=1e-12)
  assert result['f1'] == pytest.approx(0.5, abs=1e-12)
  # COCO: precision 1 at recall thresholds 0..0.5 (51 of 101), 0 beyond the recall reached.
  stats = coco.evaluate(gt, dt)['stats']
  assert stats['map50'] == pytest.approx(51 / 101, abs=1e-12)
  assert stats['map50_95'] == pytest.approx(51 / 101, abs=1e-12)


def test_single_perfect_detection_gives_0995():
  # The classic yolov5 number: one TP then one FP -> envelope [1, 1, 0.5, 0] with mrec [0, 1, 1, 1];
  # interpolation is 1 up to x = 0.99 and 0 at x = 1 -> 0.99 + 0.005 = 0.995. COCO gives 1.
  gt, dt = _one_image([[0, 0, 10, 10]], [0], [[0, 0, 10, 10], [40, 40, 5, 5]], [0, 0], [0.9, 0.8])
  assert yolov5.evaluate(gt, dt)['stats']['map50'] == pytest.approx(0.995, abs=1e-12)
  assert coco.evaluate(gt, dt)['stats']['map50'] == pytest.approx(1.0, abs=1e-12)


def test_matching_per_threshold_keeps_earliest_detection():
  # Face [0, 0, 10, 10]; A (0.9) = [0, 0, 10, 7.8], IoU 78 / (100 + 1e-7) < 0.78; B (0.8) exact.
  # Thresholds 0.50..0.75: both pair with the face; the face keeps the earliest detection A.
  # Thresholds 0.80..0.95: only B qualifies.
  gt, dt = _one_image([[0, 0, 10, 10]], [0], [[0, 0, 10, 7.8], [0, 0, 10, 10]], [0, 0], [0.9, 0.8])
  correct = yolov5.match(gt, dt)
  low = yolov5.IOU_THRESHOLDS <= 0.75 + 1e-9
  np.testing.assert_array_equal(correct[0], low)
  np.testing.assert_array_equal(correct[1], ~low)


def test_matching_needs_equal_class_and_one_label_per_detection():
  # Two faces of classes 0 and 1 at the same place; one detection of class 1 on them: it matches the
  # class-1 face only; a second class-1 detection on the same place has no face left.
  gt, dt = _one_image([[0, 0, 10, 10], [0, 0, 10, 10]], [0, 1],
                      [[0, 0, 10, 10], [0, 0, 10, 10]], [1, 1], [0.9, 0.8], num_classes=2)
  correct = yolov5.match(gt, dt)
  assert correct[0].all() and not correct[1].any()


def test_compute_ap_by_hand():
  # recall [1], precision [1]: mrec [0, 1, 1], envelope [1, 1, 0]: 1 for x < 1, 0 at x = 1.
  ap, _, _ = yolov5.compute_ap(np.array([1.0]), np.array([1.0]))
  assert ap == pytest.approx(0.995, abs=1e-12)
  # recall [0.5], precision [0.5]: mrec [0, .5, 1], envelope [1, .5, 0] -> piecewise linear
  # 1 -> 0.5 on [0, 0.5] then 0.5 -> 0 on [0.5, 1]: exact trapezoid area 0.375 + 0.125 = 0.5.
  ap, _, _ = yolov5.compute_ap(np.array([0.5]), np.array([0.5]))
  assert ap == pytest.approx(0.5, abs=1e-12)


def test_no_correct_detection_gives_zeros():
  gt, dt = _one_image([[0, 0, 10, 10]], [0], [[50, 50, 10, 10]], [0], [0.9])
  stats = yolov5.evaluate(gt, dt)['stats']
  assert [stats[k] for k in ('precision', 'recall', 'f1', 'map50', 'map50_95')] == [0.0] * 5
  assert stats['per_class'][0]['labels'] == 1


def test_smooth_is_a_box_filter():
  y = np.zeros(20)
  y[10] = 1.0
  # fraction 0.1 of 20 points -> width round(4) // 2 + 1 = 3: three neighbours share the spike.
  np.testing.assert_allclose(yolov5.smooth(y, 0.1)[9:12], [1 / 3] * 3)
  assert yolov5.smooth(y, 0.1).sum() == pytest.approx(1.0)


def _process_batch_loop(det_xyxy, det_classes, label_xyxy, label_classes, thresholds):
  """yolov5's val.py process_batch for one image, written as its steps: where(), sort, 2x unique."""
  correct = np.zeros((len(det_xyxy), len(thresholds)), bool)
  iou = boxes_lib.yolov5_box_iou(label_xyxy, det_xyxy)
  same_class = label_classes[:, None] == det_classes[None, :]
  for i, t in enumerate(thresholds):
    li, di = np.nonzero((iou >= t) & same_class)
    if li.size:
      matches = np.stack([li, di, iou[li, di]], 1)
      if li.size > 1:
        matches = matches[np.argsort(matches[:, 2], kind='stable')[::-1]]
        matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
        matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
      correct[matches[:, 1].astype(int), i] = True
  return correct


def test_vectorised_matching_equals_per_image_loop():
  rng = np.random.default_rng(3)
  num_images, num_classes = 30, 3
  gt_image, gt_boxes, gt_classes, det_image, det_boxes, det_classes, scores = ([] for _ in range(7))
  for im in range(num_images):
    for _ in range(int(rng.integers(0, 5))):
      box = np.concatenate([rng.uniform(0, 100, 2), rng.uniform(5, 60, 2)])
      gt_image.append(im), gt_boxes.append(box), gt_classes.append(int(rng.integers(num_classes)))
      for _ in range(int(rng.integers(0, 4))):
        det_image.append(im)
        det_boxes.append(np.maximum(box + rng.normal(0, 0.1, 4) * box[[2, 3, 2, 3]], [0, 0, 1, 1]))
        det_classes.append(gt_classes[-1] if rng.random() < 0.8 else int(rng.integers(num_classes)))
        scores.append(float(rng.random()))
  gt = boxes_lib.make_ground_truth(gt_image, gt_boxes, gt_classes, list(range(num_images)),
                                   ['a', 'b', 'c'])
  dt = boxes_lib.make_detections(det_image, det_boxes, det_classes, scores, num_images, num_classes)
  order = yolov5.sort_detections(dt)
  correct = yolov5.match(gt, dt, order)
  assert correct.any() and not correct.all()
  sorted_image = dt.image[order]
  for im in range(num_images):
    rows = np.flatnonzero(sorted_image == im)
    labels = np.flatnonzero(gt.image == im)
    expected = _process_batch_loop(
        boxes_lib.xywh_to_xyxy(dt.boxes[order[rows]]), dt.classes[order[rows]],
        boxes_lib.xywh_to_xyxy(gt.boxes[labels]), gt.classes[labels], yolov5.IOU_THRESHOLDS)
    np.testing.assert_array_equal(correct[rows], expected, err_msg=f'image {im}')
