"""The LM trainer under ``torchrun`` (2 gloo ranks, started once by :mod:`lm_ranks`) against one
process on the concatenated batch: the same parameters after two steps (gradients averaged,
group and batch statistics and DAPO's token count gathered), the same metrics on both ranks,
and files written by rank 0 only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lm_ranks

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lm_ranks")
    src = str(Path(__import__("logtrick").__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + str(HERE)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(HERE / "lm_ranks.py"),
        str(out),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    (out / "stderr.txt").write_text(done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("algo", list(lm_ranks.CASES))
def test_two_ranks_equal_one_process_on_the_whole_batch(out: Path, algo: str) -> None:
    ranks = [torch.load(out / f"{algo}-rank{r}.pt", weights_only=False) for r in range(2)]
    one = lm_ranks.trainer(algo, None)
    rows = [one.learn(1) for _ in range(2)]
    for key, value in one.model.named_parameters():
        for r in ranks:
            torch.testing.assert_close(r["params"][key], value.detach(), rtol=1e-3, atol=2e-5)
    for got, want in zip(ranks[0]["rows"], rows):
        for key in ("reward", "length", "grad_norm"):  # grad_norm: the averaged gradient
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
    assert ranks[0]["rows"] == ranks[1]["rows"] or all(
        a["reward"] == b["reward"] for a, b in zip(ranks[0]["rows"], ranks[1]["rows"])
    )
    files = sorted(p.name for p in (out / algo).iterdir())
    assert "checkpoint.pt" in files and "metrics.csv" in files
