"""Token attributions for text models: one score per token, and tokens shaded by score.

With ``noise_at=model.get_input_embeddings()`` (a module is accepted), ``smooth_grad`` on a
sequence classifier returns ``[B, T, H]``: one vector per token. :func:`token_scores` turns it
into ``[B, T]`` by the two conventions in use (the sum over the hidden dim, signed; or its L2
norm), :func:`token_html` shades the tokens in an HTML snippet that a notebook displays, and
:func:`token_figure` draws the same as a matplotlib figure (PNG)::

    ids = tokenizer(texts, return_tensors="pt", padding=True)
    maps = smooth_grad(model, ids["input_ids"], noise_at=model.get_input_embeddings(),
                       forward_kwargs={"attention_mask": ids["attention_mask"]})
    scores = token_scores(maps, "sum", mask=ids["attention_mask"])
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in ids["input_ids"]]
    token_html(tokens, scores, mask=ids["attention_mask"])     # displays in a notebook
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

MODES = ("sum", "l2")


def token_scores(attribution: Tensor, mode: str = "sum", mask: Tensor | None = None) -> Tensor:
    """One score per token.

    Args:
        attribution (Tensor[B, T, H]): per-token attribution vectors (e.g. at the input
            embeddings).
        mode: "sum" (Σ_h a[b, t, h], signed: the input × gradient convention when the
            attribution is input × gradient) or "l2" (‖a[b, t]‖₂, non-negative).
        mask (Tensor[B, T] | None): 1/True for real tokens, 0/False for padding (an attention
            mask); padding scores are 0.

    Returns:
        Tensor[B, T] in the attribution's dtype.
    """
    if not isinstance(attribution, Tensor) or attribution.dim() != 3:
        shape = tuple(attribution.shape) if isinstance(attribution, Tensor) else \
            type(attribution).__name__
        raise ValueError(f"attribution must be [B, tokens, hidden], got {shape}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    scores = attribution.sum(-1) if mode == "sum" else attribution.norm(dim=-1)
    if mask is not None:
        scores = scores * _check_mask(mask, scores.shape).to(scores.device, scores.dtype)
    return scores


def token_html(tokens: Sequence[str] | Sequence[Sequence[str]], scores: Tensor,
               mask: Tensor | None = None, *, normalize: str = "row") -> TokenHTML:
    """Tokens shaded by score, as an HTML snippet (red positive, blue negative; the
    strongest token of a row, or of all rows with ``normalize="all"``, fully shaded).

    Args:
        tokens: the T tokens of one text, or B lists of them.
        scores (Tensor[T] | Tensor[B, T]): from :func:`token_scores`.
        mask (Tensor[B, T] | None): padding (0/False) is left out.
        normalize: "row" or "all".

    Returns:
        A str whose ``_repr_html_`` is itself: a notebook cell ending with it displays it.
    """
    rows, values = _rows(tokens, scores, mask)
    scale = _scales(values, normalize)
    lines = []
    for words, vals, s in zip(rows, values, scale):
        spans = "".join(
            f'<span title="{v:.4g}" style="background-color:{_rgba(v / s)};padding:1px 2px;'
            f'margin:1px;border-radius:3px">{html.escape(w)}</span>'
            for w, v in zip(words, vals))
        lines.append(f'<div style="line-height:1.9;font-family:monospace">{spans}</div>')
    return TokenHTML("".join(lines))


def token_figure(tokens: Sequence[str] | Sequence[Sequence[str]], scores: Tensor,
                 mask: Tensor | None = None, *, normalize: str = "row",
                 out: str | os.PathLike | None = None, width: float = 8.0) -> Any:
    """The same shading as :func:`token_html`, as a matplotlib figure (one line per text,
    wrapped at ``width`` inches).

    Args:
        out: save it there (a PNG for ``.png``) and close it.

    Returns:
        The ``matplotlib.figure.Figure`` (None when saved to ``out``).
    """
    import matplotlib

    if out is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows, values = _rows(tokens, scores, mask)
    scale = _scales(values, normalize)
    char_w, line_h = 0.11, 0.32                   # inches per character and per line
    placed, lines = [], 0
    for words, vals, s in zip(rows, values, scale):
        x = 0.0
        for w, v in zip(words, vals):
            span = char_w * (len(w) + 1)
            if x > 0 and x + span > width:
                x, lines = 0.0, lines + 1
            placed.append((x, lines, w, v / s))
            x += span
        lines += 2                                # a blank line between texts
    height = max(1, lines - 1) * line_h + 0.2
    figure = plt.figure(figsize=(width + 0.2, height))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width + 0.2)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for x, line, w, v in placed:
        ax.text(x + 0.1, line * line_h + 0.25, w, family="monospace", fontsize=10,
                bbox={"facecolor": _rgb(v), "edgecolor": "none", "pad": 1.5})
    if out is None:
        return figure
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return None


class TokenHTML(str):
    """An HTML snippet that a notebook displays (``_repr_html_``)."""

    def _repr_html_(self) -> str:
        return str(self)


def _check_mask(mask: Any, shape: torch.Size) -> Tensor:
    mask = torch.as_tensor(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask must be shaped like the scores {tuple(shape)}, got "
                         f"{tuple(mask.shape)}")
    return mask != 0


def _rows(tokens: Any, scores: Tensor, mask: Tensor | None
          ) -> tuple[list[list[str]], list[list[float]]]:
    scores = torch.as_tensor(scores).detach().float().cpu()
    if scores.dim() == 1:
        scores = scores.unsqueeze(0)
    if scores.dim() != 2:
        raise ValueError(f"scores must be [T] or [B, T], got {tuple(scores.shape)}")
    if tokens and isinstance(tokens[0], str):
        tokens = [tokens]
    tokens = [list(t) for t in tokens]
    if len(tokens) != scores.shape[0] or any(len(t) != scores.shape[1] for t in tokens):
        raise ValueError(f"tokens must be {scores.shape[0]} lists of {scores.shape[1]} "
                         f"tokens, got lengths {[len(t) for t in tokens]}")
    keep = torch.ones(scores.shape, dtype=torch.bool) if mask is None else \
        _check_mask(mask, scores.shape).cpu()
    rows, values = [], []
    for words, vals, k in zip(tokens, scores.tolist(), keep.tolist()):
        rows.append([w for w, m in zip(words, k) if m])
        values.append([v for v, m in zip(vals, k) if m])
    return rows, values


def _scales(values: list[list[float]], normalize: str) -> list[float]:
    if normalize not in ("row", "all"):
        raise ValueError(f"normalize must be 'row' or 'all', got {normalize!r}")
    peaks = [max((abs(v) for v in vals), default=0.0) or 1.0 for vals in values]
    return [max(peaks)] * len(peaks) if normalize == "all" else peaks


def _rgb(v: float) -> tuple[float, float, float]:
    """White to red for v in (0, 1], white to blue for v in [-1, 0)."""
    v = max(-1.0, min(1.0, v))
    return (1.0, 1.0 - v, 1.0 - v) if v >= 0 else (1.0 + v, 1.0 + v, 1.0)


def _rgba(v: float) -> str:
    r, g, b = (round(255 * c) for c in _rgb(v))
    return f"rgb({r},{g},{b})"
