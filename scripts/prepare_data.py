"""Builds one registered dataset as array_record files and prints its build report.

  python scripts/prepare_data.py --dataset synthetic_faces --config demo
  python scripts/prepare_data.py --dataset rafdb_basic --manual_dir ~/data/RAF-DB
  python scripts/prepare_data.py --dataset yolo_folder --manual_dir ~/data/faces/data.yaml --config faces

A dataset that is already prepared from the same source (same files, sizes and times under --manual_dir)
is not rebuilt, and says so; one prepared from another source is refused unless --rebuild is given.
"""

from __future__ import annotations

import argparse
import sys

import _bootstrap  # noqa: F401

from yolo_osam_jax import data as datasets
from yolo_osam_jax import errors
from yolo_osam_jax.data import common


@errors.script_main
def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--dataset', required=True, choices=sorted(datasets.BUILDERS))
  parser.add_argument('--config', default=None, help='builder config (e.g. demo, hard, aligned)')
  parser.add_argument('--manual_dir', default=None, help='folder with the files you downloaded')
  parser.add_argument('--data_dir', default=None, help='where TFDS writes (default ~/tensorflow_datasets)')
  parser.add_argument('--rebuild', action='store_true',
                      help='build again over a prepared copy (kept until the new build succeeds)')
  args = parser.parse_args(argv)

  builder = datasets.build(args.dataset, data_dir=args.data_dir, manual_dir=args.manual_dir,
                           config=args.config, rebuild=args.rebuild)
  if getattr(builder, 'reused', False):
    print(f'\n{builder.info.full_name} is already prepared in {builder.data_dir} from the same source; '
          'nothing was built (--rebuild builds it again). The report of its build:')
  else:
    print(f'\nPrepared {builder.info.full_name} in {builder.data_dir}')
  for split, info in sorted(builder.info.splits.items()):
    print(f'  {split}: {info.num_examples} examples')
  print('  classes: ' + ', '.join(builder.info.features['objects']['label'].names))
  report = common.stored_report(builder)
  if report is not None:
    print(report.summary())
  return 0


if __name__ == '__main__':
  sys.exit(main())
