r"""Hyperparameter search with Ray Tune: each trial an ``rl.Agent``, ASHA stopping weak ones early.

A ``Tuner`` samples a few ``Config`` fields (learning rate, rollout length, entropy bonus) for
PPO on CartPole; each trial trains an :class:`logtrick.rl.Agent` and reports its evaluation
return (``eval_return``, the mean return of greedy episodes) after every evaluation. ASHA
(asynchronous successive halving) compares the trials at equal training iterations and stops the
lower half at each rung, so the budget goes to the promising ones. The script prints the trials
and the best configuration.

Run:  python examples/tune_rl.py            (8 trials, a few minutes on 2 cores; --quick: 2
      trials, a tiny budget). On a cluster: ``ray.init(address="auto")`` before ``main``.

Each trial is an ordinary run: its directory (metrics.csv, checkpoint) lies in the trial's own
folder under ``out/tune``, and ``logtrick evaluate`` reads it.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from logtrick import rl

OUT = Path(__file__).resolve().parent / "out"


def trial(params: dict[str, Any]) -> None:
    """One Tune trial: an Agent with ``params`` over the CartPole PPO preset, reporting each
    evaluation's return to Tune (ASHA's ``training_iteration`` counts these reports)."""
    fields = {k: v for k, v in params.items() if k not in ("env", "algo")}
    agent = rl.Agent(params["env"], params["algo"], out=tempfile.mkdtemp(prefix="trial-"),
                     progress=False, plot=False, tensorboard=False, **fields)  # fmt: skip

    def report(row: dict[str, float]) -> None:
        if not math.isnan(row["eval_return"]):
            tune.report({"eval_return": row["eval_return"], "global_step": row["global_step"]})

    with agent:
        agent.learn(callback=report)


def main(quick: bool = False, seed: int = 0, out_dir: Path = OUT) -> dict[str, Any]:
    """Run the search; returns the best configuration, its return and every trial's return."""
    budget = 4_096 if quick else 40_000
    space = {
        "env": "CartPole-v1",
        "algo": "ppo",
        "seed": seed,
        "total_steps": budget,
        "eval_every": budget // 4,
        "eval_episodes": 3 if quick else 10,
        "stop_at_threshold": False,
        "lr": tune.loguniform(1e-4, 3e-3),
        "num_steps": tune.choice([16, 32, 64]),
        "ent_coef": tune.uniform(0.0, 0.01),
    }
    asha = ASHAScheduler(metric="eval_return", mode="max", max_t=4, grace_period=1)
    if __name__ != "__main__":  # imported: the trials travel by value (workers cannot import it)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:  # a private local runtime, ended below
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(trial, {"cpu": 1}),
            param_space=space,
            tune_config=tune.TuneConfig(num_samples=2 if quick else 8, scheduler=asha),
            run_config=tune.RunConfig(storage_path=str(out_dir.resolve() / "tune"), verbose=0),
        )
        results = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    best = results.get_best_result(metric="eval_return", mode="max")
    returns = [r.metrics.get("eval_return", math.nan) for r in results]
    summary = {"best_config": {k: best.config[k] for k in ("lr", "num_steps", "ent_coef")},
               "best_return": best.metrics["eval_return"], "returns": returns,
               "errors": [str(r.error) for r in results if r.error]}  # fmt: skip
    for r in results:
        print(
            {k: r.config[k] for k in ("lr", "num_steps", "ent_coef")}, r.metrics.get("eval_return")
        )
    print("best:", summary["best_config"], summary["best_return"])
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 trials, a tiny budget")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(quick=args.quick, seed=args.seed)
