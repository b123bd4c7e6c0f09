"""Run by ``tests/test_distributed.py`` under ``torchrun --nproc-per-node 2``: the ``logtrick``
command line on every rank, ``{rank}`` in an argument replaced by the rank.

Importing it registers envs whose rank-1 copy fails at its ``AT``-th step (env ids
``distributed_faults:HangOnRank1-v0``, ``distributed_faults:DieOnRank1-v0``): it stops itself
(SIGSTOP, a hung rank) or ends its process (a dead rank).
"""

from __future__ import annotations

import os
import signal
import sys

import gymnasium as gym

AT = 300  # steps of one env: the 5th update with 64 steps per rollout


class RankFault(gym.Wrapper):
    """CartPole that hangs or dies at its ``AT``-th step on rank 1."""

    def __init__(self, how: str) -> None:
        super().__init__(gym.make("CartPole-v1"))
        self.how, self.steps = how, 0

    def step(self, action: object) -> tuple:
        self.steps += 1
        if os.environ.get("RANK") == "1" and self.steps == AT:
            if self.how == "hang":
                os.kill(os.getpid(), signal.SIGSTOP)
            else:
                os._exit(7)
        return self.env.step(action)


def _hang() -> gym.Env:
    return RankFault("hang")


def _die() -> gym.Env:
    return RankFault("die")


for _id, _entry in (("HangOnRank1-v0", _hang), ("DieOnRank1-v0", _die)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry)

if __name__ == "__main__":
    from logtrick import cli

    rank = os.environ.get("RANK", "0")
    sys.exit(cli.main([arg.replace("{rank}", rank) for arg in sys.argv[1:]]))
