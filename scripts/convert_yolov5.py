"""Imports a PyTorch state dict (.npz or .safetensors) into a model checkpoint: the yolov5 family
(yolo_osam, yolov3) or the ultralytics anchor-free family (yolov8, yolo11), by the config's model.arch
or --arch.

  python scripts/convert_yolov5.py --weights yolov5s.npz --config configs/rafdb_basic.py --out weights/v5s
  python scripts/convert_yolov5.py --weights yolov8s.npz --config configs/yolov8.py --out weights/v8s
  python scripts/convert_yolov5.py --weights yolo11n.npz --config configs/yolo11.py --arch yolo11 \
      --config.model.size=n --out weights/v11n

yolov5 family: the checkpoint's anchors replace the config's. Both families: a different class count
loads everything but the class-specific tensors of the head (transfer learning from COCO weights), and
the log says which.
"""

import argparse
import logging
import sys

import _bootstrap  # noqa: F401

from yolo_osam_jax import checkpoint, config_utils, convert, errors, models


@errors.script_main
def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = config_utils.split_config_args(argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--weights', required=True, help='state dict as .npz or .safetensors')
  parser.add_argument('--config', required=True, help='config file whose model section matches the weights')
  parser.add_argument('--out', required=True, help='output checkpoint directory')
  parser.add_argument('--arch', default=None, help="the weights' model.arch (default: the config's)")
  args = parser.parse_args(rest)
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
  config = config_utils.load_config(args.config, overrides)
  state_dict = convert.load_state_dict_file(args.weights)
  if args.arch:
    config.model.arch = args.arch
  if not models.is_anchor_free(config.model):
    config.model.anchors = convert.anchors_from_state_dict(state_dict, config.model)
  variables = convert.from_state_dict(state_dict, config.model)
  out = checkpoint.save_model(args.out, variables, config)
  print(f'wrote {out} ({sum(1 for k in state_dict if not k.endswith("num_batches_tracked"))} tensors)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
