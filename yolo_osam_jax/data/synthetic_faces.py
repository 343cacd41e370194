"""The embedded dataset: procedurally drawn faces whose geometry encodes the seven basic expressions.

Nothing is downloaded. Each face is drawn with OpenCV primitives in a canonical frame (head ellipse,
eyes, brows, mouth, optional nose / hair / glasses), scaled, rotated and pasted into a cluttered scene.
What tells the classes apart is the face geometry a human reads an expression from:

  class      brows                      eyes              mouth
  Surprise   high, arched               wide open         round open "O"
  Fear       raised, inner ends up      wide open         wide open, teeth, corners down
  Disgust    lowered, inner ends down   narrowed          one-sided sneer, nose wrinkles
  Happiness  relaxed                    smiling crescents corners up (smile), sometimes open
  Sadness    inner ends up              half closed       corners down (frown)
  Anger      low, V-shaped              narrowed          pressed, thick, slightly down
  Neutral    straight                   normal            short straight line

Each face's expression strength and every geometric parameter are jittered, so classes are learnable
but not trivially separable. A face's box is the tight box of the pixels it covers (head and hair),
in pixel-edge coordinates: a face covering columns 10..29 has x_min 10, x_max 30. Occluders and other
faces may hide part of a face; its box keeps the full extent, as annotators draw it.

Scenes are deterministic: `scene_rng(seed, split, index)` seeds the generator of scene `index`, so
any scene can be re-rendered without building the dataset (`render_scene`).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import tensorflow_datasets as tfds

from yolo_osam_jax.data import common

# RAF-DB basic order (SPEC §6), 0-based.
CLASS_NAMES = ('Surprise', 'Fear', 'Disgust', 'Happiness', 'Sadness', 'Anger', 'Neutral')

# Geometry per class at full strength; lengths in units of the head's half-width.
#   brow_height: gap brow–eye relative to neutral; brow_inner: inner end raised (+) / lowered (−);
#   brow_arch: middle raised; eye_open: eye height relative to neutral; mouth_lift: corners raised;
#   mouth_open: opening height; mouth_width: half-width of the mouth.
EXPRESSIONS = {
    'Surprise': dict(brow_height=1.6, brow_inner=0.0, brow_arch=0.12, eye_open=1.9,
                     mouth='o', mouth_lift=0.0, mouth_open=0.24, mouth_width=0.16),
    'Fear': dict(brow_height=1.35, brow_inner=0.14, brow_arch=-0.02, eye_open=1.7,
                 mouth='open', mouth_lift=-0.08, mouth_open=0.13, mouth_width=0.40),
    'Disgust': dict(brow_height=0.75, brow_inner=-0.08, brow_arch=0.0, eye_open=0.5,
                    mouth='sneer', mouth_lift=0.16, mouth_open=0.0, mouth_width=0.32),
    'Happiness': dict(brow_height=1.05, brow_inner=0.0, brow_arch=0.05, eye_open=0.55,
                      mouth='smile', mouth_lift=0.24, mouth_open=0.0, mouth_width=0.42),
    'Sadness': dict(brow_height=1.1, brow_inner=0.17, brow_arch=-0.03, eye_open=0.65,
                    mouth='line', mouth_lift=-0.2, mouth_open=0.0, mouth_width=0.30),
    'Anger': dict(brow_height=0.68, brow_inner=-0.2, brow_arch=0.0, eye_open=0.6,
                  mouth='pressed', mouth_lift=-0.05, mouth_open=0.0, mouth_width=0.26),
    'Neutral': dict(brow_height=1.0, brow_inner=0.0, brow_arch=0.02, eye_open=1.0,
                    mouth='line', mouth_lift=0.0, mouth_open=0.0, mouth_width=0.30),
}
_NUMERIC = ('brow_height', 'brow_inner', 'brow_arch', 'eye_open', 'mouth_lift', 'mouth_open',
            'mouth_width')

SKIN_TONES = ((255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
              (92, 56, 30), (255, 205, 148), (234, 192, 134), (176, 120, 90))
HAIR_COLOURS = ((20, 15, 10), (60, 40, 25), (110, 75, 40), (200, 170, 110), (150, 60, 30),
                (160, 160, 160), (35, 30, 30))
IRIS_COLOURS = ((70, 45, 25), (60, 100, 160), (70, 120, 70), (30, 25, 20))
EYE_WHITE = (245, 245, 240)
PUPIL = (10, 10, 10)
MOUTH_INSIDE = (70, 20, 30)
TEETH = (250, 250, 245)
LIPS = (150, 50, 60)

# Canonical drawing scale: the head's half-width in pixels (faces are drawn large, then resized).
_HALF_WIDTH = 60


@dataclasses.dataclass(frozen=True)
class FaceParams:
  """Everything needed to draw one face in the canonical frame."""
  label: int
  aspect: float = 1.25                # head half-height / half-width
  skin: tuple = (224, 172, 105)
  brow_colour: tuple = (40, 30, 20)
  iris: tuple = (70, 45, 25)
  hair: tuple | None = None           # colour, or None for no hair
  nose: bool = True
  glasses: tuple | None = None        # colour, or None
  brow_height: float = 1.0
  brow_inner: float = 0.0
  brow_arch: float = 0.02
  eye_open: float = 1.0
  mouth: str = 'line'
  mouth_lift: float = 0.0
  mouth_open: float = 0.0
  mouth_width: float = 0.30
  smile_open: bool = False            # Happiness: open smile showing teeth
  sneer_side: int = 1                 # Disgust: +1 raises the right corner, −1 the left
  shade: tuple = (0.0, 0.0)           # lighting across the face: (strength, direction radians)


def face_params(label: int, rng: np.random.Generator | None = None, *, intensity: float = 1.0,
                jitter: float = 0.0, hair_prob: float = 0.0, glasses_prob: float = 0.0,
                nose_prob: float = 1.0) -> FaceParams:
  """Parameters of a face showing class `label` at strength `intensity` (0 = neutral, 1 = full).

  Without `rng` the face is the canonical one (fixed colours, no jitter).
  """
  name = CLASS_NAMES[label]
  neutral, target = EXPRESSIONS['Neutral'], EXPRESSIONS[name]
  values = {k: neutral[k] + intensity * (target[k] - neutral[k]) for k in _NUMERIC}
  if rng is None:
    return FaceParams(label=label, mouth=target['mouth'], **values)
  for k in _NUMERIC:
    values[k] += rng.normal(0.0, jitter) * (0.5 if k in ('brow_height', 'eye_open') else 0.25)
  values['eye_open'] = max(values['eye_open'], 0.25)
  values['brow_height'] = max(values['brow_height'], 0.45)
  values['mouth_width'] = max(values['mouth_width'], 0.12)
  values['mouth_open'] = max(values['mouth_open'], 0.0)
  skin = np.clip(np.array(SKIN_TONES[rng.integers(len(SKIN_TONES))]) + rng.normal(0, 8, 3), 0, 255)
  hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] if rng.random() < hair_prob else None
  # Brows are hair-coloured when there is hair, else dark; always darker than the skin.
  brow = np.array(hair if hair is not None else HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))])
  brow = np.minimum(brow, skin * 0.45)
  glasses = None
  if rng.random() < glasses_prob:
    glasses = tuple(int(v) for v in rng.integers(0, 90, 3))
  return FaceParams(
      label=label,
      aspect=float(rng.uniform(1.15, 1.35)),
      skin=tuple(int(v) for v in skin),
      brow_colour=tuple(int(v) for v in brow),
      iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
      hair=hair,
      nose=bool(rng.random() < nose_prob),
      glasses=glasses,
      mouth=target['mouth'],
      smile_open=bool(target['mouth'] == 'smile' and rng.random() < 0.5),
      sneer_side=int(rng.choice([-1, 1])),
      shade=(float(rng.uniform(0.0, 0.15)), float(rng.uniform(0, 2 * math.pi))),
      **{k: float(v) for k, v in values.items()},
  )


def _pts(points) -> np.ndarray:
  return np.round(np.asarray(points, np.float64)).astype(np.int32).reshape(-1, 1, 2)


def draw_face(params: FaceParams) -> tuple[np.ndarray, np.ndarray]:
  """The face in its canonical frame: (colour [H, W, 3] uint8 RGB, mask [H, W] bool of face pixels).

  Colour outside the mask is the skin colour, so resampling at the mask's edge never blends in black.
  """
  a = _HALF_WIDTH
  b = a * params.aspect
  width, height = int(round(2.5 * a)), int(round(2.5 * b))
  cx, cy = width / 2.0, height / 2.0 + 0.05 * b
  skin = tuple(int(v) for v in params.skin)
  colour = np.empty((height, width, 3), np.uint8)
  colour[:] = skin
  mask = np.zeros((height, width), np.uint8)
  centre = (int(round(cx)), int(round(cy)))
  aa = cv2.LINE_AA

  if params.hair is not None:
    # A cap a little larger than the head, above the ears, and a fringe kept above the brows.
    hair = tuple(int(v) for v in params.hair)
    cap = np.zeros_like(mask)
    cv2.ellipse(cap, centre, (int(1.1 * a), int(1.08 * b)), 0, 0, 360, 1, -1)
    cap[int(cy - 0.05 * b):] = 0
    colour[cap > 0] = hair
    mask |= cap
  head = np.zeros_like(mask)
  cv2.ellipse(head, centre, (int(a), int(b)), 0, 0, 360, 1, -1)
  colour[head > 0] = skin
  mask |= head
  if params.hair is not None:
    fringe = np.zeros_like(mask)
    cv2.ellipse(fringe, (centre[0], int(cy - 0.62 * b)), (int(0.92 * a), int(0.42 * b)), 0, 180, 360,
                1, -1)
    fringe &= head
    colour[fringe > 0] = hair

  eye_y = cy - 0.12 * b
  dark = tuple(int(v * 0.35) for v in skin)
  # Eyes.
  eye_w = 0.19 * a
  eye_h = 0.11 * a * params.eye_open
  for side in (-1, 1):
    ex = cx + side * 0.38 * a
    if params.mouth == 'smile':
      # Smiling eyes: closed upward arcs.
      cv2.ellipse(colour, (int(ex), int(eye_y + 0.04 * a)), (int(eye_w), max(int(eye_h), 3)), 0, 180,
                  360, PUPIL, max(2, int(0.05 * a)), aa)
      continue
    eh = max(eye_h, 1.5)
    cv2.ellipse(colour, (int(ex), int(eye_y)), (int(eye_w), int(round(eh))), 0, 0, 360, EYE_WHITE, -1, aa)
    iris_r = max(1, int(min(0.55 * eye_w, 0.95 * eh)))
    cv2.circle(colour, (int(ex), int(eye_y)), iris_r, tuple(int(v) for v in params.iris), -1, aa)
    cv2.circle(colour, (int(ex), int(eye_y)), max(1, int(0.45 * iris_r)), PUPIL, -1, aa)
    cv2.ellipse(colour, (int(ex), int(eye_y)), (int(eye_w), int(round(eh))), 0, 0, 360, PUPIL,
                max(1, int(0.03 * a)), aa)

  # Brows: a curve from the inner end (near the nose) to the outer end.
  brow_base = eye_y - 0.30 * a * params.brow_height
  thickness = max(2, int((0.10 if params.mouth == 'pressed' else 0.08) * a))
  for side in (-1, 1):
    t = np.linspace(0.0, 1.0, 9)
    xs = cx + side * (0.13 * a + t * 0.5 * a)
    ys = brow_base - params.brow_inner * a * (1 - t) - params.brow_arch * a * 4 * t * (1 - t)
    cv2.polylines(colour, [_pts(np.stack([xs, ys], -1))], False,
                  tuple(int(v) for v in params.brow_colour), thickness, aa)

  if params.nose:
    nose_colour = tuple(int(v * 0.72) for v in skin)
    tip_y = cy + 0.22 * b
    cv2.polylines(colour, [_pts([(cx + 0.02 * a, eye_y + 0.08 * b), (cx - 0.07 * a, tip_y),
                                 (cx + 0.08 * a, tip_y)])], False, nose_colour, max(2, int(0.04 * a)), aa)
  if params.mouth == 'sneer':
    # Disgust wrinkles across the nose bridge.
    for side in (-1, 1):
      cv2.line(colour, (int(cx + side * 0.05 * a), int(eye_y + 0.12 * b)),
               (int(cx + side * 0.2 * a), int(eye_y + 0.06 * b)), dark, max(1, int(0.03 * a)), aa)

  # Mouth, centred at mouth_y; y grows downwards, so a positive lift moves the corners up.
  mouth_y = cy + 0.5 * b
  mw = params.mouth_width * a
  xs = np.linspace(-1.0, 1.0, 21)
  line_thickness = max(2, int(0.05 * a))
  if params.mouth == 'o':
    cv2.ellipse(colour, (int(cx), int(mouth_y)), (int(mw), int(params.mouth_open * a)), 0, 0, 360,
                MOUTH_INSIDE, -1, aa)
    cv2.ellipse(colour, (int(cx), int(mouth_y)), (int(mw), int(params.mouth_open * a)), 0, 0, 360,
                LIPS, line_thickness, aa)
  elif params.mouth == 'open' or (params.mouth == 'smile' and params.smile_open):
    lift = params.mouth_lift * a
    opening = max(params.mouth_open, 0.12 if params.mouth == 'smile' else 0.0) * a
    upper = cy + 0.5 * b - lift * xs ** 2 - (0.0 if params.mouth == 'smile' else 0.3 * opening) * (1 - xs ** 2)
    lower = upper + opening * (1 - xs ** 2) * (1.6 if params.mouth == 'smile' else 1.0) + 0.3 * opening
    outline = np.concatenate([np.stack([cx + xs * mw, upper], -1),
                              np.stack([cx + xs[::-1] * mw, lower[::-1]], -1)])
    cv2.fillPoly(colour, [_pts(outline)], MOUTH_INSIDE, aa)
    teeth = np.concatenate([np.stack([cx + xs * mw * 0.85, upper + 1], -1),
                            np.stack([cx + xs[::-1] * mw * 0.85, upper[::-1] + 0.35 * opening], -1)])
    cv2.fillPoly(colour, [_pts(teeth)], TEETH, aa)
    cv2.polylines(colour, [_pts(outline)], True, LIPS, max(1, line_thickness // 2), aa)
  elif params.mouth == 'sneer':
    side = xs * params.sneer_side
    ys = mouth_y - params.mouth_lift * a * np.clip(side, 0, None) ** 1.5 + 0.035 * a * np.sin(3 * np.pi * xs)
    cv2.polylines(colour, [_pts(np.stack([cx + xs * mw, ys], -1))], False, LIPS, line_thickness, aa)
  else:  # line, smile (closed), pressed
    ys = mouth_y - params.mouth_lift * a * xs ** 2
    thick = max(3, int(0.09 * a)) if params.mouth == 'pressed' else line_thickness
    cv2.polylines(colour, [_pts(np.stack([cx + xs * mw, ys], -1))], False, LIPS, thick, aa)

  if params.glasses is not None:
    glass = tuple(int(v) for v in params.glasses)
    rim = max(2, int(0.04 * a))
    for side in (-1, 1):
      cv2.circle(colour, (int(cx + side * 0.38 * a), int(eye_y)), int(0.27 * a), glass, rim, aa)
      cv2.line(colour, (int(cx + side * 0.65 * a), int(eye_y)), (int(cx + side * 0.95 * a), int(eye_y - 0.05 * b)),
               glass, rim, aa)
    cv2.line(colour, (int(cx - 0.11 * a), int(eye_y)), (int(cx + 0.11 * a), int(eye_y)), glass, rim, aa)

  strength, direction = params.shade
  if strength > 0:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = ((xx - cx) * math.cos(direction) + (yy - cy) * math.sin(direction)) / b
    colour = np.clip(colour * (1.0 + strength * ramp)[..., None], 0, 255).astype(np.uint8)
  # Outside the face: skin colour (see docstring), then crop to the mask with a margin.
  colour[mask == 0] = skin
  ys_, xs_ = np.nonzero(mask)
  y0, y1, x0, x1 = max(ys_.min() - 2, 0), ys_.max() + 3, max(xs_.min() - 2, 0), xs_.max() + 3
  return colour[y0:y1, x0:x1], mask[y0:y1, x0:x1].astype(bool)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """How scenes are drawn. Fractions are of the image side; probabilities are per image or per face."""
  min_faces: int = 1
  max_faces: int = 4
  min_face_frac: float = 0.08       # face height range, before rotation
  max_face_frac: float = 0.9
  min_face_px: float = 8.0
  max_overlap: float = 0.15         # intersection / smaller face box, between faces
  rotation: float = 15.0            # degrees, uniform in ±rotation
  intensity: tuple = (0.7, 1.0)     # expression strength range
  jitter: float = 0.05              # geometry noise, in head half-widths
  hair_prob: float = 0.6
  glasses_prob: float = 0.15
  nose_prob: float = 0.8
  background: str = 'mixed'         # 'flat' (one colour) or 'mixed' (gradients, noise, patterns)
  clutter: tuple = (2, 8)           # range of background shapes
  distractors: float = 0.0          # expected number of featureless skin-coloured blobs
  occlusion_prob: float = 0.1       # per face
  occlusion_max: float = 0.3        # largest fraction of a face box covered
  lighting: float = 0.25            # strength of a lighting gradient across the image
  noise_std: float = 3.0            # pixel noise (max std, uint8 units)
  blur_prob: float = 0.15
  blur_sigma: float = 0.8
  jpeg_prob: float = 0.2
  jpeg_quality: tuple = (40, 95)


def _random_colour(rng) -> tuple:
  return tuple(int(v) for v in rng.integers(0, 256, 3))


def _background(rng, size: int, config: SceneConfig) -> np.ndarray:
  if config.background == 'flat':
    image = np.empty((size, size, 3), np.uint8)
    image[:] = _random_colour(rng)
    return image
  kind = rng.integers(4)
  if kind == 0:  # linear gradient between two colours
    c0, c1 = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip((xx * math.cos(angle) + yy * math.sin(angle) + 1) / 2, 0, 1)[..., None]
    image = c0 * (1 - t) + c1 * t
  elif kind == 1:  # smooth colour noise
    cells = int(rng.integers(2, 9))
    image = cv2.resize(rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
  elif kind == 2:  # stripes
    c0, c1 = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    period = rng.uniform(4, size / 2)
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t = (np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) > 0)[..., None]
    image = np.where(t, c0, c1)
  else:  # checkerboard
    c0, c1 = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    cell = int(rng.integers(4, max(5, size // 4)))
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.where((((yy // cell) + (xx // cell)) % 2 == 0)[..., None], c0, c1)
  image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
  return np.ascontiguousarray(image)


def _draw_shape(image, rng, size: int, colour=None, max_frac: float = 0.35) -> None:
  """One random clutter shape (rectangle, circle, polygon, line or text)."""
  colour = colour or _random_colour(rng)
  kind = rng.integers(5)
  s = max(3, int(rng.uniform(0.05, max_frac) * size))
  x, y = int(rng.integers(0, size)), int(rng.integers(0, size))
  if kind == 0:
    cv2.rectangle(image, (x, y), (x + s, y + int(s * rng.uniform(0.3, 1.5))), colour, -1)
  elif kind == 1:
    cv2.circle(image, (x, y), s // 2, colour, -1 if rng.random() < 0.6 else max(1, s // 8), cv2.LINE_AA)
  elif kind == 2:
    points = np.stack([x + rng.uniform(-s, s, 5), y + rng.uniform(-s, s, 5)], -1)
    cv2.fillPoly(image, [_pts(points)], colour, cv2.LINE_AA)
  elif kind == 3:
    cv2.line(image, (x, y), (int(rng.integers(0, size)), int(rng.integers(0, size))), colour,
             int(rng.integers(1, max(2, size // 40))), cv2.LINE_AA)
  else:
    text = ''.join(chr(c) for c in rng.integers(65, 91, int(rng.integers(2, 6))))
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, s / 40.0, colour, max(1, s // 25),
                cv2.LINE_AA)


def _place(rng, patch_h: int, patch_w: int, size: int, boxes: list, max_overlap: float,
           tries: int = 30):
  """Top-left corner for a patch inside the image overlapping earlier boxes little enough, or None."""
  for _ in range(tries):
    x0 = int(rng.integers(0, size - patch_w + 1))
    y0 = int(rng.integers(0, size - patch_h + 1))
    ok = True
    for bx0, by0, bx1, by1 in boxes:
      iw = min(x0 + patch_w, bx1) - max(x0, bx0)
      ih = min(y0 + patch_h, by1) - max(y0, by0)
      if iw > 0 and ih > 0:
        smaller = min(patch_w * patch_h, (bx1 - bx0) * (by1 - by0))
        if iw * ih > max_overlap * smaller:
          ok = False
          break
    if ok:
      return x0, y0
  return None


def _face_sprite(params: FaceParams, target_height: float, angle: float, mirror: bool):
  """The face scaled to `target_height` pixels (head height) and rotated: (colour, mask) patches."""
  colour, mask = draw_face(params)
  if mirror:
    colour, mask = colour[:, ::-1], mask[:, ::-1]
  scale = target_height / (2 * _HALF_WIDTH * params.aspect)
  h = max(2, int(round(colour.shape[0] * scale)))
  w = max(2, int(round(colour.shape[1] * scale)))
  # INTER_AREA averages when shrinking, so thin lines fade instead of vanishing.
  colour = cv2.resize(np.ascontiguousarray(colour), (w, h), interpolation=cv2.INTER_AREA)
  coverage = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
  # Rotate about the centre into a canvas large enough to hold every rotated corner.
  rad = math.radians(angle)
  out_w = int(math.ceil(abs(w * math.cos(rad)) + abs(h * math.sin(rad)))) + 2
  out_h = int(math.ceil(abs(w * math.sin(rad)) + abs(h * math.cos(rad)))) + 2
  matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
  matrix[0, 2] += out_w / 2.0 - w / 2.0
  matrix[1, 2] += out_h / 2.0 - h / 2.0
  skin = tuple(float(v) for v in params.skin)
  colour = cv2.warpAffine(colour, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=skin)
  coverage = cv2.warpAffine(coverage, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
  mask = coverage >= 0.5
  ys, xs = np.nonzero(mask)
  if len(ys) == 0:
    return None
  y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
  return colour[y0:y1, x0:x1], mask[y0:y1, x0:x1]


def _occlude(image, rng, box, max_fraction: float, skin=None) -> None:
  """Covers up to `max_fraction` of a face box from one side with a hand-like blob or an object."""
  x0, y0, x1, y1 = box
  w, h = x1 - x0, y1 - y0
  fraction = rng.uniform(0.1, max_fraction)
  side = rng.integers(4)
  if side == 0:
    rect = (x0 - 1, y0 - 1, x0 + int(w * fraction), y1 + 1)
  elif side == 1:
    rect = (x1 - int(w * fraction), y0 - 1, x1 + 1, y1 + 1)
  elif side == 2:
    rect = (x0 - 1, y1 - int(h * fraction), x1 + 1, y1 + 1)
  else:
    rect = (x0 - 1, y0 - 1, x1 + 1, y0 + int(h * fraction))
  colour = skin if (skin is not None and rng.random() < 0.4) else _random_colour(rng)
  if rng.random() < 0.5:
    cv2.rectangle(image, rect[:2], rect[2:], colour, -1)
  else:
    centre = ((rect[0] + rect[2]) // 2, (rect[1] + rect[3]) // 2)
    axes = (max(1, (rect[2] - rect[0]) // 2), max(1, (rect[3] - rect[1]) // 2))
    cv2.ellipse(image, centre, axes, 0, 0, 360, colour, -1, cv2.LINE_AA)


def _apply_effects(image: np.ndarray, rng, config: SceneConfig) -> np.ndarray:
  size = image.shape[0]
  result = image.astype(np.float32)
  if config.lighting > 0:
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    ramp = 1.0 + config.lighting * rng.uniform(0.3, 1.0) * 2 * (xx * math.cos(angle) + yy * math.sin(angle))
    brightness = rng.uniform(1 - config.lighting / 2, 1 + config.lighting / 2)
    result = result * ramp[..., None] * brightness
  if config.noise_std > 0:
    result = result + rng.normal(0, rng.uniform(0, config.noise_std), result.shape)
  result = np.clip(result, 0, 255).astype(np.uint8)
  if config.blur_prob > 0 and rng.random() < config.blur_prob:
    result = cv2.GaussianBlur(result, (0, 0), rng.uniform(0.3, config.blur_sigma))
  if config.jpeg_prob > 0 and rng.random() < config.jpeg_prob:
    quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    ok, encoded = cv2.imencode('.jpg', result[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    result = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
  return np.ascontiguousarray(result)


def render_scene(rng: np.random.Generator, size: int,
                 config: SceneConfig = SceneConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One scene: (image [size, size, 3] uint8 RGB, boxes [n, 4] float32 x_min y_min x_max y_max pixels,
  labels [n] int64 indices into CLASS_NAMES)."""
  image = _background(rng, size, config)
  for _ in range(int(rng.integers(config.clutter[0], config.clutter[1] + 1))):
    _draw_shape(image, rng, size)
  for _ in range(int(rng.poisson(config.distractors))):
    # Skin-coloured blobs without a face: the detector must look at features, not colour.
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))]
    centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
    axes = (int(rng.uniform(0.04, 0.2) * size), int(rng.uniform(0.04, 0.25) * size))
    cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, tone, -1, cv2.LINE_AA)

  num_faces = int(rng.integers(config.min_faces, config.max_faces + 1))
  low = max(config.min_face_frac * size, config.min_face_px)
  # More faces, smaller faces: the largest possible face shrinks so several can fit.
  high = max(low, config.max_face_frac * size / math.sqrt(num_faces))
  heights = sorted(np.exp(rng.uniform(math.log(low), math.log(high), num_faces)), reverse=True)
  boxes, labels, skins = [], [], []
  for target in heights:
    label = int(rng.integers(len(CLASS_NAMES)))
    params = face_params(label, rng, intensity=float(rng.uniform(*config.intensity)),
                         jitter=config.jitter, hair_prob=config.hair_prob,
                         glasses_prob=config.glasses_prob, nose_prob=config.nose_prob)
    angle = float(rng.uniform(-config.rotation, config.rotation))
    mirror = bool(rng.random() < 0.5)
    placed = None
    while placed is None and target >= low * 0.999:
      sprite = _face_sprite(params, target, angle, mirror)
      if sprite is not None and sprite[1].shape[0] <= size and sprite[1].shape[1] <= size:
        corner = _place(rng, sprite[1].shape[0], sprite[1].shape[1], size, boxes, config.max_overlap)
        if corner is not None:
          placed = sprite, corner
          break
      target *= 0.8
    if placed is None:
      if boxes:
        continue  # no room left: fewer faces in this scene
      raise RuntimeError(f'could not place a face of {low:.1f} px in a {size} px image')
    (colour, mask), (x0, y0) = placed
    h, w = mask.shape
    region = image[y0:y0 + h, x0:x0 + w]
    region[mask] = colour[mask]
    boxes.append((x0, y0, x0 + w, y0 + h))
    labels.append(label)
    skins.append(params.skin)

  for box, skin in zip(boxes, skins):
    if config.occlusion_prob > 0 and rng.random() < config.occlusion_prob:
      _occlude(image, rng, box, config.occlusion_max, skin)
  image = _apply_effects(image, rng, config)
  return (image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64))


SPLIT_IDS = {'train': 0, 'validation': 1, 'test': 2}


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator of scene `index` of `split`: scenes are independent of build order."""
  return np.random.default_rng([seed, SPLIT_IDS[split], index])


@dataclasses.dataclass(eq=False)
class SyntheticFacesConfig(tfds.core.BuilderConfig):
  image_size: int = 128
  num_train: int = 600
  num_validation: int = 100
  num_test: int = 100
  seed: int = 0
  encoding: str = 'png'            # 'png' keeps rendered pixels exactly; 'jpeg' (quality 95) is smaller
  scene: SceneConfig = SceneConfig()


DEMO_SCENE = SceneConfig(
    min_faces=1, max_faces=3, min_face_frac=0.25, max_face_frac=0.9, min_face_px=32.0,
    max_overlap=0.05, rotation=12.0, intensity=(0.85, 1.0), jitter=0.04,
    hair_prob=0.5, glasses_prob=0.1, nose_prob=0.8, background='mixed', clutter=(1, 5),
    distractors=0.0, occlusion_prob=0.05, occlusion_max=0.2, lighting=0.2, noise_std=3.0,
    blur_prob=0.1, blur_sigma=0.7, jpeg_prob=0.15, jpeg_quality=(60, 95))

HARD_SCENE = SceneConfig(
    min_faces=1, max_faces=4, min_face_frac=0.08, max_face_frac=0.9, min_face_px=8.0,
    max_overlap=0.25, rotation=30.0, intensity=(0.4, 1.0), jitter=0.08,
    hair_prob=0.7, glasses_prob=0.25, nose_prob=0.8, background='mixed', clutter=(4, 14),
    distractors=1.5, occlusion_prob=0.3, occlusion_max=0.4, lighting=0.45, noise_std=8.0,
    blur_prob=0.35, blur_sigma=1.5, jpeg_prob=0.5, jpeg_quality=(25, 90))


class SyntheticFaces(common.DetectionBuilder):
  """Procedurally drawn faces with the seven basic expressions (RAF-DB class order); no download."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  CLASS_NAMES = CLASS_NAMES
  DISABLE_SHUFFLING = True  # record i of a split is scene i: re-render it with scene_rng
  BUILDER_CONFIGS = [
      SyntheticFacesConfig(
          name='demo', description='1200/100/100 images at 128², 1–3 large, clearly drawn faces.',
          image_size=128, num_train=1200, num_validation=100, num_test=100, seed=0,
          encoding='png', scene=DEMO_SCENE),
      SyntheticFacesConfig(
          name='hard', description='6000/1000/1000 images at 256², 1–4 faces of 8–90 %, clutter, '
          'occlusion, skin-coloured distractors, strong lighting, blur and JPEG noise.',
          image_size=256, num_train=6000, num_validation=1000, num_test=1000, seed=1,
          encoding='jpeg', scene=HARD_SCENE),
  ]
  DEFAULT_CONFIG_NAME = 'demo'

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    config = self.builder_config
    return {
        'train': self._generate_examples('train', config.num_train),
        'validation': self._generate_examples('validation', config.num_validation),
        'test': self._generate_examples('test', config.num_test),
    }

  def _generate_examples(self, split: str, count: int):
    config = self.builder_config
    for index in range(count):
      image, boxes, labels = render_scene(scene_rng(config.seed, split, index), config.image_size,
                                          config.scene)
      image_id = f'{split}_{index:06d}'
      bbox, labels = common.boxes_to_bbox(
          boxes, labels, height=config.image_size, width=config.image_size,
          num_classes=len(CLASS_NAMES), where=image_id, report=self.report)
      if config.encoding == 'jpeg':
        ok, encoded = cv2.imencode('.jpg', image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
      else:
        ok, encoded = cv2.imencode('.png', image[..., ::-1])
      if not ok:
        raise RuntimeError(f'{image_id}: OpenCV failed to encode the scene')
      self.report.count_example(split)
      yield image_id, {
          'image': encoded.tobytes(),
          'image_id': image_id,
          'objects': {'bbox': bbox, 'label': labels},
      }
