"""The training loop: AutoAnchor, epochs of jitted steps, validation, checkpoints, exact resume, test.

`train_and_evaluate(config, workdir)` runs a whole experiment and writes into `workdir`:
  config.json            the resolved config (refitted anchors included); --resume reads its model section
  checkpoints/<step>/    orbax CheckpointManager: full train state + grain iterator state + progress JSON
  best/, last/           model checkpoints (checkpoint.save_model: EMA weights + config) that
                         eval/predict/export load; best = highest fitness on the validation split
  results.csv            one row per epoch: mean train losses, validation metrics, fitness, lr
  tensorboard/           the same scalars (tensorboardX), plus training losses every train.log_every steps
  metrics.json           at the end: best epoch, final test-split metrics of the best weights, AutoAnchor
  PR_curve.png, F1_curve.png, P_curve.png, R_curve.png, confusion_matrix.png,
  classification_confusion_matrix.png   the evaluator's plots for the test split
  test_metrics.txt       the evaluator's per-class table for the test split
  labels.jpg, train_batch0-2.jpg, val_batch0_labels.jpg, val_batch0_pred.jpg, results.png
                         pictures of the data and the run (visualize.py); a failure to draw only warns

fitness = 0.1 · mAP50 + 0.9 · mAP50-95 (validation, eval.mode's numbers, EMA weights); early stopping after
train.patience epochs without improvement (0 = never). Validation runs every train.val_every epochs (1 by
default) and after the last; last/ and a train-state checkpoint are written after each validation and,
with train.checkpoint_every_steps = n, every n steps inside an epoch, so a run killed mid-epoch resumes
from its last checkpoint and then continues exactly as it would have without the kill (same batches,
same augmentation, same updates).

Several processes (hosts): call `initialize_distributed()` first; every process runs this same function,
reads its own shard of the training data (grain shard_index = process index), and the global batch is the
concatenation of the shards. Validation and test run on each process over the whole split (small
compared to training); only process 0 writes files.
"""

from __future__ import annotations

import csv
import errno
import logging
import os
import shutil
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from yolo_osam_jax import autoanchor, checkpoint, errors, io_utils, losses, models, runlock, visualize
from yolo_osam_jax import evaluation
from yolo_osam_jax.data import pipeline
from yolo_osam_jax.training import optim
from yolo_osam_jax.training import step as step_lib

log = logging.getLogger(__name__)

CONFIG_FILE = checkpoint.CONFIG_FILE
# train.early_stopping: which validation number picks best/ and stops the run after train.patience
# epochs without improvement. 'fitness' = yolov5's 0.1·mAP50 + 0.9·mAP50-95 (higher is better);
# 'val_loss' = the paper's "errors in the validation dataset" (the detection loss, lower is better).
EARLY_STOPPING = ('fitness', 'val_loss')
CHECKPOINT_DIR = 'checkpoints'
BEST_DIR = 'best'
LAST_DIR = 'last'
RESULTS_CSV = 'results.csv'
METRICS_JSON = 'metrics.json'


class TrainingDiverged(errors.UserError, RuntimeError):
  """Too many consecutive steps with NaN/Inf loss or gradients, or a loss above train.max_loss
  (train.max_bad_steps), or NaN/Inf predictions at validation. The last good checkpoints are kept."""


class TrainingInterrupted(RuntimeError):
  """Raised by `stop_at_step`: the run ends abruptly, as if killed, without a final checkpoint."""


# ---------------------------------------------------------------------------------------------------
# Setup helpers.


def initialize_distributed() -> None:
  """`jax.distributed.initialize()` (coordinator address, process count and id from the environment or
  the cluster: SLURM, Open MPI, Cloud TPU). Must run before anything else touches JAX."""
  jax.distributed.initialize()
  log.info('process %d of %d, %d local / %d global devices', jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())


def fitness(metrics: Mapping[str, float]) -> float:
  """yolov5's fitness: 0.1 · mAP50 + 0.9 · mAP50-95."""
  return 0.1 * float(metrics['map50']) + 0.9 * float(metrics['map50_95'])


def resolve_workdir(config, workdir: str | None = None, resume: bool = False,
                    root: str = 'runs') -> str:
  """`workdir`, else config.workdir, else runs/<config.name>/<n>: the next free n (with resume: the
  latest existing n). On several hosts pass the workdir explicitly."""
  workdir = workdir or config.get('workdir', '')
  if workdir:
    return os.path.abspath(os.path.expanduser(workdir))
  base = os.path.join(root, str(config.name))
  existing = sorted(int(d) for d in os.listdir(base) if d.isdigit()) if os.path.isdir(base) else []
  if resume:
    if not existing:
      raise errors.MissingError(f"--resume: no run of {config.name!r} under {base}/ to resume; pass "
                                "--workdir of the run")
    return os.path.abspath(os.path.join(base, str(existing[-1])))
  return os.path.abspath(os.path.join(base, str(existing[-1] + 1 if existing else 1)))


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run saved in its workdir."""
  return checkpoint.read_config_json(workdir, 'a training run to resume')


def open_sources(config) -> dict[str, Any]:
  """Random-access TFDS sources of the train / validation / test splits named in config.data
  (test may be '' to skip the final evaluation)."""
  data = config.data
  sources = {}
  for role, split in (('train', data.train_split), ('validation', data.val_split),
                      ('test', data.test_split)):
    if split:
      sources[role] = pipeline.open_tfds_source(data.dataset, split, data.data_dir or None,
                                                data.builder_config or None)
  return sources


def source_class_names(source) -> list[str] | None:
  info = getattr(source, 'dataset_info', None)
  if info is None:
    return None
  return list(info.features['objects']['label'].names)


def _train_box_wh(source, img_size: int) -> np.ndarray:
  return autoanchor.collect_box_wh((source[i] for i in range(len(source))), img_size)


def run_autoanchor(config, train_source) -> dict:
  """Checks (and maybe refits) config.model.anchors on the training boxes; sets the chosen anchors in
  config.model.anchors and returns the AutoAnchor report."""
  img_size = int(config.data.img_size)
  wh = _train_box_wh(train_source, img_size)
  anchors, report = autoanchor.check_anchors(wh, config.model, img_size,
                                             thr=float(config.loss.anchor_t), seed=int(config.seed))
  log.info('%s', autoanchor.format_report(report))
  with config.unlocked():
    config.model.anchors = anchors
  return report


def transfer_weights(variables, pretrained) -> tuple[dict, int, int]:
  """Copies every pretrained tensor whose path and shape match (yolov5's intersect_dicts).

  Returns (variables, transferred, total). Raises when nothing matches (wrong checkpoint).
  """
  out = {}
  transferred = total = 0
  for collection in ('params', 'batch_stats'):
    ours = traverse_util.flatten_dict(dict(variables.get(collection, {})))
    theirs = traverse_util.flatten_dict(dict(pretrained.get(collection, {})))
    for key, value in ours.items():
      total += 1
      if key in theirs and tuple(np.shape(theirs[key])) == tuple(value.shape):
        ours[key] = jnp.asarray(theirs[key], value.dtype)
        transferred += 1
    out[collection] = traverse_util.unflatten_dict(ours)
  if transferred == 0:
    raise errors.InputError('train.init_from: no tensor of the checkpoint matches the model (different '
                            'architecture?)')
  return out, transferred, total


def continue_without_mosaic(iterator, train_source, data_config, shard_index: int = 0,
                            shard_count: int = 1):
  """A training iterator without mosaic that goes on exactly where `iterator` stopped.

  `data.aug.close_mosaic` switches mosaic off for the last epochs. The second loader has the same
  sampler (same seed, same order of images and the same per-image random streams), so taking over the
  first one's position keeps the run's image order — and exact resume — as if nothing had changed.
  """
  no_mosaic = data_config.copy_and_resolve_references()
  no_mosaic.aug.mosaic = 0.0
  loader = pipeline.make_detection_loader(train_source, no_mosaic, train=True,
                                          seed=int(data_config.shuffle_seed), shard_index=shard_index,
                                          shard_count=shard_count)
  continued = iter(loader)
  continued.set_state(iterator.get_state())
  return continued


# ---------------------------------------------------------------------------------------------------
# Outputs.


def _write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  if not rows:
    return
  fields = []  # union of the rows' columns in first-seen order (epochs without validation lack val/*)
  for row in rows:
    fields.extend(k for k in row if k not in fields)
  tmp = path + '.tmp'
  try:
    with open(tmp, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=fields, restval='')
      writer.writeheader()
      for row in rows:
        writer.writerow(row)
    os.replace(tmp, path)
  except OSError as e:  # e.g. a full disk: the previous file is still whole
    io_utils.discard(tmp)
    raise errors.output_error(path, e) from e


class _Writer:
  """TensorBoard scalars on process 0 (a no-op elsewhere)."""

  def __init__(self, logdir: str | None):
    self._writer = None
    if logdir is not None:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(logdir)

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    if self._writer is not None:
      for key, value in values.items():
        self._writer.add_scalar(key, float(value), step)

  def close(self):
    if self._writer is not None:
      self._writer.close()


def _progress_bar(total: int, initial: int, desc: str, enabled: bool):
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
              leave=True, unit='batch')


# ---------------------------------------------------------------------------------------------------
# Evaluation.


class Evaluator:
  """Runs `model` (EMA weights, inference mode) over a split and returns the evaluator's results.

  With `with_loss`, the results also hold 'loss': the detection loss of the split in inference mode
  (BatchNorm running statistics), each component averaged over the split's images, and their sum as
  'loss' (yolov5's reporting convention: after the gains, before the batch factor). Padding rows of
  the last batch are left out, so the loss is that of the real images only.
  """

  def __init__(self, model, config, class_names: Sequence[str], with_loss: bool = False):
    self._config = config
    self._class_names = list(class_names)
    self._device = jax.local_devices()[0]

    def predict(variables, images):
      return model.apply(variables, images.astype(jnp.float32) / 255.0, train=False)[0]

    self._predict = jax.jit(predict)
    self._loss = None
    if with_loss:
      img_size, hyp = int(config.data.img_size), losses.hyp_of(config)

      def batch_loss(variables, images, targets):
        _, raw = model.apply(variables, images.astype(jnp.float32) / 255.0, train=False)
        return losses.detection_loss(raw, targets, config.model, img_size, hyp)[1]

      self._loss = jax.jit(batch_loss)

  def predict(self, variables, images) -> np.ndarray:
    """Raw predictions of one batch of uint8 images (val_batch0_pred.jpg)."""
    variables = jax.device_put(step_lib.to_host(variables), self._device)
    return np.asarray(self._predict(variables, jax.device_put(images, self._device)))

  def __call__(self, variables, source) -> dict:
    variables = jax.device_put(step_lib.to_host(variables), self._device)
    batch_size = int(min(self._config.eval.batch_size, len(source)))
    loader = pipeline.make_detection_loader(source, self._config.data, train=False,
                                            batch_size=batch_size, num_workers=0)
    loss_sums: dict[str, float] = {}
    loss_images = 0

    def predict_fn(batch):
      nonlocal loss_images
      if self._loss is not None:
        valid = np.asarray(batch['valid'], bool)
        if valid.any():
          targets = {k: np.asarray(batch[k])[valid] for k in ('boxes', 'classes', 'mask')}
          parts = jax.device_get(self._loss(variables, np.asarray(batch['image'])[valid], targets))
          count = int(valid.sum())
          for key, value in parts.items():
            loss_sums[key] = loss_sums.get(key, 0.0) + float(value) * count
          loss_images += count
      out = np.asarray(self._predict(variables, jax.device_put(batch['image'], self._device)))
      if not np.all(np.isfinite(out)):
        # Checked here, before any best/ or last/ is written from these weights.
        raise TrainingDiverged('the model\'s predictions hold NaN/Inf values (the weights diverged); '
                               'best/ and last/ keep the last good weights. Lower train.lr0 or check '
                               'the data.')
      return out

    results = evaluation.evaluate_batches(predict_fn, loader, self._config.eval, self._class_names)
    if self._loss is not None:
      results['loss'] = {k: v / max(loss_images, 1) for k, v in loss_sums.items()}
      results['loss']['loss'] = sum(results['loss'].values())
    return results


# ---------------------------------------------------------------------------------------------------
# The loop.


def _new_progress(loss_keys: Sequence[str]) -> dict:
  return {'epoch': 0, 'step_in_epoch': 0, 'best_fitness': 0.0, 'best_epoch': -1, 'history': [],
          'sums': {k: 0.0 for k in loss_keys}, 'good_steps': 0, 'train_seconds': 0.0,
          'anchor_report': None, 'stopped_early': False, 'total_bad_steps': 0, 'best_val_loss': None}


def _checkpoint_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1), create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(workdir, CHECKPOINT_DIR), options=options)


def _save_checkpoint(manager, state, iterator, progress) -> None:
  step = int(jax.device_get(state.step))
  if not step_lib.all_finite_host(step_lib.to_host((state.params, state.batch_stats, state.ema_params,
                                                    state.ema_batch_stats))):
    raise TrainingDiverged(f'step {step}: the train state holds NaN/Inf values; refusing to write a '
                           'poisoned checkpoint')
  iterator_state = iterator.get_state()
  if isinstance(iterator_state, bytes):
    iterator_state = iterator_state.decode('utf-8')
  try:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave({'iterator': iterator_state}),
        progress=ocp.args.JsonSave(progress)), force=True)
    manager.wait_until_finished()
  except Exception as e:  # noqa: BLE001 - orbax/tensorstore wrap the OS error in their own types
    if getattr(e, 'errno', None) == errno.ENOSPC or 'No space left on device' in str(e):
      # orbax writes into a temporary folder first: the earlier checkpoints are intact.
      raise errors.OutputError(f'no space left on device while writing {manager.directory}/{step}; '
                               'the earlier checkpoints are intact') from e
    raise


def _restore_checkpoint(manager, state, iterator) -> tuple[Any, dict]:
  step = manager.latest_step()
  if step is None:
    raise errors.MissingError(f"--resume: no checkpoint in {manager.directory}")
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(),
      progress=ocp.args.JsonRestore()))
  restored_state = restored['state']
  for name in ('params', 'batch_stats', 'ema_params', 'ema_batch_stats'):
    # Saves refuse NaN/Inf; a value that changed on disk since is named here instead of training on it.
    checkpoint.check_finite(step_lib.to_host(getattr(restored_state, name)),
                            f'{manager.directory}/{step}/state: {name}')
  iterator.set_state(restored['data']['iterator'].encode('utf-8'))
  log.info('resumed from %s/%d (epoch %d, step %d of the epoch)', manager.directory, step,
           restored['progress']['epoch'], restored['progress']['step_in_epoch'])
  return restored['state'], dict(restored['progress'])


def _model_variables_for_save(state, use_ema: bool):
  return step_lib.to_host(state.variables(ema=use_ema))


def _summary(results: Mapping) -> dict[str, float]:
  """The headline numbers of one evaluation, every detection metric from the one mode `eval.mode`
  names (results['mode']): yolov5 mode gives precision, recall and F1 at its best-F1 confidence; COCO
  has no single operating point, so coco mode gives its mean recall at 100 detections (mAR100) instead.
  Face accuracy and its macro F1 (evaluation/accuracy.py) are the same in both modes."""
  metrics = results['metrics']
  summary = {'mAP50': float(metrics['map50']), 'mAP50-95': float(metrics['map50_95'])}
  if results['mode'] == 'coco':
    summary['mAR100'] = float(metrics['mar_100'])
  else:
    summary.update(precision=float(metrics['precision']), recall=float(metrics['recall']),
                   f1=float(metrics['f1']))
  summary.update(accuracy=float(results['accuracy']['accuracy']), f1_macro=float(results['f1_macro']))
  return summary


def _train_and_evaluate_locked(config: ml_collections.ConfigDict, workdir: str | None = None, *,
                       resume: bool = False, sources: Mapping[str, Sequence] | None = None,
                       class_names: Sequence[str] | None = None, stop_at_step: int | None = None,
                       show_progress: bool = True, mesh=None) -> dict:
  """Trains `config`, validating every epoch, then evaluates the best weights on the test split.

  Args:
    config: the experiment config (configs/*.py); it is resolved in place (anchors, dtype).
    workdir: output folder (see `resolve_workdir`).
    resume: continue the run in `workdir` from its latest checkpoint. The model section (anchors
      included) comes from the run's saved config.json; the rest from `config`.
    sources: {'train', 'validation'[, 'test']} random-access sources of TFDS-style examples; default
      the TFDS splits named in config.data (`open_sources`).
    class_names: default: from the train source's dataset info.
    stop_at_step: end abruptly (TrainingInterrupted) after this global step, without saving anything
      more: the tests' stand-in for a kill.
    show_progress: tqdm bars (process 0 only).
    mesh: device mesh with a 'data' axis (default: all devices).

  Returns the contents of metrics.json.
  """
  workdir = resolve_workdir(config, workdir, resume)
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(workdir, exist_ok=True)
  if bool(config.train.get('bf16', False)):
    with config.unlocked():
      config.model.dtype = 'bfloat16'
  if resume:
    saved = load_run_config(workdir)
    with config.unlocked():
      config.model = saved.model
  mesh = step_lib.make_mesh() if mesh is None else mesh

  sources = dict(sources) if sources is not None else open_sources(config)
  for role in ('train', 'validation'):
    if role not in sources:
      raise errors.InputError(f"training needs a {role!r} split (config.data.{'train' if role == 'train' else 'val'}"
                              "_split)")
  if class_names is None:
    class_names = source_class_names(sources['train'])
  if class_names is None:
    raise ValueError('class_names are needed when the sources carry no TFDS dataset info')
  class_names = list(class_names)
  if len(class_names) != int(config.model.num_classes):
    raise errors.InputError(f"config.model.num_classes = {config.model.num_classes} but the dataset has "
                            f"{len(class_names)} classes ({', '.join(class_names)})")
  # Checkpoints carry the names, so prediction and export never need the dataset (predict.class_names_of).
  with config.unlocked():
    config.data.class_names = class_names
  if is_main and not os.path.exists(os.path.join(workdir, 'labels.jpg')):
    visualize.safely(visualize.save_labels, sources['train'], class_names, workdir)

  # Data: each process reads its own shard of the training split.
  img_size = int(config.data.img_size)
  global_batch = int(config.data.batch_size)
  shard_index, shard_count = jax.process_index(), jax.process_count()
  train_loader = pipeline.make_detection_loader(
      sources['train'], config.data, train=True, seed=int(config.data.shuffle_seed),
      shard_index=shard_index, shard_count=shard_count)
  steps_per_epoch = steps_per_epoch_of(len(sources['train']), global_batch, shard_count)
  if steps_per_epoch < 1:
    raise errors.InputError(f"{len(sources['train'])} training images give no full batch of {global_batch}")
  if global_batch % mesh.devices.size:
    raise errors.InputError(f"data.batch_size {global_batch} is not divisible by the {mesh.devices.size} devices")
  epochs = int(config.train.epochs)

  # Pretrained weights and anchors, then AutoAnchor (fresh runs only: a resumed run keeps its anchors).
  pretrained = None
  anchor_report = None
  if not resume:
    init_from = str(config.train.get('init_from', '') or '')
    if init_from:
      pretrained_config, pretrained = checkpoint.load_model(init_from)
      if config.model.get('anchors') is None and pretrained_config.model.get('anchors') is not None:
        with config.unlocked():
          config.model.anchors = pretrained_config.model.anchors
    if models.is_anchor_free(config.model):
      log.info('AutoAnchor skipped: model.arch=%s has an anchor-free head', models.arch_of(config.model))
    elif bool(config.train.autoanchor):
      anchor_report = run_autoanchor(config, sources['train'])
    if is_main:
      with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
        f.write(config.to_json_best_effort(indent=2))

  model = models.build(config.model)
  rng = jax.random.PRNGKey(int(config.seed))
  init_rng, state_rng = jax.random.split(rng)
  # One compiled init: run eagerly, every initializer call compiles on its own (minutes on a big net).
  init = jax.jit(lambda key, images: model.init(key, images, train=False))
  variables = init(init_rng, jnp.zeros((1, img_size, img_size, 3), jnp.float32))
  variables = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  if pretrained is not None:
    variables, transferred, total = transfer_weights(variables, pretrained)
    log.info('init_from %s: transferred %d/%d tensors', config.train.init_from, transferred, total)

  labels = optim.param_labels(variables['params'], int(config.train.freeze))
  schedule = optim.schedule_from_config(config.train, steps_per_epoch, global_batch)
  tx = optim.build_optimizer(config.train, schedule, labels, global_batch)
  log.info('optimizer %s: groups %s, accumulate %d, warmup %d iterations, weight decay %.3g',
           config.train.optimizer, optim.group_sizes(labels), schedule.accumulate,
           schedule.warmup_iters,
           optim.scaled_weight_decay(float(config.train.weight_decay), global_batch,
                                     schedule.accumulate, int(config.train.nominal_batch)))
  state = step_lib.replicate(step_lib.create_train_state(variables, tx, state_rng), mesh)
  use_ema = bool(config.train.ema)
  train_step = step_lib.jit_train_step(
      step_lib.train_step_fn(
          step_lib.make_detection_loss_fn(model, config.model, img_size, losses.hyp_of(config)), tx,
          ema_decay=float(config.train.get('ema_decay', 0.9999)),
          ema_tau=float(config.train.get('ema_tau', 2000.0)), use_ema=use_ema,
          max_loss=float(config.train.get('max_loss', 0.0) or 0.0)),
      mesh)

  manager = _checkpoint_manager(workdir, int(config.train.get('keep_checkpoints', 2)))
  train_iter = iter(train_loader)
  train_iter_has_mosaic = True
  components = losses.components(config.model)
  loss_keys = components + ('loss',)
  progress = _new_progress(loss_keys)
  if resume:
    state, progress = _restore_checkpoint(manager, state, train_iter)
  else:
    progress['anchor_report'] = anchor_report

  early_stopping = str(config.train.get('early_stopping', 'fitness'))
  if early_stopping not in EARLY_STOPPING:
    raise ValueError(f"train.early_stopping must be one of {', '.join(EARLY_STOPPING)}, got "
                     f"{early_stopping!r}")
  stop_on_loss = early_stopping == 'val_loss'
  evaluator = Evaluator(model, config, class_names, with_loss=stop_on_loss)
  writer = _Writer(os.path.join(workdir, 'tensorboard') if is_main else None)
  max_bad = int(config.train.max_bad_steps)
  every = int(config.train.get('checkpoint_every_steps', 0) or 0)
  log_every = max(int(config.train.get('log_every', 10)), 1)
  patience = int(config.train.patience)
  val_every = max(int(config.train.get('val_every', 1)), 1)

  # data.aug.close_mosaic = k: the last k epochs train without mosaic (the anchor-free family's recipe).
  # A second loader without mosaic takes over the first one's sampler position, so the order of images
  # (and exact resume) is unaffected by the switch.
  close_mosaic = int(config.data.aug.get('close_mosaic', 0) or 0)
  mosaic_off_from = epochs - close_mosaic if close_mosaic > 0 and float(config.data.aug.mosaic) > 0 else None

  try:
    for epoch in range(int(progress['epoch']), epochs):
      if mosaic_off_from is not None and epoch >= mosaic_off_from and train_iter_has_mosaic:
        log.info('close_mosaic: mosaic off for the last %d epochs', close_mosaic)
        train_iter = continue_without_mosaic(train_iter, sources['train'], config.data, shard_index,
                                             shard_count)
        train_iter_has_mosaic = False
      first = int(progress['step_in_epoch'])
      bar = _progress_bar(steps_per_epoch, first, f'epoch {epoch + 1}/{epochs}', show_progress and is_main)
      epoch_start = time.perf_counter()
      for i in range(first, steps_per_epoch):
        t0 = time.perf_counter()
        batch = next(train_iter)
        state, metrics = train_step(state, step_lib.shard_batch(batch, mesh))
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - t0
        progress['train_seconds'] += seconds
        global_step = epoch * steps_per_epoch + i + 1
        if is_main and global_step <= visualize.TRAIN_BATCH_PICTURES:
          visualize.safely(visualize.save_train_batch, batch, class_names, workdir, global_step - 1)
        if not metrics['finite']:
          log.warning('step %d: loss or gradients are NaN/Inf (or the loss exceeds train.max_loss); the '
                      'update was skipped (%d in a row, %d in total)', global_step, metrics['bad_steps'], metrics['total_bad_steps'])
          if int(metrics['bad_steps']) >= max_bad:
            raise TrainingDiverged(
                f'training stopped at epoch {epoch + 1}, step {global_step}: {int(metrics["bad_steps"])} '
                f'consecutive steps with NaN/Inf loss or gradients, or a loss above train.max_loss '
                f'(train.max_bad_steps = {max_bad}); '
                f'nothing was saved from these steps, the last checkpoint in {manager.directory} is '
                'intact. Lower train.lr0, check the data, or disable model.dtype bfloat16.')
        else:
          for key in loss_keys:
            progress['sums'][key] += float(metrics[key])
          progress['good_steps'] += 1
        good = max(progress['good_steps'], 1)
        bar.set_postfix({k: f"{progress['sums'][k] / good:.4f}" for k in components}
                        | {'img/s': f'{global_batch / max(seconds, 1e-9):.0f}'})
        bar.update(1)
        if global_step % log_every == 0:
          writer.scalars({f'train/{k}': metrics[k] for k in loss_keys}
                         | optim.current_hyperparams(schedule, global_step - 1), global_step)
        progress['step_in_epoch'] = i + 1
        if every and global_step % every == 0 and i + 1 < steps_per_epoch:
          _save_checkpoint(manager, state, train_iter, progress)
        if stop_at_step is not None and global_step >= stop_at_step:
          raise TrainingInterrupted(f'stopped after step {global_step} (stop_at_step)')
      bar.close()

      # Epoch end: validate the EMA weights, keep best/last, checkpoint, maybe stop early.
      progress['total_bad_steps'] = int(jax.device_get(state.total_bad_steps))
      ema_variables = _model_variables_for_save(state, use_ema)
      good = max(progress['good_steps'], 1)
      row = {'epoch': epoch + 1}
      row.update({f'train/{k}': progress['sums'][k] / good for k in loss_keys})
      validate = (epoch + 1) % val_every == 0 or epoch + 1 == epochs
      improved = stop = False
      if validate:
        results = evaluator(ema_variables, sources['validation'])
        summary = _summary(results)
        fit = fitness(results['metrics'])
        row.update({f'val/{k}': v for k, v in summary.items()})
        row['fitness'] = fit
        log.info('epoch %d/%d: validation (%s mode) %s, fitness %.4f', epoch + 1, epochs, results['mode'],
                 ', '.join(f'{k} {v:.4f}' for k, v in summary.items()), fit)
        if stop_on_loss:  # the paper: the best epoch has the lowest validation loss
          row.update({f'val/{k}_loss' if k != 'loss' else 'val/loss': v for k, v in results['loss'].items()})
          best_loss = progress.get('best_val_loss')
          improved = best_loss is None or results['loss']['loss'] <= best_loss
          if improved:
            progress['best_val_loss'] = results['loss']['loss']
        else:  # yolov5: the best epoch has the highest fitness
          improved = fit >= progress['best_fitness']
        if improved:
          progress['best_fitness'], progress['best_epoch'] = fit, epoch
        stop = patience > 0 and epoch - progress['best_epoch'] >= patience
      row.update(optim.current_hyperparams(schedule, epoch * steps_per_epoch + steps_per_epoch - 1))
      row['epoch_seconds'] = time.perf_counter() - epoch_start
      progress['history'].append(row)
      if is_main:
        _write_csv(os.path.join(workdir, RESULTS_CSV), progress['history'])
        writer.scalars({k: v for k, v in row.items() if k != 'epoch'}, epoch + 1)
        if validate:
          checkpoint.save_model(os.path.join(workdir, LAST_DIR), ema_variables, config)
        if improved:
          checkpoint.save_model(os.path.join(workdir, BEST_DIR), ema_variables, config)
      progress.update(epoch=epoch + 1, step_in_epoch=0, sums={k: 0.0 for k in loss_keys}, good_steps=0,
                      stopped_early=bool(stop))
      if validate:  # with val_every = n, epoch-end checkpoints come every n epochs (saves are not free)
        _save_checkpoint(manager, state, train_iter, progress)
      if stop:
        log.info('early stopping: no improvement for %d epochs (best epoch %d, fitness %.4f)', patience,
                 progress['best_epoch'] + 1, progress['best_fitness'])
        break
  finally:
    writer.close()
    manager.close()

  return _finish(config, workdir, evaluator, sources, progress, is_main)


# What a run writes into its workdir: a fresh run refuses to start over these unless told to overwrite.
RUN_OUTPUTS = (CONFIG_FILE, CHECKPOINT_DIR, BEST_DIR, LAST_DIR, RESULTS_CSV, METRICS_JSON, 'tensorboard',
               'test_metrics.txt')


def existing_run_outputs(workdir: str) -> list[str]:
  """The names in RUN_OUTPUTS that `workdir` already holds."""
  return [name for name in RUN_OUTPUTS if os.path.exists(os.path.join(workdir, name))]


def check_img_size(config) -> None:
  """data.img_size must be a positive multiple of the model's largest stride (checked before any work)."""
  img_size = config.data.img_size
  module = models.build(config.model)
  stride = max(module.layers[s].stride for s in module.layers[-1].sources)
  if not isinstance(img_size, int) or img_size <= 0 or img_size % stride:
    nearest = max(stride, round(int(img_size or 0) / stride) * stride) if isinstance(img_size, int) else 128
    raise errors.InputError(f'config.data.img_size = {img_size!r}: must be a positive multiple of the '
                            f'largest stride {stride} (e.g. {nearest})')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | None = None, *,
                       resume: bool = False, overwrite: bool = False, **kwargs) -> dict:
  """Trains `config` in `workdir` while holding its lock file; see `_train_and_evaluate_locked` for the
  arguments and what is written.

  A fresh run (resume=False) into a workdir that already holds a run's outputs raises RunExistsError,
  unless `overwrite` is set: then those outputs are deleted first. A second training in the same workdir
  raises LockedError naming the process that holds it.
  """
  workdir = resolve_workdir(config, workdir, resume)
  if jax.process_index() != 0:
    return _train_and_evaluate_locked(config, workdir, resume=resume, **kwargs)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.OutputError(f'{workdir}: --workdir is an existing file, not a folder')
  errors.check_output_dir(workdir, 'workdir')
  with runlock.WorkdirLock(workdir):
    found = existing_run_outputs(workdir)
    if found and not resume:
      if not overwrite:
        raise errors.RunExistsError(
            f'{workdir} holds a run ({", ".join(found)}): use --resume, or a new --workdir '
            '(or --overwrite to delete it)')
      for name in found:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
          shutil.rmtree(path)
        else:
          os.remove(path)
      log.info('--overwrite: deleted the previous run in %s (%s)', workdir, ', '.join(found))
    if not resume:
      check_img_size(config)
    return _train_and_evaluate_locked(config, workdir, resume=resume, **kwargs)


def _finish(config, workdir, evaluator, sources, progress, is_main) -> dict:
  """Test-split evaluation of the best weights; metrics.json and the evaluator's plots."""
  best_dir = os.path.join(workdir, BEST_DIR)
  if not os.path.isdir(best_dir):
    best_dir = os.path.join(workdir, LAST_DIR)
  _, variables = checkpoint.load_model(best_dir)
  if is_main:
    visualize.safely(visualize.plot_results, os.path.join(workdir, RESULTS_CSV),
                     os.path.join(workdir, 'results.png'))
    visualize.safely(visualize.save_val_batch, sources['validation'], config, list(config.data.class_names),
                     lambda images: evaluator.predict(variables, images), workdir)
  out = {
      'workdir': workdir,
      'best_epoch': int(progress['best_epoch']) + 1,
      'best_fitness': float(progress['best_fitness']),
      'early_stopping': str(config.train.get('early_stopping', 'fitness')),
      'best_val_loss': progress.get('best_val_loss'),
      'epochs_completed': int(progress['epoch']),
      'stopped_early': bool(progress['stopped_early']),
      'train_seconds': float(progress['train_seconds']),
      'total_bad_steps': int(progress.get('total_bad_steps', 0)),
      'autoanchor': progress.get('anchor_report'),
      'history': progress['history'],
      'eval_mode': str(config.eval.mode),
  }
  if 'test' in sources:
    results = evaluator(variables, sources['test'])
    out['test'] = evaluation.json_ready(results)
    out['test_summary'] = _summary(results)
    table = evaluation.format_table(results)
    log.info('test split, best weights (epoch %d):\n%s', out['best_epoch'], table)
    if is_main:
      try:
        with open(os.path.join(workdir, 'test_metrics.txt'), 'w') as f:
          f.write(table + '\n')
        evaluation.save_plots(results, workdir)
      except OSError as e:
        raise errors.output_error(e.filename or workdir, e) from e
  if is_main:
    io_utils.write_json_atomic(os.path.join(workdir, METRICS_JSON), out)
  return out


def steps_per_epoch_of(num_train: int, batch_size: int, shard_count: int = 1) -> int:
  """Mini-batches per epoch of a training split (the loader drops the remainder)."""
  return (num_train // shard_count) // (batch_size // shard_count)
