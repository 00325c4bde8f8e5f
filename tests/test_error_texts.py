"""Each bad argument is refused before any work with a sentence that names it (the texts a
user met as tracebacks or as errors about something else)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import smoothkern as sk


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()


X = torch.rand(2, 3, 2, 2)


@pytest.mark.parametrize("call, error, match", [
    (lambda m: sk.smooth_grad(m, X, n_sample=2), TypeError,
     r"unexpected keyword argument.*'n_sample' \(did you mean 'n_samples'\?\)"),
    (lambda m: sk.noise_grad(m, X, cuda_graphs=True), TypeError,
     r"noise_grad\(\) got unexpected keyword argument.*'cuda_graphs'"),
    (lambda m: sk.smooth_grad(m, X, method="integrated_gradients", n_step=3), TypeError,
     r"'n_step' \(did you mean 'n_steps'\?\)"),
    (lambda m: sk.smooth_grad(m, X, prepare=1), TypeError, r"prepare must be True, False"),
    (lambda m: sk.smooth_grad(m, X, example_index=2**63), ValueError,
     r"example_index values must be within 0\.\.2\*\*32-1"),
    (lambda m: sk.smooth_grad(m, X, compile=1), TypeError, r"compile must be True or False"),
    (lambda m: sk.smooth_grad(m, X, progress="yes"), TypeError, r"progress must be True"),
    (lambda m: sk.smooth_grad(m, X, output=3.5), (TypeError, ValueError), r"output"),
])
def test_bad_arguments_name_themselves(model, call, error, match):
    with pytest.raises(error, match=match):
        call(model)
