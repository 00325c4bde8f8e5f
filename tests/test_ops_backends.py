"""The kernel-set table, pass strategies and user kernel sets (smoothkern.ops.backends)."""

import pytest
import torch
from helpers import tiny_mlp

import smoothkern as sk
from smoothkern.noise import NoiseKind
from smoothkern.ops import backends, extension
from smoothkern.ops.accumulate import accumulate_reference
from smoothkern.ops.perturb import perturb_reference


def test_the_table_ranks_the_kernel_sets():
    rows = {b.name: b for b in backends.KERNEL_SETS}
    assert list(rows) == ["torch", "cpp", "triton", "cuda"]
    assert rows["torch"].auto_priority < rows["cpp"].auto_priority
    assert rows["triton"].auto_priority < rows["cuda"].auto_priority
    assert rows["triton"].auto_device_types == ("cuda",)     # never auto on the CPU
    want = "cpp" if extension.has_ops() else "torch"
    assert backends.choose("auto", "cpu").kernels.name == want
    assert set(sk.backend_status("cpu")) == set(backends.names())


@pytest.mark.parametrize("name, passes", [("torch", "batched"), ("vmap", "vmap"),
                                          ("loop", "loop"), ("auto", "batched")])
def test_pass_strategies_are_string_valued(name, passes):
    choice = backends.choose(name, "cpu")
    assert isinstance(choice.passes, backends.PassStrategy)
    assert choice.passes == passes and f"{choice.passes}" == passes
    assert backends.PassStrategy(passes) is choice.passes


def test_unknown_and_unavailable_names_are_refused():
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        backends.choose("fast", "cpu")
    with pytest.raises(ValueError, match="backend 'cuda' is not available on cpu"):
        backends.choose("cuda", "cpu")
    with pytest.raises(ValueError, match="reserved"):
        backends.register(backends.Backend("loop", perturb_reference, accumulate_reference))


def test_a_users_kernel_set_object_runs_as_given():
    # A Backend object is accepted as backend=; its perturb gets the noise kind, which still
    # compares equal to its name.
    kinds = []

    def perturb(x, sigma, seed, start, count, noise, **kwargs):
        kinds.append(noise)
        return perturb_reference(x, sigma, seed, start, count, noise, **kwargs)

    mine = backends.Backend("mine", perturb, accumulate_reference)
    assert backends.choose(mine, "cpu") == backends.Choice(mine, backends.PassStrategy.BATCHED)
    model, x = tiny_mlp(), torch.rand(2, 7)
    got = sk.smooth_grad(model, x, n_samples=4, noise="uniform", backend=mine)
    want = sk.smooth_grad(model, x, n_samples=4, noise="uniform", backend="torch")
    torch.testing.assert_close(got, want)
    assert kinds and all(k == "uniform" and NoiseKind(k) is NoiseKind.UNIFORM for k in kinds)
