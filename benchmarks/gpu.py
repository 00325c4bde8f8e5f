"""The GPU check and timing script: every GPU backend against the reference, op bandwidth, and
end-to-end speedup over the loop.

    python -m benchmarks.gpu            # needs a CUDA GPU; says so and exits 1 without one

1. Correctness: the cuda and triton backends' perturb (raw Philox words and floats, σ per
   example and per element, with and without example indices) and accumulate (float32 and
   float64 states) against the pure-torch reference, for fp32/fp16/bf16 (relative
   tolerances), aligned, odd and misaligned (a view one element into its storage) sizes, and
   on cuda:1 while cuda:0 is current when there are two GPUs. Nothing is timed after a
   correctness failure.
2. Ops: achieved GB/s of perturb and accumulate (bytes each must move / time, the CUDA
   accumulate's partial results included) next to a device-to-device copy timed in the same
   run; target >= 80 % of the copy.
3. End to end: CIFAR ResNet18, B = 1, m = 50, all six aggregates: speedup of each GPU backend
   over backend="loop" (target >= 30x) and efficiency (plain batched passes over the same
   inputs / time); bf16/fp16 autocast and CUDA graphs on the same row.
4. CUDA graphs on the small models (small residual CNN, MNIST CNN), eager vs replayed.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics

import torch

import smoothkern as sk
from smoothkern.core.stats import AGGREGATES, StreamingStats
from smoothkern.noise import philox4x32
from smoothkern.ops import backends as registry
from smoothkern.ops.accumulate import accumulate_reference
from smoothkern.ops.perturb import perturb_reference

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


# Relative tolerance per dtype: computed in float32, then cast (one ulp of the output dtype).
RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def misaligned(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` that starts one element into its storage (no 16-byte alignment)."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    out = buf[1:].view(t.shape)
    out.copy_(t)
    return out


def check_perturb(name: str, backend, device: str, gen: torch.Generator) -> list[str]:
    failures = []
    for shape in ((3, 3, 17, 19), (2, 3, 32, 32)):             # odd (scalar) and aligned
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            clean = torch.rand(*shape, device=device, generator=gen).to(dtype)
            n = clean[0].numel()
            for x in (clean, misaligned(clean)):
                for sigma in (torch.rand(2, shape[0], device=device, generator=gen),
                              torch.rand(2, shape[0], n, device=device, generator=gen)):
                    # example indices: none (positions), and the top of the counter word
                    index = torch.tensor([2**32 - 1, 3, 2**31][:shape[0]], device=device)
                    for kind, idx in itertools.product(("gaussian", "uniform"), (None, index)):
                        got = backend.perturb(x, sigma, 2**63 + 5, 7, 9, kind, example_index=idx)
                        want = perturb_reference(x, sigma, 2**63 + 5, 7, 9, kind,
                                                       example_index=idx)
                        err = ((got.double() - want.double()).abs()
                               / want.double().abs().clamp_min(1.0)).max().item()
                        if got.shape != want.shape or got.device != x.device or err > RTOL[dtype]:
                            failures.append(f"{name} perturb {device} {shape} {dtype} "
                                            f"sigma{list(sigma.shape)} {kind} aligned="
                                            f"{x.data_ptr() % 16 == 0} example_index="
                                            f"{idx is not None}: rel err {err:.2e}")
    return failures


def check_accumulate(name: str, backend, device: str, gen: torch.Generator) -> list[str]:
    failures = []
    for acc in (torch.float32, torch.float64):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for n in (3072, 1031):                              # vector and scalar paths
                samples = torch.randn(300, n, device=device, generator=gen).to(dtype)
                for chunked in (samples, misaligned(samples)):
                    got = StreamingStats.empty(n, device=device, dtype=acc)
                    ref = StreamingStats.empty(n, device=device, dtype=acc)
                    for lo, hi in ((0, 100), (100, 101), (101, 300)):
                        backend.accumulate(got, chunked[lo:hi])
                        accumulate_reference(ref, chunked[lo:hi])
                    # float64 states must be float64-accurate (the Triton weights once were not)
                    rtol, atol = (1e-4, 1e-3) if acc == torch.float32 else (1e-10, 1e-9)
                    for field in ("mean", "m2", "abs_sum", "log_sum"):
                        a, b = getattr(got, field), getattr(ref, field)
                        if got.count != ref.count or not torch.allclose(a, b, rtol=rtol,
                                                                        atol=atol):
                            failures.append(f"{name} accumulate {device} {acc} n={n} {dtype} "
                                            f"{field}: max err {(a - b).abs().max().item():.2e}")
    return failures


def check_backend(name: str) -> list[str]:
    """Failures of one backend against the reference (empty when it agrees)."""
    backend = registry.resolve(name, "cuda")
    devices = ["cuda:0"] + (["cuda:1"] if torch.cuda.device_count() > 1 else [])
    failures = []
    for device in devices:
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.cuda.device(0):  # cuda:1's tensors must still launch on cuda:1
            failures += check_perturb(name, backend, device, gen)
            failures += check_accumulate(name, backend, device, gen)
    idx = torch.randint(0, 2**32, (3, 4096), device="cuda")
    zero = torch.zeros((), dtype=torch.int64, device="cuda")
    want_bits = torch.stack(philox4x32(idx[2], idx[1], idx[0], zero, 2**64 - 9), dim=-1)
    if name == "cuda":
        from smoothkern.ops.perturb import philox_bits

        bits = philox_bits(2**64 - 9, idx[0], idx[1], idx[2])
    else:
        from smoothkern.ops.triton.perturb import philox_bits

        bits = philox_bits(2**64 - 9, idx[0], idx[1], idx[2])
    if not torch.equal(bits, want_bits):
        failures.append(f"{name} raw Philox words differ from the reference")
    return failures


def cuda_partial_bytes(k: int, n: int, itemsize: int = 4) -> int:
    """Bytes the CUDA accumulate's row slices write and read back (csrc/cuda/grid.h's rule)."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    threads_x = -(-n // (16 // itemsize))
    want = sms * 2048
    if threads_x >= want:
        return 0
    slices = max(1, min(-(-want // threads_x), 65535, max(1, k // 8)))
    rows = -(-k // slices)
    used = -(-k // rows)
    return 0 if used == 1 else 2 * used * 4 * n * 4


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
            moved = acc_bytes + (cuda_partial_bytes(50, batch * n) if name == "cuda" else 0)
            rows.append(f"| accumulate | B={batch} 3x{hw}x{hw} | {name} | {t * 1e6:.0f} | "
                        f"{moved / t / 1e9:.0f} | {moved / t / copy_bw:.0%} |")
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
    # the issue-10 features on the GPU: no preparation, bf16/fp16 autocast (default backend)
    times["auto, prepare=False"] = cuda_time(functools.partial(run, prepare=False), repeats)
    for dtype in (torch.bfloat16, torch.float16):
        times[f"auto, {dtype}".replace("torch.", "")] = cuda_time(
            functools.partial(run, compute_dtype=dtype), repeats)
    times["auto, cuda_graphs"] = cuda_time(functools.partial(run, cuda_graphs=True), repeats)
    limit = min(cuda_time(functools.partial(plain_passes, model, x, target, 50, k), repeats)
                for k in limit_candidates(50, 1))
    return [f"| {name} | {t * 1e3:.1f} | {times['loop'] / t:.1f}x | {limit / t:.2f} |"
            for name, t in times.items()]


def small_model_graph_rows(repeats: int) -> list[str]:
    """CUDA graphs where kernel launches bound the passes: the small models, B = 1, m = 50."""
    lines = []
    for name in ("small_resnet", "mnist_cnn"):
        model, shape = make_model(name)
        model = model.cuda()
        x = torch.rand(1, *shape, device="cuda")
        run = functools.partial(sk.smooth_grad, model, x, n_samples=50, aggregate=AGGREGATES)
        eager = cuda_time(run, repeats)
        graphed = cuda_time(functools.partial(run, cuda_graphs=True), repeats)
        lines.append(f"| {name} | {eager * 1e3:.2f} | {graphed * 1e3:.2f} | "
                     f"{eager / graphed:.2f}x |")
    return lines


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
    if failures:
        print("\nnot timed: a backend that computes the wrong thing has no speed to report")
        return 1
    print(f"\n## ops (m = 50, fp32; target >= {BANDWIDTH_TARGET:.0%} of copy)\n")
    print("| op | shape | backend | time (us) | GB/s | of copy |\n|---|---|---|---|---|---|")
    print("\n".join(op_rows(names)))
    print(f"\n## end to end: CIFAR ResNet18, B = 1, m = 50, six aggregates "
          f"(target >= {SPEEDUP_TARGET:.0f}x)\n")
    print("| backend | time (ms) | speedup vs loop | efficiency |\n|---|---|---|---|")
    print("\n".join(end_to_end_rows(names, args.repeats)))
    print("\n## CUDA graphs on small models, B = 1, m = 50, six aggregates\n")
    print("| model | eager (ms) | cuda_graphs (ms) | speedup |\n|---|---|---|---|")
    print("\n".join(small_model_graph_rows(args.repeats)))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
