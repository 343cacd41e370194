"""ONNX export (run in onnxruntime, compared with JAX) and yolov5-layout state-dict export."""

import importlib.util
import json
import os
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from test_predict import IMG, forward, make_lively_checkpoint, random_variables
from yolo_osam_jax import checkpoint, convert, export, models

ort = pytest.importorskip('onnxruntime')
pytest.importorskip('jax2onnx')


@pytest.fixture(scope='module')
def lively(tmp_path_factory):
  directory = tmp_path_factory.mktemp('export') / 'best'
  config, variables = make_lively_checkpoint(directory)
  return str(directory), config, variables


def _load_script():
  sys.path.insert(0, os.path.join(ROOT, 'scripts'))
  spec = importlib.util.spec_from_file_location('export_script', os.path.join(ROOT, 'scripts', 'export.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _assert_matches_jax(onnx_out, jax_out):
  # Pixel-valued columns (cx, cy, w, h up to hundreds of px) are compared relatively, as in
  # test_convert.py: |Δ| ≤ 1e-4 · max(1, |x|); probabilities absolutely to 1e-4.
  err = np.abs(onnx_out - jax_out) / np.maximum(1.0, np.abs(jax_out))
  assert err.max() <= 1e-4
  np.testing.assert_allclose(onnx_out[..., 4:], jax_out[..., 4:], rtol=0, atol=1e-4)


def test_onnx_dynamic_batch_matches_jax(lively, tmp_path):
  directory, config, variables = lively
  path = export.export_checkpoint(directory, 'onnx', str(tmp_path / 'model.onnx'), dynamic_batch=True)
  session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
  (inp,), (out,) = session.get_inputs(), session.get_outputs()
  assert inp.name == 'images' and out.name == 'predictions'
  assert isinstance(inp.shape[0], str) and inp.shape[1:] == [IMG, IMG, 3]
  levels = models.levels(config.model)
  n = sum((IMG // lv.stride) ** 2 * len(lv.anchors) for lv in levels)
  assert out.shape[1:] == [n, 12]
  module = models.build(config.model)
  rng = np.random.default_rng(0)
  for batch in (1, 2):  # traced with a symbolic batch; 2 also serves the fixed-batch test's JAX run
    x = rng.random((batch, IMG, IMG, 3)).astype(np.float32)
    got = session.run(None, {'images': x})[0]
    want = np.asarray(forward(module)(variables, x)[0])
    assert got.shape == want.shape == (batch, n, 12)
    assert (want[..., 4] > 0.25).sum() > 0  # the comparison covers boxes that would be detected
    _assert_matches_jax(got, want)
  meta = export.onnx_metadata(path)
  assert json.loads(meta['names']) == {str(i): n for i, n in enumerate(config.data.class_names)}
  assert json.loads(meta['strides']) == [4, 8, 16, 32] and json.loads(meta['imgsz']) == [IMG, IMG]


def test_export_script_fixed_batch_onnx(lively, capsys):
  directory, config, variables = lively
  script = _load_script()
  assert script.main(['--checkpoint', directory, '--format', 'onnx', '--batch', '2']) == 0
  path = directory + '.onnx'  # default: beside the checkpoint, as yolov5 names exports
  assert f'wrote {path}' in capsys.readouterr().out
  session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
  assert session.get_inputs()[0].shape == [2, IMG, IMG, 3]
  x = np.random.default_rng(1).random((2, IMG, IMG, 3)).astype(np.float32)
  want = np.asarray(forward(models.build(config.model))(variables, x)[0])
  _assert_matches_jax(session.run(None, {'images': x})[0], want)
  with pytest.raises(Exception):  # a fixed batch rejects another size
    session.run(None, {'images': x[:1]})


def test_state_dict_export_reloads_to_the_same_variables(lively, tmp_path, monkeypatch):
  directory, config, variables = lively
  script = _load_script()
  npz, st = str(tmp_path / 'w.npz'), str(tmp_path / 'w.safetensors')
  assert script.main(['--checkpoint', directory, '--format', 'npz', '--out', npz]) == 0
  assert script.main(['--checkpoint', directory, '--format', 'safetensors', '--out', st]) == 0
  from_npz, from_st = convert.load_state_dict_file(npz), convert.load_state_dict_file(st)
  assert sorted(from_npz) == sorted(from_st)
  for k in from_npz:
    a, b = from_npz[k], from_st[k]
    if k.endswith('num_batches_tracked'):
      # PyTorch keeps it 0-d; convert.save_state_dict_file currently writes it as shape (1,) to
      # safetensors (np.ascontiguousarray makes 0-d arrays 1-d). Only the value matters to BatchNorm.
      a, b = a.reshape(-1), b.reshape(-1)
    assert a.dtype == b.dtype and np.array_equal(a, b), k
  # PyTorch layout: conv weights OIHW; the first conv takes 3 input channels.
  assert from_npz['model.0.conv.weight'].shape[1] == 3
  # from_yolov5_state_dict uses init_variables only as a shape template that every key overwrites; a
  # random template of the same shapes skips a slow init on this machine.
  monkeypatch.setattr(convert, 'init_variables',
                      lambda model_config, rng=None: random_variables(model_config, 5))
  again = convert.from_yolov5_state_dict(from_npz, config.model)
  _, saved = checkpoint.load_model(directory)
  flat_saved = dict(jax.tree_util.tree_leaves_with_path(saved))
  flat_again = dict(jax.tree_util.tree_leaves_with_path(again))
  assert flat_saved.keys() == flat_again.keys()
  for key, value in flat_saved.items():
    assert np.array_equal(np.asarray(flat_again[key]), np.asarray(value)), key


def test_export_errors(lively, tmp_path, capsys):
  directory = lively[0]
  script = _load_script()
  assert script.main(['--checkpoint', directory, '--format', 'npz', '--out', str(tmp_path / 'w.bin')]) == 2
  assert '--format npz writes a .npz file' in capsys.readouterr().err
  assert script.main(['--checkpoint', str(tmp_path / 'none'), '--format', 'npz']) == 2
  assert 'not a model checkpoint' in capsys.readouterr().err
  with pytest.raises(ValueError, match='multiple of the largest stride 32, got 50'):
    export.export_checkpoint(directory, 'onnx', str(tmp_path / 'm.onnx'), img_size=50)
  with pytest.raises(SystemExit):
    script.main(['--checkpoint', directory, '--format', 'npz', '--dynamic-batch'])
