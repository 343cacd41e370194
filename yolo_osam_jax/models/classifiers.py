"""The paper's classification baselines: a CSPDarknet53 classifier and an AlexNet (Tables 2, 4, 5), VGG-16
(Table 1).

Both take float32 NHWC RGB crops in [0, 1] and return class logits [B, nc]:
`module.apply(variables, images, train=False) -> logits`.

CSPDarknet53 classifier (`model.arch = 'cspdarknet_cls'`): the detector's backbone through SPPF (the
same layer table as models/yolo.py, width/depth scaled, submodules named `layer_<i>` with yolov5s's
indices 0–9 so a yolov5s backbone loads one-to-one), global average pooling and one linear layer.

AlexNet (`model.arch = 'alexnet'`): five convolutions in three stages and three fully connected layers,
sized for 64–128² face crops rather than ImageNet's 224²: conv1 5×5 stride 2 (not 11×11 stride 4, which
would leave a 128² crop 32² after one layer), 3×3 stride-2 max-pools padded by 1 (so every pool halves
the side, rounding up), and an adaptive average pool to 4×4 before the classifier (so 64, 96 and 128
inputs all give 4·4·256 features). Each conv is followed by BatchNorm: it stands in for AlexNet's local
response normalisation and lets the network train from scratch at yolov5's learning rates.

VGG-16 (`model.arch = 'vgg16'`): torchvision's VGG-16, configuration D of Simonyan & Zisserman, without
BatchNorm: 13 3×3 convolutions (padding 1, bias, ReLU) in five stages of 64, 128, 256, 512, 512 channels,
each stage ending in a 2×2 stride-2 max-pool (sides round down), PyTorch's AdaptiveAvgPool2d to 7×7, then
Linear(25088, 4096) ReLU Dropout, Linear(4096, 4096) ReLU Dropout, Linear(4096, nc): 134,289,223
parameters at 7 classes. Face crops of 32–128² leave a 1–4² map after the fifth pool, which the
adaptive pool spreads over 7×7 exactly as PyTorch does (every output cell averages the input cells its
bin covers, so a 1² map is copied to all 49); inputs under 32² would pool to nothing and are refused.
Initialisation as torchvision's: convolutions Kaiming-normal (fan-out, ReLU gain), linear layers
N(0, 0.01), biases zero. The flatten is in NHWC order (PyTorch flattens NCHW): the first linear layer's
rows are permuted relative to a torchvision state dict, which nothing here imports. Attention: 'none'
only (the paper has no attention variant of VGG-16).

Attention (`model.attention`; CSPDarknet53 and AlexNet, `ATTENTION_ARCHS`): kind none | sam | osam |
cbam_osam | cbam_sam (the detector's `models.attention.Attention`, with its gate and cbl_repeats), placed
by `model.attention.where`:
  embedding  after every stage: the C3 of each CSP stage (strides 4, 8, 16) and SPPF (stride 32), the
             four positions of the detector's gates; AlexNet: after the last conv of each of its three
             stages, before the stage's pool.
  last       only after SPPF / after AlexNet's last conv stage.
In the detector the backbone gates are side branches read by the neck; a classifier has no neck, so
here every gate sits on the main path.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from yolo_osam_jax.models import attention as attention_lib
from yolo_osam_jax.models import yolo
from yolo_osam_jax.models.layers import C3, CBL, SPPF, compute_dtype, torch_conv_init

CLASSIFIER_ARCHS = ('cspdarknet_cls', 'alexnet', 'vgg16')
ATTENTION_ARCHS = ('cspdarknet_cls', 'alexnet')   # the classifiers that take `model.attention`
PLACES = ('embedding', 'last')

# AlexNet's (features, kernel, stride) per conv, grouped in stages; a 3×3 stride-2 max-pool ends each.
ALEXNET_STAGES = (
    ((64, 5, 2),),
    ((192, 5, 1),),
    ((384, 3, 1), (256, 3, 1), (256, 3, 1)),
)
ALEXNET_POOLED_SIDE = 4     # adaptive average pool output (side)
ALEXNET_HIDDEN = 1024       # width of the two hidden FC layers

# VGG-16 (configuration D): conv widths per stage; a 2×2 stride-2 max-pool ends each stage.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_POOLED_SIDE = 7
VGG16_HIDDEN = 4096
VGG16_MIN_SIDE = 2 ** len(VGG16_STAGES)   # 32: the fifth pool leaves at least 1×1


def backbone_table(model_config) -> tuple[yolo.LayerDef, ...]:
  """The yolov5 backbone through SPPF (layers 0–9 of yolov5s at the configured width/depth)."""
  plain = model_config.copy_and_resolve_references()
  plain.fusion = 'none'
  plain.attention.kind = 'none'
  plain.attention.where = 'none'
  plain.attention.gate = 'softmax'
  table = yolo.layer_table(plain)
  last = next(L.index for L in table if L.kind == 'sppf')
  backbone = table[:last + 1]
  for L in backbone:
    # The backbone is a chain; the forward pass below relies on it.
    if L.sources != ((yolo.INPUT,) if L.index == 0 else (L.index - 1,)):
      raise AssertionError(f'backbone layer {L.index} reads {L.sources}, expected the previous layer')
  return backbone


def adaptive_avg_pool(x, side: int):
  """PyTorch's AdaptiveAvgPool2d: output row i averages input rows floor(i·H/s) … ceil((i+1)·H/s) − 1
  (columns likewise)."""
  _, h, w, _ = x.shape

  def bounds(n):
    return [(int(np.floor(i * n / side)), int(np.ceil((i + 1) * n / side))) for i in range(side)]

  rows = [jnp.mean(x[:, a:b], axis=1, keepdims=True) for a, b in bounds(h)]
  x = jnp.concatenate(rows, axis=1)
  cols = [jnp.mean(x[:, :, a:b], axis=2, keepdims=True) for a, b in bounds(w)]
  return jnp.concatenate(cols, axis=2)


def max_pool_halve(x):
  """3×3 stride-2 max-pool padded by 1: side n → ceil(n / 2)."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class CSPDarknetClassifier(nn.Module):
  """yolov5 backbone through SPPF → (attention) → global average pool → Dense(nc)."""
  layers: tuple[yolo.LayerDef, ...]
  num_classes: int
  attention_kind: str = 'none'
  where: str = 'embedding'
  gate: str = 'softmax'
  cbl_repeats: int = 3
  act: str = 'leaky_relu'
  dtype: Any = jnp.float32

  def gated_layers(self) -> tuple[int, ...]:
    """Indices of the backbone layers followed by an attention module."""
    if self.attention_kind == 'none':
      return ()
    sppf = self.layers[-1].index
    if self.where == 'last':
      return (sppf,)
    # The C3 closing each stride-4/8/16 stage, then SPPF (the last stage's C3 is followed by SPPF).
    return tuple(L.index for L in self.layers if L.kind == 'c3' and L.stride in (4, 8, 16)) + (sppf,)

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images.astype(self.dtype)
    gated = self.gated_layers()
    for L in self.layers:
      kw = dict(act=self.act, dtype=self.dtype, name=f'layer_{L.index}')
      if L.kind == 'cbl':
        x = CBL(L.channels, L.kernel, L.conv_stride, L.padding, **kw)(x, train)
      elif L.kind == 'c3':
        x = C3(L.channels, L.n, L.shortcut, **kw)(x, train)
      elif L.kind == 'sppf':
        x = SPPF(L.channels, L.kernel, **kw)(x, train)
      else:
        raise ValueError(f'backbone layer {L.index}: unexpected kind {L.kind!r}')
      if L.index in gated:
        x = attention_lib.Attention(self.attention_kind, self.gate, self.cbl_repeats, self.act,
                                    self.dtype, name=f'attention_{L.index}')(x, train)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=torch_conv_init, name='head')(x)


class AlexNet(nn.Module):
  """Three conv stages (5 convs) with max-pools → adaptive 4×4 average pool → FC, FC, FC(nc)."""
  num_classes: int
  attention_kind: str = 'none'
  where: str = 'embedding'
  gate: str = 'softmax'
  cbl_repeats: int = 3
  act: str = 'leaky_relu'       # activation inside the attention modules (AlexNet itself uses ReLU)
  dropout: float = 0.5
  dtype: Any = jnp.float32

  def gated_stages(self) -> tuple[int, ...]:
    if self.attention_kind == 'none':
      return ()
    last = len(ALEXNET_STAGES) - 1
    return (last,) if self.where == 'last' else tuple(range(len(ALEXNET_STAGES)))

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = images.astype(self.dtype)
    gated = self.gated_stages()
    conv_index = 0
    for stage, convs in enumerate(ALEXNET_STAGES):
      for features, kernel, stride in convs:
        x = CBL(features, kernel, stride, act='relu', dtype=self.dtype, name=f'conv_{conv_index}')(
            x, train)
        conv_index += 1
      if stage in gated:
        x = attention_lib.Attention(self.attention_kind, self.gate, self.cbl_repeats, self.act,
                                    self.dtype, name=f'attention_{stage}')(x, train)
      x = max_pool_halve(x)
    x = adaptive_avg_pool(x, ALEXNET_POOLED_SIDE)
    x = x.reshape(x.shape[0], -1)
    for j in range(2):
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.relu(nn.Dense(ALEXNET_HIDDEN, kernel_init=torch_conv_init, dtype=self.dtype,
                           name=f'fc_{j}')(x))
    x = nn.Dense(self.num_classes, kernel_init=torch_conv_init, name='fc_2')(x.astype(jnp.float32))
    return x


class VGG16(nn.Module):
  """VGG-16 (configuration D, no BatchNorm) → adaptive 7×7 average pool → FC 4096, FC 4096, FC(nc)."""
  num_classes: int
  dropout: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    _, h, w, _ = images.shape
    if min(h, w) < VGG16_MIN_SIDE:
      raise ValueError(f'VGG-16 needs inputs of at least {VGG16_MIN_SIDE}² (five 2×2 max-pools), '
                       f'got {h}×{w}')
    # torchvision's init: kaiming_normal_(mode='fan_out', nonlinearity='relu') — an untruncated normal
    # of variance 2 / (k·k·c_out) — and N(0, 0.01) for the linear layers; zero biases.
    conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')  # untruncated
    dense_init = nn.initializers.normal(0.01)
    x = images.astype(self.dtype)
    conv_index = 0
    for widths in VGG16_STAGES:
      for features in widths:
        x = nn.relu(nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=conv_init,
                            dtype=self.dtype, name=f'conv_{conv_index}')(x))
        conv_index += 1
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
    x = adaptive_avg_pool(x, VGG16_POOLED_SIDE)
    x = x.reshape(x.shape[0], -1)
    for j in range(2):
      x = nn.relu(nn.Dense(VGG16_HIDDEN, kernel_init=dense_init, dtype=self.dtype, name=f'fc_{j}')(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=dense_init, name='fc_2')(x.astype(jnp.float32))


def arch_of(model_config) -> str:
  from yolo_osam_jax import models  # pylint: disable=g-import-not-at-top (the registry imports us)
  return models.arch_of(model_config)


def validate(model_config) -> None:
  arch = arch_of(model_config)
  if arch not in CLASSIFIER_ARCHS:
    raise ValueError(f"model.arch {arch!r} is not a classifier; classifiers: {CLASSIFIER_ARCHS}")
  att = model_config.attention
  if arch not in ATTENTION_ARCHS and att.kind != 'none':
    raise ValueError(f"model.arch={arch!r} supports model.attention.kind='none' only, got {att.kind!r}")
  if att.kind not in attention_lib.KINDS:
    raise ValueError(f"model.attention.kind must be one of {attention_lib.KINDS}, got {att.kind!r}")
  if att.kind != 'none' and att.where not in PLACES:
    raise ValueError(f"model.attention.where must be one of {PLACES} for classifier {arch!r}, got "
                     f"{att.where!r}")
  if att.gate not in attention_lib.GATES:
    raise ValueError(f"model.attention.gate must be one of {attention_lib.GATES}, got {att.gate!r}")
  if not 0 <= int(att.cbl_repeats) <= 4:
    raise ValueError(f"model.attention.cbl_repeats must be in 0..4, got {att.cbl_repeats}")
  if int(model_config.num_classes) < 2:
    raise ValueError(f"model.num_classes must be ≥ 2 for a classifier, got {model_config.num_classes}")


def build_classifier(model_config) -> nn.Module:
  """The Flax classifier for `config.model` (`arch` cspdarknet_cls | alexnet | vgg16)."""
  validate(model_config)
  if arch_of(model_config) == 'vgg16':
    return VGG16(num_classes=int(model_config.num_classes),
                 dropout=float(model_config.get('dropout', 0.5)),
                 dtype=compute_dtype(model_config.dtype))
  att = model_config.attention
  common = dict(num_classes=int(model_config.num_classes), attention_kind=att.kind,
                where=att.where if att.kind != 'none' else 'embedding', gate=att.gate,
                cbl_repeats=int(att.cbl_repeats), act=model_config.activation,
                dtype=compute_dtype(model_config.dtype))
  if arch_of(model_config) == 'cspdarknet_cls':
    return CSPDarknetClassifier(layers=backbone_table(model_config), **common)
  return AlexNet(dropout=float(model_config.get('dropout', 0.5)), **common)
