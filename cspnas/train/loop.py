"""The training loop, airbench style: uint8 data lives on the device, batches are augmented there.

No DataLoader and no per-sample Python: each step indexes a batch out of the on-device uint8
tensor, crops/flips it with index gathers, normalises it, and takes an SGD step.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cspnas.data import ImageData, augment_batch
from cspnas.errors import CspnasError
from cspnas.train.checkpoint import History, load_checkpoint, save_checkpoint
from cspnas.train.config import TrainConfig, resolve_device

log = logging.getLogger(__name__)

# The CPU loop's NaN/inf check reads the losses every CHECK_EVERY steps (and at each epoch
# end), so a diverged run stops within a few dozen steps; on CUDA, DeviceStep reads them once
# per epoch so the host never waits for the GPU mid-epoch.
CHECK_EVERY = 25
# Evaluation batches on CUDA: no gradients are kept, so much larger batches fit and cut launches.
CUDA_EVAL_BATCH = 2048
# On CUDA the search's gate is consulted every HOOK_EVERY steps (a measurement then waits at most
# that many steps); the host never waits for the GPU within an epoch (see DeviceStep).
HOOK_EVERY = 8
GRAPH_WARMUP_STEPS = 3  # eager steps before a CUDA graph is captured (lazy state, cuDNN's choices)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message names the first bad step."""


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    train_loss: float
    val_acc: float  # accuracy on the split named by train(eval_on=...)
    seconds: float  # whole epoch, evaluation included
    images_per_s: float  # training images per second of training steps


@dataclass(frozen=True)
class TrainResult:
    val_acc: tuple[float, ...]  # per epoch, on the split named by train(eval_on=...)
    final_val_acc: float
    train_loss: tuple[float, ...]
    epochs_done: int
    seconds: float
    images_per_s: float
    stopped_early: bool


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup to ``peak`` over ``warmup_steps``, then linear decay towards 0 at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return peak * (total_steps - step) / max(1, total_steps - warmup_steps)


def _normalizer(mean: Sequence[float], std: Sequence[float], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with x_uint8 * scale + shift == (x / 255 - mean) / std."""
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * s), -m / s


def _prepare(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = torch.addcmul(shift, x.float(), scale)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and bf16:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mean: Sequence[float], std: Sequence[float],
             batch_size: int = 512, device: torch.device | str | None = None, bf16: bool = True,
             step_hook: Callable[[], None] | None = None) -> float:
    """Top-1 accuracy (0..1) of ``model`` on uint8 images ``x`` with labels ``y``.

    Runs on ``device`` (default: where the model's parameters are), moving batches there as
    needed; counts correct predictions on the device and reads the total once at the end.
    ``step_hook`` runs between batches (as between training steps: a latency measurement
    waits for one batch, not for the whole pass).
    """
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty split")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    scale, shift = _normalizer(mean, std, device)
    on_cuda = device.type == "cuda"
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad(), _autocast(device, bf16):
        for start in range(0, len(x), batch_size):
            xb = _prepare(x[start:start + batch_size].to(device, non_blocking=True), scale, shift, on_cuda)
            yb = y[start:start + batch_size].to(device, non_blocking=True)
            correct += (model(xb).argmax(dim=1) == yb).sum()
            if step_hook is not None:
                step_hook()
    model.train(was_training)
    return correct.item() / len(x)


def eval_batch_size(cfg: TrainConfig, device: torch.device) -> int:
    """The evaluation batch on `device`: the recipe's on the CPU, at least CUDA_EVAL_BATCH on CUDA
    (the accuracy does not depend on it: BatchNorm uses its running statistics in evaluation)."""
    return max(cfg.eval_batch_size, CUDA_EVAL_BATCH) if device.type == "cuda" else cfg.eval_batch_size


def _make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float | torch.Tensor | None = None,
                    fused: bool | None = None) -> torch.optim.SGD:
    """`lr`: a float, or a one-element tensor on the device that the step updates in place (DeviceStep)."""
    # No weight decay on biases and norm gains: shrinking them only fights the normalisation.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.SGD([g for g in groups if g["params"]], lr=cfg.lr if lr is None else lr,
                                momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused)
    if isinstance(lr, torch.Tensor):
        for group in optimizer.param_groups:  # one tensor for every group: the step writes it once
            group["lr"] = lr
    return optimizer


class DeviceStep:
    """One training step that never waits for the host (CUDA's step; it runs on any device).

    The learning rate is a precomputed per-step schedule on the device, read by a fused SGD through a
    tensor; each step's loss is written to a per-step tensor on the device, and a step counter on the
    device says where. The host reads the losses once per epoch (`epoch_loss`, which also finds the
    first NaN/inf step). `mode`: "eager" runs the step as is, "compile" runs a torch.compile'd model
    in it, "graph" captures the whole step (forward, backward, SGD) as one CUDA graph after
    GRAPH_WARMUP_STEPS eager steps and replays it (inputs are copied into its static buffers).
    The recipe is the eager loop's: same schedule, optimizer settings, augmentation and order.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, loss_fn: nn.Module,
                 total_steps: int, warmup_steps: int, mode: str = "eager"):
        self.device, self.loss_fn, self.mode = device, loss_fn, mode
        self.bf16 = cfg.bf16 and device.type == "cuda"
        self.lrs = torch.tensor([lr_at(s, total_steps, warmup_steps, cfg.lr) for s in range(total_steps)],
                                dtype=torch.float32, device=device)
        self.lr = self.lrs[0].clone()
        self.optimizer = _make_optimizer(model, cfg, lr=self.lr, fused=True)
        self.losses = torch.zeros(total_steps, dtype=torch.float32, device=device)
        self.step_index = torch.zeros((), dtype=torch.int64, device=device)  # train() moves it on a resume
        self.forward = torch.compile(model) if mode == "compile" else model
        self.steps = 0  # run by this object
        self.graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None

    def _body(self, x: torch.Tensor, y: torch.Tensor) -> None:
        at = self.step_index.view(1)  # index ops with a device index: no host sync, capturable
        self.lr.copy_(self.lrs.index_select(0, at).view(()))
        # autocast's weight cache must be off while capturing a graph
        with (torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=self.mode != "graph")
              if self.bf16 else contextlib.nullcontext()):
            loss = self.loss_fn(self.forward(x), y)
        loss.backward()
        self.optimizer.step()
        self.losses.index_copy_(0, at, loss.detach().float().view(1))
        self.step_index += 1

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.steps += 1
        if self.mode != "graph" or self.steps <= GRAPH_WARMUP_STEPS:
            self.optimizer.zero_grad(set_to_none=True)
            if self.mode == "graph":  # warm-up on a side stream, as graph capture needs
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    self._body(x, y)
                torch.cuda.current_stream(self.device).wait_stream(side)
            else:
                self._body(x, y)
            return
        if self.graph is None:
            self._static = (x.clone(), y.clone())
            self.optimizer.zero_grad(set_to_none=True)  # grads are then allocated in the graph's pool
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._body(*self._static)
        else:
            self._static[0].copy_(x)
            self._static[1].copy_(y)
        self.graph.replay()

    def epoch_loss(self, first: int, count: int) -> tuple[float, int | None]:
        """Mean loss of steps first..first+count-1 and the first NaN/inf step among them (or None); one
        host sync."""
        chunk = self.losses[first:first + count]
        bad = ~torch.isfinite(chunk)
        total, any_bad = torch.stack([chunk.sum(), bad.any().float()]).tolist()
        return total / count, (first + int(bad.nonzero()[0])) if any_bad else None


def _first_nonfinite(losses: list[torch.Tensor], first_step: int) -> int | None:
    """The step of the first NaN/inf loss in ``losses`` (which start at ``first_step``), or None.

    One host sync for the whole list, instead of one per step.
    """
    bad = ~torch.isfinite(torch.stack(losses))
    return first_step + int(bad.nonzero()[0]) if bad.any() else None


def _diverged(bad: int, epoch: int, total_steps: int, warmup_steps: int, cfg: TrainConfig) -> TrainingDiverged:
    return TrainingDiverged(f"training diverged: loss became NaN/inf at step {bad + 1} of {total_steps} "
                            f"(epoch {epoch + 1}, lr {lr_at(bad, total_steps, warmup_steps, cfg.lr):.3g}); "
                            "lower the learning rate or check the model")


def _eval_split(data: ImageData, eval_on: str) -> tuple[torch.Tensor, torch.Tensor]:
    if eval_on == "val":
        return data.val_x, data.val_y
    if eval_on == "test":
        if data.test_x is None:
            raise CspnasError(f"data set {data.name!r} has no test split; evaluate on 'val' instead")
        return data.test_x, data.test_y
    raise CspnasError(f"eval_on must be 'val' or 'test', got {eval_on!r}")


def _result(history: History, stopped_early: bool) -> TrainResult:
    train_s = sum(history.train_seconds)
    return TrainResult(
        val_acc=tuple(history.val_acc), final_val_acc=history.val_acc[-1] if history.val_acc else float("nan"),
        train_loss=tuple(history.train_loss), epochs_done=len(history.val_acc), seconds=sum(history.seconds),
        images_per_s=sum(history.images) / train_s if train_s > 0 else 0.0, stopped_early=stopped_early)


def train(model: nn.Module, data: ImageData, cfg: TrainConfig, *,
          on_epoch: Callable[[EpochReport], bool | None] | None = None,
          checkpoint_path: str | Path | None = None, eval_on: str = "val",
          step_hook: Callable[[], None] | None = None) -> TrainResult:
    """Train ``model`` (moved in place to ``cfg.device``) on ``data.train_*``; evaluate after each epoch.

    ``on_epoch`` gets an EpochReport after each epoch's evaluation and stops training by
    returning True. With ``checkpoint_path`` the state is saved after every epoch and, if the
    file already exists, training resumes from it (the LR schedule follows ``cfg.epochs``).
    Shuffling and augmentation draw from a generator seeded with ``cfg.seed``; initialising
    the model reproducibly is the caller's job. ``step_hook`` runs between optimizer steps
    and between evaluation batches (the search uses it to pause training while a latency
    measurement runs).
    """
    device = resolve_device(cfg.device)
    on_cuda = device.type == "cuda"
    channels_last = on_cuda and cfg.channels_last
    eval_x, eval_y = (t.to(device) for t in _eval_split(data, eval_on))
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)  # once, as uint8
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    n = len(train_x)
    # Drop the ragged last batch: every step has the same shape (no re-tuning, no 1-sample
    # BatchNorm batch), and the shuffle changes which images sit out each epoch.
    batch_size = min(cfg.batch_size, n)
    steps_per_epoch = n // batch_size
    images_per_epoch = steps_per_epoch * batch_size
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps)
    pad = cfg.crop_padding(data.input_size)
    scale, shift = _normalizer(data.mean, data.std, device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    # CUDA: the step never waits for the host (DeviceStep); the CPU keeps the plain loop below
    device_step = DeviceStep(model, cfg, device, loss_fn, total_steps, warmup_steps, cfg.cuda_step) \
        if on_cuda else None
    optimizer = device_step.optimizer if device_step is not None else _make_optimizer(model, cfg)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    history, start_epoch = History(), 0
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and path.is_file():
        start_epoch, history = load_checkpoint(path, model=model, optimizer=optimizer,
                                               generator=generator, device=device)
        log.info("resuming from %s after epoch %d", path, start_epoch)
        if device_step is not None:  # the schedule continues where the checkpoint left it
            device_step.step_index.fill_(start_epoch * steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = device_step.lr

    for epoch in range(start_epoch, cfg.epochs):
        epoch_start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        pending: list[torch.Tensor] = []  # batch losses not yet checked for NaN
        perm = torch.randperm(n, device=device, generator=generator)
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb = augment_batch(train_x[idx], pad=pad, hflip=data.hflip, generator=generator)
            xb = _prepare(xb, scale, shift, channels_last)
            if device_step is not None:
                device_step(xb, train_y[idx])
                if step_hook is not None and (i % HOOK_EVERY == 0 or i == steps_per_epoch - 1):
                    step_hook()
                continue
            lr = lr_at(step, total_steps, warmup_steps, cfg.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with _autocast(device, cfg.bf16):
                loss = loss_fn(model(xb), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step_hook is not None:
                step_hook()
            pending.append(loss.detach().float())
            if len(pending) == CHECK_EVERY or i == steps_per_epoch - 1:
                bad = _first_nonfinite(pending, step - len(pending) + 1)
                if bad is not None:
                    raise _diverged(bad, epoch, total_steps, warmup_steps, cfg)
                loss_sum += torch.stack(pending).sum()
                pending = []
        if device_step is not None:
            first = epoch * steps_per_epoch
            train_loss, bad = device_step.epoch_loss(first, steps_per_epoch)  # waits for the GPU: honest timing
            if bad is not None:
                raise _diverged(bad, epoch, total_steps, warmup_steps, cfg)
        else:
            train_loss = loss_sum.item() / steps_per_epoch  # waits for the GPU, so the timing is honest
        train_seconds = time.perf_counter() - epoch_start

        acc = evaluate(model, eval_x, eval_y, mean=data.mean, std=data.std,
                       batch_size=eval_batch_size(cfg, device), device=device, bf16=cfg.bf16, step_hook=step_hook)
        seconds = time.perf_counter() - epoch_start
        history.val_acc.append(acc)
        history.train_loss.append(train_loss)
        history.seconds.append(seconds)
        history.train_seconds.append(train_seconds)
        history.images.append(images_per_epoch)
        report = EpochReport(epoch + 1, train_loss, acc, seconds, images_per_epoch / train_seconds)
        log.info("epoch %d/%d: loss %.4f, %s acc %.4f, %.1f s, %.0f img/s",
                 epoch + 1, cfg.epochs, train_loss, eval_on, acc, seconds, report.images_per_s)
        if path is not None:  # before on_epoch, so a callback that kills the run cannot lose it
            save_checkpoint(path, epoch=epoch + 1, model=model, optimizer=optimizer,
                            generator=generator, history=history)
        if on_epoch is not None and on_epoch(report) is True:
            return _result(history, stopped_early=True)
    return _result(history, stopped_early=False)
