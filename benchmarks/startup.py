"""Start-up of ``rl.train`` until the first env step: imports, then building the run.

Times ``import torch``, ``from logtrick import rl``, and the build (config, envs, policy,
optimizer, collector) up to the collector's first step, where it stops the run. Run it in a
fresh process each time (imports are cached within one).

    python benchmarks/startup.py [ENV]          # default Hopper-v5
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time

t0 = time.perf_counter()
import torch  # noqa: E402

t1 = time.perf_counter()
from logtrick import rl  # noqa: E402
from logtrick.rl import rollout  # noqa: E402

t2 = time.perf_counter()


class FirstStepError(Exception):
    """Raised at the collector's first step: the run is built."""


def _stop(self: object, t: int) -> None:
    raise FirstStepError


def main() -> None:
    env = sys.argv[1] if len(sys.argv) > 1 else "Hopper-v5"
    rollout.Collector._step = _stop  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as out:
        config = rl.Config(env=env, algo="ppo", total_steps=10_000, progress=False,
                           tensorboard=False, plot=False, out=out)  # fmt: skip
        with contextlib.suppress(FirstStepError):
            rl.train(config)
    t3 = time.perf_counter()
    dynamo = "torch._dynamo" in sys.modules
    print(f"| {env} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.2f} | {t3 - t0:.2f} | {dynamo} |")
    assert torch  # imported for its timing


if __name__ == "__main__":
    print("| env | import torch s | import logtrick.rl s | build to first step s | total s | "
          "torch._dynamo imported |")  # fmt: skip
    main()
