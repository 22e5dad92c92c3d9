"""Design-knob importance for accuracy (Optuna fANOVA) from a run's study.db, or why there is none."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

# fANOVA fits a random forest: fewer complete trials than this gives noise, not importance.
MIN_TRIALS = 2


@dataclass(frozen=True)
class Importance:
    """Importance (sums to 1) per knob, best first; empty with a `note` when it cannot be computed."""

    values: dict[str, float]
    note: str = ""
    trials: int = 0


def param_importances(study_db: Path, study_name: str | None = None, seed: int = 0) -> Importance:
    """fANOVA importance of each sampled knob for accuracy (objective 0) over the completed trials."""
    if not study_db.is_file():
        # never let sqlite create an empty database inside someone's run directory
        return Importance({}, note=f"no {study_db.name} in the run directory")
    from cspnas.study_db import read_only_uri

    try:
        with read_only_uri(study_db) as uri:  # a dashboard never writes to the run (not even a WAL checkpoint)
            return _importances(f"sqlite:///{uri}&uri=true", study_db.name, study_name, seed)
    except Exception as e:  # noqa: BLE001 - any failure here must only cost the plot, not the dashboard
        logging.getLogger(__name__).debug("parameter importance failed", exc_info=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Importance({}, note=f"could not compute parameter importance: {first}")


def _importances(storage: str, db_name: str, study_name: str | None, seed: int) -> Importance:
    import optuna  # heavy; only the dashboard needs it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = optuna.study.get_all_study_names(storage=storage)
    if not names:
        return Importance({}, note=f"{db_name} holds no study")
    name = study_name if study_name in names else names[0]
    study = optuna.load_study(study_name=name, storage=storage)
    # trained trials only: infeasible candidates are COMPLETE in Optuna too (so that samplers
    # see their constraints) but their accuracy 0 is no measurement
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.user_attrs.get("status", "complete") == "complete"]
    if len(complete) < MIN_TRIALS:
        return Importance({}, note=f"needs at least {MIN_TRIALS} completed trials, the study has {len(complete)}",
                          trials=len(complete))
    trained = optuna.create_study(directions=study.directions)
    trained.add_trials(complete)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning etc.: not for the dashboard reader
        values = optuna.importance.get_param_importances(
            trained, target=lambda t: t.values[0], evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    if not values:
        return Importance({}, note="no knob was sampled in every completed trial", trials=len(complete))
    return Importance({k: float(v) for k, v in values.items()}, trials=len(complete))
