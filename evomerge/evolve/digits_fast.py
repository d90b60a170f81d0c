"""Per-example correctness of flat DigitsMLP genomes without the model object or the task machinery.

M2N2's digits experiments (arXiv 2508.16204) evaluate tens of thousands of children, so the scoring
path must cost about one forward pass: the genome's float32 vector is viewed as the MLP's tensors
(no parameter copy) and pushed through the same torch ops, in the same batches, as ``DigitsMLP``
under ``ClassificationTask`` — which makes the predictions, and so the scores, bit-identical to
``ModelTasksProblem(zoo/digits/init, [digits_all.yaml]).score(genome).per_example``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from evomerge.evolve.base import EvolutionError
from evomerge.evolve.flat import FlatLayout
from evomerge.zoo.digits import DigitsMLP, digits_split


class DigitsScorer:
    """Scores genomes laid out as ``FlatLayout.from_model(DigitsMLP(sizes))`` on a train and a test split.

    ``batch_size`` must be the task's (512 for digits_all.yaml): torch's matmul kernels may round a
    row differently for another batch shape, and exactness is the point.
    """

    def __init__(self, splits: dict[str, tuple[np.ndarray, np.ndarray]], *, batch_size: int = 512,
                 sizes: tuple[int, ...] = (64, 256, 10)) -> None:
        self.layout = FlatLayout.from_model(DigitsMLP(sizes))
        names = [e.name for e in self.layout.entries]
        expected = [f"layers.{i}.{kind}" for i in range(len(sizes) - 1) for kind in ("weight", "bias")]
        if names != expected:
            raise EvolutionError(f"DigitsMLP parameters are {names}, the scorer expects {expected}")
        self.batch_size = int(batch_size)
        self._splits = {name: (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                               torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)))
                        for name, (x, y) in splits.items()}

    @classmethod
    def from_split(cls, batch_size: int = 512) -> DigitsScorer:
        """The zoo's fixed 80/20 split (``digits_split``), 1,437 train / 360 test examples."""
        x_train, y_train, x_test, y_test = digits_split()
        return cls({"train": (x_train, y_train), "test": (x_test, y_test)}, batch_size=batch_size)

    @classmethod
    def from_task(cls, path: str | Path) -> DigitsScorer:
        """The examples and batch size of a classification task YAML (e.g. fitness/digits/digits_all.yaml)."""
        from evomerge.fitness import load_task

        task = load_task(path)
        spec = getattr(task, "spec", None)
        if getattr(task, "kind", None) != "classification" or spec is None or spec.restrict_logits:
            raise EvolutionError(f"{path}: DigitsScorer needs a classification task without restrict_logits")
        return cls(dict(task.arrays), batch_size=spec.batch_size)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def n_examples(self, split: str = "train") -> int:
        return int(self._split(split)[1].shape[0])

    def correct(self, genome: np.ndarray, split: str = "train") -> np.ndarray:
        """float64 0/1 per example of ``split``: 1 where the argmax of the logits is the label."""
        x, y = self._split(split)
        flat = np.ascontiguousarray(genome, dtype=np.float32).reshape(-1)
        if flat.size != self.layout.size:
            raise EvolutionError(f"genome has {flat.size} entries, a DigitsMLP genome has {self.layout.size}")
        params = torch.from_numpy(flat if flat.flags.writeable else flat.copy())  # torch wants writable memory
        tensors = [params[e.offset: e.offset + e.numel].view(e.shape) for e in self.layout.entries]
        layers = list(zip(tensors[0::2], tensors[1::2], strict=True))
        preds = []
        with torch.inference_mode():
            for start in range(0, x.shape[0], self.batch_size):
                h = x[start:start + self.batch_size]
                for i, (weight, bias) in enumerate(layers):
                    h = functional.linear(h, weight, bias)
                    if i < len(layers) - 1:
                        h = torch.relu(h)
                preds.append(h.argmax(1))
        return (torch.cat(preds) == y).numpy().astype(np.float64)

    def correct_many(self, genomes: np.ndarray, split: str = "train") -> np.ndarray:
        """(G, n) correctness of G genomes (rows of ``genomes``)."""
        return np.stack([self.correct(g, split) for g in np.asarray(genomes, dtype=np.float32)])

    def accuracy(self, genome: np.ndarray, split: str = "test") -> float:
        return float(self.correct(genome, split).mean())

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._splits:
            raise EvolutionError(f"split {split!r} unknown to this DigitsScorer; it has {list(self._splits)}")
        return self._splits[split]
