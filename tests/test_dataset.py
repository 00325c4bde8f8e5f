"""attribute_dataset: the store against smooth_grad and plain loops, the refusals, statistics."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from helpers import tiny_resnet
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import smoothkern as sk
from smoothkern.core.stats import direct_statistics
from smoothkern.dataset import StoreError, open_store
from smoothkern.dataset.distributed import Ranks
from smoothkern.dataset.statistics import ClassStats

zarr = pytest.importorskip("zarr")

N = 13  # odd: a short last chunk and a short last batch
X = torch.rand(N, 1, 6, 6, generator=torch.Generator().manual_seed(0))
Y = torch.arange(N) % 3
FAST = dict(n_samples=4, batch_size=3, chunk_size=5, progress=False)


@pytest.fixture(scope="module")
def model():
    return tiny_resnet(in_channels=1, classes=4)


def test_the_store_holds_each_examples_smooth_grad(model, tmp_path):
    aggregates = ("mean", "var", "count")
    run = sk.attribute_dataset(model, TensorDataset(X, Y), tmp_path / "s", aggregate=aggregates,
                               noise="uniform", seed=5, **FAST)
    assert (run.examples, run.chunks, run.computed, run.skipped) == (N, 3, 3, 0)
    store = open_store(tmp_path / "s")
    whole = sk.smooth_grad(model, X, n_samples=4, aggregate=aggregates, noise="uniform", seed=5)
    for name in ("mean", "var"):
        assert store[name].shape == (N, 1, 6, 6) and store[name].chunks[0] == 5
        np.testing.assert_allclose(store[name][:], whole[name].numpy(), rtol=1e-5, atol=1e-7)
    assert store["count"][:].tolist() == [4] * N
    assert store["target"][:].tolist() == model(X).argmax(1).tolist()
    assert store["label"][:].tolist() == Y.tolist()
    assert store["complete"][:].tolist() == [1, 1, 1]
    record = store.attrs["smoothkern"]
    assert record["finished"] and record["job"]["options"]["seed"] == 5
    assert record["versions"]["smoothkern"] == sk.__version__


def test_statistics_equal_plain_per_class_statistics_of_the_stored_maps(model, tmp_path):
    sk.attribute_dataset(model, TensorDataset(X, Y), tmp_path / "s", aggregate=("mean", "sq"),
                         target="label", **FAST)
    store = open_store(tmp_path / "s")
    target = torch.from_numpy(store["target"][:])
    assert target.tolist() == Y.tolist()
    assert store["stats/class_count"][:].tolist() == [5, 4, 4, 0]
    for name in ("mean", "sq"):
        maps = torch.from_numpy(store[name][:])
        for stat, want in direct_statistics(maps, sk.AGGREGATES, 1e-10).items():
            np.testing.assert_allclose(store[f"stats/{name}/{stat}"][:], want.numpy(),
                                       rtol=1e-5, atol=1e-7)
        per_class = store[f"stats/{name}/class_mean"][:]
        for c in range(3):
            np.testing.assert_allclose(per_class[c], maps[target == c].double().mean(0).numpy(),
                                       rtol=1e-5, atol=1e-7)
        assert np.isnan(per_class[3]).all()  # a class with no example


class ThreadRanks:
    """An all-reduce sum between threads standing in for ranks."""

    def __init__(self, world):
        import threading

        self.barrier, self.posted = threading.Barrier(world), {}

    def sum(self, rank, values):
        self.posted[rank] = values.clone()
        self.barrier.wait()
        total = sum(self.posted[r] for r in sorted(self.posted))
        self.barrier.wait()
        return total


def test_states_reduced_across_ranks_equal_one_pass():
    import threading

    maps = torch.randn(40, 2, 3, generator=torch.Generator().manual_seed(1)) ** 3
    target = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(2)) % 4
    maps[target == 1] += 100.0  # far from zero: a naive sum of squares would lose digits
    single = ClassStats(4, (2, 3), 1e-10)
    single.update(maps, target)
    ranks = [ClassStats(4, (2, 3), 1e-10) for _ in range(3)]
    for chunk in range(8):  # chunks of 5 dealt round-robin, as the ranks take them
        rows = slice(5 * chunk, 5 * chunk + 5)
        ranks[chunk % 3].update(maps[rows], target[rows])
    group = ThreadRanks(3)
    threads = [threading.Thread(target=state.reduce, args=(functools.partial(group.sum, r), 3))
               for r, state in enumerate(ranks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for merged in ranks:  # every rank ends with the merged states
        assert merged.counts().tolist() == single.counts().tolist()
    merged = ranks[0]
    got, want = merged.finalize(), single.finalize()
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=1e-12, atol=1e-12, equal_nan=True)
    for c in range(4):  # and both equal the plain statistics of the class's maps
        plain = direct_statistics(maps[target == c], sk.AGGREGATES, 1e-10)
        for name in sk.AGGREGATES:
            torch.testing.assert_close(got["class_" + name][c], plain[name], rtol=1e-10,
                                       atol=1e-12)


def test_sweeps_and_snapshots_keep_their_dims_after_n(model, tmp_path):
    kw = dict(noise_level=(0.1, 0.3), snapshots=(2, 4), aggregate=("mean", "count"))
    sk.attribute_dataset(model, TensorDataset(X), tmp_path / "s", store_dtype=torch.float16,
                         statistics=("mean",), **kw, **FAST)
    store = open_store(tmp_path / "s")
    whole = sk.smooth_grad(model, X, n_samples=4, **kw)
    assert store["mean"].dtype == np.float16 and store["mean"].shape == (N, 2, 2, 1, 6, 6)
    np.testing.assert_allclose(store["mean"][:].astype(np.float32),
                               whole["mean"].movedim(2, 0).numpy(), rtol=2e-3, atol=1e-4)
    assert store["count"][:].tolist() == whole["count"].T.tolist()
    assert store["label"][:].tolist() == [-1] * N
    assert store["stats/mean/class_mean"].shape == (4, 2, 2, 1, 6, 6)


def test_a_dataloader_is_read_by_index_with_its_collate_function(model, tmp_path):
    def collate(items):
        return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])

    loader = DataLoader(TensorDataset(X, Y), batch_size=4, collate_fn=collate)
    sk.attribute_dataset(model, loader, tmp_path / "a", n_samples=3, progress=False)
    sk.attribute_dataset(model, TensorDataset(X, Y), tmp_path / "b", n_samples=3, batch_size=6,
                         progress=False)
    a, b = open_store(tmp_path / "a"), open_store(tmp_path / "b")
    np.testing.assert_allclose(a["mean"][:], b["mean"][:], rtol=1e-5, atol=1e-7)
    assert a["label"][:].tolist() == Y.tolist()


def test_resume_skips_complete_chunks_and_redoes_the_rest(model, tmp_path):
    data = TensorDataset(X, Y)
    sk.attribute_dataset(model, data, tmp_path / "full", **FAST)
    sk.attribute_dataset(model, data, tmp_path / "cut", **FAST)
    cut = zarr.open_group(tmp_path / "cut", mode="r+")
    cut["complete"][1] = 0                      # as if the run died before marking chunk 1
    cut["mean"][5:10] = np.full((5, 1, 6, 6), 7.0, dtype=np.float32)   # a half-written chunk
    run = sk.attribute_dataset(model, data, tmp_path / "cut", **FAST)
    assert (run.computed, run.skipped) == (1, 2)
    full, cut = open_store(tmp_path / "full"), open_store(tmp_path / "cut")
    for name in ("mean", "target", "label", "complete", "stats/mean/class_mean"):
        np.testing.assert_array_equal(cut[name][:], full[name][:])


class NoLen(Dataset):
    def __getitem__(self, index):
        return X[index]


class Stream(IterableDataset):
    def __iter__(self):
        return iter(X)


@pytest.mark.parametrize("data, kwargs, error, match", [
    (TensorDataset(X), dict(target="label"), ValueError, "no labels"),
    (TensorDataset(X), dict(store_dtype=torch.bfloat16), TypeError, "store_dtype"),
    (TensorDataset(X), dict(example_index=3), TypeError, "example_index"),
    (TensorDataset(X), dict(target=[1, 2]), ValueError, "one class per example"),
    (TensorDataset(X), dict(stdevs=torch.ones(4)), ValueError, "one σ per example"),
    (TensorDataset(X), dict(snapshots=(2, 9)), ValueError, "snapshots"),
    (TensorDataset(X), dict(statistics=("count",)), ValueError, "element-wise"),
    (TensorDataset(X), dict(method="no_such_method"), ValueError, "unknown method"),
    (TensorDataset(X.long()), {}, TypeError, "floating-point"),
    (DataLoader(TensorDataset(X), shuffle=True), {}, ValueError, "shuffles"),
    (Stream(), {}, TypeError, "IterableDataset"),
    (NoLen(), {}, TypeError, "__len__"),
])
def test_bad_arguments_are_refused_before_any_work(model, tmp_path, data, kwargs, error, match):
    with pytest.raises(error, match=match):
        sk.attribute_dataset(model, data, tmp_path / "s", n_samples=2, progress=False, **kwargs)
    assert not (tmp_path / "s").exists()


def test_a_model_in_training_mode_is_refused_and_left_as_it_was(tmp_path):
    model = tiny_resnet(in_channels=1, classes=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="training mode"):
        sk.attribute_dataset(model, TensorDataset(X), tmp_path / "s", progress=False)
    assert model.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_another_job_in_the_same_store_is_refused(model, tmp_path):
    data, path = TensorDataset(X, Y), tmp_path / "s"
    sk.attribute_dataset(model, data, path, **FAST)
    files = sorted(p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file())
    other_model = tiny_resnet(seed=1, in_channels=1, classes=4)
    for args, kwargs, match in [
        ((model, data), dict(FAST, n_samples=5), "n_samples: 5 here, 4 in the store"),
        ((model, data), dict(FAST, seed=1), "seed"),
        ((model, data), dict(FAST, method="saliency"), "method"),
        ((model, data), dict(FAST, target="label"), "target"),
        ((other_model, data), FAST, "model.sha256"),
        ((model, TensorDataset(X.flip(0), Y)), FAST, "data.fingerprint"),
        ((model, TensorDataset(X[:9], Y[:9])), FAST, "data.examples: 9 here, 13"),
        ((model, data), dict(FAST, chunk_size=4), "chunk_size=4"),
        ((model, data), dict(FAST, resume=False), "resume it"),
    ]:
        with pytest.raises(StoreError, match=match):
            sk.attribute_dataset(*args, path, **kwargs)
    assert sorted(p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()) == files
    # options that do not change the maps may differ; overwrite starts again
    run = sk.attribute_dataset(model, data, path, **dict(FAST, batch_size=2, chunk_size=None,
                                                         backend="torch"))
    assert run.computed == 0
    run = sk.attribute_dataset(model, data, path, **dict(FAST, n_samples=5), overwrite=True)
    assert run.computed == 3 and open_store(path).attrs["smoothkern"]["job"]["options"][
        "n_samples"] == 5


def test_folders_that_are_not_stores_are_never_written_or_replaced(model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="not a smoothkern data-set store"):
            sk.attribute_dataset(model, TensorDataset(X), tmp_path, overwrite=overwrite, **FAST)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(StoreError, match="not a folder"):
        sk.attribute_dataset(model, TensorDataset(X), tmp_path / "notes.txt", **FAST)
    with pytest.raises(ValueError, match="not a smoothkern data-set store"):
        open_store(tmp_path)


def test_a_missing_zarr_names_the_extra(model, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match=r"smoothkern\[dataset\]"):
        sk.attribute_dataset(model, TensorDataset(X), tmp_path / "s", **FAST)


def test_several_processes_without_a_process_group_are_refused(model, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="init_distributed"):
        sk.attribute_dataset(model, TensorDataset(X), tmp_path / "s", **FAST)


class OtherRankFails(Ranks):
    """Rank 0 of two, whose partner fails at meeting FAIL_AT[0] (collectives faked). Meetings:
    1 the job is checked, 2 the store is open, 3 the first round of chunks is done."""

    def broadcast(self, obj):
        return obj

    def round_done(self, images, failed):
        ROUNDS.append(images)
        return images, [1] if len(ROUNDS) == FAIL_AT[0] else []


ROUNDS: list[int] = []
FAIL_AT = [3]


@pytest.mark.parametrize("meeting, message", [(1, "could not check the job"),
                                              (2, "could not open the store")])
def test_a_rank_failing_to_start_stops_the_others(model, tmp_path, monkeypatch, meeting,
                                                  message):
    import smoothkern.dataset.run as run_module

    ROUNDS.clear()
    FAIL_AT[0] = meeting
    monkeypatch.setattr(run_module, "current_ranks", lambda group: OtherRankFails(0, 2))
    with pytest.raises(RuntimeError, match=message):
        sk.attribute_dataset(model, TensorDataset(X), tmp_path / "s", **FAST)
    assert ROUNDS == [0] * meeting


def test_a_failing_rank_stops_every_rank_and_leaves_the_store_resumable(model, tmp_path,
                                                                         monkeypatch):
    import smoothkern.dataset.run as run_module

    data, path = TensorDataset(X, Y), tmp_path / "s"
    ROUNDS.clear()
    FAIL_AT[0] = 3
    monkeypatch.setattr(run_module, "current_ranks", lambda group: OtherRankFails(0, 2))
    with pytest.raises(RuntimeError, match=r"rank\(s\) \[1\] failed.*resume"):
        sk.attribute_dataset(model, data, path, **FAST)
    assert ROUNDS == [0, 0, 5]                               # rank 0 finished its chunk 0
    store = open_store(path)
    assert store["complete"][:].tolist() == [1, 0, 0]
    assert not store.attrs["smoothkern"]["finished"]
    monkeypatch.undo()
    run = sk.attribute_dataset(model, data, path, **FAST)
    assert (run.computed, run.skipped) == (2, 1)
    whole = sk.smooth_grad(model, X, n_samples=4)
    np.testing.assert_allclose(open_store(path)["mean"][:], whole.numpy(), rtol=1e-5, atol=1e-7)


def test_a_huge_batch_or_chunk_is_capped_at_the_data_sets_size(model, tmp_path):
    data = TensorDataset(X, Y)
    kw = dict(n_samples=2, batch_size=10**6, chunk_size=10**7, progress=False)
    run = sk.attribute_dataset(model, data, tmp_path / "s", **kw)
    store = open_store(tmp_path / "s")
    assert store["mean"].chunks[0] == N and store.attrs["smoothkern"]["layout"]["chunk_size"] == N
    assert (run.chunks, run.computed) == (1, 1)
    again = sk.attribute_dataset(model, data, tmp_path / "s", **kw)  # the same call resumes
    assert (again.computed, again.skipped) == (0, 1)
    np.testing.assert_allclose(store["mean"][:], sk.smooth_grad(model, X, n_samples=2).numpy(),
                               rtol=1e-5, atol=1e-7)


def test_statistics_hold_and_write_only_the_classes_seen(model, tmp_path):
    stats = ClassStats(1000, (3, 16, 16), 1e-10)
    stats.update(torch.randn(4, 3, 16, 16), torch.tensor([5, 5, 907, 5]))
    stats.reduce(lambda t: t)  # one rank
    assert sorted(stats.states) == [5, 907] and stats.counts()[[5, 907]].tolist() == [3, 1]
    sk.attribute_dataset(model, TensorDataset(X), tmp_path / "s", target=2, aggregate="mean",
                         statistics=("mean", "var"), **FAST)
    store = open_store(tmp_path / "s")
    per_class = store["stats/mean/class_mean"]
    assert per_class.shape == (4, 1, 6, 6) and per_class.chunks == (1, 1, 6, 6)
    assert np.isnan(per_class[[0, 1, 3]]).all() and not np.isnan(per_class[2]).any()
    files = [p for p in (tmp_path / "s" / "stats" / "mean" / "class_mean").rglob("*")
             if p.is_file() and p.name != "zarr.json"]
    assert len(files) == 1  # the other classes' rows take no file
