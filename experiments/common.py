"""What the experiment scripts share: the small CIFAR-10 they train on, machine facts, JSON output.

The real data is CIFAR-10 from ``../shared/data/cifar10-jpeg.tar.gz`` (JPEG, ImageFolder layout).
Two CPU cores cannot train hundreds of candidates on 50,000 32x32 images, so the experiments
use a fixed, documented reduction, written once as a real image folder that cspnas's own
``folder`` data set reads (no experiment-only loading path):

  * the first ``train_per_class`` training images of every class (the files are in the
    original, random CIFAR order) and the first ``test_per_class`` test images;
  * downsampled 2x2 by area averaging to 16x16 (as NAS-Bench-201's ImageNet16 does for
    ImageNet), stored as lossless PNG.

cspnas then holds out 10% of the training folder (stratified) as the validation split that
candidates are scored on.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("cspnas") is None:  # allow running from a plain checkout
    sys.path.insert(0, str(REPO))

# the project's read-only data folder beside the checkout; CSPNAS_CIFAR10_JPEG names another copy
SHARED_TARBALL = Path(os.environ.get("CSPNAS_CIFAR10_JPEG", REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"))
CACHE = REPO / ".cache"


def cifar10_jpeg(tarball: Path = SHARED_TARBALL) -> Path:
    """The extracted CIFAR-10 JPEG folder under .cache/ (extracted from ``tarball`` once)."""
    root = CACHE / "cifar10-jpeg"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root
    if not tarball.is_file():
        sys.exit(f"CIFAR-10 not found: neither {root} nor {tarball} exists; extract cifar10-jpeg.tar.gz "
                 f"into {CACHE} (mkdir -p .cache && tar -xzf <path>/cifar10-jpeg.tar.gz -C .cache)")
    CACHE.mkdir(exist_ok=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(CACHE, filter="data")
    return root


def small_cifar10(*, size: int = 16, train_per_class: int = 1000, test_per_class: int = 200,
                  source: Path | None = None) -> Path:
    """An ImageFolder of reduced CIFAR-10 (see module docstring); built once, then reused. Without
    ``source`` and without an extracted .cache/cifar10-jpeg, the images are read straight from the
    tarball: the reduction needs a fifth of its 60,000 files, so the rest is never written out."""
    from PIL import Image

    out = CACHE / f"cifar10-{size}px-{train_per_class}-{test_per_class}"
    if (out / "train").is_dir():
        return out
    wanted = {"train": train_per_class, "test": test_per_class}
    extracted = CACHE / "cifar10-jpeg"
    if source is None and not ((extracted / "train").is_dir() and (extracted / "test").is_dir()) \
            and SHARED_TARBALL.is_file():
        images = _first_images_in_tarball(SHARED_TARBALL, wanted)
    else:
        images = _first_images_in_folder(source or cifar10_jpeg(), wanted)
    CACHE.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=CACHE))
    for split, class_name, stem, file in images:
        dest = staging / split / class_name
        dest.mkdir(parents=True, exist_ok=True)
        with Image.open(file) as im:
            im.convert("RGB").resize((size, size), Image.Resampling.BOX).save(dest / (stem + ".png"))
    os.replace(staging, out)  # atomic: a half-written folder is never mistaken for a finished one
    return out


def _first_images_in_folder(src: Path, wanted: dict[str, int]):
    """(split, class, file stem, file) of the first ``wanted[split]`` files (by name) of every class."""
    for split, per_class in wanted.items():
        for class_dir in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            files = sorted(class_dir.iterdir())[:per_class]
            if len(files) < per_class:
                sys.exit(f"{class_dir} has {len(files)} images, fewer than the {per_class} asked for")
            for f in files:
                yield split, class_dir.name, f.stem, f


def _first_images_in_tarball(tarball: Path, wanted: dict[str, int]):
    """The same images as _first_images_in_folder on the extracted tarball, read from the archive."""
    import io

    with tarfile.open(tarball) as tar:
        files = [m for m in tar.getmembers() if m.isfile()]
        by_class: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
        for m in files:
            parts = Path(m.name).parts  # cifar10-jpeg/<split>/<class>/<file>
            if len(parts) == 4 and parts[1] in wanted:
                by_class.setdefault((parts[1], parts[2]), []).append(m)
        chosen = set()
        for (split, class_name), members in sorted(by_class.items()):
            picked = sorted(members, key=lambda m: m.name)[:wanted[split]]
            if len(picked) < wanted[split]:
                sys.exit(f"{tarball}: {split}/{class_name} has {len(picked)} images, fewer than the "
                         f"{wanted[split]} asked for")
            chosen.update(m.name for m in picked)
        for m in files:  # archive order: one forward pass through the compressed stream
            if m.name in chosen:
                _, split, class_name, name = Path(m.name).parts
                yield split, class_name, Path(name).stem, io.BytesIO(tar.extractfile(m).read())


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    import pandas as pd

    return float(pd.Series(list(a)).rank().corr(pd.Series(list(b)).rank()))


def kendall(a, b) -> float:
    """Kendall's tau-b (no scipy needed; O(n^2) is fine for a few dozen points)."""
    a, b = list(a), list(b)
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    n_a, n_b = concordant + discordant + ties_a, concordant + discordant + ties_b
    return (concordant - discordant) / (n_a * n_b) ** 0.5 if n_a and n_b else float("nan")


def bootstrap_ci(a, b, stat=spearman, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of stat(a, b) over resampled pairs."""
    import numpy as np

    a, b = np.asarray(list(a), float), np.asarray(list(b), float)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(a), len(a))
        if len(set(idx)) > 2:
            v = stat(a[idx], b[idx])
            if v == v:  # skip NaN (all-tied resamples)
                values.append(v)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def train_arch(arch, data, *, epochs: int, seed: int = 0, **overrides) -> dict:
    """Train ``arch`` exactly as a search trial does (same init seed, TrainConfig defaults of the
    search) and return the final validation accuracy, per-epoch accuracies and train time."""
    import time

    import torch

    from cspnas.models import build_model
    from cspnas.train import TrainConfig, train

    cfg = TrainConfig(epochs=epochs, seed=seed, device="cpu", **overrides)
    torch.manual_seed(cfg.seed)  # as cspnas/search/trainable.py: same arch + seed -> same weights
    model = build_model(arch)
    t0 = time.perf_counter()
    result = train(model, data, cfg)
    return {"val_acc": result.final_val_acc, "val_acc_per_epoch": list(result.val_acc),
            "train_s": round(time.perf_counter() - t0, 2)}


def committed_report(path: Path, settings: dict) -> dict:
    """The committed result file, if it was made with ``settings`` (else exit with one line)."""
    committed = json.loads(path.read_text())
    if committed["settings"] != settings:
        sys.exit(f"{path} was made with other settings; run with those to check it")
    return committed


# Brief-training accuracy of one architecture (the first proxy-fidelity row), same seed, data and recipe, on
# machines of this kind: 0.298 (the committing machine), 0.313 (a CPU with AVX-512), 0.292 and 0.301 (AVX2 forced),
# 0.269 (another 2-core AMD EPYC with AVX2, 2026-12-07, every time), 0.314 (1 torch thread). One machine repeats its
# number exactly; another CPU model, kernel set or thread count rounds sums differently and the 45 SGD steps then go
# another way, as far as another seed goes (accuracy_noise.json: seed std 1.5 points). So a committed number is
# compared within the noise of a difference of two runs, never to the last digit.
def cross_machine_tolerance() -> float:
    """3 standard deviations of the difference of two trainings that differ only by seed (sqrt(2) x the pooled seed
    std measured by experiments/accuracy_noise.py): a sound build misses it about once in 370 checks."""
    import math

    noise = json.loads((REPO / "results" / "benchmarks" / "accuracy_noise.json").read_text())["result"]
    return round(3 * math.sqrt(2) * noise["seed_std_pooled"], 3)


SAME_MACHINE_TOLERANCE = 0.002  # one machine, same kernels: re-runs agree (up to 1-2 answers)


def add_reruns_flag(ap) -> None:
    """--reruns for the scripts' --check (see check_reproduces)."""
    ap.add_argument("--reruns", type=int, choices=(1, 2), default=2,
                    help="with --check: re-train each row this often; 2 also checks that two runs on this machine "
                         "agree (training is deterministic here), 1 only compares with the committed number")


def check_reproduces(cases, tolerance: float | None = None, reruns: int = 2) -> None:
    """For each (label, committed accuracy, re-run function): re-run ``reruns`` times on this machine
    (2 by default), print the numbers, and exit 1 unless (a) two re-runs agree within
    SAME_MACHINE_TOLERANCE (the training is deterministic here, so the committed file means something)
    and (b) the committed number is within ``tolerance`` (default: `cross_machine_tolerance`, another CPU is
    another seed). ``reruns=1`` checks (b) only."""
    tolerance = cross_machine_tolerance() if tolerance is None else tolerance
    print(f"committed numbers must lie within {tolerance:.3f} of this machine's (another CPU is another seed)")
    mismatches = 0
    for label, committed, rerun in cases:
        runs = [rerun() for _ in range(reruns)]
        same = max(runs) - min(runs) <= SAME_MACHINE_TOLERANCE
        close = abs(runs[0] - committed) <= tolerance
        mismatches += not (same and close)
        verdict = "ok" if same and close else ("NOT DETERMINISTIC" if not same else "MISMATCH")
        print(f"{label}: committed {committed:.3f}, now {' and '.join(f'{r:.3f}' for r in runs)} {verdict}")
    if mismatches:
        sys.exit(1)


def spread_sample(space, n: int, *, in_chs: int, num_classes: int, input_size: int, seed: int = 0,
                  pool: int = 400, exclude: frozenset = frozenset()) -> list:
    """``n`` distinct architectures spread over the space: draw ``pool`` with Optuna's
    RandomSampler, sort by MACs, keep the ones at evenly spaced ranks (smallest to largest).
    ``exclude``: arch hashes left out of the pool first (to add archs to an earlier sample)."""
    import optuna

    from cspnas.cost import count_macs
    from cspnas.models import build_model

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = {}
    for _ in range(pool):
        trial = study.ask()
        arch = space.sample(trial, in_chs=in_chs, num_classes=num_classes)
        study.tell(trial, 0.0)
        drawn.setdefault(arch.arch_hash(), arch)
    kept = [a for h, a in drawn.items() if h not in exclude]
    sized = sorted(kept, key=lambda a: (count_macs(build_model(a), in_chs=in_chs,
                                                             input_size=input_size).total, a.arch_hash()))
    picks = sorted({round(i * (len(sized) - 1) / max(n - 1, 1)) for i in range(n)})
    return [sized[i] for i in picks]


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
