"""Schemathesis against the HTTP API, in process: every operation of the OpenAPI schema,
new ones included, with generated requests (valid and invalid), over a small library and
the deterministic ColourEncoder (and ColourMatcher for rerank=itm). No operation may answer a 500, a status its schema does
not document, or a body that contradicts its schema.

Bounded: MAX_EXAMPLES per operation, derandomised (about a minute in all on a loaded
2-core machine). The app refuses new folders for POST /api/index, so generated paths are
never indexed. (Schemathesis's pytest plugin does not load under this pytest; its
operations are driven with Hypothesis directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from clipsearch.library import Library
from clipsearch.server import create_app
from tests.blipgen import ColourMatcher
from tests.fakes import ColourEncoder, make_image

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 40
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "photos"
    for c in ("red", "green", "blue", "yellow"):
        make_image(root / f"{c}.jpg", c)
    lib_dir = tmp_path_factory.mktemp("fuzz") / "lib"
    # rerank=itm runs the deterministic stand-in cross-encoder (no BLIP weights offline)
    with Library(lib_dir, encoder=ColourEncoder(), matcher=ColourMatcher()) as lib:
        lib.index([root])
        app = create_app(lib, allowed_hosts=None, allow_new_roots=False)
        yield schemathesis.openapi.from_asgi("/api/openapi.json", app)


def test_no_operation_answers_a_500_or_breaks_its_schema(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"GET /api/search", "POST /api/search", "GET /api/items/{item_id}/media"} <= labels
    failures: dict[str, str] = {}
    for operation in operations:

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            call()
        except Exception as e:  # one operation's failure must not hide another's
            failures[f"{operation.method.upper()} {operation.path}"] = str(e)[:3000]
    assert not failures, "\n\n".join(f"{op}:\n{why}" for op, why in failures.items())
