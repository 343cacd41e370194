"""The embedded synthetic face-expression set (data/synthetic_faces.py)."""

import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from yolo_osam_jax.data import common
from yolo_osam_jax.data import synthetic_faces as sf

# Plain scenes: one flat background colour, no clutter, occlusion or image effects, no overlaps, so
# every pixel that differs from the background belongs to a face.
FLAT = dataclasses.replace(
    sf.DEMO_SCENE, background='flat', clutter=(0, 0), distractors=0.0, occlusion_prob=0.0,
    lighting=0.0, noise_std=0.0, blur_prob=0.0, jpeg_prob=0.0, max_overlap=0.0, min_faces=1,
    max_faces=4, rotation=25.0)


def test_render_is_deterministic_per_seed():
  a = sf.render_scene(sf.scene_rng(0, 'train', 3), 96, sf.HARD_SCENE)
  b = sf.render_scene(sf.scene_rng(0, 'train', 3), 96, sf.HARD_SCENE)
  c = sf.render_scene(sf.scene_rng(0, 'train', 4), 96, sf.HARD_SCENE)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])


def test_scene_contents_follow_the_config():
  sizes = []
  for index in range(30):
    image, boxes, labels = sf.render_scene(sf.scene_rng(1, 'train', index), 128, sf.HARD_SCENE)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert 1 <= len(boxes) <= 4 and len(labels) == len(boxes)
    assert np.all((labels >= 0) & (labels < 7))
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2:] <= 128)
    sizes.extend((boxes[:, 3] - boxes[:, 1]).tolist())
  # Faces span small to large (the four detection levels all get work).
  assert min(sizes) < 20 and max(sizes) > 64


def test_boxes_tightly_enclose_the_drawn_faces():
  for index in range(12):
    image, boxes, _ = sf.render_scene(sf.scene_rng(7, 'test', index), 128, FLAT)
    # The background colour: the most common corner colour (a face may cover a corner or two).
    corners = [image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]]
    background = max(corners, key=lambda c: sum(np.array_equal(c, d) for d in corners))
    face = np.any(image != background, axis=-1)
    covered = np.zeros_like(face)
    for x0, y0, x1, y1 in boxes.astype(int):
      covered[y0:y1, x0:x1] = True
      region = face[y0:y1, x0:x1]
      # Every edge row/column of the box holds a face pixel: the box is tight.
      assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
      # The face fills a good part of its box (an ellipse fills pi/4 of it unrotated).
      assert region.mean() > 0.5
    # No face pixel lies outside every box.
    assert not np.any(face & ~covered), f'scene {index}: face pixels outside the boxes'


def _measure(label):
  """Pixel measurements of the canonical face of `label` in the canonical frame."""
  params = sf.face_params(label)
  colour, mask = sf.draw_face(params)
  a = sf._HALF_WIDTH
  b = a * params.aspect
  ys, xs = np.nonzero(mask)
  cx = (xs.min() + xs.max() + 1) / 2
  is_white = np.all(np.abs(colour.astype(int) - sf.EYE_WHITE) <= 10, axis=-1)
  is_brow = np.all(np.abs(colour.astype(int) - params.brow_colour) <= 10, axis=-1)
  is_mouth_inside = np.all(np.abs(colour.astype(int) - sf.MOUTH_INSIDE) <= 10, axis=-1)
  is_lips = np.all(np.abs(colour.astype(int) - sf.LIPS) <= 12, axis=-1)
  top = ys.min()
  mid = top + b  # head centre row (no hair on canonical faces)
  upper = np.zeros_like(mask)
  upper[: int(mid), :] = True
  lower = ~upper
  # Brow height: mean row of brow pixels near the inner ends vs near the outer ends (right brow).
  brow_rows = lambda x0, x1: np.nonzero(is_brow[:, int(cx + x0 * a): int(cx + x1 * a)] & upper[:, :1])[0]
  inner, outer = brow_rows(0.14, 0.25).mean(), brow_rows(0.5, 0.62).mean()
  # Mouth: rows of lip pixels at the corners vs the centre.
  lip_rows = lambda x0, x1: np.nonzero(is_lips[:, int(cx + x0 * a): int(cx + x1 * a)] & lower[:, :1])[0]
  return {
      'eye_white': int((is_white & upper).sum()),
      'mouth_inside': int((is_mouth_inside & lower).sum()),
      'brow_inner_minus_outer': inner - outer,  # > 0: inner end lower (rows grow downwards)
      'brow_row': (inner + outer) / 2 - top,
      'mouth_corner_minus_centre': (lip_rows(0.7 * params.mouth_width, 0.95 * params.mouth_width).mean()
                                    - lip_rows(-0.03, 0.03).mean())
      if label in (3, 4) else None,
  }


def test_class_geometry_differs_as_described():
  m = {name: _measure(i) for i, name in enumerate(sf.CLASS_NAMES)}
  # Eyes: wide for Surprise/Fear, narrower for Anger/Disgust/Sadness, closed arcs for Happiness.
  assert m['Surprise']['eye_white'] > 1.5 * m['Neutral']['eye_white']
  assert m['Fear']['eye_white'] > 1.3 * m['Neutral']['eye_white']
  for name in ('Anger', 'Disgust', 'Sadness'):
    assert m[name]['eye_white'] < 0.8 * m['Neutral']['eye_white'], name
  assert m['Happiness']['eye_white'] == 0
  # Open mouths only for Surprise and Fear (Happiness only on its open-smile variant).
  assert m['Surprise']['mouth_inside'] > 100 and m['Fear']['mouth_inside'] > 50
  for name in ('Neutral', 'Sadness', 'Anger', 'Disgust', 'Happiness'):
    assert m[name]['mouth_inside'] == 0, name
  # Brows: Anger's inner ends drop, Sadness's and Fear's rise; Surprise's sit highest, Anger's lowest.
  assert m['Anger']['brow_inner_minus_outer'] > 6
  assert m['Sadness']['brow_inner_minus_outer'] < -6 and m['Fear']['brow_inner_minus_outer'] < -5
  assert abs(m['Neutral']['brow_inner_minus_outer']) < 3
  assert m['Surprise']['brow_row'] < m['Neutral']['brow_row'] - 8
  assert m['Anger']['brow_row'] > m['Neutral']['brow_row'] + 4
  # Mouth corners: up for Happiness, down for Sadness.
  assert m['Happiness']['mouth_corner_minus_centre'] < -8
  assert m['Sadness']['mouth_corner_minus_centre'] > 6
  # And all seven canonical faces are different images.
  faces = [sf.draw_face(sf.face_params(i))[0] for i in range(7)]
  for i in range(7):
    for j in range(i + 1, 7):
      assert faces[i].shape != faces[j].shape or not np.array_equal(faces[i], faces[j])


def test_demo_and_hard_configs():
  configs = {c.name: c for c in sf.SyntheticFaces.BUILDER_CONFIGS}
  demo, hard = configs['demo'], configs['hard']
  assert (demo.image_size, demo.num_train, demo.num_validation, demo.num_test) == (128, 1200, 100, 100)
  assert demo.scene.min_face_px >= 20 and hard.image_size > demo.image_size
  assert hard.num_train > demo.num_train and hard.scene.occlusion_prob > demo.scene.occlusion_prob
  assert sf.SyntheticFaces.CLASS_NAMES == (
      'Surprise', 'Fear', 'Disgust', 'Happiness', 'Sadness', 'Anger', 'Neutral')


def test_builds_to_array_record_and_reads_back(tmp_path):
  # The demo config, reduced in size (a custom config: same scene settings, fewer images).
  demo = {c.name: c for c in sf.SyntheticFaces.BUILDER_CONFIGS}['demo']
  small = sf.SyntheticFacesConfig(name='demo_small', image_size=64, num_train=6, num_validation=2,
                                  num_test=3, seed=5, encoding='png', scene=demo.scene)
  builder = sf.SyntheticFaces(data_dir=str(tmp_path), config=small)
  builder.download_and_prepare(file_format='array_record')
  assert {s: builder.info.splits[s].num_examples for s in ('train', 'validation', 'test')} == {
      'train': 6, 'validation': 2, 'test': 3}
  source = builder.as_data_source(split='test')
  assert len(source) == 3
  for index in range(3):
    example = source[index]
    # Records keep generation order, so record i re-renders from scene_rng(seed, split, i).
    image, boxes, labels = sf.render_scene(sf.scene_rng(5, 'test', index), 64, demo.scene)
    assert example['image_id'] == f'test_{index:06d}'.encode()
    np.testing.assert_array_equal(example['image'], image)
    bbox, label = common.decode_objects(example)
    expected = np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3], boxes[:, 2]], -1) / 64
    np.testing.assert_allclose(bbox, expected, atol=1e-6)
    np.testing.assert_array_equal(label, labels)
  assert builder.info.features['objects']['label'].names == list(sf.CLASS_NAMES)
  report = common.stored_report(builder)
  assert report.written == {'train': 6, 'validation': 2, 'test': 3}


def test_registered_demo_config_is_readable_with_tfds_data_source(tmp_path):
  # tfds.data_source by name: the registered builder reading what a (tiny) build wrote.
  demo = {c.name: c for c in sf.SyntheticFaces.BUILDER_CONFIGS}['demo']
  tiny = dataclasses.replace(demo, num_train=2, num_validation=1, num_test=1)
  builder = sf.SyntheticFaces(data_dir=str(tmp_path), config='demo')
  builder._builder_config = tiny  # same name and version as the registered demo, fewer images
  builder.download_and_prepare(file_format='array_record')
  source = tfds.data_source('synthetic_faces/demo', split='train', data_dir=str(tmp_path))
  assert len(source) == 2
  assert source[1]['image'].shape == (128, 128, 3) and source[1]['image'].dtype == np.uint8
