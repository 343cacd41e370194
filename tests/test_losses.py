"""yolov5 loss against values worked out here with plain numpy formulas (SPEC §3)."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from yolo_osam_jax import losses

IMG = 64  # strides 8/16/32 -> grids 8, 4, 2
BALANCE_3 = [4.0, 1.0, 0.4]  # strides 8, 16, 32
# Published Detect order 8, 16, 32, 4 with balance 4.0, 1.0, 0.25, 0.06; listed here by stride ascending.
BALANCE_4_BY_STRIDE = [0.06, 4.0, 1.0, 0.25]


def model_config(num_classes=2, anchors=None, fusion='none'):
  return ml_collections.ConfigDict({'fusion': fusion, 'num_classes': num_classes, 'anchors': anchors})


# Only anchor 0 of stride 8 (16 x 16 px = 2 x 2 cells) can take a box of about 16 px: every other anchor
# is > 4x larger, so each test box has exactly the assignments the test expects.
ISOLATED_ANCHORS = [[[16, 16], [400, 400], [400, 400]], [[400, 400]] * 3, [[400, 400]] * 3]


def random_raw(rng, batch, num_classes, strides=(8, 16, 32), img=IMG, scale=1.0):
  return [(rng.normal(size=(batch, img // s, img // s, 3, 5 + num_classes)) * scale).astype(np.float32)
          for s in strides]


def np_sigmoid(x):
  return 1 / (1 + np.exp(-x))


def np_bce(logits, targets):
  """-[y log σ(x) + (1 - y) log(1 - σ(x))], written out."""
  p = np_sigmoid(np.asarray(logits, np.float64))
  return -(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def np_ciou(b1, b2, eps=1e-7):
  """CIoU of two (cx, cy, w, h) boxes straight from the paper's definition."""
  (x1, y1, w1, h1), (x2, y2, w2, h2) = b1, b2
  ix = max(0.0, min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2))
  iy = max(0.0, min(y1 + h1 / 2, y2 + h2 / 2) - max(y1 - h1 / 2, y2 - h2 / 2))
  inter = ix * iy
  iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
  cw = max(x1 + w1 / 2, x2 + w2 / 2) - min(x1 - w1 / 2, x2 - w2 / 2)
  ch = max(y1 + h1 / 2, y2 + h2 / 2) - min(y1 - h1 / 2, y2 - h2 / 2)
  rho2 = (x2 - x1)**2 + (y2 - y1)**2
  v = 4 / math.pi**2 * (math.atan(w2 / h2) - math.atan(w1 / h1))**2
  alpha = v / (v - iou + 1 + eps)
  return iou - rho2 / (cw**2 + ch**2 + eps) - alpha * v


def logit(p):
  return math.log(p / (1 - p))


def expected_obj(raw, obj_targets, balances, img=IMG):
  """Σ_levels balance · mean BCE(objectness logits, targets) · (img/640)² · 3/nl."""
  total = sum(b * np.mean(np_bce(r[..., 4], t)) for r, t, b in zip(raw, obj_targets, balances))
  return total * (img / 640)**2 * 3 / len(raw)


_JITTED = {}


def jit_loss(cfg, img=IMG, grad=False):
  """The loss jitted once per (config, size, grad) for the whole module: compiling dominates test time
  on the 2-core CI machine, and eager op-by-op dispatch is slower still."""
  key = (repr(cfg.to_dict()), img, grad)
  if key not in _JITTED:
    loss = lambda raw, targets: losses.yolo_loss(raw, targets, cfg, img)
    _JITTED[key] = jax.jit(jax.value_and_grad(loss, has_aux=True) if grad else loss)
  return _JITTED[key]


def targets_of(boxes, classes, mask):
  return {'boxes': np.asarray(boxes, np.float32), 'classes': np.asarray(classes, np.int32),
          'mask': np.asarray(mask, bool)}


def test_ciou_hand_values():
  # Two 2x2 boxes one unit apart: IoU 2/6, enclosing box 3x2 (diagonal² 13), centre distance² 1, v = 0.
  got = losses.bbox_ciou(jnp.array([0., 0, 2, 2]), jnp.array([1., 0, 2, 2]))
  np.testing.assert_allclose(got, 1 / 3 - 1 / 13, rtol=1e-6)
  # Concentric 1x1 and 2x1: IoU 1/2, no distance term, aspect term v = 4/π² (atan 2 - atan 1)².
  v = 4 / math.pi**2 * (math.atan(2) - math.atan(1))**2
  got = losses.bbox_ciou(jnp.array([0., 0, 1, 1]), jnp.array([0., 0, 2, 1]))
  np.testing.assert_allclose(got, 0.5 - v * v / (v - 0.5 + 1), rtol=1e-6)
  # Random pairs against the scalar reference.
  rng = np.random.default_rng(0)
  b1 = np.concatenate([rng.uniform(0, 3, (20, 2)), rng.uniform(0.2, 3, (20, 2))], 1).astype(np.float32)
  b2 = np.concatenate([rng.uniform(0, 3, (20, 2)), rng.uniform(0.2, 3, (20, 2))], 1).astype(np.float32)
  expected = [np_ciou(p.astype(np.float64), q.astype(np.float64)) for p, q in zip(b1, b2)]
  np.testing.assert_allclose(losses.bbox_ciou(b1, b2), expected, rtol=1e-5, atol=1e-6)


def test_ciou_gradient_holds_alpha_fixed():
  # yolov5 computes α without gradient: d CIoU / d box equals the finite difference of CIoU with α frozen
  # at the base point (and differs from the one with α moving).
  b1 = np.array([0.3, -0.2, 1.4, 0.7])
  b2 = np.array([0.0, 0.0, 1.0, 1.5])
  def ciou_parts(b):
    (x1, y1, w1, h1), (x2, y2, w2, h2) = b, b2
    ix = max(0.0, min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2))
    iy = max(0.0, min(y1 + h1 / 2, y2 + h2 / 2) - max(y1 - h1 / 2, y2 - h2 / 2))
    iou = ix * iy / (w1 * h1 + w2 * h2 - ix * iy + 1e-7)
    cw = max(x1 + w1 / 2, x2 + w2 / 2) - min(x1 - w1 / 2, x2 - w2 / 2)
    ch = max(y1 + h1 / 2, y2 + h2 / 2) - min(y1 - h1 / 2, y2 - h2 / 2)
    v = 4 / math.pi**2 * (math.atan(w2 / h2) - math.atan(w1 / h1))**2
    return iou, ((x2 - x1)**2 + (y2 - y1)**2) / (cw**2 + ch**2 + 1e-7), v
  iou0, _, v0 = ciou_parts(b1)
  alpha0 = v0 / (v0 - iou0 + 1 + 1e-7)
  def ciou_frozen_alpha(b):
    iou, distance, v = ciou_parts(b)
    return iou - distance - alpha0 * v
  step = 1e-6
  expected = [(ciou_frozen_alpha(b1 + step * e) - ciou_frozen_alpha(b1 - step * e)) / (2 * step)
              for e in np.eye(4)]
  got = jax.grad(lambda b: losses.bbox_ciou(b, jnp.asarray(b2, jnp.float32)))(jnp.asarray(b1, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
  moving = [(np_ciou(b1 + step * e, b2) - np_ciou(b1 - step * e, b2)) / (2 * step) for e in np.eye(4)]
  assert np.max(np.abs(np.asarray(moving) - np.asarray(expected))) > 1e-2


def test_bce_pos_weight_matches_formula():
  x = np.linspace(-6, 6, 13).astype(np.float32)
  y = np.linspace(0, 1, 13).astype(np.float32)
  p = np_sigmoid(x.astype(np.float64))
  expected = -(2.5 * y * np.log(p) + (1 - y) * np.log(1 - p))
  np.testing.assert_allclose(losses.bce_with_logits(x, y, 2.5), expected, rtol=1e-5)


@pytest.mark.parametrize('pred_logits, pred_box', [
    # tx = ty = 0 -> xy = 0.5 (the target's offset); (2σ)² · 2 = 1 -> a concentric 1x1 box: IoU = 1/4.
    ((0.0, 0.0, logit(math.sqrt(0.5) / 2), logit(math.sqrt(0.5) / 2)), (0.5, 0.5, 1.0, 1.0)),
    # A shifted box of another aspect, so the distance and aspect terms count too.
    ((0.4, -0.3, 0.2, -0.5), None),
])
def test_one_box_hand_computed(pred_logits, pred_box):
  rng = np.random.default_rng(1)
  cfg = model_config(num_classes=2, anchors=ISOLATED_ANCHORS)
  raw = random_raw(rng, batch=2, num_classes=2)
  # Image 0: one box centred in cell (3, 3) of the 8x8 grid (x = y = 3.5: no neighbour cell), 2x2 cells,
  # class 1. Image 1: nothing, only padding rows.
  boxes = [[[3.5 / 8, 3.5 / 8, 0.25, 0.25], [0, 0, 0, 0], [0, 0, 0, 0]], [[0, 0, 0, 0]] * 3]
  targets = targets_of(boxes, [[1, 0, 0], [0, 0, 0]], [[True, False, False], [False] * 3])
  raw[0][0, 3, 3, 0, :4] = pred_logits
  total, parts = jit_loss(cfg)(raw, targets)

  t = np.asarray(pred_logits, np.float64)
  decoded = (2 * np_sigmoid(t[0]) - 0.5, 2 * np_sigmoid(t[1]) - 0.5,
             (2 * np_sigmoid(t[2]))**2 * 2.0, (2 * np_sigmoid(t[3]))**2 * 2.0)
  target_box = (0.5, 0.5, 2.0, 2.0)
  if pred_box is not None:
    np.testing.assert_allclose(decoded, pred_box, rtol=1e-12)
    ciou = 0.25  # concentric, same aspect: CIoU = IoU = 1 / (1 + 4 - 1)
  else:
    ciou = np_ciou(decoded, target_box)
  lbox = (1 - ciou) * 0.05
  obj_targets = [np.zeros(r.shape[:4]) for r in raw]
  obj_targets[0][0, 3, 3, 0] = max(ciou, 0.0)
  lobj = expected_obj(raw, obj_targets, BALANCE_3)
  lcls = np.mean(np_bce(raw[0][0, 3, 3, 0, 5:], np.array([0.0, 1.0]))) * 0.5 * 2 / 80
  np.testing.assert_allclose(parts['box'], lbox, rtol=1e-5)
  np.testing.assert_allclose(parts['obj'], lobj, rtol=1e-5)
  np.testing.assert_allclose(parts['cls'], lcls, rtol=1e-5)
  np.testing.assert_allclose(total, 2 * (lbox + lobj + lcls), rtol=1e-5)


@pytest.mark.parametrize('centre, cells', [
    # x = 3.2, y = 5.3: frac < 0.5 on both -> left (2, 5) and up (3, 4).
    ((3.2, 5.3), {(3, 5): (0.2, 0.3), (2, 5): (1.2, 0.3), (3, 4): (0.2, 1.3)}),
    # x = 4.7, y = 2.6: 8 - x = 3.3 and 8 - y = 5.4 have frac < 0.5 -> right (5, 2) and down (4, 3).
    ((4.7, 2.6), {(4, 2): (0.7, 0.6), (5, 2): (-0.3, 0.6), (4, 3): (0.7, -0.4)}),
    # x = 0.8 (not > 1: no left neighbour), y = 7.4 (8 - y = 0.6, not > 1: no lower neighbour).
    ((0.8, 7.4), {(0, 7): (0.8, 0.4), (1, 7): (-0.2, 0.4), (0, 6): (0.8, 1.4)}),
])
def test_cell_border_assigns_three_cells(centre, cells):
  gx, gy = centre
  boxes = np.array([[[gx / 8, gy / 8, 0.25, 0.25]]], np.float32)
  assigned = losses.build_targets(jnp.asarray(boxes), jnp.array([[1]]), jnp.array([[True]]), (8, 8),
                                  jnp.array([[2.0, 2.0], [50.0, 50.0], [50.0, 50.0]]), 4.0)
  valid = np.asarray(assigned['valid'])  # [B, O, A, M]
  assert valid[:, :, 1:].sum() == 0  # only anchor 0 fits
  got = {}
  for b, o, a, m in np.argwhere(valid):
    cell = (int(assigned['gi'][b, o, a, m]), int(assigned['gj'][b, o, a, m]))
    got[cell] = tuple(np.asarray(assigned['tbox'][b, o, a, m]))
  assert set(got) == set(cells)
  for cell, xy in cells.items():
    np.testing.assert_allclose(got[cell], xy + (2.0, 2.0), atol=1e-5)

  # Through the loss: box logits get a gradient exactly at those (cell, anchor 0) positions.
  cfg = model_config(num_classes=2, anchors=ISOLATED_ANCHORS)
  raw = [jnp.asarray(r) for r in random_raw(np.random.default_rng(2), 1, 2)]
  targets = targets_of(boxes, [[1]], [[True]])
  _, grads = jit_loss(cfg, grad=True)(raw, targets)
  box_grad = np.abs(np.asarray(grads[0][0, :, :, :, :4])).sum(-1)  # [H, W, A]
  nonzero = {(int(i), int(j)) for j, i, a in np.argwhere(box_grad > 0) if a == 0}
  assert nonzero == set(cells)
  assert np.all(box_grad[..., 1:] == 0)
  assert all(np.all(np.asarray(g[..., :4]) == 0) for g in grads[1:])


@pytest.mark.parametrize('size_px, assigned', [
    (16 * 3.99, True), (16 * 4.0, False), (16 * 4.01, False),   # w / anchor just under, at, over 4
    (16 / 3.99, True), (16 / 4.01, False),                      # anchor / w just under, over 4
])
def test_anchor_ratio_threshold(size_px, assigned):
  img = 128  # grid 16 at stride 8; a 64 px box fits
  cfg = model_config(num_classes=2, anchors=ISOLATED_ANCHORS)
  raw = random_raw(np.random.default_rng(3), 1, 2, img=img)
  boxes = [[[7.5 / 16, 7.5 / 16, size_px / img, 16 / img]]]  # height exactly the anchor's
  targets = targets_of(boxes, [[0]], [[True]])
  total, parts = jit_loss(cfg, img)(raw, targets)
  assert (float(parts['box']) > 0) == assigned
  assert (float(parts['cls']) > 0) == assigned
  if not assigned:  # nothing assigned anywhere: objectness against all-zero targets only
    lobj = expected_obj(raw, [np.zeros(r.shape[:4]) for r in raw], BALANCE_3, img=img)
    np.testing.assert_allclose(parts['obj'], lobj, rtol=1e-5)
    np.testing.assert_allclose(total, lobj, rtol=1e-5)


@pytest.mark.parametrize('fusion, strides, balances', [
    ('none', (8, 16, 32), BALANCE_3),
    ('reference', (4, 8, 16, 32), BALANCE_4_BY_STRIDE),
])
def test_empty_images_only_objectness(fusion, strides, balances):
  rng = np.random.default_rng(4)
  raw = random_raw(rng, 3, 7, strides=strides, scale=3.0)
  targets = targets_of(np.zeros((3, 5, 4)), np.zeros((3, 5)), np.zeros((3, 5), bool))
  total, parts = jit_loss(model_config(7, fusion=fusion))(raw, targets)
  # BCE(x, 0) = log(1 + e^x), averaged per level, balance per level, gain (64/640)² · 3/nl.
  lobj = sum(b * np.mean(np.logaddexp(0.0, r[..., 4].astype(np.float64)))
             for r, b in zip(raw, balances)) * 0.01 * 3 / len(strides)
  assert float(parts['box']) == 0.0 and float(parts['cls']) == 0.0
  np.testing.assert_allclose(parts['obj'], lobj, rtol=1e-5)
  np.testing.assert_allclose(total, 3 * lobj, rtol=1e-5)


def test_same_cell_and_anchor_keeps_yolov5s_last_write():
  cfg = model_config(num_classes=2, anchors=ISOLATED_ANCHORS)
  rng = np.random.default_rng(5)
  raw = random_raw(rng, 2, 2)
  # The prediction at cells (3, 3) and (2, 3), anchor 0: centred in the cell, 1x1 cells in size.
  wh_logit = logit(math.sqrt(0.5) / 2)
  raw[0][:, 3, 3, 0, :4] = (0, 0, wh_logit, wh_logit)
  raw[0][:, 3, 2, 0, :4] = (0, 0, wh_logit, wh_logit)
  pred = (0.5, 0.5, 1.0, 1.0)
  # Image 0: two targets on cell (3, 3) through their own cell; yolov5 writes target 1 last.
  # Image 1: target 0 at x = 3.25 reaches cell (2, 3) through its left neighbour, target 1 at x = 2.5
  # through its own cell; yolov5 writes all own-cell candidates before the neighbour ones: target 0 wins.
  boxes = [[[3.5 / 8, 3.5 / 8, 2 / 8, 2 / 8], [3.5 / 8, 3.5 / 8, 1.5 / 8, 1.5 / 8]],
           [[3.25 / 8, 3.5 / 8, 2 / 8, 2 / 8], [2.5 / 8, 3.5 / 8, 1.5 / 8, 1.5 / 8]]]
  targets = targets_of(boxes, [[0, 1], [0, 1]], np.ones((2, 2), bool))
  _, parts = jit_loss(cfg)(raw, targets)

  def ciou_at(cell_x, b, i):  # CIoU between the prediction at (cell_x, 3) and target i of image b
    cx, cy, w, h = (np.array(boxes[b][i]) * 8).tolist()
    t = raw[0][b, 3, cell_x, 0, :4].astype(np.float64)
    decoded = (2 * np_sigmoid(t[0]) - 0.5, 2 * np_sigmoid(t[1]) - 0.5,
               (2 * np_sigmoid(t[2]))**2 * 2, (2 * np_sigmoid(t[3]))**2 * 2)
    return np_ciou(decoded, (cx - cell_x, cy - 3, w, h))

  np.testing.assert_allclose(ciou_at(3, 0, 1), np_ciou(pred, (0.5, 0.5, 1.5, 1.5)), rtol=1e-6)
  obj = [np.zeros(r.shape[:4]) for r in raw]
  obj[0][0, 3, 3, 0] = ciou_at(3, 0, 1)   # target 1 (last of the two own-cell writes)
  obj[0][1, 3, 3, 0] = ciou_at(3, 1, 0)   # target 0's own cell, no competitor
  obj[0][1, 3, 2, 0] = ciou_at(2, 1, 0)   # target 0 through the left neighbour beats target 1
  np.testing.assert_allclose(parts['obj'], expected_obj(raw, obj, BALANCE_3), rtol=1e-5)
  # The other choice at either collision gives a measurably different loss.
  wrong = [o.copy() for o in obj]
  wrong[0][1, 3, 2, 0] = ciou_at(2, 1, 1)
  assert abs(expected_obj(raw, wrong, BALANCE_3) - float(parts['obj'])) > 1e-5


def test_padding_rows_change_nothing():
  rng = np.random.default_rng(6)
  cfg = model_config(num_classes=3, fusion='none')
  raw = [jnp.asarray(r) for r in random_raw(rng, 2, 3, img=128)]
  boxes = np.concatenate([rng.uniform(0.2, 0.8, (2, 4, 2)), rng.uniform(0.05, 0.4, (2, 4, 2))], -1)
  classes = rng.integers(0, 3, (2, 4))
  mask = np.array([[True, True, True, True], [True, True, False, False]])
  short = targets_of(boxes, classes, mask)
  # Three more padding rows with garbage in them (NaN boxes, an impossible class).
  padded = targets_of(np.concatenate([boxes, np.full((2, 3, 4), np.nan)], 1),
                      np.concatenate([classes, np.full((2, 3), 99)], 1),
                      np.concatenate([mask, np.zeros((2, 3), bool)], 1))
  # Two shapes of targets: the jitted function traces once per shape.
  loss_and_grad = jit_loss(cfg, 128, grad=True)
  (total_a, parts_a), grads_a = loss_and_grad(raw, short)
  (total_b, parts_b), grads_b = loss_and_grad(raw, padded)
  assert float(parts_a['box']) > 0 and float(parts_a['cls']) > 0
  np.testing.assert_allclose(total_b, total_a, rtol=1e-6)
  for key in ('box', 'obj', 'cls'):
    np.testing.assert_allclose(parts_b[key], parts_a[key], rtol=1e-6)
  for ga, gb in zip(grads_a, grads_b):
    assert np.all(np.isfinite(gb))
    np.testing.assert_allclose(gb, ga, rtol=1e-5, atol=1e-9)


def test_jit_traces_once():
  cfg = model_config(num_classes=7, fusion='reference')
  traces = []

  def step(raw, targets):
    traces.append(1)
    return losses.yolo_loss(raw, targets, cfg, IMG)[0]

  jitted = jax.jit(step)
  rng = np.random.default_rng(7)
  values = []
  for _ in range(3):
    raw = [jnp.asarray(r) for r in random_raw(rng, 2, 7, strides=(4, 8, 16, 32))]
    boxes = np.concatenate([rng.uniform(0.1, 0.9, (2, 6, 2)), rng.uniform(0.05, 0.6, (2, 6, 2))], -1)
    targets = targets_of(boxes, rng.integers(0, 7, (2, 6)), rng.random((2, 6)) < 0.6)
    values.append(float(jitted(raw, targets)))
  assert len(traces) == 1
  assert len(set(values)) == 3  # each call computed its own inputs


def test_gradients_finite_for_extreme_logits_and_bf16():
  cfg = model_config(num_classes=7, fusion='none')
  rng = np.random.default_rng(8)
  raw = random_raw(rng, 2, 7, img=128, scale=40.0)  # saturated sigmoids, wh near 0 and near 4·anchor
  raw[0][..., 2:4] = -120.0                         # (2σ)² underflows to 0 at stride 8
  boxes = np.concatenate([rng.uniform(0.0, 1.0, (2, 8, 2)), rng.uniform(0.01, 0.5, (2, 8, 2))], -1)
  targets = targets_of(boxes, rng.integers(0, 7, (2, 8)), np.ones((2, 8), bool))
  loss_and_grad = jit_loss(cfg, 128, grad=True)
  (value, _), grads = loss_and_grad(raw, targets)
  assert np.isfinite(float(value))
  assert all(np.all(np.isfinite(g)) for g in grads)
  assert any(np.any(np.asarray(g) != 0) for g in grads)

  # bf16 logits are computed in float32: same value as the float32 copy of the same numbers.
  raw16 = [jnp.asarray(r * 0.05, jnp.bfloat16) for r in raw]
  loss = jit_loss(cfg, 128)
  value16 = loss(raw16, targets)[0]
  assert value16.dtype == jnp.float32
  np.testing.assert_allclose(value16, loss([r.astype(jnp.float32) for r in raw16], targets)[0], rtol=1e-6)


def test_bad_input_errors():
  cfg = model_config(num_classes=2, fusion='none')
  raw = [jnp.asarray(r) for r in random_raw(np.random.default_rng(9), 1, 2)]
  good = targets_of([[[0.5, 0.5, 0.2, 0.2]]], [[0]], [[True]])
  with pytest.raises(ValueError, match=r"targets\['classes'\]\[0, 0\] = 2 is outside \[0, 2\)"):
    losses.yolo_loss(raw, targets_of([[[0.5, 0.5, 0.2, 0.2]]], [[2]], [[True]]), cfg, IMG)
  with pytest.raises(ValueError, match=r"targets\['boxes'\]\[0, 0\].*non-positive"):
    losses.yolo_loss(raw, targets_of([[[0.5, 0.5, 0.0, 0.2]]], [[0]], [[True]]), cfg, IMG)
  with pytest.raises(ValueError, match='raw has 2 levels'):
    losses.yolo_loss(raw[:2], good, cfg, IMG)
  with pytest.raises(ValueError, match='stride 8 has shape'):
    losses.yolo_loss(raw, good, cfg, 128)
  with pytest.raises(ValueError, match="'fl_gamma' is unknown"):
    losses.yolo_loss(raw, good, cfg, IMG, hyp={'fl_gamma': 1.5})
