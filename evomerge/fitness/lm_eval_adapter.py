"""Adapter to lm-evaluation-harness tasks (optional: ``pip install lm-eval``).

lm-eval pulls in datasets, pyarrow, pandas, evaluate, nltk, sacrebleu… (about
430 MB), so it is an optional extra and imported only when a ``kind: lm_eval``
task is evaluated. The candidate is wrapped in an ``lm_eval.api.model.LM``
backed by this package's own batched scoring and KV-cache greedy decoding, so
no model is re-loaded from disk and no ``accelerate``/``peft`` is needed.
Per-example scores come from lm-eval's logged samples.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.errors import FitnessError
from evomerge.fitness.base import Direction, TaskResult, check_split
from evomerge.fitness.config import LmEvalSpec
from evomerge.fitness.data import resolve
from evomerge.fitness.decoding import greedy_loop, make_batches, model_device, token_nll
from evomerge.fitness.likelihood import split_continuation
from evomerge.fitness.tokens import encode, eos_ids, pad_id

INSTALL_HINT = "kind: lm_eval needs lm-evaluation-harness: pip install lm-eval"


def lm_eval_available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _make_lm(model: Any, tokenizer: Any, *, batch_size: int, max_new_tokens: int) -> Any:
    """An ``lm_eval.api.model.LM`` over an in-memory model and tokenizer."""
    from lm_eval.api.model import LM

    class EvomergeLM(LM):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.tokenizer = model, tokenizer
            self.pad = pad_id(tokenizer)
            prefix = getattr(tokenizer, "bos_token_id", None)
            self.prefix = prefix if prefix is not None else (getattr(tokenizer, "eos_token_id", None) or 0)

        def _score(self, seqs: Sequence[Sequence[int]]) -> list[Any]:
            return token_nll(self.model, seqs, batch_size=batch_size, pad_id=self.pad, with_greedy=True)

        def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
            seqs, starts = [], []
            for req in requests:
                context, continuation = req.args[0], req.args[1]
                ctx, cont = split_continuation(self.tokenizer, context, continuation, add_special_tokens=True)
                if not ctx:
                    ctx = [self.prefix]
                seqs.append(ctx + cont)
                starts.append(len(ctx) - 1)
            out = []
            for scored, start in zip(self._score(seqs), starts, strict=True):
                part = scored[:, start:]
                out.append((-float(part[0].double().sum()), bool(part[1].all())))
            return out

        def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
            seqs = [[self.prefix, *ids] for ids in encode(self.tokenizer, [r.args[0] for r in requests],
                                                          add_special_tokens=False)]
            return [-float(s[0].double().sum()) for s in self._score(seqs)]

        def generate_until(self, requests: list[Any]) -> list[str]:
            eos = eos_ids(self.model, self.tokenizer)
            out: list[str] = [""] * len(requests)
            contexts = encode(self.tokenizer, [r.args[0] for r in requests], add_special_tokens=True)
            groups: dict[tuple[Any, ...], list[int]] = {}
            for i, r in enumerate(requests):
                kw = r.args[1] if len(r.args) > 1 else {}
                until = kw.get("until", [])
                until = [until] if isinstance(until, str) else list(until)
                key = (tuple(until), int(kw.get("max_gen_toks", max_new_tokens)))
                groups.setdefault(key, []).append(i)
            device = model_device(self.model)
            for (until, n_new), members in groups.items():
                for b in make_batches([contexts[i] for i in members], batch_size, pad_id=self.pad, left=True):
                    gen = greedy_loop(self.model, b.input_ids.to(device), b.attention_mask.to(device),
                                      max_new_tokens=n_new, eos_ids=eos, pad_id=self.pad).cpu().tolist()
                    for row, k in zip(gen, b.index.tolist(), strict=True):
                        cut = next((j for j, t in enumerate(row) if t in eos), len(row))
                        text = self.tokenizer.decode(row[:cut], skip_special_tokens=True)
                        for stop in until:
                            if stop and stop in text:
                                text = text[: text.index(stop)]
                        out[members[k]] = text
            return out

    return EvomergeLM()


def _task_ref(base_dir: Path, ref: str) -> tuple[str, str | None]:
    """(lm-eval task name, include path) for a registered name or a local task YAML."""
    if ref.endswith((".yaml", ".yml")):
        path = resolve(base_dir, ref)
        if not path.is_file():
            raise FitnessError(f"lm-eval task YAML not found: {path}")
        m = re.search(r"^task:\s*['\"]?([^'\"\s#]+)", path.read_text(encoding="utf-8"), re.MULTILINE)
        if m is None:
            raise FitnessError(f"{path}: no top-level 'task:' name in this lm-eval task YAML")
        return m.group(1), str(path.parent)
    return ref, None


class LmEvalTask:
    """One lm-eval task per split; objective = lm-eval's aggregate of ``metric``."""

    kind = "lm_eval"

    def __init__(self, spec: LmEvalSpec, base_dir: Path, source: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.objective_name = spec.objective.name if spec.objective else spec.name
        self.direction: Direction = spec.objective.direction if spec.objective else "maximize"
        refs = spec.data.splits() if spec.data is not None else {"train": spec.task or ""}
        self.refs = {split: _task_ref(base_dir, ref) for split, ref in refs.items()}

    def evaluate(self, model: Any, tokenizer: Any, *, split: str = "train") -> TaskResult:
        """Run lm-eval's ``simple_evaluate`` on the wrapped candidate and collect per-sample metrics."""
        check_split(self.name, split, list(self.refs))
        try:
            import lm_eval
            from lm_eval.tasks import TaskManager
        except ImportError:
            raise FitnessError(f"task '{self.name}': {INSTALL_HINT}") from None
        t0 = time.perf_counter()
        task_name, include = self.refs[split]
        lm = _make_lm(model, tokenizer, batch_size=self.spec.batch_size, max_new_tokens=self.spec.max_new_tokens)
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            out = lm_eval.simple_evaluate(
                model=lm, tasks=[task_name], num_fewshot=self.spec.num_fewshot, limit=self.spec.limit,
                log_samples=True, bootstrap_iters=0, verbosity="ERROR",
                task_manager=TaskManager(include_path=include, verbosity="ERROR"),
            )
        except Exception as exc:  # lm-eval raises many kinds; the candidate fails, not the search
            raise FitnessError(f"task '{self.name}': lm-eval task '{task_name}' failed: {exc}") from exc
        finally:
            model.train(was_training)
        metric = self.spec.metric
        per: list[float] = []
        for sub in sorted(out["samples"]):
            samples = sorted(out["samples"][sub], key=lambda s: s["doc_id"])
            if samples and metric not in samples[0]:
                raise FitnessError(f"task '{self.name}': lm-eval task '{sub}' has no per-sample metric "
                                   f"'{metric}'; it has {samples[0].get('metrics')}")
            per.extend(float(s[metric]) for s in samples)
        if not per:
            raise FitnessError(f"task '{self.name}': lm-eval task '{task_name}' produced no samples")
        agg = out["results"].get(task_name, {})
        value = next((v for k, v in agg.items() if k.split(",")[0] == metric and isinstance(v, (int, float))),
                     float(np.mean(per)))
        return TaskResult(task=self.name, split=split, objectives={self.objective_name: float(value)},
                          per_example=np.asarray(per, dtype=np.float64), n=len(per),
                          seconds=time.perf_counter() - t0,
                          details={"lm_eval_task": task_name, "lm_eval_results": out["results"]})
