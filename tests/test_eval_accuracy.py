"""The paper's accuracy, macro F1, classification and yolov5 detection confusion matrices, by hand."""

import numpy as np
import pytest

from yolo_osam_jax.evaluation import accuracy, boxes as boxes_lib, confusion, runner

BG = 3  # background index for 3 classes


def _case():
  """5 images, 3 classes; boxes x, y, w, h.

  img0: face c0; det c1 0.9 IoU 1 and det c0 0.8 IoU 0.95 -> best matched det is c1: wrong.
  img1: face c1; det c0 0.95 far away, det c1 0.3 IoU 0.6 -> c1: correct.
  img2: face c2; det c2 0.9 IoU 0.4 < 0.5 -> missed: wrong.
  img3: face c0; det c0 0.7 IoU 1, det c2 0.2 IoU 1 -> c0: correct.
  img4: no face; det c1 0.9.
  """
  face = [0, 0, 10, 10]
  gt = boxes_lib.make_ground_truth([0, 1, 2, 3], [face] * 4, [0, 1, 2, 0], list('abcde'),
                                   ['neutral', 'happy', 'sad'])
  dets = [
      (0, face, 1, 0.9), (0, [0, 0, 10, 9.5], 0, 0.8),
      (1, [50, 50, 10, 10], 0, 0.95), (1, [0, 0, 10, 6], 1, 0.3),
      (2, [0, 0, 10, 4], 2, 0.9),
      (3, face, 0, 0.7), (3, face, 2, 0.2),
      (4, face, 1, 0.9),
  ]
  dt = boxes_lib.make_detections([d[0] for d in dets], [d[1] for d in dets], [d[2] for d in dets],
                                 [d[3] for d in dets], 5, 3)
  return gt, dt


def test_accuracy_and_classification_confusion():
  gt, dt = _case()
  result = accuracy.evaluate(gt, dt)
  assert result['accuracy'] == 0.5
  assert (result['correct'], result['faces'], result['missed']) == (2, 4, 1)
  np.testing.assert_array_equal(result['confusion_matrix'], [
      [1, 1, 0, 0],   # true neutral: once neutral (img3), once happy (img0)
      [0, 1, 0, 0],   # true happy
      [0, 0, 0, 1],   # true sad: missed
  ])
  # neutral P 1/1 R 1/2 F1 2/3; happy P 1/2 R 1/1 F1 2/3; sad P 0 R 0 F1 0 -> macro 4/9.
  assert result['f1_macro'] == pytest.approx(4 / 9, abs=1e-12)
  assert [row['f1'] for row in result['per_class']] == pytest.approx([2 / 3, 2 / 3, 0.0])


def test_accuracy_conf_threshold_drops_low_detections():
  gt, dt = _case()
  # Without img1's 0.3 detection the happy face is missed: 1 correct of 4.
  result = accuracy.evaluate(gt, dt, conf_thres=0.5)
  assert result['accuracy'] == 0.25
  assert result['missed'] == 2
  assert result['conf_thres'] == 0.5


def test_paper_threshold_is_the_default_of_every_report():
  # The paper's Eq. 9 counts predictions above a score of 0.5: configs and the runner default to it.
  from configs import base  # pylint: disable=g-import-not-at-top
  assert base.get_config().eval.accuracy_conf_thres == 0.5
  gt, dt = _case()
  results = runner.evaluate_detections(gt, dt)
  assert results['accuracy']['accuracy'] == 0.25 and results['accuracy']['conf_thres'] == 0.5
  assert 'score >= 0.5) 0.2500' in runner.format_table(results)


def test_detection_confusion_yolov5_exact():
  gt, dt = _case()
  matrix = confusion.detection_confusion(gt, dt, conf=0.25, iou_thres=0.45)
  expected = np.zeros((4, 4), np.int64)
  expected[1, 0] += 1    # img0: face c0 matched to its highest-IoU detection, c1 (IoU 1 > 0.95)
  expected[0, BG] += 1   # img0: the c0 detection is left over -> predicted background
  expected[1, 1] += 1    # img1: matched
  expected[0, BG] += 1   # img1: far detection
  expected[BG, 2] += 1   # img2: IoU 0.4 <= 0.45 -> face missed; no match in the image, so yolov5
  #                        does not count the c2 detection
  expected[0, 0] += 1    # img3 (the 0.2 detection is below conf 0.25)
  #                        img4 has no labels: yolov5's validator never passes it in
  np.testing.assert_array_equal(matrix, expected)


def test_detection_confusion_all_false_positives():
  gt, dt = _case()
  matrix = confusion.detection_confusion(gt, dt, conf=0.25, iou_thres=0.45, yolov5_exact=False)
  exact = confusion.detection_confusion(gt, dt, conf=0.25, iou_thres=0.45)
  extra = matrix - exact
  expected = np.zeros((4, 4), np.int64)
  expected[2, BG] = 1    # img2's unmatched c2 detection
  expected[1, BG] = 1    # img4's c1 detection on an image without faces
  np.testing.assert_array_equal(extra, expected)
