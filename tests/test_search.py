"""The main job through the real Ray Tune and the real Optuna SQLite storage (CI-sized)."""
import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from cspnas.objectives import ACCURACY_NOISE_POINTS, settled
from test_tables import assert_same_tables, rebuilt

from cspnas.pareto import compute_front
from cspnas.run_format import exact_front, load_run, objectives_of, open_storage
from cspnas.search.runner import run_search
from cspnas.search.settings import CPU_CONCURRENCY, Constraints, SearchSettings, search_training

FINAL = {"complete", "infeasible", "pruned", "failed", "prefiltered"}


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def settings(tmp_path, name, **kw) -> SearchSettings:
    train = search_training(epochs=kw.pop("epochs", 1), **({"lr": kw.pop("lr")} if "lr" in kw else {}))
    base = dict(name=name, results_dir=str(tmp_path), budget=6, train=train, concurrency=2, device="cpu",
                latency_min_run_time_s=0.05)
    base.update(kw)
    return SearchSettings(**base)


def load(run: Path):
    trials = pd.read_csv(run / "trials.csv")
    front = pd.read_csv(run / "pareto.csv")
    study = optuna.load_study(study_name="cspnas", storage=open_storage(run / "study.db"))
    return trials, front, study


def test_search_respects_constraints_and_keeps_consistent_records(tmp_path):
    limits = Constraints(max_params=150_000, max_latency_ms=50.0)
    out = run_search(settings(tmp_path, "ci", budget=8, constraints=limits, sampler="random", concurrency=None),
                     live=False)
    run = out.run_dir
    trials, front, study = load(run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["settings"]["budget"] == 8 and config["settings"]["constraints"]["max_params"] == 150_000
    # not given: derived (on the CPU, 2) and recorded; the accuracy noise the front ties within, recorded
    assert config["settings"]["concurrency"] == CPU_CONCURRENCY
    assert config["settings"]["accuracy_noise"] == ACCURACY_NOISE_POINTS and config["data"]["val"] > 0
    # the driver's accounting: per candidate its wait for the trainers to pause, per session its busy share
    assert ((0 <= trials["cost_wait_seconds"]) & (trials["cost_wait_seconds"] <= trials["cost_seconds"])).all()
    (driver,) = config["driver"]
    assert driver["wall_seconds"] > 0 and driver["busy_share"] + driver["idle_share"] == pytest.approx(1, abs=1e-3)
    assert 0 < driver["cost_share"] <= driver["busy_share"] and driver["cost_wait_share"] <= driver["cost_share"]

    # exactly the budget trained (infeasible candidates use none), all final; the table is the study
    assert (trials["state"] != "infeasible").sum() == 8 and set(trials["state"]) <= FINAL
    # zero-cost scores for the candidates that could train, none for the infeasible (never trained or prefiltered)
    infeasible = trials["state"] == "infeasible"
    assert trials.loc[~infeasible, "zc_naswot"].notna().all() and trials.loc[infeasible, "zc_naswot"].isna().all()
    assert sorted(trials["trial"]) == sorted(t.number for t in study.trials)

    infeasible = trials[trials["state"] == "infeasible"]
    assert len(infeasible) > 0, "the params limit should reject some of the default space"
    assert (infeasible["params"] > 150_000).all() | (infeasible["latency_ms"] > 50.0).all()
    assert infeasible["accuracy"].isna().all() and (infeasible["epochs_done"] == 0).all()
    assert infeasible["violations"].str.contains("params|latency").all()
    # constraint values reached Optuna before tell: positive exactly for the infeasible trials
    state = dict(zip(trials["trial"], trials["state"]))
    for t in study.trials:
        assert set(t.constraints) == {"params", "latency"}, t.number
        assert (max(t.constraints.values()) > 0) == (state[t.number] == "infeasible"), t.number
    feasible_optuna = {t.number for t in study.best_trials}
    assert feasible_optuna <= set(trials.loc[trials["state"] == "complete", "trial"])

    # front: feasible, full fidelity, non-dominated, and equal to a recomputation
    assert len(front) >= 1
    assert (front["params"] <= 150_000).all() and (front["latency_ms"] <= 50.0).all()
    complete = trials[(trials["state"] == "complete") & (trials["fidelity"] >= 1)]
    recomputed = compute_front(settled(complete), objectives_of(config))  # on the confirmed latencies
    assert sorted(recomputed.table["trial"]) == sorted(front["trial"])
    assert out.hypervolume == pytest.approx(recomputed.hypervolume)
    assert front["knee"].sum() == 1

    # the confirmation pass re-timed every front member (more runs than the first timing) and the
    # front stands on those numbers; every latency says which measurer took it
    assert front["confirmed"].all()
    members = trials.set_index("trial").loc[front["trial"]]
    assert list(front["latency_ms"]) == pytest.approx(list(members["latency_confirmed_ms"]))
    assert (members["latency_confirmed_iqr_ms"] >= 0).all()
    assert config["measured_on"]["hostname"] and config["measured_on"]["threads"] == 1
    measured = trials[trials["state"].isin(["complete", "infeasible"])]
    assert measured["measured_on"].map(json.loads).map(lambda m: m["hostname"]).eq(
        config["measured_on"]["hostname"]).all()

    # accuracies are real per-epoch validation results; weights kept for front members only
    for _, r in complete.iterrows():
        hist = json.loads(r["val_acc_per_epoch"])
        assert len(hist) == 1 and hist[-1] == pytest.approx(r["accuracy"]) and 0 <= r["accuracy"] <= 1
    kept = {p.name for p in (run / "weights").glob("*.safetensors")}
    exact = exact_front(trials, config)  # the front is chosen from it (ties); a tied member keeps its weights
    assert kept == {f"trial-{t}.safetensors" for t in exact["trial"]} and set(front["trial"]) <= set(exact["trial"])
    assert_same_tables(load_run(run), rebuilt(run, config, "front", tmp_path))  # the tables are the study's
    # hypervolume recorded after every full-fidelity trial, never decreasing in completion order
    hv = complete.sort_values("completed_at")["hypervolume"].to_numpy()  # as the search went: first timings
    assert np.all(np.diff(hv) >= -1e-12)
    assert hv[-1] == pytest.approx(compute_front(complete, objectives_of(config)).hypervolume)


def test_existing_run_is_never_overwritten(tmp_path):
    from cspnas.errors import CspnasError

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("precious")
    with pytest.raises(CspnasError, match="already exists"):
        run_search(settings(tmp_path, "taken"), live=False)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "precious"


def test_failed_and_prefiltered_trials_are_recorded_and_the_search_goes_on(tmp_path):
    out = run_search(settings(tmp_path, "diverge", budget=3, lr=1e12, prefilter="naswot:0.5", prefilter_warmup=1),
                     live=False)
    trials, front, study = load(out.run_dir)
    failed = trials[trials["state"] == "failed"]
    assert len(failed) == 3 and failed["failure_reason"].str.contains("diverged").all()
    assert front.empty
    states = {t.number: t.state for t in study.trials}
    assert all(states[n] == optuna.trial.TrialState.FAIL for n in failed["trial"])
    # every candidate has its zero-cost scores; --prefilter left low NASWOT scores untrained (no budget used)
    assert trials[["zc_synflow", "zc_naswot", "zc_grad_norm", "zc_params"]].notna().all().all()
    assert (trials["zc_params"] == trials["params"]).all()
    prefiltered = trials[trials["state"] == "prefiltered"]
    assert len(prefiltered) >= 1 and len(trials) == 3 + len(prefiltered) and (prefiltered["epochs_done"] == 0).all()
    assert all(states[n] == optuna.trial.TrialState.PRUNED for n in prefiltered["trial"])
    assert prefiltered["failure_reason"].str.contains("--prefilter naswot:0.5").all()
    config = yaml.safe_load((out.run_dir / "config.yaml").read_text())
    assert config["settings"]["prefilter"] == "naswot:0.5" and config["zero_cost"]["images"] == 64
    from cspnas.results.report import run_totals, totals_line

    assert f"{len(prefiltered)} prefiltered (low zero-cost score" in totals_line(run_totals(load_run(out.run_dir)))


def test_asha_stopped_trials_are_pruned_not_on_the_front(tmp_path):
    out = run_search(settings(tmp_path, "asha", budget=6, epochs=3, scheduler="asha", sampler="random"), live=False)
    trials, front, study = load(out.run_dir)
    assert len(trials) == 6 and set(trials["state"]) <= FINAL
    pruned = trials[trials["state"] == "pruned"]
    assert (pruned["fidelity"] < 1).all() and pruned["accuracy"].isna().all()
    assert set(front["trial"]) <= set(trials.loc[(trials["state"] == "complete") & (trials["fidelity"] == 1), "trial"])
    by_number = {t.number: t for t in study.trials}
    for n in pruned["trial"]:
        assert by_number[n].state == optuna.trial.TrialState.PRUNED


@pytest.mark.slow
def test_pareto_scheduler_stops_trials_off_their_rungs_front(tmp_path):
    """--scheduler pareto through real Tune: stopped trials are PRUNED with the epochs they trained and
    never on the front, and every decision is the rung rule's (replayed on the study: with one trial at
    a time, arrivals come in trial order)."""
    from cspnas.run_format import objectives_of as bound
    from cspnas.search.pareto_rungs import ParetoRungs, rung_epochs

    # accuracy and MACs (exact): no latency noise in the decisions; seed 1's trial 3 is dominated by 1 and 2
    s = settings(tmp_path, "pareto", budget=4, epochs=2, scheduler="pareto", pareto_margin=0.0, sampler="random",
                 concurrency=1, latency_backend="torch", seed=1, objectives=("accuracy", "macs"))
    out = run_search(s, live=False, dashboard=False)
    trials, front, study = load(out.run_dir)
    config = yaml.safe_load((out.run_dir / "config.yaml").read_text())
    assert config["settings"]["scheduler"] == "pareto" and config["settings"]["pareto_margin"] == 0.0
    pruned = trials[trials["state"] == "pruned"]
    assert len(pruned) >= 1 and (pruned["epochs_done"] == 1).all() and (pruned["fidelity"] == 0.5).all()
    assert pruned["failure_reason"].str.contains(r"after 1 epoch.*1-epoch rung, trials? \d.*dominated it, even credited "
                                                 r"with \+0 accuracy").all()
    assert pruned["accuracy"].isna().all()
    assert {t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED} == set(pruned["trial"])
    # the front: complete, full-fidelity trials only, and their recomputed front
    done = trials[(trials["state"] == "complete") & (trials["fidelity"] == 1)]
    assert len(front) >= 1 and set(front["trial"]) <= set(done["trial"])
    assert sorted(compute_front(settled(done), objectives_of(config)).table["trial"]) == sorted(front["trial"])
    # replay the rule on the recorded costs and per-epoch accuracies
    replay = ParetoRungs(bound(config), rung_epochs(2), 0.0)
    for t in sorted(study.trials, key=lambda t: t.number):
        a = t.user_attrs
        for epoch, acc in enumerate(a.get("val_acc_per_epoch", [])[:1], 1):
            go = replay.arrive(a["arch_hash"], t.number, epoch, acc, a).go
            assert go == (a["status"] != "pruned"), (t.number, a["status"])


def test_two_objectives_and_a_memory_limit_hold_across_resume(tmp_path):
    """--objectives accuracy,latency with --max-memory: two-objective study, memory-infeasible trials never
    trained, and a resumed run keeps its objectives. The resume adds --finalists 2 --final-epochs 2: after the
    trials, brief-front members are retrained in the driver and the front is put on their final accuracy."""
    from cspnas.run_format import final_results, pareto_frame

    limits = Constraints(max_memory=60_000)
    run = run_search(settings(tmp_path, "two", budget=3, objectives=("accuracy", "latency"), constraints=limits,
                              sampler="random"), live=False).run_dir
    out = run_search(resume=run, budget=4, given={"finalists": 2, "final_epochs": 2}, live=False)
    trials, final_front, study = load(run)
    front = pd.read_csv(run / "brief_pareto.csv")  # the search's own front, on brief accuracy
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["settings"]["objectives"] == ["accuracy", "latency"] and (trials["state"] != "infeasible").sum() == 4
    assert study.metric_names == ["accuracy", "latency_ms"] and len(study.directions) == 2
    infeasible = trials["state"] == "infeasible"
    assert infeasible.any() and (trials["state"] == "complete").any(), "the limit should split these candidates"
    assert ((trials["memory_bytes"] > 60_000) == infeasible).all() and (trials.loc[infeasible, "epochs_done"] == 0).all()
    for t in study.trials:
        if t.user_attrs["status"] == "complete":
            assert t.values == [t.user_attrs["accuracy"], t.user_attrs["latency_ms"]]
    done = trials[(trials["state"] == "complete") & (trials["fidelity"] >= 1)]
    on_confirmed = compute_front(settled(done), objectives_of(config))  # the front stands on confirmed latencies
    assert sorted(on_confirmed.table["trial"]) == sorted(front["trial"]) and front["confirmed"].all()

    # the finalists: brief-front members, trained for 2 epochs, tested; pareto.csv their front on final accuracy
    results, final = final_results(study), trials[trials["final_val_acc"].notna()]
    assert len(results) == len(final) == min(2, len(front)) and set(final["trial"]) <= set(front["trial"])
    assert (final["final_epochs"] == 2).all() and final["final_test_acc"].between(0, 1).all()
    assert config["settings"]["finalists"] == 2 and config["resumes"][-1]["changed"]["finalists"] == [None, 2]
    by_trial = final.set_index("trial")
    assert (final_front["accuracy"].to_numpy() == by_trial.loc[final_front["trial"], "final_val_acc"].to_numpy()).all()
    assert all((run / w).is_file() for w in final_front["weights"])  # the final weights
    expected, hv = pareto_frame(load_run(run).trials, config)
    assert sorted(expected["trial"]) == sorted(final_front["trial"]) == sorted(out.front["trial"])
    assert out.hypervolume == pytest.approx(hv)


# ---------------------------------------------------------------- cluster device and GPU share

def test_default_gpu_share_spreads_trials_over_gpus():
    from cspnas.search.runner import default_gpus_per_trial

    assert default_gpus_per_trial(1, 2) == 0.5  # one GPU, two trials: they share it
    assert default_gpus_per_trial(4, 4) == 1.0  # one GPU each, not four trials packed on one card
    assert default_gpus_per_trial(8, 2) == 1.0  # never more than one: a trial trains on one device
    assert default_gpus_per_trial(2, 8) == 0.25
    assert default_gpus_per_trial(0, 2) == 0.5  # only used when training on CUDA; no crash at 0


def test_cluster_device_follows_the_cluster_not_the_driver():
    from cspnas.errors import CspnasError
    from cspnas.search.runner import cluster_train_device

    assert cluster_train_device("auto", 4.0) == "cuda"  # CPU-only head, GPU workers
    assert cluster_train_device("auto", 0.0) == "cpu"
    assert cluster_train_device("cuda", 1.0) == "cuda" and cluster_train_device("cpu", 8.0) == "cpu"
    with pytest.raises(CspnasError, match="no GPUs.*--device cpu"):
        cluster_train_device("cuda", 0.0)
    with pytest.raises(CspnasError, match="Ray picks.*--device cuda"):
        cluster_train_device("cuda:1", 2.0)


@pytest.mark.parametrize("flags, bf16", [([], False), (["--train-precision", "bf16"], True),
                                         (["--train-precision", "fp32"], False)])
def test_train_precision_reaches_every_trial_and_survives_resume(flags, bf16):
    """--train-precision (default fp32) sets bf16 autocast + channels_last for the trials' TrainConfig,
    and is stored with the run's settings so a resumed search trains the same way."""
    from cspnas.cli import build_parser
    from cspnas.commands.search_cmd import _settings
    from cspnas.search.runner import trial_train_config
    from cspnas.train import TrainConfig

    settings = _settings(build_parser().parse_args(["search", "--name", "p", *flags]))
    cfg = TrainConfig(**trial_train_config(settings, "cuda"))
    assert (cfg.bf16, cfg.channels_last) == (bf16, bf16)
    resumed = SearchSettings.from_dict(yaml.safe_load(yaml.safe_dump(settings.to_dict())))
    assert trial_train_config(resumed, "cuda") == trial_train_config(settings, "cuda")
