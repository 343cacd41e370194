"""Classifier baselines (models/classifiers.py) and their trainer (classify.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from yolo_osam_jax import classify, models
from yolo_osam_jax.models import classifiers, summary


def model_config(arch, kind='none', where='embedding', repeats=3, nc=7, gate='softmax'):
  config = base.get_config().model
  config.arch = arch
  config.num_classes = nc
  config.attention.kind = kind
  config.attention.where = where
  config.attention.cbl_repeats = repeats
  config.attention.gate = gate
  return config


def param_shapes(module, img=64):
  """Parameter shapes without compiling or running anything."""
  return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, img, img, 3))))['params']


# Parameter counts by hand from the layer shapes: conv k·k·c_in·c_out (no bias) + BatchNorm scale and bias.
def cbl(c_in, c_out, k):
  return k * k * c_in * c_out + 2 * c_out


def c3(c_in, c_out, n):
  h = c_out // 2
  return 2 * cbl(c_in, h, 1) + n * (cbl(h, h, 1) + cbl(h, h, 3)) + cbl(2 * h, c_out, 1)


def sppf(c, c_out):
  return cbl(c, c // 2, 1) + cbl(4 * (c // 2), c_out, 1)


# yolov5s (width 0.5, depth 0.33) layers 0–9.
CSP_BACKBONE = (cbl(3, 32, 6) + cbl(32, 64, 3) + c3(64, 64, 1) + cbl(64, 128, 3) + c3(128, 128, 2)
                + cbl(128, 256, 3) + c3(256, 256, 3) + cbl(256, 512, 3) + c3(512, 512, 1) + sppf(512, 512))
ALEXNET_CONVS = (cbl(3, 64, 5) + cbl(64, 192, 5) + cbl(192, 384, 3) + cbl(384, 256, 3)
                 + cbl(256, 256, 3))


def dense(c_in, c_out):
  return c_in * c_out + c_out


def osam(repeats):
  return 2 * repeats * cbl(1, 1, 3) + cbl(2, 1, 3)


def sam():
  return 7 * 7 * 2 + 2


def channel(c):
  hidden = max(c // 16, 1)
  return dense(c, hidden) + dense(hidden, c)


def attention(kind, c, repeats=3):
  return {'none': 0, 'sam': sam(), 'osam': osam(repeats), 'cbam_sam': channel(c) + sam(),
          'cbam_osam': channel(c) + osam(repeats)}[kind]


# Channels at the attention positions: CSP stages 1–3 (C3) and SPPF; AlexNet's three stages.
GATED_CHANNELS = {('cspdarknet_cls', 'embedding'): (64, 128, 256, 512),
                  ('cspdarknet_cls', 'last'): (512,),
                  ('alexnet', 'embedding'): (64, 192, 256),
                  ('alexnet', 'last'): (256,)}


def expected_count(arch, kind, where, repeats, nc):
  if arch == 'cspdarknet_cls':
    total = CSP_BACKBONE + dense(512, nc)
  else:
    total = ALEXNET_CONVS + dense(4 * 4 * 256, 1024) + dense(1024, 1024) + dense(1024, nc)
  if kind != 'none':
    total += sum(attention(kind, c, repeats) for c in GATED_CHANNELS[(arch, where)])
  return total


def test_hand_count_of_backbone_matches_the_detector_layers():
  # A second, independent source for the backbone count: layers 0–9 of the yolov5s detector.
  detector = model_config('yolo_osam')
  detector.fusion, detector.attention.where = 'none', 'none'
  shapes = param_shapes(models.build(detector), 64)
  assert sum(summary.count_params(shapes[f'layer_{i}']) for i in range(10)) == CSP_BACKBONE
  # ... and the classifier's backbone holds the same tensors under the same names (weights transfer).
  cls_shapes = param_shapes(classifiers.build_classifier(model_config('cspdarknet_cls')), 64)
  for i in range(10):
    assert jax.tree_util.tree_map(lambda a: a.shape, cls_shapes[f'layer_{i}']) == \
        jax.tree_util.tree_map(lambda a: a.shape, shapes[f'layer_{i}'])


@pytest.mark.parametrize('arch', classifiers.ATTENTION_ARCHS)
@pytest.mark.parametrize('kind', ['none', 'sam', 'osam', 'cbam_osam', 'cbam_sam'])
@pytest.mark.parametrize('where', classifiers.PLACES)
def test_param_counts_by_hand(arch, kind, where):
  module = classifiers.build_classifier(model_config(arch, kind, where, nc=7))
  assert summary.count_params(param_shapes(module)) == expected_count(arch, kind, where, 3, 7)


@pytest.mark.parametrize('arch', classifiers.ATTENTION_ARCHS)
@pytest.mark.parametrize('repeats', range(5))
def test_osam_module_sizes_per_cbl_repeats(arch, repeats):
  shapes = param_shapes(classifiers.build_classifier(model_config(arch, 'osam', 'embedding', repeats)))
  modules = sorted(k for k in shapes if k.startswith('attention_'))
  assert len(modules) == len(GATED_CHANNELS[(arch, 'embedding')])
  for name in modules:
    assert summary.count_params(shapes[name]) == osam(repeats)
  if repeats == 3:
    assert osam(3) == 86  # SPEC §2.5: one published attention module


def test_attention_positions():
  csp = classifiers.build_classifier(model_config('cspdarknet_cls', 'osam'))
  # yolov5s: C3 at 2, 4, 6 (strides 4, 8, 16), SPPF at 9.
  assert csp.gated_layers() == (2, 4, 6, 9)
  assert [L.kind for L in csp.layers] == ['cbl', 'cbl', 'c3', 'cbl', 'c3', 'cbl', 'c3', 'cbl', 'c3', 'sppf']
  assert classifiers.build_classifier(model_config('cspdarknet_cls', 'osam', 'last')).gated_layers() == (9,)
  assert classifiers.build_classifier(model_config('cspdarknet_cls', 'none')).gated_layers() == ()
  assert classifiers.build_classifier(model_config('alexnet', 'sam')).gated_stages() == (0, 1, 2)
  assert classifiers.build_classifier(model_config('alexnet', 'sam', 'last')).gated_stages() == (2,)


@pytest.mark.parametrize('arch', classifiers.ATTENTION_ARCHS)
@pytest.mark.parametrize('img', [64, 96, 128])
def test_forward_shapes(arch, img):
  module = classifiers.build_classifier(model_config(arch, 'cbam_osam', nc=5))
  x = jnp.zeros((3, img, img, 3))
  logits = jax.eval_shape(lambda: module.apply(module.init(jax.random.PRNGKey(0), x), x))
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32


def test_attention_sits_on_the_main_path():
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3))
  plain = classifiers.build_classifier(model_config('alexnet', 'none', nc=5))
  variables = plain.init(jax.random.PRNGKey(0), x)
  logits = plain.apply(variables, x)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32

  def second_conv(module, v):
    # Output of conv_1, which reads the first stage (through attention_0 when there is one).
    _, state = module.apply(v, x, capture_intermediates=lambda m, _: m.name == 'conv_1',
                            mutable=['intermediates'])
    return np.asarray(state['intermediates']['conv_1']['__call__'][0])

  reference = second_conv(plain, variables)
  # The published gate is an exact identity (SPEC §2.3): with the same conv/FC weights nothing may
  # change. A sigmoid gate at initialisation (y ≈ 0) halves its input: if the gate sits on the main path,
  # the next stage's output halves too (conv_1 is linear up to its ReLU; BatchNorm uses running stats).
  for gate, same in (('reference', True), ('sigmoid', False)):
    gated = classifiers.build_classifier(model_config('alexnet', 'osam', nc=5, gate=gate))
    v = gated.init(jax.random.PRNGKey(0), x)
    v = {'params': dict(v['params'], **variables['params']),
         'batch_stats': dict(v['batch_stats'], **variables['batch_stats'])}
    assert gated.apply(v, x).shape == (2, 5)
    out = second_conv(gated, v)
    if same:
      np.testing.assert_array_equal(out, reference)
    else:
      assert np.abs(out - reference).max() / np.abs(reference).max() > 0.3


def test_adaptive_avg_pool_matches_pytorch_bounds():
  x = np.arange(2 * 6 * 5 * 1, dtype=np.float32).reshape(2, 6, 5, 1)
  out = np.asarray(classifiers.adaptive_avg_pool(jnp.asarray(x), 4))
  # AdaptiveAvgPool2d bins for 6 → 4: [0,2) [1,3) [3,5) [4,6); for 5 → 4: [0,2) [1,3) [2,4) [3,5).
  rows, cols = [(0, 2), (1, 3), (3, 5), (4, 6)], [(0, 2), (1, 3), (2, 4), (3, 5)]
  expected = np.array([[[x[b, r0:r1, c0:c1, 0].mean() for c0, c1 in cols] for r0, r1 in rows]
                       for b in range(2)])[..., None]
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_adaptive_avg_pool_upsamples_like_pytorch():
  # Input side < output side (VGG-16's 1–4² maps pooled to 7×7): bins [floor(i·n/7), ceil((i+1)·n/7)).
  x = np.arange(2 * 3 * 1 * 2, dtype=np.float32).reshape(2, 3, 1, 2) ** 2
  out = np.asarray(classifiers.adaptive_avg_pool(jnp.asarray(x), 7))
  # n = 3 → 7: rows [0,1) [0,1) [0,2) [1,2) [1,3) [2,3) [2,3); n = 1: every bin is [0,1).
  rows = [(0, 1), (0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 3)]
  expected = np.stack([x[:, r0:r1].mean(axis=1) for r0, r1 in rows], axis=1)   # [2, 7, 1, 2]
  np.testing.assert_allclose(out, np.repeat(expected, 7, axis=2), rtol=1e-6)
  one = np.asarray(classifiers.adaptive_avg_pool(jnp.asarray(x[:, :1]), 7))
  np.testing.assert_array_equal(one, np.broadcast_to(x[:, :1], (2, 7, 7, 2)))


def vgg16_count(nc):
  """VGG-16 configuration D by hand: 13 3×3 convs with bias, three linear layers."""
  convs, c_in = 0, 3
  for c_out in (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512):
    convs += 3 * 3 * c_in * c_out + c_out
    c_in = c_out
  return convs + dense(512 * 7 * 7, 4096) + dense(4096, 4096) + dense(4096, nc)


def test_vgg16_param_counts_by_hand():
  assert vgg16_count(1000) == 138_357_544   # torchvision's vgg16 (ImageNet, 1000 classes)
  assert vgg16_count(7) == 134_289_223
  for nc in (7, 1000):
    module = classifiers.build_classifier(model_config('vgg16', nc=nc))
    shapes = param_shapes(module, 48)
    assert summary.count_params(shapes) == vgg16_count(nc)
  assert len([k for k in shapes if k.startswith('conv_')]) == 13
  assert shapes['fc_0']['kernel'].shape == (25088, 4096)


@pytest.mark.parametrize('img', [32, 48, 64, 96, 128])
def test_vgg16_forward_shapes(img):
  module = classifiers.build_classifier(model_config('vgg16', nc=5))
  x = jnp.zeros((2, img, img, 3))
  logits = jax.eval_shape(lambda: module.apply(module.init(jax.random.PRNGKey(0), x), x))
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32


def test_vgg16_refuses_attention_and_tiny_inputs():
  with pytest.raises(ValueError, match="model.arch='vgg16' supports model.attention.kind='none' only"):
    classifiers.build_classifier(model_config('vgg16', 'osam'))
  module = classifiers.build_classifier(model_config('vgg16'))
  with pytest.raises(ValueError, match='at least 32'):
    jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, 31, 31, 3))))
  # The classification ablation rows pass where=embedding with kind none: accepted.
  classifiers.build_classifier(model_config('vgg16', 'none', 'embedding'))


@pytest.mark.slow
def test_vgg16_trains_under_jit_at_32():
  config = small_config('vgg16')
  module = classifiers.build_classifier(config.model)
  build_optimizer, _ = classify.make_optimizer(config.train, 8, 4, 1)
  state = classify.create_state(module, build_optimizer, jax.random.PRNGKey(0), 32)
  # torchvision's init: conv kernels N(0, 2 / (9·c_out)), linear N(0, 0.01²), zero biases.
  conv = np.asarray(state.params['conv_12']['kernel'])
  assert abs(conv.std() / np.sqrt(2 / (9 * 512)) - 1) < 0.02
  assert abs(np.asarray(state.params['fc_0']['kernel']).std() / 0.01 - 1) < 0.01
  assert not np.any(np.asarray(state.params['conv_0']['bias']))
  assert state.batch_stats == {}
  images = np.stack([f['image'][:32, :32] for f in two_colour_faces(8, 0)])
  labels = jnp.arange(8) % 2
  before = np.asarray(state.params['fc_2']['kernel']).copy()
  step = classify.make_train_step(module)
  losses = []
  for _ in range(2):
    state, out = step(state, images, labels, jax.random.PRNGKey(1))
    losses.append(float(out['loss']))
  assert np.all(np.isfinite(losses)) and abs(losses[0] - np.log(2)) < 0.1
  assert not np.allclose(np.asarray(state.params['fc_2']['kernel']), before)
  logits = classify.make_eval_step(module)(state.params, state.batch_stats, images)
  assert logits.shape == (8, 2) and np.all(np.isfinite(np.asarray(logits)))


def test_bad_config_values_are_named():
  with pytest.raises(ValueError, match='model.arch'):
    classifiers.build_classifier(model_config('resnet'))
  with pytest.raises(ValueError, match='model.attention.where'):
    classifiers.build_classifier(model_config('alexnet', 'osam', 'backbone'))
  with pytest.raises(ValueError, match='cbl_repeats'):
    classifiers.build_classifier(model_config('alexnet', 'osam', repeats=5))
  with pytest.raises(ValueError, match='not a classifier'):
    classifiers.build_classifier(model_config('yolo'))


def test_classification_metrics_by_hand():
  labels = [0, 0, 1, 1, 2, 2]
  predicted = [0, 1, 1, 1, 0, 2]
  m = classify.classification_metrics(labels, predicted, 4)
  assert m['accuracy'] == pytest.approx(4 / 6)
  # class 0: P 1/2 R 1/2; class 1: P 2/3 R 1; class 2: P 1 R 1/2; class 3 absent (left out of the mean).
  f1 = [0.5, 2 * (2 / 3) / (2 / 3 + 1), 2 * 0.5 / 1.5]
  assert m['f1'] == pytest.approx(np.mean(f1))
  assert m['confusion'][2].tolist() == [1, 0, 1, 0]


def two_colour_faces(count, seed, size=40):
  """Face crops that are red (class 0) or blue (class 1), one whole-image box each."""
  rng = np.random.default_rng(seed)
  examples = []
  for i in range(count):
    label = i % 2
    image = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
    image[..., 0 if label == 0 else 2] += np.uint8(rng.integers(150, 210))
    examples.append({'image': image, 'image_id': f'face_{seed}_{i}',
                     'objects': {'bbox': np.array([[0.0, 0.0, 1.0, 1.0]], np.float32),
                                 'label': np.array([label], np.int64)}})
  return examples


def small_config(arch='alexnet'):
  config = base.get_config()
  config.model = model_config(arch, nc=2)
  config.data.img_size = 32
  config.data.batch_size = 8
  config.eval.batch_size = 16
  config.train.nominal_batch = 8      # one optimizer step per batch
  config.train.warmup_epochs = 0.0
  config.train.warmup_min_iters = 0
  return config


def test_classifier_learns_a_separable_two_class_set():
  metrics = classify.train_and_evaluate(small_config(), two_colour_faces(64, 0), two_colour_faces(20, 1),
                                        epochs=3, progress=False)
  assert metrics['accuracy'] >= 0.95
  assert metrics['eval_faces'] == 20           # every face once, padding rows left out
  assert metrics['steps'] == 3 * (64 // 8)
  assert metrics['optimizer_steps'] == metrics['steps']
  assert np.sum(metrics['confusion']) == 20
  # The classifiers' mAP (evaluation/classification.py): with at most one of 20 faces misclassified,
  # each class's probability ranks its faces first but for that one, so every AP is ≥ 0.9.
  assert 0.9 <= metrics['map50'] <= 1.0


def test_out_of_range_label_names_the_image():
  train = two_colour_faces(16, 0)
  train[5]['objects']['label'] = np.array([2], np.int64)
  with pytest.raises(ValueError, match=r"train record 5 \(image_id 'face_0_5'\): label 2 is outside 0..1"):
    classify.train_and_evaluate(small_config(), train, two_colour_faces(4, 1), epochs=1, progress=False)
