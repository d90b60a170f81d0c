"""Issue 12 #5 and #9: NaN/Infinity in a JSON body never gives a 5xx; a chunked body over the limit is 413;
the OpenAPI document lists the refusals the API really gives, with their real bodies.

Before: ``{"n": NaN}`` to /ask and ``{"budget": {"evaluations": Infinity}}`` gave HTTP 500 (the 422 echo of the
bad value could not be serialised); a chunked body over the limit gave 400; /openapi.json listed only 200/422
with FastAPI's default 422 shape.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest

from evomerge.client import EvomergeClient

from ..server.common import zdt1_study
from ..server.conftest import ThreadServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    srv = ThreadServer(tmp_path_factory.mktemp("bodies") / "studies", max_body_bytes=4096)
    EvomergeClient(srv.url).create_study(zdt1_study("s", "random", evaluations=100))
    yield srv
    srv.stop()


def post_raw(url: str, path: str, body: bytes, chunked: bool = False) -> tuple[int, object]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        if chunked:
            conn.request("POST", path, body=iter([body[i:i + 1000] for i in range(0, len(body), 1000)]),
                         headers={"Content-Type": "application/json"}, encode_chunked=True)
        else:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())  # every reply is strict JSON: no NaN in it either
    finally:
        conn.close()


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/studies/s/ask", '{"n": NaN}', ["body", "n"]),
    ("/studies/s/ask", '{"n": 1, "wait_s": Infinity}', ["body", "wait_s"]),
    ("/studies", json.dumps({**zdt1_study("b1"), "budget": {"evaluations": float("inf")}}), ["body", "budget",
                                                                                              "evaluations"]),
    ("/studies", json.dumps({**zdt1_study("b2"), "reference_point": [1.0, float("nan")]}), ["body",
                                                                                          "reference_point", 1]),
    ("/studies", json.dumps({**zdt1_study("b3"), "space": {"kind": "box", "dim": 4, "low": float("-inf")}}),
     ["body", "space"]),
    ("/studies", json.dumps({**zdt1_study("b4"), "strategy": {"name": "random", "options": {"x": float("nan")}}}),
     ["body", "strategy", "options", "x"]),
])
def test_a_non_finite_number_in_a_body_is_a_422_naming_the_field(server, path, body, field):
    status, reply = post_raw(server.url, path, body.encode())
    assert status == 422, reply
    locs = [e["loc"][:len(field)] for e in reply["detail"]]
    assert field in locs, reply


def test_a_non_finite_score_told_fails_that_trial_and_every_reply_stays_valid_json(server):
    client = EvomergeClient(server.url)
    cand = client.ask("s", 1)[0]
    status, reply = post_raw(server.url, f"/studies/s/trials/{cand['trial']}/tell",
                             f'{{"ticket": "{cand["ticket"]}", "objectives": {{"f1": NaN, "f2": 1.0}}}}'.encode())
    assert status == 200 and reply["status"] == "failed" and reply["objectives"] == {"f2": 1.0}
    assert client.status("s")["failed"] >= 1
    assert client._request("GET", f"/studies/s/trials/{cand['trial']}")["status"] == "failed"
    client.front("s")


def test_a_chunked_body_over_the_limit_is_413_not_400(server):
    big = json.dumps({**zdt1_study("big"), "space": {"kind": "box", "dim": 4, "pad": "x" * 10_000}}).encode()
    status, reply = post_raw(server.url, "/studies", big, chunked=True)
    assert status == 413, reply
    small = json.dumps(zdt1_study("small", "random")).encode()
    assert post_raw(server.url, "/studies", small, chunked=True)[0] == 201  # a chunked body under it is read whole


def test_openapi_lists_every_refusal_with_its_real_body(server):
    doc = EvomergeClient(server.url)._request("GET", "/openapi.json")
    paths = doc["paths"]
    tell = paths["/studies/{name}/trials/{number}/tell"]["post"]["responses"]
    assert {"200", "401", "403", "404", "409", "413", "422"} <= set(tell)
    assert {"201", "401", "409", "413", "422"} <= set(paths["/studies"]["post"]["responses"])
    assert {"200", "401", "404", "413", "422"} <= set(paths["/studies/{name}/ask"]["post"]["responses"])
    assert "401" not in paths["/health"]["get"]["responses"]  # /health needs no token
    schemas = doc["components"]["schemas"]
    for op in (op for item in paths.values() for op in item.values()):
        for code, resp in op["responses"].items():
            if code.startswith("4"):
                ref = resp["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                assert ref == ("ValidationErrorOut" if code == "422" else "ErrorOut")
    detail = schemas["ValidationErrorOut"]["properties"]["detail"]
    assert {"type": "string"} in detail["anyOf"]  # a study's own refusal is one line, not FastAPI's list
    assert "HTTPValidationError" not in schemas  # the default shape, which our 422s do not have, is gone
