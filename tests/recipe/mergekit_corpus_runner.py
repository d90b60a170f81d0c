"""Run a batch of mergekit configs with mergekit 0.1.5's own Python API, in its venv, in one process.

Invoked as ``<mkvenv>/bin/python mergekit_corpus_runner.py jobs.json results.json``
(one interpreter start for the whole corpus instead of one ``mergekit-yaml``
per config). ``jobs.json`` lists ``{"name", "config", "out"}`` (config: YAML
text); ``results.json`` gets, per name, ``{"ok", "error", "method_params"}``,
the last being the parameter names mergekit's method declares (so the caller
can tell a parameter mergekit knows from one it silently ignores).
"""

import json
import sys
import traceback

import yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge
from mergekit.merge_methods import registry


def method_params(name):
    try:
        method = registry.get(name)
    except Exception:
        return None
    return sorted({p.name for p in method.spec.parameters})


def main(jobs_path, results_path):
    with open(jobs_path) as f:
        jobs = json.load(f)
    results = {}
    for job in jobs:
        data = yaml.safe_load(job["config"])
        entry = {"ok": False, "error": None, "method_params": method_params(data.get("merge_method"))}
        try:
            config = MergeConfiguration.model_validate(data)
            options = MergeOptions(copy_tokenizer=True, lazy_unpickle=False, write_model_card=False, quiet=True)
            run_merge(config, job["out"], options=options, config_source=job["config"])
            entry["ok"] = True
        except BaseException as exc:  # mergekit raises RuntimeError, ValueError, AssertionError... for bad configs
            if isinstance(exc, KeyboardInterrupt):
                raise
            entry["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
        results[job["name"]] = entry
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
