"""Steps per second of the vector envs a run can use: Gymnasium sync, Gymnasium async, EnvPool.

Random actions drawn beforehand, ``--envs`` copies, ``--steps`` vector steps per repeat; the
rounds interleave the three kinds and the table reports medians of env steps per second (summed
over the copies) and the ratio to Gymnasium's sync env. Wall-clock (async and EnvPool work in
other processes and threads).

    python benchmarks/vector_env_throughput.py [--env CartPole-v1 Hopper-v5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from logtrick.rl.envs import make_env

KINDS = ("sync", "async", "envpool")


def _rate(envs, actions: list[np.ndarray]) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for a in actions:
        envs.step(a)
    return len(actions) * envs.num_envs / (time.perf_counter() - t0)


def measure(env_id: str, num_envs: int, steps: int, repeats: int) -> dict[str, float]:
    envs = {kind: make_env(env_id, num_envs, kind) for kind in KINDS}
    space = envs["sync"].action_space
    space.seed(0)
    actions = [space.sample() for _ in range(steps)]
    for e in envs.values():
        e.reset(seed=0)
        _rate(e, actions[:10])  # warm-up
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(repeats):
        for kind, e in envs.items():
            rates[kind].append(_rate(e, actions))
    for e in envs.values():
        e.close()
    return {kind: statistics.median(r) for kind, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", nargs="*", default=["CartPole-v1", "LunarLander-v3", "Hopper-v5"])
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.envs} envs, {args.steps} vector steps, median of {args.repeats}\n")
    print("| env | gymnasium sync steps/s | async | envpool | async / sync | envpool / sync |")
    print("|---|---:|---:|---:|---:|---:|")
    for env_id in args.env:
        r = measure(env_id, args.envs, args.steps, args.repeats)
        print(f"| {env_id} | {r['sync']:,.0f} | {r['async']:,.0f} | {r['envpool']:,.0f} | "
              f"{r['async'] / r['sync']:.2f} | {r['envpool'] / r['sync']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
