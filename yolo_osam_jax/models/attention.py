"""Spatial and channel attention: SAM (CBAM's spatial part), OSAM (the paper's), CBAM, and their mixes.

One family, chosen by `config.model.attention.kind`:
  none       no module at all
  sam        CBAM spatial attention: [channel-max, channel-mean] → 7×7 conv + BN → sigmoid, multiply
  osam       the paper's optimized spatial attention (Eq. 4–7, SPEC §2.4)
  cbam_sam   CBAM: channel attention then SAM
  cbam_osam  channel attention then OSAM

OSAM's `gate` decides how the 1-channel map y becomes weights:
  softmax    the paper: softmax over the H×W positions of each image, rescaled by H·W so the weights
             average exactly 1, applied with a residual: out = F ⊙ (1 + A) / 2. (The paper does not name
             the axis; over a one-channel map only the spatial positions make it non-trivial.)
  sigmoid    out = F ⊙ σ(y), as in CBAM.
  reference  the published code: softmax over the single channel axis, which is identically 1, so the
             module is an identity and its parameters never receive gradient (SPEC §2.3). Needed to load
             the published weights with parity, and as an ablation row.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from yolo_osam_jax.models.layers import CBL, torch_conv_init, BN_EPS, BN_FAST_VARIANCE, BN_MOMENTUM

KINDS = ('none', 'sam', 'osam', 'cbam_osam', 'cbam_sam')
GATES = ('softmax', 'sigmoid', 'reference')
PLACES = ('backbone', 'neck', 'none')


def channel_pool(x):
  """[B, H, W, C] → channel-max and channel-mean maps, each [B, H, W, 1] (computed in float32)."""
  x32 = x.astype(jnp.float32)
  return (jnp.max(x32, axis=-1, keepdims=True).astype(x.dtype),
          jnp.mean(x32, axis=-1, keepdims=True).astype(x.dtype))


def spatial_softmax_weights(y):
  """Softmax over the H×W positions of each image and channel, scaled by H·W (mean exactly 1)."""
  b, h, w, c = y.shape
  flat = y.astype(jnp.float32).reshape(b, h * w, c)
  a = jax.nn.softmax(flat, axis=1) * (h * w)
  return a.reshape(b, h, w, c)


class OSAM(nn.Module):
  """Optimized spatial attention: M = r×CBL(max_c F), N = r×CBL(mean_c F), A = gate(CBL([M, N]))."""
  cbl_repeats: int = 3
  gate: str = 'softmax'
  act: str = 'leaky_relu'
  dtype: Any = jnp.float32

  @nn.compact
  def attention_logits(self, x, train: bool = False):
    """The 1-channel map y = CBL([M, N]) before the gate."""
    m, n = channel_pool(x)
    for j in range(self.cbl_repeats):
      m = CBL(1, 3, act=self.act, dtype=self.dtype, name=f'max_{j}')(m, train)
    for j in range(self.cbl_repeats):
      n = CBL(1, 3, act=self.act, dtype=self.dtype, name=f'mean_{j}')(n, train)
    return CBL(1, 3, act=self.act, dtype=self.dtype, name='fuse')(jnp.concatenate([m, n], -1), train)

  def __call__(self, x, train: bool = False):
    if self.gate not in GATES:
      raise ValueError(f"model.attention.gate must be one of {GATES}, got {self.gate!r}")
    y = self.attention_logits(x, train)
    if self.gate == 'reference':
      # torch.softmax(y) without dim on a 4-D tensor runs over the channel axis (size 1): all ones.
      return x * jax.nn.softmax(y, axis=-1).astype(x.dtype)
    if self.gate == 'sigmoid':
      return x * nn.sigmoid(y).astype(x.dtype)
    a = spatial_softmax_weights(y).astype(x.dtype)
    return x * (1 + a) / 2


class SAM(nn.Module):
  """CBAM's spatial attention: 7×7 conv + BN over [channel-max, channel-mean], sigmoid, multiply."""
  kernel: int = 7
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    s = jnp.concatenate(channel_pool(x), axis=-1)
    p = self.kernel // 2
    y = nn.Conv(1, (self.kernel, self.kernel), padding=((p, p), (p, p)), use_bias=False,
                kernel_init=torch_conv_init, dtype=self.dtype, name='conv')(s)
    y = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                     use_fast_variance=BN_FAST_VARIANCE, dtype=self.dtype, name='bn')(y)
    return x * nn.sigmoid(y).astype(x.dtype)


class ChannelAttention(nn.Module):
  """CBAM channel attention: a shared MLP (reduction r) over channel-wise max and mean vectors."""
  reduction: int = 16
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    hidden = max(c // self.reduction, 1)
    fc1 = nn.Dense(hidden, dtype=self.dtype, name='fc1')
    fc2 = nn.Dense(c, dtype=self.dtype, name='fc2')
    mlp = lambda v: fc2(nn.relu(fc1(v)))
    x32 = x.astype(jnp.float32)
    logits = mlp(jnp.max(x32, axis=(1, 2)).astype(x.dtype)) + mlp(jnp.mean(x32, axis=(1, 2)).astype(x.dtype))
    return x * nn.sigmoid(logits)[:, None, None, :].astype(x.dtype)


class Attention(nn.Module):
  """The configured attention block (kind ≠ none)."""
  kind: str
  gate: str = 'softmax'
  cbl_repeats: int = 3
  act: str = 'leaky_relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.kind not in KINDS or self.kind == 'none':
      raise ValueError(f"model.attention.kind must be one of {KINDS[1:]} here, got {self.kind!r}")
    if self.kind.startswith('cbam_'):
      x = ChannelAttention(dtype=self.dtype, name='channel')(x, train)
    if self.kind.endswith('osam'):
      return OSAM(self.cbl_repeats, self.gate, self.act, self.dtype, name='spatial')(x, train)
    return SAM(dtype=self.dtype, name='spatial')(x, train)


def validate(attention_config) -> None:
  kind, where = attention_config.kind, attention_config.where
  if kind not in KINDS:
    raise ValueError(f"model.attention.kind must be one of {KINDS}, got {kind!r}")
  if where not in PLACES:
    raise ValueError(f"model.attention.where must be one of {PLACES}, got {where!r}")
  if attention_config.gate not in GATES:
    raise ValueError(f"model.attention.gate must be one of {GATES}, got {attention_config.gate!r}")
  if not 0 <= int(attention_config.cbl_repeats) <= 4:
    raise ValueError(f"model.attention.cbl_repeats must be in 0..4, got {attention_config.cbl_repeats}")
