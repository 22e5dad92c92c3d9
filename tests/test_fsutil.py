"""Writing files: modes follow the umask (nothing is forced to 0644/0755), atomic writes leave the
old file and no temporary behind on a full disk, staged folders appear whole or not at all."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from cspnas.errors import CspnasError, DiskFullError
from cspnas.fsutil import staged_dir, write_atomic
from run_fixture import make_run


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of root and everything under it."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[path.relative_to(root).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), 6, max_macs=1e12)


@pytest.mark.parametrize("mask, folder, file", [(0o077, 0o700, 0o600), (0o022, 0o755, 0o644), (0o002, 0o775, 0o664)])
def test_written_files_and_folders_follow_the_umask(tmp_path, mask, folder, file):
    with umask(mask):
        with staged_dir(tmp_path / "out") as staging:
            write_atomic(staging / "a.txt", "a")
        write_atomic(tmp_path / "b.bin", b"b")
    assert modes(tmp_path / "out") == {".": folder, "a.txt": file}
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == file


def test_cli_outputs_follow_umask_077(run_dir, tmp_path, monkeypatch):
    """export, dashboard and train through the CLI with umask 077: nothing they create is readable
    by group or others (they used to force 0755/0644 on exports and dashboards)."""
    from cspnas.cli import main

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "dashboard.html").unlink(missing_ok=True)
    monkeypatch.setenv("CSPNAS_CACHE_DIR", str(tmp_path / "cache"))
    with umask(0o077):
        assert main(["export", str(run), "--out", str(tmp_path / "exported")]) == 0
        assert main(["dashboard", str(run), "--no-importance"]) == 0
        assert main(["export", str(run), "--format", "json", "--out", str(tmp_path / "arch")]) == 0
        assert main(["train", str(tmp_path / "arch" / "arch.json"), "--dataset", "digits", "--epochs", "1",
                     "--device", "cpu", "--batch-size", "256", "--out", str(tmp_path / "trained")]) == 0
    created = {"exported": modes(tmp_path / "exported"), "trained": modes(tmp_path / "trained"),
               "dashboard.html": {".": stat.S_IMODE((run / "dashboard.html").stat().st_mode)}}
    assert len(created["exported"]) == 6 and len(created["trained"]) == 6  # the folder and its five files
    open_to_others = {f"{top}/{rel}": oct(mode) for top, found in created.items() for rel, mode in found.items()
                      if mode & 0o077}
    assert not open_to_others


def test_a_new_run_follows_the_umask(tmp_path):
    """The run folder, config.yaml and study.db of a new search (create_run_dir, as `cspnas search` calls it)."""
    from cspnas.run_format import create_run_dir

    with umask(0o077):
        create_run_dir(tmp_path / "run", {"settings": {"name": "run"}})
    found = modes(tmp_path / "run")
    assert {"config.yaml", "study.db"} <= set(found)
    assert not {rel: oct(mode) for rel, mode in found.items() if mode & 0o077}


def test_staged_dir_never_overwrites_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with staged_dir(target) as staging:
            write_atomic(staging / "half.txt", "x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    (target / "mine.txt").parent.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(CspnasError, match="in the way"):
        with staged_dir(target) as staging:
            write_atomic(staging / "new.txt", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "mine.txt").read_text() == "keep"


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 64 KiB tmpfs (skipped where mounting is not permitted, e.g. not root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}): needs root with CAP_SYS_ADMIN")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False, timeout=30)


def test_full_disk_is_one_error_naming_the_file_and_keeps_the_old_one(full_tmpfs):
    old = full_tmpfs / "trials.csv"
    write_atomic(old, "old\n")
    with pytest.raises(DiskFullError) as info:
        write_atomic(old, b"x" * 200_000)
    assert str(info.value) == f"disk full writing {old}: free space and re-run"
    assert old.read_text() == "old\n" and sorted(p.name for p in full_tmpfs.iterdir()) == ["trials.csv"]
    # an OSError from a writer inside a staged folder (e.g. shutil.copyfile) names the target too
    with pytest.raises(DiskFullError, match=f"disk full writing {full_tmpfs / 'out'}:"):
        with staged_dir(full_tmpfs / "out") as staging:
            (staging / "big").write_bytes(b"x" * 200_000)
    assert sorted(p.name for p in full_tmpfs.iterdir()) == ["trials.csv"]


@pytest.fixture
def read_only_run(run_dir, tmp_path):
    """A copy of the run that this process cannot write to (a read-only bind mount as root, whom
    chmod does not stop; chmod 0555 otherwise)."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    if os.geteuid() != 0:
        run.chmod(0o555)
        yield run
        run.chmod(0o755)
        return
    try:
        subprocess.run(["mount", "--bind", str(run), str(run)], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot bind-mount here ({e}): needs root with CAP_SYS_ADMIN")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(run)], check=True, capture_output=True, timeout=30)
        yield run
    finally:
        subprocess.run(["umount", "-l", str(run)], check=False, timeout=30)


def test_reading_a_read_only_run_works(read_only_run, tmp_path, capsys):
    """report and export only read RUN: a read-only run (an archive, someone else's results) is fine."""
    from cspnas.cli import main

    with pytest.raises(OSError):
        (read_only_run / "probe").write_text("x")  # the fixture really is read-only
    assert main(["report", str(read_only_run)]) == 0
    assert main(["export", str(read_only_run), "--format", "json", "--out", str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "arch.json").is_file()
    assert main(["dashboard", str(read_only_run), "--no-importance"]) == 2
    assert "read-only" in capsys.readouterr().err
