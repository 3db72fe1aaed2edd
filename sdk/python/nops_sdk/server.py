"""The invocation server: an agent's HTTP endpoint that the kernel calls.

The kernel invokes capability ``c`` of an agent registered at endpoint ``E`` with
``POST E/invoke/c``, the caller's JSON input as body, and these headers (docs/routing.md):

- ``Nops-Invocation-Id``, ``Nops-Tenant``, ``Nops-Capability``: whose call it is;
- ``Nops-Timeout-Ms``: the time left of the caller's deadline, in milliseconds;
- ``traceparent`` / ``tracestate``: the W3C trace context of the call;
- ``Idempotency-Key`` when the caller sent one, ``X-Request-ID``.

The server (``http.server.ThreadingHTTPServer``, one thread per call) reads them into an
Invocation, parses and validates the body against the capability's input schema (see
nops_sdk.schema for the subset checked), calls the handler and answers its result as JSON.
Refusals are RFC 9457 ``application/problem+json`` naming the field; a handler's exception is a
500 problem with a generic detail (never a stack trace). While a handler runs,
``nops_sdk.client.current_traceparent`` holds the call's traceparent, so requests the handler
makes through a Client carry the trace on.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .client import current_traceparent
from .schema import FieldError, validate

#: Largest request body the server reads (bytes).
DEFAULT_MAX_BODY = 1 << 20


@dataclass
class Invocation:
    """One call of a capability, as the handler sees it."""

    id: str
    tenant: str
    capability: str
    input: Any
    headers: Dict[str, str]
    deadline: Optional[float] = None  # time.monotonic() value; None without Nops-Timeout-Ms
    traceparent: Optional[str] = None
    tracestate: Optional[str] = None
    idempotency_key: Optional[str] = None
    request_id: Optional[str] = None

    def remaining(self) -> Optional[float]:
        """Seconds left before the caller's deadline (None when the kernel sent none)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        """Whether the caller's deadline has passed."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def trace_headers(self) -> Dict[str, str]:
        """The trace context to pass on to downstream calls."""
        h: Dict[str, str] = {}
        if self.traceparent:
            h["traceparent"] = self.traceparent
        if self.tracestate:
            h["tracestate"] = self.tracestate
        return h


@dataclass
class Reply:
    """A handler's answer when plain JSON with 200 is not enough."""

    body: Any = None
    status: int = 200
    headers: Dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class InvocationError(Exception):
    """Raised by a handler to answer a problem (400 invalid input, 503 busy, …)."""

    def __init__(self, status: int, code: str, detail: str, errors: Optional[List[FieldError]] = None,
                 retry_after: Optional[int] = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.errors = errors or []
        self.retry_after = retry_after


Handler = Callable[[Invocation], Any]


@dataclass
class Capability:
    """A capability the agent serves: its registry description and its handler."""

    name: str
    handler: Handler
    description: str = ""
    input_schema: Optional[Dict[str, Any]] = None
    output_schema: Optional[Dict[str, Any]] = None

    def spec(self) -> Dict[str, Any]:
        """The capability as the registry's AgentSpec lists it."""
        out: Dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.input_schema is not None:
            out["input_schema"] = self.input_schema
        if self.output_schema is not None:
            out["output_schema"] = self.output_schema
        return out


@dataclass(frozen=True)
class InvocationRecord:
    """What the metric hooks get after each call."""

    capability: str
    invocation_id: str
    status: int
    duration: float  # seconds
    error: bool  # 5xx, or the deadline passed before the answer


_STATUS_CODES = {400: "invalid", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                 415: "unsupported_media_type", 500: "internal", 503: "unavailable", 504: "gateway_timeout"}


def problem(status: int, code: str, detail: str, errors: Optional[List[FieldError]] = None,
            instance: Optional[str] = None) -> Dict[str, Any]:
    """Build an RFC 9457 problem document in the kernel's shape."""
    from http import HTTPStatus

    p: Dict[str, Any] = {"type": "urn:nops:problem:" + code, "title": HTTPStatus(status).phrase,
                         "status": status, "code": code, "detail": detail}
    if instance:
        p["instance"] = instance
    if errors:
        p["errors"] = [{"name": e.name, "reason": e.reason} for e in errors]
    return p


class InvocationServer:
    """Serves ``POST /invoke/{capability}`` for the given capabilities.

    on_invocation hooks are called after each call with an InvocationRecord (metrics); a hook
    that raises is ignored. Start with start() (port 0 picks a free port), stop with stop().
    """

    def __init__(self, capabilities: List[Capability], host: str = "127.0.0.1", port: int = 0,
                 max_body: int = DEFAULT_MAX_BODY) -> None:
        self.capabilities: Dict[str, Capability] = {c.name: c for c in capabilities}
        self.max_body = max_body
        self.hooks: List[Callable[[InvocationRecord], None]] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        """The server's base URL (``http://host:port``), the agent's endpoint."""
        host, port = self._httpd.server_address[:2]
        if ":" in str(host):
            host = "[%s]" % host
        return "http://%s:%d" % (host, port)

    @property
    def in_flight(self) -> int:
        """Calls being served now."""
        with self._lock:
            return self._in_flight

    def wait_idle(self, timeout: Optional[float]) -> bool:
        """Wait until no call is being served (at most timeout seconds; None: no limit);
        return whether that happened."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def start(self) -> None:
        """Serve on a background thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="nops-invocation-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting calls and close the socket (calls in progress finish on their threads).
        A request arriving afterwards on a connection kept alive is answered 503 and the connection
        closed, so nothing new is served once stop() began. Safe to call on a server never started,
        and twice."""
        self._closing.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def _record(self, rec: InvocationRecord) -> None:
        for hook in list(self.hooks):
            try:
                hook(rec)
            except Exception:  # noqa: BLE001 - a metrics hook must not break serving
                pass

    def _handler_class(self) -> type:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: with Nagle's algorithm the body would wait
            # for the kernel's delayed ACK of the headers (40 ms on Linux) on a kept-alive connection.
            disable_nagle_algorithm = True
            server_version = "nops-sdk-python"
            sys_version = ""  # do not advertise the interpreter's version

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
                return

            def _send(self, status: int, body: bytes, content_type: str, headers: Optional[Mapping[str, str]] = None) -> None:
                done = getattr(self, "_done", None)
                if done is not None:  # account for the call before the caller can see its answer
                    self._done = None
                    done(status)
                if server._closing.is_set():
                    self.close_connection = True
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _problem(self, status: int, code: str, detail: str, errors: Optional[List[FieldError]] = None,
                         headers: Optional[Mapping[str, str]] = None) -> None:
                body = json.dumps(problem(status, code, detail, errors, self.path)).encode()
                self._send(status, body, "application/problem+json", headers)

            def do_GET(self) -> None:  # noqa: N802
                self.close_connection = True
                self._problem(405, "method_not_allowed", "invocations are POST /invoke/{capability}", headers={"Allow": "POST"})

            def do_POST(self) -> None:  # noqa: N802
                start = time.monotonic()
                path = self.path.split("?", 1)[0]
                name = path[len("/invoke/"):] if path.startswith("/invoke/") else None
                inv_id = self.headers.get("Nops-Invocation-Id", "")
                if server._closing.is_set():
                    self._problem(503, "unavailable", "the agent is shutting down")
                    return
                cap = server.capabilities.get(name or "")
                with server._lock:
                    server._in_flight += 1

                def done(status: int) -> None:
                    with server._lock:
                        server._in_flight -= 1
                        if server._in_flight == 0:
                            server._idle.notify_all()
                    if cap is not None:
                        took = time.monotonic() - start
                        late = status < 500 and tm_deadline[0] is not None and time.monotonic() > tm_deadline[0]
                        server._record(InvocationRecord(cap.name, inv_id, status, took, status >= 500 or late))

                tm_deadline: List[Optional[float]] = [None]
                self._deadline_box = tm_deadline
                self._done = done
                try:
                    self._serve(cap, name, start)
                finally:
                    if self._done is not None:  # nothing was sent (the connection broke)
                        self._done = None
                        done(500)

            def _read_body(self) -> Tuple[Optional[bytes], Optional[Tuple[int, str, str]]]:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    return None, (400, "invalid", "send the body with Content-Length, not chunked")
                try:
                    n = int(self.headers.get("Content-Length") or "0")
                except ValueError:
                    return None, (400, "invalid", "malformed Content-Length")
                if n < 0:
                    return None, (400, "invalid", "malformed Content-Length")
                if n > server.max_body:
                    return None, (413, "too_large", "the body is larger than %d bytes" % server.max_body)
                return self.rfile.read(n), None

            def _serve(self, cap: Optional[Capability], name: Optional[str], start: float) -> int:
                body, bad = self._read_body()
                if bad is not None:
                    self.close_connection = True
                    self._problem(bad[0], bad[1], bad[2])
                    return bad[0]
                if cap is None:
                    self._problem(404, "not_found", "no capability %r here" % (name or ""))
                    return 404
                deadline: Optional[float] = None
                tm = self.headers.get("Nops-Timeout-Ms")
                if tm is not None:
                    try:
                        ms = int(tm)
                        if ms < 1:
                            raise ValueError
                    except ValueError:
                        self._problem(400, "invalid", "Nops-Timeout-Ms must be a positive integer", [FieldError("header.Nops-Timeout-Ms", "not a positive integer")])
                        return 400
                    deadline = start + ms / 1000.0
                    self._deadline_box[0] = deadline
                ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
                if ctype != "application/json" and not ctype.endswith("+json"):
                    self._problem(415, "unsupported_media_type", "the input must be application/json")
                    return 415
                try:
                    value = json.loads(body) if body else None
                except (ValueError, UnicodeDecodeError) as exc:
                    self._problem(400, "invalid", "the body is not valid JSON", [FieldError("body", str(exc))])
                    return 400
                if cap.input_schema is not None:
                    errors = validate(value, cap.input_schema)
                    if errors:
                        self._problem(400, "invalid", "the input does not match the capability's input schema", errors)
                        return 400
                inv = Invocation(
                    id=self.headers.get("Nops-Invocation-Id", ""),
                    tenant=self.headers.get("Nops-Tenant", ""),
                    capability=self.headers.get("Nops-Capability") or cap.name,
                    input=value,
                    headers={k: v for k, v in self.headers.items()},
                    deadline=deadline,
                    traceparent=self.headers.get("traceparent"),
                    tracestate=self.headers.get("tracestate"),
                    idempotency_key=self.headers.get("Idempotency-Key"),
                    request_id=self.headers.get("X-Request-ID"),
                )
                if inv.expired():
                    self._problem(504, "gateway_timeout", "the caller's deadline passed before the call started")
                    return 504
                token = current_traceparent.set(inv.traceparent)
                try:
                    result = cap.handler(inv)
                except InvocationError as e:
                    h = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
                    self._problem(e.status, e.code, e.detail, e.errors, h)
                    return e.status
                except Exception:  # noqa: BLE001 - never leak a stack trace to the caller
                    self._problem(500, "internal", "the capability failed")
                    return 500
                finally:
                    current_traceparent.reset(token)
                reply = result if isinstance(result, Reply) else Reply(body=result)
                headers = dict(reply.headers)
                if isinstance(reply.body, (bytes, bytearray)):
                    out = bytes(reply.body)
                else:
                    try:
                        out = json.dumps(reply.body).encode()
                    except (TypeError, ValueError):
                        self._problem(500, "internal", "the capability's result is not JSON")
                        return 500
                self._send(reply.status, out, reply.content_type, headers)
                return reply.status

        return _Handler
