"""YOLOv8 / YOLO11 (models/anchor_free.py, convert_ultralytics.py) against the ultralytics reference
fixtures (shared/fixtures/ultralytics_nc7, see its README): parameter counts, state-dict layout, forward
parity in eval and train mode, BatchNorm buffers, weight round trip and class-count transfer.

Without the fixtures the fixture tests skip, except under CI=true where they fail. Each arch's model is
compiled once (eval + train forward in one jitted function, module-scoped fixture).
"""

import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from conftest import FIXTURES, require_fixture
from yolo_osam_jax import convert_ultralytics as cu
from yolo_osam_jax import models
from yolo_osam_jax.convert import ConversionError
from yolo_osam_jax.models import anchor_free as af

FIX = os.path.join(FIXTURES, 'ultralytics_nc7')
ARCHS = ('yolov8', 'yolo11')
SIZES = ('n', 's', 'm', 'l', 'x')
# Parameter counts ultralytics prints for nc=80 (the yaml files' summary comments; they include the
# 16 fixed DFL weights).
PUBLISHED_NC80 = {
    'yolov8': dict(n=3_157_200, s=11_166_560, m=25_902_640, l=43_691_520, x=68_229_648),
    'yolo11': dict(n=2_624_080, s=9_458_752, m=20_114_688, l=25_372_160, x=56_966_176),
}
NC7_N = {'yolov8': 3_012_213, 'yolo11': 2_591_205}


def _config(arch, size='n', nc=7, dtype='float32'):
  mc = base.model_config(size, nc)
  mc.arch = arch
  mc.dtype = dtype
  return mc


def _fixture_dir(arch):
  return require_fixture(os.path.join(FIX, f'{arch}n'))


def _nhwc(a):
  return np.transpose(a, (0, 2, 3, 1))


def _params(variables_or_shapes):
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(variables_or_shapes['params'])))


@pytest.fixture(scope='module', params=ARCHS)
def ref(request):
  """Fixture files, converted variables and our eval/train outputs for one arch (compiled once)."""
  arch = request.param
  d = _fixture_dir(arch)
  mc = _config(arch)
  meta = json.load(open(os.path.join(d, 'meta.json')))
  with np.load(os.path.join(d, 'state_dict.npz')) as f:
    sd = {k: f[k] for k in f.files}
  variables = cu.from_ultralytics_state_dict(sd, mc)
  module = models.build(mc)
  necks = {f'layer_{i}' for i in af.neck_layers(mc)}

  @jax.jit
  def run(v, x):
    (pred, raw), inter = module.apply(
        v, x, capture_intermediates=lambda m, name: m.name in necks and name == '__call__',
        mutable=['intermediates'])
    (_, train_raw), updates = module.apply(v, x, train=True, mutable=['batch_stats'])
    neck = [inter['intermediates'][f'layer_{i}']['__call__'][0] for i in af.neck_layers(mc)]
    return pred, raw, neck, train_raw, updates['batch_stats']

  x = _nhwc(np.load(os.path.join(FIX, 'input_2x3x128x128.npy')))
  out = jax.device_get(run(variables, jnp.asarray(x)))
  load = lambda name: np.load(os.path.join(d, name))  # noqa: E731
  return dict(arch=arch, dir=d, config=mc, meta=meta, sd=sd, variables=variables,
              pred=out[0], raw=out[1], neck=out[2], train_raw=out[3], batch_stats=out[4], load=load)


# ------------------------------------------------------------------------------------------------
# Parameter counts and layout (shapes only, no compile)


@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_counts_match_the_fixture(arch):
  meta = json.load(open(os.path.join(_fixture_dir(arch), 'meta.json')))
  mc = _config(arch)
  shapes = cu.variable_shapes(mc)
  trainable = _params(shapes)
  assert trainable == meta['n_params_trainable']
  assert trainable + af.fixed_parameter_count(mc) == meta['n_params'] == NC7_N[arch]
  ours = [(i, n) for i, _, n in af.layer_param_counts(mc)]
  theirs = [(l['i'], l['n_params']) for l in meta['layers']]
  assert ours == theirs
  # The state dict covers every key of the reference with equal shapes, and nothing else.
  sd = cu.to_ultralytics_state_dict(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes), mc)
  assert {k: list(np.shape(v)) for k, v in sd.items()} == {
      k: v['shape'] for k, v in meta['state_dict'].items()}
  assert list(sd) == list(meta['state_dict'])  # PyTorch's key order too
  assert len(sd) == meta['n_state_dict_entries']


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('size', SIZES)
def test_every_size_builds_with_the_published_parameter_count(arch, size):
  mc = _config(arch, size, nc=80)
  width, _, max_channels = models.scale_of(mc)
  table = af.layer_table(mc)
  cap = af.make_divisible(max_channels * width, 8)
  assert max(L.channels for L in table if L.kind != 'concat') == cap
  assert table[-1].kind == 'detect' and af.strides(mc) == (8, 16, 32)
  if arch == 'yolo11':
    assert all(L.c3k == (size in 'mlx' or L.index in (6, 8, 22)) for L in table if L.kind == 'c3k2')
  shapes = cu.variable_shapes(mc, img_size=32)
  assert _params(shapes) + af.fixed_parameter_count(mc) == PUBLISHED_NC80[arch][size]


def test_scale_tables_and_repeats():
  assert af.SCALES['yolov8']['m'] == (0.75, 0.67, 768)
  assert af.SCALES['yolo11']['x'] == (1.5, 1.0, 512)
  t = {L.index: L for L in af.layer_table(_config('yolov8', 'm'))}
  assert (t[2].n, t[4].n, t[8].n) == (2, 4, 2) and t[8].channels == 576  # min(1024, 768) · 0.75
  t = {L.index: L for L in af.layer_table(_config('yolo11', 'x'))}
  assert (t[2].n, t[10].n) == (2, 2) and t[10].channels == 768  # min(1024, 512) · 1.5
  mc = _config('yolo11', 'n')
  mc.max_channels = 256
  assert max(L.channels for L in af.layer_table(mc) if L.kind != 'concat') == 64
  assert af.REG_MAX == 16


def test_bfloat16_traces_with_float32_predictions():
  mc = _config('yolo11', dtype='bfloat16')
  module = models.build(mc)
  x = jnp.zeros((1, 64, 64, 3), jnp.float32)
  v = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(v))
  pred, raw = jax.eval_shape(lambda v, x: module.apply(v, x), v, x)
  assert pred.shape == (1, 64 + 16 + 4, 4 + 7) and pred.dtype == jnp.float32
  assert [r.shape for r in raw] == [(1, 8, 8, 71), (1, 4, 4, 71), (1, 2, 2, 71)]
  assert raw[0].dtype == jnp.bfloat16
  (_, _), upd = jax.eval_shape(lambda v, x: module.apply(v, x, train=True, mutable=['batch_stats']), v, x)
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(upd))


# ------------------------------------------------------------------------------------------------
# Forward parity (one compile per arch)


def test_eval_raw_and_neck_maps(ref):
  for i in range(3):
    want = _nhwc(ref['load'](f'raw_L{i}.npy'))
    assert ref['raw'][i].shape == want.shape
    np.testing.assert_allclose(ref['raw'][i], want, rtol=0, atol=1e-4, err_msg=f'raw_L{i}')
    want = _nhwc(ref['load'](f'neck_L{i}.npy'))
    assert ref['neck'][i].shape == want.shape and np.abs(want).mean() > 1e-2
    np.testing.assert_allclose(ref['neck'][i], want, rtol=0, atol=1e-4, err_msg=f'neck_L{i}')


def test_eval_decoded_predictions(ref):
  want = np.transpose(ref['load']('infer.npy'), (0, 2, 1))  # [2, N, 4 + nc]
  pred = ref['pred']
  assert pred.shape == want.shape == (2, 336, 4 + 7)
  np.testing.assert_allclose(pred[..., :4], want[..., :4], rtol=0, atol=1e-3, err_msg='boxes (px)')
  np.testing.assert_allclose(pred[..., 4:], want[..., 4:], rtol=1e-4, atol=0, err_msg='class scores')
  # The logits behind the scores (the scores alone are ~1e-4..2e-3 with this init).
  logits = np.concatenate([r[..., 64:].reshape(2, -1, 7) for r in ref['raw']], axis=1)
  want_logits = np.log(want[..., 4:]) - np.log1p(-want[..., 4:])
  np.testing.assert_allclose(logits, want_logits, rtol=0, atol=1e-3)


def test_decode_matches_a_direct_numpy_decoding(ref):
  """DFL expectation + dist2bbox written out in numpy on our own raw maps."""
  raw, s = ref['raw'][1].astype(np.float64), 16
  b, h, w, _ = raw.shape
  logits = raw[..., :64].reshape(b, h, w, 4, 16)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  dist = (p / p.sum(-1, keepdims=True) * np.arange(16)).sum(-1)
  ax, ay = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
  x1, y1, x2, y2 = ax - dist[..., 0], ay - dist[..., 1], ax + dist[..., 2], ay + dist[..., 3]
  box = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1).reshape(b, h * w, 4) * s
  n0 = ref['raw'][0].shape[1] * ref['raw'][0].shape[2]
  np.testing.assert_allclose(ref['pred'][:, n0:n0 + h * w, :4], box, rtol=0, atol=1e-4)
  points, strides = af.anchors_of([r.shape[1:3] for r in ref['raw']], af.strides(ref['config']))
  assert points.shape == (336, 2) and strides.shape == (336, 1)
  np.testing.assert_array_equal(points[n0:n0 + h * w], np.stack([ax, ay], -1).reshape(-1, 2))
  assert (strides[:n0] == 8).all() and (strides[n0:n0 + h * w] == 16).all() and (strides[-4:] == 32).all()


def test_train_raw_maps(ref):
  for i in range(3):
    want = _nhwc(ref['load'](f'train_raw_L{i}.npy'))
    np.testing.assert_allclose(ref['train_raw'][i], want, rtol=0, atol=1e-4, err_msg=f'train_raw_L{i}')


def test_loss_end_to_end_from_the_weights(ref):
  """Converted weights → our train-mode forward → the family's loss (losses.detection_loss, as the
  train step calls it) on loss.json's targets: ultralytics' numbers within 1e-5 relative."""
  from yolo_osam_jax import losses  # pylint: disable=import-outside-toplevel
  reference = json.load(open(os.path.join(ref['dir'], 'loss.json')))
  rows = np.array(reference['targets']['rows'], np.float32)
  m = 5  # padded: the images have 4 and 3 targets
  boxes, classes, mask = np.zeros((2, m, 4), np.float32), np.zeros((2, m), np.int32), np.zeros((2, m), bool)
  for b in range(2):
    image_rows = rows[rows[:, 0] == b]
    n = len(image_rows)
    boxes[b, :n], classes[b, :n], mask[b, :n] = image_rows[:, 2:], image_rows[:, 1], True
  targets = {'boxes': boxes, 'classes': classes, 'mask': mask}
  total, parts = losses.detection_loss([jnp.asarray(r) for r in ref['train_raw']], targets, ref['config'],
                                       128, {'box': 7.5, 'cls': 0.5, 'dfl': 1.5})
  assert losses.components(ref['config']) == ('box', 'cls', 'dfl')
  assert float(total) == pytest.approx(reference['total'], rel=1e-5)
  items = [float(parts[k]) for k in ('box', 'cls', 'dfl')]
  np.testing.assert_allclose(items, [reference['items'][f'{k}_loss'] for k in ('box', 'cls', 'dfl')],
                             rtol=1e-5)
  np.testing.assert_allclose(np.array(items) * 2, reference['loss_vector'], rtol=1e-5)


def test_batchnorm_buffers_after_one_train_step(ref):
  with np.load(os.path.join(ref['dir'], 'train_bn_buffers_after.npz')) as f:
    want = {k: f[k] for k in f.files}
  got = cu.to_ultralytics_state_dict({'params': ref['variables']['params'],
                                      'batch_stats': ref['batch_stats']}, ref['config'],
                                     num_batches_tracked=1)
  assert want and all(k in got for k in want)
  for k, v in want.items():
    if k.endswith('num_batches_tracked'):
      assert got[k] == v, k
    else:
      np.testing.assert_allclose(got[k], v, rtol=0, atol=1e-5, err_msg=k)
  # The statistics actually moved (so the check above is not vacuous).
  assert max(np.abs(want[k] - ref['sd'][k]).max() for k in want if k.endswith('running_var')) > 1e-3


# ------------------------------------------------------------------------------------------------
# Conversion


def test_round_trip_is_exact(ref):
  back = cu.to_ultralytics_state_dict(ref['variables'], ref['config'])
  assert list(back) == list(ref['sd'])
  for k, v in ref['sd'].items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    np.testing.assert_array_equal(back[k], v, err_msg=k)
  # The fixed DFL projection is a constant, not a trainable parameter.
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(ref['variables'])[0]]
  assert paths and not any('dfl' in p for p in paths)


@pytest.mark.parametrize('arch', ARCHS)
def test_class_count_transfer_80_to_7(arch, caplog):
  src_cfg, dst_cfg = _config(arch, nc=80), _config(arch, nc=7)
  rng = np.random.default_rng(0)
  src_shapes = cu.variable_shapes(src_cfg, img_size=32)
  src = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32) + 3.0, src_shapes)
  sd = cu.to_ultralytics_state_dict(src, src_cfg)
  with caplog.at_level(logging.WARNING, logger=cu.__name__):
    v = cu.from_ultralytics_state_dict(sd, dst_cfg, rng=jax.random.PRNGKey(1))
  assert 'keep their fresh initialisation' in caplog.text
  out = cu.to_ultralytics_state_dict(v, dst_cfg)
  det = af.layer_table(dst_cfg)[-1].index
  fresh = [k for k in out if out[k].shape != sd[k].shape]
  assert fresh and all(k.startswith(f'model.{det}.cv3.') for k in fresh)
  for i, s in enumerate(af.strides(dst_cfg)):
    assert f'model.{det}.cv3.{i}.2.weight' in fresh
    np.testing.assert_allclose(out[f'model.{det}.cv3.{i}.2.bias'], math.log(5 / 7 / (640 / s) ** 2),
                               rtol=1e-6)
  for k in out:
    if k not in fresh:
      np.testing.assert_array_equal(out[k], sd[k], err_msg=k)
  # Fresh class-branch weights are an init, not the (shifted) source values.
  assert abs(float(np.mean(out[f'model.{det}.cv3.0.2.weight']))) < 0.5


def test_conversion_errors_name_the_key():
  mc = _config('yolov8')
  shapes = cu.variable_shapes(mc, img_size=32)
  sd = cu.to_ultralytics_state_dict(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes), mc)

  bad = dict(sd)
  bad['model.4.m.1.cv2.conv.weight'] = np.zeros((32, 32, 1, 1), np.float32)
  with pytest.raises(ConversionError, match=r'model\.4\.m\.1\.cv2\.conv\.weight: shape'):
    cu.from_ultralytics_state_dict(bad, mc)

  bad = dict(sd)
  del bad['model.9.cv2.bn.running_var']
  with pytest.raises(ConversionError, match=r'model\.9\.cv2\.bn\.running_var: missing'):
    cu.from_ultralytics_state_dict(bad, mc)

  bad = dict(sd)
  bad['model.22.cv4.0.weight'] = np.zeros((3,), np.float32)
  with pytest.raises(ConversionError, match=r'model\.22\.cv4\.0\.weight: not used'):
    cu.from_ultralytics_state_dict(bad, mc)

  bad = dict(sd)
  bad['model.22.dfl.conv.weight'] = np.ones((1, 16, 1, 1), np.float32)
  with pytest.raises(ConversionError, match=r'model\.22\.dfl\.conv\.weight'):
    cu.from_ultralytics_state_dict(bad, mc)


# ------------------------------------------------------------------------------------------------
# Every size under jit (slow)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('size', SIZES)
def test_every_size_runs_under_jit(arch, size):
  mc = _config(arch, size)
  module = models.build(mc)
  x = jnp.asarray(np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32))

  @jax.jit
  def run(x):  # one compile per size: init, eval forward, train forward
    v = module.init(jax.random.PRNGKey(0), x)
    pred, raw = module.apply(v, x)
    (_, traw), upd = module.apply(v, x, train=True, mutable=['batch_stats'])
    return v, pred, raw, traw, upd

  v, pred, raw, traw, upd = run(x)
  assert pred.shape == (1, 84, 11) and np.isfinite(np.asarray(pred)).all()
  assert [r.shape[1:3] for r in raw] == [(8, 8), (4, 4), (2, 2)]
  assert all(np.isfinite(np.asarray(r)).all() for r in traw)
  assert jax.tree_util.tree_structure(upd['batch_stats']) == jax.tree_util.tree_structure(v['batch_stats'])
  if size == 'n':  # bfloat16 compute agrees with float32 to bf16 precision
    mb = models.build(_config(arch, size, dtype='bfloat16'))
    pb, rb = jax.jit(lambda v, x: mb.apply(v, x))(v, x)
    assert pb.dtype == jnp.float32 and rb[0].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(pb[..., :4]), np.asarray(pred[..., :4]), rtol=0, atol=2.0)
    np.testing.assert_allclose(np.asarray(rb[0], np.float32), np.asarray(raw[0]), rtol=0, atol=0.25)
