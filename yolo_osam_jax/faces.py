"""What a checkpoint was trained on, and two-stage recognition: find faces, then name each crop's expression.

A detector trained on aligned single-face crops (RAF-DB `aligned*`, FER2013, CK+48) has only ever seen
images that *are* a face: its box is the whole image. Run on a photograph it has no reason to find the
faces in it. For such 'whole_crop' checkpoints `Recognizer` finds the faces first with OpenCV's bundled
Haar frontal-face cascade, cuts a square crop around each (the way the training crops were framed) and
runs the model on the batch of crops:

  rec = Recognizer.from_checkpoint('runs/rafdb/best', faces='haar')   # 'auto' picks it for whole-crop

The crop: a square of side `margin` × the longer side of the cascade box (margin 1.25 by default),
centred on the box, so the crop holds the whole face with some hair and chin as RAF-DB's aligned 100²
faces and FER2013's 48² faces do (the cascade's box is tight, brows to mouth). Parts of the square outside
the photo are filled with grey 114 (the letterbox colour). Each face's expression is the model's
highest-confidence detection on its crop (its class, confidence and class probabilities); a face whose
crop has no detection above the recognizer's confidence threshold is not reported, as in the one-stage
path. The face's box is the cascade's box in the original image.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

WHOLE_CROP = 'whole_crop'
FACE_BOXES = 'face_boxes'
UNKNOWN = 'unknown'
DEFAULT_MARGIN = 1.25
PAD_VALUE = 114

# (dataset, builder config) → box kind; builder config None = every config of the dataset.
_BOX_KINDS = {
    ('rafdb_basic', 'aligned'): WHOLE_CROP,
    ('rafdb_basic', 'aligned_random'): WHOLE_CROP,
    ('rafdb_basic', 'original'): FACE_BOXES,
    ('rafdb_basic', 'original_random'): FACE_BOXES,
    ('rafdb_compound', 'aligned'): WHOLE_CROP,
    ('rafdb_compound', 'aligned_random'): WHOLE_CROP,
    ('rafdb_compound', 'original'): FACE_BOXES,
    ('rafdb_compound', 'original_random'): FACE_BOXES,
    ('fer2013', None): WHOLE_CROP,
    ('ckplus', 'ck48'): WHOLE_CROP,
    ('ckplus', 'ck48_kfold'): WHOLE_CROP,
    ('ckplus', 'sequences'): FACE_BOXES,
    ('ckplus', 'sequences_kfold'): FACE_BOXES,
    ('ckplus', 'sequences_neutral'): FACE_BOXES,
    ('ckplus', 'sequences_no_contempt'): FACE_BOXES,
    ('yolo_folder', None): FACE_BOXES,
    ('synthetic_faces', None): FACE_BOXES,
}

SYNTHETIC_WARNING = ('{where} was trained on drawn faces (synthetic_faces); it will not recognise '
                     'expressions on photographs')


@dataclasses.dataclass(frozen=True)
class TrainingData:
  """What a checkpoint was trained on, from its saved config.data.

  box_kind: 'whole_crop' (aligned single-face crops; the box is the whole image), 'face_boxes' (face
    boxes inside larger images) or 'unknown' (a dataset or builder config not in the table, or none
    recorded).
  """
  dataset: str | None
  builder_config: str | None
  box_kind: str
  img_size: int | None

  @property
  def synthetic(self) -> bool:
    return self.dataset == 'synthetic_faces'


def box_kind_of(dataset: str | None, builder_config: str | None) -> str:
  """'whole_crop', 'face_boxes' or 'unknown' for a TFDS dataset name and builder config name."""
  if not dataset:
    return UNKNOWN
  # A versioned name ('rafdb_basic:1.0.0') or 'name/config' as tfds writes it.
  name = str(dataset).split(':')[0]
  if '/' in name and not builder_config:
    name, builder_config = name.split('/', 1)
  name = name.split('/')[0]
  for key in ((name, builder_config or None), (name, None)):
    if key in _BOX_KINDS:
      return _BOX_KINDS[key]
  return UNKNOWN


def training_data_of(config) -> TrainingData:
  """What the checkpoint config `config` (a ConfigDict or dict, as saved in best/ and last/) was trained on."""
  data = config.get('data', None) if hasattr(config, 'get') else None
  if data is None:
    return TrainingData(None, None, UNKNOWN, None)
  dataset = data.get('dataset', None) or None
  builder_config = data.get('builder_config', None) or None
  img_size = data.get('img_size', None)
  return TrainingData(None if dataset is None else str(dataset),
                      None if builder_config is None else str(builder_config),
                      box_kind_of(dataset, builder_config), None if img_size is None else int(img_size))


def synthetic_warning(training: TrainingData, where: str) -> str | None:
  """The one-line warning for a model trained on the drawn synthetic faces, else None."""
  return SYNTHETIC_WARNING.format(where=where) if training.synthetic else None


# ---------------------------------------------------------------------------------------------------
# Finding faces.

FaceFinder = Callable[[np.ndarray], Sequence[Sequence[float]]]  # RGB uint8 image → [(x1, y1, x2, y2)]


def _cascade(name: str) -> cv2.CascadeClassifier:
  path = os.path.join(cv2.data.haarcascades, name)
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise RuntimeError(f'cannot load the Haar cascade {path}; opencv-python(-headless) 4.x ships it')
  return cascade


def _iou(a, b) -> float:
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


class HaarFaceFinder:
  """Faces in an RGB image by OpenCV's bundled Haar cascades: frontal, and with profile=True also the
  profile cascade on the image and its mirror (for turned heads). Overlapping finds (IoU > 0.3) are merged
  keeping the larger box. Faces smaller than `min_size_fraction` of the short image side are ignored."""

  def __init__(self, profile: bool = False, min_size_fraction: float = 0.05, min_neighbors: int = 5,
               scale_factor: float = 1.1):
    self.frontal = _cascade('haarcascade_frontalface_default.xml')
    self.profile = _cascade('haarcascade_profileface.xml') if profile else None
    self.min_size_fraction, self.min_neighbors = float(min_size_fraction), int(min_neighbors)
    self.scale_factor = float(scale_factor)

  def _detect(self, cascade, grey, min_side):
    found = cascade.detectMultiScale(grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                     minSize=(min_side, min_side))
    return [(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h in np.reshape(found, (-1, 4))]

  def __call__(self, image_rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
    grey = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2GRAY))
    min_side = max(int(min(grey.shape) * self.min_size_fraction), 16)
    boxes = self._detect(self.frontal, grey, min_side)
    if self.profile is not None:
      boxes += self._detect(self.profile, grey, min_side)
      width = grey.shape[1]
      boxes += [(width - x2, y1, width - x1, y2)
                for x1, y1, x2, y2 in self._detect(self.profile, np.ascontiguousarray(grey[:, ::-1]),
                                                   min_side)]
    kept: list[tuple[float, float, float, float]] = []
    for box in sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True):
      if all(_iou(box, k) <= 0.3 for k in kept):
        kept.append(box)
    return sorted(kept, key=lambda b: (b[0], b[1]))


def face_finder(name: str | FaceFinder) -> FaceFinder:
  """A face finder by name ('haar', 'haar_profile') or the callable itself."""
  if callable(name):
    return name
  if name == 'haar':
    return HaarFaceFinder()
  if name == 'haar_profile':
    return HaarFaceFinder(profile=True)
  raise ValueError(f"faces: unknown face finder {name!r}; expected 'auto', 'model', 'haar' or "
                   "'haar_profile', or a callable image → boxes")


# ---------------------------------------------------------------------------------------------------
# Cropping.


def crop_square(box, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int, int]:
  """The integer square (x1, y1, x2, y2) of side round(margin × the box's longer side), centred on the box.

  It may reach outside the image; `crop` pads those parts.
  """
  x1, y1, x2, y2 = (float(v) for v in box)
  if not (x2 > x1 and y2 > y1):
    raise ValueError(f'face box {tuple(box)}: needs x2 > x1 and y2 > y1')
  if margin <= 0:
    raise ValueError(f'face margin must be positive, got {margin}')
  side = max(int(round(margin * max(x2 - x1, y2 - y1))), 1)
  left = int(np.floor((x1 + x2) / 2 - side / 2 + 0.5))
  top = int(np.floor((y1 + y2) / 2 - side / 2 + 0.5))
  return left, top, left + side, top + side


def crop(image: np.ndarray, square: Sequence[int], pad_value: int = PAD_VALUE) -> np.ndarray:
  """The pixels of `image` inside the integer box `square`; parts outside the image are `pad_value`."""
  left, top, right, bottom = (int(v) for v in square)
  h, w = image.shape[:2]
  out = np.full((bottom - top, right - left) + image.shape[2:], pad_value, image.dtype)
  sx1, sy1, sx2, sy2 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
  if sx2 > sx1 and sy2 > sy1:
    out[sy1 - top:sy2 - top, sx1 - left:sx2 - left] = image[sy1:sy2, sx1:sx2]
  return out


def face_crops(image: np.ndarray, finder: FaceFinder, margin: float = DEFAULT_MARGIN):
  """(face boxes clipped to the image, their square crops) of one RGB image."""
  h, w = image.shape[:2]
  boxes, crops = [], []
  for box in finder(image):
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
    y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
    if x2 - x1 < 1 or y2 - y1 < 1:
      continue  # nothing of it inside the image
    boxes.append((x1, y1, x2, y2))
    crops.append(crop(image, crop_square((x1, y1, x2, y2), margin)))
  return boxes, crops


def two_stage(images: Sequence[np.ndarray], finder: FaceFinder, predict_crops, margin: float = DEFAULT_MARGIN):
  """Per image, one detection per found face: the face box with the expression of the crop's best detection.

  predict_crops: list of RGB crops → list (one per crop) of detections sorted best first (the one-stage
    path); every crop of the call goes in one list, so the model runs in batch buckets.
  """
  per_image, all_crops = [], []
  for image in images:
    boxes, crops = face_crops(image, finder, margin)
    per_image.append(boxes)
    all_crops.extend(crops)
  results = predict_crops(all_crops) if all_crops else []
  out, k = [], 0
  for boxes in per_image:
    found = []
    for box in boxes:
      detections = results[k]
      k += 1
      if detections:
        best = max(detections, key=lambda d: d.confidence)
        found.append(dataclasses.replace(best, box=tuple(float(v) for v in box)))
    found.sort(key=lambda d: d.confidence, reverse=True)
    out.append(found)
  return out
