"""Scale out: Ray rollout workers against the in-process trainer, and a scaling model.

Part 1, side by side in one run (interleaved, medians over ``--repeats``), LunarLander-v3's PPO
preset (16 envs x 256 steps = 4,096 transitions per iteration, 8 minibatches x 4 epochs):

* **in-process**: ``Collector.collect()`` + ``update`` (the trainer's loop body);
* **ray W=1, W=2** (and W=2 with ``overlap``: the next rollout started before the update,
  a policy lag of one update): ``RayCollector.collect()`` (weights through the object store, W
  actors stepping 16/W envs each, rollouts merged, observation statistics merged) + the same
  ``update``.

All modes share one learner (the same weights at each point of the interleaving: the cost of a
rollout depends on the policy, e.g. through how often LunarLander resets).

It prints seconds per iteration (collect, update), env steps/s, the Ray overhead at one worker
(iteration time of ray W=1 / in-process; target <= 1.10) and the 2-worker efficiency of the
collection, where env stepping dominates: t_collect(W=1) / (2 t_collect(W=2)) (target >= 0.85).

Part 2, the per-iteration costs the model needs: ``ray.put`` of the weights, the transfer of one
worker's rollout (the Ray collect at W=1 minus the in-process collect), the update, the spread of
the collect time (stragglers), and a gloo all-reduce of the flattened gradient between two local
processes at two message sizes (latency alpha and bandwidth beta of the ring model). From them it
projects the efficiency at 8, 64 and 256 workers (weak scaling: E envs per worker) for

* **Ray workers, one learner** (this package's ``--workers``):
  t(W) = t_collect + t_put + W t_transfer + W t_update (the one learner updates on W E T
  transitions);
* **DD-PPO ranks** (``torchrun``): t(W) = t_collect + sigma sqrt(2 ln W) + t_update
  + n_sgd [2 (W - 1) alpha + 2 (W - 1)/W bytes / beta] (ring all-reduce, stragglers as the
  expected maximum of W normal collect times).

Part 3 (``--threshold``): training time to LunarLander-v3's threshold (200) for in-process,
ray W=1 and ray W=2, one seed each, evaluation every 10k steps (time excluded).

Usage::

    python benchmarks/scaling.py [--repeats 5] [--iterations 2] [--envs 16] [--threshold] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import tempfile
import time

import torch
import torch.multiprocessing as mp

from logtrick.rl import Collector, make_env, preset, train
from logtrick.rl.build import make_learner, reset_seeds
from logtrick.rl.distributed import RankCollector
from logtrick.rl.update import update

ENV = "LunarLander-v3"
MODES = ("in-process", "ray W=1", "ray W=2", "ray W=2 overlap")
clock = time.perf_counter


ENVS: dict[str, int] = {}
"""``--envs`` (the preset's 16 when absent)."""


def _config(workers: int = 0, **overrides: object) -> object:
    return preset(ENV, "ppo", workers=workers, progress=False, plot=False, tensorboard=False,
                  **ENVS, **overrides)  # fmt: skip


def _collector(config: object, learner: object) -> object:
    seeds = reset_seeds(config, 0)
    if config.workers:
        from logtrick.rl.workers import RayCollector

        return RayCollector(config, learner.policy, seeds)
    collector = Collector(make_env(ENV, num_envs=config.num_envs), learner.policy,
                          config.num_steps)  # fmt: skip
    collector.reset(seed=seeds)
    return RankCollector(collector, learner.policy)  # as the trainer: one policy state


def _iterate(collector: object, learner: object, iterations: int) -> tuple[float, float, float]:
    """Median seconds of collect, of update and of the slowest worker's own rollout time (the
    in-process collect for the in-process collector) over ``iterations`` iterations."""
    collect, upd, inside = [], [], []
    for _ in range(iterations):
        t0 = clock()
        ro = collector.collect()
        t1 = clock()
        update(learner, ro)
        collect.append(t1 - t0)
        upd.append(clock() - t1)
        inside.append(max(getattr(collector, "worker_seconds", {0: t1 - t0}).values()))
    return statistics.median(collect), statistics.median(upd), statistics.median(inside)


def measure_modes(repeats: int, iterations: int) -> dict[str, list[tuple[float, float, float]]]:
    """Interleaved (collect, update) seconds per iteration of each mode, one pair per repeat."""
    envs = make_env(ENV, num_envs=1)
    learner = make_learner(_config(), envs)  # one learner: every mode acts with the same weights
    envs.close()
    setups = {}
    for mode in MODES:
        workers = int(mode.split("W=")[1][0]) if mode.startswith("ray") else 0
        config = _config(workers=workers, overlap=mode.endswith("overlap"))
        setups[mode] = (_collector(config, learner), learner)
        _iterate(*setups[mode], 1)  # warm-up (worker start, first allocations)
    out: dict[str, list[tuple[float, float, float]]] = {m: [] for m in MODES}
    for _ in range(repeats):
        for mode in MODES:
            if mode.endswith("overlap"):  # its rollout in flight was started long ago: drop it
                _iterate(*setups[mode], 1)
            out[mode].append(_iterate(*setups[mode], iterations))
    for collector, _ in setups.values():
        getattr(collector, "close", lambda: None)()
    return out


def _allreduce_rank(rank: int, path: str, sizes: list[int], reps: int, queue: object) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    times = []
    for n in sizes:
        x = torch.ones(n)
        for _ in range(5):
            dist.all_reduce(x)
        ts = []
        for _ in range(reps):
            t0 = clock()
            dist.all_reduce(x)
            ts.append(clock() - t0)
        times.append(statistics.median(ts))
    if rank == 0:
        queue.put(times)
    dist.destroy_process_group()


def measure_allreduce(numel: int, reps: int = 50) -> tuple[float, float]:
    """Ring-model latency alpha (s) and bandwidth beta (bytes/s) from a 2-process gloo
    all-reduce of 1 float and of ``numel`` floats: t(2) = 2 alpha + bytes / beta."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_allreduce_rank, args=(r, path, [1, numel], reps, queue))
                 for r in range(2)]  # fmt: skip
        for p in procs:
            p.start()
        small, large = queue.get(timeout=120)
        for p in procs:
            p.join()
    alpha = small / 2
    return alpha, 4 * numel / max(large - small, 1e-9)


def costs(modes: dict[str, list[tuple[float, float, float]]], config: object) -> dict[str, float]:
    """The per-iteration costs of the model, from the measured iterations."""
    import ray

    from logtrick.rl.policies import build_policy

    envs = make_env(ENV, num_envs=1)
    policy = build_policy(config, envs)
    envs.close()
    state = policy.state_dict()
    puts = []
    for _ in range(20):
        t0 = clock()
        ray.put(state)
        puts.append(clock() - t0)
    local = [c for c, _, _ in modes["in-process"]]
    remote = statistics.median(c for c, _, _ in modes["ray W=1"])
    inside = statistics.median(i for _, _, i in modes["ray W=1"])
    numel = sum(p.numel() for p in policy.parameters())
    alpha, beta = measure_allreduce(numel)
    out = {
        "collect": statistics.median(local),
        "update": statistics.median(u for _, u, _ in modes["in-process"]),
        "put": statistics.median(puts),
    }
    out["sigma"] = statistics.stdev(local) if len(local) > 1 else 0.0
    out["transfer"] = max(0.0, remote - inside)  # Ray's part: weights out, rollout back, merge
    out.update(
        alpha=alpha,
        beta=beta,
        bytes=4.0 * numel,
        n_sgd=float(config.update_epochs * config.num_minibatches),
    )
    return out


def projected(c: dict[str, float], workers: int) -> tuple[float, float]:
    """Projected efficiency t(1) / t(W) of Ray workers (one learner) and of DD-PPO ranks."""
    ray_t = lambda w: c["collect"] + c["put"] + w * (c["transfer"] + c["update"])  # noqa: E731

    def ddppo_t(w: int) -> float:
        ring = 2 * (w - 1) * c["alpha"] + 2 * (w - 1) / w * c["bytes"] / c["beta"]
        straggle = c["sigma"] * math.sqrt(2 * math.log(w)) if w > 1 else 0.0
        return c["collect"] + straggle + c["update"] + c["n_sgd"] * ring

    return ray_t(1) / ray_t(workers), ddppo_t(1) / ddppo_t(workers)


def time_to_threshold(budget: int) -> dict[str, tuple[float | None, int | None]]:
    """Training seconds and env steps to the threshold for each mode (one seed)."""
    out = {}
    for mode in MODES:
        workers = int(mode[-1]) if mode.startswith("ray") else 0
        with tempfile.TemporaryDirectory() as tmp:
            config = _config(workers, total_steps=budget, eval_every=10_000,
                             stop_at_threshold=True, out=tmp)  # fmt: skip
            r = train(config)
        out[mode] = (r.solved_at_time, r.solved_at_step)
    return out


def report(modes: dict[str, list[tuple[float, float, float]]], config: object) -> None:
    steps = config.num_envs * config.num_steps
    print(f"## {ENV} PPO preset: {steps:,} transitions per iteration; medians, seconds\n")
    print("| mode | collect | in the workers | update | iteration | env steps/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, pairs in modes.items():
        c = statistics.median(p[0] for p in pairs)
        u = statistics.median(p[1] for p in pairs)
        i = statistics.median(p[2] for p in pairs)
        print(f"| {mode} | {c:.3f} | {i:.3f} | {u:.3f} | {c + u:.3f} | {steps / (c + u):,.0f} |")
    one, two, local = modes["ray W=1"], modes["ray W=2"], modes["in-process"]
    ratio = [(a[0] + a[1]) / (b[0] + b[1]) for a, b in zip(one, local)]
    eff = [a[0] / (2 * b[0]) for a, b in zip(one, two)]
    eff_it = [(a[0] + a[1]) / (2 * (b[0] + b[1])) for a, b in zip(one, two)]
    eff_inside = [a[2] / (2 * b[2]) for a, b in zip(one, two)]
    print(f"\nRay overhead at 1 worker (iteration, ray / in-process): "
          f"{statistics.median(ratio):.2f}x (target <= 1.10)")  # fmt: skip
    print(f"2-worker efficiency, collection: {statistics.median(eff):.2f} (target >= 0.85); "
          f"whole iteration: {statistics.median(eff_it):.2f}; inside the workers (slowest): "
          f"{statistics.median(eff_inside):.2f}")  # fmt: skip
    lagged = modes["ray W=2 overlap"]
    eff_wait = [a[0] / (2 * b[0]) for a, b in zip(one, lagged)]
    eff_lag = [(a[0] + a[1]) / (2 * (b[0] + b[1])) for a, b in zip(one, lagged)]
    print(
        f"with --overlap (policy lag 1): collection (the learner's wait) "
        f"{statistics.median(eff_wait):.2f}, whole iteration {statistics.median(eff_lag):.2f}"
    )


def report_model(c: dict[str, float]) -> None:
    print("\n## Per-iteration costs (s); projection: weak scaling, E envs per worker\n")
    print(f"collect {c['collect']:.3f} (sd {c['sigma']:.3f}), update {c['update']:.3f}, "
          f"ray.put(weights) {c['put'] * 1e3:.2f} ms, rollout transfer {c['transfer']:.3f}, "
          f"all-reduce alpha {c['alpha'] * 1e6:.0f} us, beta {c['beta'] / 1e9:.2f} GB/s, "
          f"{c['bytes'] / 1e3:.0f} kB x {c['n_sgd']:.0f} per iteration")  # fmt: skip
    print("\n| workers | Ray workers, one learner | DD-PPO ranks |")
    print("|---:|---:|---:|")
    for w in (2, 8, 64, 256):
        r, d = projected(c, w)
        print(f"| {w} | {r:.2f} | {d:.2f} |")


def lag_return(seeds: int, steps: int = 30_000) -> None:
    """Evaluation returns of CartPole's PPO preset on 2 workers, with and without ``overlap``
    (a policy lag of one update): the last and the best of 5 evaluations of 20 episodes."""
    print(f"## CartPole-v1 PPO preset, 2 workers, {steps:,} steps; eval every {steps // 5:,}\n")
    print("| overlap | seed | last eval return | best eval return | seconds |")
    print("|---|---:|---:|---:|---:|")
    for overlap in (False, True):
        for seed in range(seeds):
            config = preset("CartPole-v1", "ppo", workers=2, overlap=overlap, seed=seed,
                            total_steps=steps, eval_every=steps // 5, stop_at_threshold=False,
                            out=tempfile.mkdtemp(), progress=False, plot=False,
                            tensorboard=False)  # fmt: skip
            t0 = clock()
            history = train(config).history
            evals = [r["eval_return"] for r in history if r["eval_return"] == r["eval_return"]]
            print(
                f"| {overlap} | {seed} | {evals[-1]:.1f} | {max(evals):.1f} | {clock() - t0:.0f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--threshold", action="store_true", help="also time to the threshold")
    parser.add_argument("--budget", type=int, default=800_000)
    parser.add_argument("--quick", action="store_true", help="2 repeats of 1 iteration")
    parser.add_argument("--envs", type=int, help="total envs (default: the preset's 16)")
    parser.add_argument(
        "--lag-return",
        type=int,
        metavar="SEEDS",
        help="only: the return of "
        "CartPole PPO on 2 workers with and without --overlap, SEEDS seeds",
    )
    args = parser.parse_args()
    if args.lag_return:
        return lag_return(args.lag_return)
    if args.envs:
        ENVS["num_envs"] = args.envs
    torch.set_num_threads(1)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    if args.quick:
        args.repeats, args.iterations = 2, 1
    config = _config()
    modes = measure_modes(args.repeats, args.iterations)
    report(modes, config)
    report_model(costs(modes, dataclasses.replace(config)))
    if args.threshold:
        print("\n## Time to the threshold (one seed; evaluation excluded)\n")
        print("| mode | seconds | env steps |")
        print("|---|---:|---:|")
        for mode, (secs, step) in time_to_threshold(args.budget).items():
            s = "not solved" if secs is None else f"{secs:.1f}"
            print(f"| {mode} | {s} | {step if step is not None else '-'} |")
    print(f"\nload: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
