"""Search-space configs: strict pydantic models, one per kind, read from YAML presets.

Everything a user can set lives here with its default; checks that need the
sources (layer counts, method contracts) happen when the space is built, and
their errors name the key too (``layer_groups``, ``ranges.density``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from evomerge.errors import ConfigError, MergeError
from evomerge.recipe.model import DTYPES
from evomerge.yamlfile import format_validation_error, read_yaml

Range = tuple[float, float]
ModelRef = str | int  # an index into sources.models, a label, a path, or "base"


def _ordered(name: str, v: Range | None, *, positive: bool = False) -> Range | None:
    if v is None:
        return v
    lo, hi = v
    if not lo <= hi:
        raise ValueError(f"{name} [{lo:g}, {hi:g}] must satisfy low <= high")
    if positive and lo <= 0:
        raise ValueError(f"{name} [{lo:g}, {hi:g}] must be > 0 (hop scales are folded as 1/scale)")
    return v


class _Space(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: str | None = None
    name: str | None = None  # a label for the run; not used by decoding

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str | None) -> str | None:
        if v is not None and v not in DTYPES:
            raise ValueError(f"must be one of {', '.join(DTYPES)}, got '{v}'")
        return v


def _check_method(name: str) -> str:
    from evomerge.merge.registry import get_method

    try:
        get_method(name)
    except MergeError as exc:
        raise ValueError(str(exc)) from None
    return name


class PSConfig(_Space):
    """Parameter space (Akiba et al., arXiv 2403.13187): a merge method and its per-source parameters."""

    kind: Literal["ps"] = "ps"
    method: str | list[str] = "dare_ties"
    search: list[str] | None = None
    ranges: dict[str, Range] = Field(default_factory=dict)
    init: dict[str, float] = Field(default_factory=dict)
    fixed: dict[str, float | bool] = Field(default_factory=dict)
    layer_groups: int = Field(default=1, ge=1)
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _methods(cls, v: str | list[str]) -> str | list[str]:
        names = [v] if isinstance(v, str) else v
        if not names:
            raise ValueError("list at least one merge method")
        if len(set(names)) != len(names):
            raise ValueError(f"a method is listed twice: {names}")
        for n in names:
            _check_method(n)
        return v

    @property
    def methods(self) -> list[str]:
        return [self.method] if isinstance(self.method, str) else list(self.method)


class DFSConfig(_Space):
    """Data-flow space (Akiba et al., arXiv 2403.13187): which layers run, in which order, at which scale."""

    kind: Literal["dfs"] = "dfs"
    models: list[ModelRef] | None = None
    repeats: int = Field(default=3, ge=1)
    scaling: Literal["matrix", "per_slot"] = "matrix"
    scale_range: Range = (0.1, 2.0)
    scale_init: float = 1.0
    indicator_range: Range = (-1.0, 1.0)
    indicator_init: float = 0.5

    @field_validator("scale_range")
    @classmethod
    def _scales(cls, v: Range) -> Range:
        _ordered("scale_range", v, positive=True)
        return v

    @field_validator("indicator_range")
    @classmethod
    def _indicator(cls, v: Range) -> Range:
        lo, hi = v
        if not lo < 0 < hi:
            raise ValueError(f"[{lo:g}, {hi:g}] must contain 0 strictly inside (a slot is on when I > 0)")
        return v

    @model_validator(mode="after")
    def _inits(self) -> DFSConfig:
        lo, hi = self.scale_range
        if not lo <= self.scale_init <= hi:
            raise ValueError(f"scale_init {self.scale_init:g} is outside scale_range [{lo:g}, {hi:g}]")
        ilo, ihi = self.indicator_range
        if not (0 < self.indicator_init <= ihi and -self.indicator_init >= ilo):
            raise ValueError(f"indicator_init must be in (0, {min(ihi, -ilo):g}] (slots start at ±indicator_init)")
        return self


class LiNeSConfig(_Space):
    """LiNeS (Wang et al., arXiv 2410.17146): λ(ℓ) = α + β·ℓ/(L−1) over a task-vector merge."""

    kind: Literal["lines"] = "lines"
    method: str = "task_arithmetic"
    alpha: Range = (0.0, 1.0)
    beta: Range = (0.0, 2.0)
    alpha_init: float | None = None
    beta_init: float | None = None
    search_weights: bool = False
    weight_range: Range = (0.0, 2.0)
    weight_init: float = 1.0
    fixed: dict[str, float | bool] = Field(default_factory=dict)
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _check_method(v)

    @field_validator("alpha", "beta", "weight_range")
    @classmethod
    def _ranges(cls, v: Range, info: ValidationInfo) -> Range:
        _ordered(str(info.field_name), v)
        return v


class LayerSwapConfig(_Space):
    """Layer swapping (Bandarkar et al., arXiv 2410.01335): expert B's bottom and top k layers around A's middle."""

    kind: Literal["layer_swap"] = "layer_swap"
    expert_a: ModelRef = 0
    expert_b: ModelRef = 1
    k_bottom: tuple[int, int] | None = None
    k_top: tuple[int, int] | None = None
    k_bottom_init: int | None = None
    k_top_init: int | None = None

    @field_validator("k_bottom", "k_top")
    @classmethod
    def _k(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and not 0 <= v[0] <= v[1]:
            raise ValueError(f"[{v[0]}, {v[1]}] must satisfy 0 <= low <= high")
        return v


class PSDFSConfig(_Space):
    """PS+DFS (Akiba et al., arXiv 2403.13187): a PS search, then a DFS search with the PS winner as model A.

    ``b`` names the model(s) that join the winner in stage two (the paper: the
    language model). ``build_space`` gives stage one; ``dfs_stage`` stage two.
    """

    kind: Literal["ps_dfs"] = "ps_dfs"
    ps: PSConfig = Field(default_factory=PSConfig)
    dfs: DFSConfig = Field(default_factory=DFSConfig)
    b: list[ModelRef] = Field(min_length=1)

    @model_validator(mode="after")
    def _dfs_models_come_from_b(self) -> PSDFSConfig:
        if self.dfs.models is not None:
            raise ValueError("dfs.models must be left out: stage two uses the PS winner as A and 'b' after it")
        return self


SpaceConfig = Annotated[PSConfig | DFSConfig | LiNeSConfig | LayerSwapConfig | PSDFSConfig,
                        Field(discriminator="kind")]
SpaceConfigModel = PSConfig | DFSConfig | LiNeSConfig | LayerSwapConfig | PSDFSConfig
_ADAPTER: TypeAdapter[Any] = TypeAdapter(SpaceConfig)
KINDS = ("ps", "dfs", "lines", "layer_swap", "ps_dfs")


def parse_space_config(data: Any, *, source: str = "space") -> SpaceConfigModel:
    """Validate a mapping as a space config; errors name ``source`` and the key at fault."""
    if isinstance(data, BaseModel):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a search space must be a mapping, got {type(data).__name__}")
    if "kind" not in data:
        raise ConfigError(f"{source}: missing 'kind' (one of {', '.join(KINDS)})")
    if data["kind"] not in KINDS:
        raise ConfigError(f"{source}: kind '{data['kind']}' is unknown (one of {', '.join(KINDS)})")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid search space\n{_strip_kind(format_validation_error(exc))}") from None


def _strip_kind(text: str) -> str:
    # pydantic prefixes discriminated-union locations with the tag ("ps.layer_groups"); users wrote "layer_groups".
    lines = []
    for line in text.splitlines():
        for kind in KINDS:
            line = line.replace(f"  - {kind}.", "  - ", 1)
        lines.append(line)
    return "\n".join(lines)


def load_space(path: str | Path) -> SpaceConfigModel:
    """Read a YAML preset (``search_spaces/*.yaml``) into its validated config."""
    data = read_yaml(path, "search-space file")
    return parse_space_config(data, source=str(path))
