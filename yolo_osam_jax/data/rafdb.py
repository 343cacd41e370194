"""RAF-DB (Real-world Affective Faces), basic and compound: TFDS builders `rafdb_basic`, `rafdb_compound`.

Layout as shipped (SPEC §6), under the manual dir (either the release folder itself or its parent):

  basic/EmoLabel/list_patition_label.txt            lines `train_00001.jpg 5` (sic: "patition")
  basic/Image/original/train_00001.jpg              the full photo
  basic/Image/aligned/train_00001_aligned.jpg       100x100 aligned face crop
  basic/Annotation/boundingbox/train_00001_boundingbox.txt   `x_min y_min x_max y_max` in pixels

`compound/` has the same layout with 11 compound classes. Label codes are 1-based in the list file and
become 0-based class indices in the order below. File names start with `train_` or `test_`: the
official split. Every listed image must exist and (config `original`) have a bounding-box file, and
every image in the image folder must be listed: RAF-DB labels every image, so a gap means a damaged
download, and the build stops with an error naming the file (and line).

Configs: `original` (face box from the bounding-box files), `aligned` (crops; box = whole image), each
with the official split (+ a stratified validation split carved from train) or, `*_random`, the
paper's random 70/10/20 split of all images pooled.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import tensorflow_datasets as tfds
from etils import epath

from yolo_osam_jax import errors
from yolo_osam_jax.data import common
from yolo_osam_jax.data import splits

BASIC_CLASSES = ('surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral')
COMPOUND_CLASSES = (
    'happily_surprised', 'happily_disgusted', 'sadly_fearful', 'sadly_angry', 'sadly_surprised',
    'sadly_disgusted', 'fearfully_angry', 'fearfully_surprised', 'angrily_surprised',
    'angrily_disgusted', 'disgustedly_surprised')

LABEL_LIST = 'EmoLabel/list_patition_label.txt'
ORIGINAL_DIR = 'Image/original'
ALIGNED_DIR = 'Image/aligned'
BOUNDINGBOX_DIR = 'Annotation/boundingbox'
_IMAGE_NAME = re.compile(r'^(train|test)_\d+\.jpg$')

# Reasons this builder adds to the build report (common.REASONS has the shared ones).
REASON_NO_FACE_LEFT = 'dropped_no_face'  # its only box was degenerate after clipping: image skipped


@dataclasses.dataclass(frozen=True)
class LabelLine:
  """One line of list_patition_label.txt."""
  file_name: str   # e.g. 'train_00001.jpg'
  label: int       # 0-based class index
  split: str       # 'train' | 'test', from the file name
  where: str       # 'EmoLabel/list_patition_label.txt:1'


def find_release_dir(manual_dir: str | os.PathLike, release: str) -> epath.Path:
  """The `basic/` or `compound/` folder: the manual dir itself or its child named `release`."""
  manual_dir = epath.Path(manual_dir)
  for candidate in (manual_dir / release, manual_dir):
    if (candidate / LABEL_LIST).exists():
      return candidate
  raise errors.MissingError(
        f'RAF-DB {release}: no {LABEL_LIST} in {manual_dir / release} or {manual_dir}; point the manual '
        f'dir at the folder holding `{release}/` (with EmoLabel/, Image/, Annotation/) or at `{release}/`')


def read_label_list(path: str | os.PathLike, num_classes: int,
                    report: common.BuildReport) -> list[LabelLine]:
  """Parses list_patition_label.txt: `<file name> <code 1..num_classes>` per line.

  Raises ValueError naming file and line for malformed lines, bad file names and codes outside
  1..num_classes, and for a file listed twice with different codes (listed twice with the same code:
  recorded as 'duplicate_file_name', the later line ignored).
  """
  path = epath.Path(path)
  where_file = f'{path.parent.name}/{path.name}'
  entries: list[LabelLine] = []
  seen: dict[str, LabelLine] = {}
  # A byte-order mark (files re-saved on Windows) would otherwise glue onto the first file name.
  text = errors.read_text(path, 'label list')
  for line_no, raw in enumerate(text.splitlines(), start=1):
    where = f'{where_file}:{line_no}'
    fields = raw.split()
    if not fields:
      continue
    if len(fields) != 2:
      raise errors.InputError(f'{where}: expected "<file name> <label code>", got {raw!r}')
    file_name, code_text = fields
    if not _IMAGE_NAME.match(file_name):
      raise errors.InputError(f'{where}: file name {file_name!r} is not train_<n>.jpg or test_<n>.jpg')
    try:
      code = int(code_text)
    except ValueError:
      raise errors.InputError(f'{where}: label code {code_text!r} is not an integer') from None
    if not 1 <= code <= num_classes:
      raise errors.InputError(f'{where}: label code {code} is outside 1..{num_classes}')
    entry = LabelLine(file_name, code - 1, file_name.split('_', 1)[0], where)
    if file_name in seen:
      first = seen[file_name]
      if first.label != entry.label:
        raise errors.InputError(f'{where}: {file_name} is labelled {code}, but {first.where} labels it '
                                f'{first.label + 1}')
      report.add('duplicate_file_name', where, f'same name as {first.where}')
      continue
    seen[file_name] = entry
    entries.append(entry)
  if not entries:
    raise errors.InputError(f'{where_file}: no labelled images')
  return entries


def read_boundingbox(path: str | os.PathLike) -> tuple[float, float, float, float]:
  """Reads `x_min y_min x_max y_max` (pixels) from a *_boundingbox.txt file."""
  path = epath.Path(path)
  text = errors.read_text(path, 'bounding-box file')
  fields = text.split()
  if len(fields) != 4:
    raise errors.InputError(f'{path}: expected 4 numbers "x_min y_min x_max y_max", got {text.strip()!r}')
  try:
    values = tuple(float(v) for v in fields)
  except ValueError:
    raise errors.InputError(f'{path}: non-numeric coordinate in {text.strip()!r}') from None
  if not all(math.isfinite(v) for v in values):
    raise errors.InputError(f'{path}: NaN or infinite coordinate in {text.strip()!r}')
  return values


def aligned_name(file_name: str) -> str:
  """'train_00001.jpg' -> 'train_00001_aligned.jpg'."""
  return file_name[:-len('.jpg')] + '_aligned.jpg'


def parse_rafdb(release_dir: str | os.PathLike, num_classes: int, aligned: bool,
                report: common.BuildReport) -> list[dict]:
  """Every labelled image of a RAF-DB release as a record dict, in list order.

  Record keys: image_id (the listed file name), path, file (path relative to the release dir),
  label (0-based), box (pixel x_min, y_min, x_max, y_max, or None = whole image for aligned crops),
  box_file (relative path of the box file, or None), split ('train' | 'test'), where (list line).
  """
  release_dir = epath.Path(release_dir)
  entries = read_label_list(release_dir / LABEL_LIST, num_classes, report)
  image_dir = release_dir / (ALIGNED_DIR if aligned else ORIGINAL_DIR)
  if not image_dir.is_dir():
    raise errors.MissingError(f'RAF-DB: image folder {image_dir} is missing')
  on_disk = {p.name for p in image_dir.iterdir() if p.suffix.lower() == '.jpg'}
  records = []
  for entry in entries:
    image_name = aligned_name(entry.file_name) if aligned else entry.file_name
    if image_name not in on_disk:
      raise errors.MissingError(f'{entry.where}: {entry.file_name} is listed but {image_dir / image_name} '
                                'does not exist')
    box, box_file = None, None
    if not aligned:
      box_file = f"{BOUNDINGBOX_DIR}/{entry.file_name[:-len('.jpg')]}_boundingbox.txt"
      if not (release_dir / box_file).exists():
        raise errors.MissingError(f'{entry.where}: {entry.file_name} has no bounding-box file '
                                  f'{release_dir / box_file}')
      box = read_boundingbox(release_dir / box_file)
    records.append({
        'image_id': entry.file_name,
        'path': os.fspath(image_dir / image_name),
        'file': f'{image_dir.relative_to(release_dir)}/{image_name}',
        'label': entry.label,
        'box': box,
        'box_file': box_file,
        'split': entry.split,
        'where': entry.where,
    })
  listed = {aligned_name(e.file_name) if aligned else e.file_name for e in entries}
  unlisted = sorted(on_disk - listed)
  if unlisted:
    raise errors.InputError(f'RAF-DB: {len(unlisted)} image(s) in {image_dir} have no line in '
                            f'{release_dir / LABEL_LIST}, e.g. {unlisted[:3]}')
  return records


@dataclasses.dataclass(eq=False)
class RafdbConfig(tfds.core.BuilderConfig):
  aligned: bool = False
  split_scheme: str = 'official'   # 'official' (+ validation carved from train) | 'random_70_10_20'
  val_fraction: float = 0.1        # share of each class of train moved to validation ('official')
  split_seed: int = 0


def _configs() -> list[RafdbConfig]:
  # A fresh list per builder class: TFDS keeps state on config objects.
  official = 'official train/test, stratified 10 % of train as validation'
  random = "the paper's random 70/10/20 split of all images"
  return [
      RafdbConfig(name='original',
                  description=f'Original photos, face box from the bounding-box files; {official}.'),
      RafdbConfig(name='aligned', aligned=True,
                  description=f'Aligned 100x100 crops, box = whole image; {official}.'),
      RafdbConfig(name='original_random', split_scheme='random_70_10_20',
                  description=f'Original photos, face box from the bounding-box files; {random}.'),
      RafdbConfig(name='aligned_random', aligned=True, split_scheme='random_70_10_20',
                  description=f'Aligned 100x100 crops, box = whole image; {random}.'),
  ]


class _RafdbBuilder(common.DetectionBuilder, skip_registration=True):
  """RAF-DB as a detector dataset: one face box per image with its expression class."""

  VERSION = tfds.core.Version('1.0.0')
  DEFAULT_CONFIG_NAME = 'original'
  HOMEPAGE = 'http://www.whdeng.cn/raf/model1.html'
  RELEASE = ''  # 'basic' | 'compound'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Request RAF-DB from its authors (http://www.whdeng.cn/raf/model1.html) and extract it so that the
  manual dir holds `basic/` and/or `compound/`, each with EmoLabel/list_patition_label.txt,
  Image/original/, Image/aligned/ and Annotation/boundingbox/ (or point the manual dir at one of them).
  """

  def _split_generators(self, dl_manager):
    config = self.builder_config
    release_dir = find_release_dir(dl_manager.manual_dir, self.RELEASE)
    records = parse_rafdb(release_dir, len(self.CLASS_NAMES), config.aligned, self.report)
    return splits.split_generators(self, records, official=[r['split'] for r in records],
                                   val_fraction=config.val_fraction)

  def _generate_examples(self, records, split):
    for record in records:
      example = self._example(record)
      if example is not None:
        self.report.count_example(split)
        yield record['image_id'], example

  def _example(self, record: dict) -> dict | None:
    image = common.read_image(record['path'], record['file'], self.report)
    if image is None:
      return None  # recorded by read_image
    encoded, height, width = image
    if record['box'] is None:
      box, box_where = (0.0, 0.0, float(width), float(height)), record['file']
    else:
      box, box_where = record['box'], record['box_file']
    bbox, labels = common.boxes_to_bbox(
        [box], [record['label']], height=height, width=width, num_classes=len(self.CLASS_NAMES),
        where=box_where, report=self.report)
    if len(bbox) == 0:
      # Every RAF-DB image shows its labelled face; without the box it would teach "no face here".
      self.report.add(REASON_NO_FACE_LEFT, record['file'], 'its face box was dropped; image skipped')
      return None
    return {'image': encoded, 'image_id': record['image_id'],
            'objects': {'bbox': bbox, 'label': labels}}


class RafdbBasic(_RafdbBuilder):
  """RAF-DB basic: 7 expressions (12,271 train / 3,068 test images)."""
  RELEASE = 'basic'
  CLASS_NAMES = BASIC_CLASSES
  BUILDER_CONFIGS = _configs()


class RafdbCompound(_RafdbBuilder):
  """RAF-DB compound: 11 compound expressions (3,162 train / 792 test images)."""
  RELEASE = 'compound'
  CLASS_NAMES = COMPOUND_CLASSES
  BUILDER_CONFIGS = _configs()
