"""Racing on Ray workers: the decision is taken in the actor, so a stopped candidate comes back (and frees
its worker) after the stage that stopped it, with the same result the local runner gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evomerge.exec.base import Candidate
from evomerge.exec.local import LocalRunner
from evomerge.exec.ray_runner import RayRunner
from evomerge.exec.worker import EvalWorker
from evomerge.fitness import load_task
from evomerge.racing.request import RaceRequest, Reference, Term
from evomerge.recipe.model import Recipe

REPO = Path(__file__).resolve().parents[2]
BASE = str(REPO / "zoo/digits/init")
MODELS = [str(REPO / "zoo/digits/expert_0_4"), str(REPO / "zoo/digits/expert_5_9")]


def _candidates(n_train: int) -> list[Candidate]:
    term = Term("digits_all", "digits_all", 1.0, 1.0, 1.0, 1.0)
    perfect = Reference(0, {"digits_all": np.ones(n_train)})  # a reference no merge can come near
    cands = []
    for i, (w0, w1) in enumerate([(1.0, 1.0), (0.2, 0.1), (0.7, 0.9)]):
        recipe = Recipe.model_validate({"models": [{"model": MODELS[0], "parameters": {"weight": w0}},
                                                   {"model": MODELS[1], "parameters": {"weight": w1}}],
                                        "base_model": BASE, "merge_method": "task_arithmetic", "dtype": "float32"})
        refs = [perfect] if i else []  # the first has nothing to race against: scored fully, in stages
        race = RaceRequest("bound", [0.125, 0.25, 0.5, 1.0], 0.9, 11, [term], scalar=True, references=refs)
        cands.append(Candidate(key=f"c{i}", recipe=recipe, race=race))
    return cands


def test_ray_actors_race_like_the_local_worker_and_return_a_stopped_candidate_at_once(local_ray):
    task = load_task(REPO / "fitness/digits/digits_all.yaml")
    cands = _candidates(task.size("train"))
    local = {r.key: r for r in LocalRunner(EvalWorker(BASE, MODELS, [task])).evaluate(cands)}
    with RayRunner(base=BASE, models=MODELS, tasks=[task], workers=1, max_in_flight=1) as runner:
        runner.submit(cands)
        order = []
        while runner.pending:
            order.extend(runner.poll(timeout=60))
        evaluated = runner.worker_states()[0].evaluated
    assert [r.key for r in order] == ["c0", "c1", "c2"] and evaluated == 3  # one worker, freed after each
    assert local["c0"].status == "ok" and local["c0"].racing["examples_scored"] == task.size("train")
    assert local["c1"].status == local["c2"].status == "pruned"
    for r in order:
        loc = local[r.key]
        assert (r.status, r.objectives, r.racing["examples_scored"], r.racing.get("reason")) == \
            (loc.status, loc.objectives, loc.racing["examples_scored"], loc.racing.get("reason"))
        for name, scores in r.per_example.items():
            np.testing.assert_array_equal(scores, loc.per_example[name])
    # stopped after the first stage: 1/8 of the examples scored, on the worker, with no round trip
    assert order[1].racing["stage"] == 0 and order[1].racing["examples_scored"] == -(-task.size("train") // 8)
