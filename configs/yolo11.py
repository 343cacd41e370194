"""YOLO11 (anchor-free, ultralytics design) on RAF-DB basic: the paper's strongest Table 1 baseline.

Same recipe as configs/yolov8.py (see there); only the network differs (C3k2 blocks, C2PSA attention
after SPPF, depthwise-separable class branch in the head).
"""

from configs import yolov8


def get_config():
  return yolov8.get_config('yolo11')
