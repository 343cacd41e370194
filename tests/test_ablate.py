"""scripts/ablate.py and configs/ablations: rows, resuming, table statistics, the smoke run."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from conftest import ROOT
from configs import ablations
from yolo_osam_jax import models
from yolo_osam_jax.models import classifiers

sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import ablate  # noqa: E402


def config_of(table, row, smoke=False):
  return ablate.row_config(table.row(row), dataset='synthetic_faces', builder_config='demo', data_dir='',
                           smoke=smoke, overrides=(), epochs=None, seed=0, num_classes=7)


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
      assert config.model.arch == 'yolo'
      models.build(config.model)


def test_rows_say_what_the_paper_compares():
  t1 = ablations.get_table(1)
  yolov5s = config_of(t1, 'yolov5s').model
  assert (yolov5s.fusion, yolov5s.attention.kind) == ('none', 'none')
  published = config_of(t1, 'yolo_osam_published').model
  assert (published.fusion, published.attention.kind, published.attention.gate) == (
      'reference', 'osam', 'reference')
  t2 = ablations.get_table(2)
  assert sorted({config_of(t2, r.name).model.attention.kind for r in t2.rows}) == sorted(
      ['none', 'sam', 'osam', 'cbam_osam', 'cbam_sam'])
  assert {config_of(t2, r.name).model.arch for r in t2.rows} == {'cspdarknet_cls', 'alexnet'}
  t4 = ablations.get_table(4)
  assert sorted(config_of(t4, r.name).model.attention.cbl_repeats for r in t4.rows) == [0, 0, 1, 1, 2, 2,
                                                                                         3, 3, 4, 4]
  t5 = ablations.get_table(5)
  assert sorted(config_of(t5, r.name).model.attention.where for r in t5.rows) == [
      'embedding', 'embedding', 'last', 'last']
  t6 = ablations.get_table(6)
  assert {config_of(t6, r.name).model.attention.where for r in t6.rows} == {'none', 'backbone', 'neck'}
  assert ablations.get_table(3).compare == ('yolov5s', 'yolo_osam')
  # Command-line style overrides and epochs/seed land in the row's config.
  config = ablate.row_config(t5.row('alexnet_osam_last'), dataset='x', builder_config='', data_dir='',
                             smoke=False, overrides=['--config.train.lr0=0.02'], epochs=7, seed=3,
                             num_classes=4)
  assert (config.train.lr0, config.train.epochs, config.seed, config.data.shuffle_seed) == (0.02, 7, 3, 3)
  assert config.model.num_classes == 4


def fake_metrics(row, seed):
  """Deterministic, row- and seed-dependent metrics (fractions)."""
  rng = np.random.default_rng([sum(map(ord, row)), seed])
  return {'f1': float(rng.uniform(0.4, 0.9)), 'map50': float(rng.uniform(0.4, 0.9)),
          'accuracy': float(rng.uniform(0.4, 0.9))}


class CountingRunner:

  def __init__(self):
    self.calls = []

  def __call__(self, config, sources, workdir, max_steps):
    self.calls.append((config.name, config.seed))
    return fake_metrics(config.name.replace('ablate_', ''), config.seed)


FAKE_SOURCES = {'train': [], 'validation': [], 'eval': [], 'class_names': ['a', 'b', 'c']}


def run_fake(number, workdir, rounds, runner, **kw):
  return ablate.run_table(number, workdir=str(workdir), rounds=rounds, sources=FAKE_SOURCES,
                          runners={ablations.DETECTOR: runner, ablations.CLASSIFIER: runner},
                          log=lambda _: None, **kw)


def read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def test_table3_statistics_and_t_test_recomputed(tmp_path):
  runner = CountingRunner()
  out = run_fake(3, tmp_path, 4, runner, seed=10)
  assert sorted(runner.calls) == sorted((f'ablate_{r}', s) for r in ('yolov5s', 'yolo_osam')
                                        for s in range(10, 14))
  rows = read_csv(tmp_path / 'table3.csv')
  assert [r['row'] for r in rows] == ['yolov5s', 'yolo_osam']
  values = {r: {m: np.array([100 * fake_metrics(r, s)[m] for s in range(10, 14)])
                for m in ('f1', 'map50', 'accuracy')} for r in ('yolov5s', 'yolo_osam')}
  for r in rows:
    assert int(r['rounds']) == 4
    for m in ('f1', 'map50', 'accuracy'):
      assert float(r[f'{m}_mean']) == pytest.approx(values[r['row']][m].mean(), rel=1e-12)
      assert float(r[f'{m}_std']) == pytest.approx(values[r['row']][m].std(ddof=1), rel=1e-12)
  tests = read_csv(tmp_path / 'table3_ttest.csv')
  assert [t['metric'] for t in tests] == ['f1', 'map50', 'accuracy']
  for t in tests:
    a, b = values['yolov5s'][t['metric']], values['yolo_osam'][t['metric']]
    student, welch = stats.ttest_ind(a, b), stats.ttest_ind(a, b, equal_var=False)
    assert float(t['student_t']) == pytest.approx(student.statistic, rel=1e-10)
    assert float(t['student_p']) == pytest.approx(student.pvalue, rel=1e-10)
    assert float(t['student_df']) == 6
    assert float(t['welch_t']) == pytest.approx(welch.statistic, rel=1e-10)
    assert float(t['welch_p']) == pytest.approx(welch.pvalue, rel=1e-10)
  md = (tmp_path / 'table3.md').read_text()
  label = ablations.get_table(3).row('yolo_osam').label
  f1 = values['yolo_osam']['f1']
  assert f'| {label} | {f1.mean():.2f} ± {f1.std(ddof=1):.2f} |' in md
  assert 'Welch t' in md
  assert out['tests'][0]['student']['t'] == pytest.approx(stats.ttest_ind(
      values['yolov5s']['f1'], values['yolo_osam']['f1']).statistic)


def test_resume_skips_finished_rounds_and_refuses_other_settings(tmp_path):
  first = CountingRunner()
  run_fake(5, tmp_path, 2, first)
  assert len(first.calls) == 4 * 2
  again = CountingRunner()
  out = run_fake(5, tmp_path, 2, again)
  assert again.calls == [] and len(out['skipped']) == 8
  # One lost result: only that (row, round) runs again; a third round runs only the new rounds.
  os.remove(ablate.result_path(str(tmp_path), 5, 'alexnet_osam_last', 1))
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
  assert len(rows) == 3 and all(r['f1_std'] == '' for r in rows)
  table_lines = [l for l in (tmp_path / 'table6.md').read_text().splitlines() if l.startswith('| ')]
  assert len(table_lines) == 4 and not any(' ± ' in l for l in table_lines)
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

  def fake_train(config, workdir, *, sources, class_names, show_progress):
    seen.update(workdir=workdir, roles=sorted(sources), class_names=class_names)
    return {'test_summary': {'f1': 0.7, 'mAP50': 0.6, 'mAP50-95': 0.3, 'accuracy': 0.8, 'f1_macro': 0.75,
                             'precision': 0.65, 'recall': 0.72},
            'best_epoch': 3, 'epochs_completed': 4, 'train_seconds': 1.5}

  monkeypatch.setattr(training, 'train_and_evaluate', fake_train)
  sources = {'train': [1], 'validation': [2], 'eval': [3], 'class_names': ['a']}
  metrics = ablate.run_detector(None, sources, '/tmp/x', None)
  assert seen == {'workdir': '/tmp/x', 'roles': ['test', 'train', 'validation'], 'class_names': ['a']}
  assert (metrics['f1'], metrics['map50'], metrics['map'], metrics['accuracy']) == (0.7, 0.6, 0.3, 0.8)


def test_smoke_run_writes_every_row_and_resumes(tmp_path):
  # A fresh process, as CI runs it (the smoke run lowers XLA's optimisation level before JAX starts).
  command = [sys.executable, os.path.join(ROOT, 'scripts', 'ablate.py'), '--table', '5', '--smoke',
             '--workdir', str(tmp_path), '--jax_cache', '']
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  table = ablations.get_table(5)
  rows = read_csv(tmp_path / 'table5.csv')
  assert [r['row'] for r in rows] == [r.name for r in table.rows]
  md = (tmp_path / 'table5.md').read_text()
  assert all(f'| {r.label} |' in md for r in table.rows)
  for r in table.rows:
    with open(ablate.result_path(str(tmp_path), 5, r.name, 0)) as f:
      stored = json.load(f)
    assert stored['metrics']['steps'] == ablate.SMOKE_STEPS
    assert 0.0 <= stored['metrics']['accuracy'] <= 1.0
    assert stored['config']['model']['arch'] == r.overrides[0].split('=')[1]
  # The same command again trains nothing.
  runner = CountingRunner()
  out = ablate.run_table(5, workdir=str(tmp_path), smoke=True, log=lambda _: None,
                         runners={ablations.CLASSIFIER: runner, ablations.DETECTOR: runner})
  assert runner.calls == [] and len(out['skipped']) == len(table.rows)


@pytest.mark.slow
def test_smoke_detector_row(tmp_path):
  out = ablate.main(['--table', '6', '--smoke', '--rows', 'osam_backbone', '--workdir', str(tmp_path),
                     '--jax_cache', ''])
  (entry,) = out['summary']
  assert entry['row'] == 'osam_backbone' and entry['rounds'] == 1
  assert all(0.0 <= entry[f'{m}_mean'] <= 100.0 for m in ('f1', 'map50', 'accuracy'))
