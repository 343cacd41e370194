"""Runs one of the paper's comparison tables and writes it as markdown and CSV.

  python scripts/ablate.py --table 5 --dataset synthetic_faces [--rounds 3] [--epochs 30]
  python scripts/ablate.py --table 6 --config configs/demo.py --dataset synthetic_faces/demo --epochs 10
  python scripts/ablate.py --table 3 --dataset rafdb_basic --data_dir ~/tensorflow_datasets --rounds 10
  python scripts/ablate.py --table 2 --smoke          # every row for a few steps on a tiny synthetic set

Rows are defined in configs/ablations (config overrides on configs/base.py). Round r trains with seed
`--seed + r` (config.seed and data.shuffle_seed). Detector rows go through the detection trainer,
classifier rows through yolo_osam_jax/classify.py; both train on the dataset's train split and report on
`--eval_split` (default: config.data.test_split). `--config.a.b=value` overrides apply to every row.

Rows start from --config (default configs/base.py, the paper's recipe; configs/demo.py is the short CPU
recipe the synthetic-set tables in README use).

Results: WORKDIR/table<N>/<row>/round_<r>.json, one per finished (row, round); a rerun with the same
settings skips them, so an interrupted run resumes where it stopped (a result file written with other
settings is an error, never mixed in). Tables share rows (Table 3's are Table 1's, Table 5's "after every
stage" rows are Table 4's 3-CBL rows, ...): a round whose settings equal a finished round of another
table in the same WORKDIR is copied from it (`reused_from` in its file), not trained again.

Tables: WORKDIR/table<N>.md and table<N>.csv: per row the mean ± sample standard deviation (ddof 1) over
rounds of each metric, in %; Table 3 adds Student's and Welch's two-sided t-tests between its two rows
(evaluation/significance.py, scipy.stats.ttest_ind) in the markdown and in table3_ttest.csv.

Metrics: detector rows report the trainer's test summary (F1 = yolov5's box-level P/R F1, mAP50,
mAP50-95, and the face accuracy of evaluation/accuracy.py); classifier rows report accuracy and macro F1
over the face crops (classify.py). --jax_cache (default WORKDIR/jax_cache) keeps compiled programs on
disk, so the rounds of a row, and reruns, skip compiling.

--smoke: a tiny in-memory synthetic set (no dataset needed), 2 training steps per row, one round (two
for Table 3, the fewest a t-test takes), and XLA's CPU optimisation level lowered to cut compile time
(set XLA_FLAGS yourself to override). Its numbers mean nothing; it checks that every row runs.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import sys
import time
from typing import Callable, Mapping

import _bootstrap  # noqa: F401
import numpy as np

from configs import ablations
from configs import base
from yolo_osam_jax import config_utils, errors

BASE_CONFIG = 'configs/base.py'
SMOKE_STEPS = 2
SMOKE_IMAGE_SIZE = 64
SMOKE_IMAGES = {'train': 8, 'eval': 4}
SMOKE_XLA_FLAGS = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'


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
  from yolo_osam_jax import classify  # pylint: disable=import-outside-toplevel
  del workdir  # classifier runs keep nothing but their metrics
  return classify.train_and_evaluate(config, sources['train'], sources['eval'], max_steps=max_steps,
                                     progress=max_steps is None)


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
  return {'f1': summary['f1'], 'map50': summary['mAP50'], 'map': summary['mAP50-95'],
          'accuracy': summary['accuracy'], 'f1_macro': summary['f1_macro'],
          'precision': summary['precision'], 'recall': summary['recall'],
          'best_epoch': out['best_epoch'], 'epochs_completed': out['epochs_completed'],
          'train_seconds': out['train_seconds']}


RUNNERS: dict[str, Callable] = {ablations.DETECTOR: run_detector, ablations.CLASSIFIER: run_classifier}


# ---------------------------------------------------------------------------------------------------
# Configs, results and resuming.


def base_config_of(path: str = ''):
  """The config every row starts from: `get_config()` of `path` ('' = configs/base.py)."""
  return config_utils.load_config(path) if path else base.get_config()


def row_config(row: ablations.Row, *, dataset: str, builder_config: str, data_dir: str, smoke: bool,
               overrides, epochs: int | None, seed: int, num_classes: int, base_config: str = ''):
  """The config of one (row, round): base config, dataset, row overrides, smoke overrides,
  command-line overrides, then epochs and the round's seed. An empty `data_dir` keeps the base
  config's."""
  config = base_config_of(base_config)
  config.name = f'ablate_{row.name}'
  config.data.dataset = dataset
  config.data.builder_config = builder_config
  if data_dir:
    config.data.data_dir = data_dir
  config.model.num_classes = num_classes
  ablations.apply(config, row.overrides)
  if smoke:
    config_utils.apply_overrides(config, ablations.SMOKE_OVERRIDES)
  config_utils.apply_overrides(config, overrides)
  if epochs is not None:
    config.train.epochs = int(epochs)
  config.seed = int(seed)
  config.data.shuffle_seed = int(seed)
  return config


def result_path(workdir: str, table: int, row: str, round_index: int) -> str:
  return os.path.join(workdir, f'table{table}', row, f'round_{round_index}.json')


def run_settings(row: ablations.Row, *, dataset: str, eval_split: str, smoke: bool, overrides,
                 epochs: int | None, seed: int, base_config: str = '') -> dict:
  """What a stored result must match to be reused."""
  return {'row_overrides': list(row.overrides), 'dataset': dataset, 'eval_split': eval_split,
          'smoke': bool(smoke), 'overrides': list(overrides), 'epochs': epochs, 'seed': int(seed),
          'base_config': base_config or BASE_CONFIG}


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


def write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(tmp, path)  # a crash never leaves a half-written result that would be reused


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


def summarize(table: ablations.Table, results: Mapping[str, list]) -> list[dict]:
  """Per row: {'row', 'label', 'rounds', '<metric>': [values in %], '<metric>_mean', '<metric>_std'}."""
  summary = []
  for row in table.rows:
    if row.name not in results:
      continue
    entry = {'row': row.name, 'label': row.label, 'rounds': len(results[row.name])}
    for metric in table.metrics:
      values = []
      for r, metrics in enumerate(results[row.name]):
        if metric not in metrics:
          raise KeyError(f"table {table.number} row {row.name!r} round {r}: the runner reported no "
                         f"{metric!r} (got {sorted(metrics)})")
        values.append(100.0 * float(metrics[metric]))
      entry[metric] = values
      entry[f'{metric}_mean'], entry[f'{metric}_std'] = mean_std(values)
    summary.append(entry)
  return summary


def t_tests(table: ablations.Table, summary: list[dict]) -> list[dict]:
  """Table 3: per metric, evaluation.significance.compare_runs between the two compared rows."""
  from yolo_osam_jax.evaluation import significance  # pylint: disable=import-outside-toplevel
  by_row = {entry['row']: entry for entry in summary}
  a, b = (by_row[name] for name in table.compare)
  return [dict(metric=metric, **significance.compare_runs(a[metric], b[metric], a['row'], b['row']))
          for metric in table.metrics]


def _cell(mean: float, std: float) -> str:
  return f'{mean:.2f}' if math.isnan(std) else f'{mean:.2f} ± {std:.2f}'


def format_markdown(table: ablations.Table, summary: list[dict], tests: list[dict] | None,
                    description: str) -> str:
  names = [ablations.METRIC_NAMES.get(m, m) for m in table.metrics]
  lines = [f'## Table {table.number}: {table.title}', '', description, '',
           '| Model | ' + ' | '.join(names) + ' | Rounds |',
           '|---|' + '---:|' * len(names) + '---:|']
  for entry in summary:
    cells = [_cell(entry[f'{m}_mean'], entry[f'{m}_std']) for m in table.metrics]
    lines.append(f"| {entry['label']} | " + ' | '.join(cells) + f" | {entry['rounds']} |")
  if tests:
    a, b = table.compare
    label = {entry['row']: entry['label'] for entry in summary}
    lines += ['', f'Two-sided two-sample t-tests, {label[a]} vs {label[b]} (per-round values in %):', '',
              f'| Metric | {label[a]} | {label[b]} | Student t (df) | p | Welch t (df) | p |',
              '|---|---:|---:|---:|---:|---:|---:|']
    for t in tests:
      # Both rows constant over rounds: scipy returns NaN (no variance to test against).
      num = lambda value, spec: 'n/a' if math.isnan(value) else format(value, spec)  # noqa: E731
      lines.append(
          f"| {ablations.METRIC_NAMES.get(t['metric'], t['metric'])} | "
          f"{_cell(t[a]['mean'], t[a]['std'])} | {_cell(t[b]['mean'], t[b]['std'])} | "
          f"{num(t['student']['t'], '.3f')} ({t['student']['df']:.0f}) | {num(t['student']['p'], '.4g')} | "
          f"{num(t['welch']['t'], '.3f')} ({num(t['welch']['df'], '.1f')}) | {num(t['welch']['p'], '.4g')} |")
  return '\n'.join(lines) + '\n'


def write_tables(workdir: str, table: ablations.Table, summary: list[dict], tests: list[dict] | None,
                 description: str) -> list[str]:
  os.makedirs(workdir, exist_ok=True)
  md_path = os.path.join(workdir, f'table{table.number}.md')
  with open(md_path, 'w') as f:
    f.write(format_markdown(table, summary, tests, description))
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
    a, b = table.compare
    test_path = os.path.join(workdir, f'table{table.number}_ttest.csv')
    with open(test_path, 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['metric', f'{a}_mean', f'{a}_std', f'{b}_mean', f'{b}_std', 'student_t',
                       'student_df', 'student_p', 'welch_t', 'welch_df', 'welch_p'])
      for t in tests:
        writer.writerow([t['metric'], repr(t[a]['mean']), repr(t[a]['std']), repr(t[b]['mean']),
                         repr(t[b]['std']), repr(t['student']['t']), repr(t['student']['df']),
                         repr(t['student']['p']), repr(t['welch']['t']), repr(t['welch']['df']),
                         repr(t['welch']['p'])])
    paths.append(test_path)
  return paths


# ---------------------------------------------------------------------------------------------------
# The run.


def run_table(number: int, *, workdir: str, dataset: str = 'synthetic_faces', builder_config: str = '',
              data_dir: str = '', eval_split: str | None = None, rounds: int | None = None,
              epochs: int | None = None, seed: int = 0, smoke: bool = False, overrides=(),
              rows=None, sources: Mapping | None = None, runners: Mapping | None = None,
              base_config: str = '', log: Callable[[str], None] = print) -> dict:
  """Runs (or resumes) every (row, round) of table `number` and writes its tables.

  Returns {'summary': per-row stats, 'tests': t-tests or None, 'paths': written files, 'ran': the
  (row, round) pairs trained in this call, 'skipped': those reused from WORKDIR}.
  """
  table = ablations.get_table(number)
  runners = dict(RUNNERS if runners is None else runners)
  if rounds is None:
    rounds = (2 if table.compare else 1) if smoke else table.default_rounds
  if rounds < 1 or (table.compare and rounds < 2):
    raise ValueError(f'table {number} needs --rounds ≥ {2 if table.compare else 1}, got {rounds}')
  selected = table.rows if rows is None else tuple(table.row(name) for name in rows)
  if table.compare and rows is not None and not set(table.compare) <= {r.name for r in selected}:
    raise ValueError(f'table {number} compares rows {table.compare}; --rows must include both')
  if smoke:
    dataset, builder_config = 'smoke', ''
  elif not builder_config and dataset == 'synthetic_faces':
    builder_config = 'demo'
  probe = ablations.apply(base_config_of(base_config), overrides)
  eval_split = eval_split or probe.data.test_split

  if sources is None:
    if smoke:
      sources = smoke_sources()
    else:
      probe.data.dataset, probe.data.builder_config = dataset, builder_config
      probe.data.data_dir = data_dir or probe.data.data_dir
      sources = dataset_sources(probe, eval_split)
  dataset_name = f'{dataset}/{builder_config}' if builder_config else dataset

  results: dict[str, list] = {}
  ran, skipped = [], []
  for row in selected:
    results[row.name] = []
    for r in range(rounds):
      round_seed = seed + r
      settings = run_settings(row, dataset=dataset_name, eval_split=eval_split, smoke=smoke,
                              overrides=overrides, epochs=epochs, seed=round_seed,
                              base_config=base_config)
      path = result_path(workdir, number, row.name, r)
      metrics = load_result(path, settings)
      twin = None if metrics is not None else find_twin_result(workdir, path, settings)
      if twin is not None:
        # The same run (same overrides, data, seed) already finished in another table: copy it over.
        twin_path, stored = twin
        write_json(path, dict(stored, reused_from=os.path.relpath(twin_path, workdir)))
        metrics = stored['metrics']
        log(f'table {number} {row.name} round {r}: same run as {twin_path}, reused')
      if metrics is not None:
        skipped.append((row.name, r))
        if twin is None:
          log(f'table {number} {row.name} round {r}: done earlier ({path})')
      else:
        config = row_config(row, dataset=dataset, builder_config=builder_config, data_dir=data_dir,
                            smoke=smoke, overrides=overrides, epochs=epochs, seed=round_seed,
                            num_classes=len(sources['class_names']), base_config=base_config)
        start = time.perf_counter()
        run_dir = os.path.join(workdir, f'table{number}', row.name, f'round_{r}')
        metrics = _json_ready(runners[row.kind](config, sources, run_dir,
                                                SMOKE_STEPS if smoke else None))
        seconds = time.perf_counter() - start
        write_json(path, {'settings': settings, 'metrics': metrics, 'seconds': seconds,
                          'config': config.to_dict()})
        ran.append((row.name, r))
        shown = ', '.join(f'{m} {100 * float(metrics[m]):.2f}' for m in table.metrics if m in metrics)
        log(f'table {number} {row.name} round {r}: {shown} ({seconds:.1f} s)')
      results[row.name].append(metrics)

  summary = summarize(table, results)
  tests = t_tests(table, summary) if table.compare else None
  if smoke:
    length = f'smoke run ({SMOKE_STEPS} classifier steps, one detector epoch of {SMOKE_IMAGES["train"]} images)'
  else:
    length = f'{epochs} epochs' if epochs is not None else 'config.train.epochs epochs'
  recipe = base_config or BASE_CONFIG
  if overrides:
    recipe += ' with ' + ' '.join(f'`{o}`' for o in overrides)
  description = (f'Dataset {dataset_name}, evaluated on {eval_split}; config {recipe}; {rounds} round(s), '
                 f'seeds {seed}–{seed + rounds - 1}; {length}. Mean ± sample std (ddof 1) over rounds, '
                 'in %.')
  paths = write_tables(workdir, table, summary, tests, description)
  return {'summary': summary, 'tests': tests, 'paths': paths, 'ran': ran, 'skipped': skipped}


@errors.script_main
def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = config_utils.split_config_args(argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--table', type=int, required=True, choices=sorted(ablations.TABLES))
  parser.add_argument('--config', default='',
                      help='config file every row starts from (default configs/base.py, the paper\'s '
                      'recipe); e.g. configs/demo.py for short CPU runs on the synthetic set')
  parser.add_argument('--dataset', default=None,
                      help='TFDS dataset name, optionally NAME/CONFIG (required unless --smoke)')
  parser.add_argument('--data_dir', default='',
                      help="TFDS data dir (default: the config's data.data_dir, else TFDS's default)")
  parser.add_argument('--eval_split', default=None, help='split to report on (default: config.data.test_split)')
  parser.add_argument('--rounds', type=int, default=None,
                      help='rounds per row (default: 10 for Table 3, else 3; smoke: 2 / 1)')
  parser.add_argument('--epochs', type=int, default=None, help='epochs per run (default: config.train.epochs)')
  parser.add_argument('--seed', type=int, default=0, help='seed of round 0; round r uses seed + r')
  parser.add_argument('--rows', default=None, help='comma-separated row names (default: every row)')
  parser.add_argument('--smoke', action='store_true', help='a few steps per row on a tiny synthetic set')
  parser.add_argument('--workdir', default=None,
                      help='default: runs/ablate/<dataset> (smoke: runs/ablate/smoke)')
  parser.add_argument('--jax_cache', default=None,
                      help="persistent XLA compilation cache (default WORKDIR/jax_cache; '' = off): rounds "
                      'of a row compile the same programs, so only the first round pays for compiling')
  args = parser.parse_args(rest)
  if not args.smoke and not args.dataset:
    parser.error('--dataset is required (or --smoke)')
  if args.smoke and 'XLA_FLAGS' not in os.environ:
    os.environ['XLA_FLAGS'] = SMOKE_XLA_FLAGS  # read when JAX starts its backend, i.e. later
  dataset, _, builder_config = (args.dataset or 'smoke').partition('/')
  workdir = args.workdir or os.path.join('runs', 'ablate', 'smoke' if args.smoke else
                                         (args.dataset or '').replace('/', '_'))
  cache = os.path.join(workdir, 'jax_cache') if args.jax_cache is None else args.jax_cache
  if cache:
    import jax  # pylint: disable=import-outside-toplevel
    jax.config.update('jax_compilation_cache_dir', os.path.abspath(cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  out = run_table(args.table, workdir=workdir, dataset=dataset, builder_config=builder_config,
                  data_dir=args.data_dir, eval_split=args.eval_split, rounds=args.rounds,
                  epochs=args.epochs, seed=args.seed, smoke=args.smoke, overrides=overrides,
                  rows=args.rows.split(',') if args.rows else None, base_config=args.config)
  with open(out['paths'][0]) as f:
    print(f.read())
  print('wrote ' + ', '.join(out['paths']))
  return out


if __name__ == '__main__':
  sys.exit(main())
