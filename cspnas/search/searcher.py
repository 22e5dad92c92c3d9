"""The Ray Tune adapter of the search loop: a `Searcher` that forwards to `SearchLoop`.

Why not Ray's OptunaSearch: its stock behaviour is wrong for NAS (constraints computed from
reported metrics are silently lost, ASHA-stopped trials are told as COMPLETE with a truncated
accuracy; see shared/design/stack-notes.md), and changing it meant reaching into its private
study and trial maps. The loop owns the Optuna study; this class only translates Tune's calls.

The loop's state lives in study.db; Ray's pickled searcher checkpoints are not used (resume
reads the study), so `save`/`restore` are no-ops.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray.tune.search import Searcher

from cspnas.objectives import OBJECTIVES

if TYPE_CHECKING:
    from cspnas.search.loop import SearchLoop


# What Ray sees: the accuracy objective, as the trainable reports it per epoch (ASHA stops on it).
# The other objectives are measured before training and told by the loop, so Ray never needs them.
METRIC, MODE = "val_acc", OBJECTIVES["accuracy"].direction


class LoopSearcher(Searcher):
    def __init__(self, loop: "SearchLoop"):
        super().__init__(metric=METRIC, mode=MODE)
        self._loop = loop

    def suggest(self, trial_id: str) -> dict | str | None:
        config = self._loop.start(trial_id)
        return Searcher.FINISHED if config is None else config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._loop.on_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._loop.on_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        return None

    def restore(self, checkpoint_path: str) -> None:
        return None

    def __getstate__(self) -> dict:
        # Ray may pickle the searcher with the experiment state; the loop (study, files) cannot
        # and need not travel, since resume rebuilds everything from study.db.
        return {"_metric": self._metric, "_mode": self._mode}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
