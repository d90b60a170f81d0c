"""Classification accuracy for models that map float features [N, d] to logits [N, C].

The M2N2 digits setting (arXiv 2508.16204) scores tens of thousands of
candidates, each in microseconds of model time, so the per-call overhead here
is kept small: features and labels are tensors made once per split and device.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evomerge.errors import FitnessError
from evomerge.fitness.base import Direction, TaskResult, check_indices, check_split
from evomerge.fitness.config import ClassificationSpec, DataSource
from evomerge.fitness.data import read_jsonl, resolve
from evomerge.fitness.decoding import model_device


def _load_builtin(source: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if source == "sklearn_digits":
        try:
            from evomerge.zoo.digits import digits_split
        except ImportError as exc:
            raise FitnessError(f"data source 'sklearn_digits' needs evomerge.zoo.digits ({exc})") from None
        x_train, y_train, x_test, y_test = digits_split()
        return {"train": (x_train, y_train), "test": (x_test, y_test)}
    raise FitnessError(f"unknown data source {source!r}")


def _load_jsonl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    recs = read_jsonl(path, required={"x": list, "label": int})
    width = len(recs[0]["x"])
    for i, r in enumerate(recs):
        if len(r["x"]) != width:
            raise FitnessError(f"{path}: example {i} has {len(r['x'])} features, example 0 has {width}")
    try:
        x = np.asarray([r["x"] for r in recs], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise FitnessError(f"{path}: 'x' must hold numbers only ({exc})") from None
    return x, np.asarray([r["label"] for r in recs], dtype=np.int64)


class ClassificationTask:
    """Accuracy (per example 1.0 if the argmax is the label); ``tokenizer`` is ignored.

    With ``labels`` only the examples of those classes are kept; with
    ``restrict_logits`` the argmax is also taken over those classes' logits only
    (a k-way classifier cut out of a C-way head).
    """

    kind = "classification"
    per_example_sign = 1.0
    score_range: tuple[float, float] | None = (0.0, 1.0)
    race_refusal: str | None = None

    def __init__(self, spec: ClassificationSpec, base_dir: Path, source: str = "<memory>",
                 arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.objective_name = spec.objective.name if spec.objective else spec.name
        self.direction: Direction = spec.objective.direction if spec.objective else "maximize"
        if arrays is None:
            if isinstance(spec.data, DataSource):
                arrays = _load_builtin(spec.data.source)
            else:
                arrays = {s: _load_jsonl(resolve(base_dir, rel)) for s, rel in spec.data.splits().items()}
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split, (x, y) in arrays.items():
            x = np.asarray(x, dtype=np.float32)
            y = np.asarray(y, dtype=np.int64).reshape(-1)
            if x.ndim != 2 or x.shape[0] != y.shape[0]:
                raise FitnessError(f"task '{self.name}' split '{split}': x must be [N, d] with one label per "
                                   f"row, got x{list(x.shape)} and {y.shape[0]} labels")
            if spec.labels is not None:
                keep = np.isin(y, spec.labels)
                x, y = x[keep], y[keep]
            if y.shape[0] == 0:
                raise FitnessError(f"task '{self.name}' split '{split}' has no examples"
                                   + (f" with labels {spec.labels}" if spec.labels else ""))
            self.arrays[split] = (x, y)
        self._tensors: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def _on(self, split: str, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (split, f"{device}/{dtype}")
        if key not in self._tensors:
            x, y = self.arrays[split]
            self._tensors[key] = (torch.from_numpy(x).to(device=device, dtype=dtype), torch.from_numpy(y).to(device))
        return self._tensors[key]

    def size(self, split: str) -> int:
        check_split(self.name, split, list(self.arrays))
        return int(self.arrays[split][1].shape[0])

    def evaluate(self, model: Any, tokenizer: Any = None, *, split: str = "train", indices: Any = None) -> TaskResult:
        """Forward the split (or its examples at ``indices``) in batches and compare argmax with the labels."""
        check_split(self.name, split, list(self.arrays))
        idx = check_indices(self.name, split, indices, self.size(split))
        t0 = time.perf_counter()
        try:
            dtype = next(model.parameters()).dtype
        except (StopIteration, AttributeError):
            dtype = torch.float32
        x, y = self._on(split, model_device(model), dtype if dtype.is_floating_point else torch.float32)
        if idx is not None:
            rows = torch.from_numpy(idx).to(y.device)
            x, y = x.index_select(0, rows), y.index_select(0, rows)
        cols = torch.as_tensor(self.spec.labels, device=y.device) if self.spec.restrict_logits else None
        preds = []
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, x.shape[0], self.spec.batch_size):
                    logits = model(x[start:start + self.spec.batch_size])
                    if logits.ndim != 2:
                        raise FitnessError(f"task '{self.name}': model returned logits of shape "
                                           f"{list(logits.shape)}, expected [N, C]")
                    if cols is not None:
                        if int(cols.max()) >= logits.shape[1]:
                            raise FitnessError(f"task '{self.name}': labels {self.spec.labels} exceed the "
                                               f"model's {logits.shape[1]} outputs")
                        preds.append(cols[logits[:, cols].argmax(1)])
                    else:
                        preds.append(logits.argmax(1))
        finally:
            model.train(was_training)
        pred = torch.cat(preds)
        correct = (pred == y).cpu().numpy().astype(np.float64)
        return TaskResult(
            task=self.name, split=split, objectives={self.objective_name: float(correct.mean())},
            per_example=correct, n=int(correct.shape[0]), seconds=time.perf_counter() - t0,
            details={"predictions": pred.cpu().numpy()},
        )
