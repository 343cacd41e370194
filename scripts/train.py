"""Trains a detector from a config file, validating every epoch and testing the best weights at the end.

  python scripts/train.py --config configs/rafdb_basic.py
  python scripts/train.py --config configs/demo.py --workdir runs/demo/train --config.train.epochs=5
  python scripts/train.py --workdir runs/rafdb_basic/3 --resume        # after a crash or a kill
  python scripts/train.py --config configs/rafdb_basic.py --config.train.init_from=weights/v5s \
      --config.train.freeze=10                                           # pretrained, backbone frozen

Several hosts (one process per host, same command on each; coordinator from the environment/cluster):
  python scripts/train.py --config configs/rafdb_basic.py --workdir /shared/runs/r1 --distributed

Outputs (in --workdir, default runs/<config name>/<n>): see yolo_osam_jax/training/loop.py.
"""

from __future__ import annotations

import argparse
import logging
import sys

import _bootstrap  # noqa: F401

from yolo_osam_jax import config_utils, errors


@errors.script_main
def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = config_utils.split_config_args(argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', help='config file (configs/*.py); with --resume optional: the run\'s '
                      'saved config is used')
  parser.add_argument('--workdir', default=None, help='output folder (default runs/<config name>/<n>)')
  parser.add_argument('--resume', action='store_true', help='continue the run in --workdir (default: the '
                      'latest run of --config) from its last checkpoint')
  parser.add_argument('--distributed', action='store_true',
                      help='call jax.distributed.initialize() first (several hosts)')
  parser.add_argument('--no-progress', action='store_true', help='no progress bars')
  parser.add_argument('--overwrite', action='store_true',
                      help='start afresh in a --workdir that holds a run, deleting that run')
  parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
  args = parser.parse_args(rest)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s',
                      datefmt='%H:%M:%S')
  logging.getLogger('absl').setLevel(logging.WARNING)

  from yolo_osam_jax import training  # pylint: disable=g-import-not-at-top (after logging setup)

  if args.resume and args.overwrite:
    parser.error('--resume continues the run in --workdir, --overwrite deletes it: give one of them')
  if args.config:
    config = config_utils.load_config(args.config, overrides)
  elif args.resume and args.workdir:
    config = training.load_run_config(args.workdir)
    config_utils.apply_overrides(config, overrides)
  else:
    parser.error('--config is required (or --resume with --workdir)')
  if args.distributed or bool(config.train.get('distributed', False)):
    training.initialize_distributed()
  try:
    result = training.train_and_evaluate(config, args.workdir, resume=args.resume,
                                         overwrite=args.overwrite, show_progress=not args.no_progress)
  except training.TrainingDiverged as e:
    print(f'error: {e}', file=sys.stderr)
    return 3
  summary = result.get('test_summary')
  if summary:
    print('test (best weights, epoch {}): '.format(result['best_epoch']) +
          ', '.join(f'{k} {v:.4f}' for k, v in summary.items()))
  print(f"results in {result['workdir']}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
