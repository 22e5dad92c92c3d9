"""Flags given with `--resume RUN`: those that define the search must match the run, the rest
(budget, concurrency, cluster address, per-trial resources, finalists) may change and are recorded.

A resume that changed the data, space, epochs, objectives, constraints, seed, sampler or latency
settings would mix two searches in one study, so each such difference is refused by name. A
refused resume writes nothing: this check runs before the run is locked or touched.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cspnas.errors import CspnasError
from cspnas.objectives import constraint_flags
from cspnas.study_db import check_study_db, trial_counts

# Settings a resume may change (leaf names, so they hold however the settings are nested);
# every other setting defines the search.
# (latency_node too: the measurer's fingerprint is checked instead, cspnas.search.measurer)
CHANGEABLE = frozenset({"budget", "screen_limit", "concurrency", "address", "cpus_per_trial", "gpus_per_trial",
                        "trials_per_gpu", "latency_node", "finalists", "final_epochs", "worker_trials"})
# Not settings of the search but of where it is: a resume names RUN instead.
LOCATION = frozenset({"name", "results_dir"})


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:  # a tuple setting is a list once in config.yaml
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def flag(key: str) -> str:
    """The search flag of a setting: a limit's flag is its objective's (e.g. --target-latency)."""
    leaf = key.rsplit(".", 1)[-1]
    limits = {s.limit: s.flag for s in constraint_flags()}
    return limits.get(leaf) or "--" + leaf.replace("_", "-")


def resume_settings(run_dir, recorded: dict[str, Any], given: dict[str, Any], used: int) -> tuple[dict, dict]:
    """The run's settings with the changeable flags of `given` applied, and what changed
    ({key: [before, after]}). `recorded` is config.yaml's settings; `given` maps flattened setting
    keys to the values of the flags the user gave; `used` is the budget already spent."""
    flat = flatten(recorded)
    changed = {k: [flat.get(k), v] for k, v in given.items()
               if k not in LOCATION and (k not in flat or flat[k] != v)}
    fixed = [k for k in changed if k.rsplit(".", 1)[-1] not in CHANGEABLE]
    if fixed:
        what = "; ".join(f"{flag(k)} {_show(changed[k][1])} (the run has {_show(changed[k][0])})" for k in fixed)
        raise CspnasError(f"--resume {run_dir}: {what}: these define the search and cannot change on resume; "
                          "drop them, or start a new search with another --name")
    budget = changed.get("budget")
    if budget is not None and budget[1] < used:
        raise CspnasError(f"--budget {budget[1]}: {run_dir} has already used {used} of its budget; "
                          f"pass --budget {used} or more")
    out = _nested_copy(recorded)
    for key, (_, new) in changed.items():
        node = out
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = new
    return out, changed


def record_resume(config: dict[str, Any], changed: dict[str, list], used: int) -> None:
    """Append this resume to config.yaml's history (when, budget used so far, what changed)."""
    entry = {"at": dt.datetime.now().isoformat(timespec="seconds"), "trials_done": used}
    if changed:
        entry["changed"] = {k: list(v) for k, v in changed.items()}
    config.setdefault("resumes", []).append(entry)


def _show(value: Any) -> str:
    return "unset" if value is None else str(value)


def _nested_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _nested_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def check_resume(run_dir: Path, given: dict[str, Any]) -> tuple[dict, dict, int, int]:
    """Everything a resume must pass before it touches RUN: the run's config, a sound study.db,
    the flags. Returns (config with the changes applied, the changes, budget used, trials in the study)."""
    from cspnas.run_format import STUDY, TRAINED_STATES, read_config
    from cspnas.search.settings import SearchSettings

    config = read_config(run_dir)
    if not (run_dir / STUDY).is_file():
        raise CspnasError(f"{run_dir}: study.db is missing, nothing to resume; start a new run with another --name")
    check_study_db(run_dir / STUDY)
    used, trials = trial_counts(run_dir / STUDY, TRAINED_STATES)
    # compared in today's layout: a run of cspnas <= 0.1.0 recorded the trials' training flat
    recorded = SearchSettings.from_dict(config["settings"]).to_dict()
    config["settings"], changed = resume_settings(run_dir, recorded, given, used)
    return config, changed, used, trials


def sampler_seed(seed: int, trials: int) -> int:
    """The sampler's seed: a resumed search continues instead of replaying the run's first draws,
    so it is seeded from the seed and the number of trials the study already has (a new search
    uses the seed itself)."""
    return seed if trials == 0 else (seed * 1_000_003 + trials) % 2**32
