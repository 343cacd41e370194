"""Weight import/export against the published PyTorch network's reference outputs (shared/fixtures)."""

import os

import jax
import numpy as np
import pytest

from configs import base
from conftest import FIXTURES, require_fixture
from yolo_osam_jax import convert, models

FIX = os.path.join(FIXTURES, 'yolov5s_nc7')


def yolov5s_config(nc=7):
  c = base.model_config('s', nc)
  c.fusion, c.attention.kind, c.attention.where = 'none', 'none', 'none'
  return c


@pytest.fixture(scope='module')
def state_dict():
  return convert.load_state_dict_file(require_fixture(os.path.join(FIX, 'state_dict.npz')))


@pytest.fixture(scope='module')
def converted(state_dict):
  cfg = yolov5s_config()
  variables = convert.from_yolov5_state_dict(state_dict, cfg)
  x = np.load(require_fixture(os.path.join(FIX, 'input_2x3x128x128.npy')))
  x = x.transpose(0, 2, 3, 1)  # NCHW → NHWC
  pred, raw = jax.jit(models.build(cfg).apply)(variables, x)
  return cfg, variables, np.asarray(pred), [np.asarray(r) for r in raw]


def test_raw_outputs_match_pytorch(converted):
  _, _, _, raw = converted
  for i, r in enumerate(raw):
    ref = np.load(require_fixture(os.path.join(FIX, f'raw_L{i}.npy')))  # [B, A, H, W, C]
    # Measured on CPU: at most 6.2e-6 (README states this bound).
    np.testing.assert_allclose(r, ref.transpose(0, 2, 3, 1, 4), rtol=0, atol=1e-5)


def test_decoded_outputs_match_pytorch(converted):
  _, _, pred, raw = converted
  ref = np.load(require_fixture(os.path.join(FIX, 'infer.npy')))  # levels flattened (A, H, W)
  ours, start = [], 0
  for r in raw:
    b, h, w, a, no = r.shape
    ours.append(pred[:, start:start + h * w * a].reshape(b, h, w, a, no).transpose(0, 3, 1, 2, 4)
                .reshape(b, -1, no))
    start += h * w * a
  ours = np.concatenate(ours, 1)
  assert ours.shape == ref.shape == (2, 1008, 12)
  # 1e-4 absolute for values up to ~1; box sizes reach ~400 px where one float32 ulp is 3e-5, so the
  # bound there is relative: |Δ| ≤ 1e-4 · max(1, |ref|).
  err = np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))
  assert err.max() <= 1e-4
  np.testing.assert_allclose(ours[..., 4:], ref[..., 4:], rtol=0, atol=1e-4)


def test_round_trip_is_exact(state_dict, converted):
  cfg, variables, _, _ = converted
  back = convert.to_yolov5_state_dict(variables, cfg, num_batches_tracked=1)
  assert sorted(back) == sorted(state_dict)
  for k, v in state_dict.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    assert np.array_equal(back[k], v), k


def test_round_trip_through_safetensors(tmp_path, converted):
  cfg, variables, _, _ = converted
  sd = convert.to_yolov5_state_dict(variables, cfg)
  path = str(tmp_path / 'w.safetensors')
  convert.save_state_dict_file(sd, path)
  again = convert.from_yolov5_state_dict(convert.load_state_dict_file(path), cfg)
  leaves = jax.tree_util.tree_leaves_with_path(variables)
  for (p, a), b in zip(leaves, jax.tree_util.tree_leaves(again)):
    assert np.array_equal(np.asarray(a), np.asarray(b)), p


def test_wrong_shape_unknown_and_missing_keys_are_named(state_dict):
  cfg = yolov5s_config()
  bad = dict(state_dict)
  bad['model.2.cv1.conv.weight'] = np.zeros((32, 64, 3, 3), np.float32)
  with pytest.raises(convert.ConversionError, match=r'model\.2\.cv1\.conv\.weight: shape \(32, 64, 3, 3\)'):
    convert.from_yolov5_state_dict(bad, cfg)
  extra = dict(state_dict)
  extra['model.99.conv.weight'] = np.zeros((1,), np.float32)
  with pytest.raises(convert.ConversionError, match=r'model\.99\.conv\.weight: not used'):
    convert.from_yolov5_state_dict(extra, cfg)
  missing = {k: v for k, v in state_dict.items() if k != 'model.9.cv2.bn.running_var'}
  with pytest.raises(convert.ConversionError, match=r'model\.9\.cv2\.bn\.running_var: missing'):
    convert.from_yolov5_state_dict(missing, cfg)
  with pytest.raises(ValueError, match=r'\.pt'):
    convert.load_state_dict_file(__file__)


def test_class_count_transfer_keeps_box_and_objectness_rows(state_dict):
  cfg = yolov5s_config(nc=3)
  variables = convert.from_yolov5_state_dict(state_dict, cfg)
  for i in range(3):
    src = state_dict[f'model.24.m.{i}.bias'].reshape(3, 12)
    got = np.asarray(variables['params']['layer_24'][f'm_{i}']['bias']).reshape(3, 8)
    np.testing.assert_array_equal(got[:, :5], src[:, :5])
    # Class rows keep the fresh class prior of a 3-class head.
    np.testing.assert_allclose(got[:, 5:], np.log(0.6 / (3 - 0.99)), rtol=1e-6)
  # Everything else equals the checkpoint.
  np.testing.assert_array_equal(np.asarray(variables['params']['layer_0']['conv']['kernel']),
                                state_dict['model.0.conv.weight'].transpose(2, 3, 1, 0))


def test_anchor_mismatch_is_named_and_recoverable(state_dict):
  cfg = yolov5s_config()
  sd = dict(state_dict)
  sd['model.24.anchors'] = sd['model.24.anchors'] * 1.5
  with pytest.raises(convert.ConversionError, match=r'model\.24\.anchors'):
    convert.from_yolov5_state_dict(sd, cfg)
  cfg.anchors = convert.anchors_from_state_dict(sd, cfg)
  assert cfg.anchors[0] == pytest.approx([15, 19.5, 24, 45, 49.5, 34.5])
  convert.from_yolov5_state_dict(sd, cfg)


def test_published_yolo_osam_key_layout():
  # The published attention names (SPEC §2.1) and Detect at index 32 with the Detect-order anchors.
  cfg = base.model_config('s', 7)
  cfg.attention.gate = 'reference'
  shapes = convert.variable_shapes(cfg)
  rng = np.random.default_rng(0)
  sd = convert.to_yolov5_state_dict(
      jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes), cfg)
  for name in ('spatial', 'spatiall', 'spatialll', 'spatiala', 'spatialla', 'spatiallla', 'spatialc'):
    assert f'model.3.{name}.conv.weight' in sd and f'model.13.{name}.bn.running_var' in sd
  assert sd['model.3.spatialc.conv.weight'].shape == (1, 2, 3, 3)
  assert sd['model.32.m.3.weight'].shape == (36, 64, 1, 1)  # the stride-4 head is Detect input 3
  np.testing.assert_allclose(sd['model.32.anchors'][3], [[2.5, 3.25], [4, 7.5], [8.25, 5.75]])
  np.testing.assert_allclose(sd['model.32.anchors'][0], np.array([[30, 61], [62, 45], [59, 119]]) / 8)
  assert sum(v.size for k, v in sd.items() if k.endswith(('weight', 'bias'))
             and 'running' not in k) == 7_082_920
  again = convert.from_yolov5_state_dict(sd, cfg)
  assert np.array_equal(np.asarray(again['params']['layer_3']['spatial']['mean_2']['conv']['kernel']),
                        sd['model.3.spatiallla.conv.weight'].transpose(2, 3, 1, 0))
