"""``smooth_grad``: the public function. Its arguments are checked by :mod:`.core.checks` and
:func:`.core.builder.check_options`, its job planned by :mod:`.core.plan` and built by
:func:`.core.builder.build_job`, like every other entry point's."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .core import engine
from .core.builder import build_job, check_options, finish, model_session
from .core.checks import (
    check_flag,
    check_inputs,
    check_model,
    check_strategy,
    check_unknown_options,
)
from .core.plan import plan_input_noise, plan_layer_noise
from .core.state import check_eval_mode
from .methods import AttributionMethod, resolve_method
from .model_cache import check_preparations, serialised
from .model_cache.cuda_graphs import graphed_passes, model_state
from .model_io import OutputSpec, adapt
from .noise.layer import check_layer_strategy
from .noise.sigma import DEFAULT_NOISE_LEVEL, plan_sigma
from .ops.backends import Backend, PassStrategy

__all__ = ["smooth_grad"]


@serialised
def smooth_grad(
    model: nn.Module,
    inputs: Tensor,
    target: int | Sequence[int] | Tensor | None = None,
    *,
    n_samples: int = 50,
    noise_level: float | Sequence[float] | None = None,
    stdevs: float | Sequence[float] | Tensor | None = None,
    noise: str = "gaussian",
    sampling: str = "iid",
    aggregate: str | Sequence[str] = "mean",
    method: str | AttributionMethod = "gradient",
    samples_per_pass: int | None = None,
    snapshots: Sequence[int] | None = None,
    seed: int = 0,
    eps: float = 1e-10,
    backend: str | Backend = "auto",
    accumulator_dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype | None = None,
    memory_limit: int | None = None,
    prepare: bool | Sequence[str] = True,
    compile: bool = False,  # noqa: A002 - the name users expect
    tolerance: float | None = None,
    example_index: int | Sequence[int] | Tensor | None = None,
    noise_at: str | nn.Module | None = None,
    cuda_graphs: bool = False,
    output: OutputSpec = None,
    forward_args: Sequence[Any] | Any = None,
    forward_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
    **method_options: Any,
) -> Tensor | dict[str, Tensor]:
    """Noise-averaged attributions (SmoothGrad and its family) in batched passes.

    Args:
        model: a classifier returning logits ``[B, classes]``; in eval mode if it has
            BatchNorm/Dropout. It comes back unchanged (flags, requires_grad, .grad, hooks).
        inputs (Tensor[B, ...]): clean inputs, floating point, finite (with ``noise_at``: any
            dtype the model takes, integer token ids too).
        target: the class to explain: None (the class predicted for the clean input), an int,
            or a LongTensor[B]. The attribution is taken of that class's logit.
        n_samples: noise samples m per example.
        noise_level: σ_b = noise_level · (max x_b − min x_b) per example, the SmoothGrad
            paper's definition (with ``noise_at``: the range of example b's activation);
            0.15 when neither this nor ``stdevs`` is given. A sequence is a sweep (result
            gains a leading dim S).
        stdevs: absolute σ instead: float, Tensor[B], sequence (sweep) or Tensor[S, B].
        noise: "gaussian" or "uniform" (same standard deviation, half-width √3·σ).
        sampling: how each element's draws spread over the samples: "iid" (independent draws,
            the paper's), "antithetic" (sample 2k+1 is the negation of sample 2k) or
            "stratified" (a nested Latin hypercube: every prefix of 2**k samples hits each of
            2**k strata of every element once, pairings across elements drawn at random). Each
            element's marginal is the requested distribution either way
            (:mod:`smoothkern.noise.sampling`).
        aggregate: one of "mean", "abs", "sq", "var", "geomean" (returns a Tensor) or a tuple of
            them (returns a dict); all from the same samples.
        method: a name ("gradient", ...) or an :class:`AttributionMethod`; keyword options of the
            method go in ``**method_options``.
        samples_per_pass: sample indices per forward/backward (a pass holds that many · S · B
            noisy copies); None picks it from a memory budget. Results do not depend on it.
        snapshots: sample counts (each within 1..n_samples) at which the running result is also
            returned, as a leading dim before the sweep's; snapshot k equals ``n_samples=k``.
        seed: the noise stream (0 ≤ seed < 2**64); the noise is a pure function of
            (seed, example, sample, element).
        eps: floor inside the geometric mean's log(|a| + eps).
        backend: "auto", a kernel set ("torch", "cpp", "triton", "cuda"; batched passes), a pass
            strategy ("vmap", "loop": pure-torch kernels), or a
            :class:`smoothkern.ops.backends.Backend` kernel set object. A named backend that cannot
            run here is refused, never replaced.
        accumulator_dtype: float32 (default) or float64 running statistics.
        compute_dtype: None (float32 model passes), torch.bfloat16 or torch.float16: the model's
            forward/backward run under autocast in that dtype; noise, statistics and results stay
            float32 (see :mod:`smoothkern.precision` for the accuracy contract).
        prepare: run a prepared copy of the model (True: the default preparations, BatchNorm
            folded and channels_last for convolutional models; False: none; or names from
            ``smoothkern.model_cache.PREPARATIONS``: "fold_batchnorm", "channels_last",
            "compile"); the caller's model is never changed. Methods
            that hook modules always run the caller's model.
        compile: run the (prepared) model through ``torch.compile`` (cached with the prepared
            copy; a one-time note says the first pass compiles). For long jobs; on a small CPU
            it did not pay (benchmarks/RESULTS.md).
        tolerance: adaptive sample counts, ``n_samples`` being the cap: after each pass an
            example stops drawing once ‖sem_b‖₂ ≤ tolerance · ‖mean_b‖₂ and leaves the later
            passes; aggregate "count" says how many samples each used. Each example's result
            equals a fixed run with ``n_samples`` = its count. Not with snapshots or "loop".
        example_index: which examples of the caller's data the rows are, for the noise: an int
            (the first row's index; rows are consecutive from it), a LongTensor[B] or a list of
            B ints (each within 0..2**32-1); None: positions 0..B-1. The noise of example k
            then does not depend on the batch it is computed in (data sets, several processes).
        noise_at: add the noise to the output of this module (a dotted path such as
            ``"embeddings"`` or ``"layer2.0.conv1"``, or the module) instead of the inputs, and
            attribute with respect to that output: the result is [B, *layer_output]. Methods
            "gradient", "saliency", "input_x_gradient", "integrated_gradients" (its
            ``baseline`` is then a baseline activation; see
            :func:`smoothkern.noise.layer.layer_activation`). The noise is a pure function of
            (seed, example, sample, element of the layer output). Runs the caller's model (no
            prepared copy); not with backend "vmap".
        cuda_graphs: on CUDA inputs, capture each batched pass shape once as a CUDA graph and
            replay it for the later passes and calls
            (:mod:`smoothkern.model_cache.cuda_graphs`): for
            small models, whose passes are bound by kernel launches. The graphs are kept with
            the model while it is unchanged (``smoothkern.clear_caches()`` frees
            them). Results equal the eager passes'; a model that cannot be captured runs
            eagerly with one warning. Not with backend "vmap" or "loop" nor with ``noise_at``;
            integrated gradients runs eagerly.
        memory_limit: bytes of saved activations one pass may hold (None: the default budget,
            half the free GPU memory or 192 MiB on a CPU); passes are sized to stay below it.
        output: where the logits are in the model's output: None (a Tensor, ``.logits`` as
            in every transformers ``ModelOutput``, or a mapping's ``"logits"``), a key or
            attribute name, an int index into a tuple, or a callable from the output to
            logits [B, classes] (:mod:`smoothkern.model_io`).
        forward_args, forward_kwargs: the model's other inputs (an attention mask, token type
            ids), like Captum's ``additional_forward_args``: tensors whose first dim is B are
            repeated for every noisy row of their example; anything else is passed as is.
        progress: show a tqdm bar over passes.

    Returns:
        Tensor[(P,) (S,) B, *attribution_shape] in ``accumulator_dtype``, or a dict of them;
        aggregate "count" is LongTensor[(P,) B], the samples each example used.
    """
    check_model(model)
    check_inputs(inputs, integer_ok=noise_at is not None)
    check_unknown_options(method_options, _KEYWORDS, method, "smooth_grad")
    options = check_options(
        inputs, n_samples=n_samples, snapshots=snapshots, aggregate=aggregate, seed=seed,
        noise=noise, sampling=sampling, eps=eps, backend=backend,
        accumulator_dtype=accumulator_dtype,
        compute_dtype=compute_dtype, memory_limit=memory_limit,
        samples_per_pass=samples_per_pass, tolerance=tolerance, example_index=example_index,
        progress=progress)
    preparations = check_preparations(prepare)
    if check_flag(compile, "compile"):
        preparations = tuple(dict.fromkeys(preparations + ("compile",)))
    check_cuda_graphs(cuda_graphs, inputs, noise_at, options.passes)
    if noise_level is None and stdevs is None:
        noise_level = DEFAULT_NOISE_LEVEL
    x = inputs.detach()
    call = adapt(model, output, forward_args, forward_kwargs, x.shape[0])
    method_obj = resolve_method(method, **method_options)
    if noise_at is None:
        sigma, sweep = plan_sigma(x, noise_level, stdevs)
        check_strategy(options.passes, method_obj)
        check_eval_mode(model)
        plan = plan_input_noise(model, call, x, target, options, method_obj, sigma)
    else:                              # checked now, planned on the activation after its forward
        plan_sigma(torch.zeros(x.shape[0], 1), noise_level, stdevs)
        check_layer_strategy(options.passes)
        check_eval_mode(model)
        plan, sweep = plan_layer_noise(model, call, x, target, options, method_obj, noise_at,
                                       noise_level, stdevs)
    job = build_job(options, method=plan.method, source=plan.source, target=plan.target,
                    samples_per_pass=plan.samples_per_pass)
    if cuda_graphs:
        graph_state = model_state(model, plan.state)      # before the method's own hooks
    with model_session(model, plan.method, inputs):
        runner = plan.runner(preparations, options.passes)
        if cuda_graphs:
            job = dataclasses.replace(
                job, graphs=graphed_passes(runner, options.compute_dtype, graph_state))
        try:
            results = engine.run(runner, job, options.progress)
        finally:
            if job.graphs is not None:
                job.graphs.drop_call_graphs()
    return finish(results, options, sweep)


# the keywords smooth_grad takes itself (the rest go to the method)
_KEYWORDS = tuple(p for p in inspect.signature(smooth_grad).parameters
                  if p not in ("model", "inputs", "method_options"))


def check_cuda_graphs(cuda_graphs: Any, inputs: Tensor, noise_at: Any, passes: str) -> None:
    if not check_flag(cuda_graphs, "cuda_graphs"):
        return
    if inputs.device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs CUDA inputs, got inputs on {inputs.device}")
    if noise_at is not None:
        raise ValueError("cuda_graphs=True does not take noise_at= (its passes hook the layer "
                         "anew each time)")
    if PassStrategy(passes) is not PassStrategy.BATCHED:
        raise ValueError(f"cuda_graphs=True captures batched passes; backend strategy "
                         f"{passes!r} has none")
