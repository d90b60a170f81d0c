"""Issue 12 #5/#9: schemathesis over the whole API, NaN and Infinity allowed in generated bodies.

Every operation of /openapi.json gets generated requests; in half of them a number of the body (or the whole
body) is swapped for NaN, Infinity or -Infinity, sent as Python's JSON spells them (schemathesis itself never
generates them). Checks: no 5xx, only documented status codes, and every body matches the documented schema.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from evomerge.client import EvomergeClient

from ..server.common import aim_at_the_fuzz_study, zdt1_study
from ..server.conftest import ThreadServer

EXAMPLES_PER_OPERATION = 20
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance, response_schema_conformance,
          content_type_conformance]
NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])
_names = itertools.count()


def with_non_finite(body: Any, draw: st.DrawFn) -> Any:
    """``body`` with one number (or, if it has none, one leaf, or the body itself) swapped for NaN/±Infinity."""
    leaves: list[tuple[Any, Any]] = []  # (container, key)
    stack = [body]
    while stack:
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, value in pairs:
            if isinstance(value, dict | list):
                stack.append(value)
            else:
                leaves.append((item, key))
    numbers = [(c, k) for c, k in leaves if isinstance(c[k], int | float) and not isinstance(c[k], bool)]
    pool = numbers or leaves
    if not pool:
        return draw(NON_FINITE)
    container, key = draw(st.sampled_from(pool))
    container[key] = draw(NON_FINITE)
    return body


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    server = ThreadServer(tmp_path_factory.mktemp("schemathesis") / "studies")
    client = EvomergeClient(server.url)
    client.create_study(zdt1_study("fuzz", "random", evaluations=400))  # an existing study with trials to hit
    first = client.ask("fuzz", 20)
    client.tell("fuzz", first[0], {"f1": 0.5, "f2": 0.5})
    yield schemathesis.openapi.from_url(server.url + "/openapi.json")
    server.stop()


def test_no_request_gives_a_5xx_or_an_undocumented_reply_nan_and_infinity_included(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy(), real=st.booleans(), non_finite=st.booleans(), number=st.integers(0, 25),
               data=st.data())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case, real: bool, non_finite: bool, number: int, data: st.DataObject) -> None:
            aim_at_the_fuzz_study(case, real, number, _names,
                                  keep=("strategy", "seed", "lease_s", "reference_point"))
            if non_finite and case.method == "POST" and case.body is not None and not isinstance(case.body, bytes):
                body = with_non_finite(json.loads(json.dumps(case.body)), data.draw)
                case.body = json.dumps(body).encode()  # Python's JSON writes NaN / Infinity / -Infinity
            case.call_and_validate(checks=CHECKS, timeout=60)

        check()
