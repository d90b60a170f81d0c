"""Parameter settings that vary across depth and module, with mergekit's exact meaning.

A setting is a scalar, a list of numbers (a gradient: linearly interpolated
across the layers of a slice), or a list of conditions ``{filter, value}``
where the first condition whose filter is a substring of the tensor name wins.
``t`` is the tensor's relative depth: layer ``i`` of ``n`` in a slice has
``t = i / (n - 1)``; tensors before the layers (embeddings) have ``t = 0`` and
those after (final norm, head) ``t = 1`` — the convention mergekit uses, so a
recipe exported to mergekit YAML gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

Scalar = float | bool
Gradient = list[float]


class ConditionalParameter(BaseModel):
    """A value that applies only to tensors whose name contains ``filter`` (None or '*': all)."""

    model_config = ConfigDict(extra="forbid")

    filter: str | None = None
    value: Scalar | Gradient


ParameterSetting = Scalar | Gradient | list[ConditionalParameter]


def interpolate(values: Sequence[float], t: float) -> float:
    """Piecewise-linear interpolation of ``values`` placed evenly over [0, 1]."""
    if len(values) == 1:
        return float(values[0])
    scaled = t * (len(values) - 1)
    nearest = round(scaled)
    if abs(scaled - nearest) < 1e-9:
        # layer i of n has t = i/(n-1), and (i/(n-1))*(n-1) is not always exactly i in floating
        # point (24 layers: layer 13 -> 12.999999999999998); a list of one value per layer must
        # give each layer exactly its value, not a 1e-15 blend that can move int(density * n).
        return float(values[nearest])
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * float(values[i0]) + frac * float(values[i1])


def evaluate_setting(tensor_name: str, setting: ParameterSetting | None, t: float) -> Scalar | None:
    """The value of ``setting`` for one tensor at relative depth ``t``; None when no condition matches."""
    if setting is None:
        return None
    if isinstance(setting, (bool, int, float)):
        return setting
    if isinstance(setting, ConditionalParameter):
        setting = [setting]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in setting):
        return interpolate(setting, t)  # type: ignore[arg-type]
    for cond in setting:
        if not isinstance(cond, ConditionalParameter):
            raise TypeError(f"cannot mix numbers and conditions in one setting: {setting!r}")
        if cond.filter in (None, "*") or cond.filter in tensor_name:
            return evaluate_setting(tensor_name, cond.value, t)
    return None
