"""The model family: parameter counts from the published code, decoding, attention semantics, configs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from yolo_osam_jax import models
from yolo_osam_jax.models import attention, heads, summary


def yolov5s(nc=7):
  c = base.model_config('s', nc)
  c.fusion = 'none'
  c.attention.kind = 'none'
  c.attention.where = 'none'
  return c


def n_params(cfg, img=64):
  m = models.build(cfg)
  v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, img, img, 3))))
  return summary.count_params(v['params']), v


# Counts measured on the published PyTorch code (SPEC §2.5).
def test_param_count_yolov5s():
  assert n_params(yolov5s(7))[0] == 7_038_508
  assert n_params(yolov5s(80))[0] == 7_235_389


@pytest.mark.parametrize('gate', attention.GATES)
def test_param_count_published_yolo_osam(gate):
  cfg = base.model_config('s', 7)
  cfg.attention.gate = gate
  total, v = n_params(cfg)
  assert total == 7_082_920
  # Rows 3, 6, 9, 13 of the published table are the four OSAM modules, 86 parameters each.
  for i in (3, 6, 9, 13):
    assert summary.count_params(v['params'][f'layer_{i}']) == 86


def test_published_layer_table_matches_spec():
  table = models.layer_table(base.model_config('s', 7))
  # (index, sources, kind, out channels, stride) of SPEC §2.1, rows typed by hand.
  spec = {
      0: ((-1,), 'cbl', 32, 2), 2: ((1,), 'c3', 64, 4), 3: ((2,), 'attention', 64, 4),
      4: ((2,), 'cbl', 128, 8), 7: ((5,), 'cbl', 256, 16), 10: ((8,), 'cbl', 512, 32),
      12: ((11,), 'sppf', 512, 32), 13: ((12,), 'attention', 512, 32), 14: ((13,), 'cbl', 256, 32),
      16: ((15, 9), 'concat', 512, 16), 20: ((19, 6), 'concat', 256, 8), 21: ((20,), 'c3', 128, 8),
      23: ((22, 18), 'concat', 256, 16), 26: ((25, 14), 'concat', 512, 32), 27: ((26,), 'c3', 512, 32),
      28: ((3,), 'c3', 64, 4), 29: ((28,), 'upsample', 64, 4), 30: ((29, 3), 'concat', 128, 4),
      31: ((30,), 'c3', 64, 4)}
  assert len(table) == 33
  for i, (src, kind, ch, stride) in spec.items():
    L = table[i]
    assert (L.sources, L.kind, L.channels, L.stride) == (src, kind, ch, stride), i
  assert table[32].kind == 'detect' and table[32].sources == (21, 24, 27, 31)
  assert [table[i].n for i in (2, 5, 8, 11, 17, 28, 31)] == [1, 2, 3, 1, 1, 1, 1]
  assert table[17].shortcut is False and table[28].shortcut is True


def test_model_summary_gflops_close_to_published():
  # yolov5 prints 0.640 / 0.732 GFLOPs at 128² and 16.0 / 18.3 at 640² (SPEC §2.5), rounded to the
  # digits shown; counted thop's way (summary.gflops) we get 0.6398 / 0.7318 and 15.99 / 18.30.
  assert summary.gflops(yolov5s(7), 128) == pytest.approx(0.640, abs=5e-4)
  assert summary.gflops(base.model_config('s', 7), 128) == pytest.approx(0.732, abs=5e-4)
  assert summary.gflops(yolov5s(7), 640) == pytest.approx(16.0, abs=0.05)
  assert summary.gflops(base.model_config('s', 7), 640) == pytest.approx(18.3, abs=0.05)


def test_levels_and_balance_follow_detect_order():
  ref = heads.levels(base.model_config())
  assert [l.stride for l in ref] == [4, 8, 16, 32]
  assert [l.balance for l in ref] == [0.06, 4.0, 1.0, 0.25]  # published Detect order 8, 16, 32, 4
  assert ref[0].anchors.tolist() == [[10, 13], [16, 30], [33, 23]]
  assert ref[3].anchors.tolist() == [[30, 61], [62, 45], [59, 119]]
  assert [l.balance for l in heads.levels(yolov5s())] == [4.0, 1.0, 0.4]
  c = base.model_config()
  c.fusion = 'fpn'
  assert [l.balance for l in heads.levels(c)] == [4.0, 1.0, 0.25, 0.06]


def numpy_decode(raw, stride, anchors):
  """SPEC §2.2 decoding written out element by element."""
  b, h, w, a, no = raw.shape
  s = 1 / (1 + np.exp(-raw.astype(np.float64)))
  out = np.zeros((b, h, w, a, no))
  for y in range(h):
    for x in range(w):
      out[:, y, x, :, 0] = (2 * s[:, y, x, :, 0] - 0.5 + x) * stride
      out[:, y, x, :, 1] = (2 * s[:, y, x, :, 1] - 0.5 + y) * stride
  out[..., 2] = (2 * s[..., 2]) ** 2 * anchors[:, 0]
  out[..., 3] = (2 * s[..., 3]) ** 2 * anchors[:, 1]
  out[..., 4:] = s[..., 4:]
  return out.reshape(b, h * w * a, no)


def test_decode_matches_formula():
  raw = np.random.default_rng(0).normal(size=(2, 3, 5, 3, 9)).astype(np.float32)
  anchors = np.array([[10, 13], [16, 30], [33, 23]], np.float32)
  got = np.asarray(models.decode(jnp.asarray(raw), 8, anchors))
  np.testing.assert_allclose(got, numpy_decode(raw, 8, anchors), rtol=1e-5, atol=1e-4)


def test_detect_bias_priors():
  from yolo_osam_jax.models.yolo import Detect
  det = Detect(num_classes=7, num_anchors=3, strides=(8, 16, 32))
  xs = [jnp.zeros((1, 64 // s, 64 // s, 16)) for s in (8, 16, 32)]
  v = det.init(jax.random.PRNGKey(0), xs)
  for i, stride in enumerate((8, 16, 32)):
    b = np.asarray(v['params'][f'm_{i}']['bias']).reshape(3, 12)
    np.testing.assert_allclose(b[:, 4], np.log(8 / (640 / stride) ** 2), rtol=1e-6)
    np.testing.assert_allclose(b[:, 5:], np.log(0.6 / (7 - 0.99)), rtol=1e-6)


def osam_with_logits(gate, x, repeats=3):
  mod = attention.OSAM(cbl_repeats=repeats, gate=gate)
  v = mod.init(jax.random.PRNGKey(1), x)
  v = jax.tree_util.tree_map(lambda p: p + 0.3, v)  # move away from the BN identity init
  out = mod.apply(v, x)
  logits = mod.apply(v, x, False, method=lambda m, x, t: m.attention_logits(x, t))
  return mod, v, np.asarray(out), np.asarray(logits)


def test_reference_gate_is_exact_identity_without_gradient():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
  mod, v, out, _ = osam_with_logits('reference', x)
  assert np.array_equal(out, np.asarray(x))
  grads = jax.grad(lambda p: jnp.sum(mod.apply({**v, 'params': p}, x) ** 2))(v['params'])
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(grads))


def test_softmax_gate_matches_paper_formula_and_trains():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 16))
  mod, v, out, logits = osam_with_logits('softmax', x)
  # Independent numpy: softmax over the 30 positions of each image, × H·W, residual (1 + A) / 2.
  y = logits[..., 0].reshape(2, -1).astype(np.float64)
  e = np.exp(y - y.max(1, keepdims=True))
  a = (e / e.sum(1, keepdims=True) * 30).reshape(2, 6, 5, 1)
  np.testing.assert_allclose(a.mean(axis=(1, 2, 3)), 1.0, atol=1e-12)
  np.testing.assert_allclose(out, np.asarray(x) * (1 + a) / 2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      np.asarray(attention.spatial_softmax_weights(jnp.asarray(logits))).mean(axis=(1, 2, 3)), 1.0,
      rtol=1e-6)
  target = jax.random.normal(jax.random.PRNGKey(2), x.shape)
  grads = jax.grad(lambda p: jnp.sum(mod.apply({**v, 'params': p}, x) * target))(v['params'])
  for name in ('max_0', 'max_2', 'mean_0', 'mean_2', 'fuse'):
    assert float(jnp.abs(grads[name]['conv']['kernel']).max()) > 0, name


def test_sigmoid_gate_and_sam_formulas():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 8))
  _, _, out, logits = osam_with_logits('sigmoid', x)
  np.testing.assert_allclose(out, np.asarray(x) / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)
  # SAM with identity BN: out = x · σ(conv7×7([max_c, mean_c])).
  sam = attention.SAM()
  v = sam.init(jax.random.PRNGKey(3), x)
  k = np.asarray(v['params']['conv']['kernel'])[..., 0]  # [7, 7, 2]
  s = np.concatenate([np.asarray(x).max(-1, keepdims=True), np.asarray(x).mean(-1, keepdims=True)], -1)
  pad = np.pad(s[0], ((3, 3), (3, 3), (0, 0)))
  conv = np.array([[np.sum(pad[i:i + 7, j:j + 7] * k) for j in range(4)] for i in range(4)])
  y = conv / np.sqrt(1 + 1e-3)  # BN at init in eval mode: mean 0, var 1, scale 1, bias 0
  np.testing.assert_allclose(np.asarray(sam.apply(v, x))[0], np.asarray(x)[0] / (1 + np.exp(-y))[..., None],
                             rtol=1e-4, atol=1e-5)


def test_cbam_channel_attention_formula():
  # CBAM's channel attention (Woo et al. 2018, Eq. 2): M_c = σ(MLP(maxpool F) + MLP(avgpool F)), the MLP
  # shared, W1 c → c/r with ReLU, W0 c/r → c; out = F ⊙ M_c. Independent numpy with the same weights.
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 5, 32))
  module = attention.ChannelAttention(reduction=16)
  v = module.init(jax.random.PRNGKey(5), x)
  p = jax.tree_util.tree_map(np.asarray, v['params'])
  assert p['fc1']['kernel'].shape == (32, 2) and p['fc2']['kernel'].shape == (2, 32)

  def mlp(vec):
    hidden = np.maximum(vec @ p['fc1']['kernel'] + p['fc1']['bias'], 0)
    return hidden @ p['fc2']['kernel'] + p['fc2']['bias']

  xn = np.asarray(x, np.float64)
  weights = 1 / (1 + np.exp(-(mlp(xn.max(axis=(1, 2))) + mlp(xn.mean(axis=(1, 2))))))
  np.testing.assert_allclose(np.asarray(module.apply(v, x)), xn * weights[:, None, None, :], rtol=1e-5,
                             atol=1e-6)


def test_train_mode_updates_batch_stats():
  # The stem CBL (6×6, stride 2, padding 2) in training mode: batch statistics, running mean updated
  # with PyTorch momentum 0.03, i.e. 0.97·0 + 0.03·(batch mean of the conv output).
  from yolo_osam_jax.models.layers import CBL
  cbl = CBL(16, 6, 2, 2)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 3))
  v = cbl.init(jax.random.PRNGKey(0), x)
  _, upd = cbl.apply(v, x, True, mutable=['batch_stats'])
  conv = jax.lax.conv_general_dilated(x, v['params']['conv']['kernel'], (2, 2), ((2, 2), (2, 2)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(np.asarray(upd['batch_stats']['bn']['mean']),
                             0.03 * np.asarray(conv).mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-7)


COMBOS = (
    [(f, k, w, 'softmax', 3) for f in ('none', 'reference', 'fpn')
     for k in ('sam', 'osam', 'cbam_osam', 'cbam_sam') for w in ('backbone', 'neck')]
    + [(f, 'none', 'none', 'softmax', 3) for f in ('none', 'reference', 'fpn')]
    + [('reference', 'osam', 'backbone', g, 3) for g in ('sigmoid', 'reference')]
    + [('reference', 'osam', 'backbone', 'softmax', r) for r in (0, 1, 2, 4)])


# CI compiles two of them (40-80 s each on two busy cores): the published YOLO-OSAM, and the other fusion
# mode with attention in the neck; `make test` runs all.
CORE_COMBOS = {('fpn', 'cbam_sam', 'neck', 'softmax', 3), ('reference', 'osam', 'backbone', 'reference', 3)}


@pytest.mark.parametrize('fusion,kind,where,gate,repeats', [
    c if c in CORE_COMBOS else pytest.param(*c, marks=pytest.mark.slow) for c in COMBOS])
def test_every_variant_runs_under_jit(fusion, kind, where, gate, repeats):
  cfg = base.model_config('s', 5)
  cfg.width = 0.125  # small channels: the structure is what is under test
  cfg.fusion, cfg.attention.kind, cfg.attention.where = fusion, kind, where
  cfg.attention.gate, cfg.attention.cbl_repeats = gate, repeats
  m = models.build(cfg)
  v = jax.jit(m.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  fwd = jax.jit(lambda v, x: m.apply(v, x))
  strides = [4, 8, 16, 32] if fusion != 'none' else [8, 16, 32]
  n_att = sum(L.kind == 'attention' for L in m.layers)
  assert n_att == (0 if kind == 'none' else len(strides))
  for img in (64, 128):
    x = jax.random.uniform(jax.random.PRNGKey(img), (2, img, img, 3))
    pred, raw = fwd(v, x)
    assert [r.shape for r in raw] == [(2, img // s, img // s, 3, 10) for s in strides]
    assert pred.shape == (2, sum(3 * (img // s) ** 2 for s in strides), 10)
    # The decoded output is the decoding of the raw output, level by level.
    lv = heads.levels(cfg)
    want = np.concatenate([numpy_decode(np.asarray(r), l.stride, l.anchors) for r, l in zip(raw, lv)], 1)
    np.testing.assert_allclose(np.asarray(pred), want, rtol=1e-4, atol=1e-3)


def test_bad_config_values_are_named():
  cfg = base.model_config()
  cfg.attention.kind = 'bogus'
  with pytest.raises(ValueError, match='model.attention.kind'):
    models.build(cfg)
  cfg = base.model_config()
  cfg.fusion = 'p2'
  with pytest.raises(ValueError, match='model.fusion'):
    models.build(cfg)
  cfg = base.model_config()
  cfg.anchors = [[10, 13, 16, 30, 33, 23]]
  with pytest.raises(ValueError, match='model.anchors has 1 levels'):
    models.build(cfg)


def test_classifier_arch_is_refused_by_the_detector_builder():
  cfg = base.model_config()
  cfg.arch = 'alexnet'
  with pytest.raises(ValueError, match=r"model.arch='alexnet' is a classifier"):
    models.build(cfg)
