"""Per-layer table of a configured model, its parameter count and GFLOPs.

  python scripts/model_info.py --config configs/rafdb_basic.py [--config.model.fusion=none] [--img 128]
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from yolo_osam_jax import config_utils, errors
from yolo_osam_jax.models import summary


@errors.script_main
def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = config_utils.split_config_args(argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='config file (configs/*.py)')
  parser.add_argument('--img', type=int, default=None, help='image size (default: config.data.img_size)')
  args = parser.parse_args(rest)
  config = config_utils.load_config(args.config, overrides)
  img = args.img or config.data.img_size
  rows, total = summary.layer_rows(config.model, img)
  print(f'{"#":>3}  {"from":<16} {"module":<10} {"output (H, W, C)":<40} {"params":>10}')
  for index, kind, sources, shape, n in rows:
    src = ','.join(str(s) for s in sources)
    print(f'{index:>3}  {src:<16} {kind:<10} {shape:<40} {n:>10,}')
  print(f'parameters: {total}  gflops@{img}: {summary.gflops(config.model, img):.3f}')


if __name__ == '__main__':
  sys.exit(main())
