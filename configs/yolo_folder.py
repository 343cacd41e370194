"""Any ultralytics / Roboflow detection folder (data.yaml + images/ + labels/), e.g. the published runs' input.

  python scripts/prepare_data.py --dataset yolo_folder --manual_dir ~/data/faces/data.yaml --config faces
  python scripts/train.py --config configs/yolo_folder.py --config.data.builder_config=faces \
      --config.model.num_classes=7

Training recipe: the paper's RAF-DB one (SGD, lr 0.001, batch 32, 500 epochs, early stopping) at 128².
"""

from configs import base
from configs import rafdb_basic


def get_config():
  config = rafdb_basic.get_config()
  config.name = 'yolo_folder'                  # set model.num_classes to the yaml's nc
  config.data.dataset = 'yolo_folder'
  config.data.builder_config = ''              # the config name given to prepare_data.py
  config.data.max_boxes = base.get_config().data.max_boxes  # several faces per image, unlike RAF-DB
  return config
