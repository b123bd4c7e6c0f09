"""A CLI and API that explain themselves: the progress bar, the end-of-run summary, the Agent's
repr, ``evaluate --help``, and Weights & Biases logging (offline) mirroring TensorBoard."""

from __future__ import annotations

import glob
import io
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from logtrick import rl
from logtrick.cli import main
from logtrick.rl.errors import MissingExtraError

TINY = {"algo": "a2c", "total_steps": 80, "num_envs": 2, "num_steps": 8, "eval_every": 0,
        "progress": False, "plot": False}  # fmt: skip


def _render(config: rl.Config, completed: int, sps: str, ret: str) -> list[str]:
    from logtrick.rl.loop import _progress
    from logtrick.rl.progress import progress_bar

    console = Console(width=80, record=True, file=io.StringIO())
    bar = progress_bar(config, console=console)
    assert [type(c) for c in bar.columns] == [type(c) for c in _progress(config).columns]
    bar.add_task("train", total=config.total_steps, completed=completed, sps=sps, ret=ret)
    console.print(bar.make_tasks_table(bar.tasks))
    return console.export_text().splitlines()


@pytest.mark.parametrize(
    ("env", "algo", "total", "completed", "sps", "ret"),
    [("CartPole-v1", "ppo", 200_000, 12_800, "12345", "123.4"),
     ("Pendulum-v1", "reinforce", 10_000_000, 9_999_999, "123456", "-12345.6"),
     ("LunarLander-v3", "npg", 1_000_000, 0, "-", "-")],
)  # fmt: skip
def test_progress_bar_shows_the_total_in_80_columns_and_no_time_left(
    env: str, algo: str, total: int, completed: int, sps: str, ret: str
) -> None:
    """Before: the total was cut ("12800/…") at 80 columns, and a remaining-time estimate for a
    budget the threshold rule usually stops short of."""
    config = rl.Config(env=env, algo=algo, total_steps=total)
    (line,) = _render(config, completed, sps, ret)
    assert len(line) <= 80
    assert f"{completed:,}/{total:,}" in line
    assert f"{sps} steps/s" in line and f"return {ret}" in line
    assert line.endswith("0:00:00")  # elapsed time, last
    assert "-:--:--" not in line  # no remaining time
    assert "…" not in line[line.index(f"{completed:,}/") :]  # only the env's name may be cut


def test_no_remaining_time_column() -> None:
    from rich.progress import TimeElapsedColumn, TimeRemainingColumn

    from logtrick.rl.loop import _progress

    columns = _progress(rl.Config()).columns
    assert not any(isinstance(c, TimeRemainingColumn) for c in columns)
    assert any(isinstance(c, TimeElapsedColumn) for c in columns)


def test_end_of_run_lists_the_run_directory_and_next_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--algo", "a2c", "--steps", "80", "--envs", "2", "--set", "num_steps=8",
            "--eval-every", "0", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "CartPole-v1-a2c-0"
    listed = out.split("holds:\n")[1].split("next:\n")[0].splitlines()
    names = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    assert [line.split()[0].rstrip("/") for line in listed] == names
    assert all(len(line.split()) > 1 for line in listed)  # each says what it is
    assert any("checkpoint" in line and "checkpoint.pt" in line for line in listed)
    assert f"logtrick evaluate {run_dir}" in out
    assert f"tensorboard --logdir {run_dir}" in out


def test_agent_repr_names_env_algo_steps_and_run_dir(tmp_path: Path) -> None:
    agent = rl.Agent("CartPole-v1", out=str(tmp_path), **TINY)
    assert repr(agent) == "Agent(env='CartPole-v1', algo='a2c', steps=0/80, run_dir=None)"
    with agent:
        agent.learn()
    run_dir = tmp_path / "CartPole-v1-a2c-0"
    assert repr(agent) == f"Agent(env='CartPole-v1', algo='a2c', steps=80/80, run_dir='{run_dir}')"


def test_evaluate_help_shows_episodes_and_its_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("--episodes"))
    assert "episodes" in line.split("--episodes", 1)[1] and "(default: 20)" in line


# --------------------------------------------------------------------------- Weights & Biases


def _wandb_records(run_dir: Path) -> list[Any]:
    """The records of an offline W&B run's ``.wandb`` file (LevelDB-log framing: 32 KiB blocks,
    7-byte record headers: crc, length, type; 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    data, pos, part, records = Path(path).read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        part, pos = part + data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(part)
            records.append(record)
            part = b""
    return records


def test_wandb_offline_mirrors_metrics_and_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb")
    wandb_dir = tmp_path / "wandb-home"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = rl.Config(env="CartPole-v1", out=str(tmp_path), wandb=True, **TINY)
    result = rl.train(config)
    wandb.teardown()  # the W&B service writes the run's file asynchronously: wait for it
    records = _wandb_records(wandb_dir)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.project == "logtrick" and run.display_name == "CartPole-v1-a2c-0"
    saved = {i.key: json.loads(i.value_json) for i in run.config.update if i.key != "_wandb"}
    assert saved == json.loads((result.run_dir / "config.json").read_text())
    items = [r.history.item for r in records if r.WhichOneof("record_type") == "history"]
    keyed = [
        {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in x} for x in items
    ]
    history = [{k: v for k, v in row.items() if not k.startswith("_")} for row in keyed]
    assert len(history) == len(result.history) == 5  # 80 steps / (2 envs x 8 steps)
    for logged, row in zip(history, result.history):
        want = {k: v for k, v in row.items() if k != "update" and v == v}  # TensorBoard's keys
        assert logged.keys() == want.keys()
        assert logged == pytest.approx(want)


def test_wandb_without_the_package_names_the_extra_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    agent = rl.Agent("CartPole-v1", out=str(tmp_path / "runs"), wandb=True, **TINY)
    with pytest.raises(MissingExtraError, match=r"logtrick\[wandb\]"):
        agent.learn()
    assert not (tmp_path / "runs").exists()
    with pytest.raises(SystemExit) as err:
        main(["train", "--wandb", "--steps", "80", "--out", str(tmp_path / "runs")])
    assert err.value.code == 2 and "logtrick[wandb]" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
