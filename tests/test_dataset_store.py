"""The store's damage and resume rules: deleted or damaged chunk files, a lost `complete` record,
statistics asked for on resuming, aggregates in another order, resume with overwrite."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import tiny_resnet
from torch.utils.data import TensorDataset

import smoothkern as sk
from smoothkern import cli
from smoothkern.dataset import StoreError, open_store
from smoothkern.dataset.store import Store, StoreRepaired

zarr = pytest.importorskip("zarr")

N = 11
X = torch.rand(N, 1, 6, 6, generator=torch.Generator().manual_seed(3))
Y = torch.arange(N) % 3
FAST = dict(n_samples=3, batch_size=2, chunk_size=4, progress=False, store_inputs=True)


@pytest.fixture(scope="module")
def model():
    return tiny_resnet(in_channels=1, classes=4)


@pytest.fixture(scope="module")
def full(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "s"
    sk.attribute_dataset(model, TensorDataset(X, Y), path, **FAST)
    return open_store(path)


def run(model, path, **kwargs):
    return sk.attribute_dataset(model, TensorDataset(X, Y), path, **{**FAST, **kwargs})


def assert_same_store(path, full):
    got = open_store(path)
    for name in ("mean", "target", "label", "complete", "stats/mean/class_mean",
                 "stats/mean/var"):
        np.testing.assert_allclose(got[name][:], full[name][:], rtol=1e-6, atol=1e-8)
    assert got.attrs["smoothkern"]["finished"]


def test_chunk_files_deleted_from_a_finished_store_are_computed_again(model, full, tmp_path):
    path = tmp_path / "s"
    run(model, path)
    store = Store.open(path)
    for name in ("mean", "target"):
        store.chunk_file(name, 1).unlink()
    with pytest.raises(StoreError, match=r"files of chunk\(s\) \[1\] are missing.*--resume"):
        sk.dataset.show(path, [5], tmp_path / "x.png")
    with pytest.warns(StoreRepaired, match=r"1 chunk\(s\) marked complete had lost files"):
        again = run(model, path)
    assert (again.computed, again.skipped) == (1, 2)
    assert_same_store(path, full)


def test_a_lost_complete_record_is_a_one_line_error_and_rebuilt_on_resume(model, full,
                                                                          tmp_path, capsys):
    path = tmp_path / "s"
    run(model, path)
    Store.open(path).chunk_file("mean", 2).unlink()   # and chunk 2 was never written
    zarr.open_group(path, mode="r+").__delitem__("complete")
    with pytest.raises(StoreError, match="lost its 'complete' record: resume"):
        open_store(path)
    assert cli.main(["show", str(path), "--index", "0", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "lost its 'complete' record" in err and err.count("\n") == 1
    with pytest.warns(StoreRepaired, match=r"rebuilt from the chunk files \(2 of 3"):
        again = run(model, path)
    assert (again.computed, again.skipped) == (1, 2)
    assert_same_store(path, full)


def truncate(path, name, chunk):
    file = Store.open(path).chunk_file(name, chunk)
    data = file.read_bytes()
    file.write_bytes(data[:len(data) // 2])
    return file


def test_a_damaged_chunk_is_one_line_in_show_and_computed_again_on_resume(model, full,
                                                                          tmp_path, capsys):
    path = tmp_path / "s"
    run(model, path, statistics=None)
    file = truncate(path, "mean", 1)
    assert cli.main(["show", str(path), "--index", "5", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "cannot be read in chunk(s) [1]" in err and str(file) in err
    assert err.count("\n") == 1
    # resuming with statistics reads every map: the damaged chunk is marked to be redone
    with pytest.raises(StoreError, match="chunk 1 of the store's array 'mean' cannot be read"):
        run(model, path)
    assert open_store(path)["complete"][:].tolist() == [1, 0, 1]
    again = run(model, path)
    assert (again.computed, again.skipped) == (1, 2)
    assert_same_store(path, full)


def test_statistics_asked_for_on_resuming_a_finished_store_are_computed(model, full, tmp_path):
    path = tmp_path / "s"
    run(model, path, statistics=None)
    assert "stats" not in open_store(path)
    again = run(model, path, statistics=("mean", "var"))
    assert again.computed == 0
    store = open_store(path)
    for name in ("class_mean", "var"):
        np.testing.assert_allclose(store[f"stats/mean/{name}"][:], full[f"stats/mean/{name}"][:],
                                   rtol=1e-6, atol=1e-8)
    files = sorted(p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file())
    run(model, path, statistics=("var",))                 # stored already: nothing is written
    assert sorted(p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()) == files


def test_the_same_aggregates_in_another_order_are_the_same_job(model, tmp_path):
    path = tmp_path / "s"
    run(model, path, aggregate=("mean", "sq"))
    again = run(model, path, aggregate=("sq", "mean"))
    assert (again.computed, again.skipped) == (0, 3)
    with pytest.raises(StoreError, match="another job"):
        run(model, path, aggregate=("sq",))


def test_resume_and_overwrite_together_are_refused(model, tmp_path, capsys):
    path = tmp_path / "s"
    run(model, path)
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        run(model, path, resume=True, overwrite=True)
    assert run(model, path, overwrite=True).computed == 3   # overwrite alone starts again
    job = ["attribute", "--model", "digits", "--data", "digits", "--limit", "3", "--n-samples",
           "2", "--quiet", "--out", str(tmp_path / "c")]
    assert cli.main(job) == 0
    assert cli.main([*job, "--resume", "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_a_store_without_repairs_warns_nothing(model, tmp_path):
    path = tmp_path / "s"
    run(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreRepaired)
        assert run(model, path).computed == 0


def test_the_command_says_what_it_repaired_in_one_line(tmp_path, capsys):
    job = ["attribute", "--model", "digits", "--data", "digits", "--limit", "6", "--n-samples",
           "2", "--chunk-size", "3", "--quiet", "--out", str(tmp_path / "s")]
    assert cli.main(job) == 0
    Store.open(tmp_path / "s").chunk_file("mean", 0).unlink()
    capsys.readouterr()
    assert cli.main([*job, "--resume"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"smoothkern attribute: note: {tmp_path / 's'}: 1 chunk(s) marked complete had lost "
        "files ([0]): computed again"]
    assert "computed 1, kept 1 of 2 chunks" in captured.out
