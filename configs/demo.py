"""`make demo`: YOLO-OSAM on the embedded synthetic face set, small enough to train in minutes on CPU.

Same network family as the paper's (published fusion topology, OSAM gates with the paper's softmax), at
a reduced width and depth; yolov5's loss, optimiser and schedule, shortened to a few dozen epochs.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.name = 'demo'

  config.model.width = 0.25
  config.model.depth = 0.33

  config.data.dataset = 'synthetic_faces'
  config.data.builder_config = 'demo'
  config.data.data_dir = 'runs/demo/data'
  config.data.img_size = 128
  config.data.batch_size = 32
  config.data.max_boxes = 12  # 3 faces per image, 4 images per mosaic

  config.train.optimizer = 'sgd'
  config.train.lr0 = 0.01
  config.train.epochs = 40
  config.train.warmup_epochs = 3.0
  config.train.warmup_min_iters = 0
  config.train.patience = 0
  config.train.nominal_batch = 32

  config.eval.batch_size = 50
  return config
