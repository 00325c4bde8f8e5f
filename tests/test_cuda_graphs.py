"""CUDA graphs of the model passes: replayed passes equal eager ones; graphs are kept across
calls while the model is unchanged; models that cannot be captured fall back to eager passes
with one warning; the CPU refuses clearly.

The bookkeeping (what is captured when, what is kept, what invalidates it) runs on the CPU with
a stand-in for ``torch.cuda.CUDAGraph`` whose replay runs the captured pass again; the
``cuda``-marked tests run the real capture."""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch
from helpers import tiny_resnet
from torch import nn

import smoothkern as sk
from smoothkern import api
from smoothkern.methods import Gradient, InputXGradient, IntegratedGradients, Saliency
from smoothkern.model_cache import cache, cuda_graphs
from smoothkern.model_cache.cuda_graphs import GraphedPasses, method_key


def test_cpu_rows_are_refused():
    with pytest.raises(ValueError, match="CUDA rows"):
        GraphedPasses().attribute(tiny_resnet(), Gradient(), torch.rand(2, 3, 8, 8),
                                  torch.zeros(2, dtype=torch.long))


class Captures(list):
    """(method, rows shape) of each capture, and how many replays ran."""

    replays = 0


@pytest.fixture
def cpu_graphs(monkeypatch):
    """Graphs on the CPU: capture records (method, rows shape) and returns a stand-in whose
    replay runs the pass again on the static rows. Yields the list of captures."""
    captures = Captures()

    def capture(self, model, method, rows, target):
        static_rows, static_target = rows.clone(), target.clone()
        out = self._run(model, method, static_rows, static_target)
        runner = weakref.ref(model)            # a real graph holds no module either

        class Replay:
            def replay(_):
                captures.replays += 1
                out.copy_(self._run(runner(), method, static_rows, static_target))

        captures.append((type(method).__name__, tuple(rows.shape)))
        return cuda_graphs._Graph(Replay(), static_rows, static_target, out, method)

    monkeypatch.setattr(GraphedPasses, "DEVICE_TYPE", "cpu")
    monkeypatch.setattr(GraphedPasses, "_capture", capture)
    monkeypatch.setattr(GraphedPasses, "_synchronize", staticmethod(lambda device: None))
    monkeypatch.setattr(api, "check_cuda_graphs", lambda *args: None)
    sk.clear_caches()
    yield captures
    sk.clear_caches()


X = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(5))


def graphed(model, exact=True, **kwargs):
    """smooth_grad with cuda_graphs=True, checked against the eager call (exactly, unless
    the passes were split differently: then within float32 merge-order rounding)."""
    kw = {"n_samples": 6, "samples_per_pass": 3, "seed": 1, **kwargs}
    got = sk.smooth_grad(model, X, [1, 4], cuda_graphs=True, **kw)
    want = sk.smooth_grad(model, X, [1, 4], **kw)
    torch.testing.assert_close(got, want, **({"rtol": 0, "atol": 0} if exact else {}))
    return got


def test_graphs_are_kept_across_calls(cpu_graphs):
    model = tiny_resnet()
    graphed(model)
    graphed(model)
    assert cpu_graphs == [("Gradient", (6, 3, 9, 11))]       # one pass shape, captured once
    assert cpu_graphs.replays == 4                            # two passes a call, replayed
    graphed(model, samples_per_pass=2)                         # a new shape: one more
    assert len(cpu_graphs) == 2


@pytest.mark.parametrize("prepare", [False, True])
def test_a_changed_model_gets_new_graphs(cpu_graphs, prepare):
    model = tiny_resnet()
    graphed(model, prepare=prepare)
    with torch.no_grad():           # in place: a graph reads the new values, and a prepared
        model.fc.weight.mul_(2.0)   # copy writes its derived weights in place
        model.bn1.running_var.data.mul_(3.0)
    graphed(model, prepare=prepare)
    count = 1
    assert len(cpu_graphs) == count
    changes = [
        lambda: setattr(model.fc, "weight", nn.Parameter(model.fc.weight.detach().clone())),
        lambda: model.conv1.register_forward_hook(lambda m, a, out: out * 0.5),
        lambda: model.conv1._forward_hooks.clear(),
        lambda: setattr(model, "extra_flag", True),   # a plain attribute forward could read
    ]
    for change in changes:        # a new address, a hook a replay would not run, ...
        change()
        graphed(model, prepare=prepare)
        count += 1
        assert len(cpu_graphs) == count


def test_methods_share_graphs_by_their_configuration(cpu_graphs):
    model = tiny_resnet()
    graphed(model, method="saliency")
    graphed(model, method="saliency")
    graphed(model, method="saliency", abs=False)
    relu_model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),
                               nn.Linear(4 * 7 * 9, 5)).eval()
    graphed(relu_model, method="guided_backprop")   # its hooks are the method's: kept too
    graphed(relu_model, method="guided_backprop")
    assert [name for name, _ in cpu_graphs] == ["Saliency", "Saliency", "GuidedBackprop"]
    assert method_key(Saliency()) == method_key(Saliency())
    assert method_key(Saliency()) != method_key(Saliency(abs=False))
    assert method_key(IntegratedGradients(baseline=torch.zeros(1, 3, 9, 11))) is None


def test_adaptive_counts_capture_each_shrinking_shape(cpu_graphs):
    model = tiny_resnet()
    kw = dict(n_samples=30, samples_per_pass=2, tolerance=0.15, aggregate=["mean", "count"],
              seed=2)
    got = sk.smooth_grad(model, X, [1, 4], cuda_graphs=True, **kw)
    want = sk.smooth_grad(model, X, [1, 4], **kw)
    torch.testing.assert_close(got["mean"], want["mean"], rtol=0, atol=0)
    assert torch.equal(got["count"], want["count"])
    assert len(set(got["count"].tolist())) == 2             # one example stopped first
    assert {shape[0] for _, shape in cpu_graphs} == {4, 2}


def test_graphs_go_with_the_model(cpu_graphs):
    model = tiny_resnet()
    graphed(model)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None and not any(e.graphs for e in cache._ENTRIES.values())


def test_smooth_grad_on_the_cpu_refuses_cuda_graphs():
    with pytest.raises(ValueError, match="cuda_graphs"):
        sk.smooth_grad(tiny_resnet(), torch.rand(1, 3, 8, 8), n_samples=2, cuda_graphs=True)


@pytest.mark.cuda
@pytest.mark.parametrize("method", [Gradient(), InputXGradient()])
@pytest.mark.parametrize("compute_dtype", [None, torch.bfloat16])
def test_replayed_passes_equal_eager_passes(method, compute_dtype):
    model = tiny_resnet().cuda()
    graphs = GraphedPasses(compute_dtype)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for rows_count in (6, 6, 4, 6):      # a repeated shape, a new one, the first again
        rows = torch.rand(rows_count, 3, 9, 11, device="cuda", generator=gen)
        target = torch.randint(0, 5, (rows_count,), device="cuda", generator=gen)
        got = graphs.attribute(model, method, rows, target).clone()
        with sk.precision.autocast(rows.device, compute_dtype):
            want = method.attribute(model, rows, target)
        # the same kernels on the same data; cuDNN may still pick another algorithm eagerly
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert graphs.replays == 4 and graphs.captures == 2 and graphs.disabled is None


@pytest.mark.cuda
def test_smooth_grad_with_graphs_equals_without():
    model = tiny_resnet().cuda()
    x = torch.rand(3, 3, 16, 16, device="cuda")
    kw = dict(n_samples=20, samples_per_pass=6, aggregate=["mean", "var"], seed=3)
    sk.clear_caches()
    eager = sk.smooth_grad(model, x, **kw)
    graphed = sk.smooth_grad(model, x, cuda_graphs=True, **kw)
    for name in eager:
        torch.testing.assert_close(graphed[name], eager[name], rtol=1e-6, atol=1e-7)
    (graphs,) = [g for e in cache._ENTRIES.values() for _, g in e.graphs.values()]
    assert graphs.disabled is None and graphs.replays == 4 and graphs.captures == 2


class HostSync(nn.Module):
    """A forward that reads a value on the host: cannot be captured."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        scale = float(x.abs().max().item()) + 1.0
        return self.fc(x.flatten(1)) / scale


@pytest.mark.cuda
def test_a_model_that_cannot_be_captured_runs_eagerly_with_one_warning():
    model = HostSync().cuda()
    graphs = GraphedPasses()
    rows = torch.rand(4, 12, device="cuda")
    target = torch.zeros(4, dtype=torch.long, device="cuda")
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        first = graphs.attribute(model, Gradient(), rows, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = graphs.attribute(model, Gradient(), rows, target)
    torch.testing.assert_close(first, second)
    assert graphs.disabled is not None


def test_integrated_gradients_runs_eagerly(cpu_graphs):
    model = tiny_resnet()
    graphed(model, method="integrated_gradients", n_steps=3)
    assert cpu_graphs == []


def test_out_of_memory_in_a_capture_splits_the_pass_and_keeps_graphs_on(cpu_graphs,
                                                                        monkeypatch):
    capture = GraphedPasses._capture

    def small_memory(self, model, method, rows, target):
        if rows.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return capture(self, model, method, rows, target)

    monkeypatch.setattr(GraphedPasses, "_capture", small_memory)
    model = tiny_resnet()
    graphed(model, exact=False)        # 6 rows a pass do not fit: split, then captured
    assert cpu_graphs and all(shape[0] <= 2 for _, shape in cpu_graphs)


class PoweredGradient(Gradient):
    """A user's method with private configuration: it must not share graphs."""

    def __init__(self, power):
        self._power = power

    def attribute(self, model, inputs, target):
        return super().attribute(model, inputs, target) ** self._power


def test_a_subclass_with_its_own_state_keeps_its_graphs_to_its_call(cpu_graphs):
    model = tiny_resnet()
    assert method_key(PoweredGradient(1)) is None and method_key(Gradient()) is not None
    first = graphed(model, method=PoweredGradient(1))
    second = graphed(model, method=PoweredGradient(2))     # not the first one's graph
    assert not torch.equal(first, second) and len(cpu_graphs) == 2
    (graphs,) = [g for e in cache._ENTRIES.values() for _, g in e.graphs.values()]
    assert all(key[0][0] != "object" for key in graphs._graphs)   # dropped after each call


def test_an_error_in_the_warm_up_is_raised_a_failed_capture_runs_eagerly(cpu_graphs,
                                                                      monkeypatch):
    def failing(error):
        def capture(self, model, method, rows, target):
            raise error
        return capture

    model = tiny_resnet()
    monkeypatch.setattr(GraphedPasses, "_capture", failing(ValueError("a user's mistake")))
    with pytest.raises(ValueError, match="a user's mistake"):
        graphed(model)
    capture_failed = cuda_graphs.CaptureFailed()
    capture_failed.__cause__ = RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(GraphedPasses, "_capture", failing(capture_failed))
    with pytest.warns(RuntimeWarning, match="could not be captured .*stream is capturing"):
        graphed(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # said once, then eager quietly
        graphed(model)


def test_a_call_never_evicts_a_graph_it_uses(cpu_graphs):
    """More pass shapes than slots (the README's snapshots example has five for four): each
    shape is captured once, and the next call replays them all."""
    model, method = tiny_resnet(), Gradient()
    shapes = (2, 4, 6, 8, 10)
    assert len(shapes) > cuda_graphs.MAX_GRAPHS
    graphs = cuda_graphs.graphed_passes(model, None, cuda_graphs.model_state(model))
    for _ in range(2):                                   # two calls
        for _ in range(2):                               # each runs every shape twice
            for rows in shapes:
                x = torch.rand(rows, 3, 9, 11)
                got = graphs.attribute(model, method, x, torch.zeros(rows, dtype=torch.long))
                torch.testing.assert_close(got, method.attribute(
                    model, x, torch.zeros(rows, dtype=torch.long)))
        graphs.drop_call_graphs()
    assert len(cpu_graphs) == len(shapes) and graphs.captures == len(shapes)
    assert graphs.replays == cpu_graphs.replays == 4 * len(shapes)     # every pass replayed


def test_numerics_flags_and_an_enclosing_autocast_are_part_of_the_key(cpu_graphs):
    model = tiny_resnet()
    graphed(model)
    benchmark = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = not benchmark
        graphed(model)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    assert len(cpu_graphs) == 2
    kw = {"n_samples": 6, "samples_per_pass": 3, "seed": 1}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sk.smooth_grad(model, X, [1, 4], cuda_graphs=True, **kw)
        want = sk.smooth_grad(model, X, [1, 4], **kw)
    assert len(cpu_graphs) == 3
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    graphed(model)                                   # back to the first key: replayed
    assert len(cpu_graphs) == 3


def test_kept_graph_pools_count_as_used_memory(cpu_graphs):
    from smoothkern.core import memory

    graphs = GraphedPasses()
    graphs.pool_bytes[torch.device("cpu")] = 1000
    assert memory.graph_pool_bytes(torch.device("cpu")) == 0      # no graph kept: nothing held
    model = tiny_resnet()
    graphs.attribute(model, Gradient(), X, torch.zeros(2, dtype=torch.long))
    graphs.pool_bytes[torch.device("cpu")] = 1000
    assert memory.graph_pool_bytes(torch.device("cpu")) == 1000
    del graphs
    import gc

    gc.collect()
    assert memory.graph_pool_bytes(torch.device("cpu")) == 0


@pytest.mark.cuda
def test_free_memory_leaves_out_kept_graph_pools():
    from smoothkern.core import planning

    sk.clear_caches()
    device = torch.device("cuda", torch.cuda.current_device())
    model = tiny_resnet().cuda()
    graphs = GraphedPasses()
    rows = torch.rand(64, 3, 32, 32, device=device)
    graphs.attribute(model, Gradient(), rows, torch.zeros(64, dtype=torch.long, device=device))
    held = graphs.kept_pool_bytes(device)
    assert held > 0
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    assert planning.gpu_free_bytes(device) == free + max(0, cached - held)


@pytest.mark.cuda
def test_a_failed_capture_leaves_the_allocator_usable(monkeypatch):
    """A capture that fails (its host sync not caught by the warm-up here) must close its pool:
    empty_cache and later captures of other models work, and replays happen."""
    monkeypatch.setattr(cuda_graphs, "no_host_sync", __import__("contextlib").nullcontext)
    rows = torch.rand(4, 12, device="cuda")
    target = torch.zeros(4, dtype=torch.long, device="cuda")
    broken = GraphedPasses()
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        broken.attribute(HostSync().cuda(), Gradient(), rows, target)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()                  # raised an internal assert before the fix
    model = tiny_resnet().cuda()
    graphs = GraphedPasses()
    x = torch.rand(6, 3, 9, 11, device="cuda")
    t = torch.zeros(6, dtype=torch.long, device="cuda")
    first = graphs.attribute(model, Gradient(), x, t).clone()
    second = graphs.attribute(model, Gradient(), x, t).clone()
    assert graphs.captures == 1 and graphs.replays == 2 and graphs.disabled is None
    torch.testing.assert_close(first, second)


@pytest.mark.cuda
def test_a_forward_that_syncs_is_found_before_capture():
    graphs = GraphedPasses()
    rows = torch.rand(4, 12, device="cuda")
    target = torch.zeros(4, dtype=torch.long, device="cuda")
    with pytest.warns(RuntimeWarning, match="could not be captured"):
        graphs.attribute(HostSync().cuda(), Gradient(), rows, target)
    assert graphs.captures == 0 and "synchroniz" in graphs.disabled
    assert torch.cuda.get_sync_debug_mode() == 0


def test_an_abandoned_capture_resets_its_graph_and_ends_the_pool_routing(monkeypatch):
    """The CPU half of the failed-capture fix: both steps run, and neither's refusal (torch
    versions differ in which one is needed) escapes."""
    calls = []

    class FailedGraph:
        def reset(self):
            calls.append("reset")
            raise RuntimeError("reset of a graph whose capture never ended")

    def end(device, pool):
        calls.append(("end", device, pool))
        raise RuntimeError("endAllocatePool: not currently recording to mempool_id")

    monkeypatch.setattr(torch._C, "_cuda_endAllocateToPool", end, raising=False)
    cuda_graphs.abandon_capture(FailedGraph(), torch.device("cuda", 1), (0, 7))
    assert calls == ["reset", ("end", 1, (0, 7))]
