"""Test configuration.

Triton runs under its CPU interpreter only where there is no GPU: then ``TRITON_INTERPRET=1``
is set here, before smoothkern or anything else imports triton (the switch is read at import).
On a GPU machine the ``cuda``-marked Triton tests run the compiled kernels. A value set in the
environment wins either way.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def gradient_pass_rows(monkeypatch):
    """The model rows of every pass of the "gradient" method, in order (a list that fills as
    smooth_grad runs)."""
    import smoothkern as sk

    rows = []
    original = sk.methods.Gradient.attribute

    def counting(self, model, inputs, target):
        rows.append(inputs.shape[0])
        return original(self, model, inputs, target)

    monkeypatch.setattr(sk.methods.Gradient, "attribute", counting)
    return rows
