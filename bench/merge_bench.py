"""Merge throughput and memory: evomerge vs the I/O floor (and vs mergekit when installed).

For each model size, generates a bf16 Llama base and three experts (random
weights in the real layout), then for each method runs one merge of the three
experts onto the base in a fresh process and reports

* whole-process wall time and peak RSS (what a user waits for and must fit),
* merge time inside the process (without interpreter/torch start-up),
* GB/s of source bytes read,
* the ratio to the I/O floor: a process that reads every source tensor once and
  writes one output of the same size, measured in the same run,
* the ratio mergekit / evomerge when ``--mergekit`` points at a ``mergekit-yaml``
  (install it in a separate venv: it is LGPL and never a dependency of evomerge).

It also times the in-place path: one candidate's merged weights written into a
resident model (the number that bounds search throughput).

    python bench/merge_bench.py --sizes 134m,400m --mergekit /tmp/mkvenv/bin/mergekit-yaml
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SIZES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "134m": (768, 2048, 12, 12, 4, 32000),
    "400m": (1024, 2816, 24, 16, 8, 32000),
    "tiny": (64, 128, 2, 4, 2, 512),
}
METHODS = {
    "linear": {"parameters": {"weight": 1.0}, "base": False},
    "task_arithmetic": {"parameters": {"weight": 0.5}},
    "ties": {"parameters": {"weight": 1.0, "density": 0.5}},
    "dare_ties": {"parameters": {"weight": 1.0, "density": 0.5}},
    "breadcrumbs": {"parameters": {"weight": 1.0, "density": 0.9, "gamma": 0.01}},
    "della": {"parameters": {"weight": 1.0, "density": 0.5, "epsilon": 0.1}},
    # mergekit's other methods (issue 14); "models": how many experts the method takes
    "sce": {"parameters": {}, "global": {"select_topk": 0.5}},
    "nuslerp": {"parameters": {"weight": 0.5}, "models": 2},
    "multislerp": {"parameters": {"weight": 1.0}},
    "karcher": {"parameters": {}, "base": False},
    "arcee_fusion": {"parameters": {}, "models": 1},
    "nearswap": {"parameters": {}, "global": {"t": 0.001}, "models": 1},
    "ram": {"parameters": {}},
    "ramplus_tl": {"parameters": {}},
    # beyond mergekit (evomerge only: the mergekit column stays empty)
    "tsv_m": {"parameters": {}, "mergekit": False},
    "iso_c": {"parameters": {}, "mergekit": False},
    "iso_cts": {"parameters": {}, "mergekit": False},
}


def llama_layout(size: str) -> tuple[dict, list[tuple[str, tuple[int, ...]]]]:
    h, inter, layers, heads, kv, vocab = SIZES[size]
    hd = h // heads
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }
    names: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(layers):
        p = f"model.layers.{i}."
        names += [
            (p + "self_attn.q_proj.weight", (heads * hd, h)), (p + "self_attn.k_proj.weight", (kv * hd, h)),
            (p + "self_attn.v_proj.weight", (kv * hd, h)), (p + "self_attn.o_proj.weight", (h, heads * hd)),
            (p + "mlp.gate_proj.weight", (inter, h)), (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
            (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
        ]
    names += [("model.norm.weight", (h,)), ("lm_head.weight", (vocab, h))]
    return config, names


def build_family(root: Path, size: str) -> tuple[Path, list[Path]]:
    """Base + 3 experts (base + 10 % noise), bf16, deterministic; reused when present."""
    from evomerge.io.writer import ShardedWriter

    config, layout = llama_layout(size)
    folders = [root / size / n for n in ("base", "expert0", "expert1", "expert2")]
    if all((f / "model.safetensors").is_file() for f in folders):
        return folders[0], folders[1:]
    for k, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        with ShardedWriter(folder, [(n, s, torch.bfloat16) for n, s in layout]) as writer:
            for i, (name, shape) in enumerate(layout):
                g = torch.Generator().manual_seed(1000 * i)
                t = torch.randn(shape, generator=g) * 0.02
                if k > 0:
                    g2 = torch.Generator().manual_seed(1000 * i + k)
                    t += torch.randn(shape, generator=g2) * 0.002
                writer.write(name, t)
            writer.close()
    return folders[0], folders[1:]


def recipe_for(method: str, base: Path, experts: list[Path]) -> dict:
    spec = METHODS[method]
    chosen = experts[: spec.get("models", len(experts))]
    return {
        "models": [{"model": str(e), **({"parameters": spec["parameters"]} if spec["parameters"] else {})}
                   for e in chosen],
        **({"base_model": str(base)} if spec.get("base", True) else {}),
        **({"parameters": spec["global"]} if "global" in spec else {}),
        "merge_method": method, "dtype": "bfloat16", "seed": 0,
    }


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Whole-process wall seconds and peak RSS (GiB) of ``cmd``, run in a fresh wrapper process."""
    wrapper = ("import resource,subprocess,sys,time,json;t=time.perf_counter();"
               "r=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
               "w=time.perf_counter()-t;"
               "m=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
               "print(json.dumps({'wall':w,'rss_kib':m,'rc':r.returncode,'out':r.stdout[-2000:],"
               "'err':r.stderr[-2000:]}))")
    res = json.loads(subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                                    check=True).stdout)
    if res["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res['err']}")
    return res["wall"], res["rss_kib"] / 2**20, res["out"]


EVOMERGE_RUN = """
import json, sys, time
t0 = time.perf_counter()
from evomerge.recipe.model import Recipe
from evomerge.materialize.streaming import merge_to_disk
recipe = Recipe.model_validate(json.loads(open(sys.argv[1]).read()))
t1 = time.perf_counter()
report = merge_to_disk(recipe, sys.argv[2], overwrite=True)
print(json.dumps({"merge_s": time.perf_counter() - t1, "bytes_read": report.bytes_read}))
"""

IO_FLOOR_RUN = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from evomerge.io.checkpoint import Checkpoint
from evomerge.io.writer import ShardedWriter
ckpts = [Checkpoint.open(p) for p in sys.argv[2:]]
t1 = time.perf_counter()
first = ckpts[0]
layout = [(n, first.info(n).shape, first.info(n).dtype) for n in first.names]
n_read = 0
with ShardedWriter(Path(sys.argv[1]), layout) as w:
    for name in first.names:
        ts = [c.get(name).clone() for c in ckpts]  # clone: actually read the memory-mapped bytes
        n_read += sum(t.numel() * t.element_size() for t in ts)
        w.write(name, ts[-1])
    w.close()
print(json.dumps({"merge_s": time.perf_counter() - t1, "bytes_read": n_read}))
"""

INPLACE_RUN = """
import json, sys, time, torch
from transformers import AutoConfig, AutoModelForCausalLM
from evomerge.recipe.model import Recipe
from evomerge.materialize.inplace import ResidentSources, materialize_into
recipe = Recipe.model_validate(json.loads(open(sys.argv[1]).read()))
t = time.perf_counter()
resident = ResidentSources.from_paths([m.model for m in recipe.models], recipe.base_model)
load_s = time.perf_counter() - t
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(recipe.base_model), dtype=torch.bfloat16)
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); materialize_into(model, recipe, resident); times.append(time.perf_counter() - t)
median = sorted(times)[len(times) // 2]
print(json.dumps({"load_s": load_s, "merge_s": median, "resident_gib": resident.nbytes / 2**30}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="134m,400m")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench/merge"))
    ap.add_argument("--mergekit", help="path to a mergekit-yaml executable (optional)")
    ap.add_argument("--mergekit-sizes", default=None, help="sizes to run mergekit on (default: all)")
    ap.add_argument("--inplace-repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}", flush=True)
    rows = []
    for size in args.sizes.split(","):
        t = time.perf_counter()
        base, experts = build_family(args.workdir / "models", size)
        print(f"[{size}] sources ready ({time.perf_counter() - t:.1f}s)", flush=True)
        src_bytes = sum((f / "model.safetensors").stat().st_size for f in (base, *experts))
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            floor_wall, floor_rss, floor_out = timed([sys.executable, "-c", IO_FLOOR_RUN, f"{tmp}/floor",
                                                      str(base), *map(str, experts)])
            floor = json.loads(floor_out.strip().splitlines()[-1])
            print(f"[{size}] I/O floor: {floor['merge_s']:.2f}s in-process, {floor_wall:.2f}s whole, "
                  f"{floor_rss:.2f} GiB peak RSS", flush=True)
            for method in args.methods.split(","):
                cfg = Path(tmp) / f"{method}.json"
                cfg.write_text(json.dumps(recipe_for(method, base, experts)))
                wall, rss, stdout = timed([sys.executable, "-c", EVOMERGE_RUN, str(cfg), f"{tmp}/out-{method}"])
                inner = json.loads(stdout.strip().splitlines()[-1])
                row = {"size": size, "method": method, "wall_s": wall, "merge_s": inner["merge_s"],
                       "rss_gib": rss, "gb_s": inner["bytes_read"] / 1e9 / inner["merge_s"],
                       "vs_floor": inner["merge_s"] / floor["merge_s"], "src_gb": src_bytes / 1e9}
                if args.mergekit and METHODS[method].get("mergekit", True) and (
                        args.mergekit_sizes is None or size in args.mergekit_sizes.split(",")):
                    import yaml

                    mk_cfg = Path(tmp) / f"{method}.yml"
                    data = recipe_for(method, base, experts)
                    data.pop("seed")
                    mk_cfg.write_text(yaml.safe_dump(data))
                    mk_wall, mk_rss, _ = timed([args.mergekit, str(mk_cfg), f"{tmp}/mk-{method}",
                                                "--no-copy-tokenizer"])
                    row.update({"mk_wall_s": mk_wall, "mk_rss_gib": mk_rss, "speedup_vs_mk": mk_wall / wall})
                rows.append(row)
                print(json.dumps(row), flush=True)
            cfg = Path(tmp) / "inplace.json"
            cfg.write_text(json.dumps(recipe_for("ties", base, experts)))
            _, ip_rss, ip_out = timed([sys.executable, "-c", INPLACE_RUN, str(cfg), str(args.inplace_repeats)])
            ip = json.loads(ip_out.strip().splitlines()[-1])
            print(f"[{size}] in-place ties, 3 sources: {ip['merge_s']:.2f}s per candidate (median of "
                  f"{args.inplace_repeats}); sources resident in {ip['load_s']:.1f}s, {ip['resident_gib']:.2f} GiB; "
                  f"peak RSS {ip_rss:.2f} GiB", flush=True)
    print("\n| size | method | evomerge wall s (whole process) | merge s (in-process) | GB/s read | "
          "x I/O floor | peak RSS GiB | mergekit wall s | mergekit RSS GiB | speed-up vs mergekit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mk = (f"{r['mk_wall_s']:.1f} | {r['mk_rss_gib']:.2f} | {r['speedup_vs_mk']:.2f}x" if "mk_wall_s" in r
              else "- | - | -")
        print(f"| {r['size']} | {r['method']} | {r['wall_s']:.1f} | {r['merge_s']:.2f} | {r['gb_s']:.2f} | "
              f"{r['vs_floor']:.2f} | {r['rss_gib']:.2f} | {mk} |")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    main()
