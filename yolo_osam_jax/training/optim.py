"""yolov5's optimiser as optax transforms: parameter groups, warmup, lr decay, accumulation, EMA decay.

What the published code (yolov5 v6.x train.py, SPEC §4) does, iteration by iteration (`ni` counts
mini-batches from 0, `nb` mini-batches per epoch, `nw` warmup iterations):
  * three parameter groups: conv/dense kernels with weight decay; BatchNorm scales without; every bias
    without (BatchNorm offsets and the Detect convolution biases);
  * weight decay is scaled by batch · accumulate / nominal_batch;
  * nw = max(round(warmup_epochs · nb), warmup_min_iters); while ni ≤ nw the lr of the bias group goes
    linearly from warmup_bias_lr down to lr0 · lf(epoch), the other groups' from 0 up, and SGD's
    momentum from warmup_momentum up to momentum; afterwards lr = lr0 · lf(epoch), updated per epoch,
    with lf linear (1 − e/E)(1 − lrf) + lrf or cosine ((1 − cos(πe/E))/2)(lrf − 1) + 1;
  * SGD is torch's SGD with Nesterov momentum and coupled (L2) weight decay; Adam is torch's Adam with
    β = (momentum, 0.999) and coupled weight decay; the momentum warmup only touches SGD (yolov5 sets
    `momentum` on the groups that have one, and Adam's groups have `betas`);
  * gradients of several mini-batches are summed (torch's `backward()` adds into `.grad`) before one
    optimizer step, taken when ni − last_step ≥ accumulate; `accumulate = max(round(nbs / batch), 1)`
    (nbs = nominal_batch), except that while ni ≤ nw it ramps up from 1:
    max(1, round(interp(ni, [0, nw], [1, nbs / batch]))). So warmup takes more, smaller steps;
    afterwards one step every `accumulate` mini-batches;
  * EMA of the weights and BatchNorm statistics after every optimizer step with decay
    0.9999 · (1 − exp(−updates / 2000)).
The schedules below are functions of the optimizer-step count k (what optax passes them); the k-th step
happens at iteration `Schedule.iteration_of_update(k)`: from a table while the ramp lasts (simulated
with yolov5's rule in `ramp_update_iterations`), then every `accumulate` mini-batches.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

# Parameter group labels (optax.multi_transform keys).
DECAY = 'decay'     # conv / dense kernels: weight decay
BN = 'bn'           # BatchNorm scales: no decay
BIAS = 'bias'       # all biases (BatchNorm offsets, Detect conv biases): no decay, warmup_bias_lr
FROZEN = 'frozen'   # train.freeze: updates set to zero
GROUPS = (DECAY, BN, BIAS)

_LAYER_KEY = re.compile(r'layer_(\d+)$')


def accumulate_steps(batch_size: int, nominal_batch: int) -> int:
  """Mini-batches per optimizer step: yolov5's max(round(nbs / batch), 1)."""
  if batch_size < 1:
    raise ValueError(f'data.batch_size must be ≥ 1, got {batch_size}')
  return max(int(round(nominal_batch / batch_size)), 1)


def warmup_iterations(warmup_epochs: float, steps_per_epoch: int, min_iters: int) -> int:
  """yolov5's nw = max(round(warmup_epochs · nb), warmup_min_iters); 0 when warmup_epochs is 0 and
  min_iters is 0 (no warmup)."""
  return max(int(round(warmup_epochs * steps_per_epoch)), int(min_iters))


def ramp_update_iterations(warmup_iters: int, batch_size: int, nominal_batch: int) -> tuple[int, ...]:
  """Iterations ni of yolov5's optimizer steps up to the first one after warmup (ni > nw).

  yolov5's loop: `if ni <= nw: accumulate = max(1, np.interp(ni, [0, nw], [1, nbs / bs]).round())`,
  then `if ni - last_opt_step >= accumulate: step; last_opt_step = ni` (last_opt_step starts at −1).
  Past the returned table the steps come every `accumulate_steps(bs, nbs)` mini-batches. Empty when
  there is nothing to ramp (no warmup, or one mini-batch per step anyway).
  """
  final = accumulate_steps(batch_size, nominal_batch)
  if warmup_iters <= 0 or final == 1:
    return ()
  steps, last, accumulate, ni = [], -1, final, 0
  while not steps or steps[-1] <= warmup_iters:
    if ni <= warmup_iters:
      accumulate = max(1, int(np.round(np.interp(ni, [0, warmup_iters], [1, nominal_batch / batch_size]))))
    if ni - last >= accumulate:
      steps.append(ni)
      last = ni
    ni += 1
  return tuple(steps)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """lr and momentum per iteration, as yolov5 sets them (see the module docstring).

  Every method works on Python numbers and on traced jax integers alike.
  """
  lr0: float
  lrf: float
  epochs: int
  steps_per_epoch: int             # nb: mini-batches per epoch
  warmup_iters: int                # nw
  warmup_bias_lr: float
  momentum: float
  warmup_momentum: float
  scheduler: str = 'linear'        # linear | cosine
  accumulate: int = 1              # mini-batches per optimizer step after the warmup ramp
  ramp: tuple[int, ...] = ()       # iterations of the first steps, while accumulate ramps (see above)

  def __post_init__(self):
    if self.scheduler not in ('linear', 'cosine'):
      raise ValueError(f"train.scheduler must be 'linear' or 'cosine', got {self.scheduler!r}")
    if self.steps_per_epoch < 1:
      raise ValueError(f'steps per epoch must be ≥ 1, got {self.steps_per_epoch}')
    if self.epochs < 1:
      raise ValueError(f'train.epochs must be ≥ 1, got {self.epochs}')

  def lr_factor(self, epoch):
    """lf(epoch): 1 at epoch 0, decaying towards lrf at epoch E."""
    if self.scheduler == 'linear':
      return (1 - epoch / self.epochs) * (1.0 - self.lrf) + self.lrf
    return ((1 - jnp.cos(epoch * math.pi / self.epochs)) / 2) * (self.lrf - 1) + 1

  def _warmup_fraction(self, iteration):
    """(ni / nw clipped to 1, whether ni is inside warmup, i.e. ni ≤ nw); needs warmup_iters > 0."""
    return jnp.minimum(iteration / self.warmup_iters, 1.0), iteration <= self.warmup_iters

  def lr(self, group: str, iteration):
    """The lr of parameter group `group` at mini-batch iteration `iteration`."""
    epoch = iteration // self.steps_per_epoch
    target = self.lr0 * self.lr_factor(epoch)
    if self.warmup_iters <= 0:
      return target * jnp.ones([])
    fraction, in_warmup = self._warmup_fraction(iteration)
    start = self.warmup_bias_lr if group == BIAS else 0.0
    return jnp.where(in_warmup, start + (target - start) * fraction, target)

  def momentum_at(self, iteration):
    """SGD momentum at mini-batch iteration `iteration`."""
    if self.warmup_iters <= 0:
      return self.momentum * jnp.ones([])
    fraction, in_warmup = self._warmup_fraction(iteration)
    ramp = self.warmup_momentum + (self.momentum - self.warmup_momentum) * fraction
    return jnp.where(in_warmup, ramp, self.momentum)

  def iteration_of_update(self, count):
    """Mini-batch iteration at which optimizer step `count` (0-based) happens (count = −1 gives −1)."""
    if not self.ramp:
      return (count + 1) * self.accumulate - 1
    n = len(self.ramp)
    tail = self.ramp[-1] + (count - (n - 1)) * self.accumulate
    if isinstance(count, int):
      return -1 if count < 0 else self.ramp[count] if count < n else tail
    table = jnp.asarray((-1,) + self.ramp)
    return jnp.where(count < n, table[jnp.clip(count + 1, 0, n)], tail)

  def accumulate_at(self, count):
    """Mini-batches summed into optimizer step `count` (optax.MultiSteps' every_k_schedule)."""
    return self.iteration_of_update(count) - self.iteration_of_update(count - 1)

  def updates_within(self, iterations: int) -> int:
    """Optimizer steps taken in the first `iterations` mini-batches."""
    head = sum(1 for ni in self.ramp if ni < iterations)
    start = self.ramp[-1] if self.ramp else -1
    return head + max(iterations - 1 - start, 0) // self.accumulate


def schedule_from_config(train_config, steps_per_epoch: int, batch_size: int) -> Schedule:
  """The Schedule of `config.train` for `steps_per_epoch` mini-batches of global size `batch_size`."""
  nominal_batch = int(train_config.nominal_batch)
  accumulate = accumulate_steps(batch_size, nominal_batch)
  warmup_iters = warmup_iterations(float(train_config.warmup_epochs), steps_per_epoch,
                                   int(train_config.warmup_min_iters))
  return Schedule(
      lr0=float(train_config.lr0), lrf=float(train_config.lrf), epochs=int(train_config.epochs),
      steps_per_epoch=int(steps_per_epoch),
      warmup_iters=warmup_iters,
      warmup_bias_lr=float(train_config.warmup_bias_lr), momentum=float(train_config.momentum),
      warmup_momentum=float(train_config.warmup_momentum), scheduler=str(train_config.scheduler),
      accumulate=accumulate, ramp=ramp_update_iterations(warmup_iters, batch_size, nominal_batch))


def scaled_weight_decay(weight_decay: float, batch_size: int, accumulate: int,
                        nominal_batch: int) -> float:
  """yolov5: weight_decay · batch · accumulate / nominal_batch."""
  return weight_decay * batch_size * accumulate / nominal_batch


def _layer_index(path) -> int | None:
  for key in path:
    match = _LAYER_KEY.match(str(getattr(key, 'key', key)))
    if match:
      return int(match.group(1))
  return None


def param_labels(params, freeze: int = 0):
  """Group label per parameter leaf: 'decay' (kernels), 'bn' (BatchNorm scales), 'bias', or 'frozen'
  for every parameter of the layers `layer_0` … `layer_{freeze-1}` (yolov5's `--freeze k`)."""

  def label(path, _):
    names = [str(getattr(k, 'key', k)) for k in path]
    if freeze > 0:
      index = _layer_index(path)
      if index is not None and index < freeze:
        return FROZEN
    leaf = names[-1]
    if leaf == 'kernel':
      return DECAY
    if leaf == 'scale':
      return BN
    if leaf == 'bias':
      return BIAS
    raise ValueError(f"parameter {'/'.join(names)}: no optimizer group for a leaf named {leaf!r} "
                     "(expected kernel, scale or bias)")

  return jax.tree_util.tree_map_with_path(label, params)


def _sgd(learning_rate, momentum, weight_decay):
  # torch.optim.SGD(nesterov=True): d = g + wd·p; buf = μ·buf + d; step = d + μ·buf; p -= lr·step.
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.trace(decay=momentum, nesterov=True),
                     optax.scale_by_learning_rate(learning_rate))


def _adam(learning_rate, b1, b2, weight_decay):
  # torch.optim.Adam with weight_decay adds wd·p to the gradient before the moments (coupled L2).
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8),
                     optax.scale_by_learning_rate(learning_rate))


def _adamw(learning_rate, b1, b2, weight_decay):
  # torch.optim.AdamW: decoupled decay p -= lr·wd·p next to the Adam step.
  return optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8), optax.add_decayed_weights(weight_decay),
                     optax.scale_by_learning_rate(learning_rate))


def _group_transform(name: str, group: str, schedule: Schedule, weight_decay: float, beta2: float):
  def lr(count):
    return schedule.lr(group, schedule.iteration_of_update(count))

  def momentum(count):
    return schedule.momentum_at(schedule.iteration_of_update(count))

  decay = weight_decay if group == DECAY else 0.0
  if name == 'sgd':
    return optax.inject_hyperparams(_sgd)(learning_rate=lr, momentum=momentum, weight_decay=decay)
  factory = {'adam': _adam, 'adamw': _adamw}.get(name)
  if factory is None:
    raise ValueError(f"train.optimizer must be 'sgd', 'adam' or 'adamw', got {name!r}")
  return optax.inject_hyperparams(factory)(learning_rate=lr, b1=schedule.momentum, b2=beta2,
                                           weight_decay=decay)


def build_optimizer(train_config, schedule: Schedule, labels, batch_size: int) -> optax.MultiSteps:
  """yolov5's optimizer for parameters labelled by `param_labels`.

  Returns an `optax.MultiSteps` (gradients of `schedule.accumulate_at(k)` mini-batches are summed into
  step k); `.has_updated(state)` says whether the last call stepped, `state.gradient_step` counts steps.
  """
  weight_decay = scaled_weight_decay(float(train_config.weight_decay), batch_size, schedule.accumulate,
                                     int(train_config.nominal_batch))
  present = set(jax.tree_util.tree_leaves(labels))
  transforms = {}
  for group in GROUPS:
    if group in present:
      transforms[group] = _group_transform(str(train_config.optimizer), group, schedule, weight_decay,
                                           float(train_config.get('adam_beta2', 0.999)))
  if FROZEN in present:
    transforms[FROZEN] = optax.set_to_zero()
  inner = optax.multi_transform(transforms, labels)
  every_k = schedule.accumulate if not schedule.ramp else schedule.accumulate_at
  return optax.MultiSteps(inner, every_k_schedule=every_k, use_grad_mean=False)


def ema_decay(updates, decay: float = 0.9999, tau: float = 2000.0):
  """yolov5 ModelEMA: decay · (1 − exp(−updates / tau)), `updates` counted from 1 at the first step."""
  # −expm1(−x) = 1 − exp(−x) without float32 cancellation for the first updates (x ≈ 5e-4).
  return decay * -jnp.expm1(-jnp.asarray(updates, jnp.float32) / tau)


def flat_labels(labels) -> dict[str, str]:
  """{'layer_0/conv/kernel': 'decay', ...}: the group of every parameter, for reports and tests."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(labels), sep='/')
  return dict(flat)


def group_sizes(labels) -> dict[str, int]:
  """Number of parameter tensors per group (yolov5 logs these as 'optimizer: SGD with parameter groups
  57 weight(decay=0.0), 60 weight(decay=0.0005), 60 bias')."""
  counts: dict[str, int] = {}
  for label in jax.tree_util.tree_leaves(labels):
    counts[label] = counts.get(label, 0) + 1
  return counts


def current_hyperparams(schedule: Schedule, iteration: int) -> dict[str, Any]:
  """lr per group and momentum at mini-batch `iteration`, as Python floats (for logs)."""
  out = {f'lr/{group}': float(schedule.lr(group, iteration)) for group in GROUPS}
  out['momentum'] = float(schedule.momentum_at(iteration))
  return out
