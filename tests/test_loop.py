"""The search loop's propose step with a real Optuna study and a real cost meter, and no Ray."""
from dataclasses import replace

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from cspnas.cost import LatencySettings
from cspnas.run_format import full_fidelity, open_storage, open_study
from cspnas.search.costs import CostMeter
from cspnas.search.loop import RESAMPLE_LIMIT, Proposer, count_final, interrupted_to_failed
from cspnas.search.settings import Constraints, SearchSettings, search_training
from cspnas.space.searchspace import load_space, parse_space
from run_fixture import TINY_SPACE_YAML

IN_CHS, NUM_CLASSES, SIZE = 1, 10, 8


@pytest.fixture(scope="module")
def meter():
    return CostMeter(LatencySettings(in_chs=IN_CHS, input_size=SIZE, min_run_time_s=0.01, warmup=1), None, SIZE)


def proposer(tmp_path, meter, **kw):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = SearchSettings(name="t", train=search_training(epochs=2), **kw)
    study = open_study(open_storage(tmp_path / "study.db"), settings.objectives,
                       optuna.samplers.RandomSampler(seed=0), create=True)
    return Proposer(study, settings, load_space("default"), meter, IN_CHS, NUM_CLASSES)


def test_infeasible_candidates_are_told_with_constraints_and_never_proposed(tmp_path, meter):
    p = proposer(tmp_path, meter, budget=2, constraints=Constraints(max_params=150_000))
    proposed = []
    while (c := p.propose()) is not None:
        proposed.append(c.trial.number)
        assert c.trial.user_attrs["feasible"] and c.trial.user_attrs["params"] <= 150_000
        p.tell(c.trial, "complete", accuracy=0.5)
    trials = p.study.get_trials()
    infeasible = [t for t in trials if t.user_attrs["status"] == "infeasible"]
    assert infeasible and proposed, "the limit should split the default space"
    # the budget counts architectures trained; infeasible candidates use none of it
    assert len(proposed) == count_final(p.study) == 2 and len(trials) == 2 + len(infeasible)
    assert p.propose() is None and p.given_up is None
    for t in trials:  # the constraint reached Optuna for every trial, positive exactly when infeasible
        assert set(t.constraints) == {"params"}
        assert (t.constraints["params"] > 0) == (t.user_attrs["status"] == "infeasible")
        assert t.state == TrialState.COMPLETE and t.values[1] == t.user_attrs["macs"]
    assert all(t.user_attrs["epochs_done"] == 0 for t in infeasible)


def test_a_search_that_finds_no_feasible_candidate_stops_at_the_screen_limit(tmp_path, meter):
    p = proposer(tmp_path, meter, budget=3, screen_limit=4, constraints=Constraints(max_params=1_000))
    assert p.propose() is None
    trials = p.study.get_trials()
    assert len(trials) == 4 and {t.user_attrs["status"] for t in trials} == {"infeasible"} and count_final(p.study) == 0
    nearest = min(trials, key=lambda t: t.user_attrs["params"])  # one limit: the least excess is the fewest params
    assert p.given_up.startswith("stopped: 4 candidates screened (--screen-limit 4), 0 of 3 trained")
    assert f"trial {nearest.number} ({nearest.user_attrs['arch_summary']}), breaks params" in p.given_up
    assert p.given_up.endswith("relax --max-params")


def test_a_repeat_of_a_finished_or_running_trial_is_drawn_again(tmp_path, meter):
    p = proposer(tmp_path, meter, budget=4)
    first = p.propose()
    p.tell(first.trial, "complete", accuracy=0.7)
    running = p.propose()  # in flight
    p.study.enqueue_trial(first.trial.params)
    p.study.enqueue_trial(running.trial.params)
    third = p.propose()  # both enqueued repeats are told 'resampled'; the sampler draws a new one
    trials = p.study.get_trials()
    assert [t.user_attrs["status"] for t in trials[2:4]] == ["resampled", "resampled"]
    assert [t.user_attrs["duplicate_of"] for t in trials[2:4]] == [first.trial.number, running.trial.number]
    assert all(t.state == TrialState.FAIL for t in trials[2:4])
    assert third.trial.number == 4 and count_final(p.study) == 1 and p.asked == 3  # repeats use no budget
    hashes = [t.user_attrs["arch_hash"] for t in trials if t.user_attrs["status"] != "resampled"]
    assert len(set(hashes)) == len(hashes)


def test_an_exhausted_space_ends_the_proposals(tmp_path, meter):
    p = proposer(tmp_path, meter, budget=5)
    first = p.propose()
    p.tell(first.trial, "complete", accuracy=0.7)
    for _ in range(RESAMPLE_LIMIT):  # a sampler that only ever proposes the same architecture
        p.study.enqueue_trial(first.trial.params)
    assert p.propose() is None and p.exhausted and count_final(p.study) == 1


def test_an_interrupted_trial_is_requeued_once(tmp_path, meter):
    p = proposer(tmp_path, meter, budget=3)
    left = p.propose()
    assert interrupted_to_failed(p.study) == [left.trial.number]
    again = Proposer(p.study, p.settings, p.space, meter, IN_CHS, NUM_CLASSES).propose()
    assert again.trial.params == left.trial.params and again.trial.user_attrs["requeued_from"] == left.trial.number
    assert interrupted_to_failed(p.study) == []  # interrupted a second time: closed, not re-queued
    closed = p.study.get_trials()[again.trial.number]
    assert closed.user_attrs["status"] == "interrupted" and "not re-queued again" in closed.user_attrs["failure_reason"]
    assert not p.study.get_trials(states=(TrialState.WAITING,))
    assert interrupted_to_failed(p.study) == []  # and a later resume does not re-queue the first one again


def test_pruned_and_failed_trials_are_told_so(tmp_path, meter):
    p = proposer(tmp_path, meter, budget=2)
    a, b = p.propose(), p.propose()
    p.tell(a.trial, "pruned", reason="stopped by the scheduler after 1 epoch(s)")
    p.tell(b.trial, "failed", reason="diverged: loss is nan")
    states = [t.state for t in p.study.get_trials()]
    assert states == [TrialState.PRUNED, TrialState.FAIL]
    assert p.study.get_trials()[1].user_attrs["failure_reason"] == "diverged: loss is nan"


def test_resume_closes_interrupted_trials_and_requeues_them(tmp_path, meter):
    p = proposer(tmp_path, meter, budget=3)
    left = p.propose()  # a driver died while this one trained
    study = optuna.load_study(study_name="cspnas", storage=open_storage(tmp_path / "study.db"))
    assert interrupted_to_failed(study) == [left.trial.number]
    closed = study.get_trials()[0]
    assert closed.state == TrialState.FAIL and closed.user_attrs["status"] == "interrupted"
    again = Proposer(study, p.settings, p.space, meter, IN_CHS, NUM_CLASSES).propose()
    assert again.trial.params == left.trial.params and count_final(study) == 0


def test_full_fidelity():
    assert full_fidelity(2, 2) and full_fidelity(3, 2)
    assert not full_fidelity(1, 2) and not full_fidelity(0, 0)
    done = full_fidelity(pd.Series([2, 1, 0, 3]), pd.Series([2, 2, 0, 2]))
    assert done.tolist() == [True, False, False, True]


def test_the_run_objectives_decide_what_is_told_and_memory_limits_apply(tmp_path, meter):
    p = proposer(tmp_path, meter, budget=8, objectives=("accuracy", "latency"),
                 constraints=Constraints(max_memory=60_000))
    assert [d.name for d in p.study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert p.study.metric_names == ["accuracy", "latency_ms"]
    while (c := p.propose()) is not None:
        p.tell(c.trial, "complete", accuracy=0.5)
    trials = p.study.get_trials()
    for t in trials:
        a = t.user_attrs
        assert t.values == [a["accuracy"], a["latency_ms"]]  # the run's two objectives, in order
        assert (a["memory_bytes"] > 60_000) == (a["status"] == "infeasible") == (t.constraints["memory"] > 0)
    assert {t.user_attrs["status"] for t in trials} == {"complete", "infeasible"}


def test_the_loop_counts_every_running_trial_and_times_epochs(tmp_path, meter, capsys):
    from cspnas import run_format
    from cspnas.search.loop import SearchLoop

    settings = SearchSettings(name="loop", train=search_training(epochs=2), budget=4, concurrency=2)
    run = tmp_path / "loop"
    config = run_format.new_config(settings=settings.to_dict(), space_yaml="", space_name="default", data={},
                                   num_classes=NUM_CLASSES, in_chs=IN_CHS, input_size=SIZE, train_device="cpu",
                                   latency={}, references={"macs": 1e9, "latency": 100.0})
    run_format.create_run_dir(run, config)
    study = run_format.open_study(run_format.open_storage(run / "study.db"), settings.objectives,
                                  optuna.samplers.RandomSampler(seed=1))
    loop = SearchLoop(settings=settings, space=load_space("default"), config=config, run_dir=run, study=study,
                      meter=meter, in_chs=IN_CHS, num_classes=NUM_CLASSES, trial_spec={}, live=False, dashboard=False)
    loop.prepare()
    with loop.progress:
        loop.refresh()
        a, b = loop.start("a"), loop.start("b")  # what Ray's suggest asks for
        assert {a["trial"], b["trial"]} == {0, 1} and len(loop.status().running) == 2
        assert loop.status().eta_s() is None  # nothing has trained yet
        loop.on_result("a", {"epoch": 1, "train_seconds": 3.0, "val_acc_per_epoch": [0.5]})
        s = loop.status()
        assert [(r.trial, r.epochs_done) for r in s.running] == [(0, 1), (1, 0)]
        assert s.epoch_seconds == pytest.approx(3.0) and s.eta_s() == pytest.approx((2 * 2 + 1 + 2) * 3.0 / 2)
        loop.on_complete("a", {"epoch": 2, "status": "complete", "val_acc": 0.75, "train_seconds": 6.0,
                               "val_acc_per_epoch": [0.5, 0.75]}, error=False)
        loop.on_complete("b", {"epoch": 1, "status": "running", "val_acc": 0.4, "train_seconds": 3.0}, error=False)
    trials = run_format.load_run(run).trials.set_index("trial")
    assert trials.loc[0, "state"] == "complete" and trials.loc[0, "accuracy"] == 0.75
    assert trials.loc[1, "state"] == "pruned"  # stopped before its last epoch: never a front point
    log = capsys.readouterr().err
    assert "running 2: #0 epoch 1/2" in log and log.count("[cspnas]") == 4  # start, epoch, two tells




def test_prefilter_skips_low_scores_after_the_warm_up_and_a_resume_keeps_the_ranks(tmp_path):
    from cspnas.data import load_dataset
    from cspnas.search.loop import count_screened
    from cspnas.train.quantized import image_batch

    scored = CostMeter(LatencySettings(in_chs=IN_CHS, input_size=SIZE, min_run_time_s=0.005, warmup=1), None, SIZE,
                       score_batch=image_batch(load_dataset("digits", split_seed=0), 8, seed=0))
    p = proposer(tmp_path, scored, budget=3, prefilter="params:0.5", prefilter_warmup=1)
    p.space = parse_space(TINY_SPACE_YAML)  # small candidates: this test is about the rule, not the costs
    while (c := p.propose()) is not None:
        p.tell(c.trial, "complete", accuracy=0.5)
    trials = p.study.get_trials()
    status = [t.user_attrs["status"] for t in trials]
    assert "prefiltered" in status and count_final(p.study) == 3
    assert count_screened(p.study) == status.count("prefiltered") + 3  # the screen limit counts them
    earlier: list[float] = []  # the rule, recomputed: rank among the feasible candidates scored before
    for t in trials:
        a = t.user_attrs
        assert all(a[k] is not None for k in ("zc_synflow", "zc_naswot", "zc_grad_norm")) and a["zc_params"] == a["params"]
        rank = (sum(v < a["zc_params"] for v in earlier) + 0.5 * sum(v == a["zc_params"] for v in earlier)) / max(1, len(earlier))
        assert (a["status"] == "prefiltered") == (len(earlier) >= 1 and rank < 0.5), (t.number, rank)
        if a["status"] == "prefiltered":
            assert t.state == TrialState.PRUNED and a["prefilter_rank"] == pytest.approx(rank)
            assert "--prefilter params:0.5" in a["failure_reason"] and a["epochs_done"] == 0
        earlier.append(a["zc_params"])
    # a resume ranks against every feasible candidate of the study, prefiltered ones included
    again = Proposer(p.study, replace(p.settings, budget=4), p.space, scored, IN_CHS, NUM_CLASSES)
    again.propose()
    assert len(again._scored) >= len(earlier) + 1 and set(earlier) <= set(again._scored.values())
