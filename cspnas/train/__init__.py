"""Fast proxy training and evaluation of candidate networks (see train)."""
from cspnas.train.config import TrainConfig, resolve_device

__all__ = ["EpochReport", "TrainConfig", "TrainResult", "TrainingDiverged", "evaluate", "resolve_device", "train"]


def __getattr__(name: str):
    # Lazy: the training loop needs torch, TrainConfig (read by every CLI parser) does not.
    if name in ("EpochReport", "TrainResult", "TrainingDiverged", "evaluate", "train"):
        from cspnas.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'cspnas.train' has no attribute {name!r}")
