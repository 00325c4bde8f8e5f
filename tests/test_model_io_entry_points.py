"""output= / forward_args= / forward_kwargs= on the entry points that run a model besides
smooth_grad: the faithfulness curves, model randomisation, the optimisers, the data sets.

Reference: the same call one example at a time on a closure that binds that example's other
inputs and returns plain logits (what a user writes without these options).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothkern.metrics import deletion_curve, insertion_curve, model_randomization
from smoothkern.studies.optimize import class_visualization, fooling_images


class TwoInputNet(nn.Module):
    """Image x [B, 1, 6, 6] and side input z [B, 4] with a mask; returns a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.side = nn.Linear(4, 3)
        self.head = nn.Linear(3 * 36, 5)

    def forward(self, x, z, mask=None, scale=1.0):
        side = self.side(z * (1 if mask is None else mask))
        h = torch.relu(self.conv(x) + side[:, :, None, None])
        return {"scores": self.head(h.flatten(1)) * scale, "features": h}


class Bound(nn.Module):
    """The closure a user would write: one example's other inputs bound, logits returned."""

    def __init__(self, model, z, mask, scale):
        super().__init__()
        self.model, self.z, self.mask, self.scale = model, z, mask, scale

    def forward(self, x):
        n = x.shape[0]
        return self.model(x, self.z.expand(n, -1), mask=self.mask.expand(n, -1),
                          scale=self.scale)["scores"]


class BoundNet(TwoInputNet):
    """``Bound`` with the same module names as the model (randomisation seeds by name)."""

    def __init__(self, model, z, mask, scale):
        super().__init__()
        self.load_state_dict(model.state_dict())
        self.eval()
        self.z, self.mask, self.scale = z, mask, scale

    def forward(self, x):
        n = x.shape[0]
        return super().forward(x, self.z.expand(n, -1), mask=self.mask.expand(n, -1),
                               scale=self.scale)["scores"]


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = TwoInputNet().eval()
    x = torch.rand(3, 1, 6, 6)
    z = torch.randn(3, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0]], dtype=torch.float32)
    return model, x, z, mask


def io(z, mask):
    return dict(output="scores", forward_args=(z,), forward_kwargs={"mask": mask, "scale": 2.0})


@pytest.mark.parametrize("curve", [deletion_curve, insertion_curve])
def test_perturbation_curves_take_the_models_other_inputs(setting, curve):
    model, x, z, mask = setting
    a = torch.randn_like(x)
    got = curve(model, x, a, torch.tensor([0, 3, 1]), steps=6, rows_per_pass=5, **io(z, mask))
    for b, t in enumerate([0, 3, 1]):
        want = curve(Bound(model, z[b:b + 1], mask[b:b + 1], 2.0), x[b:b + 1], a[b:b + 1], t,
                     steps=6)
        torch.testing.assert_close(got.scores[b:b + 1], want.scores)


def test_perturbation_curve_reads_a_model_output_by_default(setting):
    model, x, z, mask = setting

    class LogitsOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Bound(model, z[:1], mask[:1], 1.0)

        def forward(self, x):
            return {"logits": self.inner(x)}

    a = torch.randn_like(x)
    got = deletion_curve(LogitsOut(), x, a, steps=4)
    want = deletion_curve(Bound(model, z[:1], mask[:1], 1.0), x, a, steps=4)
    torch.testing.assert_close(got.scores, want.scores)


def test_perturbation_curve_output_error_names_the_fix(setting):
    model, x, z, mask = setting
    with pytest.raises(ValueError, match="output='scores'"):
        deletion_curve(model, x, torch.randn_like(x), forward_args=(z,))
    with pytest.raises(ValueError, match="score="):
        deletion_curve(model, x, torch.randn_like(x), output="logit")


def test_model_randomization_takes_the_models_other_inputs(setting):
    model, x, z, mask = setting
    options = dict(n_samples=2, stdevs=0.1, seed=3, keep_maps=True)
    got = model_randomization(model, x, 2, **io(z, mask), **options)
    for b in range(x.shape[0]):
        want = model_randomization(BoundNet(model, z[b:b + 1], mask[b:b + 1], 2.0),
                                   x[b:b + 1], 2, example_index=b, **options)
        assert got.layers == want.layers
        torch.testing.assert_close(got.maps[:, b:b + 1], want.maps, atol=1e-5, rtol=1e-5)


def test_fooling_images_take_the_models_other_inputs(setting):
    model, x, z, mask = setting
    targets = torch.tensor([4, 2, 0])
    got = fooling_images(model, x, targets, max_steps=5, normalization=None, batch_size=2,
                         **io(z, mask))
    for b in range(x.shape[0]):
        want = fooling_images(Bound(model, z[b:b + 1], mask[b:b + 1], 2.0), x[b:b + 1],
                              targets[b:b + 1], max_steps=5, normalization=None)
        torch.testing.assert_close(got.images[b:b + 1], want.images)
        assert torch.equal(got.steps[b:b + 1], want.steps)


def test_class_visualization_takes_the_models_other_inputs(setting):
    model, x, z, mask = setting
    options = dict(num_steps=4, max_jitter=1, blur_every=2, normalization=None, seed=5)
    got = class_visualization(model, [1, 2, 3], init=x, **io(z, mask), **options)
    for b in range(x.shape[0]):
        want = class_visualization(Bound(model, z[b:b + 1], mask[b:b + 1], 2.0), [b + 1],
                                   init=x[b:b + 1], example_index=b, **options)
        torch.testing.assert_close(got.images[b:b + 1], want.images)


def test_attribute_dataset_cuts_per_example_inputs_to_each_batch(setting, tmp_path):
    pytest.importorskip("zarr")
    from torch.utils.data import TensorDataset

    import smoothkern as sk

    model, x, z, mask = setting
    x, z, mask = x.repeat(2, 1, 1, 1), torch.cat([z, -z]), mask.repeat(2, 1)     # N = 6
    options = dict(n_samples=3, stdevs=0.05, seed=1)
    run = sk.attribute_dataset(model, TensorDataset(x, torch.zeros(6, dtype=torch.long)),
                               tmp_path / "store", batch_size=4, chunk_size=4, progress=False,
                               output=lambda out: out["scores"], forward_args=(z,),
                               forward_kwargs={"mask": mask, "scale": 2.0}, **options)
    stored = run.open()
    for k in range(6):
        bound = Bound(model, z[k:k + 1], mask[k:k + 1], 2.0)
        target = bound(x[k:k + 1]).argmax(1)
        want = sk.smooth_grad(bound, x[k:k + 1], target, example_index=k, **options)
        assert int(stored["target"][k]) == int(target)
        torch.testing.assert_close(torch.from_numpy(stored["mean"][k:k + 1]), want)
    again = sk.attribute_dataset(model, TensorDataset(x, torch.zeros(6, dtype=torch.long)),
                                 tmp_path / "store", batch_size=2, chunk_size=4, progress=False,
                                 output=lambda out: out["scores"], forward_args=(z,),
                                 forward_kwargs={"mask": mask, "scale": 2.0}, **options)
    assert again.computed == 0 and again.skipped == run.chunks       # the same job: resumed
