"""RAF-DB builders on tiny fixtures that copy the shipped layout (file names, list format, box files)."""

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from yolo_osam_jax import data
from yolo_osam_jax.data import common
from yolo_osam_jax.data import rafdb

# (file name, 1-based code, original (width, height), face box x_min y_min x_max y_max as written)
BASIC = [
    ('train_00001.jpg', 5, (64, 48), '10.0 8.0 42.0 40.0'),
    ('train_00002.jpg', 1, (40, 40), '0.0 0.0 40.0 40.0'),
    ('train_00003.jpg', 4, (50, 30), '5 5 25 25'),
    ('train_00004.jpg', 4, (50, 30), '-3.0 2.0 20.0 28.0'),   # negative x_min: clipped to 0, reported
    ('train_00005.jpg', 4, (50, 30), '1 1 49 29'),
    ('train_00006.jpg', 7, (32, 32), '4 4 28 28'),
    ('train_00007.jpg', 7, (32, 32), '4 4 28 28'),
    ('train_00008.jpg', 7, (32, 32), '4 4 28 28'),
    ('train_00009.jpg', 7, (32, 32), '4 4 28 28'),
    ('train_00010.jpg', 7, (32, 32), '4 4 28 28'),
    ('test_0001.jpg', 6, (60, 40), '30.0 10.0 60.0 40.0'),
    ('test_0002.jpg', 2, (60, 40), '0 0 30 20'),
]


def _write_jpg(path, width, height, value=128):
  path.parent.mkdir(parents=True, exist_ok=True)
  assert cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))


def write_rafdb(root, release='basic', entries=BASIC, aligned=True, box_files=True,
                list_lines=None):
  """Writes RAF-DB's layout under root/release: list file, original and aligned images, box files."""
  base = root / release
  (base / 'EmoLabel').mkdir(parents=True, exist_ok=True)
  lines = list_lines if list_lines is not None else [f'{n} {c}' for n, c, _, _ in entries]
  (base / 'EmoLabel' / 'list_patition_label.txt').write_text('\n'.join(lines) + '\n')
  for name, _, (width, height), box in entries:
    stem = name[:-4]
    _write_jpg(base / 'Image' / 'original' / name, width, height)
    if aligned:
      _write_jpg(base / 'Image' / 'aligned' / f'{stem}_aligned.jpg', 100, 100)
    if box_files:
      box_path = base / 'Annotation' / 'boundingbox' / f'{stem}_boundingbox.txt'
      box_path.parent.mkdir(parents=True, exist_ok=True)
      box_path.write_text(box + ' \n')
  return base


def _read_all(source):
  out = {}
  for i in range(len(source)):
    example = source[i]
    bbox, label = common.decode_objects(example)
    image_id = example['image_id']
    out[image_id.decode() if isinstance(image_id, bytes) else image_id] = (bbox, label, example['image'])
  return out


def test_original_build_reads_back_labels_boxes_and_splits(tmp_path):
  write_rafdb(tmp_path / 'manual')
  builder = data.build('rafdb_basic', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual',
                       config='original')
  assert builder.info.features['objects']['label'].names == [
      'surprise', 'fear', 'disgust', 'happiness', 'sadness', 'anger', 'neutral']
  # Official test split; validation: round_half_up(0.1 * n) per class of train =
  # code 5: 1 -> 0, code 1: 1 -> 0, code 4: 3 -> 0, code 7: 5 -> 1 (0.5 rounds up).
  record = builder.info.metadata['split']
  assert record['scheme'] == 'official'
  assert record['ids']['test'] == ['test_0001.jpg', 'test_0002.jpg']
  assert record['counts'] == {'train': 9, 'test': 2, 'validation': 1}
  # The split is stored with the dataset: a fresh builder reading the files sees the same record.
  reloaded = data.get_builder('rafdb_basic', data_dir=tmp_path / 'tfds', config='original')
  assert reloaded.info.metadata['split'] == record
  validation = _read_all(tfds.data_source('rafdb_basic/original', split='validation',
                                          data_dir=tmp_path / 'tfds'))
  assert [label.tolist() for _, label, _ in validation.values()] == [[6]]  # code 7 Neutral
  assert list(validation) == record['ids']['validation']

  test = _read_all(tfds.data_source('rafdb_basic/original', split='test', data_dir=tmp_path / 'tfds'))
  bbox, label, image = test['test_0001.jpg']
  assert image.shape == (40, 60, 3)
  assert label.tolist() == [5]  # code 6 Anger -> index 5
  # (ymin, xmin, ymax, xmax) = (10/40, 30/60, 40/40, 60/60)
  np.testing.assert_allclose(bbox, [[0.25, 0.5, 1.0, 1.0]], atol=1e-6)
  bbox, label, _ = test['test_0002.jpg']
  assert label.tolist() == [1]
  np.testing.assert_allclose(bbox, [[0.0, 0.0, 0.5, 0.5]], atol=1e-6)

  train = _read_all(tfds.data_source('rafdb_basic/original', split='train', data_dir=tmp_path / 'tfds'))
  assert len(train) == 9
  bbox, label, _ = train['train_00001.jpg']
  assert label.tolist() == [4]  # code 5 Sadness
  np.testing.assert_allclose(bbox, [[8 / 48, 10 / 64, 40 / 48, 42 / 64]], atol=1e-6)
  bbox, _, _ = train['train_00004.jpg']  # x_min -3 clipped to 0
  np.testing.assert_allclose(bbox, [[2 / 30, 0.0, 28 / 30, 20 / 50]], atol=1e-6)
  report = builder.build_report()
  assert report.count('box_clipped') == 1
  assert 'train_00004_boundingbox.txt' in report.examples['box_clipped'][0]
  assert dict(report.written) == {'train': 9, 'validation': 1, 'test': 2}


def test_aligned_random_split_counts_and_whole_image_box(tmp_path):
  write_rafdb(tmp_path / 'manual')
  builder = data.build('rafdb_basic', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual',
                       config='aligned_random')
  # 12 images: validation floor(1.2) = 1, test floor(2.4) = 2, train 9.
  assert builder.info.metadata['split']['counts'] == {'train': 9, 'validation': 1, 'test': 2}
  seen = {}
  for split in ('train', 'validation', 'test'):
    examples = _read_all(tfds.data_source('rafdb_basic/aligned_random', split=split,
                                          data_dir=tmp_path / 'tfds'))
    for image_id, (bbox, _, image) in examples.items():
      assert image.shape == (100, 100, 3)
      np.testing.assert_allclose(bbox, [[0.0, 0.0, 1.0, 1.0]])
      seen[image_id] = split
  assert sorted(seen) == sorted(name for name, *_ in BASIC)


def test_compound_uses_eleven_classes(tmp_path):
  entries = [('train_0001.jpg', 11, (20, 20), '0 0 20 20'), ('train_0002.jpg', 1, (20, 20), '0 0 10 10'),
             ('test_0001.jpg', 3, (20, 20), '5 5 15 15')]
  entries.append(('train_0003.jpg', 2, (20, 20), '0 0 10 10'))
  base = write_rafdb(tmp_path / 'manual', 'compound', entries, aligned=False)
  (base / 'Image' / 'original' / 'train_0003.jpg').write_bytes(b'')  # a 0-byte download
  # The manual dir may also point at compound/ itself.
  builder = data.build('rafdb_compound', data_dir=tmp_path / 'tfds',
                       manual_dir=tmp_path / 'manual' / 'compound', config='original')
  names = builder.info.features['objects']['label'].names
  assert len(names) == 11 and names[-1] == 'disgustedly_surprised' and names[2] == 'sadly_fearful'
  train = _read_all(tfds.data_source('rafdb_compound/original', split='train',
                                     data_dir=tmp_path / 'tfds'))
  assert train['train_0001.jpg'][1].tolist() == [10]
  test = _read_all(tfds.data_source('rafdb_compound/original', split='test', data_dir=tmp_path / 'tfds'))
  assert test['test_0001.jpg'][1].tolist() == [2]
  np.testing.assert_allclose(test['test_0001.jpg'][0], [[0.25, 0.25, 0.75, 0.75]])
  report = builder.build_report()
  assert report.count('empty_file') == 1 and 'train_0003.jpg' in report.examples['empty_file'][0]
  assert dict(report.written) == {'train': 2, 'test': 1}
  # One image per class in train: round_half_up(0.1) = 0 to validation, so no validation split.
  assert report.examples['empty_split'] == ['validation: no examples, so the split is not written']
  assert builder.info.metadata['split']['counts']['validation'] == 0
  assert 'validation' not in builder.info.splits


def test_degenerate_box_drops_the_image_and_says_so(tmp_path):
  entries = [('train_00001.jpg', 5, (20, 20), '5 5 5.5 15'),
             ('train_00002.jpg', 5, (20, 20), '2 2 18 18'),
             ('test_0001.jpg', 1, (20, 20), '0 0 20 20')]
  write_rafdb(tmp_path / 'manual', entries=entries, aligned=False)
  builder = data.build('rafdb_basic', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual',
                       config='original')
  report = builder.build_report()
  # 0.5 px wide after clipping: under the 1-pixel minimum, so the box goes, and with it the image.
  assert report.examples['box_degenerate'][0].startswith(
      'Annotation/boundingbox/train_00001_boundingbox.txt')
  assert report.examples['dropped_no_face'] == [
      'Image/original/train_00001.jpg: its face box was dropped; image skipped']
  assert dict(report.written) == {'train': 1, 'test': 1}
  train = _read_all(tfds.data_source('rafdb_basic/original', split='train', data_dir=tmp_path / 'tfds'))
  assert list(train) == ['train_00002.jpg']


# ---- bad input: parser-level errors name the file and line ----

def _parse(tmp_path, aligned=False, num_classes=7):
  return rafdb.parse_rafdb(tmp_path / 'basic', num_classes, aligned, common.BuildReport('t'))


def test_label_code_out_of_range_names_file_and_line(tmp_path):
  lines = ['train_00001.jpg 5', 'train_00002.jpg 8']
  write_rafdb(tmp_path, entries=BASIC[:2], list_lines=lines)
  with pytest.raises(ValueError, match=r'list_patition_label.txt:2: label code 8 is outside 1..7'):
    _parse(tmp_path)


def test_label_code_not_integer_names_line(tmp_path):
  write_rafdb(tmp_path, entries=BASIC[:2], list_lines=['train_00001.jpg 5', '', 'train_00002.jpg x'])
  with pytest.raises(ValueError, match=r'list_patition_label.txt:3: label code .x. is not an integer'):
    _parse(tmp_path)


def test_compound_code_12_rejected(tmp_path):
  write_rafdb(tmp_path, 'basic', entries=BASIC[:1], list_lines=['train_00001.jpg 12'])
  with pytest.raises(ValueError, match=r':1: label code 12 is outside 1..11'):
    _parse(tmp_path, num_classes=11)


def test_missing_boundingbox_file_is_an_error(tmp_path):
  base = write_rafdb(tmp_path, entries=BASIC[:3])
  (base / 'Annotation' / 'boundingbox' / 'train_00002_boundingbox.txt').unlink()
  with pytest.raises(FileNotFoundError, match=r'list_patition_label.txt:2: train_00002.jpg has no '
                     r'bounding-box file'):
    _parse(tmp_path)
  assert len(_parse(tmp_path, aligned=True)) == 3  # the aligned config needs no box files


def test_listed_image_missing_and_unlisted_image_are_errors(tmp_path):
  base = write_rafdb(tmp_path, entries=BASIC[:3])
  (base / 'Image' / 'aligned' / 'train_00003_aligned.jpg').unlink()
  with pytest.raises(FileNotFoundError, match=r':3: train_00003.jpg is listed but .*does not exist'):
    _parse(tmp_path, aligned=True)
  _write_jpg(base / 'Image' / 'original' / 'train_00099.jpg', 10, 10)
  with pytest.raises(ValueError, match=r"1 image\(s\) in .*original have no line .*'train_00099.jpg'"):
    _parse(tmp_path)


def test_nan_and_malformed_boxes_name_the_file(tmp_path):
  entries = [('train_00001.jpg', 5, (20, 20), 'nan 0 10 10')]
  write_rafdb(tmp_path, entries=entries)
  with pytest.raises(ValueError, match=r'train_00001_boundingbox.txt: NaN or infinite coordinate'):
    _parse(tmp_path)
  write_rafdb(tmp_path, entries=[('train_00001.jpg', 5, (20, 20), '1 2 3')])
  with pytest.raises(ValueError, match=r'train_00001_boundingbox.txt: expected 4 numbers'):
    _parse(tmp_path)


def test_duplicate_list_lines(tmp_path):
  write_rafdb(tmp_path, entries=BASIC[:2],
              list_lines=['train_00001.jpg 5', 'train_00002.jpg 1', 'train_00001.jpg 5'])
  report = common.BuildReport('t')
  records = rafdb.parse_rafdb(tmp_path / 'basic', 7, False, report)
  assert [r['image_id'] for r in records] == ['train_00001.jpg', 'train_00002.jpg']
  assert report.count('duplicate_file_name') == 1
  assert report.examples['duplicate_file_name'][0].startswith('EmoLabel/list_patition_label.txt:3')
  write_rafdb(tmp_path, entries=BASIC[:2],
              list_lines=['train_00001.jpg 5', 'train_00002.jpg 1', 'train_00001.jpg 4'])
  with pytest.raises(ValueError, match=r':3: train_00001.jpg is labelled 4, but .*:1 labels it 5'):
    _parse(tmp_path)


def test_byte_order_mark_and_crlf_in_list_are_accepted(tmp_path):
  base = write_rafdb(tmp_path, entries=BASIC[:2])
  (base / 'EmoLabel' / 'list_patition_label.txt').write_bytes(
      b'\xef\xbb\xbftrain_00001.jpg 5\r\ntrain_00002.jpg 1\r\n')
  assert [(r['image_id'], r['label']) for r in _parse(tmp_path)] == [
      ('train_00001.jpg', 4), ('train_00002.jpg', 0)]


def test_bad_file_name_in_list(tmp_path):
  write_rafdb(tmp_path, entries=BASIC[:1], list_lines=['val_00001.jpg 5'])
  with pytest.raises(ValueError, match=r":1: file name 'val_00001.jpg' is not train_<n>.jpg"):
    _parse(tmp_path)


def test_missing_release_folder_says_what_is_expected(tmp_path):
  with pytest.raises(FileNotFoundError, match='no EmoLabel/list_patition_label.txt'):
    rafdb.find_release_dir(tmp_path, 'basic')
