"""Property-based fuzz of the API from its own OpenAPI schema (schemathesis): no input yields a 5xx."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency: pip install -e '.[dev]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from evomerge.client import EvomergeClient  # noqa: E402

from .common import aim_at_the_fuzz_study, zdt1_study  # noqa: E402
from .conftest import ThreadServer  # noqa: E402

EXAMPLES_PER_ENDPOINT = 30
_names = itertools.count()


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    server = ThreadServer(tmp_path_factory.mktemp("fuzz") / "studies")
    client = EvomergeClient(server.url)
    client.create_study(zdt1_study("fuzz", "random", evaluations=1000))  # an existing study for the fuzzer to hit
    client.ask("fuzz", 20)
    yield schemathesis.openapi.from_url(server.url + "/openapi.json")
    server.stop()


def test_no_request_to_any_endpoint_makes_the_server_fail(api_schema):
    """Every operation of /openapi.json, EXAMPLES_PER_ENDPOINT generated requests each (schemathesis's pytest
    plugin is driven by hand: its collection hooks do not support this pytest)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @given(case=operation.as_strategy(), real=st.booleans(), number=st.integers(0, 25))
        @settings(max_examples=EXAMPLES_PER_ENDPOINT, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case, real: bool, number: int) -> None:
            aim_at_the_fuzz_study(case, real, number, _names, keep=("strategy", "seed", "lease_s"))
            case.call_and_validate(checks=[not_a_server_error], timeout=60)  # a 256-candidate ask is slow when busy

        check()
