"""The out-of-distribution study: AugMix batches, the consistency loss, reproducible training,
the tables, the figure's stroke share, and ``smoothkern ood`` end to end on a few digits."""

import csv
import io
import math
import statistics

import numpy as np
import pytest
import torch
from torch import nn

from smoothkern.cli import main
from smoothkern.data import DataError
from smoothkern.models import MnistCNN
from smoothkern.studies.ood import (
    BatchAugMix,
    StudyResult,
    TrainSettings,
    augmix_jsd_loss,
    jensen_shannon,
    load_study_data,
    rgb_digits_cnn,
    run_study,
    stroke_masks,
    stroke_share,
    stroke_share_table,
    train_model,
    train_trial,
)
from smoothkern.studies.shifts import SHIFTS, rotate, rr


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (on busy cores, two can be several times
    slower); the count comes back after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gray_batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 6:22, 11:17] = 0.5 + 0.5 * torch.rand(n, 1, 16, 6, generator=g)
    return x.expand(-1, 3, -1, -1).contiguous()


def test_batch_augmix_is_torchvision_augmix_per_image():
    from torchvision.transforms import AugMix

    x = _gray_batch()
    before = x.clone()
    torch.manual_seed(5)
    out = BatchAugMix()(x)
    assert torch.equal(x, before)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 1
    # The reference: torchvision's AugMix on each image's uint8 pixels in turn, same seed (the
    # gray shortcut augments one channel: the same operations act on every channel alike).
    reference = AugMix(all_ops=False)
    torch.manual_seed(5)
    pixels = (x * 255).round().to(torch.uint8)
    expected = torch.stack([reference(image) for image in pixels]).float() / 255
    assert torch.equal(out, expected)
    assert not torch.equal(out[0], out[1])  # each image has its own chains


def test_jensen_shannon_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(5, 10, generator=g) for _ in range(3)]
    probs = [torch.softmax(z.double(), 1) for z in logits]
    expected = 0.0
    for b in range(5):  # a loop over examples and classes
        mixture = [sum(p[b, k] for p in probs) / 3 for k in range(10)]
        expected += sum(float(p[b, k] * math.log(p[b, k] / mixture[k]))
                        for p in probs for k in range(10)) / 3
    expected /= 5
    assert abs(float(jensen_shannon(*logits)) - expected) < 1e-5
    assert abs(float(jensen_shannon(logits[0], logits[0], logits[0]))) < 1e-6
    assert abs(float(jensen_shannon(logits[2], logits[0], logits[1])) - expected) < 1e-5
    labels = torch.arange(5)
    ce = nn.functional.cross_entropy(logits[0], labels)
    assert abs(float(augmix_jsd_loss(*logits, labels, weight=2.0)) -
               (float(ce) + 2 * expected)) < 1e-4


def test_rgb_model_is_the_mnist_cnn_with_an_rgb_input():
    model = rgb_digits_cnn("mnist")
    reference = MnistCNN(width=32, hidden=128)
    shapes = {k: v.shape for k, v in model.net.state_dict().items()}
    expected = {k: v.shape for k, v in reference.state_dict().items()}
    expected["features.0.weight"] = torch.Size([32, 3, 3, 3])
    assert shapes == expected
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 10) and not model.training
    with pytest.raises(ValueError, match="data must be one of"):
        rgb_digits_cnn("cifar")


def _tiny_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 10))


def _separable(n=48):
    """Images whose class is the channel that is lit: learnable in a few steps."""
    y = torch.arange(n) % 3
    x = torch.zeros(n, 3, 28, 28)
    x[torch.arange(n), y] = 0.8
    return x, y


@pytest.mark.parametrize("augmentation", ["none", "augmix", "augmix-jsd"])
def test_training_is_reproducible_and_leaves_the_global_generator(augmentation):
    x, y = _separable(24)
    settings = TrainSettings(epochs=1, batch_size=12, lr=1e-2, augmentation=augmentation)
    state = torch.random.get_rng_state()
    a = train_trial(_tiny_model, x, y, settings, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = train_trial(_tiny_model, x, y, settings, seed=1)
    c = train_trial(_tiny_model, x, y, settings, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert not a.training


def test_training_lowers_the_loss():
    x, y = _separable()
    torch.manual_seed(0)
    model = _tiny_model()
    losses = train_model(model, x, y, TrainSettings(epochs=6, batch_size=16, lr=1e-3), seed=0)
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0]


def test_train_settings_and_input_errors():
    with pytest.raises(ValueError, match="augmentation must be one of"):
        TrainSettings(augmentation="mixup")
    with pytest.raises(ValueError, match="epochs and batch_size"):
        TrainSettings(epochs=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainSettings(lr=0.0)
    with pytest.raises(ValueError, match=r"labels \[N\]"):
        train_model(_tiny_model(), torch.rand(4, 3, 28, 28), torch.zeros(3, dtype=torch.long))


def test_study_table_and_csv():
    result = StudyResult("toy", 10, {"original": 4, "fog": 3}, {"original": "test set",
                                                                "fog": "MNIST-C files"},
                         TrainSettings(epochs=2), "augmix", (0, 1, 2))
    values = {("clean", "original"): [0.9, 0.95, 1.0], ("AugMix", "original"): [1.0, 1.0, 1.0],
              ("clean", "fog"): [0.5, 0.25, 0.0], ("AugMix", "fog"): [0.6, 0.7, 0.8]}
    result.accuracy.update(values)
    mean, std = result.summary("clean", "fog")
    assert mean == pytest.approx(25.0) and std == pytest.approx(statistics.stdev([50, 25, 0]))
    table = result.markdown()
    assert "| fog | 3 | MNIST-C files | 25.0 ± 25.0 | 70.0 ± 10.0 |" in table
    assert "| original | 4 | test set | 95.0 ± 5.0 | 100.0 ± 0.0 |" in table
    rows = list(csv.DictReader(io.StringIO(result.csv())))
    assert len(rows) == 4
    fog = next(r for r in rows if r["model"] == "AugMix" and r["shift"] == "fog")
    assert fog["mean_percent"] == "70.00" and fog["seed_2"] == "80.00"


def test_stroke_share_and_masks():
    maps = torch.zeros(2, 3, 4, 4)
    maps[0, :, 0, 0] = 1.0
    maps[0, 1, 3, 3] = -3.0
    maps[1, 2, 1, 1] = 2.0
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, 0, 0] = True
    expected = [3.0 / 6.0, 0.0]  # |a| summed over channels, the stroke's part of the total
    assert stroke_share(maps, masks).tolist() == pytest.approx(expected)
    clean = _gray_batch(3)[:, :1]
    index = torch.tensor([4, 0, 9])
    assert torch.equal(stroke_masks(clean, "fog", 0, index), clean[:, 0] >= 0.5)
    moved = rotate(clean, 0, index)[:, 0] >= 0.5
    assert torch.equal(stroke_masks(clean, "rotated", 0, index), moved)
    cropped = rr(clean, 0, index)[:, 0] >= 0.5
    assert torch.equal(stroke_masks(clean, "random_resized_crop", 0, index), cropped)


def test_stroke_share_table_on_a_linear_model():
    # A linear model's SmoothGrad is its weight row: the share follows in closed form.
    torch.manual_seed(0)
    model = _tiny_model().eval()
    clean = _gray_batch(5)[:, :1]
    labels = torch.tensor([0, 3, 1, 3, 2])
    tests = {"original": (clean.expand(-1, 3, -1, -1), labels),
             "rotated": (rotate(clean, 0).expand(-1, 3, -1, -1), labels)}
    table = stroke_share_table({"clean": model}, clean, tests, examples=4, n_samples=3)
    weights = model[1].weight.detach().view(10, 3, 28, 28).abs().sum(1)
    for shift in tests:
        masks = stroke_masks(clean[:4], shift, 0, torch.arange(4))
        expected = [float((weights[c] * masks[k]).sum() / weights[c].sum())
                    for k, c in enumerate(labels[:4].tolist())]
        assert table[("clean", shift)] == pytest.approx(sum(expected) / 4, rel=1e-4)
        assert table[("stroke area", shift)] == pytest.approx(float(masks.float().mean()))
    with pytest.raises(ValueError, match="examples"):
        stroke_share_table({"clean": model}, clean, tests, examples=0)


def _fake_mnist_c(root, corruptions=("identity", "fog"), n=20):
    g = np.random.default_rng(0)
    for name in corruptions:
        for split in ("train", "test"):
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{split}_images.npy",
                    g.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8))
            np.save(folder / f"{split}_labels.npy", np.arange(n, dtype=np.uint8) % 10)


def test_study_data_uses_mnist_c_files_when_present(tmp_path):
    _fake_mnist_c(tmp_path)
    data = load_study_data(mnist_c=tmp_path, limit=12)
    assert data.size == "mnist" and data.x_train.shape == (12, 3, 28, 28)
    assert list(data.tests) == list(SHIFTS)
    assert data.sources["fog"] == "MNIST-C files" and data.sources["zigzag"] == "synthetic"
    assert all(x.shape == (12, 3, 28, 28) for x, _ in data.tests.values())
    _fake_mnist_c(tmp_path / "no_identity", corruptions=("fog",))
    with pytest.raises(DataError, match="identity"):
        load_study_data(mnist_c=tmp_path / "no_identity")
    with pytest.raises(ValueError, match="limit"):
        load_study_data(limit=0)


def test_study_data_takes_the_extras_by_name():
    data = load_study_data(limit=6, shifts=["original", "coloured_grayscale", "rotated"])
    assert list(data.tests) == ["original", "coloured_grayscale", "rotated"]
    x = data.x_test
    assert torch.equal(data.tests["rotated"][0], rotate(x, 0).expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="unknown shift 'blur'"):
        load_study_data(limit=6, shifts=["blur"])


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_study_data_from_local_mnist(tmp_path):
    g = np.random.default_rng(1)
    for stem, n in (("train", 10), ("t10k", 7)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte", g.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10)
    data = load_study_data(mnist=tmp_path)
    assert (data.name, data.size) == ("MNIST", "mnist")
    assert data.x_train.shape == (10, 3, 28, 28) and len(data.y_test) == 7
    assert data.sources["fog"] == "synthetic"
    assert torch.equal(data.tests["original"][0][:, 1], data.x_test[:, 0])


def test_run_study_accuracies_match_a_loop():
    data = load_study_data(limit=24)
    result, models = run_study(data, TrainSettings(epochs=1), seeds=(0, 1))
    assert set(models) == {"clean", "AugMix"}
    for (kind, shift), values in result.accuracy.items():
        assert len(values) == 2
        x, y = data.tests[shift]
        with torch.no_grad():
            correct = sum(int(models[kind](x[i:i + 1]).argmax()) == int(y[i])
                          for i in range(len(y)))
        assert values[0] == pytest.approx(correct / len(y))
    assert set(result.shifts) == set(SHIFTS) and result.train_size == 24


def test_ood_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "ood"
    status = main(["ood", "--out", str(out), "--trials", "1", "--epochs", "1", "--limit", "24",
                   "--samples", "2", "--share-examples", "4", "--threads", "1", "--quiet"])
    assert status == 0
    rows = list(csv.DictReader((out / "ood_accuracy.csv").open()))
    assert len(rows) == 2 * len(SHIFTS)
    assert "| zigzag |" in (out / "ood_accuracy.md").read_text()
    assert (out / "ood_maps.png").stat().st_size > 10_000
    shares = list(csv.DictReader((out / "ood_stroke_share.csv").open()))
    assert [r["shift"] for r in shares] == list(SHIFTS)
    assert all(0 <= float(r["clean_share_percent"]) <= 100 for r in shares)
    assert "wrote" in capsys.readouterr().out


def test_ood_command_errors(tmp_path, capsys):
    assert main(["ood", "--out", str(tmp_path), "--mnist", str(tmp_path / "none")]) == 2
    assert "smoothkern ood: error: MNIST folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ood", "--out", str(tmp_path), "--trials", "0"])
