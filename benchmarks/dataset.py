"""Images/s of `smoothkern attribute` on the bundled digits: one process against torchrun ranks.

    python -m benchmarks.dataset [--examples 256] [--samples 50] [--setups 1 1x1 2] [--repeats 3]

Each run is a fresh store written by the command in its own process: "1" one process with
torch's default threads, "1x1" one process with OMP_NUM_THREADS=1, "P" ``torchrun --standalone
--nproc_per_node=P`` (torchrun gives each rank OMP_NUM_THREADS=1). The rate is the one the
command reports (examples over the job's wall time, start-up and imports excluded). Setups
alternate run by run and the medians are compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RATE = re.compile(r"([0-9.]+) images/s")


def run_once(setup: str, examples: int, samples: int, out: Path) -> float:
    job = ["attribute", "--model", "digits", "--data", "digits", "--limit", str(examples),
           "--n-samples", str(samples), "--out", str(out), "--overwrite", "--quiet",
           "--no-statistics"]
    env = dict(os.environ)
    if setup in ("1", "1x1"):
        command = [sys.executable, "-m", "smoothkern", *job]
        if setup == "1x1":
            env["OMP_NUM_THREADS"] = "1"
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={int(setup)}", "-m", "smoothkern", *job]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    match = RATE.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--setups", nargs="+", default=["1", "1x1", "2"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {s: [] for s in args.setups}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for setup in args.setups:  # interleaved: drifts in machine load hit every row
                rates[setup].append(run_once(setup, args.examples, args.samples,
                                             Path(folder) / "s"))
    base = statistics.median(rates[args.setups[0]])
    print(f"digits CNN, {args.examples} digits, m = {args.samples}, {platform.processor() or ''}"
          f" {os.cpu_count()} CPUs, medians of {args.repeats}")
    print("| setup | images/s | per process | vs first row | runs |")
    print("|---|---|---|---|---|")
    for setup, values in rates.items():
        median = statistics.median(values)
        processes = 1 if setup == "1x1" else int(setup)
        print(f"| {setup} | {median:.1f} | {median / processes:.1f} | {median / base:.2f}x | "
              f"{', '.join(f'{v:.1f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
