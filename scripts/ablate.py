"""Runs one of the paper's comparison tables and writes it as markdown and CSV.

  python scripts/ablate.py --table 5 --dataset synthetic_faces [--rounds 3] [--epochs 30]
  python scripts/ablate.py --table 6 --config configs/demo.py --dataset synthetic_faces/demo --epochs 10
  python scripts/ablate.py --table 3 --dataset ckplus --data_dir ~/tensorflow_datasets   # 10 rounds
  python scripts/ablate.py --table 2 --smoke          # every row for a few steps on a tiny synthetic set

Rows are defined in configs/ablations (config overrides on the base config); the runner is
yolo_osam_jax/ablation.py. Round r trains with seed `--seed + r` (config.seed and data.shuffle_seed).
Detector rows go through the detection trainer, classifier rows through yolo_osam_jax/classify.py; both
train on the dataset's train split and report on `--eval_split` (default: the table's split — train for
Tables 5 and 6, as the paper measured them — else config.data.test_split).
`--config.a.b=value` overrides apply to every row.

Rows start from --config; by default from the paper's recipe for the dataset (DATASET_CONFIGS:
rafdb_basic → configs/rafdb_basic.py (SGD), rafdb_compound → configs/rafdb_compound.py, ckplus →
configs/ckplus.py (Adam), fer2013 → configs/fer2013.py), and from configs/base.py for any other dataset
(synthetic_faces) and for --smoke. Without /CONFIG in --dataset, the base config's builder config is
used when it is for that dataset (ckplus: ck48). configs/demo.py is the short CPU recipe the
synthetic-set tables in README use.

Results: WORKDIR/table<N>/<row>/round_<r>.json, one per finished (row, round); a rerun with the same
settings skips them, so an interrupted run resumes where it stopped (a result file written with other
settings is an error, never mixed in). Tables share rows (Table 3's are Table 1's, Table 5's "after every
stage" rows are Table 4's 3-CBL rows, ...): a round whose settings equal a finished round of another
table in the same WORKDIR is copied from it (`reused_from` in its file), not trained again.

Tables: WORKDIR/table<N>.md and table<N>.csv: per row the mean ± sample standard deviation (ddof 1) over
rounds of each metric, in %; Table 3 adds Student's and Welch's two-sided t-tests (evaluation/
significance.py, scipy.stats.ttest_ind) for each compared pair — the paper's CSPDarknet53 baseline vs
YOLO-OSAM first, then yolov5s vs YOLO-OSAM — in the markdown and in table3_ttest.csv (a 'pair' column).
A metric a row cannot report (a classifier's mAP while classify.py gives no per-face scores) is n/a.

Metrics: detector rows report the trainer's test summary (F1 = yolov5's box-level P/R F1, mAP50,
mAP50-95, and the face accuracy of evaluation/accuracy.py); classifier rows report accuracy and macro F1
over the face crops (classify.py), and the classification mAP of evaluation/classification.py when
classify.py reports per-face scores (else n/a). --jax_cache (default WORKDIR/jax_cache) keeps compiled
programs on disk, so the rounds of a row, and reruns, skip compiling.

--smoke: a tiny in-memory synthetic set (no dataset needed), 2 training steps per row, one round (two
for Table 3, the fewest a t-test takes), and XLA's CPU optimisation level lowered to cut compile time
(set XLA_FLAGS yourself to override). Its numbers mean nothing; it checks that every row runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import _bootstrap  # noqa: F401

from configs import ablations
from configs import base
from yolo_osam_jax import ablation
from yolo_osam_jax import config_utils
from yolo_osam_jax import errors

BASE_CONFIG = 'configs/base.py'
# The paper's recipe per dataset (SPEC §4): the default base config of that dataset's tables.
DATASET_CONFIGS = {
    'rafdb_basic': 'configs/rafdb_basic.py',
    'rafdb_compound': 'configs/rafdb_compound.py',
    'ckplus': 'configs/ckplus.py',
    'fer2013': 'configs/fer2013.py',
}
SMOKE_XLA_FLAGS = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'


def default_config(dataset: str, smoke: bool = False) -> str:
  """The base config a dataset's tables start from without --config."""
  return BASE_CONFIG if smoke else DATASET_CONFIGS.get(dataset, BASE_CONFIG)


def config_loader(path: str):
  """A function returning a fresh copy of the config at `path`; the repository's own configs are
  imported (works from any directory), any other path is loaded as a file."""
  name = os.path.normpath(path)
  if name == os.path.normpath(BASE_CONFIG):
    return base.get_config
  if name in {os.path.normpath(p) for p in DATASET_CONFIGS.values()}:
    module = importlib.import_module('configs.' + os.path.splitext(os.path.basename(name))[0])
    return module.get_config
  return lambda: config_utils.load_config(path)


@errors.script_main
def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = config_utils.split_config_args(argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--table', type=int, required=True, choices=sorted(ablations.TABLES))
  parser.add_argument('--config', default='',
                      help="config file every row starts from (default: the paper's recipe for "
                      '--dataset, DATASET_CONFIGS, else configs/base.py); e.g. configs/demo.py for short '
                      'CPU runs on the synthetic set')
  parser.add_argument('--dataset', default=None,
                      help='TFDS dataset name, optionally NAME/CONFIG (required unless --smoke)')
  parser.add_argument('--data_dir', default='',
                      help="TFDS data dir (default: the config's data.data_dir, else TFDS's default)")
  parser.add_argument('--eval_split', default=None,
                      help="split to report on (default: the table's, train for Tables 5 and 6, else "
                      'config.data.test_split)')
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
  base_config = args.config or default_config(dataset, args.smoke)
  settings = ablation.AblationSettings(
      workdir=workdir, base_config=base_config, dataset=dataset,
      builder_config=builder_config, data_dir=args.data_dir, eval_split=args.eval_split,
      rounds=args.rounds, epochs=args.epochs, seed=args.seed, smoke=args.smoke, overrides=tuple(overrides),
      rows=tuple(args.rows.split(',')) if args.rows else None)
  out = ablation.run_table(ablations.get_table(args.table), settings, config_loader(base_config))
  with open(out['paths'][0]) as f:
    print(f.read())
  print('wrote ' + ', '.join(out['paths']))
  return out


if __name__ == '__main__':
  status = main()
  sys.exit(status if isinstance(status, int) else 0)  # main returns the run's results to in-process callers
