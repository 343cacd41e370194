"""Exporting a model checkpoint: ONNX (forward pass + decoding) and PyTorch-layout state dicts.

ONNX (through jax2onnx): input `images` float32 [B, S, S, 3] RGB in [0, 1] (NHWC, letterboxed as
`Recognizer` does), output `predictions` float32 [B, N, 5 + nc] = (cx, cy, w, h in input pixels,
objectness, class probabilities) for the yolov5 family, [B, N, 4 + nc] without the objectness column
for the anchor-free family (YOLOv8, YOLO11); NMS-free, exactly the JAX model's decoded output. The batch
is fixed (`batch`) or dynamic (a symbolic `B`). The file's metadata holds the class names, strides,
input size and the output's columns (`output`) so runtimes can label detections without the config.

npz / safetensors: the family's PyTorch state dict (`convert.to_state_dict`: yolov5 or ultralytics
layout), which `scripts/convert_yolov5.py` or PyTorch tooling can load again.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from yolo_osam_jax import checkpoint, convert, errors, models
from yolo_osam_jax.predict import class_names_of, max_stride_of

FORMATS = ('onnx', 'npz', 'safetensors')
# The `predictions` columns, by whether the model is anchor-free (nms.with_objectness explains why).
OUTPUT_LAYOUTS = {False: 'cx, cy, w, h (input pixels), objectness, class probabilities; no NMS',
                  True: 'cx, cy, w, h (input pixels), class probabilities (anchor-free: no objectness); '
                        'no NMS'}
ONNX_OPSET = 18


def export_onnx(variables, config, path: str, *, img_size: int | None = None, batch: int = 1,
                dynamic_batch: bool = False, class_names=None) -> str:
  """Writes the ONNX model of `variables` (config = the full checkpoint config) to `path`; returns it."""
  import onnx  # pylint: disable=g-import-not-at-top
  from jax2onnx import to_onnx  # pylint: disable=g-import-not-at-top

  module = models.build(config.model)
  stride = max_stride_of(module)
  img_size = int(config.data.img_size if img_size is None else img_size)  # 0 is an error, not a default
  if img_size <= 0 or img_size % stride:
    raise errors.InputError(f'img_size must be a positive multiple of the largest stride {stride}, got {img_size}')
  if not dynamic_batch and batch < 1:
    raise errors.InputError(f'batch must be ≥ 1, got {batch}')
  names = list(class_names) if class_names is not None else class_names_of(config)
  tree = jax.tree_util.tree_map(jnp.asarray, {k: variables[k] for k in ('params', 'batch_stats')
                                              if k in variables})

  def forward(images):
    predictions, _ = module.apply(tree, images, train=False)
    return predictions.astype(jnp.float32)

  shape = ('B' if dynamic_batch else int(batch), img_size, img_size, 3)
  proto = to_onnx(forward, [shape], model_name='yolo_osam', opset=ONNX_OPSET,
                  input_names=['images'], output_names=['predictions'])
  # jax2onnx stamps some intermediate shapes in NHWC order on NCHW tensors (onnxruntime then warns
  # "Error merging shape info"); intermediate value_info is optional, so leave shape inference to the runtime.
  del proto.graph.value_info[:]
  strides = list(module.strides)
  metadata = {'names': json.dumps(dict(enumerate(names))), 'stride': str(stride),
              'strides': json.dumps(strides), 'imgsz': json.dumps([img_size, img_size]),
              'batch': 'dynamic' if dynamic_batch else str(batch), 'layout': 'NHWC RGB float32 [0, 1]',
              'output': OUTPUT_LAYOUTS[models.is_anchor_free(config.model)]}
  for key, value in metadata.items():
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # One self-contained file: yolov5s weights (~28 MB) are far below protobuf's 2 GB limit.
  onnx.save_model(proto, path, save_as_external_data=False)
  return path


def export_state_dict(variables, config, path: str) -> str:
  """Writes the PyTorch state dict (yolov5 or ultralytics layout, by arch) as .npz or .safetensors."""
  if not path.endswith(('.npz', '.safetensors')):
    raise errors.InputError(f'{path}: a state dict file name ends in .npz or .safetensors')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  convert.save_state_dict_file(convert.to_state_dict(variables, config.model), path)
  return path


def default_output(checkpoint_dir: str, fmt: str) -> str:
  """runs/train/1/best → runs/train/1/best.<fmt> (beside the checkpoint, as yolov5 names exports)."""
  return os.path.abspath(checkpoint_dir).rstrip(os.sep) + '.' + fmt


def export_checkpoint(checkpoint_dir: str, fmt: str, out: str | None = None, *, img_size: int | None = None,
                      batch: int = 1, dynamic_batch: bool = False) -> str:
  """Exports the checkpoint at `checkpoint_dir` as `fmt` (onnx | npz | safetensors); returns the file."""
  if fmt not in FORMATS:
    raise errors.InputError(f'format must be one of {", ".join(FORMATS)}, got {fmt!r}')
  config, variables = checkpoint.load_model(checkpoint_dir)
  out = out or default_output(checkpoint_dir, fmt)
  if fmt == 'onnx':
    return export_onnx(variables, config, out, img_size=img_size, batch=batch, dynamic_batch=dynamic_batch)
  if not out.endswith('.' + fmt):
    raise errors.InputError(f'{out}: --format {fmt} writes a .{fmt} file')
  return export_state_dict(variables, config, out)


def onnx_metadata(path: str) -> dict[str, str]:
  """The metadata written by `export_onnx` (names, strides, input size, ...)."""
  import onnx  # pylint: disable=g-import-not-at-top
  model = onnx.load(path, load_external_data=False)
  return {p.key: p.value for p in model.metadata_props}
