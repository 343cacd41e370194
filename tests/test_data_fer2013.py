"""FER2013 builder on tiny fixtures that copy the csv and folder releases exactly."""

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from yolo_osam_jax import data
from yolo_osam_jax.data import common
from yolo_osam_jax.data import fer2013

HEADER = 'emotion,pixels,Usage'
# (emotion, Usage) per data row; row i's pixels are (arange(2304) + 7 * i) % 256 so each face differs.
ROWS = [(0, 'Training'), (3, 'Training'), (3, 'Training'), (6, 'Training'), (2, 'Training'),
        (5, 'Training'), (1, 'Training'), (4, 'PublicTest'), (3, 'PublicTest'), (6, 'PrivateTest')]


def _pixels(row):
  return ((np.arange(2304) + 7 * row) % 256).tolist()


def _line(emotion, pixels, usage):
  return f'{emotion},{" ".join(str(v) for v in pixels)},{usage}'


def write_csv(root, rows=ROWS, extra_lines=()):
  root.mkdir(parents=True, exist_ok=True)
  lines = [HEADER] + [_line(e, _pixels(i), u) for i, (e, u) in enumerate(rows)] + list(extra_lines)
  (root / 'fer2013.csv').write_text('\n'.join(lines) + '\n')
  return root / 'fer2013.csv'


def _read_split(tmp_path, config, split):
  source = tfds.data_source(f'fer2013/{config}', split=split, data_dir=tmp_path / 'tfds')
  out = {}
  for i in range(len(source)):
    example = source[i]
    bbox, label = common.decode_objects(example)
    out[example['image_id'].decode()] = (bbox, label, example['image'])
  return out


def test_csv_release_builds_usage_splits_with_pixels_and_whole_image_boxes(tmp_path):
  write_csv(tmp_path / 'manual')
  builder = data.build('fer2013', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual',
                       config='csv')
  assert builder.info.features['objects']['label'].names == [
      'angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']
  train = _read_split(tmp_path, 'csv', 'train')
  validation = _read_split(tmp_path, 'csv', 'validation')
  test = _read_split(tmp_path, 'csv', 'test')
  assert sorted(train) == [f'fer2013_{i:05d}' for i in range(7)]
  assert sorted(validation) == ['fer2013_00007', 'fer2013_00008']
  assert sorted(test) == ['fer2013_00009']
  for split in (train, validation, test):
    for image_id, (bbox, label, image) in split.items():
      row = int(image_id.split('_')[1])
      assert label.tolist() == [ROWS[row][0]]
      np.testing.assert_allclose(bbox, [[0.0, 0.0, 1.0, 1.0]])
      assert image.shape == (48, 48, 3)
      expected = np.asarray(_pixels(row), np.uint8).reshape(48, 48)
      for channel in range(3):  # PNG is lossless: every grey value comes back exactly
        np.testing.assert_array_equal(image[..., channel], expected)
  assert builder.info.metadata['split']['counts'] == {'test': 1, 'train': 7, 'validation': 2}


def test_csv_random_split_counts(tmp_path):
  write_csv(tmp_path / 'manual')
  builder = data.build('fer2013', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual',
                       config='csv_random')
  # 10 rows: validation floor(1.0) = 1, test floor(2.0) = 2, train 7.
  assert builder.info.metadata['split']['counts'] == {'train': 7, 'validation': 1, 'test': 2}
  assert {s: builder.info.splits[s].num_examples for s in ('train', 'validation', 'test')} == {
      'train': 7, 'validation': 1, 'test': 2}
  ids = [i for s in ('train', 'validation', 'test') for i in _read_split(tmp_path, 'csv_random', s)]
  assert sorted(ids) == [f'fer2013_{i:05d}' for i in range(10)]


@pytest.mark.parametrize('bad_line, message', [
    (_line(0, _pixels(0)[:2303], 'Training'), r'fer2013.csv:12: 2303 pixel values, expected 2304'),
    (_line(0, _pixels(0)[:2303] + ['x'], 'Training'),
     r"fer2013.csv:12: pixel value 'x' is not an integer"),
    (_line(0, _pixels(0)[:2303] + [300], 'Training'),
     r'fer2013.csv:12: pixel values must be 0..255'),
    (_line(7, _pixels(0), 'Training'), r'fer2013.csv:12: emotion 7 is outside 0..6'),
    (_line('happy', _pixels(0), 'Training'), r"fer2013.csv:12: emotion 'happy' is not an integer"),
    (_line(0, _pixels(0), 'Validation'), r"fer2013.csv:12: Usage 'Validation' is not one of"),
    ('0,1 2 3', r'fer2013.csv:12: expected 3 fields'),
])
def test_malformed_csv_rows_name_the_line(tmp_path, bad_line, message):
  # 10 good rows are lines 2..11, so the bad row is line 12.
  path = write_csv(tmp_path, extra_lines=[bad_line])
  with pytest.raises(ValueError, match=message):
    fer2013.read_csv(path)


def test_csv_header_is_checked(tmp_path):
  (tmp_path / 'fer2013.csv').write_text('label,pixels,Usage\n')
  with pytest.raises(ValueError, match=r'fer2013.csv:1: expected the header "emotion,pixels,Usage"'):
    fer2013.read_csv(tmp_path / 'fer2013.csv')


# ---- folder release ----

# (split, class folder, file name, grey value)
FOLDER_FILES = [
    ('train', 'happy', 'Training_10.jpg', 10), ('train', 'happy', 'Training_11.jpg', 20),
    ('train', 'happy', 'Training_12.jpg', 30), ('train', 'happy', 'Training_13.jpg', 40),
    ('train', 'happy', 'Training_14.jpg', 50), ('train', 'angry', 'Training_20.jpg', 60),
    ('train', 'neutral', 'Training_30.jpg', 70), ('test', 'sad', 'PublicTest_1.jpg', 80),
    ('test', 'surprise', 'PrivateTest_2.jpg', 90),
]


def write_folders(root, files=FOLDER_FILES):
  for split, class_name, name, value in files:
    path = root / split / class_name / name
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((48, 48), value, np.uint8))  # grey JPEG, as shipped


def test_folder_release_builds_with_stratified_validation(tmp_path):
  write_folders(tmp_path / 'manual')
  (tmp_path / 'manual' / 'train' / 'happy' / 'notes.txt').write_text('not an image')
  builder = data.build('fer2013', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual',
                       config='folder')
  record = builder.info.metadata['split']
  # happy has 5 train images -> round_half_up(0.5) = 1 to validation; angry, neutral 1 each -> 0.
  assert record['counts'] == {'train': 6, 'test': 2, 'validation': 1}
  assert record['ids']['validation'][0].startswith('train/happy/')
  test = _read_split(tmp_path, 'folder', 'test')
  assert sorted(test) == ['test/sad/PublicTest_1.jpg', 'test/surprise/PrivateTest_2.jpg']
  bbox, label, image = test['test/sad/PublicTest_1.jpg']
  assert label.tolist() == [4]  # sad
  np.testing.assert_allclose(bbox, [[0.0, 0.0, 1.0, 1.0]])
  assert image.shape == (48, 48, 3)
  assert np.abs(image.astype(int) - 80).max() <= 2  # a flat JPEG decodes to (almost) its value
  train = _read_split(tmp_path, 'folder', 'train')
  assert train['train/angry/Training_20.jpg'][1].tolist() == [0]
  assert train['train/neutral/Training_30.jpg'][1].tolist() == [6]
  report = builder.build_report()
  assert report.count('converted_grayscale') == 9  # grey JPEGs become RGB, and the report says so
  assert report.examples['ignored_file'] == ['train/happy/notes.txt: not an image file']


def test_folder_release_unknown_class_folder_is_an_error(tmp_path):
  write_folders(tmp_path, FOLDER_FILES + [('train', 'contempt', 'Training_99.jpg', 1)])
  with pytest.raises(ValueError, match=r"train/contempt: unknown class folder 'contempt'"):
    fer2013.read_folders(tmp_path, common.BuildReport('t'))


def test_folder_release_duplicate_file_name_is_reported_and_skipped(tmp_path):
  write_folders(tmp_path, FOLDER_FILES + [('test', 'angry', 'Training_10.jpg', 1)])
  report = common.BuildReport('t')
  records = fer2013.read_folders(tmp_path, report)
  assert len(records) == len(FOLDER_FILES)
  assert report.examples['duplicate_file_name'] == [
      'test/angry/Training_10.jpg: same name as train/happy/Training_10.jpg']


def test_folder_release_missing_test_folder(tmp_path):
  write_folders(tmp_path, FOLDER_FILES[:3])
  with pytest.raises(FileNotFoundError, match='no test folder'):
    fer2013.read_folders(tmp_path, common.BuildReport('t'))
