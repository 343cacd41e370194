"""The ablation runner: trains every (row, round) of a comparison table, resumes, and writes the table.

A table (`Table`) is rows (`Row`) of config overrides on a base config; the tables themselves are data
and live in configs/ablations. `run_table(table, settings, make_base_config)` trains what is missing and
writes WORKDIR/table<N>.md and .csv (plus table<N>_ttest.csv for a table that compares pairs of rows).

Results: WORKDIR/table<N>/<row>/round_<r>.json, one per finished (row, round), holding the settings it
ran with (`run_settings`). A rerun with the same settings reads them back instead of training, so an
interrupted run resumes where it stopped; a result stored with other settings is an error, never mixed
in. Tables share rows: a round whose settings equal a finished round of another table in the same
WORKDIR is copied from it (`reused_from` in its file), not trained again.
Smoke runs go further: a round whose config equals a finished smoke round's but for name, seed and
split (the same network and recipe) reuses it too (`smoke_network_twin`), so a smoke run trains each
distinct network once per workdir (find_smoke_network_twin).

Round r trains with seed `settings.seed + r` (config.seed and data.shuffle_seed). Detector rows go
through the detection trainer, classifier rows through classify.py (`RUNNERS`).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import math
import os
import time
from typing import Callable, Mapping

import ml_collections
import numpy as np

from yolo_osam_jax import config_utils
from yolo_osam_jax import errors
from yolo_osam_jax import io_utils

DETECTOR = 'detector'
CLASSIFIER = 'classifier'

# Metric keys as the runners report them: fractions in [0, 1], which tables print in %, except the
# COUNT_METRICS, printed as they are. 'best_epoch' is the paper's "Opt. Epoch" (Table 1): the epoch
# whose weights were kept (train.early_stopping's criterion; classifiers keep their last weights, so
# theirs is the number of epochs trained). A metric a run cannot have (F1 under eval.mode=coco, which
# has no operating point) is NaN and prints as n/a.
# 'map50' of a classifier row is evaluation.classification.classification_map (one-vs-rest AP per
# class over the face crops; a face crop is its own box, so no IoU enters) when classify.py reports
# per-face scores, else NaN (n/a); see run_classifier.
DETECTOR_METRICS = ('f1', 'map50', 'accuracy', 'best_epoch')
CLASSIFIER_METRICS = ('accuracy', 'f1')
# The paper's columns for tables that mix classifier and detector rows (Table 2: F1 / mAP / accuracy).
MIXED_METRICS = ('f1', 'map50', 'accuracy')
METRIC_NAMES = {'f1': 'F1', 'map50': 'mAP50', 'map': 'mAP50-95', 'accuracy': 'Accuracy',
                'best_epoch': 'Opt. Epoch'}
COUNT_METRICS = ('best_epoch',)
# What a row of each kind always reports: a table missing one of these is an error (a runner bug);
# any other missing metric prints as n/a.
REQUIRED_METRICS = {'detector': DETECTOR_METRICS, 'classifier': CLASSIFIER_METRICS}

# Smoke runs: a tiny in-memory synthetic set, a few steps per row; their numbers mean nothing, they
# check that every row runs.
SMOKE_STEPS = 2
SMOKE_IMAGE_SIZE = 64
SMOKE_IMAGES = {'train': 8, 'eval': 4}
# Applied on top of every row of a smoke run: a few steps on tiny images.
SMOKE_OVERRIDES = (
    'data.img_size=32', 'data.batch_size=4', 'data.num_workers=0',
    'train.epochs=1', 'train.warmup_epochs=0.0', 'train.warmup_min_iters=0', 'train.nominal_batch=4',
    'train.autoanchor=False', 'train.log_every=1', 'eval.batch_size=4',
)


class UnknownRowError(errors.InputError, KeyError):
  """A row name (--rows, Table.row) the table does not have: a user error, and a KeyError for lookups."""

  def __str__(self):  # KeyError would quote the message
    return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class Row:
  name: str                      # identifier: results file names, --rows
  label: str                     # what the table prints
  kind: str                      # DETECTOR | CLASSIFIER
  overrides: tuple[str, ...]     # 'a.b=value', applied to the base config in order


@dataclasses.dataclass(frozen=True)
class Table:
  number: int
  title: str
  rows: tuple[Row, ...]
  metrics: tuple[str, ...]
  default_rounds: int = 3
  # Pairs of rows (a, b) to t-test, the first the paper's comparison (Table 3); () = none.
  compare: tuple[tuple[str, str], ...] = ()
  # The split the table reports on: 'train' for the paper's Tables 5 and 6 ("train dataset"); None =
  # the base config's data.test_split. --eval_split (AblationSettings.eval_split) overrides it.
  eval_split: str | None = None
  note: str = ''                            # printed under the table's description

  def row(self, name: str) -> Row:
    for r in self.rows:
      if r.name == name:
        return r
    raise UnknownRowError(f"table {self.number} has no row {name!r}; rows: "
                          f"{', '.join(r.name for r in self.rows)}")


@dataclasses.dataclass(frozen=True)
class AblationSettings:
  """What a run of a table trains on and with; every field but `workdir` and `rows` is part of what a
  stored result must match to be reused (`run_settings`)."""
  workdir: str
  # How results and the table name the config rows start from, e.g. 'configs/base.py' (the caller
  # loads it: run_table's make_base_config).
  base_config: str
  dataset: str = 'synthetic_faces'      # TFDS name; ignored by smoke runs
  builder_config: str = ''              # '' with synthetic_faces means its 'demo' config
  data_dir: str = ''                    # '' keeps the base config's data.data_dir
  eval_split: str | None = None         # None = the table's eval_split, else data.test_split
  rounds: int | None = None             # None = table.default_rounds (smoke: the fewest the table takes)
  epochs: int | None = None             # None = the config's train.epochs
  seed: int = 0                         # round r uses seed + r
  smoke: bool = False
  overrides: tuple[str, ...] = ()       # command-line style, applied to every row after its own
  rows: tuple[str, ...] | None = None   # None = every row of the table


# ---------------------------------------------------------------------------------------------------
# Data.


def smoke_sources(seed: int = 0) -> dict:
  """A tiny synthetic face set as TFDS-style examples: {'train', 'validation' (= eval), 'eval',
  'class_names'}."""
  from yolo_osam_jax.data import synthetic_faces  # pylint: disable=import-outside-toplevel
  out = {'class_names': list(synthetic_faces.CLASS_NAMES)}
  for split, count in SMOKE_IMAGES.items():
    examples = []
    for index in range(count):
      rng = np.random.default_rng([seed, 0 if split == 'train' else 2, index])
      image, boxes, labels = synthetic_faces.render_scene(rng, SMOKE_IMAGE_SIZE, synthetic_faces.DEMO_SCENE)
      x0, y0, x1, y1 = (boxes / SMOKE_IMAGE_SIZE).T
      examples.append({'image': image, 'image_id': f'smoke_{split}_{index:03d}',
                       'objects': {'bbox': np.stack([y0, x0, y1, x1], 1).astype(np.float32),
                                   'label': labels.astype(np.int64)}})
    out[split] = examples
  out['validation'] = out['eval']
  return out


def dataset_sources(config, eval_split: str) -> dict:
  """The prepared TFDS splits of config.data: {'train', 'validation', 'eval', 'class_names'}."""
  from yolo_osam_jax import data as registry  # pylint: disable=import-outside-toplevel
  from yolo_osam_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  d = config.data
  open_split = lambda split: pipeline.open_tfds_source(  # noqa: E731
      d.dataset, split, data_dir=d.data_dir or None, builder_config=d.builder_config or None)
  names = registry.class_names(d.dataset, data_dir=d.data_dir or None, config=d.builder_config or None)
  evaluated = open_split(eval_split)
  # Detector rows validate every epoch; a dataset without a validation split validates on eval_split.
  validation = open_split(d.val_split) if d.val_split else evaluated
  return {'train': open_split(d.train_split), 'validation': validation, 'eval': evaluated,
          'class_names': names}


# ---------------------------------------------------------------------------------------------------
# Runners: (config, sources, workdir, max_steps) -> metrics with the table's keys as fractions.


def run_classifier(config, sources: Mapping, workdir: str, max_steps: int | None) -> dict:
  """Trains and tests a classifier row with classify.train_and_evaluate.

  Adds the table keys classify.py does not report itself: 'map50' = classification_map of the per-face
  class scores when classify.py returns them ('scores' [N, nc] and 'labels' [N], which are not kept in
  the result), else NaN (n/a in the tables); 'best_epoch' = the epochs trained (classify.py keeps the
  last weights) unless it reports one.
  """
  from yolo_osam_jax import classify  # pylint: disable=import-outside-toplevel
  from yolo_osam_jax.evaluation import classification  # pylint: disable=import-outside-toplevel
  del workdir  # classifier runs keep nothing but their metrics
  metrics = dict(classify.train_and_evaluate(config, sources['train'], sources['eval'],
                                             max_steps=max_steps, progress=max_steps is None))
  scores, labels = metrics.pop('scores', None), metrics.pop('labels', None)
  if 'map50' not in metrics:
    metrics['map50'] = (classification.classification_map(scores, labels)
                        if scores is not None and labels is not None else float('nan'))
  if 'best_epoch' not in metrics and 'epochs' in metrics:
    metrics['best_epoch'] = metrics['epochs']
  return metrics


def run_detector(config, sources: Mapping, workdir: str, max_steps: int | None) -> dict:
  """Trains and tests a detector row with the detection trainer (training.train_and_evaluate).

  The trainer validates on sources['validation'] every epoch, keeps the best weights and tests them on
  sources['eval']; its test summary becomes the row's metrics. Smoke runs are kept short by the data
  (SMOKE_IMAGES['train'] images, one epoch), not by max_steps: the trainer has no early-exit that still
  evaluates.
  """
  from yolo_osam_jax import training  # pylint: disable=import-outside-toplevel
  del max_steps
  out = training.train_and_evaluate(
      config, workdir, sources={'train': sources['train'], 'validation': sources['validation'],
                                'test': sources['eval']},
      class_names=sources['class_names'], show_progress=False,
      overwrite=True)  # a round without its result JSON was killed: it is retrained from the start
  summary = out['test_summary']
  nan = float('nan')
  return {'f1': summary.get('f1', nan), 'map50': summary['mAP50'], 'map': summary['mAP50-95'],
          'accuracy': summary['accuracy'], 'f1_macro': summary['f1_macro'],
          'precision': summary.get('precision', nan), 'recall': summary.get('recall', nan),
          'best_epoch': out['best_epoch'], 'epochs_completed': out['epochs_completed'],
          'train_seconds': out['train_seconds']}


RUNNERS: dict[str, Callable] = {DETECTOR: run_detector, CLASSIFIER: run_classifier}


# ---------------------------------------------------------------------------------------------------
# Configs, results and resuming.


def row_config(row: Row, base_config: ml_collections.ConfigDict, settings: AblationSettings, *,
               seed: int, num_classes: int) -> ml_collections.ConfigDict:
  """The config of one (row, round), built in place on `base_config` and returned: dataset, row
  overrides, smoke overrides, the settings' overrides, then epochs and the round's seed."""
  config = base_config
  config.name = f'ablate_{row.name}'
  config.data.dataset = settings.dataset
  config.data.builder_config = settings.builder_config
  if settings.data_dir:
    config.data.data_dir = settings.data_dir
  config.model.num_classes = num_classes
  config_utils.apply_overrides(config, row.overrides)
  if settings.smoke:
    config_utils.apply_overrides(config, SMOKE_OVERRIDES)
  config_utils.apply_overrides(config, settings.overrides)
  if settings.epochs is not None:
    config.train.epochs = int(settings.epochs)
  config.seed = int(seed)
  config.data.shuffle_seed = int(seed)
  return config


def result_path(workdir: str, table: int, row: str, round_index: int) -> str:
  return os.path.join(workdir, f'table{table}', row, f'round_{round_index}.json')


def run_settings(row: Row, settings: AblationSettings, *, dataset: str, eval_split: str,
                 seed: int) -> dict:
  """What a stored result must match to be reused."""
  return {'row_overrides': list(row.overrides), 'dataset': dataset, 'eval_split': eval_split,
          'smoke': bool(settings.smoke), 'overrides': list(settings.overrides),
          'epochs': settings.epochs, 'seed': int(seed), 'base_config': settings.base_config}


def load_result(path: str, settings: dict) -> dict | None:
  """The stored metrics of a finished (row, round), None when not run yet; mismatching settings raise."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      stored = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not valid JSON ({e}); delete it to rerun this round') from None
  for field in ('settings', 'metrics'):
    if field not in stored:
      raise ValueError(f"{path}: no {field!r} field; delete it to rerun this round")
  if stored['settings'] != settings:
    diff = sorted(k for k in set(settings) | set(stored['settings'])
                  if settings.get(k) != stored['settings'].get(k))
    raise ValueError(f'{path}: stored with other settings (differs in {", ".join(diff)}); use another '
                     '--workdir or delete it')
  return stored['metrics']


def find_twin_result(workdir: str, path: str, settings: dict) -> tuple[str, dict] | None:
  """(file, stored result) of another table's finished round with exactly `settings`, else None.

  Tables share rows (Table 5's "after every stage" rows are Table 4's 3-CBL rows, Table 3's rows are
  Table 1's, ...): such a round is trained once per workdir. Unreadable files are left to their own
  table's run to report.
  """
  name = os.path.basename(path)
  for other in sorted(glob.glob(os.path.join(workdir, 'table*', '*', name))):
    if os.path.abspath(other) == os.path.abspath(path):
      continue
    try:
      with open(other) as f:
        stored = json.load(f)
    except (OSError, json.JSONDecodeError):
      continue
    if isinstance(stored, dict) and stored.get('settings') == settings and 'metrics' in stored:
      return other, stored
  return None


# Config fields that differ between rounds or rows without changing the network or the recipe.
_SMOKE_TWIN_IGNORED = (('name',), ('seed',), ('data', 'shuffle_seed'), ('workdir',))


def _network_and_recipe(config_dict: Mapping) -> dict:
  out = json.loads(json.dumps(config_dict, sort_keys=True, default=str))
  for path in _SMOKE_TWIN_IGNORED:
    node = out
    for key in path[:-1]:
      node = node.get(key, {})
    node.pop(path[-1], None)
  return out


def find_smoke_network_twin(workdir: str, path: str, settings: dict,
                            config: ml_collections.ConfigDict) -> tuple[str, dict] | None:
  """Smoke runs only: (file, stored result) of a finished smoke round in `workdir` whose config equals
  `config` but for the name, seed and shuffle seed (the same network, data and recipe), else None.

  A smoke run checks that a row runs; its numbers mean nothing. A row whose network another row
  (or round) already trained in this workdir has nothing left to check, so the smoke run of a table
  trains each distinct network once (Table 3's second round, Table 5's and 6's rows that are other
  tables' networks on another split, ...) and keeps CI's time to the compiles of new networks.
  """
  wanted = _network_and_recipe(config.to_dict())
  for other in sorted(glob.glob(os.path.join(workdir, 'table*', '*', 'round_*.json'))):
    if os.path.abspath(other) == os.path.abspath(path):
      continue
    try:
      with open(other) as f:
        stored = json.load(f)
    except (OSError, json.JSONDecodeError):
      continue
    if (not isinstance(stored, dict) or 'metrics' not in stored or 'row_config' not in stored
        or stored.get('smoke_network_twin') or not stored.get('settings', {}).get('smoke')
        or stored['settings'].get('base_config') != settings['base_config']):
      continue
    # The config as the row built it, before the trainer filled anything in (AutoAnchor's anchors, ...).
    if _network_and_recipe(stored['row_config']) == wanted:
      return other, stored
  return None


def write_result(path: str, value: dict) -> None:
  io_utils.write_json_atomic(path, value, indent=1, sort_keys=True)


def _json_ready(metrics: Mapping) -> dict:
  out = {}
  for key, value in metrics.items():
    if isinstance(value, np.ndarray):
      value = value.tolist()
    elif isinstance(value, np.generic):
      value = value.item()
    out[key] = value
  return out


# ---------------------------------------------------------------------------------------------------
# Statistics and tables.


def mean_std(values) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof 1; NaN for a single value)."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else float('nan')


def summarize(table: Table, results: Mapping[str, list]) -> list[dict]:
  """Per row: {'row', 'label', 'rounds', '<metric>': [values in %, or counts], '<metric>_mean',
  '<metric>_std'}."""
  summary = []
  for row in table.rows:
    if row.name not in results:
      continue
    entry = {'row': row.name, 'label': row.label, 'rounds': len(results[row.name])}
    for metric in table.metrics:
      values = []
      for r, metrics in enumerate(results[row.name]):
        if metric not in metrics:
          if metric in REQUIRED_METRICS.get(row.kind, ()):
            raise KeyError(f"table {table.number} row {row.name!r} round {r}: the runner reported no "
                           f"{metric!r} (got {sorted(metrics)})")
          values.append(float('nan'))   # a metric this kind of row may lack: n/a
          continue
        values.append(float(metrics[metric]) * (1.0 if metric in COUNT_METRICS else 100.0))
      entry[metric] = values
      entry[f'{metric}_mean'], entry[f'{metric}_std'] = mean_std(values)
    summary.append(entry)
  return summary


def t_tests(table: Table, summary: list[dict]) -> list[dict]:
  """Table 3: for each compared pair (a, b) whose rows both ran, and each metric (not the epoch counts)
  that both rows have in every round, evaluation.significance.compare_runs(a, b); each result carries
  'pair': (a, b) and 'metric'. A metric missing (n/a) in a round of either row is not tested."""
  from yolo_osam_jax.evaluation import significance  # pylint: disable=import-outside-toplevel
  by_row = {entry['row']: entry for entry in summary}
  tests = []
  for pair in table.compare:
    if not all(name in by_row for name in pair):
      continue
    a, b = (by_row[name] for name in pair)
    for metric in table.metrics:
      if metric in COUNT_METRICS or not np.all(np.isfinite(a[metric] + b[metric])):
        continue
      tests.append(dict(pair=tuple(pair), metric=metric,
                        **significance.compare_runs(a[metric], b[metric], a['row'], b['row'])))
  return tests


def _cell(mean: float, std: float, spec: str = '.2f') -> str:
  if math.isnan(mean):
    return 'n/a'
  return format(mean, spec) if math.isnan(std) else f'{format(mean, spec)} ± {format(std, spec)}'


def format_markdown(table: Table, summary: list[dict], tests: list[dict] | None,
                    description: str, split: str | None = None) -> str:
  """The table as markdown; `split` (the split it reports on) goes into the title line."""
  names = [METRIC_NAMES.get(m, m) for m in table.metrics]
  title = f'## Table {table.number}: {table.title}' + (f' ({split} split)' if split else '')
  lines = [title, '', description, ''] + ([table.note, ''] if table.note else []) + [
           '| Model | ' + ' | '.join(names) + ' | Rounds |',
           '|---|' + '---:|' * len(names) + '---:|']
  for entry in summary:
    cells = [_cell(entry[f'{m}_mean'], entry[f'{m}_std'], '.1f' if m in COUNT_METRICS else '.2f')
             for m in table.metrics]
    lines.append(f"| {entry['label']} | " + ' | '.join(cells) + f" | {entry['rounds']} |")
  label = {entry['row']: entry['label'] for entry in summary}
  num = lambda value, spec: 'n/a' if math.isnan(value) else format(value, spec)  # noqa: E731
  for index, (a, b) in enumerate(table.compare):
    if a not in label or b not in label:
      continue
    pair_tests = [t for t in tests or () if t['pair'] == (a, b)]
    which = "the paper's comparison" if index == 0 else 'a further comparison, ours'
    lines += ['', f'Two-sided two-sample t-tests, {label[a]} vs {label[b]} ({which}; per-round values '
              'in %):', '']
    if pair_tests:
      lines += [f'| Metric | {label[a]} | {label[b]} | Student t (df) | p | Welch t (df) | p |',
                '|---|---:|---:|---:|---:|---:|---:|']
    for t in pair_tests:
      # Both rows constant over rounds: scipy returns NaN (no variance to test against).
      lines.append(
          f"| {METRIC_NAMES.get(t['metric'], t['metric'])} | "
          f"{_cell(t[a]['mean'], t[a]['std'])} | {_cell(t[b]['mean'], t[b]['std'])} | "
          f"{num(t['student']['t'], '.3f')} ({t['student']['df']:.0f}) | {num(t['student']['p'], '.4g')} | "
          f"{num(t['welch']['t'], '.3f')} ({num(t['welch']['df'], '.1f')}) | {num(t['welch']['p'], '.4g')} |")
    tested = {t['metric'] for t in pair_tests}
    untested = [METRIC_NAMES.get(m, m) for m in table.metrics if m not in COUNT_METRICS and m not in tested]
    if untested:
      lines += ([''] if pair_tests else []) + [
          f"Not tested (n/a in a round of either row): {', '.join(untested)}."]
  return '\n'.join(lines) + '\n'


def write_tables(workdir: str, table: Table, summary: list[dict], tests: list[dict] | None,
                 description: str, split: str | None = None) -> list[str]:
  """WORKDIR/table<N>.md, table<N>.csv and, with t-tests, table<N>_ttest.csv (one line per pair and
  metric; 'pair' = 'a vs b'); returns their paths."""
  os.makedirs(workdir, exist_ok=True)
  md_path = os.path.join(workdir, f'table{table.number}.md')
  with open(md_path, 'w') as f:
    f.write(format_markdown(table, summary, tests, description, split))
  csv_path = os.path.join(workdir, f'table{table.number}.csv')
  with open(csv_path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['row', 'label', 'rounds'] +
                    [f'{m}_{s}' for m in table.metrics for s in ('mean', 'std')])
    for entry in summary:
      stats = []
      for m in table.metrics:
        std = entry[f'{m}_std']
        stats += [repr(entry[f'{m}_mean']), '' if math.isnan(std) else repr(std)]
      writer.writerow([entry['row'], entry['label'], entry['rounds']] + stats)
  paths = [md_path, csv_path]
  if tests:
    test_path = os.path.join(workdir, f'table{table.number}_ttest.csv')
    with open(test_path, 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['pair', 'metric', 'a', 'a_mean', 'a_std', 'b', 'b_mean', 'b_std', 'student_t',
                       'student_df', 'student_p', 'welch_t', 'welch_df', 'welch_p'])
      for t in tests:
        a, b = t['pair']
        writer.writerow([f'{a} vs {b}', t['metric'], a, repr(t[a]['mean']), repr(t[a]['std']), b,
                         repr(t[b]['mean']), repr(t[b]['std']), repr(t['student']['t']),
                         repr(t['student']['df']), repr(t['student']['p']), repr(t['welch']['t']),
                         repr(t['welch']['df']), repr(t['welch']['p'])])
    paths.append(test_path)
  return paths


# ---------------------------------------------------------------------------------------------------
# The run.


def _resolved(table: Table, settings: AblationSettings, probe: ml_collections.ConfigDict) -> AblationSettings:
  """`settings` with the defaults that depend on the table and the base config filled in."""
  rounds, dataset, builder_config = settings.rounds, settings.dataset, settings.builder_config
  selected = {r.name for r in table.rows} if settings.rows is None else {
      table.row(name).name for name in settings.rows}
  if table.compare and not any(set(pair) <= selected for pair in table.compare):
    raise ValueError(f'table {table.number} compares the pairs of rows {list(table.compare)}; --rows '
                     'must include both rows of at least one pair')
  if rounds is None:
    rounds = (2 if table.compare else 1) if settings.smoke else table.default_rounds
  if rounds < 1 or (table.compare and rounds < 2):
    raise ValueError(f'table {table.number} needs --rounds ≥ {2 if table.compare else 1}, got {rounds}')
  if settings.smoke:
    dataset, builder_config = 'smoke', ''
  elif not builder_config and dataset == probe.data.dataset:
    # The base config's builder config (configs/ckplus.py: ck48, ...), when it is for this dataset.
    builder_config = probe.data.builder_config
  elif not builder_config and dataset == 'synthetic_faces':
    builder_config = 'demo'
  eval_split = settings.eval_split or table.eval_split or probe.data.test_split
  return dataclasses.replace(settings, rounds=rounds, dataset=dataset, builder_config=builder_config,
                             eval_split=eval_split)


def run_table(table: Table, settings: AblationSettings,
              make_base_config: Callable[[], ml_collections.ConfigDict], *, sources: Mapping | None = None,
              runners: Mapping | None = None, log: Callable[[str], None] = print) -> dict:
  """Runs (or resumes) every (row, round) of `table` and writes its tables.

  `make_base_config()` returns a fresh copy of the config every row starts from (settings.base_config
  names it). `sources` defaults to the smoke set or the dataset's prepared splits; `runners` (by row
  kind) to RUNNERS.

  Returns {'summary': per-row stats, 'tests': t-tests or None, 'paths': written files, 'ran': the
  (row, round) pairs trained in this call, 'skipped': those reused from WORKDIR}.
  """
  runners = dict(RUNNERS if runners is None else runners)
  probe = make_base_config()
  config_utils.apply_overrides(probe, settings.overrides)
  settings = _resolved(table, settings, probe)
  workdir, number, rounds, seed = settings.workdir, table.number, settings.rounds, settings.seed
  selected = table.rows if settings.rows is None else tuple(table.row(name) for name in settings.rows)

  if sources is None:
    if settings.smoke:
      sources = smoke_sources()
      if settings.eval_split == probe.data.train_split:   # Tables 5 and 6: report on the training set
        sources = dict(sources, eval=sources['train'])
    else:
      probe.data.dataset, probe.data.builder_config = settings.dataset, settings.builder_config
      probe.data.data_dir = settings.data_dir or probe.data.data_dir
      sources = dataset_sources(probe, settings.eval_split)
  dataset_name = (f'{settings.dataset}/{settings.builder_config}' if settings.builder_config
                  else settings.dataset)

  results: dict[str, list] = {}
  ran, skipped = [], []
  for row in selected:
    results[row.name] = []
    for r in range(rounds):
      round_seed = seed + r
      stored_settings = run_settings(row, settings, dataset=dataset_name, eval_split=settings.eval_split,
                                     seed=round_seed)
      path = result_path(workdir, number, row.name, r)
      metrics = load_result(path, stored_settings)
      twin = None if metrics is not None else find_twin_result(workdir, path, stored_settings)
      if twin is not None:
        # The same run (same overrides, data, seed) already finished in another table: copy it over.
        twin_path, stored = twin
        write_result(path, dict(stored, reused_from=os.path.relpath(twin_path, workdir)))
        metrics = stored['metrics']
        log(f'table {number} {row.name} round {r}: same run as {twin_path}, reused')
      config = None
      if metrics is None:
        config = row_config(row, make_base_config(), settings, seed=round_seed,
                            num_classes=len(sources['class_names']))
        if settings.smoke:
          smoke_twin = find_smoke_network_twin(workdir, path, stored_settings, config)
          if smoke_twin is not None:
            twin_path, stored = smoke_twin
            twin = smoke_twin
            write_result(path, {'settings': stored_settings, 'metrics': stored['metrics'],
                                'config': config.to_dict(), 'row_config': config.to_dict(),
                                'smoke_network_twin': True,
                                'reused_from': os.path.relpath(twin_path, workdir)})
            metrics = stored['metrics']
            log(f'table {number} {row.name} round {r}: smoke run, same network and recipe as '
                f'{twin_path}, reused')
      if metrics is not None:
        skipped.append((row.name, r))
        if twin is None:
          log(f'table {number} {row.name} round {r}: done earlier ({path})')
      else:
        row_config_dict = config.to_dict()   # the trainer may fill fields in (anchors, ...)
        start = time.perf_counter()
        run_dir = os.path.join(workdir, f'table{number}', row.name, f'round_{r}')
        metrics = _json_ready(runners[row.kind](config, sources, run_dir,
                                                SMOKE_STEPS if settings.smoke else None))
        seconds = time.perf_counter() - start
        write_result(path, {'settings': stored_settings, 'metrics': metrics, 'seconds': seconds,
                            'config': config.to_dict(), 'row_config': row_config_dict})
        ran.append((row.name, r))
        shown = ', '.join(f'{m} {float(metrics[m]) * (1 if m in COUNT_METRICS else 100):.2f}'
                          for m in table.metrics if m in metrics)
        log(f'table {number} {row.name} round {r}: {shown} ({seconds:.1f} s)')
      results[row.name].append(metrics)

  summary = summarize(table, results)
  tests = t_tests(table, summary) if table.compare else None
  paths = write_tables(workdir, table, summary, tests, describe(settings, dataset_name),
                       split=settings.eval_split)
  return {'summary': summary, 'tests': tests, 'paths': paths, 'ran': ran, 'skipped': skipped}


def describe(settings: AblationSettings, dataset_name: str) -> str:
  """The sentence under a table's title: data, recipe, rounds, seeds and run length."""
  if settings.smoke:
    length = (f'smoke run ({SMOKE_STEPS} classifier steps, one detector epoch of {SMOKE_IMAGES["train"]} '
              'images; each distinct network trained once per workdir, other rows and rounds reuse it)')
  else:
    length = f'{settings.epochs} epochs' if settings.epochs is not None else 'config.train.epochs epochs'
  recipe = settings.base_config
  if settings.overrides:
    recipe += ' with ' + ' '.join(f'`{o}`' for o in settings.overrides)
  seed, rounds = settings.seed, settings.rounds
  return (f'Dataset {dataset_name}, evaluated on {settings.eval_split}; config {recipe}; {rounds} round(s), '
          f'seeds {seed}–{seed + rounds - 1}; {length}. Mean ± sample std (ddof 1) over rounds, in %.')
