"""Candidate evaluators: how a trial turns an architecture and data into a score per round.

Brief training is today's only evaluator; zero-cost scores or finalist re-training are next.
The Ray trainable (`trainable.py`) builds the model, then calls `evaluator.evaluate(...)`,
which reports one `Round` per epoch (or per step of whatever it does); the trial is complete
after `rounds(train)` of them. `SearchSettings.evaluator` picks one by name; add one with
`@register_evaluator`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cspnas.registry import Registry

if TYPE_CHECKING:  # the settings check names without importing torch
    from torch import nn

    from cspnas.data import ImageData
    from cspnas.train import TrainConfig


@dataclass(frozen=True)
class Round:
    """One report of an evaluation: round number (1-based) and validation accuracy (or score) so far."""

    epoch: int
    val_acc: float


class CandidateEvaluator(ABC):
    """Scores one candidate model on the search's data, one round at a time.

    `evaluate` calls `on_round` after each round and `step_hook` often (between training steps:
    the latency gate pauses there). It raises TrainingDiverged / OutOfMemoryError for a candidate
    that cannot be scored; the trainable records those as failed trials.
    """

    name: ClassVar[str]

    @abstractmethod
    def rounds(self, train: TrainConfig) -> int:
        """How many rounds a full evaluation reports (the trial's full fidelity)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, data: ImageData, train: TrainConfig, *,
                 on_round: Callable[[Round], None], step_hook: Callable[[], None]) -> None:
        """Score `model` on `data`, calling `on_round` after every round."""


EVALUATORS = Registry("evaluator", "a CandidateEvaluator registered in cspnas/search/evaluators.py")
DEFAULT_EVALUATOR = "brief-training"
register_evaluator = EVALUATORS.register  # class decorator: SearchSettings(evaluator=cls.name)
check_evaluator = EVALUATORS.check


def candidate_evaluator(name: str) -> CandidateEvaluator:
    return EVALUATORS.create(name)


@register_evaluator
class BriefTraining(CandidateEvaluator):
    """`train.epochs` epochs of the proxy trainer; the score is validation accuracy after each."""

    name = DEFAULT_EVALUATOR

    def rounds(self, train: TrainConfig) -> int:
        return train.epochs

    def evaluate(self, model, data, train_cfg, *, on_round, step_hook) -> None:
        from cspnas.train import train

        train(model, data, train_cfg, on_epoch=lambda rep: on_round(Round(rep.epoch, rep.val_acc)),
              step_hook=step_hook)
