"""How much of a whole ``logtrick train`` process is the environment's own ``step``.

Runs one training process per case and reports the time spent inside the vector env's
``step`` (Gymnasium's ``SyncVectorEnv.step`` or EnvPool's) as a share of the process's whole
wall-clock, imports and start-up included (the limit is 1.0: nothing but the env). With
``--set overlap=True`` the envs step in a forked child: its env seconds come back with each
rollout it delivers. Evaluation is off so that every step counted is a training step. Each case
is its own process (this script re-runs itself with ``--one``), so the start-up is counted as a
user pays it.

    python benchmarks/env_share.py                          # CartPole, LunarLander, Hopper
    python benchmarks/env_share.py --env Hopper-v5 --steps 100000 --set overlap=True
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [("CartPole-v1", 100_000), ("LunarLander-v3", 100_000), ("Hopper-v5", 50_000)]


def one(env: str, steps: int, settings: list[str], out: str) -> dict[str, float]:
    """Train in this process; the env-step seconds and the whole process's wall-clock."""
    import gymnasium as gym

    from logtrick import rl
    from logtrick.rl.config import parse_field
    from logtrick.rl.envs import EnvPoolEnv
    from logtrick.rl.overlap import OverlapCollector
    from logtrick.rl.rollout import Collector

    spent = [0.0]

    def timed(step):  # type: ignore[no-untyped-def]
        def wrapper(self, actions):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return step(self, actions)
            finally:
                spent[0] += time.perf_counter() - t0

        return wrapper

    for cls in (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv, EnvPoolEnv):
        cls.step = timed(cls.step)  # type: ignore[method-assign]
    # with overlap the rollouts after the first are collected in a forked child: each carries
    # the env seconds of the process that collected it (the child's count starts from the
    # parent's at the fork); a rollout still in flight at the end is not counted
    collect, delivered = Collector.collect, [0.0]

    def collect_counted(self):  # type: ignore[no-untyped-def]
        rollout = collect(self)
        rollout.env_s = spent[0]
        return rollout

    overlap_collect = OverlapCollector.collect

    def overlap_counted(self):  # type: ignore[no-untyped-def]
        rollout = overlap_collect(self)
        delivered[0] = max(delivered[0], rollout.env_s)
        return rollout

    Collector.collect = collect_counted  # type: ignore[method-assign]
    OverlapCollector.collect = overlap_counted  # type: ignore[method-assign]
    fields = {k: parse_field(k, v) for k, v in (s.split("=", 1) for s in settings)}
    config = rl.Config(env=env, total_steps=steps, eval_every=0, progress=False, plot=False,
                       tensorboard=False, out=tempfile.mkdtemp(dir=out), **fields)  # fmt: skip
    last = rl.train(config).history[-1]
    env_s = max(spent[0], delivered[0])
    return {"env_s": env_s, "train_s": last["time"], "return": last["episode_return"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", nargs="*")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--set", nargs="*", default=[], help="Config FIELD=VALUE")
    parser.add_argument("--out", default="/tmp/logtrick-env-share")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(one(args.env[0], args.steps, args.set, args.out)))
        return
    cases = [(e, args.steps or 100_000) for e in args.env] if args.env else CASES
    print("| env | steps | settings | env step s | process s | env share | return |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for env, steps in cases:
        cmd = [sys.executable, __file__, "--one", "--env", env, "--steps", str(steps),
               "--out", args.out, "--set", *args.set]  # fmt: skip
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        wall = time.perf_counter() - t0  # the whole process: interpreter, imports, start-up
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {env} | {steps:,} | {' '.join(args.set) or 'defaults'} | {r['env_s']:.1f} | "
              f"{wall:.1f} | {r['env_s'] / wall:.2f} | {r['return']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
