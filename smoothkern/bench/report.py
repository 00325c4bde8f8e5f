"""What a benchmark measured: one :class:`Row` per variant, the :class:`BenchResult` with its
table and JSON, and the maps' relative L2 distance."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from torch import Tensor

from .machine import machine_line


@dataclasses.dataclass
class Row:
    """One variant's measurements. None: not measured (``skipped`` or ``note`` says why)."""

    variant: str
    label: str
    time_s: float | None = None
    speedup_vs_loop: float | None = None
    peak_mib: float | None = None
    memory: str | None = None          # how the peak was taken
    rel_l2: float | None = None        # ‖map − smoothkern fp32 map‖ / ‖smoothkern fp32 map‖
    error_kind: str | None = None      # reference | same seed | precision | Monte-Carlo | none
    skipped: str | None = None
    note: str | None = None


@dataclasses.dataclass
class BenchResult:
    """What :func:`benchmark` measured: the machine, the settings, one row per variant."""

    machine: dict[str, Any]
    config: dict[str, Any]
    rows: list[Row]
    monte_carlo_rel_l2: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def row(self, variant: str) -> Row:
        for row in self.rows:
            if row.variant == variant:
                return row
        raise KeyError(variant)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        data = dict(data)
        data["rows"] = [Row(**row) for row in data["rows"]]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> BenchResult:
        return cls.from_dict(json.loads(text))

    def table(self) -> str:
        """The machine, the settings and a Markdown table of the rows."""
        c = self.config
        lines = [f"machine: {machine_line(self.machine)}",
                 f"model: {c['model']}, inputs {c['input_shape']} ({c['device']}), method "
                 f"{c['method']}, aggregate {c['aggregate']}, m = {c['n_samples']}, "
                 f"σ = {c['noise_level']} × input range = {c['sigma']:.4g}, seed {c['seed']}, "
                 f"median of {c['repeats']} interleaved repeats after a warm-up"]
        if self.monte_carlo_rel_l2 is not None:
            lines.append(f"Monte-Carlo yardstick: two smoothkern fp32 seeds differ by "
                         f"{_percent(self.monte_carlo_rel_l2)} (rel. L2) at this m")
        lines += ["", "| variant | time (s) | speed-up vs loop | peak memory added (MiB) | "
                  "rel. L2 vs smoothkern fp32 | note |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            if r.skipped:
                lines.append(f"| {r.label} | - | - | - | - | skipped: {r.skipped} |")
                continue
            error = "-" if r.rel_l2 is None else f"{_percent(r.rel_l2)} ({r.error_kind})"
            lines.append(f"| {r.label} | {_num(r.time_s, '{:.4f}')} | "
                         f"{_num(r.speedup_vs_loop, '{:.2f}x')} | {_num(r.peak_mib, '{:.1f}')} | "
                         f"{error} | {r.note or ''} |")
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _percent(value: float) -> str:
    return "0 %" if value == 0 else f"{100 * value:.3g} %"


def rel_l2(a: Tensor, ref: Tensor) -> float:
    """‖a − ref‖₂ / ‖ref‖₂ in float64 (0 when both are zero)."""
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    denom = ref.norm().item()
    diff = (a - ref).norm().item()
    return diff / denom if denom > 0 else (0.0 if diff == 0 else math.inf)
