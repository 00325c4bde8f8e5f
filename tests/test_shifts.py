"""The distribution shifts (smoothkern.studies.shifts) and the MNIST-C loader, against plain
per-pixel references and the definitions' analytic properties."""

import math

import numpy as np
import pytest
import torch

from smoothkern.data import DataError
from smoothkern.studies import shifts as S
from smoothkern.studies.mnist_c import load_mnist_c, mnist_c_corruptions


@pytest.fixture(scope="module")
def digits():
    """Eight MNIST-shaped gray images with a bright blob (Tensor[8, 1, 28, 28])."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=g) * 0.2
    x[:, :, 6:22, 10:18] += 0.8
    return x.clamp(0, 1)


def assert_near(actual, expected, atol=1e-6):
    """Elementwise |actual - expected| <= atol, with the same shape (cheaper to import than
    torch.testing, whose first call loads the compiler stack)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    difference = (actual.double() - expected.double()).abs().max()
    assert difference <= atol, f"max difference {float(difference):.3g} > {atol}"


RANDOM_SHIFTS = ["coloured", "weighted_grayscale", "random_resized_crop", "coloured_grayscale",
                 "rotated", "motion_blur", "fog", "zigzag"]


@pytest.mark.parametrize("name", [*S.SHIFTS, *S.EXTRA_SHIFTS])
def test_shift_is_per_image_and_leaves_input_alone(name, digits):
    before = digits.clone()
    whole = S.apply_shift(name, digits, seed=3)
    assert whole.shape == (8, 3, 28, 28) and whole.dtype == torch.float32
    assert torch.equal(digits, before)
    assert 0 <= whole.min() and whole.max() <= 1
    # Image k is shifted the same way alone as in the batch (its draws follow its index).
    for k in (0, 5):
        alone = S.apply_shift(name, digits[k:k + 1], seed=3, example_index=k)
        assert_near(alone[0], whole[k], atol=1e-6)
    reordered = S.apply_shift(name, digits[[5, 0]], seed=3, example_index=torch.tensor([5, 0]))
    assert_near(reordered, whole[[5, 0]], atol=1e-6)


@pytest.mark.parametrize("name", RANDOM_SHIFTS)
def test_shift_depends_on_seed_only(name, digits):
    a = S.apply_shift(name, digits, seed=1)
    assert torch.equal(a, S.apply_shift(name, digits, seed=1))
    assert not torch.equal(a, S.apply_shift(name, digits, seed=2))


def test_coloured_puts_the_gray_image_in_one_channel(digits):
    x = digits.repeat(4, 1, 1, 1)  # 32 images: every tint should occur
    out = S.coloured(x, seed=0)
    lit = (out.flatten(2).amax(2) > 0)  # [B, 3]
    assert (lit.sum(1) == 1).all()
    assert lit.any(0).all()
    for b in range(len(x)):
        channel = int(lit[b].nonzero())
        assert torch.equal(out[b, channel], x[b, 0])


def test_weighted_grayscale_uses_one_of_three_weightings(digits):
    rgb = torch.rand(12, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    out = S.weighted_grayscale(rgb, seed=0)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    used = set()
    for b in range(len(rgb)):
        matches = [name for name, w in S.GRAYSCALE_WEIGHTS.items()
                   if torch.allclose(out[b, 0], sum(w[c] * rgb[b, c] for c in range(3)),
                                     atol=1e-6)]
        assert matches
        used.update(matches)
    assert len(used) >= 2
    with pytest.raises(ValueError, match="needs RGB|expected images"):
        S.weighted_grayscale(digits)


def test_coloured_grayscale_dims_a_white_digit(digits):
    out = S.apply_shift("coloured_grayscale", digits, seed=0)
    ratio = out[:, 0].flatten(1).amax(1) / digits[:, 0].flatten(1).amax(1)
    allowed = torch.tensor(sorted({w for ws in S.GRAYSCALE_WEIGHTS.values() for w in ws}))
    assert all((allowed - r).abs().min() < 1e-5 for r in ratio)


def test_the_study_shifts_are_the_tutorials_definitions():
    assert list(S.SHIFTS) == ["original", "coloured", "weighted_grayscale", "random_resized_crop",
                              "motion_blur", "fog", "zigzag"]
    assert S.SHIFTS["coloured"] is S.gen_colored is S.coloured
    assert S.SHIFTS["weighted_grayscale"] is S.gen_weighted_grayscale
    assert list(S.EXTRA_SHIFTS) == ["coloured_grayscale", "rotated"]


def test_gen_weighted_grayscale_scales_the_gray_image_into_three_channels(digits):
    x = digits.repeat(4, 1, 1, 1)  # 32 images: every weight should occur
    out = S.gen_weighted_grayscale(x, seed=0)
    assert out.shape == (32, 3, 28, 28)
    used = set()
    for b in range(len(x)):
        # The tutorial: the gray 0-1 image times w, repeated in three channels.
        matches = [w for w in (0.3, 0.59, 0.11)
                   if torch.allclose(out[b], torch.cat([w * x[b]] * 3), atol=1e-7)]
        assert len(matches) == 1
        used.update(matches)
    assert used == {0.3, 0.59, 0.11}
    assert torch.equal(S.apply_shift("weighted_grayscale", x, seed=0), out)


def test_rr_is_torchvisions_random_resized_crop(digits):
    T = pytest.importorskip("torchvision.transforms")
    tutorial = T.RandomResizedCrop((28, 28))
    assert (tuple(tutorial.scale), tuple(tutorial.ratio)) == (S.CROP_SCALE, S.CROP_RATIO)
    state = torch.get_rng_state()
    out = S.rr(digits, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    assert out.shape == digits.shape
    boxes = set()
    for k, key in enumerate(S.crop_seeds(5, len(digits))):
        torch.manual_seed(key)
        assert_near(out[k], tutorial(digits[k]).clamp(0, 1), atol=1e-6)
        # The same crop written out: the box torchvision draws, rescaled bilinearly to 28×28.
        torch.manual_seed(key)
        i, j, h, w = T.RandomResizedCrop.get_params(digits[k], S.CROP_SCALE, S.CROP_RATIO)
        boxes.add((i, j, h, w))
        crop = torch.nn.functional.interpolate(digits[k:k + 1, :, i:i + h, j:j + w], (28, 28),
                                               mode="bilinear", align_corners=False,
                                               antialias=True)
        assert_near(out[k], crop[0].clamp(0, 1), atol=1e-5)
    torch.set_rng_state(state)
    assert len(boxes) > 1  # a random crop per image, not one for the batch
    assert S.rr(digits, seed=5, size=(14, 14)).shape == (8, 1, 14, 14)


def _bilinear_rotate_reference(image, degrees):
    """A per-pixel loop: output (row, col) samples the input at the point rotated back."""
    height, width = image.shape
    cy, cx = (height - 1) / 2, (width - 1) / 2
    t = math.radians(degrees)
    out = torch.zeros_like(image)
    for r in range(height):
        for c in range(width):
            u, v = c - cx, r - cy
            sx, sy = math.cos(t) * u - math.sin(t) * v + cx, math.sin(t) * u + math.cos(t) * v + cy
            x0, y0 = math.floor(sx), math.floor(sy)
            value = 0.0
            for yy, xx, w in ((y0, x0, (1 - (sx - x0)) * (1 - (sy - y0))),
                              (y0, x0 + 1, (sx - x0) * (1 - (sy - y0))),
                              (y0 + 1, x0, (1 - (sx - x0)) * (sy - y0)),
                              (y0 + 1, x0 + 1, (sx - x0) * (sy - y0))):
                if 0 <= yy < height and 0 <= xx < width:
                    value += w * float(image[yy, xx])
            out[r, c] = value
    return out


def test_rotate_matches_a_per_pixel_reference(digits):
    angles = S.rotation_angles(4, 2)
    assert (angles.abs() <= S.ROTATION_DEGREES).all()
    out = S.rotate(digits[:2], seed=4)
    for b in range(2):
        expected = _bilinear_rotate_reference(digits[b, 0], float(angles[b]))
        assert_near(out[b, 0], expected.clamp(0, 1), atol=1e-5)
    square = torch.rand(2, 1, 9, 9)
    quarter_turns = torch.stack([torch.rot90(square[0], 1, (1, 2)),
                                 torch.rot90(square[1], -1, (1, 2))])
    assert_near(S.rotate_by(square, torch.tensor([90.0, -90.0])), quarter_turns, atol=1e-5)
    assert_near(S.rotate(digits, max_degrees=0.0), digits, atol=1e-5)


def test_motion_blur_matches_the_imagemagick_definition(digits):
    kernel = S.motion_blur_kernel(10, 3.0)
    assert len(kernel) == 21 and abs(float(kernel.sum()) - 1) < 1e-12
    assert (kernel[1:] < kernel[:-1]).all()  # one-sided: the heaviest tap is the pixel itself
    image = digits[:1, :, :12, :10].contiguous()  # odd, non-square
    degrees = torch.tensor([30.0])
    out = S.motion_blur_by(image, degrees, radius=4, sigma=1.5)
    weights = S.motion_blur_kernel(4, 1.5)
    t = math.radians(30.0)
    expected = torch.zeros_like(image[0, 0], dtype=torch.float64)
    for r in range(12):
        for c in range(10):
            for i, w in enumerate(weights.tolist()):
                rr = min(max(r + math.floor(i * math.sin(t) + 0.5), 0), 11)
                cc = min(max(c + math.floor(i * math.cos(t) + 0.5), 0), 9)
                expected[r, c] += w * float(image[0, 0, rr, cc])
    assert_near(out[0, 0].double(), expected, atol=1e-6)
    flat = torch.full((2, 1, 28, 28), 0.4)
    assert_near(S.motion_blur(flat), flat)  # normalised weights, edge repeat


def test_plasma_fractal_and_fog():
    a = S.plasma_fractal(np.random.default_rng(0), 64, 1.4)
    assert a.shape == (64, 64) and a.min() == 0 and a.max() == 1
    assert np.array_equal(a, S.plasma_fractal(np.random.default_rng(0), 64, 1.4))

    def roughness(decay):
        maps = [S.plasma_fractal(np.random.default_rng(s), 64, decay) for s in range(4)]
        return np.mean([np.abs(np.diff(m, axis=1)).mean() for m in maps])

    assert roughness(3.0) < roughness(1.4)  # faster decay: less fine detail
    with pytest.raises(ValueError, match="power of two"):
        S.plasma_fractal(np.random.default_rng(0), 30)
    x = torch.rand(3, 1, 28, 28)
    assert_near(S.fog(x, strength=0.0), x)
    out = S.fog(x, seed=2)
    brightest = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    # Undo the rescaling: what was added is 3 × a fractal in [0, 1].
    added = (out * (brightest + S.FOG_STRENGTH) / brightest - x) / S.FOG_STRENGTH
    assert added.min() > -1e-5 and added.max() < 1 + 1e-5
    assert added.flatten(1).std(1).min() > 0.01  # a pattern, not a constant


def test_zigzag_line_and_overlay(digits):
    line = S.line_image(0, 10, 27, 10, 28, 28)
    assert np.allclose(line[10, :27], 1) and line[10, 27] == 0
    assert np.allclose(line[11, :27], math.log(1 - 1 / 2.3) + 1)
    assert np.all(line[12] == 0) and np.all(line[:9] == 0)
    assert np.all(S.line_image(5, 0, 5, 9, 28, 28) == 0)  # vertical: nothing, as defined
    rgb = S.to_rgb(digits)
    out = S.zigzag(rgb, seed=1)
    overlay = out - rgb
    assert overlay.min() >= 0
    assert torch.equal(overlay[:, 0], overlay[:, 1]) and torch.equal(overlay[:, 0], overlay[:, 2])
    drawn = S.zigzag(torch.zeros(8, 1, 28, 28), seed=1)[:, 0]
    assert drawn[:, :, 0].max() == 0 and drawn[:, :, 27:].max() == 0  # between columns 2 and 25
    counts = (drawn > 0.5).flatten(1).sum(1)
    assert ((counts > 20) & (counts < 200)).all()


def test_shift_errors(digits):
    with pytest.raises(ValueError, match="unknown shift 'blur'"):
        S.apply_shift("blur", digits)
    with pytest.raises(ValueError, match="seed"):
        S.coloured(digits, seed=-1)
    with pytest.raises(ValueError, match=r"expected images \[B, 1 or 3, H, W\]"):
        S.rotate(digits[0])
    with pytest.raises(ValueError, match="floating-point"):
        S.fog((digits * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="2 entries for 8 images"):
        S.zigzag(digits, example_index=[0, 1])
    with pytest.raises(ValueError, match="max_degrees"):
        S.rotate(digits, max_degrees=200)
    with pytest.raises(TypeError, match="Tensor"):
        S.motion_blur(digits.numpy())


# ----------------------------------------------------------------------------------------------
# MNIST-C files


def _write_corruption(folder, name, n=6, dtype=np.uint8, split="test"):
    path = folder / name
    path.mkdir(parents=True, exist_ok=True)
    images = np.arange(n * 28 * 28).reshape(n, 28, 28, 1) % 256
    np.save(path / f"{split}_images.npy", images.astype(dtype))
    np.save(path / f"{split}_labels.npy", np.arange(n, dtype=np.uint8) % 10)
    return images


def test_load_mnist_c(tmp_path):
    images = _write_corruption(tmp_path / "mnist_c", "fog")
    _write_corruption(tmp_path / "mnist_c", "zigzag", dtype=np.float32)
    x, y = load_mnist_c(tmp_path, "fog")  # the folder above mnist_c/ is accepted
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert_near(x[:, 0], torch.from_numpy(images[..., 0] / 255).float())
    assert y.tolist() == [0, 1, 2, 3, 4, 5]
    x2, _ = load_mnist_c(tmp_path / "mnist_c", "zigzag")  # float 0..255 scaled too
    assert_near(x2, x)
    assert mnist_c_corruptions(tmp_path) == ["fog", "zigzag"]


def test_load_mnist_c_errors(tmp_path):
    _write_corruption(tmp_path, "fog")
    with pytest.raises(DataError, match=r"'motion_blur' not found .*present: fog"):
        load_mnist_c(tmp_path, "motion_blur")
    with pytest.raises(DataError, match="train_images.npy"):
        load_mnist_c(tmp_path, "fog", "train")
    with pytest.raises(DataError, match="folder not found"):
        load_mnist_c(tmp_path / "nowhere", "fog")
    with pytest.raises(ValueError, match="split"):
        load_mnist_c(tmp_path, "fog", "valid")
    np.save(tmp_path / "fog" / "test_labels.npy", np.zeros(5, dtype=np.int64))
    with pytest.raises(DataError, match="disagree"):
        load_mnist_c(tmp_path, "fog")
    (tmp_path / "fog" / "test_images.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="cannot read"):
        load_mnist_c(tmp_path, "fog")
