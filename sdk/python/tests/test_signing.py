"""RFC 9421 signing: the RFC's Appendix B vectors (the very files the kernel's Go tests read), the
worked example of docs/request-signing.md, and the shape of the SDK's own signatures."""

from __future__ import annotations

import base64
import os
import re
import unittest
from typing import Dict, List, Tuple

from nops_sdk import signing

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
VECTORS = os.path.join(REPO, "internal", "reqsig", "testdata", "rfc9421")


def read_vector(name: str) -> bytes:
    with open(os.path.join(VECTORS, name), "rb") as f:
        return f.read()


def parse_request(raw: bytes) -> Tuple[str, str, Dict[str, str], bytes]:
    """Parse a signed request of Appendix B: method, URL (http://Host + target), headers, body."""
    head, _, body = raw.partition(b"\n\n")
    lines = head.decode("ascii").split("\n")
    method, target, _ = lines[0].split(" ")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return method, "http://" + headers["Host"] + target, headers, body.rstrip(b"\n")


def split_signature(headers: Dict[str, str]) -> Tuple[str, List[str], str, str]:
    """Return the label, covered components, @signature-params value and signature (base64)."""
    label, _, params = headers["Signature-Input"].partition("=")
    inner = params[1:params.index(")")]
    components = re.findall(r'"([^"]*)"', inner)
    m = re.fullmatch(re.escape(label) + r"=:([A-Za-z0-9+/=]+):", headers["Signature"])
    assert m is not None
    return label, components, params, m.group(1)


class RFC9421AppendixB(unittest.TestCase):
    def test_b25_hmac_sha256(self) -> None:
        method, url, headers, body = parse_request(read_vector("b25_request_signed.txt"))
        _, components, params, sig = split_signature(headers)
        base = signing.signature_base(method, url, headers, components, params)
        self.assertEqual(base, read_vector("b25_sigbase.txt").decode())
        secret = base64.b64decode(read_vector("test-shared-secret"))
        self.assertEqual(signing.hmac_sha256(secret, base), sig)
        # Any covered component changed: the signature no longer matches.
        for name, value in (("Date", "Tue, 20 Apr 2021 02:07:56 GMT"), ("Content-Type", "application/xml")):
            altered = dict(headers, **{name: value})
            self.assertNotEqual(signing.hmac_sha256(secret, signing.signature_base(method, url, altered, components, params)), sig)
        other = signing.signature_base(method, url.replace("example.com", "example.org"), headers, components, params)
        self.assertNotEqual(signing.hmac_sha256(secret, other), sig)
        self.assertNotEqual(signing.hmac_sha256(secret[:-1] + b"\0", base), sig)

    def test_b26_signature_base(self) -> None:
        # Ed25519 is not in the standard library: the base is checked, the signature is not.
        method, url, headers, _ = parse_request(read_vector("b26_request_signed.txt"))
        _, components, params, _ = split_signature(headers)
        self.assertEqual(signing.signature_base(method, url, headers, components, params), read_vector("b26_sigbase.txt").decode())

    def test_content_digest_of_the_rfc_request(self) -> None:
        # RFC 9530's sha-256 of {"hello": "world"}, as in RFC 9421 B.2.
        _, _, _, body = parse_request(read_vector("b25_request_signed.txt"))
        self.assertEqual(signing.content_digest(body), "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:")


class WorkedExample(unittest.TestCase):
    """docs/request-signing.md, "Worked example: hmac-sha256" (also checked by the kernel's
    internal/reqsig/docs_test.go)."""

    def test_hmac_example(self) -> None:
        key = signing.SigningKey.from_api("rk_01jq3v6y7m9k2x8p4t5w0zcd1h", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        headers = {"Content-Type": "application/json"}
        signing.sign("POST", "https://nops.example.com/v1/invoke/echo?mode=fast", headers, b'{"message":"hello"}', key,
                     created=1773500966, nonce="q3Jx0dQvXb2yR7mLkP9sEw")
        self.assertEqual(headers["Content-Digest"], "sha-256=:my1Dr/v0mjZwKN8uFBT4TA4JmsmMPVSoqAFX/XdxryU=:")
        self.assertEqual(headers["Signature-Input"], 'nops=("@method" "@target-uri" "content-digest" "content-type");created=1773500966;keyid="rk_01jq3v6y7m9k2x8p4t5w0zcd1h";nonce="q3Jx0dQvXb2yR7mLkP9sEw";tag="nops-request"')
        self.assertEqual(headers["Signature"], "nops=:c1Bim4WFtWSCIyOFTiqUM7oWzuUwme9ueyvvPnfxXnM=:")

    def test_the_doc_states_the_same_values(self) -> None:
        with open(os.path.join(REPO, "docs", "request-signing.md"), encoding="utf-8") as f:
            doc = f.read()
        self.assertIn("Signature: nops=:c1Bim4WFtWSCIyOFTiqUM7oWzuUwme9ueyvvPnfxXnM=:", doc)


class Sign(unittest.TestCase):
    key = signing.SigningKey(key_id="rk_test", secret=b"k" * 32)

    def test_get_without_body_covers_no_digest(self) -> None:
        h: Dict[str, str] = {}
        signing.sign("GET", "http://127.0.0.1:8080/v1/agents?limit=5", h, None, self.key, created=10, nonce="n")
        self.assertNotIn("Content-Digest", h)
        self.assertEqual(h["Signature-Input"], 'nops=("@method" "@target-uri");created=10;keyid="rk_test";nonce="n";tag="nops-request"')
        base = '"@method": GET\n"@target-uri": http://127.0.0.1:8080/v1/agents?limit=5\n"@signature-params": ("@method" "@target-uri");created=10;keyid="rk_test";nonce="n";tag="nops-request"'
        self.assertEqual(h["Signature"], "nops=:%s:" % signing.hmac_sha256(self.key.secret, base))

    def test_fresh_nonce_each_time(self) -> None:
        a: Dict[str, str] = {}
        b: Dict[str, str] = {}
        signing.sign("GET", "http://h/x", a, None, self.key, created=1)
        signing.sign("GET", "http://h/x", b, None, self.key, created=1)
        self.assertNotEqual(a["Signature-Input"], b["Signature-Input"])
        self.assertNotEqual(a["Signature"], b["Signature"])

    def test_target_uri(self) -> None:
        cases = {
            "HTTP://Example.COM:80/a%2Fb?x=1": "http://example.com/a%2Fb?x=1",
            "https://example.com:443": "https://example.com/",
            "https://example.com:8443/p": "https://example.com:8443/p",
            "http://[::1]:9000/v1": "http://[::1]:9000/v1",
        }
        for url, want in cases.items():
            self.assertEqual(signing.target_uri(url), want, url)

    def test_refusals(self) -> None:
        with self.assertRaises(signing.SigningError):
            signing.signature_base("GET", "http://h/", {}, ["x-missing"], "()")
        with self.assertRaises(signing.SigningError):
            signing.signature_base("GET", "http://h/", {}, ["@method", "@method"], "()")
        with self.assertRaises(signing.SigningError):
            signing.signature_base("GET", "http://h/", {}, ["@request-target"], "()")
        with self.assertRaises(signing.SigningError):
            signing.SigningKey.from_api("rk_x", "not base64!")
        with self.assertRaises(signing.SigningError):
            signing.signature_params(["@method"], {"keyid": "bad\nvalue"})


if __name__ == "__main__":
    unittest.main()
