"""The data path's efficiency: images/s of `smoothkern attribute` on a folder of JPEGs against
`smooth_grad` calls on the same tensors held in memory.

    python -m benchmarks.dataset_folder [--images 32] [--model resnet18] [--samples 4]
                                        [--batch-size 8] [--workers 2] [--repeats 3]

A tree of JPEGs (class subfolders) is made from scikit-image's bundled photos (flipped and
cropped variants at their own sizes, 300 to 1411 pixels a side), and a torchvision architecture's
random weights are saved to a file (the speed does not depend on them). Each repeat runs, in
this process and in alternating order:

- the command, `smoothkern attribute --model M --weights FILE --data DIR --target label`, on a
  fresh store: its reported rate (examples over the whole `attribute_dataset` call: planning,
  decoding in DataLoader workers, passes, writing, per-class statistics) and the command's
  wall time (plus loading the model and listing the folder);
- the in-memory reference: the same images, decoded beforehand, through `smooth_grad` in
  batches of the same size with the same targets and `example_index` (the same maps).

The ratio of the medians is the data path's efficiency. A third run without the statistics
separates their cost. On a shared machine the wall-clock rates follow the share of the cores
each run got; the CPU seconds per image (this process and its DataLoader workers) are printed
beside them and their ratio is the efficiency in work.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine

RATE = re.compile(r"([0-9.]+) images/s")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
          "hubble_deep_field", "cat", "retina")


def make_tree(root: Path, count: int, classes: int = 4) -> Path:
    """``count`` JPEGs in ``classes`` subfolders: the photos, flipped and cropped variants."""
    import skimage.data
    from PIL import Image

    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = photos[i % len(photos)]
        variant = i // len(photos)
        if variant % 2:
            image = image[:, ::-1]
        if variant >= 2:  # a crop keeping at least 300 pixels a side
            h, w = image.shape[:2]
            image = image[h // 8:, w // 10:]
        Image.fromarray(np.ascontiguousarray(image)).save(
            root / f"class{i % classes}" / f"{i:04d}.jpg", quality=90)
    return root


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_command(args, data: Path, weights: Path, out: Path, statistics_on: bool
                ) -> tuple[float, float]:
    """(the command's reported images/s, CPU seconds per image of the whole command)."""
    from smoothkern import cli

    command = ["attribute", "--model", args.model, "--weights", str(weights), "--data",
               str(data), "--target", "label", "--n-samples", str(args.samples),
               "--batch-size", str(args.batch_size), "--workers", str(args.workers),
               "--out", str(out), "--overwrite", "--quiet"]
    if not statistics_on:
        command.append("--no-statistics")
    buffer = io.StringIO()
    cpu = cpu_seconds()
    with contextlib.redirect_stdout(buffer):
        status = cli.main(command)
    cpu = cpu_seconds() - cpu
    match = RATE.search(buffer.getvalue())
    if status != 0 or match is None:
        raise RuntimeError(f"smoothkern {' '.join(command)} failed: {buffer.getvalue()}")
    return float(match.group(1)), cpu / args.images


def run_in_memory(args, model, x: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(images/s, CPU seconds per image) of smooth_grad over the decoded tensors, batch by
    batch."""
    import smoothkern as sk

    start, cpu = time.perf_counter(), cpu_seconds()
    for first in range(0, len(x), args.batch_size):
        rows = slice(first, first + args.batch_size)
        index = list(range(len(x)))[rows]
        sk.smooth_grad(model, x[rows], labels[rows], n_samples=args.samples,
                       example_index=index)
    return len(x) / (time.perf_counter() - start), (cpu_seconds() - cpu) / len(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torchvision

    from smoothkern.dataset.named_data import default_resize, open_source
    from smoothkern.models import load_named_model

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        data = make_tree(root / "jpegs", args.images)
        weights = root / f"{args.model}.pth"
        torch.manual_seed(0)
        torch.save(torchvision.models.get_model(args.model).state_dict(), weights)
        model, spec = load_named_model(args.model, weights)
        source = open_source(str(data), spec, resize=default_resize(args.model, spec))
        x = torch.stack([source.dataset[i][0] for i in range(args.images)])
        labels = torch.tensor([source.dataset.items[i][1] for i in range(args.images)])
        names = ("in memory", "attribute", "attribute --no-statistics")
        rates: dict[str, list[float]] = {name: [] for name in names}
        work: dict[str, list[float]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            order = [0, 1, 2] if repeat % 2 == 0 else [2, 1, 0]
            for step in order:
                if step == 0:
                    rate, cpu = run_in_memory(args, model, x, labels)
                else:
                    rate, cpu = run_command(args, data, weights, root / "s", step == 1)
                rates[names[step]].append(rate)
                work[names[step]].append(cpu)
    base = statistics.median(rates["in memory"])
    base_work = statistics.median(work["in memory"])
    load = " ".join(f"{v:.1f}" for v in __import__("os").getloadavg())
    print(f"{args.model} at {spec.size}², {args.images} JPEGs, m = {args.samples}, batch "
          f"{args.batch_size}, {args.workers} workers; medians of {args.repeats}; load average "
          f"{load}")
    print(machine())
    print("| run | images/s | vs in memory | CPU s per image | in memory's CPU s / this | "
          "images/s runs |")
    print("|---|---|---|---|---|---|")
    for name in names:
        median, cpu = statistics.median(rates[name]), statistics.median(work[name])
        print(f"| {name} | {median:.3f} | {median / base:.3f} | {cpu:.2f} | "
              f"{base_work / cpu:.3f} | {', '.join(f'{v:.3f}' for v in rates[name])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
