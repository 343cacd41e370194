"""AutoAnchor: check how well the anchors fit the training boxes and refit them when they do not (SPEC §4).

yolov5's procedure, with every random draw taken from one seeded numpy Generator so a refit is
reproducible:
  * the ratio metric of a box and an anchor is min over (w, h) of min(r, 1/r), r = box / anchor; a box is
    "recallable" when its best anchor's metric exceeds 1/thr (thr = 4.0, the loss's anchor_t);
  * best possible recall (BPR) = fraction of recallable boxes; anchors above threshold (AAT) = mean
    number of anchors per box whose metric exceeds 1/thr;
  * BPR below 0.98 triggers a refit: k-means on whitened (w, h) (scipy), then a genetic evolution
    (1000 generations, mutation probability 0.9, sigma 0.1) maximising the mean over boxes of the best
    ratio metric, counted only where it exceeds 1/thr; the new anchors replace the old ones only if their
    BPR is higher, as in yolov5.
New anchors are sorted by area and handed to the levels by stride ascending, in pixels, as a list per
level: the format `model_config.anchors` accepts (`models/heads.py`).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

import numpy as np
from scipy.cluster import vq

from yolo_osam_jax.models import heads

DEFAULT_THR = 4.0
MIN_BPR = 0.98
GENERATIONS = 1000
MUTATION_PROB = 0.9
MUTATION_SIGMA = 0.1
KMEANS_ITERS = 30
# yolov5 fits only boxes at least 2 px on one side and warns about those under 3 px.
MIN_FIT_SIZE = 2.0
SMALL_WARN_SIZE = 3.0
MIN_ANCHOR_SIZE = 2.0

log = logging.getLogger(__name__)


def _validate_wh(wh, name: str = 'wh') -> np.ndarray:
  wh = np.asarray(wh, np.float64)
  if wh.ndim != 2 or wh.shape[1] != 2:
    raise ValueError(f"{name} must be [n, 2] box (w, h) in pixels, got shape {wh.shape}")
  if wh.shape[0] == 0:
    raise ValueError(f"{name} holds no boxes; AutoAnchor needs the training boxes")
  bad = ~np.all(np.isfinite(wh) & (wh >= 0), axis=1)
  if np.any(bad):
    row = int(np.argmax(bad))
    raise ValueError(f"{name}[{row}] = {wh[row].tolist()} is not a finite, non-negative (w, h)")
  return wh


def ratio_metric(wh: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(per box and anchor metric [n, k], best metric per box [n]); metric = min over w, h of min(r, 1/r)."""
  with np.errstate(divide='ignore'):  # a zero-size box side gives r = 0 and 1/r = inf: metric 0
    ratio = wh[:, None, :] / anchors[None, :, :]
    metric = np.minimum(ratio, 1 / ratio).min(axis=2)
  return metric, metric.max(axis=1)


def anchor_metrics(wh, anchors, thr: float = DEFAULT_THR) -> dict[str, float]:
  """Best possible recall and anchors above threshold of `anchors` ([k, 2] pixels) on boxes `wh`."""
  wh = _validate_wh(wh)
  anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
  metric, best = ratio_metric(wh, anchors)
  return {
      'bpr': float(np.mean(best > 1 / thr)),
      'aat': float(np.mean(np.sum(metric > 1 / thr, axis=1))),
  }


def anchor_fitness(wh: np.ndarray, anchors: np.ndarray, thr: float = DEFAULT_THR) -> float:
  """What the evolution maximises: mean over boxes of the best metric, counted where it exceeds 1/thr."""
  _, best = ratio_metric(wh, anchors)
  return float(np.mean(best * (best > 1 / thr)))


def kmean_anchors(wh, num_anchors: int, img_size: int, thr: float = DEFAULT_THR,
                  generations: int = GENERATIONS, seed: int = 0, mutation_prob: float = MUTATION_PROB,
                  sigma: float = MUTATION_SIGMA) -> np.ndarray:
  """New anchors ([num_anchors, 2] pixels, sorted by area) fitted to boxes `wh` ([n, 2] pixels).

  `img_size` only bounds the random initialisation used when k-means cannot give `num_anchors` distinct
  centres (fewer distinct boxes than anchors, or no spread to whiten), as in yolov5.
  """
  wh_all = _validate_wh(wh)
  rng = np.random.default_rng(seed)
  num_small = int(np.sum(np.any(wh_all < SMALL_WARN_SIZE, axis=1)))
  if num_small:
    log.warning('AutoAnchor: %d of %d boxes are under %g pixels on a side', num_small, len(wh_all),
                SMALL_WARN_SIZE)
  wh_fit = wh_all[np.any(wh_all >= MIN_FIT_SIZE, axis=1)]
  if len(wh_fit) == 0:
    raise ValueError(f"all {len(wh_all)} boxes are under {MIN_FIT_SIZE} pixels on both sides; "
                     "cannot fit anchors")

  anchors = None
  spread = wh_fit.std(axis=0)
  if num_anchors <= len(np.unique(wh_fit, axis=0)) and np.all(spread > 0):
    # k-means on whitened sizes so w and h weigh alike.
    centres, _ = vq.kmeans(wh_fit / spread, num_anchors, iter=KMEANS_ITERS, rng=rng)
    if len(centres) == num_anchors:  # k-means drops empty clusters
      anchors = centres * spread
  if anchors is None:
    log.warning('AutoAnchor: k-means could not give %d anchors; starting from random ones', num_anchors)
    anchors = np.sort(rng.random(num_anchors * 2)).reshape(num_anchors, 2) * img_size
  anchors = _sort_by_area(anchors)

  # Genetic evolution: multiplicative mutations, keep a mutant only when it is fitter.
  fitness = anchor_fitness(wh_fit, anchors, thr)
  for _ in range(generations):
    factors = np.ones_like(anchors)
    while np.all(factors == 1):  # mutate until something changes
      factors = ((rng.random(anchors.shape) < mutation_prob) * rng.random() *
                 rng.standard_normal(anchors.shape) * sigma + 1).clip(0.3, 3.0)
    candidate = (anchors * factors).clip(min=MIN_ANCHOR_SIZE)
    candidate_fitness = anchor_fitness(wh_fit, candidate, thr)
    if candidate_fitness > fitness:
      fitness, anchors = candidate_fitness, candidate
  return _sort_by_area(anchors)


def _sort_by_area(anchors: np.ndarray) -> np.ndarray:
  return anchors[np.argsort(anchors.prod(axis=1), kind='stable')]


def _per_level(anchors: np.ndarray, num_levels: int) -> list[list[list[float]]]:
  """[L·A, 2] anchors sorted by area -> list per level (stride ascending) of [[w, h], ...]."""
  return [[[float(w), float(h)] for w, h in level] for level in anchors.reshape(num_levels, -1, 2)]


def check_anchors(wh, model_config, img_size: int, thr: float = DEFAULT_THR, min_bpr: float = MIN_BPR,
                  generations: int = GENERATIONS, seed: int = 0) -> tuple[list, dict[str, Any]]:
  """Checks the model's anchors against boxes `wh` ([n, 2] pixels at the training size); refits if poor.

  Returns (anchors, report): anchors in pixels as a list per level (stride ascending) of [[w, h], ...],
  the model's current ones when they are kept; report with 'bpr_before', 'aat_before', 'bpr_after',
  'aat_after', 'refit' (a refit was attempted), 'replaced' (the new anchors were better and are returned),
  'anchors_before', 'anchors_after' and 'num_boxes'.
  """
  wh = _validate_wh(wh)
  level_defs = heads.levels(model_config)
  num_levels = len(level_defs)
  current = np.concatenate([level.anchors for level in level_defs]).astype(np.float64)
  before = anchor_metrics(wh, current, thr)
  report = {
      'num_boxes': int(len(wh)),
      'thr': float(thr),
      'bpr_before': before['bpr'],
      'aat_before': before['aat'],
      'anchors_before': _per_level(current, num_levels),
      'refit': False,
      'replaced': False,
  }
  chosen = current
  if before['bpr'] < min_bpr:
    report['refit'] = True
    fitted = kmean_anchors(wh, len(current), img_size, thr=thr, generations=generations, seed=seed)
    if anchor_metrics(wh, fitted, thr)['bpr'] > before['bpr']:
      chosen = fitted
      report['replaced'] = True
  after = anchor_metrics(wh, chosen, thr)
  report.update({'bpr_after': after['bpr'], 'aat_after': after['aat'],
                 'anchors_after': _per_level(chosen, num_levels)})
  return report['anchors_after'], report


def format_report(report: Mapping[str, Any]) -> str:
  """One readable paragraph: before/after BPR and AAT and the anchors per level."""
  lines = [f"AutoAnchor on {report['num_boxes']} boxes (thr {report['thr']:g}): "
           f"before BPR {report['bpr_before']:.4f}, {report['aat_before']:.2f} anchors/target"]
  if not report['refit']:
    lines.append('anchors fit the data; kept')
  else:
    verdict = 'replaced' if report['replaced'] else 'kept (the refit was not better)'
    lines.append(f"after BPR {report['bpr_after']:.4f}, {report['aat_after']:.2f} anchors/target; anchors "
                 f"{verdict}")
  for i, level in enumerate(report['anchors_after']):
    lines.append(f"  level {i}: " + ' '.join(f"({w:.1f},{h:.1f})" for w, h in level))
  return '\n'.join(lines)


def collect_box_wh(items: Iterable[Mapping[str, Any]], img_size: int) -> np.ndarray:
  """Box (w, h) in pixels at training size `img_size`, from TFDS examples or training batches.

  A TFDS example ({'image': [H, W, 3], 'objects': {'bbox': [n, 4] normalised (ymin, xmin, ymax, xmax)}})
  contributes its boxes scaled as letterboxing scales them: the long side of the image becomes
  `img_size`. A batch ({'boxes': [B, M, 4] normalised (cx, cy, w, h) of the S×S image, 'mask'}) contributes
  its unmasked boxes times `img_size`.
  """
  collected = []
  for i, item in enumerate(items):
    if 'objects' in item:
      image = np.asarray(item['image'])
      if image.ndim != 3:
        raise ValueError(f"example {i}: 'image' must be a decoded [H, W, C] array, got shape {image.shape}")
      height, width = image.shape[:2]
      bbox = np.asarray(item['objects']['bbox'], np.float64).reshape(-1, 4)
      scale = img_size / max(height, width)
      wh = np.stack([(bbox[:, 3] - bbox[:, 1]) * width, (bbox[:, 2] - bbox[:, 0]) * height], axis=1) * scale
    elif 'boxes' in item and 'mask' in item:
      boxes = np.asarray(item['boxes'], np.float64)
      wh = boxes[np.asarray(item['mask'], bool)][:, 2:4] * img_size
    else:
      raise ValueError(f"item {i} is neither a TFDS example (with 'objects') nor a batch (with 'boxes' and "
                       f"'mask'); keys: {sorted(item)}")
    collected.append(_validate_wh(wh, name=f"item {i} box sizes") if len(wh) else wh.reshape(0, 2))
  if not collected:
    raise ValueError('no examples to collect boxes from')
  return np.concatenate(collected)
