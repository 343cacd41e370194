"""YOLOv3 (models/yolov3.py): yolov5's yolov3.yaml, checked against a layer table written here by hand."""

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from configs import yolov3 as yolov3_config
from yolo_osam_jax import convert, losses, models
from yolo_osam_jax.models import heads, summary, yolov3

# yolov5 models/hub/yolov3.yaml, row by row: (from, number, module, args).
YAML = (
    (-1, 1, 'Conv', (32, 3, 1)),          # 0
    (-1, 1, 'Conv', (64, 3, 2)),          # 1-P1/2
    (-1, 1, 'Bottleneck', (64,)),
    (-1, 1, 'Conv', (128, 3, 2)),         # 3-P2/4
    (-1, 2, 'Bottleneck', (128,)),
    (-1, 1, 'Conv', (256, 3, 2)),         # 5-P3/8
    (-1, 8, 'Bottleneck', (256,)),
    (-1, 1, 'Conv', (512, 3, 2)),         # 7-P4/16
    (-1, 8, 'Bottleneck', (512,)),
    (-1, 1, 'Conv', (1024, 3, 2)),        # 9-P5/32
    (-1, 4, 'Bottleneck', (1024,)),       # 10
    (-1, 1, 'Bottleneck', (1024, False)),
    (-1, 1, 'Conv', (512, 1, 1)),
    (-1, 1, 'Conv', (1024, 3, 1)),
    (-1, 1, 'Conv', (512, 1, 1)),
    (-1, 1, 'Conv', (1024, 3, 1)),        # 15 (P5/32-large)
    (-2, 1, 'Conv', (256, 1, 1)),
    (-1, 1, 'Upsample', ()),
    ((-1, 8), 1, 'Concat', ()),           # cat backbone P4
    (-1, 1, 'Bottleneck', (512, False)),
    (-1, 1, 'Bottleneck', (512, False)),
    (-1, 1, 'Conv', (256, 1, 1)),
    (-1, 1, 'Conv', (512, 3, 1)),         # 22 (P4/16-medium)
    (-2, 1, 'Conv', (128, 1, 1)),
    (-1, 1, 'Upsample', ()),
    ((-1, 6), 1, 'Concat', ()),           # cat backbone P3
    (-1, 1, 'Bottleneck', (256, False)),
    (-1, 2, 'Bottleneck', (256, False)),  # 27 (P3/8-small)
    ((27, 22, 15), 1, 'Detect', ()),      # Detect(P3, P4, P5)
)
ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
STRIDES = (8, 16, 32)


def hand_state_dict_shapes(nc, width=1.0):
  """{key: PyTorch shape} of the yaml's state dict (without num_batches_tracked), derived the way
  yolov5's parse_model builds it: channels × width rounded up to 8; a row with n > 1 is an
  nn.Sequential (keys `<i>.<j>.`); Bottleneck(c1, c2) is cv1 1×1 c1 → c2/2, cv2 3×3 c2/2 → c2."""
  shapes = {}
  channels = []

  def conv(prefix, c1, c2, k):
    shapes[prefix + 'conv.weight'] = (c2, c1, k, k)
    for leaf in ('weight', 'bias', 'running_mean', 'running_var'):
      shapes[prefix + 'bn.' + leaf] = (c2,)

  for i, (src, n, kind, args) in enumerate(YAML):
    srcs = (src,) if isinstance(src, int) else src
    ins = [channels[s] if s >= 0 else channels[i + s] for s in srcs] if i else [3]
    c1 = ins[0]
    if kind in ('Conv', 'Bottleneck'):
      c2 = int(np.ceil(args[0] * width / 8) * 8)
      for j in range(n):
        prefix = f'model.{i}.' + (f'{j}.' if n > 1 else '')
        if kind == 'Conv':
          conv(prefix, c1, c2, args[1])
        else:
          conv(prefix + 'cv1.', c1, c2 // 2, 1)
          conv(prefix + 'cv2.', c2 // 2, c2, 3)
    elif kind == 'Upsample':
      c2 = c1
    elif kind == 'Concat':
      c2 = sum(ins)
    else:  # Detect: one 1×1 conv with bias per level, 3 anchors × (5 + nc) outputs
      for k, c in enumerate(ins):
        shapes[f'model.{i}.m.{k}.weight'] = (3 * (5 + nc), c, 1, 1)
        shapes[f'model.{i}.m.{k}.bias'] = (3 * (5 + nc),)
      c2 = 0
    channels.append(c2)
  return shapes


def hand_param_count(nc, width=1.0):
  # Parameters are everything but the BatchNorm running statistics.
  return sum(int(np.prod(s)) for k, s in hand_state_dict_shapes(nc, width).items()
             if not k.endswith(('running_mean', 'running_var')))


def config(nc=7, width=None):
  c = base.model_config('s', nc)
  c.arch = 'yolov3'
  c.fusion = 'none'
  c.attention.kind = 'none'
  c.attention.where = 'none'
  c.width = width
  return c


def variable_shapes(cfg, img=64):
  m = models.build(cfg)
  return jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, img, img, 3))))


def test_param_counts_by_hand_and_published():
  assert summary.count_params(variable_shapes(config(7))['params']) == hand_param_count(7)
  assert summary.count_params(variable_shapes(config(80))['params']) == hand_param_count(80)
  # yolov5's model summary of yolov3.yaml at 80 classes: "333 layers, 61949149 parameters".
  assert hand_param_count(80) == 61_949_149
  assert hand_param_count(7) == 61_556_044


def test_gflops_close_to_published():
  # yolov5's summary of yolov3.yaml: 156.4 GFLOPs at 640², 80 classes (thop; we count 156.62).
  assert summary.gflops(config(80), 640) == pytest.approx(156.4, rel=2e-3)


def test_converter_keys_and_shapes_equal_the_yaml():
  v = flax.core.unfreeze(variable_shapes(config(7)))
  ours = {}
  for collection in ('params', 'batch_stats'):
    for path, leaf in flax.traverse_util.flatten_dict(v[collection]).items():
      shape = leaf.shape if len(leaf.shape) != 4 else tuple(leaf.shape[i] for i in (3, 2, 0, 1))
      ours[convert.torch_key(collection, path)] = shape
  hand = hand_state_dict_shapes(7)
  assert set(ours) == set(hand)
  assert ours == hand
  # yolov5 reports "Transferred 438/440 items from yolov3.pt": 72 Conv+BN (6 entries with
  # num_batches_tracked), 3 Detect convs (2 each), and the anchors / anchor_grid buffers it skips.
  n_bn = sum(k.endswith('bn.weight') for k in hand)
  assert (n_bn, len(hand)) == (72, 72 * 5 + 6)


def test_layer_table_indices_sources_and_strides():
  table = models.layer_table(config())
  assert len(table) == len(YAML)
  for L, (src, n, kind, _) in zip(table, YAML):
    srcs = (src,) if isinstance(src, int) else src
    want = tuple(s if s >= 0 else L.index + s for s in srcs) if L.index else (yolov3.INPUT,)
    assert L.sources == want, L
    assert L.kind == {'Conv': 'cbl', 'Bottleneck': 'bottleneck', 'Upsample': 'upsample',
                      'Concat': 'concat', 'Detect': 'detect'}[kind]
    assert L.n == n
  assert [table[i].stride for i in (27, 22, 15)] == list(STRIDES)
  assert [table[i].shortcut for i in (2, 4, 6, 8, 10, 11, 19, 20, 26, 27)] == [True] * 5 + [False] * 5


def test_levels_anchors_balance():
  lv = heads.levels(config())
  assert [l.stride for l in lv] == list(STRIDES)
  assert [l.balance for l in lv] == [4.0, 1.0, 0.4]
  assert [l.detect_index for l in lv] == [0, 1, 2]
  for l, a in zip(lv, ANCHORS):
    np.testing.assert_array_equal(l.anchors, np.reshape(a, (3, 2)))
  assert models.build(config()).strides == STRIDES
  assert models.scale_of(config()) == (1.0, 1.0, None)


def test_published_state_dict_loads_one_to_one():
  # A yolov3 state dict with distinct random values (narrow: width 0.25) loads and writes back unchanged.
  cfg = config(7, width=0.25)
  rng = np.random.default_rng(0)
  sd = {k: rng.standard_normal(s).astype(np.float32) for k, s in hand_state_dict_shapes(7, 0.25).items()}
  for k in [k for k in sd if k.endswith('running_var')]:
    sd[k] = np.abs(sd[k]) + 0.1
    sd[k.replace('running_var', 'num_batches_tracked')] = np.asarray(100, np.int64)
  sd['model.28.anchors'] = np.stack([np.reshape(a, (3, 2)) / s for a, s in zip(ANCHORS, STRIDES)]
                                    ).astype(np.float32)
  variables = convert.from_yolov5_state_dict(sd, cfg)
  np.testing.assert_array_equal(np.asarray(variables['params']['layer_6']['3']['cv2']['conv']['kernel']),
                                sd['model.6.3.cv2.conv.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(np.asarray(variables['batch_stats']['layer_11']['cv1']['bn']['mean']),
                                sd['model.11.cv1.bn.running_mean'])
  np.testing.assert_array_equal(np.asarray(variables['params']['layer_28']['m_2']['bias']),
                                sd['model.28.m.2.bias'])
  back = convert.to_yolov5_state_dict(variables, cfg, num_batches_tracked=100)
  assert set(back) == set(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_bottleneck_residual_only_with_shortcut_and_equal_channels():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 8))
  cases = ((True, 8, True), (False, 8, False), (True, 16, False))

  @jax.jit
  def run(x):
    out = []
    for shortcut, features, _ in cases:
      v = yolov3.Bottleneck(features, shortcut).init(jax.random.PRNGKey(1), x)
      out.append((v['params'], yolov3.Bottleneck(features, shortcut).apply(v, x),
                  yolov3.Bottleneck(features, False).apply(v, x)))
    return out

  for (_, features, residual), (params, y, y_inner) in zip(cases, run(x)):
    assert params['cv1']['conv']['kernel'].shape == (1, 1, 8, features // 2)
    assert params['cv2']['conv']['kernel'].shape == (3, 3, features // 2, features)
    np.testing.assert_allclose(y, y_inner + x if residual else y_inner, rtol=1e-6, atol=1e-6)


def test_config_file():
  cfg = yolov3_config.get_config()
  assert models.arch_of(cfg.model) == 'yolov3' and not models.is_anchor_free(cfg.model)
  assert [L.index for L in models.layer_table(cfg.model)][-1] == 28
  assert models.build(cfg.model).strides == STRIDES
  assert losses.components(cfg.model) == losses.components(config())


def test_bad_configs_are_named():
  cfg = config()
  cfg.fusion = 'reference'
  with pytest.raises(ValueError, match="model.fusion='none'"):
    models.build(cfg)
  cfg = config()
  cfg.attention.kind = 'osam'
  with pytest.raises(ValueError, match='model.attention.kind'):
    models.build(cfg)
  cfg = config()
  cfg.size = 'l'
  with pytest.raises(ValueError, match="model.size must be one of s for arch 'yolov3'"):
    models.build(cfg)


@pytest.mark.slow
def test_runs_under_jit_with_the_loss():
  cfg = config(7)
  m = models.build(cfg)
  img = 64
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, img, img, 3))
  v = jax.jit(m.init)(jax.random.PRNGKey(0), x[:1])
  targets = {'boxes': jnp.asarray([[[0.5, 0.5, 0.4, 0.5], [0.3, 0.3, 0.2, 0.2]]] * 2, jnp.float32),
             'classes': jnp.asarray([[1, 4]] * 2, jnp.int32),
             'mask': jnp.asarray([[True, False], [True, True]])}

  @jax.jit
  def step(params, batch_stats, x):
    def loss_fn(p):
      (pred, raw), updates = m.apply({'params': p, 'batch_stats': batch_stats}, x, train=True,
                                     mutable=['batch_stats'])
      total, parts = losses.yolo_loss(raw, targets, cfg, img)
      return total, (pred, raw, parts, updates)
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  (total, (pred, raw, parts, updates)), grads = step(v['params'], v['batch_stats'], x)
  assert [r.shape for r in raw] == [(2, img // s, img // s, 3, 12) for s in STRIDES]
  assert pred.shape == (2, 3 * sum((img // s) ** 2 for s in STRIDES), 12)
  assert np.isfinite(float(total)) and float(total) > 0
  assert set(parts) == {'box', 'obj', 'cls'}
  norms = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda g: float(jnp.abs(g).sum()), grads))
  assert all(np.isfinite(norms)) and sum(n > 0 for n in norms) == len(norms)
  assert not np.allclose(updates['batch_stats']['layer_0']['bn']['mean'],
                         v['batch_stats']['layer_0']['bn']['mean'])


@pytest.mark.slow
def test_trains_end_to_end_in_the_detection_loop(tmp_path):
  """The training loop (AutoAnchor, loss, EMA, evaluation, checkpoints) runs a narrow yolov3."""
  from conftest import _demo_fixture_scene, synthetic_examples  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax import checkpoint, training  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
  config = base.get_config()
  config.name = 'tiny_yolov3'
  config.model = config.model.copy_and_resolve_references()
  config.model.update(dict(arch='yolov3', fusion='none', width=0.125, depth=0.33))
  config.model.attention.kind = config.model.attention.where = 'none'
  config.data.update(dict(img_size=64, batch_size=4, max_boxes=8))
  config.train.update(dict(epochs=1, warmup_epochs=0.0, warmup_min_iters=0, nominal_batch=4, patience=0))
  config.eval.batch_size = 8
  scene = _demo_fixture_scene()
  images = synthetic_examples(8, 64, scene, 0, 'train')
  result = training.train_and_evaluate(
      config, str(tmp_path / 'run'), sources={'train': images, 'validation': images, 'test': images},
      class_names=list(synthetic_faces.CLASS_NAMES), show_progress=False)
  assert np.isfinite(result['history'][-1]['train/loss'])
  loaded_config, variables = checkpoint.load_model(os.path.join(result['workdir'], 'best'))
  assert models.arch_of(loaded_config.model) == 'yolov3'
  assert set(variables['params']) == {f'layer_{L.index}' for L in models.layer_table(config.model)
                                      if L.kind not in ('upsample', 'concat')}
