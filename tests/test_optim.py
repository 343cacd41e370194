"""yolov5's optimiser as optax transforms (training/optim.py) and the train step's update rules.

References are computed here independently: lr/momentum with np.interp exactly as yolov5's train.py
writes them, and torch's SGD-Nesterov / Adam update formulas in plain numpy.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from configs import base
from yolo_osam_jax import models
from yolo_osam_jax.training import optim
from yolo_osam_jax.training import step as step_lib


def make_schedule(**overrides):
  values = dict(lr0=0.01, lrf=0.01, epochs=10, steps_per_epoch=20, warmup_iters=100, warmup_bias_lr=0.1,
                momentum=0.937, warmup_momentum=0.8, scheduler='linear', accumulate=1)
  values.update(overrides)
  return optim.Schedule(**values)


# --------------------------------------------------------------------------------------------------
# Schedules: values computed by hand from yolov5's formulas.


@pytest.mark.parametrize('iteration, bias_lr, other_lr, momentum', [
    (0, 0.1, 0.0, 0.8),                    # warmup start: bias lr at warmup_bias_lr, others at 0
    (50, 0.05401, 0.00401, 0.8685),        # halfway, epoch 2: target 0.01·lf(2) = 0.01·0.802
    (100, 0.00505, 0.00505, 0.937),        # ni = nw (epoch 5): lf(5) = 0.5·0.99 + 0.01 = 0.505
    (150, 0.00307, 0.00307, 0.937),        # after warmup, epoch 7: lf(7) = 0.3·0.99 + 0.01
    (199, 0.00109, 0.00109, 0.937),        # last iteration, epoch 9: lf(9) = 0.1·0.99 + 0.01
])
def test_linear_schedule_matches_hand_values(iteration, bias_lr, other_lr, momentum):
  s = make_schedule()
  # float32 arithmetic: relative 1e-6.
  assert float(s.lr(optim.BIAS, iteration)) == pytest.approx(bias_lr, rel=1e-6, abs=1e-12)
  assert float(s.lr(optim.DECAY, iteration)) == pytest.approx(other_lr, rel=1e-6, abs=1e-12)
  assert float(s.lr(optim.BN, iteration)) == pytest.approx(other_lr, rel=1e-6, abs=1e-12)
  assert float(s.momentum_at(iteration)) == pytest.approx(momentum, abs=1e-7)


def test_cosine_schedule_matches_hand_values():
  s = make_schedule(scheduler='cosine')
  # Epoch 7 of 10: ((1 - cos(0.7π)) / 2)·(0.01 - 1) + 1 = 1 - 0.99·0.7938926 = 0.2140463.
  assert float(s.lr(optim.DECAY, 150)) == pytest.approx(0.01 * 0.2140463, rel=1e-6)
  # Epoch 0 after a short warmup: factor 1.
  assert float(make_schedule(scheduler='cosine', warmup_iters=5).lr(optim.DECAY, 10)) == pytest.approx(0.01)


def test_warmup_iterations_and_accumulation_follow_yolov5():
  assert optim.warmup_iterations(3.0, 20, 100) == 100       # max(round(3·20), 100)
  assert optim.warmup_iterations(3.0, 383, 100) == 1149     # RAF-DB: 12,271 / 32 = 383 batches
  assert optim.accumulate_steps(32, 64) == 2
  assert optim.accumulate_steps(16, 64) == 4
  assert optim.accumulate_steps(128, 64) == 1
  assert optim.scaled_weight_decay(5e-4, 32, 2, 64) == pytest.approx(5e-4)
  assert optim.scaled_weight_decay(5e-4, 16, 1, 64) == pytest.approx(1.25e-4)
  # With accumulation 4 (and no warmup ramp), optimizer step k happens at iteration 4k + 3.
  assert make_schedule(accumulate=4).iteration_of_update(0) == 3
  assert make_schedule(accumulate=4).iteration_of_update(5) == 23


def test_bad_scheduler_is_rejected():
  with pytest.raises(ValueError, match='scheduler'):
    make_schedule(scheduler='step')


# --------------------------------------------------------------------------------------------------
# Parameter groups.


def tiny_model_config():
  config = base.model_config('n', 7)
  config.width, config.depth = 0.125, 0.33
  return config


def test_weight_decay_mask_covers_exactly_the_kernels():
  model = models.build(tiny_model_config())
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  params = variables['params']
  labels = optim.flat_labels(optim.param_labels(params))
  flat = traverse_util.flatten_dict(params, sep='/')
  assert set(labels) == set(flat)
  kernels = {k for k in flat if k.endswith('/kernel')}
  assert {k for k, v in labels.items() if v == optim.DECAY} == kernels
  assert {k for k, v in labels.items() if v == optim.BN} == {k for k in flat if k.endswith('bn/scale')}
  # Every bias: BatchNorm offsets and the Detect convolutions' biases.
  biases = {k for k, v in labels.items() if v == optim.BIAS}
  assert biases == {k for k in flat if k.endswith('/bias')}
  assert any(k.startswith('layer_32/') for k in biases)  # the Detect layer of the published topology
  # Every conv kernel is 4-D (HWIO); nothing else is.
  assert all(len(flat[k].shape) == 4 for k in kernels)


def test_freeze_labels_the_first_layers():
  model = models.build(tiny_model_config())
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))['params']
  labels = optim.flat_labels(optim.param_labels(params, freeze=10))
  for key, label in labels.items():
    index = int(key.split('/')[0].split('_')[1])
    assert (label == optim.FROZEN) == (index < 10), key


def test_unknown_leaf_name_is_a_clear_error():
  with pytest.raises(ValueError, match='layer_0/weird/alpha'):
    optim.param_labels({'layer_0': {'weird': {'alpha': jnp.ones(2)}}})


# --------------------------------------------------------------------------------------------------
# The optimizer against torch's update formulas in numpy.


def toy_params():
  rng = np.random.default_rng(0)
  return {
      'layer_0': {'conv': {'kernel': jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
                  'bn': {'scale': jnp.asarray(rng.uniform(0.5, 1.5, 4), jnp.float32),
                         'bias': jnp.asarray(rng.normal(size=4), jnp.float32)}},
      'layer_1': {'m_0': {'kernel': jnp.asarray(rng.normal(size=(1, 1, 4, 6)), jnp.float32),
                          'bias': jnp.asarray(rng.normal(size=6), jnp.float32)}},
  }


def train_config(**overrides):
  config = base.get_config().train
  for key, value in overrides.items():
    config[key] = value
  return config


def yolov5_lr(ni, group, nb, nw, epochs, lr0=0.01, lrf=0.01, bias_lr=0.1):
  lf = (1 - (ni // nb) / epochs) * (1.0 - lrf) + lrf
  if ni <= nw:
    return np.interp(ni, [0, nw], [bias_lr if group == 'bias' else 0.0, lr0 * lf])
  return lr0 * lf


def toy_optimizer(config, schedule, batch_size):
  """(tx, its state, toy_params(), flat group labels, a float64 copy of the params for the reference)."""
  params = toy_params()
  labels = optim.param_labels(params)
  tx = optim.build_optimizer(config, schedule, labels, batch_size=batch_size)
  ref = {k: np.asarray(v, np.float64) for k, v in traverse_util.flatten_dict(params, sep='/').items()}
  return tx, tx.init(params), params, optim.flat_labels(labels), ref


def random_update(tx, state, params, rng):
  """One tx.update with standard-normal gradients: (params, state, the gradients flattened by path)."""
  grads_flat = {'/'.join(k): rng.normal(size=v.shape).astype(np.float32)
                for k, v in traverse_util.flatten_dict(params).items()}
  grads = traverse_util.unflatten_dict({tuple(k.split('/')): jnp.asarray(v) for k, v in grads_flat.items()})
  updates, state = tx.update(grads, state, params)
  return jax.tree_util.tree_map(lambda p, u: p + u, params, updates), state, grads_flat


def test_sgd_matches_torch_nesterov_with_warmup_and_decay():
  nb, nw, epochs, wd = 4, 6, 5, 5e-4
  config = train_config(optimizer='sgd', lr0=0.01, epochs=epochs, warmup_epochs=1.5, warmup_min_iters=0,
                        weight_decay=wd, nominal_batch=64)
  schedule = optim.schedule_from_config(config, steps_per_epoch=nb, batch_size=64)
  assert schedule.warmup_iters == nw
  tx, state, params, flat_labels, ref = toy_optimizer(config, schedule, 64)
  buf = {k: None for k in ref}
  rng = np.random.default_rng(1)
  for ni in range(12):
    params, state, grads_flat = random_update(tx, state, params, rng)
    momentum = np.interp(ni, [0, nw], [0.8, 0.937]) if ni <= nw else 0.937
    for k in ref:
      group = flat_labels[k]
      d = grads_flat[k].astype(np.float64) + (wd * ref[k] if group == 'decay' else 0.0)
      buf[k] = d if buf[k] is None else momentum * buf[k] + d
      ref[k] = ref[k] - yolov5_lr(ni, group, nb, nw, epochs) * (d + momentum * buf[k])
  for k, v in traverse_util.flatten_dict(params, sep='/').items():
    np.testing.assert_allclose(np.asarray(v), ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_adam_matches_torch_adam_with_coupled_decay():
  nb, epochs, wd, b1, b2, lr0 = 3, 4, 1e-3, 0.937, 0.999, 0.001
  config = train_config(optimizer='adam', lr0=lr0, epochs=epochs, warmup_epochs=0.0, warmup_min_iters=0,
                        weight_decay=wd, nominal_batch=16)
  schedule = optim.schedule_from_config(config, steps_per_epoch=nb, batch_size=16)
  tx, state, params, flat_labels, ref = toy_optimizer(config, schedule, 16)
  m = {k: np.zeros_like(v) for k, v in ref.items()}
  v2 = {k: np.zeros_like(v) for k, v in ref.items()}
  rng = np.random.default_rng(2)
  for ni in range(8):
    params, state, grads_flat = random_update(tx, state, params, rng)
    lr = lr0 * ((1 - (ni // nb) / epochs) * 0.99 + 0.01)
    t = ni + 1
    for k in ref:
      g = grads_flat[k].astype(np.float64) + (wd * ref[k] if flat_labels[k] == 'decay' else 0.0)
      m[k] = b1 * m[k] + (1 - b1) * g
      v2[k] = b2 * v2[k] + (1 - b2) * g * g
      ref[k] = ref[k] - lr * (m[k] / (1 - b1**t)) / (np.sqrt(v2[k] / (1 - b2**t)) + 1e-8)
  for k, v in traverse_util.flatten_dict(params, sep='/').items():
    np.testing.assert_allclose(np.asarray(v), ref[k], rtol=2e-5, atol=1e-6, err_msg=k)


def test_frozen_parameters_never_move():
  config = train_config(optimizer='sgd', warmup_epochs=0.0, warmup_min_iters=0)
  params = toy_params()
  labels = optim.param_labels(params, freeze=1)
  schedule = optim.schedule_from_config(config, steps_per_epoch=5, batch_size=64)
  tx = optim.build_optimizer(config, schedule, labels, batch_size=64)
  state = tx.init(params)
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, state = tx.update(grads, state, params)
  moved = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
  np.testing.assert_array_equal(moved['layer_0']['conv']['kernel'], params['layer_0']['conv']['kernel'])
  np.testing.assert_array_equal(moved['layer_0']['bn']['scale'], params['layer_0']['bn']['scale'])
  assert not np.allclose(moved['layer_1']['m_0']['kernel'], params['layer_1']['m_0']['kernel'])


# --------------------------------------------------------------------------------------------------
# EMA and gradient accumulation through the train step (a toy linear model with a summed loss).


def test_ema_decay_formula():
  assert float(optim.ema_decay(1.0)) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)), rel=1e-6)
  assert float(optim.ema_decay(2000.0)) == pytest.approx(0.9999 * (1 - math.exp(-1)), rel=1e-6)
  assert float(optim.ema_decay(1e6)) == pytest.approx(0.9999, rel=1e-6)


def linear_loss_fn(params, batch_stats, batch, rng):
  del rng
  kernel = params['layer_0']['dense']['kernel']
  bias = params['layer_0']['dense']['bias']
  prediction = batch['x'] @ kernel + bias
  # A per-example sum, like yolov5's loss · batch size: summing mini-batches equals the big batch.
  loss = jnp.sum((prediction - batch['y']) ** 2)
  zero = jnp.zeros([])
  return loss, (batch_stats, {'box': loss, 'obj': zero, 'cls': zero})


def linear_setup(batch_size, nominal_batch, epochs=3, steps_per_epoch=4, warmup_epochs=0.0):
  config = train_config(optimizer='sgd', lr0=0.01, epochs=epochs, warmup_epochs=warmup_epochs,
                        warmup_min_iters=0, nominal_batch=nominal_batch, weight_decay=5e-4)
  rng = np.random.default_rng(3)
  params = {'layer_0': {'dense': {'kernel': jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
                                  'bias': jnp.zeros(2, jnp.float32)}}}
  schedule = optim.schedule_from_config(config, steps_per_epoch=steps_per_epoch, batch_size=batch_size)
  tx = optim.build_optimizer(config, schedule, optim.param_labels(params), batch_size=batch_size)
  state = step_lib.create_train_state({'params': params, 'batch_stats': {}}, tx, jax.random.PRNGKey(0))
  return state, jax.jit(step_lib.train_step_fn(linear_loss_fn, tx))


def linear_batches(count, size):
  rng = np.random.default_rng(4)
  return [{'x': rng.normal(size=(size, 3)).astype(np.float32),
           'y': rng.normal(size=(size, 2)).astype(np.float32)} for _ in range(count)]


def test_accumulation_equals_one_big_batch():
  big = linear_batches(6, 8)
  state_big, step_big = linear_setup(batch_size=8, nominal_batch=8, steps_per_epoch=2)
  state_acc, step_acc = linear_setup(batch_size=4, nominal_batch=8, steps_per_epoch=4)
  for batch in big:
    state_big, _ = step_big(state_big, batch)
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    state_acc, m1 = step_acc(state_acc, halves[0])
    assert not bool(m1['updated'])      # first half: gradients only accumulate
    state_acc, m2 = step_acc(state_acc, halves[1])
    assert bool(m2['updated'])
  assert int(state_acc.opt_state.gradient_step) == int(state_big.opt_state.gradient_step) == 6
  for a, b in zip(jax.tree_util.tree_leaves((state_acc.params, state_acc.ema_params)),
                  jax.tree_util.tree_leaves((state_big.params, state_big.ema_params))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def yolov5_step_iterations(total, nw, batch_size, nbs):
  """The iterations at which yolov5's train loop calls optimizer.step(), its loop transcribed."""
  accumulate = max(round(nbs / batch_size), 1)
  last_opt_step, steps = -1, []
  for ni in range(total):
    if ni <= nw:
      accumulate = max(1, np.interp(ni, [0, nw], [1, nbs / batch_size]).round())
    if ni - last_opt_step >= accumulate:
      steps.append(ni)
      last_opt_step = ni
  return steps


def test_accumulation_ramps_up_during_warmup_by_hand():
  # nw 10, nbs/bs = 4: accumulate(ni) = round(1 + 0.3 ni) = 1 1 2 2 2 2(2.5 rounds to even) 3 3 3 4 4.
  assert optim.ramp_update_iterations(10, 16, 64) == (0, 1, 3, 5, 8, 12)
  assert optim.ramp_update_iterations(0, 16, 64) == ()      # no warmup: nothing ramps
  assert optim.ramp_update_iterations(10, 64, 64) == ()     # one mini-batch per step anyway


@pytest.mark.parametrize('nw, batch_size, nbs', [(10, 16, 64), (37, 8, 64), (100, 32, 64), (1, 16, 64),
                                                  (0, 16, 64), (6, 64, 64), (25, 24, 64)])
def test_optimizer_steps_happen_where_yolov5_takes_them(nw, batch_size, nbs):
  reference = yolov5_step_iterations(400, nw, batch_size, nbs)
  schedule = make_schedule(warmup_iters=nw, accumulate=optim.accumulate_steps(batch_size, nbs),
                           ramp=optim.ramp_update_iterations(nw, batch_size, nbs))
  counts = range(len(reference))
  assert [schedule.iteration_of_update(k) for k in counts] == reference
  traced = jax.jit(schedule.iteration_of_update)(jnp.arange(len(reference)))
  assert np.asarray(traced).tolist() == reference
  gaps = np.diff([-1] + reference).tolist()
  accumulate_at = jax.jit(schedule.accumulate_at)   # compiled once, called per k
  assert [int(accumulate_at(jnp.int32(k))) for k in counts] == gaps
  assert [schedule.updates_within(i) for i in range(400)] == [
      sum(1 for r in reference if r < i) for i in range(400)]


def test_train_step_follows_the_accumulation_ramp():
  # batch 16, nominal 64, 10 mini-batches per epoch, warmup 1 epoch: nw = 10.
  state, step = linear_setup(batch_size=16, nominal_batch=64, steps_per_epoch=10, warmup_epochs=1.0)
  reference = yolov5_step_iterations(30, 10, 16, 64)
  updated = []
  for batch in linear_batches(30, 16):
    state, metrics = step(state, batch)
    updated.append(bool(metrics['updated']))
  assert [ni for ni, u in enumerate(updated) if u] == reference
  assert int(state.opt_state.gradient_step) == len(reference)


def test_ema_follows_the_ramped_decay_after_each_update():
  state, step = linear_setup(batch_size=4, nominal_batch=4)
  ema = np.asarray(state.params['layer_0']['dense']['kernel'], np.float64)
  for updates, batch in enumerate(linear_batches(3, 4), start=1):
    state, _ = step(state, batch)
    d = 0.9999 * (1 - math.exp(-updates / 2000))
    ema = d * ema + (1 - d) * np.asarray(state.params['layer_0']['dense']['kernel'], np.float64)
    np.testing.assert_allclose(np.asarray(state.ema_params['layer_0']['dense']['kernel']), ema,
                               rtol=1e-6, atol=1e-7)


def test_non_finite_step_is_skipped_and_counted():
  state, step = linear_setup(batch_size=4, nominal_batch=4)
  good, bad = linear_batches(2, 4)
  bad = dict(bad)
  bad['y'] = bad['y'].copy()
  bad['y'][1, 0] = np.nan
  before = jax.tree_util.tree_map(np.asarray, (state.params, state.ema_params, state.opt_state))
  state, metrics = step(state, bad)
  assert not bool(metrics['finite'])
  assert int(state.bad_steps) == 1 and int(state.total_bad_steps) == 1 and int(state.step) == 1
  after = jax.tree_util.tree_map(np.asarray, (state.params, state.ema_params, state.opt_state))
  for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
    np.testing.assert_array_equal(a, b)
  state, metrics = step(state, bad)
  assert int(state.bad_steps) == 2
  state, metrics = step(state, good)
  assert bool(metrics['finite']) and bool(metrics['updated'])
  assert int(state.bad_steps) == 0 and int(state.total_bad_steps) == 2
  assert int(state.opt_state.gradient_step) == 1
