"""Schemathesis hooks for scripts/schemathesis: what docs/openapi.yaml states in words
because JSON Schema cannot, taught to the generator. Nothing here relaxes a check.

- SDP bodies (WHIP/WHEP offers) are sent as text: schemathesis has no serializer for
  application/sdp.
- Stream-listing cursors are opaque and issued by the API: in a request meant to be
  valid, a generated `cursor` is replaced by one the node issued earlier in the run (or
  left out before it issued any). Requests meant to be invalid keep theirs.
- User ids are at most 128 bytes of UTF-8; JSON Schema's `maxLength` counts characters.
  A valid request whose generated user id is longer in bytes gets it shortened.
"""

import re

import schemathesis
from schemathesis.serializers import SerializerContext

LIST_STREAMS = ("GET", "/v1/streams")
MAX_USER_ID_BYTES = 128

issued_cursors: list = []
user_id_pattern = None


@schemathesis.serializer("application/sdp")
class SdpSerializer:
    def as_requests(self, context: SerializerContext, value):
        if isinstance(value, bytes):
            return {"data": value}
        return {"data": str(value).encode("utf8")}

    def as_werkzeug(self, context: SerializerContext, value):
        return {"data": value if isinstance(value, bytes) else str(value)}


@schemathesis.hook
def after_load_schema(context, schema):
    global user_id_pattern
    user_id_pattern = re.compile(schema.raw_schema["components"]["schemas"]["UserId"]["pattern"])


def _positive(case) -> bool:
    method = case.data_generation_method
    return method is not None and method.is_positive


def _fit_user_id(value):
    if not isinstance(value, str) or len(value.encode("utf8")) <= MAX_USER_ID_BYTES:
        return value
    while len(value.encode("utf8")) > MAX_USER_ID_BYTES:
        value = value[:-1]
    if user_id_pattern is not None and not user_id_pattern.search(value):
        value = "user"
    return value


@schemathesis.hook
def before_call(context, case):
    if not _positive(case):
        return
    op = (case.operation.method.upper(), case.operation.path)
    if op == LIST_STREAMS and case.query and "cursor" in case.query:
        if issued_cursors:
            # Deterministic for a given run: which issued cursor depends on the generated one.
            pick = sum(map(ord, str(case.query["cursor"]))) % len(issued_cursors)
            case.query["cursor"] = issued_cursors[pick]
        else:
            del case.query["cursor"]
    if case.path_parameters and "user_id" in case.path_parameters:
        case.path_parameters["user_id"] = _fit_user_id(case.path_parameters["user_id"])
    if isinstance(case.body, dict) and "user_id" in case.body:
        case.body["user_id"] = _fit_user_id(case.body["user_id"])


@schemathesis.hook
def after_call(context, case, response):
    op = (case.operation.method.upper(), case.operation.path)
    if op != LIST_STREAMS or response.status_code != 200:
        return
    try:
        cursor = response.json().get("next_cursor")
    except ValueError:
        return
    if isinstance(cursor, str) and cursor not in issued_cursors:
        issued_cursors.append(cursor)
