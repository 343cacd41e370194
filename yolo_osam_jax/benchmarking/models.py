"""The model sections of scripts/benchmark.py: `infer` (forward + decoding) and `train` (one train
step) img/s, each network against the others in the same run, float32 against bfloat16."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from yolo_osam_jax.benchmarking import time_fn


def built_variants(model_configs: Mapping[str, ml_collections.ConfigDict], img: int, dtypes):
  """(name, dtype, model config, module, variables) for every network in every dtype."""
  from yolo_osam_jax import models
  for name, cfg in model_configs.items():
    for dtype in dtypes:
      cfg = cfg.copy_and_resolve_references()
      cfg.dtype = dtype
      module = models.build(cfg)
      variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, img, img, 3)))
      yield name, dtype, cfg, module, variables


def run_infer_benchmark(model_configs: Mapping[str, ml_collections.ConfigDict], smoke: bool,
                        img_size: int | None = None, batches=None, dtypes=None) -> list[dict]:
  """Inference img/s (forward + decoding) of each of `model_configs` ({name: config.model}), float32 vs
  bfloat16, several batch sizes.

  The batch is split over every device along the `data` mesh axis (parameters replicated), as training does.
  """
  from yolo_osam_jax.training import step as step_lib
  img = img_size or (64 if smoke else 128)
  batches = batches or ((1, 4) if smoke else (1, 32, 256))
  dtypes = dtypes or ('float32', 'bfloat16')
  rows = []
  for name, dtype, _, module, variables in built_variants(model_configs, img, dtypes):
    for b in batches:
      mesh = step_lib.make_mesh(jax.devices()[:len(jax.devices()) if b % len(jax.devices()) == 0 else 1])
      x = jax.device_put(jax.random.uniform(jax.random.PRNGKey(1), (b, img, img, 3)),
                         step_lib.batch_sharded(mesh))
      v = step_lib.replicate(variables, mesh)
      fwd = jax.jit(lambda v, x: module.apply(v, x)[0])
      t = time_fn(lambda: fwd(v, x), repeats=3 if smoke else 5)
      rows.append({'section': 'infer', 'model': name, 'dtype': dtype, 'batch': b, 'img': img,
                   'devices': mesh.size, 'compile_s': t['compile_s'], 'ms_per_batch': 1e3 * t['median_s'],
                   'img_per_s': b / t['median_s']})
  return rows


def run_train_benchmark(model_configs: Mapping[str, ml_collections.ConfigDict],
                        train_config: ml_collections.ConfigDict, smoke: bool, img_size: int | None = None,
                        batches=None, dtypes=None) -> list[dict]:
  """Train-step img/s (forward, loss, backward, optax update, EMA) of each of `model_configs` with the
  optimiser of `train_config` (config.train)."""
  from yolo_osam_jax import training
  img = img_size or (64 if smoke else 128)
  on_cpu = jax.devices()[0].platform == 'cpu'
  # A batch-256 train step takes tens of seconds on a 2-core CPU: there the full run stops at 32.
  batches = batches or ((4,) if smoke else (32,) if on_cpu else (32, 256))
  dtypes = dtypes or ('float32', 'bfloat16')
  mesh = training.make_mesh()
  rows = []
  rng = np.random.default_rng(0)
  for name, dtype, cfg, module, variables in built_variants(model_configs, img, dtypes):
    for b in batches:
      if b % mesh.size:
        continue
      schedule = training.schedule_from_config(train_config, steps_per_epoch=100, batch_size=b)
      tx = training.build_optimizer(train_config, schedule, training.param_labels(variables['params']), b)
      step = training.jit_train_step(training.train_step_fn(
          training.make_detection_loss_fn(module, cfg, img), tx), mesh)
      m = 8
      host_batch = {
          'image': rng.integers(0, 256, (b, img, img, 3), dtype=np.uint8),
          'boxes': np.concatenate([rng.uniform(0.2, 0.8, (b, m, 2)), rng.uniform(0.05, 0.4, (b, m, 2))],
                                  -1).astype(np.float32),
          'classes': rng.integers(0, cfg.num_classes, (b, m)).astype(np.int32),
          'mask': rng.uniform(size=(b, m)) < 0.5,
      }
      batch = training.shard_batch(host_batch, mesh)
      # replicate() copies through the host: the donating step must not delete `variables`, which the
      # next batch size reuses.
      holder = {'state': training.step.replicate(
          training.create_train_state(variables, tx, jax.random.PRNGKey(0)), mesh)}

      def run():
        holder['state'], metrics = step(holder['state'], batch)
        return metrics['loss']

      t = time_fn(run, repeats=3 if smoke else 5)
      rows.append({'section': 'train', 'model': name, 'dtype': dtype, 'batch': b, 'img': img,
                   'devices': mesh.size, 'compile_s': t['compile_s'], 'ms_per_step': 1e3 * t['median_s'],
                   'img_per_s': b / t['median_s']})
  return rows
