"""Training and evaluation of the classification baselines (models/classifiers.py) on face crops.

`train_and_evaluate(config, train_source, eval_source)` trains `build_classifier(config.model)` on the
classification view of a dataset (every face box cropped and letterboxed, data/pipeline.py) with
softmax cross-entropy, then reports on `eval_source`:
  accuracy   correct faces / faces
  f1         macro F1 over the classes that occur as a true or a predicted class
             (evaluation.accuracy.macro_f1: scikit-learn's average='macro', zero_division=0)
  eval_loss  mean cross-entropy

Training runs on the detection trainer's core with a classification loss: its train state, its jitted,
state-donating step, data-parallel over every device, which drops non-finite steps (training/step.py),
and its yolov5 optimiser (training/optim.py: SGD-Nesterov or Adam, parameter groups, warm-up,
linear/cosine decay, gradient accumulation to train.nominal_batch), built for the classifier's
parameters. Not used here: the EMA of the weights (evaluation uses the trained weights). Dropout
(AlexNet's FC layers) draws from `config.seed`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from yolo_osam_jax.data import pipeline
from yolo_osam_jax.evaluation import accuracy as accuracy_lib
from yolo_osam_jax.evaluation import classification
from yolo_osam_jax.models import classifiers
from yolo_osam_jax.training import optim
from yolo_osam_jax.training import step as step_lib

log = logging.getLogger(__name__)

# The batch entries the train step reads.
STEP_KEYS = ('image', 'label')


def make_optimizer(train_config, batch_size: int, steps_per_epoch: int, epochs: int):
  """The detection trainer's yolov5 optimiser (training/optim.py) for a run of `epochs` epochs."""
  train_config = train_config.copy_and_resolve_references()
  train_config.epochs = int(epochs)
  schedule = optim.schedule_from_config(train_config, steps_per_epoch, batch_size)

  def build(params):
    return optim.build_optimizer(train_config, schedule, optim.param_labels(params), batch_size)

  return build, schedule


def to_float_images(images):
  return jnp.asarray(images).astype(jnp.float32) / 255.0


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy (training batches have no padding rows: the loader drops the rest)."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels))


def init_variables(module, rng, img_size: int) -> dict:
  return jax.jit(lambda r: module.init(r, jnp.zeros((1, img_size, img_size, 3)), train=False))(rng)


def make_loss_fn(module):
  """loss_fn(params, batch_stats, batch, rng) -> (cross-entropy, (new_batch_stats, {'accuracy'})), the
  form training/step.py's train step takes; `rng` drives dropout."""

  def loss_fn(params, batch_stats, batch, rng):
    logits, updates = module.apply({'params': params, 'batch_stats': batch_stats},
                                   to_float_images(batch['image']), train=True, mutable=['batch_stats'],
                                   rngs={'dropout': rng})
    labels = batch['label']
    loss = cross_entropy(logits, labels)
    return loss, (updates['batch_stats'], {'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)})

  return loss_fn


def make_eval_step(module):
  def eval_step(params, batch_stats, images):
    return module.apply({'params': params, 'batch_stats': batch_stats}, to_float_images(images),
                        train=False)
  return jax.jit(eval_step)


def classification_metrics(labels, predicted, num_classes: int) -> dict:
  """Accuracy, macro F1 and the confusion matrix [nc, nc] of integer labels vs predictions."""
  labels = np.asarray(labels, np.int64)
  predicted = np.asarray(predicted, np.int64)
  cm = accuracy_lib.classification_confusion(labels, predicted, num_classes)
  f1, _, _, _ = accuracy_lib.macro_f1(cm)
  return {'accuracy': float(np.mean(labels == predicted)) if labels.size else 0.0, 'f1': f1,
          'confusion': cm[:, :num_classes]}


def evaluate(eval_step, state: step_lib.TrainState, batches, num_classes: int) -> dict:
  """Metrics over every valid row of `batches` (padding rows, valid=False, are left out)."""
  labels, predicted, losses, scores = [], [], [], []
  for batch in batches:
    logits = np.asarray(eval_step(state.params, state.batch_stats, batch['image']), np.float32)
    valid = np.asarray(batch['valid'], bool)
    label = np.asarray(batch['label'], np.int64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    losses.append(-log_probs[np.arange(len(label)), label][valid])
    labels.append(label[valid])
    predicted.append(logits.argmax(-1)[valid])
    scores.append(np.exp(log_probs)[valid])
  labels, predicted = np.concatenate(labels), np.concatenate(predicted)
  metrics = classification_metrics(labels, predicted, num_classes)
  # The classifiers' mAP the paper's Tables 2 and 5 print (evaluation/classification.py defines it).
  metrics['map50'] = (classification.classification_map(np.concatenate(scores), labels) if labels.size
                      else float('nan'))
  metrics['eval_loss'] = float(np.concatenate(losses).mean()) if labels.size else float('nan')
  metrics['eval_faces'] = int(labels.size)
  return metrics


def index_faces(source: Sequence, num_classes: int, what: str) -> np.ndarray:
  """[(record, box)] pairs of every face (as `pipeline.face_index`), checking each label in one pass."""
  pairs = []
  for i in range(len(source)):
    example = source[i]
    labels = np.asarray(example['objects']['label']).reshape(-1)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
      image_id = np.asarray(example.get('image_id', '')).item()
      image_id = image_id.decode('utf-8') if isinstance(image_id, bytes) else str(image_id)
      raise ValueError(f"{what} record {i} (image_id {image_id!r}): label {int(bad[0])} is outside "
                       f"0..{num_classes - 1} (model.num_classes = {num_classes})")
    pairs.extend((i, j) for j in range(labels.size))
  return np.asarray(pairs, np.int64).reshape(-1, 2)


def train_and_evaluate(config, train_source: Sequence, eval_source: Sequence, *,
                       epochs: int | None = None, max_steps: int | None = None,
                       progress: bool = True, log_every: int | None = None) -> dict:
  """Trains the configured classifier and returns its metrics on `eval_source`.

  config: full config (model with arch cspdarknet_cls | alexnet, data, train, seed).
  train_source, eval_source: TFDS-style examples (e.g. `pipeline.open_tfds_source(...)`).
  epochs: default config.train.epochs; max_steps: stop earlier (smoke runs).
  Returns {'accuracy', 'f1', 'eval_loss', 'eval_faces', 'train_loss', 'train_accuracy', 'steps',
  'epochs', 'num_params', 'train_seconds', 'confusion' (list of lists)}.
  """
  module = classifiers.build_classifier(config.model)
  num_classes = int(config.model.num_classes)
  img_size = int(config.data.img_size)
  batch_size = int(config.data.batch_size)
  seed = int(config.seed)
  epochs = int(config.train.epochs if epochs is None else epochs)
  if epochs < 1:
    raise ValueError(f'epochs must be ≥ 1, got {epochs}')

  train_faces = index_faces(train_source, num_classes, 'train')
  eval_faces = index_faces(eval_source, num_classes, 'eval')
  steps_per_epoch = len(train_faces) // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f'{len(train_faces)} training faces give no batch of data.batch_size = {batch_size}')
  total_steps = steps_per_epoch * epochs
  if max_steps is not None:
    total_steps = min(total_steps, int(max_steps))

  build_optimizer, schedule = make_optimizer(config.train, batch_size, steps_per_epoch, epochs)
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
  variables = init_variables(module, init_rng, img_size)
  tx = build_optimizer(variables['params'])
  mesh = step_lib.make_mesh()
  state = step_lib.replicate(step_lib.create_train_state(variables, tx, dropout_rng), mesh)
  num_params = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(state.params)))
  train_step = step_lib.jit_train_step(step_lib.train_step_fn(make_loss_fn(module), tx, use_ema=False),
                                       mesh)
  eval_step = make_eval_step(module)

  loader = pipeline.make_classification_loader(train_source, config.data, train=True, seed=seed,
                                               faces=train_faces)
  batches = iter(loader)
  log_every = int(config.train.log_every if log_every is None else log_every)
  start = time.perf_counter()
  step, losses, accs = 0, [], []
  with tqdm(total=total_steps, disable=not progress, desc=f'{classifiers.arch_of(config.model)}',
            leave=False) as bar:
    while step < total_steps:
      batch = next(batches)
      state, out = train_step(state, step_lib.shard_batch(batch, mesh, STEP_KEYS))
      step += 1
      bar.update(1)
      if step % steps_per_epoch == 0 or step == total_steps or step % log_every == 0:
        losses.append(float(out['loss']))
        accs.append(float(out['accuracy']))
        if not math.isfinite(losses[-1]):
          raise FloatingPointError(f'classifier training diverged at step {step}: loss {losses[-1]}')
        bar.set_postfix(loss=f'{losses[-1]:.4f}', epoch=f'{step / steps_per_epoch:.2f}')
  jax.block_until_ready(state.params)
  train_seconds = time.perf_counter() - start

  eval_loader = pipeline.make_classification_loader(eval_source, config.data, train=False, seed=seed,
                                                    batch_size=int(config.eval.batch_size),
                                                    faces=eval_faces)
  metrics = evaluate(eval_step, state, eval_loader, num_classes)
  metrics['confusion'] = metrics['confusion'].tolist()
  metrics.update(train_loss=losses[-1], train_accuracy=accs[-1], steps=step,
                 optimizer_steps=schedule.updates_within(step), epochs=step / steps_per_epoch,
                 num_params=num_params, train_seconds=train_seconds)
  log.info('classifier %s: accuracy %.4f, macro F1 %.4f after %d steps',
           classifiers.arch_of(config.model), metrics['accuracy'], metrics['f1'], step)
  return metrics
