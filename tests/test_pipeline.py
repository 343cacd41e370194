"""grain pipeline on an in-memory fake TFDS source: batch layout, padding, determinism, resume, sharding.

The fake source is a list of dicts shaped exactly like `tfds.data_source(...)[i]` for our builders:
{'image': uint8 [H, W, 3], 'image_id': bytes, 'objects': {'bbox': float32 [n, 4] normalised
(ymin, xmin, ymax, xmax), 'label': int64 [n]}, 'subject': ...}. Each face is a filled rectangle of its
class colour on black, so boxes can be checked against pixels after the pipeline.
"""

import logging

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs.base import get_config
from yolo_osam_jax.data import pipeline
from yolo_osam_jax.data import transforms as T

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255),
                    (0, 255, 255), (255, 128, 0)], np.uint8)


def fake_example(i, height, width, rects):
  """rects: [(x1, y1, x2, y2, cls)] in pixels; returns a TFDS-style example."""
  image = np.zeros((height, width, 3), np.uint8)
  bbox = []
  for x1, y1, x2, y2, cls in rects:
    image[y1:y2, x1:x2] = COLOURS[cls]
    bbox.append((y1 / height, x1 / width, y2 / height, x2 / width))
  return {
      'image': image,
      'image_id': f'img_{i:03d}.jpg'.encode(),
      'objects': {'bbox': np.array(bbox, np.float32).reshape(-1, 4),
                  'label': np.array([r[4] for r in rects], np.int64)},
      'subject': np.int64(i % 3),
  }


def fake_source(n=10, seed=0):
  rng = np.random.default_rng(seed)
  source = []
  for i in range(n):
    h, w = (int(v) for v in rng.integers(40, 100, 2))
    faces = 1 + i % 3
    rects = []
    for k in range(faces):  # side-by-side faces, never touching
      x1 = int(w * k / faces) + 3
      x2 = int(w * (k + 1) / faces) - 3
      y1, y2 = int(h * 0.2), int(h * 0.8)
      rects.append((x1, y1, x2, y2, (i + k) % 7))
    source.append(fake_example(i, h, w, rects))
  return source


def data_config(**overrides):
  config = get_config().data
  config.img_size = 32
  config.batch_size = 4
  config.max_boxes = 4
  for k, v in overrides.items():
    setattr(config, k, v)
  return config


def take(loader_or_iter, count):
  it = iter(loader_or_iter)
  return [next(it) for _ in range(count)]


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# --------------------------------------------------------------------------------------------------
# Decoding.


def test_decode_example_converts_normalised_yxyx_to_pixel_xyxy():
  example = fake_example(7, 50, 80, [(8, 5, 40, 45, 2), (50, 10, 70, 30, 6)])
  record = pipeline.decode_example(example)
  np.testing.assert_allclose(record['boxes'], [[8, 5, 40, 45], [50, 10, 70, 30]], atol=1e-4)
  np.testing.assert_array_equal(record['classes'], [2, 6])
  assert record['classes'].dtype == np.int32
  assert record['image_id'] == 'img_007.jpg'
  np.testing.assert_array_equal(record['orig_size'], [50, 80])


def test_decode_example_grey_image_becomes_rgb():
  example = fake_example(0, 20, 20, [(2, 2, 10, 10, 0)])
  example['image'] = np.full((20, 20, 1), 77, np.uint8)
  record = pipeline.decode_example(example)
  assert record['image'].shape == (20, 20, 3) and np.all(record['image'] == 77)


@pytest.mark.parametrize('mutate, message', [
    (lambda e: e['objects'].__setitem__('bbox', np.array([[0.1, np.nan, 0.5, 0.5]], np.float32)),
     'NaN'),
    (lambda e: e['objects'].__setitem__('label', np.array([1, 2], np.int64)), '2 entries'),
    (lambda e: e.__setitem__('image', np.zeros((10, 10, 4), np.uint8)), 'shape'),
    (lambda e: e.__setitem__('image', np.zeros((10, 10, 3), np.float32)), 'uint8'),
    (lambda e: e['objects'].__setitem__('bbox', np.array([[0.6, 0.1, 0.5, 0.5]], np.float32)),
     'max < min'),
    (lambda e: e['objects'].__setitem__('label', np.array([-1], np.int64)), 'negative'),
])
def test_decode_example_bad_input_names_the_image(mutate, message):
  example = fake_example(3, 20, 20, [(2, 2, 10, 10, 0)])
  mutate(example)
  with pytest.raises(ValueError, match=message) as info:
    pipeline.decode_example(example, position=3)
  assert 'img_003.jpg' in str(info.value) and 'record 3' in str(info.value)


class PipelineTestFaces(tfds.core.GeneratorBasedBuilder):
  """A three-example dataset written the way our builders write theirs (array_record, PNG bytes)."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
        'image_id': tfds.features.Text(),
        'objects': tfds.features.Sequence({'bbox': tfds.features.BBoxFeature(),
                                           'label': tfds.features.ClassLabel(names=['a', 'b', 'c'])}),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(3):
      image = np.zeros((20, 30, 3), np.uint8)
      image[5:15, 3:12] = COLOURS[i]
      objects = {'bbox': [tfds.features.BBox(0.25, 0.1, 0.75, 0.4)], 'label': [i]}
      if i == 2:  # a background image: no faces
        objects = {'bbox': np.zeros((0, 4), np.float32), 'label': np.zeros((0,), np.int64)}
      yield i, {'image': cv2.imencode('.png', image[..., ::-1])[1].tobytes(),
                'image_id': f'x{i}.png', 'objects': objects}


def test_open_tfds_source_reads_a_prepared_array_record_dataset(tmp_path):
  PipelineTestFaces(data_dir=tmp_path).download_and_prepare(file_format='array_record')
  source = pipeline.open_tfds_source('pipeline_test_faces', 'train', data_dir=str(tmp_path))
  assert len(source) == 3
  record = pipeline.decode_example(source[1])
  assert record['image_id'] == 'x1.png'
  np.testing.assert_array_equal(record['image'][10, 5], COLOURS[1])  # RGB order kept
  # bbox (ymin 0.25, xmin 0.1, ymax 0.75, xmax 0.4) of a 30×20 image = x 3..12, y 5..15.
  np.testing.assert_allclose(record['boxes'], [[3, 5, 12, 15]], atol=1e-4)
  np.testing.assert_array_equal(record['classes'], [1])
  empty = pipeline.decode_example(source[2])
  assert empty['boxes'].shape == (0, 4) and empty['classes'].shape == (0,)
  batches = list(pipeline.make_detection_loader(source, data_config(batch_size=2), train=False))
  np.testing.assert_array_equal(np.concatenate([b['mask'].sum(1) for b in batches]), [1, 1, 0, 0])


def test_open_tfds_source_unprepared_dataset_says_how_to_build(tmp_path):
  with pytest.raises(FileNotFoundError, match='prepare_data.py --dataset no_such_faces') as info:
    pipeline.open_tfds_source('no_such_faces', 'train', data_dir=str(tmp_path))
  assert str(tmp_path) in str(info.value)


def test_pack_boxes_keeps_largest_and_counts_dropped():
  boxes = np.array([[0, 0, 2, 2], [0, 0, 10, 10], [0, 0, 4, 4], [0, 0, 8, 8]], np.float32)
  packed, classes, mask, dropped = pipeline.pack_boxes(boxes, [0, 1, 2, 3], 16, 2)
  assert dropped == 2
  np.testing.assert_array_equal(mask, [True, True])
  np.testing.assert_array_equal(classes, [1, 3])  # the two largest, original order kept
  np.testing.assert_allclose(packed, [[5 / 16, 5 / 16, 10 / 16, 10 / 16], [4 / 16, 4 / 16, .5, .5]])


# --------------------------------------------------------------------------------------------------
# Evaluation batches.


def test_eval_batches_layout_padding_and_exact_boxes():
  source = fake_source(10)
  config = data_config()
  batches = list(pipeline.make_detection_loader(source, config, train=False, seed=0))
  assert len(batches) == 3  # ceil(10 / 4)
  expected = {'image': ((4, 32, 32, 3), np.uint8), 'boxes': ((4, 4, 4), np.float32),
              'classes': ((4, 4), np.int32), 'mask': ((4, 4), np.bool_), 'index': ((4,), np.int64),
              'orig_size': ((4, 2), np.int32), 'letterbox': ((4, 3), np.float32),
              'valid': ((4,), np.bool_), 'boxes_dropped': ((4,), np.int32)}
  for batch in batches:
    assert set(batch) == set(pipeline.BATCH_KEYS)
    for key, (shape, dtype) in expected.items():
      assert batch[key].shape == shape and batch[key].dtype == dtype, key
    assert batch['image_id'].shape == (4,) and batch['image_id'].dtype.kind == 'U'
  valid = np.concatenate([b['valid'] for b in batches])
  np.testing.assert_array_equal(valid, [True] * 10 + [False] * 2)
  index = np.concatenate([b['index'] for b in batches])
  np.testing.assert_array_equal(index, list(range(10)) + [-1, -1])  # every record once, in order
  last = batches[-1]
  assert not last['mask'][2:].any() and not last['boxes'][2:].any()
  assert list(last['image_id'][2:]) == ['', '']

  for batch in batches:
    for row in np.flatnonzero(batch['valid']):
      example = source[batch['index'][row]]
      h, w = example['image'].shape[:2]
      assert batch['image_id'][row] == example['image_id'].decode()
      np.testing.assert_array_equal(batch['orig_size'][row], [h, w])
      n = len(example['objects']['label'])
      np.testing.assert_array_equal(batch['mask'][row], np.arange(4) < n)
      np.testing.assert_array_equal(batch['classes'][row][:n], example['objects']['label'])
      # The image is the plain letterbox of the example.
      image, scale, pad = T.letterbox(example['image'], 32)
      np.testing.assert_array_equal(batch['image'][row], image)
      np.testing.assert_allclose(batch['letterbox'][row], [scale, *pad], rtol=1e-6)
      # Boxes: normalised cxcywh → letterboxed pixels → original pixels = the TFDS bbox · (W, H).
      xyxy = T.cxcywh_to_xyxy(batch['boxes'][row][:n] * 32)
      back = T.unletterbox_boxes(xyxy, batch['letterbox'][row])
      ymin, xmin, ymax, xmax = example['objects']['bbox'].T
      np.testing.assert_allclose(back, np.stack([xmin * w, ymin * h, xmax * w, ymax * h], 1),
                                 atol=1e-3)


def test_eval_box_overflow_is_counted_and_logged(caplog):
  source = [fake_example(0, 40, 100, [(2 + 16 * k, 5, 14 + 16 * k - k, 35, k) for k in range(6)])]
  source[0]['image_id'] = b'crowded.png'
  with caplog.at_level(logging.WARNING, logger=pipeline.log.name):
    (batch,) = list(pipeline.make_detection_loader(source, data_config(batch_size=1), train=False,
                                                   seed=0))
  assert batch['boxes_dropped'][0] == 2
  assert batch['mask'][0].all()
  # Widths 12, 11, 10, 9, 8, 7 px: the four widest (classes 0-3) are kept.
  np.testing.assert_array_equal(batch['classes'][0], [0, 1, 2, 3])
  assert any('crowded.png' in r.getMessage() and 'max_boxes=4' in r.getMessage()
             for r in caplog.records)


def test_eval_batch_size_override_and_bad_divisibility():
  loader = pipeline.make_detection_loader(fake_source(5), data_config(), train=False, seed=0,
                                          batch_size=2)
  assert [len(b['valid']) for b in loader] == [2, 2, 2]
  with pytest.raises(ValueError, match='not divisible'):
    pipeline.make_detection_loader(fake_source(5), data_config(batch_size=3), train=False, seed=0,
                                   shard_count=2, shard_index=0)


# --------------------------------------------------------------------------------------------------
# Training batches.


def colour_box_error(image, box, cls):
  """Max-abs difference between `box` and the closest region drawn in colour `cls` (see transforms)."""
  image = image.astype(np.int32)
  lit = COLOURS[cls] > 0
  low = image[..., ~lit].max(-1) if (~lit).any() else 0
  mask = (image[..., lit].min(-1) - low > 40).astype(np.uint8)
  count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
  return min((np.abs(np.array([x, y, x + w, y + h]) - box).max() for x, y, w, h, _ in stats[1:count]),
             default=np.inf)


def test_train_batches_boxes_follow_pixels():
  # Exclude the orange class 6: (255, 128, 0) is a blend of red and yellow under the colour rule.
  source = [e for e in fake_source(16) if 6 not in e['objects']['label']]
  aug = dict(get_config().data.aug, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, degrees=5.0, flipud=0.5)
  config = data_config(img_size=64, max_boxes=16, aug=aug)
  checked = 0
  for batch in take(pipeline.make_detection_loader(source, config, train=True, seed=3), 3):
    assert batch['valid'].all()
    for row in range(len(batch['image'])):
      for box, cls in zip(batch['boxes'][row][batch['mask'][row]],
                          batch['classes'][row][batch['mask'][row]]):
        xyxy = T.cxcywh_to_xyxy(box[None] * 64)[0]
        assert colour_box_error(batch['image'][row], xyxy, int(cls)) <= 2.0
        checked += 1
  assert checked > 20


def test_train_is_deterministic_for_a_seed():
  source, config = fake_source(12), data_config()
  a = take(pipeline.make_detection_loader(source, config, train=True, seed=5), 4)
  b = take(pipeline.make_detection_loader(source, config, train=True, seed=5), 4)
  c = take(pipeline.make_detection_loader(source, config, train=True, seed=6), 4)
  for x, y in zip(a, b):
    assert_batches_equal(x, y)
  assert not np.array_equal(a[0]['image'], c[0]['image'])


def test_train_reshuffles_every_epoch():
  source, config = fake_source(12), data_config()
  batches = list(pipeline.make_detection_loader(source, config, train=True, seed=1, num_epochs=3))
  assert len(batches) == 9
  orders = [np.concatenate([b['index'] for b in batches[3 * e:3 * e + 3]]) for e in range(3)]
  for order in orders:
    np.testing.assert_array_equal(np.sort(order), np.arange(12))  # each epoch: every record once
  assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
  assert not np.array_equal(orders[0], np.arange(12))


def test_resume_from_state_gives_identical_next_batches():
  source, config = fake_source(12), data_config()
  it = iter(pipeline.make_detection_loader(source, config, train=True, seed=2))
  for _ in range(2):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]  # crosses the epoch boundary (3 batches per epoch)
  resumed = iter(pipeline.make_detection_loader(source, config, train=True, seed=2))
  resumed.set_state(state)
  for want in expected:
    assert_batches_equal(next(resumed), want)


def rows_by_index(batches):
  return {int(b['index'][r]): {k: np.asarray(v[r]) for k, v in b.items()}
          for b in batches for r in range(len(b['index']))}


def test_workers_give_the_same_examples_as_in_process():
  # grain batches inside each worker (worker w takes every W-th record), so which records share a
  # batch depends on the worker count; each record's augmented content must not.
  source, config = fake_source(8), data_config()
  in_process = list(pipeline.make_detection_loader(source, config, train=True, seed=4,
                                                   num_epochs=1))
  with_workers = list(pipeline.make_detection_loader(source, config, train=True, seed=4,
                                                     num_epochs=1, num_workers=2))
  a, b = rows_by_index(in_process), rows_by_index(with_workers)
  assert sorted(a) == sorted(b) == list(range(8))
  for index in a:
    assert_batches_equal(a[index], b[index])


# --------------------------------------------------------------------------------------------------
# Sharding.


def test_eval_shards_are_disjoint_and_cover_everything():
  source, config = fake_source(11), data_config(batch_size=4)
  per_shard = []
  for shard in range(2):
    batches = list(pipeline.make_detection_loader(source, config, train=False, seed=0,
                                                  shard_index=shard, shard_count=2))
    assert all(len(b['valid']) == 2 for b in batches)  # per-process batch = 4 / 2
    per_shard.append(batches)
  assert len(per_shard[0]) == len(per_shard[1]) == 3  # 12 padded rows / 2 shards / 2 per batch
  valid = [set(np.concatenate([b['index'][b['valid']] for b in batches]).tolist())
           for batches in per_shard]
  assert not valid[0] & valid[1]
  assert valid[0] | valid[1] == set(range(11))


def test_train_shards_are_disjoint_within_an_epoch():
  source, config = fake_source(16), data_config(batch_size=4)
  seen = []
  for shard in range(2):
    batches = list(pipeline.make_detection_loader(source, config, train=True, seed=0,
                                                  shard_index=shard, shard_count=2, num_epochs=1))
    seen.append(np.concatenate([b['index'] for b in batches]))
  assert len(seen[0]) == len(seen[1]) == 8
  assert not set(seen[0]) & set(seen[1])
  assert set(seen[0]) | set(seen[1]) == set(range(16))


# --------------------------------------------------------------------------------------------------
# Classification view.


def test_classification_eval_gives_every_face_once():
  source = fake_source(5)  # 1 + 2 + 3 + 1 + 2 = 9 faces
  config = data_config()
  batches = list(pipeline.make_classification_loader(source, config, train=False, seed=0))
  assert len(batches) == 3
  for batch in batches:
    assert batch['image'].shape == (4, 32, 32, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32 and batch['valid'].dtype == np.bool_
  valid = np.concatenate([b['valid'] for b in batches])
  np.testing.assert_array_equal(valid, [True] * 9 + [False] * 3)
  labels = np.concatenate([b['label'] for b in batches])[:9]
  expected = np.concatenate([e['objects']['label'] for e in source])
  np.testing.assert_array_equal(labels, expected)
  # Row 2 = record 1, face 1: its crop letterboxed, and it is a single flat colour block.
  record = pipeline.decode_example(source[1])
  crop = pipeline.crop_face(record, 1)
  assert np.all(crop == COLOURS[record['classes'][1]])
  np.testing.assert_array_equal(batches[0]['image'][2], T.letterbox(crop, 32)[0])


def test_classification_train_shapes_and_determinism():
  source, config = fake_source(8), data_config()
  a = take(pipeline.make_classification_loader(source, config, train=True, seed=1), 2)
  b = take(pipeline.make_classification_loader(source, config, train=True, seed=1), 2)
  for x, y in zip(a, b):
    assert_batches_equal(x, y)
  assert a[0]['image'].shape == (4, 32, 32, 3) and a[0]['valid'].all()
  # Rows are faces in `face_index` order; each label is its face's label.
  faces = pipeline.face_index(source)
  for batch in a:
    for index, label in zip(batch['index'], batch['label']):
      record, box = faces[index]
      assert label == source[record]['objects']['label'][box]


# --------------------------------------------------------------------------------------------------
# Benchmark helper.


def test_bench_fake_source_is_valid_and_smoke_benchmark_counts_images():
  from yolo_osam_jax.benchmarking import data as bench_data  # pylint: disable=g-import-not-at-top
  source = bench_data.fake_face_source(8)
  for i, example in enumerate(source):
    record = pipeline.decode_example(example, position=i)
    h, w = record['image'].shape[:2]
    assert 1 <= len(record['classes']) <= 4
    assert np.all(record['boxes'] >= 0) and np.all(record['boxes'][:, [0, 2]] <= w)
    assert np.all(record['boxes'][:, [1, 3]] <= h)
  rows = bench_data.run_data_benchmark(data_config(), smoke=True, img_size=64, batch_size=8)
  assert [r['name'] for r in rows] == ['data/train_full_aug', 'data/eval_letterbox']
  for row in rows:
    assert row['images'] == row['batches'] * 8
    assert row['images_per_s'] == pytest.approx(row['images'] / row['seconds'], rel=1e-2)
