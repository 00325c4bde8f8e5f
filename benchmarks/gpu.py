"""The GPU check and timing script: every GPU backend against the reference, op bandwidth, and
end-to-end speedup over the loop.

    python -m benchmarks.gpu            # needs a CUDA GPU; says so and exits 1 without one

1. Correctness: the cuda and triton backends' perturb (raw Philox words and floats) and
   accumulate against the pure-torch reference, for fp32/fp16/bf16, aligned and odd sizes.
2. Ops: achieved GB/s of perturb and accumulate (bytes each must move / time) next to a
   device-to-device copy timed in the same run; target >= 80 % of the copy.
3. End to end: CIFAR ResNet18, B = 1, m = 50, all five aggregates: speedup of each GPU backend
   over backend="loop" (target >= 30x) and efficiency (plain batched passes over the same
   inputs / time).
"""

from __future__ import annotations

import argparse
import functools
import statistics

import torch

import smoothkern as sk
from smoothkern import noise
from smoothkern.backends import registry
from smoothkern.stats import AGGREGATES, StreamingStats, accumulate_reference

from .common import limit_candidates, machine, make_model, plain_passes

GPU_BACKENDS = ("cuda", "triton")
BANDWIDTH_TARGET = 0.8
SPEEDUP_TARGET = 30.0


def cuda_time(fn, repeats: int = 20) -> float:
    """Median seconds of ``fn`` on the GPU (CUDA events, after two warm-up calls)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def check_backend(name: str) -> list[str]:
    """Failures of one backend against the reference (empty when it agrees)."""
    backend = registry.resolve(name, "cuda")
    failures = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for shape in ((3, 3, 17, 19), (2, 3, 32, 32)):             # odd (scalar) and aligned
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x = torch.rand(*shape, device="cuda", generator=gen).to(dtype)
            sigma = torch.rand(2, shape[0], device="cuda", generator=gen)
            for kind in ("gaussian", "uniform"):
                got = backend.perturb(x, sigma, 2**63 + 5, 7, 9, kind)
                want = noise.perturb_reference(x, sigma, 2**63 + 5, 7, 9, kind)
                err = (got.double() - want.double()).abs().max().item()
                tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
                if got.shape != want.shape or err > tol:
                    failures.append(f"{name} perturb {shape} {dtype} {kind}: max err {err:.2e}")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for n in (3072, 1031):                                  # vector and scalar paths
            samples = torch.randn(300, n, device="cuda", generator=gen).to(dtype)
            got = StreamingStats.empty(n, device="cuda")
            ref = StreamingStats.empty(n, device="cuda")
            for lo, hi in ((0, 100), (100, 101), (101, 300)):
                backend.accumulate(got, samples[lo:hi])
                accumulate_reference(ref, samples[lo:hi])
            for field in ("mean", "m2", "abs_sum", "log_sum"):
                a, b = getattr(got, field), getattr(ref, field)
                if got.count != ref.count or not torch.allclose(a, b, rtol=1e-4, atol=1e-3):
                    failures.append(f"{name} accumulate n={n} {dtype} {field}: max err "
                                    f"{(a - b).abs().max().item():.2e}")
    idx = torch.randint(0, 2**32, (3, 4096), device="cuda")
    zero = torch.zeros((), dtype=torch.int64, device="cuda")
    want_bits = torch.stack(noise.philox4x32(idx[2], idx[1], idx[0], zero, 2**64 - 9), dim=-1)
    if name == "cuda":
        from smoothkern import ops

        bits = ops.philox_bits(2**64 - 9, idx[0], idx[1], idx[2])
    else:
        from smoothkern.kernels.perturb import philox_bits

        bits = philox_bits(2**64 - 9, idx[0], idx[1], idx[2])
    if not torch.equal(bits, want_bits):
        failures.append(f"{name} raw Philox words differ from the reference")
    return failures


def op_rows(names: list[str]) -> list[str]:
    """Markdown rows: op, shape, backend, time, GB/s, fraction of the copy's GB/s."""
    rows = []
    for batch, hw in ((1, 32), (8, 32), (1, 224), (8, 224)):
        n = 3 * hw * hw
        x = torch.rand(batch, 3, hw, hw, device="cuda")
        sigma = torch.full((1, batch), 0.15, device="cuda")
        chunk = torch.randn(50, batch * n, device="cuda")
        perturb_bytes = (batch * n + 50 * batch * n) * 4        # read x, write m copies
        acc_bytes = chunk.numel() * 4 + 2 * 4 * batch * n * 4    # read chunk, r/w 4 states
        src = torch.empty(perturb_bytes // 8, device="cuda")
        dst = torch.empty_like(src)
        copy_bw = 2 * src.numel() * 4 / cuda_time(lambda s=src, d=dst: d.copy_(s))
        for name in names:
            backend = registry.resolve(name, "cuda")
            t = cuda_time(lambda b=backend, x=x, sg=sigma: b.perturb(x, sg, 1, 0, 50, "gaussian"))
            rows.append(f"| perturb | B={batch} 3x{hw}x{hw} | {name} | {t * 1e6:.0f} | "
                        f"{perturb_bytes / t / 1e9:.0f} | {perturb_bytes / t / copy_bw:.0%} |")
            state = StreamingStats.empty(batch * n, device="cuda")
            t = cuda_time(lambda b=backend, s=state, c=chunk: b.accumulate(s, c))
            rows.append(f"| accumulate | B={batch} 3x{hw}x{hw} | {name} | {t * 1e6:.0f} | "
                        f"{acc_bytes / t / 1e9:.0f} | {acc_bytes / t / copy_bw:.0%} |")
        rows.append(f"| copy | {perturb_bytes / 1e6:.0f} MB | torch | - | {copy_bw / 1e9:.0f} | "
                    "100% |")
    return rows


def end_to_end_rows(names: list[str], repeats: int) -> list[str]:
    model, shape = make_model("cifar_resnet18")
    model = model.cuda()
    x = torch.rand(1, *shape, device="cuda")
    target = model(x).argmax(1).detach()
    run = functools.partial(sk.smooth_grad, model, x, target, n_samples=50, aggregate=AGGREGATES)
    times = {"loop": cuda_time(functools.partial(run, backend="loop"), repeats)}
    for name in names + ["torch"]:
        times[name] = cuda_time(functools.partial(run, backend=name), repeats)
    limit = min(cuda_time(functools.partial(plain_passes, model, x, target, 50, k), repeats)
                for k in limit_candidates(50, 1))
    return [f"| {name} | {t * 1e3:.1f} | {times['loop'] / t:.1f}x | {limit / t:.2f} |"
            for name, t in times.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="end-to-end repeats (median)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA GPU is visible (torch.cuda.is_available() is False): "
              "nothing was checked or timed. Run it on a machine with a GPU.")
        return 1
    print(f"machine: {machine()}")
    status = registry.status("cuda")
    names = [n for n in GPU_BACKENDS if status[n] == "available"]
    for n in GPU_BACKENDS:
        print(f"backend {n}: {status[n]}")
    if not names:
        print("no GPU backend is available: build the CUDA op or install triton")
        return 1
    failures = [f for name in names for f in check_backend(name)]
    print("\n## correctness\n" + ("\n".join(failures) if failures else
                                  f"all GPU backends ({', '.join(names)}) match the reference"))
    print(f"\n## ops (m = 50, fp32; target >= {BANDWIDTH_TARGET:.0%} of copy)\n")
    print("| op | shape | backend | time (us) | GB/s | of copy |\n|---|---|---|---|---|---|")
    print("\n".join(op_rows(names)))
    print(f"\n## end to end: CIFAR ResNet18, B = 1, m = 50, five aggregates "
          f"(target >= {SPEEDUP_TARGET:.0f}x)\n")
    print("| backend | time (ms) | speedup vs loop | efficiency |\n|---|---|---|---|")
    print("\n".join(end_to_end_rows(names, args.repeats)))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
