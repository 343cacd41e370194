"""CK+ builder on tiny fixtures that copy the sequence and CK+48 releases exactly."""

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from yolo_osam_jax import data
from yolo_osam_jax.data import ckplus
from yolo_osam_jax.data import common

# (subject, sequence, number of frames, emotion code or None = unlabelled), as in the real release.
SEQUENCES = [
    ('S005', '001', 5, 3),     # disgust: peak frames 3, 4, 5
    ('S010', '001', 4, 7),     # surprise: 2, 3, 4
    ('S010', '002', 3, None),  # no emotion file (266 of CK+'s 593 sequences are like this)
    ('S010', '004', 6, 2),     # contempt: 4, 5, 6
    ('S011', '001', 3, 5),     # happy: 1, 2, 3 (too short for a separate neutral frame)
    ('S022', '001', 4, 1),     # anger: 2, 3, 4
]
WIDTH, HEIGHT = 64, 48


def _frame_name(subject, sequence, frame):
  return f'{subject}_{sequence}_{frame:08d}.png'


def write_sequences(root, sequences=SEQUENCES):
  """cohn-kanade-images/<S>/<seq>/<S>_<seq>_<frame>.png and Emotion/<S>/<seq>/..._emotion.txt."""
  for subject, sequence, num_frames, code in sequences:
    image_dir = root / 'cohn-kanade-images' / subject / sequence
    image_dir.mkdir(parents=True, exist_ok=True)
    for frame in range(1, num_frames + 1):
      # A flat grey frame: nothing for the face cascade to find, so the whole-frame fallback is used.
      grey = np.full((HEIGHT, WIDTH), 100 + frame, np.uint8)
      assert cv2.imwrite(str(image_dir / _frame_name(subject, sequence, frame)), grey)
    emotion_dir = root / 'Emotion' / subject / sequence
    emotion_dir.mkdir(parents=True, exist_ok=True)  # CK+ ships empty folders for unlabelled ones
    if code is not None:
      name = _frame_name(subject, sequence, num_frames)[:-4] + '_emotion.txt'
      (emotion_dir / name).write_text(f'   {code:.7e}\n')
  (root / 'cohn-kanade-images' / 'S005' / '001' / '.DS_Store').write_bytes(b'\0\0')
  return root


def _build(tmp_path, config):
  builder = ckplus.Ckplus(data_dir=tmp_path / 'tfds', config=config)
  builder.download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(manual_dir=tmp_path / 'manual'))
  return builder


def _read(builder, split):
  source = builder.as_data_source(split=split)
  out = {}
  for i in range(len(source)):
    example = source[i]
    bbox, label = common.decode_objects(example)
    out[example['image_id'].decode()] = dict(bbox=bbox, label=label.tolist(),
                                            subject=example['subject'].decode(),
                                            sequence=example['sequence'].decode(),
                                            shape=example['image'].shape)
  return out


def _read_all(builder):
  out = {}
  for split in builder.info.splits:
    for image_id, example in _read(builder, split).items():
      out[image_id] = dict(example, split=split)
  return out


def _expected_peaks(contempt=True):
  names = ckplus.class_names(contempt, neutral=False)
  expected = {}
  for subject, sequence, num_frames, code in SEQUENCES:
    if code is None or (code == 2 and not contempt):
      continue
    for frame in range(max(1, num_frames - 2), num_frames + 1):
      expected[_frame_name(subject, sequence, frame)] = names.index(ckplus.CODE_NAMES[code])
  return expected


def test_sequences_peak_frames_labels_subjects_and_fallback_boxes(tmp_path):
  write_sequences(tmp_path / 'manual' / 'CK+')  # one folder below the manual dir is found too
  builder = _build(tmp_path, 'sequences')
  assert builder.info.features['objects']['label'].names == [
      'anger', 'contempt', 'disgust', 'fear', 'happy', 'sadness', 'surprise']
  examples = _read_all(builder)
  # By hand: S005_001 frames 3-5 disgust (2), S010_001 2-4 surprise (6), S010_004 4-6 contempt (1),
  # S011_001 1-3 happy (4), S022_001 2-4 anger (0).
  expected = {
      'S005_001_00000003.png': 2, 'S005_001_00000004.png': 2, 'S005_001_00000005.png': 2,
      'S010_001_00000002.png': 6, 'S010_001_00000003.png': 6, 'S010_001_00000004.png': 6,
      'S010_004_00000004.png': 1, 'S010_004_00000005.png': 1, 'S010_004_00000006.png': 1,
      'S011_001_00000001.png': 4, 'S011_001_00000002.png': 4, 'S011_001_00000003.png': 4,
      'S022_001_00000002.png': 0, 'S022_001_00000003.png': 0, 'S022_001_00000004.png': 0,
  }
  assert expected == _expected_peaks()
  assert {k: v['label'] for k, v in examples.items()} == {k: [v] for k, v in expected.items()}
  for image_id, example in examples.items():
    assert example['subject'] == image_id[:4]
    assert example['sequence'] == image_id[:8]
    assert example['shape'] == (HEIGHT, WIDTH, 3)
    np.testing.assert_allclose(example['bbox'], [[0.0, 0.0, 1.0, 1.0]])
  report = builder.build_report()
  # Flat frames hold no face: every one of the 15 falls back to the whole frame, and is counted.
  assert report.count('face_not_found') == 15
  assert report.examples['face_not_found'][0].startswith('cohn-kanade-images/S005/001/S005_001_')
  assert report.examples['unlabelled_sequence'] == [
      'cohn-kanade-images/S010/002: no emotion file; not used']
  # 15 images, random 70/10/20: validation floor(1.5) = 1, test floor(3.0) = 3, train 11.
  assert builder.info.metadata['split']['counts'] == {'train': 11, 'validation': 1, 'test': 3}
  assert builder.info.metadata['split']['scheme'] == 'random_70_10_20'


def test_neutral_and_no_contempt_configs(tmp_path):
  write_sequences(tmp_path / 'manual')
  neutral = _read_all(_build(tmp_path, 'sequences_neutral'))
  names = ckplus.class_names(contempt=True, neutral=True)
  assert names[0] == 'neutral' and len(names) == 8
  neutral_ids = sorted(k for k, v in neutral.items() if v['label'] == [0])
  # First frames of the labelled sequences; S011_001 has only 3 frames, all of them peak frames.
  assert neutral_ids == ['S005_001_00000001.png', 'S010_001_00000001.png', 'S010_004_00000001.png',
                         'S022_001_00000001.png']
  assert len(neutral) == 15 + 4
  assert neutral['S005_001_00000005.png']['label'] == [names.index('disgust')]

  builder = _build(tmp_path, 'sequences_no_contempt')
  assert builder.info.features['objects']['label'].names == [
      'anger', 'disgust', 'fear', 'happy', 'sadness', 'surprise']
  examples = _read_all(builder)
  assert {k: v['label'][0] for k, v in examples.items()} == _expected_peaks(contempt=False)
  assert not any(k.startswith('S010_004') for k in examples)
  assert builder.build_report().examples['contempt_excluded'] == [
      'Emotion/S010/004/S010_004_00000006_emotion.txt: sequence left out (config without contempt)']


def test_subject_kfold_folds_share_no_subject(tmp_path):
  write_sequences(tmp_path / 'manual')
  config = ckplus.CkplusConfig(name='kfold2', split_scheme='subject_kfold', num_folds=2,
                               face_detector='none')
  builder = _build(tmp_path, config)
  folds = {split: _read(builder, split) for split in ('fold0', 'fold1')}
  subjects = {split: {v['subject'] for v in examples.values()} for split, examples in folds.items()}
  assert not subjects['fold0'] & subjects['fold1']
  # Images per subject: S010 6, S005 3, S011 3, S022 3. Greedy, largest first: S010 -> fold0 (6);
  # the first 3-image subject -> fold1 (3), the second -> fold1 (6), the third -> tie -> fold0 (9).
  assert 'S010' in subjects['fold0']
  assert (len(folds['fold0']), len(folds['fold1'])) == (9, 6)
  record = builder.info.metadata['split']
  assert record['params']['subjects'] == {k: sorted(v) for k, v in subjects.items()}
  assert builder.build_report().count('face_not_found') == 0  # detector off: no fallback to count
  # Splits combine with '+', as kfold_split_strings writes them.
  assert len(builder.as_data_source(split='fold0+fold1')) == 15


def test_face_box_picks_the_largest_detection():
  class FakeCascade:
    def detectMultiScale(self, grey, **kwargs):  # (x, y, w, h) per detection, as OpenCV returns
      assert kwargs['minSize'] == (9, 9)  # min(48, 64) // 5
      return np.array([[1, 2, 10, 10], [20, 5, 30, 25], [0, 0, 12, 12]])

  class NoFaceCascade:
    def detectMultiScale(self, grey, **kwargs):
      return ()

  grey = np.zeros((48, 64), np.uint8)
  assert ckplus.face_box(grey, FakeCascade()) == (20.0, 5.0, 50.0, 30.0)
  assert ckplus.face_box(grey, NoFaceCascade()) is None
  assert not ckplus.load_face_cascade().empty()  # the bundled cascade file loads


# ---- bad input ----

@pytest.mark.parametrize('content, message', [
    ('   9.0000000e+00\n',
     r'S005_001_00000005_emotion.txt:1: emotion code 9.0000000e\+00 is not an integer in 0..7'),
    ('   2.5000000e+00\n', r'_emotion.txt:1: emotion code 2.5000000e\+00 is not an integer'),
    ('\n   abc\n', r'_emotion.txt:2: emotion code .abc. is not a number'),
    ('', r'_emotion.txt: expected one emotion code, found 0'),
])
def test_bad_emotion_codes_name_file_and_line(tmp_path, content, message):
  write_sequences(tmp_path, SEQUENCES[:1])
  (tmp_path / 'Emotion' / 'S005' / '001' / 'S005_001_00000005_emotion.txt').write_text(content)
  with pytest.raises(ValueError, match=message):
    ckplus.parse_sequences(tmp_path, contempt=True, neutral=False, report=common.BuildReport('t'))


def test_emotion_file_for_missing_frame_or_sequence(tmp_path):
  write_sequences(tmp_path, SEQUENCES[:1])
  label = tmp_path / 'Emotion' / 'S005' / '001' / 'S005_001_00000005_emotion.txt'
  label.rename(label.with_name('S005_001_00000009_emotion.txt'))
  with pytest.raises(FileNotFoundError, match=r'_00000009_emotion.txt: labels frame 9, which is not in'):
    ckplus.parse_sequences(tmp_path, contempt=True, neutral=False, report=common.BuildReport('t'))
  (tmp_path / 'Emotion' / 'S099' / '001').mkdir(parents=True)
  (tmp_path / 'Emotion' / 'S099' / '001' / 'S099_001_00000003_emotion.txt').write_text('1.0\n')
  label.with_name('S005_001_00000009_emotion.txt').rename(label)
  with pytest.raises(FileNotFoundError, match=r'S099_001_00000003_emotion.txt: labels a sequence with '
                     r'no image folder cohn-kanade-images/S099/001'):
    ckplus.parse_sequences(tmp_path, contempt=True, neutral=False, report=common.BuildReport('t'))


def test_label_on_an_earlier_frame_uses_it_as_the_peak_and_reports_the_rest(tmp_path):
  write_sequences(tmp_path, SEQUENCES[:1])  # frames 1..5
  label = tmp_path / 'Emotion' / 'S005' / '001' / 'S005_001_00000005_emotion.txt'
  label.rename(label.with_name('S005_001_00000004_emotion.txt'))
  report = common.BuildReport('t')
  records = ckplus.parse_sequences(tmp_path, contempt=True, neutral=False, report=report)
  assert [r['image_id'] for r in records] == [
      'S005_001_00000002.png', 'S005_001_00000003.png', 'S005_001_00000004.png']
  assert report.examples['frames_after_peak'] == [
      'cohn-kanade-images/S005/001: 1 frame(s) after the labelled frame 4 not used']


def test_two_emotion_files_in_one_sequence(tmp_path):
  write_sequences(tmp_path, SEQUENCES[:1])
  (tmp_path / 'Emotion' / 'S005' / '001' / 'S005_001_00000004_emotion.txt').write_text('1.0\n')
  with pytest.raises(ValueError, match=r'Emotion/S005/001: 2 emotion files'):
    ckplus.parse_sequences(tmp_path, contempt=True, neutral=False, report=common.BuildReport('t'))


# ---- CK+48 folder release ----

CK48_FILES = [('anger', 'S010_004_00000017.png'), ('anger', 'S011_004_00000019.png'),
              ('contempt', 'S138_008_00000008.png'), ('happy', 'S010_006_00000013.png'),
              ('surprise', 'S011_001_00000014.png'), ('surprise', 'S022_001_00000030.png')]


def write_ck48(root, files=CK48_FILES):
  for folder, name in files:
    (root / folder).mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(root / folder / name), np.full((48, 48), 90, np.uint8))


def test_ck48_release_labels_subjects_and_whole_image_boxes(tmp_path):
  write_ck48(tmp_path / 'manual' / 'CK+48')
  # The named config has 10 folds; 4 subjects cannot fill them and the build says so.
  with pytest.raises(ValueError, match='4 subjects cannot fill 10 folds'):
    _build(tmp_path, 'ck48_kfold')
  config = ckplus.CkplusConfig(name='ck48_kfold2', release='ck48', split_scheme='subject_kfold',
                               num_folds=2)
  builder = _build(tmp_path, config)
  assert builder.info.features['objects']['label'].names == list(ckplus.CK48_FOLDERS)
  examples = {}
  for split in builder.info.splits:
    examples.update(_read(builder, split))
  assert {k: (v['label'], v['subject'], v['sequence']) for k, v in examples.items()} == {
      'anger/S010_004_00000017.png': ([0], 'S010', 'S010_004'),
      'anger/S011_004_00000019.png': ([0], 'S011', 'S011_004'),
      'contempt/S138_008_00000008.png': ([1], 'S138', 'S138_008'),
      'happy/S010_006_00000013.png': ([4], 'S010', 'S010_006'),
      'surprise/S011_001_00000014.png': ([6], 'S011', 'S011_001'),
      'surprise/S022_001_00000030.png': ([6], 'S022', 'S022_001'),
  }
  for example in examples.values():
    np.testing.assert_allclose(example['bbox'], [[0.0, 0.0, 1.0, 1.0]])
    assert example['shape'] == (48, 48, 3)
  # Images per subject: S010 2, S011 2, S022 1, S138 1 -> folds of 3 and 3, no subject in both.
  fold_subjects = [{v['subject'] for v in _read(builder, f'fold{k}').values()} for k in (0, 1)]
  assert not fold_subjects[0] & fold_subjects[1]
  assert [len(_read(builder, f'fold{k}')) for k in (0, 1)] == [3, 3]


def test_ck48_bad_names_unknown_folders_duplicates(tmp_path):
  write_ck48(tmp_path, CK48_FILES + [('sadness', 'face_001.png')])
  with pytest.raises(ValueError, match=r'sadness/face_001.png: file name is not S<subject>'):
    ckplus.parse_ck48(tmp_path, contempt=True, report=common.BuildReport('t'))
  (tmp_path / 'sadness' / 'face_001.png').unlink()
  write_ck48(tmp_path, [('neutral', 'S010_004_00000001.png')])
  with pytest.raises(ValueError, match=r'neutral: unknown class folder'):
    ckplus.parse_ck48(tmp_path, contempt=True, report=common.BuildReport('t'))
  (tmp_path / 'neutral' / 'S010_004_00000001.png').unlink()
  (tmp_path / 'neutral').rmdir()
  write_ck48(tmp_path, [('fear', 'S010_004_00000017.png')])  # same file name as in anger/
  report = common.BuildReport('t')
  records = ckplus.parse_ck48(tmp_path, contempt=False, report=report)
  assert report.examples['duplicate_file_name'] == [
      'fear/S010_004_00000017.png: same name as anger/S010_004_00000017.png']
  assert report.examples['contempt_excluded'] == [
      'contempt/S138_008_00000008.png: image left out (config without contempt)']
  assert len(records) == len(CK48_FILES) - 1
