"""Data parallelism on torch.distributed: two gloo ranks (``torchrun``, started once for the
module by :mod:`distributed_ranks`) against one process that sees both ranks' data.

(a) For each stateful baseline, the gradient of ``lt.expectation`` averaged over the ranks
equals the one-process gradient on the concatenated samples (deterministic: the same samples
replayed; float tolerance). (b) After k PPO updates of the trainer under torchrun the parameters
are identical on both ranks and equal one process that averages the two ranks' minibatch losses
with the same minibatch split, from both rollouts and their merged observation statistics.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distributed_ranks as ranks
from logtrick.rl.build import make_learner
from logtrick.rl.update import flatten, gae, ppo_loss, prepare

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ranks")
    src = str(Path(__import__("logtrick").__file__).parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + str(HERE)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(HERE / "distributed_ranks.py"),
        str(out),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
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
                losses = [ppo_loss(learner, mb)[0] for mb in mbs]
                learner.step(sum(losses) / len(losses))
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
