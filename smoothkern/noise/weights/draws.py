"""Counter-based weight noise: the drawn parameters of model draw d, a pure function of
(seed, d, parameter, element).

The weight-noise contract
-------------------------
Parameter ``p`` is the p-th entry of ``model.named_parameters()`` (tied parameters count once and
stay tied); element ``j`` is its flat index. Its standard draw for model ``d`` is the noise
contract's Gaussian (:mod:`smoothkern.noise`) with

    key     = seed XOR WEIGHT_KEY_MIX                 (another stream than the input noise's)
    counter = (j, d, p, 0)                            (element, model draw, parameter)

so drawn weights are exactly what any kernel set's ``perturb`` gives for ``x = w.view(1, -1)``,
samples ``d``, example index ``p``. ``noise_grad(weight_sampling=)`` picks how each element's
draws spread over the model draws d (:mod:`smoothkern.noise.sampling`: the perturb's
``sampling=``, with d as the sample index): "iid" is the draw above, bit for bit; "antithetic"
negates draw 2k's ε in draw 2k+1; "stratified" puts draws 0 .. 2**k - 1 of every (p, j) in each
of 2**k equal-probability strata once. The drawn weight is

    multiplicative:  w + (weight_noise · w) · ε       = w · (1 + weight_noise · ε)
    additive:        w + weight_noise · ε

computed in float32 (``float(w) + σ · ε``, then cast to the parameter's dtype). A draw never
depends on how many draws are taken together, on chunking, backend or device. Input noise keeps
its own key (the seed), so FusionGrad's input and weight noise are independent streams.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...ops.backends import PerturbFn
from ...ops.perturb import perturb_reference
from ..philox import MAX_COUNTER
from ..sampling import Sampling, parse_sampling, sampled_noise
from ..sources.counter import draw_rows

# How a weight's noise scales (σ_w·|w| or σ_w): noise_grad's noise_kind=, not the input
# noise's distribution (smoothkern.noise.NoiseKind).
WEIGHT_NOISE_KINDS = ("multiplicative", "additive")
# The golden-ratio constant of splitmix64: never 0, so the weight key differs from the seed.
WEIGHT_KEY_MIX = 0x9E3779B97F4A7C15


def weight_key(seed: int) -> int:
    """The 64-bit Philox key of the weight noise for a call's ``seed``."""
    return seed ^ WEIGHT_KEY_MIX


@dataclass(frozen=True)
class NoisedParameter:
    """One parameter the noise reaches.

    Attributes:
        name: its name in ``model.named_parameters()``.
        index: p, its position there (the counter word that keys its draws).
        value: the caller's tensor (read, never written).
    """

    name: str
    index: int
    value: Tensor


# Stratified draws made one at a time walk each element's parent chain; made together they share
# their prefix (64 draws of the digits CNN's 117 k weights, one thread: 402 ms one by one, 155 ms
# in eights, 66 ms at once). So stratified draws are made this many ahead, within this many
# bytes held beyond what the pass planner counts.
DRAW_AHEAD = 16
DRAW_AHEAD_BYTES = 32 * 1024**2


class WeightDraws:
    """Draws the noisy parameters of model draws ``start .. start+count-1``.

    Args:
        model: the caller's model (its parameters are read, never written).
        weight_noise: the noise scale (relative for "multiplicative", absolute for "additive").
        kind: "multiplicative" or "additive".
        seed: the call's seed (the weight key is :func:`weight_key` of it).
        perturb: a kernel set's ``perturb`` op.
        sampling: how each element's draws spread over the model draws ("iid", "antithetic",
            "stratified"; the draw index is the design's sample index).
        total: the draws the call will take (stratified draws are made ahead up to it); None:
            no bound beyond ``DRAW_AHEAD``.
    """

    def __init__(self, model: nn.Module, weight_noise: float, kind: str, seed: int,
                 perturb: PerturbFn = perturb_reference, *,
                 sampling: Sampling | str = Sampling.IID, total: int | None = None) -> None:
        self.weight_noise, self.kind, self.seed, self.perturb = weight_noise, kind, seed, perturb
        self.sampling = parse_sampling(sampling)
        self.total = total
        self.parameters = noised_parameters(model) if weight_noise > 0 else ()
        self._cached: tuple[int, int, dict[str, Tensor]] | None = None
        self._sigma: dict[str, Tensor] = {}       # σ per element, the same for every draw
        self._index: dict[str, Tensor] = {}       # each parameter's counter word, on its device

    @property
    def bytes_per_draw(self) -> int:
        """Bytes one draw of every noised parameter holds."""
        return sum(p.value.numel() * p.value.element_size() for p in self.parameters)

    def stacked(self, start: int, count: int) -> dict[str, Tensor]:
        """{name: Tensor[count, *shape]}: draws ``start .. start+count-1`` of each parameter.

        The last range drawn is kept, so a later range inside it (a chunk split after an
        out-of-memory error, or one model's samples spread over passes) is a view, not a redraw.
        """
        if start + count > MAX_COUNTER:
            raise ValueError(f"model draws reach {start + count} > 2**32 (a 32-bit counter word)")
        if self._cached is not None:
            first, held, values = self._cached
            if first <= start and start + count <= first + held:
                lo = start - first
                return {name: value[lo:lo + count] for name, value in values.items()}
        self._cached = None                       # free the old draws before making new ones
        span = self._span(start, count)
        values = {p.name: self._draw(p, start, span) for p in self.parameters}
        self._cached = (start, span, values)
        return values if span == count else {name: v[:count] for name, v in values.items()}

    def _span(self, start: int, count: int) -> int:
        """Draws to make for a request of ``count`` from ``start``: more under the stratified
        design (``DRAW_AHEAD``, within ``DRAW_AHEAD_BYTES`` and ``total``)."""
        if self.sampling is not Sampling.STRATIFIED:
            return count
        ahead = min(DRAW_AHEAD, DRAW_AHEAD_BYTES // max(1, self.bytes_per_draw))
        if self.total is not None:
            ahead = min(ahead, self.total - start)
        return max(count, min(ahead, MAX_COUNTER - start))

    def release(self) -> None:
        """Drops the kept draws and scales."""
        self._cached = None
        self._sigma = {}
        self._index = {}

    def _draw(self, param: NoisedParameter, start: int, count: int) -> Tensor:
        w = param.value.detach()
        flat = w.reshape(1, -1)
        sigma = self._sigma.get(param.name)
        if sigma is None:
            if self.kind == "multiplicative":
                sigma = (self.weight_noise * flat.float()).view(1, 1, -1)
            else:
                sigma = torch.full((1, 1), self.weight_noise, dtype=torch.float32,
                                   device=w.device)
            self._sigma[param.name] = sigma
        index = self._index.get(param.name)
        if index is None:          # made once per parameter: not a host-to-device copy per draw
            index = self._index[param.name] = torch.tensor([param.index], dtype=torch.int64,
                                                           device=w.device)
        with torch.no_grad():
            rows = draw_rows(self.perturb, flat, sigma, weight_key(self.seed), start, count,
                             "gaussian", index, self.sampling)
        return rows.view(count, *w.shape)


def noised_parameters(model: nn.Module) -> tuple[NoisedParameter, ...]:
    """The model's parameters in ``named_parameters()`` order, each with its counter index.

    Raises:
        ValueError: the model has no parameters, or a parameter that is not a real floating
            point tensor.
    """
    found = tuple(NoisedParameter(name, index, value)
                  for index, (name, value) in enumerate(model.named_parameters()))
    if not found:
        raise ValueError("the model has no parameters: weight noise has nothing to perturb "
                         "(use smooth_grad for input noise alone)")
    for p in found:
        if not p.value.is_floating_point():
            raise ValueError(f"parameter {p.name!r} has dtype {p.value.dtype}: weight noise "
                             "needs real floating point parameters")
    return found


def drawn_model(model: nn.Module, draw: int, *, weight_noise: float = 0.2,
                noise_kind: str = "multiplicative", seed: int = 0,
                sampling: Sampling | str = Sampling.IID) -> nn.Module:
    """A deep copy of ``model`` holding the weights of model draw ``draw``, pure torch.

    The reference of the weight-noise contract (:func:`~smoothkern.noise.sampling.sampled_noise`
    under ``sampling``, no kernel set), and a way to look at one member of the ensemble
    ``noise_grad`` averages over. The caller's model is not changed.
    """
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for index, (_, param) in enumerate(copied.named_parameters()):
            element = torch.arange(param.numel(), dtype=torch.int64, device=param.device)
            z = sampled_noise(weight_key(seed),
                              torch.tensor(index, dtype=torch.int64, device=param.device),
                              torch.tensor(draw, dtype=torch.int64, device=param.device),
                              element, "gaussian", sampling).view(param.shape)
            w = param.float()
            sigma = weight_noise * w if noise_kind == "multiplicative" else weight_noise
            param.copy_((w + sigma * z).to(param.dtype))
    return copied
