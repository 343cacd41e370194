"""ultralytics / Roboflow detection folders (data/yolo_folder.py), on tiny copies of the real layouts."""

import os

import cv2
import numpy as np
import pytest

from yolo_osam_jax import data as datasets
from yolo_osam_jax.data import common
from yolo_osam_jax.data import yolo_folder


def _write_image(path, height, width, grey=False, value=100):
  path.parent.mkdir(parents=True, exist_ok=True)
  image = np.full((height, width) if grey else (height, width, 3), value, np.uint8)
  assert cv2.imwrite(str(path), image)


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)


@pytest.fixture
def ultralytics_folder(tmp_path):
  """ultralytics export: names as a dict, images/{train,val}, labels/{train,val}."""
  root = tmp_path / 'faces'
  _write(root / 'data.yaml', 'path: .\ntrain: images/train\nval: images/val\nnc: 2\n'
         'names:\n  0: happy\n  1: sad\n')
  _write_image(root / 'images/train/a.jpg', 40, 60)
  _write(root / 'labels/train/a.txt', '0 0.5 0.5 0.4 0.6\n\n1 0.25 0.25 0.2 0.2\n')
  _write_image(root / 'images/train/b.png', 30, 30, grey=True)
  _write(root / 'labels/train/b.txt', '1 0.9 0.5 0.4 0.2\n')  # reaches x = 1.1: clipped
  _write_image(root / 'images/train/c.jpg', 20, 20)  # no label file: background
  _write_image(root / 'images/val/d.jpg', 20, 24)
  _write(root / 'labels/val/d.txt', '')  # empty: background
  return root


def test_label_path_rule():
  assert yolo_folder.label_path('/d/images/train/x.y.jpg') == yolo_folder.label_path(
      '/d/labels/train/x.y.png')
  assert str(yolo_folder.label_path('/d/images/train/x.y.jpg')) == '/d/labels/train/x.y.txt'
  # Only the last /images/ changes.
  assert str(yolo_folder.label_path('/images/d/images/a.jpg')) == '/images/d/labels/a.txt'


def test_builds_the_expected_examples(ultralytics_folder, tmp_path):
  data_dir = tmp_path / 'tfds'
  builder = datasets.build('yolo_folder', data_dir=data_dir, manual_dir=ultralytics_folder)
  assert builder.builder_config.name == 'faces'  # default config name: the yaml's folder
  assert datasets.class_names('yolo_folder', data_dir, 'faces') == ['happy', 'sad']

  train = builder.as_data_source('train')
  by_id = {train[i]['image_id'].decode(): train[i] for i in range(len(train))}
  assert sorted(by_id) == ['images/train/a.jpg', 'images/train/b.png', 'images/train/c.jpg']
  bbox, labels = common.decode_objects(by_id['images/train/a.jpg'])
  # cx .5 cy .5 w .4 h .6 -> x .3...7, y .2...8; cx .25 cy .25 w .2 h .2 -> .15...35 (ymin xmin ymax xmax).
  np.testing.assert_allclose(bbox, [[0.2, 0.3, 0.8, 0.7], [0.15, 0.15, 0.35, 0.35]], atol=1e-6)
  np.testing.assert_array_equal(labels, [0, 1])
  bbox, labels = common.decode_objects(by_id['images/train/b.png'])
  np.testing.assert_allclose(bbox, [[0.4, 0.7, 0.6, 1.0]], atol=1e-6)
  np.testing.assert_array_equal(labels, [1])
  assert by_id['images/train/b.png']['image'].shape == (30, 30, 3)
  assert common.decode_objects(by_id['images/train/c.jpg'])[0].shape == (0, 4)

  validation = builder.as_data_source('validation')
  assert len(validation) == 1 and validation[0]['image'].shape == (20, 24, 3)
  assert common.decode_objects(validation[0])[1].shape == (0,)

  report = common.stored_report(builder)
  assert report.counts == {'missing_label_file': 1, 'empty_label_file': 1, 'converted_grayscale': 1,
                           'box_clipped': 1}
  assert report.examples['missing_label_file'] == ['images/train/c.jpg: kept as background']
  assert report.examples['empty_label_file'] == ['labels/val/d.txt: kept as background']
  assert report.examples['box_clipped'][0].startswith('labels/train/b.txt:1')
  assert report.written == {'train': 3, 'validation': 1}


@pytest.mark.parametrize('line,message', [
    ('0 0.5 abc 0.1 0.1', 'cannot read'),
    ('2 0.5 0.5 0.1 0.1', 'class 2 is outside 0..1'),
    ('0.5 0.5 0.5 0.1 0.1', 'class 0.5 is outside'),
    ('0 0.5 0.5 0.1', '4 values'),
    ('0 0.5 nan 0.1 0.1', 'NaN'),
    ('0 0.5 0.5 -0.1 0.1', 'negative'),
    ('0 320 240 50 60', 'normalised'),
])
def test_bad_label_line_names_file_and_line(ultralytics_folder, tmp_path, line, message):
  _write(ultralytics_folder / 'labels/train/a.txt', f'0 0.5 0.5 0.4 0.6\n{line}\n')
  with pytest.raises(ValueError) as info:
    datasets.build('yolo_folder', data_dir=tmp_path / 'tfds', manual_dir=ultralytics_folder)
  assert 'labels/train/a.txt:2' in str(info.value)
  assert message in str(info.value)


def test_roboflow_layout_names_list_and_polygons(tmp_path):
  root = tmp_path / 'rf'
  _write(root / 'data.yaml', "train: ../train/images\nval: ../valid/images\nnc: 3\n"
         "names: ['anger', 'happy', 'neutral']\n")
  _write_image(root / 'train/images/p.jpg', 50, 50)
  # A segmentation polygon becomes its bounding box: x .2...6, y .1...5.
  _write(root / 'train/labels/p.txt', '2 0.2 0.1 0.6 0.1 0.6 0.5 0.2 0.5\n')
  _write_image(root / 'valid/images/q.jpg', 50, 50)
  _write(root / 'valid/labels/q.txt', '1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n')  # duplicate line
  builder = datasets.build('yolo_folder', data_dir=tmp_path / 'tfds', manual_dir=root / 'data.yaml',
                           config='roboflow')
  assert builder.info.features['objects']['label'].names == ['anger', 'happy', 'neutral']
  train = builder.as_data_source('train')
  bbox, labels = common.decode_objects(train[0])
  np.testing.assert_allclose(bbox, [[0.1, 0.2, 0.5, 0.6]], atol=1e-6)
  np.testing.assert_array_equal(labels, [2])
  bbox, labels = common.decode_objects(builder.as_data_source('validation')[0])
  assert len(bbox) == 1
  report = common.stored_report(builder)
  assert report.counts == {'polygon_label': 1, 'duplicate_box': 1}
  assert report.examples['duplicate_box'][0].startswith('valid/labels/q.txt:2')


def test_image_list_file_and_bad_images(tmp_path):
  root = tmp_path / 'lst'
  _write(root / 'data.yaml', 'path: .\ntrain: train.txt\nnames: [a]\n')
  _write_image(root / 'images/x.jpg', 10, 10)
  _write(root / 'labels/x.txt', '0 0.5 0.5 0.5 0.5\n')
  (root / 'images/empty.jpg').write_bytes(b'')
  _write(root / 'train.txt', './images/x.jpg\n./images/empty.jpg\n./images/x.jpg\n')
  builder = datasets.build('yolo_folder', data_dir=tmp_path / 'tfds', manual_dir=root)
  assert builder.info.splits['train'].num_examples == 1
  report = common.stored_report(builder)
  assert report.counts == {'empty_file': 1, 'duplicate_file_name': 1}
  assert report.examples['empty_file'] == ['images/empty.jpg']


@pytest.mark.parametrize('yaml_text,message', [
    ('train: images\nnames: {0: a, 2: b}\n', 'not 0..1'),
    ('train: images\nnc: 3\nnames: [a, b]\n', 'nc is 3'),
    ('train: images\n', 'field names'),
    ('val: images\nnames: [a]\n', 'field train'),
    ('train: nowhere\nnames: [a]\n', 'field train: nowhere'),
])
def test_bad_yaml_is_reported(tmp_path, yaml_text, message):
  root = tmp_path / 'bad'
  _write(root / 'data.yaml', yaml_text)
  _write_image(root / 'images/x.jpg', 10, 10)
  with pytest.raises((ValueError, FileNotFoundError)) as info:
    datasets.build('yolo_folder', data_dir=tmp_path / 'tfds', manual_dir=root)
  assert message in str(info.value) and 'data.yaml' in str(info.value)
