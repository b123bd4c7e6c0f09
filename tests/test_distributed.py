"""Data parallelism on torch.distributed: two gloo ranks (``torchrun``, started once for the
module by :mod:`distributed_ranks`) against one process that sees both ranks' data.

(a) For each stateful baseline, the gradient of ``lt.expectation`` averaged over the ranks
equals the one-process gradient on the concatenated samples (deterministic: the same samples
replayed; float tolerance). (b) After k PPO updates of the trainer under torchrun the parameters
are identical on both ranks and equal one process that averages the two ranks' minibatch losses
(weighted by their sizes) with the same minibatch split, from both rollouts and their merged
observation statistics. (c) npg, ppo with ``target_kl``, a2c and reinforce (whole episodes, of
different lengths on each rank), with observation and reward normalisation: identical on both
ranks (CG iterations, early stops, reward scale) and equal to one process updating on the
concatenated rollouts. (d) Evaluation runs on rank 0 only; the logged episode statistics are
all ranks'; the CartPole preset's default algorithm (npg) runs.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import distributed_ranks as ranks
from logtrick.rl.build import make_learner
from logtrick.rl.rollout import Rollout
from logtrick.rl.update import flatten, gae, ppo_loss, prepare, update

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    src = str(Path(__import__("logtrick").__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + str(HERE)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", str(HERE / "distributed_ranks.py"), str(out)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ranks.BASELINES)
def test_all_reduced_baseline_gradient_is_the_one_process_gradient(
    outputs: list[dict], name: str
) -> None:
    reference = ranks.baseline_grads(name, 0, 1, None)
    for out in outputs:  # all-reduced: the same on both ranks
        for call, (got, want) in enumerate(zip(out[f"{name}/group"], reference)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"call {call}")
    # without the group each rank keeps its own statistics: a different estimator
    alone = outputs[0][f"{name}/alone"]
    assert not torch.allclose(alone[-1], reference[-1], rtol=1e-3, atol=1e-5)


def _reference_params(rollouts: list[list], config: object) -> dict[str, torch.Tensor]:
    """One process, both ranks' rollouts: each minibatch step averages the two ranks' losses."""
    from logtrick.rl.envs import make_env

    envs = make_env(config.env, num_envs=1)
    learner = make_learner(config, envs)
    envs.close()
    gens = [torch.Generator().manual_seed(config.seed + 1) for _ in rollouts]
    for u, pair in enumerate(zip(*rollouts)):
        obs = torch.cat([r["rollout"].obs.flatten(0, 1) for r in pair])
        learner.policy.update_obs_stats(obs)  # both ranks' observations, merged at once
        for name, got in zip(("count", "mean", "var"), pair[0]["stats"]):
            want = getattr(learner.policy, f"obs_{name}")
            torch.testing.assert_close(got, want, msg=f"update {u}: obs {name}")
        batches = []
        for r in pair:
            ro = prepare(learner, r["rollout"])
            advantages, returns = gae(learner, ro)
            batches.append(flatten(ro, advantages=advantages, returns=returns))
        for _ in range(config.update_epochs):
            splits = []
            for batch, gen in zip(batches, gens):
                learner.generator = gen
                splits.append(learner.minibatches(batch))
            for mbs in zip(*splits):
                sizes = [len(mb["obs"]) for mb in mbs]
                losses = [ppo_loss(learner, mb)[0] * n for mb, n in zip(mbs, sizes)]
                learner.step(sum(losses) / sum(sizes))
    return learner.policy.state_dict()


@pytest.mark.slow
def test_ddppo_parameters_equal_on_ranks_and_to_one_process(
    outputs: list[dict], tmp_path: Path
) -> None:
    config = ranks.ppo_config(str(tmp_path))
    rollouts = [out["rollouts"] for out in outputs]
    assert len(rollouts[0]) == len(rollouts[1]) == 3
    # the ranks stepped different envs (seeds offset by rank)
    assert not torch.equal(rollouts[0][0]["rollout"].obs, rollouts[1][0]["rollout"].obs)
    p0, p1 = outputs[0]["params"], outputs[1]["params"]
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
    reference = _reference_params(rollouts, config)
    for k in p0:
        torch.testing.assert_close(p0[k], reference[k], rtol=1e-4, atol=1e-6, msg=k)


def _pad(ro: Rollout, rows: int) -> Rollout:
    """``ro`` with invalid rows appended up to ``rows`` (a whole-episode rollout that ended
    sooner): they belong to no episode, so one process's update on the merge is unchanged."""
    extra = rows - ro.rewards.shape[0]
    if not extra:
        return ro

    def pad(x: torch.Tensor, value: object) -> torch.Tensor:
        return torch.cat([x, torch.full((extra, *x.shape[1:]), value, dtype=x.dtype)])

    return dataclasses.replace(
        ro, **{k: pad(getattr(ro, k), 0) for k in ("obs", "actions", "log_probs", "values",
                                                   "rewards", "next_values")},
        terminated=pad(ro.terminated, True), truncated=pad(ro.truncated, False),
        valid=pad(ro.valid, False),
    )  # fmt: skip


def _concatenated_reference(runs: list[dict], config: object) -> tuple[dict, list[dict]]:
    """One process updating on both ranks' rollouts side by side (``(T, 2B)``), its statistics
    folded from both ranks' observations; returns its parameters and each update's info and
    reward scale."""
    from logtrick.rl.envs import make_env
    from logtrick.rl.workers import merge_rollouts

    envs = make_env(config.env, num_envs=1)
    learner = make_learner(config, envs)
    envs.close()
    infos = []
    for u, pair in enumerate(zip(*(r["rollouts"] for r in runs))):
        obs = torch.cat([r["rollout"].obs.flatten(0, 1) for r in pair])
        learner.policy.update_obs_stats(obs)
        for name, got in zip(("count", "mean", "var"), pair[0]["stats"]):
            want = getattr(learner.policy, f"obs_{name}")
            torch.testing.assert_close(got, want, msg=f"update {u}: obs {name}")
        rows = max(r["rollout"].rewards.shape[0] for r in pair)
        info = update(learner, merge_rollouts([_pad(r["rollout"], rows) for r in pair]))
        scale = learner.reward_scale
        infos.append({"info": info, "scale": scale and (scale.count, scale.mean, scale.var)})
    return learner.policy.state_dict(), infos


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(ranks.ALGOS))
def test_every_algorithm_equals_one_process_on_the_concatenated_batch(
    outputs: list[dict], algo: str, tmp_path: Path
) -> None:
    runs = [out[algo] for out in outputs]
    config = ranks.ppo_config(str(tmp_path), **ranks.ALGOS[algo])
    n = len(runs[0]["rollouts"])
    assert n == len(runs[1]["rollouts"]) >= 2
    for k, v in runs[0]["params"].items():  # identical on the ranks, to the bit
        assert torch.equal(v, runs[1]["params"][k]), k
    for a, b in zip(*(r["rollouts"] for r in runs)):
        assert a["info"] == b["info"] or _same_floats(a["info"], b["info"])
        assert a["scale"] == b["scale"]  # one reward scale: pooled over the ranks
    params, infos = _concatenated_reference(runs, config)
    for k, v in runs[0]["params"].items():
        torch.testing.assert_close(v, params[k], rtol=1e-4, atol=1e-6, msg=k)
    for u, (got, want) in enumerate(zip(runs[0]["rollouts"], infos)):
        if want["scale"] is not None:
            got_scale, want_scale = torch.tensor(got["scale"]), torch.tensor(want["scale"])
            torch.testing.assert_close(got_scale, want_scale, rtol=1e-6, atol=0,
                                       msg=f"update {u}: reward scale")  # fmt: skip
        for key in ("epochs", "line_search_steps", "accepted"):  # the same decisions
            if key in want["info"]:
                assert got["info"][key] == want["info"][key], (u, key)
    if algo == "ppo_target_kl":  # the early stop happened
        assert any(r["info"]["epochs"] < config.update_epochs for r in runs[0]["rollouts"])
    if algo == "reinforce":  # whole episodes: the ranks took different numbers of steps
        rows = [[r["rollout"].rewards.shape[0] for r in run["rollouts"]] for run in runs]
        assert rows[0] != rows[1]


def _same_floats(a: dict, b: dict) -> bool:
    """Per-rank logged values (losses) may differ; the decisions may not."""
    keys = ("epochs", "line_search_steps", "accepted", "step_size", "kl")
    return all(a.get(k) == b.get(k) for k in keys)


@pytest.mark.slow
def test_evaluation_runs_once_and_the_logged_episodes_are_all_ranks(outputs: list[dict]) -> None:
    runs = [out["a2c"] for out in outputs]
    assert runs[0]["evaluations"] >= 2 and runs[1]["evaluations"] == 0
    for a, b in zip(runs[0]["history"], runs[1]["history"]):
        for key in ("eval_return", "episode_return", "global_step", "episodes",
                    "episode_return_max"):  # fmt: skip
            assert a[key] == b[key] or (a[key] != a[key] and b[key] != b[key]), key
    episodes = [len(r["rollout"].episode_returns) for r in runs[0]["rollouts"]]
    mine = [len(r["rollout"].episode_returns) for r in runs[1]["rollouts"]]
    assert episodes == mine  # every rank sees every rank's episodes
    default = [out["default"] for out in outputs]
    assert [row["global_step"] for row in default[0]] == [1024, 2048]


def _torchrun_cli(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[int, list[str]]:
    """``logtrick ARGS`` on two gloo ranks (:mod:`distributed_faults`); returns torchrun's exit
    code and each rank's stderr."""
    src = str(Path(__import__("logtrick").__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + str(HERE)}
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "--log-dir", str(logs), "--redirects", "3", str(HERE / "distributed_faults.py"),
           *args]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    stderr = [next(logs.glob(f"**/attempt_0/{r}/stderr.log")).read_text() for r in range(2)]
    return done.returncode, stderr


QUIET = ["--no-progress", "--set", "plot=false", "tensorboard=false", "eval_every=0"]


@pytest.mark.slow
def test_ranks_with_different_configs_are_refused_at_start_naming_the_field(
    tmp_path: Path,
) -> None:
    out = tmp_path / "runs"
    code, stderr = _torchrun_cli(tmp_path, "train", "CartPole-v1", "--algo", "ppo", "--seed",
                                 "{rank}", "--out", str(out), *QUIET)  # fmt: skip
    assert code != 0
    for text in stderr:
        lines = [line for line in text.splitlines() if "error:" in line]
        assert len(lines) == 1 and "Traceback" not in text, text[-2000:]
        assert "seed: the torchrun ranks run different configurations" in lines[0]
        assert "rank 0 has seed=0, rank 1 has seed=1" in lines[0]
    assert not out.exists() or not any(out.rglob("checkpoint.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["Hang", "Die"])
def test_a_hung_or_dead_rank_ends_the_other_with_one_line_and_the_checkpoint_kept(
    tmp_path: Path, fault: str
) -> None:
    out = tmp_path / "runs"
    start = time.monotonic()
    code, stderr = _torchrun_cli(
        tmp_path, "train", f"distributed_faults:{fault}OnRank1-v0", "--algo", "ppo", "--envs",
        "4", "--steps", "100000", "--out", str(out), *QUIET, "num_steps=64",
        "checkpoint_every=1", "dist_timeout_s=5",
    )  # fmt: skip
    assert code != 0 and time.monotonic() - start < 200
    text = stderr[0]
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if "error:" in line]
    if fault == "Hang" or errors:  # a dead rank's peer may be stopped by torchrun first
        assert len(errors) == 1, text[-2000:]
        assert "rank 0: another rank died or did not answer" in errors[0]
        assert "the run directory keeps the checkpoint of update 4" in errors[0]
    (checkpoint,) = out.rglob("checkpoint.pt")
    assert checkpoint.stat().st_size > 0


def test_one_process_communicates_nothing_and_the_device_is_checked() -> None:
    from logtrick.collective import all_reduce_sum, world_size
    from logtrick.rl.config import Config
    from logtrick.rl.distributed import learner_device

    x = [torch.ones(3)]
    assert all_reduce_sum(x, default=True) is x and world_size() == 1
    if not torch.cuda.is_available():
        assert learner_device(Config(device="auto")).type == "cpu"
        with pytest.raises(ValueError, match="device: 'cuda'"):
            learner_device(Config(device="cuda"))
