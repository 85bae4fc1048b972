"""Schemathesis hooks for scripts/conformance.

`no_server_error` replaces schemathesis' `not_a_server_error`: every 5xx
is a finding, except a 503 that the operation documents explicitly (a
dependency state, SPEC §5 and §6), that carries `Retry-After` in seconds
and whose `error` is one of the messages quoted in that documentation.
"""

import json
import re

import schemathesis
from schemathesis.core.failures import Failure

QUOTED = re.compile(r"`([^`]+)`")


class UndocumentedServerError(Failure):
    """A 5xx the operation does not document as a dependency state."""

    code = "ST991"
    checks = ("no_server_error",)
    kind_title = "Server error"


def _documented_503(case):
    responses = case.operation.definition.raw.get("responses", {})
    documented = responses.get("503")
    if documented is None:
        return None
    headers = {name.lower() for name in documented.get("headers", {})}
    if "retry-after" not in headers:
        return None
    return set(QUOTED.findall(documented.get("description", "")))


def _error_message(response):
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


@schemathesis.check
def no_server_error(ctx, response, case):
    """5xx only as a documented 503 dependency state with Retry-After."""
    status = response.status_code
    if status < 500:
        return None
    label = case.operation.label
    states = _documented_503(case) if status == 503 else None
    if states is None:
        raise UndocumentedServerError(
            operation=label,
            title=f"Server error {status}",
            message=f"{status} is not a documented dependency state of {label}",
        )
    retry_after = response.headers.get("retry-after", [])
    if len(retry_after) != 1 or not retry_after[0].isdigit():
        raise UndocumentedServerError(
            operation=label,
            title="503 without Retry-After",
            message=f"Retry-After: {retry_after!r} (expected one value in seconds)",
        )
    error = _error_message(response)
    # /readyz answers its documented 503 with its own body, not an error.
    if error is not None and error not in states:
        raise UndocumentedServerError(
            operation=label,
            title="Undocumented 503",
            message=f"error {error!r} is not among the documented states {sorted(states)}",
        )
    return None
