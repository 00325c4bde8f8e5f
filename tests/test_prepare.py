"""The prepared copy: equal to the caller's model within float32 rounding, the caller's model
untouched, weights shared, cached while fresh and never stale."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import smoothkern as sk
from smoothkern.model_cache import PREPARATIONS, prepared_model
from smoothkern.models import cifar10_resnet18


def resnet():
    torch.manual_seed(0)
    model = cifar10_resnet18().eval()
    with torch.no_grad():                   # BatchNorm statistics that folding must respect
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


X = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("prepare", [True, ("fold_batchnorm",), ("channels_last",), PREPARATIONS])
@pytest.mark.parametrize("backend", ["torch", "vmap"])
def test_each_preparation_equals_the_unprepared_model(prepare, backend):
    model = resnet()
    want = sk.smooth_grad(model, X, n_samples=4, prepare=False, backend=backend)
    got = sk.smooth_grad(model, X, n_samples=4, prepare=prepare, backend=backend)
    assert relative(got, want) < 1e-3          # float32 rounding of other kernels and order


def test_folding_finds_every_pair_and_leaves_the_callers_model_alone():
    model = resnet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    logits = model(X)
    copy_ = prepared_model(model, X, logits, ("fold_batchnorm",))
    assert copy_ is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy_.modules())
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # every tensor folding did not change is shared, not copied
    kept = {id(p) for p in model.parameters()}
    linear = [m for m in copy_.modules() if isinstance(m, nn.Linear)][0]
    assert id(linear.weight) in kept
    assert prepared_model(model, X, logits, ("fold_batchnorm",)) is copy_      # cached


def test_the_cached_copy_is_never_stale():
    model = resnet()
    first = sk.smooth_grad(model, X, n_samples=3)
    with torch.no_grad():
        model.net.layer1[0].bn1.weight.mul_(3.0)          # an in-place change
    changed = sk.smooth_grad(model, X, n_samples=3)
    fresh = sk.smooth_grad(model, X, n_samples=3, prepare=False)
    assert relative(changed, fresh) < 1e-3 and relative(changed, first) > 1e-3


class Tempered(nn.Module):
    """Logits divided by a plain attribute: the copy must follow when it is rebound."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.temperature = 1.0

    def forward(self, x):
        return torch.tanh(self.bn(self.conv(x))).mean(dim=(2, 3)) / self.temperature


def test_a_rebound_plain_attribute_rebuilds_the_copy():
    torch.manual_seed(0)
    model = Tempered().eval()
    first = sk.smooth_grad(model, X, 1, n_samples=3)
    model.temperature = 4.0
    changed = sk.smooth_grad(model, X, 1, n_samples=3)
    torch.testing.assert_close(changed, sk.smooth_grad(model, X, 1, n_samples=3, prepare=False))
    torch.testing.assert_close(changed * 4.0, first)


def test_a_hook_added_later_is_run_and_its_module_not_folded():
    model = resnet()
    sk.smooth_grad(model, X, 1, n_samples=3)                  # builds and caches a copy
    conv = model.net.layer1[0].conv1
    seen = []
    handle = conv.register_forward_hook(lambda m, a, out: seen.append(1) or out * 0.5)
    got = sk.smooth_grad(model, X, 1, n_samples=3)
    assert seen                                               # the prepared copy ran it
    torch.testing.assert_close(got, sk.smooth_grad(model, X, 1, n_samples=3, prepare=False),
                               rtol=1e-4, atol=1e-6)
    handle.remove()
    seen.clear()
    torch.testing.assert_close(sk.smooth_grad(model, X, 1, n_samples=3),
                               sk.smooth_grad(model, X, 1, n_samples=3, prepare=False),
                               rtol=1e-4, atol=1e-6)
    assert not seen


@pytest.mark.parametrize("make", [resnet, lambda: nn.Sequential(nn.Flatten(), nn.Linear(
    3 * 32 * 32, 4)).eval()], ids=["folded", "nothing_to_prepare"])
def test_the_cache_does_not_keep_the_model_alive(make):
    import gc
    import weakref

    from smoothkern.model_cache import cache

    model = make()
    sk.smooth_grad(model, X, 1, n_samples=2)
    sk.smooth_grad(model, X, 1, n_samples=2)          # a cache hit
    alive = weakref.ref(model)
    entries = len(cache._ENTRIES)
    del model
    gc.collect()
    assert alive() is None and len(cache._ENTRIES) < entries


class SharedConvOutput(nn.Module):
    """A conv whose output feeds a BatchNorm and a skip connection: folding would change the
    skip's input, so the copy must not be used."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        y = self.conv(x)
        return self.head((self.bn(y) + y).flatten(1))


def test_a_fold_that_changes_the_function_is_not_used():
    torch.manual_seed(0)
    model = SharedConvOutput().eval()
    with torch.no_grad():
        model.bn.running_var.fill_(4.0)
    x = torch.rand(2, 3, 8, 8)
    assert prepared_model(model, x, model(x), ("fold_batchnorm",)) is model
    torch.testing.assert_close(sk.smooth_grad(model, x, n_samples=3),
                               sk.smooth_grad(model, x, n_samples=3, prepare=False))


def test_hooking_methods_run_the_callers_model():
    model = resnet()
    layer = "net.layer4"
    want = sk.smooth_grad(model, X, n_samples=3, method="grad_cam", layer=layer, prepare=False)
    got = sk.smooth_grad(model, X, n_samples=3, method="grad_cam", layer=layer)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("bad", ["fold", ("channels_last", "magic")])
def test_unknown_preparations_are_refused(bad):
    with pytest.raises(ValueError, match="unknown preparation"):
        sk.smooth_grad(resnet(), X, prepare=bad)


def test_compile_equals_eager_and_is_cached(caplog):
    import logging

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = torch.rand(2, 3, 2, 2)
    eager = sk.smooth_grad(model, x, n_samples=4, samples_per_pass=2, prepare=False)
    with caplog.at_level(logging.WARNING, logger="smoothkern"):
        compiled = sk.smooth_grad(model, x, n_samples=4, samples_per_pass=2, compile=True)
        again = sk.smooth_grad(model, x, n_samples=4, samples_per_pass=2, compile=True)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again, eager, rtol=1e-5, atol=1e-6)
    assert caplog.text.count("torch.compile: the first pass") == 1   # compiled once, reused
    # an eager call in between keeps the compiled copy cached (one entry per preparation set)
    sk.smooth_grad(model, x, n_samples=4, samples_per_pass=2)
    with caplog.at_level(logging.WARNING, logger="smoothkern"):
        sk.smooth_grad(model, x, n_samples=4, samples_per_pass=2, compile=True)
    assert caplog.text.count("torch.compile: the first pass") == 1


@pytest.mark.cuda
@pytest.mark.parametrize("prepare", [("fold_batchnorm",), ("channels_last",), True])
def test_preparations_on_the_gpu(prepare):
    from smoothkern.model_cache.toggles import exact_float32

    model = resnet().cuda()
    x = X.cuda()
    with exact_float32(x.device):         # TF32 would hide a wrong fold inside its rounding
        want = sk.smooth_grad(model, x, n_samples=4, prepare=False)
        got = sk.smooth_grad(model, x, n_samples=4, prepare=prepare)
    assert relative(got, want) < 1e-3
    assert next(model.parameters()).is_cuda and model.net.layer1[0].bn1 is not None


def test_bad_prepare_and_compile_are_refused_also_in_the_drop_in():
    with pytest.raises(TypeError, match="compile"):
        sk.smooth_grad(resnet(), X, compile="yes")
    skc = pytest.importorskip("smoothkern.captum")
    nt = skc.NoiseTunnel(skc.Saliency(resnet()))
    for rng in ("smoothkern", "captum"):
        with pytest.raises(ValueError, match="unknown preparation"):
            nt.attribute(X, target=0, prepare="fold", rng=rng)


def test_the_fold_check_turns_tf32_off_and_restores_it():
    from smoothkern.model_cache.toggles import exact_float32

    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    try:
        matmul.fp32_precision = conv.fp32_precision = "tf32"     # the new API: legacy reads
        with pytest.raises(RuntimeError, match="inside"):       # of allow_tf32 would raise
            with exact_float32(torch.device("cuda")):
                assert matmul.fp32_precision == conv.fp32_precision == "ieee"
                raise RuntimeError("inside")
        assert matmul.fp32_precision == conv.fp32_precision == "tf32"
        with exact_float32(torch.device("cpu")):               # nothing to change
            assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


class KeepsFeatures(nn.Module):
    """A forward that stores its activations on the module (a common pattern)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        h = torch.tanh(self.bn(self.conv(x)))
        self.features = h.detach()
        return h.mean(dim=(2, 3))


def test_a_forward_that_keeps_its_activations_does_not_defeat_the_cache(monkeypatch):
    from smoothkern.model_cache import prepare

    builds = []
    build = prepare._build
    monkeypatch.setattr(prepare, "_build", lambda *a: builds.append(1) or build(*a))
    model = KeepsFeatures().eval()
    for _ in range(3):
        sk.smooth_grad(model, X, 1, n_samples=2)
        sk.smooth_grad(model, X, None, n_samples=2)        # with a clean forward too
    assert len(builds) == 1


def test_hooks_registered_in_turn_are_told_apart():
    """An ablation loop: each hook is freed before the next, whose function may reuse its id."""
    from smoothkern.model_cache import fingerprint

    model = resnet()
    states = []
    for channel in range(4):
        def zero(module, args, out, channel=channel):
            out = out.clone()
            out[:, channel] = 0
            return out
        handle = model.net.conv1.register_forward_hook(zero)
        states.append(fingerprint(model))
        handle.remove()
        del zero
    assert len(set(states)) == 4


class HooksItself(nn.Module):
    """Registers one of its own methods as a hook: the copy shares it, so only clear_caches
    lets the model go."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        self.head.register_forward_pre_hook(self._seen)

    def _seen(self, module, args):
        return None

    def forward(self, x):
        return self.head(torch.tanh(self.bn(self.conv(x))).mean(dim=(2, 3)))


def test_clear_caches_lets_a_self_hooked_model_go():
    import gc
    import weakref

    model = HooksItself().eval()
    sk.smooth_grad(model, X, 1, n_samples=2)
    alive = weakref.ref(model)
    del model
    gc.collect()
    sk.clear_caches()
    gc.collect()
    assert alive() is None
