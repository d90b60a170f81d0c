"""The digits zoo: a 64-256-10 MLP on scikit-learn's 8x8 digits, saved like a real checkpoint.

This is the setting of M2N2 (Abrantes et al., arXiv 2508.16204): two experts
(digits 0-4 and 5-9) trained from one shared initialisation, to be merged into
a model that knows all ten digits, plus random initialisations to evolve from
scratch. The module stores config.json + model.safetensors, so the same
checkpoint code serves it and a 7B model.

Differences from the official M2N2 code (SakanaAI/natural_niches), on purpose:
its experts start from two *different* N(0, 0.01²) initialisations and see raw
pixels (0-16) for 10 full-batch Adam steps, with an unshuffled 80/20 split;
here both experts start from one shared init (so task vectors exist), inputs are
/16 and the split is seeded. Measured consequence: from the shared init, plain
linear averaging already reaches ~90 % on all ten digits (the official setting's
brute-force SLERP: ~58 %), and training the experts 10x longer only lowers that
to ~84 % — shared-init digit experts are easy to merge.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from evomerge.errors import CheckpointError

DIGITS_SPLIT_SEED = 42
"""``random_state`` of the fixed 80/20 ``train_test_split`` (not stratified): 1,437 train / 360 test."""

MODEL_TYPE = "digits_mlp"


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): inputs scaled to [0, 1] as float32, labels int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=DIGITS_SPLIT_SEED)
    return x_train, y_train, x_test, y_test


class DigitsMLP(nn.Module):
    """Linear(64, 256) -> ReLU -> Linear(256, 10): 19,210 parameters, tensors ``layers.{0,1}.{weight,bias}``."""

    def __init__(self, sizes: tuple[int, ...] = (64, 256, 10)) -> None:
        super().__init__()
        self.sizes = tuple(int(s) for s in sizes)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x

    def save_pretrained(self, path: str | Path) -> Path:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        config = {"model_type": MODEL_TYPE, "sizes": list(self.sizes), "activation": "relu"}
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path) -> DigitsMLP:
        folder = Path(path)
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{folder / 'config.json'}: cannot read a DigitsMLP config ({exc})") from exc
        if config.get("model_type") != MODEL_TYPE:
            raise CheckpointError(f"{folder / 'config.json'}: model_type is {config.get('model_type')!r}, "
                                  f"expected {MODEL_TYPE!r}")
        model = cls(tuple(config["sizes"]))
        try:
            state = load_file(str(folder / "model.safetensors"))
            model.load_state_dict(state)
        except Exception as exc:
            raise CheckpointError(f"{folder / 'model.safetensors'}: not a DigitsMLP state ({exc})") from exc
        return model


@dataclass(frozen=True)
class DigitsRecipe:
    """Everything that determines the digits zoo's bytes; its hash is the build stamp."""

    init_seed: int = 0
    train_seed: int = 1
    epochs: int = 10
    batch: int = 32
    lr: float = 1e-3
    n_random_inits: int = 20
    random_init_seed: int = 100

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def tiny(cls) -> DigitsRecipe:
        return cls(epochs=1, n_random_inits=2)


def train_expert(model: DigitsMLP, x: np.ndarray, y: np.ndarray, recipe: DigitsRecipe, seed: int) -> DigitsMLP:
    """Adam on cross-entropy over all ten logits, on the given examples only (that is what makes it an expert)."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(order), recipe.batch):
            idx = order[i:i + recipe.batch]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model


def build_digits(out_dir: str | Path, recipe: DigitsRecipe | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Write ``init/``, ``expert_0_4/``, ``expert_5_9/`` and ``random/init_XX/`` under ``out_dir``."""
    from evomerge.zoo.score import accuracy

    recipe = recipe or DigitsRecipe()
    out = Path(out_dir)
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = digits_split()
    torch.manual_seed(recipe.init_seed)
    init = DigitsMLP()
    init.save_pretrained(out / "init")
    facts: dict = {"recipe": recipe.to_dict()}
    total = 2 + recipe.n_random_inits
    for k, (name, labels) in enumerate((("expert_0_4", [0, 1, 2, 3, 4]), ("expert_5_9", [5, 6, 7, 8, 9]))):
        keep = np.isin(y_train, labels)
        model = DigitsMLP()
        model.load_state_dict(init.state_dict())
        train_expert(model, x_train[keep], y_train[keep], recipe, seed=recipe.train_seed + k)
        model.save_pretrained(out / name)
        facts[f"{name}_test_acc_own"] = accuracy(model, x_test, y_test, labels)
        if progress is not None:
            progress("digits", k + 1, total)
    for i in range(recipe.n_random_inits):
        torch.manual_seed(recipe.random_init_seed + i)
        DigitsMLP().save_pretrained(out / "random" / f"init_{i:02d}")
        if progress is not None:
            progress("digits", 3 + i, total)
    return facts
