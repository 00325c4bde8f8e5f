"""Samples per pass: the memory probe, balanced chunks, the CPU row limits and their overrides."""

import math

import pytest
import torch
from helpers import tiny_resnet

import smoothkern as sk
from smoothkern.core.planning import (
    CPU_MEMORY_BUDGET,
    CPU_MIN_PASS_BYTES,
    CPU_MIN_PASSES,
    CPU_MIN_ROWS,
    CPU_ROWS,
    choose_samples_per_pass,
    forward_measuring_saved_bytes,
    memory_budget,
    rows_in_budget,
)

CPU = torch.device("cpu")
VARIABLES = ("SMOOTHKERN_CPU_ROWS", "SMOOTHKERN_MEMORY_BUDGET")


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch):
    """The planner's defaults, whatever the environment running the tests sets."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_auto_chunking_is_balanced():
    model = tiny_resnet()
    x = torch.rand(1, 3, 8, 8)
    _, row_bytes = forward_measuring_saved_bytes(model, x)
    assert row_bytes > x.numel() * 4
    k = choose_samples_per_pass(sk.methods.Gradient().rows_per_sample, x, row_bytes, 1, 50)
    passes = math.ceil(50 / k)
    assert 1 <= k <= 50 and passes * k - 50 < passes


def test_cpu_planning_splits_small_jobs_but_keeps_passes_efficient():
    row_bytes = 8 << 20
    rows = sk.methods.Gradient().rows_per_sample
    one, eight = torch.rand(1, 3, 8, 8), torch.rand(8, 3, 8, 8)
    # 50 rows of 8 MiB: four passes of 13 rather than two of 25 (peak memory follows the pass)
    assert choose_samples_per_pass(rows, one, row_bytes, 1, 50) == 13
    assert math.ceil(50 / 13) == CPU_MIN_PASSES
    # ...but no pass below CPU_MIN_PASS_BYTES: 50 rows of 4 MiB in three passes, of 1 MiB in
    # as few as CPU_ROWS allows (two of 25)
    assert choose_samples_per_pass(rows, one, 4 << 20, 1, 50) == 17
    assert 17 * (4 << 20) >= CPU_MIN_PASS_BYTES
    assert choose_samples_per_pass(rows, one, 1 << 20, 1, 50) == 25
    # a job below the row floor stays one pass; a bigger one fills CPU_ROWS
    assert choose_samples_per_pass(rows, one, row_bytes, 1, CPU_MIN_ROWS) == CPU_MIN_ROWS
    assert choose_samples_per_pass(rows, eight, 4 << 20, 1, 50) * 8 <= CPU_ROWS
    assert choose_samples_per_pass(rows, eight, 4 << 20, 1, 50) == 6
    # the memory budget still wins for huge rows
    assert choose_samples_per_pass(rows, eight, 1 << 40, 1, 50) == 1


def test_defaults_without_overrides():
    assert memory_budget(CPU) == CPU_MEMORY_BUDGET
    assert rows_in_budget(1 << 10, CPU) == CPU_ROWS
    assert rows_in_budget(CPU_MEMORY_BUDGET // 3, CPU) == 3


def test_cpu_rows_variable_is_honoured(monkeypatch):
    rows, eight = sk.methods.Gradient().rows_per_sample, torch.rand(8, 3, 8, 8)
    monkeypatch.setenv("SMOOTHKERN_CPU_ROWS", "16")
    assert rows_in_budget(1 << 20, CPU) == 16
    assert choose_samples_per_pass(rows, eight, 1 << 20, 1, 50) == 2  # 16 rows / 8 examples
    monkeypatch.setenv("SMOOTHKERN_CPU_ROWS", "200")          # rows small enough for the budget
    assert rows_in_budget(1 << 16, CPU) == 200
    # 400 rows of 64 KiB (25 MiB): too small a job to split; 200 rows a pass, two of 25
    assert choose_samples_per_pass(rows, eight, 1 << 16, 1, 50) == 25
    # 400 rows of 1 MiB are split: at most 100 rows (12 samples) a pass, 5 passes of 10
    monkeypatch.setenv("SMOOTHKERN_MEMORY_BUDGET", str(1 << 30))
    assert choose_samples_per_pass(rows, eight, 1 << 20, 1, 50) == 10
    monkeypatch.setenv("SMOOTHKERN_CPU_ROWS", "")  # empty: the default
    assert rows_in_budget(1 << 20, CPU) == CPU_ROWS


def test_memory_budget_variable_is_honoured(monkeypatch):
    monkeypatch.setenv("SMOOTHKERN_MEMORY_BUDGET", "1e6")
    assert memory_budget(CPU) == 1_000_000
    assert rows_in_budget(100_000, CPU) == 10
    assert rows_in_budget(10**7, CPU) == 1  # never below one row


@pytest.mark.parametrize("name", VARIABLES)
@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5", "nan", "inf"])
def test_bad_override_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"{name} must be a positive whole number"):
        rows_in_budget(1 << 20, CPU)


def test_cpu_rows_variable_sizes_the_passes_of_smooth_grad(monkeypatch):
    model, x = tiny_resnet(), torch.rand(1, 3, 8, 8)
    method = sk.methods.Gradient()
    original, sizes = method.attribute, []

    def recording(model, inputs, target):
        sizes.append(inputs.shape[0])
        return original(model, inputs, target)

    monkeypatch.setattr(method, "attribute", recording)
    want = sk.smooth_grad(model, x, n_samples=8, method=method, seed=1)
    assert sizes == [8]  # 8 rows: below CPU_MIN_ROWS, one pass
    sizes.clear()
    monkeypatch.setenv("SMOOTHKERN_CPU_ROWS", "3")
    got = sk.smooth_grad(model, x, n_samples=8, method=method, seed=1)
    assert sizes == [3, 3, 2]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)



def test_gpu_budget_counts_cached_but_free_memory(monkeypatch):
    from smoothkern.core import planning

    monkeypatch.delenv("SMOOTHKERN_MEMORY_BUDGET", raising=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1000, 8000))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3000)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1000)
    assert planning.gpu_free_bytes(torch.device("cuda")) == 3000
    assert planning.memory_budget(torch.device("cuda")) == int(3000 * planning.GPU_MEMORY_FRACTION)


def test_saved_bytes_are_measured_once_per_model_tree_and_shape(monkeypatch):
    import smoothkern.model_cache.cache as api

    calls = []
    measure = api.forward_measuring_saved_bytes

    def counting(model, x):
        calls.append(tuple(x.shape))
        return measure(model, x)

    monkeypatch.setattr(api, "forward_measuring_saved_bytes", counting)
    model = tiny_resnet()
    x = torch.rand(2, 3, 8, 8)
    first = sk.smooth_grad(model, x, n_samples=3)
    second = sk.smooth_grad(model, x, n_samples=3)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert len(calls) == 1
    sk.smooth_grad(model, torch.rand(2, 3, 9, 9), n_samples=3)      # another input shape
    assert len(calls) == 2
    model.fc = torch.nn.Linear(6, 5)                                   # another module tree
    sk.smooth_grad(model, x, n_samples=3)
    assert len(calls) == 3
    model.stem.weight.requires_grad_(False)                            # saved tensors change
    sk.smooth_grad(model, x, n_samples=3)
    assert len(calls) == 4


def test_reduced_precision_passes_are_sized_from_the_bytes_a_bf16_row_saves(monkeypatch):
    # The planner sized bf16 passes from float32 bytes; a bf16 row saves about half.
    import smoothkern.core.plan as plan

    seen = []
    original = plan.choose_samples_per_pass

    def recording(rows_per_sample, x, row_bytes, *args, **kwargs):
        seen.append(row_bytes)
        return original(rows_per_sample, x, row_bytes, *args, **kwargs)

    monkeypatch.setattr(plan, "choose_samples_per_pass", recording)
    model, x = tiny_resnet(), torch.rand(2, 3, 8, 8)
    sk.smooth_grad(model, x, 0, n_samples=3)
    sk.smooth_grad(model, x, 0, n_samples=3, compute_dtype=torch.bfloat16)
    fp32, bf16 = seen
    assert 0.3 * fp32 < bf16 < 0.8 * fp32


def test_a_bf16_row_does_not_count_the_weights_casts():
    # Under autocast the weights' bf16 copies are saved for backward once per pass; counted on a
    # one-row probe they outweighed a ResNet18's activations tenfold and sized passes at one
    # sample. Here 4 MiB of float32 weights (2 MiB as bf16) against 4 KiB of activations a row.
    from smoothkern.core.plan import _reduced_precision_row_bytes

    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 10)).eval()
    x = torch.rand(3, 1024)
    row = _reduced_precision_row_bytes(model, x, torch.bfloat16, None)
    assert 1024 * 2 <= row < 64 * 1024


def test_the_drop_in_sizes_bf16_passes_as_smooth_grad(monkeypatch):
    import smoothkern.captum as skc
    from smoothkern.core import engine

    seen = []
    original = engine.run

    def recording(model, job, *args, **kwargs):
        seen.append(job.samples_per_pass)
        return original(model, job, *args, **kwargs)

    monkeypatch.setattr(engine, "run", recording)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 10)).eval()
    x = torch.rand(2, 1024)
    for dtype in (None, torch.bfloat16):
        sk.smooth_grad(model, x, 0, n_samples=50, stdevs=0.1, compute_dtype=dtype)
        skc.NoiseTunnel(skc.Saliency(model)).attribute(x, target=0, nt_samples=50, stdevs=0.1,
                                                       compute_dtype=dtype)
    assert seen[0] == seen[1] and seen[2] == seen[3], seen


def test_the_cpu_row_cap_grows_with_the_reduced_precision_row():
    # CPU_ROWS is a cache limit in float32 rows; a bf16 row is about half of one.
    x = torch.rand(8, 3, 8, 8)
    small = 1 << 16
    assert choose_samples_per_pass(1, x, small, 1, 50) * 8 <= CPU_ROWS
    assert choose_samples_per_pass(1, x, small, 1, 50, row_scale=2.0) * 8 > CPU_ROWS
    assert choose_samples_per_pass(1, x, small, 1, 50, row_scale=2.0) * 8 <= 2 * CPU_ROWS
