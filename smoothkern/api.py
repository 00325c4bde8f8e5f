"""``smooth_grad``: the public function, its argument checks, and the job it hands the engine."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import backends as backend_registry
from .core import engine
from .model_cache.cuda_graphs import graphed_passes, model_state
from .layer_noise import AtLayer, check_layer_strategy, clean_forward_at_layer, resolve_layer
from .methods import AttributionMethod, resolve_method
from .noise import check_noise_kind, check_seed, plan_sigma
from .core.planning import choose_samples_per_pass, forward_measuring_saved_bytes
from .core.precision import check_compute_dtype
from .model_cache.prepare import (
    check_preparations,
    fingerprint,
    prepared_model,
    usable_preparations,
    without_values,
)
from .sources import CounterNoise
from .core.state import check_eval_mode, module_parameters, preserved
from .core.stats import ACCUMULATOR_DTYPES, check_aggregates

DEFAULT_NOISE_LEVEL = 0.15


def smooth_grad(
    model: nn.Module,
    inputs: Tensor,
    target: int | Sequence[int] | Tensor | None = None,
    *,
    n_samples: int = 50,
    noise_level: float | Sequence[float] | None = None,
    stdevs: float | Sequence[float] | Tensor | None = None,
    noise: str = "gaussian",
    aggregate: str | Sequence[str] = "mean",
    method: str | AttributionMethod = "gradient",
    samples_per_pass: int | None = None,
    snapshots: Sequence[int] | None = None,
    seed: int = 0,
    eps: float = 1e-10,
    backend: str | backend_registry.Backend = "auto",
    accumulator_dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype | None = None,
    memory_limit: int | None = None,
    prepare: bool | Sequence[str] = True,
    compile: bool = False,  # noqa: A002 - the name users expect
    tolerance: float | None = None,
    example_index: int | Sequence[int] | Tensor | None = None,
    noise_at: str | nn.Module | None = None,
    cuda_graphs: bool = False,
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
            :class:`smoothkern.backends.Backend` kernel set object. A named backend that cannot
            run here is refused, never replaced.
        accumulator_dtype: float32 (default) or float64 running statistics.
        compute_dtype: None (float32 model passes), torch.bfloat16 or torch.float16: the model's
            forward/backward run under autocast in that dtype; noise, statistics and results stay
            float32 (see :mod:`smoothkern.precision` for the accuracy contract).
        prepare: run a prepared copy of the model (True: the default preparations, BatchNorm
            folded and channels_last for convolutional models; False: none; or names from
            ``smoothkern.prepare.PREPARATIONS``: "fold_batchnorm", "channels_last",
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
            :func:`smoothkern.layer_noise.layer_activation`). The noise is a pure function of
            (seed, example, sample, element of the layer output). Runs the caller's model (no
            prepared copy); not with backend "vmap".
        cuda_graphs: on CUDA inputs, capture each batched pass shape once as a CUDA graph and
            replay it for the later passes and calls (:mod:`smoothkern.cuda_graphs`): for
            small models, whose passes are bound by kernel launches. The graphs are kept with
            the model while it is unchanged (``smoothkern.cuda_graphs.clear_graphs()`` frees
            them). Results equal the eager passes'; a model that cannot be captured runs
            eagerly with one warning. Not with backend "vmap" or "loop" nor with ``noise_at``;
            integrated gradients runs eagerly.
        memory_limit: bytes of saved activations one pass may hold (None: the default budget,
            half the free GPU memory or 192 MiB on a CPU); passes are sized to stay below it.
        progress: show a tqdm bar over passes.

    Returns:
        Tensor[(P,) (S,) B, *attribution_shape] in ``accumulator_dtype``, or a dict of them;
        aggregate "count" is LongTensor[(P,) B], the samples each example used.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_inputs(inputs, integer_ok=noise_at is not None)
    n_samples = check_count(n_samples, "n_samples")
    if samples_per_pass is not None:
        samples_per_pass = check_count(samples_per_pass, "samples_per_pass")
    noise = check_noise_kind(noise)
    names, single = check_aggregates(aggregate)
    seed = check_seed(seed)
    check_eps(eps)
    check_accumulator_dtype(accumulator_dtype)
    compute_dtype = check_compute_dtype(compute_dtype)
    memory_limit = check_memory_limit(memory_limit)
    preparations = check_preparations(prepare)
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False, got {compile!r}")
    if compile:
        preparations = tuple(dict.fromkeys(preparations + ("compile",)))
    tolerance = check_tolerance(tolerance, snapshots, backend)
    check_cuda_graphs(cuda_graphs, inputs, noise_at)
    index = check_example_index(example_index, inputs.shape[0], inputs.device)
    counts = _check_snapshots(snapshots, n_samples)
    if noise_level is None and stdevs is None:
        noise_level = DEFAULT_NOISE_LEVEL
    x = inputs.detach()
    if noise_at is None:
        sigma, sweep = plan_sigma(x, noise_level, stdevs)
    else:                              # checked now, planned on the activation after its forward
        plan_sigma(torch.zeros(x.shape[0], 1), noise_level, stdevs)
    method_obj = resolve_method(method, **method_options)
    choice = (backend_registry.Choice(backend, "batched")
              if isinstance(backend, backend_registry.Backend)
              else backend_registry.choose(backend, x.device))
    if noise_at is None:
        check_strategy(choice.passes, method_obj)
        check_eval_mode(model)
        state = fingerprint(model)            # one walk of the model for the caches below
        known = None if target is None else known_row_facts(model, x, state)
        if known is None:
            logits, row_bytes = clean_forward(model, x)
            classes = logits.shape[1]
        else:        # a named target and a model seen before: no clean forward is needed
            logits, (row_bytes, classes) = None, known
        noised = x
    else:
        method_obj = AtLayer(method_obj, resolve_layer(model, noise_at), x)
        check_layer_strategy(choice.passes)
        check_eval_mode(model)
        state = None
        logits, noised, row_bytes = clean_forward_at_layer(model, method_obj.layer, x)
        check_logits(logits, x.shape[0])
        classes = logits.shape[1]
        sigma, sweep = plan_sigma(noised, noise_level, stdevs)
    target = logits.argmax(dim=1) if target is None else target
    target = check_target(target, x.shape[0], classes, x.device)
    per_pass = samples_per_pass or choose_samples_per_pass(
        method_obj, noised, row_bytes, sigma.shape[0], n_samples, memory_limit)
    job = engine.Job(
        method=method_obj,
        source=CounterNoise(noised, sigma, seed, noise, choice.kernels.perturb, index),
        target=target, n_samples=n_samples,
        snapshots=counts + (() if counts[-1] == n_samples else (n_samples,)), aggregates=names,
        accumulate=choice.kernels.accumulate, passes=choice.passes, samples_per_pass=per_pass,
        accumulator_dtype=accumulator_dtype, eps=float(eps), compute_dtype=compute_dtype,
        tolerance=tolerance)
    if cuda_graphs:
        check_strategy_for_graphs(choice.passes)
        graph_state = model_state(model, state)        # before the method's own hooks
    with preserved(model, inputs), method_obj.session(model):
        runner = model if method_obj.uses_model_structure else prepared_model(
            model, x, logits, usable_preparations(preparations, choice.passes), state)
        if cuda_graphs:
            job = dataclasses.replace(
                job, graphs=graphed_passes(runner, compute_dtype, graph_state))
        try:
            results = engine.run(runner, job, progress)
        finally:
            if job.graphs is not None:
                job.graphs.drop_call_graphs()
    return engine.shape_results(results, names, sweep=sweep,
                                returned_snapshots=len(counts) if snapshots is not None else 0,
                                single_aggregate=single)


# ----------------------------------------------------------------------------------------------
# checks, shared with the Captum drop-in


def check_inputs(inputs: Tensor, integer_ok: bool = False) -> None:
    """A floating, finite ``[B, ...]`` tensor with values (not on the meta device).

    Args:
        integer_ok: integer (and bool) inputs are accepted too: the noise goes to a layer's
            output (``noise_at``), so the inputs are only what the model takes (token ids).
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a Tensor, got {type(inputs).__name__}")
    if inputs.is_complex() or not (inputs.is_floating_point() or integer_ok):
        hint = ("; noise cannot be added to integer inputs (token ids): add it to a layer's "
                "output instead with noise_at= (e.g. noise_at=\"embeddings\")"
                if not inputs.is_complex() else "")
        raise TypeError(f"inputs must be floating point, got dtype {inputs.dtype}{hint}")
    if inputs.dim() < 1 or inputs.shape[0] < 1 or inputs.numel() == 0:
        raise ValueError(f"inputs must be [B, ...] with B >= 1 and no empty dim, got "
                         f"{tuple(inputs.shape)}")
    if inputs.device.type == "meta":
        raise ValueError("inputs are on the meta device: they have shapes but no values to "
                         "attribute; move them to a real device")
    if inputs.is_floating_point() and not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or Inf")


def check_eps(eps: Any) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < float("inf"):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")


def check_accumulator_dtype(dtype: Any) -> None:
    if dtype not in ACCUMULATOR_DTYPES:
        raise TypeError(f"accumulator_dtype must be torch.float32 or torch.float64, got {dtype}")


def check_example_index(index: Any, batch: int, device: torch.device) -> Tensor | None:
    """None, or the examples' indices as a LongTensor[B] on ``device``."""
    if index is None:
        return None
    if isinstance(index, bool):
        raise TypeError("example_index must be an int, a sequence of ints or a LongTensor")
    if isinstance(index, int):
        index = torch.arange(index, index + batch, dtype=torch.int64)
    elif isinstance(index, Tensor):
        if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
            raise TypeError(f"example_index must hold integers, got dtype {index.dtype}")
    elif isinstance(index, Sequence) and not isinstance(index, str) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in index):
        index = torch.tensor(list(index), dtype=torch.int64)
    else:
        raise TypeError(f"example_index must be an int, a sequence of ints or a LongTensor, "
                        f"got {type(index).__name__}")
    if index.dim() != 1 or index.shape[0] != batch:
        raise ValueError(f"example_index must have one entry per example ({batch}), got shape "
                         f"{tuple(index.shape)}")
    if bool(((index < 0) | (index >= 2**32)).any()):
        raise ValueError("example_index values must be within 0..2**32-1")
    return index.to(device=device, dtype=torch.int64)


def check_cuda_graphs(cuda_graphs: Any, inputs: Tensor, noise_at: Any) -> None:
    if not isinstance(cuda_graphs, bool):
        raise TypeError(f"cuda_graphs must be True or False, got {cuda_graphs!r}")
    if cuda_graphs and inputs.device.type != "cuda":
        raise ValueError(f"cuda_graphs=True needs CUDA inputs, got inputs on {inputs.device}")
    if cuda_graphs and noise_at is not None:
        raise ValueError("cuda_graphs=True does not take noise_at= (its passes hook the layer "
                         "anew each time)")


def check_strategy_for_graphs(passes: str) -> None:
    if passes != "batched":
        raise ValueError(f"cuda_graphs=True captures batched passes; backend strategy "
                         f"{passes!r} has none")


def check_memory_limit(limit: Any) -> int | None:
    """None, or a positive number of bytes."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 1 <= limit < float(
            "inf"):
        raise ValueError(f"memory_limit must be a positive number of bytes, got {limit!r}")
    return int(limit)


def check_tolerance(tolerance: Any, snapshots: Any, backend: Any) -> float | None:
    """None, or a positive finite relative standard error, for a call that can stop early."""
    if tolerance is None:
        return None
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or \
            not 0 < tolerance < float("inf"):
        raise ValueError(f"tolerance must be a positive finite number, got {tolerance!r}")
    if snapshots is not None:
        raise ValueError("tolerance and snapshots cannot be combined: examples stop at "
                         "different counts")
    if backend == "loop":
        raise ValueError("tolerance needs batched passes; the 'loop' reference draws every "
                         "sample (compare against it with n_samples = the counts)")
    return float(tolerance)


def check_strategy(passes: str, method: AttributionMethod) -> None:
    """Refuses a pass strategy the method cannot run under."""
    if passes == "vmap" and not method.supports_vmap:
        raise ValueError(f"method {method.name!r} cannot run under backend 'vmap'; use "
                         "'auto', 'torch' or 'loop'")


def check_target(target: Any, batch: int, classes: int, device: torch.device) -> Tensor:
    """LongTensor[B] on ``device`` from an int, a sequence of B ints or an integer tensor
    ([B] or a scalar), each a class of the model's ``classes``."""
    if isinstance(target, bool):
        raise TypeError("target must be an int, a sequence of ints or a LongTensor, not bool")
    if isinstance(target, int):
        target = torch.full((batch,), target, dtype=torch.int64)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must be an integer tensor, got dtype {target.dtype}")
        if target.dim() == 0:
            target = target.expand(batch)
        if target.dim() != 1 or target.shape[0] != batch:
            raise ValueError(f"target must be an int or have shape [{batch}], got "
                             f"{tuple(target.shape)}")
    elif isinstance(target, Sequence) and not isinstance(target, str):
        if len(target) != batch or not all(isinstance(t, int) and not isinstance(t, bool)
                                           for t in target):
            raise ValueError(f"target must be {batch} ints, got {target!r}")
        target = torch.tensor(list(target), dtype=torch.int64)
    else:
        raise TypeError(f"target must be None, an int, a sequence of ints or a LongTensor, got "
                        f"{type(target).__name__}")
    target = target.to(device=device, dtype=torch.int64)
    if ((target < 0) | (target >= classes)).any():
        raise ValueError(f"target out of range: the model has {classes} classes, got "
                         f"{target.tolist()}")
    return target


def check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_snapshots(snapshots: Iterable[int] | None, n_samples: int) -> tuple[int, ...]:
    if snapshots is None:
        return (n_samples,)
    if isinstance(snapshots, int):
        snapshots = (snapshots,)
    counts = tuple(snapshots)
    if not counts:
        raise ValueError("snapshots is empty")
    for c in counts:
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= n_samples:
            raise ValueError(f"snapshots must be ints within 1..n_samples={n_samples}, got "
                             f"{counts}")
    if list(counts) != sorted(set(counts)):
        raise ValueError(f"snapshots must be strictly increasing, got {counts}")
    return counts


# Bytes autograd saves per row and the number of classes, per model and input shape: measured
# by the first call's clean forward. Later calls run the clean forward without autograd, or
# skip it when the caller names the target (most of the fixed cost of a small job). What the
# saved tensors and the output shape depend on is the key (``_facts_key``); values do not.
_ROW_FACTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[tuple, int, int]]] = \
    weakref.WeakKeyDictionary()


def _facts_key(model: nn.Module, inputs: Tensor, state: tuple | None = None
               ) -> tuple[tuple, tuple]:
    # the module tree, flags, plain attributes (a head chosen by a flag), hooks and which
    # tensors the model holds (a head swapped for another size), but not their values
    state = fingerprint(model) if state is None else state
    tree = (without_values(state),
            tuple(p.requires_grad for p in module_parameters(list(model.modules()))))
    return (tuple(inputs.shape[1:]), inputs.dtype, inputs.device), tree


def known_row_facts(model: nn.Module, inputs: Tensor, state: tuple | None = None
                    ) -> tuple[int, int] | None:
    """(bytes autograd saves per row, classes) from an earlier clean forward of this model
    tree at this input shape, or None.

    Args:
        state: ``smoothkern.prepare.fingerprint(model)`` if taken already.
    """
    key, tree = _facts_key(model, inputs, state)
    cached = _ROW_FACTS.get(model, {}).get(key)
    return cached[1:] if cached is not None and cached[0] == tree else None


def clean_forward(model: nn.Module, inputs: Tensor) -> tuple[Tensor, int]:
    """The model's output for the clean inputs, checked to be [B, classes], and the bytes
    autograd saves per row (for sizing passes; measured once per model tree and input shape)."""
    key, tree = _facts_key(model, inputs)
    entries = _ROW_FACTS.setdefault(model, {})
    cached = entries.get(key)
    if cached is not None and cached[0] == tree:
        with torch.no_grad():
            out = model(inputs.detach())
        check_logits(out, inputs.shape[0])
        return out, cached[1]
    out, row_bytes = forward_measuring_saved_bytes(model, inputs)
    check_logits(out, inputs.shape[0])
    entries[key] = (tree, row_bytes, out.shape[1])
    return out, row_bytes


def check_logits(out: Any, batch: int) -> None:
    """The model's output must be logits shaped [B, classes]."""
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != batch:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits shaped [B, classes] = "
                         f"[{batch}, classes], got {shape}")
