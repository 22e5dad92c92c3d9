"""The Pareto-aware rung rule (`--scheduler pareto`) without Ray: rungs, dominance with a margin,
asynchronous arrivals, the minimum per rung, and the rebuild a resume does."""
import pytest

from cspnas.objectives import DEFAULT_OBJECTIVES, bind
from cspnas.search.pareto_rungs import MIN_RECORDED, ParetoRungs, rung_epochs

REFS = {"macs": 1e8, "latency": 10.0}


def costs(macs: float, latency: float, iqr: float = 0.0) -> dict:
    return {"macs": macs, "latency_ms": latency, "latency_iqr_ms": iqr, "params": 1e5, "memory_bytes": 1e4}


def rungs(margin: float = 0.02, objectives=DEFAULT_OBJECTIVES, epochs: int = 5, min_recorded: int = MIN_RECORDED):
    return ParetoRungs(bind(objectives, REFS), rung_epochs(epochs), margin, min_recorded=min_recorded)


def fill(r: ParetoRungs, epoch: int = 1, n: int = MIN_RECORDED) -> None:
    """`n` strong, cheap records at `epoch` (numbered 100+), so the minimum is met."""
    for i in range(n):
        assert r.arrive(f"fill{i}", 100 + i, epoch, 0.9 - 0.01 * i, costs(1e6 * (1 + i), 1.0 + 0.5 * i)).go


def test_rungs_are_geometric_below_the_full_training():
    assert rung_epochs(5) == (1, 2, 4)
    assert rung_epochs(8) == (1, 2, 4) and rung_epochs(9) == (1, 2, 4, 8)
    assert rung_epochs(2) == (1,) and rung_epochs(1) == ()
    assert rung_epochs(10, grace=2, reduction=3) == (2, 6)


def test_the_first_arrivals_at_a_rung_go_on_whatever_they_are():
    r = rungs()
    fill(r, n=1)
    for i in range(MIN_RECORDED - 1):  # dominated by fill0 in every objective, yet too few recorded to judge
        assert r.arrive(f"bad{i}", i, 1, 0.1, costs(5e7, 9.0)).go
    assert r.counts()[1] == MIN_RECORDED
    assert not r.arrive("bad-late", 9, 1, 0.1, costs(5e7, 9.0)).go  # now there are enough


def test_dominated_beyond_the_margin_stops_within_it_goes_on():
    r = rungs(margin=0.02)
    fill(r)  # fill0: 0.90 accuracy at 1M MACs, 1.0 ms
    worse_costs = costs(2e6, 2.0)
    assert r.arrive("near", 1, 1, 0.885, worse_costs).go  # 0.885 + 0.02 > 0.90: within the margin
    stopped = r.arrive("far", 2, 1, 0.87, worse_costs)  # 0.87 + 0.02 < 0.90: off the front by more
    assert not stopped.go and "trials 100, 101 " in stopped.reason and "1-epoch rung" in stopped.reason
    wide = rungs(margin=0.05)
    fill(wide)
    assert wide.arrive("far", 2, 1, 0.87, worse_costs).go


def test_exact_costs_decide_a_cheap_trial_goes_on_with_low_accuracy():
    r = rungs()
    fill(r)
    assert r.arrive("tiny", 1, 1, 0.2, costs(1e5, 9.0)).go  # fewest MACs of the rung: on the front
    assert r.arrive("fast", 2, 1, 0.2, costs(9e7, 0.5)).go  # fastest
    two = rungs(objectives=("accuracy", "latency"))  # MACs are no objective of this run: they do not help
    fill(two)
    assert not two.arrive("tiny", 1, 1, 0.2, costs(1e5, 9.0)).go


def test_a_latency_lead_inside_the_noise_is_no_lead():
    r = rungs(margin=0.0)
    fill(r)  # fill0: 0.90 at 1M MACs, 1.0 ms
    # same MACs, 0.5% faster (inside the 2% noise floor), less accurate: fill0 dominates it
    assert not r.arrive("noise", 1, 1, 0.8, costs(1e6, 0.995)).go
    assert r.arrive("real", 2, 1, 0.8, costs(1e6, 0.9)).go  # 10% faster: a real lead


def test_arrivals_are_judged_against_the_records_so_far():
    """Asynchronous: a trial that arrives before its dominator goes on; one that arrives after it stops.
    Every arrival is recorded, stopped or not, and judges later ones."""
    early = rungs(min_recorded=1)
    assert early.arrive("a", 0, 1, 0.5, costs(5e6, 5.0)).go  # nobody recorded yet
    assert early.arrive("strong", 1, 1, 0.9, costs(1e6, 1.0)).go
    late = rungs(min_recorded=1)
    assert late.arrive("strong", 1, 1, 0.9, costs(1e6, 1.0)).go
    assert not late.arrive("a", 0, 1, 0.5, costs(5e6, 5.0)).go
    assert late.counts()[1] == 2  # the stopped one reached the rung: recorded
    assert not late.arrive("b", 2, 1, 0.4, costs(6e6, 6.0)).go  # "a" dominates it too (with "strong")
    # an epoch that is no rung decides nothing and records nothing
    assert late.arrive("c", 3, 3, 0.0, costs(9e7, 9.0)).go and late.counts() == {1: 3, 2: 0, 4: 0}


def test_rungs_are_judged_separately():
    r = rungs(min_recorded=1)
    assert r.arrive("strong", 1, 1, 0.9, costs(1e6, 1.0)).go
    assert r.arrive("a", 0, 2, 0.5, costs(5e6, 5.0)).go  # first at the 2-epoch rung
    assert not r.arrive("a", 0, 1, 0.5, costs(5e6, 5.0)).go


def test_a_requeued_architecture_replaces_its_own_record():
    r = rungs(min_recorded=1)
    assert r.arrive("x", 0, 1, 0.9, costs(1e6, 1.0)).go
    assert r.arrive("x", 5, 1, 0.3, costs(1e6, 1.0)).go  # not judged against its own earlier self
    assert r.counts()[1] == 1 and r.records[1]["x"]["trial"] == 5


def test_missing_costs_are_not_judged():
    r = rungs()
    fill(r)
    assert r.arrive("nocost", 1, 1, 0.1, {"macs": None, "latency_ms": 9.0}).go


def test_resume_rebuilds_the_records_and_decides_as_the_uninterrupted_search():
    arrivals = [  # (trial, arch, accuracy per epoch, costs), in order
        (0, "a", [0.5, 0.6, 0.7, 0.75, 0.8], costs(2e6, 2.0)),
        (1, "b", [0.7, 0.8, 0.85, 0.87, 0.9], costs(1e6, 1.0)),
        (2, "c", [0.3], costs(3e6, 3.0)),  # stopped at rung 1 in the first session
        (3, "d", [0.6, 0.7], costs(1.5e6, 4.0)),  # interrupted after 2 epochs
    ]
    straight = rungs(min_recorded=2)
    for trial, arch, history, cost in arrivals:
        for epoch, acc in enumerate(history, 1):
            straight.arrive(arch, trial, epoch, acc, cost)
    study = [(trial, {"arch_hash": arch, "val_acc_per_epoch": history, **cost})
             for trial, arch, history, cost in arrivals]
    study.append((4, {"status": "infeasible", "arch_hash": "e", **costs(9e9, 99.0)}))  # never trained
    study.append((5, {"status": "resampled"}))  # no architecture of its own
    resumed = rungs(min_recorded=2).rebuild(study)
    assert resumed.counts() == straight.counts() == {1: 4, 2: 3, 4: 2}
    assert resumed.records == straight.records
    assert resumed.records[2]["d"] == {"trial": 3, "accuracy": 0.7, "macs": 1.5e6, "latency_ms": 4.0,
                                       "latency_iqr_ms": 0.0}
    new = (6, "f", 0.45, costs(2.5e6, 2.5))
    assert resumed.arrive(new[1], new[0], 1, new[2], new[3]) == straight.arrive(new[1], new[0], 1, new[2], new[3])
    assert not resumed.arrive("g", 7, 2, 0.5, costs(2.5e6, 2.5)).go


def test_accuracy_must_be_an_objective():
    with pytest.raises(ValueError, match="accuracy"):
        ParetoRungs(bind(("latency",), REFS), (1, 2), 0.02)
