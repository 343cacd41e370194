"""coco mode against pycocotools (a test dependency) and a hand-computed AP."""

import contextlib
import copy
import io

import numpy as np
import pytest

from yolo_osam_jax.evaluation import coco

pycocotools_coco = pytest.importorskip('pycocotools.coco')
pycocotools_eval = pytest.importorskip('pycocotools.cocoeval')


def _pycocotools(ground_truth, results):
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = pycocotools_coco.COCO()
    coco_gt.dataset = copy.deepcopy(ground_truth)
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    evaluator = pycocotools_eval.COCOeval(coco_gt, coco_dt, 'bbox')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return evaluator


def _ours(ground_truth, results):
  gt = coco.ground_truth_from_coco(ground_truth)
  dt = coco.detections_from_coco(results, gt, coco.category_ids_of(ground_truth))
  return coco.evaluate(gt, dt, full=True)


def _random_case(seed, crowd=False):
  """Random images with: no detections, no ground truth, duplicate detections, tied scores (scores
  rounded to 1 decimal), one image/category with more than 100 detections, areas of all 3 ranges,
  file ids in no particular order."""
  rng = np.random.default_rng(seed)
  image_ids = [int(i) for i in rng.permutation(40) * 7 + 3]
  images = [{'id': i} for i in image_ids]
  categories = [{'id': 9, 'name': 'nine'}, {'id': 2, 'name': 'two'}, {'id': 5, 'name': 'five'}]
  cat_ids = [c['id'] for c in categories]
  annotations, results = [], []
  for n, image_id in enumerate(image_ids):
    if n % 10 == 1:
      continue  # neither ground truth nor detections
    n_gt = 0 if n % 10 == 2 else int(rng.integers(1, 6))
    for _ in range(n_gt):
      x, y = rng.uniform(0, 300, 2)
      w, h = np.exp(rng.uniform(np.log(4), np.log(250), 2))
      cat = cat_ids[rng.integers(3)]
      annotations.append({'id': len(annotations) + 1, 'image_id': image_id, 'category_id': cat,
                          'bbox': [x, y, w, h], 'area': w * h,
                          'iscrowd': int(crowd and rng.random() < 0.15)})
      if n % 10 == 3:
        continue  # ground truth without detections
      for _ in range(int(rng.integers(0, 4))):
        box = np.array([x, y, w, h]) + rng.normal(0, 0.12, 4) * np.array([w, h, w, h])
        box[2:] = np.maximum(box[2:], 1)
        results.append({'image_id': image_id,
                        'category_id': cat if rng.random() < 0.8 else cat_ids[rng.integers(3)],
                        'bbox': box.tolist(), 'score': float(np.round(rng.random(), 1))})
    if n % 10 != 3:
      for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(0, 300, 2)
        w, h = rng.uniform(4, 150, 2)
        results.append({'image_id': image_id, 'category_id': cat_ids[rng.integers(3)],
                        'bbox': [x, y, w, h], 'score': float(np.round(rng.random(), 1))})
  # More than maxDets=100 detections for one image and category.
  crowded = image_ids[5]
  for _ in range(130):
    x, y = rng.uniform(0, 300, 2)
    results.append({'image_id': crowded, 'category_id': 2, 'bbox': [x, y, 40.0, 40.0],
                    'score': float(np.round(rng.random(), 1))})
  results += copy.deepcopy([results[i] for i in rng.integers(0, len(results), 25)])  # duplicates
  results = [results[i] for i in rng.permutation(len(results))]
  return {'images': images, 'annotations': annotations, 'categories': categories}, results


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_equals_pycocotools_random(seed):
  ground_truth, results = _random_case(seed)
  reference = _pycocotools(ground_truth, results)
  ours = _ours(ground_truth, results)
  stats = np.array([ours['stats'][k] for k in coco.STAT_KEYS])
  np.testing.assert_allclose(stats, reference.stats, rtol=0, atol=1e-9)
  # The whole precision / recall arrays, not just their means.
  np.testing.assert_allclose(ours['precision'], reference.eval['precision'], rtol=0, atol=1e-12)
  np.testing.assert_allclose(ours['recall'], reference.eval['recall'], rtol=0, atol=1e-12)


def test_equals_pycocotools_with_crowd():
  ground_truth, results = _random_case(7, crowd=True)
  assert any(a['iscrowd'] for a in ground_truth['annotations'])
  reference = _pycocotools(ground_truth, results)
  stats = np.array([_ours(ground_truth, results)['stats'][k] for k in coco.STAT_KEYS])
  np.testing.assert_allclose(stats, reference.stats, rtol=0, atol=1e-9)


def test_equal_scores_keep_file_order():
  # One ground truth, two detections with the same score on it: the first in the file takes it.
  # File order TP, FP -> precision 1 up to recall 1 -> AP 1; FP, TP -> precision 0.5 -> AP 0.5.
  ground_truth = {'images': [{'id': 1}], 'categories': [{'id': 1, 'name': 'face'}],
                  'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 50, 50],
                                   'area': 2500, 'iscrowd': 0}]}
  hit = {'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 50, 50], 'score': 0.5}
  miss = {'image_id': 1, 'category_id': 1, 'bbox': [100, 100, 50, 50], 'score': 0.5}
  assert _ours(ground_truth, [hit, miss])['stats']['map50_95'] == pytest.approx(1.0, abs=1e-12)
  assert _ours(ground_truth, [miss, hit])['stats']['map50_95'] == pytest.approx(0.5, abs=1e-12)
  for order in ([hit, miss], [miss, hit]):
    assert _ours(ground_truth, order)['stats']['map50_95'] == pytest.approx(
        _pycocotools(ground_truth, order).stats[0], abs=1e-12)


def test_hand_computed_ap():
  # 2 faces (areas 100 and 2500), 3 detections. d1 (0.9) on face A with IoU 1; d2 (0.8) nowhere;
  # d3 (0.7) on face B with IoU 40*50/2500 = 0.8.
  # Thresholds d3 passes (IoU 0.8 >= t; whether t = 0.8 itself passes depends on the float value of
  # linspace's 7th entry, so `passes` below computes it): ranking TP, FP, TP -> recall 0.5, 0.5, 1; precision 1, 0.5, 2/3 -> envelope 1, 2/3, 2/3.
  # Recall thresholds 0..0.5 (51) read 1, 0.51..1 (50) read 2/3 -> AP = (51 + 50 * 2/3) / 101.
  # Thresholds where d3 fails: ranking TP, FP, FP -> 51 points of 1 -> AP = 51 / 101.
  ground_truth = {'images': [{'id': 1}], 'categories': [{'id': 1, 'name': 'face'}],
                  'annotations': [
                      {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 10, 10], 'area': 100,
                       'iscrowd': 0},
                      {'id': 2, 'image_id': 1, 'category_id': 1, 'bbox': [100, 100, 50, 50],
                       'area': 2500, 'iscrowd': 0}]}
  results = [
      {'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 10, 10], 'score': 0.9},
      {'image_id': 1, 'category_id': 1, 'bbox': [300, 300, 10, 10], 'score': 0.8},
      {'image_id': 1, 'category_id': 1, 'bbox': [100, 100, 40, 50], 'score': 0.7},
  ]
  ours = _ours(ground_truth, results)
  thresholds = coco.IOU_THRESHOLDS
  passes = 0.8 >= np.minimum(thresholds, 1 - 1e-10)
  ap_both = (51 + 50 * 2 / 3) / 101
  ap_one = 51 / 101
  expected = np.where(passes, ap_both, ap_one).mean()
  assert ours['stats']['map50_95'] == pytest.approx(expected, abs=1e-12)
  assert ours['stats']['map50'] == pytest.approx(ap_both, abs=1e-12)
  assert ours['stats']['mar_100'] == pytest.approx(np.where(passes, 1.0, 0.5).mean(), abs=1e-12)
  assert ours['stats']['mar_1'] == pytest.approx(0.5, abs=1e-12)
  # Face A is small (area 100 < 32^2) and found by the best detection: AP_small = 1 at all thresholds.
  # d2 (area 100) is unmatched and small, so it counts in the small range; it ranks after d1 -> AP 1.
  assert ours['stats']['map_small'] == pytest.approx(1.0, abs=1e-12)
  # Face B is medium; d1 and d2 are small-area unmatched -> ignored there; d3 alone -> AP 1 or 0.
  assert ours['stats']['map_medium'] == pytest.approx(passes.mean(), abs=1e-12)
  assert ours['stats']['map_large'] == -1.0  # no large ground truth
  assert ours['stats']['map50_95'] == pytest.approx(_pycocotools(ground_truth, results).stats[0],
                                                    abs=1e-12)


def test_bad_files_name_entry_and_field():
  ground_truth = {'images': [{'id': 1}], 'categories': [{'id': 1, 'name': 'face'}],
                  'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 5, 5]}]}
  gt = coco.ground_truth_from_coco(ground_truth)
  with pytest.raises(ValueError, match=r"dets.json: \[1\]: image_id 7 is not an image"):
    coco.detections_from_coco(
        [{'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 1, 1], 'score': 0.5},
         {'image_id': 7, 'category_id': 1, 'bbox': [0, 0, 1, 1], 'score': 0.5}], gt, [1],
        source='dets.json')
  with pytest.raises(ValueError, match=r"\[0\]: 'bbox' must be a list of 4 numbers"):
    coco.detections_from_coco([{'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 1], 'score': 0.5}],
                              gt, [1])
  with pytest.raises(ValueError, match=r"\[0\]: category_id 3 is not a category"):
    coco.detections_from_coco([{'image_id': 1, 'category_id': 3, 'bbox': [0, 0, 1, 1], 'score': 1}],
                              gt, [1])
  with pytest.raises(ValueError, match=r"annotations\[0\]: category_id 4 is not in 'categories'"):
    coco.ground_truth_from_coco(dict(ground_truth, annotations=[
        {'id': 1, 'image_id': 1, 'category_id': 4, 'bbox': [0, 0, 5, 5]}]))


def test_benchmark_smoke_agrees_with_both_references():
  pytest.importorskip('faster_coco_eval')
  from yolo_osam_jax.benchmarking import coco_eval as benchmark
  rows = benchmark.run_eval_benchmark(smoke=True)
  assert [r['name'] for r in rows] == ['ours (numpy)', 'pycocotools', 'faster-coco-eval']
  for row in rows:
    assert row['max_abs_diff_vs_ours'] <= 1e-9
    assert row['detections'] == 1000 and row['seconds'] > 0


def test_empty_inputs():
  from yolo_osam_jax.evaluation import boxes as boxes_lib
  gt = boxes_lib.make_ground_truth([0], [[0, 0, 10, 10]], [0], ['a', 'b'], ['x', 'y'])
  no_dets = boxes_lib.make_detections([], np.zeros((0, 4)), [], [], 2, 2)
  stats = coco.evaluate(gt, no_dets)['stats']
  # Class x has ground truth and nothing found: 0; class y has no ground truth: left out (-1).
  assert stats['map50_95'] == 0.0 and stats['mar_100'] == 0.0
  assert stats['map_medium'] == -1.0  # the only face has area 100: small
  no_gt = boxes_lib.make_ground_truth([], np.zeros((0, 4)), [], ['a'], ['x'])
  dets = boxes_lib.make_detections([0], [[0, 0, 1, 1]], [0], [0.5], 1, 1)
  assert all(v == -1.0 for k, v in coco.evaluate(no_gt, dets)['stats'].items() if k != 'per_class')
