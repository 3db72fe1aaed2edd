package audit_test

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
)

// goldenRecord and goldenCanonical are the test vector an outside auditor can check an
// independent implementation of the documented encoding against.
var goldenRecord = audit.Record{
	Seq:  42,
	Tree: "ten_01JTESTTENANT",
	Time: time.Date(2025, 1, 2, 3, 4, 5, 600000000, time.FixedZone("CET", 3600)),
	Actor: audit.Actor{
		Principal: "usr_01JADMIN",
		IP:        "2001:db8::1",
		RequestID: "req-1",
	},
	Action:        "agent.create",
	Resource:      "agents/agt_01JAGENT",
	Decision:      audit.Decision{Allowed: false, Reason: "role VIEWER lacks agents:write"},
	RequestDigest: "sha256:" + strings.Repeat("ab", 32),
}

const goldenCanonical = `{"v":1,"tree":"ten_01JTESTTENANT","seq":42,"time":"2025-01-02T02:04:05.600000000Z",` +
	`"actor":{"principal":"usr_01JADMIN","ip":"2001:db8::1","request_id":"req-1"},` +
	`"action":"agent.create","resource":"agents/agt_01JAGENT",` +
	`"decision":{"allowed":false,"reason":"role VIEWER lacks agents:write"},` +
	`"request_digest":"sha256:abababababababababababababababababababababababababababababababab"}`

func TestCanonicalGolden(t *testing.T) {
	got := goldenRecord.Canonical()
	if string(got) != goldenCanonical {
		t.Fatalf("Canonical =\n%s\nwant\n%s", got, goldenCanonical)
	}
	// The leaf hash is the RFC 6962 one, computed here without tlog.
	want := sha256.Sum256(append([]byte{0}, goldenCanonical...))
	if h := tlog.RecordHash(got); h != tlog.Hash(want) {
		t.Fatalf("leaf hash %x, want %x", h, want)
	}
	r, err := audit.ParseCanonical([]byte(goldenCanonical))
	if err != nil {
		t.Fatal(err)
	}
	wantRec := goldenRecord
	wantRec.Time = wantRec.Time.UTC()
	if diff := cmp.Diff(wantRec, r); diff != "" {
		t.Fatalf("ParseCanonical (-want +got):\n%s", diff)
	}
}

func TestCanonicalStringEscaping(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "abc", `"abc"`},
		{"quote and backslash", `a"b\c`, `"a\"b\\c"`},
		{"short escapes", "\b\t\n\f\r", `"\b\t\n\f\r"`},
		{"other controls lowercase hex", "\x00\x01\x1f", `"\u0000\u0001\u001f"`},
		{"html characters raw", "<a&b>/", `"<a&b>/"`},
		{"DEL raw", "\x7f", "\"\x7f\""},
		{"non-ASCII raw", "é€😀", `"é€😀"`},
		{"line separators raw", "\u2028\u2029", "\"\u2028\u2029\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sampleRecord(testTree, 1)
			r.Decision.Reason = tt.in
			got := string(r.Canonical())
			want := `"reason":` + tt.want + `}`
			if !strings.Contains(got, want) {
				t.Fatalf("Canonical = %s, want it to contain %s", got, want)
			}
			back, err := audit.ParseCanonical([]byte(got))
			if err != nil {
				t.Fatalf("ParseCanonical: %v", err)
			}
			if back.Decision.Reason != tt.in {
				t.Fatalf("round trip reason = %q, want %q", back.Decision.Reason, tt.in)
			}
		})
	}
}

func TestCanonicalInvalidUTF8BecomesReplacement(t *testing.T) {
	r := sampleRecord(testTree, 1)
	r.Resource = "a\xffb"
	if !bytes.Contains(r.Canonical(), []byte(`"resource":"a`+"\uFFFD"+`b"`)) {
		t.Fatalf("Canonical = %s", r.Canonical())
	}
	if err := r.Validate(); !errs.Is(err, errs.Invalid) {
		t.Fatalf("Validate = %v, want invalid", err)
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	for i := range 20 {
		r := sampleRecord(testTree, i)
		r.Seq = int64(i) * 1_000_003
		b := r.Canonical()
		got, err := audit.ParseCanonical(b)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if diff := cmp.Diff(r, got); diff != "" {
			t.Fatalf("record %d (-want +got):\n%s", i, diff)
		}
		if !bytes.Equal(got.Canonical(), b) {
			t.Fatalf("record %d: re-encoding differs", i)
		}
	}
}

func TestCanonicalLargestRecordFits(t *testing.T) {
	ctl := func(n int) string { return strings.Repeat("\x01", n) }
	r := audit.Record{
		Seq:           1<<63 - 1,
		Tree:          strings.Repeat("t", 128),
		Time:          time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		Actor:         audit.Actor{Principal: ctl(256), IP: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", RequestID: ctl(128)},
		Action:        strings.Repeat("a", 64),
		Resource:      ctl(512),
		Decision:      audit.Decision{Allowed: true, Reason: ctl(1024)},
		RequestDigest: audit.DigestRequest(nil),
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	b := r.Canonical()
	if len(b) > audit.MaxCanonicalSize {
		t.Fatalf("largest valid record encodes to %d bytes, more than %d", len(b), audit.MaxCanonicalSize)
	}
	if _, err := audit.ParseCanonical(b); err != nil {
		t.Fatal(err)
	}
}

func TestParseCanonicalRejects(t *testing.T) {
	g := goldenCanonical
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"null", "null"},
		{"array", "[]"},
		{"space after colon", strings.Replace(g, `"v":1`, `"v": 1`, 1)},
		{"trailing newline", g + "\n"},
		{"trailing data", g + "{}"},
		{"leading space", " " + g},
		{"members reordered", strings.Replace(g, `{"v":1,"tree":"ten_01JTESTTENANT",`, `{"tree":"ten_01JTESTTENANT","v":1,`, 1)},
		{"unknown member", strings.Replace(g, `{"v":1,`, `{"v":1,"x":1,`, 1)},
		{"unknown nested member", strings.Replace(g, `"request_id":"req-1"}`, `"request_id":"req-1","x":""}`, 1)},
		{"missing member", strings.Replace(g, `,"resource":"agents/agt_01JAGENT"`, ``, 1)},
		{"duplicate member", strings.Replace(g, `{"v":1,`, `{"v":1,"v":1,`, 1)},
		{"member name case", strings.Replace(g, `"tree":`, `"Tree":`, 1)},
		{"escaped letter", strings.Replace(g, `"req-1"`, `"req\u002d1"`, 1)},
		{"escaped slash", strings.Replace(g, `agents/agt`, `agents\/agt`, 1)},
		{"uppercase unicode escape", strings.Replace(g, `"req-1"`, `"req\u001F"`, 1)},
		{"unicode escape for short form", strings.Replace(g, `"req-1"`, `"req\u000a"`, 1)},
		{"seq leading zero", strings.Replace(g, `"seq":42`, `"seq":042`, 1)},
		{"seq float", strings.Replace(g, `"seq":42`, `"seq":42.0`, 1)},
		{"seq exponent", strings.Replace(g, `"seq":42`, `"seq":4.2e1`, 1)},
		{"seq negative", strings.Replace(g, `"seq":42`, `"seq":-42`, 1)},
		{"seq string", strings.Replace(g, `"seq":42`, `"seq":"42"`, 1)},
		{"time with offset", strings.Replace(g, `02:04:05.600000000Z`, `03:04:05.600000000+01:00`, 1)},
		{"time short fraction", strings.Replace(g, `05.600000000Z`, `05.6Z`, 1)},
		{"time no fraction", strings.Replace(g, `05.600000000Z`, `05Z`, 1)},
		{"time lowercase z", strings.Replace(g, `600000000Z`, `600000000z`, 1)},
		{"time null", strings.Replace(g, `"2025-01-02T02:04:05.600000000Z"`, `null`, 1)},
		{"version 2", strings.Replace(g, `"v":1`, `"v":2`, 1)},
		{"bool as string", strings.Replace(g, `"allowed":false`, `"allowed":"false"`, 1)},
		{"non-canonical ip", strings.Replace(g, `2001:db8::1`, `2001:DB8::1`, 1)},
		{"bad ip", strings.Replace(g, `2001:db8::1`, `not-an-ip`, 1)},
		{"bad digest", strings.Replace(g, `sha256:abab`, `sha256:ABAB`, 1)},
		{"bad tree", strings.Replace(g, `ten_01JTESTTENANT`, `ten/01`, 1)},
		{"bad action", strings.Replace(g, `agent.create`, `Agent Create`, 1)},
		{"invalid utf-8", strings.Replace(g, `req-1`, "req\xff1", 1)},
		{"raw control character", strings.Replace(g, `req-1`, "req\x011", 1)},
		{"too long", g[:len(g)-1] + strings.Repeat(" ", audit.MaxCanonicalSize) + "}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.in == g {
				t.Fatal("test case does not change the input")
			}
			if _, err := audit.ParseCanonical([]byte(tt.in)); !errs.Is(err, errs.Invalid) {
				t.Fatalf("ParseCanonical(%q) = %v, want an invalid error", tt.in, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*audit.Record)
		field  string
	}{
		{"negative seq", func(r *audit.Record) { r.Seq = -1 }, "seq"},
		{"empty tree", func(r *audit.Record) { r.Tree = "" }, "tree"},
		{"tree with slash", func(r *audit.Record) { r.Tree = "a/b" }, "tree"},
		{"tree with dot", func(r *audit.Record) { r.Tree = "a.b" }, "tree"},
		{"tree too long", func(r *audit.Record) { r.Tree = strings.Repeat("t", 129) }, "tree"},
		{"zero time", func(r *audit.Record) { r.Time = time.Time{} }, "time"},
		{"year 10000", func(r *audit.Record) { r.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "time"},
		{"year 0", func(r *audit.Record) { r.Time = time.Date(0, 1, 1, 0, 0, 0, 1, time.UTC) }, "time"},
		{"empty action", func(r *audit.Record) { r.Action = "" }, "action"},
		{"uppercase action", func(r *audit.Record) { r.Action = "Agent.create" }, "action"},
		{"long action", func(r *audit.Record) { r.Action = strings.Repeat("a", 65) }, "action"},
		{"long principal", func(r *audit.Record) { r.Actor.Principal = strings.Repeat("p", 257) }, "actor.principal"},
		{"principal not utf-8", func(r *audit.Record) { r.Actor.Principal = "\xc3" }, "actor.principal"},
		{"ip with port", func(r *audit.Record) { r.Actor.IP = "192.0.2.1:80" }, "actor.ip"},
		{"ip not canonical", func(r *audit.Record) { r.Actor.IP = "::ffff:c000:0201" }, "actor.ip"},
		{"long request id", func(r *audit.Record) { r.Actor.RequestID = strings.Repeat("r", 129) }, "actor.request_id"},
		{"long resource", func(r *audit.Record) { r.Resource = strings.Repeat("r", 513) }, "resource"},
		{"long reason", func(r *audit.Record) { r.Decision.Reason = strings.Repeat("r", 1025) }, "decision.reason"},
		{"digest without algorithm", func(r *audit.Record) { r.RequestDigest = strings.Repeat("a", 64) }, "request_digest"},
		{"digest too short", func(r *audit.Record) { r.RequestDigest = "sha256:abc" }, "request_digest"},
		{"digest not hex", func(r *audit.Record) { r.RequestDigest = "sha256:" + strings.Repeat("g", 64) }, "request_digest"},
		{"secret as digest", func(r *audit.Record) { r.RequestDigest = "nops_key_secret" }, "request_digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sampleRecord(testTree, 1)
			tt.mutate(&r)
			e := errs.As(r.Validate())
			if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != tt.field {
				t.Fatalf("Validate = %v, want an invalid error naming %s", e, tt.field)
			}
		})
	}
	t.Run("valid edge values", func(t *testing.T) {
		r := sampleRecord(audit.GlobalTree, 1)
		r.Actor = audit.Actor{}
		r.Resource, r.Decision.Reason, r.RequestDigest = "", "", ""
		r.Actor.IP = "::1"
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDigestRequest(t *testing.T) {
	// SHA-256 of the empty string.
	const want = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if got := audit.DigestRequest(nil); got != want {
		t.Fatalf("DigestRequest(nil) = %s, want %s", got, want)
	}
}

func TestTreeFor(t *testing.T) {
	if got := audit.TreeFor(""); got != audit.GlobalTree {
		t.Fatalf("TreeFor(\"\") = %s", got)
	}
	if got := audit.TreeFor("ten_1"); got != "ten_1" {
		t.Fatalf("TreeFor(ten_1) = %s", got)
	}
}
