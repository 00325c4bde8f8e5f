"""model_io: where the logits are in a model's output, and the model's other inputs."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from smoothkern.model_io import (
    ModelCall,
    adapt,
    check_forward_args,
    check_output_spec,
    describe,
    inner_model,
    logits_of,
)


@dataclass
class Output:                                   # what a transformers ModelOutput looks like
    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class TwoInputs(nn.Module):
    """logits = W1 x + W2 (mask · z) + scale: a second batch input, a mask and a number."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 3)
        self.b = nn.Linear(4, 3, bias=False)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(3, 5))

    def forward(self, x, z, mask=None, scale=0.0):
        z = z if mask is None else z * mask
        return self.head(self.a(x) + self.b(z)) + scale


def test_default_reads_tensor_logits_attribute_and_mapping():
    t = torch.randn(3, 5)
    assert logits_of(t, None, 3) is t
    assert logits_of(Output(t), None, 3) is t
    assert logits_of({"logits": t, "other": 1}, None, 3) is t
    assert logits_of(OrderedDict(logits=t), None, 3) is t


@pytest.mark.parametrize("out, spec", [
    ({"scores": "T"}, "scores"), (Output(torch.zeros(1), "T"), "hidden"), (("x", "T"), 1),
    (["T", "x"], -2), ({"a": {"b": "T"}}, lambda out: out["a"]["b"]),
])
def test_named_indexed_and_callable_output(out, spec):
    t = torch.randn(2, 4)

    def fill(o):
        if o == "T":
            return t
        if isinstance(o, dict):
            return {k: fill(v) for k, v in o.items()}
        if isinstance(o, (tuple, list)):
            return type(o)(fill(v) for v in o)
        if isinstance(o, Output):
            return Output(o.logits, fill(o.hidden))
        return o

    assert logits_of(fill(out), spec, 2) is t


@pytest.mark.parametrize("out, spec, says", [
    ({"scores": torch.randn(2, 4), "aux": 1}, None,
     ["dict('scores': Tensor[2, 4], 'aux': int)", "output='scores'"]),
    ((torch.randn(2, 4, 3), torch.randn(2, 4)), None,
     ["tuple[Tensor[2, 4, 3], Tensor[2, 4]]", "output=1"]),
    ((torch.randn(2, 4),), 3, ["at output=3", "(nothing there)", "output=0"]),
    (Output(torch.randn(2, 4), torch.randn(2, 4)), "missing", ["Output(", "output='logits'"]),
    (torch.randn(2, 4, 7), None, ["Tensor[2, 4, 7]", "output=lambda"]),
    (torch.randn(3, 4), None, ["[2, classes]", "Tensor[3, 4]"]),
    ({"logits": torch.randn(2, 4)}, lambda out: out["logits"][0], ["read there: Tensor[4]"]),
])
def test_mismatch_names_what_the_model_returned_and_the_fix(out, spec, says):
    with pytest.raises(ValueError, match="must return logits") as err:
        logits_of(out, spec, 2)
    for text in says:
        assert text in str(err.value), str(err.value)


@pytest.mark.parametrize("spec", [True, 1.5, b"logits", ("logits",), torch.tensor(0)])
def test_bad_output_spec_is_a_type_error(spec):
    with pytest.raises(TypeError, match="output="):
        check_output_spec(spec)
    with pytest.raises(TypeError, match="output="):
        ModelCall(nn.Identity(), output=spec, batch=1)


def test_describe_nests_two_levels():
    text = describe({"a": (torch.zeros(1, 2), {"deep": {"deeper": 1}})})
    assert "Tensor[1, 2]" in text and "deeper" not in text


def test_check_forward_args():
    mask = torch.ones(2, 3)
    assert check_forward_args(None, None, 2) == ((), {})
    assert check_forward_args(mask, None, 2)[0][0] is mask   # one tensor is one argument
    assert check_forward_args([1, mask], {"m": mask}, 2) == ((1, mask), {"m": mask})
    with pytest.raises(TypeError, match="mapping"):
        check_forward_args((), [mask], 2)
    with pytest.raises(TypeError, match="argument names"):
        check_forward_args((), {0: mask}, 2)
    with pytest.raises(ValueError, match="batch"):
        check_forward_args((), None, 0)


def test_model_call_repeats_batch_arguments_per_row():
    torch.manual_seed(0)
    model = TwoInputs()
    B, copies = 3, 4
    x, z = torch.randn(B, 6), torch.randn(B, 4)
    mask = (torch.rand(B, 4) > 0.3).float()
    call = ModelCall(model, forward_args=(z,), forward_kwargs={"mask": mask, "scale": 2.0},
                     batch=B)
    rows = torch.randn(copies * B, 6)                     # row r is example r mod B
    got = call(rows)
    want = torch.stack([model(rows[r:r + 1], z[r % B:r % B + 1], mask=mask[r % B:r % B + 1],
                              scale=2.0)[0] for r in range(copies * B)])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(call(x), model(x, z, mask=mask, scale=2.0))
    with pytest.raises(ValueError, match="not a multiple"):
        call(torch.randn(B + 1, 6))


def test_model_call_reads_output_and_subset_keeps_examples():
    torch.manual_seed(1)
    inner = TwoInputs()

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x, z):
            return {"logits": inner(x, z), "aux": x}

    model = Wrapped()
    x, z = torch.randn(4, 6), torch.randn(4, 4)
    call = ModelCall(model, output="logits", forward_args=(z,), batch=4)
    part = call.subset(torch.tensor([3, 1]))
    assert part.batch == 2 and part.model is model
    rows = torch.cat([x[[3, 1]], x[[3, 1]]])
    torch.testing.assert_close(part(rows), inner(rows, z[[3, 1, 3, 1]]))
    with pytest.raises(ValueError, match="non-empty"):
        call.subset([])


def test_model_call_resolves_layer_paths_in_the_callers_model():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    call = ModelCall(model, output=None, forward_kwargs={}, batch=1)
    assert call.get_submodule("2") is model[2]
    assert call.get_submodule("model.0") is model[0]
    assert call.get_submodule("") is call
    assert inner_model(call) is model and inner_model(model) is model
    with pytest.raises(AttributeError):
        call.get_submodule("nope")
    model.eval()
    assert ModelCall(model, batch=1).training is False and model.training is False


def test_model_call_around_keeps_the_options():
    model = TwoInputs()
    z = torch.randn(2, 4)
    call = ModelCall(model, forward_args=(z,), batch=2)
    other = TwoInputs()
    moved = call.around(other)
    assert moved.model is other and moved.args[0] is z and moved.batch == 2


def test_adapt_returns_the_model_when_there_is_nothing_to_adapt():
    model = nn.Linear(2, 3)
    assert adapt(model, batch=2) is model
    assert adapt(model, None, None, None, 2, sample=torch.zeros(2, 3)) is model
    assert isinstance(adapt(model, None, (), None, 2, sample=Output(torch.zeros(2, 3))),
                      ModelCall)
    assert isinstance(adapt(model, "logits", batch=2), ModelCall)
    assert isinstance(adapt(model, None, (), {"mask": torch.ones(2)}, 2), ModelCall)


def test_gradients_flow_through_the_adapter():
    model = TwoInputs()
    z = torch.randn(2, 4)
    call = ModelCall(model, output=lambda out: out * 2, forward_args=(z,), batch=2)
    x = torch.randn(4, 6, requires_grad=True)
    call(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
