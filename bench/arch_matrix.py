"""The architecture matrix of the README: which merges and searches work on which architecture.

For each architecture this transformers can build, a tiny random family (base
+ 3 noisy fine-tunes, from the config class; no downloads) is made, and

* each merge method is run by the streaming merge (``evomerge merge``) and the
  output loaded by plain transformers with strict checks (no missing,
  unexpected or mismatched keys);
* the same recipes are merged in place into a resident model and compared with
  the reloaded streaming merge, bit for bit, every parameter;
* a PS search (DARE-TIES, 3 evaluations in place, perplexity fitness) is run and its best
  trial exported; the export, loaded by plain transformers, must reproduce the
  recorded train and test scores exactly;
* a passthrough layer stack (the base's layers + an expert's last layer) loads strictly, its config
  says so, and the added layer holds the expert's tensors bit for bit;
* a data-flow layer path (scaled hops, a repeated expert layer) is folded and the folded model,
  loaded strictly, gives the routed model's logits (max |diff| relative to max |logit|), or the
  architecture is refused with its reason.

A cell says ``ok`` or the first line of the error. The last column says what
transformers' key conversions do to the checkpoint (what the in-place path
replays). The checks are those of ``tests/materialize/test_arch_matrix.py``.

    python bench/arch_matrix.py [--archs llama,mixtral]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from evomerge.testing_archs import (
    MERGE_METHODS,
    available_archs,
    check_dataflow,
    check_in_place,
    check_passthrough,
    check_ps_search,
    check_streaming_merge,
    load_strictly,
    tiny_family,
    write_perplexity_task,
)


def _cell(fn) -> tuple[str, object]:
    try:
        return "ok", fn()
    except Exception as exc:  # a failing cell is the point of the table
        line = (str(exc).splitlines() or [type(exc).__name__])[0]
        return f"**fails**: {type(exc).__name__}: {line[:120]}", None


def _dataflow_cell(base: Path, experts: list[Path], out: Path) -> str:
    """ok with the folded-vs-routed logit difference, or the refusal's reason (said when the space is built)."""
    from evomerge.errors import ConfigError

    def attempt() -> str:
        try:
            return f"ok (rel. {check_dataflow(base, experts, out)})"
        except ConfigError as exc:  # a refusal is an answer, not a failure
            return "refused: " + str(exc).split("not supported for ", 1)[-1]

    status, cell = _cell(attempt)
    return cell if cell is not None else status


def row(arch: str, root: Path, task: Path) -> list[str]:
    from evomerge.io.checkpoint import Checkpoint
    from evomerge.materialize.inplace import ResidentSources
    from evomerge.materialize.load_map import LoadMap

    base, experts = tiny_family(arch, root / arch)
    cells, in_place = [], []
    model = load_strictly(base)
    resident = ResidentSources.from_paths(experts, base)
    for method in MERGE_METHODS:
        status, reloaded = _cell(lambda m=method: check_streaming_merge(m, base, experts, root / arch / m))
        cells.append(status)
        if reloaded is not None:
            ok, _ = _cell(lambda m=method, r=reloaded: check_in_place(m, base, experts, r, model, resident))
            in_place.append(ok if ok != "ok" else "")
    failures = [c for c in in_place if c]
    cells.append(failures[0] if failures else f"ok ({len(in_place)}/{len(MERGE_METHODS)})")
    cells.append(_cell(lambda: check_ps_search(base, experts, task, root / arch / "search"))[0])
    status, layers = _cell(lambda: check_passthrough(base, experts, root / arch / "passthrough"))
    cells.append(f"ok ({layers} layers)" if layers is not None else status)
    cells.append(_dataflow_cell(base, experts, root / arch / "dataflow"))
    ckpt = Checkpoint.open(base)
    conversions, lm = _cell(lambda: LoadMap(model, [(n, ckpt.info(n).shape) for n in ckpt.names]))
    cells.append(lm.summary() if lm is not None else conversions)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=None, help="comma-separated subset (default: all available)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    archs = args.archs.split(",") if args.archs else available_archs()
    import transformers

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="arch-matrix-") as tmp:
        root = Path(tmp)
        task = write_perplexity_task(root)
        rows = {arch: row(arch, root, task) for arch in archs}
    header = [*MERGE_METHODS, "in place = streaming, bit for bit", "PS search in place, export reproduces",
              "passthrough slices: strict load, added layer = source", "data flow: folded = routed logits",
              "transformers' key conversions replayed in place"]
    print(f"\ntransformers {transformers.__version__}, torch {torch.__version__}; "
          f"{time.perf_counter() - started:.0f} s\n")
    print("| architecture | " + " | ".join(header) + " |")
    print("|---|" + "---|" * len(header))
    for arch, cells in rows.items():
        print(f"| {arch} | " + " | ".join(cells) + " |")
    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}")


if __name__ == "__main__":
    main()
