"""Quantus's robustness metrics with smoothkern's explain_func against a Captum-based one.

    python -m benchmarks.quantus_explain                    # timing medians of 5, scores of 8
    python -m benchmarks.quantus_explain --repeats 3 --score-repeats 4 --threads 1

The setting: the bundled digits CNN, B = 8 held-out digits, SmoothGrad of the signed gradient
with m = 50 samples and Gaussian noise of absolute σ = 0.15 (the digits lie in [0, 1]);
Quantus's ``MaxSensitivity`` and ``AvgSensitivity`` with 10 perturbations each (uniform noise
of bound 0.02, the difference's Frobenius norm over the explanation's, no abs, no normalise).
Quantus calls the explain_func once for the clean batch and once per perturbation.

- ``captum``: the explain_func a PyTorch user writes today:
  ``captum.attr.NoiseTunnel(Saliency(model)).attribute(..., nt_type="smoothgrad",
  nt_samples=50, stdevs=0.15, abs=False)``, summed over channels as ``quantus.explain`` does;
- ``smoothkern``: ``smoothkern.quantus.explain`` with ``method="SmoothGrad", num_samples=50,
  noise=0.15`` (fresh noise per call, as Captum draws it).

Timing: both interleaved in one process (order rotated every repeat, one warm-up each; medians,
so the ratio holds on a shared machine). Scores: each metric ``--score-repeats`` times per
explain_func with the same input perturbations per repeat (NumPy seeded alike) and fresh
SmoothGrad noise; the mean score over the digits, its mean over repeats and the standard error;
the difference between the two explain_funcs is given in standard errors of the difference.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings

import numpy as np
import torch

from .common import interleaved_medians, machine

N_SAMPLES = 50
SIGMA = 0.15
N_PERTURB = 10
RADIUS = 0.02
BATCH = 8
METRICS = ("MaxSensitivity", "AvgSensitivity")


def build():
    """The digits CNN and B held-out digits (numpy, as Quantus takes them)."""
    from smoothkern.data import digit_examples
    from smoothkern.models import digits_cnn

    model = digits_cnn().eval()
    x, y = digit_examples()
    return model, x[:BATCH].numpy(), y[:BATCH].numpy()


def explain_funcs(model) -> dict:
    """name → (explain_func, explain_func_kwargs)."""
    from captum.attr import NoiseTunnel, Saliency

    from smoothkern.quantus import explain

    tunnel = NoiseTunnel(Saliency(model))

    def captum_explain(model, inputs, targets, **kwargs):
        rows = torch.as_tensor(inputs, dtype=torch.float32).to(kwargs.get("device", "cpu"))
        maps = tunnel.attribute(rows, target=torch.as_tensor(targets), nt_type="smoothgrad",
                                nt_samples=N_SAMPLES, stdevs=SIGMA, abs=False)
        return maps.sum(1, keepdim=True).detach().cpu().numpy()

    return {"captum": (captum_explain, {}),
            "smoothkern": (explain, {"method": "SmoothGrad", "num_samples": N_SAMPLES,
                                     "noise": SIGMA})}


def metric(name: str):
    import quantus

    return getattr(quantus, name)(
        nr_samples=N_PERTURB, lower_bound=RADIUS,
        similarity_func=quantus.similarity_func.difference,
        norm_numerator=quantus.norm_func.fro_norm, norm_denominator=quantus.norm_func.fro_norm,
        abs=False, normalise=False, disable_warnings=True, display_progressbar=False,
        return_nan_when_prediction_changes=False)


def evaluate(name: str, model, x, y, func, kwargs) -> float:
    """The metric's mean score over the digits."""
    scores = metric(name)(model=model, x_batch=x, y_batch=y, a_batch=None, explain_func=func,
                          explain_func_kwargs=dict(kwargs), device="cpu", batch_size=BATCH)
    return float(np.mean(scores))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (medians)")
    parser.add_argument("--score-repeats", type=int, default=8,
                        help="metric runs per explain_func for the scores")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, x, y = build()
    funcs = explain_funcs(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = {f"{m} {f}": (lambda m=m, f=f: evaluate(m, model, x, y, *funcs[f]))
                for m in METRICS for f in funcs}
        medians = interleaved_medians(runs, args.repeats)
        scores: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.score_repeats):
            for name in runs:
                np.random.seed(1000 + r)            # the same input perturbations per repeat
                torch.manual_seed(2000 + r + (0 if name.endswith("captum") else 10_000))
                scores[name].append(runs[name]())
    print(f"# {machine()}")
    print(f"# digits CNN, B = {BATCH}, SmoothGrad m = {N_SAMPLES}, σ = {SIGMA} (absolute), "
          f"{N_PERTURB} perturbations of bound {RADIUS}; time: medians of {args.repeats}; "
          f"scores: {args.score_repeats} runs")
    print(f"{'metric':<16} {'captum s':>9} {'ours s':>8} {'speed-up':>9} {'captum score':>18} "
          f"{'ours score':>18} {'diff/SE':>8}")
    result = {"machine": machine(), "repeats": args.repeats,
              "score_repeats": args.score_repeats, "rows": {}}
    for m in METRICS:
        a, b = scores[f"{m} captum"], scores[f"{m} smoothkern"]
        ma, mb = float(np.mean(a)), float(np.mean(b))
        sa, sb = (float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
                  for v in (a, b))
        z = (mb - ma) / math.hypot(sa, sb) if math.hypot(sa, sb) > 0 else float("nan")
        ta, tb = medians[f"{m} captum"], medians[f"{m} smoothkern"]
        print(f"{m:<16} {ta:9.3f} {tb:8.3f} {ta / tb:8.2f}x {ma:10.4f} ± {sa:.4f} "
              f"{mb:10.4f} ± {sb:.4f} {z:8.2f}")
        result["rows"][m] = {"seconds": {"captum": ta, "smoothkern": tb},
                             "scores": {"captum": a, "smoothkern": b}, "diff_over_se": z}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
