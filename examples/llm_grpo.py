r"""RL fine-tuning of a tiny Hugging Face model with a 0/1 checker: RLOO, GRPO, Dr. GRPO, PPO.

A ``transformers`` Qwen2 causal LM built from a config with random weights (no download, 0.1 M
parameters) and a character tokenizer add numbers written least-significant digit first:
``"74+93="`` asks for 47 + 39, and ``"68"`` then end-of-sequence answers 86. The reward is 1 for
the right sum written canonically (no leading zeros, after any number of ``"."``, free
"thinking" tokens that the checker ignores) and 0 otherwise.

The warm start is maximum likelihood on a teacher that writes 95 % of its answers zero-padded
(``"6800"``) and the rest canonically, after 0-3 dots; it stops once half of the greedy answers
have the right *value* in any writing. The model then knows some addition and the canonical form
only as a rare habit (greedy accuracy near 0), and RL with the 0/1 reward has to teach both:

.. code-block:: python

    trainer = lt.language.Trainer(model, tokenizer, train_prompts, correct, algo="grpo",
                                  config=lt.language.LMConfig(k=8, prompts_per_step=16, lr=1e-4,
                                                              epochs=2, minibatches=2))
    trainer.learn(steps)
    trainer.evaluate(test_prompts)          # greedy accuracy with the checker

Every method gets the same settings (C = 16 prompts x k = 8 completions per step, two epochs of
two minibatches, clip 0.2, lr 1e-4, beta = 0) from the same warm start: ``rloo`` (leave-one-out,
per-sequence sum), ``grpo`` (group-normalised, per-sequence mean), ``dr_grpo`` (group mean,
divided by ``max_new_tokens``) and ``ppo`` (per-token GAE from a value head on the last hidden
state). Reported: greedy accuracy on held-out problems before and after, seconds of RL, mean
completion length of right and wrong answers.

Run:  python examples/llm_grpo.py           (2-digit numbers, 4 methods, 300 steps each)
      python examples/llm_grpo.py --quick   (1-digit numbers, GRPO and Dr. GRPO, 25 steps: < 1 min)

Measured (seed 0, 2-digit numbers, 300 steps = 38,400 completions per method; warm start 324 s):
greedy accuracy on 300 held-out problems from 0.000 to 0.920 (RLOO), 0.910 (GRPO), 0.880
(Dr. GRPO) and 0.920 (PPO), in 210-442 s of wall-clock RL per method at high machine load.

Machine: a 2-core CPU shared with other jobs; torch 2.13.0+cpu, one thread.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import logtrick as lt

OUT = Path(__file__).resolve().parent / "out"
METHODS = {"RLOO": "rloo", "GRPO": "grpo", "Dr. GRPO": "dr_grpo", "PPO": "ppo"}


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on (``--quick`` shortens it)."""

    digits: int = 2
    """Digits per operand."""
    hidden: int = 64
    """Width of the model."""
    arch: str = "qwen2"
    """``"qwen2"`` or ``"gpt2"`` (:func:`logtrick.language.tiny_causal_lm`)."""
    warm_lenient: float = 0.5
    """Maximum likelihood stops once this share of greedy answers has the right value."""
    warm_max_steps: int = 3000
    """...or after this many steps."""
    padded: float = 0.95
    """Share of the teacher's answers zero-padded to ``digits + 2`` digits (rejected)."""
    rl_steps: int = 300
    """RL generation steps per method."""
    prompts: int = 16
    """Prompts per step, C."""
    k: int = 8
    """Completions per prompt."""
    test_size: int = 300
    """Held-out problems."""
    methods: tuple[str, ...] = tuple(METHODS)
    """Which methods to run."""

    @property
    def max_new(self) -> int:
        """Completion length limit: three dots, the padded digits, the stop token, 2 spare."""
        return 3 + self.digits + 2 + 3


QUICK = Settings(
    digits=1,
    rl_steps=25,
    prompts=8,
    test_size=100,
    methods=("GRPO", "Dr. GRPO"),
    warm_max_steps=600,
)
TOK = lt.language.char_tokenizer("0123456789+=.")


def lsd(n: int, width: int | None = None) -> str:
    """``n`` in decimal, least significant digit first (zero-padded to ``width``)."""
    s = str(n)[::-1]
    return s if width is None else s.ljust(width, "0")


def problems(n: int, digits: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    ab = torch.randint(10**digits, (n, 2), generator=g).tolist()
    return [f"{lsd(a, digits)}+{lsd(b, digits)}=" for a, b in ab]


def value(prompt: str) -> int:
    a, b = prompt.rstrip("=").split("+")
    return int(a[::-1]) + int(b[::-1])


def correct(prompts: list[str], completions: list[str], **_: object) -> list[float]:
    """1.0 for the canonical sum after any dots, else 0.0 (the reward and the checker)."""
    out = []
    for p, c in zip(prompts, completions):
        body = c.lstrip(".")
        out.append(float(body.isdigit() and body == lsd(value(p))))
    return out


def lenient(prompts: list[str], completions: list[str], **_: object) -> list[float]:
    """1.0 for the right value in any writing (zero padding allowed)."""
    out = []
    for p, c in zip(prompts, completions):
        body = c.lstrip(".")
        out.append(float(body.isdigit() and int(body[::-1]) == value(p)))
    return out


def teacher(prompt: str, s: Settings, g: torch.Generator) -> str:
    """Dots, then the sum: zero-padded with probability ``padded``, else canonical."""
    dots = "." * int(torch.randint(4, (1,), generator=g))
    pad = float(torch.rand(1, generator=g)) < s.padded
    return dots + lsd(value(prompt), s.digits + 2 if pad else None)


def warm_start(s: Settings, seed: int, test: list[str]) -> torch.nn.Module:
    """Maximum likelihood on the teacher until half the greedy answers have the right value."""
    model = lt.language.tiny_causal_lm(len(TOK), s.arch, hidden=s.hidden, layers=2, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    probe = lt.language.Trainer(
        model,
        TOK,
        test,
        lenient,
        checker=lenient,
        config=lt.language.LMConfig(max_new_tokens=s.max_new),
    )
    for step in range(1, s.warm_max_steps + 1):
        prompts = problems(64, s.digits, seed * 100_000 + step)
        rows = [[*TOK(p + teacher(p, s, g)).input_ids, TOK.eos_token_id] for p in prompts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [TOK.pad_token_id] * (width - len(r)) for r in rows])
        labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
        labels[:, : len(prompts[0])] = -100  # prompts have one length: learn the answers only
        model.train()
        loss = model(input_ids=ids, labels=labels).loss  # right padding: never attended to
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 and probe.evaluate(test[:100]) >= s.warm_lenient:
            break
    return model.eval()


def fine_tune(model: torch.nn.Module, algo: str, s: Settings, seed: int, test: list[str]) -> dict:
    cfg = lt.language.LMConfig(
        k=s.k,
        prompts_per_step=s.prompts,
        max_new_tokens=s.max_new,
        lr=1e-4,
        epochs=2,
        minibatches=2,
        clip_eps=0.2,
        seed=seed,
        progress=False,
    )
    train = problems(5000, s.digits, seed + 1)
    trainer = lt.language.Trainer(model, TOK, train, correct, algo, cfg, checker=correct)
    before = trainer.evaluate(test)
    begin = time.perf_counter()
    rows = [trainer.learn(1) for _ in range(s.rl_steps)]
    seconds = time.perf_counter() - begin
    tail = rows[-max(len(rows) // 5, 1) :]
    mean = lambda key: sum(r.get(key, float("nan")) for r in tail) / len(tail)  # noqa: E731
    return {
        "algo": algo,
        "before": before,
        "after": trainer.evaluate(test),
        "seconds": seconds,
        "length_right": mean("length_right"),
        "length_wrong": mean("length_wrong"),
    }


def main(quick: bool = False, seed: int = 0, out_dir: Path | str = OUT) -> dict:
    """Warm start, then each method from it; print the table."""
    torch.set_num_threads(1)
    s = QUICK if quick else Settings()
    test = problems(s.test_size, s.digits, 12345)
    begin = time.perf_counter()
    warm = warm_start(s, seed, test)
    print(f"warm start ({time.perf_counter() - begin:.0f} s)", flush=True)
    results = []
    for name in s.methods:
        r = fine_tune(copy.deepcopy(warm), METHODS[name], s, seed, test)
        results.append({"method": name, **r})
        print(
            f"{name:<9} greedy accuracy {r['before']:.3f} -> {r['after']:.3f} in "
            f"{r['seconds']:.0f} s; length right {r['length_right']:.2f}, wrong "
            f"{r['length_wrong']:.2f}",
            flush=True,
        )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return {"settings": replace(s).__dict__, "results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    main(args.quick, args.seed, args.out)
