"""`make demo`: YOLO-OSAM on the embedded synthetic face set, small enough to train in minutes on CPU.

Same network family as the paper's (published fusion topology, OSAM gates with the paper's softmax), at
a reduced width and depth; yolov5's loss and schedule, shortened, with the deviations below.

Deviations from the paper / hyp.scratch-low, all for a short CPU run (measured in the demo's report):
  * no mosaic and scale ±0.2 instead of mosaic 1.0 + scale ±0.5: at 128² a mosaic quarter shrinks the
    demo's 32–100 px faces to 8–25 px, where brows, eyes and mouth are a pixel or two and the
    expression is unreadable; the detector then finds faces but never learns their classes;
  * Adam (lr 0.005) instead of SGD 0.01: class learning starts sooner in a few hundred steps;
  * loss.cls 8 instead of 0.5: yolov5's class gain 0.5·nc/80·3/nl ≈ 0.03 leaves the class loss far
    below box/obj, so classes are learned last, long after a short schedule ends.
  * 15 epochs of 1200 scenes (the demo builder config): the class loss only starts falling after
    ~250 steps, and more scenes per step generalise better than more epochs over fewer.
Measured on the shared 2-core CPU: 5.1 min in all, test mAP50 0.807, face accuracy 0.890.
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
  config.data.max_boxes = 4  # ≤ 3 faces per image, no mosaic
  config.data.aug.mosaic = 0.0
  config.data.aug.scale = 0.2

  config.loss.cls = 8.0

  config.train.optimizer = 'adam'
  config.train.lr0 = 0.005
  config.train.lrf = 0.05
  config.train.epochs = 15
  config.train.val_every = 5  # validation is not free on 2 cores; best/ is chosen among these epochs
  config.train.warmup_epochs = 1.0
  config.train.warmup_min_iters = 0
  config.train.patience = 0
  config.train.nominal_batch = 32

  config.eval.batch_size = 50
  return config
