"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis): whatever
the schema allows a client to send, and whatever it does not (schemathesis also sends invalid
values), the server answers without a server error (5xx), and every answer conforms to the
published schema (documented status code, Content-Type, headers and body schema).

Bounded: 20 schema-valid and 10 schema-violating examples per operation, no deadline; a small real database (coco128 ingested, 16
images and the boxes of 2 images embedded), so the whole run stays around a minute or two.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis.errors import Unsatisfiable
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from visearch.http.app import create_app

from conftest import ingest_coco128_embedded

#: Examples per operation: schema-valid requests, and requests that break the schema.
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}
#: No 5xx, and every response as the published schema says: its status code is documented, its
#: Content-Type and headers are the documented ones, and its body validates against the schema.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_app(database, coco128, settings):
    ingest_coco128_embedded(database, coco128, images=16, boxes_of_images=2)
    app = create_app(settings.model_copy(update={"api_keys": []}), database)
    yield app
    app.state.jobs.stop()  # a fuzzed POST /v1/datasets/{id}/embed may have started the job


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/schema/openapi.json", fuzz_app)


# schemathesis' pytest integration (`schemathesis.pytest.from_fixture` + `parametrize`) does not
# run under pytest 9.2 (it reads `Function._nodeid`), so the operations are driven through
# schemathesis' library API with Hypothesis directly.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_server_errors(api_schema, mode):
    failures: dict[str, str] = {}
    statuses: dict[int, int] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 18

    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(
            max_examples=EXAMPLES[mode], deadline=None, database=None, derandomize=True,
            suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
        )
        def check(case):
            response = case.call()
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # nothing to break: an operation without inputs
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 -- collect every operation's failure
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert sum(statuses.values()) >= EXAMPLES[mode] // 2 * len(operations)  # it really ran
    assert not any(code >= 500 for code in statuses)
    print(f"{mode.value}: responses by status {dict(sorted(statuses.items()))}")
