"""FER2013 as TFDS builder `fer2013`: 48x48 grey faces, one whole-image box with its expression.

Two releases (SPEC §6), chosen by config:
- csv (Kaggle challenge): `fer2013.csv` in the manual dir (or in `manual_dir/fer2013/`), header
  `emotion,pixels,Usage`, one face per row: label 0..6, 2,304 space-separated grey values (row-major
  48x48), Usage Training / PublicTest / PrivateTest -> splits train / validation / test
  (28,709 / 3,589 / 3,589). Example id `fer2013_<row>`, row 0 being the line after the header.
- folder: `train/<class>/*.jpg` and `test/<class>/*.jpg` with class folders angry, disgust, fear,
  happy, neutral, sad, surprise; a stratified validation split is carved from train. Example id =
  the path relative to the manual dir.

Bad input stops the build with an error naming file and line (csv: wrong pixel count, non-numeric or
out-of-range values, unknown label or Usage, wrong header; folder: unknown class folder). Files the
folder release cannot use are recorded in the build report, as are duplicate file names.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from yolo_osam_jax import errors
from yolo_osam_jax.data import common
from yolo_osam_jax.data import splits

# Label order of the csv (0 Angry ... 6 Neutral); the folder release's folder names map onto it.
CLASS_NAMES = ('angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral')
FOLDER_CLASSES = {name: index for index, name in enumerate(CLASS_NAMES)}
CSV_NAME = 'fer2013.csv'
CSV_COLUMNS = ('emotion', 'pixels', 'Usage')
USAGE_TO_SPLIT = {'Training': 'train', 'PublicTest': 'validation', 'PrivateTest': 'test'}
FOLDER_SPLITS = ('train', 'test')
IMAGE_SIZE = 48

# Reasons this builder adds to the build report (common.REASONS has the shared ones).
REASON_IGNORED_FILE = 'ignored_file'  # a non-image file in the folder release


def find_csv(manual_dir: str | os.PathLike) -> epath.Path:
  manual_dir = epath.Path(manual_dir)
  for candidate in (manual_dir / CSV_NAME, manual_dir / 'fer2013' / CSV_NAME):
    if candidate.exists():
      return candidate
  raise errors.MissingError(f'FER2013: no {CSV_NAME} in {manual_dir} or {manual_dir / "fer2013"}')


def _checked_rows(reader, path):
  """The rows of a csv.reader; a csv.Error names the line where the broken row starts."""
  while True:
    start = reader.line_num + 1
    try:
      row = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      # An unterminated quote swallows the rest of the file until the field limit is hit.
      raise errors.InputError(f'{path.name}:{start}: {e}; the row starting here has an unterminated '
                              'quote or an oversized field') from None
    yield row


def read_csv(path: str | os.PathLike) -> list[dict]:
  """Parses fer2013.csv into records {image_id, pixels [48, 48] uint8, label, split, where}.

  Raises ValueError naming file and line for any row that is not a valid face.
  """
  path = epath.Path(path)
  num_pixels = IMAGE_SIZE * IMAGE_SIZE
  records = []
  # Read whole: a non-UTF-8 byte is then reported with its line (a text stream decodes in blocks).
  with io.StringIO(errors.read_text(path, 'CSV file'), newline='') as f:
    reader = csv.reader(f)
    rows = _checked_rows(reader, path)
    header = next(rows, None)
    if header:  # a byte-order mark (file re-saved on Windows) would glue onto 'emotion'
      header[0] = header[0].removeprefix('\ufeff')
    if header is None or tuple(h.strip() for h in header) != CSV_COLUMNS:
      raise errors.InputError(f'{path.name}:1: expected the header "{",".join(CSV_COLUMNS)}", got {header}')
    for row in rows:
      where = f'{path.name}:{reader.line_num}'
      if not row or all(not field.strip() for field in row):
        continue
      if len(row) != 3:
        raise errors.InputError(f'{where}: expected 3 fields (emotion, pixels, Usage), got {len(row)}')
      emotion_text, pixel_text, usage = (field.strip() for field in row)
      try:
        label = int(emotion_text)
      except ValueError:
        raise errors.InputError(f'{where}: emotion {emotion_text!r} is not an integer') from None
      if not 0 <= label < len(CLASS_NAMES):
        raise errors.InputError(f'{where}: emotion {label} is outside 0..{len(CLASS_NAMES) - 1}')
      if usage not in USAGE_TO_SPLIT:
        raise errors.InputError(f'{where}: Usage {usage!r} is not one of {", ".join(USAGE_TO_SPLIT)}')
      values = pixel_text.split()
      if len(values) != num_pixels:
        raise errors.InputError(f'{where}: {len(values)} pixel values, expected {num_pixels} '
                                f'({IMAGE_SIZE}x{IMAGE_SIZE})')
      try:
        pixels = np.array(values, dtype=np.int64)  # parses the strings; raises on 'x' or '1.5'
      except ValueError:
        bad = next(v for v in values if not v.lstrip('-').isdigit())
        raise errors.InputError(f'{where}: pixel value {bad!r} is not an integer') from None
      if pixels.min() < 0 or pixels.max() > 255:
        raise errors.InputError(f'{where}: pixel values must be 0..255, found {pixels.min()}..{pixels.max()}')
      records.append({
          'image_id': f'fer2013_{len(records):05d}',
          'pixels': pixels.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE),
          'label': label,
          'split': USAGE_TO_SPLIT[usage],
          'where': where,
      })
  if not records:
    raise errors.InputError(f'{path.name}: no rows after the header')
  return records


def read_folders(manual_dir: str | os.PathLike, report: common.BuildReport) -> list[dict]:
  """Lists the folder release as records {image_id, path, label, split, where}, sorted by path.

  Unknown class folders raise; non-image files and duplicate file names are recorded in `report`.
  """
  manual_dir = epath.Path(manual_dir)
  missing = [s for s in FOLDER_SPLITS if not (manual_dir / s).is_dir()]
  if missing:
    raise errors.MissingError(f'FER2013 folder release: no {" or ".join(missing)} folder in {manual_dir} '
                              f'(expected train/<class>/*.jpg and test/<class>/*.jpg)')
  records = []
  seen: dict[str, str] = {}
  for split in FOLDER_SPLITS:
    for class_dir in sorted((manual_dir / split).iterdir()):
      relative_dir = f'{split}/{class_dir.name}'
      if not class_dir.is_dir():
        if not class_dir.name.startswith('.'):
          report.add(REASON_IGNORED_FILE, relative_dir, f'not inside a class folder of {split}/')
        continue
      if class_dir.name not in FOLDER_CLASSES:
        raise errors.InputError(f'{relative_dir}: unknown class folder {class_dir.name!r}; expected one of '
                                f'{", ".join(sorted(FOLDER_CLASSES))}')
      for path in sorted(class_dir.iterdir()):
        relative = f'{relative_dir}/{path.name}'
        if path.name.startswith('.'):
          continue  # .DS_Store and similar are not data
        if path.suffix.lower() not in common.IMAGE_EXTENSIONS or not path.is_file():
          report.add(REASON_IGNORED_FILE, relative, 'not an image file')
          continue
        if not common.first_seen(seen, path.name, relative, report):
          continue
        records.append({'image_id': relative, 'path': os.fspath(path),
                        'label': FOLDER_CLASSES[class_dir.name], 'split': split, 'where': relative})
  if not records:
    raise errors.InputError(f'FER2013 folder release: no images under {manual_dir}/train or /test')
  return records


def encode_grey(pixels: np.ndarray) -> bytes:
  """A [48, 48] grey face as PNG bytes of its 3-channel (grey repeated) image."""
  ok, encoded = cv2.imencode('.png', np.repeat(pixels[..., None], 3, axis=-1))
  if not ok:
    raise RuntimeError('OpenCV failed to encode a FER2013 face')
  return encoded.tobytes()


@dataclasses.dataclass(eq=False)
class Fer2013Config(tfds.core.BuilderConfig):
  release: str = 'csv'             # 'csv' | 'folder'
  split_scheme: str = 'official'   # 'official' | 'random_70_10_20'
  val_fraction: float = 0.1        # folder release: share of each class of train -> validation
  split_seed: int = 0


class Fer2013(common.DetectionBuilder):
  """FER2013: 35,887 grey 48x48 faces, 7 expressions; box = the whole image."""

  VERSION = tfds.core.Version('1.0.0')
  CLASS_NAMES = CLASS_NAMES
  HOMEPAGE = ('https://www.kaggle.com/c/'
              'challenges-in-representation-learning-facial-expression-recognition-challenge')
  BUILDER_CONFIGS = [
      Fer2013Config(name='csv', description='fer2013.csv; Usage gives train / validation / test.'),
      Fer2013Config(name='folder', release='folder', description='train|test/<class>/*.jpg; '
                    'stratified 10 % of train as validation.'),
      Fer2013Config(name='csv_random', split_scheme='random_70_10_20',
                    description="fer2013.csv; the paper's random 70/10/20 split of all rows."),
      Fer2013Config(name='folder_random', release='folder', split_scheme='random_70_10_20',
                    description="Folder release; the paper's random 70/10/20 split of all images."),
  ]
  DEFAULT_CONFIG_NAME = 'csv'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  csv configs: put fer2013.csv (Kaggle "Challenges in Representation Learning: Facial Expression
  Recognition Challenge") in the manual dir. folder configs: put the image-folder release's train/ and
  test/ folders (each with angry/ disgust/ fear/ happy/ neutral/ sad/ surprise/) in the manual dir.
  """

  def _split_generators(self, dl_manager):
    config = self.builder_config
    if config.release == 'csv':
      records = read_csv(find_csv(dl_manager.manual_dir))
    elif config.release == 'folder':
      records = read_folders(dl_manager.manual_dir, self.report)
    else:
      raise errors.InputError(f"unknown FER2013 release {config.release!r}; expected 'csv' or 'folder'")
    return splits.split_generators(self, records, official=[r['split'] for r in records],
                                   val_fraction=config.val_fraction)

  def _generate_examples(self, records, split):
    for record in records:
      if 'pixels' in record:
        encoded, height, width = encode_grey(record['pixels']), IMAGE_SIZE, IMAGE_SIZE
      else:
        image = common.read_image(record['path'], record['where'], self.report)
        if image is None:
          continue  # recorded by read_image
        encoded, height, width = image
      bbox, labels = common.boxes_to_bbox(
          [(0.0, 0.0, float(width), float(height))], [record['label']], height=height, width=width,
          num_classes=len(CLASS_NAMES), where=record['where'], report=self.report)
      self.report.count_example(split)
      yield record['image_id'], {'image': encoded, 'image_id': record['image_id'],
                                 'objects': {'bbox': bbox, 'label': labels}}
