"""evaluate_batches (letterbox mapping, padded rows), plots, and scripts/eval.py's file mode."""

import contextlib
import copy
import importlib.util
import io
import json
import os

import matplotlib.image
import numpy as np
import pytest

from yolo_osam_jax.evaluation import coco, plots, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ['neutral', 'happy']


def _batch():
  """2 rows, the second padding (valid False). Original 96 x 128 (h, w) letterboxed into 64 x 64:
  scale 0.5, pad (0, 8). The face [20, 10] - [60, 50] in original pixels is [10, 13] - [30, 33] there:
  cx, cy, w, h = 20, 23, 20, 20 -> normalised / 64."""
  boxes = np.zeros((2, 4, 4), np.float32)
  boxes[0, 0] = np.array([20, 23, 20, 20]) / 64
  classes = np.zeros((2, 4), np.int32)
  classes[0, 0] = 1
  mask = np.zeros((2, 4), bool)
  mask[0, 0] = True
  mask[1, 0] = True  # a padding row's labels must not count
  return {
      'image': np.zeros((2, 64, 64, 3), np.uint8), 'boxes': boxes, 'classes': classes, 'mask': mask,
      'index': np.array([0, 0], np.int64), 'image_id': np.array(['face_001', 'pad']),
      'orig_size': np.array([[96, 128], [96, 128]], np.int32),
      'letterbox': np.array([[0.5, 0, 8], [0.5, 0, 8]], np.float32),
      'valid': np.array([True, False]),
  }


def _predict(batch):
  """Decoded predictions [B, 3, 5 + 2]: the face exactly (happy 0.9), a shifted copy (neutral) and a
  box partly outside the image (to be clipped)."""
  predictions = np.zeros((2, 3, 7), np.float32)
  predictions[:, 0] = [20, 23, 20, 20, 0.9, 0.05, 0.95]
  predictions[:, 1] = [40, 40, 10, 10, 0.8, 0.9, 0.1]
  predictions[:, 2] = [62, 30, 8, 8, 0.7, 0.9, 0.1]
  return predictions


def test_collect_maps_back_to_original_pixels():
  config = {'conf_thres': 0.001, 'iou_thres': 0.6, 'max_det': 300, 'multi_label': False}
  gt, dt = runner.collect_batches(_predict, [_batch()], config, NAMES)
  assert gt.image_ids == ['face_001']
  np.testing.assert_allclose(gt.boxes, [[20, 10, 40, 40]], atol=1e-4)
  np.testing.assert_array_equal(gt.classes, [1])
  order = np.argsort(-dt.scores)
  np.testing.assert_allclose(dt.scores[order], [0.9 * 0.95, 0.8 * 0.9, 0.7 * 0.9], rtol=1e-6)
  np.testing.assert_array_equal(dt.classes[order], [1, 0, 0])
  # [35, 35]-[45, 45] -> ([70, 54]-[90, 74]); [58, 26]-[66, 34] -> x2 132 clipped to width 128.
  np.testing.assert_allclose(dt.boxes[order], [[20, 10, 40, 40], [70, 54, 20, 20], [116, 36, 12, 16]],
                             atol=1e-4)


def test_evaluate_batches_numbers():
  config = {'mode': 'coco', 'conf_thres': 0.001, 'iou_thres': 0.6, 'max_det': 300,
            'multi_label': True}
  results = runner.evaluate_batches(_predict, [_batch()], config, NAMES)
  assert results['num_images'] == 1 and results['num_labels'] == 1
  # The face is found first (IoU 1): COCO AP 1 at every threshold; yolov5 0.995 (its last point).
  assert results['metrics']['map50_95'] == pytest.approx(1.0, abs=1e-6)
  assert results['yolov5']['map50'] == pytest.approx(0.995, abs=1e-6)
  assert results['accuracy']['accuracy'] == 1.0
  json.dumps(runner.json_ready(results))  # serialisable
  assert 'happy' in runner.format_table(results)


def test_plots_written(tmp_path):
  config = {'conf_thres': 0.001, 'iou_thres': 0.6, 'max_det': 300, 'multi_label': True}
  results = runner.evaluate_batches(_predict, [_batch()], config, NAMES)
  paths = plots.save_all(results, str(tmp_path))
  names = sorted(os.path.basename(p) for p in paths)
  assert names == ['F1_curve.png', 'PR_curve.png', 'P_curve.png', 'R_curve.png',
                   'classification_confusion_matrix.png', 'confusion_matrix.png']
  for path in paths:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 300


def _load_script():
  spec = importlib.util.spec_from_file_location('eval_script', os.path.join(ROOT, 'scripts', 'eval.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _files(tmp_path):
  ground_truth = {
      'images': [{'id': 1}, {'id': 2}],
      'categories': [{'id': 1, 'name': 'neutral'}, {'id': 2, 'name': 'happy'}],
      'annotations': [
          {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 10, 10], 'area': 100, 'iscrowd': 0},
          {'id': 2, 'image_id': 2, 'category_id': 2, 'bbox': [0, 0, 50, 50], 'area': 2500,
           'iscrowd': 0}]}
  results = [
      {'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 10, 10], 'score': 0.5},
      {'image_id': 1, 'category_id': 1, 'bbox': [30, 30, 10, 10], 'score': 0.6},
      {'image_id': 2, 'category_id': 2, 'bbox': [0, 0, 45, 50], 'score': 0.9},
  ]
  gt_path, det_path = tmp_path / 'gt.json', tmp_path / 'dets.json'
  gt_path.write_text(json.dumps(ground_truth))
  det_path.write_text(json.dumps(results))
  return ground_truth, results, str(gt_path), str(det_path)


def test_script_coco_mode_equals_pycocotools(tmp_path):
  pycoco = pytest.importorskip('pycocotools.coco')
  pycocoeval = pytest.importorskip('pycocotools.cocoeval')
  ground_truth, results, gt_path, det_path = _files(tmp_path)
  out = tmp_path / 'metrics.json'
  script = _load_script()
  with contextlib.redirect_stdout(io.StringIO()):
    assert script.main(['--predictions', det_path, '--ground-truth', gt_path, '--mode', 'coco',
                        '--out', str(out)]) == 0
    coco_gt = pycoco.COCO(gt_path)
    evaluator = pycocoeval.COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), 'bbox')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  metrics = json.loads(out.read_text())
  assert list(metrics) == list(coco.STAT_KEYS)
  np.testing.assert_allclose([metrics[k] for k in coco.STAT_KEYS], evaluator.stats, atol=1e-9)


def test_script_yolov5_mode_keys(tmp_path):
  _, _, gt_path, det_path = _files(tmp_path)
  out = tmp_path / 'metrics.json'
  with contextlib.redirect_stdout(io.StringIO()):
    assert _load_script().main(['--predictions', det_path, '--ground-truth', gt_path, '--mode',
                                'yolov5', '--out', str(out)]) == 0
  metrics = json.loads(out.read_text())
  assert list(metrics) == ['precision', 'recall', 'f1', 'map50', 'map50_95', 'per_class']
  # neutral: FP (0.6) ranks before the TP (0.5): recall [0, 1], precision [0, 0.5] -> envelope
  # [1, 0.5, 0.5, 0] over mrec [0, 0, 1, 1]; np.interp reads the last of equal x's, so 0.5 on [0, 1)
  # and 0 at 1 -> 99 intervals of 0.5 * 0.01 plus (0.5 + 0) / 2 * 0.01 = 0.4975.
  # happy: one TP, IoU 0.9 -> AP 0.995 at thresholds <= 0.9, else 0.
  rows = {r['class']: r for r in metrics['per_class']}
  assert rows['neutral']['ap50'] == pytest.approx(0.4975, abs=1e-12)
  assert rows['happy']['ap50'] == pytest.approx(0.995, abs=1e-12)
  assert metrics['map50'] == pytest.approx((0.4975 + 0.995) / 2, abs=1e-12)


def test_script_errors(tmp_path, capsys):
  _, _, gt_path, _ = _files(tmp_path)
  bad = tmp_path / 'bad.json'
  bad.write_text(json.dumps([{'image_id': 9, 'category_id': 1, 'bbox': [0, 0, 1, 1], 'score': 1}]))
  script = _load_script()
  assert script.main(['--predictions', str(bad), '--ground-truth', gt_path]) == 2
  assert f"{bad}: [0]: image_id 9 is not an image" in capsys.readouterr().err
  # A folder that is neither a model checkpoint nor a training run: exit 2, the folder named.
  assert script.main(['--config', 'configs/base.py', '--checkpoint', str(tmp_path)]) == 2
  assert f"{tmp_path}: neither a model checkpoint" in capsys.readouterr().err
