r"""Collect the next rollout while the learner updates on the last one (``Config.overlap``).

A second thread steps the environments with a *behaviour* copy of the policy while the main
thread updates the learner's policy; on a machine with two cores the environment and the
network then share the wall-clock instead of taking turns (torch kernels and MuJoCo's and
EnvPool's steps release the GIL; ``torch_threads`` is per thread).

The policy lag is one update, stated and corrected:

==========  ===========================  =====================================
call        returns                      collected by
==========  ===========================  =====================================
1st         :math:`R_0`                  :math:`\theta_0` (lag 0, in this thread)
k-th        :math:`R_{k-1}`              :math:`\theta_{k-2}` (lag 1)
==========  ===========================  =====================================

(:math:`\theta_j` is the policy after ``j`` updates; the k-th call returns while the learner
holds :math:`\theta_{k-1}`.) Each rollout keeps the behaviour policy's log-probabilities, and
PPO's ratio :math:`\pi_\theta/\mu` is taken against them (:func:`~logtrick.rl.update.prepare`
does not re-evaluate them when ``Rollout.policy_lag > 0``), so the clip bounds the step from
the policy that acted, as in IMPALA-style asynchronous PPO. Observation statistics flow the
other way: the behaviour copy folds in each step's observations, and at every hand-off the
learner takes them, so an update sees the statistics of every observation collected so far,
as without overlap. Sampling uses the global torch generator in the collecting thread only.
"""

from __future__ import annotations

import copy
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch.autograd.graph import increment_version

from logtrick.rl.rollout import Collector, Rollout

__all__ = ["OverlapCollector"]


class OverlapCollector:
    """``collect()`` returns the rollout gathered in the background and starts the next one
    with the learner's current weights (see the module docstring for the lag).

    Args:
        collector: the in-process collector (its envs reset); its policy is replaced by a copy.
        policy: the learner's policy, whose weights the copy follows.
    """

    def __init__(self, collector: Collector, policy: torch.nn.Module) -> None:
        self.policy, self.collector = policy, collector
        self.behaviour = copy.deepcopy(policy)
        collector.policy = self.behaviour
        threads = torch.get_num_threads()  # the run's torch_threads, in the new thread too
        self._pool = ThreadPoolExecutor(
            1, "logtrick-collect", initializer=torch.set_num_threads, initargs=(threads,)
        )
        self._pending: Future[Rollout] | None = None

    def collect(self) -> Rollout:
        if self._pending is None:
            self._send_weights()
            rollout, lag = self.collector.collect(), 0
        else:
            rollout, lag = self._pending.result(), 1
            self._pending = None
        self._take_obs_stats()
        self._send_weights()
        self._pending = self._pool.submit(self.collector.collect)
        rollout.policy_lag = lag
        return rollout

    @torch.no_grad()
    def _send_weights(self) -> None:
        """Behaviour policy ← the learner's parameters (the collector is idle)."""
        behaviour: list[torch.Tensor] = list(self.behaviour.parameters())
        torch._foreach_copy_(behaviour, list(self.policy.parameters()))
        increment_version(behaviour)  # the policy's cached fused weights follow the versions

    @torch.no_grad()
    def _take_obs_stats(self) -> None:
        """The learner's observation statistics (``obs_*`` buffers) ← the behaviour copy's;
        other buffers (a user network's own) stay the learner's."""
        theirs = dict(self.behaviour.named_buffers())
        for name, mine in self.policy.named_buffers():
            if name.rsplit(".", 1)[-1].lstrip("_").startswith("obs_"):
                mine.copy_(theirs[name])

    def __getattr__(self, name: str) -> Any:  # num_envs, env, ...: the collector's
        if name in ("collector", "policy", "behaviour", "_pool", "_pending"):
            raise AttributeError(name)
        return getattr(self.collector, name)

    def close(self) -> None:
        """Wait for the rollout in flight (its result is dropped) and stop the thread."""
        if self._pending is not None:
            self._pending.exception()
            self._pending = None
        self._pool.shutdown(wait=True)
