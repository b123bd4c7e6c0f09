r"""RL fine-tuning of a tiny language model with a 0/1 checker: RLOO, GRPO, Dr. GRPO and PPO.

A decoder-only transformer (pure PyTorch, 0.23 M parameters) adds two-digit numbers written as
tokens, least-significant digit first: ``"74+93="`` asks for 47 + 39, and ``"68"`` then STOP
answers 86. The reward is 1 for the right sum written canonically (no leading zeros, any number
of leading dots, which stand for free "thinking" tokens the checker ignores) and 0 otherwise.

The warm start is maximum likelihood on a teacher who writes 95 % of its answers zero-padded to
four digits (``"6800"``) and the rest canonically, with 0-3 leading dots. It stops as soon as half
of the model's greedy answers have the right *value* in any writing: the model then knows some
addition and the canonical form only as a rare habit, so its greedy accuracy is near 0 and RL has
two things to learn: to write canonically (rare in its own samples) and to add better. Then
reinforcement learning with the 0/1 reward:

.. math::  \nabla_\theta J \approx \frac{1}{Ck} \sum_{c,i} A_{c,i}
           \sum_t \nabla_\theta \log \pi(y_{c,i,t} \mid x_c, y_{c,i,<t}),

``k`` completions per prompt (``lt.sample_completions``), their token log-probabilities
(``lt.token_log_probs``), advantages by name (``lt.grouped_advantages``) and the loss
(``lt.sequence_surrogate``):

=========  ======================================  ==========================================
method     advantage                               token aggregation
=========  ======================================  ==========================================
RLOO       reward minus the mean of the other k-1  sum over the sequence (REINFORCE)
GRPO       (reward - group mean) / group std       mean over the sequence, then over sequences
Dr. GRPO   reward - group mean                     sum over the sequence / a constant
PPO        GAE(lambda) from a value head           mean over all tokens (+ value loss)
=========  ======================================  ==========================================

Every method gets the same sampled completions per step (C = 16 prompts, k = 8) and updates the
same way (two epochs of two minibatches, clipped ratio, eps = 0.2, Adam at 1e-4), from the same
warm start, for three seeds. Reported: greedy accuracy on 500 held-out problems before and after,
training wall-clock (evaluation excluded), peak resident memory of the run's process, and the
mean response length during training: the dots cost nothing, so the length is free, and GRPO's
per-sequence 1/\|o\| favours short right and long wrong answers.

Run:  python examples/llm_grpo.py           (4 methods x 3 seeds, one process at a time: 52 min)
      python examples/llm_grpo.py --quick   (one-digit numbers, one seed, 60 steps: ~40 s)

Measured (seeds 0-2, 1200 steps = 153,600 completions per run; the records and the plot are in
benchmarks/results/llm_grpo.*): greedy accuracy from 0.004 (warm start, 1300-2900 steps, 42-90 s)
to 0.901 (RLOO), 0.915 (GRPO), 0.907 (Dr. GRPO) and 0.939 (PPO; 0.92 / 0.98 / 0.92), in 196-234 s
of RL per run; peak resident memory 405 MiB per run process (torch included). Accuracy rises to
about 0.7 within the first 6,400 completions (the canonical form) and then slowly (the addition).
Responses end up 0.1 token longer when wrong than when right under GRPO (1/\|o\|) and PPO, against
0.03-0.05 under RLOO and Dr. GRPO. PPO shortens every response (5.5 -> 4.9 tokens), plausibly
because whitening its token-level advantages subtracts their mean, positive while accuracy rises,
from every token, so each extra dot costs.

Machine: a 2-core AMD EPYC CPU shared with other jobs; torch 2.13.0+cpu, one thread.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import logtrick as lt
from logtrick.rl.losses import value_loss
from logtrick.rl.returns import compute_gae

OUT = Path(__file__).resolve().parent / "out"
PLUS, EQUALS, STOP, DOT = 10, 11, 12, 13
VOCAB = 14


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on (the full run's values; ``--quick`` shortens it)."""

    digits: int = 2
    """Digits per operand."""
    d_model: int = 96
    """Transformer width."""
    layers: int = 2
    """Transformer blocks."""
    heads: int = 4
    """Attention heads."""
    warm_lenient: float = 0.5
    """Maximum likelihood stops once this share of greedy answers has the right value."""
    warm_max_steps: int = 5000
    """...or after this many steps."""
    padded: float = 0.95
    """Share of the teacher's answers zero-padded to ``digits + 2`` digits (rejected)."""
    max_dots: int = 3
    """The teacher writes 0 to ``max_dots`` leading dots (ignored by the checker)."""
    warm_lr: float = 2e-3
    """Adam learning rate of maximum likelihood."""
    warm_batch: int = 64
    """Problems per maximum-likelihood step."""
    rl_steps: int = 1200
    """Reinforcement-learning steps (each samples ``prompts * k`` completions)."""
    prompts: int = 16
    """Prompts per step, C."""
    k: int = 8
    """Completions per prompt."""
    lr: float = 1e-4
    """Adam learning rate of the RL phase."""
    epochs: int = 2
    """Passes over each batch of completions."""
    minibatches: int = 2
    """Minibatches per pass."""
    clip_eps: float = 0.2
    """Clipping of the importance ratio."""
    lam: float = 0.95
    """GAE lambda of PPO."""
    eval_every: int = 50
    """RL steps between evaluations."""
    test_size: int = 500
    """Held-out problems."""

    @property
    def prompt_length(self) -> int:
        return 2 * self.digits + 2

    @property
    def max_new(self) -> int:
        """Completion length limit: two tokens more than the teacher's longest answer."""
        return self.max_dots + self.digits + 5


# ---------------------------------------------------------------- the task


def problems(n: int, digits: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` random operand pairs ``(n, 2)`` and their prompts ``(n, 2 * digits + 2)``."""
    ab = torch.randint(10**digits, (n, 2), generator=gen)
    return ab, torch.cat([digits_of(ab[:, 0], digits), torch.full((n, 1), PLUS),
                          digits_of(ab[:, 1], digits), torch.full((n, 1), EQUALS)], 1)  # fmt: skip


def digits_of(x: Tensor, width: int) -> Tensor:
    """``(n, width)`` decimal digits of ``x``, least significant first."""
    return (x[:, None] // 10 ** torch.arange(width)) % 10


def answer_tokens(total: Tensor, width: int) -> Tensor:
    """``(n, width + 1)``: the digits of ``total`` (no leading zeros) then STOP, padded."""
    n_digits = (total.clamp_min(1).float().log10().floor().long() + 1).clamp_max(width)
    out = torch.cat([digits_of(total, width), torch.full((len(total), 1), STOP)], 1)
    return torch.where(torch.arange(width + 1)[None] < n_digits[:, None], out, STOP)


def teacher(ab: Tensor, s: Settings, gen: torch.Generator) -> Tensor:
    """The warm start's data ``(n, max_dots + digits + 3)``: dots, the sum's digits, STOP.

    The teacher writes a uniform number of DOTs (0 to ``max_dots``, which the checker ignores)
    and, on a share ``padded`` of the problems, the sum zero-padded to ``digits + 2`` digits
    (which the checker rejects); its digits are always right.
    """
    n, width = len(ab), s.digits + 2
    digits = answer_tokens(ab.sum(1), width)
    padded = torch.cat([digits_of(ab.sum(1), width), torch.full((n, 1), STOP)], 1)
    use_pad = torch.rand(n, generator=gen) < s.padded
    digits = torch.where(use_pad[:, None], padded, digits)
    dots = torch.randint(s.max_dots + 1, (n,), generator=gen)
    pos = torch.arange(s.max_dots + width + 1)[None]
    shifted = digits.gather(1, (pos - dots[:, None]).clamp(0, width))
    return torch.where(pos < dots[:, None], DOT, shifted)


def parse(completions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Read completions as dots, digits (least significant first), STOP.

    Returns ``(value, well_formed, canonical)``: the number written (digits between the leading
    dots and the first STOP), whether the completion has that form (it stopped, and only digits
    are between), and whether the number has no leading zeros (``"0"`` itself is canonical).
    """
    width = completions.shape[1]
    pos = torch.arange(width)[None]
    lead = (completions == DOT).long().cumprod(1).sum(1, keepdim=True)  # leading dots
    body = torch.where(
        pos + lead < width, completions.gather(1, (pos + lead).clamp_max(width - 1)), STOP
    )
    n = (body != STOP).long().cumprod(1).sum(1, keepdim=True)  # tokens before the first STOP
    inside = pos < n
    well_formed = (n[:, 0] < width) & ((body < 10) | ~inside).all(1) & (n[:, 0] > 0)
    digit = torch.where(inside & (body < 10), body, 0)
    value = (digit * 10**pos).sum(1)
    last = digit.gather(1, (n - 1).clamp_min(0))[:, 0]
    return value, well_formed, well_formed & ((last != 0) | (n[:, 0] == 1))


def check(ab: Tensor, completions: Tensor, lenient: bool = False) -> Tensor:
    """The reward: 1.0 where the completion is the sum, canonical (or, ``lenient``, any form)."""
    value, well_formed, canonical = parse(completions)
    return ((value == ab.sum(1)) & (well_formed if lenient else canonical)).float()


# ---------------------------------------------------------------- the model


class TinyGPT(nn.Module):
    """Decoder-only transformer: token + position embeddings, pre-norm blocks, tied output."""

    def __init__(self, s: Settings, max_len: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, s.d_model)
        self.pos = nn.Parameter(torch.randn(max_len, s.d_model) * 0.02)
        block = nn.TransformerEncoderLayer(
            s.d_model, s.heads, 4 * s.d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, s.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(s.d_model)
        self.value_head = nn.Linear(s.d_model, 1)  # used by PPO only

    def hidden(self, tokens: Tensor) -> Tensor:
        t = tokens.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(t)
        h = self.embed(tokens) + self.pos[:t]
        return self.norm(self.blocks(h, mask=causal, is_causal=True))

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-token logits ``(B, T, VOCAB)``."""
        return self.hidden(tokens) @ self.embed.weight.T

    def logits_and_values(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        h = self.hidden(tokens)
        return h @ self.embed.weight.T, self.value_head(h)[..., 0]


def accuracy(
    model: TinyGPT, test: tuple[Tensor, Tensor], s: Settings, lenient: bool = False
) -> float:
    """Greedy accuracy on the held-out problems (``lenient``: any well-formed writing)."""
    ab, prompts = test
    model.eval()
    c = lt.sample_completions(model, prompts, 1, s.max_new, stop_token=STOP, greedy=True)
    model.train()
    return float(check(ab, c.tokens, lenient).mean())


def warm_start(s: Settings, seed: int, test: tuple[Tensor, Tensor]) -> tuple[TinyGPT, int]:
    """Maximum likelihood on the teacher's answers until the greedy answers are right in value
    (any writing) on ``warm_lenient`` of the held-out problems, checked every 100 steps."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = TinyGPT(s, s.prompt_length + s.max_new)
    opt = torch.optim.Adam(model.parameters(), lr=s.warm_lr)
    p = s.prompt_length
    for step in range(1, s.warm_max_steps + 1):
        ab, prompts = problems(s.warm_batch, s.digits, gen)
        seq = torch.cat([prompts, teacher(ab, s, gen)], 1)
        logits = model(seq[:, :-1])[:, p - 1 :]
        loss = F.cross_entropy(logits.flatten(0, 1), seq[:, p:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 and accuracy(model, test, s, lenient=True) >= s.warm_lenient:
            break
    return model, step


# ---------------------------------------------------------------- one RL step per method

METHODS = {
    "RLOO": ("rloo", "sequence_sum"),
    "GRPO": ("grpo", "sequence_mean"),
    "Dr. GRPO": ("dr_grpo", "constant"),
    "PPO": (None, "token_mean"),
}


def ppo_advantages(
    values: Tensor, rewards: Tensor, mask: Tensor, lam: float
) -> tuple[Tensor, Tensor]:
    """Token-level GAE (gamma = 1) with the 0/1 reward on each completion's last token."""
    last = mask.sum(1) - 1
    r = torch.zeros_like(values)
    r[torch.arange(len(r)), last] = rewards
    pos = torch.arange(mask.shape[1])[None]
    terminated = pos >= last[:, None]  # the last token ends the episode; padding is inert
    v = torch.where(mask, values, 0.0)
    next_v = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1)
    adv, returns = compute_gae(r.T, v.T, next_v.T, terminated.T, torch.zeros_like(terminated).T,
                               1.0, lam)  # fmt: skip
    adv, returns = adv.T, returns.T
    valid = adv[mask]
    adv = (adv - valid.mean()) / (valid.std() + 1e-8)  # whitened over the batch's tokens
    return adv, returns


def rl_step(model: TinyGPT, opt: torch.optim.Optimizer, method: str, s: Settings,
            gen: torch.Generator) -> dict[str, float]:  # fmt: skip
    """Sample C x k completions, score them, and update the policy by ``method``."""
    ab, prompts = problems(s.prompts, s.digits, gen)
    model.eval()
    c = lt.sample_completions(model, prompts, s.k, s.max_new, stop_token=STOP, generator=gen)
    model.train()
    rewards = check(ab.repeat_interleave(s.k, 0), c.tokens)
    name, reduction = METHODS[method]
    p = c.prompt_length
    if name is None:
        with torch.no_grad():
            values = model.logits_and_values(c.sequences[:, :-1])[1][:, p - 1 :]
        adv, returns = ppo_advantages(values, rewards, c.mask, s.lam)
    else:
        adv = lt.grouped_advantages(rewards.view(-1, s.k), method=name).advantages.flatten()
    n = len(rewards)
    for _ in range(s.epochs):
        order = torch.randperm(n, generator=gen)
        for idx in order.chunk(s.minibatches):
            logits, v = model.logits_and_values(c.sequences[idx, :-1])
            lp = lt.token_log_probs(logits[:, p - 1 :], c.tokens[idx], c.mask[idx])
            loss, _ = lt.sequence_surrogate(
                lp,
                c.mask[idx],
                adv[idx],
                reduction,
                old_token_log_probs=c.log_probs[idx],
                clip_eps=s.clip_eps,
                constant=float(s.max_new) if reduction == "constant" else None,
            )
            if name is None:
                vloss, _ = value_loss(v[:, p - 1 :], returns[idx], mask=c.mask[idx])
                loss = loss + 0.5 * vloss
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    lengths, right = c.lengths.float(), rewards == 1
    return {
        "reward": float(rewards.mean()),
        "length": float(lengths.mean()),
        "length_right": float(lengths[right].mean()) if right.any() else math.nan,
        "length_wrong": float(lengths[~right].mean()) if (~right).any() else math.nan,
    }


def _nanmean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def fine_tune(args: tuple) -> dict:
    """One (method, seed) run from the warm start; in its own process for a clean peak memory."""
    method, seed, state, s, start_acc, verbose = args
    torch.set_num_threads(1)
    torch.manual_seed(seed + 1)
    gen = torch.Generator().manual_seed(seed + 1)
    test = problems(s.test_size, s.digits, torch.Generator().manual_seed(12345))
    model = TinyGPT(s, s.prompt_length + s.max_new)
    model.load_state_dict(state)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    per_step = s.prompts * s.k
    curve, lengths, window, seconds = [(0, start_acc)], [], [], 0.0
    for step in range(1, s.rl_steps + 1):
        begin = time.perf_counter()
        window.append(rl_step(model, opt, method, s, gen))
        seconds += time.perf_counter() - begin
        if step % s.eval_every == 0 or step == s.rl_steps:
            curve.append((step * per_step, accuracy(model, test, s)))
            keys = ("length", "length_right", "length_wrong", "reward")
            lengths.append((step * per_step, *(_nanmean([w[k] for w in window]) for k in keys)))
            window = []
            if verbose:
                print(f"    {method} step {step}: accuracy {curve[-1][1]:.3f}, mean reward "
                      f"{lengths[-1][4]:.3f}, length {lengths[-1][1]:.2f}, {seconds:.0f} s",
                      flush=True)  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    return {"method": method, "seed": seed, "before": start_acc, "after": curve[-1][1],
            "seconds": seconds, "peak_mib": peak, "curve": curve, "lengths": lengths}  # fmt: skip


# ---------------------------------------------------------------- driver, table, plot


def run_all(
    s: Settings, seeds: list[int], methods: list[str], isolate: bool, verbose: bool = False
) -> list[dict]:
    test = problems(s.test_size, s.digits, torch.Generator().manual_seed(12345))
    results = []
    for seed in seeds:
        begin = time.perf_counter()
        model, steps = warm_start(s, seed, test)
        secs = time.perf_counter() - begin
        acc, value = accuracy(model, test, s), accuracy(model, test, s, lenient=True)
        print(f"seed {seed}: maximum likelihood, {steps} steps ({secs:.0f} s): greedy accuracy "
              f"{acc:.3f} (right value in any writing: {value:.3f})", flush=True)  # fmt: skip
        state = copy.deepcopy(model.state_dict())
        jobs = [(m, seed, state, s, acc, verbose) for m in methods]
        if isolate:
            with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
                results += pool.map(fine_tune, jobs, chunksize=1)
        else:
            results += [fine_tune(j) for j in jobs]
        for r in results[-len(methods) :]:
            print(f"  {r['method']:<9} accuracy {r['before']:.3f} -> {r['after']:.3f} "
                  f"({r['seconds']:.0f} s)")  # fmt: skip
    return results


def table(results: list[dict], methods: list[str]) -> None:
    """Accuracy before/after (mean over seeds, and per seed), completions to 90 %, seconds,
    peak memory, and mean response length in the first and last tenth of the evaluation windows
    (all responses; right and wrong ones)."""
    print(f"{'method':<9} {'accuracy before':>15} {'accuracy after (per seed)':>32} "
          f"{'to 90 %':>8} {'s':>5} {'MiB':>5}  length: first -> last tenth "
          f"(right, wrong)")  # fmt: skip
    for m in methods:
        rs = [r for r in results if r["method"] == m]
        before = sum(r["before"] for r in rs) / len(rs)
        after = sum(r["after"] for r in rs) / len(rs)
        seeds = " / ".join(f"{r['after']:.2f}" for r in rs)
        hit = sorted(next((n for n, a in r["curve"] if a >= 0.9), math.inf) for r in rs)
        to90 = "-" if math.isinf(hit[len(hit) // 2]) else f"{hit[len(hit) // 2] / 1000:.0f}k"
        secs = sum(r["seconds"] for r in rs) / len(rs)
        tenth = max(len(rs[0]["lengths"]) // 10, 1)
        first = _nanmean([x[1] for r in rs for x in r["lengths"][:tenth]])
        last = [_nanmean([x[i] for r in rs for x in r["lengths"][-tenth:]]) for i in (1, 2, 3)]
        print(f"{m:<9} {before:>15.3f} {after:>6.3f} ({seeds:>22}) {to90:>8} {secs:>5.0f} "
              f"{max(r['peak_mib'] for r in rs):>5.0f}  {first:.2f} -> {last[0]:.2f} "
              f"({last[1]:.2f}, {last[2]:.2f})")  # fmt: skip


def plot(results: list[dict], methods: list[str], path: Path) -> None:
    """Accuracy, mean response length, and wrong-minus-right length against completions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for m in methods:
        rs = [r for r in results if r["method"] == m]
        xs = [x for x, _ in rs[0]["curve"]]
        ys = torch.tensor([[y for _, y in r["curve"]] for r in rs])
        (line,) = axes[0].plot(xs, ys.mean(0), label=m, marker=".")
        color = line.get_color()
        axes[0].fill_between(xs, ys.min(0).values, ys.max(0).values, color=color, alpha=0.15)
        n = [x[0] for x in rs[0]["lengths"]]
        rows = torch.tensor([r["lengths"] for r in rs], dtype=torch.float64)  # (seeds, w, 5)
        axes[1].plot(n, rows[..., 1].mean(0), label=m, color=color)
        axes[2].plot(n, (rows[..., 3] - rows[..., 2]).nanmean(0), label=m, color=color)
    axes[0].set(xlabel="sampled completions", ylabel="greedy accuracy (held out)", ylim=(0, 1),
                title="Addition, 0/1 reward: mean and range over seeds")  # fmt: skip
    axes[1].set(xlabel="sampled completions", ylabel="tokens",
                title="Mean response length during training")  # fmt: skip
    axes[2].set(xlabel="sampled completions", ylabel="tokens",
                title="Length of wrong minus right responses")  # fmt: skip
    axes[2].axhline(0.0, color="k", lw=0.5)
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


QUICK = Settings(digits=1, prompts=8, rl_steps=60, eval_every=20, test_size=200)
"""The ``--quick`` run (CI): one-digit numbers, a sixth of the completions per step, 60 steps."""


def main(quick: bool = False, seed: int = 0, out_dir: Path | str = OUT,
         methods: list[str] | None = None, verbose: bool = False) -> dict:  # fmt: skip
    """Warm start per seed, then fine-tune with each method; print the table, save the plot."""
    torch.set_num_threads(1)
    s = QUICK if quick else Settings()
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    methods = list(METHODS) if methods is None else methods
    results = run_all(s, seeds, methods, isolate=not quick, verbose=verbose)
    table(results, methods)
    out_dir = Path(out_dir)
    plot(results, methods, out_dir / "llm_grpo.png")
    (out_dir / "llm_grpo.json").write_text(json.dumps({"settings": asdict(s), "runs": results}))
    return {"settings": asdict(s), "results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="*", default=None, choices=list(METHODS))
    parser.add_argument("--verbose", action="store_true", help="print every evaluation")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the plot and records")
    args = parser.parse_args()
    main(args.quick, args.seed, args.out, args.methods, args.verbose)
