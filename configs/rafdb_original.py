"""YOLO-OSAM on RAF-DB basic `original`: real face boxes in the full photographs, 320², yolov5's recipe.

The starting point for a model that finds and names several faces in a photograph. It differs from the
paper's setting (configs/rafdb_basic.py: the 100×100 *aligned* crops upscaled to 128², lr 0.001), because
a model trained on aligned crops only ever saw images that are one face filling the frame (its box is
the whole image): it cannot locate faces in a photo and needs the two-stage path (`--faces haar`). Here:
  - builder config `original` (official train/test split): the full RAF-DB photographs with the dataset's
    face boxes, so the detector learns where faces are, at many sizes;
  - 320² input: faces in the original photos are often a small part of a picture of a few hundred pixels,
    and 128² would shrink them below the stride-8 head's reach;
  - mosaic 1.0 with yolov5's scale 0.5 / translate 0.1 (hyp.scratch-low): four photos per image give the
    several faces of different sizes per image the detector meets in group photos;
  - yolov5's hyp.scratch-low optimisation (SGD lr0 0.01, momentum 0.937, 3 warm-up epochs, 300 epochs,
    patience 100) instead of the paper's lr 0.001. Start from converted COCO yolov5s weights with
    --config.train.init_from=DIR (scripts/convert_yolov5.py; those weights are AGPL-3.0).

  python scripts/prepare_data.py --dataset rafdb_basic --config original --manual_dir ~/data/RAF-DB
  python scripts/train.py --config configs/rafdb_original.py
"""

from configs import base


def get_config():
  config = base.get_config()
  config.name = 'rafdb_original'
  config.model = base.model_config('s', 7)
  config.data.dataset = 'rafdb_basic'
  config.data.builder_config = 'original'
  config.data.img_size = 320
  config.data.batch_size = 32
  config.data.max_boxes = 16          # mosaic: up to four photos, each with its face box(es)
  config.data.aug.mosaic = 1.0
  config.data.aug.scale = 0.5
  config.data.aug.translate = 0.1
  config.data.aug.fliplr = 0.5
  config.train.optimizer = 'sgd'
  config.train.lr0 = 0.01             # yolov5 hyp.scratch-low
  config.train.lrf = 0.01
  config.train.momentum = 0.937
  config.train.weight_decay = 5e-4
  config.train.warmup_epochs = 3.0
  config.train.epochs = 300
  config.train.patience = 100
  return config
