"""The Captum drop-in against ``smooth_grad`` on the same job: VarGrad of the CIFAR ResNet18,
m = 50, interleaved in one process with Captum's ``NoiseTunnel`` (``nt_samples_batch_size=10``).

    python -m benchmarks.dropin_speed [--repeats 9] [--batches 1,8]

The drop-in's own noise (``rng="smoothkern"``, its default) runs the engine of ``smooth_grad``;
what it adds is Captum's argument handling and output formatting. Ratios are Captum's time over
each variant's, so 1.0 is Captum's speed and the drop-in should sit where ``smooth_grad`` sits.
"""

from __future__ import annotations

import argparse
import warnings

import torch

import smoothkern as sk
import smoothkern.captum as skc

from .captum_compare import CHUNK, N_SAMPLES, SIGMA, build
from .common import interleaved_medians, machine


def variants(batch: int) -> dict:
    """No-argument calls of each variant on one model and input (each checks its output)."""
    import captum.attr as ca

    warnings.simplefilter("ignore")
    model, x, target = build("resnet18", batch)
    drop_in = skc.NoiseTunnel(skc.Saliency(model))
    captum = ca.NoiseTunnel(ca.Saliency(model))

    def check(out):
        assert out.shape == x.shape

    return {
        "smooth_grad": lambda: check(sk.smooth_grad(model, x, target, n_samples=N_SAMPLES,
                                                    stdevs=SIGMA, aggregate="var")),
        "drop-in": lambda: check(drop_in.attribute(x, nt_type="vargrad", nt_samples=N_SAMPLES,
                                                   stdevs=SIGMA, target=target)),
        f"drop-in, nt_samples_batch_size={CHUNK}": lambda: check(drop_in.attribute(
            x, nt_type="vargrad", nt_samples=N_SAMPLES, nt_samples_batch_size=CHUNK,
            stdevs=SIGMA, target=target)),
        f"Captum, nt_samples_batch_size={CHUNK}": lambda: check(captum.attribute(
            x, nt_type="vargrad", nt_samples=N_SAMPLES, nt_samples_batch_size=CHUNK,
            stdevs=SIGMA, target=target)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    print(machine())
    print("| B | variant | median s | Captum bs=10 / variant |")
    print("|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        times = interleaved_medians(variants(batch), args.repeats)
        captum = times[f"Captum, nt_samples_batch_size={CHUNK}"]
        for name, t in times.items():
            print(f"| {batch} | {name} | {t:.3f} | {captum / t:.2f} |", flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
