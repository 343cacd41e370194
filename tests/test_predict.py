"""Recognizer (library prediction API) and scripts/predict.py.

A freshly initialised model predicts nothing above yolov5's 0.25 confidence (its objectness prior is
~1e-3). The "lively" random model rescales each Detect convolution so its logits vary by a few units
around a moderate objectness bias: random images then give a handful of boxes with distinct scores,
classes and sizes to check the mapping and the outputs on. Tests that need a model that really sees
faces use the `demo_checkpoint` fixture (trained on synthetic faces) and skip without it.
"""

import dataclasses
import functools
import importlib.util
import json
import os

import cv2
import jax
import numpy as np
import pytest

from configs import base
from conftest import ROOT
from yolo_osam_jax import checkpoint, models, predict
from yolo_osam_jax.evaluation import nms as nms_lib

IMG = 64            # model input side for the random-model tests (fast to compile)
CONF, IOU = 0.25, 0.45
BUCKETS = (1, 4)


@functools.lru_cache(maxsize=None)
def forward(module):
  """One jitted apply per model (modules compare by value), shared by the tests."""
  return jax.jit(module.apply)


def random_variables(model_config, seed: int = 0):
  """Random variables shaped like `module.init`'s, without running init (slow on a busy 2-core machine).

  He-scaled kernels keep activations of order one through the network; BatchNorm statistics and affine
  parameters are drawn near their identity values.
  """
  module = models.build(model_config)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, IMG, IMG, 3), np.float32))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      return rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.normal(0.0, 0.1, leaf.shape).astype(np.float32)  # bias, mean

  return jax.tree_util.tree_map_with_path(draw, shapes)


def lively_variables(model_config, seed: int = 0):
  """Random variables whose Detect logits spread by ~1.5 around an objectness bias of −4.5."""
  variables = random_variables(model_config, seed)
  module = models.build(model_config)
  rng = np.random.default_rng(seed + 1)
  _, raw = forward(module)(variables, rng.random((1, IMG, IMG, 3)).astype(np.float32))
  detect = variables['params'][f'layer_{models.layer_table(model_config)[-1].index}']
  no = 5 + int(model_config.num_classes)
  for r, level in zip(raw, models.levels(model_config)):
    conv = detect[f'm_{level.detect_index}']
    a = conv['bias'].shape[0] // no
    spread = np.std(np.asarray(r) - conv['bias'].reshape(a, no))
    conv['kernel'] = (conv['kernel'] * (1.5 / spread)).astype(np.float32)
    bias = np.zeros((a, no), np.float32)
    bias[:, 4] = -4.5
    bias[:, 5:] = rng.normal(0.0, 1.0, (a, no - 5))
    conv['bias'] = bias.reshape(-1)
  return variables


def make_lively_checkpoint(directory, img_size: int = IMG):
  config = base.get_config()
  config.data.img_size = img_size
  config.data.class_names = ['Surprise', 'Fear', 'Disgust', 'Happiness', 'Sadness', 'Anger', 'Neutral']
  variables = lively_variables(config.model)
  checkpoint.save_model(str(directory), variables, config)
  return config, variables


@pytest.fixture(scope='module')
def lively(tmp_path_factory):
  directory = tmp_path_factory.mktemp('lively') / 'ckpt'
  config, variables = make_lively_checkpoint(directory)
  return str(directory), config, variables


@pytest.fixture(scope='module')
def recognizer(lively):
  return predict.Recognizer.from_checkpoint(lively[0], conf_thres=CONF, iou_thres=IOU,
                                            batch_buckets=BUCKETS)


@pytest.fixture(scope='module')
def trained(request):
  try:
    path = request.getfixturevalue('demo_checkpoint')
  except pytest.FixtureLookupError:
    pytest.skip('needs the demo_checkpoint fixture (tests/conftest.py, added with the trainer)')
  return predict.Recognizer.from_checkpoint(path, batch_buckets=BUCKETS)


def _images(seed=0):
  rng = np.random.default_rng(seed)
  # landscape shrink, large shrink, small upscale, portrait
  return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((50, 80), (300, 500), (20, 30),
                                                                       (120, 40))]


# Letterbox to 64 by hand: scale = 64 / long side, new size rounded, integer pad = round(gap / 2 − 0.1).
HAND_LETTERBOX = {
    (50, 80): (0.8, (64, 40), (0, 12)),
    (300, 500): (0.128, (64, 38), (0, 13)),      # 300 · 0.128 = 38.4 → 38; (64 − 38) / 2 − 0.1 = 12.9
    (20, 30): (64 / 30, (64, 43), (0, 10)),      # 20 · 2.133 = 42.7 → 43; 10.5 − 0.1 → 10
    (120, 40): (64 / 120, (21, 64), (21, 0)),    # 40 · 0.533 = 21.3 → 21; 21.5 − 0.1 → 21
}


def _reference(image, module, variables):
  """Detections computed without the Recognizer: hand letterbox, model, numpy NMS, hand inverse."""
  h, w = image.shape[:2]
  scale, (new_w, new_h), (pad_x, pad_y) = HAND_LETTERBOX[(h, w)]
  resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
  canvas = np.full((IMG, IMG, 3), 114, np.uint8)
  canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
  pred, _ = forward(module)(variables, canvas[None].astype(np.float32) / 255.0)
  pred = np.asarray(pred[0])  # float32, as the jitted NMS sees it
  boxes, scores, classes = nms_lib.nms_numpy(pred, conf_thres=CONF, iou_thres=IOU, max_det=300,
                                             multi_label=False)
  original = (boxes.astype(np.float64) - [pad_x, pad_y, pad_x, pad_y]) / scale
  original = np.clip(original, 0, [w, h, w, h])
  return pred, boxes, original, scores, classes


def test_boxes_map_back_exactly(recognizer, lively):
  _, config, variables = lively
  module = models.build(config.model)
  images = _images()
  results = recognizer.predict(images)
  assert len(results) == 4
  total = 0
  for image, dets in zip(images, results):
    pred, lb_boxes, want, scores, classes = _reference(image, module, variables)
    assert len(dets) == len(want)
    total += len(dets)
    got = np.array([d.box for d in dets]).reshape(-1, 4)
    # float32 model outputs differ by a few ulps between batch shapes; a wrong pad or scale would be off
    # by a pixel or more.
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-3)
    np.testing.assert_allclose([d.confidence for d in dets], scores, rtol=0, atol=1e-5)
    assert [d.class_id for d in dets] == classes.tolist()
    assert [d.name for d in dets] == [config.data.class_names[c] for c in classes]
    # The probability vector is that of the prediction row the box came from.
    xyxy = np.concatenate([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], axis=1)
    for det, lb_box in zip(dets, lb_boxes):
      rows = np.nonzero(np.all(np.abs(xyxy - lb_box) < 1e-3, axis=1))[0]
      row = rows[np.argmax(pred[rows, 4] * pred[rows, 5 + det.class_id])]
      np.testing.assert_allclose(det.probabilities, pred[row, 5:], rtol=0, atol=1e-5)
      assert det.confidence == pytest.approx(pred[row, 4] * pred[row, 5 + det.class_id], abs=1e-5)
  assert total >= 10  # the check above saw real boxes


def test_input_forms_agree(recognizer, tmp_path):
  rng = np.random.default_rng(1)
  rgb = rng.integers(0, 256, (48, 72, 3), dtype=np.uint8)
  grey = rng.integers(0, 256, (48, 72), dtype=np.uint8)
  rgba = np.concatenate([rgb, rng.integers(0, 256, (48, 72, 1), dtype=np.uint8)], axis=-1)
  path = str(tmp_path / 'photo.png')
  assert cv2.imwrite(path, rgb[..., ::-1])

  def key(dets):
    return [(d.box, d.class_id, round(d.confidence, 6)) for d in dets]

  base_result = recognizer.predict(rgb)
  assert isinstance(base_result, list) and all(isinstance(d, predict.Detection) for d in base_result)
  assert key(recognizer.predict(rgb[..., ::-1].copy(), bgr=True)) == key(base_result)
  assert key(recognizer.predict(rgba)) == key(base_result)
  assert key(recognizer.predict(path)) == key(base_result)
  grey3 = np.repeat(grey[..., None], 3, axis=-1)
  assert key(recognizer.predict(grey)) == key(recognizer.predict(grey3))
  assert key(recognizer.predict(grey[..., None])) == key(recognizer.predict(grey3))
  # A list and a 4-D batch give one list per image, in order (a batch of two runs in the size-4 bucket,
  # whose float32 results may differ from the size-1 bucket's in the last bits).
  batch = recognizer.predict(np.stack([rgb, grey3]))
  as_list = recognizer.predict([path, grey3])
  assert [key(d) for d in batch] == [key(d) for d in as_list]
  assert len(batch) == 2
  assert_same_detections(batch[0], base_result)
  assert_same_detections(batch[1], recognizer.predict(grey3))


def assert_same_detections(a, b):
  """Equal detections up to float32 differences between batch shapes."""
  assert [d.class_id for d in a] == [d.class_id for d in b]
  for x, y in zip(a, b):
    np.testing.assert_allclose(x.box, y.box, rtol=2e-5, atol=1e-3)
    np.testing.assert_allclose(x.confidence, y.confidence, rtol=0, atol=1e-5)
    np.testing.assert_allclose(x.probabilities, y.probabilities, rtol=0, atol=1e-5)


def test_bad_inputs_name_the_problem(recognizer, tmp_path):
  with pytest.raises(FileNotFoundError, match='missing.jpg: no such file'):
    recognizer.predict(str(tmp_path / 'missing.jpg'))
  empty = tmp_path / 'empty.jpg'
  empty.write_bytes(b'')
  with pytest.raises(ValueError, match='empty.jpg: empty file'):
    recognizer.predict(str(empty))
  garbage = tmp_path / 'garbage.png'
  garbage.write_bytes(b'not an image at all' * 10)
  with pytest.raises(ValueError, match='garbage.png: not a readable image'):
    recognizer.predict(str(garbage))
  with pytest.raises(ValueError, match='zero-size image'):
    recognizer.predict(np.zeros((0, 10, 3), np.uint8))
  with pytest.raises(ValueError, match=r'images\[1\]: expected uint8 pixels, got dtype float32'):
    recognizer.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
  with pytest.raises(ValueError, match='expected an H×W'):
    recognizer.predict(np.zeros((8, 8, 2), np.uint8))


def test_class_filter(recognizer, lively):
  images = _images()
  everything = recognizer.predict(images)
  counts = np.bincount([d.class_id for dets in everything for d in dets], minlength=7)
  wanted = int(np.argmax(counts))
  name = recognizer.class_names[wanted]
  only = predict.Recognizer.from_checkpoint(lively[0], conf_thres=CONF, iou_thres=IOU,
                                            classes=[name], batch_buckets=BUCKETS)
  assert only.classes == (wanted,)
  # NMS is per class, so keeping one class before NMS keeps exactly that class's boxes.
  for dets, all_dets in zip(only.predict(images), everything):
    assert [(d.box, d.class_id) for d in dets] == [(d.box, d.class_id) for d in all_dets
                                                   if d.class_id == wanted]
  with pytest.raises(ValueError, match="unknown class name 'Joy'"):
    predict.resolve_classes(['Joy'], recognizer.class_names)
  with pytest.raises(ValueError, match='class id 9 out of range'):
    predict.resolve_classes([9], recognizer.class_names)


def test_repeated_calls_never_recompile(recognizer, lively):
  rng = np.random.default_rng(2)

  def images(n):
    return [rng.integers(0, 256, (int(rng.integers(10, 200)), int(rng.integers(10, 200)), 3), np.uint8)
            for _ in range(n)]

  recognizer.predict(images(1))
  recognizer.predict(images(3))
  after_warmup = predict.trace_count()
  for n in (1, 2, 3, 4, 5, 9, 1):   # 5 = 4 + 1, 9 = 4 + 4 + 1: still the two buckets
    assert len(recognizer.predict(images(n))) == n
  # A second recognizer with the same model and settings shares the compiled function.
  twin = predict.Recognizer.from_checkpoint(lively[0], conf_thres=CONF, iou_thres=IOU,
                                            batch_buckets=BUCKETS)
  twin.predict(images(2))
  assert predict.trace_count() == after_warmup
  assert predict.bucket_size(3, BUCKETS) == 4 and predict.bucket_size(1, BUCKETS) == 1


def test_img_size_must_fit_the_strides(lively):
  with pytest.raises(ValueError, match='multiple of the largest stride 32, got 100'):
    predict.Recognizer.from_checkpoint(lively[0], img_size=100)


def test_import_is_lazy():
  import subprocess
  import sys
  import yolo_osam_jax
  code = 'import sys, yolo_osam_jax; print("jax" in sys.modules, "cv2" in sys.modules)'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ['False', 'False']
  assert yolo_osam_jax.Recognizer is predict.Recognizer and yolo_osam_jax.Detection is predict.Detection


# ---------------------------------------------------------------------------------------------------
# With the model trained by the demo fixture.


def test_trained_model_finds_synthetic_faces(trained):
  from conftest import DEMO_FIXTURE_SIZE, _demo_fixture_scene
  from yolo_osam_jax.data import synthetic_faces
  assert trained.img_size == DEMO_FIXTURE_SIZE
  found, seeds = [], range(10_000, 10_004)  # fresh scenes: the fixture trains on seeds < 10 000
  for seed in seeds:
    image, boxes, labels = synthetic_faces.render_scene(np.random.default_rng(seed), DEMO_FIXTURE_SIZE,
                                                        _demo_fixture_scene())
    dets = trained.predict(image)  # default thresholds: conf 0.25, IoU 0.45
    hit = [d for d in dets if d.class_id == labels[0] and _iou(d.box, boxes[0]) >= 0.5]
    found.append(bool(hit))
  assert sum(found) >= 3, f'faces found at IoU ≥ 0.5 with the right class, per scene: {found}'


def test_trained_model_is_silent_on_blank_images(trained):
  s = trained.img_size
  for value in (0, 114, 255):
    assert trained.predict(np.full((s, s, 3), value, np.uint8)) == []
  assert trained.predict(np.full((2 * s, s, 3), 200, np.uint8)) == []


def _iou(a, b):
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
  inter = iw * ih
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---------------------------------------------------------------------------------------------------
# scripts/predict.py


def _load_script():
  spec = importlib.util.spec_from_file_location('predict_script', os.path.join(ROOT, 'scripts', 'predict.py'))
  module = importlib.util.module_from_spec(spec)
  import sys
  sys.path.insert(0, os.path.join(ROOT, 'scripts'))
  spec.loader.exec_module(module)
  return module


def _write_video(path, frames, fps=10):
  h, w = frames[0].shape[:2]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (w, h))
  assert writer.isOpened()
  for f in frames:
    writer.write(f)
  writer.release()


def _assert_same_detections(record_dets, dets):
  assert len(record_dets) == len(dets)
  for r, d in zip(record_dets, dets):
    assert r['class_id'] == d.class_id and r['name'] == d.name
    np.testing.assert_allclose(r['box'], d.box, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(r['confidence'], d.confidence, rtol=0, atol=1e-5)
    np.testing.assert_allclose(r['probabilities'], d.probabilities, rtol=0, atol=1e-5)


def test_predict_script_folder_and_video(lively, recognizer, tmp_path, capsys):
  script = _load_script()
  rng = np.random.default_rng(3)
  folder = tmp_path / 'photos'
  folder.mkdir()
  good = {'a.jpg': rng.integers(0, 256, (60, 90, 3), np.uint8),
          'b.png': rng.integers(0, 256, (120, 70, 3), np.uint8),
          'grey.png': rng.integers(0, 256, (40, 40), np.uint8)}
  for name, image in good.items():
    assert cv2.imwrite(str(folder / name), image)
  (folder / 'empty.jpg').write_bytes(b'')
  (folder / 'corrupt.png').write_bytes(b'\x89PNG but not really' * 5)
  (folder / 'broken.mp4').write_bytes(b'not a video' * 20)
  (folder / 'notes.txt').write_text('hello')
  frames = [rng.integers(0, 256, (48, 64, 3), np.uint8) for _ in range(5)]
  video = tmp_path / 'clip.mp4'
  _write_video(video, frames)
  out = tmp_path / 'out'

  status = script.main(['--checkpoint', lively[0], '--source', str(folder), str(tmp_path / 'missing.jpg'),
                        str(video), '--out', str(out), '--save', 'all', '--save-conf',
                        '--conf-thres', str(CONF), '--iou-thres', str(IOU), '--batch-size', '4'])
  captured = capsys.readouterr()
  assert status == 1  # some sources failed, the others were processed
  errors = [l for l in captured.err.splitlines() if l.startswith('error: ')]
  for bad, reason in (('empty.jpg', 'empty file'), ('corrupt.png', 'not a readable image'),
                      ('broken.mp4', 'cannot open this video'), ('notes.txt', 'unsupported file type'),
                      ('missing.jpg', 'no such file')):
    lines = [l for l in errors if bad in l]
    assert len(lines) == 1 and reason in lines[0], (bad, errors)
  assert len(errors) == 5

  records = json.loads((out / 'detections.json').read_text())
  image_records = [r for r in records if r['frame'] is None]
  frame_records = [r for r in records if r['frame'] is not None]
  assert [os.path.basename(r['source']) for r in image_records] == ['a.jpg', 'b.png', 'grey.png']
  assert [r['frame'] for r in frame_records] == list(range(5))
  # JSON detections equal the library's on the same files / decoded frames.
  library = recognizer.predict([str(folder / n) for n in ('a.jpg', 'b.png', 'grey.png')])
  for record, dets, name in zip(image_records, library, ('a.jpg', 'b.png', 'grey.png')):
    assert (record['height'], record['width']) == good[name].shape[:2]
    _assert_same_detections(record['detections'], dets)
  capture = cv2.VideoCapture(str(video))
  decoded = [capture.read()[1] for _ in range(5)]
  capture.release()
  for record, dets in zip(frame_records, recognizer.predict(decoded, bgr=True)):
    _assert_same_detections(record['detections'], dets)
  total = sum(len(r['detections']) for r in records)
  assert total > 0

  # Annotated images keep the original size; the annotated video has every frame.
  for name, image in good.items():
    annotated = cv2.imread(str(out / name))
    assert annotated is not None and annotated.shape[:2] == image.shape[:2]
  capture = cv2.VideoCapture(str(out / 'clip.mp4'))
  assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
  capture.release()

  # CSV: one row per detection; txt: yolo lines (class cx cy w h conf) normalised by the image size.
  with open(out / 'detections.csv') as f:
    rows = f.read().strip().splitlines()
  assert rows[0].startswith('source,frame,x1,y1,x2,y2,class_id,name,confidence,p_Surprise')
  assert len(rows) - 1 == total
  record = max(image_records, key=lambda r: len(r['detections']))
  stem = os.path.splitext(os.path.basename(record['source']))[0]
  lines = (out / 'labels' / f'{stem}.txt').read_text().strip().splitlines()
  assert len(lines) == len(record['detections'])
  for line, det in zip(lines, record['detections']):
    values = [float(v) for v in line.split()]
    x1, y1, x2, y2 = det['box']
    w, h = record['width'], record['height']
    assert int(values[0]) == det['class_id']
    np.testing.assert_allclose(values[1:], [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w,
                                            (y2 - y1) / h, det['confidence']], atol=1e-6)
  assert sorted(os.listdir(out / 'labels')) == sorted(
      ['a.txt', 'b.txt', 'grey.txt'] + [f'clip_{i}.txt' for i in range(5)])


def test_predict_script_numbers_runs_and_rejects_bad_checkpoint(lively, tmp_path, capsys):
  script = _load_script()
  image = tmp_path / 'x.png'
  cv2.imwrite(str(image), np.zeros((30, 30, 3), np.uint8))
  project = tmp_path / 'runs'
  for expected in ('1', '2'):
    assert script.main(['--checkpoint', lively[0], '--source', str(image), '--project', str(project),
                        '--save', 'json', '--batch-size', '4']) == 0
    assert os.listdir(project / expected) == ['detections.json']
  assert script.main(['--checkpoint', str(tmp_path / 'nowhere'), '--source', str(image)]) == 2
  assert 'not a model checkpoint' in capsys.readouterr().err
