"""Issue 16: what a checkpoint was trained on, two-stage recognition (face finder → crops → model)."""

import json
import logging
import os
import shutil

import cv2
import numpy as np
import pytest

from configs import base, ckplus, fer2013, rafdb_basic, yolo_folder
from yolo_osam_jax import faces, predict
from yolo_osam_jax.data import synthetic_faces

from conftest import DEMO_FIXTURE_SIZE, _demo_fixture_scene

# The astronaut's face in skimage.data.astronaut() (512×512), measured by eye on a 10-px grid drawn over
# the picture: skin from the left to the right cheek, x 180…275, from the fringe above the brows to the
# chin, y 85…185.
ASTRONAUT_FACE = (180.0, 85.0, 275.0, 185.0)


def iou(a, b):
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---------------------------------------------------------------------------------------------------
# training_data_of


@pytest.mark.parametrize('get_config, dataset, builder, kind', [
    (base.get_config, 'synthetic_faces', 'demo', 'face_boxes'),
    (rafdb_basic.get_config, 'rafdb_basic', 'aligned_random', 'whole_crop'),
    (fer2013.get_config, 'fer2013', 'csv', 'whole_crop'),
    (ckplus.get_config, 'ckplus', 'ck48', 'whole_crop'),
])
def test_training_data_of_project_configs(get_config, dataset, builder, kind):
  training = predict.training_data_of(get_config())
  assert (training.dataset, training.builder_config, training.box_kind) == (dataset, builder, kind)


def test_training_data_of_table():
  config = yolo_folder.get_config()
  config.data.builder_config = 'faces'
  assert predict.training_data_of(config).box_kind == 'face_boxes'
  config = rafdb_basic.get_config()
  config.data.builder_config = 'original'
  assert predict.training_data_of(config).box_kind == 'face_boxes'
  config.data.builder_config = 'aligned'
  assert predict.training_data_of(config).box_kind == 'whole_crop'
  config.data.dataset, config.data.builder_config = 'ckplus', 'sequences_kfold'
  assert predict.training_data_of(config).box_kind == 'face_boxes'
  config.data.dataset, config.data.builder_config = 'my_faces', 'x'
  assert predict.training_data_of(config).box_kind == 'unknown'
  assert predict.training_data_of({'model': {}}).box_kind == 'unknown'
  assert faces.box_kind_of('fer2013/folder_random', None) == 'whole_crop'


# ---------------------------------------------------------------------------------------------------
# Cropping and box mapping with a known face finder.


def test_crop_square_and_pixels():
  # A 40×30 box centred at (30, 35): side round(1.25 × 40) = 50, corners centre ∓ 25.
  assert faces.crop_square((10, 20, 50, 50), 1.25) == (5, 10, 55, 60)
  image = np.arange(100 * 120 * 3, dtype=np.int64).reshape(100, 120, 3).astype(np.uint8)
  np.testing.assert_array_equal(faces.crop(image, (5, 10, 55, 60)), image[10:60, 5:55])
  # Reaching over the top-left corner: the outside is grey 114, the inside the image's pixels.
  out = faces.crop(image, (-4, -6, 16, 14))
  assert out.shape == (20, 20, 3)
  assert (out[:6] == 114).all() and (out[:, :4] == 114).all()
  np.testing.assert_array_equal(out[6:, 4:], image[0:14, 0:16])
  with pytest.raises(ValueError, match='face box'):
    faces.crop_square((5, 5, 5, 9))


def test_two_stage_maps_boxes_and_sends_expected_crops():
  rng = np.random.default_rng(3)
  image = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
  boxes = [(20.0, 10.0, 60.0, 50.0), (100.0, 40.0, 150.0, 100.0)]  # the second runs off the bottom
  sent = []

  def predict_crops(crops):
    sent.extend(crops)
    # One weak and one strong detection per crop; the strong one's class is the crop's index.
    return [[predict.Detection((0, 0, 1, 1), 0, 'a', 0.3, (0.3, 0.1)),
             predict.Detection((1, 1, 2, 2), i, 'b', 0.9 - 0.1 * i, (0.1, 0.9))]
            for i in range(len(crops))]

  (found,) = faces.two_stage([image], lambda img: boxes, predict_crops, margin=1.25)
  # Crop 0: side 50 around (40, 30) → x 15…65, y 5…55. Crop 1: box clipped to y 40…90, side
  # round(1.25 × 50) = 62 around (125, 65) → x 94…156, y 34…96, rows 90…95 padded.
  np.testing.assert_array_equal(sent[0], image[5:55, 15:65])
  assert sent[1].shape == (62, 62, 3)
  np.testing.assert_array_equal(sent[1][:56], image[34:90, 94:156])
  assert (sent[1][56:] == 114).all()
  assert [d.box for d in found] == [boxes[0], (100.0, 40.0, 150.0, 90.0)]
  assert [d.class_id for d in found] == [0, 1] and [d.confidence for d in found] == [0.9, 0.8]


def _scene_with_faces():
  """A 200×260 grey canvas with two rendered 64² fixture scenes pasted at known places."""
  canvas = np.full((200, 260, 3), 90, np.uint8)
  places = [(10, 20), (150, 110)]
  for k, (x, y) in enumerate(places):
    scene, _, _ = synthetic_faces.render_scene(np.random.default_rng(10_000 + k), DEMO_FIXTURE_SIZE,
                                               _demo_fixture_scene())
    canvas[y:y + 64, x:x + 64] = scene
  # Boxes whose 1.25× square is exactly each pasted scene: side 51.2 → round 64 needs side ≥ 51.2.
  boxes = [(x + 6.4, y + 6.4, x + 57.6, y + 57.6) for x, y in places]
  return canvas, places, boxes


def test_two_stage_recognizer_runs_the_model_on_the_crops(demo_checkpoint):
  canvas, places, boxes = _scene_with_faces()
  rec = predict.Recognizer.from_checkpoint(demo_checkpoint, faces=lambda img: boxes, conf_thres=0.05)
  found = rec.predict(canvas)
  traces = predict.trace_count()
  again = rec.predict(canvas)
  assert predict.trace_count() == traces  # same bucket: no recompile
  assert found == again
  # Independently: the model on each pasted scene, cut by hand.
  direct = rec.predict_model([canvas[y:y + 64, x:x + 64] for x, y in places])
  expected = sorted([(tuple(b), max(d, key=lambda t: t.confidence)) for b, d in zip(boxes, direct) if d],
                    key=lambda t: -t[1].confidence)
  assert len(expected) == 2
  assert [d.box for d in found] == [b for b, _ in expected]
  assert [(d.class_id, d.probabilities) for d in found] == [(e.class_id, e.probabilities) for _, e in expected]
  for d, (_, e) in zip(found, expected):
    assert d.confidence == pytest.approx(e.confidence, abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# A real photograph.


def test_haar_finds_the_astronauts_face():
  skimage_data = pytest.importorskip('skimage.data')
  image = skimage_data.astronaut()
  boxes = faces.HaarFaceFinder()(image)
  assert len(boxes) == 1
  assert iou(boxes[0], ASTRONAUT_FACE) >= 0.5
  assert faces.HaarFaceFinder(profile=True)(image)[0] == boxes[0]


def test_two_stage_on_a_photo_reports_the_cascade_box(demo_checkpoint):
  skimage_data = pytest.importorskip('skimage.data')
  image = skimage_data.astronaut()
  rec = predict.Recognizer.from_checkpoint(demo_checkpoint, faces='haar', conf_thres=0.0)
  found = rec.predict(image)
  (cascade_box,) = faces.HaarFaceFinder()(image)
  assert len(found) == 1 and found[0].box == cascade_box


# ---------------------------------------------------------------------------------------------------
# faces='auto' and the synthetic-data warning.


def _with_data(checkpoint_dir, tmp_path, dataset, builder_config):
  out = tmp_path / f'{dataset}_{builder_config}'
  shutil.copytree(checkpoint_dir, out)
  config = json.loads((out / 'config.json').read_text())
  config['data']['dataset'], config['data']['builder_config'] = dataset, builder_config
  (out / 'config.json').write_text(json.dumps(config))
  return str(out)


def test_auto_faces_and_warning(demo_checkpoint, tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    rec = predict.Recognizer.from_checkpoint(demo_checkpoint)
  warnings = [r.getMessage() for r in caplog.records if 'drawn faces' in r.getMessage()]
  assert warnings == [f'{demo_checkpoint} was trained on drawn faces (synthetic_faces); it will not '
                      'recognise expressions on photographs']
  assert rec.face_finder is None and rec.training_data.box_kind == 'face_boxes'

  caplog.clear()
  crop_model = _with_data(demo_checkpoint, tmp_path, 'fer2013', 'csv')
  with caplog.at_level(logging.WARNING):
    rec = predict.Recognizer.from_checkpoint(crop_model, class_names=list('abcdefg'))
  assert not [r for r in caplog.records if 'drawn faces' in r.getMessage()]
  assert isinstance(rec.face_finder, faces.HaarFaceFinder)
  assert predict.Recognizer.from_checkpoint(crop_model, faces='model',
                                            class_names=list('abcdefg')).face_finder is None
  with pytest.raises(ValueError, match="unknown face finder 'dlib'"):
    predict.Recognizer.from_checkpoint(crop_model, faces='dlib')


def test_rafdb_original_config():
  from configs import rafdb_original  # pylint: disable=g-import-not-at-top
  config = rafdb_original.get_config()
  assert predict.training_data_of(config) == faces.TrainingData('rafdb_basic', 'original', 'face_boxes', 320)
  assert config.data.aug.mosaic == 1.0 and config.train.lr0 == 0.01 and config.model.num_classes == 7
