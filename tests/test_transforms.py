"""Transforms keep boxes on the pixels they describe.

Scenes are black images with filled rectangles, one saturated colour per class. After a transform we
find where each colour went (connected components of the pixels close to that colour) and check that
every output box of that class is the bounding box of one such component, within ~2 px (the resampling
blurs edges). Geometry that can be worked out by hand (letterbox sizes, flips, HSV gains, mixup ratio,
box_candidates) is asserted against those hand values.
"""

import math

import cv2
import numpy as np
import pytest

from yolo_osam_jax.data import transforms as T

COLOURS = np.array([
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
], np.uint8)
NO_AUG = dict(mosaic=0.0, degrees=0.0, translate=0.0, scale=0.0, shear=0.0, perspective=0.0,
              fliplr=0.0, flipud=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, mixup=0.0)


def draw_scene(height, width, rects):
  """Black image with rects [(x1, y1, x2, y2, cls)] filled; the box of a rect covers pixels [x1, x2)."""
  image = np.zeros((height, width, 3), np.uint8)
  for x1, y1, x2, y2, cls in rects:
    image[y1:y2, x1:x2] = COLOURS[cls]
  boxes = np.array([r[:4] for r in rects], np.float32).reshape(-1, 4)
  classes = np.array([r[4] for r in rects], np.int32)
  return image, boxes, classes


def colour_mask(image, cls, margin=40):
  """Pixels holding some of colour `cls`: its lit channels exceed its dark ones by `margin`.

  The saturated colours exclude each other under this rule, and so do black, the grey fill and
  black/grey blends, while edge pixels only partly covered by the colour (blended with black or grey)
  still count, so thin slivers cut by the image border are measured where they really end.
  """
  image = image.astype(np.int32)
  lit = COLOURS[cls] > 0
  low = image[..., ~lit].max(-1) if (~lit).any() else np.zeros(image.shape[:2], np.int32)
  return image[..., lit].min(-1) - low > margin


def colour_components(image, cls):
  """Bounding boxes (x1, y1, x2, y2, pixel edges) of the connected regions of colour `cls`."""
  mask = colour_mask(image, cls).astype(np.uint8)
  count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
  return [(x, y, x + w, y + h) for x, y, w, h, _ in stats[1:count]]


def box_errors(image, boxes, classes):
  """For each box, the smallest max-abs difference to a component of its colour (inf if none)."""
  errors = []
  for box, cls in zip(boxes, classes):
    comps = colour_components(image, int(cls))
    errors.append(min((np.abs(np.array(c) - box).max() for c in comps), default=np.inf))
  return np.array(errors)


def assert_boxes_on_pixels(image, boxes, classes, tol=2.0, expect_all_rects=None):
  errors = box_errors(image, boxes, classes)
  assert np.all(errors <= tol), f"box/pixel mismatch {errors} for boxes {boxes.tolist()}"
  if expect_all_rects is not None:
    # Conversely every drawn region has its box (no box lost without the pixels being lost).
    assert len(boxes) == expect_all_rects


# --------------------------------------------------------------------------------------------------
# Letterbox.


def test_letterbox_sizes_and_pads_by_hand():
  image, boxes, classes = draw_scene(60, 90, [(9, 6, 45, 36, 0), (60, 30, 81, 54, 1)])
  out, scale, pad = T.letterbox(image, 64)
  # Long side 90 → 64: scale 64/90; short side 60 · 64/90 = 42.67 → 43 rows; pad (64 - 43)/2 = 10.5
  # → round(10.4) = 10 above, 11 below; no horizontal pad.
  assert out.shape == (64, 64, 3) and out.dtype == np.uint8
  assert scale == pytest.approx(64 / 90)
  assert pad == (0, 10)
  assert np.all(out[:10] == 114) and np.all(out[53:] == 114)
  assert not np.any(np.all(out[10:53] == 114, axis=-1))
  lb = T.letterbox_boxes(boxes, scale, pad)
  np.testing.assert_allclose(lb[0], [9 * 64 / 90, 6 * 64 / 90 + 10, 45 * 64 / 90, 36 * 64 / 90 + 10],
                             rtol=1e-6)
  assert_boxes_on_pixels(out, lb, classes, tol=1.5, expect_all_rects=2)


def test_letterbox_tall_image_and_upscaling():
  image, boxes, classes = draw_scene(40, 20, [(4, 8, 16, 30, 2)])
  out, scale, pad = T.letterbox(image, 64)
  # Tall image: 40 → 64 rows (scale 1.6), 20 → 32 columns, centred with 16 columns each side.
  assert scale == pytest.approx(1.6) and pad == (16, 0)
  assert np.all(out[:, :16] == 114) and np.all(out[:, 48:] == 114)
  lb = T.letterbox_boxes(boxes, scale, pad)
  np.testing.assert_allclose(lb[0], [4 * 1.6 + 16, 8 * 1.6, 16 * 1.6 + 16, 30 * 1.6], rtol=1e-6)
  assert_boxes_on_pixels(out, lb, classes, tol=1.5, expect_all_rects=1)


@pytest.mark.parametrize('hw', [(60, 90), (123, 47), (64, 64), (17, 200)])
def test_unletterbox_is_the_exact_inverse(hw):
  rng = np.random.default_rng(3)
  h, w = hw
  xy = rng.uniform(0, 1, (50, 4)) * np.array([w, h, w, h])
  boxes = np.concatenate([np.minimum(xy[:, :2], xy[:, 2:]), np.maximum(xy[:, :2], xy[:, 2:])], 1)
  _, scale, pad = T.letterbox(np.zeros((h, w, 3), np.uint8), 128)
  there = T.letterbox_boxes(boxes, scale, pad)
  back = T.unletterbox_boxes(there, (scale, pad[0], pad[1]))
  np.testing.assert_allclose(back, boxes, atol=1e-4 * max(h, w))
  # It also accepts any leading shape, e.g. [B, N, 4] predictions.
  back3 = T.unletterbox_boxes(there.reshape(5, 10, 4), (scale, *pad))
  np.testing.assert_allclose(back3.reshape(-1, 4), boxes, atol=1e-4 * max(h, w))


# --------------------------------------------------------------------------------------------------
# Flips, HSV, mixup, box_candidates.


def test_flips_by_hand():
  image, boxes, classes = draw_scene(40, 50, [(5, 10, 20, 15, 0)])
  flipped, fb = T.flip_lr(image, boxes)
  np.testing.assert_array_equal(fb, [[30, 10, 45, 15]])  # x → 50 - x
  assert_boxes_on_pixels(flipped, fb, classes, tol=0)
  flipped, fb = T.flip_ud(image, boxes)
  np.testing.assert_array_equal(fb, [[5, 25, 20, 30]])  # y → 40 - y
  assert_boxes_on_pixels(flipped, fb, classes, tol=0)


def test_hsv_value_gain_matches_formula():
  image = np.full((8, 8, 3), 100, np.uint8)  # grey: S = 0, V = 100
  out = T.augment_hsv(image, np.random.default_rng(7), hgain=0.0, sgain=0.0, vgain=0.4)
  gains = np.random.default_rng(7).uniform(-1, 1, 3) * np.array([0.0, 0.0, 0.4]) + 1
  expected = int(np.clip(100 * gains[2], 0, 255))
  assert gains[2] != 1.0
  np.testing.assert_array_equal(out, np.full((8, 8, 3), expected, np.uint8))


def test_hsv_is_pointwise_and_off_when_gains_zero():
  image, boxes, classes = draw_scene(32, 32, [(4, 4, 12, 20, 0), (18, 6, 30, 28, 1)])
  assert T.augment_hsv(image, np.random.default_rng(0), hgain=0, sgain=0, vgain=0) is image
  out = T.augment_hsv(image, np.random.default_rng(0), hgain=0.015, sgain=0.7, vgain=0.4)
  drawn = image.any(-1)
  assert not out[~drawn].any()           # black stays black (V = 0 whatever the gain)
  assert out[drawn].any(-1).all()       # and the rectangles keep some colour where they were


def test_mixup_ratio_from_beta():
  a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 200, np.uint8)
  image, boxes, classes = T.mixup(a, [[0, 0, 1, 1]], [3], b, [[1, 1, 2, 2], [0, 0, 4, 4]], [1, 2],
                                  np.random.default_rng(5))
  ratio = np.random.default_rng(5).beta(32.0, 32.0)
  np.testing.assert_array_equal(image, np.full((4, 4, 3), round(200 * (1 - ratio)), np.uint8))
  np.testing.assert_array_equal(boxes, [[0, 0, 1, 1], [1, 1, 2, 2], [0, 0, 4, 4]])
  np.testing.assert_array_equal(classes, [3, 1, 2])


def test_box_candidates_thresholds():
  before = np.array([[0, 0, 10, 10]] * 5, np.float32)
  after = np.array([
      [0, 0, 4, 3],      # area 12/100 > 0.1, wh > 2, aspect 1.33 → kept
      [0, 0, 10, 1.5],   # height 1.5 ≤ 2 → dropped
      [0, 0, 3, 3],      # area 9/100 < 0.1 → dropped
      [0, 0, 100, 4],    # aspect 25 ≥ 20 → dropped
      [0, 0, 60, 4],     # aspect 15 → kept
  ], np.float32)
  np.testing.assert_array_equal(T.box_candidates(before, after), [True, False, False, False, True])


def test_aug_params_rejects_bad_values():
  with pytest.raises(ValueError, match='missing'):
    T.aug_params({'mosaic': 1.0})
  with pytest.raises(ValueError, match='fliplr'):
    T.aug_params(dict(NO_AUG, fliplr=1.5))


# --------------------------------------------------------------------------------------------------
# Geometric augmentations.


def test_identity_perspective_leaves_image_and_boxes():
  image, boxes, classes = draw_scene(48, 48, [(5, 5, 20, 30, 0)])
  out, ob, oc = T.random_perspective(image, boxes, classes, np.random.default_rng(0), degrees=0,
                                     translate=0, scale=0, shear=0, perspective=0)
  # translate 0 puts the centre back where it was and scale/rotation are 1/0: M is the identity.
  np.testing.assert_array_equal(out, image)
  np.testing.assert_allclose(ob, boxes)
  np.testing.assert_array_equal(oc, classes)


def test_pure_translation_by_hand():
  image, boxes, classes = draw_scene(40, 40, [(10, 10, 20, 25, 3)])
  rng = np.random.default_rng(11)
  out, ob, _ = T.random_perspective(image, boxes, classes, rng, degrees=0, translate=0.1, scale=0,
                                    shear=0, perspective=0)
  # Replay the draws: perspective ×2, angle, scale, shear ×2, then the two translations.
  replay = np.random.default_rng(11)
  replay.uniform(size=6)
  tx = replay.uniform(0.4, 0.6) * 40 - 20
  ty = replay.uniform(0.4, 0.6) * 40 - 20
  np.testing.assert_allclose(ob[0], [10 + tx, 10 + ty, 20 + tx, 25 + ty], atol=1e-4)
  assert_boxes_on_pixels(out, ob, [3], tol=1.0)


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('strength', [
    dict(degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0),     # yolov5 default
    dict(degrees=15.0, translate=0.2, scale=0.5, shear=8.0, perspective=0.0),
    dict(degrees=10.0, translate=0.1, scale=0.3, shear=3.0, perspective=0.0008),
])
def test_random_perspective_boxes_follow_pixels(seed, strength):
  image, boxes, classes = draw_scene(
      80, 96, [(8, 10, 30, 40, 0), (40, 12, 70, 30, 1), (20, 50, 60, 74, 2), (75, 45, 90, 78, 3)])
  out, ob, oc = T.random_perspective(image, boxes, classes, np.random.default_rng(seed), **strength)
  assert out.shape == image.shape
  assert len(ob) >= 1
  assert_boxes_on_pixels(out, ob, oc, tol=1.5)


def mosaic_records():
  records = []
  for i, (h, w) in enumerate([(60, 80), (90, 50), (64, 64), (50, 100)]):
    # Rectangles stay 10 % away from the image border so tiles never make two regions touch.
    x1, y1 = int(0.15 * w), int(0.2 * h)
    image, boxes, classes = draw_scene(h, w, [(x1, y1, int(0.8 * w), int(0.85 * h), i)])
    records.append({'image': image, 'boxes': boxes, 'classes': classes, 'image_id': f'r{i}'})
  return records


@pytest.mark.parametrize('seed', range(4))
def test_mosaic_canvas_boxes_follow_pixels(seed):
  records = mosaic_records()
  canvas, boxes, classes = T.mosaic_canvas(records, 64, np.random.default_rng(seed))
  assert canvas.shape == (128, 128, 3)
  assert np.all(boxes >= 0) and np.all(boxes <= 128)
  # Tiles are only cut by the canvas edge, so every rectangle is there and boxes are exact up to
  # the bilinear resize.
  assert_boxes_on_pixels(canvas, boxes, classes, tol=1.0, expect_all_rects=4)


@pytest.mark.parametrize('seed', range(6))
def test_mosaic_with_affine_boxes_follow_pixels(seed):
  aug = T.aug_params(dict(NO_AUG, mosaic=1.0, translate=0.1, scale=0.5, degrees=5.0))
  image, boxes, classes = T.mosaic(mosaic_records(), 64, np.random.default_rng(seed), aug)
  assert image.shape == (64, 64, 3)
  assert len(boxes) >= 1
  # Two resamplings (tile resize, then the warp): measured worst case 1.6 px over 200 seeds.
  assert_boxes_on_pixels(image, boxes, classes, tol=2.0)


def test_mosaic_centre_range():
  # yolov5 draws the centre in [S/2, 3S/2): the top-left tile's corner is there on the canvas.
  record = {'image': np.zeros((64, 64, 3), np.uint8), 'boxes': np.array([[0, 0, 64, 64]], np.float32),
            'classes': np.array([0], np.int32)}
  for seed in range(20):
    _, boxes, _ = T.mosaic_canvas([record] * 4, 64, np.random.default_rng(seed))
    xc, yc = boxes[0, 2], boxes[0, 3]  # the top-left tile ends at the centre
    assert 32 <= xc < 96 and 32 <= yc < 96
    replay = np.random.default_rng(seed)
    assert (yc, xc) == (int(replay.uniform(32, 96)), int(replay.uniform(32, 96)))


# --------------------------------------------------------------------------------------------------
# The whole training recipe.


def train_records():
  return [dict(r, index=i) for i, r in enumerate(mosaic_records())]


def run_train(seed, aug):
  records = train_records()
  rng = np.random.default_rng(seed)
  pick = lambda r: records[int(r.integers(len(records)))]
  return T.train_transform(records[seed % 4], 64, T.aug_params(aug), rng, pick)


@pytest.mark.parametrize('seed', range(8))
def test_train_transform_boxes_follow_pixels(seed):
  # Full geometric recipe (mosaic half the time, affine, both flips); HSV off because it recolours.
  aug = dict(NO_AUG, mosaic=0.5, translate=0.1, scale=0.5, degrees=5.0, fliplr=0.5, flipud=0.5)
  image, boxes, classes = run_train(seed, aug)
  assert image.shape == (64, 64, 3) and image.dtype == np.uint8
  assert boxes.dtype == np.float32 and classes.dtype == np.int32
  assert np.all(boxes >= 0) and np.all(boxes <= 64)
  assert_boxes_on_pixels(image, boxes, classes, tol=2.0)  # up to two resamplings, as above


def test_train_transform_is_deterministic_per_seed():
  aug = dict(NO_AUG, mosaic=1.0, translate=0.1, scale=0.5, fliplr=0.5, hsv_h=0.015, hsv_s=0.7,
             hsv_v=0.4, mixup=0.5)
  a, b, c = run_train(1, aug), run_train(1, aug), run_train(5, aug)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])


def test_train_transform_without_augmentation_is_letterbox():
  record = train_records()[1]
  image, boxes, classes = T.train_transform(record, 64, T.aug_params(NO_AUG),
                                            np.random.default_rng(0), lambda r: record)
  expected, scale, pad = T.letterbox(record['image'], 64, augment=True)
  np.testing.assert_array_equal(image, expected)
  np.testing.assert_allclose(boxes, T.letterbox_boxes(record['boxes'], scale, pad), atol=1e-4)


def test_cxcywh_round_trip():
  boxes = np.array([[1, 2, 5, 10], [0, 0, 64, 64]], np.float32)
  np.testing.assert_array_equal(T.xyxy_to_cxcywh(boxes), [[3, 6, 4, 8], [32, 32, 64, 64]])
  np.testing.assert_array_equal(T.cxcywh_to_xyxy(T.xyxy_to_cxcywh(boxes)), boxes)
  assert math.isclose(float(T.clip_boxes([[-3, 2, 70, 9]], 64, 64)[0, 2]), 64)
