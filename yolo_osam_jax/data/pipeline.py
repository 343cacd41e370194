"""grain input pipeline: TFDS examples → letterboxed (and, for training, yolov5-augmented) static batches.

A detection batch is a dict of numpy arrays (B = per-process batch, S = img_size, M = max_boxes):
  image      uint8   [B, S, S, 3]  RGB, letterboxed (training: mosaic/affine/HSV/flips applied)
  boxes      float32 [B, M, 4]     (cx, cy, w, h) normalised to the S×S image; zero where mask is False
  classes    int32   [B, M]
  mask       bool    [B, M]
  index      int64   [B]           record index in its split (-1 on padding rows)
  image_id   str     [B]
  orig_size  int32   [B, 2]        (h, w) of the original image
  letterbox  float32 [B, 3]        (scale, pad_x, pad_y): original_xy = (letterboxed_xy - pad) / scale
  valid      bool    [B]           False for the rows that pad a final partial evaluation batch
  boxes_dropped int32 [B]          boxes that did not fit in M (kept the M largest; logged by image_id)
In training batches `letterbox` and `orig_size` describe plain letterboxing of the record's own image;
the augmented boxes do not follow them (nothing maps training predictions back).

Loaders are `grain.DataLoader`s: `it = iter(loader)`; `it.get_state()` / `it.set_state(state)` save and
restore the position exactly. With worker processes grain batches inside each worker (worker w takes
every W-th record), so which records share a batch depends on `num_workers`; each record's augmented
content does not. Per-epoch reshuffling comes from `grain.IndexSampler` (a different
permutation per epoch from one seed); augmentation randomness is grain's per-record generator, derived
from the seed and the global sample position, so results do not depend on the number of workers.
`data_config.batch_size` is the global batch; each of `shard_count` processes gets its share.
"""

from __future__ import annotations

import glob
import importlib
import logging
import math
import os
from typing import Mapping, Sequence

from absl import flags as absl_flags
import grain.python as grain
import numpy as np

from yolo_osam_jax import errors
from yolo_osam_jax.data import transforms

log = logging.getLogger(__name__)

BATCH_KEYS = ('image', 'boxes', 'classes', 'mask', 'index', 'image_id', 'orig_size', 'letterbox',
              'valid', 'boxes_dropped')
CLASSIFICATION_KEYS = ('image', 'label', 'valid', 'index', 'image_id')


# ---------------------------------------------------------------------------------------------------
# TFDS source and example decoding.


def open_tfds_source(name: str, split: str, data_dir: str | None = None,
                     builder_config: str | None = None):
  """Random-access source over a prepared TFDS dataset (array_record; no TensorFlow needed).

  Never builds or downloads: a dataset that is not prepared raises an error that says how to build it.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  registry = importlib.import_module('yolo_osam_jax.data')
  if name in getattr(registry, 'BUILDERS', {}):
    # Registers the project's builder so its configs resolve; TFDS reads other prepared datasets
    # from their files in data_dir.
    registry.import_builder(name)
  full_name = f'{name}/{builder_config}' if builder_config else name
  root = os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')
  try:
    needs_files = bool(getattr(tfds.builder_cls(name), 'MANUAL_DOWNLOAD_INSTRUCTIONS', None))
  except Exception:  # noqa: BLE001 - a dataset TFDS does not know: say what the others need
    needs_files = True
  build_hint = (f"`python scripts/prepare_data.py --dataset {name}"
                f"{' --config ' + builder_config if builder_config else ''} --data_dir {root}"
                f"{' --manual_dir PATH' if needs_files else ''}`")
  if not os.path.isdir(root):
    raise errors.MissingError(f"data_dir {root} does not exist; prepare {full_name} there with {build_hint}")
  folder = os.path.join(root, name, *([builder_config] if builder_config else []))
  if not glob.glob(os.path.join(folder, '**', 'dataset_info.json'), recursive=True):
    raise errors.MissingError(f"{full_name} is not prepared in {root} (no {folder}/<version>/); prepare it "
                              f"with {build_hint}")
  try:
    return tfds.data_source(full_name, split=split, data_dir=data_dir or None, download=False)
  except NotImplementedError as e:  # TFDS's words for "prepared in another file format"
    raise errors.InputError(f"{folder}: prepared as TFRecord, which cannot be read at random; prepare it "
                            f"again into another --data_dir with {build_hint}") from e
  except (AssertionError, FileNotFoundError, tfds.core.DatasetNotFoundError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    where = data_dir or '$TFDS_DATA_DIR or ~/tensorflow_datasets'
    raise errors.MissingError(
          f"TFDS dataset {full_name!r} split {split!r} is not prepared in {where}. Build it once with "
          f"`python scripts/prepare_data.py --dataset {name} --manual_dir PATH` "
          f"(see README). TFDS said: {reason}") from e


def _text(value) -> str:
  if isinstance(value, np.ndarray):
    value = value.item() if value.shape == () else value.tolist()
  if isinstance(value, bytes):
    return value.decode('utf-8')
  return str(value)


def decode_example(example: Mapping, *, position: int | None = None) -> dict:
  """A TFDS example → the internal record the transforms use.

  Record: {'image': uint8 [H, W, 3] RGB, 'boxes': float32 [n, 4] xyxy pixels, 'classes': int32 [n],
  'image_id': str, 'orig_size': int32 [2] (h, w)}. TFDS boxes are normalised (ymin, xmin, ymax, xmax).
  Bad examples raise ValueError naming the image id (or the position in the source) and the field.
  """
  where = f'record {position}' if position is not None else 'example'
  if 'image_id' not in example:
    raise errors.InputError(f"{where}: missing field 'image_id' (fields: {sorted(example)})")
  image_id = _text(example['image_id'])
  where = f"{where} (image_id {image_id!r})"

  image = np.asarray(example.get('image'))
  if image.dtype != np.uint8:
    raise errors.InputError(f"{where}: field 'image' must be uint8, got {image.dtype}")
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:  # Grey images become three equal channels, as the network expects RGB.
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
    raise errors.InputError(f"{where}: field 'image' must be [H, W, 3] RGB, got shape {image.shape}")
  height, width = image.shape[:2]

  objects = example.get('objects')
  if objects is None or 'bbox' not in objects or 'label' not in objects:
    raise errors.InputError(f"{where}: field 'objects' must hold 'bbox' and 'label'")
  bbox = np.asarray(objects['bbox'], np.float32)
  labels = np.asarray(objects['label'])
  if bbox.size == 0:
    bbox = bbox.reshape(0, 4)
  if bbox.ndim != 2 or bbox.shape[1] != 4:
    raise errors.InputError(f"{where}: objects/bbox must be [n, 4] (ymin, xmin, ymax, xmax), got {bbox.shape}")
  labels = labels.reshape(-1)
  if labels.shape[0] != bbox.shape[0]:
    raise errors.InputError(f"{where}: objects/label has {labels.shape[0]} entries but objects/bbox has "
                            f"{bbox.shape[0]}")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise errors.InputError(f"{where}: objects/label must be integers, got {labels.dtype}")
  if labels.size and labels.min() < 0:
    raise errors.InputError(f"{where}: objects/label has a negative class {int(labels.min())}")
  if not np.all(np.isfinite(bbox)):
    raise errors.InputError(f"{where}: objects/bbox has NaN or infinite values: {bbox.tolist()}")
  bad = (bbox[:, 2] < bbox[:, 0]) | (bbox[:, 3] < bbox[:, 1])
  if bad.any():
    raise errors.InputError(f"{where}: objects/bbox row {int(np.argmax(bad))} has max < min: "
                            f"{bbox[np.argmax(bad)].tolist()}")
  ymin, xmin, ymax, xmax = bbox.T
  boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=1)
  return {
      'image': image,
      'boxes': boxes.astype(np.float32).reshape(-1, 4),
      'classes': labels.astype(np.int32),
      'image_id': image_id,
      'orig_size': np.array([height, width], np.int32),
  }


class DetectionSource:
  """grain random-access source: decodes examples and adds 'index' and 'valid'.

  `padded_length` > len(source) appends blank rows (valid=False, no boxes, index -1) so evaluation
  batches have a static size without dropping the tail of the split.
  """

  def __init__(self, source: Sequence, img_size: int, padded_length: int | None = None):
    self._source = source
    self._num_records = len(source)
    self._img_size = int(img_size)
    self._length = self._num_records if padded_length is None else int(padded_length)
    if self._length < self._num_records:
      raise errors.InputError(f"padded_length {padded_length} < number of records {self._num_records}")

  @property
  def num_records(self) -> int:
    return self._num_records

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if index >= self._num_records:
      if index >= self._length:
        raise IndexError(f"index {index} out of range for {self._length} rows")
      return {
          'image': np.full((self._img_size, self._img_size, 3), transforms.PAD_VALUE, np.uint8),
          'boxes': np.zeros((0, 4), np.float32),
          'classes': np.zeros((0,), np.int32),
          'image_id': '',
          'orig_size': np.array([self._img_size, self._img_size], np.int32),
          'index': -1,
          'valid': False,
      }
    record = decode_example(self._source[index], position=index)
    record['index'] = index
    record['valid'] = True
    return record

  def __repr__(self) -> str:
    return f"DetectionSource({self._source!r}, records={self._num_records}, rows={self._length})"


# ---------------------------------------------------------------------------------------------------
# Packing one augmented image into the fixed-shape batch row.

# Image ids whose boxes overflowed max_boxes, already logged in this process (one line per image).
_OVERFLOW_LOGGED: set[str] = set()


def pack_boxes(boxes_xyxy, classes, img_size: int, max_boxes: int):
  """Pads boxes to `max_boxes` rows. Returns (boxes cxcywh/S [M, 4], classes [M], mask [M], dropped).

  When there are more than `max_boxes`, the largest `max_boxes` (by area) are kept, in their original
  order, and `dropped` says how many were left out — the caller reports them.
  """
  boxes_xyxy = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
  classes = np.asarray(classes, np.int32).reshape(-1)
  n = len(boxes_xyxy)
  dropped = max(0, n - max_boxes)
  if dropped:
    area = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
    keep = np.sort(np.argsort(-area, kind='stable')[:max_boxes])
    boxes_xyxy, classes, n = boxes_xyxy[keep], classes[keep], max_boxes
  out_boxes = np.zeros((max_boxes, 4), np.float32)
  out_classes = np.zeros((max_boxes,), np.int32)
  mask = np.zeros((max_boxes,), bool)
  out_boxes[:n] = transforms.xyxy_to_cxcywh(boxes_xyxy) / np.float32(img_size)
  out_classes[:n] = classes
  mask[:n] = True
  return out_boxes, out_classes, mask, dropped


def _pack_example(record: Mapping, image, boxes_xyxy, classes, letterbox_params, *, img_size: int,
                  max_boxes: int) -> dict:
  boxes, classes, mask, dropped = pack_boxes(boxes_xyxy, classes, img_size, max_boxes)
  if dropped and record['image_id'] not in _OVERFLOW_LOGGED:
    _OVERFLOW_LOGGED.add(record['image_id'])
    log.warning("image_id %r: its sample (a mosaic around it when training) has %d boxes but "
                "data.max_boxes=%d; kept the %d largest and dropped %d (raise data.max_boxes to keep "
                "them all; every drop is counted in batch['boxes_dropped'], this line is logged once "
                "per image and process)", record['image_id'], dropped + max_boxes, max_boxes,
                max_boxes, dropped)
  return {
      'image': np.ascontiguousarray(image, np.uint8),
      'boxes': boxes,
      'classes': classes,
      'mask': mask,
      'index': np.int64(record['index']),
      'image_id': np.str_(record['image_id']),
      'orig_size': np.asarray(record['orig_size'], np.int32),
      'letterbox': np.asarray(letterbox_params, np.float32),
      'valid': np.bool_(record['valid']),
      'boxes_dropped': np.int32(dropped),
  }


def _plain_letterbox_params(record: Mapping, img_size: int):
  h, w = record['image'].shape[:2]
  scale, _, (pad_x, pad_y) = transforms.letterbox_geometry(h, w, img_size)
  return (scale, float(pad_x), float(pad_y))


class DetectionEvalMap(grain.MapTransform):
  """Letterbox only (no randomness)."""

  def __init__(self, img_size: int, max_boxes: int):
    self.img_size, self.max_boxes = int(img_size), int(max_boxes)

  def map(self, record):
    image, boxes, classes, params = transforms.eval_transform(record, self.img_size)
    return _pack_example(record, image, boxes, classes, params, img_size=self.img_size,
                         max_boxes=self.max_boxes)


class DetectionTrainMap(grain.RandomMapTransform):
  """yolov5 training augmentation; mosaic/mixup partners are drawn from the whole `source`."""

  def __init__(self, source: DetectionSource, img_size: int, max_boxes: int, aug: Mapping):
    self.source = source
    self.img_size, self.max_boxes = int(img_size), int(max_boxes)
    self.aug = transforms.aug_params(aug)

  def _random_record(self, rng: np.random.Generator):
    return self.source[int(rng.integers(self.source.num_records))]

  def random_map(self, record, rng: np.random.Generator):
    image, boxes, classes = transforms.train_transform(record, self.img_size, self.aug, rng,
                                                       self._random_record)
    params = _plain_letterbox_params(record, self.img_size)
    return _pack_example(record, image, boxes, classes, params, img_size=self.img_size,
                         max_boxes=self.max_boxes)


# ---------------------------------------------------------------------------------------------------
# Loaders.


def _per_process_batch(global_batch: int, shard_count: int) -> int:
  if global_batch <= 0:
    raise errors.InputError(f"batch size must be positive, got {global_batch}")
  if global_batch % shard_count:
    raise errors.InputError(f"global batch size {global_batch} is not divisible by shard_count {shard_count}")
  return global_batch // shard_count


def _check_shard(shard_index: int, shard_count: int):
  if shard_count < 1 or not 0 <= shard_index < shard_count:
    raise errors.InputError(f"need 0 <= shard_index < shard_count, got {shard_index} of {shard_count}")


def _loader(source, operations, *, num_rows: int, train: bool, seed: int, shard_index: int,
            shard_count: int, num_epochs: int | None, num_workers: int, batch: int):
  # Training shards drop the remainder so every process sees the same number of steps; evaluation
  # sources are padded to a multiple of the global batch, so nothing is dropped there.
  shard_options = grain.ShardOptions(shard_index=shard_index, shard_count=shard_count,
                                     drop_remainder=True)
  if num_rows // shard_count < batch and train:
    raise errors.InputError(f"{num_rows} records give each of {shard_count} shards fewer than one batch "
                            f"of {batch}")
  if num_workers > 0 and not absl_flags.FLAGS.is_parsed():
    # grain's multiprocessing reads its absl flags; a program that does not use absl.app (a notebook,
    # pytest) has not parsed them, so accept their defaults rather than fail on the first batch.
    absl_flags.FLAGS.mark_as_parsed()
  sampler = grain.IndexSampler(num_records=num_rows, shard_options=shard_options, shuffle=train,
                               num_epochs=num_epochs, seed=int(seed))
  return grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=list(operations) + [grain.Batch(batch_size=batch, drop_remainder=True)],
      worker_count=int(num_workers), shard_options=shard_options)


def make_detection_loader(source: Sequence, data_config, *, train: bool, seed: int | None = None,
                          shard_index: int = 0, shard_count: int = 1, num_epochs: int | None = None,
                          batch_size: int | None = None, num_workers: int | None = None):
  """A grain DataLoader of detection batches (see the module docstring for the batch layout).

  source: TFDS-style examples (`open_tfds_source(...)` or any sequence of such dicts).
  data_config: `config.data` (img_size, batch_size, max_boxes, num_workers, shuffle_seed, aug).
  train: shuffle every epoch and augment (epochs repeat forever unless num_epochs); otherwise letterbox
    only, one pass by default, every record exactly once (the last batch padded with valid=False rows).
  seed: shuffle and augmentation seed (default data_config.shuffle_seed).
  batch_size: global batch (default data_config.batch_size; evaluation usually passes config.eval's).
  """
  _check_shard(shard_index, shard_count)
  img_size = int(data_config.img_size)
  max_boxes = int(data_config.max_boxes)
  global_batch = int(batch_size if batch_size is not None else data_config.batch_size)
  batch = _per_process_batch(global_batch, shard_count)
  seed = int(data_config.shuffle_seed if seed is None else seed)
  workers = int(data_config.num_workers if num_workers is None else num_workers)
  num_records = len(source)
  if num_records == 0:
    raise errors.InputError("the data source is empty")
  if train:
    records = DetectionSource(source, img_size)
    operations = [DetectionTrainMap(records, img_size, max_boxes, data_config.aug)]
  else:
    padded = math.ceil(num_records / global_batch) * global_batch
    records = DetectionSource(source, img_size, padded_length=padded)
    operations = [DetectionEvalMap(img_size, max_boxes)]
    num_epochs = 1 if num_epochs is None else num_epochs
  return _loader(records, operations, num_rows=len(records), train=train, seed=seed,
                 shard_index=shard_index, shard_count=shard_count, num_epochs=num_epochs,
                 num_workers=workers, batch=batch)


# ---------------------------------------------------------------------------------------------------
# Classification view: one row per face (crop → letterbox → label).


def face_index(source: Sequence) -> np.ndarray:
  """[(record, box)] int64 [F, 2] for every face in `source`, record order. Reads every example once."""
  pairs = []
  for i in range(len(source)):
    count = len(np.asarray(source[i]['objects']['label']).reshape(-1))
    pairs.extend((i, j) for j in range(count))
  return np.asarray(pairs, np.int64).reshape(-1, 2)


def crop_face(record: Mapping, box_index: int) -> np.ndarray:
  """The pixels of one box (rounded outwards to whole pixels, clamped to the image)."""
  h, w = record['image'].shape[:2]
  x1, y1, x2, y2 = (float(v) for v in record['boxes'][box_index])
  # Boxes come back from normalised float32, so an edge meant to be on pixel 12 may read 11.9999:
  # allow a thousandth of a pixel before rounding outwards.
  eps = 1e-3
  left, top = max(0, int(math.floor(x1 + eps))), max(0, int(math.floor(y1 + eps)))
  right, bottom = min(w, int(math.ceil(x2 - eps))), min(h, int(math.ceil(y2 - eps)))
  if right - left < 1 or bottom - top < 1:
    raise errors.InputError(f"image_id {record['image_id']!r}: box {box_index} {[x1, y1, x2, y2]} covers no "
                            f"pixel of the {w}x{h} image")
  return record['image'][top:bottom, left:right]


class FaceSource:
  """grain random-access source over faces: row k = face `faces[k]`; rows past the faces are padding."""

  def __init__(self, source: Sequence, faces: np.ndarray, img_size: int,
               padded_length: int | None = None):
    self._source = source
    self._faces = np.asarray(faces, np.int64).reshape(-1, 2)
    self._img_size = int(img_size)
    self._length = len(self._faces) if padded_length is None else int(padded_length)

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if index >= len(self._faces):
      return {'image': np.full((self._img_size, self._img_size, 3), transforms.PAD_VALUE, np.uint8),
              'label': 0, 'image_id': '', 'index': -1, 'valid': False}
    record_index, box_index = (int(v) for v in self._faces[index])
    record = decode_example(self._source[record_index], position=record_index)
    if box_index >= len(record['classes']):
      raise errors.InputError(f"image_id {record['image_id']!r}: face {box_index} requested but the "
                              f"example has {len(record['classes'])} boxes")
    return {'image': crop_face(record, box_index), 'label': int(record['classes'][box_index]),
            'image_id': record['image_id'], 'index': index, 'valid': True}


class ClassificationMap(grain.RandomMapTransform):
  """Letterbox the face crop; when training also HSV jitter and flips (probabilities from aug)."""

  def __init__(self, img_size: int, aug: Mapping | None):
    self.img_size = int(img_size)
    self.aug = None if aug is None else transforms.aug_params(aug)

  def random_map(self, face, rng: np.random.Generator):
    image, _, _ = transforms.letterbox(face['image'], self.img_size, augment=self.aug is not None)
    if self.aug is not None:
      image = transforms.augment_hsv(image, rng, hgain=self.aug['hsv_h'], sgain=self.aug['hsv_s'],
                                     vgain=self.aug['hsv_v'])
      if rng.random() < self.aug['flipud']:
        image = np.ascontiguousarray(image[::-1])
      if rng.random() < self.aug['fliplr']:
        image = np.ascontiguousarray(image[:, ::-1])
    return {'image': image, 'label': np.int32(face['label']), 'valid': np.bool_(face['valid']),
            'index': np.int64(face['index']), 'image_id': np.str_(face['image_id'])}


def make_classification_loader(source: Sequence, data_config, *, train: bool, seed: int | None = None,
                               shard_index: int = 0, shard_count: int = 1,
                               num_epochs: int | None = None, batch_size: int | None = None,
                               num_workers: int | None = None, faces: np.ndarray | None = None):
  """A grain DataLoader of face-classification batches for the classifier baselines.

  Batch: {'image': uint8 [B, S, S, 3] (the face box cropped and letterboxed), 'label': int32 [B],
  'valid': bool [B], 'index': int64 [B] (row in `faces`), 'image_id': str [B]}. Every face of every
  example is one row; `faces` ([F, 2] (record, box) pairs) defaults to `face_index(source)`, which
  reads the whole source once. Same shuffling, sharding, padding and state rules as detection.
  """
  _check_shard(shard_index, shard_count)
  img_size = int(data_config.img_size)
  global_batch = int(batch_size if batch_size is not None else data_config.batch_size)
  batch = _per_process_batch(global_batch, shard_count)
  seed = int(data_config.shuffle_seed if seed is None else seed)
  workers = int(data_config.num_workers if num_workers is None else num_workers)
  faces = face_index(source) if faces is None else np.asarray(faces, np.int64).reshape(-1, 2)
  if len(faces) == 0:
    raise errors.InputError("the data source has no faces (no boxes in any example)")
  if train:
    rows = FaceSource(source, faces, img_size)
    operations = [ClassificationMap(img_size, data_config.aug)]
  else:
    rows = FaceSource(source, faces, img_size,
                      padded_length=math.ceil(len(faces) / global_batch) * global_batch)
    operations = [ClassificationMap(img_size, None)]
    num_epochs = 1 if num_epochs is None else num_epochs
  return _loader(rows, operations, num_rows=len(rows), train=train, seed=seed,
                 shard_index=shard_index, shard_count=shard_count, num_epochs=num_epochs,
                 num_workers=workers, batch=batch)
