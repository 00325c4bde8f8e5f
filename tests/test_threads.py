"""Calls from several threads (a web service, a data loader thread): each result equals the
same call made alone, and the model comes back intact (parameters, requires_grad, hooks,
flags); process-wide switches come back as they were."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from helpers import tiny_resnet
from torch import nn

import smoothkern as sk
from smoothkern.metrics import deletion_curve
from smoothkern.model_cache.toggles import attention_fast_path_off

X = torch.rand(2, 3, 10, 9, generator=torch.Generator().manual_seed(8))
ROUNDS = 3


def in_threads(call, arguments):
    """Runs ``call(arg)`` for each argument, two threads at a time, all released together."""
    start = threading.Barrier(len(arguments))

    def run(arg):
        start.wait()
        return [call(arg) for _ in range(ROUNDS)]

    with ThreadPoolExecutor(len(arguments)) as pool:
        return list(pool.map(run, arguments))


def snapshot(model):
    return ([(id(p), p.detach().clone(), p.requires_grad) for p in model.parameters()],
            sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                for m in model.modules()),
            [m.training for m in model.modules()])


def assert_intact(model, before):
    params, hooks, flags = snapshot(model)
    assert [(i, r) for i, _, r in params] == [(i, r) for i, _, r in before[0]]
    assert all(torch.equal(a, b) for (_, a, _), (_, b, _) in zip(params, before[0]))
    assert hooks == before[1] and flags == before[2]


@pytest.mark.parametrize("call", [
    lambda m, t: sk.smooth_grad(m, X, [t, 1], n_samples=4, seed=t),
    lambda m, t: sk.smooth_grad(m, X, [t, 1], n_samples=4, seed=t, method="grad_cam",
                                layer="conv2"),
    lambda m, t: sk.smooth_grad(m, X, [t, 1], n_samples=4, seed=t, noise_at="conv1"),
    lambda m, t: sk.noise_grad(m, X, [t, 1], n_models=3, seed=t),
    lambda m, t: deletion_curve(m, X, X.flip(-1) + t, [t, 1], steps=4).scores,
], ids=["smooth_grad", "layer_method", "noise_at", "noise_grad", "deletion_curve"])
def test_two_threads_on_one_model_get_the_sequential_results(call):
    model = tiny_resnet()
    before = snapshot(model)
    alone = {t: call(model, t) for t in (0, 3)}
    for t, results in zip((0, 3), in_threads(lambda t: call(model, t), [0, 3])):
        for result in results:
            torch.testing.assert_close(result, alone[t], rtol=0, atol=0)
    assert_intact(model, before)


def test_two_threads_on_one_noise_tunnel_get_the_sequential_results():
    skc = pytest.importorskip("smoothkern.captum")
    model = tiny_resnet()
    before = snapshot(model)
    nt = skc.NoiseTunnel(skc.Saliency(model))

    def call(t):
        return nt.attribute(X, nt_samples=3, stdevs=0.1, target=[t, 1], seed=t)

    alone = {t: call(t) for t in (0, 2)}
    for t, results in zip((0, 2), in_threads(call, [0, 2])):
        for result in results:
            torch.testing.assert_close(result, alone[t], rtol=0, atol=0)
    assert_intact(model, before)


class Encoder(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Linear(3, 8)
        self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.layer(self.embed(x)).mean(1))


def test_noise_at_on_two_models_leaves_the_attention_fast_path_as_it_was():
    models = [Encoder(0).eval(), Encoder(1).eval()]
    x = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(1))

    def call(i):
        return sk.smooth_grad(models[i], x, [0, 1], n_samples=3, noise_at="embed")

    alone = [call(0), call(1)]
    assert torch.backends.mha.get_fastpath_enabled()
    for i, results in enumerate(in_threads(call, [0, 1])):
        for result in results:
            torch.testing.assert_close(result, alone[i], rtol=0, atol=0)
    assert torch.backends.mha.get_fastpath_enabled()


def test_overlapping_users_of_the_fast_path_switch_restore_it_once():
    inside, leave_first = threading.Event(), threading.Event()
    states = []

    def first():
        with attention_fast_path_off():
            inside.set()
            leave_first.wait(5)
        states.append(torch.backends.mha.get_fastpath_enabled())

    saved = torch.backends.mha.get_fastpath_enabled()
    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with attention_fast_path_off():        # enters while the first is inside, leaves after it
        leave_first.set()
        thread.join(5)
        states.append(torch.backends.mha.get_fastpath_enabled())
    assert states == [False, False]        # neither restored it while the other was inside
    assert torch.backends.mha.get_fastpath_enabled() == saved


def test_overlapping_exact_float32_sections_restore_tf32_once():
    from smoothkern.model_cache.toggles import exact_float32

    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"
        first = exact_float32(torch.device("cuda"))
        second = exact_float32(torch.device("cuda"))
        first.__enter__()
        second.__enter__()              # a second thread's check overlaps the first's
        first.__exit__(None, None, None)
        assert matmul.fp32_precision == "ieee"       # still inside the second
        second.__exit__(None, None, None)
        assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision = saved
