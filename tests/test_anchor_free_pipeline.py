"""The anchor-free family (YOLOv8, YOLO11) through the project's tools, checked against the ultralytics
fixture (shared/fixtures/ultralytics_nc7): the weight-conversion script writes a checkpoint whose ONNX
export reproduces ultralytics' decoded output, whose state-dict export gives the original weights back,
which `Recognizer` turns into the detections an independent NMS finds, and whose model_info numbers are
ultralytics' own."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES, ROOT, require_fixture
from yolo_osam_jax import convert, export, models
from yolo_osam_jax.evaluation import nms
from yolo_osam_jax.predict import Recognizer

ARCHS = ('yolov8', 'yolo11')


def _script(name, *args):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', name), *args], capture_output=True,
                        text=True, check=True, cwd=ROOT).stdout


@pytest.fixture(scope='module', params=ARCHS)
def converted(request, tmp_path_factory):
  """(arch, fixture folder, checkpoint folder) made by scripts/convert_yolov5.py --arch."""
  arch = request.param
  folder = require_fixture(os.path.join(FIXTURES, 'ultralytics_nc7', f'{arch}n'))
  out = str(tmp_path_factory.mktemp(arch) / 'ckpt')
  _script('convert_yolov5.py', '--weights', os.path.join(folder, 'state_dict.npz'), '--config',
          os.path.join(ROOT, 'configs', f'{arch}.py'), '--arch', arch, '--config.model.size=n', '--out', out)
  return arch, folder, out


def test_state_dict_export_gives_the_original_weights_back(converted, tmp_path):
  _, folder, ckpt = converted
  path = export.export_checkpoint(ckpt, 'npz', str(tmp_path / 'sd.npz'))
  with np.load(path) as got, np.load(os.path.join(folder, 'state_dict.npz')) as want:
    assert got.files == want.files  # every key, in PyTorch's order
    for key in want.files:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


pytest.importorskip('onnxruntime')


def test_onnx_export_reproduces_ultralytics_decoded_output(converted, tmp_path):
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel
  pytest.importorskip('jax2onnx')
  _, folder, ckpt = converted
  path = export.export_checkpoint(ckpt, 'onnx', str(tmp_path / 'model.onnx'), img_size=128, batch=2)
  assert 'no objectness' in export.onnx_metadata(path)['output']
  session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
  images = np.transpose(np.load(os.path.join(FIXTURES, 'ultralytics_nc7', 'input_2x3x128x128.npy')),
                        (0, 2, 3, 1))
  got = session.run(None, {'images': images})[0]                              # [2, N, 4 + nc]
  want = np.transpose(np.load(os.path.join(folder, 'infer.npy')), (0, 2, 1))  # [2, 4 + nc, N] in torch
  assert got.shape == want.shape == (2, 336, 11)
  np.testing.assert_allclose(got[..., :4], want[..., :4], rtol=0, atol=1e-3)  # pixels
  # Class scores (~1e-4, the fixture's bias init) relative: onnxruntime's kernels land within 1e-3 of
  # them (JAX itself within 1e-5, tests/test_anchor_free.py).
  np.testing.assert_allclose(got[..., 4:], want[..., 4:], rtol=2e-3, atol=0)


def test_recognizer_finds_what_an_independent_nms_finds(converted):
  _, folder, ckpt = converted
  # The fixture's class scores are ~1e-4..2e-3 (its bias init), so a low threshold gives detections.
  rec = Recognizer.from_checkpoint(ckpt, conf_thres=5e-4, iou_thres=0.45, img_size=128, faces='model')
  image = (np.load(os.path.join(FIXTURES, 'ultralytics_nc7', 'input_2x3x128x128.npy'))[0]
           .transpose(1, 2, 0) * 255).round().astype(np.uint8)
  detections = rec.predict(image)
  # Reference: ultralytics' decoded output on the same uint8 image → the class-score rule written out.
  predictions, _ = rec.module.apply(rec.variables, image[None].astype(np.float32) / 255.0)
  boxes, scores, classes = nms.nms_numpy(nms.with_objectness(np.asarray(predictions)[0], 7),
                                         conf_thres=5e-4, iou_thres=0.45, max_det=300, multi_label=False)
  assert len(detections) == len(scores) > 0
  np.testing.assert_allclose([d.box for d in detections], np.clip(boxes, 0, 128), atol=1e-3)
  np.testing.assert_allclose([d.confidence for d in detections], scores, rtol=1e-5)
  assert [d.class_id for d in detections] == list(classes)


@pytest.mark.parametrize('arch', ARCHS)
def test_model_info_prints_ultralytics_counts(arch):
  meta = json.load(open(os.path.join(require_fixture(os.path.join(FIXTURES, 'ultralytics_nc7',
                                                                  f'{arch}n')), 'meta.json')))
  last = _script('model_info.py', '--config', os.path.join(ROOT, 'configs', f'{arch}.py'),
                 '--config.model.size=n', '--img', '128').strip().splitlines()[-1]
  params, flops = last.split()[1], float(last.split()[-1])
  assert int(params) == meta['n_params']                       # the fixed DFL weights included
  assert flops == pytest.approx(meta['gflops']['128'], rel=0.015)
