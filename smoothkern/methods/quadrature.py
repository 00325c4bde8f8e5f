"""Integration rules for integrated gradients: step sizes and alphas, exactly as Captum's."""

from __future__ import annotations

import torch

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def check_rule(rule: str, n_steps: int) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown integration rule {rule!r}; choose from {RULES}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int):
        raise TypeError(f"n_steps must be an int, got {type(n_steps).__name__}")
    minimum = 1 if rule == "gausslegendre" else 2
    if n_steps < minimum:
        raise ValueError(f"n_steps must be >= {minimum} for {rule}, got {n_steps}")


def steps_and_alphas(rule: str, n_steps: int) -> tuple[list[float], list[float]]:
    """Weights and points of the rule on [0, 1] (Python floats, Captum's values bit for bit)."""
    check_rule(rule, n_steps)
    n = n_steps
    if rule == "gausslegendre":
        import numpy as np

        points, weights = np.polynomial.legendre.leggauss(n)
        return (0.5 * weights).tolist(), (0.5 * (1 + points)).tolist()
    sizes = [1 / n] * n
    kind = rule.split("_")[1]
    if kind == "trapezoid":
        sizes[0] /= 2
        sizes[-1] /= 2
        alphas = torch.linspace(0, 1, n)
    elif kind == "left":
        alphas = torch.linspace(0, 1 - 1 / n, n)
    elif kind == "middle":
        alphas = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        alphas = torch.linspace(1 / n, 1, n)
    return sizes, alphas.tolist()
