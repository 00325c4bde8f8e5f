"""How a model is called and what is read from its output.

Every entry point that runs a model takes the same three options:

- ``output=``: where the logits ``[B, classes]`` are in what the model returns. ``None``
  (default) reads a Tensor as it is, an object with a ``.logits`` attribute (every
  Hugging Face ``ModelOutput``) or a mapping with a ``"logits"`` key; a ``str`` names a key
  or an attribute; an ``int`` indexes a tuple or list; a callable maps the output to logits.
- ``forward_args=`` / ``forward_kwargs=``: the model's other inputs (an attention mask, token
  type ids, a second image), like Captum's ``additional_forward_args``. The model is called as
  ``model(rows, *forward_args, **forward_kwargs)``; a tensor whose first dimension is the batch
  ``B`` is repeated so that row ``r`` of the noisy rows gets example ``r mod B`` (the engine
  stacks its noisy rows as ``(sample · S + sweep) · B + example``, and integrated gradients
  stacks its steps the same way); anything else is passed as it is.

:func:`adapt` turns a model and these options into the module the passes run
(:class:`ModelCall`), or gives the model back when there is nothing to adapt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

OutputSpec = None | str | int | Callable[[Any], Tensor]


def check_output_spec(output: Any) -> None:
    """Refuses an ``output=`` that is not None, a str, an int or a callable.

    Raises:
        TypeError: anything else (a bool included).
    """
    if output is None or callable(output):
        return
    if isinstance(output, bool) or not isinstance(output, (str, int)):
        raise TypeError(f"output= must be None, a key or attribute name (str), an index into "
                        f"a tuple (int) or a callable from the model's output to logits "
                        f"[B, classes]; got {type(output).__name__}")


def logits_of(out: Any, output: OutputSpec = None, batch: int | None = None) -> Tensor:
    """The logits ``[B, classes]`` in a model's output ``out``, as ``output=`` says.

    Args:
        out: what the model returned.
        output: see the module docstring.
        batch: B, the rows the logits must have (None: not checked).

    Returns:
        Tensor[B, classes] (the tensor itself, not a copy: gradients flow through it).

    Raises:
        ValueError: the output has no logits where ``output`` says, or they are not shaped
            ``[B, classes]``; the message names what the model returned and the ``output=``
            that would read it.
    """
    check_output_spec(output)
    if output is None:
        logits = _default_logits(out)
    elif callable(output):
        logits = output(out)
    elif isinstance(output, str):
        logits = _by_name(out, output)
    else:
        logits = _by_index(out, output)
    if logits is None or not isinstance(logits, Tensor) or logits.dim() != 2 or (
            batch is not None and logits.shape[0] != batch):
        rows = "B" if batch is None else str(batch)
        where = "" if output is None else f" at output={output!r}"
        read = "" if output is None else (
            " (nothing there)" if logits is None else f" (read there: {describe(logits)})")
        raise ValueError(f"the model must return logits shaped [B, classes] = [{rows}, "
                         f"classes]{where}; it returned {describe(out)}{read}"
                         + _hint(out, batch))
    return logits


def describe(out: Any, depth: int = 0) -> str:
    """A short description of a model's output: its type, and its keys, fields or items with
    their shapes (for error messages)."""
    if isinstance(out, Tensor):
        return f"Tensor{list(out.shape)}"
    if depth > 1:
        return type(out).__name__
    if isinstance(out, Mapping):
        items = ", ".join(f"{k!r}: {describe(v, depth + 1)}" for k, v in list(out.items())[:8])
        return f"{type(out).__name__}({items})"
    if isinstance(out, (tuple, list)):
        items = ", ".join(describe(v, depth + 1) for v in list(out)[:8])
        return f"{type(out).__name__}[{items}]"
    fields = {k: v for k, v in vars(out).items() if not k.startswith("_")} \
        if hasattr(out, "__dict__") else {}
    if fields:
        items = ", ".join(f"{k}={describe(v, depth + 1)}" for k, v in list(fields.items())[:8])
        return f"{type(out).__name__}({items})"
    return type(out).__name__


def _default_logits(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        return out.get("logits")
    return getattr(out, "logits", None)


def _by_name(out: Any, name: str) -> Any:
    if isinstance(out, Mapping):
        return out.get(name)
    return getattr(out, name, None)


def _by_index(out: Any, index: int) -> Any:
    if isinstance(out, (tuple, list)) and -len(out) <= index < len(out):
        return out[index]
    return None


def _hint(out: Any, batch: int | None) -> str:
    """``; pass output=...`` naming the first place that holds a [B, classes] tensor."""
    def fits(v: Any) -> bool:
        return isinstance(v, Tensor) and v.dim() == 2 and (batch is None or v.shape[0] == batch)

    if isinstance(out, Mapping):
        names = [k for k, v in out.items() if fits(v)]
        if names:
            return f"; pass e.g. output={names[0]!r}"
    elif isinstance(out, (tuple, list)):
        found = [i for i, v in enumerate(out) if fits(v)]
        if found:
            return f"; pass e.g. output={found[0]}"
    elif hasattr(out, "__dict__"):
        names = [k for k, v in vars(out).items() if not k.startswith("_") and fits(v)]
        if names:
            return f"; pass e.g. output={names[0]!r}"
    return "; pass output= a callable that returns them (output=lambda out: ...)"


def check_forward_args(forward_args: Any, forward_kwargs: Any, batch: int
                       ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The model's other inputs, checked: ``(args, kwargs)``.

    Args:
        forward_args: None, a tuple/list of extra positional arguments, or one value (a single
            tensor is one argument).
        forward_kwargs: None or a mapping of keyword arguments (str keys).
        batch: B, the examples explained.

    Raises:
        TypeError: forward_kwargs is not a mapping with str keys.
        ValueError: batch is not a positive int.
    """
    if forward_args is None:
        args: tuple[Any, ...] = ()
    elif isinstance(forward_args, (tuple, list)):
        args = tuple(forward_args)
    else:
        args = (forward_args,)
    if forward_kwargs is None:
        kwargs: dict[str, Any] = {}
    elif isinstance(forward_kwargs, Mapping):
        kwargs = dict(forward_kwargs)
        bad = [k for k in kwargs if not isinstance(k, str)]
        if bad:
            raise TypeError(f"forward_kwargs keys must be argument names (str), got {bad!r}")
    else:
        raise TypeError(f"forward_kwargs must be a mapping of argument names to values, got "
                        f"{type(forward_kwargs).__name__}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    return args, kwargs


class ModelCall(nn.Module):
    """The module the passes run: ``rows[R, ...] -> logits[R, classes]``.

    Calls ``model(rows, *forward_args, **forward_kwargs)`` with every tensor argument whose
    first dim is ``batch`` repeated so that row ``r`` gets example ``r mod batch`` (R must be a
    multiple of ``batch``), and reads the logits as ``output`` says. The caller's model is
    ``.model``, a submodule: layer paths (``"bert.embeddings"``, Grad-CAM's ``"layer4"``) are
    resolved against it by :meth:`get_submodule`, and its parameters, hooks and flags are the
    caller's.

    Args:
        model: the caller's model.
        output: where the logits are (module docstring).
        forward_args, forward_kwargs: the model's other inputs.
        batch: B, the examples explained (the first dim of the batch-shaped arguments).
    """

    def __init__(self, model: nn.Module, output: OutputSpec = None,
                 forward_args: Sequence[Any] | Any = (),
                 forward_kwargs: Mapping[str, Any] | None = None, batch: int = 1) -> None:
        super().__init__()
        check_output_spec(output)
        self.model = model
        self.training = model.training     # the caller's flag (not set on its modules)
        self.output = output
        self.args, self.kwargs = check_forward_args(forward_args, forward_kwargs, batch)
        self.batch = batch

    def forward(self, rows: Tensor) -> Tensor:
        """rows (Tensor[R, ...]), R a multiple of ``batch`` → logits (Tensor[R, classes])."""
        if not any(map(self._batched, (*self.args, *self.kwargs.values()))):
            # nothing to repeat per row (also under vmap, where a call sees one row)
            return logits_of(self.model(rows, *self.args, **self.kwargs), self.output,
                             rows.shape[0])
        copies = self._copies(rows.shape[0])
        args = tuple(self._repeat(a, copies) for a in self.args)
        kwargs = {k: self._repeat(v, copies) for k, v in self.kwargs.items()}
        return logits_of(self.model(rows, *args, **kwargs), self.output, rows.shape[0])

    def subset(self, index: Tensor | Sequence[int]) -> ModelCall:
        """The adapter for examples ``index`` (LongTensor[B'] of positions in 0..B-1): each
        batch-shaped argument keeps those rows, in that order."""
        index = torch.as_tensor(index, dtype=torch.int64)
        if index.dim() != 1 or index.numel() == 0:
            raise ValueError(f"index must be a non-empty 1-d list of examples, got shape "
                             f"{tuple(index.shape)}")
        args = tuple(self._select(a, index) for a in self.args)
        kwargs = {k: self._select(v, index) for k, v in self.kwargs.items()}
        return ModelCall(self.model, self.output, args, kwargs, int(index.numel()))

    def around(self, model: nn.Module) -> ModelCall:
        """The same adapter around another module (e.g. a prepared copy of ``.model``)."""
        return ModelCall(model, self.output, self.args, self.kwargs, self.batch)

    def get_submodule(self, target: str) -> nn.Module:
        """A module of the caller's model by its dotted path in that model ("" is this
        adapter); ``"model.<path>"`` works too."""
        if target == "":
            return self
        try:
            return self.model.get_submodule(target)
        except AttributeError:
            return super().get_submodule(target)

    def extra_repr(self) -> str:
        return (f"output={self.output!r}, batch={self.batch}, args={len(self.args)}, "
                f"kwargs={sorted(self.kwargs)}")

    def _copies(self, rows: int) -> int:
        if rows % self.batch:
            raise ValueError(f"the model is called with {rows} rows, not a multiple of the "
                             f"{self.batch} examples its forward arguments were given for")
        return rows // self.batch

    def _batched(self, value: Any) -> bool:
        return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == self.batch

    def _repeat(self, value: Any, copies: int) -> Any:
        if copies == 1 or not self._batched(value):
            return value
        return value.repeat(copies, *([1] * (value.dim() - 1)))

    def _select(self, value: Any, index: Tensor) -> Any:
        return value[index.to(value.device)] if self._batched(value) else value


def adapt(model: nn.Module, output: OutputSpec = None, forward_args: Sequence[Any] | Any = (),
          forward_kwargs: Mapping[str, Any] | None = None, batch: int = 1, *,
          sample: Any = None) -> nn.Module:
    """The module the passes run: ``model`` itself when there is nothing to adapt (no
    ``output=``, no other inputs, and ``sample`` — the model's output for the clean batch, if
    the caller has it — is a Tensor or not given), else a :class:`ModelCall`.

    A model returning a ``ModelOutput`` under the defaults needs the adapter: give ``sample``
    (or read its output with :func:`logits_of`, which accepts ``.logits`` by default).
    """
    check_output_spec(output)
    args, kwargs = check_forward_args(forward_args, forward_kwargs, batch)
    if output is None and not args and not kwargs and (
            sample is None or isinstance(sample, Tensor)):
        return model
    return ModelCall(model, output, args, kwargs, batch)


def inner_model(model: nn.Module) -> nn.Module:
    """The caller's model inside a :class:`ModelCall` (the module itself otherwise)."""
    return model.model if isinstance(model, ModelCall) else model
