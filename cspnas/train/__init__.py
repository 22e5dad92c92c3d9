"""Fast proxy training and evaluation of candidate networks (see train)."""
from cspnas.train.config import TrainConfig, resolve_device
from cspnas.train.loop import EpochReport, TrainingDiverged, TrainResult, evaluate, train

__all__ = ["EpochReport", "TrainConfig", "TrainResult", "TrainingDiverged", "evaluate", "resolve_device", "train"]
