"""The agent runtime: register, heartbeat, serve invocations, rotate the API key, deregister.

    agent = Agent(client, name="echo", version="1.0.0",
                  capabilities=[Capability("text.echo", handler, input_schema={...})])
    agent.start()        # invocation server up, registered, heartbeating
    ...
    agent.stop()         # heartbeats stop, deregistered, server closed

``start`` registers idempotently: when an agent of that name already exists in the tenant (a
restart, or a retried registration), its specification is replaced with this one (``PUT`` with
``If-Match``) and its ID is reused. Heartbeats run on a thread every ``heartbeat_interval``
seconds ± ``heartbeat_jitter`` (a fraction), carrying the load figures of the last
``load_window`` calls: in flight, p50 and p95 latency, error rate, and free capacity when
``max_concurrency`` is set. ``load_provider`` overrides or adds figures; ``on_invocation`` and
``on_heartbeat`` hooks see every call and every heartbeat.
"""

from __future__ import annotations

import datetime
import random
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional

from .client import ApiError, Client, api_key_id
from .server import Capability, InvocationRecord, InvocationServer


def _percentile(sorted_values: List[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


class RotationError(Exception):
    """The new API key did not authenticate; the client went back to the previous one."""


class Agent:
    """A registered agent serving capabilities through an InvocationServer."""

    def __init__(self, client: Client, name: str, version: str, capabilities: List[Capability], *,
                 host: str = "127.0.0.1", port: int = 0, endpoint: Optional[str] = None,
                 labels: Optional[Mapping[str, str]] = None, metadata: Optional[Mapping[str, Any]] = None,
                 criticality: Optional[str] = None, heartbeat_interval: float = 10.0,
                 heartbeat_jitter: float = 0.2, max_concurrency: Optional[int] = None,
                 load_window: int = 256, load_provider: Optional[Callable[[], Mapping[str, Any]]] = None,
                 rand: Callable[[], float] = random.random, auto_rotate: bool = True,
                 rotation_grace: float = 3600.0, on_key_rotated: Optional[Callable[[str], None]] = None) -> None:
        """endpoint is the URL the kernel reaches the agent at (default: the server's own URL,
        right when kernel and agent share a host).

        auto_rotate (the default): when an answer of the kernel carries
        ``Nops-Api-Key-Rotate-By`` (an administrator force-rotated the key), the agent rotates its
        key itself on a background thread, one rotation at a time, with rotate_api_key (no call
        fails), the previous secret kept for rotation_grace seconds capped at half the time left
        before the deadline (never below 5 s), and hands the new key to on_key_rotated to be
        stored. The on_key_rotation hooks get a dict per rotation, done or failed."""
        self.client = client
        self.name, self.version = name, version
        self.server = InvocationServer(capabilities, host=host, port=port)
        self.endpoint = endpoint
        self.labels = dict(labels or {})
        self.metadata = dict(metadata or {})
        self.criticality = criticality
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_jitter = heartbeat_jitter
        self.max_concurrency = max_concurrency
        self.load_provider = load_provider
        self.on_invocation: List[Callable[[InvocationRecord], None]] = []
        self.on_heartbeat: List[Callable[[Dict[str, Any]], None]] = []
        self.on_heartbeat_error: List[Callable[[BaseException], None]] = []
        self.agent_id: Optional[str] = None
        self._rand = rand
        self._lock = threading.Lock()
        self._window: Deque[InvocationRecord] = deque(maxlen=load_window)
        self._stop = threading.Event()
        self._hb_thread: Optional[threading.Thread] = None
        self.server.hooks.append(self._observe)
        self.rotation_grace = rotation_grace
        self.on_key_rotated = on_key_rotated
        self.on_key_rotation: List[Callable[[Dict[str, Any]], None]] = []
        self._rotating = False
        self._next_rotation = 0.0
        self._rotation_thread: Optional[threading.Thread] = None
        if auto_rotate:
            client.on_rotate_by = self._rotate_by

    # Specification and registration -------------------------------------------------------

    def spec(self) -> Dict[str, Any]:
        """The AgentSpec sent to the registry."""
        s: Dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "endpoint": self.endpoint or self.server.url,
            "capabilities": [c.spec() for c in self.server.capabilities.values()],
        }
        if self.labels:
            s["labels"] = self.labels
        if self.metadata:
            s["metadata"] = self.metadata
        if self.criticality:
            s["criticality"] = self.criticality
        return s

    def register(self) -> Dict[str, Any]:
        """Register, or take over the registration of the same name (idempotent); return the agent."""
        spec = self.spec()
        try:
            agent = self.client.register_agent(spec).json()
        except ApiError as e:
            if e.status != 409:
                raise
            agent = self._take_over(spec)
        self.agent_id = agent["id"]
        return agent

    def _take_over(self, spec: Mapping[str, Any]) -> Dict[str, Any]:
        for a in self.client.list_agents():
            if a.get("name") == spec["name"]:
                cur = self.client.get_agent(a["id"])
                etag = cur.header("ETag") or ""
                return self.client.update_agent(a["id"], spec, etag).json()
        raise RuntimeError("agent %r: registration conflicts, but no agent of that name is listed" % spec["name"])

    def deregister(self) -> None:
        """Remove the agent from the registry (nothing when it is not registered)."""
        if self.agent_id is None:
            return
        try:
            self.client.deregister_agent(self.agent_id)
        except ApiError as e:
            if e.status != 404:
                raise
        self.agent_id = None

    # Load figures and heartbeats ---------------------------------------------------------

    def _observe(self, rec: InvocationRecord) -> None:
        with self._lock:
            self._window.append(rec)
        for hook in list(self.on_invocation):
            try:
                hook(rec)
            except Exception:  # noqa: BLE001 - a metrics hook must not break serving
                pass

    def load(self) -> Dict[str, Any]:
        """The load figures of the next heartbeat (the Load schema of the API)."""
        with self._lock:
            recent = list(self._window)
        in_flight = self.server.in_flight
        out: Dict[str, Any] = {"in_flight": in_flight}
        if recent:
            lat = sorted(r.duration * 1000.0 for r in recent)
            out["p50_ms"] = round(_percentile(lat, 0.50), 3)
            out["p95_ms"] = round(_percentile(lat, 0.95), 3)
            out["error_rate"] = round(sum(1 for r in recent if r.error) / len(recent), 4)
        if self.max_concurrency is not None:
            out["free_capacity"] = max(0, self.max_concurrency - in_flight)
        if self.load_provider is not None:
            out.update(self.load_provider())
        return out

    def heartbeat(self) -> Dict[str, Any]:
        """Send one heartbeat with the current load; return the kernel's answer."""
        if self.agent_id is None:
            raise RuntimeError("the agent is not registered")
        res = self.client.heartbeat(self.agent_id, self.load())
        for hook in list(self.on_heartbeat):
            hook(res)
        return res

    def next_heartbeat_delay(self) -> float:
        """The wait before the next heartbeat: the interval ± jitter, uniformly."""
        j = self.heartbeat_jitter
        return self.heartbeat_interval * (1.0 - j + 2.0 * j * self._rand())

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.next_heartbeat_delay()):
            try:
                self.heartbeat()
            except Exception as e:  # noqa: BLE001 - keep beating; the hooks hear about it
                for hook in list(self.on_heartbeat_error):
                    try:
                        hook(e)
                    except Exception:  # noqa: BLE001
                        pass

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> Dict[str, Any]:
        """Start the invocation server, register, send a first heartbeat, start heartbeating."""
        self.server.start()
        try:
            agent = self.register()
            self.heartbeat()
        except BaseException:
            self.server.stop()
            raise
        self._stop.clear()
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="nops-heartbeat", daemon=True)
        self._hb_thread.start()
        return agent

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Graceful shutdown: stop heartbeating, deregister (so no new call is routed here), let
        the calls being served finish (at most drain_timeout seconds), then close the server."""
        self._stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join()
            self._hb_thread = None
        try:
            self.deregister()
        finally:
            self.server.wait_idle(drain_timeout)
            self.server.stop()

    def __enter__(self) -> "Agent":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # API key rotation --------------------------------------------------------------------

    def rotate_api_key(self, grace_period: str = "1h") -> str:
        """Rotate the client's own API key without a failed call; return the new secret.

        1. rotate: ``POST /v1/api-keys/{id}/rotate`` with the grace period; the old secret keeps
           working until it ends;
        2. switch: the client sends the new secret from its next request on (requests in flight
           finish with the old one, still valid);
        3. confirm: ``GET /v1/auth/whoami`` with the new secret; if it is refused the client goes
           back to the old one and RotationError is raised.

        The key needs the ``apikeys:write`` scope (an ADMIN key). Store the returned secret: it is
        shown this once.
        """
        old = self.client.credentials().get("api_key")
        if not old:
            raise RotationError("the client does not authenticate with an API key")
        key_id = api_key_id(str(old))
        new = self.client.rotate_api_key(key_id, grace_period)["secret"]
        self.client.set_api_key(new)
        try:
            who = self.client.whoami(credentials=dict(self.client.credentials(), api_key=new, bearer_token=None))
        except ApiError as e:
            self.client.set_api_key(str(old))
            raise RotationError("the new secret was refused: %s" % e) from e
        if who.get("subject") != key_id:
            self.client.set_api_key(str(old))
            raise RotationError("the new secret authenticates as %r" % who.get("subject"))
        return new

    # Automatic rotation --------------------------------------------------------------------

    def _rotate_by(self, value: str) -> None:
        """Start the automatic rotation the kernel asks for (deadline value, RFC 3339), unless
        one is under way or the last one failed less than AUTO_ROTATE_RETRY seconds ago."""
        try:
            by = _parse_rfc3339(value)
        except ValueError:
            return
        with self._lock:
            if self._rotating or time.monotonic() < self._next_rotation:
                return
            self._rotating = True
            t = threading.Thread(target=self._auto_rotate, args=(by,), name="nops-key-rotation", daemon=True)
            self._rotation_thread = t
        t.start()

    def wait_rotation(self, timeout: Optional[float] = None) -> None:
        """Wait for the automatic rotation under way, if any."""
        with self._lock:
            t = self._rotation_thread
        if t is not None:
            t.join(timeout)

    def _auto_rotate(self, by: datetime.datetime) -> None:
        start = time.monotonic()
        left = (by - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        grace = auto_grace(self.rotation_grace, left)
        event: Dict[str, Any] = {"rotate_by": by, "grace": grace, "error": None}
        try:
            event["key_id"] = api_key_id(str(self.client.credentials().get("api_key") or ""))
        except ValueError:
            event["key_id"] = None
        new: Optional[str] = None
        try:
            new = self.rotate_api_key(grace_period="%.3fs" % grace)
        except Exception as e:  # noqa: BLE001 - reported to the hooks, tried again later
            event["error"] = e
        event["duration"] = time.monotonic() - start
        with self._lock:
            if new is None:
                self._next_rotation = time.monotonic() + AUTO_ROTATE_RETRY
        try:
            for hook in list(self.on_key_rotation):
                try:
                    hook(event)
                except Exception:  # noqa: BLE001 - a metrics hook must not stop the rotation
                    pass
            if new is not None and self.on_key_rotated is not None:
                self.on_key_rotated(new)
        finally:
            with self._lock:
                self._rotating = False


#: The wait, in seconds, before another automatic rotation after a failed one.
AUTO_ROTATE_RETRY = 30.0
#: The grace period, in seconds, an automatic rotation never goes below because of a close deadline.
MIN_AUTO_GRACE = 5.0


def auto_grace(configured: float, left: float) -> float:
    """The grace period of an automatic rotation: the configured one, capped at half the time left
    before the deadline, that cap never below MIN_AUTO_GRACE."""
    return min(configured, max(left / 2.0, MIN_AUTO_GRACE))


def _parse_rfc3339(value: str) -> datetime.datetime:
    v = value.strip()
    if v.endswith(("Z", "z")):
        v = v[:-1] + "+00:00"
    if "T" not in v.upper():
        raise ValueError("not an RFC 3339 time: %r" % value)
    d = datetime.datetime.fromisoformat(v)
    if d.tzinfo is None:
        raise ValueError("an RFC 3339 time has an offset: %r" % value)
    return d
