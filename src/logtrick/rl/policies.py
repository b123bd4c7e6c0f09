r"""MLP actor and critic built from Gymnasium observation and action spaces.

The actor outputs the parameters of :math:`\pi(a \mid s)`:

==================  ==================================================================
action space        distribution
==================  ==================================================================
``Discrete(n)``     ``Categorical(logits)``
``MultiDiscrete``   ``Independent(Categorical(logits padded to max(nvec)), 1)``
``MultiBinary``     ``Independent(Bernoulli(logits), len(shape))``
``Box``             ``Independent(Normal(mean, exp(log_std)), len(shape))``, state-independent
                    ``log_std``; actions are clipped to the bounds only in :meth:`to_env`
==================  ==================================================================

Observations are feature vectors (:class:`~logtrick.rl.spaces.ObsLayout`: a ``Box`` flattened,
``Dict`` / ``Tuple`` / discrete spaces one-hot per discrete leaf); ``Discrete`` and
``MultiDiscrete`` actions honour action masks (:mod:`logtrick.rl.masks`).
:meth:`ActorCritic.step`, the collector's hot path, evaluates actor and critic as one fused MLP
(block-diagonal weights: one matmul per layer for both) and samples ``Discrete`` (Gumbel-max)
and ``Box`` actions without building a ``Distribution``; elsewhere distributions are built
with ``validate_args=False``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, Normal
from torch.nn import functional as F

from logtrick.checks import check_finite
from logtrick.rl.masks import check_action_mask, combine_masks, mask_logits, sections
from logtrick.rl.spaces import ObsLayout, head_size

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))

if TYPE_CHECKING:  # config.py imports ACTIVATIONS from here: a type-only import back
    from logtrick.rl.config import Config

__all__ = ["ACTIVATIONS", "ActorCritic", "build_policy", "merge_moments"]

ACTIVATIONS: dict[str, tuple[type[nn.Module], Callable[[Tensor], Tensor]]] = {  # module, function
    "tanh": (nn.Tanh, torch.tanh),
    "relu": (nn.ReLU, torch.relu),
    "elu": (nn.ELU, F.elu),
    "gelu": (nn.GELU, F.gelu),
    "silu": (nn.SiLU, F.silu),
}
_PAD_LOGIT = -1e9  # logit of a MultiDiscrete slot beyond its dimension's size: probability 0
_OBS_CLIP = 10.0
_OBS_EPS = 1e-8


def _mlp(sizes: Sequence[int], activation: str, out_gain: float) -> nn.Sequential:
    """Linear layers with orthogonal init: gain √2 for hidden layers, ``out_gain`` for the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        linear = nn.Linear(n_in, n_out)
        nn.init.orthogonal_(linear.weight, gain=out_gain if last else math.sqrt(2.0))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(ACTIVATIONS[activation][0]())
    return nn.Sequential(*layers)


class _FusedMLP:
    r"""Actor and critic evaluated as one MLP with block-diagonal weights (inference only).

    Layer 0 stacks both networks' weights (they read the same input); later layers are
    block-diagonal, so each layer is one matmul for both networks. The fused copy is rebuilt
    whenever a parameter's version counter or storage changes (an optimizer step, a
    ``load_state_dict``, a move to another device).

    ``tanh`` runs as a logistic sigmoid, which torch computes about 3× faster on CPU:
    :math:`\tanh z = 2\sigma(2z) - 1`, with the factor 2 folded into the layer's weights and
    the affine map :math:`s \mapsto 2s - 1` into the next layer's (:math:`W(2s - 1) + b =
    2Ws + (b - W\mathbf 1)`), so each layer stays one matmul and one activation.
    """

    def __init__(self, nets: Sequence[nn.Sequential], activation: str):
        self.layers = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        self.params = [p for net in nets for p in net.parameters()]
        self.sigmoid = activation == "tanh"
        self.activation = torch.sigmoid if self.sigmoid else ACTIVATIONS[activation][1]
        self.key: list[tuple[int, int]] | None = None
        self.weights: list[tuple[Tensor, Tensor]] = []

    def _rebuild(self) -> None:
        with torch.no_grad():
            self.weights = []
            for i, layer in enumerate(zip(*self.layers)):
                weights = [m.weight.detach() for m in layer]
                weight = torch.cat(weights) if i == 0 else torch.block_diag(*weights)
                bias = torch.cat([m.bias.detach() for m in layer])
                if self.sigmoid and i > 0:  # the input is s = (h + 1) / 2: fold h = 2s - 1
                    weight, bias = 2.0 * weight, bias - weight.sum(1)
                if self.sigmoid and i < len(self.layers[0]) - 1:  # sigmoid(2z) for tanh(z)
                    weight, bias = 2.0 * weight, 2.0 * bias
                self.weights.append((weight, bias))

    def __call__(self, x: Tensor) -> Tensor:
        key = [(p._version, p.data_ptr()) for p in self.params]
        if key != self.key:
            self._rebuild()
            self.key = key
        *hidden, last = self.weights
        for weight, bias in hidden:
            x = self.activation(F.linear(x, weight, bias))
        return F.linear(x, *last)


def _refresh_after_load(module: ActorCritic, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: recompute the float32 normalisation constants."""
    module._refresh_obs_norm()


def merge_moments(
    n_a: float, mean_a: Any, var_a: Any, n_b: float, mean_b: Any, var_b: Any
) -> tuple[float, Any, Any]:
    r"""Count, mean and (population) variance of two samples pooled, from their moments.

    .. math::  n = n_a + n_b,\quad \delta = \mu_b - \mu_a,\quad
               \mu = \mu_a + \delta \frac{n_b}{n},\quad
               \sigma^2 = \frac{n_a \sigma_a^2 + n_b \sigma_b^2 + \delta^2 n_a n_b / n}{n}

    Works on floats and on tensors alike (running observation and return statistics).

    References:
        Chan, Golub & LeVeque, *Updating Formulae and a Pairwise Algorithm for Computing
        Sample Variances*, 1979.
    """
    n = n_a + n_b
    delta = mean_b - mean_a
    var = (n_a * var_a + n_b * var_b + delta**2 * (n_a * n_b / n)) / n
    return n, mean_a + delta * (n_b / n), var


class ActorCritic(nn.Module):
    r"""Separate MLP actor and critic for a policy-gradient method.

    Args:
        observation_space: a ``Box``, ``Discrete``, ``MultiDiscrete``, ``MultiBinary`` or a
            (nested) ``Dict`` / ``Tuple`` of them (:class:`~logtrick.rl.spaces.ObsLayout`).
        action_space: ``Discrete``, ``MultiDiscrete`` (1-D ``nvec``), ``MultiBinary`` or ``Box``.
        hidden: hidden layer widths, shared by actor and critic (separate weights).
        activation: ``"tanh"``, ``"relu"``, ``"elu"``, ``"gelu"`` or ``"silu"``.
        critic: build a value network; without one :meth:`value` returns zeros.
        normalize_obs: keep running mean/variance of observations (updated by
            :meth:`update_obs_stats`, saved in the ``state_dict``) and feed the networks
            :math:`\operatorname{clip}((s - \mu) / \sqrt{\sigma^2 + 10^{-8}}, \pm 10)`
            (features of ``Box`` leaves only; one-hot features pass unchanged).
        log_std_init: initial log standard deviation of a ``Box`` policy.

    Weights are orthogonally initialised (gain √2 for hidden layers, 0.01 for the policy head,
    1 for the value head), biases zero, as is standard for PPO.

    References:
        Andrychowicz et al., *What Matters in On-Policy Reinforcement Learning? A Large-Scale
        Empirical Study*, ICLR 2021 (initialisation, observation normalisation).
    """

    # buffers (register_buffer): declared for the type checker, which sees Tensor | Module
    obs_mean: Tensor
    obs_var: Tensor
    obs_count: Tensor
    _obs_shift: Tensor
    _obs_scale: Tensor
    _obs_normalized: Tensor
    _pad_index: Tensor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        critic: bool = True,
        normalize_obs: bool = False,
        log_std_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.obs_layout = ObsLayout(observation_space)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.observation_space, self.action_space = observation_space, action_space
        self.obs_shape, obs_dim = self.obs_layout.shape, self.obs_layout.dim
        sizes = [obs_dim, *[int(h) for h in hidden]]
        self._head_dim = head_size(action_space)
        self.actor = _mlp([*sizes, self._head_dim], activation, 0.01)
        self.critic = _mlp([*sizes, 1], activation, 1.0) if critic else None
        nets = [self.actor] if self.critic is None else [self.actor, self.critic]
        self._fused = _FusedMLP(nets, activation)
        self.normalize_obs = bool(normalize_obs)
        self.obs_stats_frozen = False
        """While true, :meth:`update_obs_stats` does nothing: the statistics stay those the
        learner shared for the iteration (:func:`~logtrick.rl.distributed.frozen_obs_stats`)."""
        self.register_buffer("obs_mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("_obs_shift", torch.zeros(obs_dim), persistent=False)
        self.register_buffer("_obs_scale", torch.ones(obs_dim), persistent=False)
        normalized = torch.from_numpy(self.obs_layout.normalized)
        self.register_buffer("_obs_normalized", normalized, persistent=False)
        self.register_load_state_dict_post_hook(_refresh_after_load)
        self._setup_actions(action_space, float(log_std_init))

    def _setup_actions(self, space: spaces.Space, log_std_init: float) -> None:
        """Record what the action head needs: kind, shape, index maps, bounds, log-std."""
        assert space.shape is not None  # head_size has refused shapeless spaces
        self.action_shape = tuple(space.shape)
        self._start: int | np.ndarray | None = None
        if isinstance(space, spaces.Discrete):
            self.kind = "discrete"
            self._start = int(space.start) if int(space.start) != 0 else None
        elif isinstance(space, spaces.MultiDiscrete):
            self.kind = "multi_discrete"
            nvec = [int(n) for n in space.nvec]
            width = max(nvec)
            # slot (i, j) reads logit column offset_i + j, or the padding column for j >= nvec[i]
            offsets = np.cumsum([0, *nvec[:-1]])
            index = [
                [o + j if j < n else sum(nvec) for j in range(width)] for o, n in zip(offsets, nvec)
            ]
            self.register_buffer("_pad_index", torch.tensor(index).flatten(), persistent=False)
            self._uniform = len(set(nvec)) == 1
            self._width = width
            self._start = space.start if np.any(space.start != 0) else None
        elif isinstance(space, spaces.MultiBinary):
            self.kind = "multi_binary"
        else:  # Box: head_size has refused everything else
            assert isinstance(space, spaces.Box)
            self.kind = "box"
            self.log_std = nn.Parameter(torch.full(self.action_shape, log_std_init))
            self._low, self._high = space.low, space.high
            self._log_norm = 0.5 * math.prod(self.action_shape) * math.log(2 * math.pi)

    def actor_parameters(self) -> list[nn.Parameter]:
        """Parameters of the policy π: the actor network and, for ``Box``, ``log_std``."""
        extra = [self.log_std] if self.kind == "box" else []
        return [*self.actor.parameters(), *extra]

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters of the value network (empty without a critic)."""
        return [] if self.critic is None else list(self.critic.parameters())

    # ----------------------------------------------------------------- observations
    def _refresh_obs_norm(self) -> None:
        """Float32 copies of the statistics used by :meth:`_features`."""
        norm = self._obs_normalized
        self._obs_shift.copy_(torch.where(norm, self.obs_mean, 0.0))
        self._obs_scale.copy_(torch.where(norm, torch.rsqrt(self.obs_var + _OBS_EPS), 1.0))

    def _features(self, obs: Tensor) -> Tensor:
        """Flatten (and normalise) observations: ``batch + obs_shape`` -> ``batch + (obs_dim,)``."""
        if not isinstance(obs, Tensor):
            raise TypeError(f"obs: expected a Tensor, got {type(obs).__name__}")
        lead = obs.dim() - len(self.obs_shape)
        if lead < 0 or tuple(obs.shape[lead:]) != self.obs_shape:
            raise ValueError(
                f"obs: expected shape batch + {self.obs_shape}, got {tuple(obs.shape)}"
            )
        x = obs if len(self.obs_shape) == 1 else obs.reshape(*obs.shape[:lead], -1)
        if x.dtype != self._obs_shift.dtype:
            x = x.to(self._obs_shift.dtype)
        if self.normalize_obs:
            x = ((x - self._obs_shift) * self._obs_scale).clamp_(-_OBS_CLIP, _OBS_CLIP)
        return x

    def update_obs_stats(self, obs: Tensor) -> None:
        r"""Fold a batch of observations into the running mean and variance (if normalising
        and not :attr:`obs_stats_frozen`).

        .. math::  \mu \leftarrow \mu + \delta \frac{n_b}{n}, \quad
                   \sigma^2 \leftarrow \frac{n_a \sigma_a^2 + n_b \sigma_b^2
                   + \delta^2 n_a n_b / n}{n}, \quad \delta = \mu_b - \mu_a,\ n = n_a + n_b

        Args:
            obs: ``batch + obs_shape``; every leading element is one observation.

        References:
            Chan, Golub & LeVeque, *Updating Formulae and a Pairwise Algorithm for Computing
            Sample Variances*, 1979.
        """
        if not self.normalize_obs or self.obs_stats_frozen:  # cheap: called every step
            return
        x = self._features_raw(obs).detach()
        if x.shape[0] == 0:
            return
        var_b, mean_b = torch.var_mean(x, 0, correction=0)
        self.fold_obs_moments(x.shape[0], mean_b, var_b)

    def obs_features(self, obs: Tensor) -> Tensor:
        """``(N, obs_dim)`` float64 rows of the features the statistics are kept on."""
        return self._features_raw(obs).detach()

    def fold_obs_moments(self, n_b: float, mean_b: Tensor, var_b: Tensor) -> None:
        """Merge the moments ``(n_b, mean_b, var_b)`` of a batch of observation features (from
        one process, or pooled over workers and ranks) into the running statistics."""
        with torch.no_grad():
            total, mean, var = merge_moments(
                float(self.obs_count), self.obs_mean, self.obs_var, n_b, mean_b, var_b
            )
            self.obs_mean.copy_(mean)
            self.obs_var.copy_(var)
            self.obs_count.fill_(total)
            self._refresh_obs_norm()

    def _features_raw(self, obs: Tensor) -> Tensor:
        """Observations as float64 rows ``(N, obs_dim)``, not normalised."""
        obs = torch.as_tensor(obs, device=self.obs_mean.device)
        lead = obs.dim() - len(self.obs_shape)
        if lead < 0 or tuple(obs.shape[lead:]) != self.obs_shape:
            raise ValueError(
                f"obs: expected shape batch + {self.obs_shape}, got {tuple(obs.shape)}"
            )
        return obs.reshape(-1, self.obs_mean.shape[0]).to(torch.float64)

    # ----------------------------------------------------------------- distributions
    def _dist(self, head: Tensor, action_mask: Tensor | None = None) -> Distribution:
        """The action distribution given the actor's output ``batch + (head_size,)`` and an
        optional bool action mask of the same shape (``Discrete`` / ``MultiDiscrete`` only)."""
        head, batch = mask_logits(head, action_mask), head.shape[:-1]
        if self.kind == "discrete":
            return Categorical(logits=head, validate_args=False)
        if self.kind == "multi_discrete":
            if self._uniform:
                logits = head.reshape(*batch, -1, self._width)
            else:
                padded = torch.cat([head, head.new_full((*batch, 1), _PAD_LOGIT)], -1)
                logits = padded[..., self._pad_index].reshape(*batch, -1, self._width)
            return Independent(Categorical(logits=logits, validate_args=False), 1)
        if self.kind == "multi_binary":
            logits = head.reshape(*batch, *self.action_shape)
            base: Distribution = Bernoulli(logits=logits, validate_args=False)
            return Independent(base, len(self.action_shape), validate_args=False)
        mean = head.reshape(*batch, *self.action_shape)
        base = Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False)
        return Independent(base, len(self.action_shape), validate_args=False)

    def distribution(self, obs: Tensor, action_mask: Tensor | None = None) -> Distribution:
        r""":math:`\pi(\cdot \mid s)` (masked), batch shape ``obs.shape[:-len(obs_shape)]``."""
        return self._dist(self.actor(self._features(obs)), action_mask)

    def value(self, obs: Tensor) -> Tensor:
        """:math:`V(s)`, shape ``batch`` (zeros without a critic)."""
        return self._value_of(self._features(obs))

    def _value_of(self, x: Tensor) -> Tensor:
        if self.critic is None:
            return x.new_zeros(x.shape[:-1])
        return self.critic(x).squeeze(-1)

    def step(self, obs: Tensor, action_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Sample actions for the collector: ``(action, log_prob, value)``.

        Args:
            obs: ``batch + obs_shape`` float observations (raw; normalised inside).
            action_mask: ``batch + (head_size,)`` bool, or None (:mod:`~logtrick.rl.masks`).

        Returns:
            ``action`` (``batch + action_shape``, unclipped), ``log_prob`` and ``value``
            (``batch``). Call under ``torch.inference_mode()`` when collecting.
        """
        x = self._features(obs)
        out = self._fused(x)
        head = mask_logits(out[..., : self._head_dim], action_mask)
        value = out[..., self._head_dim] if self.critic is not None else out.new_zeros(x.shape[:-1])
        if self.kind == "discrete":  # fast path: Gumbel-max sampling, no Distribution object
            log_p = torch.log_softmax(head, -1)
            action = (log_p - torch.empty_like(log_p).exponential_().log_()).argmax(-1, True)
            return action.squeeze(-1), log_p.gather(-1, action).squeeze(-1), value
        if self.kind == "box":  # fast path: a = μ + σε, log π(a) = -½|ε|² - Σ log σ - ½ d log 2π
            mean = head.reshape(*head.shape[:-1], *self.action_shape)
            noise = torch.randn_like(mean)
            action = mean + noise * self.log_std.exp()
            norm = noise.square_().reshape(head.shape).sum(-1).mul_(-0.5)
            return action, norm.sub_(self.log_std.sum() + self._log_norm), value
        dist = self._dist(head)  # already masked
        action = dist.sample()
        return action, dist.log_prob(action), value

    def evaluate_actions(
        self, obs: Tensor, actions: Tensor, action_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(log_prob, entropy, value)`` of given actions, each shape ``batch``; differentiable.

        Args:
            obs: ``batch + obs_shape``.
            actions: ``batch + action_shape``, as returned by :meth:`step` (unclipped).
            action_mask: the mask they were sampled under, ``batch + (head_size,)``, or None.
        """
        x = self._features(obs)
        if self.kind == "box":  # Independent(Normal)'s arithmetic without building the objects
            log_prob, entropy = self._box_log_prob_entropy(self.actor(x), actions)
            return log_prob, entropy, self._value_of(x)
        dist = self._dist(self.actor(x), action_mask)
        return dist.log_prob(actions), dist.entropy(), self._value_of(x)

    def _box_log_prob_entropy(self, head: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``Independent(Normal(mean, exp(log_std)))``'s log_prob and entropy, the same ops in
        the same order (bit for bit), at a third of the per-minibatch cost."""
        mean = head.reshape(*head.shape[:-1], *self.action_shape)
        scale = self.log_std.exp().expand_as(mean)
        log_scale = scale.log()
        log_prob = -((actions - mean) ** 2) / (2 * scale**2) - log_scale - _LOG_SQRT_2PI
        entropy = 0.5 + 0.5 * math.log(2 * math.pi) + log_scale
        dims = tuple(range(-len(self.action_shape), 0))
        return log_prob.sum(dims), entropy.sum(dims)

    # ----------------------------------------------------------------- env boundary
    def _mode(self, dist: Distribution) -> Tensor:
        if self.kind == "discrete":
            return cast(Categorical, dist).logits.argmax(-1)
        base = cast(Independent, dist).base_dist  # _dist wraps every other kind
        if self.kind == "multi_discrete":
            return cast(Categorical, base).logits.argmax(-1)
        if self.kind == "multi_binary":
            logits = cast(Bernoulli, base).logits
            return (logits > 0).to(logits.dtype)
        return cast(Normal, base).loc

    def to_env(self, action: Tensor) -> np.ndarray:
        """Env-ready numpy actions: Box clipped to its bounds, discrete indices offset by ``start``.

        Args:
            action: ``batch + action_shape`` as sampled by :meth:`step`.
        """
        a = (
            action.numpy()
            if action.is_cpu and not action.requires_grad
            else action.detach().cpu().numpy()
        )
        if self.kind == "box":
            return np.clip(a, self._low, self._high).astype(self.action_space.dtype, copy=False)
        if self.kind == "multi_binary":
            return a.astype(self.action_space.dtype)
        return a if self._start is None else a + self._start

    def act(self, obs: Any, deterministic: bool = False, action_mask: Any = None) -> np.ndarray:
        """Env-ready actions for one observation or a batch (mode/mean when ``deterministic``).

        Args:
            obs: one observation or a batch, as the env gives them (numpy, tensor, or a dict /
                tuple of them for ``Dict`` / ``Tuple`` spaces).
            deterministic: take the most likely allowed action (Box: the mean), not a sample.
            action_mask: bool ``batch + (head_size,)`` allowed actions (e.g. the env's
                ``info["action_mask"]``), combined with a ``Dict`` observation's own mask.

        Returns:
            numpy actions, shape ``batch + action_shape`` (``action_shape`` for one observation).
        """
        device = self.obs_mean.device
        if not (self.obs_layout.is_box and action_mask is None and isinstance(obs, Tensor)):
            obs, obs_mask = self.obs_layout.split(obs)
            action_mask = combine_masks(obs_mask, action_mask)
        if action_mask is not None:
            check_action_mask(action_mask, sections(self.action_space), "passed to act")
            action_mask = torch.as_tensor(action_mask, device=device)
        with torch.inference_mode():
            obs = check_finite(
                "obs", torch.as_tensor(obs, dtype=self._obs_shift.dtype, device=device)
            )
            dist = self.distribution(obs, action_mask)
            return self.to_env(self._mode(dist) if deterministic else dist.sample())


def build_policy(config: Config, env: Any) -> ActorCritic:
    """The MLP actor-critic ``config`` describes, for the spaces of the vector env ``env``: the
    learner's policy and each Ray worker's copy are built here."""
    return ActorCritic(
        env.single_observation_space,
        env.single_action_space,
        hidden=config.hidden,
        activation=config.activation,
        critic=config.uses_critic,
        normalize_obs=config.normalize_obs,
        log_std_init=config.log_std_init,
    )
