"""The language-model trainer: exact resume, every algorithm, gradient accumulation, the loss
options it passes (Dr. GRPO's constant, DAPO's token count), PEFT/LoRA, data and bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import logtrick as lt
from logtrick.language import LM_ALGOS, LMConfig, Trainer, char_tokenizer, tiny_causal_lm
from logtrick.language import update as update_module
from logtrick.rl.runs import read_metrics

torch.set_num_threads(1)
TOK = char_tokenizer("0123456789")
PROMPTS = [str(d) for d in range(10)]


def echo(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """1 when the completion starts with the prompt's last digit."""
    return [float(c[:1] == p[-1]) for p, c in zip(prompts, completions)]


def short(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    return [-0.1 * len(c) for c in completions]


def _config(**kw: Any) -> LMConfig:
    base = {
        "k": 4,
        "prompts_per_step": 4,
        "max_new_tokens": 4,
        "lr": 3e-3,
        "progress": False,
        "tensorboard": False,
    }
    return LMConfig(**{**base, **kw})


def _trainer(run_dir: Path | None = None, **kw: Any) -> Trainer:
    model = tiny_causal_lm(len(TOK), "qwen2", hidden=32, layers=1, seed=0)
    return Trainer(
        model,
        TOK,
        PROMPTS,
        [echo, short],
        config=_config(**kw),
        checker=echo,
        reward_weights=[1.0, 0.5],
        run_dir=run_dir,
    )


def _params(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in t.model.named_parameters()}


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_resume_continues_exactly(tmp_path: Path, algo: str) -> None:
    straight = _trainer(tmp_path / "a", algo=algo, minibatches=2)
    straight.learn(4)
    first = _trainer(tmp_path / "b", algo=algo, minibatches=2)
    first.learn(2)
    resumed = _trainer(tmp_path / "b", algo=algo, minibatches=2)  # loads b/checkpoint.pt
    assert resumed.step == 2
    resumed.learn(2)
    for key, value in _params(straight).items():
        assert torch.equal(value, _params(resumed)[key]), key
    rows_a, rows_b = (read_metrics(tmp_path / d / "metrics.csv") for d in "ab")
    assert len(rows_a) == len(rows_b) == 4
    for ra, rb in zip(rows_a, rows_b):
        for key in ra:
            if not key.startswith("time"):
                assert ra[key] == rb[key], key
    assert (tmp_path / "a" / "learning_curve.png").stat().st_size > 0


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    _trainer(tmp_path, algo="grpo").learn(1)
    with pytest.raises(ValueError, match=r"config: .*lr"):
        _trainer(tmp_path, algo="grpo", lr=1e-4)


@pytest.mark.parametrize("algo", list(LM_ALGOS))
def test_every_algorithm_runs_and_reports(algo: str) -> None:
    t = _trainer(algo=algo, epochs=2, minibatches=2, micro_batch_size=4, kl_coef=0.0)
    row = t.learn(2)
    for key in (
        "reward",
        "reward/echo",
        "reward/short",
        "accuracy",
        "length",
        "clip_fraction",
        "approx_kl",
        "grad_norm",
        "grad_snr",
        "entropy",
        "time_generate",
        "time_update",
    ):
        assert key in row and math.isfinite(row[key]), key
    assert row["reward"] == pytest.approx(row["reward/echo"] + 0.5 * row["reward/short"])
    assert ("value_loss" in row) == (algo == "ppo")
    assert row["completions"] == 2 * 16


@pytest.mark.parametrize(
    "loss_type", ["sequence_mean", "token_mean", "bnpo", "constant", "sequence_sum"]
)
def test_micro_batches_accumulate_the_minibatch_gradient(loss_type: str) -> None:
    whole = _trainer(loss_type=loss_type, max_grad_norm=None)
    parts = _trainer(loss_type=loss_type, max_grad_norm=None, micro_batch_size=3)
    whole.learn(1)
    parts.learn(1)
    for key, value in _params(whole).items():
        torch.testing.assert_close(_params(parts)[key], value, rtol=1e-4, atol=1e-6)


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    real = update_module.sequence_surrogate

    def spy(
        lp: torch.Tensor,
        mask: torch.Tensor,
        adv: torch.Tensor,
        reduction: str,
        constant: float | None,
        *args: Any,
        **kw: Any,
    ) -> Any:
        calls.append(
            {"reduction": reduction, "constant": constant, "tokens": int(mask.sum()), **kw}
        )
        return real(lp, mask, adv, reduction, constant, *args, **kw)

    monkeypatch.setattr(update_module, "sequence_surrogate", spy)
    return calls


def test_dr_grpo_divides_by_max_new_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _captured(monkeypatch)
    _trainer(algo="dr_grpo", max_new_tokens=6, minibatches=2).learn(1)
    assert [c["reduction"] for c in calls] == ["constant"] * 2
    assert all(c["constant"] == 6.0 for c in calls)


def test_dapo_divides_by_the_generation_batch_token_count(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _captured(monkeypatch)
    _trainer(algo="dapo", minibatches=2, epochs=2).learn(1)
    assert [c["reduction"] for c in calls] == ["token_mean"] * 4
    total = calls[0]["tokens"] + calls[1]["tokens"]  # the two minibatches of epoch 1
    assert all(c["constant"] == total for c in calls)
    assert all(c["clip_eps_high"] == 0.28 for c in calls)


def test_bnpo_divides_each_minibatch_by_its_own_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _captured(monkeypatch)
    _trainer(loss_type="bnpo", minibatches=2).learn(1)
    assert all(c["constant"] == c["tokens"] for c in calls)


def test_mask_truncated_leaves_cut_completions_out(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _captured(monkeypatch)
    t = _trainer(loss_type="bnpo", mask_truncated=True, max_new_tokens=2)
    row = t.learn(1)
    assert row["truncated"] > 0
    assert calls[0]["tokens"] < 16 * 2 * (1 - row["truncated"]) + 1e-9


def test_bf16_autocast_and_lr_schedule() -> None:
    t = _trainer(bf16=True, lr_schedule="linear", total_steps=4, warmup_steps=1)
    lrs = [t.learn(1)["lr"] for _ in range(4)]
    assert lrs == pytest.approx([3e-3, 3e-3, 2e-3, 1e-3])
    row = t.history[-1]
    assert all(math.isfinite(row[k]) for k in ("reward", "policy_loss", "ratio_mean", "grad_norm"))
    assert math.isnan(row["grad_snr"])  # one micro-batch: no spread to measure


def test_lora_trains_only_the_adapter_and_the_reference_is_the_base(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    base = tiny_causal_lm(len(TOK), "gpt2", hidden=32, layers=1, seed=0)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if not v.requires_grad}
    t = Trainer(model, TOK, PROMPTS, echo, "grpo", _config(kl_coef=0.1, lr=1e-2), run_dir=tmp_path)
    rows = [t.learn(1) for _ in range(3)]
    assert rows[0]["kl"] == 0.0 and rows[-1]["kl"] > 0.0  # the adapter moved off the base
    for key, value in model.named_parameters():
        if key in frozen:
            assert torch.equal(value, frozen[key]), key
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    assert saved and all("lora" in k for k in saved)


def test_dataset_columns_and_chat_prompts_reach_the_reward_functions() -> None:
    datasets = pytest.importorskip("datasets")
    seen: list[dict[str, Any]] = []

    def by_answer(prompts: list[Any], completions: list[str], answer: list[str]) -> list[float]:
        seen.append({"prompts": prompts, "answer": answer})
        return [float(c[:1] == a) for c, a in zip(completions, answer)]

    chats = [[{"role": "user", "content": d}] for d in "0123"]
    data = datasets.Dataset.from_dict({"prompt": chats, "answer": list("0123")})
    t = Trainer(
        tiny_causal_lm(len(TOK), hidden=32, layers=1), TOK, data, by_answer, "rloo", _config()
    )
    t.learn(1)
    prompts, answers = seen[0]["prompts"], seen[0]["answer"]
    assert len(prompts) == 16 and all(a == p[0]["content"] for p, a in zip(prompts, answers))
    rendered = lt.language.prompts.render_prompt(TOK, chats[0])
    assert rendered == "u:0\na:"


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"prompts": 42}, TypeError, "prompts"),
        ({"prompts": []}, ValueError, "prompts"),
        ({"rewards": "x"}, TypeError, "rewards"),
        ({"rewards": lambda p, c: [1.0]}, ValueError, "rewards"),
        ({"rewards": lambda p, c: [math.nan] * len(c)}, ValueError, "rewards"),
        ({"reward_weights": [1.0, 2.0]}, ValueError, "reward_weights"),
        ({"algo": "trpo"}, ValueError, "algo"),
        ({"model": "gpt2"}, TypeError, "model"),
        ({"config": {"k": 2}}, TypeError, "config"),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict[str, Any], error: type, name: str) -> None:
    args: dict[str, Any] = {
        "model": tiny_causal_lm(len(TOK), hidden=32, layers=1),
        "tokenizer": TOK,
        "prompts": PROMPTS,
        "rewards": echo,
        "config": _config(),
    }
    args.update(kwargs)
    with pytest.raises(error, match=name):
        Trainer(**args).learn(1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("k", 1),
        ("lr", -1.0),
        ("top_p", 0.0),
        ("loss_type", "mean"),
        ("lr_schedule", "cosine"),
        ("clip_eps_high", 0.0),
        ("kl_estimator", "k4"),
    ],
)
def test_config_rejects_bad_fields(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field if field != "lr_schedule" else "total_steps"):
        LMConfig(**{field: value})


def test_every_language_name_has_an_api_entry() -> None:
    from test_docs import documented_names

    names = {f"logtrick.language.{n}" for n in lt.language.__all__}
    also_top = {f"logtrick.{n}" for n in lt.language.__all__ if n in lt.__all__}
    documented = documented_names()
    missing = sorted(
        n
        for n in names
        if n not in documented
        and n.replace("logtrick.language.", "logtrick.") not in also_top & documented
    )
    assert not missing, f"logtrick.language names without an entry in docs/api: {missing}"


def test_import_logtrick_loads_neither_transformers_nor_rl() -> None:
    import subprocess
    import sys

    code = ("import sys, logtrick; print(sorted(m for m in ('transformers', 'peft', 'datasets', "
            "'logtrick.rl') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
