"""Image and box transforms for detection: letterbox, mosaic, random affine/perspective, HSV, flips, mixup.

Everything is numpy + OpenCV and deterministic given a `np.random.Generator`: the same generator state
gives the same image and boxes. The geometry follows yolov5's dataloader (SPEC §4): `letterbox`,
`load_mosaic`, `random_perspective`, `box_candidates`, `augment_hsv`, `mixup`. Boxes are float32
(x1, y1, x2, y2) in pixels of the image they go with; classes are int32.

A *record* is the decoded dataset example the transforms work on:
  {'image': uint8 [H, W, 3] RGB, 'boxes': float32 [n, 4] xyxy pixels, 'classes': int32 [n],
   'image_id': str, ...}
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import cv2
import numpy as np

PAD_VALUE = 114  # yolov5's grey for letterbox borders and the areas an affine warp uncovers.

# yolov5 box_candidates thresholds: a box survives an augmentation when it stays wider and taller than
# 2 px, keeps more than 10 % of its (scale-adjusted) area and its aspect ratio stays under 20.
CANDIDATE_WH_THR = 2.0
CANDIDATE_AREA_THR = 0.1
CANDIDATE_AR_THR = 20.0

AUG_KEYS = ('mosaic', 'degrees', 'translate', 'scale', 'shear', 'perspective', 'fliplr', 'flipud',
            'hsv_h', 'hsv_s', 'hsv_v', 'mixup')


def _as_boxes(boxes) -> np.ndarray:
  return np.asarray(boxes, np.float32).reshape(-1, 4)


def aug_params(aug: Mapping) -> dict[str, float]:
  """The augmentation strengths as a plain dict (picklable for grain workers), every key checked."""
  missing = [k for k in AUG_KEYS if k not in aug]
  if missing:
    raise ValueError(f"config.data.aug is missing {missing}; expected keys {list(AUG_KEYS)}")
  params = {k: float(aug[k]) for k in AUG_KEYS}
  for k in ('mosaic', 'fliplr', 'flipud', 'mixup'):
    if not 0.0 <= params[k] <= 1.0:
      raise ValueError(f"config.data.aug.{k} is a probability, got {params[k]}")
  for k in AUG_KEYS:
    if params[k] < 0:
      raise ValueError(f"config.data.aug.{k} must be >= 0, got {params[k]}")
  return params


# ---------------------------------------------------------------------------------------------------
# Letterbox and its exact inverse.


def _interpolation(scale: float, augment: bool) -> int:
  # yolov5 load_image: area averaging when shrinking for evaluation (less aliasing), bilinear otherwise.
  return cv2.INTER_AREA if (scale < 1 and not augment) else cv2.INTER_LINEAR


def letterbox_geometry(height: int, width: int, size: int):
  """(scale, (new_w, new_h), (pad_x, pad_y)) of letterboxing a height×width image to size×size."""
  if height <= 0 or width <= 0:
    raise ValueError(f"letterbox got an empty image of size {height}x{width}")
  scale = min(size / height, size / width)
  new_w = min(size, max(1, int(round(width * scale))))
  new_h = min(size, max(1, int(round(height * scale))))
  # Integer pads (yolov5 rounds dw - 0.1 the same way) so that the image and the boxes move together.
  pad_x = int(round((size - new_w) / 2 - 0.1))
  pad_y = int(round((size - new_h) / 2 - 0.1))
  return float(scale), (new_w, new_h), (pad_x, pad_y)


def letterbox(image: np.ndarray, size: int, *, augment: bool = False):
  """Resizes `image` so its long side is `size` (aspect kept) and pads it centred to `size`×`size`.

  Returns (out uint8 [size, size, 3], scale, (pad_x, pad_y)); a point maps as
  xy_out = xy_in · scale + pad, with integer pads, so `unletterbox_boxes` inverts it exactly.
  """
  h, w = image.shape[:2]
  scale, (new_w, new_h), (pad_x, pad_y) = letterbox_geometry(h, w, size)
  if (new_w, new_h) != (w, h):
    image = cv2.resize(image, (new_w, new_h), interpolation=_interpolation(scale, augment))
  out = np.full((size, size, 3), PAD_VALUE, np.uint8)
  out[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = image
  return out, float(scale), (pad_x, pad_y)


def letterbox_boxes(boxes, scale: float, pad) -> np.ndarray:
  """xyxy boxes in the original image → xyxy boxes in the letterboxed image."""
  boxes = _as_boxes(boxes).astype(np.float64)
  offset = np.array([pad[0], pad[1], pad[0], pad[1]], np.float64)
  return (boxes * scale + offset).astype(np.float32)


def unletterbox_boxes(boxes, letterbox_params) -> np.ndarray:
  """xyxy boxes in the letterboxed image → the original image; `letterbox_params` = (scale, pad_x, pad_y).

  Works on any [..., 4] array (e.g. a batch of predictions) so evaluation can map detections back.
  """
  scale, pad_x, pad_y = (float(v) for v in letterbox_params)
  boxes = np.asarray(boxes, np.float64)
  offset = np.array([pad_x, pad_y, pad_x, pad_y], np.float64)
  return ((boxes - offset) / scale).astype(np.float32)


def resize_long_side(image: np.ndarray, size: int, *, augment: bool):
  """yolov5 load_image: resizes so the long side is `size`; returns (image, scale)."""
  h, w = image.shape[:2]
  scale = size / max(h, w)
  if scale != 1:
    new_w = max(1, int(round(w * scale)))
    new_h = max(1, int(round(h * scale)))
    image = cv2.resize(image, (new_w, new_h), interpolation=_interpolation(scale, augment))
  return image, scale


# ---------------------------------------------------------------------------------------------------
# Box format helpers.


def xyxy_to_cxcywh(boxes) -> np.ndarray:
  boxes = _as_boxes(boxes)
  return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                   boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=-1).astype(np.float32)


def cxcywh_to_xyxy(boxes) -> np.ndarray:
  boxes = _as_boxes(boxes)
  half = boxes[:, 2:] / 2
  return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=-1).astype(np.float32)


def clip_boxes(boxes, width: float, height: float) -> np.ndarray:
  boxes = _as_boxes(boxes).copy()
  boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
  boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
  return boxes


# ---------------------------------------------------------------------------------------------------
# Random affine / perspective (yolov5 random_perspective).


def box_candidates(before, after, *, wh_thr: float = CANDIDATE_WH_THR, ar_thr: float = CANDIDATE_AR_THR,
                   area_thr: float = CANDIDATE_AREA_THR, eps: float = 1e-16) -> np.ndarray:
  """Which boxes survive an augmentation: bool [n]. `before` is already multiplied by the warp scale."""
  before, after = _as_boxes(before), _as_boxes(after)
  w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
  w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
  aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
  return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def perspective_matrix(rng: np.random.Generator, in_hw, out_hw, *, degrees: float, translate: float,
                       scale: float, shear: float, perspective: float) -> tuple[np.ndarray, float]:
  """The random 3×3 warp of yolov5 random_perspective and its scale factor s.

  M = T · S · R · P · C: centre the input at the origin (C), perspective (P), rotation + scale (R),
  shear (S), then translate the centre to a random point around the middle of the output (T).
  The draws happen in this fixed order so results are reproducible.
  """
  in_h, in_w = in_hw
  out_h, out_w = out_hw
  centre = np.eye(3)
  centre[0, 2] = -in_w / 2
  centre[1, 2] = -in_h / 2

  persp = np.eye(3)
  persp[2, 0] = rng.uniform(-perspective, perspective)  # x perspective (about y)
  persp[2, 1] = rng.uniform(-perspective, perspective)  # y perspective (about x)

  # Same convention as cv2.getRotationMatrix2D(center=(0, 0), angle=a, scale=s): positive a turns
  # the image counter-clockwise on screen (y points down).
  angle = rng.uniform(-degrees, degrees)
  s = rng.uniform(1 - scale, 1 + scale)
  cos_a, sin_a = math.cos(math.radians(angle)) * s, math.sin(math.radians(angle)) * s
  rotate = np.array([[cos_a, sin_a, 0.0], [-sin_a, cos_a, 0.0], [0.0, 0.0, 1.0]])

  shear_m = np.eye(3)
  shear_m[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))  # x shear (deg)
  shear_m[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))  # y shear (deg)

  shift = np.eye(3)
  shift[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_w
  shift[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_h
  return shift @ shear_m @ rotate @ persp @ centre, s


def warp_corners(boxes, matrix: np.ndarray, *, perspective: bool) -> np.ndarray:
  """The four corners of each box after the warp, in order around the box: float64 [n, 4, 2]."""
  boxes = _as_boxes(boxes).astype(np.float64)
  n = len(boxes)
  corners = np.ones((n * 4, 3))
  corners[:, :2] = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(n * 4, 2)  # x1y1 x2y1 x2y2 x1y2
  corners = corners @ matrix.T
  xy = corners[:, :2] / corners[:, 2:3] if perspective else corners[:, :2]
  return xy.reshape(n, 4, 2)


def _clip_polygon(points: np.ndarray, width: float, height: float) -> np.ndarray:
  """Sutherland–Hodgman: the part of a convex polygon [k, 2] inside [0, width] × [0, height]."""
  for axis, limit, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False),
                                  (1, height, True)):
    if len(points) == 0:
      break
    inside = points[:, axis] <= limit if keep_below else points[:, axis] >= limit
    clipped = []
    for i in range(len(points)):
      cur, nxt = points[i], points[(i + 1) % len(points)]
      if inside[i]:
        clipped.append(cur)
      if inside[i] != inside[(i + 1) % len(points)]:  # the edge crosses the limit: add the crossing
        t = (limit - cur[axis]) / (nxt[axis] - cur[axis])
        clipped.append(cur + t * (nxt - cur))
    points = np.array(clipped).reshape(-1, 2)
  return points


def warp_boxes(boxes, matrix: np.ndarray, *, perspective: bool, width: float, height: float
               ) -> np.ndarray:
  """The axis-aligned box around the visible part of each warped box (xyxy, inside the output).

  yolov5 takes the box around the four warped corners and then clips that box to the image. When the
  warp rotates or shears and a box leaves the image, that is larger than what is still visible, so
  here the warped quadrilateral itself is clipped first (identical to yolov5 for scale/translate
  only, the default recipe). A box with nothing left inside becomes an empty box at the border.
  """
  n = len(_as_boxes(boxes))
  if n == 0:
    return np.zeros((0, 4), np.float32)
  quads = warp_corners(boxes, matrix, perspective=perspective)
  out = np.stack([quads[..., 0].min(1), quads[..., 1].min(1), quads[..., 0].max(1),
                  quads[..., 1].max(1)], axis=1)
  axis_aligned = matrix[0, 1] == 0 and matrix[1, 0] == 0 and matrix[2, 0] == 0 and matrix[2, 1] == 0
  if not axis_aligned:
    cut = (out[:, 0] < 0) | (out[:, 1] < 0) | (out[:, 2] > width) | (out[:, 3] > height)
    for i in np.flatnonzero(cut):
      visible = _clip_polygon(quads[i], width, height)
      if len(visible):
        out[i] = [*visible.min(0), *visible.max(0)]
      else:
        out[i] = 0.0
  return clip_boxes(out, width, height)


def random_perspective(image: np.ndarray, boxes, classes, rng: np.random.Generator, *,
                       degrees: float = 0.0, translate: float = 0.1, scale: float = 0.5,
                       shear: float = 0.0, perspective: float = 0.0, border=(0, 0)):
  """yolov5 random_perspective: warps the image and its boxes; drops boxes that no longer qualify.

  `border` = (y, x) pixels added on each side of the output (negative crops: the mosaic passes
  (-S/2, -S/2) to turn its 2S canvas into S). Returns (image, boxes, classes).
  """
  boxes, classes = _as_boxes(boxes), np.asarray(classes, np.int32).reshape(-1)
  in_h, in_w = image.shape[:2]
  out_h, out_w = in_h + 2 * border[0], in_w + 2 * border[1]
  matrix, s = perspective_matrix(rng, (in_h, in_w), (out_h, out_w), degrees=degrees,
                                 translate=translate, scale=scale, shear=shear, perspective=perspective)
  if border[0] != 0 or border[1] != 0 or not np.array_equal(matrix, np.eye(3)):
    fill = (PAD_VALUE,) * 3
    # Boxes use continuous coordinates (pixel j spans [j, j+1)); OpenCV's warps map pixel indices
    # (pixel j sits at j). Conjugating by a half-pixel shift makes the image move exactly like the
    # boxes instead of up to half a pixel off (yolov5 leaves that offset in).
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    pixel_matrix = np.linalg.inv(half) @ matrix @ half
    if perspective:
      image = cv2.warpPerspective(image, pixel_matrix, dsize=(out_w, out_h), borderValue=fill)
    else:
      image = cv2.warpAffine(image, pixel_matrix[:2], dsize=(out_w, out_h), borderValue=fill)
  if len(boxes):
    warped = warp_boxes(boxes, matrix, perspective=bool(perspective), width=out_w, height=out_h)
    keep = box_candidates(boxes * s, warped)
    boxes, classes = warped[keep], classes[keep]
  return image, boxes, classes


# ---------------------------------------------------------------------------------------------------
# Mosaic (yolov5 load_mosaic), mixup.


def mosaic_canvas(records, size: int, rng: np.random.Generator):
  """Places four records' images on a 2S×2S grey canvas around a random centre.

  Each image is first resized so its long side is S; image 0 goes top-left of the centre, then
  top-right, bottom-left, bottom-right, each cropped where it would leave the canvas. Boxes follow
  their image and are clipped to the canvas. Returns (canvas uint8 [2S, 2S, 3], boxes, classes).
  """
  if len(records) != 4:
    raise ValueError(f"mosaic needs 4 records, got {len(records)}")
  # yolov5 draws the centre in [S/2, 3S/2) (mosaic_border = -S/2) so every tile is at least partly in.
  yc = int(rng.uniform(size / 2, 2 * size - size / 2))
  xc = int(rng.uniform(size / 2, 2 * size - size / 2))
  canvas = np.full((2 * size, 2 * size, 3), PAD_VALUE, np.uint8)
  all_boxes, all_classes = [], []
  for i, record in enumerate(records):
    image, s = resize_long_side(record['image'], size, augment=True)
    h, w = image.shape[:2]
    if i == 0:    # top left: the image's bottom-right corner sits on the centre
      xa1, ya1, xa2, ya2 = max(xc - w, 0), max(yc - h, 0), xc, yc
      xb1, yb1, xb2, yb2 = w - (xa2 - xa1), h - (ya2 - ya1), w, h
    elif i == 1:  # top right
      xa1, ya1, xa2, ya2 = xc, max(yc - h, 0), min(xc + w, 2 * size), yc
      xb1, yb1, xb2, yb2 = 0, h - (ya2 - ya1), min(w, xa2 - xa1), h
    elif i == 2:  # bottom left
      xa1, ya1, xa2, ya2 = max(xc - w, 0), yc, xc, min(2 * size, yc + h)
      xb1, yb1, xb2, yb2 = w - (xa2 - xa1), 0, w, min(ya2 - ya1, h)
    else:         # bottom right
      xa1, ya1, xa2, ya2 = xc, yc, min(xc + w, 2 * size), min(2 * size, yc + h)
      xb1, yb1, xb2, yb2 = 0, 0, min(w, xa2 - xa1), min(ya2 - ya1, h)
    canvas[ya1:ya2, xa1:xa2] = image[yb1:yb2, xb1:xb2]
    # A point at (x, y) of the resized image lands at (x + shift_x, y + shift_y) on the canvas.
    shift_x, shift_y = xa1 - xb1, ya1 - yb1
    boxes = _as_boxes(record['boxes']) * s + np.array([shift_x, shift_y, shift_x, shift_y], np.float32)
    all_boxes.append(boxes)
    all_classes.append(np.asarray(record['classes'], np.int32).reshape(-1))
  boxes = clip_boxes(np.concatenate(all_boxes), 2 * size, 2 * size)
  return canvas, boxes, np.concatenate(all_classes)


def mosaic(records, size: int, rng: np.random.Generator, aug: Mapping):
  """yolov5 load_mosaic: 4-image canvas, then a random affine that crops it back to S×S."""
  canvas, boxes, classes = mosaic_canvas(records, size, rng)
  return random_perspective(canvas, boxes, classes, rng, degrees=aug['degrees'],
                            translate=aug['translate'], scale=aug['scale'], shear=aug['shear'],
                            perspective=aug['perspective'], border=(-size // 2, -size // 2))


def mixup(image_a, boxes_a, classes_a, image_b, boxes_b, classes_b, rng: np.random.Generator):
  """yolov5 mixup: blend with ratio r ~ Beta(32, 32) (≈ 0.5) and keep both images' boxes."""
  ratio = rng.beta(32.0, 32.0)
  image = (image_a.astype(np.float32) * ratio + image_b.astype(np.float32) * (1 - ratio))
  image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  boxes = np.concatenate([_as_boxes(boxes_a), _as_boxes(boxes_b)])
  classes = np.concatenate([np.asarray(classes_a, np.int32).reshape(-1),
                            np.asarray(classes_b, np.int32).reshape(-1)])
  return image, boxes, classes


# ---------------------------------------------------------------------------------------------------
# Photometric and flips.


def augment_hsv(image: np.ndarray, rng: np.random.Generator, *, hgain: float = 0.5, sgain: float = 0.5,
                vgain: float = 0.5) -> np.ndarray:
  """yolov5 augment_hsv on an RGB image: random gains per channel of OpenCV's 8-bit HSV, via LUTs.

  Hue (0..179 in OpenCV) is multiplied and wrapped mod 180, saturation and value multiplied and clipped.
  """
  if not (hgain or sgain or vgain):
    return image
  gains = rng.uniform(-1, 1, 3) * np.array([hgain, sgain, vgain]) + 1
  hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
  x = np.arange(0, 256, dtype=np.float64)
  lut_hue = ((x * gains[0]) % 180).astype(np.uint8)
  lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
  lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
  hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
  return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flip_lr(image: np.ndarray, boxes):
  """Mirror left-right: pixel column j → W-1-j, coordinate x → W - x."""
  width = image.shape[1]
  boxes = _as_boxes(boxes).copy()
  boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
  return np.ascontiguousarray(image[:, ::-1]), boxes


def flip_ud(image: np.ndarray, boxes):
  """Mirror top-bottom: pixel row i → H-1-i, coordinate y → H - y."""
  height = image.shape[0]
  boxes = _as_boxes(boxes).copy()
  boxes[:, [1, 3]] = height - boxes[:, [3, 1]]
  return np.ascontiguousarray(image[::-1]), boxes


# ---------------------------------------------------------------------------------------------------
# Whole recipes.


def eval_transform(record: Mapping, size: int):
  """Letterbox only. Returns (image [S, S, 3], boxes xyxy, classes, (scale, pad_x, pad_y))."""
  image, scale, pad = letterbox(record['image'], size, augment=False)
  boxes = letterbox_boxes(record['boxes'], scale, pad)
  classes = np.asarray(record['classes'], np.int32).reshape(-1)
  return image, boxes, classes, (scale, float(pad[0]), float(pad[1]))


def train_transform(record: Mapping, size: int, aug: Mapping, rng: np.random.Generator,
                    random_record: Callable[[np.random.Generator], Mapping]):
  """yolov5 training augmentation of one record. Returns (image [S, S, 3], boxes xyxy, classes).

  With probability aug['mosaic']: mosaic of this record and three drawn by `random_record(rng)`
  (then, with probability aug['mixup'], blended with a second mosaic). Otherwise: letterbox and a
  random affine on the single image. Then HSV jitter, vertical and horizontal flips.
  """
  if rng.random() < aug['mosaic']:
    records = [record] + [random_record(rng) for _ in range(3)]
    image, boxes, classes = mosaic(records, size, rng, aug)
    if rng.random() < aug['mixup']:
      other = [random_record(rng) for _ in range(4)]
      image_b, boxes_b, classes_b = mosaic(other, size, rng, aug)
      image, boxes, classes = mixup(image, boxes, classes, image_b, boxes_b, classes_b, rng)
  else:
    image, scale, pad = letterbox(record['image'], size, augment=True)
    boxes = letterbox_boxes(record['boxes'], scale, pad)
    classes = np.asarray(record['classes'], np.int32).reshape(-1)
    image, boxes, classes = random_perspective(
        image, boxes, classes, rng, degrees=aug['degrees'], translate=aug['translate'],
        scale=aug['scale'], shear=aug['shear'], perspective=aug['perspective'])
  image = augment_hsv(image, rng, hgain=aug['hsv_h'], sgain=aug['hsv_s'], vgain=aug['hsv_v'])
  if rng.random() < aug['flipud']:
    image, boxes = flip_ud(image, boxes)
  if rng.random() < aug['fliplr']:
    image, boxes = flip_lr(image, boxes)
  return image, _as_boxes(boxes), np.asarray(classes, np.int32).reshape(-1)
