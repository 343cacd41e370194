"""YOLO-OSAM on CK+ (7 classes with contempt), as the paper trained it (SPEC §4).

Paper: Adam (β1 = momentum 0.937, β2 0.999), batch 32, lr 0.001, 500 epochs with early stopping, the
48×48 CK+48 frames upscaled to 64², image-level random 70/10/20 split (`ck48`; subjects leak across
splits, as in the paper; `ck48_kfold` gives subject-wise folds). The published code's yolov5 defaults
differ in lr0 (0.01) and optimizer (SGD); the paper's values are used.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.name = 'ckplus'
  config.model = base.model_config('s', 7)
  config.data.dataset = 'ckplus'
  config.data.builder_config = 'ck48'
  config.data.img_size = 64
  config.data.batch_size = 32
  config.data.max_boxes = 4
  config.train.optimizer = 'adam'
  config.train.lr0 = 0.001
  config.train.momentum = 0.937      # Adam β1
  config.train.epochs = 500
  config.train.patience = 100
  return config
