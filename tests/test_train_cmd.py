"""`cspnas train`: an exported architecture trained on digits, tested, saved, and resumed."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cspnas.cli import main
from cspnas.data import load_dataset
from cspnas.errors import CspnasError
from cspnas.models import build_model, load_arch
from cspnas.results.export import export_trial
from cspnas.run_format import load_run
from cspnas.train import evaluate
from cspnas.train.full import FullTrainSettings, partial_dir, train_full
from run_fixture import make_run


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models: a second intra-op thread only adds contention on a busy 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exported_arch(tmp_path_factory) -> Path:
    """arch.json as `cspnas export` writes it, then given the wrong I/O (3 channels, 1000 classes)."""
    tmp = tmp_path_factory.mktemp("export")
    export_trial(load_run(make_run(tmp, 4, max_macs=1e12)), tmp / "export", pick="knee", formats=("json",))
    path = tmp / "export" / "arch.json"
    arch = load_arch(path)
    path.write_text(arch.with_io(in_chs=3, num_classes=1000).to_json())
    return path


def test_train_one_epoch_on_digits(exported_arch, tmp_path, capsys):
    out = tmp_path / "trained"
    assert main(["train", str(exported_arch), "--dataset", "digits", "--epochs", "1", "--out", str(out),
                 "--device", "cpu", "--batch-size", "64", "--lr", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1" in printed and "test acc" in printed
    for name in ("weights.safetensors", "metrics.json", "arch.json", "checkpoint.pt", "settings.json"):
        assert (out / name).is_file()

    arch = load_arch(out / "arch.json")
    assert (arch.in_chs, arch.num_classes) == (1, 10)  # follows the data set, not the file
    assert arch.stages == load_arch(exported_arch).stages
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_done"] == 1 and len(metrics["val_acc_per_epoch"]) == 1
    assert metrics["settings"] == {"dataset": "digits", "epochs": 1, "batch_size": 64, "lr": 0.1, "seed": 0}

    # the saved weights reproduce the reported test accuracy
    model = build_model(out / "arch.json")
    model.load_state_dict(load_file(out / "weights.safetensors"))
    data = load_dataset("digits")
    acc = evaluate(model, data.test_x, data.test_y, mean=data.mean, std=data.std, device="cpu")
    assert acc == pytest.approx(metrics["test_acc"])
    assert 0.0 < acc <= 1.0


def test_resume_continues_after_an_interruption(exported_arch, tmp_path, capsys):
    out = tmp_path / "resumable"
    partial = partial_dir(out)

    def interrupt(report):
        raise KeyboardInterrupt  # as if the user hit Ctrl-C after the first epoch

    with pytest.raises(KeyboardInterrupt):
        train_full(exported_arch, out, FullTrainSettings("digits", epochs=2), device="cpu", on_epoch=interrupt)
    # no partial --out; the finished epoch waits in the hidden partial folder
    assert not out.exists() and (partial / "checkpoint.pt").is_file() and not (partial / "metrics.json").exists()

    # without --resume the kept training is protected; with it, training picks up at epoch 2
    assert main(["train", str(exported_arch), "--dataset", "digits", "--epochs", "2", "--out", str(out)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (partial / "checkpoint.pt").is_file() and not out.exists()
    assert main(["train", str(exported_arch), "--out", str(out), "--resume", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "epoch 1/2" not in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_done"] == 2 and len(metrics["val_acc_per_epoch"]) == 2
    assert not partial.exists()


def test_a_failed_training_leaves_no_output_folder(exported_arch, tmp_path):
    """Any error after the folder was made removes it, whether it came before the first checkpoint
    (divergence) or after one (a failing callback); only an interruption keeps a checkpoint."""
    out = tmp_path / "failed"
    with pytest.raises(CspnasError, match="lower --lr"):
        train_full(exported_arch, out, FullTrainSettings("digits", epochs=2, lr=1e6), device="cpu")
    assert list(tmp_path.iterdir()) == []

    def fail(report):
        assert (partial_dir(out) / "checkpoint.pt").is_file()  # the folder and an epoch exist
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train_full(exported_arch, out, FullTrainSettings("digits", epochs=2), device="cpu", on_epoch=fail)
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_other_settings(exported_arch, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(exported_arch), "--dataset", "digits", "--epochs", "1", "--out", str(out),
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    before = (out / "weights.safetensors").read_bytes()
    assert main(["train", str(exported_arch), "--dataset", "digits", "--epochs", "5", "--out", str(out),
                 "--resume"]) == 2
    assert "--epochs 5 differs from the 1" in capsys.readouterr().err
    assert (out / "weights.safetensors").read_bytes() == before


def test_errors_write_nothing(exported_arch, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["train", str(exported_arch), "--dataset", "digits", "--epochs", "1", "--out", str(out),
                 "--resume"]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.json"), "--dataset", "digits", "--epochs", "1",
                 "--out", str(out)]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["train", str(exported_arch), "--epochs", "1", "--out", str(out)]) == 2
    assert "--dataset is required" in capsys.readouterr().err
    assert main(["train", str(exported_arch), "--dataset", "nope", "--epochs", "1", "--out", str(out)]) == 2
    assert "unknown data set" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(CspnasError, match="epochs must be >= 1"):
        train_full(exported_arch, out, FullTrainSettings("digits", epochs=0), device="cpu")
