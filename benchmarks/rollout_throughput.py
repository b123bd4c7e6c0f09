"""Rollout throughput: ``Collector.collect()`` against the raw vector env it steps.

For each (env, vectorization mode) the script times, in alternation, one ``collect()`` of
``--steps`` steps (random-init :class:`~logtrick.rl.ActorCritic`, sampling, storage, episode
bookkeeping) and the same number of raw ``envs.step`` calls with random actions drawn
beforehand, and prints env steps per second (medians over ``--repeats``) and their ratio (the
median of the per-repeat ratios; goal ≥ 0.8), and the collector's time per vector step beyond
the env's own. One torch thread.

Usage::

    python benchmarks/rollout_throughput.py [--repeats 9] [--steps 128] [--envs 16] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from logtrick.rl import ActorCritic, Collector, make_env

CASES = [("CartPole-v1", "sync"), ("LunarLander-v3", "sync"), ("LunarLander-v3", "async")]


def _time_raw(envs: VectorEnv, actions: list[np.ndarray]) -> float:
    """Seconds to step ``envs`` once per preallocated action batch."""
    start = time.perf_counter()
    for action in actions:
        envs.step(action)
    return time.perf_counter() - start


def _time_collect(collector: Collector) -> float:
    start = time.perf_counter()
    collector.collect()
    return time.perf_counter() - start


def measure(env_id: str, mode: str, num_envs: int, steps: int, repeats: int) -> dict:
    """Median env steps/s of the collector and of the raw env, interleaved repeats."""
    envs = make_env(env_id, num_envs=num_envs, vectorization_mode=mode, seed=0)
    try:
        torch.manual_seed(0)
        policy = ActorCritic(envs.single_observation_space, envs.single_action_space)
        collector = Collector(envs, policy, steps, seed=0)
        actions = [envs.action_space.sample() for _ in range(steps)]
        collector.collect()  # warm-up (first reset, buffer allocation)
        _time_raw(envs, actions)
        raw, coll = [], []
        for _ in range(repeats):
            coll.append(steps * num_envs / _time_collect(collector))
            raw.append(steps * num_envs / _time_raw(envs, actions))
    finally:
        envs.close()
    return {
        "env": env_id,
        "mode": mode,
        "envs": num_envs,
        "raw": statistics.median(raw),
        "collector": statistics.median(coll),
        "ratio": statistics.median(c / r for c, r in zip(coll, raw)),
        # collector time per vector step beyond the env's own (policy, storage, bookkeeping)
        "overhead": 1e6 * num_envs * (1 / statistics.median(coll) - 1 / statistics.median(raw)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=128, help="steps per env per collect")
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="CartPole only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = CASES[:1] if args.quick else CASES
    print("| env | mode | envs | raw env steps/s | collector steps/s | ratio | overhead µs/step |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for env_id, mode in cases:
        r = measure(env_id, mode, args.envs, args.steps, args.repeats)
        print(
            f"| {r['env']} | {r['mode']} | {r['envs']} | {r['raw']:,.0f} | "
            f"{r['collector']:,.0f} | {r['ratio']:.2f} | {r['overhead']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
