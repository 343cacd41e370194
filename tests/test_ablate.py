"""yolo_osam_jax/ablation.py, scripts/ablate.py and configs/ablations: rows, resuming, table statistics,
the smoke run."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from conftest import ROOT
from configs import ablations
from configs import base
from yolo_osam_jax import ablation
from yolo_osam_jax import config_utils
from yolo_osam_jax import models
from yolo_osam_jax.models import classifiers


# models/anchor_free.py (Table 1's YOLOv8s / YOLO11s rows) comes from another branch.
ANCHOR_FREE_PRESENT = importlib.util.find_spec('yolo_osam_jax.models.anchor_free') is not None


def settings_of(workdir='', **kw):
  """Settings of a run from configs/base.py (what scripts/ablate.py runs without --config)."""
  return ablation.AblationSettings(workdir=str(workdir), base_config='configs/base.py', **kw)


def config_of(table, row, smoke=False):
  return ablation.row_config(table.row(row), base.get_config(),
                             settings_of(dataset='synthetic_faces', builder_config='demo', smoke=smoke),
                             seed=0, num_classes=7)


@pytest.mark.parametrize('number', sorted(ablations.TABLES))
def test_every_row_builds_its_model(number):
  table = ablations.get_table(number)
  assert len({r.name for r in table.rows}) == len(table.rows)
  for row in table.rows:
    config = config_of(table, row.name, smoke=True)
    if row.kind == ablations.CLASSIFIER:
      assert config.model.arch in classifiers.CLASSIFIER_ARCHS
      classifiers.build_classifier(config.model)
    else:
      assert config.model.arch in models.DETECTORS
      if models.is_anchor_free(config.model) and not ANCHOR_FREE_PRESENT:
        continue   # models/anchor_free.py is another branch's; its rows build once it is merged
      models.build(config.model)


def test_rows_say_what_the_paper_compares():
  t1 = ablations.get_table(1)
  yolov5s = config_of(t1, 'yolov5s').model
  assert (yolov5s.fusion, yolov5s.attention.kind) == ('none', 'none')
  for name, arch in (('yolov8s', 'yolov8'), ('yolo11s', 'yolo11')):
    config = config_of(t1, name)
    assert (config.model.arch, config.model.size, config.model.activation) == (arch, 's', 'silu')
    assert (config.train.lr0, config.train.warmup_bias_lr, config.data.aug.close_mosaic) == (0.01, 0.0, 10)
    assert models.is_anchor_free(config.model)
  published = config_of(t1, 'yolo_osam_published').model
  assert (published.fusion, published.attention.kind, published.attention.gate) == (
      'reference', 'osam', 'reference')
  t2 = ablations.get_table(2)
  kinds = ['none', 'sam', 'osam', 'cbam_osam', 'cbam_sam']
  # The paper's Table 2: ten classifier rows, then ten detector rows (fusion none = "YOLOv5 without the
  # added layer", reference = "Improve YOLOv5"), attention on the backbone; then our two gate rows.
  def variants(rows):
    out = []
    for r in rows:
      model = config_of(t2, r.name).model
      out.append((model.arch, model.fusion if r.kind == ablations.DETECTOR else '-', model.attention.kind,
                  model.attention.where, model.attention.gate))
    return out
  assert variants(t2.rows[:20]) == (
      [(arch, '-', kind, 'embedding', 'softmax') for arch in ('cspdarknet_cls', 'alexnet') for kind in kinds]
      + [('yolo_osam', fusion, kind, 'none' if kind == 'none' else 'backbone', 'softmax')
         for fusion in ('none', 'reference') for kind in kinds])
  assert variants(t2.rows[20:]) == [('yolo_osam', 'reference', 'osam', 'backbone', gate)
                                    for gate in ('sigmoid', 'reference')]
  assert all('(ours: ' in r.label for r in t2.rows[20:])
  assert [r.kind for r in t2.rows] == [ablations.CLASSIFIER] * 10 + [ablations.DETECTOR] * 12
  assert t2.metrics == ('f1', 'map50', 'accuracy')
  # Table 2's detector rows without attention and with OSAM are Table 1's runs (same overrides).
  t1_overrides = {r.overrides for r in t1.rows}
  for name in ('yolov5_none', 'yolov5_cbam_sam', 'improved_none', 'improved_osam',
               'improved_osam_reference'):
    assert t2.row(name).overrides in t1_overrides, name
  t4 = ablations.get_table(4)
  assert [(config_of(t4, r.name).model.arch, config_of(t4, r.name).model.attention.cbl_repeats)
          for r in t4.rows] == [(arch, n) for arch in ('cspdarknet_cls', 'alexnet', 'yolo_osam')
                                for n in range(5)]
  for r in t4.rows[10:]:   # the YOLOv5 group: YOLO-OSAM with 0–4 CBL
    model = config_of(t4, r.name).model
    assert (r.kind, model.fusion, model.attention.kind, model.attention.where, model.attention.gate) == (
        ablations.DETECTOR, 'reference', 'osam', 'backbone', 'softmax')
  assert t4.row('yolo_osam_cbl3').overrides == t1.row('yolo_osam').overrides
  t5 = ablations.get_table(5)
  assert sorted(config_of(t5, r.name).model.attention.where for r in t5.rows) == [
      'embedding', 'embedding', 'last', 'last']
  t6 = ablations.get_table(6)
  assert [(config_of(t6, r.name).model.attention.where, config_of(t6, r.name).model.attention.gate)
          for r in t6.rows] == [('none', 'softmax'), ('backbone', 'softmax'), ('neck', 'softmax'),
                                ('backbone', 'sigmoid'), ('backbone', 'reference'), ('neck', 'sigmoid'),
                                ('neck', 'reference')]
  assert all('(ours: ' in r.label for r in t6.rows[3:])
  # The paper measured Tables 5 and 6 on the train split; the others on the test split.
  assert [ablations.get_table(n).eval_split for n in range(1, 7)] == [None] * 4 + ['train'] * 2
  # Table 3: the paper's pair (the CSPDarknet-53 baseline classifier vs YOLO-OSAM) first, then ours.
  t3 = ablations.get_table(3)
  assert t3.compare == (('cspdarknet_cls_none', 'yolo_osam'), ('yolov5s', 'yolo_osam'))
  baseline = config_of(t3, 'cspdarknet_cls_none').model
  assert t3.row('cspdarknet_cls_none').kind == ablations.CLASSIFIER
  assert (baseline.arch, baseline.attention.kind) == ('cspdarknet_cls', 'none')
  assert t3.row('cspdarknet_cls_none').overrides == t2.row('cspdarknet_cls_none').overrides
  assert t3.row('yolo_osam').overrides == t1.row('yolo_osam').overrides
  assert t3.default_rounds == 10
  # Command-line style overrides and epochs/seed land in the row's config.
  config = ablation.row_config(t5.row('alexnet_osam_last'), base.get_config(),
                               settings_of(dataset='x', overrides=('--config.train.lr0=0.02',), epochs=7),
                               seed=3, num_classes=4)
  assert (config.train.lr0, config.train.epochs, config.seed, config.data.shuffle_seed) == (0.02, 7, 3, 3)
  assert config.model.num_classes == 4
  # Another base config (--config): its recipe and data_dir stay unless the command line overrides them.
  demo = ablation.row_config(t5.row('alexnet_osam_last'),
                             config_utils.load_config(os.path.join(ROOT, 'configs', 'demo.py')),
                             settings_of(dataset='synthetic_faces', builder_config='demo'), seed=0,
                             num_classes=7)
  assert (demo.model.width, demo.train.optimizer, demo.data.data_dir) == (0.25, 'adam', 'runs/demo/data')
  assert (demo.model.arch, demo.model.attention.where) == ('alexnet', 'last')
  assert config.data.data_dir == '' and models.scale_of(config.model)[:2] == (0.5, 0.33)


def fake_metrics(row, seed):
  """Deterministic, row- and seed-dependent metrics (fractions)."""
  rng = np.random.default_rng([sum(map(ord, row)), seed])
  return {'f1': float(rng.uniform(0.4, 0.9)), 'map50': float(rng.uniform(0.4, 0.9)),
          'accuracy': float(rng.uniform(0.4, 0.9)), 'best_epoch': int(rng.integers(1, 50))}


class CountingRunner:

  def __init__(self):
    self.calls = []

  def __call__(self, config, sources, workdir, max_steps):
    self.calls.append((config.name, config.seed))
    return fake_metrics(config.name.replace('ablate_', ''), config.seed)


FAKE_SOURCES = {'train': [], 'validation': [], 'eval': [], 'class_names': ['a', 'b', 'c']}


def run_fake(number, workdir, rounds, runner, **kw):
  return ablation.run_table(ablations.get_table(number), settings_of(workdir, rounds=rounds, **kw),
                            base.get_config, sources=FAKE_SOURCES,
                            runners={ablations.DETECTOR: runner, ablations.CLASSIFIER: runner},
                            log=lambda _: None)


def read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_table3_statistics_and_t_tests_per_pair_recomputed(tmp_path):
  runner = CountingRunner()
  out = run_fake(3, tmp_path, 4, runner, seed=10)
  names = ('cspdarknet_cls_none', 'yolo_osam', 'yolov5s')
  assert sorted(runner.calls) == sorted((f'ablate_{r}', s) for r in names for s in range(10, 14))
  rows = read_csv(tmp_path / 'table3.csv')
  assert [r['row'] for r in rows] == list(names)
  values = {r: {m: np.array([100 * fake_metrics(r, s)[m] for s in range(10, 14)])
                for m in ('f1', 'map50', 'accuracy')} for r in names}
  for r in rows:
    assert int(r['rounds']) == 4
    for m in ('f1', 'map50', 'accuracy'):
      assert float(r[f'{m}_mean']) == pytest.approx(values[r['row']][m].mean(), rel=1e-12)
      assert float(r[f'{m}_std']) == pytest.approx(values[r['row']][m].std(ddof=1), rel=1e-12)
  tests = read_csv(tmp_path / 'table3_ttest.csv')
  # The paper's pair first, then ours; per pair every metric but the epoch count.
  assert [(t['pair'], t['metric']) for t in tests] == [
      (pair, m) for pair in ('cspdarknet_cls_none vs yolo_osam', 'yolov5s vs yolo_osam')
      for m in ('f1', 'map50', 'accuracy')]
  for t in tests:
    a, b = values[t['a']][t['metric']], values[t['b']][t['metric']]
    assert f"{t['a']} vs {t['b']}" == t['pair']
    assert float(t['a_mean']) == pytest.approx(a.mean()) and float(t['b_std']) == pytest.approx(b.std(ddof=1))
    student, welch = stats.ttest_ind(a, b), stats.ttest_ind(a, b, equal_var=False)
    assert float(t['student_t']) == pytest.approx(student.statistic, rel=1e-10)
    assert float(t['student_p']) == pytest.approx(student.pvalue, rel=1e-10)
    assert float(t['student_df']) == 6
    assert float(t['welch_t']) == pytest.approx(welch.statistic, rel=1e-10)
    assert float(t['welch_p']) == pytest.approx(welch.pvalue, rel=1e-10)
  md = (tmp_path / 'table3.md').read_text()
  table = ablations.get_table(3)
  label = table.row('yolo_osam').label
  f1 = values['yolo_osam']['f1']
  assert f'| {label} | {f1.mean():.2f} ± {f1.std(ddof=1):.2f} |' in md
  first = md.index(f"t-tests, {table.row('cspdarknet_cls_none').label} vs {label} (the paper's comparison")
  second = md.index(f"t-tests, {table.row('yolov5s').label} vs {label} (a further comparison, ours")
  assert first < second and md.count('Welch t') == 2
  # The paper's "Opt. Epoch" column: the kept epoch, printed as a count (not in %), no t-test.
  epochs = np.array([fake_metrics('yolo_osam', s)['best_epoch'] for s in range(10, 14)], float)
  assert f'| {epochs.mean():.1f} ± {epochs.std(ddof=1):.1f} | 4 |' in md
  assert '| Model | F1 | mAP50 | Accuracy | Opt. Epoch | Rounds |' in md
  assert md.startswith('## Table 3: ') and '(test split)' in md.splitlines()[0]
  assert out['tests'][0]['pair'] == ('cspdarknet_cls_none', 'yolo_osam')
  assert out['tests'][0]['student']['t'] == pytest.approx(stats.ttest_ind(
      values['cspdarknet_cls_none']['f1'], values['yolo_osam']['f1']).statistic)
  # Only one pair selected: only its t-tests; no whole pair selected: refused.
  run_fake(3, tmp_path / 'one', 2, CountingRunner(), rows=('yolov5s', 'yolo_osam'))
  assert {t['pair'] for t in read_csv(tmp_path / 'one' / 'table3_ttest.csv')} == {'yolov5s vs yolo_osam'}
  with pytest.raises(ValueError, match='must include both rows of at least one pair'):
    run_fake(3, tmp_path / 'none', 2, CountingRunner(), rows=('yolov5s', 'cspdarknet_cls_none'))


def test_classifier_map_missing_is_n_a_and_not_t_tested(tmp_path):
  """A classifier without per-face scores has no mAP: n/a in the table, its pair tested without it.
  A metric a row kind always reports still raises when missing (test_missing_metric_is_named)."""
  def runner(config, sources, workdir, max_steps):
    metrics = fake_metrics(config.name.replace('ablate_', ''), config.seed)
    if config.model.arch == 'cspdarknet_cls':
      del metrics['map50'], metrics['best_epoch']
    return metrics
  out = run_fake(3, tmp_path, 3, runner)
  line = next(l for l in (tmp_path / 'table3.md').read_text().splitlines()
              if l.startswith('| ' + ablations.get_table(3).row('cspdarknet_cls_none').label + ' |'))
  assert line.count('| n/a |') == 2   # mAP50 and Opt. Epoch
  assert [(t['pair'], t['metric']) for t in out['tests']] == [
      (('cspdarknet_cls_none', 'yolo_osam'), 'f1'), (('cspdarknet_cls_none', 'yolo_osam'), 'accuracy'),
      (('yolov5s', 'yolo_osam'), 'f1'), (('yolov5s', 'yolo_osam'), 'map50'),
      (('yolov5s', 'yolo_osam'), 'accuracy')]
  assert 'Not tested (n/a in a round of either row): mAP50.' in (tmp_path / 'table3.md').read_text()
  rows = {r['row']: r for r in read_csv(tmp_path / 'table3.csv')}
  assert rows['cspdarknet_cls_none']['map50_mean'] == 'nan' and rows['yolov5s']['map50_mean'] != 'nan'
  # Table 2 mixes both kinds: classifier rows n/a for mAP50, detector rows have it.
  run_fake(2, tmp_path, 1, runner)
  md = (tmp_path / 'table2.md').read_text()
  assert '| Model | F1 | mAP50 | Accuracy | Rounds |' in md and 'one-vs-rest average precision' in md
  assert md.count('| n/a |') == 5   # the five CSPDarknet53 rows

  def detector_without_map(config, sources, workdir, max_steps):
    metrics = fake_metrics(config.name, config.seed)
    del metrics['map50']
    return metrics
  with pytest.raises(KeyError, match="the runner reported no 'map50'"):
    run_fake(6, tmp_path / 'det', 1, detector_without_map)


def test_tables_5_and_6_report_on_the_train_split(tmp_path):
  seen = []

  def runner(config, sources, workdir, max_steps):
    seen.append(sources['eval'])
    return fake_metrics(config.name, config.seed)
  sources = dict(FAKE_SOURCES, train=['train'], eval=['test'])
  for number in (5, 6, 1):
    ablation.run_table(ablations.get_table(number), settings_of(tmp_path, rounds=1), base.get_config,
                       sources=sources, runners={ablations.DETECTOR: runner, ablations.CLASSIFIER: runner},
                       log=lambda _: None)
    first = (tmp_path / f'table{number}.md').read_text().splitlines()[0]
    split = 'train' if number in (5, 6) else 'test'
    assert first.endswith(f'({split} split)'), first
    assert f'evaluated on {split};' in (tmp_path / f'table{number}.md').read_text()
    row = ablations.get_table(number).rows[0].name
    assert stored_round(tmp_path, number, row, 0)['settings']['eval_split'] == split
  # --eval_split overrides the table's split.
  out = run_fake(6, tmp_path / 'test', 1, CountingRunner(), eval_split='test')
  assert (tmp_path / 'test' / 'table6.md').read_text().splitlines()[0].endswith('(test split)')
  assert len(out['ran']) == 7
  # Smoke runs of Tables 5 and 6 test on the smoke training images.
  smoke = []
  ablation.run_table(ablations.get_table(5), settings_of(tmp_path / 'smoke', smoke=True, rows=(
      'alexnet_osam_last',)), base.get_config, log=lambda _: None,
      runners={ablations.CLASSIFIER: lambda c, src, w, m: smoke.append(src) or fake_metrics('x', 0)})
  assert smoke[0]['eval'] is smoke[0]['train'] and len(smoke[0]['train']) == ablation.SMOKE_IMAGES['train']


def test_classifier_runner_adds_map_and_best_epoch(monkeypatch):
  from yolo_osam_jax import classify
  from yolo_osam_jax.evaluation import classification
  scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
  labels = np.array([0, 1, 1])
  reported = {'accuracy': 0.5, 'f1': 0.4, 'epochs': 3.0}
  monkeypatch.setattr(classify, 'train_and_evaluate', lambda *a, **k: dict(reported))
  metrics = ablation.run_classifier(None, {'train': [], 'eval': []}, '', None)
  assert np.isnan(metrics['map50']) and metrics['best_epoch'] == 3.0
  reported.update(scores=scores, labels=labels)
  metrics = ablation.run_classifier(None, {'train': [], 'eval': []}, '', None)
  assert metrics['map50'] == classification.classification_map(scores, labels)
  assert 'scores' not in metrics and 'labels' not in metrics   # not stored in the round's file
  assert (metrics['accuracy'], metrics['f1']) == (0.5, 0.4)


def test_resume_skips_finished_rounds_and_refuses_other_settings(tmp_path):
  first = CountingRunner()
  run_fake(5, tmp_path, 2, first)
  assert len(first.calls) == 4 * 2
  again = CountingRunner()
  out = run_fake(5, tmp_path, 2, again)
  assert again.calls == [] and len(out['skipped']) == 8
  # One lost result: only that (row, round) runs again; a third round runs only the new rounds.
  os.remove(ablation.result_path(str(tmp_path), 5, 'alexnet_osam_last', 1))
  partial = CountingRunner()
  run_fake(5, tmp_path, 3, partial)
  assert sorted(partial.calls) == sorted([('ablate_alexnet_osam_last', 1)] +
                                         [(f'ablate_{r.name}', 2) for r in ablations.get_table(5).rows])
  rows = read_csv(tmp_path / 'table5.csv')
  assert len(rows) == 4 and all(int(r['rounds']) == 3 for r in rows)
  # Different settings for the same workdir: refused, naming the file and what differs.
  with pytest.raises(ValueError, match=r'round_0\.json: stored with other settings \(differs in epochs\)'):
    run_fake(5, tmp_path, 1, CountingRunner(), epochs=5)


def test_one_round_prints_mean_only_and_table3_needs_two(tmp_path):
  run_fake(6, tmp_path, 1, CountingRunner())
  rows = read_csv(tmp_path / 'table6.csv')
  assert len(rows) == 7 and all(r['f1_std'] == '' for r in rows)
  table_lines = [l for l in (tmp_path / 'table6.md').read_text().splitlines() if l.startswith('| ')]
  assert len(table_lines) == 8 and not any(' ± ' in l for l in table_lines)
  with pytest.raises(ValueError, match='needs --rounds ≥ 2'):
    run_fake(3, tmp_path, 1, CountingRunner())


def test_missing_metric_is_named(tmp_path):
  def runner(config, sources, workdir, max_steps):
    return {'accuracy': 0.5}
  with pytest.raises(KeyError, match="'cspdarknet_cls_osam_embedding' round 0: the runner reported no 'f1'"):
    run_fake(5, tmp_path, 1, runner)


def test_detector_runner_maps_the_trainer_summary(monkeypatch):
  from yolo_osam_jax import training
  seen = {}

  def fake_train(config, workdir, *, sources, class_names, show_progress, overwrite):
    seen.update(workdir=workdir, roles=sorted(sources), class_names=class_names, overwrite=overwrite)
    return {'test_summary': {'f1': 0.7, 'mAP50': 0.6, 'mAP50-95': 0.3, 'accuracy': 0.8, 'f1_macro': 0.75,
                             'precision': 0.65, 'recall': 0.72},
            'best_epoch': 3, 'epochs_completed': 4, 'train_seconds': 1.5}

  monkeypatch.setattr(training, 'train_and_evaluate', fake_train)
  sources = {'train': [1], 'validation': [2], 'eval': [3], 'class_names': ['a']}
  metrics = ablation.run_detector(None, sources, '/tmp/x', None)
  # overwrite: a round without its result file was killed, and is retrained from the start.
  assert seen == {'workdir': '/tmp/x', 'roles': ['test', 'train', 'validation'], 'class_names': ['a'],
                  'overwrite': True}
  assert (metrics['f1'], metrics['map50'], metrics['map'], metrics['accuracy']) == (0.7, 0.6, 0.3, 0.8)


def test_shared_rows_are_trained_once_per_workdir(tmp_path):
  run_fake(4, tmp_path, 2, CountingRunner())
  # Table 5 reports on the train split, Table 4 on the test split: nothing is shared by default.
  assert len(run_fake(5, tmp_path / 'train', 2, CountingRunner())['ran']) == 8
  then = CountingRunner()
  out = run_fake(5, tmp_path, 2, then, eval_split='test')
  # On the same split, Table 5's "after every stage" rows are Table 4's 3-CBL rows: only the "last
  # stage" rows train.
  assert sorted(then.calls) == sorted((f'ablate_{arch}_osam_last', s)
                                      for arch in ablations.ARCH_LABELS for s in (0, 1))
  assert len(out['skipped']) == 4
  for arch in ablations.ARCH_LABELS:
    for r in range(2):
      with open(ablation.result_path(str(tmp_path), 5, f'{arch}_osam_embedding', r)) as f:
        stored = json.load(f)
      assert stored['reused_from'] == os.path.join('table4', f'{arch}_osam_cbl3', f'round_{r}.json')
      assert stored['metrics'] == fake_metrics(f'{arch}_osam_cbl3', r)
  # A run with other settings (here: epochs) shares nothing with them.
  other = CountingRunner()
  run_fake(4, tmp_path / 'other', 1, CountingRunner(), epochs=5)
  run_fake(5, tmp_path / 'other', 1, other, eval_split='test')
  assert len(other.calls) == 4
  # Table 3's rows are Table 2's and Table 1's runs.
  run_fake(1, tmp_path / 'mixed', 2, CountingRunner())
  run_fake(2, tmp_path / 'mixed', 2, CountingRunner())
  third = CountingRunner()
  out = run_fake(3, tmp_path / 'mixed', 2, third)
  assert third.calls == [] and len(out['skipped']) == 6


def test_smoke_runs_train_each_network_once(tmp_path):
  """--smoke: a round whose config differs from a finished smoke round of the workdir only in name,
  seed and split reuses it (the network and recipe are what a smoke run checks); real runs never do."""
  smoke = ablation.smoke_sources()
  def run(number, workdir, runner, **kw):
    return ablation.run_table(ablations.get_table(number), settings_of(workdir, **kw), base.get_config,
                              sources=smoke, log=lambda _: None,
                              runners={ablations.DETECTOR: runner, ablations.CLASSIFIER: runner})
  class MutatingRunner(CountingRunner):
    def __call__(self, config, sources, workdir, max_steps):
      out = super().__call__(config, sources, workdir, max_steps)
      config.train.lr0 = 123.0   # the detection trainer fills fields in (data.class_names, ...)
      return out
  runner = MutatingRunner()
  out = run(3, tmp_path, runner, smoke=True)
  assert runner.calls == [(f'ablate_{r}', 0) for r in ('cspdarknet_cls_none', 'yolo_osam', 'yolov5s')]
  assert sorted(out['skipped']) == sorted((r, 1) for r in ('cspdarknet_cls_none', 'yolo_osam', 'yolov5s'))
  second = stored_round(tmp_path, 3, 'yolo_osam', 1)
  assert second['smoke_network_twin'] and second['reused_from'] == os.path.join('table3', 'yolo_osam',
                                                                                'round_0.json')
  assert second['settings']['seed'] == 1 and second['config']['seed'] == 1
  # Table 6 on the train split: its YOLO-OSAM row is the same network; the other rows train.
  runner = CountingRunner()
  run(6, tmp_path, runner, smoke=True)
  assert sorted(runner.calls) == sorted((f'ablate_{r.name}', 0) for r in ablations.get_table(6).rows
                                        if r.name != 'osam_backbone')
  # The same again trains nothing; a rerun reads the reused files back as its own.
  runner = CountingRunner()
  assert len(run(3, tmp_path, runner, smoke=True)['skipped']) == 6 and runner.calls == []
  # Not a smoke run: every round trains.
  runner = CountingRunner()
  ablation.run_table(ablations.get_table(3), settings_of(tmp_path / 'real', rounds=2), base.get_config,
                           sources=FAKE_SOURCES, log=lambda _: None,
                           runners={ablations.DETECTOR: runner, ablations.CLASSIFIER: runner})
  assert len(runner.calls) == 6


SMOKE_CACHE = os.path.join(ROOT, '.pytest_cache', 'jax_cache')


def run_smoke_tables(numbers, workdir, rows=None):
  """`scripts/ablate.py --table N --smoke [--rows ...]` for each N in turn, in fresh processes, as a
  user would; then checks each table (check_smoke_table)."""
  for number in numbers:
    command = [sys.executable, os.path.join(ROOT, 'scripts', 'ablate.py'), '--table', str(number),
               '--smoke', '--workdir', str(workdir), '--jax_cache', SMOKE_CACHE]
    if rows:
      command += ['--rows', ','.join(rows)]
    # Table 2 alone is 22 smoke runs (12 detector networks): ~15 minutes on two busy cores.
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=2700)
    assert done.returncode == 0, f'table {number}: ' + done.stderr[-3000:]
  for number in numbers:
    check_smoke_table(workdir, number, rows)


def stored_round(workdir, number, row, r):
  with open(ablation.result_path(str(workdir), number, row, r)) as f:
    return json.load(f)


def check_smoke_table(workdir, number, names=None):
  """Every row (of `names`, default all) is in the markdown and CSV, with finite metrics in [0, 100]
  from its own config."""
  table = ablations.get_table(number)
  selected = [r for r in table.rows if names is None or r.name in names]
  rounds = 2 if table.compare else 1
  rows = read_csv(workdir / f'table{number}.csv')
  assert [r['row'] for r in rows] == [r.name for r in selected]
  md = (workdir / f'table{number}.md').read_text()
  assert all(f'| {r.label} |' in md for r in selected)
  for csv_row in rows:
    assert int(csv_row['rounds']) == rounds
    required = ablation.REQUIRED_METRICS[table.row(csv_row['row']).kind]
    for m in table.metrics:   # a classifier's mAP is n/a while classify.py reports no scores
      assert 0.0 <= float(csv_row[f'{m}_mean']) <= 100.0 or (
          m not in required and csv_row[f'{m}_mean'] == 'nan'), (csv_row['row'], m)
  for row in selected:
    for r in range(rounds):
      stored = stored_round(workdir, number, row.name, r)
      assert stored['settings']['smoke'] and stored['settings']['seed'] == r
      config = stored['config']
      for override in row.overrides:   # the run used the row's configuration
        key, value = override.split('=')
        section, *rest = key.split('.')
        node = config[section]
        for part in rest:
          node = node[part]
        assert str(node) == value, (row.name, key)


@pytest.mark.slow
@pytest.mark.ci
def test_smoke_one_classifier_and_one_detector(tmp_path):
  """What CI runs of the smoke tables (one network per kind; the exhaustive runs below are `slow`):
  Table 3's classifier baseline against YOLO-OSAM over two rounds, with its Welch t-test, then Table 1's
  YOLO-OSAM row, which is the same run and trains nothing."""
  rows = ('cspdarknet_cls_none', 'yolo_osam')
  run_smoke_tables((3,), tmp_path, rows)
  for row in rows:
    first, second = (stored_round(tmp_path, 3, row, r) for r in range(2))
    assert 'reused_from' not in first and second['smoke_network_twin'], row
    assert second['metrics'] == first['metrics']
  assert stored_round(tmp_path, 3, 'cspdarknet_cls_none', 0)['metrics']['steps'] == ablation.SMOKE_STEPS
  assert 'Welch t' in (tmp_path / 'table3.md').read_text()
  run_smoke_tables((1,), tmp_path, ('yolo_osam',))
  reused = stored_round(tmp_path, 1, 'yolo_osam', 0)
  assert reused['reused_from'] == os.path.join('table3', 'yolo_osam', 'round_0.json')
  assert reused['metrics'] == stored_round(tmp_path, 3, 'yolo_osam', 0)['metrics']


@pytest.mark.slow
def test_smoke_classifier_tables(tmp_path):
  """Tables 2 and 5 (Table 2 has the classifiers and ten + two detector rows). With -n 2 this and
  test_smoke_detector_tables run side by side; the split of the tables keeps their number of runs
  close (24 / 25)."""
  run_smoke_tables((2, 5), tmp_path)
  for arch in ablations.ARCH_LABELS:
    trained = stored_round(tmp_path, 2, f'{arch}_osam', 0)
    assert trained['metrics']['steps'] == ablation.SMOKE_STEPS and 'reused_from' not in trained
    # Table 5's "after every stage" rows are Table 2's OSAM networks (on the train split: a smoke run
    # trains each network once).
    reused = stored_round(tmp_path, 5, f'{arch}_osam_embedding', 0)
    assert reused['reused_from'] == os.path.join('table2', f'{arch}_osam', 'round_0.json')
    assert reused['metrics'] == trained['metrics'] and reused['smoke_network_twin']
  assert stored_round(tmp_path, 2, 'improved_osam', 0)['metrics']['epochs_completed'] == 1
  # The same command again trains nothing.
  runner = CountingRunner()
  out = ablation.run_table(ablations.get_table(5), settings_of(tmp_path, smoke=True), base.get_config,
                           log=lambda _: None,
                           runners={ablations.CLASSIFIER: runner, ablations.DETECTOR: runner})
  assert runner.calls == [] and len(out['skipped']) == len(ablations.get_table(5).rows)


@pytest.mark.slow
def test_smoke_detector_tables(tmp_path):
  """Tables 1, 3, 4 and 6 (Table 4 has the classifiers' CBL rows and YOLO-OSAM's)."""
  run_smoke_tables((1, 3, 4, 6), tmp_path)
  # Table 4's 3-CBL YOLO-OSAM is Table 1's run; its other CBL counts and the classifiers train.
  assert stored_round(tmp_path, 4, 'yolo_osam_cbl3', 0)['reused_from'] == os.path.join(
      'table1', 'yolo_osam', 'round_0.json')
  for row in ('yolo_osam_cbl0', 'yolo_osam_cbl4', 'alexnet_osam_cbl3'):
    assert 'reused_from' not in stored_round(tmp_path, 4, row, 0), row
  assert 'Welch t' in (tmp_path / 'table3.md').read_text()
  # Table 3's first round of the detectors is Table 1's runs; three of Table 6's rows are Table 1's
  # networks (on the train split: reused by the smoke run only); the second rounds of Table 3 are
  # their first rounds' networks.
  for number, row, twin in ((3, 'yolov5s', 'yolov5s'), (3, 'yolo_osam', 'yolo_osam'),
                            (6, 'fusion_no_attention', 'yolov5s_fusion'),
                            (6, 'osam_backbone', 'yolo_osam'),
                            (6, 'osam_backbone_reference', 'yolo_osam_published')):
    reused = stored_round(tmp_path, number, row, 0)
    assert reused['reused_from'] == os.path.join('table1', twin, 'round_0.json'), (number, row)
    assert reused['metrics'] == stored_round(tmp_path, 1, twin, 0)['metrics']
    assert reused.get('smoke_network_twin', False) == (number == 6)
  baseline = stored_round(tmp_path, 3, 'cspdarknet_cls_none', 0)
  assert 'reused_from' not in baseline and baseline['metrics']['steps'] == ablation.SMOKE_STEPS
  for row in ('cspdarknet_cls_none', 'yolov5s', 'yolo_osam'):
    second = stored_round(tmp_path, 3, row, 1)
    assert second['smoke_network_twin'] and second['config']['seed'] == 1
    assert second['settings']['seed'] == 1
  for row in ('osam_neck', 'osam_neck_sigmoid', 'osam_neck_reference', 'osam_backbone_sigmoid'):
    trained = stored_round(tmp_path, 6, row, 0)
    assert 'reused_from' not in trained and trained['metrics']['epochs_completed'] == 1, row
  assert (tmp_path / 'table6.md').read_text().splitlines()[0].endswith('(train split)')
