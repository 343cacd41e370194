"""Issue 16: Recognizer.stream over folders and videos, Result objects, scripts/predict.py --faces/--show."""

import json
import logging
import os

import cv2
import numpy as np
import pytest

import predict as predict_script
from yolo_osam_jax import predict, sources
from yolo_osam_jax.data import synthetic_faces

from conftest import DEMO_FIXTURE_SIZE, _demo_fixture_scene


def _scenes(count, first_seed=10_100):
  return [synthetic_faces.render_scene(np.random.default_rng(first_seed + i), DEMO_FIXTURE_SIZE,
                                       _demo_fixture_scene())[0] for i in range(count)]


def assert_same(found, expected):
  """Per image, the same detections up to float rounding: a different batch (or place in it) changes
  the last bits of XLA's convolutions."""
  assert len(found) == len(expected)
  for f, e in zip(found, expected):
    assert [d.class_id for d in f] == [d.class_id for d in e]
    for a, b in zip(f, e):
      np.testing.assert_allclose(a.box, b.box, atol=1e-3)
      np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
      np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


@pytest.fixture(scope='module')
def rec(demo_checkpoint):
  return predict.Recognizer.from_checkpoint(demo_checkpoint)


def test_stream_folder_equals_predict(rec, tmp_path):
  images = _scenes(5)
  for i, image in enumerate(images):
    cv2.imwrite(str(tmp_path / f'scene_{i}.png'), image[..., ::-1])
  (tmp_path / 'notes.txt').write_text('not an image')  # skipped with a warning
  results = list(rec.stream(str(tmp_path), batch_size=2))
  assert [r.source for r in results] == [str(tmp_path / f'scene_{i}.png') for i in range(5)]
  assert all(r.frame is None for r in results)
  expected = rec.predict([str(tmp_path / f'scene_{i}.png') for i in range(5)])
  assert_same([r.detections for r in results], expected)
  assert sum(len(d) for d in expected) >= 4  # the fixture model finds the faces it was trained on
  for r, image in zip(results, images):
    np.testing.assert_array_equal(r.image, image)  # PNG is lossless


def test_stream_video_frames(rec, tmp_path):
  path = str(tmp_path / 'clip.avi')
  frames = _scenes(7, first_seed=10_200)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (64, 64))
  assert writer.isOpened()
  for frame in frames:
    writer.write(frame[..., ::-1].copy())
  writer.release()
  # The frames as OpenCV reads them back (MJPG is lossy), read here independently of sources.py.
  capture, decoded = cv2.VideoCapture(path), []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    decoded.append(frame[..., ::-1].copy())
  capture.release()
  assert len(decoded) == 7

  results = list(rec.stream(path, batch_size=3))
  assert [r.frame for r in results] == list(range(7))
  assert_same([r.detections for r in results], rec.predict(decoded))
  assert len(list(rec.stream(path, max_frames=4))) == 4
  # A glob over a folder and the video together: images first in name order, then the video frames.
  cv2.imwrite(str(tmp_path / 'a.png'), frames[0][..., ::-1])
  mixed = list(rec.stream([str(tmp_path / '*.png'), path], batch_size=8))
  assert [(os.path.basename(r.source), r.frame) for r in mixed] == [('a.png', None)] + [
      ('clip.avi', i) for i in range(7)]


def test_result_plot_dict_save(rec, tmp_path):
  (image,) = _scenes(1, first_seed=10_300)
  (found,) = rec.predict([image])
  assert found
  result = sources.Result('x.png', None, image, found, rec.class_names)
  drawn = result.plot()
  assert drawn.shape == image.shape and drawn.dtype == np.uint8
  x1, y1, x2, y2 = (int(round(v)) for v in found[0].box)
  assert not np.array_equal(drawn[y1:y2 + 1, x1:x2 + 1], image[y1:y2 + 1, x1:x2 + 1])  # box drawn
  assert result.to_dict() == {'source': 'x.png', 'frame': None, 'width': 64, 'height': 64,
                              'detections': [d.to_dict() for d in found]}
  json.dumps(result.to_dict())
  out = result.save(tmp_path / 'sub' / 'x.png')
  np.testing.assert_array_equal(cv2.imread(out)[..., ::-1], drawn)
  with pytest.raises(ValueError, match='not an image file name'):
    result.save(tmp_path / 'x.txt')


def test_stream_bad_source(rec, tmp_path):
  with pytest.raises(ValueError, match='no such file or folder'):
    next(rec.stream(str(tmp_path / 'missing')))


def test_expand_sources_moved(tmp_path):
  (tmp_path / 'b.jpg').write_bytes(b'')
  (tmp_path / 'a.mp4').write_bytes(b'')
  errors = []
  assert predict_script.expand_sources([str(tmp_path), '3', 'rtsp://h/s', str(tmp_path / 'nope')], errors) == [
      ('video', str(tmp_path / 'a.mp4')), ('image', str(tmp_path / 'b.jpg')), ('camera', 3),
      ('stream', 'rtsp://h/s')]
  assert errors == [f'{tmp_path / "nope"}: no such file or folder']


def test_script_show_without_gui(monkeypatch, capsys, tmp_path):
  monkeypatch.setattr(sources, 'gui_available', lambda: False)
  code = predict_script.main(['--checkpoint', str(tmp_path), '--source', 'x.png', '--show'])
  assert code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ['error: --show needs the GUI build of OpenCV (pip install opencv-python); the installed '
                 'OpenCV has no GUI support (opencv-python-headless)']


def test_gui_available_reads_the_build():
  gui_line = [l for l in cv2.getBuildInformation().splitlines() if l.strip().startswith('GUI:')]
  expected = bool(gui_line) and gui_line[0].split(':', 1)[1].strip().upper() not in ('', 'NONE', 'NO')
  assert sources.gui_available() == expected


def test_script_warns_once_for_synthetic(demo_checkpoint, tmp_path, caplog):
  (image,) = _scenes(1, first_seed=10_400)
  cv2.imwrite(str(tmp_path / 'a.png'), image[..., ::-1])
  with caplog.at_level(logging.WARNING):
    code = predict_script.main(['--checkpoint', demo_checkpoint, '--source', str(tmp_path / 'a.png'),
                                '--out', str(tmp_path / 'out'), '--save', 'json', '--faces', 'model'])
  assert code == 0
  assert len([r for r in caplog.records if 'drawn faces (synthetic_faces)' in r.getMessage()]) == 1
  records = json.loads((tmp_path / 'out' / 'detections.json').read_text())
  rec = predict.Recognizer.from_checkpoint(demo_checkpoint)
  found = [predict.Detection(tuple(d['box']), d['class_id'], d['name'], d['confidence'],
                             tuple(d['probabilities'])) for d in records[0]['detections']]
  assert_same([found], [rec.predict(image)])
