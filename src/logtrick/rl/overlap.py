r"""Collect the next rollout while the learner updates on the last one (``Config.overlap``).

A *behaviour* copy of the policy steps the environments in a child process while this one
updates the learner's policy: on a machine with two cores the environment and the network then
share the wall-clock instead of taking turns. The child is forked when the collector is built
(before the run starts its own threads: progress bar, logging) and takes the collector as it
is (its envs reset, its copy of the policy, torch's global generator); each hand-off sends it
the learner's parameters and brings back the rollout and the observation statistics, pickled
by value. A second *thread* would not do for Gymnasium's envs: their Python and the policy's
forward pass hold the GIL the update needs, and the two threads took longer than the same work
one after the other (``benchmarks/env_share.py``). A thread is used where a fork cannot be:
EnvPool's pool (its C++ threads do not survive a fork; its step releases the GIL), a policy on
a GPU, or no ``fork`` (Windows). ``torch_threads`` applies in the child or thread too.

The policy lag is one update, stated and corrected:

==========  ===========================  =====================================
call        returns                      collected by
==========  ===========================  =====================================
1st         :math:`R_0`                  :math:`\theta_0` (lag 0, waited for)
k-th        :math:`R_{k-1}`              :math:`\theta_{k-2}` (lag 1)
==========  ===========================  =====================================

(:math:`\theta_j` is the policy after ``j`` updates; the k-th call returns while the learner
holds :math:`\theta_{k-1}`.) An exception in the child is raised here with the child's
traceback as a note (an env's still becomes an :class:`~logtrick.rl.errors.EnvError` naming
it); a child that dies is a ``RuntimeError`` naming its exit code. The child ignores SIGINT.

Each rollout keeps the behaviour policy's log-probabilities :math:`\mu`, and the update
corrects the lag with the decoupled PPO objective (Hilton et al. 2022;
:func:`~logtrick.rl.update.prepare` and :func:`~logtrick.rl.update.ppo_loss`): the clip bounds
the step from the policy the update starts from, :math:`\pi_{\text{prox}}`, and each sample is
weighted by :math:`\pi_{\text{prox}}/\mu`, so the expected gradient is the on-policy one
(an exact-enumeration test). Taking the ratio against :math:`\mu` instead, as a first version
did, left many samples outside the clip from the first epoch and cost HalfCheetah-v5 a third of
its return at 300k steps (BENCHMARKS.md §11). Observation statistics flow the
other way: the behaviour copy folds in each step's observations, and at every hand-off the
learner takes them, so an update sees the statistics of every observation collected so far,
as without overlap. Sampling uses torch's global generator, in the child (or thread) only.
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import signal
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import torch
from torch.autograd.graph import increment_version

from logtrick.rl.envs import env_call
from logtrick.rl.rollout import Collector, Rollout

__all__ = ["OverlapCollector", "can_fork"]


class OverlapCollector:
    """``collect()`` returns the rollout gathered in the background and starts the next one
    with the learner's current weights (see the module docstring for the lag).

    Args:
        collector: the in-process collector (its envs reset); its policy is replaced by a copy.
        policy: the learner's policy, whose weights the copy follows.
        process: collect in a forked child (default: where :func:`can_fork` says so), else in
            a thread.
    """

    def __init__(
        self, collector: Collector, policy: torch.nn.Module, process: bool | None = None
    ) -> None:
        self.policy, self.collector = policy, collector
        self.behaviour = copy.deepcopy(policy)
        collector.policy = self.behaviour
        self.process = can_fork(collector, policy) if process is None else process
        self._threads = torch.get_num_threads()  # the run's torch_threads, in the child too
        self._pool: ThreadPoolExecutor | None = None
        self._child: Any = None
        self._pipe: Any = None
        self._pending: Future[Rollout] | bool | None = None
        if self.process:  # now, before the run starts its own threads (progress, logging)
            self._fork()

    def collect(self) -> Rollout:
        if self._pending is None:  # nothing in flight: collect now, on the learner's weights
            self._send_weights()
            if self.process:
                self._start()
                rollout, lag = self._receive(), 0
            else:
                rollout, lag = self.collector.collect(), 0
        else:
            rollout, lag = self._receive(), 1
        self._take_obs_stats()
        self._send_weights()
        self._start()
        rollout.policy_lag = lag
        return rollout

    def _start(self) -> None:
        """Start the next rollout in the child or the thread."""
        if not self.process:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, "logtrick-collect",
                                                initializer=torch.set_num_threads,
                                                initargs=(self._threads,))  # fmt: skip
            self._pending = self._pool.submit(self.collector.collect)
            return
        params = [p.detach() for p in self.behaviour.parameters()]  # pickled (copied) at once
        self._pipe.send_bytes(pickle.dumps(params, protocol=pickle.HIGHEST_PROTOCOL))
        self._pending = True

    def _fork(self) -> None:
        """The child that collects every rollout, forked with the collector as it is now."""
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe()
        self._child = context.Process(target=_serve, args=(theirs, self._pipe, self.collector),
                                      name="logtrick-collect", daemon=True)  # fmt: skip
        self._child.start()
        theirs.close()

    def _receive(self) -> Rollout:
        """The rollout in flight; in the child's case also its observation statistics."""
        pending, self._pending = self._pending, None
        if isinstance(pending, Future):
            return pending.result()
        try:
            ok, result = pickle.loads(self._pipe.recv_bytes())
        except (EOFError, OSError):
            self._child.join(timeout=5.0)
            raise RuntimeError(
                f"overlap: the process collecting the rollouts died (exit code "
                f"{self._child.exitcode})"
            ) from None
        if not ok:
            err, text, call = result
            err.add_note(f"raised in the collecting process:\n{text}")
            err.env_call = call  # read by env_checks.env_failure: the env's error names it
            raise err
        rollout, stats = result
        with torch.no_grad():
            for name, buffer in self.behaviour.named_buffers():
                if name in stats:
                    buffer.copy_(stats[name])
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
            if _is_obs_stat(name):
                mine.copy_(theirs[name])

    def __getattr__(self, name: str) -> Any:  # num_envs, env, ...: the collector's
        if name in ("collector", "policy", "behaviour", "_pool", "_pending", "_child", "_pipe"):
            raise AttributeError(name)
        return getattr(self.collector, name)

    def close(self) -> None:
        """Drop the rollout in flight: wait for the thread's, or kill the child."""
        if isinstance(self._pending, Future):
            self._pending.exception()
        self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._child is not None:  # it holds nothing to keep: its rollout in flight is dropped
            self._pipe.close()
            self._child.kill()
            self._child.join()
            self._child = None


def can_fork(collector: Collector, policy: torch.nn.Module) -> bool:
    """Whether the collector may run in a forked child: ``fork`` exists, the policy is on the
    CPU (CUDA does not survive a fork) and the envs are Gymnasium's sync or async vector env
    (EnvPool's threads do not survive one; a user's own vector env may hold anything)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    if any(p.device.type != "cpu" for p in policy.parameters()):
        return False
    return type(collector.env) in (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv)


def _is_obs_stat(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lstrip("_").startswith("obs_")


def _serve(pipe: Any, parents: Any, collector: Collector) -> None:
    """The child: for each set of parameters received, load them into the collector's policy,
    collect, and send back ``(True, (rollout, obs statistics))`` or ``(False, (error, its
    traceback, the vector env call it came from))``; stop at EOF (the parent's end, which
    the fork copied here too, is closed first, or EOF would never come)."""
    parents.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run's own handler stops the run
    policy = collector.policy
    while True:
        try:
            params = pickle.loads(pipe.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            with torch.no_grad():
                mine = list(policy.parameters())
                torch._foreach_copy_(mine, params)
                increment_version(mine)
            rollout = collector.collect()
            stats = {n: b for n, b in policy.named_buffers() if _is_obs_stat(n)}
            reply: Any = (True, (rollout, stats))
        except Exception as err:  # raised in the learner's process
            text = "".join(traceback.format_exception(err))
            reply = (False, (err, text, env_call(err.__traceback__)))
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an error that does not pickle: its type and text
            failed, text, call = reply[1]
            plain = RuntimeError(f"{type(failed).__name__}: {failed}")
            data = pickle.dumps((False, (plain, text, call)))
        try:
            pipe.send_bytes(data)
        except OSError:  # the learner has gone (closed its end): nothing to send to
            return
