"""scripts/benchmark.py in smoke mode: every section's rows, their arithmetic and the JSON log."""

import json

import pytest

import benchmark  # scripts/benchmark.py (tests/conftest.py puts scripts/ on sys.path)


def _check_rows(rows, out):
  lines = [json.loads(line) for line in open(out)]
  assert len(lines) == len(rows)
  for line in lines:
    assert line['smoke'] is True and line['jax'] and line['device'].startswith(('cpu', 'gpu', 'cuda'))
  return lines


def test_infer_data_eval_smoke(tmp_path, capsys):
  out = str(tmp_path / 'results.jsonl')
  # One network here (compiling is most of the time); test_train_and_infer_smoke_of_every_model (slow)
  # runs them all.
  rows = benchmark.main(['infer', 'data', 'eval', '--smoke', '--out', out, '--models', 'yolov5s'])
  lines = _check_rows(rows, out)
  infer = [r for r in lines if r['section'] == 'infer']
  # 2 dtypes × 2 batch sizes, each img/s = batch / median seconds.
  assert {(r['model'], r['dtype'], r['batch']) for r in infer} == {
      ('yolov5s', d, b) for d in ('float32', 'bfloat16') for b in (1, 4)}
  for r in infer:
    assert r['img_per_s'] == pytest.approx(r['batch'] / (r['ms_per_batch'] / 1e3))
  data = {r['name']: r for r in lines if r['section'] == 'data'}
  assert set(data) == {'data/train_full_aug', 'data/eval_letterbox'}
  for r in data.values():
    assert r['images_per_s'] == pytest.approx(r['images'] / r['seconds'], rel=2e-3)  # both rounded
  evals = {r['name']: r for r in lines if r['section'] == 'eval'}
  # The three evaluators agree on the statistics exactly.
  assert set(evals) == {'ours (numpy)', 'pycocotools', 'faster-coco-eval'}
  assert all(r['max_abs_diff_vs_ours'] <= 1e-9 for r in evals.values())
  printed = capsys.readouterr().out
  assert '## infer' in printed and '| model | dtype | batch |' in printed


@pytest.mark.slow
def test_train_and_infer_smoke_of_every_model(tmp_path):
  out = str(tmp_path / 'results.jsonl')
  rows = benchmark.main(['train', 'infer', '--smoke', '--out', out])
  _check_rows(rows, out)
  assert {r['model'] for r in rows} == {'yolov5s', 'yolo_osam', 'yolov8s', 'yolo11s'}
  assert {r['section'] for r in rows} == {'train', 'infer'}
  for r in rows:
    assert r['img_per_s'] == pytest.approx(r['batch'] / (r['ms_per_step'] / 1e3))


def test_unknown_section_is_refused():
  with pytest.raises(SystemExit):
    benchmark.main(['nonsense', '--smoke'])
  assert benchmark.main(['infer', '--smoke', '--models', 'yolov9s']) == 2  # one error line, status 2
