"""Bad input gets a clear error before any work; the caller's model and tensors come back as
they went in, after success and after an exception."""

import pytest
import torch
from helpers import tiny_mlp, tiny_resnet
from torch import nn

import smoothkern as sk
import smoothkern.methods


@pytest.fixture()
def model():
    return tiny_resnet()


X = torch.rand(2, 3, 6, 6)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(n_samples=2.5), TypeError, "n_samples"),
    (dict(noise_level=-0.1), ValueError, "non-negative"),
    (dict(noise_level=float("nan")), ValueError, "finite"),
    (dict(noise_level=float("inf")), ValueError, "finite"),
    (dict(noise_level=0.1, stdevs=0.2), ValueError, "not both"),
    (dict(stdevs=torch.ones(3)), ValueError, "one value per example"),
    (dict(noise="laplace"), ValueError, "unknown noise"),
    (dict(aggregate="median"), ValueError, "unknown aggregate"),
    (dict(aggregate=("mean", "mean")), ValueError, "repeat"),
    (dict(method="deeplift"), ValueError, "unknown method"),
    (dict(method="gradient", n_steps=3), TypeError, "unexpected keyword argument.*n_steps"),
    (dict(backend="cuda-magic"), ValueError, "unknown backend"),
    (dict(target=5), ValueError, "out of range"),
    (dict(target=-1), ValueError, "out of range"),
    (dict(target=torch.tensor([0, 1, 2])), ValueError, "shape"),
    (dict(target=torch.tensor([0.0, 1.0])), TypeError, "integer"),
    (dict(target=[0]), ValueError, "2 ints"),
    (dict(target="cat"), TypeError, "target"),
    (dict(snapshots=(0, 3)), ValueError, "snapshots"),
    (dict(snapshots=(3, 60)), ValueError, "snapshots"),
    (dict(snapshots=(5, 3)), ValueError, "increasing"),
    (dict(samples_per_pass=0), ValueError, "samples_per_pass"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(accumulator_dtype=torch.float16), TypeError, "accumulator_dtype"),
])
def test_bad_arguments(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        sk.smooth_grad(model, X, **kwargs)


@pytest.mark.parametrize("inputs, error, match", [
    (torch.zeros(2, 3, 6, 6, dtype=torch.int64), TypeError, "floating"),
    (torch.full((2, 3, 6, 6), float("nan")), ValueError, "NaN"),
    (torch.full((2, 3, 6, 6), float("inf")), ValueError, "Inf"),
    (torch.zeros(0, 3, 6, 6), ValueError, "B >= 1"),
    ([[0.0]], TypeError, "Tensor"),
])
def test_bad_inputs(model, inputs, error, match):
    with pytest.raises(error, match=match):
        sk.smooth_grad(model, inputs)


def test_model_output_must_be_batch_by_classes():
    with pytest.raises(ValueError, match=r"\[B, classes\]"):
        sk.smooth_grad(nn.Flatten(0), X)
    with pytest.raises(TypeError, match="nn.Module"):
        sk.smooth_grad(lambda x: x, X)


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(16), nn.Dropout(0.5)])
def test_training_mode_with_batch_dependent_layers_is_refused(layer):
    model = nn.Sequential(nn.Flatten(), nn.Linear(7, 16), layer, nn.Linear(16, 3)).train()
    with pytest.raises(ValueError, match=r"model.eval\(\)"):
        sk.smooth_grad(model, torch.rand(2, 7))


def test_training_mode_without_such_layers_is_fine():
    model = tiny_mlp().train()
    sk.smooth_grad(model, torch.rand(2, 7), n_samples=2)
    assert model.training


def test_unavailable_backend_names_the_available_ones(model, monkeypatch):
    from smoothkern.ops import backends as registry

    torch_backend = registry.resolve("torch", "cpu")
    missing = registry.Backend(name="missing", perturb=torch_backend.perturb,
                               accumulate=torch_backend.accumulate,
                               why_unavailable=lambda: "not built here")
    monkeypatch.setitem(registry._REGISTRY, "missing", missing)
    with pytest.raises(ValueError, match="not built here. Available: .*torch"):
        sk.smooth_grad(model, X, backend="missing")


def _snapshot(model, x):
    return dict(
        training=[m.training for m in model.modules()],
        requires=[p.requires_grad for p in model.parameters()],
        grads=[None if p.grad is None else p.grad.clone() for p in model.parameters()],
        hooks=[(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
               for m in model.modules()],
        params=[p.detach().clone() for p in model.parameters()],
        buffers=[b.clone() for b in model.buffers()],
        x=x.detach().clone(), x_requires=x.requires_grad,
        x_grad=None if x.grad is None else x.grad.clone(),
    )


def _assert_same(before, after):
    assert before["training"] == after["training"]
    assert before["requires"] == after["requires"]
    assert before["hooks"] == after["hooks"]
    assert before["x_requires"] == after["x_requires"]
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    for key in ("params", "buffers"):
        for a, b in zip(before[key], after[key]):
            assert torch.equal(a, b)
    assert torch.equal(before["x"], after["x"])
    assert (before["x_grad"] is None) == (after["x_grad"] is None)


def _dress_up(model, x):
    """Gives model and inputs state a careless engine would lose."""
    model.fc.weight.requires_grad_(False)
    model.stem.weight.grad = torch.ones_like(model.stem.weight)
    model.fc.register_forward_hook(lambda *a: None)
    model.bn0.register_forward_pre_hook(lambda *a: None)
    x.grad = torch.full_like(x, 3.0)


@pytest.mark.parametrize("backend", ["loop", "torch", "vmap"])
def test_state_is_restored_after_success(model, backend):
    x = X.clone().requires_grad_(True)
    _dress_up(model, x)
    before = _snapshot(model, x)
    sk.smooth_grad(model, x, n_samples=3, backend=backend, aggregate=("mean", "var"))
    _assert_same(before, _snapshot(model, x))
    assert x.grad is not None and float(x.grad.max()) == 3.0


@pytest.mark.parametrize("backend", ["loop", "torch"])
def test_state_is_restored_after_an_exception(model, backend, monkeypatch):
    x = X.clone().requires_grad_(True)
    _dress_up(model, x)
    before = _snapshot(model, x)
    method = sk.methods.Gradient()
    calls = []

    def failing(net, inputs, target):
        calls.append(1)
        net.fc.register_forward_hook(lambda *a: None)  # a leaked hook must be cleaned up too
        net.bn1.train()
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return torch.zeros_like(inputs)

    monkeypatch.setattr(method, "attribute", failing)
    with pytest.raises(RuntimeError, match="injected"):   # the method gets the caller's model
        sk.smooth_grad(model, x, n_samples=4, samples_per_pass=1, method=method, backend=backend,
                       prepare=False)
    _assert_same(before, _snapshot(model, x))


# ----------------------------------------------------------------------------------------------
# defects found by trying to break it


class TupleOut(nn.Module):
    def __init__(self, wrap):
        super().__init__()
        self.lin, self.wrap = nn.Linear(4, 3), wrap

    def forward(self, x):
        return self.wrap(self.lin(x))


@pytest.mark.parametrize("backend", ["torch", "vmap", "loop"])
def test_a_model_returning_a_tuple_gets_a_clear_error_naming_output(backend):
    with pytest.raises(ValueError, match=r"must return logits shaped \[B, classes\].*output=0"):
        sk.smooth_grad(TupleOut(lambda y: (y, y)), torch.rand(2, 4), backend=backend)


@pytest.mark.parametrize("backend", ["torch", "vmap", "loop"])
def test_a_model_returning_a_logits_mapping_is_read_by_default(backend):
    x = torch.rand(2, 4)
    model = TupleOut(lambda y: {"logits": y})
    plain = sk.smooth_grad(model.lin, x, n_samples=3, backend=backend)
    torch.testing.assert_close(sk.smooth_grad(model, x, n_samples=3, backend=backend), plain)
    pair = TupleOut(lambda y: (y, y))
    pair.lin = model.lin
    tupled = sk.smooth_grad(pair, x, n_samples=3, backend=backend, output=1)
    torch.testing.assert_close(tupled, plain)


class NoGradModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        with torch.no_grad():
            return self.lin(x)


@pytest.mark.parametrize("backend", ["torch", "vmap", "loop"])
def test_no_gradient_path_is_refused_by_every_pass_strategy(backend):
    # vmap(grad(...)) used to return all-zero maps here
    with pytest.raises(RuntimeError, match="no gradient flows through the model"):
        sk.smooth_grad(NoGradModel(), torch.rand(2, 4), target=0, n_samples=3, backend=backend)


def test_meta_inputs_are_refused_up_front():
    with pytest.raises(ValueError, match="meta device"):
        sk.smooth_grad(tiny_mlp(), torch.empty(2, 3, 6, 6, device="meta"))


class OutOfMemoryAbove(nn.Module):
    """Raises the allocator's error for batches larger than ``rows`` (a pass too big)."""

    def __init__(self, inner, rows):
        super().__init__()
        self.inner, self.rows, self.refused = inner, rows, 0

    def forward(self, x):
        if x.shape[0] > self.rows:
            self.refused += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory (test: {x.shape[0]} rows)")
        return self.inner(x)


def test_integrated_gradients_default_step_batch_recovers_from_out_of_memory():
    inner = tiny_mlp()
    x = torch.rand(2, 7)
    want = sk.smooth_grad(inner, x, method="integrated_gradients", n_steps=8, n_samples=4)
    tight = OutOfMemoryAbove(inner, rows=5)
    for internal in (None, "auto"):
        # a clean forward of 2 rows fits; 4 samples x 2 examples x 8 steps does not
        got = sk.smooth_grad(tight, x, method="integrated_gradients", n_steps=8, n_samples=4,
                             internal_batch_size=internal)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert tight.refused > 0


def test_captum_rng_recovers_from_out_of_memory_by_splitting_its_drawn_chunk():
    skc = pytest.importorskip("smoothkern.captum")
    inner = tiny_mlp()
    x = torch.rand(2, 7)
    results = []
    for model in (inner, OutOfMemoryAbove(inner, rows=5)):
        torch.manual_seed(0)
        results.append(skc.NoiseTunnel(skc.Saliency(model)).attribute(
            x, nt_samples=6, nt_samples_batch_size=6, stdevs=0.1, target=1, rng="captum",
            nt_type=("smoothgrad", "vargrad", "abs")))
        results.append(torch.rand(1))       # torch's generator is where Captum leaves it
    want, after_want, got, after_got = results
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    assert torch.equal(after_want, after_got)


def test_state_is_restored_when_a_method_changes_the_prepared_copy(model, monkeypatch):
    x = X.clone()
    before = _snapshot(model, x)
    method = sk.methods.Gradient()
    seen = []

    def meddling(net, inputs, target):
        seen.append(net)
        for module in net.modules():               # hooks and flags on the copy's modules
            module.register_forward_hook(lambda *a: None)
            module.train()
        raise RuntimeError("injected failure")

    monkeypatch.setattr(method, "attribute", meddling)
    with pytest.raises(RuntimeError, match="injected"):
        sk.smooth_grad(model, x, n_samples=2, method=method)
    assert seen and seen[0] is not model                # it did run the prepared copy
    _assert_same(before, _snapshot(model, x))
    # and the next call does not reuse the copy left in training mode
    monkeypatch.undo()
    training = []
    original = sk.methods.Gradient.attribute

    def recording(self, net, inputs, target):
        training.append(any(m.training for m in net.modules()))
        return original(self, net, inputs, target)

    monkeypatch.setattr(sk.methods.Gradient, "attribute", recording)
    sk.smooth_grad(model, x, n_samples=2, samples_per_pass=2)
    assert training == [False]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_no_backend_is_available_on_cuda_without_a_gpu():
    status = sk.backend_status("cuda")
    assert all(reason != "available" for reason in status.values()), status
    assert status["torch"] == "no CUDA device"
