"""The model cache's freshness rule and the prepared copy's fall-backs: every model shape and
habit below gives what the caller's model gives (``prepare=False``), never an error the model
itself would not raise.

The freshness rule (smoothkern.model_cache): facts are reused while the fingerprint they were
made under holds; values are never cached, the copy's derived weights are derived afresh per
call; process-wide module hooks run the caller's model.
"""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import torch
from helpers import tiny_resnet
from torch import nn

import smoothkern as sk
from smoothkern.metrics import deletion_curve
from smoothkern.model_cache import cache, prepared_model
from smoothkern.model_cache import prepare as prepare_module
from smoothkern.model_cache.fold import foldable_pairs
from smoothkern.model_cache.prepare import call_module

X = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(3))
KW = {"n_samples": 3, "seed": 4}


def same_as_unprepared(model, x=X, target=(1, 2), **kw):
    got = sk.smooth_grad(model, x, list(target), **KW, **kw)
    want = sk.smooth_grad(model, x, list(target), prepare=False, **KW, **kw)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    return got


def statistics(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# model shapes: which norms fold


def test_densenet_folds_only_the_norms_that_read_a_convolution():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = statistics(tv.models.densenet121(num_classes=4))
    x = torch.rand(1, 3, 32, 32)
    pairs = foldable_pairs(model, x, call_module)
    # norm1 of every dense layer reads a concatenation: never paired
    assert pairs and not any(norm.endswith("norm1") for _, norm in pairs)
    assert all(norm.endswith(("norm2", "norm0")) for _, norm in pairs)
    got = sk.smooth_grad(model, x, 1, n_samples=2)
    want = sk.smooth_grad(model, x, 1, n_samples=2, prepare=False)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)


class PreActivation(nn.Module):
    """The convolution's output feeds the norm and, unnormalised, the skip connection."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 4)

    def forward(self, x):
        y = self.conv(x)
        return self.head((torch.relu(self.bn(y)) + y).mean(dim=(2, 3)))


class LinearNorm(nn.Module):
    """timm LeViT's Linear + BatchNorm1d over tokens flattened into the batch."""

    def __init__(self, tokens=5, dim=6):
        super().__init__()
        self.tokens = tokens
        self.linear, self.bn = nn.Linear(dim, dim), nn.BatchNorm1d(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.linear(x.view(x.shape[0], self.tokens, -1))
        h = self.bn(h.flatten(0, 1)).reshape_as(h)
        return self.head(h.mean(1))


class TokensAsChannels(nn.Module):
    """A Linear over [N, tokens, features] then BatchNorm1d(tokens): the norm's channels are
    the tokens, not the Linear's features, although the sizes agree."""

    def __init__(self, n=6):
        super().__init__()
        self.linear, self.bn = nn.Linear(n, n), nn.BatchNorm1d(n)
        self.head = nn.Linear(n * n, 3)

    def forward(self, x):
        return self.head(self.bn(self.linear(x.reshape(x.shape[0], 6, 6))).flatten(1))


@pytest.mark.parametrize("make, x", [
    (PreActivation, X),
    (LinearNorm, torch.rand(3, 30)),
    (TokensAsChannels, torch.rand(3, 36)),
], ids=["pre_activation", "levit_linear_norm", "tokens_as_channels"])
def test_a_norm_that_does_not_read_only_the_layers_output_is_left_alone(make, x):
    torch.manual_seed(1)
    model = statistics(make())
    assert foldable_pairs(model, x, call_module) == []
    same_as_unprepared(model, x, target=[0] * x.shape[0])


def test_a_linear_then_batchnorm_over_features_is_folded():
    torch.manual_seed(2)
    model = statistics(nn.Sequential(nn.Linear(30, 8), nn.BatchNorm1d(8), nn.Tanh(),
                                     nn.Linear(8, 3)))
    x = torch.rand(3, 30)
    assert foldable_pairs(model, x, call_module) == [("0", "1")]
    same_as_unprepared(model, x, target=[0, 1, 2])


class ViewAfterConv(nn.Module):
    """The tutorial style: ``h.view(h.size(0), -1)`` after conv + BatchNorm (no view of a
    channels_last tensor exists)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 12 * 10, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.view(h.size(0), -1))


def test_channels_last_that_breaks_a_view_falls_back_and_says_so_once(caplog):
    torch.manual_seed(3)
    model = statistics(ViewAfterConv())
    with caplog.at_level(logging.INFO, logger="smoothkern"):
        same_as_unprepared(model)
        same_as_unprepared(model)
    said = [r for r in caplog.records if "channels_last" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    runner = prepared_model(model, X, None, ("fold_batchnorm", "channels_last"))
    assert runner is not model and not isinstance(runner, prepare_module.ChannelsLast)


def test_a_copy_that_raises_or_differs_is_not_used(monkeypatch, caplog):
    model = tiny_resnet()
    monkeypatch.setattr(prepare_module, "foldable_pairs",
                        lambda *a: (_ for _ in ()).throw(RuntimeError("fold exploded")))
    with caplog.at_level(logging.INFO, logger="smoothkern"):
        same_as_unprepared(model)
    assert "fold exploded" in caplog.text
    sk.clear_caches()
    monkeypatch.undo()
    monkeypatch.setattr(prepare_module, "_agrees", lambda *a: False)
    assert prepared_model(model, X, None, ("fold_batchnorm", "channels_last")) is model


def test_checks_take_a_callable_for_models_with_other_inputs():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x, scale):
            return self.bn(self.conv(x)).mean(dim=(2, 3)) * scale

    model = statistics(Scaled())
    run = lambda module, x: module(x, 2.0)   # noqa: E731
    copy_ = prepared_model(model, X, None, ("fold_batchnorm", "channels_last"), run=run)
    assert copy_ is not model
    torch.testing.assert_close(copy_(X, 2.0), model(X, 2.0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# habits between calls: the next call follows the model


@pytest.mark.parametrize("change", [
    lambda m: m.conv1.weight.data.mul_(1.7),                # a write through .data
    lambda m: m.bn1.running_mean.data.zero_(),
    lambda m: m.bn2.running_var.data.mul_(4.0),
    lambda m: [p.data.lerp_(torch.randn_like(p), 0.5) for p in m.parameters()],   # an EMA step
], ids=["weight_data", "running_mean_data", "running_var_data", "ema"])
def test_writes_through_data_are_seen(change):
    model = tiny_resnet()
    first = same_as_unprepared(model)
    change(model)
    assert not torch.equal(same_as_unprepared(model), first)


def test_writes_through_data_are_seen_by_the_kept_noise_tunnel_and_deletion_curves():
    skc = pytest.importorskip("smoothkern.captum")
    model = tiny_resnet()
    nt = skc.NoiseTunnel(skc.Saliency(model))
    kw = dict(nt_samples=3, stdevs=0.1, target=[1, 2], seed=2)
    nt.attribute(X, **kw)
    attributions = torch.rand_like(X)
    deletion_curve(model, X, attributions, [1, 2], steps=3)
    model.bn1.weight.data.mul_(3.0)
    model.conv1.weight.data.add_(0.5)
    torch.testing.assert_close(nt.attribute(X, **kw), nt.attribute(X, prepare=False, **kw),
                               rtol=1e-4, atol=1e-6)
    got = deletion_curve(model, X, attributions, [1, 2], steps=3)
    want = deletion_curve(model, X, attributions, [1, 2], steps=3, prepare=False)
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-4, atol=1e-6)


def test_a_global_hook_registered_after_a_cached_call_runs():
    model = tiny_resnet()
    same_as_unprepared(model)
    seen = []

    def halve_norms(module, args, out):
        if isinstance(module, nn.BatchNorm2d):
            seen.append(module)
            return out * 0.5
        return None

    handle = nn.modules.module.register_module_forward_hook(halve_norms)
    try:
        hooked = same_as_unprepared(model)
        assert seen
    finally:
        handle.remove()
    assert not torch.equal(hooked, same_as_unprepared(model))


def test_a_submodule_swapped_in_training_mode_does_not_fail():
    torch.manual_seed(4)
    model = statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)))
    same_as_unprepared(model)
    model[0] = nn.Conv2d(3, 4, 3)        # a new module is in training mode
    assert model[0].training
    same_as_unprepared(model)
    assert model[0].training             # and it stays so


# ---------------------------------------------------------------------------------------------
# one cache: weak, per model, cleared in one call


def test_every_fact_lives_in_one_entry_that_goes_with_the_model():
    sk.clear_caches()
    model = tiny_resnet()
    sk.smooth_grad(model, X, None, n_samples=2)
    sk.smooth_grad(model, X, None, n_samples=2, method="integrated_gradients", n_steps=2,
                   internal_batch_size="auto", prepare=False)
    found = cache.entry(model)
    assert found.prepared and found.row_facts and found.probes
    alive = weakref.ref(model)
    del model, found
    gc.collect()
    assert alive() is None


def test_clear_caches_forgets_everything_but_keeps_the_locks():
    model = tiny_resnet()
    sk.smooth_grad(model, X, None, n_samples=2)
    found = cache.entry(model)
    lock = found.lock
    sk.clear_caches()
    assert not (found.prepared or found.row_facts or found.probes or found.graphs)
    assert cache.entry(model).lock is lock


def test_the_probe_of_integrated_gradients_is_per_model_not_per_id():
    method = sk.IntegratedGradients(n_steps=2, internal_batch_size="auto")
    small = tiny_resnet(width=2)
    large = tiny_resnet(width=12)
    for model in (small, large):
        sk.smooth_grad(model, X, [0, 1], n_samples=2, method=method, prepare=False)
    assert not hasattr(method, "_probed")
    (small_probe,) = cache.entry(small).probes.values()
    (large_probe,) = cache.entry(large).probes.values()
    assert small_probe[1] < large_probe[1]


def test_timm_levit_leaves_its_token_norms_alone():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = statistics(timm.create_model("levit_128s", pretrained=False, num_classes=5,
                                         img_size=64))
    x = torch.rand(1, 3, 64, 64)
    pairs = foldable_pairs(model, x, call_module)
    assert pairs and all(name.startswith("stem.") for name, _ in pairs)   # its convolutions
    got = sk.smooth_grad(model, x, 1, n_samples=2)
    want = sk.smooth_grad(model, x, 1, n_samples=2, prepare=False)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)


def test_the_probe_runs_a_model_that_takes_whole_batches_only():
    """Integrated gradients' memory probe on a model called with per-example forward_kwargs
    (one row alone is refused by the call's adapter): measured on the whole batch instead."""

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x, mask):
            return self.fc(x * mask)

    torch.manual_seed(5)
    model = Masked().eval()
    x, mask = torch.rand(2, 6), torch.tensor([[1.0] * 6, [1.0] * 3 + [0.0] * 3])
    kw = dict(n_samples=2, method="integrated_gradients", n_steps=3,
              forward_kwargs={"mask": mask})
    got = sk.smooth_grad(model, x, [0, 1], internal_batch_size="auto", **kw)
    want = sk.smooth_grad(model, x, [0, 1], **kw)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
