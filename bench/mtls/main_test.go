package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	tests := []struct {
		args     []string
		requests string
		wantErr  string
	}{
		{args: nil, requests: "healthz,whoami"},
		{args: []string{"-requests", "whoami, healthz,whoami"}, requests: "whoami,healthz"},
		{args: []string{"-requests", ""}, requests: ""},
		{args: []string{"-requests", "bogus"}, wantErr: `unknown request "bogus"`},
		{args: []string{"-duration", "0s"}, wantErr: "-duration"},
		{args: []string{"-rounds", "0"}, wantErr: "-rounds"},
		{args: []string{"-concurrency", "0"}, wantErr: "-concurrency"},
		{args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, err := parse(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parse(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(o.requests, ","); got != tt.requests {
				t.Errorf("requests = %q, want %q", got, tt.requests)
			}
		})
	}
	if _, err := parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

func TestPct(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	for _, tt := range []struct {
		p    int
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0, 1}} {
		if got := pct(s, tt.p); got != tt.want {
			t.Errorf("pct(1..100, %d) = %d, want %d", tt.p, got, tt.want)
		}
	}
	if pct(nil, 50) != 0 {
		t.Error("pct(nil) is not 0")
	}
}

// TestRunSmoke runs every phase for a moment against a real kernel so that the program keeps
// compiling and working: it checks that every table comes out and that no operation failed
// (the handshakes over both listeners, the SVID issuance), never how fast anything was.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kernel")
	}
	o, err := parse([]string{"-duration", "150ms", "-warmup", "20ms", "-concurrency", "2", "-svid-concurrency", "2", "-rounds", "1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, o, &out, io.Discard); err != nil {
		t.Fatalf("run: %v", err)
	}
	report := out.String()
	for _, want := range []string{
		"| new connection, healthz | tls |", "| new connection, healthz | mtls |",
		"| new connection, whoami | mtls |", "| kept-alive, whoami | tls |", "| kept-alive, healthz | mtls |",
		"| svid | CA.Sign alone |", "| svid | POST /v1/identity/svid |",
		"Goal, kept-alive, healthz: mTLS overhead < 5 %", "TLS 1.3", ", 0 resumed",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(report, "failed operations") {
		t.Errorf("operations failed")
	}
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}
