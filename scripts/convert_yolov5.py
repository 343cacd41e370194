"""Imports a yolov5-family PyTorch state dict (.npz or .safetensors) into a model checkpoint.

  python scripts/convert_yolov5.py --weights yolov5s.npz --config configs/rafdb_basic.py --out weights/v5s

The checkpoint's anchors replace the config's; a different class count loads everything but the class
rows of the Detect convolutions (transfer learning from COCO weights).
"""

import argparse
import logging
import sys

import _bootstrap  # noqa: F401

from yolo_osam_jax import checkpoint, config_utils, convert, errors


@errors.script_main
def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = config_utils.split_config_args(argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--weights', required=True, help='state dict as .npz or .safetensors')
  parser.add_argument('--config', required=True, help='config file whose model section matches the weights')
  parser.add_argument('--out', required=True, help='output checkpoint directory')
  args = parser.parse_args(rest)
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
  config = config_utils.load_config(args.config, overrides)
  state_dict = convert.load_state_dict_file(args.weights)
  config.model.anchors = convert.anchors_from_state_dict(state_dict, config.model)
  variables = convert.from_yolov5_state_dict(state_dict, config.model)
  out = checkpoint.save_model(args.out, variables, config)
  print(f'wrote {out} ({sum(1 for k in state_dict if not k.endswith("num_batches_tracked"))} tensors)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
