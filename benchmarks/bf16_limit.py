"""Reduced precision against its own limit: ``smooth_grad(compute_dtype=torch.bfloat16)`` next
to plain bf16 passes of the prepared model (BatchNorm folded, channels_last) at their best pass
size, interleaved; and the engine with the pass size planned from float32 bytes (as before the
planner measured bf16 rows) for comparison.

    python -m benchmarks.bf16_limit [--repeats 15]
"""

from __future__ import annotations

import argparse
import functools

import torch

import smoothkern as sk
from smoothkern.core.plan import _reduced_precision_row_bytes
from smoothkern.core.planning import choose_samples_per_pass
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
    before = choose_samples_per_pass(1, x, fp32_bytes, 1, M)
    after_bytes = _reduced_precision_row_bytes(model, x, torch.bfloat16, None)
    after = choose_samples_per_pass(1, x, after_bytes, 1, M,
                                    row_scale=fp32_bytes / after_bytes)
    call = functools.partial(sk.smooth_grad, model, x, target, n_samples=M,
                             compute_dtype=torch.bfloat16)
    variants = {"engine": call, f"engine, fp32-planned ({before}/pass)":
                functools.partial(call, samples_per_pass=before)}
    variants |= {f"limit@{k}": functools.partial(bf16_passes, prepared, x, target, k)
                 for k in limit_candidates(M, batch)}
    times = interleaved_medians(variants, repeats)
    limit, best = min((t, k) for k, t in times.items() if k.startswith("limit@"))
    print(f"{name} B={batch}: bytes/row fp32 {fp32_bytes / 2**20:.2f} MiB, bf16 "
          f"{after_bytes / 2**20:.2f} MiB; samples/pass fp32-planned {before}, bf16-planned "
          f"{after}; best {best}")
    for k, t in times.items():
        if not k.startswith("limit@"):
            print(f"  {k}: {t * 1e3:.1f} ms, {limit / t:.2f} of the bf16 limit "
                  f"({limit * 1e3:.1f} ms)")
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(machine())
    for batch in (1, 8):
        row("small_resnet", batch, args.repeats)


if __name__ == "__main__":
    main()
