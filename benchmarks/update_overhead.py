"""The cost of logtrick's update against a lean hand-written one of the same shape, in one run.

The reference is CleanRL's PPO update written out by hand (two MLPs, Adam, the clipped surrogate,
clipped gradient norm, the same minibatches and epochs): what is left of logtrick's time above it
is bookkeeping, not the network's own work. Both see the same rollout; the rounds interleave and
the table reports medians.

    python benchmarks/update_overhead.py                      # Hopper-v5 and CartPole-v1, ppo + a2c
    python benchmarks/update_overhead.py --env Hopper-v5 --algo ppo --repeats 9
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from logtrick import rl
from logtrick.rl.build import make_learner
from logtrick.rl.envs import make_env
from logtrick.rl.rollout import Collector, Rollout
from logtrick.rl.update import update

QUIET = {"progress": False, "tensorboard": False, "plot": False}


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def lean_update(config: rl.Config, ro: Rollout, obs_dim: int, act_dim: int, box: bool) -> Callable:
    """A CleanRL-style update of the same shape as logtrick's, as a closure over its state."""
    hidden = list(config.hidden)
    actor = _mlp([obs_dim, *hidden, act_dim])
    critic = _mlp([obs_dim, *hidden, 1])
    log_std = nn.Parameter(torch.zeros(act_dim))
    params = [*actor.parameters(), *critic.parameters(), *([log_std] if box else [])]
    opt = torch.optim.Adam(params, lr=config.lr, eps=1e-5, fused=True)
    valid = ro.valid.reshape(-1)
    obs = ro.obs.flatten(0, 1)[valid]
    actions = ro.actions.flatten(0, 1)[valid]
    old_lp = ro.log_probs.reshape(-1)[valid]
    adv_all = torch.randn(len(obs))
    ret_all = torch.randn(len(obs))
    n, k = len(obs), min(config.num_minibatches, len(obs))
    epochs = config.update_epochs if config.algo == "ppo" else 1

    def run() -> None:
        for _ in range(epochs):
            for idx in torch.randperm(n).tensor_split(k):
                head = actor(obs[idx])
                if box:
                    dist = torch.distributions.Normal(head, log_std.exp())
                    lp, ent = dist.log_prob(actions[idx]).sum(-1), dist.entropy().sum(-1)
                else:
                    dist = torch.distributions.Categorical(logits=head)
                    lp, ent = dist.log_prob(actions[idx]), dist.entropy()
                adv = adv_all[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                ratio = (lp - old_lp[idx]).exp()
                eps = config.clip_eps
                pg = -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
                v = critic(obs[idx]).squeeze(-1)
                loss = pg.mean() + 0.5 * config.vf_coef * (v - ret_all[idx]).pow(2).mean()
                loss = loss - config.ent_coef * ent.mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, config.max_grad_norm, foreach=True)
                opt.step()

    return run


def _time(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call, over ``calls`` calls (short updates: enough to pass the timer's noise)."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def bench(env: str, algo: str, repeats: int) -> dict[str, float]:
    config = rl.Config(env=env, algo=algo, seed=0, **QUIET)
    torch.set_num_threads(config.torch_threads)
    envs = make_env(config.env, num_envs=config.num_envs)
    learner = make_learner(config, envs)
    ro = Collector(envs, learner.policy, config.num_steps, seed=0).collect()
    space = envs.single_action_space
    box = hasattr(space, "shape") and len(space.shape) > 0
    act_dim = int(np.prod(space.shape)) if box else int(space.n)  # type: ignore[attr-defined]
    obs_dim = int(ro.obs.shape[-1])
    lean = lean_update(config, ro, obs_dim, act_dim, box)
    ours = lambda: update(learner, ro)  # noqa: E731
    calls = max(1, round(0.2 / _time(ours, 1)))  # warm-up, and about 0.2 s per timing
    _time(lean, 1)
    t_ours, t_lean = [], []
    for _ in range(repeats):
        t_ours.append(_time(ours, calls))
        t_lean.append(_time(lean, calls))
    envs.close()
    m_ours, m_lean = statistics.median(t_ours), statistics.median(t_lean)
    steps = config.update_epochs * min(config.num_minibatches, len(ro.obs.flatten(0, 1)))
    if algo != "ppo":
        steps = 1
    return {"ours_ms": 1e3 * m_ours, "lean_ms": 1e3 * m_lean, "ratio": m_ours / m_lean,
            "steps": steps, "per_step_us": 1e6 * (m_ours - m_lean) / steps}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", nargs="*", default=["Hopper-v5", "CartPole-v1"])
    parser.add_argument("--algo", nargs="*", default=["ppo", "a2c"])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, one torch thread (the configs'), median of {args.repeats}")
    print(f"{'env':<14}{'algo':<6}{'logtrick ms':>12}{'lean ms':>10}{'ratio':>8}"
          f"{'opt steps':>10}{'extra us/step':>14}")  # fmt: skip
    for env in args.env:
        for algo in args.algo:
            r = bench(env, algo, args.repeats)
            print(f"{env:<14}{algo:<6}{r['ours_ms']:>12.1f}{r['lean_ms']:>10.1f}{r['ratio']:>8.2f}"
                  f"{r['steps']:>10}{r['per_step_us']:>14.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
