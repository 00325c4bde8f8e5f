"""Text models end to end: token attributions of tiny transformers sequence classifiers (random
weights, no download) with an attention mask, per-token scores, and the shaded tokens."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_text_classifier

import smoothkern as sk
from smoothkern.text import TokenHTML, token_figure, token_html, token_scores

transformers = pytest.importorskip("transformers")

VOCAB, CLASSES = 50, 3


def padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    return ids, mask


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_token_attributions_with_an_attention_mask_equal_the_loop(kind):
    model = tiny_text_classifier(kind)
    ids, mask = padded_batch()
    options = dict(n_samples=4, noise_at=model.get_input_embeddings(),
                   forward_kwargs={"attention_mask": mask}, seed=2)
    got = sk.smooth_grad(model, ids, **options)
    want = sk.smooth_grad(model, ids, backend="loop", prepare=False, **options)
    assert got.shape == (3, 7, 16)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    # the mask reached the model: nothing attends to padding, so it gets no attribution
    assert got[mask == 0].abs().max() == 0 and got[mask == 1].abs().max() > 0
    scores = token_scores(got, "l2", mask=mask)
    assert scores.shape == (3, 7) and (scores[mask == 0] == 0).all()


def test_the_model_comes_back_unchanged():
    model = tiny_text_classifier("bert")
    ids, mask = padded_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sk.smooth_grad(model, ids, n_samples=2, noise_at=model.get_input_embeddings(),
                   forward_kwargs={"attention_mask": mask})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_token_scores_sum_and_l2():
    a = torch.tensor([[[1.0, -3.0], [3.0, 4.0]], [[0.5, 0.5], [-2.0, 0.0]]])
    torch.testing.assert_close(token_scores(a), torch.tensor([[-2.0, 7.0], [1.0, -2.0]]))
    torch.testing.assert_close(token_scores(a, "l2"),
                               torch.tensor([[10 ** 0.5, 5.0], [0.5 ** 0.5, 2.0]]))
    masked = token_scores(a, "sum", mask=torch.tensor([[1, 0], [True, True]]))
    torch.testing.assert_close(masked, torch.tensor([[-2.0, 0.0], [1.0, -2.0]]))
    with pytest.raises(ValueError, match="mode"):
        token_scores(a, "max")
    with pytest.raises(ValueError, match=r"\[B, tokens, hidden\]"):
        token_scores(a[0])
    with pytest.raises(ValueError, match="mask"):
        token_scores(a, mask=torch.ones(2, 3))


def test_token_html_shades_escapes_and_displays():
    snippet = token_html(["[CLS]", "<b>", "good"], torch.tensor([0.0, -1.0, 2.0]))
    assert isinstance(snippet, TokenHTML) and snippet._repr_html_() == snippet
    assert "&lt;b&gt;" in snippet and "<b>" not in snippet
    assert "rgb(255,0,0)" in snippet            # the strongest positive token, fully red
    assert "rgb(128,128,255)" in snippet        # half as strong negative, half blue
    batch = token_html([["a", "b", "pad"], ["c", "d", "e"]], torch.tensor([[1.0, 2, 9],
                                                                            [1, 1, 1]]),
                       mask=torch.tensor([[1, 1, 0], [1, 1, 1]]), normalize="all")
    assert batch.count("<div") == 2 and ">pad<" not in batch
    with pytest.raises(ValueError, match="tokens"):
        token_html(["a"], torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="normalize"):
        token_html(["a"], torch.tensor([1.0]), normalize="none")


def test_token_figure_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    words = ["the", "movie", "was", "surprisingly", "good"] * 6
    path = tmp_path / "tokens.png"
    assert token_figure(words, torch.linspace(-1, 1, len(words)), out=path, width=4) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = token_figure([words[:3], words[3:6]], torch.ones(2, 3))
    assert figure.get_axes()
