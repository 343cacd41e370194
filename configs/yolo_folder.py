"""Any ultralytics / Roboflow detection folder (data.yaml + images/ + labels/), e.g. the published runs' input.

  python scripts/prepare_data.py --dataset yolo_folder --manual_dir ~/data/faces/data.yaml --config faces
  python scripts/train.py --config configs/yolo_folder.py --config.data.builder_config=faces \
      --config.model.num_classes=7

Training recipe: the paper's RAF-DB one (SGD, lr 0.001, batch 32, 500 epochs, early stopping) at 128².
"""

from configs import base


def get_config():
  config = base.get_config()
  config.name = 'yolo_folder'
  config.model = base.model_config('s', 7)     # set num_classes to the yaml's nc
  config.data.dataset = 'yolo_folder'
  config.data.builder_config = ''              # the config name given to prepare_data.py
  config.data.img_size = 128
  config.data.batch_size = 32
  config.train.optimizer = 'sgd'
  config.train.lr0 = 0.001
  config.train.epochs = 500
  config.train.patience = 100
  return config
