"""COCO bbox evaluation equal to pycocotools' COCOeval, vectorised with numpy.

pycocotools' rules, all reproduced here (bbox, useCats=1, default params):
- Per image and category, detections sorted by score with a stable sort (ties keep file order) and cut to
  the largest maxDets (100). IoU as its C code (crowd ground truth: intersection / detection area).
- Per area range, ground truth outside the range or crowd is "ignored"; ignored boxes are tried last.
  At each IoU threshold t (0.50:0.05:0.95, capped at 1 - 1e-10) each detection, best score first, takes
  the free ground truth with the highest IoU >= t, preferring non-ignored ones; among equal IoUs the later
  box (in file order) wins. Crowd boxes can be taken many times. A detection on an ignored box, or an
  unmatched one outside the area range, is ignored.
- Per category, detections of all images (cut to maxDet per image and category) are sorted by score with
  a stable sort over the concatenation in image order; precision envelope; precision read at the first
  index whose recall >= each of 101 recall thresholds, 0 past the end; -1 for a category without
  non-ignored ground truth. The 12 statistics are means over entries > -1.

How it is vectorised: the greedy matching is sequential only within one (image, category) group, so all
groups advance together, one detection rank per step (at most 100 steps), for all 4 area ranges x 10
thresholds at once. Pairs with IoU < 0.5 can never match and are dropped before the loop. The
accumulation runs on all categories at once: cumulative sums per category segment, the recall-threshold
search as an integer search on (category, true-positive count) keys, and the envelope as a segmented
maximum over the 101 chunks between those indices.

One known pycocotools quirk is not reproduced: a ground-truth annotation with id 0 makes its matched
detection count as a false positive there (it stores ids as match flags); ids play no role here.
"""

from __future__ import annotations

import json
import math

import numpy as np

from yolo_osam_jax import errors
from yolo_osam_jax.evaluation import boxes as boxes_lib

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = ((0.0, 1e5 ** 2), (0.0, 32.0 ** 2), (32.0 ** 2, 96.0 ** 2), (96.0 ** 2, 1e5 ** 2))
AREA_NAMES = ('all', 'small', 'medium', 'large')
MAX_DETS = (1, 10, 100)

# (key, is_ap, iou threshold or None for all, area index, maxDets index), pycocotools' summarize order.
STAT_DEFINITIONS = (
    ('map50_95', True, None, 0, 2),
    ('map50', True, 0.5, 0, 2),
    ('map75', True, 0.75, 0, 2),
    ('map_small', True, None, 1, 2),
    ('map_medium', True, None, 2, 2),
    ('map_large', True, None, 3, 2),
    ('mar_1', False, None, 0, 0),
    ('mar_10', False, None, 0, 1),
    ('mar_100', False, None, 0, 2),
    ('mar_small', False, None, 1, 2),
    ('mar_medium', False, None, 2, 2),
    ('mar_large', False, None, 3, 2),
)
STAT_KEYS = tuple(d[0] for d in STAT_DEFINITIONS)


def match_detections(gt: boxes_lib.GroundTruth, dt: boxes_lib.Detections, max_det: int = MAX_DETS[-1]):
  """pycocotools' evaluateImg for every image, category and area range at once.

  Returns a dict with, for the kept detections (`keep`: indices into `dt`, at most `max_det` per image
  and category), `rank` (position in its image/category after the stable score sort), `matched` and
  `ignored` [n_kept, A, T] bools, and `gt_ignored` [n_gt, A].
  """
  num_classes, num_images = gt.num_classes, gt.num_images
  num_t, num_a = len(IOU_THRESHOLDS), len(AREA_RANGES)
  num_groups = num_images * num_classes

  # Detections: stable sort by score within (image, category), cut to max_det.
  det_group = dt.image * num_classes + dt.classes
  order = np.lexsort((-dt.scores, det_group))
  sorted_group = det_group[order]
  group_start = np.searchsorted(sorted_group, sorted_group, side='left')
  rank_sorted = np.arange(order.size) - group_start
  keep = order[rank_sorted < max_det]
  rank = rank_sorted[rank_sorted < max_det]
  det_group = det_group[keep]
  det_boxes = dt.boxes[keep]
  det_area = det_boxes[:, 2] * det_boxes[:, 3]   # loadRes sets a result's area to w * h

  # Ground truth ignore flags per area range (inclusive bounds, as pycocotools).
  lows = np.array([a[0] for a in AREA_RANGES])
  highs = np.array([a[1] for a in AREA_RANGES])
  gt_ignored = gt.iscrowd[:, None] | (gt.area[:, None] < lows) | (gt.area[:, None] > highs)
  det_outside = (det_area[:, None] < lows) | (det_area[:, None] > highs)

  # Candidate pairs, detections ordered by (rank, group) so that each rank is a contiguous block.
  round_order = np.lexsort((det_group, rank))
  gt_group = gt.image * num_classes + gt.classes
  left, right = boxes_lib.pairs_within_groups(det_group[round_order], gt_group, num_groups)
  pair_det = round_order[left]
  pair_gt = right
  pair_iou = boxes_lib.coco_pair_iou(det_boxes[pair_det], gt.boxes[pair_gt], gt.iscrowd[pair_gt])
  useful = pair_iou >= IOU_THRESHOLDS.min()
  pair_det, pair_gt, pair_iou = pair_det[useful], pair_gt[useful], pair_iou[useful]

  thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
  channel_threshold = np.tile(thresholds, num_a)                   # channel = area * T + t
  gt_ignored_channels = np.repeat(gt_ignored, num_t, axis=1)       # [n_gt, A*T]
  gt_taken = np.zeros((gt.image.size, num_a * num_t), bool)
  matched = np.zeros((keep.size, num_a * num_t), bool)
  ignored = np.zeros((keep.size, num_a * num_t), bool)

  pair_rank = rank[pair_det]
  bounds = np.searchsorted(pair_rank, np.arange(max_det + 1), side='left')
  for r in range(max_det):
    lo, hi = bounds[r], bounds[r + 1]
    if lo == hi:
      continue
    dets = pair_det[lo:hi]
    gts = pair_gt[lo:hi]
    iou = pair_iou[lo:hi, None]
    starts = np.flatnonzero(np.concatenate([[True], dets[1:] != dets[:-1]]))
    segment = np.cumsum(np.concatenate([[False], dets[1:] != dets[:-1]]))
    free = ~gt_taken[gts] | gt.iscrowd[gts, None]
    ok = free & (iou >= channel_threshold)
    ign = gt_ignored_channels[gts]
    best_regular = np.maximum.reduceat(np.where(ok & ~ign, iou, -1.0), starts, axis=0)
    best_ignored = np.maximum.reduceat(np.where(ok & ign, iou, -1.0), starts, axis=0)
    use_regular = best_regular >= 0
    best = np.where(use_regular, best_regular, best_ignored)
    pick = ok & (ign != use_regular[segment]) & (iou == best[segment])
    # Among equal IoUs the later ground truth wins: take the largest pair position.
    position = np.where(pick, np.arange(lo, hi)[:, None], -1)
    chosen = np.maximum.reduceat(position, starts, axis=0)
    rows, channels = np.nonzero(chosen >= 0)
    taken_gt = pair_gt[chosen[rows, channels]]
    det_rows = dets[starts[rows]]
    gt_taken[taken_gt, channels] = True
    matched[det_rows, channels] = True
    ignored[det_rows, channels] = gt_ignored_channels[taken_gt, channels]

  ignored |= ~matched & np.repeat(det_outside, num_t, axis=1)
  return {
      'keep': keep,
      'rank': rank,
      'matched': matched.reshape(-1, num_a, num_t),
      'ignored': ignored.reshape(-1, num_a, num_t),
      'gt_ignored': gt_ignored,
  }


def _min_true_positives(npig, recall_thresholds):
  """Smallest integer j with j / npig >= r in float64, per (category, r): pycocotools' searchsorted."""
  npig = np.maximum(npig, 1).astype(np.int64)[:, None]
  r = recall_thresholds[None, :]
  j = np.ceil(r * npig).astype(np.int64)
  for _ in range(4):  # float rounding can put the ceil one off either way
    j = np.where((j > 0) & ((j - 1) / npig >= r), j - 1, j)
    j = np.where(j / npig < r, j + 1, j)
  return j


def accumulate(gt: boxes_lib.GroundTruth, dt: boxes_lib.Detections, matching, full: bool = False):
  """pycocotools' accumulate: precision [T, R, K, A, M] and recall [T, K, A, M] (-1 = no ground truth).

  With full=False only the (area, maxDets) pairs the 12 statistics read are filled (the others stay -1):
  every area range at maxDets 100, and area 'all' at maxDets 1 and 10.
  """
  num_classes = gt.num_classes
  num_t, num_r, num_a, num_m = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)
  precision = -np.ones((num_t, num_r, num_classes, num_a, num_m))
  recall = -np.ones((num_t, num_classes, num_a, num_m))

  keep, rank = matching['keep'], matching['rank']
  classes = dt.classes[keep]
  scores = dt.scores[keep]
  images = dt.image[keep]
  # Stable score sort over the concatenation in (image, rank) order, per category.
  order = np.lexsort((rank, images, -scores, classes))
  npig_all = np.stack([
      np.bincount(gt.classes[~matching['gt_ignored'][:, a]], minlength=num_classes)
      for a in range(num_a)], axis=1)                              # [K, A]
  big = int(npig_all.max(initial=0)) + 2
  categories = np.arange(num_classes)

  # [A, T, n] layouts: cumulative sums then run along contiguous rows.
  tp_flags = np.ascontiguousarray((matching['matched'] & ~matching['ignored']).transpose(1, 2, 0))
  fp_flags = np.ascontiguousarray((~matching['matched'] & ~matching['ignored']).transpose(1, 2, 0))
  for m, max_det in enumerate(MAX_DETS):
    sel = order[rank[order] < max_det]
    cat = classes[sel]
    seg_start = np.searchsorted(cat, categories, side='left')
    seg_end = np.searchsorted(cat, categories, side='right')
    n = sel.size
    nonempty = seg_end > seg_start
    last = np.maximum(seg_end - 1, 0)
    cat_key = cat * big
    for a in range(num_a):
      if not full and a != 0 and max_det != MAX_DETS[-1]:
        continue
      npig = npig_all[:, a]
      has_gt = npig > 0
      zero = np.zeros((num_t, 1), np.int64)
      tp_cum = np.concatenate([zero, np.cumsum(tp_flags[a][:, sel], axis=1)], axis=1)   # [T, n + 1]
      fp_cum = np.concatenate([zero, np.cumsum(fp_flags[a][:, sel], axis=1)], axis=1)
      # Counts within each category segment: subtract the count before the segment starts.
      tp = tp_cum[:, 1:] - tp_cum[:, seg_start][:, cat]
      fp = fp_cum[:, 1:] - fp_cum[:, seg_start][:, cat]
      tp_f = tp.astype(np.float64)
      pr = tp_f / (fp.astype(np.float64) + tp_f + np.spacing(1))
      with np.errstate(divide='ignore', invalid='ignore'):
        reached = tp_f[:, last] if n else np.zeros((num_t, num_classes))
        rec = np.where(nonempty, reached / npig, 0.0)    # [T, K]
      recall[:, has_gt, a, m] = rec[:, has_gt]

      tmin = np.minimum(_min_true_positives(npig, RECALL_THRESHOLDS), big - 1)   # [K, R]
      queries = (categories[:, None] * big + tmin).ravel()
      for t in range(num_t):
        idx = np.searchsorted(cat_key + tp[t], queries, side='left')
        idx_full = np.concatenate([idx, [n]])
        chunk = np.maximum.reduceat(np.concatenate([pr[t], [0.0]]), idx_full)[:-1]
        chunk = np.where(idx_full[1:] > idx_full[:-1], chunk, 0.0).reshape(num_classes, num_r)
        envelope = np.maximum.accumulate(chunk[:, ::-1], axis=1)[:, ::-1]
        precision[t, :, has_gt, a, m] = envelope[has_gt]
  return precision, recall


def summarize(precision, recall):
  """The 12 COCO statistics, keyed as STAT_KEYS (pycocotools' _summarize)."""
  stats = {}
  for key, is_ap, iou_thr, a, m in STAT_DEFINITIONS:
    values = precision[..., a, m] if is_ap else recall[..., a, m]
    if iou_thr is not None:
      values = values[np.flatnonzero(iou_thr == IOU_THRESHOLDS)]
    valid = values[values > -1]
    stats[key] = float(np.mean(valid)) if valid.size else -1.0
  return stats


def evaluate(gt: boxes_lib.GroundTruth, dt: boxes_lib.Detections, full: bool = False) -> dict:
  """COCO bbox evaluation: the 12 statistics plus per-class AP (IoU 0.50:0.95 and 0.50, area all).

  Also returns pycocotools' `precision` and `recall` arrays (all entries when full=True).
  """
  matching = match_detections(gt, dt)
  precision, recall = accumulate(gt, dt, matching, full=full)
  result = summarize(precision, recall)
  per_class = []
  for k, name in enumerate(gt.class_names):
    p_all = precision[:, :, k, 0, -1]
    p_50 = p_all[np.flatnonzero(0.5 == IOU_THRESHOLDS)]
    per_class.append({
        'class': name,
        'ap50_95': float(p_all.mean()) if np.all(p_all > -1) else -1.0,
        'ap50': float(p_50.mean()) if np.all(p_50 > -1) else -1.0,
        'ar100': float(recall[:, k, 0, -1].mean()) if np.all(recall[:, k, 0, -1] > -1) else -1.0,
    })
  result['per_class'] = per_class
  return {'stats': result, 'precision': precision, 'recall': recall}


# ---------------------------------------------------------------------------------------------------------
# COCO json files


def _field(entry, key, where):
  if not isinstance(entry, dict) or key not in entry:
    raise errors.InputError(f"{where}: missing field {key!r}")
  return entry[key]


def _bbox(value, where):
  if (not isinstance(value, (list, tuple)) or len(value) != 4
      or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
    raise errors.InputError(f"{where}: 'bbox' must be a list of 4 numbers [x, y, w, h], got {value!r}")
  if not all(math.isfinite(v) for v in value) or value[2] < 0 or value[3] < 0:
    raise errors.InputError(f"{where}: 'bbox' {value!r} must be finite with w, h >= 0")
  return [float(v) for v in value]


def ground_truth_from_coco(data: dict, source: str = 'ground truth') -> boxes_lib.GroundTruth:
  """A COCO instances dict -> GroundTruth. Images and categories are ordered by id, as pycocotools.

  `area` defaults to w * h and `iscrowd` to 0 when an annotation leaves them out.
  """
  for key in ('images', 'annotations', 'categories'):
    if key not in data or not isinstance(data[key], list):
      raise errors.InputError(f"{source}: expected a list under {key!r}")
  image_ids = [_field(im, 'id', f"{source}: images[{i}]") for i, im in enumerate(data['images'])]
  categories = {}
  for i, cat in enumerate(data['categories']):
    cid = _field(cat, 'id', f"{source}: categories[{i}]")
    if cid in categories:
      raise errors.InputError(f"{source}: categories[{i}]: duplicate category id {cid!r}")
    categories[cid] = str(cat.get('name', cid))
  if len(set(image_ids)) != len(image_ids):
    raise errors.InputError(f"{source}: duplicate image ids in 'images'")
  image_ids = sorted(image_ids)
  cat_ids = sorted(categories)
  image_index = {im: i for i, im in enumerate(image_ids)}
  cat_index = {c: i for i, c in enumerate(cat_ids)}
  n = len(data['annotations'])
  image = np.zeros(n, np.int64)
  classes = np.zeros(n, np.int64)
  bbox = np.zeros((n, 4), np.float64)
  area = np.zeros(n, np.float64)
  crowd = np.zeros(n, bool)
  seen_ids = set()
  for i, ann in enumerate(data['annotations']):
    where = f"{source}: annotations[{i}]"
    ann_id = ann.get('id') if isinstance(ann, dict) else None
    if ann_id is not None:
      if ann_id in seen_ids:
        raise errors.InputError(f"{where}: duplicate annotation id {ann_id!r}")
      seen_ids.add(ann_id)
    im = _field(ann, 'image_id', where)
    if im not in image_index:
      raise errors.InputError(f"{where}: image_id {im!r} is not in 'images'")
    cid = _field(ann, 'category_id', where)
    if cid not in cat_index:
      raise errors.InputError(f"{where}: category_id {cid!r} is not in 'categories'")
    image[i], classes[i] = image_index[im], cat_index[cid]
    bbox[i] = _bbox(_field(ann, 'bbox', where), where)
    area[i] = float(ann['area']) if 'area' in ann else bbox[i, 2] * bbox[i, 3]
    crowd[i] = bool(ann.get('iscrowd', 0))
  return boxes_lib.make_ground_truth(image, bbox, classes, image_ids,
                                     [categories[c] for c in cat_ids], area=area, iscrowd=crowd)


def category_ids_of(data: dict) -> list:
  return sorted(c['id'] for c in data['categories'])


def detections_from_coco(results: list, gt: boxes_lib.GroundTruth, category_ids: list,
                         source: str = 'detections') -> boxes_lib.Detections:
  """A COCO results list ([{image_id, category_id, bbox, score}, ...]) -> Detections.

  Unlike pycocotools, which silently skips detections of unknown categories, every entry must name an
  image and a category of the ground truth.
  """
  if not isinstance(results, list):
    raise errors.InputError(f"{source}: expected a list of detections")
  image_index = {im: i for i, im in enumerate(gt.image_ids)}
  cat_index = {c: i for i, c in enumerate(category_ids)}
  fast = _detections_fast(results, image_index, cat_index)
  if fast is not None:
    return boxes_lib.make_detections(*fast, gt.num_images, gt.num_classes)
  # Something is off: the entry-by-entry pass below names the first bad entry and field.
  n = len(results)
  image = np.zeros(n, np.int64)
  classes = np.zeros(n, np.int64)
  bbox = np.zeros((n, 4), np.float64)
  scores = np.zeros(n, np.float64)
  for i, det in enumerate(results):
    where = f"{source}: [{i}]"
    im = _field(det, 'image_id', where)
    if im not in image_index:
      raise errors.InputError(f"{where}: image_id {im!r} is not an image of the ground truth")
    cid = _field(det, 'category_id', where)
    if cid not in cat_index:
      raise errors.InputError(f"{where}: category_id {cid!r} is not a category of the ground truth")
    score = _field(det, 'score', where)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
      raise errors.InputError(f"{where}: 'score' must be a finite number, got {score!r}")
    image[i], classes[i], scores[i] = image_index[im], cat_index[cid], float(score)
    bbox[i] = _bbox(_field(det, 'bbox', where), where)
  return boxes_lib.make_detections(image, bbox, classes, scores, gt.num_images, gt.num_classes)


def _detections_fast(results, image_index, cat_index):
  """Vectorised parse of well-formed results; None when any entry needs the checking pass."""
  try:
    image = np.array([image_index[d['image_id']] for d in results], np.int64)
    classes = np.array([cat_index[d['category_id']] for d in results], np.int64)
    bbox = np.array([d['bbox'] for d in results], np.float64).reshape(len(results), 4)
    scores = np.array([d['score'] for d in results], np.float64).reshape(len(results))
  except (KeyError, TypeError, ValueError, IndexError):
    return None
  if not (np.all(np.isfinite(bbox)) and np.all(bbox[:, 2:] >= 0) and np.all(np.isfinite(scores))):
    return None
  return image, bbox, classes, scores


def load_json(path: str, what: str):
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except OSError as e:
    raise errors.InputError(f"{what} file {path}: cannot be read ({e.strerror})") from e
  except UnicodeDecodeError as e:
    raise errors.InputError(f"{what} file {path}: not UTF-8 text (byte offset {e.start})") from None
  except json.JSONDecodeError as e:
    raise errors.InputError(f"{what} file {path}: not valid JSON (line {e.lineno}: {e.msg})") from e
