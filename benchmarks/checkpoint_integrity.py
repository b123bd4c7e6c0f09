"""What verifying a checkpoint costs: checksums, finite check and run identity (issue 24).

For an actor-critic MLP on a Humanoid-sized observation (348 inputs, 17 actions) at three widths,
with Adam's state after one step, times (medians over repeats, interleaved):

* write: ``torch.save`` to memory + atomic write (fsync, rename), against
  ``runs.save_checkpoint`` (the same plus the SHA-256 of every tensor and the run's identity);
* read: ``torch.load(weights_only=True)``, against ``runs.load_checkpoint`` (the same plus
  checksums verified, every float checked finite, the identity compared with config.json).

Run:  python benchmarks/checkpoint_integrity.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from logtrick.rl import runs
from logtrick.rl.policies import ActorCritic

WIDTHS = (64, 256, 1024)


def _state(width: int) -> dict:
    obs = gym.spaces.Box(-np.inf, np.inf, (348,), np.float32)
    act = gym.spaces.Box(-1.0, 1.0, (17,), np.float32)
    policy = ActorCritic(obs, act, hidden=(width, width))
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    loss = sum(p.square().sum() for p in policy.parameters())
    loss.backward()  # type: ignore[union-attr]
    optimizer.step()
    return {
        "policy": policy.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "counters": {"update": 1},
    }


def _plain_write(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    runs.atomic_write_bytes(path, buffer.getvalue())


def _median(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _row(width: int, run_dir: Path, repeats: int) -> str:
    """One table row: plain and checked write and read, interleaved over two rounds."""
    state = _state(width)
    plain, checked = run_dir / "plain.pt", run_dir / "checkpoint.pt"
    fns = {
        "wp": lambda: _plain_write(plain, state),
        "wc": lambda: runs.save_checkpoint(checked, state),
        "rp": lambda: torch.load(plain, weights_only=True),
        "rc": lambda: runs.load_checkpoint(checked),
    }
    best = {k: math.inf for k in fns}
    for _ in range(2):
        for key, fn in fns.items():
            best[key] = min(best[key], _median(fn, repeats) * 1e3)
    wp, wc, rp, rc = best["wp"], best["wc"], best["rp"], best["rc"]
    size = checked.stat().st_size / 1e6
    return (
        f"| {width} | {size:.2f} | {wp:.1f} | {wc:.1f} | {wc / wp:.2f} | {rp:.1f} | {rc:.1f} "
        f"| {rc / rp:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        "| width | file (MB) | write plain (ms) | write checked (ms) | ratio "
        "| read plain (ms) | read checked (ms) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        (run_dir / "config.json").write_text(
            json.dumps({"algo": "ppo", "seed": 0, "env": "x", "run_id": "b"})
        )
        for width in WIDTHS:
            print(_row(width, run_dir, args.repeats))


if __name__ == "__main__":
    main()
