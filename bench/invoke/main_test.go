package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The bench starts its agents by re-executing its own binary with -role agent; under
	// `go test` that binary is this test binary, which must then be the agent.
	if slices.Contains(os.Args[1:], "-role") {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func TestParse(t *testing.T) {
	tests := []struct {
		args    []string
		phases  string
		wantErr string
	}{
		{args: nil, phases: "direct,nginx,kernel,weights,e2e"},
		{args: []string{"-phases", "kernel"}, phases: "kernel"},
		{args: []string{"-phases", "direct, kernel,direct"}, phases: "direct,kernel,direct"},
		{args: []string{"-phases", "kernel,bogus"}, wantErr: `unknown phase "bogus"`},
		{args: []string{"-duration", "0s"}, wantErr: "-duration"},
		{args: []string{"-weights-duration", "-1s"}, wantErr: "-weights-duration"},
		{args: []string{"-rate", "0"}, wantErr: "-rate"},
		{args: []string{"-e2e-peak-rate", "-5"}, wantErr: "-e2e-peak-rate"},
		{args: []string{"-concurrency", "0"}, wantErr: "-concurrency"},
		{args: []string{"-clients", "0"}, wantErr: "-clients"},
		{args: []string{"-role", "proxy"}, wantErr: "unknown role"},
		{args: []string{"extra"}, wantErr: "unexpected arguments"},
		// An agent ignores the bench's flags and their checks.
		{args: []string{"-role", "agent", "-duration", "0s"}},
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
				t.Fatalf("parse(%q): %v", tt.args, err)
			}
			if got := strings.Join(o.phases, ","); got != tt.phases {
				t.Errorf("phases = %q, want %q", got, tt.phases)
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
	}{{50, 50}, {95, 95}, {99, 99}, {100, 100}, {1, 1}, {0, 1}} {
		if got := pct(s, tt.p); got != tt.want {
			t.Errorf("pct(1..100, %d) = %d, want %d", tt.p, got, tt.want)
		}
	}
	if got := pct([]time.Duration{7}, 99); got != 7 {
		t.Errorf("pct of one = %d, want 7", got)
	}
	if got := pct(nil, 50); got != 0 {
		t.Errorf("pct(nil) = %d, want 0", got)
	}
}

func TestNginxConfig(t *testing.T) {
	conf := nginxConfig("/tmp/x", "127.0.0.1:4000", "127.0.0.1:5000")
	for _, want := range []string{
		"listen 127.0.0.1:4000;",
		"server 127.0.0.1:5000;",
		"keepalive 512;",
		"proxy_pass http://agent;",
		"proxy_http_version 1.1;",
		`proxy_set_header Connection "";`, // or nginx closes the upstream connection every time
		"pid /tmp/x/nginx.pid;",
		"access_log off;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
}

func TestChildEnvDropsTheProfile(t *testing.T) {
	got := childEnv([]string{"A=1", envProfile + "=/tmp/p", "B=" + envProfile})
	if want := []string{"A=1", "B=" + envProfile}; !slices.Equal(got, want) {
		t.Errorf("childEnv = %q, want %q", got, want)
	}
}

// TestOpenLoopSendsOnSchedule: every request due in the window is sent, and none more.
func TestOpenLoopSendsOnSchedule(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	fired := make(chan struct{})
	// 200 req/s for 250 ms: due at 0, 5, …, 245 ms.
	r := openLoop(t.Context(), target{name: "t", urls: []string{srv.URL}}, 200, 0, 250*time.Millisecond, 8,
		event{at: 100 * time.Millisecond, do: func() { close(fired) }})
	if got := hits.Load(); got != 50 {
		t.Errorf("server saw %d requests, want 50", got)
	}
	if len(r.lats) != 50 || len(r.lags) != 50 || r.errors != 0 {
		t.Errorf("result has %d latencies, %d lags, %d errors; want 50, 50, 0", len(r.lats), len(r.lags), r.errors)
	}
	select {
	case <-fired:
	default:
		t.Error("the event did not fire during the window")
	}
}

// TestOpenLoopChargesTheQueue: with one client and a server slower than the arrival interval,
// requests queue, and their latency counts from when they were due, not from when they left.
func TestOpenLoopChargesTheQueue(t *testing.T) {
	const service = 20 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(service)
	}))
	defer srv.Close()
	// 10 requests due 5 ms apart, served one at a time: the last is answered no earlier than
	// 10 × 20 ms after the start, i.e. at least 200 - 45 = 155 ms after it was due.
	r := openLoop(t.Context(), target{name: "t", urls: []string{srv.URL}}, 200, 0, 50*time.Millisecond, 1)
	if len(r.lats) != 10 {
		t.Fatalf("%d latencies, want 10", len(r.lats))
	}
	if worst := r.lats[len(r.lats)-1]; worst < 155*time.Millisecond {
		t.Errorf("worst latency %s, want ≥ 155ms: the queue is not charged", worst)
	}
}

func TestOpenLoopCountsErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	r := openLoop(t.Context(), target{name: "t", urls: []string{srv.URL}}, 200, 0, 50*time.Millisecond, 2)
	if r.errors != 10 || len(r.lats) != 0 || !strings.Contains(r.firstErr, "503") {
		t.Errorf("errors %d, latencies %d, first %q; want 10 errors with status 503 and no latency", r.errors, len(r.lats), r.firstErr)
	}
}

func TestClosedLoopRoundRobin(t *testing.T) {
	var a, b atomic.Int64
	mk := func(n *atomic.Int64) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1) }))
	}
	sa, sb := mk(&a), mk(&b)
	defer sa.Close()
	defer sb.Close()
	r := closedLoop(t.Context(), target{name: "t", urls: []string{sa.URL, sb.URL}}, 2, 0, 100*time.Millisecond)
	if len(r.lats) == 0 || r.errors != 0 {
		t.Fatalf("%d latencies, %d errors", len(r.lats), r.errors)
	}
	// Client 0 sends requests 0, 2, 4, … and client 1 requests 1, 3, 5, …: each client keeps to
	// one server, so both servers are used.
	if a.Load() == 0 || b.Load() == 0 {
		t.Errorf("requests per server: %d and %d, want both used", a.Load(), b.Load())
	}
}

func TestAgentChild(t *testing.T) {
	c, err := startAgent(t.Context(), "a1", os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Post(c.URL()+"/invoke/bench.echo", "application/json", strings.NewReader(requestBody))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var doc struct {
		OK         bool   `json:"ok"`
		Agent      string `json:"agent"`
		Capability string `json:"capability"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %s: %v", resp.StatusCode, body, err)
	}
	if !doc.OK || doc.Agent != "a1" || doc.Capability != "bench.echo" || len(body) < 180 || len(body) > 240 {
		t.Errorf("answer %s (%d bytes), want ok from a1 for bench.echo, about 200 bytes", body, len(body))
	}
	if err := c.setDelay(t.Context(), time.Millisecond); err != nil {
		t.Errorf("setDelay: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPut, c.URL()+"/delay", strings.NewReader("soon"))
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("PUT /delay soon: %d, want 400", resp.StatusCode)
	}
	c.stop()
	if c.cmd.ProcessState == nil || !c.cmd.ProcessState.Exited() {
		t.Errorf("the agent process did not exit at stdin EOF: %v", c.cmd.ProcessState)
	}
}

func TestNginxProxies(t *testing.T) {
	bin, err := findNginx("nginx")
	if err != nil {
		t.Skip("nginx is not installed (apt-get install -y nginx)")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"via":"agent"}`)
	}))
	defer srv.Close()
	p, err := startNginx(t.Context(), bin, strings.TrimPrefix(srv.URL, "http://"), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	dir := p.dir
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Post(p.url+"/invoke/bench.echo", "application/json", strings.NewReader(requestBody))
	if err != nil {
		p.stop()
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != `{"via":"agent"}` {
		t.Errorf("through nginx: %d %s", resp.StatusCode, body)
	}
	p.stop()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("nginx's directory %s is still there: %v", dir, err)
	}
}

func TestMissingNginx(t *testing.T) {
	o, err := parse([]string{"-phases", "nginx", "-nginx", "/nonexistent/nginx", "-duration", "10ms", "-warmup", "0s"})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(t.Context(), o, &out, &errOut); err != nil {
		t.Fatalf("run without nginx: %v", err)
	}
	if !strings.Contains(errOut.String(), "apt-get install -y nginx") || !strings.Contains(out.String(), "nginx phase skipped") {
		t.Errorf("no clear skip message:\nstderr: %s\nreport: %s", errOut.String(), out.String())
	}
	o.requireNginx = true
	if err := run(t.Context(), o, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "apt-get install -y nginx") {
		t.Errorf("run with -require-nginx: %v, want an error telling to install nginx", err)
	}
}

// TestRunSmoke runs every phase for a moment so that the program keeps compiling and working; it
// checks that a report with every table comes out and that no request failed, never how fast
// anything was.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four kernels")
	}
	o, err := parse([]string{"-duration", "200ms", "-warmup", "50ms", "-weights-duration", "400ms", "-rate", "200",
		"-weights-rate", "50", "-e2e-base-rate", "50", "-e2e-peak-rate", "100", "-concurrency", "2", "-clients", "16"})
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
	wants := []string{
		"| direct | ", "| kernel | ", "kernel-added latency at 200 req/s", "billing.usage events counted by the event-stats consumer",
		"| static | ", "| dynamic | ", "p95 improvement of dynamic over static",
		"| base | kernel | ", "| peak | direct | ", "kernel-added p95 < 2 ms",
	}
	if _, err := findNginx("nginx"); err == nil {
		wants = append(wants, "| nginx | ", "kernel throughput ≥ 50 % of nginx's")
	} else {
		wants = append(wants, "nginx phase skipped")
	}
	for _, want := range wants {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(report, "failed requests") {
		t.Errorf("requests failed:\n%s", report)
	}
	if t.Failed() {
		t.Logf("report:\n%s", report)
	}
}

// TestKernelChildProfile: a kernel child with a profile path writes its own CPU and allocation
// profiles, and enforces the allow policy the setup created (a capability outside bench.* is
// refused).
func TestKernelChildProfile(t *testing.T) {
	prof := t.TempDir() + "/k.prof"
	k, err := startKernel(t.Context(), "static", nil, prof, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.waitStatus(t.Context(), k.invokeURL("other.echo"), http.StatusForbidden); err != nil {
		t.Error(err)
	}
	k.close()
	for _, p := range []string{prof, prof + ".allocs"} {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("kernel profile %s: %v", p, err)
		}
	}
}
