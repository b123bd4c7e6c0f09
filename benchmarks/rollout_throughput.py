"""Rollout throughput: ``Collector.collect()`` against its limit, the env plus the policy alone.

The limit of a collector is what it cannot avoid: stepping the vector env and running the
policy's forward pass and sampling once per vector step. For each (env, vectorization mode) the
script times, interleaved in the same run (``--steps`` vector steps each),

* **env**: ``envs.step`` with random actions drawn beforehand;
* **policy**: ``policy.step(obs)`` (forward pass and sampling, under ``torch.inference_mode``) on a
  batch of observations of the env;
* **alternating**: the env's and the policy's timed work above, one after the other in one
  loop (the same preallocated actions, the same observation batch): the work of the limit, plus
  only the cost of the two workloads evicting each other from the CPU's caches, which neither
  pays when timed alone;
* **bare loop**: the two in turn, the least code that collects (``a = policy.step(obs);
  obs = envs.step(a)``), storing nothing: it pays the eviction too, and acts with the policy's
  actions (episode lengths, so resets, differ from random actions);
* **collector**: one ``collect()`` (the same policy; storage, episode bookkeeping, autoreset
  handling, finiteness checks, bootstrap values),

and prints µs per vector step (medians over ``--repeats``), the limit (env + policy), and the
ratios limit / collector, alternating / collector and bare loop / collector (1.0 = the
collector costs nothing beyond the env and the policy; medians of the per-repeat ratios). One
torch thread. Sync envs are timed by the process's CPU clock (``time.process_time``: on a
shared machine, time spent waiting for a core is not counted), async envs by the wall clock
(their work is in other processes).

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
clock = time.perf_counter


def _time_env(envs: VectorEnv, actions: list[np.ndarray]) -> float:
    """Seconds to step ``envs`` once per preallocated action batch."""
    start = clock()
    for action in actions:
        envs.step(action)
    return clock() - start


def _time_policy(policy: ActorCritic, obs: torch.Tensor, steps: int) -> float:
    """Seconds for ``steps`` calls of the policy's forward pass and sampling."""
    start = clock()
    with torch.inference_mode():
        for _ in range(steps):
            policy.step(obs)
    return clock() - start


def _time_alternating(
    envs: VectorEnv, policy: ActorCritic, obs: torch.Tensor, actions: list[np.ndarray]
) -> float:
    """Seconds for the env's and the policy's timed work interleaved, one step of each in turn."""
    start = clock()
    with torch.inference_mode():
        for action in actions:
            policy.step(obs)
            envs.step(action)
    return clock() - start


def _time_bare(envs: VectorEnv, policy: ActorCritic, steps: int) -> float:
    """Seconds for ``steps`` vector steps of the bare loop (from a fresh reset)."""
    obs, _ = envs.reset(seed=1)
    start = clock()
    with torch.inference_mode():
        for _ in range(steps):
            action, _, _ = policy.step(torch.from_numpy(obs))
            obs, *_ = envs.step(action.numpy())
    return clock() - start


def _time_collect(collector: Collector) -> float:
    start = clock()
    collector.collect()
    return clock() - start


def measure(env_id: str, mode: str, num_envs: int, steps: int, repeats: int) -> dict:
    """Median µs per vector step of env, policy and collector, interleaved repeats."""
    global clock
    clock = time.process_time if mode == "sync" else time.perf_counter
    envs = make_env(env_id, num_envs=num_envs, vectorization_mode=mode, seed=0)
    try:
        torch.manual_seed(0)
        policy = ActorCritic(envs.single_observation_space, envs.single_action_space)
        collector = Collector(envs, policy, steps, seed=0)
        actions = [envs.action_space.sample() for _ in range(steps)]
        obs = collector.collect().obs[-1]  # warm-up (first reset, buffers), a real obs batch
        _time_env(envs, actions)
        _time_policy(policy, obs, steps)
        times: dict[str, list[float]] = {
            "env": [],
            "policy": [],
            "alternating": [],
            "bare": [],
            "collector": [],
        }
        for _ in range(repeats):
            collector.reset(seed=1)
            times["collector"].append(_time_collect(collector) / steps)
            times["env"].append(_time_env(envs, actions) / steps)
            times["policy"].append(_time_policy(policy, obs, steps) / steps)
            times["alternating"].append(_time_alternating(envs, policy, obs, actions) / steps)
            times["bare"].append(_time_bare(envs, policy, steps) / steps)
    finally:
        envs.close()
    t = times
    ratio = [(e + p) / c for e, p, c in zip(t["env"], t["policy"], t["collector"])]
    bare_ratio = [b / c for b, c in zip(t["bare"], t["collector"])]
    alt_ratio = [a / c for a, c in zip(t["alternating"], t["collector"])]
    us = {k: 1e6 * statistics.median(v) for k, v in times.items()}
    return {"env_id": env_id, "mode": mode, "envs": num_envs, **us,
            "limit": us["env"] + us["policy"], "ratio": statistics.median(ratio),
            "alt_ratio": statistics.median(alt_ratio),
            "bare_ratio": statistics.median(bare_ratio)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=128, help="steps per env per collect")
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="CartPole only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = CASES[:1] if args.quick else CASES
    print("µs per vector step (medians); limit = env + policy, timed apart")
    print("| env | mode | envs | env | policy | limit | alternating | bare loop | collector | "
          "limit / collector | alternating / collector | bare / collector | "
          "collector steps/s |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for env_id, mode in cases:
        r = measure(env_id, mode, args.envs, args.steps, args.repeats)
        print(
            f"| {r['env_id']} | {r['mode']} | {r['envs']} | {r['env']:.0f} | {r['policy']:.0f} | "
            f"{r['limit']:.0f} | {r['alternating']:.0f} | {r['bare']:.0f} | "
            f"{r['collector']:.0f} | {r['ratio']:.2f} | {r['alt_ratio']:.2f} | "
            f"{r['bare_ratio']:.2f} | {1e6 * r['envs'] / r['collector']:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
