"""Batched jit NMS against the loop-based numpy reference, and the reference against hand-made cases."""

import numpy as np
import pytest

from yolo_osam_jax.evaluation import nms


def _random_predictions(rng, batch, n, nc):
  """Boxes in a few clusters so that many overlap; probabilities spread around the thresholds."""
  centers = rng.uniform(20, 100, (batch, 5, 2))
  pick = rng.integers(0, 5, (batch, n))
  cxcy = np.take_along_axis(centers, pick[..., None].repeat(2, -1), 1) + rng.normal(0, 4, (batch, n, 2))
  wh = rng.uniform(10, 30, (batch, n, 2))
  obj = rng.uniform(0, 1, (batch, n, 1))
  cls = rng.uniform(0, 1, (batch, n, nc))
  return np.concatenate([cxcy, wh, obj, cls], -1).astype(np.float32)


def _assert_same(out, b, reference):
  boxes, scores, classes = reference
  valid = np.asarray(out.valid[b])
  count = int(valid.sum())
  assert count == len(scores)
  assert valid[:count].all() and not valid[count:].any()
  np.testing.assert_array_equal(np.asarray(out.classes[b])[:count], classes)
  np.testing.assert_allclose(np.asarray(out.scores[b])[:count], scores, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(out.boxes[b])[:count], boxes, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('multi_label', [True, False])
@pytest.mark.parametrize('max_det', [300, 7])
def test_batched_matches_reference(multi_label, max_det):
  rng = np.random.default_rng(1)
  predictions = _random_predictions(rng, 3, 120, 4)
  kwargs = dict(conf_thres=0.1, iou_thres=0.45, max_det=max_det, multi_label=multi_label)
  out = nms.batched_nms(predictions, **kwargs)
  assert out.boxes.shape == (3, max_det, 4)
  for b in range(3):
    reference = nms.nms_numpy(predictions[b], **kwargs)
    _assert_same(out, b, reference)
    if max_det == 7:  # the clusters leave more than 7 boxes, so truncation really happens
      assert len(reference[1]) == 7
      full = nms.nms_numpy(predictions[b], **dict(kwargs, max_det=300))
      assert len(full[1]) > 7
      np.testing.assert_array_equal(full[1][:7], reference[1])


def test_candidate_cap_matches_reference():
  rng = np.random.default_rng(2)
  predictions = _random_predictions(rng, 2, 80, 3)
  kwargs = dict(conf_thres=0.05, iou_thres=0.5, max_det=300, multi_label=True, max_candidates=20)
  out = nms.batched_nms(predictions, **kwargs)
  for b in range(2):
    _assert_same(out, b, nms.nms_numpy(predictions[b], **kwargs))


def test_reference_by_hand():
  # cx, cy, w, h, obj, p(class0), p(class1)
  predictions = np.array([
      [50, 50, 20, 20, 0.9, 0.9, 0.5],   # scores 0.81 (c0), 0.45 (c1)
      [52, 50, 20, 20, 0.8, 0.9, 0.1],   # c0 0.72: IoU with row 0 = 360/440 = 0.818 > 0.45 -> gone
      [80, 80, 10, 10, 0.6, 0.1, 0.9],   # c1 0.54, alone; c0 0.06 < conf
      [50, 50, 20, 20, 0.2, 0.9, 0.9],   # obj 0.2 <= conf 0.25: never a candidate
  ], np.float32)
  boxes, scores, classes = nms.nms_numpy(predictions, conf_thres=0.25, iou_thres=0.45, max_det=10,
                                         multi_label=True)
  np.testing.assert_allclose(scores, [0.81, 0.54, 0.45], rtol=1e-6)
  np.testing.assert_array_equal(classes, [0, 1, 1])
  np.testing.assert_allclose(boxes, [[40, 40, 60, 60], [75, 75, 85, 85], [40, 40, 60, 60]])
  # Single label: row 0 keeps only class 0; row 1 still suppressed by it.
  _, scores, classes = nms.nms_numpy(predictions, conf_thres=0.25, iou_thres=0.45, max_det=10,
                                     multi_label=False)
  np.testing.assert_allclose(scores, [0.81, 0.54], rtol=1e-6)
  np.testing.assert_array_equal(classes, [0, 1])
  # With iou_thres above 0.818 row 1 survives.
  _, scores, _ = nms.nms_numpy(predictions, conf_thres=0.25, iou_thres=0.85, max_det=10)
  np.testing.assert_allclose(scores, [0.81, 0.72, 0.54, 0.45], rtol=1e-6)
  out = nms.batched_nms(predictions[None], conf_thres=0.25, iou_thres=0.45, max_det=2)
  np.testing.assert_allclose(np.asarray(out.scores[0]), [0.81, 0.54], rtol=1e-6)
  assert np.asarray(out.valid[0]).all()


def test_no_candidates_gives_empty_rows():
  predictions = np.zeros((2, 10, 7), np.float32)
  out = nms.batched_nms(predictions, conf_thres=0.25, iou_thres=0.45, max_det=4)
  assert not np.asarray(out.valid).any()
  assert len(nms.nms_numpy(predictions[0], conf_thres=0.25)[1]) == 0


@pytest.mark.parametrize('multi_label', [True, False])
def test_index_points_at_the_source_prediction_row(multi_label):
  rng = np.random.default_rng(5)
  n, nc = 200, 4
  pred = np.concatenate([rng.uniform(20, 100, (2, n, 2)), rng.uniform(5, 40, (2, n, 2)),
                         rng.uniform(0, 1, (2, n, 1 + nc))], -1).astype(np.float32)
  out = nms.batched_nms(pred, conf_thres=0.2, iou_thres=0.5, max_det=50, multi_label=multi_label)
  for b in range(2):
    for k in np.flatnonzero(np.asarray(out.valid[b])):
      row = pred[b, int(out.index[b, k])]
      cx, cy, w, h = row[:4]
      np.testing.assert_allclose(np.asarray(out.boxes[b, k]), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2],
                                 rtol=1e-6)
      assert float(out.scores[b, k]) == pytest.approx(float(row[4] * row[5 + int(out.classes[b, k])]))


def _anchor_free_reference(prediction, conf_thres, iou_thres):
  """The anchor-free family's NMS written out on its own: a candidate is every (box, class) whose class
  probability exceeds conf_thres (no objectness), score = that probability, greedy class-aware NMS."""
  cands = []
  for row in prediction:
    cx, cy, w, h = row[:4]
    for c, p in enumerate(row[4:]):
      if p > conf_thres:
        cands.append((p, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), c))
  cands.sort(key=lambda t: -t[0])
  kept = []
  for p, box, c in cands:
    if all(k[2] != c or _iou(box, k[1]) <= iou_thres for k in kept):
      kept.append((p, box, c))
  return (np.array([k[1] for k in kept], np.float32).reshape(-1, 4), np.array([k[0] for k in kept]),
          np.array([k[2] for k in kept]))


def _iou(a, b):
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
  inter = iw * ih
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_anchor_free_layout_gets_the_class_score_rule():
  rng = np.random.default_rng(7)
  with_obj = _random_predictions(rng, 2, 80, 3)
  anchor_free = np.delete(with_obj, 4, axis=-1)  # [B, N, 4 + nc]: no objectness column
  converted = nms.with_objectness(anchor_free, 3)
  assert converted.shape == with_obj.shape
  np.testing.assert_array_equal(converted[..., 4], 1.0)
  np.testing.assert_array_equal(np.delete(converted, 4, axis=-1), anchor_free)
  assert nms.with_objectness(with_obj, 3) is with_obj  # the anchor-based layout passes unchanged
  out = nms.batched_nms(converted, conf_thres=0.3, iou_thres=0.5, max_det=300, multi_label=True)
  for b in range(2):
    _assert_same(out, b, _anchor_free_reference(anchor_free[b], 0.3, 0.5))
  with pytest.raises(ValueError, match='expected 8 .* or 7'):
    nms.with_objectness(np.zeros((1, 4, 9), np.float32), 3)
