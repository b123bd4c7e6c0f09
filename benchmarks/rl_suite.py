"""RL suite: env steps and training wall-clock to a return threshold, logtrick against SB3.

Protocol, identical for every system: the deterministic policy is evaluated on 20 episodes with
fixed reset seeds (``seed + 10_000 + i``) after each update (rollout) that crosses a multiple of
``--eval-every`` env steps; the first evaluation at or over the threshold gives the env steps and
the training wall-clock (seconds since the run's setup began, time spent evaluating excluded). One
torch thread. Runs stop at the threshold, at ``--budget`` env steps, or when their training time
passes ``--cap`` seconds (then "not solved within cap").

Systems: ``reinforce``, ``a2c``, ``npg``, ``ppo`` (``logtrick.rl.preset(env, algo)`` with
``total_steps`` = the budget: the env's preset, or for an env without one the defaults of
``logtrick.rl.defaults``; ``--no-preset`` forces those), ``sb3-ppo``, ``sb3-a2c``
(Stable-Baselines3 with the rl-baselines3-zoo hyperparameters below) and ``sb3-ppo-default``
(SB3's ``PPO("MlpPolicy", env)`` with its own defaults: one env, no normalisation), with
``total_timesteps`` = the budget. Thresholds: ``THRESHOLDS``, else the env's registered
``reward_threshold``. ``--fixed-budget`` trains every run for the whole budget and reports the
final evaluation return beside the training wall-clock (the MuJoCo table). For logtrick both its
own ``solved_at_time`` (collection + updates only) and the outside measure used for SB3 (wall-clock
of the whole ``train`` call minus evaluations, so logging and checkpoints count) are stored; the
tables use the outside measure.

Results go, one JSON line per (env, system, seed), to ``--results`` as soon as a run ends; the
plots (``rl_suite_<env>.png``) go beside that file.

Usage::

    python benchmarks/rl_suite.py --envs CartPole-v1 --systems ppo,sb3-ppo --seeds 5
    python benchmarks/rl_suite.py --report          # tables + plots from the results file
    python benchmarks/rl_suite.py --envs Hopper-v5 --systems ppo,sb3-ppo-default --seeds 3 \
        --budget 300000 --fixed-budget --eval-every 50000
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rl_suite_report import (
    THRESHOLDS,
    fixed_budget_markdown,
    load_results,
    markdown,
    plot,
    reached,
    threshold,
)

from logtrick import rl
from logtrick.rl.defaults import default_overrides

rl_train = importlib.import_module("logtrick.rl.loop")  # the module (rl.train is the function)

OUT = Path(__file__).parent / "out"
BUDGETS = {"Pendulum-v1": 300_000}  # others: 1M
LOGTRICK = ("reinforce", "a2c", "npg", "ppo")
SB3 = ("sb3-ppo", "sb3-a2c", "sb3-ppo-default")


# rl-baselines3-zoo hyperparameters (DLR-RM/rl-baselines3-zoo, hyperparams/ppo.yml and
# hyperparams/a2c.yml; LunarLander-v3 uses the LunarLander-v2 entry). ``lin_x`` is a learning rate
# (or clip range) decaying linearly from x to 0 over the run; ``normalize`` is VecNormalize of
# observations and rewards (gamma = the algorithm's); n_timesteps is replaced by the budget.
ZOO: dict[str, dict[str, dict[str, Any]]] = {
    "sb3-ppo": {
        "CartPole-v1": {"n_envs": 8, "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8,
                        "gamma": 0.98, "n_epochs": 20, "ent_coef": 0.0,
                        "learning_rate": "lin_0.001", "clip_range": "lin_0.2"},
        "Acrobot-v1": {"normalize": True, "n_envs": 16, "n_steps": 256, "gae_lambda": 0.94,
                       "gamma": 0.99, "n_epochs": 4, "ent_coef": 0.0},
        "LunarLander-v3": {"n_envs": 16, "n_steps": 1024, "batch_size": 64, "gae_lambda": 0.98,
                           "gamma": 0.999, "n_epochs": 4, "ent_coef": 0.01},
        "Pendulum-v1": {"n_envs": 4, "n_steps": 1024, "gae_lambda": 0.95, "gamma": 0.9,
                        "n_epochs": 10, "ent_coef": 0.0, "learning_rate": 1e-3, "clip_range": 0.2,
                        "use_sde": True, "sde_sample_freq": 4},
    },
    "sb3-a2c": {
        "CartPole-v1": {"n_envs": 8, "ent_coef": 0.0},
        "Acrobot-v1": {"normalize": True, "n_envs": 16, "ent_coef": 0.0},
        "LunarLander-v3": {"n_envs": 8, "gamma": 0.995, "n_steps": 5,
                           "learning_rate": "lin_0.00083", "ent_coef": 0.00001},
        "Pendulum-v1": {"normalize": True, "n_envs": 8, "ent_coef": 0.0, "max_grad_norm": 0.5,
                        "n_steps": 8, "gae_lambda": 0.9, "vf_coef": 0.4, "gamma": 0.9,
                        "use_rms_prop": True, "normalize_advantage": False,
                        "learning_rate": "lin_7e-4", "use_sde": True,
                        "policy_kwargs": {"log_std_init": -2, "ortho_init": False}},
    },
}  # fmt: skip


class Clock:
    """Training wall-clock since ``start``, time spent in :meth:`evaluating` removed."""

    def __init__(self) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        self.excluded = self.cpu_excluded = 0.0
        self.eval_since: float | None = None
        self.points: list[tuple[float, float, float]] = []  # (training s, eval return, CPU s)

    def train_time(self) -> float:
        now = self.eval_since if self.eval_since is not None else time.perf_counter()
        return now - self.start - self.excluded

    def cpu_time(self) -> float:
        """CPU seconds of this process (all threads) outside evaluations: less sensitive to
        other jobs sharing the cores than wall-clock."""
        return time.process_time() - self.cpu_start - self.cpu_excluded

    def evaluating(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (an evaluation returning the mean or ``(mean, std)``) off the clock;
        records ``(train_time, mean)``."""
        self.eval_since, cpu0 = time.perf_counter(), time.process_time()
        t, cpu = self.train_time(), self.cpu_time()
        try:
            out = fn()
        finally:
            self.excluded += time.perf_counter() - self.eval_since
            self.cpu_excluded += time.process_time() - cpu0
            self.eval_since = None
        self.points.append((t, float(out[0] if isinstance(out, tuple) else out), cpu))
        return out


def _watchdog(clock: Clock, cap: float, done: threading.Event) -> threading.Thread:
    """A thread sending one SIGINT (logtrick's graceful stop) once training time passes ``cap``."""

    def watch() -> None:
        while not done.wait(0.25):
            if clock.train_time() > cap:
                os.kill(os.getpid(), signal.SIGINT)
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def logtrick_config(env: str, algo: str, no_preset: bool = False, **protocol: Any) -> rl.Config:
    """``rl.preset(env, algo)``, or with ``no_preset`` the defaults an env without a preset gets
    (``rl.defaults.default_overrides``), with the protocol's fields on top."""
    if not no_preset:
        return rl.preset(env, algo, **protocol)
    return rl.Config(env=env, algo=algo, **{**default_overrides(env, algo), **protocol})


def run_logtrick(env: str, algo: str, seed: int, budget: int, cap: float,
                 eval_every: int, overrides: dict[str, Any], fixed_budget: bool = False,
                 no_preset: bool = False) -> dict[str, Any]:  # fmt: skip
    """One logtrick run under the protocol; returns its record (curve included)."""
    clock, done = Clock(), threading.Event()
    original = rl_train.evaluate

    def evaluate_off_clock(*args: Any, **kwargs: Any) -> tuple[float, float]:
        return clock.evaluating(lambda: original(*args, **kwargs))

    rl_train.evaluate = evaluate_off_clock
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a late watchdog signal is harmless
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = logtrick_config(env, algo, no_preset, seed=seed, total_steps=budget,
                                     eval_every=eval_every, stop_at_threshold=not fixed_budget,
                                     target_return=threshold(env), progress=False,
                                     tensorboard=False, plot=False, out=tmp,
                                     **overrides)  # fmt: skip
            clock.start, clock.cpu_start = time.perf_counter(), time.process_time()
            _watchdog(clock, cap, done)
            result = rl.train(config)
            done.set()
    finally:
        done.set()
        rl_train.evaluate = original
        signal.signal(signal.SIGINT, previous)
    steps = [int(r["global_step"]) for r in result.history if not np.isnan(r["eval_return"])]
    total = int(result.history[-1]["global_step"])
    return _record(env, algo, seed, budget, cap, clock, steps, total,
                   own_time=result.solved_at_time, overrides=overrides,
                   no_preset=no_preset)  # fmt: skip


def _record(env: str, system: str, seed: int, budget: int, cap: float, clock: Clock,
            steps: list[int], total_steps: int, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The JSON record of a run from its evaluation points."""
    curve = [(s, t, r) for s, (t, r, _) in zip(steps, clock.points)]
    cpu = [c for _, _, c in clock.points]
    solved = next(((s, t, c) for (s, t, r), c in zip(curve, cpu) if reached(env, r)), (None,) * 3)
    return {"env": env, "system": system, "seed": seed, "budget": budget, "cap": cap,
            "solved_at_step": solved[0], "solved_at_time": solved[1], "solved_at_cpu": solved[2],
            "cpu_at_evals": cpu,
            "total_steps": total_steps, "train_time": clock.train_time(),
            "capped": solved[0] is None and total_steps < budget, "curve": curve,
            "final_return": curve[-1][2] if curve else None,
            **extra}  # fmt: skip


def _zoo_value(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])
        return lambda progress_remaining: progress_remaining * start
    return value


def run_sb3(env: str, system: str, seed: int, budget: int, cap: float,
            eval_every: int, fixed_budget: bool = False) -> dict[str, Any]:  # fmt: skip
    """One Stable-Baselines3 run under the protocol: the zoo's hyperparameters, or for
    ``sb3-ppo-default`` SB3's own defaults (``PPO("MlpPolicy", env)``: one env, no
    normalisation)."""
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    clock = Clock()
    zoo = {"n_envs": 1} if system == "sb3-ppo-default" else ZOO[system][env]
    hp = {k: _zoo_value(v) for k, v in zoo.items()}
    n_envs, normalize = hp.pop("n_envs"), hp.pop("normalize", False)
    venv = make_vec_env(env, n_envs=n_envs, seed=seed)
    if normalize:
        venv = VecNormalize(venv, gamma=hp.get("gamma", 0.99))
    cls = A2C if system == "sb3-a2c" else PPO
    model = cls("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **hp)
    callback = _protocol_callback(clock, env, seed, cap, eval_every, fixed_budget)
    model.learn(total_timesteps=budget, callback=callback)
    callback.final()
    return _record(env, system, seed, budget, cap, clock, callback.steps, model.num_timesteps)


def _sb3_evaluate(model: Any, env: str, episodes: int, seed: int) -> float:
    """``rl.evaluate``'s loop for an SB3 model: same vector env, seeds and observation path."""
    norm = model.get_vec_normalize_env()
    envs = rl.make_env(env, num_envs=episodes, vectorization_mode="sync")
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
        totals, running = np.zeros(episodes), np.ones(episodes, dtype=bool)
        while running.any():
            action, _ = model.predict(norm.normalize_obs(obs) if norm else obs, deterministic=True)
            obs, reward, terminated, truncated, _ = envs.step(action)
            totals += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
    finally:
        envs.close()
    return float(totals.mean())


def _protocol_callback(clock: Clock, env: str, seed: int, cap: float, eval_every: int,
                       fixed_budget: bool = False) -> Any:  # fmt: skip
    """SB3 callback: evaluate after each update crossing a multiple of ``eval_every``."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Protocol(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.steps: list[int] = []
            self.last, self.stop = 0, False

        def _on_rollout_start(self) -> None:  # the previous rollout's update is done
            self._maybe_evaluate()

        def _maybe_evaluate(self) -> None:
            n = self.num_timesteps
            if n // eval_every == self.last // eval_every:
                return
            self.last = n
            mean = clock.evaluating(lambda: _sb3_evaluate(self.model, env, 20, seed + 10_000))
            self.steps.append(n)
            self.stop |= reached(env, mean) and not fixed_budget

        def _on_step(self) -> bool:
            return not (self.stop or clock.train_time() > cap)

        def final(self) -> None:
            if not self.stop and clock.train_time() <= cap and self.num_timesteps > self.last:
                self._maybe_evaluate()

    return Protocol()


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs, values parsed as JSON when they parse (else kept as strings)."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_one(env: str, system: str, seed: int, budget: int, args: argparse.Namespace,
            overrides: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One run of ``system`` under the protocol the arguments describe."""
    if system in SB3:
        return run_sb3(env, system, seed, budget, args.cap, args.eval_every, args.fixed_budget)
    rec = run_logtrick(env, system, seed, budget, args.cap, args.eval_every, overrides,
                       args.fixed_budget, args.no_preset)  # fmt: skip
    rec["system"] = system + (f"[{args.label}]" if args.label else "")
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default=",".join(THRESHOLDS))
    parser.add_argument("--systems", default=",".join(LOGTRICK + SB3[:2]))
    parser.add_argument("--seeds", type=int, default=5, help="seeds first .. first + n - 1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=None, help="env steps (default 1M/300k)")
    parser.add_argument("--cap", type=float, default=600.0, help="training seconds per run")
    parser.add_argument("--eval-every", type=int, default=5000)
    parser.add_argument(
        "--fixed-budget",
        action="store_true",
        help="train for the whole budget; report the final evaluation return",
    )
    parser.add_argument(
        "--no-preset",
        action="store_true",
        help="logtrick: the no-preset defaults, even where a preset exists",
    )
    parser.add_argument("--set", nargs="*", default=[], help="logtrick overrides key=value")
    parser.add_argument("--label", default=None, help="system name suffix for the overrides")
    parser.add_argument("--results", type=Path, default=OUT / "rl_suite.jsonl")
    parser.add_argument("--report", action="store_true", help="only print tables and plot")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    overrides = _parse_overrides(args.set)
    for module in ("rich.progress", "stable_baselines3", "stable_baselines3.common.callbacks"):
        importlib.import_module(module)  # one-time import costs stay out of every run's clock
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the first optimizer imports dynamo
    for env in [] if args.report else args.envs.split(","):
        budget = args.budget or BUDGETS.get(env, 1_000_000)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for system in args.systems.split(","):  # interleaved: load changes hit all alike
                rec = run_one(env, system, seed, budget, args, overrides)
                with args.results.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"{env} {rec['system']} seed {seed}: solved at {rec['solved_at_step']} "
                      f"steps, {rec['solved_at_time']} s (own {rec.get('own_time')}); "
                      f"{rec['total_steps']} steps in {rec['train_time']:.1f} s, final return "
                      f"{rec['final_return']}", flush=True)  # fmt: skip
    results = load_results(args.results)
    print(fixed_budget_markdown(results) if args.fixed_budget else markdown(results))
    for path in plot(results, args.results.parent):  # the plots go beside the records
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
