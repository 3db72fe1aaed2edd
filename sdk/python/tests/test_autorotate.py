"""Unit tests of the automatic API key rotation: grace, deadline parsing, which answers count,
one rotation at a time."""

from __future__ import annotations

import datetime
import json
import unittest
from typing import Any, Dict, List

from nops_sdk import Agent, Capability, Client
from nops_sdk.agent import MIN_AUTO_GRACE, _parse_rfc3339, auto_grace
from nops_sdk.client import ROTATE_BY_HEADER, Response

from .test_client import Scripted

OLD = "nops_ak01jq3v6y7m9k2x8p4t5w0zcd1h_oldsecret"
BY = "2099-01-01T00:00:00Z"


def echo(inv: Any) -> Dict[str, Any]:
    return {}


class AutoGrace(unittest.TestCase):
    def test_grace(self) -> None:
        for configured, left, want in [(3600, 86400, 3600), (3600, 3600, 1800), (3600, 4, MIN_AUTO_GRACE),
                                       (3600, -60, MIN_AUTO_GRACE), (2, 3600, 2), (2, 1, 2)]:
            self.assertEqual(auto_grace(configured, left), want, (configured, left))

    def test_parse(self) -> None:
        self.assertEqual(_parse_rfc3339("2026-11-27T09:00:00Z"), datetime.datetime(2026, 11, 27, 9, tzinfo=datetime.timezone.utc))
        self.assertEqual(_parse_rfc3339("2026-11-27T11:00:00+02:00").astimezone(datetime.timezone.utc).hour, 9)
        for bad in ["", "soon", "2026-11-27", "2026-11-27T09:00:00", "2026-13-01T00:00:00Z"]:
            with self.assertRaises(ValueError, msg=bad):
                _parse_rfc3339(bad)


class Notice(unittest.TestCase):
    def test_only_the_current_api_key(self) -> None:
        c = Client("http://127.0.0.1:1", api_key=OLD)
        seen: List[str] = []
        c.on_rotate_by = seen.append
        c._notice_rotate_by(Response(200, {}, b""), OLD)
        self.assertEqual(seen, [], "no header, nothing passed on")
        c._notice_rotate_by(Response(200, {ROTATE_BY_HEADER: BY}, b""), OLD)
        self.assertEqual(seen, [BY])
        c.set_api_key("nops_ak01jq3v6y7m9k2x8p4t5w0zcd1h_new")
        c._notice_rotate_by(Response(200, {ROTATE_BY_HEADER: BY}, b""), OLD)
        self.assertEqual(seen, [BY], "an answer to a request sent with a replaced key was passed on")
        b = Client("http://127.0.0.1:1", bearer_token="tok")
        b.on_rotate_by = seen.append
        b._notice_rotate_by(Response(200, {ROTATE_BY_HEADER: BY}, b""), None)
        self.assertEqual(seen, [BY], "a deadline was passed on for a bearer token")

    def test_disabled(self) -> None:
        c = Client("http://127.0.0.1:1", api_key=OLD)
        Agent(c, "a", "1.0.0", [Capability("e", echo)], auto_rotate=False)
        self.assertIsNone(c.on_rotate_by)
        Agent(c, "a", "1.0.0", [Capability("e", echo)])
        self.assertIsNotNone(c.on_rotate_by)


class SingleFlight(unittest.TestCase):
    def test_one_rotation_then_wait_after_a_failure(self) -> None:
        refused = (403, {"Content-Type": "application/problem+json"}, json.dumps({"status": 403, "code": "forbidden"}).encode())
        s = Scripted([refused] * 10)
        self.addCleanup(s.close)
        c = Client(s.url, api_key=OLD)
        a = Agent(c, "a", "1.0.0", [Capability("e", echo)])
        events: List[Dict[str, Any]] = []
        a.on_key_rotation.append(events.append)
        got: List[str] = []
        a.on_key_rotated = got.append
        for _ in range(20):
            a._rotate_by(BY)
        a.wait_rotation()
        a._rotate_by(BY)  # right after the failure: no new attempt
        a.wait_rotation()
        a._rotate_by("not a time")
        a.wait_rotation()
        rotations = [r for r in s.requests if r[1].endswith("/rotate")]
        self.assertEqual(len(rotations), 1, s.requests)
        self.assertEqual(len(events), 1)
        self.assertIsNotNone(events[0]["error"])
        self.assertEqual(events[0]["key_id"], "ak01jq3v6y7m9k2x8p4t5w0zcd1h")
        self.assertEqual(got, [])
        self.assertEqual(c.credentials()["api_key"], OLD)


if __name__ == "__main__":
    unittest.main()
