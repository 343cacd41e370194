"""Image reading, box checks, the build report and the TF-free array_record round trip (data/common.py)."""

import io
import json
import sys

import cv2
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from yolo_osam_jax.data import common


def _png(array: np.ndarray) -> bytes:
  """PNG bytes of an RGB / RGBA / grey array (cv2 wants BGR order)."""
  if array.ndim == 3 and array.shape[-1] == 3:
    array = array[..., ::-1]
  elif array.ndim == 3 and array.shape[-1] == 4:
    array = array[..., [2, 1, 0, 3]]
  ok, encoded = cv2.imencode('.png', np.ascontiguousarray(array))
  assert ok
  return encoded.tobytes()


def _decode(data: bytes) -> np.ndarray:
  """What tfds.data_source does to the stored bytes: cv2 IMREAD_UNCHANGED, BGR -> RGB."""
  array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  return array[..., ::-1]


def _rgb_pattern(h=6, w=5) -> np.ndarray:
  return (np.arange(h * w * 3).reshape(h, w, 3) * 7 % 256).astype(np.uint8)


def test_plain_rgb_png_passes_through_unchanged():
  report = common.BuildReport('t')
  data = _png(_rgb_pattern())
  encoded, h, w = common.read_image(data, 'a.png', report)
  assert encoded == data and (h, w) == (6, 5)
  assert report.counts == {}


def test_zero_byte_file_is_recorded_and_skipped(tmp_path):
  path = tmp_path / 'empty.jpg'
  path.write_bytes(b'')
  report = common.BuildReport('t')
  assert common.read_image(path, 'images/empty.jpg', report) is None
  assert report.counts == {'empty_file': 1}
  assert report.examples['empty_file'] == ['images/empty.jpg']


def test_missing_file_is_recorded_as_unreadable(tmp_path):
  report = common.BuildReport('t')
  assert common.read_image(tmp_path / 'nope.jpg', 'nope.jpg', report) is None
  assert report.count('unreadable_image') == 1
  assert report.examples['unreadable_image'][0].startswith('nope.jpg: cannot read file')


def test_garbage_bytes_are_unreadable():
  report = common.BuildReport('t')
  assert common.read_image(b'this is not an image at all', 'x.jpg', report) is None
  assert report.counts == {'unreadable_image': 1}


@pytest.mark.parametrize('ext', ['.jpg', '.png'])
def test_truncated_image_is_recorded_and_skipped(ext):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # noise: no early end of data
  ok, encoded = cv2.imencode(ext, image)
  data = encoded.tobytes()[: len(encoded) // 2]
  report = common.BuildReport('t')
  assert common.read_image(data, f'cut{ext}', report) is None
  assert report.count('truncated_image') + report.count('unreadable_image') == 1
  assert report.count('truncated_image') == 1, report.as_dict()


def test_grayscale_is_replicated_to_three_channels():
  grey = np.array([[0, 50, 100], [150, 200, 255]], np.uint8)
  report = common.BuildReport('t')
  encoded, h, w = common.read_image(_png(grey), 'g.png', report)
  assert (h, w) == (2, 3)
  np.testing.assert_array_equal(_decode(encoded), np.repeat(grey[..., None], 3, axis=-1))
  assert report.counts == {'converted_grayscale': 1}
  assert report.examples['converted_grayscale'] == ['g.png: mode L, format PNG']


def test_rgba_keeps_colour_and_drops_alpha():
  rgba = np.zeros((3, 4, 4), np.uint8)
  rgba[..., :3] = _rgb_pattern(3, 4)
  rgba[..., 3] = np.array([0, 64, 128, 255], np.uint8)  # varying transparency
  report = common.BuildReport('t')
  encoded, h, w = common.read_image(_png(rgba), 'a.png', report)
  np.testing.assert_array_equal(_decode(encoded), rgba[..., :3])
  assert report.counts == {'converted_rgba': 1}


def test_16bit_grey_and_colour_pngs_scale_to_8bit():
  values = np.array([[0, 1, 128], [200, 254, 255]], np.uint16)
  grey16 = values * 257  # v * 257 is the 16-bit value of 8-bit v
  report = common.BuildReport('t')
  encoded, _, _ = common.read_image(_png(grey16), 'g16.png', report)
  np.testing.assert_array_equal(_decode(encoded), np.repeat(values[..., None], 3, -1).astype(np.uint8))
  assert report.count('converted_16bit') == 1 and report.count('converted_grayscale') == 1

  rgb8 = _rgb_pattern(2, 3)
  rgb16 = rgb8.astype(np.uint16) * 257
  encoded, _, _ = common.read_image(_png(rgb16), 'c16.png', report)
  decoded = _decode(encoded)
  assert decoded.dtype == np.uint8
  np.testing.assert_array_equal(decoded, rgb8)
  assert report.count('converted_16bit') == 2


def test_cmyk_jpeg_is_converted_to_rgb():
  # Flat CMYK patches; by hand, RGB = 255 - (C + K) etc. (clipped): cyan -> (0, 255, 255),
  # magenta+yellow -> red, nothing -> white.
  cmyk = np.zeros((16, 48, 4), np.uint8)
  cmyk[:, 0:16] = (255, 0, 0, 0)
  cmyk[:, 16:32] = (0, 255, 255, 0)
  cmyk[:, 32:48] = (0, 0, 0, 0)
  buffer = io.BytesIO()
  PIL.Image.fromarray(cmyk, mode='CMYK').save(buffer, format='JPEG', quality=100)
  report = common.BuildReport('t')
  encoded, h, w = common.read_image(buffer.getvalue(), 'c.jpg', report)
  assert (h, w) == (16, 48)
  rgb = _decode(encoded).astype(int)
  for x, expected in ((8, (0, 255, 255)), (24, (255, 0, 0)), (40, (255, 255, 255))):
    np.testing.assert_allclose(rgb[8, x], expected, atol=6)
  assert report.counts == {'converted_cmyk': 1}


def test_palette_png_is_converted():
  indices = np.array([[0, 1], [2, 1]], np.uint8)
  image = PIL.Image.fromarray(indices, mode='P')
  image.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 255] + [0] * (253 * 3))
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  report = common.BuildReport('t')
  encoded, _, _ = common.read_image(buffer.getvalue(), 'p.png', report)
  expected = np.array([[[10, 20, 30], [200, 100, 0]], [[0, 0, 255], [200, 100, 0]]], np.uint8)
  np.testing.assert_array_equal(_decode(encoded), expected)
  assert report.counts == {'converted_palette': 1}


def test_exif_orientation_is_applied():
  # 2x3 image, orientation 6 = displayed rotated 90° clockwise -> 3x2.
  stored = np.zeros((20, 30, 3), np.uint8)
  stored[:10, :15] = (255, 0, 0)  # red top-left quadrant
  image = PIL.Image.fromarray(stored)
  exif = PIL.Image.Exif()
  exif[0x0112] = 6
  buffer = io.BytesIO()
  image.save(buffer, format='JPEG', quality=100, exif=exif.tobytes())
  report = common.BuildReport('t')
  encoded, h, w = common.read_image(buffer.getvalue(), 'r.jpg', report)
  assert (h, w) == (30, 20)
  rgb = _decode(encoded).astype(int)
  # Rotating clockwise moves the top-left quadrant to the top-right.
  assert rgb[3, 17, 0] > 200 and rgb[3, 2, 0] < 50
  assert report.counts == {'exif_rotated': 1}


def test_non_jpeg_png_formats_are_reencoded_as_png():
  image = PIL.Image.fromarray(_rgb_pattern())
  buffer = io.BytesIO()
  image.save(buffer, format='BMP')
  report = common.BuildReport('t')
  encoded, _, _ = common.read_image(buffer.getvalue(), 'b.bmp', report)
  assert encoded[:8] == b'\x89PNG\r\n\x1a\n'
  np.testing.assert_array_equal(_decode(encoded), _rgb_pattern())
  assert report.counts == {'converted_format': 1}


def test_boxes_are_clipped_normalised_and_degenerate_ones_dropped():
  report = common.BuildReport('t')
  boxes = [[10, 20, 30, 60],     # inside
           [-8, 5, 40, 50],      # left edge outside: clipped to x 0
           [95, 10, 130, 30],    # right edge outside image width 100
           [100.2, 0, 120, 10],  # entirely right of the image: degenerate after clipping
           [5, 5, 5.5, 40]]      # 0.5 px wide: degenerate
  bbox, labels = common.boxes_to_bbox(boxes, [0, 1, 2, 1, 0], height=80, width=100, num_classes=3,
                                      where=[f'f.txt:{i}' for i in range(1, 6)], report=report)
  expected = np.array([[20 / 80, 10 / 100, 60 / 80, 30 / 100],
                       [5 / 80, 0.0, 50 / 80, 40 / 100],
                       [10 / 80, 95 / 100, 30 / 80, 1.0]], np.float32)
  np.testing.assert_allclose(bbox, expected, rtol=1e-6)
  np.testing.assert_array_equal(labels, [0, 1, 2])
  assert report.counts == {'box_clipped': 3, 'box_degenerate': 2}
  assert [e.split(':')[0] + ':' + e.split(':')[1] for e in report.examples['box_degenerate']] == [
      'f.txt:4', 'f.txt:5']


@pytest.mark.parametrize('box,label,message', [
    ([1, np.nan, 5, 5], 0, 'lab.txt:7: box'),
    ([1, 1, 5, 5], 3, 'lab.txt:7: class 3 is outside 0..2'),
    ([1, 1, 5, 5], -1, 'lab.txt:7: class -1'),
    ([6, 1, 5, 5], 0, 'max < min'),
])
def test_bad_boxes_raise_naming_the_place(box, label, message):
  with pytest.raises(ValueError, match='lab.txt:7'):
    common.boxes_to_bbox([box], [label], height=10, width=10, num_classes=3, where='lab.txt:7',
                         report=common.BuildReport('t'))
  with pytest.raises(ValueError) as info:
    common.boxes_to_bbox([box], [label], height=10, width=10, num_classes=3, where='lab.txt:7',
                         report=common.BuildReport('t'))
  assert message in str(info.value)


def test_duplicates_are_recorded():
  report, seen = common.BuildReport('t'), {}
  assert common.first_seen(seen, 'a.jpg', 'dir1/a.jpg', report)
  assert not common.first_seen(seen, 'a.jpg', 'dir2/a.jpg', report)
  assert report.examples['duplicate_file_name'] == ['dir2/a.jpg: same name as dir1/a.jpg']


def test_report_keeps_first_examples_and_round_trips(tmp_path):
  report = common.BuildReport('ds', max_examples=2)
  for i in range(5):
    report.add('box_clipped', f'f{i}.txt:1')
  report.count_example('train')
  assert report.count('box_clipped') == 5
  assert report.examples['box_clipped'] == ['f0.txt:1', 'f1.txt:1']
  summary = report.summary()
  assert 'box_clipped: 5' in summary and '... 3 more' in summary and 'train 1' in summary
  report.save(tmp_path / 'r.json')
  assert json.loads((tmp_path / 'r.json').read_text())['counts'] == {'box_clipped': 5}
  assert common.BuildReport.load(tmp_path / 'r.json').as_dict() == report.as_dict()


def test_detection_features_layout():
  features = common.detection_features(['x', 'y'], {'subject': tfds.features.Text()})
  assert set(features.keys()) == {'image', 'image_id', 'objects', 'subject'}
  assert features['objects']['label'].names == ['x', 'y']
  assert isinstance(features['objects']['bbox'], tfds.features.BBoxFeature)
  with pytest.raises(ValueError, match='image'):
    common.detection_features(['x'], {'image': tfds.features.Text()})


class CommonTinyBuilder(common.DetectionBuilder):
  """Three grey images: checks the array_record round trip and the stored report."""
  VERSION = tfds.core.Version('1.0.0')
  CLASS_NAMES = ('a', 'b')

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(3):
      grey = np.full((10, 12), 40 * i, np.uint8)
      encoded, h, w = common.read_image(_png(grey), f'img{i}.png', self.report)
      bbox, labels = common.boxes_to_bbox([[-3, 1, 5, 6]] * i, [1] * i, height=h, width=w,
                                          num_classes=2, where=f'img{i}.txt', report=self.report)
      self.report.count_example('train')
      yield f'img{i}', {'image': encoded, 'image_id': f'img{i}',
                        'objects': {'bbox': bbox, 'label': labels}}


def test_array_record_round_trip_without_tensorflow(tmp_path):
  builder = CommonTinyBuilder(data_dir=str(tmp_path))
  builder.download_and_prepare(file_format='array_record')
  source = tfds.data_source('common_tiny_builder', split='train', data_dir=str(tmp_path))
  assert len(source) == 3
  by_id = {source[i]['image_id']: source[i] for i in range(3)}
  example = by_id[b'img2']
  assert example['image'].dtype == np.uint8 and example['image'].shape == (10, 12, 3)
  assert np.all(example['image'] == 80)
  bbox, labels = common.decode_objects(example)
  np.testing.assert_allclose(bbox, [[1 / 10, 0, 6 / 10, 5 / 12]] * 2, rtol=1e-6)
  np.testing.assert_array_equal(labels, [1, 1])
  assert common.decode_objects(by_id[b'img0'])[0].shape == (0, 4)
  # The report is next to the data and in the dataset info metadata.
  reread = tfds.builder('common_tiny_builder', data_dir=str(tmp_path))
  report = common.stored_report(reread)
  assert report.counts == {'converted_grayscale': 3, 'box_clipped': 3}
  assert reread.info.metadata['build_report']['counts'] == report.counts
  assert report.written == {'train': 3}
  assert 'tensorflow' not in sys.modules
