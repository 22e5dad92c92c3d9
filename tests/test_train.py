"""cspnas.train on the real digits data with a tiny real CNN (a second or so per run on 2 cores)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from cspnas.data import ImageData, load_dataset
from cspnas.errors import CspnasError
from cspnas.train import EpochReport, TrainConfig, TrainingDiverged, evaluate, resolve_device, train
from cspnas.train.loop import lr_at


def tiny_cnn(in_chs: int = 1, num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_chs, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


class ConstantClass(nn.Module):
    """Always predicts ``label``; has one parameter so evaluate can find its device."""

    def __init__(self, label: int, num_classes: int = 10, scale: float = 1.0):
        super().__init__()
        self.label, self.num_classes = label, num_classes
        self.scale = nn.Parameter(torch.tensor(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), self.num_classes, device=x.device)
        logits[:, self.label] = 1.0
        return logits * self.scale + 0.0 * x.mean()


FAST = TrainConfig(epochs=3, batch_size=64, lr=0.2)


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits")


def test_learns_digits_well_above_chance(digits: ImageData):
    reports: list[EpochReport] = []
    result = train(tiny_cnn(), digits, FAST, on_epoch=reports.append)
    assert result.final_val_acc > 0.8  # chance is 0.1
    assert result.epochs_done == 3 and not result.stopped_early
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert result.val_acc == tuple(r.val_acc for r in reports)
    assert result.train_loss[-1] < result.train_loss[0]
    assert result.images_per_s > 0 and result.seconds == pytest.approx(sum(r.seconds for r in reports))
    assert all(r.seconds > 0 and r.images_per_s > 0 for r in reports)


def test_same_seed_same_result_other_seed_differs(digits: ImageData):
    a = train(tiny_cnn(seed=0), digits, FAST)
    b = train(tiny_cnn(seed=0), digits, FAST)
    c = train(tiny_cnn(seed=0), digits, replace(FAST, seed=1))
    assert a.val_acc == b.val_acc and a.train_loss == b.train_loss
    assert c.train_loss != a.train_loss  # the loop's own RNG (shuffle, crops, flips) follows cfg.seed


def test_on_epoch_true_stops_early(digits: ImageData):
    result = train(tiny_cnn(), digits, FAST, on_epoch=lambda r: r.epoch == 1)
    assert result.stopped_early and result.epochs_done == 1 and len(result.val_acc) == 1


def test_step_hook_runs_once_per_step_and_eval_batch_and_ragged_batches_are_dropped(digits: ImageData):
    calls: list[int] = []
    cfg = replace(FAST, epochs=2, eval_batch_size=64)
    eval_batches = -(-len(digits.val_x) // 64)  # the evaluation pass pauses between its batches too
    result = train(tiny_cnn(), digits, cfg, step_hook=lambda: calls.append(1))
    assert len(digits.val_x) > 64 and len(calls) == 2 * (len(digits.train_x) // FAST.batch_size + eval_batches)
    assert result.epochs_done == 2
    small = replace(digits, train_x=digits.train_x[:40], train_y=digits.train_y[:40])
    calls.clear()
    train(tiny_cnn(), small, cfg, step_hook=lambda: calls.append(1))
    assert len(calls) == 2 * (1 + eval_batches)  # fewer images than batch_size: one batch of all of them per epoch


def test_huge_learning_rate_raises_training_diverged(digits: ImageData):
    with pytest.raises(TrainingDiverged, match=r"at step \d+ of \d+"):
        train(tiny_cnn(), digits, replace(FAST, lr=1e6, warmup_epochs=0))


def test_model_emitting_inf_diverges_at_step_1(digits: ImageData):
    with pytest.raises(TrainingDiverged, match="at step 1 of"):
        train(ConstantClass(0, scale=float("inf")), digits, FAST)


def test_checkpoint_resume_runs_only_the_missing_epochs(digits: ImageData, tmp_path: Path):
    ckpt = tmp_path / "run" / "ckpt.pt"
    first = train(tiny_cnn(), digits, replace(FAST, epochs=2), checkpoint_path=ckpt)
    assert ckpt.is_file() and first.epochs_done == 2
    seen: list[int] = []
    resumed = train(tiny_cnn(seed=123), digits, FAST, checkpoint_path=ckpt, on_epoch=lambda r: seen.append(r.epoch))
    assert seen == [3]
    assert resumed.epochs_done == 3 and len(resumed.val_acc) == 3 and len(resumed.train_loss) == 3
    assert resumed.val_acc[:2] == first.val_acc
    # The file is plain tensors and primitives: it loads without unpickling arbitrary objects.
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 3 and len(state["history"]["val_acc"]) == 3
    assert not list(ckpt.parent.glob("*.tmp"))


def test_interrupted_then_resumed_equals_uninterrupted(digits: ImageData, tmp_path: Path):
    """Model, optimizer momentum and RNG state all round-trip: resuming changes nothing."""
    straight = train(tiny_cnn(), digits, FAST)
    ckpt = tmp_path / "ckpt.pt"
    stopped = train(tiny_cnn(), digits, FAST, checkpoint_path=ckpt, on_epoch=lambda r: r.epoch == 2)
    assert stopped.stopped_early and stopped.epochs_done == 2
    resumed = train(tiny_cnn(seed=7), digits, FAST, checkpoint_path=ckpt)
    assert resumed.val_acc == straight.val_acc and resumed.train_loss == straight.train_loss


def test_bad_checkpoints_are_user_errors(digits: ImageData, tmp_path: Path):
    ckpt = tmp_path / "ckpt.pt"
    train(tiny_cnn(), digits, replace(FAST, epochs=1), checkpoint_path=ckpt)
    with pytest.raises(CspnasError, match="cannot resume"):
        train(tiny_cnn(num_classes=3), digits, FAST, checkpoint_path=ckpt)
    ckpt.write_bytes(b"garbage")
    with pytest.raises(CspnasError, match="cannot resume"):
        train(tiny_cnn(), digits, FAST, checkpoint_path=ckpt)


def test_eval_on_test_reports_test_accuracy(digits: ImageData):
    model = tiny_cnn()
    result = train(model, digits, replace(FAST, epochs=2), eval_on="test")
    assert result.final_val_acc == evaluate(model, digits.test_x, digits.test_y, mean=digits.mean, std=digits.std)
    with pytest.raises(CspnasError, match="no test split"):
        train(tiny_cnn(), replace(digits, test_x=None, test_y=None), FAST, eval_on="test")
    with pytest.raises(CspnasError, match="eval_on"):
        train(tiny_cnn(), digits, FAST, eval_on="train")


def test_evaluate_counts_correct_predictions(digits: ImageData):
    y = digits.val_y
    model = ConstantClass(3).train()
    for batch_size in (7, 512):
        acc = evaluate(model, digits.val_x, y, mean=digits.mean, std=digits.std, batch_size=batch_size)
        assert acc == pytest.approx(float((y == 3).float().mean()))
    assert model.training  # evaluate restores the mode it found


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 10, 0.5) for s in range(100)]
    assert lrs[0] == pytest.approx(0.05) and lrs[9] == pytest.approx(0.5)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert lrs[10] == pytest.approx(0.5)  # decay starts from the peak
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))
    assert 0 < lrs[-1] <= 0.5 / 90
    assert lr_at(0, 10, 0, 1.0) == 1.0


def test_config_validation_and_devices():
    with pytest.raises(CspnasError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(CspnasError, match="unknown training setting"):
        TrainConfig.from_dict({"epochs": 2, "lr_max": 1.0})
    assert TrainConfig.from_dict({"epochs": 2}).epochs == 2
    assert TrainConfig().crop_padding(8) == 1 and TrainConfig().crop_padding(32) == 4
    assert TrainConfig(crop_pad=0).crop_padding(32) == 0
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CspnasError, match="unknown device|unsupported device"):
        resolve_device("abacus")
    if not torch.cuda.is_available():
        with pytest.raises(CspnasError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_device_step_follows_the_plain_step(digits: ImageData):
    """CUDA's step (device-side lr schedule, fused SGD, losses kept on the device) runs here on the
    CPU in its eager mode: the same losses and weights as the loop's plain step."""
    from cspnas.train.loop import DeviceStep, _make_optimizer

    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.2)
    x = digits.train_x[:256].float() / 255
    y = digits.train_y[:256]
    total, warmup = 12, 4
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                             nn.Linear(8 * 64, 10))

    plain, fast = model(), model()
    opt = _make_optimizer(plain, cfg)
    step = DeviceStep(fast, cfg, torch.device("cpu"), loss_fn, total, warmup)
    losses = []
    for s in range(total):
        xb, yb = x[s % 4 * 64:(s % 4 + 1) * 64], y[s % 4 * 64:(s % 4 + 1) * 64]
        for group in opt.param_groups:
            group["lr"] = lr_at(s, total, warmup, cfg.lr)
        loss = loss_fn(plain(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step(xb, yb)
    assert int(step.step_index) == total and float(step.lr) == pytest.approx(lr_at(total - 1, total, warmup, cfg.lr))
    assert step.losses.tolist() == pytest.approx(losses, rel=1e-4)
    mean, bad = step.epoch_loss(4, 8)
    assert mean == pytest.approx(sum(losses[4:]) / 8, rel=1e-4) and bad is None
    for a, b in zip(plain.state_dict().values(), fast.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5)


def test_device_step_finds_the_first_bad_loss():
    from cspnas.train.loop import DeviceStep

    step = DeviceStep(nn.Linear(2, 2), TrainConfig(), torch.device("cpu"), nn.CrossEntropyLoss(), 6, 0)
    step.losses.copy_(torch.tensor([1.0, 2.0, 3.0, float("nan"), 1.0, float("inf")]))
    assert step.epoch_loss(0, 3) == (2.0, None)
    assert step.epoch_loss(3, 3)[1] == 3


def test_cuda_step_setting_is_checked():
    with pytest.raises(CspnasError, match="--cuda-step must be one of eager, graph, compile"):
        TrainConfig(cuda_step="fast")
