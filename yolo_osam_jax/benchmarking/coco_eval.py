"""Speed of our COCO evaluator against pycocotools and faster-coco-eval on generated detections.

Each timing covers the whole job from the same in-memory COCO dicts to the 12 statistics (index
building, result loading, per-image matching, accumulation, summary), so the three do the same work.
Full mode: 5,000 images, 100,000 detections, 7 classes; smoke mode: 50 images, 1,000 detections.
"""

from __future__ import annotations

import contextlib
import copy
import io
import statistics
import time

import numpy as np

from yolo_osam_jax.evaluation import coco as coco_lib


def generate(num_images: int, num_detections: int, num_classes: int = 7, seed: int = 0):
  """Random COCO ground truth and results with the usual edge cases.

  About 3 faces per image (some images have none); 70 % of detections are jittered copies of ground
  truth (some with the wrong class), the rest are random boxes, also on images without ground truth;
  scores are rounded to 2 decimals so ties are common; 1 % of detections are exact duplicates.
  """
  rng = np.random.default_rng(seed)
  images = [{'id': i + 1, 'width': 640, 'height': 480} for i in range(num_images)]
  categories = [{'id': c + 1, 'name': f'class{c}'} for c in range(num_classes)]
  faces = rng.poisson(3.0, num_images)
  n_gt = int(faces.sum())
  gt_image = np.repeat(np.arange(num_images), faces)
  wh = rng.uniform(8, 200, (n_gt, 2))
  xy = rng.uniform(0, 1, (n_gt, 2)) * (np.array([640, 480]) - wh)
  gt_boxes = np.concatenate([xy, wh], 1)
  gt_classes = rng.integers(0, num_classes, n_gt)
  annotations = [
      {'id': i + 1, 'image_id': int(gt_image[i]) + 1, 'category_id': int(gt_classes[i]) + 1,
       'bbox': [float(v) for v in gt_boxes[i]], 'area': float(wh[i, 0] * wh[i, 1]), 'iscrowd': 0}
      for i in range(n_gt)]

  n_dup = num_detections // 100
  n_base = num_detections - n_dup
  n_near = int(n_base * 0.7) if n_gt else 0
  src = rng.integers(0, max(n_gt, 1), n_near)
  near = gt_boxes[src] + rng.normal(0, 0.08, (n_near, 4)) * np.repeat(gt_boxes[src, 2:], 2, axis=1)
  near[:, 2:] = np.maximum(near[:, 2:], 1.0)
  near_class = np.where(rng.random(n_near) < 0.85, gt_classes[src], rng.integers(0, num_classes, n_near))
  n_far = n_base - n_near
  far_wh = rng.uniform(8, 200, (n_far, 2))
  far = np.concatenate([rng.uniform(0, 1, (n_far, 2)) * (np.array([640, 480]) - far_wh), far_wh], 1)
  det_boxes = np.concatenate([near, far])
  det_image = np.concatenate([gt_image[src], rng.integers(0, num_images, n_far)])
  det_class = np.concatenate([near_class, rng.integers(0, num_classes, n_far)])
  det_score = np.round(rng.random(n_base), 2)
  results = [
      {'image_id': int(det_image[i]) + 1, 'category_id': int(det_class[i]) + 1,
       'bbox': [float(v) for v in det_boxes[i]], 'score': float(det_score[i])}
      for i in range(n_base)]
  results += [dict(results[i]) for i in rng.integers(0, n_base, n_dup)]
  order = rng.permutation(len(results))
  results = [results[i] for i in order]
  ground_truth = {'images': images, 'annotations': annotations, 'categories': categories}
  return ground_truth, results


def ours(ground_truth, results):
  gt = coco_lib.ground_truth_from_coco(ground_truth)
  dt = coco_lib.detections_from_coco(results, gt, coco_lib.category_ids_of(ground_truth))
  stats = coco_lib.evaluate(gt, dt)['stats']
  return np.array([stats[k] for k in coco_lib.STAT_KEYS])


def pycocotools_stats(ground_truth, results):
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = ground_truth
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(results)
    evaluator = COCOeval(coco_gt, coco_dt, 'bbox')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return np.array(evaluator.stats)


def faster_coco_eval_stats(ground_truth, results):
  from faster_coco_eval import COCO, COCOeval_faster
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO(ground_truth)
    coco_dt = coco_gt.loadRes(results)
    evaluator = COCOeval_faster(coco_gt, coco_dt, 'bbox', print_function=lambda *a, **k: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return np.array(evaluator.stats[:12])


def _time(fn, ground_truth, results, repeats):
  times = []
  out = None
  for _ in range(repeats):
    # Each library may annotate the dicts it is given; every run gets fresh copies, not timed.
    gt_copy, res_copy = copy.deepcopy(ground_truth), copy.deepcopy(results)
    start = time.perf_counter()
    out = fn(gt_copy, res_copy)
    times.append(time.perf_counter() - start)
  return statistics.median(times), out


def run_eval_benchmark(smoke: bool) -> list[dict]:
  """Rows {name, images, detections, seconds (median of repeats), repeats, time_vs_ours (seconds /
  ours), max_abs_diff_vs_ours (largest difference of the 12 statistics)}; pycocotools runs once in full
  mode (about 10-30 s here)."""
  num_images, num_detections = (50, 1000) if smoke else (5000, 100000)
  ground_truth, results = generate(num_images, num_detections)
  rows = []
  t_ours, s_ours = _time(ours, ground_truth, results, 3)
  candidates = [('ours (numpy)', None, 3), ('pycocotools', pycocotools_stats, 3 if smoke else 1),
                ('faster-coco-eval', faster_coco_eval_stats, 3)]
  for name, fn, repeats in candidates:
    if fn is None:
      seconds, stats, reps = t_ours, s_ours, 3
    else:
      try:
        seconds, stats = _time(fn, ground_truth, results, repeats)
      except ImportError as e:
        rows.append({'name': name, 'error': f'not installed ({e})'})
        continue
      reps = repeats
    rows.append({
        'name': name, 'images': num_images, 'detections': len(results), 'seconds': seconds,
        'repeats': reps, 'time_vs_ours': seconds / t_ours,
        'max_abs_diff_vs_ours': float(np.max(np.abs(stats - s_ours))),
    })
  return rows
