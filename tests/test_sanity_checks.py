"""Model-randomisation sanity checks, the similarity measures and the metric figures."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import tiny_resnet
from torch import Tensor, nn

from smoothkern import smooth_grad
from smoothkern.metrics.faithfulness import deletion_curve, insertion_curve
from smoothkern.metrics.figures import (
    perturbation_curve_figure,
    randomization_figure,
    randomization_similarity_figure,
)
from smoothkern.metrics.randomization import (
    layer_seed,
    model_randomization,
    randomization_layers,
    reinitialize,
)
from smoothkern.metrics.similarity import map_similarity, spearman, ssim, top_k_overlap

RESNET_LAYERS = ["fc", "bn2", "conv2", "bn1", "conv1", "bn0", "stem"]


def gradient(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return x.grad


class TokenClassifier(nn.Module):
    """Embedding projection, one transformer encoder layer, mean pool, linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(5, 8)
        self.encoder = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                                  batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


class NoReset(nn.Module):
    """Parameters of its own and no reset method."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((4, 3), 5.0))
        self.bias = nn.Parameter(torch.full((4,), 5.0))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.T + self.bias


@pytest.fixture(scope="module")
def resnet():
    return tiny_resnet(in_channels=1, classes=4), torch.rand(3, 1, 9, 8)


def test_layers_run_top_first(resnet):
    model, x = resnet
    assert randomization_layers(model, x) == RESNET_LAYERS
    # The attention is one layer with its output projection; the order is that of the forward.
    assert randomization_layers(TokenClassifier().eval(), torch.randn(2, 4, 5)) == [
        "head", "encoder.norm2", "encoder.linear2", "encoder.linear1", "encoder.norm1",
        "encoder.self_attn", "embed"]


def test_attention_and_modules_without_reset_are_redrawn_reproducibly():
    attention = TokenClassifier().encoder.self_attn
    before = {k: v.clone() for k, v in attention.state_dict().items()}
    reinitialize(attention, 7)
    after = attention.state_dict()
    assert not torch.equal(after["in_proj_weight"], before["in_proj_weight"])
    assert not torch.equal(after["out_proj.weight"], before["out_proj.weight"])
    assert torch.equal(after["out_proj.bias"], torch.zeros(8))      # the attention's own rule
    again = TokenClassifier().encoder.self_attn
    reinitialize(again, 7)
    assert all(torch.equal(v, after[k]) for k, v in again.state_dict().items())

    plain = NoReset()
    reinitialize(plain, 3)
    bound = 1 / 3 ** 0.5                                             # fan_in = 3
    assert plain.weight.abs().max() <= bound and plain.bias.abs().max() <= bound
    assert plain.weight.std() > 0.1 * bound
    other = NoReset()
    reinitialize(other, 3)
    assert torch.equal(other.weight, plain.weight) and torch.equal(other.bias, plain.bias)

    norm = nn.BatchNorm1d(4)
    norm.running_mean.fill_(3.0)
    norm.weight.data.fill_(2.0)
    reinitialize(norm, 0)
    assert torch.equal(norm.running_mean, torch.zeros(4)) and torch.equal(norm.weight,
                                                                          torch.ones(4))


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_each_step_randomises_the_right_layers(resnet, mode):
    model, x = resnet
    original = {k: v.clone() for k, v in model.state_dict().items()}
    changed_layers = []

    def explanation(m: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        state = m.state_dict()
        changed_layers.append({k.rsplit(".", 1)[0] for k, v in state.items()
                               if not torch.equal(v, original[k])})
        return gradient(m, inputs, target)

    result = model_randomization(model, x, explanation=explanation, mode=mode, seed=5)
    assert result.layers == tuple(RESNET_LAYERS)
    assert changed_layers[0] == set()
    for step, changed in enumerate(changed_layers[1:]):
        want = RESNET_LAYERS[:step + 1] if mode == "cascading" else [RESNET_LAYERS[step]]
        assert changed == set(want)
    # The plain loop: a fresh copy per step, layers re-initialised by hand.
    target = model(x).argmax(1)
    for step in range(len(RESNET_LAYERS)):
        reference = copy.deepcopy(model)
        names = RESNET_LAYERS[:step + 1] if mode == "cascading" else [RESNET_LAYERS[step]]
        for name in names:
            reinitialize(reference.get_submodule(name), layer_seed(5, name))
        torch.testing.assert_close(result.maps[step], gradient(reference, x, target))
        sim = map_similarity(result.original, result.maps[step])
        for key, values in sim.items():
            torch.testing.assert_close(result.similarity[key][step], values)


def test_callers_model_and_random_state_come_back_unchanged(resnet):
    model, x = resnet
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.fc.weight.requires_grad_(False)
    rng = torch.get_rng_state()
    result = model_randomization(model, x, n_samples=2, mode="independent")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not model.fc.weight.requires_grad and model.conv1.weight.requires_grad
    assert not model.training and all(p.grad is None for p in model.parameters())
    model.fc.weight.requires_grad_(True)
    # The default explanation is smooth_grad with the given options, for the original model.
    want = smooth_grad(model, x, result.target, n_samples=2)
    torch.testing.assert_close(result.original, want)


def test_seeded_reproducible_and_the_modes_agree_on_the_top_layer(resnet):
    model, x = resnet
    first = model_randomization(model, x, explanation=gradient, seed=1)
    again = model_randomization(model, x, explanation=gradient, seed=1)
    other = model_randomization(model, x, explanation=gradient, seed=2)
    alone = model_randomization(model, x, explanation=gradient, seed=1, mode="independent",
                                layers=["fc", "conv1"], keep_maps=False)
    assert torch.equal(first.maps, again.maps)
    assert not torch.equal(first.maps[-1], other.maps[-1])
    assert alone.layers == ("fc", "conv1") and alone.maps is None
    torch.testing.assert_close(alone.similarity["spearman"][0], first.similarity["spearman"][0])
    means = first.mean_similarity()
    assert set(means) == {"spearman", "spearman_abs", "ssim", "ssim_abs", "top_k", "top_k_abs"}
    assert means["spearman_abs"].shape == (len(RESNET_LAYERS),)


def test_bad_arguments(resnet):
    model, x = resnet
    with pytest.raises(ValueError, match="mode"):
        model_randomization(model, x, explanation=gradient, mode="top-down")
    with pytest.raises(ValueError, match="no module"):
        model_randomization(model, x, explanation=gradient, layers=["fc9"])
    with pytest.raises(ValueError, match="no parameters"):
        model_randomization(nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(72, 3)).eval(), x,
                            explanation=gradient, layers=["1"])
    with pytest.raises(TypeError, match="smooth_grad arguments"):
        model_randomization(model, x, explanation=gradient, n_samples=3)
    with pytest.raises(ValueError, match="must return"):
        model_randomization(model, x, explanation=lambda m, i, t: i[0])
    with pytest.raises(ValueError, match="seed"):
        model_randomization(model, x, explanation=gradient, seed=-1)
    with pytest.raises(ValueError, match="measures"):
        model_randomization(model, x, explanation=gradient, measures=("pearson",))
    with pytest.raises(ValueError, match="eval"):
        model_randomization(tiny_resnet().train(), torch.rand(2, 3, 5, 5),
                            explanation=gradient)


def test_spearman_with_ties_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 30), generator=generator).double()
    b = a + torch.randint(0, 3, (4, 30), generator=generator)
    want = [stats.spearmanr(a[i], b[i]).statistic for i in range(4)]
    np.testing.assert_allclose(spearman(a, b).numpy(), want, rtol=1e-12)
    assert torch.isnan(spearman(torch.ones(1, 5), torch.arange(5.0)[None]))[0]


def test_ssim_matches_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(3, 9, 11, generator=generator, dtype=torch.float64)
    b = (a + 0.3 * torch.rand(3, 9, 11, generator=generator, dtype=torch.float64)).clamp(0, 1)
    want = [metrics.structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1.0)
            for i in range(3)]
    np.testing.assert_allclose(ssim(a, b, data_range=1.0).numpy(), want, rtol=1e-10)
    small = torch.rand(1, 5, 6, generator=generator, dtype=torch.float64)     # 5×5 window
    want = metrics.structural_similarity(small[0].numpy(), (1 - small[0]).numpy(),
                                         data_range=2.0, win_size=5)
    np.testing.assert_allclose(ssim(small, 1 - small, data_range=2.0).numpy(), [want])


def test_top_k_overlap_counts_shared_features():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 20, generator=generator), torch.randn(5, 20, generator=generator)
    got = top_k_overlap(a, b, 6)
    for i in range(5):
        top_a = set(sorted(range(20), key=lambda j: -float(a[i, j]))[:6])
        top_b = set(sorted(range(20), key=lambda j: -float(b[i, j]))[:6])
        assert got[i] == len(top_a & top_b) / 6
    same = map_similarity(a[:, None, 4:, None].expand(5, 2, 16, 3).contiguous() * 1.0,
                          a[:, None, 4:, None].expand(5, 2, 16, 3) * 1.0, top_k=5)
    for values in same.values():
        torch.testing.assert_close(values, torch.ones(5, dtype=torch.float64))


def test_figures(resnet, tmp_path):
    model, x = resnet
    result = model_randomization(model, x, explanation=gradient, layers=["fc", "bn2", "conv2"])
    figure = randomization_figure(result, x, out=tmp_path / "grid.png")
    assert len(figure.axes) == 3 * (1 + 1 + 3)
    assert [ax.get_title() for ax in figure.axes[:5]] == ["input", "original", "+ fc", "+ bn2",
                                                          "+ conv2"]
    randomization_similarity_figure(result, out=tmp_path / "similarity.png")
    maps = gradient(model, x, model(x).argmax(1))
    curves = {"gradient": (deletion_curve(model, x, maps, features_per_step=8),
                           insertion_curve(model, x, maps, features_per_step=8)),
              "random": deletion_curve(model, x, torch.rand_like(maps), features_per_step=8)}
    figure = perturbation_curve_figure(curves, out=tmp_path / "curves.png")
    assert len(figure.axes) == 2
    assert [len(ax.get_lines()) for ax in figure.axes] == [2, 1]
    assert all((tmp_path / name).stat().st_size > 1000
               for name in ("grid.png", "similarity.png", "curves.png"))
    with pytest.raises(ValueError, match="keep_maps"):
        randomization_figure(model_randomization(model, x, explanation=gradient,
                                                 layers=["fc"], keep_maps=False), x)
