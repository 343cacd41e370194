"""ultralytics / Roboflow detection folders (`data.yaml` + images/ + labels/), the published experiments' input.

Layout (SPEC §6), e.g. an ultralytics export::

  my_faces/data.yaml         path: .   train: images/train   val: images/val   test: images/test
                             names: [Surprise, Fear, ...]  (or {0: Surprise, 1: Fear, ...}),  nc: 7
  my_faces/images/train/x.jpg
  my_faces/labels/train/x.txt    one line per face: `cls cx cy w h`, normalised to [0, 1]

or a Roboflow export (`train: ../train/images`, `val: ../valid/images` next to data.yaml: like
ultralytics, a path starting with '../' that does not exist is retried without it). A split entry may
be a folder (searched recursively), a .txt file listing images (lines starting with './' are relative
to the list, others to the dataset root), or a list of those. `path`, when relative, is relative to the
yaml's folder. A label file is the image path with its last `/images/` replaced by `/labels/` and the
extension by `.txt`.

Images without a label file, or with an empty one, are kept as background and counted. Polygon lines
(`cls x1 y1 x2 y2 ...`, ultralytics segmentation labels) become their bounding box and are counted.
A line that cannot be read, a negative or NaN value, a class id ≥ nc, or coordinates that are clearly
not normalised (> 1.5) stop the build with an error naming the file and line.

Use: `build('yolo_folder', data_dir, manual_dir='my_faces/data.yaml', config='my_faces')` (manual_dir
may also be the folder holding data.yaml); read back with `tfds.data_source('yolo_folder/my_faces',
split=..., data_dir=...)`. The config name defaults to the yaml's folder name.
"""

from __future__ import annotations

import dataclasses
import os
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
import yaml

from yolo_osam_jax import errors
from yolo_osam_jax.data import common

# yaml split key -> TFDS split name (the project's configs use 'validation').
SPLITS = {'train': 'train', 'val': 'validation', 'test': 'test'}
# Values above this are pixel coordinates, not normalised ones; up to it they are clipped.
_MAX_NORMALISED = 1.5


@dataclasses.dataclass(eq=False)
class YoloFolderConfig(tfds.core.BuilderConfig):
  yaml_path: str = ''


def _slug(text: str) -> str:
  return re.sub(r'[^a-z0-9_]+', '_', text.lower()).strip('_') or 'default'


def find_yaml(manual_dir: str | os.PathLike) -> epath.Path:
  """`manual_dir` itself when it is a yaml file, else the data.yaml (or only *.yaml) inside it."""
  path = epath.Path(os.path.expanduser(os.fspath(manual_dir)))
  if path.is_file():
    return path
  if not path.exists():
    raise errors.MissingError(f'{path}: no such file or folder (expected data.yaml or its folder)')
  if (path / 'data.yaml').exists():
    return path / 'data.yaml'
  candidates = sorted(path.glob('*.yaml')) + sorted(path.glob('*.yml'))
  if len(candidates) != 1:
    raise errors.MissingError(f'{path}: expected data.yaml (found {[c.name for c in candidates]})')
  return candidates[0]


def read_data_yaml(yaml_path: str | os.PathLike) -> dict:
  """Parses data.yaml: {'root': Path, 'names': [str], 'splits': {tfds split: [entries]}}."""
  yaml_path = epath.Path(yaml_path)
  try:
    data = yaml.safe_load(errors.read_text(yaml_path, 'data.yaml'))
  except yaml.YAMLError as e:
    raise errors.InputError(f'{yaml_path}: not valid YAML ({e})') from e
  if not isinstance(data, dict):
    raise errors.InputError(f'{yaml_path}: expected a mapping with path/train/val/test/names')

  names = data.get('names')
  if isinstance(names, dict):
    try:
      by_index = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError) as e:
      raise errors.InputError(f'{yaml_path}: field names: keys must be class ids 0..nc-1') from e
    if sorted(by_index) != list(range(len(by_index))):
      raise errors.InputError(f'{yaml_path}: field names: class ids {sorted(by_index)} are not 0..{len(by_index) - 1}')
    names = [by_index[i] for i in range(len(by_index))]
  elif isinstance(names, (list, tuple)):
    names = [str(n) for n in names]
  else:
    raise errors.InputError(f'{yaml_path}: field names: expected a list or a dict of class names, got {names!r}')
  if not names:
    raise errors.InputError(f'{yaml_path}: field names is empty')
  if 'nc' in data and (isinstance(data['nc'], bool) or not isinstance(data['nc'], int)):
    raise errors.InputError(f'{yaml_path}: field nc: {data["nc"]!r} is not an integer (the number of classes)')
  if 'nc' in data and int(data['nc']) != len(names):
    raise errors.InputError(f'{yaml_path}: field nc is {data["nc"]} but names has {len(names)} entries')

  root = epath.Path(os.path.expanduser(str(data.get('path') or '.')))
  if not root.is_absolute():
    root = yaml_path.parent / root
  splits = {}
  for key, split in SPLITS.items():
    entries = data.get(key)
    if not entries:
      continue
    splits[split] = [entries] if isinstance(entries, str) else [str(e) for e in entries]
  if 'train' not in splits:
    raise errors.InputError(f'{yaml_path}: field train is missing')
  return {'root': root, 'names': names, 'splits': splits, 'yaml': yaml_path}


def _resolve(root: epath.Path, entry: str) -> epath.Path:
  path = epath.Path(os.path.expanduser(entry))
  if path.is_absolute():
    return path
  resolved = root / entry
  if not resolved.exists() and entry.startswith('../'):
    resolved = root / entry[3:]  # Roboflow's '../train/images' with the folders next to data.yaml
  return resolved


def list_images(root: epath.Path, entries: list[str], yaml_path, key: str) -> list[epath.Path]:
  """Image files of one split, in a fixed order."""
  images = []
  for entry in entries:
    path = _resolve(root, entry)
    if path.is_dir():
      images.extend(common.iter_files(path, common.IMAGE_EXTENSIONS))
    elif path.is_file():
      for line in errors.read_text(path, 'image list').splitlines():
        line = line.strip()
        if not line:
          continue
        if line.startswith('./'):
          images.append(path.parent / line[2:])
        else:
          images.append(_resolve(root, line))
    else:
      raise errors.MissingError(f'{yaml_path}: field {key}: {entry} resolves to {path}, which does not exist')
  return images


def label_path(image_path: str | os.PathLike) -> epath.Path:
  """ultralytics' rule: the last '/images/' becomes '/labels/', the extension '.txt'."""
  text = os.fspath(image_path)
  marker, replacement = f'{os.sep}images{os.sep}', f'{os.sep}labels{os.sep}'
  if marker in text:
    head, tail = text.rsplit(marker, 1)
    text = head + replacement + tail
  return epath.Path(os.path.splitext(text)[0] + '.txt')


def parse_label_file(path: epath.Path, where: str, num_classes: int,
                     report: common.BuildReport) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(boxes [n, 4] normalised cx cy w h, classes [n], per-box 'file:line') of one label file."""
  boxes, classes, places, seen = [], [], [], set()
  for number, line in enumerate(errors.read_text(path, 'label file').splitlines(), start=1):
    fields = line.split()
    if not fields:
      continue
    place = f'{where}:{number}'
    try:
      values = [float(f) for f in fields]
    except ValueError:
      raise errors.InputError(f'{place}: cannot read {line.strip()!r} (expected `cls cx cy w h`)') from None
    if len(values) == 5:
      cls, box = values[0], values[1:]
    elif len(values) >= 7 and len(values) % 2 == 1:
      # Segmentation polygon: its bounding box.
      cls, points = values[0], np.asarray(values[1:]).reshape(-1, 2)
      low, high = points.min(0), points.max(0)
      box = [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, high[0] - low[0], high[1] - low[1]]
      report.add('polygon_label', place, 'converted to its bounding box')
    else:
      raise errors.InputError(f'{place}: {len(values)} values in {line.strip()!r} (expected `cls cx cy w h`)')
    if not np.all(np.isfinite(values)):
      raise errors.InputError(f'{place}: NaN or infinite value in {line.strip()!r}')
    if not cls.is_integer() or not 0 <= cls < num_classes:
      raise errors.InputError(f'{place}: class {fields[0]} is outside 0..{num_classes - 1}')
    if min(values) < 0:
      raise errors.InputError(f'{place}: negative value in {line.strip()!r}')
    if max(values[1:]) > _MAX_NORMALISED:
      raise errors.InputError(f'{place}: value > {_MAX_NORMALISED} in {line.strip()!r}: labels must be '
                              'normalised to the image size')
    key = (int(cls), *np.round(box, 6))
    if key in seen:
      report.add('duplicate_box', place, 'same class and box as an earlier line (dropped)')
      continue
    seen.add(key)
    boxes.append(box)
    classes.append(int(cls))
    places.append(place)
  return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64), places


class YoloFolder(common.DetectionBuilder):
  """An ultralytics/Roboflow detection folder (data.yaml, images/, labels/) with expression classes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DIR_INSTRUCTIONS = """\
  manual_dir is the data.yaml of an ultralytics/Roboflow export, or the folder holding it."""
  # The registry passes manual_dir to the constructor: class names come from data.yaml and are
  # needed before download_and_prepare.
  MANUAL_DIR_AT_INIT = True
  BUILDER_CONFIGS = [YoloFolderConfig(name='default')]

  def __init__(self, *, config=None, manual_dir: str | os.PathLike | None = None,
               yaml_path: str | os.PathLike | None = None, **kwargs):
    source = yaml_path or manual_dir
    if source is not None and not isinstance(config, YoloFolderConfig):
      resolved = find_yaml(source)
      name = _slug(config) if isinstance(config, str) else _slug(resolved.parent.name)
      config = YoloFolderConfig(name=name, yaml_path=os.fspath(resolved),
                                description=f'ultralytics folder {resolved}')
    if isinstance(config, YoloFolderConfig) and not config.yaml_path:
      raise errors.InputError('yolo_folder needs its data.yaml: pass manual_dir (or yaml_path)')
    if config is None or (isinstance(config, str) and config == 'default'):
      raise errors.InputError('yolo_folder needs its data.yaml: pass manual_dir (or yaml_path)')
    self._data_yaml = read_data_yaml(config.yaml_path) if isinstance(config, YoloFolderConfig) else None
    super().__init__(config=config, **kwargs)

  def class_names(self) -> list[str]:
    return list(self._data_yaml['names'])

  def _split_generators(self, dl_manager):
    del dl_manager  # the files were given at construction
    data = self._data_yaml
    # Which split first listed each image: an image in two splits is a leak, recorded.
    self._split_of = {}
    return {
        split: self._generate_examples(split, list_images(data['root'], entries, data['yaml'], key))
        for key, split in SPLITS.items() if (entries := data['splits'].get(split))
    }

  def _generate_examples(self, split: str, images: list[epath.Path]):
    data = self._data_yaml
    root = os.path.abspath(os.fspath(data['root']))
    num_classes = len(data['names'])
    seen_labels = {}
    for image_path in images:
      absolute = os.path.abspath(os.fspath(image_path))
      image_id = os.path.relpath(absolute, root).replace(os.sep, '/')
      if absolute in self._split_of:
        self.report.add('duplicate_file_name', image_id,
                        f'listed again in {split} (first in {self._split_of[absolute]}; skipped)')
        continue
      self._split_of[absolute] = split
      labels_file = label_path(absolute)
      # Two images with one stem (a.jpg, a.png) share a label file, as in ultralytics: recorded.
      common.first_seen(seen_labels, os.fspath(labels_file), image_id, self.report)
      decoded = common.read_image(image_path, image_id, self.report)
      if decoded is None:
        continue
      encoded, height, width = decoded
      label_where = os.path.relpath(os.fspath(labels_file), root).replace(os.sep, '/')
      if not labels_file.exists():
        self.report.add('missing_label_file', image_id, 'kept as background')
        boxes, classes, places = np.zeros((0, 4)), np.zeros((0,), np.int64), []
      else:
        boxes, classes, places = parse_label_file(labels_file, label_where, num_classes, self.report)
        if len(boxes) == 0:
          self.report.add('empty_label_file', label_where, 'kept as background')
      cx, cy, w, h = boxes.T
      xyxy = np.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                       (cx + w / 2) * width, (cy + h / 2) * height], -1)
      bbox, classes = common.boxes_to_bbox(
          xyxy, classes, height=height, width=width, num_classes=num_classes,
          where=places, report=self.report)
      if len(places) and not len(bbox):
        self.report.add('background_image', image_id, 'every box was dropped')
      self.report.count_example(split)
      yield image_id, {
          'image': encoded,
          'image_id': image_id,
          'objects': {'bbox': bbox, 'label': classes},
      }
