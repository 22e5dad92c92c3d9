"""The status line: running trials' epochs, an ETA from training time, one log line per trial-epoch."""
import pytest

from cspnas.search.progress import Progress, Running, Status


def status(done=4, running=(), infeasible=2, epoch_seconds=10.0, **kw) -> Status:
    base = dict(done=done, budget=10, running=tuple(running), infeasible=infeasible, failed=0, pruned=0,
                best_accuracy=0.9, front_size=2, hypervolume=0.5, elapsed_s=100.0, epochs=5,
                epoch_seconds=epoch_seconds, trained_share=(done - infeasible) / done if done else 1.0,
                concurrency=2)
    return Status(**{**base, **kw})


def test_eta_counts_epochs_to_train_not_candidates():
    s = status(running=[Running(7, 1, 20.0), Running(8, 3, 40.0)])
    # 4 candidates left, half of them trained so far: 10 epochs, plus 4 + 2 for the running trials,
    # at 10 s per epoch over 2 concurrent trials
    assert s.eta_s() == pytest.approx(80.0)
    # infeasible candidates finishing is no progress: the same training is left
    assert status(done=6, infeasible=4, running=s.running).eta_s() == pytest.approx(
        (2 * (2 / 6) * 5 + 6) * 10 / 2)
    assert status(epoch_seconds=None).eta_s() is None  # no epoch finished yet: no guess
    assert "ETA -" in status(epoch_seconds=None).line()


def test_line_shows_every_running_trial_and_its_epoch():
    line = status(running=[Running(7, 1, 20.0), Running(8, 3, 65.0)]).line()
    assert "running 2: #7 epoch 1/5 0m20s, #8 epoch 3/5 1m05s" in line and "ETA 1m20s" in line
    assert status(running=[Running(7, 0, 5.0)]).aged(60).running[0].seconds == 65.0


def test_a_log_gets_one_line_per_finished_trial_or_epoch(capsys):
    events = [status(done=0, infeasible=0),
              status(done=0, infeasible=0, running=[Running(0, 0, 1.0)]),  # a start: no line
              status(done=0, infeasible=0, running=[Running(0, 0, 1.0), Running(1, 0, 0.5)]),
              status(done=0, infeasible=0, running=[Running(0, 1, 9.0), Running(1, 0, 8.0)]),  # epoch: line
              status(done=0, infeasible=0, running=[Running(0, 1, 12.0), Running(1, 0, 11.0)]),  # same: none
              status(done=0, infeasible=0, running=[Running(0, 1, 15.0), Running(1, 1, 14.0)]),  # epoch: line
              status(done=1, infeasible=0, running=[Running(1, 1, 14.0)])]  # a finished trial: line
    with Progress(live=False) as p:
        for e in events:
            p.update(e)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and all(line.startswith("[cspnas] ") for line in lines)
    assert "running 2: #0 epoch 1/5" in lines[1] and "#1 epoch 1/5" in lines[2] and lines[3].startswith("[cspnas] 1/10")
