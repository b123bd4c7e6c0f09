r"""A sequence model trained on a non-differentiable reward: GRU string reversal, then RL.

A character-level GRU encoder-decoder learns to reverse random strings (8 symbols out of 10). It
is first trained by cross-entropy (teacher forcing) for a short while, so that it is decent but
imperfect, and then fine-tuned on a reward computed from *sampled* outputs, which has no gradient:
the fraction of characters in the right place. For each context (input string) the script draws
k = 4 outputs, turns their rewards into advantages with ``lt.grouped_advantages`` and gets the
policy gradient from ``lt.sequence_surrogate``:

.. math::  \nabla_\theta J \approx \frac{1}{Ck} \sum_{c,i} A_{c,i} \sum_t
           \nabla_\theta \log \pi(y_{c,i,t} \mid x_c, y_{c,i,<t}).

Three advantages are compared, each from the same pretrained model for the same number of steps:
self-critical (the greedy decode's reward as baseline), RLOO (leave-one-out mean) and GRPO (group
mean and standard deviation). Continued cross-entropy for the same number of steps is printed as a
reference. Exact match is that of the greedy decode on 1000 fixed test strings.

Run:  python examples/sequence_reward.py        (about 2-3 minutes; --quick: ~20 s)

Measured (seed 0): greedy exact match after 200 cross-entropy steps 0.339; after 300 fine-tuning
steps 0.558 (self-critical), 0.585 (RLOO), 0.567 (GRPO); continued cross-entropy, which sees the
target, 0.806.

Machine: a 2-core AMD EPYC CPU shared with other jobs; torch 2.13.0+cpu, one thread.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import logtrick as lt

OUT = Path(__file__).resolve().parent / "out"
SYMBOLS, LENGTH, HIDDEN = 10, 8, 128
BOS = SYMBOLS  # the decoder's start token (an input only)


def random_strings(n: int, gen: torch.Generator) -> Tensor:
    """``(n, LENGTH)`` strings of symbols ``0..SYMBOLS-1``."""
    return torch.randint(SYMBOLS, (n, LENGTH), generator=gen)


def target_of(x: Tensor) -> Tensor:
    """The task: reverse the string."""
    return x.flip(1)


class Seq2Seq(nn.Module):
    """GRU encoder; GRU decoder started from the encoder's last state."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(SYMBOLS + 1, 32)
        self.encoder = nn.GRU(32, HIDDEN, batch_first=True)
        self.decoder = nn.GRU(32, HIDDEN, batch_first=True)
        self.out = nn.Linear(HIDDEN, SYMBOLS)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(self.embed(x))[1]  # (1, B, H)

    def logits(self, x: Tensor, y: Tensor) -> Tensor:
        """Teacher-forced next-token logits ``(B, L, SYMBOLS)`` of outputs ``y`` given ``x``."""
        start = torch.full_like(y[:, :1], BOS)
        h, _ = self.decoder(self.embed(torch.cat([start, y[:, :-1]], 1)), self.encode(x))
        return self.out(h)

    @torch.no_grad()
    def decode(self, x: Tensor, greedy: bool, gen: torch.Generator | None = None) -> Tensor:
        """Greedy or sampled outputs ``(B, L)``, one token at a time."""
        h, token, out = self.encode(x), torch.full_like(x[:, :1], BOS), []
        for _ in range(LENGTH):
            o, h = self.decoder(self.embed(token), h)
            logits = self.out(o[:, 0])
            if greedy:
                token = logits.argmax(-1, keepdim=True)
            else:
                token = torch.multinomial(logits.softmax(-1), 1, generator=gen)
            out.append(token)
        return torch.cat(out, 1)


def char_accuracy(y: Tensor, target: Tensor) -> Tensor:
    """The reward: fraction of positions right, ``(B,)``. No gradient exists."""
    return (y == target).float().mean(1)


def exact_match(model: Seq2Seq, x: Tensor) -> float:
    """Fraction of strings whose greedy decode is exactly right."""
    return float((model.decode(x, greedy=True) == target_of(x)).all(1).float().mean())


def cross_entropy_step(model: Seq2Seq, opt: torch.optim.Optimizer, x: Tensor) -> None:
    opt.zero_grad()
    logits = model.logits(x, target_of(x))
    F.cross_entropy(logits.flatten(0, 1), target_of(x).flatten()).backward()
    opt.step()


def rl_step(
    model: Seq2Seq, opt: torch.optim.Optimizer, x: Tensor, method: str, k: int, gen: torch.Generator
) -> float:
    """One policy-gradient step on ``k`` sampled outputs per input; returns the mean reward."""
    target = target_of(x)
    xs = x.repeat_interleave(k, 0)  # (C k, L): the k samples of context c are rows c k .. c k + k-1
    y = model.decode(xs, greedy=False, gen=gen)
    rewards = char_accuracy(y, target.repeat_interleave(k, 0)).view(-1, k)  # (C, k)
    if method == "self-critical":
        greedy_reward = char_accuracy(model.decode(x, greedy=True), target)  # (C,)
        adv = lt.grouped_advantages(rewards, method="baseline", baseline=greedy_reward)
    else:
        adv = lt.grouped_advantages(rewards, method=method)
    token_log_probs = model.logits(xs, y).log_softmax(-1).gather(-1, y[..., None])[..., 0]
    mask = torch.ones_like(y, dtype=torch.bool)
    loss, _ = lt.sequence_surrogate(token_log_probs, mask, adv.advantages.flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(rewards.mean())


METHODS = {"self-critical (greedy baseline)": "self-critical", "RLOO": "rloo", "GRPO": "mean_std"}


def fine_tune(
    start: Seq2Seq, name: str, steps: int, test_x: Tensor, seed: int
) -> tuple[list[tuple[int, float]], float]:
    """Fine-tune a copy of ``start`` by RL (or by cross-entropy); curve of exact match, seconds."""
    model = copy.deepcopy(start)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(seed + 1)
    curve, seconds, every = [(0, exact_match(model, test_x))], 0.0, max(steps // 10, 1)
    for i in range(1, steps + 1):
        begin = time.perf_counter()
        if name == "cross-entropy (reference)":
            cross_entropy_step(model, opt, random_strings(64 * 4, gen))
        else:
            rl_step(model, opt, random_strings(64, gen), METHODS[name], 4, gen)
        seconds += time.perf_counter() - begin
        if i % every == 0:
            curve.append((i, exact_match(model, test_x)))
    return curve, seconds


def plot(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, curve in curves.items():
        ax.plot(*zip(*curve), label=name, marker=".")
    ax.set(xlabel="fine-tuning step", ylabel="greedy exact match (test)")
    ax.set_title("Reversing strings: reward fine-tuning after cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(quick: bool = False, seed: int = 0, out_dir: Path | str = OUT) -> dict:
    """Pretrain by cross-entropy, then fine-tune with each advantage; print exact match."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    test_x = random_strings(1000, torch.Generator().manual_seed(12345))
    model = Seq2Seq()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pre_steps, rl_steps = (200, 100) if quick else (200, 300)
    for _ in range(pre_steps):
        cross_entropy_step(model, opt, random_strings(128, gen))
    before = exact_match(model, test_x)
    print(f"after {pre_steps} cross-entropy steps: greedy exact match {before:.3f}")
    names = [*METHODS, "cross-entropy (reference)"]
    if quick:
        names = ["RLOO"]
    results, curves = {}, {}
    print(f"{'fine-tuning':<32} {'exact match':>11} {'seconds':>8}")
    for name in names:
        curves[name], seconds = fine_tune(model, name, rl_steps, test_x, seed)
        results[name] = {"before": before, "after": curves[name][-1][1], "seconds": seconds}
        print(f"{name:<32} {before:.3f} -> {curves[name][-1][1]:.3f} {seconds:>8.1f}")
    plot(curves, Path(out_dir) / "sequence_reward.png")
    return {"before": before, "pretrain_steps": pre_steps, "rl_steps": rl_steps, "results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(quick=args.quick, seed=args.seed)
