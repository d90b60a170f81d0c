"""Run several mergekit merges in one process (imported once), inside mergekit's own environment.

Usage: python mergekit_driver.py JOBS.json RESULT.json, where JOBS.json lists {"config": yaml path,
"out": folder}. RESULT.json maps each out folder to "ok" or the error mergekit raised (first line).
This file is executed by the mergekit venv's interpreter and imports nothing from evomerge.
"""

from __future__ import annotations

import json
import sys


def main(jobs_path: str, result_path: str) -> None:
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    options = MergeOptions(copy_tokenizer=False, quiet=True)
    results = {}
    with open(jobs_path) as f:
        jobs = json.load(f)
    for job in jobs:
        try:
            with open(job["config"]) as f:
                config = MergeConfiguration.model_validate(yaml.safe_load(f))
            run_merge(config, job["out"], options)
            results[job["out"]] = "ok"
        except Exception as exc:  # every failure is reported per job, the test decides
            results[job["out"]] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    with open(result_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
