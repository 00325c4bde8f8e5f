"""`smoothkern attribute` and `smoothkern show` end to end on bundled digits and image folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import smoothkern as sk
from smoothkern import cli
from smoothkern.data import DataError, load_digits
from smoothkern.dataset import open_store
from smoothkern.dataset.named_data import open_source
from smoothkern.models import InputSpec, digits_cnn

pytest.importorskip("zarr")

JOB = ["--model", "digits", "--data", "digits", "--limit", "6", "--n-samples", "3",
       "--batch-size", "4", "--chunk-size", "4", "--quiet"]


def test_attribute_then_show_on_bundled_digits(tmp_path, capsys):
    out = str(tmp_path / "digits.zarr")
    assert cli.main(["attribute", *JOB, "--aggregate", "mean", "sq", "--noise-level", "10%",
                     "--seed", "3", "--out", out]) == 0
    assert "wrote" in capsys.readouterr().out
    store = open_store(out)
    x, y = load_digits()
    want = sk.smooth_grad(digits_cnn(), x[:6], n_samples=3, noise_level=0.1, seed=3,
                          aggregate=("mean", "sq"))
    for name in ("mean", "sq"):
        np.testing.assert_allclose(store[name][:], want[name].numpy(), rtol=1e-5, atol=1e-6)
    assert store["label"][:].tolist() == y[:6].tolist()
    meta = store.attrs["smoothkern"]["metadata"]
    assert (meta["model"], meta["data"]) == ("digits", "digits")

    png = tmp_path / "show.png"
    assert cli.main(["show", out, "--index", "0", "5", "--out", str(png)]) == 0
    assert png.stat().st_size > 1000 and "wrote" in capsys.readouterr().out
    # a finished store is kept by --resume and refused without it
    assert cli.main(["attribute", *JOB, "--aggregate", "mean", "sq", "--noise-level", "10%",
                     "--seed", "3", "--out", out, "--resume"]) == 0
    assert "kept 2 of 2 chunks" in capsys.readouterr().out
    assert cli.main(["attribute", *JOB, "--aggregate", "mean", "sq", "--noise-level", "10%",
                     "--seed", "3", "--out", out]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--model", "cifar10_resnet18", "--random-weights", "--data", "digits"],
     "takes 3×32×32 images"),
    (["--model", "mnist", "--data", "digits"], "--model mnist has no bundled weights"),
    (["--model", "digits", "--weights", "w.pt", "--random-weights", "--data", "digits"],
     "exclude each other"),
    (["--model", "digits", "--data", "mnist:/no/such/folder"], "MNIST folder not found"),
    (["--model", "digits", "--data", "/no/such/folder"], "data folder not found"),
    (["--model", "digits", "--data", "imagenet:/x"], "unknown data source"),
    (["--model", "digits", "--weights", "/no/weights.pt", "--data", "digits"], "not found"),
    (["--model", "digits", "--data", "digits", "--method", "nope"], "unknown method"),
])
def test_errors_are_one_line_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "s"
    assert cli.main(["attribute", *args, "--out", str(out), "--limit", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_store_of_another_job_is_refused_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert cli.main(["attribute", *JOB, "--out", out]) == 0
    assert cli.main(["attribute", *JOB, "--n-samples", "4", "--out", out, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "another job" in err and "n_samples: 4 here, 3 in the store" in err
    assert err.count("\n") == 1
    for args, message in ([["--index", "6"], "within 0..5"],
                          [["--index", "0", "--aggregate", "var"], "no maps ['var']"]):
        assert cli.main(["show", out, *args, "--out", str(tmp_path / "x.png")]) == 2
        assert message in capsys.readouterr().err
    assert cli.main(["show", str(tmp_path), "--index", "0", "--out", str(tmp_path / "x.png")]) \
        == 2
    assert "not a smoothkern data-set store" in capsys.readouterr().err
    assert cli.main(["show", out, "--index", "0", "--out", str(tmp_path / "s.txt")]) == 2
    assert "must end in .png, got 's.txt'" in capsys.readouterr().err
    assert not (tmp_path / "s.txt").exists()


def test_a_folder_of_class_subfolders_gives_labels(tmp_path):
    from PIL import Image

    x, _ = load_digits(size=8)
    for label, digit in enumerate(("three", "one")):
        (tmp_path / digit).mkdir()
        for i in range(2):
            pixels = (x[3 * i + label, 0].numpy() * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / digit / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(str(tmp_path), InputSpec(1, 28))
    assert source.classes == ("one", "three") and len(source.dataset) == 4
    image, label = source.dataset[3]
    assert image.shape == (1, 28, 28) and label == 1 and 0 <= image.min() <= image.max() <= 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        open_source(str(tmp_path / "empty"), InputSpec(1, 28))


def test_target_label_explains_each_examples_label(tmp_path):
    out = str(tmp_path / "s")
    assert cli.main(["attribute", *JOB, "--target", "label", "--out", out]) == 0
    store = open_store(out)
    assert store["target"][:].tolist() == store["label"][:].tolist()
    counts = torch.from_numpy(store["stats/class_count"][:])
    assert counts.sum() == 6 and counts.tolist() == torch.bincount(
        torch.from_numpy(store["label"][:]), minlength=10).tolist()


def test_show_draws_stored_inputs_of_a_python_job(tmp_path):
    from helpers import tiny_resnet
    from torch.utils.data import TensorDataset

    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = tiny_resnet()
    for name, keep in (("kept", True), ("not_kept", False)):
        sk.attribute_dataset(model, TensorDataset(x), tmp_path / name, n_samples=2,
                             store_inputs=keep, statistics=None, progress=False)
    np.testing.assert_array_equal(open_store(tmp_path / "kept")["input"][:], x.numpy())
    png = sk.dataset.show(tmp_path / "kept", [4, 1], tmp_path / "kept.png", signed=True)
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError, match="holds no images"):
        sk.dataset.show(tmp_path / "not_kept", [0], tmp_path / "x.png")


def _digit_folder(folder, per_class=3):
    from PIL import Image

    x, y = load_digits()
    for digit in (0, 1):
        (folder / f"d{digit}").mkdir(parents=True)
        for i in range(per_class):
            index = int((y == digit).nonzero()[i])
            Image.fromarray((x[index, 0].numpy() * 255).astype(np.uint8)).save(
                folder / f"d{digit}" / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("change", ["added", "rewritten"])
def test_show_refuses_a_data_folder_that_changed_since_the_store(tmp_path, capsys, change):
    from PIL import Image

    data = _digit_folder(tmp_path / "data")
    job = ["attribute", "--model", "digits", "--data", str(data), "--n-samples", "2",
           "--target", "label", "--quiet"]
    assert cli.main([*job, "--out", str(tmp_path / "s")]) == 0
    assert cli.main([*job, "--store-inputs", "--out", str(tmp_path / "kept")]) == 0
    png = tmp_path / "x.png"
    assert cli.main(["show", str(tmp_path / "s"), "--index", "4", "--out", str(png)]) == 0
    capsys.readouterr()
    if change == "added":  # sorts first: every later image would move one place
        Image.new("L", (28, 28), 255).save(data / "d0" / "00a.png")
    else:  # same name, other pixels and size
        Image.new("L", (20, 20), 0).save(data / "d1" / "01.png")
    assert cli.main(["show", str(tmp_path / "s"), "--index", "4", "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert "changed since the store was written" in err and "--store-inputs" in err
    assert err.count("\n") == 1
    # a store that keeps its inputs does not need the folder
    assert cli.main(["show", str(tmp_path / "kept"), "--index", "4", "--out", str(png)]) == 0
