#!/usr/bin/env python3
"""Example NOPS agent in Python: serves the capability ``text.reverse`` until Ctrl-C.

    NOPS_URL=http://127.0.0.1:8080 NOPS_API_KEY=nops_… python3 examples/python-agent/agent.py

It uses the SDK straight from the repository (sdk/python is put on sys.path), so nothing needs
installing; with the SDK installed (``pip install ./sdk/python``) the same file works too. It
starts an invocation server on 127.0.0.1 (a free port), registers itself in the tenant of the
API key (taking over an earlier registration of the same name), heartbeats with its load figures,
and on Ctrl-C (SIGINT) or SIGTERM deregisters and exits 0.

Environment:
  NOPS_URL                 the kernel (default http://127.0.0.1:8080)
  NOPS_API_KEY             an API key of the tenant (role OPERATOR or ADMIN)
  NOPS_AGENT_NAME          the agent's name (default py-reverse)
  NOPS_AGENT_HOST          the address to listen on (default 127.0.0.1)
  NOPS_AGENT_PORT          the port (default 0: any free port)
  NOPS_AGENT_ENDPOINT      the URL the kernel reaches the agent at (default http://HOST:PORT)
  NOPS_HEARTBEAT_INTERVAL  seconds between heartbeats (default 10)
  NOPS_REQUEST_KEY_ID, NOPS_REQUEST_KEY_SECRET
                           an hmac-sha256 request key: sign every request (RFC 9421)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Dict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk", "python"))

from nops_sdk import Agent, Capability, Client, Invocation, SigningKey  # noqa: E402

NAME = os.environ.get("NOPS_AGENT_NAME", "py-reverse")

INPUT_SCHEMA: Dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {"text": {"type": "string", "maxLength": 10000}},
}


def reverse(inv: Invocation) -> Dict[str, Any]:
    """The capability: reverse the text."""
    text: str = inv.input["text"]
    return {"reversed": text[::-1], "agent": NAME, "invocation": inv.id}


def main() -> int:
    api_key = os.environ.get("NOPS_API_KEY")
    if not api_key:
        print("set NOPS_API_KEY to an API key of your tenant (see docs/sdk-python.md)", file=sys.stderr)
        return 2
    signing_key = None
    if os.environ.get("NOPS_REQUEST_KEY_ID"):
        signing_key = SigningKey.from_api(os.environ["NOPS_REQUEST_KEY_ID"], os.environ["NOPS_REQUEST_KEY_SECRET"])
    client = Client(os.environ.get("NOPS_URL", "http://127.0.0.1:8080"), api_key=api_key, signing_key=signing_key)
    agent = Agent(
        client, name=NAME, version="1.0.0",
        capabilities=[Capability("text.reverse", reverse, description="Reverse a text", input_schema=INPUT_SCHEMA)],
        host=os.environ.get("NOPS_AGENT_HOST", "127.0.0.1"),
        port=int(os.environ.get("NOPS_AGENT_PORT", "0")),
        endpoint=os.environ.get("NOPS_AGENT_ENDPOINT") or None,
        labels={"lang": "python"},
        heartbeat_interval=float(os.environ.get("NOPS_HEARTBEAT_INTERVAL", "10")),
    )
    agent.on_heartbeat_error.append(lambda e: print("heartbeat failed: %s" % e, file=sys.stderr, flush=True))

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    registered = agent.start()
    print("ready: agent %s at %s serving text.reverse (Ctrl-C to stop)" % (registered["id"], agent.spec()["endpoint"]), flush=True)
    stop.wait()
    agent_id = agent.agent_id
    agent.stop()
    print("deregistered: agent %s" % agent_id, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
