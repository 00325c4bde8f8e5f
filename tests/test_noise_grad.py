"""noise_grad (NoiseGrad/FusionGrad) against a plain loop over perturbed model copies, closed
forms on a linear model, and the caller's model left as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_mlp, tiny_resnet
from torch import Tensor, nn

import smoothkern as sk
from smoothkern.core.builder import check_options
from smoothkern.core.stats import direct_statistics
from smoothkern.methods import GradCam, GuidedBackprop, IntegratedGradients
from smoothkern.noise import standard_noise
from smoothkern.noise.sources.weights import WeightNoiseSource
from smoothkern.noise.weights import WeightDraws, drawn_model
from smoothkern.noise.weights import planning as weight_planning
from smoothkern.noise.weights.planning import choose_attributions_per_pass
from smoothkern.ops import backends as registry
from smoothkern.ops import extension

ALL = ("mean", "abs", "sq", "var", "geomean", "sem")
# The weight-noise contract's key, written out: seed XOR splitmix64's golden-ratio constant.
WEIGHT_KEY = 0x9E3779B97F4A7C15


# ----------------------------------------------------------------------------------------------
# the plain reference: a deep copy per model draw, perturbed in place, one pass per attribution


def perturb_in_place(model: nn.Module, draw: int, weight_noise: float, kind: str, seed: int):
    """Each parameter p (named_parameters order), element j: ε = z(key, example=p, sample=draw,
    element=j); w ← w + (weight_noise·w)·ε, or w + weight_noise·ε."""
    with torch.no_grad():
        for p_index, (_, param) in enumerate(model.named_parameters()):
            eps = standard_noise(seed ^ WEIGHT_KEY, torch.tensor(p_index), torch.tensor(draw),
                                 torch.arange(param.numel())).view(param.shape)
            scale = weight_noise * param if kind == "multiplicative" else weight_noise
            param.add_(scale * eps)


def plain_gradient(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    leaf = x.clone().requires_grad_(True)
    out = model(leaf)
    (grad,) = torch.autograd.grad(out.gather(1, target.view(-1, 1)).sum(), leaf)
    return grad


def loop_reference(model, x, target, *, n_models, n_samples=1, weight_noise=0.2,
                   kind="multiplicative", stdev=0.0, seed=0, attribute=plain_gradient,
                   aggregates=ALL):
    samples = []
    for d in range(n_models):
        copied = copy.deepcopy(model)
        perturb_in_place(copied, d, weight_noise, kind, seed)
        for i in range(n_samples):
            sigma = torch.full((1, x.shape[0]), stdev)
            noisy = sk.perturb_reference(x, sigma, seed, d * n_samples + i, 1)
            samples.append(attribute(copied, noisy, target))
    return direct_statistics(torch.stack(samples), aggregates, 1e-10)


def close(result: dict[str, Tensor], reference: dict[str, Tensor], atol=1e-5, rtol=1e-4):
    for name, ref in reference.items():
        torch.testing.assert_close(result[name].double(), ref.double(), atol=atol, rtol=rtol,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.fixture(scope="module")
def resnet():
    return tiny_resnet(classes=5)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, 9, 7)


# ----------------------------------------------------------------------------------------------
# against the loop


NO_CPP = pytest.mark.skipif(not extension.has_ops(), reason="the C++ op is not built")
KERNEL_SETS = [pytest.param("cpp", marks=NO_CPP), "torch"]


@pytest.mark.parametrize("backend", KERNEL_SETS)
def test_noisegrad_equals_loop_over_perturbed_copies(resnet, images, backend):
    target = torch.tensor([1, 3])
    got = sk.noise_grad(resnet, images, target, n_models=4, aggregate=ALL, seed=5,
                        backend=backend)
    close(got, loop_reference(resnet, images, target, n_models=4, seed=5))


FUSION = dict(n_models=3, n_samples=2, weight_noise=0.3, seed=2)


@pytest.fixture(scope="module")
def fusion_reference(resnet, images):
    return loop_reference(resnet, images, torch.tensor([0, 2]), stdev=0.1, kind="additive",
                          **FUSION)


@pytest.mark.parametrize("per_pass", [1, 2, 3, 6])
def test_fusiongrad_equals_loop_whatever_the_passes(resnet, images, fusion_reference, per_pass):
    """3 draws × 2 samples: passes within one draw (1), of one draw (2), straddling two draws
    (3: one draw at a time), of all draws (6: vmap over draws)."""
    got = sk.noise_grad(resnet, images, torch.tensor([0, 2]), stdevs=0.1, noise_kind="additive",
                        aggregate=ALL, samples_per_pass=per_pass, **FUSION)
    close(got, fusion_reference)


def test_input_x_gradient_and_loop_backend_equal_loop():
    model, x = tiny_mlp(features=6, classes=3), torch.randn(3, 6)
    target = torch.tensor([0, 1, 2])

    def ixg(m, xn, t):
        return xn * plain_gradient(m, xn, t)

    ref = loop_reference(model, x, target, n_models=5, n_samples=2, stdev=0.2, seed=9,
                         attribute=ixg)
    for backend in ("auto", "loop"):
        got = sk.noise_grad(model, x, target, n_models=5, n_samples=2, stdevs=0.2, seed=9,
                            method="input_x_gradient", aggregate=ALL, backend=backend)
        close(got, ref)


def relu_cnn() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 7 * 5, 5)).eval()


@pytest.mark.parametrize("method", [
    IntegratedGradients(n_steps=4), GradCam("conv2", upsample=True), GuidedBackprop()],
    ids=["integrated_gradients", "grad_cam", "guided_backprop"])
def test_other_methods_equal_the_method_on_perturbed_copies(resnet, images, method):
    """Integrated gradients runs vmapped over draws (its steps repeat the rows); the hooking
    methods run one draw at a time on the caller's modules."""
    target = torch.tensor([4, 0])
    if isinstance(method, GuidedBackprop):         # needs nn.ReLU modules
        resnet = relu_cnn()
    got = sk.noise_grad(resnet, images, target, n_models=3, n_samples=2, stdevs=0.05,
                        method=method, aggregate=("mean", "var"), seed=1)
    ref = loop_reference(resnet, images, target, n_models=3, n_samples=2, stdev=0.05, seed=1,
                         attribute=method.attribute, aggregates=("mean", "var"))
    close(got, ref)


def test_tied_weights_stay_tied():
    torch.manual_seed(0)
    embed = nn.Linear(4, 4, bias=False)
    model = nn.Sequential(embed, nn.Tanh(), embed, nn.Linear(4, 3)).eval()
    x, target = torch.randn(2, 4), torch.tensor([0, 2])
    before = snapshot(model)
    got = sk.noise_grad(model, x, target, n_models=3, aggregate=("mean", "var"))
    assert_unchanged(model, before)   # torch.func.functional_call would leave a plain tensor
    close(got, loop_reference(model, x, target, n_models=3, aggregates=("mean", "var")))


# ----------------------------------------------------------------------------------------------
# the draws


@pytest.mark.parametrize("kernels", KERNEL_SETS)
def test_weight_draws_do_not_depend_on_how_many_are_taken_together(resnet, kernels):
    perturb = registry.resolve(kernels, "cpu").perturb
    draws = WeightDraws(resnet, 0.2, "multiplicative", seed=3, perturb=perturb)
    together = draws.stacked(0, 5)
    draws.release()
    for d in (0, 4):
        alone = draws.stacked(d, 1)
        reference = dict(drawn_model(resnet, d, seed=3).named_parameters())
        for name, value in together.items():
            assert torch.equal(alone[name][0], value[d])
            torch.testing.assert_close(value[d], reference[name].detach(), atol=1e-6, rtol=1e-5)
        draws.release()


def test_one_model_without_weight_noise_is_smooth_grad(resnet, images):
    sg = sk.smooth_grad(resnet, images, n_samples=6, noise_level=0.1, seed=4, prepare=False,
                        aggregate=("mean", "var"))
    fg = sk.noise_grad(resnet, images, n_models=1, weight_noise=0.0, n_samples=6,
                       noise_level=0.1, seed=4, aggregate=("mean", "var"))
    close(fg, sg, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# closed forms on a linear model: gradient of logit c is the drawn row W[c]


def linear_model(features=5, classes=3):
    torch.manual_seed(7)
    model = nn.Linear(features, classes).eval()
    with torch.no_grad():
        model.weight.copy_(torch.linspace(-2, 2, features * classes).view(classes, features))
    return model


def test_linear_noisegrad_mean_and_variance_in_closed_form():
    """Multiplicative: a = W[c](1 + σε): mean W[c], var σ² W[c]²; additive: W[c] + σε: var σ².
    2000 draws: each statistic within 5 standard errors of its population value."""
    model, x, target, n = linear_model(), torch.randn(2, 5), torch.tensor([0, 2]), 2000
    w = model.weight.detach()[target]                                      # [B, features]
    for kind, sigma, var in (("multiplicative", 0.3, (0.3 * w) ** 2),
                             ("additive", 0.5, torch.full_like(w, 0.25))):
        got = sk.noise_grad(model, x, target, n_models=n, weight_noise=sigma, noise_kind=kind,
                            aggregate=("mean", "var", "sem"), seed=11, samples_per_pass=n)
        assert ((got["mean"] - w).abs() <= 5 * var.sqrt() / n**0.5 + 1e-6).all(), kind
        # sample variance of Gaussian draws: standard error var·sqrt(2/n)
        assert ((got["var"] - var).abs() <= 5 * var * (2 / n) ** 0.5 + 1e-6).all(), kind
        torch.testing.assert_close(got["sem"], (got["var"] * n / (n - 1) / n).sqrt())


def test_linear_fusiongrad_input_x_gradient_in_closed_form():
    """a = x̃ ⊙ w̃, x̃ = x + s·z, w̃ = w(1 + σε) independent: mean x·w,
    var (x² + s²)(1 + σ²)w² − x²w²."""
    model, target = linear_model(), torch.tensor([1])
    x, s, sigma = torch.tensor([[0.5, -1.0, 2.0, 0.0, 1.5]]), 0.4, 0.3
    got = sk.noise_grad(model, x, target, n_models=400, n_samples=10, stdevs=s,
                        weight_noise=sigma, method="input_x_gradient", aggregate=("mean", "var"),
                        seed=3, samples_per_pass=4000)
    w = model.weight.detach()[target]
    var = (x**2 + s**2) * (1 + sigma**2) * w**2 - x**2 * w**2
    # samples of one model share its weights: the mean's error is at most sqrt(var / n_models)
    assert ((got["mean"] - x * w).abs() <= 5 * (var / 400).sqrt() + 1e-6).all()
    assert ((got["var"] - var).abs() <= 0.15 * var + 1e-6).all()


# ----------------------------------------------------------------------------------------------
# shapes, snapshots, sweeps, example indices


def test_snapshots_sweeps_count_and_example_index(resnet, images):
    target = torch.tensor([1, 2])
    kw = dict(n_samples=2, stdevs=0.05, seed=8)
    snap = sk.noise_grad(resnet, images, target, n_models=3, snapshots=(1, 3),
                         aggregate=("mean", "count"), **kw)
    assert snap["mean"].shape == (2, 2, 3, 9, 7) and snap["count"].tolist() == [[2, 2], [6, 6]]
    one = sk.noise_grad(resnet, images, target, n_models=1, **kw)
    torch.testing.assert_close(snap["mean"][0], one)
    sweep = sk.noise_grad(resnet, images, target, n_models=2, n_samples=2,
                          noise_level=(0.0, 0.1), seed=8)
    assert sweep.shape == (2, 2, 3, 9, 7)
    level = sk.noise_grad(resnet, images, target, n_models=2, n_samples=2, noise_level=0.1,
                          seed=8)
    torch.testing.assert_close(sweep[1], level)
    alone = sk.noise_grad(resnet, images[1:], target[1:], n_models=2, example_index=[1], **kw)
    both = sk.noise_grad(resnet, images, target, n_models=2, **kw)
    torch.testing.assert_close(alone, both[1:], atol=1e-6, rtol=1e-5)


def test_target_none_is_the_unperturbed_models_prediction(resnet, images):
    predicted = resnet(images).argmax(1)
    torch.testing.assert_close(sk.noise_grad(resnet, images, n_models=2),
                               sk.noise_grad(resnet, images, predicted, n_models=2))


# ----------------------------------------------------------------------------------------------
# the caller's model


def snapshot(model: nn.Module):
    return ([(name, p, p.detach().clone(), p.requires_grad, p.grad)
             for name, p in model.named_parameters()],
            {name: b.clone() for name, b in model.named_buffers()},
            [m.training for m in model.modules()])


def assert_unchanged(model: nn.Module, before) -> None:
    params, buffers, training = before
    now = list(model.named_parameters())
    assert len(now) == len(params)
    for (name, p), (name0, p0, value, requires, grad) in zip(now, params):
        assert name == name0 and p is p0 and isinstance(p, nn.Parameter)
        assert torch.equal(p.detach(), value) and p.requires_grad == requires and p.grad is grad
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name])
    assert [m.training for m in model.modules()] == training


class Failing(sk.AttributionMethod):
    """Raises on its second call, after one pass ran on drawn weights."""

    name = "failing"

    def __init__(self, hooks: bool) -> None:
        self.uses_model_structure, self.calls = hooks, 0

    def attribute(self, model, inputs, target):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("failing on purpose")
        return plain_gradient(model, inputs, target)


def test_callers_parameters_bit_identical_after_success_and_error(resnet, images):
    resnet.fc.weight.grad = torch.ones_like(resnet.fc.weight)
    before = snapshot(resnet)
    sk.noise_grad(resnet, images, n_models=3, n_samples=2, stdevs=0.1, method="grad_cam",
                  layer="conv1", aggregate=ALL)
    assert_unchanged(resnet, before)
    for hooks in (False, True):          # vmapped over draws / swapped into the caller's model
        with pytest.raises(RuntimeError, match="on purpose"):
            sk.noise_grad(resnet, images, n_models=4, method=Failing(hooks), samples_per_pass=1)
        assert_unchanged(resnet, before)
    resnet.fc.weight.grad = None


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_models=0), ValueError, "n_models"),
    (dict(weight_noise=-0.1), ValueError, "weight_noise"),
    (dict(weight_noise=float("nan")), ValueError, "weight_noise"),
    (dict(weight_noise="big"), TypeError, "weight_noise"),
    (dict(noise_kind="gaussian"), ValueError, "noise_kind"),
    (dict(n_samples=3), ValueError, "without input noise"),
    (dict(noise_level=0.1, stdevs=0.1), ValueError, "not both"),
    (dict(backend="vmap"), ValueError, "vmap"),
    (dict(tolerance=0.1), TypeError, "tolerance"),
    (dict(prepare=False), TypeError, "prepare"),
    (dict(snapshots=(4,), n_models=3), ValueError, "snapshots"),
    (dict(aggregate="median"), ValueError, "aggregate"),
    (dict(method="nope"), ValueError, "unknown method"),
    (dict(target=7), ValueError, "out of range"),
])
def test_bad_arguments_are_refused_before_any_work(resnet, images, kwargs, error, match):
    before = snapshot(resnet)
    with pytest.raises(error, match=match):
        sk.noise_grad(resnet, images, **kwargs)
    assert_unchanged(resnet, before)


def test_models_it_cannot_noise_are_refused(images):
    with pytest.raises(ValueError, match="no parameters"):
        sk.noise_grad(nn.Sequential(nn.Flatten()), images)
    training = tiny_resnet().train()
    with pytest.raises(ValueError, match="training mode"):
        sk.noise_grad(training, images)


# ----------------------------------------------------------------------------------------------
# passes: memory budget, out-of-memory splits, reduced precision


class RunsOutOfMemory(sk.AttributionMethod):
    """The plain gradient, failing like the CPU allocator on passes above ``rows`` rows."""

    name = "runs_out_of_memory"

    def __init__(self, rows: int) -> None:
        self.rows, self.largest = rows, 0

    def attribute(self, model, inputs, target):
        if inputs.shape[0] > self.rows:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        self.largest = max(self.largest, inputs.shape[0])
        return plain_gradient(model, inputs, target)


def test_out_of_memory_halves_the_draws_of_a_pass(resnet, images):
    target = torch.tensor([1, 2])
    method = RunsOutOfMemory(rows=4)
    got = sk.noise_grad(resnet, images, target, n_models=4, method=method, samples_per_pass=4,
                        aggregate=("mean", "var"))
    assert method.largest == 4                  # 4 draws × 2 rows split into passes of 2 draws
    close(got, loop_reference(resnet, images, target, n_models=4, aggregates=("mean", "var")))


def test_passes_count_the_drawn_weights_against_the_budget(monkeypatch):
    cpu, mib = torch.device("cpu"), 1024**2
    # ResNet18-like: 45 MiB of weights a draw, 1 MiB a row; 192 MiB budget: 4 draws a pass,
    # balanced over 10 draws as 4, 4, 2
    assert choose_attributions_per_pass(1, 10, 1, mib, 45 * mib, cpu) == 4
    # 10 rows a draw: 3 draws fit (55 MiB each), 10 draws in 4 passes of at most 3
    assert choose_attributions_per_pass(1, 10, 10, mib, 45 * mib, cpu) == 30
    # a caller's limit below one draw's weights and rows: one draw's samples split, one a pass
    assert choose_attributions_per_pass(1, 10, 10, mib, 45 * mib, cpu, 46 * mib) == 1
    assert choose_attributions_per_pass(1, 10, 10, mib, 45 * mib, cpu, 50 * mib) == 5
    # methods that run one draw at a time never batch draws
    assert choose_attributions_per_pass(1, 10, 2, mib, mib, cpu, batch_models=False) == 2
    # on a CPU noise_grad asks for one draw a pass
    assert not weight_planning.batch_draws_on(cpu)
    assert weight_planning.batch_draws_on(torch.device("cuda"))


def test_bfloat16_passes_stay_close_to_float32(resnet, images):
    kw = dict(n_models=3, n_samples=2, stdevs=0.05, seed=6)
    full = sk.noise_grad(resnet, images, **kw)
    half = sk.noise_grad(resnet, images, compute_dtype=torch.bfloat16, **kw)
    assert half.dtype == torch.float32
    assert float((half - full).norm() / full.norm()) < 0.05


class _Recurrent(nn.Module):
    """A sequence classifier vmap cannot batch over weight draws (LSTM) or runs on a fused
    path inside vmap (attention)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.core = nn.LSTM(4, 6, batch_first=True) if kind == "lstm" else \
            nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, batch_first=True, dropout=0.0)
        self.head = nn.Linear(6 if kind == "lstm" else 4, 3)

    def forward(self, x):
        h = self.core(x)[0] if self.kind == "lstm" else self.core(x)
        return self.head(h.mean(dim=1))


@pytest.mark.parametrize("kind", ["lstm", "attention"])
def test_draws_of_modules_vmap_cannot_batch_run_one_per_pass(kind):
    torch.manual_seed(0)
    model = _Recurrent(kind).eval()
    x = torch.rand(2, 5, 4)
    kw = dict(n_models=4, weight_noise=0.3, seed=1, aggregate=("mean", "var"))
    got = sk.noise_grad(model, x, 0, samples_per_pass=4, **kw)
    want = sk.noise_grad(model, x, 0, backend="loop", **kw)
    for name in want:
        torch.testing.assert_close(got[name], want[name].float(), rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
def test_weight_noise_passes_do_not_synchronise_with_the_gpu(resnet, images):
    # Which draws a pass holds is read on the host (the source keeps model_draw there); a pass
    # that read it on the device would synchronise several times (issue: weight noise synced
    # about five times per pass).
    import warnings

    model, x = resnet.cuda(), images.cuda()
    kw = dict(n_models=4, weight_noise=0.2, target=0, samples_per_pass=2, seed=1)
    sk.noise_grad(model, x, **kw)                                    # warm: probes, caches
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            sk.noise_grad(model, x, **kw)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in seen if "synchroniz" in str(w.message)]
    # the clean forward's logits and the final statistics may read back; the passes may not
    assert len(syncs) <= 3, [str(w.message) for w in syncs]


def test_the_weight_source_keeps_the_draw_of_each_row_on_the_host():
    x = torch.rand(2, 3, 4, 4)
    source = WeightNoiseSource(check_options(x, n_samples=1).input_noise(
        x, torch.full((1, 2), 0.1)), n_samples=3)
    chunk = source.draw(2, 4)
    assert chunk.extras["model_draw"].device.type == "cpu"
    assert chunk.extras["model_draw"].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
