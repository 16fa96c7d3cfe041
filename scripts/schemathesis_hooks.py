"""Schemathesis hooks for scripts/schemathesis (schemathesis 3.39).

Two kinds of help, and nothing that relaxes a check:

1. What docs/openapi.yaml states in words because JSON Schema cannot, taught to the
   generator for requests meant to be valid:
   - SDP bodies (WHIP/WHEP offers) are sent as text (schemathesis has no application/sdp
     serializer), and a valid request carries a usable offer, not any string.
   - Stream-listing cursors are opaque and issued by the API: a valid request carries one
     the node issued earlier in the run (or none before it issued any).
   - User ids are at most 128 bytes of UTF-8, where `maxLength` counts characters.

2. Requests sent as schemathesis meant them:
   - URLs keep empty path segments (`/v1/streams//whip`): schemathesis builds them with
     `urljoin`, which drops them and so sends another operation's path.
   - A path parameter generated as a non-string (an object or array, for "wrong type")
     is percent-encoded as one segment instead of pasted raw (a `?` or `/` in it would
     change the URL's structure).
   - A URL, a header or an SDP body carries text: a "wrong type" value (the number 0
     for a string parameter, an empty object for a query parameter) that arrives as valid
     text ("0", nothing) makes a valid request, so it is judged as one.
   - Control characters cannot be sent in an HTTP header value (the listener answers
     such a request with a bare 400, docs/api.md): they are replaced by `?`, which keeps
     an invalid value invalid.
"""

import re
from urllib.parse import parse_qs, quote, unquote, urlsplit

import jsonschema
import requests
import schemathesis
from schemathesis import DataGenerationMethod
from schemathesis.models import Case
from schemathesis.serializers import SerializerContext
from schemathesis.specs.openapi._hypothesis import quote_all

MAX_USER_ID_BYTES = 128
LIST_STREAMS = ("GET", "/v1/streams")
OFFERS = {"whipPublish": "sendonly", "whepPlay": "recvonly"}

# Characters an HTTP field value cannot carry (RFC 9110 5.5): the listener answers such a
# request with a bare 400 before any route sees it.
HEADER_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

issued_cursors: list = []
user_id_pattern = None


def _offer(direction: str) -> str:
    """A complete offer (audio and video, every attribute the node needs) that cannot
    connect: ICE never completes, so nothing is sent."""
    fingerprint = ":".join(f"{i:02X}" for i in range(32))
    ssrc = {"sendonly": ("a=ssrc:1001 cname:st\r\n", "a=ssrc:1002 cname:st\r\n")}.get(direction, ("", ""))
    common = (
        "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:sTst\r\n"
        "a=ice-pwd:schemathesisschemathesis\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\n"
    )
    return (
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n"
        f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{common}a=mid:0\r\na={direction}\r\na=rtcp-mux\r\n"
        f"a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n{ssrc[0]}"
        f"m=video 9 UDP/TLS/RTP/SAVPF 96\r\n{common}a=mid:1\r\na={direction}\r\na=rtcp-mux\r\n"
        f"a=rtcp-rsize\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n{ssrc[1]}"
    )


@schemathesis.serializer("application/sdp")
class SdpSerializer:
    def as_requests(self, context: SerializerContext, value):
        if isinstance(value, bytes):
            return {"data": value}
        return {"data": str(value).encode("utf8")}

    def as_werkzeug(self, context: SerializerContext, value):
        return {"data": value if isinstance(value, bytes) else str(value)}


def _get_url(self, base_url):
    # As Case._get_url, without urljoin (which drops empty segments) and without the
    # unquote that undid the quoting of `?` and `#` in path parameters.
    base_url = self._get_base_url(base_url)
    return base_url.rstrip("/") + "/" + self.formatted_path.lstrip("/")


Case._get_url = _get_url


@schemathesis.hook
def after_load_schema(context, schema):
    global user_id_pattern
    user_id_pattern = re.compile(schema.raw_schema["components"]["schemas"]["UserId"]["pattern"])


def _candidates(text: str, schema: dict):
    """What a parameter's text may stand for, read as the node reads it."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    yield text
    if "integer" in types and re.fullmatch(r"[+-]?[0-9]+", text):
        yield int(text)
    if "boolean" in types and text in ("true", "false"):
        yield text == "true"
    if "null" in types and text == "null":
        yield None


def _valid_text(text, schema: dict) -> bool:
    if not isinstance(text, str):
        return False  # a list: the parameter repeated
    return any(jsonschema.Draft202012Validator(schema).is_valid(c) for c in _candidates(text, schema))


def _wire(case):
    """The path parameters, query and headers of the request as it will be sent."""
    kwargs = case.as_transport_kwargs(base_url="http://wire.invalid")
    prepared = requests.Request(
        method=kwargs["method"], url=kwargs["url"], params=kwargs.get("params"), headers=kwargs.get("headers")
    ).prepare()
    return {
        "path": {k: unquote(v) for k, v in (case.path_parameters or {}).items()},
        "query": parse_qs(urlsplit(prepared.url).query, keep_blank_values=True),
        "header": {k.lower(): v for k, v in prepared.headers.items()},
    }


def _valid_as_sent(case) -> bool:
    """Whether every path, query and header parameter, as it goes on the wire, is valid."""
    sent = _wire(case)
    declared = set()
    for parameter in case.operation.iter_parameters():
        location = parameter.location
        if location not in sent:
            continue
        name = parameter.name.lower() if location == "header" else parameter.name
        if location == "query":
            declared.add(name)
        value = sent[location].get(name)
        if value is None:
            if parameter.is_required:
                return False
            continue
        if location == "query":
            if len(value) != 1:
                return False  # repeated: the node refuses it
            value = value[0]
        if not _valid_text(value, parameter.as_json_schema(case.operation, update_quantifiers=False)):
            return False
    # The node refuses unknown query parameters.
    return set(sent["query"]) <= declared


def _fit_user_id(value: str) -> str:
    """A user id cut to at most 128 bytes of UTF-8 (or a plain one if the cut leaves
    nothing visible)."""
    if len(value.encode("utf8")) <= MAX_USER_ID_BYTES:
        return value
    while len(value.encode("utf8")) > MAX_USER_ID_BYTES:
        value = value[:-1]
    if user_id_pattern is not None and not user_id_pattern.search(value):
        value = "user"
    return value


@schemathesis.hook
def before_call(context, case):
    for name, value in list((case.path_parameters or {}).items()):
        if not isinstance(value, str):
            case.path_parameters[name] = quote(str(value), safe="")
    for name, value in list((case.headers or {}).items()):
        if isinstance(value, str) and HEADER_CONTROLS.search(value):
            case.headers[name] = HEADER_CONTROLS.sub("?", value)
    method = case.data_generation_method
    meta = case.meta
    if method is not None and method.is_negative and meta is not None:
        body_negative = meta.body is not None and meta.body.is_negative and case.media_type != "application/sdp"
        unexpected_method = (meta.description or "").startswith("Unspecified HTTP method")
        if not body_negative and not unexpected_method and _valid_as_sent(case):
            case.data_generation_method = DataGenerationMethod.positive
    method = case.data_generation_method
    if method is None or not method.is_positive:
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
        value = unquote(case.path_parameters["user_id"])
        if _fit_user_id(value) != value:
            case.path_parameters["user_id"] = quote_all({"user_id": _fit_user_id(value)})["user_id"]
    if isinstance(case.body, dict) and isinstance(case.body.get("user_id"), str):
        case.body["user_id"] = _fit_user_id(case.body["user_id"])
    direction = OFFERS.get(case.operation.definition.raw.get("operationId"))
    if direction is not None:
        case.body = _offer(direction)


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
