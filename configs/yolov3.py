"""YOLOv3 on RAF-DB basic, as the paper's repository trains it (Table 1): yolov5's yolov3.yaml (Darknet-53
backbone, FPN head, models/yolov3.py) trained by the yolov5 code with the recipe of
configs/rafdb_basic.py (the fork trains every yaml with the same loss, hyperparameters and AutoAnchor).

Three heads (strides 8/16/32, the yaml's anchors), no attention, no fusion branch; one size, 's' (the
yaml's depth/width 1.0, 61.6 M parameters at 7 classes). LeakyReLU(0.01) as the fork's Conv. COCO
weights: a yolov3 state dict converts with
  python scripts/convert_yolov5.py --weights yolov3.npz --config configs/yolov3.py --out weights/v3
and trains with --config.train.init_from=weights/v3.
"""

from configs import rafdb_basic


def get_config():
  config = rafdb_basic.get_config()
  config.name = 'yolov3'
  config.model.arch = 'yolov3'
  config.model.size = 's'
  config.model.fusion = 'none'
  config.model.attention.kind = 'none'
  config.model.attention.where = 'none'
  return config
