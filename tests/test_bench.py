"""The benchmark harness in the package: rows and fields, JSON, the command from outside the
checkout, and its one-line errors. Tiny model, m = 3, one repeat; nothing here asserts on time."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from smoothkern import bench, cli

M = 3


class TinyNet(nn.Module):
    """A model class of the caller's own (the memory subprocess must import it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TinyNet().eval(), torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def result(tiny):
    model, x = tiny
    return bench.benchmark(model, x, n_samples=M, repeats=1, memory=False)


def test_rows_and_fields(result):
    assert [r.variant for r in result.rows] == list(bench.VARIANTS)
    for key in ("cpu", "cores", "threads", "gpu", "torch", "python", "smoothkern"):
        assert key in result.machine
    assert result.config["n_samples"] == M and result.config["repeats"] == 1
    assert result.config["input_shape"] == [2, 1, 8, 8]
    loop, ours = result.row("loop"), result.row("smoothkern")
    assert ours.rel_l2 == 0 and ours.error_kind == "reference"
    assert loop.rel_l2 < 1e-4 and loop.error_kind == "same seed"  # same seed, same noise
    assert loop.speedup_vs_loop == 1
    for row in (loop, ours):
        assert row.time_s > 0 and row.skipped is None and row.peak_mib is None
    assert result.monte_carlo_rel_l2 > 0


def test_precision_rows_follow_smooth_grad(result):
    for variant in bench.PRECISIONS:
        row = result.row(variant)
        if row.skipped is None:
            assert row.error_kind == "precision" and math.isfinite(row.rel_l2)
            assert "seed-to-seed" in row.note
        else:
            assert row.skipped.startswith("failed: ")


def test_captum_rows(result):
    pytest.importorskip("captum")
    for variant in ("captum", "captum-bs10"):
        row = result.row(variant)
        assert row.skipped is None and row.time_s > 0
        assert row.error_kind == "Monte-Carlo" and 0 < row.rel_l2 < 10


def test_missing_captum_gives_skipped_rows(tiny, monkeypatch):
    monkeypatch.setattr(bench.machine, "captum_version", lambda: None)
    model, x = tiny
    result = bench.benchmark(model, x, n_samples=M, repeats=1, memory=False, errors=False)
    for variant in ("captum", "captum-bs10"):
        assert "captum is not installed" in result.row(variant).skipped
    table = result.table()
    assert "skipped: captum is not installed" in table and "| loop" in table


def test_json_round_trips(result):
    text = result.to_json()
    assert bench.BenchResult.from_json(text) == result
    data = json.loads(text)
    assert {"machine", "config", "rows", "monte_carlo_rel_l2", "notes"} <= set(data)
    assert data["rows"][0]["variant"] == "loop"


def test_table_names_machine_and_rows(result):
    table = result.table()
    assert table.startswith("machine: ") and result.machine["cpu"] in table
    assert "| variant | time (s) |" in table and "smoothkern fp32" in table


def test_backends_and_extra_rows(tiny):
    model, x = tiny
    calls = []
    result = bench.benchmark(model, x, n_samples=M, repeats=2, memory=False,
                             variants=["smoothkern"], backends=["torch"],
                             extra={"noop": lambda: calls.append(1)})
    assert [r.variant for r in result.rows] == ["smoothkern", "backend=torch", "noop"]
    assert result.row("backend=torch").rel_l2 < 1e-4
    assert result.row("noop").rel_l2 is None and len(calls) == 3  # warm-up + 2 repeats


@pytest.mark.skipif(not bench.rss_measurable(), reason="needs Linux /proc/self VmHWM")
def test_memory_in_a_fresh_process(tiny):
    model, x = tiny  # TinyNet lives in this test module: the child must import it
    result = bench.benchmark(model, x, n_samples=M, repeats=1, variants=["smoothkern"],
                             errors=False)
    row = result.row("smoothkern")
    assert row.memory == "subprocess VmHWM", row.memory
    assert row.peak_mib >= 0


@pytest.mark.parametrize("kwargs, match", [({"n_samples": 0}, "n_samples"),
                                           ({"variants": ["fast"]}, "unknown benchmark variant"),
                                           ({"method": "nope"}, "unknown method"),
                                           ({"repeats": 0}, "repeats"),
                                           ({"target": [1, 2, 3]}, "one class per example")])
def test_bad_arguments(tiny, kwargs, match):
    model, x = tiny
    with pytest.raises(ValueError, match=match):
        bench.benchmark(model, x, memory=False, **kwargs)


def test_command_runs_from_the_installed_package(tmp_path):
    # cwd=tmp_path: no benchmarks/ folder nearby, only the installed smoothkern.
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-m", "smoothkern", "bench", "--quick", "--samples",
                           str(M), "--variants", "loop", "smoothkern", "--json", str(out),
                           "--quiet"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| loop (m sequential passes) |" in done.stdout and f"wrote {out}" in done.stdout
    data = json.loads(out.read_text())
    assert [r["variant"] for r in data["rows"]] == ["loop", "smoothkern"]
    assert data["config"]["model"] == "digits (bundled weights)"
    if bench.rss_measurable():
        assert all(r["memory"] == "subprocess VmHWM" for r in data["rows"]), data["rows"]


def test_command_json_on_stdout(capsys):
    assert cli.main(["bench", "--quick", "--samples", str(M), "--variants", "smoothkern",
                     "--no-memory", "--json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"][0]["variant"] == "smoothkern" and data["config"]["n_samples"] == M


@pytest.mark.parametrize("path, message", [("/no/such/dir/out.json", "no folder /no/such/dir"),
                                           (".", "it is a folder")])
def test_command_json_path_is_checked_before_the_benchmark(path, message, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the benchmark ran before the --json path was checked")

    monkeypatch.setattr(bench, "named_inputs", fail)
    monkeypatch.setattr(bench, "benchmark", fail)
    status = cli.main(["bench", "--quick", "--variants", "smoothkern", "--no-memory", "--quiet",
                       "--json", path])
    err = capsys.readouterr().err
    assert status == cli.EXIT_USAGE
    assert err == f"smoothkern bench: error: cannot write {path}: {message}\n"


@pytest.mark.parametrize("argv, message", [
    (["--model", "no_such_model"], "unknown model 'no_such_model'"),
    (["--input-shape", "3", "32", "32"], "does not take inputs of shape [3, 32, 32]"),
    (["--weights", "/no/such/file.pt"], "/no/such/file.pt"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--json", "/no/such/dir/out.json"], "cannot write /no/such/dir/out.json"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
])
def test_command_errors_are_one_line(argv, message, capsys):
    status = cli.main(["bench", "--quick", "--samples", "2", "--variants", "smoothkern",
                       "--no-memory", "--quiet", *argv])
    err = capsys.readouterr().err
    assert status == cli.EXIT_USAGE
    assert err.startswith("smoothkern bench: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_samples_saved_reports_each_design_against_iid():
    from helpers import tiny_resnet

    from smoothkern.bench.samples_saved import format_savings, samples_saved

    model, x = tiny_resnet(), torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    savings = samples_saved(model, x, 0, n_samples=8, seeds=2)
    assert [s.sampling for s in savings] == ["iid", "antithetic", "stratified"]
    iid = savings[0]
    assert iid.samples_needed == 8 and iid.seconds_saved == 0.0 and iid.error_at_m > 0
    for s in savings[1:]:
        assert s.samples_needed is None or 1 <= s.samples_needed <= 8
        assert s.error_at_m > 0
    assert "stratified" in format_savings(savings, 8)
    with pytest.raises(TypeError, match="sets sampling"):
        samples_saved(model, x, 0, n_samples=4, sampling="iid")
