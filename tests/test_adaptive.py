"""Adaptive sample counts (tolerance=), the "sem" and "count" aggregates."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_resnet

import smoothkern as sk
from smoothkern.core.reducer import MIN_SAMPLES_TO_STOP

X = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
ALL = ("mean", "abs", "sq", "var", "geomean", "sem", "count")


@pytest.fixture(scope="module")
def model():
    return tiny_resnet()


@pytest.mark.parametrize("backend", ["torch", "vmap", "auto"])
def test_each_example_equals_a_fixed_run_with_its_count(model, backend):
    got = sk.smooth_grad(model, X, n_samples=40, tolerance=0.15, samples_per_pass=4,
                         aggregate=ALL, backend=backend)
    counts = got["count"].tolist()
    assert got["count"].shape == (4,) and got["count"].dtype == torch.int64
    assert all(MIN_SAMPLES_TO_STOP <= c <= 40 and c % 4 == 0 for c in counts)
    assert len(set(counts)) > 1                      # the examples did stop at different counts
    for b, count in enumerate(counts):
        fixed = sk.smooth_grad(model, X, n_samples=count, samples_per_pass=4,
                               aggregate=ALL[:-1], backend=backend)
        for name in ALL[:-1]:
            torch.testing.assert_close(got[name][b], fixed[name][b], rtol=1e-6, atol=1e-7)
        # and the stopping rule held where the example stopped early
        if count < 40:
            assert got["sem"][b].norm() <= 0.15 * got["mean"][b].norm()


def test_finished_examples_leave_later_passes(model, gradient_pass_rows):
    rows = gradient_pass_rows
    out = sk.smooth_grad(model, X, n_samples=40, tolerance=0.15, samples_per_pass=4,
                         aggregate="count")
    assert rows[0] == 4 * 4 and rows == sorted(rows, reverse=True) and rows[-1] < rows[0]
    assert sum(rows) == int(out.sum())               # one model row per sample drawn


def test_no_example_stops_before_its_error_bar_has_enough_samples(model):
    # A lucky low error bar from a handful of samples stopped examples far above the tolerance.
    out = sk.smooth_grad(model, X, n_samples=40, tolerance=10.0, samples_per_pass=2,
                         aggregate="count")
    assert out.tolist() == [MIN_SAMPLES_TO_STOP] * 4


def test_per_example_baselines_follow_their_examples(model):
    baseline = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    kw = dict(method="integrated_gradients", n_steps=4, baseline=baseline, samples_per_pass=2)
    got = sk.smooth_grad(model, X, n_samples=16, tolerance=0.4, aggregate=("mean", "count"),
                         **kw)
    for b, count in enumerate(got["count"].tolist()):
        fixed = sk.smooth_grad(model, X, n_samples=count, **kw)
        torch.testing.assert_close(got["mean"][b], fixed[b], rtol=1e-6, atol=1e-7)


def test_sem_and_count_against_the_loop_reference(model):
    want = sk.smooth_grad(model, X, n_samples=5, aggregate=("sem", "count"), backend="loop")
    got = sk.smooth_grad(model, X, n_samples=5, aggregate=("sem", "count"), samples_per_pass=2,
                         snapshots=(1, 5))
    torch.testing.assert_close(got["sem"][1], want["sem"], rtol=1e-5, atol=1e-7)
    assert got["sem"][0].isnan().all()                  # one sample has no standard error
    assert got["count"].tolist() == [[1] * 4, [5] * 4]
    assert want["count"].tolist() == [5] * 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(tolerance=0), "tolerance"), (dict(tolerance=-1.0), "tolerance"),
    (dict(tolerance=float("nan")), "tolerance"), (dict(tolerance=True), "tolerance"),
    (dict(tolerance=0.1, snapshots=(2, 4)), "snapshots"),
    (dict(tolerance=0.1, backend="loop"), "loop"),
    (dict(aggregate="median"), "unknown aggregate")])
def test_bad_tolerance_is_refused(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sk.smooth_grad(model, X, n_samples=4, **kwargs)


def test_the_convergence_test_is_batched_over_examples(model, monkeypatch):
    # One finalize per pass for all active examples (one host read), and one per distinct count
    # at the end: not one per example and pass, each a device sync on a GPU.
    calls = []
    original = sk.StreamingStats.finalize

    def counting(self, aggregates=sk.AGGREGATES):
        calls.append(self.shape)
        return original(self, aggregates)

    monkeypatch.setattr(sk.StreamingStats, "finalize", counting)
    batch = torch.rand(6, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    got = sk.smooth_grad(model, batch, n_samples=40, tolerance=0.3, samples_per_pass=4,
                         aggregate=("mean", "count"))
    passes = (got["count"].max().item() + 3) // 4
    assert len(calls) <= passes + len(got["count"].unique())
    assert all(shape[1] > 1 or len(batch) == 1 for shape in calls[:1])
