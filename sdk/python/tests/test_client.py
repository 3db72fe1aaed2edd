"""Client behaviour against a scripted local HTTP server: retries, Retry-After, Idempotency-Key,
re-signing of each attempt, credentials, problems."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple

from nops_sdk import (Agent, ApiError, Attempt, Capability, Client, RetryPolicy, RotationError, SigningKey, api_key_id,
                      parse_retry_after)

Answer = Tuple[int, Dict[str, str], bytes]


class Scripted:
    """A real HTTP server answering from a script and recording every request."""

    def __init__(self, answers: List[Answer]) -> None:
        self.answers = list(answers)
        self.requests: List[Tuple[str, str, Dict[str, str], bytes]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                return

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                outer.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, headers, out = outer.answers.pop(0) if outer.answers else (200, {}, b"{}")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


PROBLEM_429 = (429, {"Content-Type": "application/problem+json", "Retry-After": "3"},
               json.dumps({"type": "urn:nops:problem:rate_limited", "title": "Too Many Requests", "status": 429,
                           "code": "rate_limited", "detail": "rate limit exceeded"}).encode())


def recording_policy(**kw: Any) -> Tuple[RetryPolicy, List[float]]:
    slept: List[float] = []
    return RetryPolicy(sleep=slept.append, rand=lambda: 0.5, **kw), slept


class Retries(unittest.TestCase):
    def setUp(self) -> None:
        self.servers: List[Scripted] = []

    def tearDown(self) -> None:
        for s in self.servers:
            s.close()

    def server(self, answers: List[Answer]) -> Scripted:
        s = Scripted(answers)
        self.servers.append(s)
        return s

    def test_429_waits_retry_after_and_keeps_the_idempotency_key(self) -> None:
        s = self.server([PROBLEM_429, (503, {"Retry-After": "1"}, b""), (201, {"Content-Type": "application/json"}, b'{"id":"x"}')])
        policy, slept = recording_policy()
        attempts: List[Attempt] = []
        c = Client(s.url, api_key="k", retry=policy, on_attempt=attempts.append)
        r = c.request("POST", "/v1/agents", {"name": "a"})
        self.assertEqual((r.status, r.attempts), (201, 3))
        self.assertEqual(slept, [3.0, 1.0])  # backoff 0.1 and 0.2 are shorter: Retry-After wins
        keys = {h["idempotency-key"] for _, _, h, _ in s.requests}
        self.assertEqual(len(keys), 1)
        self.assertEqual([a.status for a in attempts], [429, 503, 201])
        self.assertEqual([a.retry_after for a in attempts], ["3", "1", None])

    def test_backoff_exceeds_a_short_retry_after(self) -> None:
        s = self.server([(503, {"Retry-After": "0"}, b""), (200, {}, b"{}")])
        policy, slept = recording_policy(base_delay=4.0)
        Client(s.url, retry=policy).request("GET", "/x")
        self.assertEqual(slept, [2.0])

    def test_gives_up_after_max_attempts_with_the_problem(self) -> None:
        s = self.server([PROBLEM_429] * 3)
        policy, slept = recording_policy(max_attempts=3)
        with self.assertRaises(ApiError) as cm:
            Client(s.url, retry=policy).request("GET", "/x")
        self.assertEqual((cm.exception.status, cm.exception.code), (429, "rate_limited"))
        self.assertEqual(len(s.requests), 3)
        self.assertEqual(slept, [3.0, 3.0])

    def test_retry_after_longer_than_allowed_is_not_waited(self) -> None:
        s = self.server([(503, {"Retry-After": "120"}, b"")])
        policy, slept = recording_policy(max_retry_after=60)
        with self.assertRaises(ApiError):
            Client(s.url, retry=policy).request("GET", "/x")
        self.assertEqual((len(s.requests), slept), (1, []))

    def test_other_errors_are_not_retried(self) -> None:
        s = self.server([(400, {"Content-Type": "application/problem+json"}, b'{"code":"invalid","detail":"bad","status":400}')])
        policy, slept = recording_policy()
        with self.assertRaises(ApiError) as cm:
            Client(s.url, retry=policy).request("POST", "/x", {})
        self.assertEqual((cm.exception.code, len(s.requests), slept), ("invalid", 1, []))

    def test_post_without_idempotency_is_never_sent_twice_by_accident(self) -> None:
        # Every POST gets a key, so it may be retried; a PATCH (not idempotent, no key) may not.
        s = self.server([(503, {}, b""), (200, {}, b"{}")])
        policy, slept = recording_policy()
        with self.assertRaises(ApiError):
            Client(s.url, retry=policy).request("PATCH", "/x", {})
        self.assertEqual(len(s.requests), 1)

    def test_transport_errors_are_retried(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        policy, slept = recording_policy(max_attempts=3)
        attempts: List[Attempt] = []
        with self.assertRaises(OSError):
            Client("http://127.0.0.1:%d" % port, retry=policy, on_attempt=attempts.append).request("GET", "/x")
        self.assertEqual(len(attempts), 3)
        self.assertTrue(all(a.status is None and a.error is not None for a in attempts))
        self.assertEqual(slept, [0.1, 0.2])  # full jitter: rand 0.5 of 0.2, then of 0.4

    def test_each_attempt_is_signed_anew(self) -> None:
        s = self.server([(503, {"Retry-After": "0"}, b""), (200, {}, b"{}")])
        policy, _ = recording_policy()
        key = SigningKey("rk_1", b"s" * 32)
        Client(s.url, api_key="k", signing_key=key, retry=policy).request("POST", "/v1/x", {"a": 1})
        (_, _, h1, b1), (_, _, h2, b2) = s.requests
        self.assertEqual(b1, b'{"a":1}')
        self.assertEqual(h1["idempotency-key"], h2["idempotency-key"])
        self.assertNotEqual(h1["signature-input"], h2["signature-input"])  # a new nonce
        self.assertIn('"content-digest" "content-type");created=', h1["signature-input"])
        self.assertEqual(h1["x-api-key"], "k")


class Credentials(unittest.TestCase):
    def test_switch_and_override(self) -> None:
        s = Scripted([])
        try:
            c = Client(s.url, api_key="old")
            c.request("GET", "/a")
            c.set_api_key("new")
            c.request("GET", "/b")
            c.request("GET", "/c", credentials={"bearer_token": "tok"})
            c.set_bearer_token("t2")
            c.request("GET", "/d", query={"x": "1"})
        finally:
            s.close()
        got = [(h.get("x-api-key"), h.get("authorization")) for _, _, h, _ in s.requests]
        self.assertEqual(got, [("old", None), ("new", None), (None, "Bearer tok"), (None, "Bearer t2")])
        self.assertEqual(s.requests[3][1], "/d?x=1")

    def test_api_key_id(self) -> None:
        self.assertEqual(api_key_id("nops_ak01jq3v6y7m9k2x8p4t5w0zcd1h_" + "a" * 43), "ak01jq3v6y7m9k2x8p4t5w0zcd1h")
        with self.assertRaises(ValueError):
            api_key_id("sk_live_x")


class Rotation(unittest.TestCase):
    OLD = "nops_ak01jq3v6y7m9k2x8p4t5w0zcd1h_" + "a" * 43
    NEW = "nops_ak01jq3v6y7m9k2x8p4t5w0zcd1h_" + "b" * 43

    def rotate_with(self, whoami: Answer) -> Tuple[Client, Scripted, Agent]:
        rotated = json.dumps({"id": "ak01jq3v6y7m9k2x8p4t5w0zcd1h", "secret": self.NEW}).encode()
        s = Scripted([(200, {"Content-Type": "application/json"}, rotated), whoami])
        self.addCleanup(s.close)
        c = Client(s.url, api_key=self.OLD, retry=RetryPolicy(max_attempts=1))
        a = Agent(c, "a", "1.0.0", [Capability("x", lambda inv: None)])
        self.addCleanup(a.server.stop)
        return c, s, a

    def test_refused_new_secret_switches_back(self) -> None:
        c, s, a = self.rotate_with((401, {"Content-Type": "application/problem+json"}, b'{"code":"unauthenticated","status":401}'))
        with self.assertRaises(RotationError):
            a.rotate_api_key("1h")
        self.assertEqual(c.credentials()["api_key"], self.OLD)
        (m1, p1, h1, b1), (m2, p2, h2, _) = s.requests
        self.assertEqual((m1, p1, json.loads(b1), h1["x-api-key"]), ("POST", "/v1/api-keys/ak01jq3v6y7m9k2x8p4t5w0zcd1h/rotate", {"grace_period": "1h"}, self.OLD))
        self.assertEqual((m2, p2, h2["x-api-key"]), ("GET", "/v1/auth/whoami", self.NEW))

    def test_new_secret_of_another_key_switches_back(self) -> None:
        c, _, a = self.rotate_with((200, {"Content-Type": "application/json"}, b'{"subject":"ak_other"}'))
        with self.assertRaises(RotationError):
            a.rotate_api_key("1h")
        self.assertEqual(c.credentials()["api_key"], self.OLD)

    def test_confirmed(self) -> None:
        c, _, a = self.rotate_with((200, {"Content-Type": "application/json"}, b'{"subject":"ak01jq3v6y7m9k2x8p4t5w0zcd1h"}'))
        self.assertEqual(a.rotate_api_key("1h"), self.NEW)
        self.assertEqual(c.credentials()["api_key"], self.NEW)


class RetryAfterParsing(unittest.TestCase):
    def test_forms(self) -> None:
        self.assertEqual(parse_retry_after("7"), 7.0)
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0), 10.0)
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0), 0.0)
        for bad in (None, "", "-1", "soon", "1.5"):
            self.assertIsNone(parse_retry_after(bad), bad)

    def test_full_jitter_bounds(self) -> None:
        lo = RetryPolicy(rand=lambda: 0.0, base_delay=1, max_delay=5)
        hi = RetryPolicy(rand=lambda: 0.999999, base_delay=1, max_delay=5)
        self.assertEqual([lo.backoff(n) for n in (1, 2, 3, 4, 5)], [0, 0, 0, 0, 0])
        self.assertEqual([round(hi.backoff(n), 3) for n in (1, 2, 3, 4, 5)], [1, 2, 4, 5, 5])

    def test_delay_header_lookup_is_case_insensitive(self) -> None:
        p = RetryPolicy(rand=lambda: 0.0)
        self.assertEqual(p.delay(1, {"retry-after": "2"}), 2.0)
        self.assertIsNone(RetryPolicy(max_retry_after=1).delay(1, {"Retry-After": "2"}))
        self.assertEqual(p.delay(1, None), 0.0)


if __name__ == "__main__":
    unittest.main()


class KeepAlive(unittest.TestCase):
    """Connection reuse against an HTTP/1.1 server that counts the connections it accepts."""

    def start(self, close_after_each: bool) -> Tuple[ThreadingHTTPServer, List[int], str]:
        conns: List[int] = []
        requests: List[str] = []

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                return

            def setup(self) -> None:
                super().setup()
                conns.append(1)

            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                requests.append(self.command)
                out = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                # Closing without saying so (no "Connection: close"): what a server closing an
                # idle kept-alive connection looks like to the client's next request.
                self.close_connection = close_after_each

            do_GET = do_POST = do_PATCH = _any

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        return httpd, conns, "http://127.0.0.1:%d" % httpd.server_address[1]

    def test_requests_reuse_one_connection_per_thread(self) -> None:
        _, conns, url = self.start(close_after_each=False)
        c = Client(url, api_key="nops_ak1_s")
        self.addCleanup(c.close)
        for _ in range(5):
            c.request("GET", "/v1/agents")
        c.request("POST", "/v1/agents", {"name": "a"})
        self.assertEqual(c.connections_opened, 1)
        self.assertEqual(len(conns), 1)

        # Another thread gets its own connection; the first one stays in use.
        def other() -> None:
            c.request("GET", "/v1/agents")
            c.close()

        t = threading.Thread(target=other)
        t.start()
        t.join()
        c.request("GET", "/v1/agents")
        self.assertEqual(c.connections_opened, 2)
        self.assertEqual(len(conns), 2)

    def test_a_connection_closed_while_idle_is_replaced_once(self) -> None:
        _, conns, url = self.start(close_after_each=True)
        attempts: List[Attempt] = []
        c = Client(url, api_key="nops_ak1_s", on_attempt=attempts.append)
        self.addCleanup(c.close)
        for _ in range(3):
            self.assertEqual(c.request("GET", "/v1/agents").status, 200)
        self.assertEqual(c.request("POST", "/v1/agents", {"name": "a"}).status, 200)  # has an Idempotency-Key
        # Each request after the first found its connection closed and went on a new one, within
        # the same attempt (no retry of the policy was used).
        self.assertEqual(len(conns), 4)
        self.assertEqual([a.number for a in attempts], [1, 1, 1, 1])

    def test_a_request_that_cannot_be_repeated_is_not_sent_twice(self) -> None:
        _, conns, url = self.start(close_after_each=True)
        c = Client(url, api_key="nops_ak1_s", retry=RetryPolicy(max_attempts=1))
        self.addCleanup(c.close)
        c.request("GET", "/v1/agents")
        # PATCH without an Idempotency-Key is neither idempotent nor keyed: the stale connection's
        # failure is the answer, not a silent second send.
        with self.assertRaises((OSError, http.client.HTTPException)):
            c.request("PATCH", "/v1/agents/x", {"a": 1})
        self.assertEqual(len(conns), 1)
