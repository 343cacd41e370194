"""The train state and the one jitted, buffer-donating train step, data-parallel over a `data` mesh axis.

One call of the step takes one global mini-batch and does everything yolov5 does per iteration: the
forward pass in training mode (BatchNorm batch statistics and running-average updates), the loss, the
gradients, the optax update (which only moves the weights every `accumulate` calls, see optim.py) and,
after a real optimizer step, the EMA update of weights and BatchNorm statistics.

Sharding: the batch is split over the mesh's `data` axis, the state is replicated; XLA inserts the
gradient all-reduce, and BatchNorm statistics are computed over the whole global batch, so any number of
devices gives the same numbers as one (up to float summation order).

Non-finite steps: when the loss, a gradient or an updated weight is NaN/Inf, the whole step is dropped
(weights, BatchNorm statistics, optimizer and EMA state stay as they were) and `bad_steps` (consecutive)
and `total_bad_steps` count it; the training loop stops once `bad_steps` reaches `train.max_bad_steps`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from yolo_osam_jax import losses
from yolo_osam_jax.training import optim

DATA_AXIS = 'data'
# The batch entries the detection step reads (the rest of a pipeline batch stays on the host).
STEP_KEYS = ('image', 'boxes', 'classes', 'mask')


@flax.struct.dataclass
class TrainState:
  step: jax.Array              # mini-batches consumed, skipped ones included
  params: Any
  batch_stats: Any
  opt_state: Any               # optax.MultiStepsState; .gradient_step = optimizer steps taken
  ema_params: Any
  ema_batch_stats: Any
  rng: jax.Array               # for stochastic layers; split every step
  bad_steps: jax.Array         # consecutive non-finite steps
  total_bad_steps: jax.Array

  @property
  def optimizer_steps(self):
    return self.opt_state.gradient_step

  def variables(self, ema: bool = True) -> dict:
    """{'params', 'batch_stats'} for inference: the EMA copy by default."""
    if ema:
      return {'params': self.ema_params, 'batch_stats': self.ema_batch_stats}
    return {'params': self.params, 'batch_stats': self.batch_stats}


def create_train_state(variables: Mapping, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  """A fresh state from initial `variables` ({'params', 'batch_stats'}); the EMA starts as a copy."""
  params = variables['params']
  batch_stats = variables.get('batch_stats', {})
  copy = lambda tree: jax.tree_util.tree_map(jnp.array, tree)  # noqa: E731 (separate EMA buffers)
  return TrainState(
      step=jnp.zeros([], jnp.int32), params=params, batch_stats=batch_stats,
      opt_state=tx.init(params), ema_params=copy(params), ema_batch_stats=copy(batch_stats),
      rng=rng, bad_steps=jnp.zeros([], jnp.int32), total_bad_steps=jnp.zeros([], jnp.int32))


def make_detection_loss_fn(model, model_config, img_size: int, hyp=None) -> Callable:
  """loss_fn(params, batch_stats, batch, rng) -> (total, (new_batch_stats, components)).

  The components are the model family's (`losses.components`: box/obj/cls or box/cls/dfl).

  `batch['image']` is uint8 [B, S, S, 3]; the network sees it as float in [0, 1].
  """

  def loss_fn(params, batch_stats, batch, rng):
    del rng  # the detector has no stochastic layers
    images = batch['image'].astype(jnp.float32) / 255.0
    (_, raw), updates = model.apply({'params': params, 'batch_stats': batch_stats}, images, train=True,
                                    mutable=['batch_stats'])
    targets = {'boxes': batch['boxes'], 'classes': batch['classes'], 'mask': batch['mask']}
    total, parts = losses.detection_loss(raw, targets, model_config, img_size, hyp)
    return total, (updates['batch_stats'], parts)

  return loss_fn


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def train_step_fn(loss_fn: Callable, tx: optax.MultiSteps, ema_decay: float = 0.9999,
                  ema_tau: float = 2000.0, use_ema: bool = True, max_loss: float = 0.0) -> Callable:
  """The un-jitted step: (state, batch) -> (state, metrics). See `jit_train_step` for the compiled one.

  `loss_fn(params, batch_stats, batch, rng) -> (loss, (new_batch_stats, parts))`, where `parts` is a dict
  of scalars (the detection loss's components, e.g. 'box', 'obj', 'cls'; the classifier's 'accuracy').
  max_loss > 0: a step whose detection loss per image (total / batch = the sum of the components)
  exceeds it is dropped like a NaN step: a diverging run's loss can stay finite (1e13) while its weights
  become garbage.
  metrics: 'loss' (detection: total = components · batch), every entry of `parts`, 'finite' (this step
  was applied), 'updated' (an optimizer step happened), 'bad_steps', 'total_bad_steps',
  'optimizer_steps'.
  """

  def step(state: TrainState, batch) -> tuple[TrainState, dict]:
    rng, step_rng = jax.random.split(state.rng)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (batch_stats, parts)), grads = grad_fn(state.params, state.batch_stats, batch, step_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    updated = tx.has_updated(opt_state)
    if use_ema:
      decay = optim.ema_decay(opt_state.gradient_step.astype(jnp.float32), ema_decay, ema_tau)
    else:
      decay = jnp.zeros([], jnp.float32)  # the "EMA" is the model itself

    def ema(old, new):
      mixed = old * decay.astype(old.dtype) + (1 - decay.astype(old.dtype)) * new
      return jnp.where(updated, mixed, old)

    ema_params = jax.tree_util.tree_map(ema, state.ema_params, params)
    ema_batch_stats = jax.tree_util.tree_map(ema, state.ema_batch_stats, batch_stats)

    finite = (jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params) &
              _all_finite(batch_stats))
    if max_loss > 0:
      finite = finite & (loss / batch['image'].shape[0] <= max_loss)
    applied = TrainState(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
        ema_params=ema_params, ema_batch_stats=ema_batch_stats, rng=rng,
        bad_steps=jnp.zeros_like(state.bad_steps), total_bad_steps=state.total_bad_steps)
    skipped = state.replace(step=state.step + 1, rng=rng, bad_steps=state.bad_steps + 1,
                            total_bad_steps=state.total_bad_steps + 1)
    # One conditional rather than a select per buffer: XLA fuses the scalar `finite` (an and-chain over
    # every tensor's isfinite) into each of the ~1,600 selects, a quadratic program (1.1M HLO lines for
    # YOLO-OSAM) that took over a third of the step's compile time (110 s -> 68 s, README).
    new_state = jax.lax.cond(finite, lambda: applied, lambda: skipped)
    metrics = {
        'loss': loss, **parts,
        'finite': finite, 'updated': updated & finite, 'bad_steps': new_state.bad_steps,
        'total_bad_steps': new_state.total_bad_steps,
        'optimizer_steps': new_state.opt_state.gradient_step,
    }
    return new_state, metrics

  return step


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process) with axis 'data'."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def jit_train_step(step: Callable, mesh: Mesh) -> Callable:
  """`step` compiled once: state replicated and donated (its buffers are reused), batch sharded."""
  return jax.jit(step, in_shardings=(replicated(mesh), batch_sharded(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=(0,))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh, keys: tuple[str, ...] = STEP_KEYS) -> dict:
  """This process's rows of a global batch -> global arrays sharded over 'data' (`keys` only).

  Every process passes its own rows (`jax.make_array_from_process_local_data`), so on several hosts the
  global batch is the concatenation of the processes' batches.
  """
  sharding = batch_sharded(mesh)
  local_devices = len(mesh.local_devices)
  out = {}
  for key in keys:
    if key not in batch:
      raise KeyError(f"train batch has no {key!r} (keys: {sorted(batch)})")
    value = np.asarray(batch[key])
    if value.shape[0] % local_devices:
      raise ValueError(f"batch[{key!r}] has {value.shape[0]} rows, not divisible by this process's "
                       f"{local_devices} devices (choose data.batch_size accordingly)")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


def replicate(tree, mesh: Mesh):
  """Places a pytree on every device of `mesh` (identical values on every process).

  Goes through host copies so the result never aliases the input's buffers: the train step donates
  its state, which must not delete arrays the caller still holds (e.g. the initial variables).
  """
  return jax.device_put(to_host(tree), replicated(mesh))


def to_host(tree):
  """A replicated device pytree -> numpy (each process reads its local copy)."""

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)

  return jax.tree_util.tree_map(fetch, tree)


def all_finite_host(tree) -> bool:
  """True when every float leaf of a host/device pytree is finite (checked before every save)."""
  for leaf in jax.tree_util.tree_leaves(tree):
    value = np.asarray(leaf)
    if np.issubdtype(value.dtype, np.inexact) and not np.all(np.isfinite(value)):
      return False
  return True
