"""Extended Cohn-Kanade (CK+) as TFDS builder `ckplus`: posed expression sequences, one face per frame.

Two releases (SPEC §6), chosen by config, in the manual dir (or one folder below it, e.g. `CK+/`):
- sequences (the official release):
    cohn-kanade-images/S005/001/S005_001_00000011.png       frames of sequence 001 of subject S005
    Emotion/S005/001/S005_001_00000011_emotion.txt           one float, e.g. `3.0000000e+00`
  Codes 0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise. Only 327
  of the 593 sequences carry an emotion file; the others are counted in the build report
  ('unlabelled_sequence'). The labelled frame is the last one, the peak: it and the two frames before
  it become examples with the sequence's label; optionally the first frame becomes a neutral example.
  The face box comes from OpenCV's bundled frontal-face Haar cascade (largest detection); where it
  finds no face the whole frame is the box and the report counts 'face_not_found'.
- ck48 (the CK+48 folder release): `anger/ contempt/ disgust/ fear/ happy/ sadness/ surprise/` of
  48x48 face crops named like `S010_004_00000017.png`; box = whole image.

Every example carries its `subject` ('S005') and `sequence` ('S005_001'). CK+ has no official split:
configs offer the paper's image-level random 70/10/20 split (which puts frames of one subject, even of
one sequence, in train and test: optimistic, kept for comparison with the paper) and a subject-wise
k-fold (splits `fold0`..`fold{K-1}`, no subject in two folds; combine them with
`splits.kfold_split_strings`).
"""

from __future__ import annotations

import dataclasses
import os
import re

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from yolo_osam_jax import errors
from yolo_osam_jax.data import common
from yolo_osam_jax.data import splits

# Emotion codes of the sequence release, in code order.
CODE_NAMES = ('neutral', 'anger', 'contempt', 'disgust', 'fear', 'happy', 'sadness', 'surprise')
NEUTRAL_CODE, CONTEMPT_CODE = 0, 2
CK48_FOLDERS = ('anger', 'contempt', 'disgust', 'fear', 'happy', 'sadness', 'surprise')

IMAGES_DIR = 'cohn-kanade-images'
EMOTION_DIR = 'Emotion'
PEAK_FRAMES = 3
_FRAME_NAME = re.compile(r'^(S\d+)_(\d+)_(\d+)\.png$')
_EMOTION_NAME = re.compile(r'^(S\d+)_(\d+)_(\d+)_emotion\.txt$')

# Reasons this builder adds to the build report (common.REASONS has the shared ones).
REASON_UNLABELLED = 'unlabelled_sequence'     # sequence without an emotion file (not used)
REASON_CONTEMPT = 'contempt_excluded'         # contempt sequence/image left out by config
REASON_NO_NEUTRAL = 'neutral_overlaps_peak'   # sequence too short for a separate neutral frame
REASON_NO_FACE = 'face_not_found'             # Haar cascade found nothing: whole frame used
REASON_IGNORED_FILE = 'ignored_file'          # a non-image file where images are expected
REASON_AFTER_PEAK = 'frames_after_peak'       # frames numbered after the labelled one (not used)


def class_names(contempt: bool, neutral: bool) -> list[str]:
  """Class names in code order, without the classes the config leaves out."""
  return [name for code, name in enumerate(CODE_NAMES)
          if (code != NEUTRAL_CODE or neutral) and (code != CONTEMPT_CODE or contempt)]


def find_dir(manual_dir: str | os.PathLike, marker: str) -> epath.Path:
  """The manual dir, or its single child folder, that holds `marker` (a file or folder name)."""
  manual_dir = epath.Path(manual_dir)
  if (manual_dir / marker).exists():
    return manual_dir
  children = [c for c in sorted(manual_dir.iterdir()) if c.is_dir() and (c / marker).exists()]
  if len(children) == 1:
    return children[0]
  raise errors.MissingError(f'CK+: no {marker} in {manual_dir} or in one folder below it '
                            f'(found {len(children)} candidates)')


def read_emotion_file(path: str | os.PathLike, where: str) -> int:
  """The emotion code (0..7) in an *_emotion.txt file, e.g. `   3.0000000e+00`."""
  lines = [(n, line.strip()) for n, line in enumerate(errors.read_text(path, 'emotion file').splitlines(), 1)
           if line.strip()]
  if len(lines) != 1:
    raise errors.InputError(f'{where}: expected one emotion code, found {len(lines)} non-empty lines')
  line_no, text = lines[0]
  try:
    value = float(text)
  except ValueError:
    raise errors.InputError(f'{where}:{line_no}: emotion code {text!r} is not a number') from None
  if not value.is_integer() or not 0 <= value < len(CODE_NAMES):
    raise errors.InputError(f'{where}:{line_no}: emotion code {text} is not an integer in 0..7 '
                            f'({", ".join(f"{c} {n}" for c, n in enumerate(CODE_NAMES))})')
  return int(value)


def _frames(sequence_dir: epath.Path, relative_dir: str,
            report: common.BuildReport) -> dict[int, epath.Path]:
  """{frame number: path} of a sequence folder's PNG frames."""
  frames = {}
  for path in sorted(sequence_dir.iterdir()):
    if path.name.startswith('.'):
      continue  # .DS_Store and similar ship inside some CK+ copies; they are not data
    if path.suffix.lower() != '.png':
      report.add(REASON_IGNORED_FILE, f'{relative_dir}/{path.name}', 'not a PNG frame')
      continue
    match = _FRAME_NAME.match(path.name)
    if not match:
      raise errors.InputError(f'{relative_dir}/{path.name}: frame name is not '
                              'S<subject>_<sequence>_<frame>.png')
    frames[int(match.group(3))] = path
  return frames


def parse_sequences(root: str | os.PathLike, *, contempt: bool, neutral: bool,
                    report: common.BuildReport) -> list[dict]:
  """Examples of the sequence release as records, sorted by subject, sequence, frame.

  Record keys: image_id (frame file name), path, file (path relative to `root`), label (index into
  `class_names(contempt, neutral)`), subject, sequence, where (the emotion file that labels it).
  """
  root = epath.Path(root)
  names = class_names(contempt, neutral)
  images_root, emotion_root = root / IMAGES_DIR, root / EMOTION_DIR
  if not emotion_root.is_dir():
    raise errors.MissingError(f'CK+: {emotion_root} is missing (the labels of the sequence release)')
  records = []
  labelled = set()
  for subject_dir in sorted(p for p in emotion_root.iterdir() if p.is_dir()):
    for sequence_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
      relative_dir = f'{EMOTION_DIR}/{subject_dir.name}/{sequence_dir.name}'
      label_files = sorted(p for p in sequence_dir.iterdir() if p.name.endswith('_emotion.txt'))
      if not label_files:
        continue  # an empty label folder, as CK+ ships for unlabelled sequences
      if len(label_files) > 1:
        raise errors.InputError(f'{relative_dir}: {len(label_files)} emotion files, expected one per sequence')
      label_file = label_files[0]
      where = f'{relative_dir}/{label_file.name}'
      match = _EMOTION_NAME.match(label_file.name)
      if not match or (match.group(1), match.group(2)) != (subject_dir.name, sequence_dir.name):
        raise errors.InputError(f'{where}: name does not match its folder '
                                f'({subject_dir.name}_{sequence_dir.name}_<frame>_emotion.txt expected)')
      code = read_emotion_file(label_file, where)
      peak_frame = int(match.group(3))
      subject, sequence = subject_dir.name, f'{subject_dir.name}_{sequence_dir.name}'
      image_dir = images_root / subject_dir.name / sequence_dir.name
      relative_image_dir = f'{IMAGES_DIR}/{subject_dir.name}/{sequence_dir.name}'
      if not image_dir.is_dir():
        raise errors.MissingError(f'{where}: labels a sequence with no image folder {relative_image_dir}')
      frames = _frames(image_dir, relative_image_dir, report)
      if peak_frame not in frames:
        raise errors.MissingError(f'{where}: labels frame {peak_frame}, which is not in '
                                  f'{relative_image_dir}')
      labelled.add((subject_dir.name, sequence_dir.name))
      if code == CONTEMPT_CODE and not contempt:
        report.add(REASON_CONTEMPT, where, 'sequence left out (config without contempt)')
        continue
      if code == NEUTRAL_CODE and not neutral:
        raise errors.InputError(f'{where}: emotion code 0 (neutral) but the config has no neutral class')
      ordered = sorted(f for f in frames if f <= peak_frame)
      if len(ordered) < len(frames):  # CK+ labels the last frame; later ones would be past the peak
        unused = len(frames) - len(ordered)
        report.add(REASON_AFTER_PEAK, relative_image_dir,
                   f'{unused} frame(s) after the labelled frame {peak_frame} not used')
      peak = ordered[-PEAK_FRAMES:]
      chosen = [(f, names.index(CODE_NAMES[code])) for f in peak]
      if neutral:
        first = ordered[0]
        if first in peak:
          report.add(REASON_NO_NEUTRAL, relative_image_dir, f'only {len(ordered)} frames up to the peak')
        else:
          chosen.insert(0, (first, names.index('neutral')))
      for frame, label in chosen:
        records.append({'image_id': frames[frame].name, 'path': os.fspath(frames[frame]),
                        'file': f'{relative_image_dir}/{frames[frame].name}', 'label': label,
                        'subject': subject, 'sequence': sequence, 'where': where})

  if images_root.is_dir():
    for subject_dir in sorted(p for p in images_root.iterdir() if p.is_dir()):
      for sequence_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
        if (subject_dir.name, sequence_dir.name) not in labelled:
          report.add(REASON_UNLABELLED, f'{IMAGES_DIR}/{subject_dir.name}/{sequence_dir.name}',
                     'no emotion file; not used')
  if not records:
    raise errors.InputError(f'CK+: no labelled frames found under {root}')
  return records


def parse_ck48(root: str | os.PathLike, *, contempt: bool, report: common.BuildReport) -> list[dict]:
  """Examples of the CK+48 folder release as records, sorted by class folder and file name."""
  root = epath.Path(root)
  names = class_names(contempt, neutral=False)
  records = []
  seen: dict[str, str] = {}
  for class_dir in sorted(root.iterdir()):
    if class_dir.name.startswith('.'):
      continue
    if not class_dir.is_dir():
      report.add(REASON_IGNORED_FILE, class_dir.name, 'not inside a class folder')
      continue
    if class_dir.name not in CK48_FOLDERS:
      raise errors.InputError(f'{class_dir.name}: unknown class folder; expected {", ".join(CK48_FOLDERS)}')
    for path in sorted(class_dir.iterdir()):
      relative = f'{class_dir.name}/{path.name}'
      if path.name.startswith('.'):
        continue
      if path.suffix.lower() not in common.IMAGE_EXTENSIONS:
        report.add(REASON_IGNORED_FILE, relative, 'not an image file')
        continue
      match = _FRAME_NAME.match(path.stem + '.png')
      if not match:
        raise errors.InputError(f'{relative}: file name is not S<subject>_<sequence>_<frame>.png, so the '
                                'subject is unknown')
      if not common.first_seen(seen, path.name, relative, report):
        continue
      if class_dir.name == 'contempt' and not contempt:
        report.add(REASON_CONTEMPT, relative, 'image left out (config without contempt)')
        continue
      records.append({'image_id': relative, 'path': os.fspath(path), 'file': relative,
                      'label': names.index(class_dir.name), 'subject': match.group(1),
                      'sequence': f'{match.group(1)}_{match.group(2)}', 'where': relative})
  if not records:
    raise errors.InputError(f'CK+48: no images in the class folders under {root}')
  return records


def load_face_cascade() -> cv2.CascadeClassifier:
  """OpenCV's bundled frontal-face Haar cascade (opencv-python 4.x ships it; 5.x does not)."""
  path = os.path.join(cv2.data.haarcascades, 'haarcascade_frontalface_default.xml')
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise RuntimeError(f'cannot load the Haar cascade {path}; opencv-python-headless 4.x is needed')
  return cascade


def face_box(grey: np.ndarray, cascade) -> tuple[float, float, float, float] | None:
  """The largest frontal face (x_min, y_min, x_max, y_max) in pixels, or None if there is none."""
  height, width = grey.shape[:2]
  min_side = max(min(height, width) // 5, 1)  # CK+ faces fill a large part of the frame
  faces = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
  if len(faces) == 0:
    return None
  x, y, w, h = max((tuple(int(v) for v in face) for face in faces), key=lambda f: f[2] * f[3])
  return float(x), float(y), float(x + w), float(y + h)


@dataclasses.dataclass(eq=False)
class CkplusConfig(tfds.core.BuilderConfig):
  release: str = 'sequences'             # 'sequences' | 'ck48'
  contempt: bool = True
  neutral: bool = False                  # sequences only: first frame as a neutral example
  face_detector: str = 'haar'            # sequences: 'haar' | 'none' (whole frame as the box)
  split_scheme: str = 'random_70_10_20'  # | 'subject_kfold'
  num_folds: int = 10
  split_seed: int = 0


_RANDOM = "the paper's image-level random 70/10/20 split (subjects leak across splits)"
_KFOLD = 'subject-wise 10-fold splits fold0..fold9'


class Ckplus(common.DetectionBuilder):
  """CK+: posed expressions of 123 subjects (peak frames of 327 labelled sequences)."""

  VERSION = tfds.core.Version('1.0.0')
  HOMEPAGE = 'https://www.jeffcohn.net/Resources/'
  BUILDER_CONFIGS = [
      CkplusConfig(name='sequences',
                   description=f'Sequence release, 7 classes with contempt; {_RANDOM}.'),
      CkplusConfig(name='sequences_kfold', split_scheme='subject_kfold',
                   description=f'Sequence release, 7 classes with contempt; {_KFOLD}.'),
      CkplusConfig(name='sequences_neutral', neutral=True,
                   description=f'Sequence release, 8 classes (first frames as neutral); {_RANDOM}.'),
      CkplusConfig(name='sequences_no_contempt', contempt=False,
                   description=f'Sequence release, 6 classes without contempt; {_RANDOM}.'),
      CkplusConfig(name='ck48', release='ck48',
                   description=f'CK+48 folder release, 7 classes; {_RANDOM}.'),
      CkplusConfig(name='ck48_kfold', release='ck48', split_scheme='subject_kfold',
                   description=f'CK+48 folder release, 7 classes; {_KFOLD}.'),
  ]
  DEFAULT_CONFIG_NAME = 'sequences'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Sequence configs: request CK+ (https://www.jeffcohn.net/Resources/) and extract it so that the manual
  dir (or one folder in it) holds cohn-kanade-images/ and Emotion/. ck48 configs: the manual dir (or
  one folder in it) holds the CK+48 class folders anger/ contempt/ disgust/ fear/ happy/ sadness/
  surprise/.
  """

  def class_names(self) -> list[str]:
    config = self.builder_config
    return class_names(config.contempt, config.neutral and config.release == 'sequences')

  def extra_features(self) -> dict:
    return {'subject': tfds.features.Text(), 'sequence': tfds.features.Text()}

  def _split_generators(self, dl_manager):
    config = self.builder_config
    if config.release == 'sequences':
      root = find_dir(dl_manager.manual_dir, EMOTION_DIR)
      records = parse_sequences(root, contempt=config.contempt, neutral=config.neutral,
                                report=self.report)
    elif config.release == 'ck48':
      if config.neutral:
        raise errors.InputError('CK+48 has no neutral images; use neutral=False with release ck48')
      root = find_dir(dl_manager.manual_dir, 'anger')
      records = parse_ck48(root, contempt=config.contempt, report=self.report)
    else:
      raise errors.InputError(f"unknown CK+ release {config.release!r}; expected 'sequences' or 'ck48'")
    return splits.split_generators(self, records, subjects=[r['subject'] for r in records],
                                   num_folds=config.num_folds)

  def _generate_examples(self, records, split):
    config = self.builder_config
    detect = config.release == 'sequences' and config.face_detector == 'haar'
    if config.face_detector not in ('haar', 'none'):
      raise errors.InputError(f"unknown face_detector {config.face_detector!r}; expected 'haar' or 'none'")
    cascade = load_face_cascade() if detect else None
    for record in records:
      where = record['file']
      image = common.read_image(record['path'], where, self.report)
      if image is None:
        continue  # recorded by read_image
      encoded, height, width = image
      box = None
      if detect:
        grey = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_GRAYSCALE)
        box = face_box(grey, cascade)
        if box is None:
          self.report.add(REASON_NO_FACE, where, 'Haar cascade found no face; whole frame used')
      if box is None:
        box = (0.0, 0.0, float(width), float(height))
      bbox, labels = common.boxes_to_bbox(
          [box], [record['label']], height=height, width=width,
          num_classes=len(self.class_names()), where=where, report=self.report)
      self.report.count_example(split)
      yield record['image_id'], {
          'image': encoded, 'image_id': record['image_id'],
          'objects': {'bbox': bbox, 'label': labels},
          'subject': record['subject'], 'sequence': record['sequence']}
