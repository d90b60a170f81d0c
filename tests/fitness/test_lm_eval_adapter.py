"""The lm-evaluation-harness adapter: local task YAMLs scored through lm-eval, checked against our own tasks.

lm-eval is an optional extra (it pulls in datasets, pyarrow, pandas…) that ``[dev]`` installs; without
it these tests are skipped and only the missing-package error is checked. CI sets
EVOMERGE_REQUIRE_LM_EVAL=1: there a missing lm-eval is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from fitness_models import bigram_table, make_table_llama, write_jsonl

from evomerge.errors import FitnessError
from evomerge.fitness import load_task

HAVE_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
REQUIRED = os.environ.get("EVOMERGE_REQUIRE_LM_EVAL") == "1"


def _require_lm_eval() -> None:
    """Skip without lm-eval; under EVOMERGE_REQUIRE_LM_EVAL=1 (CI) fail instead, with this line."""
    if not HAVE_LM_EVAL:
        if REQUIRED:
            pytest.fail("EVOMERGE_REQUIRE_LM_EVAL=1 but lm-eval is not installed (pip install -e '.[dev]')")
        pytest.skip("lm-eval is not installed (optional extra: pip install lm-eval)")


@pytest.fixture
def _lm_eval() -> None:
    _require_lm_eval()


needs_lm_eval = pytest.mark.usefixtures("_lm_eval")

MC_ROWS = [
    {"prompt": "what is", "choices": ["a", "b c", "the x y"], "answer": 1},
    {"prompt": "a plus b is", "choices": ["3", "7"], "answer": 0},
    {"prompt": "x", "choices": ["y", "what is the", "1 2 3 4", "c"], "answer": 3},
    {"prompt": "the 7", "choices": ["is", "plus"], "answer": 1},
]
GEN_ROWS = [{"prompt": "what is a", "answer": "1"}, {"prompt": "b", "answer": "2 3"}, {"prompt": "c", "answer": "9"}]


def _lm_eval_yaml(tmp_path, name: str, rows: list[dict], body: dict) -> str:
    data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    spec = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", **body}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return f"{name}.yaml"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))


@needs_lm_eval
def test_multiple_choice_through_lm_eval_equals_our_multiple_choice(write_task, tmp_path, tokenizer, random_llama,
                                                                     offline):
    ref = _lm_eval_yaml(tmp_path, "evomerge_tiny_mc", MC_ROWS, {
        "output_type": "multiple_choice", "doc_to_text": "{{prompt}}", "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}]})
    res = load_task(write_task({"name": "lm", "kind": "lm_eval", "data": {"train": ref}}, name="lm")).evaluate(
        random_llama, tokenizer)
    ours = load_task(write_task({"name": "mc", "kind": "multiple_choice"}, {"train": MC_ROWS}, name="mc")).evaluate(
        random_llama, tokenizer)
    np.testing.assert_array_equal(res.per_example, ours.per_example)
    assert res.objectives["lm"] == pytest.approx(ours.objectives["mc"])


@needs_lm_eval
def test_generate_until_through_lm_eval_equals_our_generation(write_task, tmp_path, tokenizer, offline):
    model = make_table_llama(bigram_table({"a": "1", "b": "2", "2": "3", "c": "4", "4": "5"}))
    ref = _lm_eval_yaml(tmp_path, "evomerge_tiny_gen", GEN_ROWS, {
        "output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["</s>"], "max_gen_toks": 3, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}]})
    res = load_task(write_task({"name": "lm", "kind": "lm_eval", "task": ref, "metric": "exact_match"},
                               name="lm")).evaluate(model, tokenizer)
    np.testing.assert_array_equal(res.per_example, [1.0, 1.0, 0.0])  # "1", "2 3", "4 5" vs "9"
    assert res.objectives["lm"] == pytest.approx(2 / 3)


@pytest.mark.skipif(HAVE_LM_EVAL, reason="checks the message shown when lm-eval is missing")
def test_missing_lm_eval_is_a_clear_fitness_error(write_task, tmp_path, tokenizer, random_llama):
    task = load_task(write_task({"name": "lm", "kind": "lm_eval", "task": "hellaswag"}))
    with pytest.raises(FitnessError, match=r"task 'lm': kind: lm_eval needs lm-evaluation-harness: pip install"):
        task.evaluate(random_llama, tokenizer)


def test_lm_eval_spec_needs_exactly_one_of_task_and_data(write_task):
    from evomerge.errors import ConfigError

    with pytest.raises(ConfigError, match="give exactly one of `task`"):
        load_task(write_task({"name": "lm", "kind": "lm_eval"}))


# ---- equality with lm-eval's own CLI (`lm_eval --model hf`) on the same checkpoint ------------------------

WORDS = ["what", "is", "the", "a", "b", "c", "plus", "x", "y", "1", "2", "3", "7"]
CLI_TASKS = {
    "evm_mc": {"output_type": "multiple_choice", "doc_to_text": "{{prompt}}", "doc_to_choice": "{{choices}}",
               "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]},
    # two filters: lm-eval logs every document twice; the adapter keeps one (the first unless told)
    "evm_gen": {"output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{answer}}",
                "generation_kwargs": {"until": ["3", "y"], "max_gen_toks": 6, "do_sample": False},
                "metric_list": [{"metric": "exact_match"}],
                "filter_list": [{"name": "whole", "filter": [{"function": "take_first"}]},
                                {"name": "first-number", "filter": [
                                    {"function": "regex", "regex_pattern": r"(\d)", "group_select": 0},
                                    {"function": "take_first"}]}]},
    # documents longer than the model's 12 positions: scored in rolling windows
    "evm_ppl": {"output_type": "loglikelihood_rolling", "doc_to_text": "{{text}}", "doc_to_target": "{{text}}",
                "metric_list": [{"metric": "word_perplexity"}, {"metric": "bits_per_byte"}]},
}


def _cli_rows() -> dict[str, list[dict]]:
    g = np.random.default_rng(0)

    def words(n: int) -> str:
        return " ".join(WORDS[i] for i in g.integers(0, len(WORDS), n))

    return {
        "evm_mc": [{"prompt": words(int(g.integers(1, 5))), "choices": [words(int(g.integers(1, 4))) for _ in range(3)],
                    "answer": int(g.integers(0, 3))} for _ in range(6)],
        "evm_gen": [{"prompt": words(int(g.integers(1, 6))), "answer": words(1)} for _ in range(6)],
        "evm_ppl": [{"text": words(int(g.integers(3, 30)))} for _ in range(4)],
    }


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    """A random tiny Llama checkpoint (12 positions), three local lm-eval tasks, and lm-eval's CLI run on them."""
    import glob
    import json
    import os
    import subprocess
    import sys

    import torch
    from fitness_models import VOCAB, make_tokenizer
    from transformers import LlamaForCausalLM

    from evomerge.testing import tiny_llama_config

    _require_lm_eval()  # before the module's CLI run, which would fail less clearly
    root = tmp_path_factory.mktemp("lm_eval_cli")
    torch.manual_seed(0)
    cfg = tiny_llama_config(vocab_size=len(VOCAB))
    cfg.max_position_embeddings = 12
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = 1, 2, 0
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)  # sharp logits: greedy choices far from ties
    ckpt = root / "ckpt"
    model.save_pretrained(ckpt)
    make_tokenizer().save_pretrained(ckpt)
    tasks = root / "tasks"
    tasks.mkdir()
    for name, rows in _cli_rows().items():
        data = write_jsonl(tasks / f"{name}.jsonl", rows)
        spec = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                "test_split": "test", **CLI_TASKS[name]}
        (tasks / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / "hf_datasets"), "TOKENIZERS_PARALLELISM": "false"}
    out = root / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={ckpt},dtype=float32",
         "--tasks", ",".join(CLI_TASKS), "--include_path", str(tasks), "--batch_size", "4", "--device", "cpu",
         "--output_path", str(out), "--log_samples"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(Path(sorted(glob.glob(str(out / "**" / "results_*.json"), recursive=True))[-1])
                         .read_text())["results"]
    samples = {}
    for name in CLI_TASKS:
        files = glob.glob(str(out / "**" / f"samples_{name}_*.jsonl"), recursive=True)
        samples[name] = [json.loads(line) for p in files for line in Path(p).read_text().splitlines()]
    return ckpt, tasks, results, samples


def _adapter(write_task, tasks, name: str, **extra):
    return load_task(write_task({"name": name, "kind": "lm_eval", "task": str(tasks / f"{name}.yaml"),
                                 "batch_size": 4, **extra}, name=f"ours_{name}"))


@needs_lm_eval
@pytest.mark.parametrize(("name", "metric", "filt"), [
    ("evm_mc", "acc", "none"), ("evm_mc", "acc_norm", "none"),
    ("evm_gen", "exact_match", "whole"), ("evm_gen", "exact_match", "first-number"),
    ("evm_ppl", "word_perplexity", "none"), ("evm_ppl", "bits_per_byte", "none"),
])
def test_adapter_scores_equal_lm_eval_cli_to_the_last_digit(cli_setup, write_task, offline, name, metric, filt):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt, tasks, results, samples = cli_setup
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype="float32").eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    default = metric == CLI_TASKS[name]["metric_list"][0]["metric"] and filt in ("none", "whole")
    extra = {} if default else {"metric": metric, "filter": filt}
    res = _adapter(write_task, tasks, name, **extra).evaluate(model, tok)
    assert (res.details["lm_eval_metric"], res.details["lm_eval_filter"]) == (metric, filt)  # stated
    assert res.objectives[name] == results[name][f"{metric},{filt}"]  # exact, not approx
    theirs = sorted((s for s in samples[name] if s["filter"] == filt), key=lambda s: s["doc_id"])
    n_docs = len(_cli_rows()[name])
    assert res.n == n_docs == len(theirs)  # one entry per document, whatever the number of filters
    if metric in ("acc", "acc_norm", "exact_match"):
        assert res.per_example.tolist() == [float(s[metric]) for s in theirs]
    else:  # lm-eval logs (log-likelihood, words or bytes) per document; ours is the log-likelihood per unit
        unit = np.log(2) if metric == "bits_per_byte" else 1.0
        np.testing.assert_allclose(res.per_example, [s[metric][0] / s[metric][1] / unit for s in theirs],
                                   rtol=1e-12)


@needs_lm_eval
@pytest.mark.parametrize(("name", "metric", "filt"), [
    ("evm_mc", "acc_norm", "none"), ("evm_gen", "exact_match", "whole"), ("evm_ppl", "bits_per_byte", "none")])
def test_later_candidates_reuse_targets_and_token_ids_and_still_equal_the_cli(cli_setup, write_task, offline,
                                                                             monkeypatch, name, metric, filt):
    """From the second candidate on, documents' targets and choices and loglikelihood token ids come from the
    worker's memo (no Jinja rendering, no tokenizing of (context, continuation) pairs): the scores stay lm-eval's."""
    import lm_eval.utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt, tasks, results, samples = cli_setup
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype="float32").eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    task = _adapter(write_task, tasks, name, metric=metric)
    task.evaluate(model, tok)
    calls = {"template": 0, "encode": 0}
    render, encode = lm_eval.utils.apply_template, task._lm[2].tok_encode

    def counted_render(*args, **kwargs):
        calls["template"] += 1
        return render(*args, **kwargs)

    def counted_encode(*args, **kwargs):
        calls["encode"] += 1
        return encode(*args, **kwargs)

    monkeypatch.setattr(lm_eval.utils, "apply_template", counted_render)
    monkeypatch.setattr(task._lm[2], "tok_encode", counted_encode)
    res = task.evaluate(model, tok)
    assert res.objectives[name] == results[name][f"{metric},{filt}"]  # exact, not approx
    theirs = sorted((s for s in samples[name] if s["filter"] == filt), key=lambda s: s["doc_id"])
    if name == "evm_ppl":
        np.testing.assert_allclose(res.per_example, [s[metric][0] / s[metric][1] / np.log(2) for s in theirs],
                                   rtol=1e-12)
    else:
        assert res.per_example.tolist() == [float(s[metric]) for s in theirs]
    assert calls["template"] == 0
    if name == "evm_mc":  # loglikelihood requests: token ids reused (generation and rolling windows: HFLM's path)
        assert calls["encode"] == 0


@needs_lm_eval
def test_rolling_windows_are_needed_for_these_documents(cli_setup):
    ckpt = cli_setup[0]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    assert max(len(tok(r["text"])["input_ids"]) for r in _cli_rows()["evm_ppl"]) > 12


@needs_lm_eval
def test_the_task_is_built_once_per_worker(cli_setup, write_task, offline):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt, tasks, _, _ = cli_setup
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype="float32").eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    task = _adapter(write_task, tasks, "evm_gen")
    first = task.evaluate(model, tok)
    loaded, lm = task._loaded["train"], task._lm
    (lm_task,) = loaded.tasks.values()
    first_requests = [(r.arguments, r.doc_id, r.idx) for r in lm_task.instances]

    def rebuilt(*args, **kwargs):
        raise AssertionError("a request was built again for the second candidate")

    lm_task.fewshot_context = rebuilt  # the requests of the first evaluation are kept, not rendered again
    second = task.evaluate(model, tok)
    assert [(r.arguments, r.doc_id, r.idx) for r in lm_task.instances] == first_requests
    assert task._loaded["train"] is loaded and task._lm is lm
    # everything but lm-eval's own scoring, as a share of it; the best of three candidates, as timings are
    # read on a shared machine (one scoring here is ~0.08 s, so a single descheduling can pass 10 %)
    shares = [(r.seconds - r.details["seconds_lm_eval"]) / r.details["seconds_lm_eval"]
              for r in (second, task.evaluate(model, tok), task.evaluate(model, tok))]
    assert min(shares) < 0.1, shares
    np.testing.assert_array_equal(first.per_example, second.per_example)  # few-shot seeds reset per candidate
    import pickle

    assert pickle.loads(pickle.dumps(task))._loaded == {}  # workers build their own


@needs_lm_eval
def test_an_unknown_filter_is_named(cli_setup, write_task, offline, tokenizer, random_llama):
    _, tasks, _, _ = cli_setup
    with pytest.raises(FitnessError, match=r"has no filter 'strict-match'; it has whole, first-number"):
        _adapter(write_task, tasks, "evm_gen", filter="strict-match").evaluate(random_llama, tokenizer)


@needs_lm_eval
def test_a_local_yaml_is_indexed_without_lm_eval_s_own_tasks(cli_setup, write_task, offline, tokenizer, random_llama,
                                                            monkeypatch):
    import lm_eval.tasks

    built = []
    real = lm_eval.tasks.TaskManager

    class Spy(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append((kwargs.get("include_defaults", True), len(self.all_tasks)))

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", Spy)
    _, tasks, _, _ = cli_setup
    _adapter(write_task, tasks, "evm_mc").evaluate(random_llama, tokenizer)
    assert built == [(False, len(CLI_TASKS))]  # the three YAMLs of its folder, not ~14,000 files


# ---- our multiple_choice with a chat template: the prompts and log-likelihoods lm-eval's own are -----------

CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@needs_lm_eval
@pytest.mark.parametrize(("multiturn", "bos"), [(False, False), (True, False), (False, True)])
def test_multiple_choice_with_a_chat_template_scores_what_lm_eval_scores(tmp_path, write_task, offline, multiturn,
                                                                         bos):
    """Same context and continuation strings as lm-eval's requests, same log-likelihoods, same accuracy.

    One stated difference: a rendered chat is encoded by default without adding special tokens (transformers'
    convention: the template writes them), while lm-eval's HFLM adds the tokenizer's BOS unless the text
    already starts with it. ``add_special_tokens: true`` on our side (``bos``) gives lm-eval's default;
    ``add_bos_token: false`` on lm-eval's side gives ours.
    """
    import torch
    from fitness_models import BOS, EOS, PAD, make_tokenizer
    from transformers import LlamaForCausalLM

    from evomerge.testing import tiny_llama_config

    tok = make_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": CHAT_TOKENS})
    tok.chat_template = CHAT
    torch.manual_seed(0)
    cfg = tiny_llama_config(vocab_size=len(tok), hidden_size=32, intermediate_size=64)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = BOS, EOS, PAD
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    train, test = MC_ROWS[:2], MC_ROWS[2:]
    files = {s: str(write_jsonl(tmp_path / f"chat_mc.{s}.jsonl", rows)) for s, rows in (("train", train),
                                                                                          ("test", test))}
    spec = {"task": "evm_chat_mc", "dataset_path": "json", "dataset_kwargs": {"data_files": files},
            "training_split": "train", "test_split": "test", "fewshot_split": "train",
            "fewshot_config": {"sampler": "first_n"}, "num_fewshot": 2,  # both train rows, in file order
            "output_type": "multiple_choice", "doc_to_text": "{{prompt}}", "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}]}
    (tmp_path / "evm_chat_mc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    theirs_task = load_task(write_task({"name": "lm", "kind": "lm_eval", "task": "evm_chat_mc.yaml",
                                        "apply_chat_template": True, "fewshot_as_multiturn": multiturn,
                                        "system_instruction": "the a", **({} if bos else {"add_bos_token": False})},
                                       name="lm"))
    theirs = theirs_task.evaluate(model, tok)
    ours_task = load_task(write_task({"name": "mc", "kind": "multiple_choice", "chat_template": True,
                                      "system_prompt": "the a", "few_shot": 2, "few_shot_as_multiturn": multiturn,
                                      "add_special_tokens": bos}, {"train": train, "test": test}, name="mc"))
    ours = ours_task.evaluate(model, tok, split="test")
    (task,) = theirs_task._loaded["train"].tasks.values()
    instances = sorted(task.instances, key=lambda r: (r.doc_id, r.idx))
    prompts = ours_task.prompts.render("test", tok)
    assert [r.arguments for r in instances] == [(prompts[i], ours_task.continuation("test", i, j))
                                                for i, r in enumerate(test) for j in range(len(r["choices"]))]
    np.testing.assert_allclose([r.resps[0][0] for r in instances],
                               [ll for lls in ours.details["loglikelihoods"] for ll in lls], rtol=1e-5)
    np.testing.assert_array_equal(ours.per_example, theirs.per_example)


def test_document_memo_copies_and_skips_what_it_cannot_key():
    """The per-worker memo of targets and choices: each call gets its own copy; a document that is not plain JSON
    (bytes, images) and a user function are computed every time; a few-shot config's own template is not memoised."""
    from types import SimpleNamespace

    from evomerge.fitness.lm_eval_adapter import _memo_doc_fields

    calls: list[str] = []

    class Task:
        prompt = None
        config = SimpleNamespace(doc_to_target="{{answer}}", doc_to_choice=lambda doc: ["x"])

        def doc_to_target(self, doc, doc_to_target=None):
            calls.append("target")
            return [doc["answer"]] if doc_to_target is None else doc_to_target

        def doc_to_choice(self, doc, doc_to_choice=None):
            calls.append("choice")
            return ["x"]

    task = Task()
    _memo_doc_fields(task)
    first = task.doc_to_target({"answer": "1"})
    first.append("mutated by lm-eval")
    assert task.doc_to_target({"answer": "1"}) == ["1"] and calls == ["target"]
    assert task.doc_to_target({"answer": "1"}, "fewshot") == "fewshot" and calls == ["target"] * 2
    assert task.doc_to_target({"answer": b"1"}) == [b"1"] and task.doc_to_target({"answer": b"1"}) == [b"1"]
    assert calls == ["target"] * 4
    task.doc_to_choice({"answer": "1"})
    task.doc_to_choice({"answer": "1"})
    assert calls.count("choice") == 2  # a callable (``!function``) may not be pure: never memoised
