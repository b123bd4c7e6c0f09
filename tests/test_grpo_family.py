"""The GRPO family on tiny token "languages" whose exact answers come from enumeration.

Three kinds of evidence, all through the public pipeline (``sample_completions`` or explicit
sequences, ``sequence_log_probs``, ``grouped_advantages``, ``sequence_surrogate``):

- unbiasedness, statistically: sampled groups against the exact gradient of a two-token
  language, |mean - truth| <= z se with z from a stated failure rate (Bonferroni);
- the two biases of Liu et al. (2025), exactly: the expected update of every estimator is
  computed by enumerating all outcomes of a group, weighted by their probability. GRPO's
  per-sequence 1/|o| lengthens wrong answers and shortens right ones although the reward
  ignores length; its division by the group's standard deviation up-weights questions that are
  very easy or very hard. RLOO with sequence sums and Dr. GRPO (group mean, constant divisor)
  have neither.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

import logtrick as lt
from stats import assert_mean, z_bonferroni, z_scores

torch.set_num_threads(1)
NEG = -math.inf
ALPHA = 1e-3  # probability that a statistical test fails although the estimator is unbiased


# ---------------------------------------------------------------- a two-token language

V, STOP = 4, 3  # tokens 0, 1, 2 and STOP; a completion is y1 (STOP ends it) then y2


class TwoToken(nn.Module):
    """pi(y1) = softmax(first[g]), pi(y2 | y1) = softmax(second[g, y1]), g = row // k.

    ``first`` ``(G, V)`` and ``second`` ``(G, V, V)`` hold one copy of the parameters per
    group of ``k`` rows, so the gradient of a batch loss with respect to copy ``g`` is group
    ``g``'s own contribution (per-group estimates for the statistical test).
    """

    def __init__(self, first: Tensor, second: Tensor, k: int) -> None:
        super().__init__()
        self.first, self.second, self.k = nn.Parameter(first), nn.Parameter(second), k

    def forward(self, tokens: Tensor) -> Tensor:
        g = torch.arange(tokens.shape[0]) // self.k
        nxt = self.second[g[:, None], tokens[:, 1:]]  # position t >= 1 scores the next token
        return torch.cat([self.first[g][:, None], nxt], 1)


def _exact(first: Tensor, second: Tensor, f: Tensor) -> Tensor:
    """E[f] by enumeration: y1 = STOP ends the completion (reward f[STOP, 0])."""
    p1, p2 = first.softmax(-1), second.softmax(-1)
    cont = (p1[:STOP, None] * p2[:STOP] * f[:STOP]).sum()
    return cont + p1[STOP] * f[STOP, 0]


def _rewards(tokens: Tensor, f: Tensor) -> Tensor:
    y1 = tokens[:, 0]
    y2 = tokens[:, 1] if tokens.shape[1] > 1 else torch.zeros_like(y1)
    return torch.where(y1 == STOP, f[STOP, 0], f[y1, y2.clamp_max(V - 1)])


def _problem() -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    first = torch.randn(V, generator=g, dtype=torch.float64)
    second = torch.randn(V, V, generator=g, dtype=torch.float64)
    f = torch.rand(V, V, generator=g, dtype=torch.float64) * 2 - 0.5
    return first, second, f


def _per_group_gradients(
    first: Tensor, second: Tensor, groups: int, k: int, loss_fn: object, seed: int
) -> Tensor:
    """``(groups, V + V * V)``: each group's estimate, sampled by ``sample_completions``."""
    model = TwoToken(first.repeat(groups, 1), second.repeat(groups, 1, 1), k)
    gen = torch.Generator().manual_seed(seed)
    c = lt.sample_completions(
        model, torch.zeros(groups, 1, dtype=torch.long), k, 2, stop_token=STOP, generator=gen
    )
    lp = lt.sequence_log_probs(model, c.sequences, 1, c.mask)
    loss = loss_fn(model, c, lp)  # type: ignore[operator]
    grads = torch.autograd.grad(loss, [model.first, model.second])
    return -groups * torch.cat([grads[0], grads[1].flatten(1)], 1)  # ascent direction


def test_policy_gradient_unbiased_on_two_token_language() -> None:
    first, second, f = _problem()
    theta = [first.clone().requires_grad_(), second.clone().requires_grad_()]
    truth = torch.autograd.grad(_exact(*theta, f), theta)
    truth = torch.cat([truth[0], truth[1].flatten()])
    groups, k = 4000, 4
    cases = {  # name: (advantage, reduction, factor E[estimate] / true gradient)
        "reinforce": ("reinforce", "sequence_sum", 1.0),
        "rloo": ("rloo", "sequence_sum", 1.0),
        "dr_grpo": ("dr_grpo", "constant", (k - 1) / k / 2.0),  # constant c = L = 2
    }

    def loss_for(method: str, reduction: str) -> object:
        def fn(model: nn.Module, c: lt.Completions, lp: Tensor) -> Tensor:
            rewards = _rewards(c.tokens, f).view(-1, k)
            adv = lt.grouped_advantages(rewards, method).advantages.flatten()
            return lt.sequence_surrogate(lp, c.mask, adv, reduction)[0]

        return fn

    m = truth.numel() * (len(cases) + 1)  # Bonferroni over every entry of every check
    for i, (name, (method, reduction, factor)) in enumerate(cases.items()):
        draws = _per_group_gradients(first, second, groups, k, loss_for(method, reduction), i)
        assert_mean(draws, factor * truth, ALPHA, m=m, what=name)
    # power: GRPO (group std, per-sequence mean) is off the true direction, at any scale
    draws = _per_group_gradients(first, second, groups, k, loss_for("grpo", "sequence_mean"), 9)
    scale = (draws.mean(0) @ truth) / (truth @ truth)  # the best-fitting multiple of the truth
    assert z_scores(draws, scale * truth).nan_to_num(0.0).max() > z_bonferroni(ALPHA, m)


def test_kl_in_reward_k1_is_unbiased_for_the_sequence_kl() -> None:
    # folded into the reward, k1 with reward-to-go estimates grad KL(pi || ref) of whole
    # sequences; as a loss term, k1 has expected gradient 0 (the power check)
    first, second, _ = _problem()
    g = torch.Generator().manual_seed(1)
    ref_first = torch.randn(V, generator=g, dtype=torch.float64)
    ref_second = torch.randn(V, V, generator=g, dtype=torch.float64)
    theta = [first.clone().requires_grad_(), second.clone().requires_grad_()]
    log_ratio = [
        theta[0].log_softmax(-1) - ref_first.log_softmax(-1),
        theta[1].log_softmax(-1) - ref_second.log_softmax(-1),
    ]
    p1, p2 = theta[0].softmax(-1), theta[1].softmax(-1)
    kl = (p1 * log_ratio[0]).sum() + (p1[:STOP] * (p2[:STOP] * log_ratio[1][:STOP]).sum(-1)).sum()
    truth = torch.autograd.grad(kl, theta)
    truth = torch.cat([truth[0], truth[1].flatten()])
    groups, k, beta = 4000, 2, 0.5

    def loss_for(in_reward: bool) -> object:
        def fn(model: nn.Module, c: lt.Completions, lp: Tensor) -> Tensor:
            ref_model = TwoToken(ref_first.repeat(groups, 1), ref_second.repeat(groups, 1, 1), k)
            with torch.no_grad():
                ref = lt.sequence_log_probs(ref_model, c.sequences, 1, c.mask)
            zero = torch.zeros(len(lp), dtype=lp.dtype)
            return lt.sequence_surrogate(
                lp,
                c.mask,
                zero,
                "sequence_sum",
                kl_coef=beta,
                ref_token_log_probs=ref,
                kl_estimator="k1",
                kl_in_reward=in_reward,
            )[0]

        return fn

    draws = _per_group_gradients(first, second, groups, k, loss_for(True), 10)
    assert_mean(draws, -beta * truth, ALPHA, what="k1 in the reward")
    draws = _per_group_gradients(first, second, groups, k, loss_for(False), 11)
    assert_mean(draws, torch.zeros_like(truth), ALPHA, what="k1 in the loss: mean zero")


# ---------------------------------------------------------------- exact expected updates


class Answer(nn.Module):
    """Answer R (0) or W (1) to prompt c, then STOP (3), or a filler X (2) then STOP.

    ``P(R | c) = sigmoid(u[c])``; ``P(X | y1) = sigmoid(v[y1])``: how long the response is,
    given whether it is right. The reward 1[y1 = R] ignores the length.
    """

    def __init__(self, u: Tensor, v: Tensor) -> None:
        super().__init__()
        self.u, self.v = nn.Parameter(u), nn.Parameter(v)

    def forward(self, tokens: Tensor) -> Tensor:
        b, t = tokens.shape
        out = torch.full((b, t, 4), NEG, dtype=self.u.dtype)
        out[:, 0, 0], out[:, 0, 1] = self.u[tokens[:, 0]], 0.0  # y1 after the prompt
        if t > 1:  # after y1: X or STOP; after X: STOP
            vy = self.v[tokens[:, 1].clamp_max(1)]
            out[:, 1, 2], out[:, 1, 3] = vy, 0.0
        if t > 2:
            out[:, 2:, 3] = 0.0
        return out


COMPLETIONS = [(0, 3, 3), (0, 2, 3), (1, 3, 3), (1, 2, 3)]  # R., RX., W., WX. (STOP-padded)
LENGTHS = [2, 3, 2, 3]


def expected_update(
    u: Tensor,
    v: Tensor,
    k: int,
    method: str,
    reduction: str,
    constant: float | None = None,
    support: tuple[int, ...] = (0, 1, 2, 3),
) -> tuple[Tensor, Tensor]:
    """Exact E[update] over every outcome of a group of ``k``, averaged over the prompts.

    The batch holds all outcomes of every prompt (each of the ``k`` completions ranging over
    ``support``, indices into ``COMPLETIONS``); advantages are scaled by the outcome's
    probability times ``B / (k C)``, so the batch loss is exactly the expected group loss.
    """
    model = Answer(u.clone(), v.clone())
    outcomes = torch.tensor(list(itertools.product(support, repeat=k)))  # (|support|^k, k)
    contexts = len(u)
    seq, mask = _sequences(outcomes, contexts), _mask(outcomes, contexts)
    lp = lt.sequence_log_probs(model, seq, 1, mask)
    prob = lp.detach().sum(1).view(-1, k).sum(1).exp()  # each outcome of each prompt
    rewards = (torch.tensor(COMPLETIONS)[outcomes.repeat(contexts, 1)][..., 0] == 0).double()
    adv = lt.grouped_advantages(rewards, method).advantages
    weight = (prob * len(prob) / contexts)[:, None]  # P(outcome) B / (k C)
    loss, _ = lt.sequence_surrogate(
        lp, mask, (adv * weight).flatten(), reduction, constant=constant
    )
    du, dv = torch.autograd.grad(-loss, [model.u, model.v])
    return du, dv


def _sequences(outcomes: Tensor, contexts: int) -> Tensor:
    comp = torch.tensor(COMPLETIONS)[outcomes].flatten(0, 1)  # (4^k k, 3)
    prompt = torch.arange(contexts).repeat_interleave(len(comp))[:, None]
    return torch.cat([prompt, comp.repeat(contexts, 1)], 1)


def _mask(outcomes: Tensor, contexts: int) -> Tensor:
    lengths = torch.tensor(LENGTHS)[outcomes].flatten().repeat(contexts)
    return torch.arange(3)[None] < lengths[:, None]


def test_length_bias_of_per_sequence_mean_and_its_removal() -> None:
    """Dr. GRPO's length bias, exactly: 1/|o| shortens right and lengthens wrong answers."""
    u = torch.tensor([0.4], dtype=torch.float64)  # P(right) = 0.6
    v = torch.tensor([0.0, 0.0], dtype=torch.float64)  # P(long) = 1/2, right or wrong
    k = 4
    p = torch.sigmoid(u)
    true_du = p * (1 - p)  # d P(right) / du; d/dv = 0: the reward ignores the length
    du, dv = expected_update(u, v, k, "rloo", "sequence_sum")
    torch.testing.assert_close(du, true_du, rtol=1e-10, atol=0)
    assert dv.abs().max() < 1e-12
    du, dv = expected_update(u, v, k, "dr_grpo", "constant", constant=3.0)
    torch.testing.assert_close(du, true_du * (k - 1) / k / 3, rtol=1e-10, atol=0)
    assert dv.abs().max() < 1e-12
    for method in ("grpo", "rloo"):  # the bias comes from the reduction, whatever the advantage
        du, dv = expected_update(u, v, k, method, "sequence_mean")
        assert dv[0] < -1e-3, method  # right answers pushed shorter
        assert dv[1] > 1e-3, method  # wrong answers pushed longer
    assert float(du) > 0  # still learns to answer right


def test_difficulty_bias_of_group_std_and_its_removal() -> None:
    """Dr. GRPO's difficulty bias, exactly: 1/std up-weights very easy and very hard prompts."""
    p = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=torch.float64)
    u, v = torch.logit(p), torch.full((2,), -40.0, dtype=torch.float64)  # always short
    k = 8
    true_du = p * (1 - p) / len(p)  # d/du_c of the mean accuracy over prompts
    ratios = {}
    for method in ("rloo", "dr_grpo", "grpo"):
        du, _ = expected_update(u, v, k, method, "sequence_sum", support=(0, 2))
        ratios[method] = du / true_du  # E[update] / true gradient, per prompt
    one = torch.ones(5, dtype=torch.float64)
    torch.testing.assert_close(ratios["rloo"], one)
    torch.testing.assert_close(ratios["dr_grpo"], one * (k - 1) / k)
    grpo = ratios["grpo"]  # 2.31, 1.97, 1.74, 1.97, 2.31: the extremes weigh a third more
    assert grpo[0] > grpo[1] > 1.1 * grpo[2] and grpo[0] > 1.25 * grpo[2]
    torch.testing.assert_close(grpo, grpo.flip(0))  # symmetric in p <-> 1 - p
