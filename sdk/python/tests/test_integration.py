"""Integration tests against a real kernel (started by sdk/python/python_test.go).

Environment: NOPS_URL, NOPS_API_KEY (an ADMIN key of NOPS_TENANT), NOPS_TENANT, NOPS_ADMIN_TOKEN
(a SUPER_ADMIN access token); NOPS_GATE_URL and NOPS_GATE_API_KEY: a second kernel whose
in-flight cap is 10 (limits.inflight_max), and an ADMIN key of a tenant of it. Without them the tests skip, unless NOPS_REQUIRE_INTEGRATION=1.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
import unittest
import uuid
from typing import Any, Dict, List, Optional

from nops_sdk import (Agent, ApiError, Attempt, Capability, Client, Invocation, InvocationError, InvocationRecord,
                      RetryPolicy, SigningKey, sign)

URL = os.environ.get("NOPS_URL", "")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = "00-%s-00f067aa0ba902b7-01" % TRACE_ID


def setUpModule() -> None:
    if not URL:
        if os.environ.get("NOPS_REQUIRE_INTEGRATION") == "1":
            raise RuntimeError("NOPS_URL is not set and NOPS_REQUIRE_INTEGRATION=1")
        raise unittest.SkipTest("NOPS_URL is not set: run through sdk/python/python_test.go")


def unique(prefix: str) -> str:
    return prefix + "-" + uuid.uuid4().hex[:10]


def admin() -> Client:
    """The SUPER_ADMIN."""
    return Client(URL, bearer_token=os.environ["NOPS_ADMIN_TOKEN"])


def new_tenant(name: str) -> Dict[str, str]:
    """A fresh tenant and an ADMIN API key of it."""
    a = admin()
    ten = a.request("POST", "/v1/tenants", {"name": name, "display_name": name}).json()["id"]
    key = a.request("POST", "/v1/api-keys", {"name": "admin", "role": "ADMIN"}, query={"tenant": ten}).json()["secret"]
    return {"tenant": ten, "api_key": key}


class Recorder:
    """The calls an agent served, and the traffic outcome counters of a test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: List[Invocation] = []

    def echo(self, inv: Invocation) -> Dict[str, Any]:
        with self.lock:
            self.calls.append(inv)
        return {"echo": inv.input["text"], "invocation": inv.id, "remaining_ms": int((inv.remaining() or 0) * 1000)}


ECHO_SCHEMA = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}


class IntegrationLifecycle(unittest.TestCase):
    """register → heartbeat → invoke through the kernel → rotate the key during traffic → deregister."""

    def test_lifecycle(self) -> None:
        tenant_admin = Client(URL, api_key=os.environ["NOPS_API_KEY"])
        # The agent gets its own ADMIN key (it rotates it itself: apikeys:write).
        agent_key = tenant_admin.create_api_key("py-agent", "ADMIN")
        agent_client = Client(URL, api_key=agent_key["secret"])
        rec = Recorder()
        records: List[InvocationRecord] = []
        beats: List[Dict[str, Any]] = []
        agent = Agent(agent_client, unique("py-life"), "1.0.0",
                      [Capability("py.echo", rec.echo, description="echo", input_schema=ECHO_SCHEMA)],
                      heartbeat_interval=0.5, max_concurrency=16)
        agent.on_invocation.append(records.append)
        agent.on_heartbeat.append(beats.append)

        # Register (and the first heartbeat).
        registered = agent.start()
        stopped = False
        try:
            self.assertEqual(registered["status"], "healthy")
            self.assertEqual(registered["tenant"], os.environ["NOPS_TENANT"])
            self.assertEqual(registered["endpoint"], agent.server.url)
            # Registering again is idempotent: the same agent, not a conflict.
            self.assertEqual(agent.register()["id"], registered["id"])

            # Invoke through the kernel: the Python server gets the kernel's headers.
            caller = Client(URL, api_key=os.environ["NOPS_API_KEY"])
            r = caller.invoke("py.echo", {"text": "hello"}, timeout_ms=20000, traceparent=TRACEPARENT)
            self.assertEqual(r.json()["echo"], "hello")
            self.assertEqual(r.header("Nops-Agent-Id"), registered["id"])
            inv = rec.calls[-1]
            self.assertEqual(inv.id, r.header("Nops-Invocation-Id"))
            self.assertEqual(inv.tenant, os.environ["NOPS_TENANT"])
            self.assertEqual(inv.capability, "py.echo")
            self.assertIsNotNone(inv.deadline)
            self.assertTrue(0 < r.json()["remaining_ms"] <= 20000, r.json())
            self.assertIsNotNone(inv.traceparent)
            assert inv.traceparent is not None
            self.assertEqual(inv.traceparent.split("-")[1], TRACE_ID)  # the caller's trace continues
            self.assertIsNotNone(inv.idempotency_key)  # the SDK's POSTs carry one; the kernel forwards it
            # The kernel validates the input against the registered schema before the agent.
            with self.assertRaises(ApiError) as cm:
                caller.invoke("py.echo", {"text": 5})
            self.assertEqual((cm.exception.status, cm.exception.code), (400, "invalid"))

            # Heartbeats carry the load figures the metric hooks saw.
            self.assertTrue(any(x.capability == "py.echo" and x.status == 200 for x in records))
            n = len(beats)
            deadline = time.monotonic() + 20
            while len(beats) < n + 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertGreaterEqual(len(beats), n + 2, "the heartbeat thread does not beat")
            doc = caller.get_agent(registered["id"]).json()
            self.assertEqual(doc["status"], "healthy")
            self.assertIn("p50_ms", doc["load"])
            self.assertEqual(doc["load"]["free_capacity"], 16 - doc["load"]["in_flight"])

            # Rotate the agent's key while its client is busy: no call fails.
            failures: List[BaseException] = []
            done = threading.Event()
            counts = {"ok": 0}
            lock = threading.Lock()

            def traffic() -> None:
                while not done.is_set():
                    try:
                        agent_client.invoke("py.echo", {"text": "x"})
                        agent.heartbeat()
                        with lock:
                            counts["ok"] += 1
                    except BaseException as e:  # noqa: BLE001 - counted, reported below
                        failures.append(e)
                        return

            workers = [threading.Thread(target=traffic) for _ in range(4)]
            for w in workers:
                w.start()
            time.sleep(0.3)
            old_secret = agent_key["secret"]
            new_secret = agent.rotate_api_key(grace_period="2m")
            time.sleep(0.3)
            done.set()
            for w in workers:
                w.join()
            self.assertEqual(failures, [], "calls failed during the rotation")
            self.assertGreater(counts["ok"], 0)
            self.assertEqual(agent_client.credentials()["api_key"], new_secret)
            self.assertNotEqual(new_secret, old_secret)
            # The old secret still works within the grace; both authenticate as the same key.
            self.assertEqual(agent_client.whoami(credentials={"api_key": old_secret})["subject"], agent_key["id"])
            self.assertEqual(agent_client.whoami()["subject"], agent_key["id"])

            # Deregister on shutdown: the agent is gone and nothing routes to it.
            agent.stop()
            stopped = True
            with self.assertRaises(ApiError) as cm:
                caller.get_agent(registered["id"])
            self.assertEqual(cm.exception.status, 404)
            served = len(rec.calls)
            # The kernel caches routable agents for up to invoke.candidates_ttl (1 s): until then a
            # call may still be tried here and fail (502/503); then none offers it (404).
            deadline = time.monotonic() + 15
            status = 0
            while status != 404 and time.monotonic() < deadline:
                with self.assertRaises(ApiError) as cm:
                    caller.invoke("py.echo", {"text": "late"})
                status = cm.exception.status
                self.assertIn(status, (404, 502, 503))
            self.assertEqual(status, 404)
            self.assertEqual(len(rec.calls), served, "a call reached the agent after it stopped")
        finally:
            if not stopped:
                agent.stop()

    def test_register_takes_over_a_previous_registration(self) -> None:
        c = Client(URL, api_key=os.environ["NOPS_API_KEY"])
        name = unique("py-again")
        first = Agent(c, name, "1.0.0", [Capability("py.first", lambda inv: {})])
        second = Agent(c, name, "1.1.0", [Capability("py.second", lambda inv: {"second": True})])
        first.start()
        try:
            first._stop.set()  # a crashed process: no deregistration
            second_doc = second.start()
            try:
                self.assertEqual(second_doc["id"], first.agent_id)
                self.assertEqual((second_doc["version"], second_doc["endpoint"]), ("1.1.0", second.server.url))
                self.assertEqual(c.invoke("py.second", {}).json(), {"second": True})
            finally:
                second.stop()
        finally:
            first.agent_id = None  # already deregistered by second
            first.stop()


class IntegrationRetries(unittest.TestCase):
    """The client honours Retry-After on the kernel's 429 and 503, and retries an agent's failure."""

    def test_429_rate_limited_tenant(self) -> None:
        t = new_tenant(unique("py-rl"))
        admin().request("POST", "/v1/rate-limits", {"kind": "tenant", "target": t["tenant"], "limit": 1, "period": "2s"})
        attempts: List[Attempt] = []
        slept: List[float] = []

        def sleep(d: float) -> None:
            slept.append(d)
            time.sleep(d)

        c = Client(URL, api_key=t["api_key"], on_attempt=attempts.append,
                   retry=RetryPolicy(max_attempts=6, base_delay=0.05, max_delay=0.1, sleep=sleep))
        deadline = time.monotonic() + 20
        while not any(a.status == 429 for a in attempts) and time.monotonic() < deadline:
            c.request("GET", "/v1/agents")  # never raises: every 429 is waited out
        limited = [i for i, a in enumerate(attempts) if a.status == 429]
        self.assertTrue(limited, "the tenant's rate limit never answered 429")
        for i in limited:
            a = attempts[i]
            self.assertIsNotNone(a.retry_after)
            assert a.retry_after is not None and a.delay is not None
            self.assertGreaterEqual(a.delay, float(a.retry_after))  # Retry-After is never cut short
            self.assertGreaterEqual(float(a.retry_after), 1.0)
        self.assertEqual(attempts[-1].status, 200)

    def test_503_of_an_overloaded_kernel(self) -> None:
        # A kernel whose in-flight cap is 10 sheds best-effort requests (reads) from 7 in flight
        # on, with 503 and Retry-After (the gate's, or the shed_best_effort mode's): hold 7 invocations in an agent, read, let them go when
        # the 503 comes; the client waits the Retry-After and the retry passes.
        url, key = os.environ["NOPS_GATE_URL"], os.environ["NOPS_GATE_API_KEY"]
        held, release = threading.Semaphore(0), threading.Event()

        def hold(inv: Invocation) -> Dict[str, Any]:
            held.release()
            release.wait(30)
            return {}

        c = Client(url, api_key=key)
        agent = Agent(c, unique("py-hold"), "1.0.0", [Capability("py.hold", hold)], heartbeat_interval=30)
        agent.start()
        callers = [threading.Thread(target=c.invoke, args=("py.hold", {})) for _ in range(7)]
        try:
            for t in callers:
                t.start()
            for _ in callers:
                self.assertTrue(held.acquire(timeout=20), "the held invocations did not all arrive")
            attempts: List[Attempt] = []

            def seen(a: Attempt) -> None:
                attempts.append(a)
                if a.status == 503:
                    release.set()

            reader = Client(url, api_key=key, on_attempt=seen, retry=RetryPolicy(base_delay=0.01, max_delay=0.02))
            r = reader.request("GET", "/v1/agents")
            self.assertEqual(r.status, 200)
            # The in-flight gate answers Retry-After 1; once the kernel's shed_best_effort mode
            # is on (internal/degrade), its refusals carry health.degrade_retry_after (5 s), until
            # the mode has seen a few calm rounds: one or more 503s, each waited out, then 200.
            statuses = [a.status for a in attempts]
            self.assertEqual(statuses[-1], 200, statuses)
            self.assertTrue(len(statuses) >= 2 and all(st == 503 for st in statuses[:-1]), statuses)
            for a in attempts[:-1]:
                self.assertIn(a.retry_after, ("1", "5"))
                assert a.delay is not None
                self.assertGreaterEqual(a.delay, float(a.retry_after or 0))
        finally:
            release.set()
            for t in callers:
                t.join()
            agent.stop()

    def test_an_agents_503_is_retried(self) -> None:
        # The SDK's invocations carry an Idempotency-Key, so the kernel may retry them itself; with
        # no other agent it answers 502, which the client retries: the agent sees the same key.
        c = Client(URL, api_key=os.environ["NOPS_API_KEY"])
        state = {"n": 0}
        keys: List[Optional[str]] = []

        def flaky(inv: Invocation) -> Dict[str, Any]:
            state["n"] += 1
            keys.append(inv.idempotency_key)
            if state["n"] == 1:
                raise InvocationError(503, "unavailable", "warming up", retry_after=1)
            return {"n": state["n"]}

        agent = Agent(c, unique("py-flaky"), "1.0.0", [Capability("py.flaky", flaky)], heartbeat_interval=30)
        agent.start()
        try:
            attempts: List[Attempt] = []
            caller = Client(URL, api_key=os.environ["NOPS_API_KEY"], on_attempt=attempts.append,
                            retry=RetryPolicy(base_delay=0.01, max_delay=0.02))
            r = caller.invoke("py.flaky", {})
            self.assertEqual(r.json(), {"n": 2})
            self.assertEqual([a.status for a in attempts], [502, 200])
            self.assertEqual(len(keys), 2)
            self.assertEqual(len(set(keys)), 1, "the retry must carry the same Idempotency-Key")
        finally:
            agent.stop()


class IntegrationSignatures(unittest.TestCase):
    """A tenant that requires RFC 9421 signatures accepts the SDK's and refuses tampered ones."""

    @classmethod
    def setUpClass(cls) -> None:
        t = new_tenant(unique("py-sig"))
        cls.tenant, cls.api_key = t["tenant"], t["api_key"]
        cls.key = Client(URL, api_key=cls.api_key).create_request_key("py-sdk")
        admin().request("PUT", "/v1/tenants/%s/perimeter" % cls.tenant, {"require_signatures": True, "gateway_origins": []})
        unsigned = Client(URL, api_key=cls.api_key, retry=RetryPolicy(max_attempts=1))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                unsigned.request("GET", "/v1/agents")
            except ApiError as e:
                if e.status == 401:
                    return
            time.sleep(0.1)
        raise AssertionError("the tenant does not require signatures within 15 s")

    tenant: str
    api_key: str
    key: SigningKey

    def signed_client(self) -> Client:
        return Client(URL, api_key=self.api_key, signing_key=self.key)

    def test_unsigned_is_refused(self) -> None:
        with self.assertRaises(ApiError) as cm:
            Client(URL, api_key=self.api_key).request("GET", "/v1/agents")
        self.assertEqual((cm.exception.status, cm.exception.code), (401, "unauthenticated"))
        self.assertIn("signature", cm.exception.problem.get("detail", ""))

    def test_signed_agent_lifecycle(self) -> None:
        c = self.signed_client()
        agent = Agent(c, unique("py-signed"), "1.0.0", [Capability("py.signed", lambda inv: {"ok": inv.input})],
                      heartbeat_interval=30)
        agent.start()  # POST with a body (content-digest), GET, heartbeat: all signed
        try:
            self.assertEqual(c.invoke("py.signed", {"a": 1}).json(), {"ok": {"a": 1}})
            self.assertEqual(c.whoami()["tenant"], self.tenant)
        finally:
            agent.stop()  # DELETE, signed

    def test_example_agent_signs(self) -> None:
        # examples/python-agent with NOPS_REQUEST_KEY_ID/SECRET works in a tenant that requires
        # signatures: it registers, heartbeats and deregisters with signed requests.
        script = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "python-agent", "agent.py")
        env = dict(os.environ, NOPS_URL=URL, NOPS_API_KEY=self.api_key, NOPS_AGENT_NAME=unique("py-example"),
                   NOPS_REQUEST_KEY_ID=self.key.key_id,
                   NOPS_REQUEST_KEY_SECRET=base64.b64encode(self.key.secret).decode())
        proc = subprocess.Popen([sys.executable, script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            self.assertTrue(line.startswith("ready: agent "), line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else ""))
            agent_id = line.split()[2]
            c = self.signed_client()
            r = c.invoke("text.reverse", {"text": "signed"})
            self.assertEqual((r.json()["reversed"], r.header("Nops-Agent-Id")), ("dengis", agent_id))
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("deregistered: agent " + agent_id, out)
        with self.assertRaises(ApiError) as cm:
            self.signed_client().get_agent(agent_id)
        self.assertEqual(cm.exception.status, 404)

    def send(self, method: str, path: str, body: Optional[bytes], alter: Any = None) -> ApiError:
        """Sign a request by hand, let alter change it, send it unsigned by the client."""
        url = URL + path
        headers: Dict[str, str] = {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        sign(method, url, headers, body, self.key)
        if alter is not None:
            body = alter(headers, body)
        c = Client(URL, retry=RetryPolicy(max_attempts=1))
        with self.assertRaises(ApiError) as cm:
            c.request(method, path, headers=headers, raw_body=body, credentials={"api_key": self.api_key})
        self.assertEqual(cm.exception.status, 401)
        return cm.exception

    def test_tampered_requests_are_refused(self) -> None:
        spec = b'{"name":"tampered","version":"1.0.0","endpoint":"https://agents.example.com/t"}'
        e = self.send("POST", "/v1/agents", spec, lambda h, b: b.replace(b"tampered", b"evil"))
        self.assertIn("content-digest does not match the body", e.problem["detail"])

        def bad_sig(h: Dict[str, str], b: Optional[bytes]) -> Optional[bytes]:
            sig = h["Signature"]
            h["Signature"] = sig[:6] + ("A" if sig[6] != "A" else "B") + sig[7:]
            return b

        e = self.send("GET", "/v1/agents", None, bad_sig)
        self.assertIn("signature does not verify", e.problem["detail"])
        e = self.send("GET", "/v1/agents", None, lambda h, b: h.update({"Signature-Input": h["Signature-Input"].replace('tag="nops-request"', 'tag="other"')}) or b)
        self.assertIn("tag must be nops-request", e.problem["detail"])
        wrong = SigningKey(self.key.key_id, b"\x01" * 32)
        headers: Dict[str, str] = {}
        sign("GET", URL + "/v1/agents", headers, None, wrong)
        with self.assertRaises(ApiError) as cm:
            Client(URL, retry=RetryPolicy(max_attempts=1)).request("GET", "/v1/agents", headers=headers, credentials={"api_key": self.api_key})
        self.assertIn("signature does not verify", cm.exception.problem["detail"])
        # Nothing was registered by the refused POST.
        names = [a["name"] for a in self.signed_client().list_agents()]
        self.assertNotIn("evil", names)
        self.assertNotIn("tampered", names)

    def test_replayed_signature_is_refused(self) -> None:
        headers: Dict[str, str] = {}
        sign("GET", URL + "/v1/agents", headers, None, self.key)
        c = Client(URL, retry=RetryPolicy(max_attempts=1))
        self.assertEqual(c.request("GET", "/v1/agents", headers=headers, credentials={"api_key": self.api_key}).status, 200)
        with self.assertRaises(ApiError) as cm:
            c.request("GET", "/v1/agents", headers=headers, credentials={"api_key": self.api_key})
        self.assertIn("nonce already used", cm.exception.problem["detail"])


if __name__ == "__main__":
    unittest.main()


class IntegrationAutoRotate(unittest.TestCase):
    """An administrator force-rotates the key of an agent serving traffic: the agent rotates it
    by itself, once, without a failed call."""

    def test_force_rotate(self) -> None:
        tenant_admin = Client(URL, api_key=os.environ["NOPS_API_KEY"])
        agent_key = tenant_admin.create_api_key("py-auto", "ADMIN")
        old = agent_key["secret"]
        agent_client = Client(URL, api_key=old)
        rec = Recorder()
        rotated: List[str] = []
        events: List[Dict[str, Any]] = []
        agent = Agent(agent_client, unique("py-auto"), "1.0.0",
                      [Capability("py.auto", rec.echo, input_schema=ECHO_SCHEMA)],
                      heartbeat_interval=0.2, rotation_grace=2.0, on_key_rotated=rotated.append)
        agent.on_key_rotation.append(events.append)
        agent.start()
        failures: List[BaseException] = []
        done = threading.Event()
        counts = {"ok": 0}
        lock = threading.Lock()

        def traffic() -> None:
            while not done.is_set():
                try:
                    agent_client.invoke("py.auto", {"text": "x"})
                    with lock:
                        counts["ok"] += 1
                except BaseException as e:  # noqa: BLE001 - counted, reported below
                    failures.append(e)
                    return

        workers = [threading.Thread(target=traffic) for _ in range(3)]
        try:
            for w in workers:
                w.start()
            time.sleep(0.3)
            self.assertEqual(agent_client.credentials()["api_key"], old, "rotated without a deadline")
            tenant_admin.request("POST", "/v1/admin/api-keys/%s/force-rotate" % agent_key["id"], {"deadline": "1h"})
            deadline = time.monotonic() + 30
            while not rotated and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(len(rotated), 1, "the agent did not rotate its key by itself")
            time.sleep(0.3)
        finally:
            done.set()
            for w in workers:
                w.join()
            agent.stop()
        self.assertEqual(failures, [], "calls failed during the rotation")
        new = rotated[0]
        self.assertNotEqual(new, old)
        self.assertEqual(agent_client.credentials()["api_key"], new)
        self.assertEqual(len(events), 1, events)
        self.assertIsNone(events[0]["error"])
        self.assertEqual(events[0]["grace"], 2.0)
        key = tenant_admin.request("GET", "/v1/api-keys/" + agent_key["id"]).json()
        self.assertNotIn("rotate_by", key)
        r = agent_client.request("GET", "/v1/auth/whoami")
        self.assertIsNone(r.header("Nops-Api-Key-Rotate-By"))
        # The old secret is refused once the grace is over.
        deadline = time.monotonic() + 30
        status = 200
        while time.monotonic() < deadline:
            status = agent_client.request("GET", "/v1/auth/whoami", credentials={"api_key": old}, check=False).status
            if status == 401:
                break
            time.sleep(0.2)
        self.assertEqual(status, 401)
