"""Shared pieces of every dataset builder: features, robust image reading, box checks, the build report.

TensorFlow-free route (checked here with tensorflow-datasets 4.9.10 and no TensorFlow installed):
  * Build with `builder.download_and_prepare(file_format='array_record')` and read with
    `tfds.data_source(name, split=..., data_dir=...)`; `tfds.load` / `as_dataset` need TensorFlow.
  * Give `tfds.features.Image` encoded bytes (or a path), never a numpy array: encoding an array goes
    through TensorFlow. `read_image` below returns bytes that decode to 8-bit RGB.
  * On read, `data_source[i]['image']` is decoded by OpenCV with IMREAD_UNCHANGED (no EXIF rotation,
    16-bit kept as 16-bit and then cast to uint8), which is why every image is normalised to plain
    8-bit RGB PNG/JPEG at build time.
  * `data_source[i]['objects']` comes back as Python lists (a list of [4] arrays, a list of int64), not
    stacked arrays; `decode_objects` turns them into `[n, 4]` float32 / `[n]` int64 arrays.
  * TFDS finds a builder's source file through the `importlib_resources` backport, which is not
    installed here; `DetectionBuilder.code_path` uses `inspect.getfile` instead (same answer).
  * `tfds.core.DatasetInfo(builder=self, ...)` is used instead of `dataset_info_from_configs`, which
    looks for metadata files next to the builder's module and fails for builders defined outside a
    TFDS-style package folder.

Every builder owns a `BuildReport`. Problems that lose or change data (unreadable images, conversions,
clipped or dropped boxes, background images, duplicates) are counted per reason with the first few
locations; the report is printed at the end of a build, stored as `build_report.json` next to the
dataset's array_record files and in the dataset info metadata (`builder.info.metadata['build_report']`).
Problems that make a label meaningless (NaN coordinates, unknown class) raise an error naming the file
and line instead: guessing would silently train on wrong labels.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import io
import json
import os
import re
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
from etils import epath
import PIL.Image
import tensorflow_datasets as tfds

from yolo_osam_jax import errors, io_utils

# Reasons a builder records. Builders may record other reasons too; these have fixed meanings.
REASONS = {
    'empty_file': 'image file has 0 bytes (skipped)',
    'unreadable_image': 'image cannot be decoded (skipped)',
    'image_too_large': f'image larger than MAX_IMAGE_PIXELS = {8192 * 8192:,} pixels (skipped)',
    'truncated_image': 'image data ends early (skipped)',
    'converted_grayscale': 'grayscale image converted to RGB',
    'converted_rgba': 'alpha channel dropped (as cv2.imread does)',
    'converted_palette': 'palette image converted to RGB',
    'converted_16bit': '16-bit image scaled to 8-bit',
    'converted_cmyk': 'CMYK image converted to RGB',
    'converted_format': 'image re-encoded as PNG (format not JPEG/PNG)',
    'exif_rotated': 'EXIF orientation applied to the pixels',
    'box_clipped': 'box extends outside the image (clipped)',
    'box_degenerate': 'box narrower than the minimum size after clipping (dropped)',
    'background_image': 'image without faces (kept as background)',
    'missing_label_file': 'image has no label file',
    'empty_label_file': 'label file has no boxes',
    'duplicate_file_name': 'file name seen twice',
}

# The largest image a build accepts (8192 × 8192): bigger ones are skipped and reported. Face datasets
# hold far smaller images, and decoding one 14000² image takes 600 MB; PIL's own decompression-bomb guard
# would otherwise stop the whole build without naming the file.
MAX_IMAGE_PIXELS = 8192 * 8192

# Re-encoded images are stored as PNG: lossless, so converting does not add a second JPEG loss.
_PNG_COMPRESSION = 3
_EXIF_ORIENTATION_TAG = 0x0112


@dataclasses.dataclass
class BuildReport:
  """Counts of everything a build skipped, changed or kept specially, with the first locations."""

  dataset: str
  max_examples: int = 10
  counts: dict[str, int] = dataclasses.field(default_factory=collections.Counter)
  examples: dict[str, list[str]] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(list))
  # Examples written per split, filled by the builder (`count_example`).
  written: dict[str, int] = dataclasses.field(default_factory=collections.Counter)

  def add(self, reason: str, where: str, detail: str = '') -> None:
    """Records one occurrence of `reason` at `where` (file, or file:line)."""
    self.counts[reason] += 1
    if len(self.examples[reason]) < self.max_examples:
      self.examples[reason].append(f'{where}: {detail}' if detail else str(where))

  def count(self, reason: str) -> int:
    return self.counts.get(reason, 0)

  def count_example(self, split: str) -> None:
    self.written[split] += 1

  def as_dict(self) -> dict[str, Any]:
    return {
        'dataset': self.dataset,
        'written': dict(sorted(self.written.items())),
        'counts': dict(sorted(self.counts.items())),
        'examples': {k: list(v) for k, v in sorted(self.examples.items()) if v},
    }

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'BuildReport':
    report = cls(dataset=d.get('dataset', ''))
    report.counts.update(d.get('counts', {}))
    report.written.update(d.get('written', {}))
    for reason, items in d.get('examples', {}).items():
      report.examples[reason].extend(items)
    return report

  def save(self, path: str | os.PathLike) -> None:
    epath.Path(path).write_text(json.dumps(self.as_dict(), indent=2) + '\n')

  @classmethod
  def load(cls, path: str | os.PathLike) -> 'BuildReport':
    return cls.from_dict(json.loads(epath.Path(path).read_text()))

  def summary(self) -> str:
    lines = [f'Build report for {self.dataset}:']
    if self.written:
      lines.append('  examples written: ' + ', '.join(
          f'{split} {n}' for split, n in sorted(self.written.items())))
    if not self.counts:
      lines.append('  no problems found')
    for reason, n in sorted(self.counts.items()):
      lines.append(f'  {reason}: {n}  ({REASONS.get(reason, reason)})')
      for example in self.examples.get(reason, []):
        lines.append(f'    {example}')
      if n > len(self.examples.get(reason, [])):
        lines.append(f'    ... {n - len(self.examples[reason])} more')
    return '\n'.join(lines)


def detection_features(class_names: Sequence[str],
                       extra: dict | None = None) -> tfds.features.FeaturesDict:
  """The features every builder writes: image, image id, boxes with expression labels, extras."""
  features = {
      'image': tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      'image_id': tfds.features.Text(),
      'objects': tfds.features.Sequence({
          'bbox': tfds.features.BBoxFeature(),
          'label': tfds.features.ClassLabel(names=list(class_names)),
      }),
  }
  for key, feature in (extra or {}).items():
    if key in features:
      raise ValueError(f'extra feature {key!r} would replace a standard detection feature')
    features[key] = feature
  return tfds.features.FeaturesDict(features)


def decode_objects(example: dict) -> tuple[np.ndarray, np.ndarray]:
  """(bbox [n, 4] float32 ymin, xmin, ymax, xmax normalised; label [n] int64) of a read example."""
  objects = example['objects']
  bbox = np.asarray(objects['bbox'], np.float32).reshape(-1, 4)
  label = np.asarray(objects['label'], np.int64).reshape(-1)
  return bbox, label


def _png_bit_depth(data: bytes) -> int | None:
  """The bit depth in a PNG's IHDR chunk (PIL reads 16-bit RGB PNGs as 8-bit without saying so)."""
  if data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) >= 26 and data[12:16] == b'IHDR':
    return data[24]
  return None


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
  """Applies an EXIF orientation (1–8) to an [H, W, C] array, as a viewer would display it."""
  if orientation == 2:
    return image[:, ::-1]
  if orientation == 3:
    return image[::-1, ::-1]
  if orientation == 4:
    return image[::-1]
  if orientation == 5:
    return image.transpose(1, 0, 2)
  if orientation == 6:
    return np.rot90(image, k=-1)
  if orientation == 7:
    return np.rot90(image, k=2).transpose(1, 0, 2)
  if orientation == 8:
    return np.rot90(image, k=1)
  return image


def _to_rgb8_16bit(data: bytes) -> np.ndarray:
  """A 16-bit image as 8-bit RGB; v * 257 maps back to v exactly (65535 -> 255)."""
  array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if array is None:
    raise errors.InputError('OpenCV cannot decode the 16-bit image')
  if array.ndim == 2:
    array = array[..., None]
  if array.shape[-1] in (3, 4):
    array = array[..., 2::-1]  # BGR(A) -> RGB, alpha dropped
  array = np.round(array.astype(np.float64) / 257.0).clip(0, 255).astype(np.uint8)
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  elif array.shape[-1] == 2:  # grey + alpha
    array = np.repeat(array[..., :1], 3, axis=-1)
  return np.ascontiguousarray(array)


def _to_rgb8(image: PIL.Image.Image) -> np.ndarray:
  """An 8-bit PIL image of any mode as [H, W, 3] uint8 RGB (alpha dropped, not composited)."""
  mode = image.mode
  if mode in ('RGBA', 'RGBa', 'RGBX', 'LA', 'La', 'PA'):
    # Dropping alpha keeps the stored colour, as cv2.imread does in the published pipeline.
    rgb_mode = 'L' if mode in ('LA', 'La') else 'RGB'
    if mode == 'PA':
      image = image.convert('RGBA')
    channels = np.asarray(image)
    array = channels[..., :1] if rgb_mode == 'L' else channels[..., :3]
  elif mode in ('L', '1'):
    array = np.asarray(image.convert('L'))[..., None]
  elif mode in ('I', 'F'):
    values = np.asarray(image)
    if values.min() < 0 or values.max() > 255:
      raise errors.InputError(f'image mode {mode} with values outside 0..255')
    array = values.astype(np.uint8)[..., None]
  else:  # RGB, P, CMYK, YCbCr, LAB, HSV: PIL knows the conversion (incl. Adobe inverted CMYK)
    array = np.asarray(image.convert('RGB'))
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  return np.ascontiguousarray(array)


def read_image(source: str | os.PathLike | bytes, where: str,
               report: BuildReport) -> tuple[bytes, int, int] | None:
  """Reads an image file (path or its bytes) as bytes that decode to 8-bit RGB, with its height, width.

  Plain 8-bit RGB JPEG/PNG files without EXIF rotation are passed through unchanged. Grayscale, alpha,
  palette, 16-bit, CMYK, other formats and EXIF-rotated images are converted and re-encoded as PNG,
  each recorded in `report`. Unreadable, truncated and 0-byte files are recorded and return None.
  """
  if isinstance(source, (bytes, bytearray, memoryview)):
    data = bytes(source)
  else:
    try:
      data = epath.Path(source).read_bytes()
    except OSError as e:
      report.add('unreadable_image', where, f'cannot read file ({e.strerror or e})')
      return None
  if not data:
    report.add('empty_file', where)
    return None

  try:
    with PIL.Image.open(io.BytesIO(data)) as image:
      if image.width * image.height > MAX_IMAGE_PIXELS:  # known from the header, before decoding
        report.add('image_too_large', where, f'{image.width}x{image.height}')
        return None
      image.load()  # decodes every byte; raises on truncation (PIL's LOAD_TRUNCATED_IMAGES is off)
      file_format = image.format
      mode = image.mode
      orientation = int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
      png_bits = _png_bit_depth(data)
      sixteen_bit = png_bits == 16 or mode.startswith('I;16') or (
          mode == 'I' and file_format in ('PNG', 'TIFF'))
      conversions = []
      if sixteen_bit:
        conversions.append('converted_16bit')
      if mode in ('L', '1', 'LA', 'La', 'I', 'F') or mode.startswith('I;16'):
        conversions.append('converted_grayscale')
      if mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA'):
        conversions.append('converted_rgba')
      if mode in ('P', 'PA'):
        conversions.append('converted_palette')
      if mode == 'CMYK':
        conversions.append('converted_cmyk')
      if file_format not in ('JPEG', 'PNG'):
        conversions.append('converted_format')
      if orientation not in (1, 0) and 1 <= orientation <= 8:
        conversions.append('exif_rotated')
      if not conversions and mode != 'RGB':  # e.g. YCbCr, LAB: still convert, say so
        conversions.append('converted_format')

      if not conversions:
        return data, image.height, image.width
      rgb = _to_rgb8_16bit(data) if sixteen_bit else _to_rgb8(image)
  except PIL.UnidentifiedImageError:
    report.add('unreadable_image', where, 'not an image format PIL/OpenCV know')
    return None
  except PIL.Image.DecompressionBombError as e:  # PIL refuses to even open it (> 2 × its own limit)
    report.add('image_too_large', where, str(e).split('.')[0])
    return None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    message = str(e)
    if 'truncated' in message.lower() or isinstance(e, EOFError):
      report.add('truncated_image', where, message)
    else:
      report.add('unreadable_image', where, message)
    return None

  rgb = np.ascontiguousarray(_orient(rgb, orientation))
  for reason in conversions:
    detail = f'mode {mode}, format {file_format}'
    if reason == 'exif_rotated':
      detail = f'orientation {orientation}'
    report.add(reason, where, detail)
  ok, encoded = cv2.imencode('.png', rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, _PNG_COMPRESSION])
  if not ok:
    raise RuntimeError(f'{where}: OpenCV failed to re-encode the converted image')
  return encoded.tobytes(), rgb.shape[0], rgb.shape[1]


def boxes_to_bbox(boxes_xyxy: np.ndarray | Sequence, labels: np.ndarray | Sequence, *,
                  height: int, width: int, num_classes: int, where: str | Sequence[str],
                  report: BuildReport, min_size: float = 1.0,
                  tolerance: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """Pixel (x_min, y_min, x_max, y_max) boxes -> clipped normalised BBoxFeature rows (ymin, xmin, ymax, xmax).

  `where` names the source of all boxes (a file) or of each box (e.g. 'labels/a.txt:3'). Raises
  ValueError naming it for non-finite coordinates, inverted boxes (max < min) and labels outside
  [0, num_classes). Boxes reaching more than `tolerance` pixels outside the image are clipped and
  recorded; boxes narrower or lower than `min_size` pixels after clipping are dropped and recorded.
  Returns (bbox [k, 4] float32, labels [k] int64).
  """
  boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
  labels = np.asarray(labels).reshape(-1)
  if len(labels) != len(boxes):
    raise errors.InputError(f'{where}: {len(boxes)} boxes but {len(labels)} labels')
  places = [where] * len(boxes) if isinstance(where, str) else list(where)
  if len(places) != len(boxes):
    raise errors.InputError(f'{len(places)} locations given for {len(boxes)} boxes')
  if height <= 0 or width <= 0:
    raise errors.InputError(f'{where}: image size {height}x{width} is empty')

  kept_boxes, kept_labels = [], []
  for box, label, place in zip(boxes, labels, places):
    if not np.all(np.isfinite(box)):
      raise errors.InputError(f'{place}: box {box.tolist()} has a NaN or infinite coordinate')
    if not float(label).is_integer() or not 0 <= int(label) < num_classes:
      raise errors.InputError(f'{place}: class {label} is outside 0..{num_classes - 1}')
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
      raise errors.InputError(f'{place}: box {box.tolist()} has max < min (expected x_min y_min x_max y_max)')
    clipped = np.array([np.clip(x0, 0, width), np.clip(y0, 0, height),
                        np.clip(x1, 0, width), np.clip(y1, 0, height)])
    if np.max(np.abs(clipped - box)) > tolerance:
      report.add('box_clipped', place, f'{np.round(box, 2).tolist()} in {width}x{height}')
    if clipped[2] - clipped[0] < min_size or clipped[3] - clipped[1] < min_size:
      report.add('box_degenerate', place, f'{np.round(box, 2).tolist()} in {width}x{height}')
      continue
    kept_boxes.append([clipped[1] / height, clipped[0] / width, clipped[3] / height, clipped[2] / width])
    kept_labels.append(int(label))
  bbox = np.clip(np.asarray(kept_boxes, np.float32).reshape(-1, 4), 0.0, 1.0)
  return bbox, np.asarray(kept_labels, np.int64)


def first_seen(seen: dict[str, str], key: str, where: str, report: BuildReport) -> bool:
  """True the first time `key` (e.g. a file name) is seen; later times record 'duplicate_file_name'."""
  if key in seen:
    report.add('duplicate_file_name', where, f'same name as {seen[key]}')
    return False
  seen[key] = where
  return True


class DetectionBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the project's builders: detection features, a build report, array_record output.

  Subclasses set `CLASS_NAMES` (or override `class_names()` per builder config), optionally
  `extra_features()`, and implement `_split_generators` / `_generate_examples`, recording problems
  in `self.report` and calling `self.report.count_example(split)` for each example they yield.
  """

  CLASS_NAMES: tuple[str, ...] = ()
  HOMEPAGE = ''
  CITATION = ''
  # True keeps the generation order (record i = i-th example generated) instead of TFDS's key hash.
  DISABLE_SHUFFLING = False

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:
    # TFDS's own lookup goes through the `importlib_resources` backport, which is not installed
    # (and not needed on Python >= 3.9); the module's file is what it would find.
    try:
      return epath.Path(inspect.getfile(cls))
    except (TypeError, OSError):
      return None

  def class_names(self) -> list[str]:
    return list(self.CLASS_NAMES)

  def extra_features(self) -> dict:
    return {}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.__doc__ or '').strip(),
        features=detection_features(self.class_names(), self.extra_features()),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=self.DISABLE_SHUFFLING,
    )

  @property
  def report(self) -> BuildReport:
    if getattr(self, '_report', None) is None:
      config = f'/{self.builder_config.name}' if self.builder_config else ''
      self._report = BuildReport(dataset=f'{self.name}{config}')
    return self._report

  def _download_and_prepare(self, dl_manager, download_config) -> None:
    self._report = None  # a fresh report per build
    try:
      super()._download_and_prepare(dl_manager, download_config)
    except AssertionError as e:
      match = re.search(r'split "([^"]+)": No examples were yielded', str(e))
      if not match:
        raise
      # TFDS's words name neither the source nor why: say which split came out empty and what was skipped.
      skipped = '; '.join(f'{reason} {n} (first: {self.report.examples[reason][0]})'
                          for reason, n in sorted(self.report.counts.items()) if self.report.examples[reason])
      raise errors.InputError(
          f'{self.report.dataset}: split {match.group(1)!r} has no usable images'
          f'{" — skipped: " + skipped if skipped else " (no images found for it)"}') from None
    # All splits have been generated; the base class writes dataset info (and metadata) after this.
    report = self.report
    if self.info.metadata is not None:
      self.info.metadata['build_report'] = report.as_dict()
    report.save(epath.Path(self.data_dir) / 'build_report.json')
    fingerprint = getattr(self, '_source_fingerprint', None)
    if fingerprint is not None:
      # Into the build's temporary folder: it appears with the data or not at all (data.build).
      from yolo_osam_jax.data import source_fingerprint  # pylint: disable=g-import-not-at-top
      source_fingerprint.write(self.data_dir, fingerprint)
      if self.info.metadata is not None:
        self.info.metadata['source_fingerprint'] = fingerprint
    print(report.summary(), flush=True)

  def build_report(self) -> BuildReport | None:
    """The stored report of a prepared dataset (None when the dataset was not built by this code)."""
    return stored_report(self)


def iter_files(root: str | os.PathLike, extensions: Iterable[str]) -> list[epath.Path]:
  """Files under `root` (recursive) whose suffix is in `extensions` (lower case, with dot), sorted."""
  # os.walk, not epath's rglob: epath refuses recursive patterns (they are slow on cloud storage).
  extensions = {e.lower() for e in extensions}
  found = []
  for folder, _, names in os.walk(os.fspath(root)):
    found.extend(os.path.join(folder, n) for n in names if os.path.splitext(n)[1].lower() in extensions)
  return [epath.Path(p) for p in sorted(found)]


IMAGE_EXTENSIONS = io_utils.IMAGE_EXTENSIONS


def stored_report(builder: tfds.core.DatasetBuilder) -> BuildReport | None:
  """The build report of a prepared dataset, for any builder (also TFDS's read-only ones)."""
  path = epath.Path(builder.data_dir) / 'build_report.json'
  if path.exists():
    return BuildReport.load(path)
  metadata = builder.info.metadata or {}
  if 'build_report' in metadata:
    return BuildReport.from_dict(metadata['build_report'])
  return None
