"""Prediction with a trained model: `Recognizer` turns images into expression-labelled face boxes.

  from yolo_osam_jax import Recognizer
  recognizer = Recognizer.from_checkpoint('runs/train/1/best')
  for det in recognizer.predict('photo.jpg'):
    print(det.name, f'{det.confidence:.2f}', det.box)

Each image is letterboxed to the model's square input (long side resized to `img_size` with area
averaging when shrinking, so large photos are not aliased; integer grey padding), run through the model
and yolov5's prediction NMS (single label per box, conf 0.25, IoU 0.45, SPEC §5), and the boxes are mapped
back to the original pixels with the exact inverse of the letterbox, then clipped to the image.

Shapes are static: a call's images are cut into chunks padded to a batch-size bucket (1, 8 or 32 by
default), and one jitted function (model + decoding + NMS) serves every call, so XLA compiles once per
(bucket, input size) and repeated calls never recompile. `trace_count()` counts the traces.

Photographs and models trained on aligned face crops: `from_checkpoint(path, faces='auto')` finds faces
with OpenCV's Haar cascade first and names each crop's expression (two-stage, faces.py) when the
checkpoint was trained on whole-image crops; `training_data_of(config)` says what a checkpoint was
trained on. `Recognizer.stream(source)` yields per-frame results of videos, cameras, folders (sources.py).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from yolo_osam_jax import checkpoint, errors, faces as faces_lib, io_utils, models
from yolo_osam_jax.data import transforms
from yolo_osam_jax.evaluation import nms as nms_lib

log = logging.getLogger(__name__)

training_data_of = faces_lib.training_data_of  # what a checkpoint config was trained on (faces.py)

BATCH_BUCKETS = (1, 8, 32)
IMAGE_EXTENSIONS = io_utils.IMAGE_EXTENSIONS

_traces = 0  # incremented each time `_detect` is traced (compiled) for a new shape or setting


@dataclasses.dataclass(frozen=True)
class Detection:
  """One face: its box and expression.

  box: (x1, y1, x2, y2) in pixels of the original image (pixel-edge coordinates, clipped to the image).
  confidence: objectness × probabilities[class_id] (yolov5's score).
  probabilities: the class probabilities of this box, one per class; each is an independent sigmoid
    (yolov5's classification is multi-label BCE), so they need not sum to one.
  """
  box: tuple[float, float, float, float]
  class_id: int
  name: str
  confidence: float
  probabilities: tuple[float, ...]

  def to_dict(self) -> dict:
    return {'box': list(self.box), 'class_id': self.class_id, 'name': self.name,
            'confidence': self.confidence, 'probabilities': list(self.probabilities)}


def trace_count() -> int:
  """How many times the detection function has been traced in this process (one per compile)."""
  return _traces


# ---------------------------------------------------------------------------------------------------
# Inputs.


def read_image(path: str | os.PathLike) -> np.ndarray:
  """The image file at `path` as uint8 [H, W, 3] RGB (grey and RGBA files included; EXIF rotation applied).

  Raises FileNotFoundError / ValueError naming the file and the reason.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise errors.MissingError(f'{path}: no such file')
  if os.path.isdir(path):
    raise errors.InputError(f'{path}: is a folder, not an image file')
  # np.fromfile + imdecode also reads paths that cv2.imread cannot (non-ASCII names on some systems).
  data = np.fromfile(path, np.uint8)
  if data.size == 0:
    raise errors.InputError(f'{path}: empty file (0 bytes), not an image')
  # IMREAD_COLOR: grey becomes 3 channels, alpha is dropped, 16-bit is scaled to 8-bit.
  image = cv2.imdecode(data, cv2.IMREAD_COLOR)
  if image is None:
    raise errors.InputError(f'{path}: not a readable image (OpenCV could not decode its {data.size} bytes)')
  if image.size == 0:
    raise errors.InputError(f'{path}: zero-size image {image.shape[1]}x{image.shape[0]}')
  return np.ascontiguousarray(image[..., ::-1])


def to_rgb(image, bgr: bool = False, where: str = 'image') -> np.ndarray:
  """A numpy image (H×W grey, H×W×1, H×W×3 RGB/BGR, H×W×4 RGBA/BGRA; uint8) as uint8 [H, W, 3] RGB."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise errors.InputError(f'{where}: expected uint8 pixels, got dtype {image.dtype} '
                     '(convert with (x * 255).round().astype(np.uint8) for floats in [0, 1])')
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  elif image.ndim != 3 or image.shape[-1] not in (3, 4):
    raise errors.InputError(f'{where}: expected an H×W, H×W×1, H×W×3 or H×W×4 image, got shape {image.shape}')
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise errors.InputError(f'{where}: zero-size image of shape {image.shape}')
  image = image[..., :3]  # drop alpha
  if bgr:
    image = image[..., ::-1]
  return np.ascontiguousarray(image)


def _as_image_list(images, bgr: bool) -> tuple[list[np.ndarray], bool]:
  """(RGB images, whether the caller passed a single image)."""
  if isinstance(images, (str, os.PathLike)):
    return [read_image(images)], True
  if isinstance(images, np.ndarray):
    if images.ndim == 4:  # a batch [B, H, W, C]
      return [to_rgb(x, bgr, f'images[{i}]') for i, x in enumerate(images)], False
    return [to_rgb(images, bgr)], True
  if isinstance(images, (list, tuple)):
    out = []
    for i, x in enumerate(images):
      if isinstance(x, (str, os.PathLike)):
        out.append(read_image(x))
      else:
        out.append(to_rgb(x, bgr, f'images[{i}]'))
    return out, False
  # Anything numpy understands as an image (e.g. a PIL image).
  return [to_rgb(np.asarray(images), bgr)], True


# ---------------------------------------------------------------------------------------------------
# Class names.


def class_names_of(config) -> list[str]:
  """Expression names of a checkpoint's config, in class order.

  Looked up in order: `config.data.class_names` (written by training when present), then the class list
  of the config's dataset builder when its length matches `model.num_classes`; else 'class_<i>' with a
  warning.
  """
  num_classes = int(config.model.num_classes)
  data = config.get('data', None)
  names = data.get('class_names', None) if data is not None else None
  if names is None and data is not None and data.get('dataset', None):
    try:
      from yolo_osam_jax import data as data_lib  # pylint: disable=g-import-not-at-top
      names = data_lib.class_names(data.dataset, data_dir=data.get('data_dir', '') or None,
                                   config=data.get('builder_config', None) or None)
    except Exception as e:  # pylint: disable=broad-except
      log.warning('could not read class names of dataset %r: %s', data.dataset, e)
      names = None
  if names is not None and len(names) != num_classes:
    log.warning('dataset class names %s do not match model.num_classes = %d; using class_<i>',
                list(names), num_classes)
    names = None
  if names is None:
    log.warning('no class names in the checkpoint config; naming classes class_0 … class_%d',
                num_classes - 1)
    names = [f'class_{i}' for i in range(num_classes)]
  return [str(n) for n in names]


def resolve_classes(classes, class_names: Sequence[str]) -> tuple[int, ...] | None:
  """Class filter given as ids and/or names → sorted class ids (None = keep every class)."""
  if classes is None:
    return None
  if isinstance(classes, (int, str)):
    classes = [classes]
  ids = set()
  for c in classes:
    if isinstance(c, str) and not c.strip().lstrip('-').isdigit():
      matches = [i for i, n in enumerate(class_names) if n.lower() == c.strip().lower()]
      if not matches:
        raise errors.InputError(f'classes: unknown class name {c!r}; known: {", ".join(class_names)}')
      ids.add(matches[0])
    else:
      i = int(c)
      if not 0 <= i < len(class_names):
        raise errors.InputError(f'classes: class id {i} out of range 0..{len(class_names) - 1}')
      ids.add(i)
  return tuple(sorted(ids))


# ---------------------------------------------------------------------------------------------------
# The jitted detection function.


@functools.partial(jax.jit, static_argnames=('module', 'conf_thres', 'iou_thres', 'max_det', 'keep'))
def _detect(variables, images, *, module, conf_thres: float, iou_thres: float, max_det: int,
            keep: tuple[int, ...] | None):
  """uint8 [B, S, S, 3] letterboxed RGB → (boxes xyxy letterboxed px, scores, classes, valid, probs)."""
  global _traces
  _traces += 1
  predictions, _ = module.apply(variables, images.astype(jnp.float32) / 255.0, train=False)
  predictions = nms_lib.with_objectness(predictions.astype(jnp.float32), module.num_classes)
  if keep is not None:
    # yolov5 keeps a box when its best class is wanted, before NMS: zero the others' objectness.
    wanted = jnp.zeros((predictions.shape[-1] - 5,), bool).at[jnp.asarray(keep)].set(True)
    best = jnp.argmax(predictions[..., 5:] * predictions[..., 4:5], axis=-1)
    predictions = predictions.at[..., 4].set(jnp.where(wanted[best], predictions[..., 4], 0.0))
  found = nms_lib.batched_nms(predictions, conf_thres=conf_thres, iou_thres=iou_thres,
                              max_det=max_det, multi_label=False)
  probabilities = jnp.take_along_axis(predictions[..., 5:], found.index[..., None], axis=1)
  return found.boxes, found.scores, found.classes, found.valid, probabilities


def max_stride_of(module) -> int:
  """The largest detection stride of a built model: input sides must be multiples of it."""
  return max(module.strides)


def bucket_size(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket holding `n` images (n ≤ the largest bucket)."""
  for b in sorted(buckets):
    if n <= b:
      return b
  raise ValueError(f'{n} images exceed the largest batch bucket {max(buckets)}')


class Recognizer:
  """Facial-expression detector for images of any size; see the module docstring."""

  def __init__(self, module, variables, class_names: Sequence[str], img_size: int, *,
               conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300,
               classes=None, batch_buckets: Sequence[int] = BATCH_BUCKETS,
               face_finder=None, face_margin: float = faces_lib.DEFAULT_MARGIN, training_data=None):
    self.module = module
    # Two-stage recognition (faces.py) when a face finder is given: image → faces → crops → model.
    self.face_finder = (None if face_finder is None or face_finder == 'model'
                        else faces_lib.face_finder(face_finder))
    if not face_margin > 0:
      raise ValueError(f'face_margin must be positive, got {face_margin}')
    self.face_margin = float(face_margin)
    self.training_data = training_data
    self.variables = jax.device_put({k: variables[k] for k in ('params', 'batch_stats')
                                     if k in variables})
    self.class_names = list(class_names)
    if len(self.class_names) != module.num_classes:
      raise errors.InputError(f'{len(self.class_names)} class names for a model with {module.num_classes} classes')
    max_stride = max_stride_of(module)
    img_size = int(img_size)
    if img_size <= 0 or img_size % max_stride:
      raise errors.InputError(f'img_size must be a positive multiple of the largest stride {max_stride}, '
                              f'got {img_size}')
    self.img_size = img_size
    if not 0.0 <= conf_thres < 1.0:
      raise errors.InputError(f'conf_thres must be in [0, 1), got {conf_thres}')
    if not 0.0 <= iou_thres <= 1.0:
      raise errors.InputError(f'iou_thres must be in [0, 1], got {iou_thres}')
    if int(max_det) < 1:
      raise errors.InputError(f'max_det must be ≥ 1, got {max_det}')
    self.conf_thres, self.iou_thres, self.max_det = float(conf_thres), float(iou_thres), int(max_det)
    self.classes = resolve_classes(classes, self.class_names)
    if not batch_buckets or min(batch_buckets) < 1:
      raise errors.InputError(f'batch_buckets must be positive sizes, got {batch_buckets}')
    self.batch_buckets = tuple(sorted(int(b) for b in batch_buckets))

  @classmethod
  def from_checkpoint(cls, path: str | os.PathLike, conf_thres: float = 0.25, iou_thres: float = 0.45,
                      max_det: int = 300, img_size: int | None = None, classes=None, *,
                      class_names: Sequence[str] | None = None,
                      batch_buckets: Sequence[int] = BATCH_BUCKETS, faces='auto',
                      face_margin: float = faces_lib.DEFAULT_MARGIN) -> 'Recognizer':
    """A recognizer for the model checkpoint directory at `path` (written by training or conversion).

    img_size: the model's square input side (default: the training size, config.data.img_size).
    classes: class ids or names to keep (default all). class_names: override the names.
    faces: 'auto' (two-stage 'haar' for a checkpoint trained on whole-image face crops, one-stage
      otherwise), 'model' (the model finds the faces), 'haar' / 'haar_profile' (OpenCV's cascade finds
      them, the model names each crop's expression), or a callable RGB image → face boxes (faces.py).
    face_margin: crop side / face box side for two-stage recognition.
    """
    config, variables = checkpoint.load_model(os.fspath(path))
    training = training_data_of(config)
    warning = faces_lib.synthetic_warning(training, os.fspath(path))
    if warning:
      log.warning(warning)
    if isinstance(faces, str) and faces not in ('auto', 'model'):
      faces_lib.face_finder(faces)  # an unknown name fails here, before the model is built
    if faces == 'auto':
      faces = 'haar' if training.box_kind == faces_lib.WHOLE_CROP else 'model'
    if img_size is None:
      img_size = int(config.data.img_size) if 'data' in config else 640
    names = list(class_names) if class_names is not None else class_names_of(config)
    module = models.build(config.model)
    return cls(module, variables, names, img_size, conf_thres=conf_thres, iou_thres=iou_thres,
               max_det=max_det, classes=classes, batch_buckets=batch_buckets,
               face_finder=None if faces == 'model' else faces, face_margin=face_margin,
               training_data=training)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def letterbox(self, image: np.ndarray):
    """(letterboxed uint8 [S, S, 3], (scale, pad_x, pad_y)) of an RGB image."""
    out, scale, (pad_x, pad_y) = transforms.letterbox(image, self.img_size)
    return out, (scale, pad_x, pad_y)

  def predict(self, images, bgr: bool = False):
    """Detections of one image or of a list / batch of them.

    images: a path, a uint8 numpy image (H×W grey, H×W×3 RGB — BGR with bgr=True —, H×W×4 with
      alpha),
      a [B, H, W, C] array, or a list of paths and arrays.
    Returns list[Detection] for a single image, list[list[Detection]] (one list per image, in order) for
    a list or batch; each image's detections are sorted by confidence, best first.
    """
    rgb, single = _as_image_list(images, bgr)
    results = self.predict_rgb(rgb)
    return results[0] if single else results

  def predict_rgb(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
    """Detections of uint8 [H, W, 3] RGB images (`predict` converts other layouts through `to_rgb`)."""
    for i, image in enumerate(images):
      # A float image in [0, 1] would be cast to uint8 zeros by the letterbox and give no detections.
      if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
          or image.shape[-1] != 3 or 0 in image.shape):
        raise errors.InputError(
            f'images[{i}]: predict_rgb expects uint8 [H, W, 3] RGB, got '
            f'{getattr(image, "dtype", type(image).__name__)} {getattr(image, "shape", "")} (use '
            'predict() for other layouts; floats in [0, 1]: (x * 255).round().astype(np.uint8))')
    if self.face_finder is not None:
      return faces_lib.two_stage(images, self.face_finder, self.predict_model, self.face_margin)
    return self.predict_model(images)

  def stream(self, source, batch_size: int = 8, max_frames: int | None = None):
    """Results (sources.Result: .detections, .plot(), .to_dict(), .save()) frame by frame, read lazily
    from a video file, webcam index, folder, glob, image file, stream URL or a list of them (sources.py)."""
    from yolo_osam_jax import sources  # pylint: disable=g-import-not-at-top
    return sources.stream(self, source, batch_size=batch_size, max_frames=max_frames)

  def predict_model(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
    """One-stage detections (the model finds the faces) of uint8 [H, W, 3] RGB images."""
    results: list[list[Detection]] = []
    largest = self.batch_buckets[-1]
    for start in range(0, len(images), largest):
      chunk = images[start:start + largest]
      batch = np.zeros((bucket_size(len(chunk), self.batch_buckets), self.img_size, self.img_size, 3),
                       np.uint8)
      params = []
      for i, image in enumerate(chunk):
        batch[i], lb = self.letterbox(image)
        params.append(lb)
      boxes, scores, classes, valid, probs = jax.device_get(_detect(
          self.variables, batch, module=self.module, conf_thres=self.conf_thres,
          iou_thres=self.iou_thres, max_det=self.max_det, keep=self.classes))
      for i, image in enumerate(chunk):
        results.append(self._detections(image.shape[:2], params[i], boxes[i], scores[i], classes[i],
                                        valid[i], probs[i]))
    return results

  def _detections(self, hw, letterbox_params, boxes, scores, classes, valid, probs) -> list[Detection]:
    h, w = hw
    boxes = transforms.unletterbox_boxes(boxes[valid], letterbox_params)
    boxes = transforms.clip_boxes(boxes, w, h)
    out = []
    for box, score, c, p in zip(boxes, scores[valid], classes[valid], probs[valid]):
      out.append(Detection(box=tuple(float(v) for v in box), class_id=int(c), name=self.class_names[c],
                           confidence=float(score), probabilities=tuple(float(v) for v in p)))
    return out

