"""Inputs for prediction (image files, folders, globs, video files, webcams, stream URLs) and per-frame results.

  rec = Recognizer.from_checkpoint('runs/demo/train/best')
  for result in rec.stream('clip.mp4'):          # or 0 (webcam), 'photos/', 'shots/*.jpg', 'rtsp://…'
    print(result.frame, [d.name for d in result.detections])
    result.save(f'out/{result.frame:05d}.jpg')   # the annotated frame

`stream` reads lazily: `batch_size` images or frames at a time go through the model, so a long video or
a camera never sits in memory whole.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from typing import Iterator, Sequence

import cv2
import numpy as np

from yolo_osam_jax import predict as predict_lib
from yolo_osam_jax import visualize
from yolo_osam_jax.predict import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = ('.asf', '.avi', '.gif', '.m4v', '.mkv', '.mov', '.mp4', '.mpeg', '.mpg', '.ts',
                    '.wmv', '.webm')


def kind_of(path: str) -> str | None:
  """'image' or 'video' from a file name's extension, else None."""
  ext = os.path.splitext(path)[1].lower()
  if ext in IMAGE_EXTENSIONS:
    return 'image'
  if ext in VIDEO_EXTENSIONS:
    return 'video'
  return None


def expand_sources(sources, errors: list) -> list[tuple[str, object]]:
  """(kind, what) per input: ('image', path), ('video', path), ('camera', index) or ('stream', url).

  sources: strings (or ints for webcams). A folder gives its image and video files (not recursively),
  a glob its matching files. Problems (missing path, glob without matches, unsupported file type) are
  appended to `errors` as one-line messages and the source is skipped.
  """
  out = []
  for source in sources:
    source = str(source)
    if source.isdigit():
      out.append(('camera', int(source)))
    elif '://' in source:
      out.append(('stream', source))
    elif os.path.isdir(source):
      names = sorted(os.listdir(source))
      if not names:
        errors.append(f'{source}: empty folder')
      for name in names:
        path = os.path.join(source, name)
        if os.path.isdir(path):
          continue  # folders are not searched recursively; give `dir/**/*.jpg` for that
        kind = kind_of(path)
        if kind is None:
          errors.append(f'{path}: unsupported file type (not an image or video extension), skipped')
        else:
          out.append((kind, path))
    elif any(c in source for c in '*?['):
      matches = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
      if not matches:
        errors.append(f'{source}: no files match this pattern')
      for path in matches:
        kind = kind_of(path)
        if kind is None:
          errors.append(f'{path}: unsupported file type (not an image or video extension), skipped')
        else:
          out.append((kind, path))
    elif not os.path.exists(source):
      errors.append(f'{source}: no such file or folder')
    else:
      kind = kind_of(source)
      if kind is None:
        errors.append(f'{source}: unsupported file type; images: {" ".join(IMAGE_EXTENSIONS)}'
                      f'; videos: {" ".join(VIDEO_EXTENSIONS)}')
      else:
        out.append((kind, source))
  return out


def gui_available() -> bool:
  """Whether this OpenCV build can open windows (the opencv-python-headless wheel cannot)."""
  for line in cv2.getBuildInformation().splitlines():
    key, _, value = line.strip().partition(':')
    if key.strip() == 'GUI':
      return value.strip().upper() not in ('', 'NONE', 'NO')
  return False


SHOW_NEEDS_GUI = ('--show needs the GUI build of OpenCV (pip install opencv-python); the installed '
                  'OpenCV has no GUI support (opencv-python-headless)')


# ---------------------------------------------------------------------------------------------------
# Results.


@dataclasses.dataclass
class Result:
  """The detections of one image or video frame.

  source: the file, 'camera:<index>' or the stream URL. frame: the frame index in a video, camera or
  stream; None for an image file. image: the frame, uint8 [H, W, 3] RGB.
  """
  source: str
  frame: int | None
  image: np.ndarray
  detections: list
  class_names: Sequence[str] = ()

  def plot(self, line_width: int | None = None, conf: bool = True) -> np.ndarray:
    """The image (RGB) with each detection's box and 'expression confidence' label drawn."""
    names = dict(enumerate(self.class_names))
    names.update({d.class_id: d.name for d in self.detections})
    return visualize.annotate(self.image, [d.box for d in self.detections],
                              [d.class_id for d in self.detections], names,
                              [d.confidence for d in self.detections] if conf else None,
                              line_width=line_width)

  def to_dict(self) -> dict:
    h, w = self.image.shape[:2]
    return {'source': self.source, 'frame': self.frame, 'width': int(w), 'height': int(h),
            'detections': [d.to_dict() for d in self.detections]}

  def save(self, path: str | os.PathLike, line_width: int | None = None, conf: bool = True) -> str:
    """Writes the annotated image (format from the extension); returns the path."""
    path = os.fspath(path)
    if kind_of(path) != 'image':
      raise ValueError(f'{path}: not an image file name (give e.g. .jpg or .png)')
    folder = os.path.dirname(path)
    if folder:
      os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(self.plot(line_width, conf)[..., ::-1])):
      raise OSError(f'{path}: OpenCV could not write the annotated image')
    return path


# ---------------------------------------------------------------------------------------------------
# Streaming.


def _frames(kind: str, what) -> Iterator[tuple[str, int | None, np.ndarray]]:
  """(source label, frame index or None, RGB image) of one expanded source, read one at a time."""
  if kind == 'image':
    try:
      yield str(what), None, predict_lib.read_image(what)
    except (OSError, ValueError) as e:
      log.warning('%s', e)
    return
  label = f'camera:{what}' if kind == 'camera' else str(what)
  capture = cv2.VideoCapture(what)
  if not capture.isOpened():
    log.warning('%s: OpenCV cannot open this video (unsupported format or codec, or no device)', label)
    return
  try:
    index = 0
    while True:
      ok, frame = capture.read()
      if not ok:
        break
      yield label, index, np.ascontiguousarray(frame[..., ::-1])
      index += 1
    if index == 0:
      log.warning('%s: no frame could be read (empty or unsupported video)', label)
  finally:
    capture.release()


def stream(recognizer, source, batch_size: int = 8, max_frames: int | None = None) -> Iterator[Result]:
  """Results of every image / frame of `source` (one or a list of paths, folders, globs, webcam indices,
  URLs), in order, `batch_size` at a time through `recognizer.predict_rgb`.

  max_frames: stop each video / camera / stream after this many frames. Sources that cannot be used are
  logged as warnings and skipped; ValueError when none can.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be ≥ 1, got {batch_size}')
  sources = list(source) if isinstance(source, (list, tuple)) else [source]
  errors: list[str] = []
  expanded = expand_sources(sources, errors)
  for message in errors:
    log.warning('%s', message)
  if not expanded:
    raise ValueError(errors[0] if errors else 'stream: no source given')

  def frames():
    for kind, what in expanded:
      for item in _frames(kind, what):
        if max_frames is not None and kind != 'image' and item[1] >= max_frames:
          break
        yield item

  batch = []
  for item in frames():
    batch.append(item)
    if len(batch) == batch_size:
      yield from _run(recognizer, batch)
      batch = []
  if batch:
    yield from _run(recognizer, batch)


def _run(recognizer, batch) -> list[Result]:
  detections = recognizer.predict_rgb([image for _, _, image in batch])
  return [Result(label, frame, image, found, recognizer.class_names)
          for (label, frame, image), found in zip(batch, detections)]
