"""Sensitivity of SmoothGrad: smoothkern's fused metric vs Captum's and Quantus's.

    python -m benchmarks.metrics_robustness              # the issue's setting, 5 repeats
    python -m benchmarks.metrics_robustness --repeats 3 --json out.json

The setting: the bundled digits CNN, B = 8 held-out digits, SmoothGrad of the saliency
(|gradient|, Captum's ``NoiseTunnel(Saliency)``) with m = 50 samples and σ = 0.15 (the digits
lie in [0, 1]), 10 perturbations per example in the L∞ ball of radius 0.02, the Frobenius norm.

Variants, all interleaved in one process (order rotated every repeat, one warm-up call each;
medians, so ratios inside one run hold on a shared machine):

- ``captum``: ``captum.metrics.sensitivity_max`` of ``captum.attr.NoiseTunnel(Saliency)``,
  default ``max_examples_per_batch`` (all perturbations in one call of 80 · 50 rows);
- ``captum, 8 rows/call``: the same with ``max_examples_per_batch=8`` (one perturbation per
  explanation call, 400 noisy rows each);
- ``quantus``: Quantus's ``MaxSensitivity`` (10 samples, uniform noise of bound 0.02, the
  difference's Frobenius norm over the explanation's) with the same Captum explainer as
  ``explain_func``, the clean explanation computed by Quantus too;
- ``smoothkern fused``: ``smoothkern.metrics.sensitivity_max`` of
  ``partial(smooth_grad, model, method="saliency", n_samples=50, stdevs=0.15)``: one job;
- ``smoothkern drop-in``: ``smoothkern.captum.metrics.sensitivity_max`` of
  ``smoothkern.captum.NoiseTunnel(Saliency).attribute`` (fused the same way);
- ``smoothkern unfused``: the same smooth_grad behind a plain function, which the metric cannot
  recognise: Captum's two explanation calls (clean, then all perturbations), each on the engine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import warnings

import torch

from .common import interleaved_medians, machine

N_SAMPLES = 50
N_PERTURB = 10
SIGMA = 0.15
RADIUS = 0.02
BATCH = 8


def build():
    """The digits CNN and B held-out digits (one per class, the first B)."""
    from smoothkern.data import digit_examples
    from smoothkern.models import digits_cnn

    model = digits_cnn().eval()
    x, y = digit_examples()
    return model, x[:BATCH].contiguous(), y[:BATCH].contiguous()


def variants(model, x, y, with_quantus: bool = True) -> dict:
    import captum.attr as captum_attr
    import captum.metrics as captum_metrics

    import smoothkern as sk
    import smoothkern.captum as skc
    from smoothkern.captum.metrics import sensitivity_max as dropin_sensitivity_max
    from smoothkern.metrics.robustness import sensitivity_max

    captum_nt = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
    dropin_nt = skc.NoiseTunnel(skc.Saliency(model))
    smooth = functools.partial(sk.smooth_grad, model, method="saliency", n_samples=N_SAMPLES,
                               stdevs=SIGMA)
    nt_kwargs = dict(nt_type="smoothgrad", nt_samples=N_SAMPLES, stdevs=SIGMA)
    common = dict(perturb_radius=RADIUS, n_perturb_samples=N_PERTURB)

    def plain(inputs, **kwargs):          # not recognisable: runs unfused
        return smooth(inputs[0] if isinstance(inputs, tuple) else inputs, **kwargs)

    runs = {
        "captum": lambda: captum_metrics.sensitivity_max(captum_nt.attribute, x, target=y,
                                                         **common, **nt_kwargs),
        "captum, 8 rows/call": lambda: captum_metrics.sensitivity_max(
            captum_nt.attribute, x, target=y, max_examples_per_batch=BATCH, **common,
            **nt_kwargs),
        "smoothkern fused": lambda: sensitivity_max(smooth, x, target=y, **common),
        "smoothkern drop-in": lambda: dropin_sensitivity_max(dropin_nt.attribute, x, target=y,
                                                             **common, **nt_kwargs),
        "smoothkern unfused": lambda: sensitivity_max(plain, x, target=y, **common),
    }
    if with_quantus:
        runs["quantus"] = quantus_run(model, x, y, captum_nt)
    return runs


def quantus_run(model, x, y, captum_nt):
    """Quantus's MaxSensitivity with the Captum explainer (numpy in, numpy out)."""
    import quantus

    def explain(model, inputs, targets, **kwargs):
        rows = torch.as_tensor(inputs, dtype=torch.float32)
        return captum_nt.attribute(rows, target=torch.as_tensor(targets), nt_type="smoothgrad",
                                   nt_samples=N_SAMPLES, stdevs=SIGMA).detach().numpy()

    metric = quantus.MaxSensitivity(
        nr_samples=N_PERTURB, lower_bound=RADIUS,   # default perturb_func: batch_uniform_noise
        similarity_func=quantus.similarity_func.difference,
        norm_numerator=quantus.norm_func.fro_norm, norm_denominator=quantus.norm_func.fro_norm,
        abs=False, normalise=False, disable_warnings=True, display_progressbar=False,
        return_nan_when_prediction_changes=False)
    x_np, y_np = x.numpy(), y.numpy()
    return lambda: metric(model=model, x_batch=x_np, y_batch=y_np, a_batch=None,
                          explain_func=explain, device="cpu", batch_size=BATCH)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-quantus", action="store_true", help="leave Quantus out")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); on a shared machine one "
                             "thread keeps other jobs' load from stalling every operation")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, x, y = build()
    load_before = _load_average()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # Captum's "did not require gradients" notes
        medians = interleaved_medians(variants(model, x, y, not args.no_quantus), args.repeats)
    print(f"# {machine()}")
    print(f"# digits CNN, B = {BATCH}, SmoothGrad (saliency) m = {N_SAMPLES}, σ = {SIGMA}, "
          f"{N_PERTURB} perturbations, radius {RADIUS}; medians of {args.repeats}")
    captum_time = medians["captum"]
    print(f"{'variant':<22} {'time':>8} {'vs captum':>10}")
    for name, seconds in medians.items():
        print(f"{name:<22} {seconds:8.3f} {captum_time / seconds:9.2f}x")
    result = {"machine": machine(), "repeats": args.repeats, "seconds": medians,
              "load_average": _load_average()}
    print(f"# load average before / after: {load_before} / {result['load_average']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def _load_average() -> str:
    """The 1-minute load average (other jobs on the machine), where the OS reports it."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
