"""Tests for token log-probabilities and sampling under causal models (language.tokens)."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import Tensor, nn

import logtrick as lt
from logtrick.language.tokens import Completions, logits_of, sequence_log_probs, token_log_probs
from stats import z_bonferroni

V = 7


def reference(logits: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
    """The plain formula: ``log_softmax(logits).gather(tokens)``, zeroed where masked."""
    lp = logits.log_softmax(-1).gather(-1, tokens.clamp(0, logits.shape[-1] - 1)[..., None])
    return torch.where(mask, lp[..., 0], 0.0)


def _inputs(seed: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(3, 5, V, generator=g, dtype=torch.float64) * 3).to(dtype)
    tokens = torch.randint(0, V, (3, 5), generator=g)
    mask = torch.rand(3, 5, generator=g) < 0.7
    mask[0] = True
    return logits.requires_grad_(), tokens, mask


class Bigram(nn.Module):
    """A causal model whose next-token logits depend on the last token only: ``table[x_t]``."""

    def __init__(self, table: Tensor, wrap: str = "tensor") -> None:
        super().__init__()
        self.table = nn.Parameter(table)
        self.wrap = wrap

    def forward(self, tokens: Tensor) -> object:
        logits = self.table[tokens]
        if self.wrap == "attribute":
            return type("Output", (), {"logits": logits})()
        return (logits, None) if self.wrap == "tuple" else logits


# ---------------------------------------------------------------- token_log_probs


@pytest.mark.parametrize("chunk_size", [1, 2, 4, None])
def test_token_log_probs_match_log_softmax(chunk_size: int | None) -> None:
    logits, tokens, mask = _inputs(0)
    out = token_log_probs(logits, tokens, mask, chunk_size)
    expected = reference(logits, tokens, mask)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (g_out,) = torch.autograd.grad((out * w).sum(), logits)
    (g_ref,) = torch.autograd.grad((expected * w).sum(), logits)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(g_out[~mask], torch.zeros_like(g_out[~mask]))


def test_token_log_probs_twice_differentiable() -> None:
    logits, tokens, mask = _inputs(2)
    fn = lambda z: token_log_probs(z, tokens, mask, chunk_size=4)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits,))
    assert torch.autograd.gradgradcheck(fn, (logits,))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits(dtype: torch.dtype) -> None:
    logits, tokens, mask = _inputs(3, dtype)
    out = token_log_probs(logits, tokens, mask, chunk_size=2)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference(logits.float(), tokens, mask))
    out.sum().backward()
    assert logits.grad is not None and logits.grad.dtype == dtype


def test_extreme_and_masked_logits() -> None:
    # huge logits: a naive exp overflows; -inf logits (masked vocabulary) are fine where valid
    big = [[[1e4, -1e4, 0.0], [5e3, 5e3, -math.inf]]]
    for dtype in (torch.float32, torch.float64):
        logits = torch.tensor(big, dtype=dtype, requires_grad=True)
        out = token_log_probs(logits, torch.tensor([[0, 1]]))
        expected = torch.tensor([[0.0, -math.log(2.0)]], dtype=dtype)
        torch.testing.assert_close(
            out, expected, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-3
        )
    # masked positions: NaN or -inf logits and out-of-vocabulary ids are never looked at
    bad = torch.tensor([[[0.0, 1.0, 2.0], [math.nan, math.nan, math.nan]]], requires_grad=True)
    mask = torch.tensor([[True, False]])
    out = token_log_probs(bad, torch.tensor([[2, -100]]), mask)
    (grad,) = torch.autograd.grad(out.sum(), bad)
    assert out[0, 1] == 0.0 and out.isfinite().all()
    assert torch.equal(grad[0, 1], torch.zeros(3)) and grad.isfinite().all()


def test_token_log_probs_errors_name_the_argument() -> None:
    logits, tokens, mask = _inputs(0)
    cases = [
        (TypeError, "logits", {"logits": logits.detach().long()}),
        (TypeError, "tokens", {"tokens": tokens.float()}),
        (ValueError, "tokens", {"tokens": tokens[:, :4]}),
        (ValueError, "tokens", {"tokens": tokens.masked_fill(mask, V)}),
        (TypeError, "mask", {"mask": mask.float()}),
        (ValueError, "mask", {"mask": mask[:2]}),
        (ValueError, "chunk_size", {"chunk_size": 0}),
    ]
    for error, name, change in cases:
        kwargs = {"logits": logits, "tokens": tokens, "mask": mask, **change}
        with pytest.raises(error, match=name):
            token_log_probs(**kwargs)


# ---------------------------------------------------------------- sampling and scoring


def test_logits_of_accepts_tensor_attribute_and_tuple() -> None:
    x = torch.zeros(2, 3, 4)
    assert logits_of(x) is x
    assert logits_of(type("Out", (), {"logits": x})()) is x
    assert logits_of((x, None)) is x
    with pytest.raises(TypeError, match="model output"):
        logits_of({"logits": x})


@pytest.mark.parametrize("wrap", ["tensor", "attribute", "tuple"])
def test_sample_completions_layout_stop_and_scores(wrap: str) -> None:
    g = torch.Generator().manual_seed(0)
    model = Bigram(torch.randn(V, V, generator=g), wrap)
    prompts = torch.tensor([[1, 2], [3, 4], [5, 6]])
    stop, temperature = 0, 0.7
    c = lt.sample_completions(
        model,
        prompts,
        k=4,
        max_new_tokens=6,
        temperature=temperature,
        stop_token=stop,
        pad_token=V - 1,
        generator=g,
    )
    assert isinstance(c, Completions) and c.prompt_length == 2
    assert torch.equal(c.sequences[:, :2], prompts.repeat_interleave(4, 0))
    assert torch.equal(c.tokens, c.sequences[:, 2:]) and c.tokens.shape[1] <= 6
    for row, length, stopped in zip(c.tokens, c.lengths, c.stopped):
        ends = (row[:length] == stop).nonzero()
        if stopped:  # the stop token is the last valid token, the rest is padding
            assert ends.numel() == 1 and int(ends[0]) == length - 1
            assert (row[length:] == V - 1).all()
        else:  # cut at the limit without a stop token
            assert ends.numel() == 0 and length == 6
    assert torch.equal(c.mask, torch.arange(c.tokens.shape[1])[None] < c.lengths[:, None])
    # the log-probabilities at sampling equal a fresh scoring of the same sequences
    lp = sequence_log_probs(model, c.sequences, 2, c.mask, temperature=temperature)
    torch.testing.assert_close(lp, c.log_probs, rtol=1e-5, atol=1e-6)
    manual = (model.table[c.sequences[:, 1:-1]] / temperature).log_softmax(-1)
    manual = manual.gather(-1, c.tokens[..., None])[..., 0]
    torch.testing.assert_close(lp, torch.where(c.mask, manual, 0.0))


def test_greedy_reproducible_and_early_stop() -> None:
    table = torch.full((V, V), -5.0)
    table[1, 3] = table[3, 2] = table[2, 0] = 5.0  # 1 -> 3 -> 2 -> stop(0)
    model = Bigram(table)
    c = lt.sample_completions(
        model, torch.tensor([[1]]), k=3, max_new_tokens=10, stop_token=0, greedy=True
    )
    assert c.tokens.tolist() == [[3, 2, 0]] * 3 and bool(c.stopped.all())
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = lt.sample_completions(model, torch.tensor([[1], [2]]), 8, 5, generator=g1)
    b = lt.sample_completions(model, torch.tensor([[1], [2]]), 8, 5, generator=g2)
    assert torch.equal(a.sequences, b.sequences) and not bool(a.stopped.any())


def test_sampled_frequencies_match_the_model() -> None:
    # first-token frequencies against softmax(table[prompt] / T), z-test per category
    g = torch.Generator().manual_seed(1)
    model = Bigram(torch.randn(V, V, generator=g))
    n, temperature = 20_000, 1.5
    c = lt.sample_completions(
        model, torch.tensor([[4]]), k=n, max_new_tokens=1, temperature=temperature, generator=g
    )
    probs = (model.table[4] / temperature).softmax(-1).detach().double()
    freq = torch.bincount(c.tokens[:, 0], minlength=V).double() / n
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= z_bonferroni(1e-3, V) * se).all()  # failure rate 1e-3


def test_sampling_errors_name_the_argument() -> None:
    model = Bigram(torch.zeros(V, V))
    prompts = torch.tensor([[1, 2]])
    cases = [
        (TypeError, "prompts", {"prompts": prompts.float()}),
        (ValueError, "prompts", {"prompts": prompts[0]}),
        (ValueError, "k", {"k": 0}),
        (ValueError, "max_new_tokens", {"max_new_tokens": 0}),
        (ValueError, "temperature", {"temperature": 0.0}),
        (ValueError, "stop_token", {"stop_token": -1}),
    ]
    for error, name, change in cases:
        with pytest.raises(error, match=name):
            lt.sample_completions(model, **{"prompts": prompts, **change})
    nan_model = Bigram(torch.full((V, V), math.nan))
    with pytest.raises(ValueError, match="model output"):
        lt.sample_completions(nan_model, prompts)
    with pytest.raises(ValueError, match="prompt_length"):
        sequence_log_probs(model, prompts, prompt_length=2)


# ---------------------------------------------------------------- Hugging Face transformers


@pytest.mark.slow  # importing transformers takes seconds
def test_hugging_face_causal_lm_offline() -> None:
    """A tiny randomly initialised GPT-2 built from a config (nothing is downloaded)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=11,
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    prompts = torch.tensor([[1, 2, 3], [4, 5, 6]])
    g = torch.Generator().manual_seed(0)
    c = lt.sample_completions(model, prompts, k=3, max_new_tokens=5, stop_token=0, generator=g)
    lp = lt.sequence_log_probs(model, c.sequences, 3, c.mask)
    torch.testing.assert_close(lp, c.log_probs, rtol=1e-4, atol=1e-5)
    logits = model(c.sequences).logits[:, 2:-1]  # the plain formula on the model's own output
    torch.testing.assert_close(lp, reference(logits, c.tokens, c.mask), rtol=1e-5, atol=1e-5)
    rewards = (c.lengths % 2).float().view(2, 3)
    adv = lt.grouped_advantages(rewards, "rloo").advantages.flatten()
    loss, _ = lt.sequence_surrogate(lp, c.mask, adv)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(g.isfinite().all()) for g in grads)
