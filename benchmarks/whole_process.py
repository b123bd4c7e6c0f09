"""Whole processes side by side: ``logtrick train ENV`` against SB3's PPO with its defaults.

Each round runs both commands, one after the other (the order alternates), as a user would:
a fresh interpreter, imports, env construction, training at an equal budget, no evaluation.
Neither is pinned, so each may use every core the machine has (SB3 runs in one process, torch
at its own thread count; with ``--set=--overlap`` logtrick's PPO collects in a forked child
while it updates).
Reports the median wall-clock and CPU seconds (user + system of the process and its
children) and their ratios.

    python benchmarks/whole_process.py --env Hopper-v5 --steps 100000 --rounds 2
    python benchmarks/whole_process.py --env Hopper-v5 --steps 100000 --rounds 2 --set=--overlap
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``cmd`` run to its end (an error stops the benchmark)."""
    before = os.times()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], help="extra `logtrick train` options")
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="logtrick-whole-")
    ours = ["logtrick", "train", args.env, "--steps", str(args.steps), "--eval-every", "0",
            "--no-progress", "--out", out, *args.set]  # fmt: skip
    sb3 = [sys.executable, "-c",
           "from stable_baselines3 import PPO; "
           f"PPO('MlpPolicy', {args.env!r}, seed=0, device='cpu').learn({args.steps})"]  # fmt: skip
    times: dict[str, list[tuple[float, float]]] = {"logtrick": [], "sb3": []}
    for r in range(args.rounds):
        order = [("logtrick", ours), ("sb3", sb3)]
        for name, cmd in order if r % 2 == 0 else order[::-1]:
            times[name].append(timed(cmd))
    print("| env | steps | logtrick wall s | SB3 wall s | wall ratio | logtrick CPU s | "
          "SB3 CPU s | CPU ratio |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    med = {k: [statistics.median(x[i] for x in v) for i in (0, 1)] for k, v in times.items()}
    (lw, lc), (sw, sc) = med["logtrick"], med["sb3"]
    print(f"| {args.env} | {args.steps:,} | {lw:.1f} | {sw:.1f} | {lw / sw:.2f} | {lc:.1f} | "
          f"{sc:.1f} | {lc / sc:.2f} |")  # fmt: skip
    print(f"rounds: {times}")


if __name__ == "__main__":
    main()
