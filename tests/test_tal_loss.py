"""Anchor-free (YOLOv8 / YOLO11) detection loss: hand-computed values, and parity with ultralytics 8.4.190's
v8DetectionLoss on the reference fixtures (shared/fixtures/ultralytics_nc7, see its README)."""

import collections
import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURES, require_fixture
from yolo_osam_jax import tal_loss

FIX = os.path.join(FIXTURES, 'ultralytics_nc7')
MODELS = ('yolov8n', 'yolo11n')
IMG, STRIDES, NC, REG_MAX = 128, (8, 16, 32), 7, 16
PADDED_M = 7  # the fixture images have 4 and 3 targets; the rest are masked padding rows


TRACES = collections.Counter()  # jit_loss traces per (img, strides, grad)


@functools.lru_cache(maxsize=None)
def jit_loss(img=IMG, strides=STRIDES, grad=False):
  """One jitted loss per (size, strides, grad) for the whole module: compiling dominates test time."""
  def loss(raw, targets):
    TRACES[img, strides, grad] += 1
    return tal_loss.tal_loss(raw, targets, img, strides)
  return jax.jit(jax.value_and_grad(loss, has_aux=True) if grad else loss)


@functools.lru_cache(maxsize=None)
def jit_assign(img=IMG, strides=STRIDES):
  return jax.jit(lambda raw, targets: tal_loss.assign_targets(raw, targets, img, strides))


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  shifted = x - x.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_softplus(x):
  x = np.asarray(x, np.float64)
  return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def random_raw(rng, batch, img=IMG, strides=STRIDES, nc=NC, scale=1.0):
  return [(rng.normal(size=(batch, img // s, img // s, 4 * REG_MAX + nc)) * scale).astype(np.float32)
          for s in strides]


# --------------------------------------------------------------------------------------------------
# Parity with the ultralytics fixtures.

def fixture_inputs(model, padding_first=False):
  """The fixture's raw maps (NHWC), its targets padded to PADDED_M rows (after the real rows, or before
  them with `padding_first`), the reference loss.json and loss_assign.npz."""
  folder = require_fixture(os.path.join(FIX, model))
  raw = [np.load(os.path.join(folder, f'train_raw_L{i}.npy')).transpose(0, 2, 3, 1) for i in range(3)]
  with open(os.path.join(folder, 'loss.json')) as f:
    reference = json.load(f)
  rows = np.array(reference['targets']['rows'], np.float32)
  batch = raw[0].shape[0]
  # Padding rows hold plausible boxes of a real class: if padding leaked anywhere, the numbers would move.
  boxes = np.tile(np.array([0.5, 0.5, 0.3, 0.2], np.float32), (batch, PADDED_M, 1))
  classes = np.full((batch, PADDED_M), NC - 1, np.int32)
  mask = np.zeros((batch, PADDED_M), bool)
  for b in range(batch):
    image_rows = rows[rows[:, 0] == b]
    count = len(image_rows)
    rows_at = slice(PADDED_M - count, None) if padding_first else slice(0, count)
    boxes[b, rows_at], classes[b, rows_at], mask[b, rows_at] = image_rows[:, 2:], image_rows[:, 1], True
  targets = {'boxes': boxes, 'classes': classes, 'mask': mask}
  assignment = dict(np.load(os.path.join(folder, 'loss_assign.npz')))
  return raw, targets, reference, assignment


def rel_diff(got, want):
  return abs(float(got) - want) / abs(want)


@pytest.mark.parametrize('padding_first', [False, True], ids=['padding_last', 'padding_first'])
@pytest.mark.parametrize('model', MODELS)
def test_loss_matches_ultralytics(model, padding_first):
  raw, targets, reference, _ = fixture_inputs(model, padding_first)
  total, items = jit_loss()(raw, targets)
  batch = raw[0].shape[0]
  assert rel_diff(total, reference['total']) < 1e-5
  for i, key in enumerate(('box', 'cls', 'dfl')):
    assert rel_diff(items[key], reference['items'][f'{key}_loss']) < 1e-5, key
    assert rel_diff(items[key] * batch, reference['loss_vector'][i]) < 1e-5, key


@pytest.mark.parametrize('model', MODELS)
def test_assignment_matches_ultralytics(model):
  raw, targets, _, assignment = fixture_inputs(model)
  fg_mask, target_gt_idx, target_bboxes, target_scores = (np.asarray(x) for x in jit_assign()(raw, targets))
  np.testing.assert_array_equal(fg_mask, assignment['fg_mask'])
  np.testing.assert_array_equal(target_gt_idx, assignment['target_gt_idx'])
  np.testing.assert_allclose(target_bboxes, assignment['target_bboxes_xyxy_px'], rtol=0, atol=1e-4)
  np.testing.assert_array_equal(fg_mask.sum(axis=1), assignment['num_fg'])
  # Scores only on the foreground, only in the target's class, never above the overlap bound 1.
  assert np.all(target_scores[~fg_mask] == 0)
  labels = np.take_along_axis(targets['classes'], target_gt_idx, axis=1)
  off_class = np.ones_like(target_scores, bool)
  np.put_along_axis(off_class, labels[..., None], False, axis=-1)
  assert np.all(target_scores[off_class] == 0) and np.all(target_scores <= 1)


# --------------------------------------------------------------------------------------------------
# Pieces by hand.

def test_make_anchors_order():
  points, strides = tal_loss.make_anchors([(2, 2), (1, 1)], [8, 16])
  np.testing.assert_array_equal(points, [[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5], [0.5, 0.5]])
  np.testing.assert_array_equal(strides, [8, 8, 8, 8, 16])


def test_box_decoding_is_the_softmax_expectation():
  # l: all mass on bins 2 and 3 equally -> 2.5; t: uniform -> 7.5; r: bin 0 -> 0; b: p ∝ (1, 3) on 4, 8.
  logits = np.full((4, REG_MAX), -1e4, np.float32)
  logits[0, [2, 3]] = 0.0
  logits[1, :] = 1.0
  logits[2, 0] = 5.0
  logits[3, 4], logits[3, 8] = 0.0, math.log(3.0)
  distances = tal_loss.decode_distances(jnp.asarray(logits.reshape(-1)))
  np.testing.assert_allclose(distances, [2.5, 7.5, 0.0, 0.25 * 4 + 0.75 * 8], rtol=1e-6, atol=1e-6)
  # Anchor (2.5, 3.5): (x1, y1, x2, y2) = (2.5 - l, 3.5 - t, 2.5 + r, 3.5 + b).
  xyxy = tal_loss.distances_to_xyxy(jnp.array([2.5, 3.5]), distances)
  np.testing.assert_allclose(xyxy, [0.0, -4.0, 2.5, 10.5], rtol=1e-6, atol=1e-6)
  # A general distribution against numpy.
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4 * REG_MAX)).astype(np.float32) * 3
  probs = np.exp(np_log_softmax(logits.reshape(3, 4, REG_MAX)))
  np.testing.assert_allclose(tal_loss.decode_distances(jnp.asarray(logits)), probs @ np.arange(REG_MAX),
                             rtol=1e-5)


def test_dfl_by_hand():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, REG_MAX)).astype(np.float32)
  log_p = np_log_softmax(logits)
  # Side targets: inside (3.3 -> bins 3, 4 weighted 0.7, 0.3), on a bin (7 -> bin 7 only), above the top
  # (20 -> clamped to 14.99: bins 14, 15 weighted 0.01, 0.99), below 0 (-1 -> 0: bin 0 only).
  targets = np.array([3.3, 7.0, 20.0, -1.0], np.float32)
  per_side = [-(0.7 * log_p[0, 3] + 0.3 * log_p[0, 4]),
              -log_p[1, 7],
              -(0.01 * log_p[2, 14] + 0.99 * log_p[2, 15]),
              -log_p[3, 0]]
  got = tal_loss.dfl_loss(jnp.asarray(logits.reshape(-1)), jnp.asarray(targets))
  np.testing.assert_allclose(got, np.mean(per_side), rtol=2e-5)


def test_ciou_xyxy_hand_values():
  # Two 2x2 boxes one unit apart: IoU 2/6, enclosing box 3x2 (diagonal² 13), centre distance² 1, v = 0.
  got = tal_loss.bbox_ciou_xyxy(jnp.array([-1., -1, 1, 1]), jnp.array([0., -1, 2, 1]))
  np.testing.assert_allclose(got, 1 / 3 - 1 / 13, rtol=1e-6)


def test_candidates_widen_small_sides():
  points, _ = tal_loss.make_anchors([(8, 8)], [8])
  anchors_px = jnp.asarray(points * 8)  # centres at 4, 12, 20, ... px

  def inside(box_cxcywh, min_side):
    box = tal_loss.cxcywh_to_xyxy(jnp.asarray(box_cxcywh, jnp.float32))[None, None]
    got = np.asarray(tal_loss.candidates_in_gts(anchors_px, box, min_side))[0, 0]
    return set(map(tuple, (points[got] * 8).astype(int).tolist()))

  # 6x6 at (16, 16): no centre inside (13..19); widened to 16x16 (8..24): centres 12 and 20 both ways.
  assert inside([16, 16, 6, 6], 0.0) == set()
  assert inside([16, 16, 6, 6], 16.0) == {(12, 12), (20, 12), (12, 20), (20, 20)}
  # 40x6 at (32, 16): only the short side is widened: x in (12, 52) -> 20..44 (12 is on the border,
  # which is not strictly inside); y in (8, 24) -> 12, 20.
  assert inside([32, 16, 40, 6], 16.0) == {(x, y) for y in (12, 20) for x in (20, 28, 36, 44)}
  # A side of exactly min_side is unchanged; anchor centres on the border are out.
  assert inside([16, 16, 16, 16], 16.0) == inside([16, 16, 16, 16], 0.0) == {(12, 12), (20, 12), (12, 20),
                                                                            (20, 20)}
  assert inside([20, 20, 16, 16], 16.0) == {(20, 20)}
  # The size ultralytics widens to: strides[1], or strides[0] with one level.
  assert tal_loss.default_min_side((8, 16, 32)) == 16.0 and tal_loss.default_min_side((8,)) == 8.0


def test_assigner_by_hand_overlap_decides_shared_anchors():
  # Four anchors (pixels); two targets claim anchors 1 and 2; the anchor goes to the target its predicted
  # box overlaps more, and each target's score is scaled so its best positive gets its best overlap.
  anchors = jnp.array([[4., 4], [12, 4], [20, 4], [28, 4]])
  gt = jnp.array([[[0., 0, 24, 8], [8, 0, 32, 8]]])
  pred = jnp.array([[[0., 0, 8, 8], [0, 0, 20, 8], [14, 0, 32, 8], [24, 0, 32, 8]]])
  scores = jnp.full((1, 4, 3), 0.5).at[0, :, 2].set(0.9)
  assign = jax.jit(functools.partial(tal_loss.tal_assign, min_side=0.0, topk=3))  # one compile, not ~100
  fg, idx, boxes, target_scores = assign(scores, pred, anchors, jnp.array([[1, 2]]), gt,
                                         jnp.array([[True, True]]))
  fg, idx, boxes, target_scores = (np.asarray(x) for x in (fg, idx, boxes, target_scores))
  np.testing.assert_array_equal(fg, [[True, True, True, True]])
  np.testing.assert_array_equal(idx, [[0, 0, 1, 1]])
  np.testing.assert_array_equal(boxes[0], np.asarray(gt)[0][[0, 0, 1, 1]])
  assert np.all(target_scores[0, :, 0] == 0)
  assert np.all(target_scores[0, :2, 2] == 0) and np.all(target_scores[0, 2:, 1] == 0)
  # Each target's best positive anchor gets exactly that target's best overlap (CIoU of the pair).
  ciou = np.asarray(tal_loss.bbox_ciou_xyxy(gt[0][:, None], pred[0][None]))           # [2, 4]
  np.testing.assert_allclose(target_scores[0, :2, 1].max(), ciou[0, :2].max(), rtol=1e-5)
  np.testing.assert_allclose(target_scores[0, 2:, 2].max(), ciou[1, 2:].max(), rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# The whole loss.

def test_no_targets_is_bce_against_zeros():
  rng = np.random.default_rng(2)
  raw = random_raw(rng, 2)
  # Padding rows may hold anything, even NaN boxes and invalid classes.
  boxes = np.full((2, PADDED_M, 4), 0.5, np.float32)
  boxes[0, 0], boxes[1, 3] = np.nan, [0.5, 0.5, -1.0, 0.0]
  classes = np.full((2, PADDED_M), NC, np.int32)
  classes[:, 1] = -1
  targets = {'boxes': boxes, 'classes': classes, 'mask': np.zeros((2, PADDED_M), bool)}
  total, items = jit_loss()(raw, targets)
  # Target-score sum 0 -> normaliser 1: cls = 0.5 · Σ BCE(x, 0) = 0.5 · Σ softplus(x); box = dfl = 0.
  cls_logits = np.concatenate([r[..., 4 * REG_MAX:].reshape(-1) for r in raw])
  expected_cls = 0.5 * np_softplus(cls_logits).sum()
  np.testing.assert_allclose(items['cls'], expected_cls, rtol=1e-5)
  assert float(items['box']) == 0.0 and float(items['dfl']) == 0.0
  np.testing.assert_allclose(total, 2 * expected_cls, rtol=1e-5)


def test_jit_compiles_once_for_same_shapes():
  # Two different batches of the fixture's shapes (B 2, M 7, 128²): one trace for the module.
  rng = np.random.default_rng(3)
  for seed in range(2):
    targets = {'boxes': rng.uniform(0.3, 0.7, (2, PADDED_M, 4)).astype(np.float32),
               'classes': rng.integers(0, NC, (2, PADDED_M)).astype(np.int32),
               'mask': rng.random((2, PADDED_M)) < 0.5 + 0.3 * seed}
    total, _ = jit_loss()(random_raw(rng, 2), targets)
    assert np.isfinite(float(total))
  assert TRACES[IMG, STRIDES, False] == 1


def test_finite_gradients_at_extreme_logits():
  rng = np.random.default_rng(4)
  raw = [np.sign(r) * 80.0 for r in random_raw(rng, 2)]
  raw[0][0] = 100.0                          # a level of one image where every logit is saturated
  raw[1][1, ..., :4 * REG_MAX] = -100.0      # and one where every box distribution is flat
  targets = {'boxes': np.array([[[0.5, 0.5, 0.4, 0.6], [0.1, 0.1, 0.03, 0.05]],
                                [[0.7, 0.3, 0.2, 0.2], [np.nan] * 4]], np.float32),  # a NaN padding row
             'classes': np.array([[0, 3], [6, 1]], np.int32), 'mask': np.array([[True, True], [True, False]])}
  (total, items), grads = jit_loss(grad=True)(raw, targets)
  assert np.isfinite(float(total)) and all(np.isfinite(float(v)) for v in items.values())
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
  assert float(items['box']) > 0 and float(items['dfl']) > 0


def test_bad_arguments_raise():
  rng = np.random.default_rng(5)
  raw = random_raw(rng, 1, img=32)
  targets = {'boxes': np.full((1, 1, 4), 0.5, np.float32), 'classes': np.zeros((1, 1), np.int32),
             'mask': np.ones((1, 1), bool)}
  with pytest.raises(ValueError, match="'iou' is unknown"):
    tal_loss.tal_loss(raw, targets, 32, STRIDES, hyp={'iou': 1.0})
  with pytest.raises(ValueError, match='levels'):
    tal_loss.tal_loss(raw[:2], targets, 32, STRIDES)
  with pytest.raises(ValueError, match='stride 8'):
    tal_loss.tal_loss(raw, targets, 64, STRIDES)
  with pytest.raises(ValueError, match='outside'):
    tal_loss.tal_loss(raw, dict(targets, classes=np.full((1, 1), NC, np.int32)), 32, STRIDES)
