"""Fault injection: damaged files, files of another run, leftovers of a killed writer, signals
at random moments, a full disk (issue 24).

Each test here fails on the code before issue 24: a damaged or NaN checkpoint was evaluated as if
fine, a checkpoint of another run was resumed, orphaned temporary files stayed, a cut metrics row
blocked ``--resume`` with a ``TypeError``, and a cut ``config.json`` did not name the file.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from logtrick import rl
from logtrick.cli import main
from logtrick.rl import runs
from logtrick.rl.agent import FORMAT

TINY = dict(
    env="CartPole-v1",
    num_envs=2,
    num_steps=8,
    num_minibatches=1,
    update_epochs=1,
    total_steps=48,
    eval_every=0,
    checkpoint_every=16,
    anneal_lr=False,
    progress=False,
    tensorboard=False,
    plot=False,
)


def _run(out: Path, **fields: object) -> Path:
    config = rl.Config(**{**TINY, **fields, "out": str(out)})  # type: ignore[arg-type]
    return rl.train(config).run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Finished tiny runs, copied by each test that changes them."""
    out = tmp_path_factory.mktemp("runs")
    return {
        "ppo0": _run(out, algo="ppo", seed=0),
        "a2c0": _run(out, algo="a2c", seed=0),
        "ppo1": _run(out, algo="ppo", seed=1),
    }


@pytest.fixture
def run_dir(trained: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained["ppo0"], tmp_path / "run"))


def _resume(run_dir: Path, total_steps: int = 64) -> rl.TrainResult:
    """``rl.train(resume=run_dir)`` on to ``total_steps`` (the run's own config otherwise)."""
    config = rl.Config.from_dict(runs.read_config(run_dir))
    return rl.train(dataclasses.replace(config, total_steps=total_steps), resume=run_dir)


def _cli_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """The one-line message of a command that fails with exit code 2."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _damage(path: Path, seed: int, length: int = 300) -> None:
    """Overwrite ``length`` bytes of the tensors' region of a checkpoint with 0xFF (a NaN)."""
    with zipfile.ZipFile(path) as archive:
        starts = [i.header_offset for i in archive.infolist() if "/data/" in i.filename]
        end = max(i.header_offset for i in archive.infolist() if i.filename.endswith("version"))
    offset = random.Random(seed).randrange(min(starts), end - length)
    data = bytearray(path.read_bytes())
    data[offset : offset + length] = b"\xff" * length
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ damaged checkpoints


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_checkpoint_with_damaged_bytes_is_refused_naming_the_file(
    run_dir: Path, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """300 bytes overwritten at a random place among the tensors: loading, ``rl.load``,
    ``evaluate`` and ``--resume`` all refuse it with a message naming the file."""
    checkpoint = run_dir / "checkpoint.pt"
    _damage(checkpoint, seed)
    with pytest.raises(rl.CheckpointError, match=r"checkpoint\.pt"):
        runs.load_checkpoint(checkpoint)
    with pytest.raises(rl.CheckpointError):
        rl.load(run_dir)
    assert "checkpoint.pt" in _cli_error(capsys, ["evaluate", str(run_dir), "--episodes", "1"])
    err = _cli_error(capsys, ["train", "--resume", str(run_dir), "--steps", "64"])
    assert "checkpoint.pt" in err and ("damaged" in err or "cannot be read" in err), err


def test_a_checkpoint_stays_loadable_without_running_code(run_dir: Path) -> None:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert {"policy", "checksums", "run"} <= set(state)


@pytest.mark.parametrize("checksums", [True, False], ids=["checksummed", "legacy"])
def test_non_finite_weights_are_refused_at_load(
    run_dir: Path, checksums: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint whose weights are NaN, written with checksums (they match) or without
    (an older file): refused at load, naming the file and the tensor."""
    checkpoint = run_dir / "checkpoint.pt"
    state = runs.load_checkpoint(checkpoint)
    name = next(k for k, v in state["policy"].items() if v.is_floating_point() and v.ndim == 2)
    state["policy"][name][0, :3] = float("nan")
    if checksums:
        runs.save_checkpoint(checkpoint, state)
    else:
        torch.save(state, checkpoint)
    with pytest.raises(rl.CheckpointError, match=f"checkpoint.pt.*NaN.*{name}"):
        rl.load(run_dir)
    assert "NaN" in _cli_error(capsys, ["evaluate", str(run_dir), "--episodes", "1"])


def test_an_agent_file_with_damaged_bytes_is_refused(tmp_path: Path) -> None:
    agent = rl.Agent("CartPole-v1", **{k: v for k, v in TINY.items() if k != "env"})
    path = tmp_path / "agent.pt"
    agent.save(path)
    rl.Agent.load(path)  # intact: fine
    _damage(path, seed=0)
    with pytest.raises(rl.CheckpointError, match=r"agent\.pt"):
        rl.Agent.load(path)


# ------------------------------------------------------------- a checkpoint of another run


@pytest.mark.parametrize(("other", "field"), [("a2c0", "algo"), ("ppo1", "seed")])
def test_resume_refuses_a_checkpoint_copied_from_another_run(
    trained: dict[str, Path],
    run_dir: Path,
    other: str,
    field: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """a2c's checkpoint into a ppo run, or seed 1's into seed 0's: the networks fit, so only
    the run recorded in the checkpoint gives it away; the message names the field."""
    shutil.copy(trained[other] / "checkpoint.pt", run_dir / "checkpoint.pt")
    with pytest.raises(rl.CheckpointError, match=f"another run: {field}"):
        _resume(run_dir)
    err = _cli_error(capsys, ["train", "--resume", str(run_dir), "--steps", "64"])
    assert f"another run: {field}" in err and "config.json" in err, err


def test_two_runs_of_one_config_have_different_ids(trained: dict[str, Path]) -> None:
    ids = {(d / ".run-id").read_text() for d in trained.values()}
    assert len(ids) == 3
    config = json.loads((trained["ppo0"] / "config.json").read_text())
    assert config == rl.Config.from_dict(config).to_dict()  # the config, nothing added


def test_a_checkpoint_of_another_run_of_the_same_config_is_refused(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """Same algo, seed and env: only the run id tells the two runs apart."""
    other = Path(shutil.copytree(trained["ppo0"], tmp_path / "other"))
    (other / ".run-id").write_text("0123456789abcdef\n")
    with pytest.raises(rl.CheckpointError, match=r"another run: run_id .*\.run-id"):
        runs.load_checkpoint(other / "checkpoint.pt")


# ---------------------------------------------------------- leftovers of a killed writer


def test_orphaned_temporary_files_are_removed_at_the_next_start(run_dir: Path) -> None:
    """A process killed mid-write leaves ``.checkpoint.pt.<random>.tmp``; resuming removes it
    (and those of the other atomically written files), and nothing else."""
    orphans = [
        run_dir / ".checkpoint.pt.k2j3h_g5.tmp",
        run_dir / ".metrics.csv.a1b2c3d4.tmp",
        run_dir / ".config.json.zz9_8y7x.tmp",
    ]
    for orphan in orphans:
        orphan.write_bytes(b"\0" * 4096)
    keep = run_dir / "notes.tmp"
    keep.write_text("mine")
    _resume(run_dir)
    assert not any(o.exists() for o in orphans)
    assert keep.read_text() == "mine"


@pytest.mark.parametrize("cut", [",", ",0.", "\n9,", "9,144,0.1"])
def test_a_metrics_file_ending_in_a_cut_row_does_not_block_resume(run_dir: Path, cut: str) -> None:
    """The writer died mid-row: the cut row is dropped with a warning and the run resumes; the
    metrics then hold whole rows only, one per update."""
    metrics = run_dir / "metrics.csv"
    with metrics.open("a") as fh:
        fh.write(("5" + cut) if not cut.startswith("\n") else cut[1:])
    with pytest.warns(UserWarning, match="metrics.csv.*cut"):
        result = _resume(run_dir)
    rows = runs.read_metrics(metrics)
    assert [int(r["update"]) for r in rows] == [1, 2, 3, 4]
    assert all(None not in r.values() and r["global_step"] for r in rows)
    assert len(result.history) == 4


# ------------------------------------------------------------------- damaged config files


@pytest.mark.parametrize("damage", ["half", "string", "list"])
def test_a_damaged_config_json_names_the_file_and_what_to_do(
    run_dir: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = run_dir / "config.json"
    text = config.read_text()
    config.write_text(
        {"half": text[: len(text) // 2], "string": json.dumps("-1C"), "list": "[1, 2]"}[damage]
    )
    for args in (
        ["train", "--resume", str(run_dir), "--steps", "64"],
        ["evaluate", str(run_dir), "--episodes", "1"],
    ):
        err = _cli_error(capsys, args)
        assert "config.json" in err and "restore" in err and "unknown fields" not in err, err
    with pytest.raises(ValueError, match=r"config\.json.*damaged"):
        rl.load(run_dir)


@pytest.mark.parametrize("content", ["checkpoint", "format only", "string config", "tensor"])
def test_agent_load_of_a_file_that_is_not_an_agent_is_one_line(
    run_dir: Path, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "agent.pt"
    if content == "checkpoint":
        shutil.copy(run_dir / "checkpoint.pt", path)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        state = {"format": FORMAT}
        if content == "string config":
            state.update(config="-1C", custom_policy=False, checkpoint={})
        torch.save(state, path)
    with pytest.raises(rl.CheckpointError) as err:
        rl.Agent.load(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    assert "agent" in message or "dict of tensors" in message, message


# ------------------------------------------------------------------- signals (preemption)


def _signal_at(update: int, signum: int) -> Callable[[dict], bool]:
    """A callback that sends this process ``signum`` after update ``update`` (as ``kill``,
    ``docker stop`` or a scheduler would, mid-run)."""

    def callback(row: dict) -> bool:
        if row["update"] == update:
            os.kill(os.getpid(), signum)
        return False

    return callback


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigterm_stops_like_ctrl_c_with_a_checkpoint_and_resume_continues(
    tmp_path: Path, seed: int
) -> None:
    """SIGTERM after a random update: the update finishes, a checkpoint of it is written, the
    result says SIGTERM; the resumed run goes on from there to its budget."""
    stop_at = random.Random(seed).randint(1, 8)
    fields = {k: v for k, v in TINY.items() if k != "env"}
    agent = rl.Agent("CartPole-v1", out=str(tmp_path), seed=seed, **{**fields, "total_steps": 160})
    agent.learn(callback=_signal_at(stop_at, signal.SIGTERM))
    result = agent.result
    assert result.interrupted and result.signal == signal.SIGTERM
    assert len(result.history) == stop_at
    state = runs.load_checkpoint(result.run_dir / "checkpoint.pt")
    assert state["counters"]["update"] == stop_at
    resumed = _resume(result.run_dir, total_steps=192)
    assert not resumed.interrupted
    rows = runs.read_metrics(result.run_dir / "metrics.csv")
    assert [int(r["update"]) for r in rows] == list(range(1, 13))


def test_cli_exits_143_on_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``logtrick train`` stopped by SIGTERM exits 128 + 15 (a scheduler sees it was stopped,
    not done) and says how to continue."""
    original = rl.Agent.learn

    def learn(self: rl.Agent, steps: int | None = None, callback: object = None) -> rl.Agent:
        return original(self, steps, _signal_at(2, signal.SIGTERM))

    monkeypatch.setattr(rl.Agent, "learn", learn)
    args = [
        "train",
        "CartPole-v1",
        "--envs",
        "2",
        "--steps",
        "640",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--eval-every",
        "0",
        "--set",
        "num_steps=8",
        "num_minibatches=1",
        "update_epochs=1",
        "tensorboard=False",
        "plot=False",
    ]
    assert main(args) == 143
    out = capsys.readouterr().out
    assert "SIGTERM" in out and "--resume" in out, out


SCRIPT_ARGS = [
    "-m",
    "logtrick",
    "train",
    "CartPole-v1",
    "--algo",
    "ppo",
    "--envs",
    "2",
    "--steps",
    "64000",
    "--no-progress",
    "--no-stop",
    "--eval-every",
    "256",
    "--set",
    "num_steps=32",
    "num_minibatches=1",
    "update_epochs=2",
    "eval_episodes=2",
    "checkpoint_every=256",
    "tensorboard=False",
    "plot=False",
]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigterm_at_a_random_moment_of_a_cli_run_then_resume(tmp_path: Path, seed: int) -> None:
    """``kill`` (SIGTERM) a ``logtrick train`` process at a random moment (in an update, an
    evaluation or a checkpoint write): it exits 143 with a checkpoint of its last update and
    ``--resume`` continues from it, the metrics whole and in order."""
    proc = subprocess.Popen(
        [sys.executable, *SCRIPT_ARGS, "--out", str(tmp_path)],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    run_dir = tmp_path / "CartPole-v1-ppo-0"
    deadline = time.monotonic() + 120
    while not ((run_dir / "metrics.csv").exists() and (run_dir / "metrics.csv").stat().st_size):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, 2.0))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (out, err)
    assert "stopped by SIGTERM" in out and "Traceback" not in err, (out, err)
    saved = runs.load_checkpoint(run_dir / "checkpoint.pt")["counters"]["update"]
    assert saved == len(runs.read_metrics(run_dir / "metrics.csv")) >= 1
    assert main(["train", "--resume", str(run_dir), "--steps", str(64 * (saved + 2))]) == 0
    rows = runs.read_metrics(run_dir / "metrics.csv")
    assert [int(r["update"]) for r in rows] == list(range(1, saved + 3))


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root on Linux only; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """A file that leaves about ``leave`` bytes free on ``disk``."""
    stat = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def _check_full_disk_run(out: Path, fill: Callable[[], Path]) -> None:
    """Fill the disk at update 2 (before its checkpoint): that checkpoint fails with ENOSPC
    naming the file; update 1's stays intact, no temporary file is left; with space again, the
    run resumes to its budget."""
    filler: list[Path] = []

    def callback(row: dict) -> bool:
        if row["update"] == 2:
            filler.append(fill())
        return False

    agent = rl.Agent("CartPole-v1", out=str(out), **{k: v for k, v in TINY.items() if k != "env"})
    with pytest.raises(OSError, match="No space left on device") as err:
        agent.learn(callback=callback)
    assert err.value.errno == errno.ENOSPC and "checkpoint.pt" in str(err.value)
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    assert runs.load_checkpoint(run_dir / "checkpoint.pt")["counters"]["update"] == 1
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    filler[0].unlink()
    assert len(_resume(run_dir, total_steps=64).history) == 4


def test_a_full_disk_keeps_the_last_checkpoint(small_disk: Path) -> None:
    _check_full_disk_run(small_disk, lambda: _fill(small_disk, leave=8192))


def test_a_full_disk_simulated_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no tmpfs can be mounted: every write to a temporary file fails with ENOSPC once
    the disk is 'full' (the same path through ``atomic_write_bytes``)."""
    full = tmp_path / "full"
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if full.exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def fill() -> Path:
        full.write_text("")
        return full

    _check_full_disk_run(tmp_path / "out", fill)


def test_sigterm_before_the_first_update_leaves_no_stub_and_exits_143(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM just after the run directory was made, before any update (no loop yet to
    finish one): the CLI stops as at a Ctrl-C, removes the new directory (no checkpoint: a
    stub, not a run), says so in one line and exits 143."""
    write_config = runs.write_config

    def write_then_terminate(run_dir: Path, config: dict) -> None:
        write_config(run_dir, config)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runs, "write_config", write_then_terminate)
    args = [
        "train",
        "CartPole-v1",
        "--envs",
        "2",
        "--steps",
        "640",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--set",
        "num_steps=8",
        "tensorboard=False",
        "plot=False",
    ]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 143
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SIGTERM" in err, err
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # main() restored it
