"""Reduced precision against its own limit: ``smooth_grad(compute_dtype=torch.bfloat16)`` next
to plain bf16 passes of the prepared model (BatchNorm folded, channels_last) at their best pass
size, interleaved; and the engine with the pass size its planner chose before the bf16 probe left
the weights' casts out (one-row probe) for comparison.

    python -m benchmarks.bf16_limit [--repeats 15] [--models small_resnet,cifar_resnet18]
"""

from __future__ import annotations

import argparse
import functools

import torch

import smoothkern as sk
from smoothkern.core.plan import _reduced_precision_row_bytes
from smoothkern.core.planning import choose_samples_per_pass, forward_measuring_saved_bytes
from smoothkern.model_cache import clean_forward, prepared_model
from smoothkern.model_cache.prepare import DEFAULT_PREPARATIONS

from .common import interleaved_medians, limit_candidates, machine, make_model, plain_passes

M = 50


def bf16_passes(model, x, target, samples_per_pass):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_passes(model, x, target, M, samples_per_pass)


def row(name: str, batch: int, repeats: int) -> dict[str, float]:
    model, shape = make_model(name)
    x = torch.rand(batch, *shape)
    target = model(x).argmax(1).detach()
    logits, fp32_bytes = clean_forward(model, x)
    prepared = prepared_model(model, x, logits, DEFAULT_PREPARATIONS)
    with torch.autocast("cpu", dtype=torch.bfloat16):   # the probe before: one row, casts in
        _, one_row_bytes = forward_measuring_saved_bytes(model, x[:1])
    before = choose_samples_per_pass(1, x, one_row_bytes, 1, M,
                                     row_scale=max(1.0, fp32_bytes / one_row_bytes))
    after_bytes = _reduced_precision_row_bytes(model, x, torch.bfloat16, None)
    after = choose_samples_per_pass(1, x, after_bytes, 1, M,
                                    row_scale=fp32_bytes / after_bytes)
    call = functools.partial(sk.smooth_grad, model, x, target, n_samples=M,
                             compute_dtype=torch.bfloat16)
    variants = {"engine": call, f"engine, one-row probe ({before}/pass)":
                functools.partial(call, samples_per_pass=before)}
    variants |= {f"limit@{k}": functools.partial(bf16_passes, prepared, x, target, k)
                 for k in limit_candidates(M, batch)}
    times = interleaved_medians(variants, repeats)
    limit, best = min((t, k) for k, t in times.items() if k.startswith("limit@"))
    print(f"{name} B={batch}: bytes/row fp32 {fp32_bytes / 2**20:.2f} MiB, bf16 "
          f"{after_bytes / 2**20:.2f} MiB (one-row probe {one_row_bytes / 2**20:.2f}); "
          f"samples/pass one-row probe {before}, now {after}; best {best}")
    for k, t in times.items():
        if not k.startswith("limit@"):
            print(f"  {k}: {t * 1e3:.1f} ms, {limit / t:.2f} of the bf16 limit "
                  f"({limit * 1e3:.1f} ms)")
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--models", default="small_resnet,cifar_resnet18")
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    print(machine())
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            row(name, batch, args.repeats)


if __name__ == "__main__":
    main()
