"""The `smoothkern attribute` and `smoothkern show` subcommands (registered by
:mod:`smoothkern.cli`; heavy imports happen when a command runs)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from ..cli.args import fraction, method_option, positive

AGGREGATE_NAMES = ("mean", "abs", "sq", "var", "geomean", "sem", "count")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def register(sub: argparse._SubParsersAction) -> None:
    """Adds this package's subcommands to the `smoothkern` parser."""
    attribute = sub.add_parser(
        "attribute", help="maps of a whole data set into a resumable zarr store",
        description="Computes noise-averaged attribution maps of every example of a data set "
        "and writes them, with the targets, labels and per-class statistics, into a zarr "
        "store. Under torchrun (torchrun --nproc_per_node=N -m smoothkern attribute ...) the "
        "processes share the work. --resume continues a store left by a stopped run.")
    attribute.add_argument("--model", required=True, help="digits, mnist, cifar10_resnet18, or "
                           "a torchvision architecture (resnet18, ...)")
    attribute.add_argument("--weights", help="local state dict file (required except for "
                           "digits, whose weights are bundled)")
    attribute.add_argument("--random-weights", action="store_true", help="explain a randomly "
                           "initialised model on purpose (no --weights; e.g. for timing)")
    attribute.add_argument("--data", required=True, metavar="SOURCE", help="digits, photos, a "
                           "folder of images (subfolders as classes), mnist:DIR or cifar10:DIR "
                           "(test split; mnist-train:DIR, cifar10-train:DIR)")
    attribute.add_argument("--out", required=True, metavar="STORE", help="the store's folder")
    attribute.add_argument("--limit", type=positive, metavar="N", help="the first N examples")
    attribute.add_argument("--batch-size", type=positive, default=32, metavar="B",
                           help="examples per batch (default 32)")
    attribute.add_argument("--chunk-size", type=positive, metavar="C", help="examples per "
                           "store chunk and unit of work (default: 64, or B if larger; a store "
                           "keeps its own)")
    attribute.add_argument("--n-samples", type=positive, default=50, metavar="M",
                           help="noise samples per example (default 50)")
    attribute.add_argument("--noise-level", type=fraction, nargs="+", default=[0.15],
                           metavar="L", help="σ as a fraction of each image's range, or a "
                           "percentage (15%%); several: a sweep (default 0.15)")
    attribute.add_argument("--noise", default="gaussian", choices=("gaussian", "uniform"))
    attribute.add_argument("--aggregate", nargs="+", default=["mean"], choices=AGGREGATE_NAMES,
                           metavar="NAME", help="maps to store, one array each: "
                           + ", ".join(AGGREGATE_NAMES) + " (default mean)")
    attribute.add_argument("--method", default="gradient", help="base attribution method "
                           "(default gradient)")
    attribute.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                           type=method_option, help="a keyword option of the method, "
                           "repeatable (e.g. --option n_steps=20)")
    attribute.add_argument("--target", default="predicted", type=_target, help="predicted "
                           "(default), label, or a class index")
    attribute.add_argument("--seed", type=int, default=0)
    attribute.add_argument("--store-dtype", default="float32", choices=("float32", "float16"))
    attribute.add_argument("--compute-dtype", default="float32", choices=COMPUTE_DTYPES,
                           help="dtype of the model passes (bfloat16/float16: autocast)")
    attribute.add_argument("--backend", default="auto")
    attribute.add_argument("--device", help="cpu or cuda[:N] (default: cuda:LOCAL_RANK under "
                           "torchrun with GPUs, else cuda if available, else cpu)")
    attribute.add_argument("--workers", type=int, help="DataLoader workers reading (decoding) "
                           "the data (default: up to 4 for a folder of images, else 0)")
    attribute.add_argument("--resize", type=positive, metavar="R", help="resize image files' "
                           "shorter side to R before the centre crop (default: what the "
                           "torchvision weights expect, e.g. 256 for resnet18, 232 for "
                           "resnet50; the input size for other models)")
    attribute.add_argument("--no-statistics", action="store_true", help="skip the per-class "
                           "statistics")
    attribute.add_argument("--store-inputs", action="store_true", help="also store the images "
                           "(`show` then needs no data folder, and a changed folder does not "
                           "matter)")
    attribute.add_argument("--resume", action="store_true", help="continue an existing store "
                           "of the same job (its complete chunks are kept)")
    attribute.add_argument("--overwrite", action="store_true", help="replace an existing store")
    attribute.add_argument("--quiet", action="store_true", help="no progress bar")
    attribute.set_defaults(func=cmd_attribute)

    show = sub.add_parser("show", help="draw stored maps beside their images",
                          description="Draws examples of a store written by `smoothkern "
                          "attribute` (rows) with each stored map (columns) as a PNG.")
    show.add_argument("store", metavar="STORE")
    show.add_argument("--index", type=int, nargs="+", required=True, metavar="I",
                      help="example indices")
    show.add_argument("--out", required=True, metavar="FILE.png")
    show.add_argument("--aggregate", nargs="+", metavar="NAME", help="maps to draw (default: "
                      "all stored)")
    show.add_argument("--signed", action="store_true", help="diverging signed heatmaps")
    show.set_defaults(func=cmd_show)


def cmd_attribute(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from ..models import load_named_model
    from .distributed import init_distributed
    from .named_data import default_resize, open_source
    from .store import StoreRepaired

    _check_weights(args)
    device, created = init_distributed()
    try:
        if args.device and not created:
            device = _device(args.device)
        model, spec = load_named_model(args.model, args.weights)
        resize = args.resize or default_resize(args.model.replace("-", "_").lower(), spec)
        source = open_source(args.data, spec, args.limit, resize)
        workers = args.workers
        if workers is None:
            workers = min(4, os.cpu_count() or 1) if source.listing is not None else 0
        levels = args.noise_level[0] if len(args.noise_level) == 1 else tuple(args.noise_level)
        compute = None if args.compute_dtype == "float32" else getattr(torch, args.compute_dtype)
        target = None if args.target == "predicted" else args.target
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always", StoreRepaired)
            run = _attribute(args, model.to(device), source, spec, resize, workers, levels,
                             compute, target)
        for note in notes:  # a repaired store: one line each, before the result
            print(f"smoothkern attribute: note: {note.message}", file=sys.stderr)
        if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
            done = (f"computed {run.computed} of {run.chunks} chunks" if not run.skipped else
                    f"computed {run.computed}, kept {run.skipped} of {run.chunks} chunks")
            rate = f", {run.images_per_second:.3g} images/s" if run.computed else ""
            print(f"wrote {run.path}: {run.examples} examples ({done}) in {run.seconds:.1f} s"
                  f"{rate}")
    finally:
        if created:
            dist.destroy_process_group()
    return 0


def _attribute(args, model, source, spec, resize, workers, levels, compute, target):
    """``attribute_dataset`` with the command's arguments."""
    import torch

    from .run import attribute_dataset

    return attribute_dataset(
            model, source.dataset, args.out, target=target,
            batch_size=args.batch_size, chunk_size=args.chunk_size, resume=args.resume,
            overwrite=args.overwrite, store_dtype=getattr(torch, args.store_dtype),
            statistics=None if args.no_statistics else ("mean", "abs", "sq", "var", "geomean",
                                                        "sem"),
            num_workers=workers, progress=not args.quiet, n_samples=args.n_samples,
            noise_level=levels, noise=args.noise, aggregate=tuple(args.aggregate),
            method=args.method, seed=args.seed, compute_dtype=compute, backend=args.backend,
            store_inputs=args.store_inputs,
            metadata={"model": args.model, "weights": args.weights, "data": source.text,
                      "limit": args.limit, "listing": source.listing, "resize": resize,
                      "channels": spec.channels, "size": spec.size,
                      "classes": list(source.classes or spec.classes or [])},
            **dict(args.option))


def _check_weights(args: argparse.Namespace) -> None:
    """Only the digits CNN has bundled weights: any other model without --weights would be a
    random one, whose maps explain nothing, so that takes --random-weights."""
    bundled = args.model.replace("-", "_").lower() == "digits"
    if args.weights is not None and args.random_weights:
        raise ValueError("--weights and --random-weights exclude each other")
    if args.weights is None and not bundled and not args.random_weights:
        raise ValueError(f"--model {args.model} has no bundled weights: pass --weights FILE "
                         "(without it the maps would explain a randomly initialised model; "
                         "--random-weights does that on purpose)")


def cmd_show(args: argparse.Namespace) -> int:
    from .drawing import show

    path = show(args.store, args.index, args.out, aggregates=args.aggregate, signed=args.signed)
    print(f"wrote {path}")
    return 0


def _device(text: str):
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device must be cpu or cuda[:N], got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {text}: torch sees no CUDA device here")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {text!r}")
    return device






def _target(text: str) -> str | int:
    if text in ("predicted", "label"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"predicted, label or a class index, got {text!r}") \
            from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a class index is >= 0, got {value}")
    return value

