"""Offline data: bundled digits and photos, and loaders for local MNIST/CIFAR-10/image files."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from smoothkern.data import (
    DataError,
    digit_examples,
    digits_split,
    load_cifar10,
    load_digits,
    load_image,
    load_images,
    load_mnist,
    load_photos,
)


def test_digits_are_real_and_in_range():
    x, y = load_digits()
    assert x.shape == (1797, 1, 28, 28) and y.shape == (1797,)
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.9
    assert set(y.tolist()) == set(range(10))
    assert load_digits(size=8)[0].shape == (1797, 1, 8, 8)


def test_digits_split_is_fixed_disjoint_and_stratified():
    x_tr, y_tr, x_te, y_te = digits_split()
    assert len(x_tr) + len(x_te) == 1797 and len(x_te) == 450
    assert y_te.bincount().min() >= 44
    again = digits_split()
    assert torch.equal(again[2], x_te)
    # no held-out image appears in the training part
    dist = torch.cdist(x_te.flatten(1)[:20], x_tr.flatten(1)).min(1).values
    assert (dist > 0).all()
    ex, ey = digit_examples()
    assert ey.tolist() == list(range(10)) and ex.shape == (10, 1, 28, 28)


def test_photos():
    p = load_photos(("chelsea", "rocket"), size=96)
    assert p.shape == (2, 3, 96, 96) and 0 <= p.min() and p.max() <= 1
    with pytest.raises(ValueError, match="unknown photo"):
        load_photos(("nothing_here",))


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(">u1").tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    for name, data in (("t10k-images-idx3-ubyte", _idx(images)),
                       ("t10k-labels-idx1-ubyte", _idx(labels))):
        if gz:
            with gzip.open(tmp_path / (name + ".gz"), "wb") as f:
                f.write(data)
        else:
            (tmp_path / name).write_bytes(data)
    x, y = load_mnist(tmp_path, "test")
    assert x.shape == (5, 1, 28, 28) and y.tolist() == [3, 1, 4, 1, 5]
    torch.testing.assert_close(x[2, 0], torch.tensor(images[2] / 255.0, dtype=torch.float32))
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, "train")


def test_mnist_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        load_mnist(tmp_path / "none")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04garbage")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(2, np.uint8)))
    with pytest.raises(DataError, match="magic"):
        load_mnist(tmp_path, "test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(np.zeros((2, 28, 28), np.uint8))[:-5])
    with pytest.raises(DataError, match="header"):
        load_mnist(tmp_path, "test")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(np.zeros((3, 28, 28), np.uint8)))
    with pytest.raises(DataError, match="disagree"):
        load_mnist(tmp_path, "test")


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"x", b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": []}
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    return batch


def test_cifar10_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _cifar_batch(folder / f"data_batch_{i}", 3, i)
    test = _cifar_batch(folder / "test_batch", 4, 9)
    x, y = load_cifar10(tmp_path, "test")          # the parent folder works too
    assert x.shape == (4, 3, 32, 32) and y.tolist() == test[b"labels"]
    assert x[1, 2, 0, 5] == test[b"data"][1][2 * 1024 + 5] / 255.0
    assert load_cifar10(folder, "train")[0].shape == (15, 3, 32, 32)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read CIFAR-10 batch"):
        load_cifar10(folder, "train")
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match="3072"):
        load_cifar10(folder, "train")
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="not found"):
        load_cifar10(folder, "test")


def test_image_files(tmp_path):
    from PIL import Image

    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30, 0] = 255
    Image.fromarray(rgb).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 40, 60) and x[0, 0, 0] == 1 and x[0, 0, 59] == 0
    assert load_image(tmp_path / "a.png", channels=1, size=28).shape == (1, 28, 28)
    assert load_images([tmp_path / "a.png"] * 2, size=32).shape == (2, 3, 32, 32)
    (tmp_path / "b.png").write_text("not an image")
    with pytest.raises(DataError, match="not a readable image"):
        load_image(tmp_path / "b.png")
    with pytest.raises(DataError, match="image not found"):
        load_image(tmp_path / "c.png")


@pytest.mark.parametrize("width, height", [(20000, 20000), (10000, 10000)])
def test_image_whose_header_claims_too_many_pixels(tmp_path, width, height):
    """Pillow raises above 2×MAX_IMAGE_PIXELS and only warns between: both are refused."""
    import io
    import warnings
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height; then its CRC
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "huge.png").write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes either
        with pytest.raises(DataError, match=f"image too large: .*huge.png .*{width * height}"):
            load_image(tmp_path / "huge.png")



@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_gray_images_are_scaled_by_their_depth_not_clipped(tmp_path, channels):
    from PIL import Image

    ramp = (np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)  # 0 .. 59950
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")  # what Pillow makes of a 16-bit gray PNG
    x = load_image(tmp_path / "deep.png", channels=channels)
    assert x.shape == (channels, 30, 40)
    want = torch.from_numpy(ramp.astype(np.float32) / 65535)
    for c in range(channels):
        torch.testing.assert_close(x[c], want, atol=1e-6, rtol=0)
    assert (x == 1).float().mean() < 0.01  # convert("L") made 99 % of these pixels white
