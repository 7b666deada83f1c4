"""Property-based fuzzing of the served OpenAPI schema (schemathesis): whatever the input,
the service never answers 5xx. Bounded examples per operation, so it stays fast.

Driven through hypothesis directly: schemathesis' own pytest plugin does not load on
this pytest version.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis

# Loaded at collection, not lazily inside from_url() while servers run: pytest rewrites
# schemathesis' modules as they import, and once in CI (CPython 3.11.7) that rewrite failed
# with "SystemError: AST constructor recursion depth mismatch" while a connector leaked by
# an earlier failed test was being collected.
import schemathesis.specs.openapi.schemas
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from conductor.service.app import create_app
from conductor.testing import FakeUpstream
from tests.integration.conftest import ServedApp, fake_settings


@pytest.mark.slow
def test_no_input_makes_the_service_fail(tmp_path: Path) -> None:
    with FakeUpstream() as up:
        app = create_app(fake_settings(up.base_url, attempts=1), db_path=tmp_path / "f.db")
        with ServedApp(app) as served:
            schema = schemathesis.openapi.from_url(served.url + "/schema/openapi.json")
            operations = [op.ok() for op in schema.get_all_operations()]
            assert len(operations) >= 10
            for operation in operations:

                @given(case=operation.as_strategy())
                @settings(max_examples=20, deadline=None,
                          suppress_health_check=list(HealthCheck), database=None)
                def fuzz(case: schemathesis.Case) -> None:
                    case.call_and_validate(base_url=served.url, checks=[not_a_server_error])

                fuzz()
