"""Training: yolov5's optimiser as optax transforms (optim), the jitted data-parallel train step (step)
and the epoch loop with validation, checkpoints and exact resume (loop)."""

from yolo_osam_jax.training.loop import (TrainingDiverged, TrainingInterrupted, fitness,
                                         initialize_distributed, load_run_config, resolve_workdir,
                                         train_and_evaluate)
from yolo_osam_jax.training.optim import (Schedule, accumulate_steps, build_optimizer, ema_decay,
                                          param_labels, schedule_from_config)
from yolo_osam_jax.training.step import (TrainState, create_train_state, jit_train_step,
                                         make_detection_loss_fn, make_mesh, shard_batch,
                                         train_step_fn)

__all__ = [
    'Schedule', 'TrainState', 'TrainingDiverged', 'TrainingInterrupted', 'accumulate_steps',
    'build_optimizer', 'create_train_state', 'ema_decay', 'fitness', 'initialize_distributed',
    'jit_train_step', 'load_run_config', 'make_detection_loss_fn', 'make_mesh', 'param_labels',
    'resolve_workdir', 'schedule_from_config', 'shard_batch', 'train_and_evaluate', 'train_step_fn',
]
