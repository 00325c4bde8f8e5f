"""The ``smoothkern`` command end to end, into temporary folders, and its error paths."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import pytest

from smoothkern import cli


def _png_ok(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.format == "PNG" and min(image.size) > 100


def test_demo_writes_the_figures(tmp_path, capsys):
    pytest.importorskip("torchvision")
    status = cli.main(["demo", "--out", str(tmp_path), "--samples", "3", "--photo-samples", "1",
                       "--quiet"])
    out = capsys.readouterr().out
    assert status == 0
    names = ["digits_noise_levels.png", "digits_noise_levels_signed.png",
             "digits_sample_counts.png", "digits_noise_kinds.png", "digits_aggregates.png",
             "photos_noise_levels.png"]
    for name in names:
        assert _png_ok(tmp_path / name), name
    assert "benchmark (digits CNN" in out and "loop" in out and "batched" in out


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    from PIL import Image

    from smoothkern.data import digit_examples

    folder = tmp_path_factory.mktemp("digits")
    images, labels = digit_examples()
    paths = []
    for image, label in list(zip(images, labels))[:2]:
        path = folder / f"digit{label}.png"
        Image.fromarray((image[0].numpy() * 255).astype("uint8")).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("kind", ["noise-levels", "samples", "aggregates"])
def test_figure(tmp_path, digit_files, kind, capsys):
    out = tmp_path / "fig.png"
    status = cli.main(["figure", "--model", "digits", "--images", *digit_files, "--out",
                       str(out), "--samples", "2", "--noise-levels", "0", "10%", "--kind", kind,
                       "--quiet"])
    assert status == 0 and _png_ok(out)
    assert "wrote" in capsys.readouterr().out


def png_claiming(path, width: int, height: int) -> str:
    """Writes a real 4×4 PNG whose header (IHDR, CRC fixed) claims width×height pixels."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"  # 8-byte signature, then length, type, 13 bytes, CRC
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return str(path)


def tiff_with_samples_per_pixel(path, samples: int) -> str:
    """Writes a 4×4 RGB TIFF whose SamplesPerPixel tag (277) is changed to ``samples``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"II*\x00"  # little endian; then the first directory's offset
    directory = struct.unpack_from("<I", data, 4)[0]
    for index in range(struct.unpack_from("<H", data, directory)[0]):
        entry = directory + 2 + 12 * index  # tag, type, count, value
        if struct.unpack_from("<H", data, entry)[0] == 277:
            struct.pack_into("<H", data, entry + 8, samples)
    path.write_bytes(bytes(data))
    return str(path)


def bad_image_files(folder, digit_file) -> dict[str, str]:
    """Unreadable image files by kind: not an image, truncated, headers claiming huge sizes."""
    files = {"BAD": folder / "bad.png", "TRUNCATED": folder / "truncated.png"}
    files["BAD"].write_text("no image here")
    whole = open(digit_file, "rb").read()
    files["TRUNCATED"].write_bytes(whole[:len(whole) // 2])
    files["BOMB"] = png_claiming(folder / "bomb.png", 20000, 20000)  # Pillow raises
    files["BIG"] = png_claiming(folder / "big.png", 10000, 10000)  # Pillow only warns
    files["TIFF"] = tiff_with_samples_per_pixel(folder / "spp.tif", 2048)  # Pillow logs an error
    return {key: str(value) for key, value in files.items()}


@pytest.mark.parametrize("args, message", [
    (["--model", "digits", "--images", "missing.png"], "image not found"),
    (["--model", "lenet", "--images", "IMG"], "unknown model 'lenet'"),
    (["--model", "mnist", "--weights", "nope.pt", "--images", "IMG"], "weights file not found"),
    (["--model", "digits", "--images", "BAD"], "not a readable image"),
    (["--model", "digits", "--images", "TRUNCATED"], "not a readable image"),
    (["--model", "digits", "--images", "TIFF"], "not a readable image"),
    (["--model", "digits", "--images", "IMG", "BOMB"], "image too large"),
    (["--model", "digits", "--images", "BIG"], "image too large"),
    (["--model", "digits", "--images", "IMG", "--target", "12"], "target out of range"),
])
def test_figure_errors_are_one_line(tmp_path, digit_files, capsys, args, message):
    bad = bad_image_files(tmp_path, digit_files[0])
    args = [bad.get(a, digit_files[0] if a == "IMG" else a) for a in args]
    status = cli.main(["figure", *args, "--out", str(tmp_path / "x.png"), "--samples", "1",
                       "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("image, message", [("none.png", "image not found"),
                                            ("BIG", "image too large"),
                                            ("TIFF", "not a readable image")])
def test_no_traceback_from_the_real_command(tmp_path, digit_files, image, message):
    # A real process: Pillow's DecompressionBombWarning and its log records would print beside
    # the error there (pytest captures warnings and logging, so only a subprocess sees them).
    image = bad_image_files(tmp_path, digit_files[0]).get(image, str(tmp_path / image))
    result = subprocess.run([sys.executable, "-m", "smoothkern", "figure", "--model", "digits",
                             "--images", image, "--out", str(tmp_path / "x.png")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("smoothkern figure: error: ")
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [[], ["demo"], ["figure"], ["bench"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: smoothkern" in capsys.readouterr().out


def test_bench_runs_the_packaged_harness(capsys):
    # `smoothkern bench` is smoothkern.bench, not a script of the checkout (tests/test_bench.py
    # runs it from another folder).
    assert cli.main(["bench", "--quick", "--samples", "2", "--variants", "loop", "smoothkern",
                     "--no-memory", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and "| smoothkern fp32 |" in out


def test_bench_rejects_unknown_variants(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--variants", "fastest"])
    assert exit_info.value.code == cli.EXIT_USAGE
    assert "invalid choice: 'fastest'" in capsys.readouterr().err


def test_figure_passes_method_options(tmp_path, digit_files):
    out = tmp_path / "cam.png"
    status = cli.main(["figure", "--model", "digits", "--images", digit_files[0], "--out",
                       str(out), "--samples", "2", "--method", "grad_cam", "--option",
                       "layer=net.features.8", "--option", "upsample=True", "--quiet"])
    assert status == 0 and _png_ok(out)
    with pytest.raises(SystemExit):
        cli.main(["figure", "--model", "digits", "--images", digit_files[0], "--out",
                  str(out), "--option", "no-equals-sign"])
