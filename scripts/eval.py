"""Evaluates detections: a trained model on a dataset split, or COCO-format files, or two sets of runs.

  # a checkpoint on a split (all metrics + plots, JSON in --out)
  python scripts/eval.py --config configs/rafdb.py --checkpoint runs/rafdb/1 --split test
  # COCO files: ground truth (images/annotations/categories, bbox x y w h) and a results list
  python scripts/eval.py --predictions dets.json --ground-truth gt.json --mode coco --out metrics.json
  # significance of per-round results (JSON lists of numbers, e.g. mAP50 of 10 seeds each)
  python scripts/eval.py --compare yolo_osam.json yolov5.json

coco mode equals pycocotools' 12 statistics; yolov5 mode equals yolov5's validator (P, R, F1 at the
confidence of the best mean F1, mAP50, mAP50-95, per class). The two differ by a few points on the same
detections, so every report names its mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import _bootstrap  # noqa: F401

from yolo_osam_jax import config_utils, errors
from yolo_osam_jax.evaluation import coco as coco_lib
from yolo_osam_jax.evaluation import significance
from yolo_osam_jax.evaluation import yolov5 as yolov5_lib


def evaluate_files(predictions_path: str, ground_truth_path: str, mode: str) -> dict:
  """COCO-format files -> the JSON dict of `mode` (keys as documented in the module docstring)."""
  gt_data = coco_lib.load_json(ground_truth_path, 'ground truth')
  if not isinstance(gt_data, dict):
    raise ValueError(f"ground truth file {ground_truth_path}: expected a JSON object")
  gt = coco_lib.ground_truth_from_coco(gt_data, source=ground_truth_path)
  results = coco_lib.load_json(predictions_path, 'predictions')
  dt = coco_lib.detections_from_coco(results, gt, coco_lib.category_ids_of(gt_data),
                                     source=predictions_path)
  if mode == 'coco':
    stats = coco_lib.evaluate(gt, dt)['stats']
    return {k: stats[k] for k in coco_lib.STAT_KEYS}
  if mode == 'yolov5':
    stats = yolov5_lib.evaluate(gt, dt)['stats']
    return {k: stats[k] for k in ('precision', 'recall', 'f1', 'map50', 'map50_95', 'per_class')}
  raise ValueError(f"--mode must be coco or yolov5, got {mode!r}")


def format_file_metrics(metrics: dict, mode: str) -> str:
  lines = [f"mode {mode}"]
  for key, value in metrics.items():
    if key != 'per_class':
      lines.append(f"  {key:<12}{value:.4f}")
  rows = metrics.get('per_class', [])
  if rows:
    width = max(len('class'), *(len(r['class']) for r in rows)) + 2
    lines.append(f"  {'class':<{width}}{'labels':>8}{'P':>8}{'R':>8}{'F1':>8}{'mAP50':>8}{'mAP50-95':>10}")
    for r in rows:
      lines.append(f"  {r['class']:<{width}}{r['labels']:>8}{r['precision']:>8.3f}{r['recall']:>8.3f}"
                   f"{r['f1']:>8.3f}{r['ap50']:>8.3f}{r['ap50_95']:>10.3f}")
  return '\n'.join(lines)


def resolve_checkpoint_dir(path: str) -> str:
  """A model checkpoint directory, or a training run's workdir (its best/ weights, else last/)."""
  from yolo_osam_jax import checkpoint
  if not os.path.isdir(path):
    raise errors.MissingError(f"{path}: no such checkpoint folder")
  for candidate in (path, os.path.join(path, 'best'), os.path.join(path, 'last')):
    # A run's workdir has a config.json too; only variables/ beside it makes a model checkpoint.
    if (os.path.isfile(os.path.join(candidate, checkpoint.CONFIG_FILE))
        and os.path.isdir(os.path.join(candidate, checkpoint.VARIABLES_DIR))):
      return candidate
  raise errors.MissingError(f"{path}: neither a model checkpoint (config.json + variables/) nor a training run "
                   "with best/ or last/")


def evaluate_checkpoint(config_path: str, checkpoint_dir: str, split: str, out_dir: str | None,
                        overrides=()) -> dict:
  """Model mode: the checkpoint's network over `split` of the config's dataset; every metric + plots.

  The network (and its anchors) comes from the checkpoint; data and eval settings from the config.
  Writes metrics.json, the text table and the plots to `out_dir` (default <checkpoint>/eval_<split>).
  """
  # Heavy imports only in model mode: file mode stays light.
  from yolo_osam_jax import checkpoint, evaluation, models
  from yolo_osam_jax.data import pipeline
  from yolo_osam_jax.training import loop

  checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
  if out_dir:  # before the evaluation, not after it
    errors.check_output_dir(out_dir, '--out')
  config = config_utils.load_config(config_path, overrides)
  saved_config, variables = checkpoint.load_model(checkpoint_dir)
  config.model = saved_config.model
  loop.check_img_size(config)
  source = pipeline.open_tfds_source(config.data.dataset, split, config.data.data_dir or None,
                                     config.data.builder_config or None)
  names = loop.source_class_names(source)
  if not names or len(names) != config.model.num_classes:
    raise ValueError(f"dataset {config.data.dataset} has classes {names}, the checkpoint's model "
                     f"{config.model.num_classes}: evaluate it on the dataset it was trained for")
  results = loop.Evaluator(models.build(config.model), config, names)(variables, source)
  table = evaluation.format_table(results)
  print(f"{checkpoint_dir} on {config.data.dataset} [{split}]\n{table}")
  out_dir = errors.check_output_dir(out_dir or os.path.join(checkpoint_dir, f'eval_{split}'), '--out')
  try:
    with open(os.path.join(out_dir, 'metrics.json'), 'w') as f:
      json.dump(evaluation.json_ready(results), f, indent=2)
    with open(os.path.join(out_dir, 'metrics.txt'), 'w') as f:
      f.write(table + '\n')
    evaluation.save_plots(results, out_dir)
  except OSError as e:
    raise errors.output_error(e.filename or out_dir, e) from e
  print(f"wrote {out_dir}")
  return results


def _read_rounds(path: str) -> list[float]:
  values = coco_lib.load_json(path, 'per-round results')
  if not isinstance(values, list) or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
    raise ValueError(f"per-round results file {path}: expected a JSON list of numbers")
  return [float(v) for v in values]


@errors.script_main
def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', help='config file (model mode)')
  parser.add_argument('--checkpoint', help='checkpoint directory (model mode)')
  parser.add_argument('--split', default='test', help='dataset split (model mode)')
  parser.add_argument('--predictions', help='COCO results JSON (file mode)')
  parser.add_argument('--ground-truth', help='COCO ground-truth JSON (file mode)')
  parser.add_argument('--mode', choices=('coco', 'yolov5'), default='coco', help='file-mode metric')
  parser.add_argument('--compare', nargs=2, metavar=('A', 'B'),
                      help='two JSON lists of per-round results: t-test and Welch test')
  parser.add_argument('--out', help='write the metrics JSON here (model mode: a folder)')
  rest, overrides = config_utils.split_config_args(sys.argv[1:] if argv is None else argv)
  args = parser.parse_args(rest)

  try:
    if args.compare:
      a, b = args.compare
      result = significance.compare_runs(_read_rounds(a), _read_rounds(b), name_a=a, name_b=b)
      text = json.dumps(result, indent=2)
    elif args.predictions or args.ground_truth:
      if not (args.predictions and args.ground_truth):
        parser.error('file mode needs both --predictions and --ground-truth')
      result = evaluate_files(args.predictions, args.ground_truth, args.mode)
      text = format_file_metrics(result, args.mode)
    elif args.config or args.checkpoint:
      if not (args.config and args.checkpoint):
        parser.error('model mode needs both --config and --checkpoint')
      evaluate_checkpoint(args.config, args.checkpoint, args.split, args.out, overrides)
      return 0
    else:
      parser.error('give --config/--checkpoint, --predictions/--ground-truth, or --compare')
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(text)
  if args.out:
    if os.path.isdir(args.out):
      raise errors.OutputError(f'{args.out}: --out is a folder; give a file name for the metrics JSON')
    errors.check_output_dir(os.path.dirname(os.path.abspath(args.out)), '--out\'s folder')
    try:
      with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    except OSError as e:
      raise errors.output_error(args.out, e) from e
    print(f"wrote {args.out}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
