"""Exports a model checkpoint: ONNX (forward + decoding, NMS-free) or a yolov5-layout state dict.

  python scripts/export.py --checkpoint runs/train/1/best --format onnx [--img 128] [--batch 1]
  python scripts/export.py --checkpoint runs/train/1/best --format onnx --dynamic-batch --out best.onnx
  python scripts/export.py --checkpoint runs/train/1/best --format safetensors  # → best.safetensors

ONNX input `images` float32 [B, S, S, 3] RGB in [0, 1] (NHWC), output `predictions` [B, N, 5 + nc]
(cx, cy, w, h in input pixels, objectness, class probabilities); run yolov5-style NMS on it. The class
names, strides and input size are in the file's metadata. The npz / safetensors state dict has PyTorch
keys and layouts (`model.<i>.conv.weight`, ...) for yolov5 tooling, and `scripts/convert_yolov5.py`
imports it back.
"""

import argparse
import sys
import time

import _bootstrap  # noqa: F401

from yolo_osam_jax import errors, export


@errors.script_main
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--checkpoint', required=True, help='model checkpoint directory')
  parser.add_argument('--format', required=True, choices=export.FORMATS)
  parser.add_argument('--out', default=None, help='output file (default: <checkpoint>.<format>)')
  parser.add_argument('--img', type=int, default=None, help='ONNX input side (default: the training size)')
  parser.add_argument('--batch', type=int, default=1, help='ONNX fixed batch size')
  parser.add_argument('--dynamic-batch', action='store_true', help='ONNX batch dimension left symbolic')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  if args.format != 'onnx' and (args.img or args.dynamic_batch or args.batch != 1):
    parser.error('--img, --batch and --dynamic-batch apply to --format onnx only')
  start = time.time()
  try:
    path = export.export_checkpoint(args.checkpoint, args.format, args.out, img_size=args.img,
                                    batch=args.batch, dynamic_batch=args.dynamic_batch)
  except (OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {path} ({args.format}, {time.time() - start:.1f} s)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
