"""Speed of every stage, each against its baseline measured in the same run.

  python scripts/benchmark.py [train infer data eval] [--smoke] [--out benchmarks/results.jsonl]

Sections:
  infer  forward + decoding img/s: yolov5s vs YOLO-OSAM, float32 vs bfloat16, batch 1/32/256, devices
  train  train-step img/s (forward, loss, backward, optimiser, EMA): yolov5s vs YOLO-OSAM, fp32 vs bf16
  data   input-pipeline img/s at 128² with full yolov5 augmentation vs letterbox only
  eval   our COCO evaluator vs pycocotools vs faster-coco-eval (5,000 images, 100,000 detections)
Each section prints a markdown table and appends one JSON line per row (with device, versions, shapes,
dtype) to --out. --smoke runs tiny shapes (what CI runs).
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from configs import base
from yolo_osam_jax import benchmarking, errors

SECTIONS = ('infer', 'train', 'data', 'eval')
COLUMNS = {
    'infer': ['model', 'dtype', 'batch', 'img', 'devices', 'compile_s', 'ms_per_batch', 'img_per_s'],
    'train': ['model', 'dtype', 'batch', 'img', 'devices', 'compile_s', 'ms_per_step', 'img_per_s'],
}


def model_variants():
  """The networks the model benchmarks compare: plain yolov5s, the published YOLO-OSAM, and the
  anchor-free YOLOv8s and YOLO11s of the paper's Table 1 (all size s, 7 classes)."""
  osam = base.model_config('s', 7)
  v5 = base.model_config('s', 7)
  v5.fusion, v5.attention.kind, v5.attention.where = 'none', 'none', 'none'
  variants = {'yolov5s': v5, 'yolo_osam': osam}
  for arch in ('yolov8', 'yolo11'):
    config = base.model_config('s', 7)
    config.arch, config.activation = arch, 'silu'
    config.fusion, config.attention.kind, config.attention.where = 'none', 'none', 'none'
    variants[f'{arch}s'] = config
  return variants


def chosen_variants(names):
  variants = model_variants()
  if not names:
    return variants
  unknown = [n for n in names if n not in variants]
  if unknown:
    raise errors.InputError(f'--models: unknown {unknown}; choose among {", ".join(variants)}')
  return {n: variants[n] for n in names}


def run_section(name: str, smoke: bool, models=None) -> list[dict]:
  if name == 'infer':
    from yolo_osam_jax.benchmarking import models as model_bench
    return model_bench.run_infer_benchmark(chosen_variants(models), smoke)
  if name == 'train':
    from yolo_osam_jax.benchmarking import models as model_bench
    return model_bench.run_train_benchmark(chosen_variants(models), base.get_config().train, smoke)
  if name == 'data':
    from yolo_osam_jax.benchmarking import data as data_bench
    return [{'section': 'data', **r} for r in data_bench.run_data_benchmark(base.get_config().data, smoke)]
  if name == 'eval':
    from yolo_osam_jax.benchmarking import coco_eval as eval_bench
    return [{'section': 'eval', **r} for r in eval_bench.run_eval_benchmark(smoke)]
  raise ValueError(f'unknown section {name!r}; choose from {SECTIONS}')


@errors.script_main
def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('sections', nargs='*', metavar='SECTION', help=f'any of {SECTIONS} (default: all)')
  parser.add_argument('--smoke', action='store_true', help='tiny shapes, a few seconds per section')
  parser.add_argument('--out', default='benchmarks/results.jsonl')
  parser.add_argument('--models', default='', help='comma-separated networks of the infer/train sections '
                      f'(default: all of {", ".join(model_variants())})')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  unknown = [s for s in args.sections if s not in SECTIONS]
  if unknown:
    parser.error(f'unknown section(s) {unknown}; choose from {SECTIONS}')
  print(benchmarking.environment())
  all_rows = []
  for name in args.sections or SECTIONS:
    rows = run_section(name, args.smoke, [m for m in args.models.split(',') if m])
    columns = COLUMNS.get(name) or [k for k in rows[0] if k != 'section']
    print(f'\n## {name}\n')
    print(benchmarking.markdown_table(rows, columns))
    benchmarking.append_jsonl([{**r, 'smoke': args.smoke} for r in rows], args.out)
    all_rows += rows
  return all_rows


if __name__ == '__main__':
  status = main()
  sys.exit(status if isinstance(status, int) else 0)  # main returns the rows to in-process callers
