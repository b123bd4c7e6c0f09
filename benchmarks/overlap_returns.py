"""What overlapped collection (policy lag 1) does to the return, not only to the speed.

For each env and seed, trains with ``overlap=False`` and ``overlap=True`` (interleaved, same
config otherwise) and reports the final evaluation's mean return (20 deterministic episodes at
the end of the budget) and the training time, medians over seeds.

    python benchmarks/overlap_returns.py --env CartPole-v1 Pendulum-v1 --steps 50000 --seeds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from logtrick import rl

QUIET = {"progress": False, "tensorboard": False, "plot": False}


def run(env: str, steps: int, seed: int, overlap: bool, algo: str) -> tuple[float, float]:
    """(final evaluation return, training seconds) of one run."""
    with tempfile.TemporaryDirectory() as out:
        config = rl.Config(env=env, algo=algo, total_steps=steps, seed=seed, overlap=overlap,
                           eval_every=steps, stop_at_threshold=False, out=out, **QUIET)  # fmt: skip
        last = rl.train(config).history[-1]
    return last["eval_return"], last["time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", nargs="*", default=["CartPole-v1", "Pendulum-v1"])
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.algo}, {args.steps:,} steps, seeds 0..{args.seeds - 1}, medians\n")
    print("| env | return, on-policy | return, overlap | train s, on-policy | train s, overlap |")
    print("|---|---:|---:|---:|---:|")
    for env in args.env:
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for seed in range(args.seeds):
            for overlap in (False, True):
                results[overlap].append(run(env, args.steps, seed, overlap, args.algo))
        ret = {k: statistics.median(r for r, _ in v) for k, v in results.items()}
        sec = {k: statistics.median(t for _, t in v) for k, v in results.items()}
        cells = [ret[False], ret[True], sec[False], sec[True]]
        print(f"| {env} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
