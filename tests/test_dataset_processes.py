"""Data-set jobs across processes: two gloo ranks under torchrun give the store of one process;
a process SIGKILLed between writing a chunk and marking it complete resumes to the same store."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import smoothkern as sk
from smoothkern import cli
from smoothkern.core.stats import direct_statistics
from smoothkern.dataset import open_store

pytest.importorskip("zarr")

TESTS = Path(__file__).parent
JOB = ["--model", "digits", "--data", "digits", "--limit", "10", "--n-samples", "3",
       "--batch-size", "2", "--chunk-size", "4", "--aggregate", "mean", "var", "--quiet"]


def _environment() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_two_gloo_ranks_under_torchrun_write_the_store_of_one_process(tmp_path):
    assert cli.main(["attribute", *JOB, "--out", str(tmp_path / "one")]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "smoothkern", "attribute", *JOB, "--out", str(tmp_path / "two")],
        env=_environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote") == 1  # rank 0 reports
    one, two = open_store(tmp_path / "one"), open_store(tmp_path / "two")
    assert two.attrs["smoothkern"]["finished_by"]["processes"] == 2
    for name in ("target", "label", "complete", "stats/class_count"):
        np.testing.assert_array_equal(two[name][:], one[name][:])
    for name in ("mean", "var"):
        np.testing.assert_allclose(two[name][:], one[name][:], rtol=1e-5, atol=1e-7)
        # the statistics merged across the ranks equal one pass over all stored maps
        maps, target = torch.from_numpy(two[name][:]), torch.from_numpy(two["target"][:])
        for stat, want in direct_statistics(maps, sk.AGGREGATES, 1e-10).items():
            np.testing.assert_allclose(two[f"stats/{name}/{stat}"][:], want.numpy(),
                                       rtol=1e-5, atol=1e-7)
        for c in target.unique().tolist():
            want = direct_statistics(maps[target == c], ("mean", "var"), 1e-10)
            for stat in ("mean", "var"):
                np.testing.assert_allclose(two[f"stats/{name}/class_{stat}"][c],
                                           want[stat].numpy(), rtol=1e-5, atol=1e-7)


KILLED_RUN = """
    import os, signal, sys
    import torch
    from helpers import tiny_resnet
    from torch.utils.data import TensorDataset
    import smoothkern as sk
    from smoothkern.dataset.store import Store

    mark = Store.mark_complete
    def mark_or_die(self, chunk):
        if chunk == 2:  # chunk 2's data are written, its mark is not
            os.kill(os.getpid(), signal.SIGKILL)
        mark(self, chunk)
    Store.mark_complete = mark_or_die
    x = torch.rand(17, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    sk.attribute_dataset(tiny_resnet(in_channels=1, classes=4), TensorDataset(x), sys.argv[1],
                         n_samples=3, batch_size=2, chunk_size=4, progress=False)
"""


@pytest.mark.slow
def test_a_run_killed_part_way_resumes_to_the_uninterrupted_store(tmp_path):
    from helpers import tiny_resnet
    from torch.utils.data import TensorDataset

    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_RUN),
                             str(tmp_path / "killed")], env=_environment(), capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    store = open_store(tmp_path / "killed")
    assert store["complete"][:].tolist() == [1, 1, 0, 0, 0]
    assert not np.isnan(store["mean"][8:12]).any()       # written but not marked: redone
    assert not store.attrs["smoothkern"]["finished"]
    x = torch.rand(17, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    model = tiny_resnet(in_channels=1, classes=4)
    kw = dict(n_samples=3, batch_size=2, progress=False)
    run = sk.attribute_dataset(model, TensorDataset(x), tmp_path / "killed", **kw)
    assert (run.computed, run.skipped) == (3, 2)
    sk.attribute_dataset(model, TensorDataset(x), tmp_path / "whole", chunk_size=4, **kw)
    resumed, whole = open_store(tmp_path / "killed"), open_store(tmp_path / "whole")
    for name in ("mean", "target", "complete", "stats/mean/mean", "stats/mean/class_var"):
        np.testing.assert_allclose(resumed[name][:], whole[name][:], rtol=1e-6, atol=1e-8)
    assert resumed.attrs["smoothkern"]["finished"]


FAILING_RANK = """
    import sys
    import torch
    import torch.distributed as dist
    from helpers import tiny_resnet
    from torch.utils.data import TensorDataset
    import smoothkern as sk
    import smoothkern.dataset.run as run_module
    from smoothkern.dataset import distributed

    dist.init_process_group("gloo")
    rank = dist.get_rank()

    def with_control_group(group=None):  # as under NCCL: control messages on a gloo group
        r = distributed.current_ranks(group)
        return distributed.Ranks(r.rank, r.world, r.group, r.device,
                                 distributed._control_group(group))

    run_module.current_ranks = with_control_group
    compute = run_module._compute_chunk

    def compute_or_fail(plan, store, chunk, *args):
        if rank == 1 and chunk == 3:  # rank 1's second chunk
            raise RuntimeError("rank 1 lost its GPU")
        return compute(plan, store, chunk, *args)

    run_module._compute_chunk = compute_or_fail
    x = torch.rand(17, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    try:
        sk.attribute_dataset(tiny_resnet(in_channels=1, classes=4), TensorDataset(x),
                             sys.argv[1], n_samples=2, batch_size=2, chunk_size=2,
                             progress=False)
    except Exception as err:
        print(f"rank {rank}: {type(err).__name__}: {err}", flush=True)
    dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_rank_that_fails_stops_the_other_over_the_control_group(tmp_path):
    from helpers import tiny_resnet
    from torch.utils.data import TensorDataset

    script = tmp_path / "failing_rank.py"
    script.write_text(textwrap.dedent(FAILING_RANK))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(tmp_path / "s")], env=_environment(), capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1: RuntimeError: rank 1 lost its GPU" in done.stdout
    assert "rank 0: RankFailed: rank(s) [1] failed" in done.stdout
    store = open_store(tmp_path / "s")
    assert store["complete"][:].tolist()[:3] == [1, 1, 1]   # round 1 done, then both stopped
    assert not store.attrs["smoothkern"]["finished"]
    x = torch.rand(17, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    run = sk.attribute_dataset(tiny_resnet(in_channels=1, classes=4), TensorDataset(x),
                               tmp_path / "s", n_samples=2, batch_size=2, progress=False)
    assert run.computed + run.skipped == 9 and open_store(tmp_path / "s").attrs[
        "smoothkern"]["finished"]
