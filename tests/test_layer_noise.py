"""Noise at a layer (``noise_at=``): a small transformer over token ids and a CNN layer, against
plain per-sample loops, the engine's loop reference and Captum on the layer's downstream part."""

from __future__ import annotations

import captum.attr
import pytest
import torch
from helpers import tiny_resnet
from torch import Tensor, nn

import smoothkern as sk
from smoothkern import captum as skc
from smoothkern.noise import standard_noise
from smoothkern.noise.layer import layer_activation

VOCAB, DIM, CLASSES = 17, 8, 3
AGGREGATES = ("mean", "abs", "sq", "var", "geomean")


class TinyTransformer(nn.Module):
    """Token ids [B, T] → embedding → one encoder layer → (masked) mean pooling → linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(VOCAB, DIM, padding_idx=0)
        self.encoder = nn.TransformerEncoderLayer(DIM, 2, 16, dropout=0.1, batch_first=True)
        self.head = nn.Linear(DIM, CLASSES)

    def downstream(self, h: Tensor, mask: Tensor | None = None) -> Tensor:
        """The model after the embedding: h (Tensor[R, T, DIM]) → logits [R, CLASSES]."""
        encoded = self.encoder(h)
        if mask is None:
            return self.head(encoded.mean(1))
        weights = mask.unsqueeze(-1).to(encoded.dtype)
        return self.head((encoded * weights).sum(1) / weights.sum(1))

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.downstream(self.embeddings(ids), mask)


@pytest.fixture(scope="module")
def model() -> TinyTransformer:
    torch.manual_seed(0)
    return TinyTransformer().eval()


IDS = torch.randint(1, VOCAB, (3, 6), generator=torch.Generator().manual_seed(1))


def noisy_activations(h: Tensor, sigma: Tensor, seed: int, sample: int, noise: str) -> Tensor:
    """The noise contract written out: h[b] + σ_b z(seed, b, i, j) over the layer's elements."""
    batch = h.shape[0]
    flat = h.reshape(batch, -1)
    z = standard_noise(seed, torch.arange(batch).view(batch, 1), torch.tensor(sample),
                       torch.arange(flat.shape[1]).view(1, -1), noise)
    return (flat + sigma.view(batch, 1) * z).view_as(h)


def plain_statistics(samples: list[Tensor]) -> dict[str, Tensor]:
    a = torch.stack(samples).double()
    return {"mean": a.mean(0), "abs": a.abs().mean(0), "sq": (a * a).mean(0),
            "var": a.var(0, unbiased=False), "geomean": torch.log(a.abs() + 1e-10).mean(0).exp()}


def assert_stats_close(got: dict[str, Tensor], want: dict[str, Tensor]) -> None:
    for name in want:
        torch.testing.assert_close(got[name].double(), want[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")


def gradient_at(f, h: Tensor, target: Tensor) -> Tensor:
    leaf = h.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(leaf).gather(1, target.view(-1, 1)).sum(), leaf)
    return grad


# ----------------------------------------------------------------------------------------------
# smooth_grad(noise_at=...)


@pytest.mark.parametrize("method, noise, sigma_arg", [
    ("gradient", "gaussian", {"noise_level": 0.2}),
    ("input_x_gradient", "uniform", {"stdevs": torch.tensor([0.1, 0.3, 0.05])})])
def test_embedding_noise_equals_a_plain_loop_over_samples(model, method, noise, sigma_arg):
    h = model.embeddings(IDS).detach()
    target = torch.tensor([0, 2, 1])
    if "noise_level" in sigma_arg:        # relative to each example's activation range
        sigma = 0.2 * (h.reshape(3, -1).amax(1) - h.reshape(3, -1).amin(1))
    else:
        sigma = sigma_arg["stdevs"]
    samples = []
    for i in range(5):
        noisy = noisy_activations(h, sigma, 7, i, noise)
        grad = gradient_at(model.downstream, noisy, target)
        samples.append(grad if method == "gradient" else noisy * grad)
    got = sk.smooth_grad(model, IDS, target, noise_at="embeddings", n_samples=5, seed=7,
                         noise=noise, method=method, aggregate=AGGREGATES, **sigma_arg)
    assert got["mean"].shape == (3, 6, DIM)
    assert_stats_close(got, plain_statistics(samples))


def test_integrated_gradients_from_a_baseline_activation_equals_captum_on_the_layer(model):
    pad = torch.zeros_like(IDS)
    base = layer_activation(model, "embeddings", pad)
    assert torch.equal(base, model.embeddings(pad).detach())
    h = model.embeddings(IDS).detach()
    sigma = torch.full((3,), 0.1)
    ig = captum.attr.IntegratedGradients(model.downstream)
    samples = [ig.attribute(noisy_activations(h, sigma, 0, i, "gaussian"), baselines=base,
                            target=1, n_steps=6) for i in range(4)]
    got = sk.smooth_grad(model, IDS, 1, noise_at="embeddings", n_samples=4, stdevs=0.1,
                         method="integrated_gradients", n_steps=6, baseline=base,
                         aggregate=("mean", "var"))
    assert_stats_close(got, {k: v for k, v in plain_statistics(samples).items()
                             if k in ("mean", "var")})


@pytest.mark.parametrize("method, options", [
    ("gradient", {}), ("saliency", {}), ("input_x_gradient", {}),
    ("integrated_gradients", {"n_steps": 4, "baseline": 0.5})])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_batched_passes_equal_the_loop_reference(model, method, options, backend):
    kw = dict(noise_at="encoder", n_samples=5, noise_level=(0.05, 0.2), snapshots=(2, 5),
              aggregate=AGGREGATES, method=method, seed=3, **options)
    want = sk.smooth_grad(model, IDS, backend="loop", **kw)
    got = sk.smooth_grad(model, IDS, backend=backend, samples_per_pass=2, **kw)
    assert got["mean"].shape == (2, 2, 3, 6, DIM)          # snapshots, levels, B, layer output
    for name in AGGREGATES:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_a_layer_inside_the_encoder_layer_runs_with_its_fused_path_off(model):
    fast = torch.backends.mha.get_fastpath_enabled()
    got = sk.smooth_grad(model, IDS, noise_at="encoder.linear1", n_samples=3)
    want = sk.smooth_grad(model, IDS, noise_at="encoder.linear1", n_samples=3, backend="loop")
    assert got.shape == (3, 6, 16)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert torch.backends.mha.get_fastpath_enabled() == fast


def test_cnn_layer_noise_equals_a_hooked_plain_loop():
    model = tiny_resnet()
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        captured = []
        handle = model.conv1.register_forward_hook(lambda m, a, out: captured.append(out))
        logits = model(x)
        handle.remove()
    h, target = captured[0], logits.argmax(1)
    sigma = 0.15 * (h.reshape(2, -1).amax(1) - h.reshape(2, -1).amin(1))

    def with_conv1_output(noisy: Tensor) -> Tensor:
        handle = model.conv1.register_forward_hook(lambda m, a, out: noisy)
        try:
            return model(x)
        finally:
            handle.remove()

    samples = []
    for i in range(4):
        noisy = noisy_activations(h, sigma, 0, i, "gaussian")
        samples.append(noisy * gradient_at(with_conv1_output, noisy, target))
    got = sk.smooth_grad(model, x, noise_at="conv1", method="input_x_gradient", n_samples=4,
                         aggregate=AGGREGATES)
    assert got["mean"].shape == (2, 6, 5, 5)
    assert_stats_close(got, plain_statistics(samples))


def test_example_index_keys_the_layer_noise_by_example(model):
    kw = dict(noise_at="embeddings", n_samples=4, aggregate=("mean", "var"), seed=5)
    full = sk.smooth_grad(model, IDS, **kw)
    kw_module = {**kw, "noise_at": model.embeddings}          # the module itself, not its path
    part = sk.smooth_grad(model, IDS[[2, 0]], example_index=[2, 0], **kw_module)
    for name in full:
        torch.testing.assert_close(part[name], full[name][[2, 0]], rtol=1e-5, atol=1e-7)
    moved = sk.smooth_grad(model, IDS[[2, 0]], **kw)
    assert not torch.allclose(moved["mean"], full["mean"][[2, 0]])


def test_adaptive_counts_equal_fixed_runs_at_each_count(model):
    kw = dict(noise_at="embeddings", method="integrated_gradients", n_steps=3, baseline=0.0,
              samples_per_pass=2, seed=1)
    got = sk.smooth_grad(model, IDS, n_samples=30, tolerance=0.2, aggregate=("mean", "count"),
                         **kw)
    counts = got["count"].tolist()
    assert min(counts) < 30                                  # some example stopped early
    for b, count in enumerate(counts):
        fixed = sk.smooth_grad(model, IDS, n_samples=count, **kw)
        torch.testing.assert_close(got["mean"][b], fixed[b], rtol=1e-5, atol=1e-7)


def test_out_of_memory_splits_the_drawn_chunk_and_keeps_the_result(model, monkeypatch):
    kw = dict(noise_at="embeddings", n_samples=6, samples_per_pass=6, aggregate=AGGREGATES)
    want = sk.smooth_grad(model, IDS, **kw)
    method = sk.methods.Gradient()
    original, sizes = method.attribute, []

    def flaky(m, inputs, target):
        sizes.append(inputs.shape[0])
        if inputs.shape[0] > 6:                      # more than two samples of B=3 do not fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(m, inputs, target)

    monkeypatch.setattr(method, "attribute", flaky)
    got = sk.smooth_grad(model, IDS, method=method, **kw)
    assert sizes[:2] == [18, 9]
    for name in AGGREGATES:     # float32 statistics merged in another order: rounding apart
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_bfloat16_passes_stay_within_the_precision_contract(model):
    kw = dict(noise_at="embeddings", n_samples=16, noise_level=0.2)
    fp32 = sk.smooth_grad(model, IDS, seed=0, **kw)
    other_seed = sk.smooth_grad(model, IDS, seed=1, **kw)
    bf16 = sk.smooth_grad(model, IDS, seed=0, compute_dtype=torch.bfloat16, **kw)
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).norm() <= 0.25 * (other_seed - fp32).norm()


def test_the_callers_model_and_inputs_come_back_unchanged_also_after_an_error(model,
                                                                              monkeypatch):
    ids = IDS.clone()
    model.head.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    try:
        sk.smooth_grad(model, ids, noise_at="embeddings", n_samples=2)
        method = sk.methods.Gradient()

        def broken(m, inputs, target):
            m(inputs)                                # the layer hook is in place here
            raise RuntimeError("injected")

        monkeypatch.setattr(method, "attribute", broken)
        with pytest.raises(RuntimeError, match="injected"):
            sk.smooth_grad(model, ids, noise_at="embeddings", n_samples=2, method=method)
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(not m._forward_hooks for m in model.modules())
        assert all(p.grad is None for p in model.parameters())
        assert torch.equal(ids, IDS) and not model.training
    finally:
        model.head.weight.requires_grad_(True)


class TwiceEmbedded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(VOCAB, DIM)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head((self.embeddings(ids) + self.embeddings(ids.flip(1))).mean(1))


class TokensAsRows(nn.Module):
    """A model whose "flatten" layer folds the tokens into the batch dim."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(VOCAB, DIM)
        self.flatten = nn.Flatten(0, 1)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.flatten(self.embeddings(ids))).view(*ids.shape, -1).mean(1)


@pytest.mark.parametrize("call, error, match", [
    (lambda m: sk.smooth_grad(m, IDS), TypeError, "noise_at="),
    (lambda m: sk.smooth_grad(m, IDS, noise_at="nope"), ValueError, "no layer 'nope'"),
    (lambda m: sk.smooth_grad(m, IDS, noise_at="encoder.self_attn"), TypeError, "single Tensor"),
    (lambda m: sk.smooth_grad(m, IDS, noise_at="encoder.self_attn.out_proj"), ValueError,
     "did not run"),
    (lambda m: sk.smooth_grad(TwiceEmbedded().eval(), IDS, noise_at="embeddings"), ValueError,
     "ran 2 times"),
    (lambda m: sk.smooth_grad(m, IDS, noise_at="embeddings", backend="vmap"), ValueError, "vmap"),
    (lambda m: sk.smooth_grad(m, IDS, noise_at="embeddings", method="guided_backprop"),
     ValueError, "cannot attribute to a noisy layer"),
    (lambda m: sk.smooth_grad(m, IDS, noise_at="embeddings", method="grad_cam", layer="encoder"),
     ValueError, "cannot attribute to a noisy layer"),
    (lambda m: sk.smooth_grad(m, IDS, noise_at="embeddings", stdevs=torch.ones(2)), ValueError,
     "one value per example"),
    (lambda m: sk.smooth_grad(m, IDS, noise_at="embeddings", noise_level=-1.0), ValueError,
     "non-negative"),
    (lambda m: sk.smooth_grad(TokensAsRows().eval(), IDS, noise_at="flatten"), ValueError,
     "one row per example")])
def test_bad_calls_are_refused_with_a_clear_error(model, call, error, match):
    with pytest.raises(error, match=match):
        call(model)
    assert all(not m._forward_hooks for m in model.modules())


# ----------------------------------------------------------------------------------------------
# the Captum drop-in: NoiseTunnel(...).attribute(..., noise_at=...)


def test_noise_tunnel_noises_the_embedding_of_layer_integrated_gradients(model):
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    pad = torch.zeros_like(IDS)
    nt = skc.NoiseTunnel(skc.LayerIntegratedGradients(model, model.embeddings))
    got, delta = nt.attribute(IDS, noise_at=model.embeddings, baselines=pad, target=[0, 1, 2],
                              additional_forward_args=(mask,), n_steps=5, nt_samples=4,
                              nt_samples_batch_size=4, stdevs=0.1,
                              nt_type=("smoothgrad", "smoothgrad_sq", "vargrad"),
                              return_convergence_delta=True)
    h, base = model.embeddings(IDS).detach(), model.embeddings(pad).detach()
    ig = captum.attr.IntegratedGradients(model.downstream)
    samples, deltas = [], []
    for i in range(4):
        noisy = noisy_activations(h, torch.full((3,), 0.1), 0, i, "gaussian")
        a, d = ig.attribute(noisy, baselines=base, target=torch.tensor([0, 1, 2]), n_steps=5,
                            additional_forward_args=(mask,), return_convergence_delta=True)
        samples.append(a)
        deltas.append(d)
    want = plain_statistics(samples)
    assert_stats_close({"mean": got["smoothgrad"], "sq": got["smoothgrad_sq"],
                        "var": got["vargrad"]}, {k: want[k] for k in ("mean", "sq", "var")})
    # Captum's order within a chunk: example-major, row b·k + s
    torch.testing.assert_close(delta, torch.stack(deltas, 1).reshape(-1), rtol=1e-3,
                               atol=1e-5)


@pytest.mark.parametrize("multiply, method", [(True, "input_x_gradient"), (False, "gradient")])
def test_noise_tunnel_layer_gradient_x_activation_equals_smooth_grad(model, multiply, method):
    algorithm = skc.LayerGradientXActivation(model, model.embeddings, multiply_by_inputs=multiply)
    got = skc.NoiseTunnel(algorithm).attribute(IDS, noise_at="embeddings", target=2,
                                               nt_samples=5, noise_level=0.2, seed=4,
                                               nt_type="abs")
    want = sk.smooth_grad(model, IDS, 2, noise_at="embeddings", method=method, n_samples=5,
                          noise_level=0.2, seed=4, aggregate="abs")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_without_noise_at_a_layer_algorithm_keeps_captums_draws_bit_for_bit():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).eval()
    x = torch.rand(2, 5)
    kw = dict(nt_samples=6, nt_samples_batch_size=4, stdevs=0.2, target=1, n_steps=4,
              nt_type="vargrad")
    torch.manual_seed(3)
    ours = skc.NoiseTunnel(skc.LayerIntegratedGradients(net, net[1])).attribute(
        x, rng="captum", **kw)
    torch.manual_seed(3)
    theirs = captum.attr.NoiseTunnel(captum.attr.LayerIntegratedGradients(net, net[1])).attribute(
        x, **kw)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("algorithm, options, error, match", [
    ("lig", {}, TypeError, "noise_at="),                                   # ids, no noise_at
    ("saliency", {"noise_at": "embeddings"}, ValueError, "layer algorithm"),
    ("lig", {"noise_at": "head"}, ValueError, "must be the layer"),
    ("lig", {"noise_at": "embeddings", "rng": "captum"}, ValueError, "rng='smoothkern'"),
    ("lig", {"noise_at": "embeddings", "stdevs": (0.1, 0.2)}, ValueError, "one number"),
    ("lig", {"noise_at": "embeddings", "attribute_to_layer_input": True}, ValueError,
     "attribute_to_layer_input"),
    ("lig", {"noise_at": "embeddings", "draw_baseline_from_distrib": True}, ValueError,
     "draw_baseline_from_distrib"),
    ("lig", {"noise_at": "embeddings", "backend": "vmap"}, ValueError, "vmap")])
def test_noise_tunnel_refuses_what_it_cannot_do(model, algorithm, options, error, match):
    wrapped = skc.LayerIntegratedGradients(model, model.embeddings) if algorithm == "lig" else \
        skc.Saliency(model)
    with pytest.raises(error, match=match):
        skc.NoiseTunnel(wrapped).attribute(IDS, target=0, nt_samples=2, **options)


class _InplaceAfterLayer(nn.Module):
    """torchvision's VGG/ResNet habit: the noised layer's output is next modified in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        return self.head(h.mean(dim=(2, 3)))


@pytest.mark.parametrize("layer", ["conv", "bn"])
@pytest.mark.parametrize("method", ["gradient", "input_x_gradient"])
def test_noise_at_a_layer_modified_in_place_next_equals_the_loop(layer, method):
    torch.manual_seed(0)
    model = _InplaceAfterLayer().eval()
    x = torch.rand(2, 3, 5, 5)
    kw = dict(noise_at=layer, n_samples=4, method=method, aggregate=("mean", "var"), seed=3)
    got = sk.smooth_grad(model, x, 1, **kw)
    want = sk.smooth_grad(model, x, 1, backend="loop", **kw)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7)
    # the recorded clean activation is the layer's output, before the in-place ReLU
    with torch.no_grad():
        before = model.bn(model.conv(x)) if layer == "bn" else model.conv(x)
    torch.testing.assert_close(layer_activation(model, layer, x), before)


def test_layer_activation_refuses_a_train_mode_model_as_smooth_grad_does():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="eval"):
        layer_activation(model, "0", torch.rand(2, 4))
