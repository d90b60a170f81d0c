"""The HTTP scorer against a real local http.server on 127.0.0.1: good, down, slow, garbage, wrong length."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from fitness_models import bigram_table, make_table_llama

from evomerge.errors import FitnessError
from evomerge.fitness import load_task

TRANSITIONS = {"a": "1", "b": "2", "2": "3", "c": "4", "4": "5", "5": "6"}
ROWS = [{"prompt": "what is a", "answer": "1"}, {"prompt": "b", "answer": "2 3"}, {"prompt": "c", "answer": "9"}]


class _Handler(BaseHTTPRequestHandler):
    """Routes by path; /good scores each generation by its word count so the round trip is checked."""

    hits: ClassVar[dict[str, int]] = {}
    seen: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left (/slow)
            pass

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append(payload)
        path = self.path
        _Handler.hits[path] = _Handler.hits.get(path, 0) + 1
        if path == "/slow":
            time.sleep(1.5)
        if path == "/flaky" and _Handler.hits[path] == 1:
            return self._send(503, b'{"error": "warming up"}')
        if path == "/garbage":
            return self._send(200, b"<html>internal error</html>", "text/html")
        if path == "/bad_request":
            return self._send(400, b'{"error": "no such task"}')
        if "checkpoint" in payload:
            ok = (Path(payload["checkpoint"]) / "config.json").is_file()
            scores = [float(ok), 1.0]
        else:
            scores = [float(len(g.split())) for g in payload["generations"]]
        if path == "/short":
            scores = scores[:-1]
        name = "other" if path == "/wrong_name" else payload["task"]
        body: dict = {"objectives": {name: sum(scores) / max(len(scores), 1)}, "per_example": scores,
                      "judge": "word-count"}
        if path == "/nan":
            body["per_example"][0] = float("nan")
        if path == "/not_a_list":
            body["per_example"] = "many"
        return self._send(200, json.dumps(body).encode())


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def model():
    return make_table_llama(bigram_table(TRANSITIONS))


def _task(write_task, url: str, **extra):
    spec = {"name": "judge", "kind": "http", "url": url, "max_new_tokens": 3, "timeout_s": 0.5, "retries": 1,
            "backoff_s": 0.01, **extra}
    return load_task(write_task(spec, {"train": ROWS} if extra.get("send") != "checkpoint" else None))


def test_good_scorer_gets_the_generations_and_its_scores_come_back(write_task, server, model, tokenizer):
    res = _task(write_task, server + "/good").evaluate(model, tokenizer)
    sent = _Handler.seen[-1]
    assert sent["generations"] == ["1", "2 3", "4 5 6"]  # the hand walk over the table, 3 tokens at most
    assert sent["prompts"] == [r["prompt"] for r in ROWS] and sent["answers"] == ["1", "2 3", "9"]
    np.testing.assert_array_equal(res.per_example, [1.0, 2.0, 3.0])
    assert res.objectives == {"judge": 2.0}
    assert res.details["judge"] == "word-count" and res.details["generations"] == sent["generations"]


def test_checkpoint_mode_sends_a_saved_checkpoint_and_cleans_it_up(write_task, server, model, tokenizer, tmp_path):
    task = _task(write_task, server + "/good", send="checkpoint", checkpoint_dir=str(tmp_path / "ckpts"))
    res = task.evaluate(model, tokenizer)
    np.testing.assert_array_equal(res.per_example, [1.0, 1.0])  # the scorer found config.json at the path
    sent = Path(_Handler.seen[-1]["checkpoint"])
    assert sent.parent == tmp_path / "ckpts" and not sent.exists()


def test_scorer_down_is_a_fitness_error_after_retries(write_task, model, tokenizer):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FitnessError, match=rf"scorer at http://127.0.0.1:{port}/x failed after 2 attempt\(s\): "
                                           r"cannot connect"):
        _task(write_task, f"http://127.0.0.1:{port}/x").evaluate(model, tokenizer)


def test_slow_scorer_times_out(write_task, server, model, tokenizer):
    t0 = time.perf_counter()
    with pytest.raises(FitnessError, match=r"failed after 2 attempt\(s\): no answer within 0.5 s"):
        _task(write_task, server + "/slow").evaluate(model, tokenizer)
    assert time.perf_counter() - t0 < 1.4


def test_transient_server_error_is_retried(write_task, server, model, tokenizer):
    res = _task(write_task, server + "/flaky").evaluate(model, tokenizer)
    assert _Handler.hits["/flaky"] == 2 and res.n == 3


@pytest.mark.parametrize(("path", "msg"), [
    ("/garbage", r"answered something that is not JSON: '<html>internal error</html>'"),
    ("/short", r"answered 2 per-example scores for 3 examples of split 'train'"),
    ("/wrong_name", r"answered objectives \['other'\] without 'judge'"),
    ("/nan", r"answered an invalid body: 'per_example.0'"),
    ("/not_a_list", r"answered an invalid body: 'per_example'"),
    ("/bad_request", r"answered HTTP 400"),
])
def test_bad_answers_are_fitness_errors(write_task, server, model, tokenizer, path, msg):
    before = _Handler.hits.get(path, 0)
    with pytest.raises(FitnessError, match=rf"task 'judge': scorer at {server}{path} {msg}"):
        _task(write_task, server + path).evaluate(model, tokenizer)
    assert _Handler.hits[path] == before + 1  # not retried: the same request would get the same answer
