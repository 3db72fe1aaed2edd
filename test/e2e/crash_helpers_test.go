package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nops-kernel/nops/internal/bus"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// The real `nops` binary as a child process, and the two kinds of load the crash harness puts on
// it: CloudEvents published straight to its embedded JetStream, and agent registrations through
// its HTTP API (committed changes whose events travel through the transactional outbox).

// buildNops compiles cmd/nops into a temporary directory, without the race detector whatever
// the test runs with, and returns the binary's path.
func buildNops(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build nops: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "nops")
	cmd := exec.Command(goTool, "build", "-o", bin, "github.com/nops-kernel/nops/cmd/nops")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/nops: %v\n%s", err, out)
	}
	return bin
}

// nopsEnv is the environment of `nops server` on dataDir: the test's own environment without
// any NOPS_* variable (so the kernel runs with its defaults: SQLite, embedded JetStream with
// durability sync), plus random loopback ports, the bootstrap admin's password, info logs, no
// per-IP limits, and extra.
func nopsEnv(dataDir string, extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "NOPS_") })
	env = append(env,
		"NOPS_DATA_DIR="+dataDir,
		"NOPS_HTTP_ADDR=127.0.0.1:0",
		"NOPS_NATS_EMBEDDED_LISTEN=127.0.0.1:0",
		"NOPS_BOOTSTRAP_ADMIN_PASSWORD="+kerneltest.AdminPassword,
		"NOPS_LOG_LEVEL=info",
		// The harness's load comes from one loopback address: no per-IP rate limit or cap.
		"NOPS_RATE_LIMIT_PER_IP=",
		"NOPS_INFLIGHT_PER_IP=100000",
	)
	return append(env, extra...)
}

// The log messages (internal/kernel, internal/bus/natsbus) that give a server's addresses.
const (
	msgServing    = "nops kernel serving"
	msgNATSListen = "embedded nats accepts tcp clients"
)

// nopsProcess is one `nops server` child process.
type nopsProcess struct {
	cmd      *exec.Cmd
	logPath  string    // its stderr: the JSON log
	started  time.Time // when the process was started
	httpAddr string    // host:port of the HTTP API
	natsAddr string    // host:port of the embedded NATS
	exited   chan struct{}
	exitErr  error // cmd.Wait's result; read after exited is closed
}

// startNops starts `nops server` with env, waits until it logged both addresses and returns.
// The process is killed at the end of the test if it still runs then. name labels its log file.
func startNops(t *testing.T, bin, name string, env []string) *nopsProcess {
	t.Helper()
	p := &nopsProcess{logPath: filepath.Join(t.TempDir(), name+".log"), exited: make(chan struct{})}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "server")
	p.cmd.Env = env
	p.cmd.Stdout = logFile
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		_ = logFile.Close()
		t.Fatalf("start nops server: %v", err)
	}
	t.Cleanup(func() {
		if !p.hasExited() {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	addrs := make(chan [2]string, 2) // {msg, addr}
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = logFile.Write(append(line, '\n'))
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(line, &rec) == nil && (rec.Msg == msgServing || rec.Msg == msgNATSListen) {
				select {
				case addrs <- [2]string{rec.Msg, rec.Addr}:
				default: // logged again: the first one counts
				}
			}
		}
		_, _ = io.Copy(logFile, stderr) // after a scanner error: keep the rest, and reach EOF
		p.exitErr = p.cmd.Wait()
		_ = logFile.Close()
	}()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for p.httpAddr == "" || p.natsAddr == "" {
		select {
		case a := <-addrs:
			if a[0] == msgServing {
				p.httpAddr = a[1]
			} else {
				p.natsAddr = a[1]
			}
		case <-p.exited:
			t.Fatalf("nops server exited during start-up (%v); log:\n%s", p.exitErr, p.logTail(40))
		case <-deadline.C:
			t.Fatalf("nops server did not log %q and %q within 60s; log:\n%s", msgServing, msgNATSListen, p.logTail(40))
		}
	}
	return p
}

func (p *nopsProcess) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *nopsProcess) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil && !p.hasExited() {
		t.Fatalf("kill -9 nops: %v", err)
	}
	p.wait(t, "kill -9")
}

// stop sends SIGTERM and requires a clean exit.
func (p *nopsProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM nops: %v", err)
	}
	p.wait(t, "SIGTERM")
	if p.exitErr != nil {
		t.Fatalf("nops server after SIGTERM: %v; log:\n%s", p.exitErr, p.logTail(40))
	}
}

func (p *nopsProcess) wait(t *testing.T, what string) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("nops server still running 60s after %s", what)
	}
}

// logTail returns the last n lines of the process's log.
func (p *nopsProcess) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return "(log unreadable: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// api is a client of the process's HTTP API that checks the live contract. Only its URL and
// Client are set: the kernel runs in another process.
func (p *nopsProcess) api(client *http.Client) *kerneltest.Kernel {
	return &kerneltest.Kernel{URL: "http://" + p.httpAddr, Client: client}
}

// waitReady polls /_readyz until it answers 200 and returns the time since the process started.
func (p *nopsProcess) waitReady(t *testing.T, client *http.Client) time.Duration {
	t.Helper()
	api := p.api(client)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, _, err := exchange(api, client, http.MethodGet, "/_readyz", nil)
		if err == nil && resp.StatusCode == http.StatusOK {
			return time.Since(p.started)
		}
		last := fmt.Sprint(err)
		if err == nil {
			last = resp.Status
		}
		if p.hasExited() {
			t.Fatalf("nops server exited before it was ready (%v); log:\n%s", p.exitErr, p.logTail(40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("nops server not ready within 60s (last answer: %s); log:\n%s", last, p.logTail(40))
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// heartbeatLoad publishes agent.heartbeat events of one tenant straight to the kernel's event
// stream, as the kernel's own bus would (natsbus/publish.go: subject, headers, dedup key), and
// keeps account of every id it sent and every id JetStream acknowledged. Events whose
// acknowledgement never came are sent again, with the same id and bytes, on the next run, the
// way a producer with at-least-once delivery does: the dedup window and the consumer's inbox must
// keep that from counting twice.
type heartbeatLoad struct {
	tenant, agentID string
	subj            bus.Subjects
	stream          string // the events stream, which must acknowledge each publish

	mu        sync.Mutex
	attempted map[string]bool   // every id handed to PublishMsgAsync at least once
	acked     map[string]bool   // ids with a PubAck from the events stream
	unacked   map[string][]byte // attempted, no PubAck yet: payloads to send again
	anomalies []string          // PubAcks from an unexpected stream
	sent      int               // PublishMsgAsync calls that returned nil, resends included
	errs      map[string]int    // failed publishes by error text

	pool []preparedEvent // made in advance, not sent yet; used by run's goroutine only
}

// preparedEvent is one serialized event.
type preparedEvent struct {
	id  string
	raw []byte
}

func newHeartbeatLoad(tenant, agentID string) *heartbeatLoad {
	return &heartbeatLoad{
		tenant: tenant, agentID: agentID,
		subj:      bus.Subjects{NS: bus.DefaultNamespace},
		stream:    strings.ToUpper(bus.DefaultNamespace) + "_EVENTS",
		attempted: map[string]bool{}, acked: map[string]bool{}, unacked: map[string][]byte{},
		errs: map[string]int{},
	}
}

// message is the NATS message of event id with payload, with natsbus's headers.
func (l *heartbeatLoad) message(id string, payload []byte) *nats.Msg {
	typ := string(events.TypeAgentHeartbeat)
	return &nats.Msg{
		Subject: l.subj.Event(l.tenant, typ),
		Header: nats.Header{
			jetstream.MsgIDHeader:          {id},
			jetstream.ExpectedStreamHeader: {l.stream},
			"Nops-Id":                      {id},
			"Nops-Tenant":                  {l.tenant},
			"Nops-Type":                    {typ},
			"Content-Type":                 {"application/cloudevents+json"},
		},
		Data: payload,
	}
}

// prepare makes new valid heartbeat events until n wait in the pool. Making them before the load
// starts keeps the test's own CPU time (the race detector slows events.New and json.Marshal
// down a lot) from limiting the rate it offers.
func (l *heartbeatLoad) prepare(t *testing.T, n int) {
	t.Helper()
	for len(l.pool) < n {
		now := time.Now().UTC()
		ev, err := events.New(events.TypeAgentHeartbeat, l.tenant, events.AgentSubject(l.agentID),
			events.AgentHeartbeat{AgentID: l.agentID, Tenant: l.tenant, HeartbeatAt: now}, now, "")
		if err != nil {
			t.Fatalf("make heartbeat event: %v", err)
		}
		raw, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("encode heartbeat event: %v", err)
		}
		l.pool = append(l.pool, preparedEvent{ev.ID, raw})
	}
}

// next returns a new heartbeat event from the pool (made there when it is empty), recorded as
// attempted before it is sent.
func (l *heartbeatLoad) next(t *testing.T) *nats.Msg {
	if len(l.pool) == 0 {
		l.prepare(t, 100)
	}
	ev := l.pool[0]
	l.pool = l.pool[1:]
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.attempted[ev.id] {
		t.Errorf("events.New made id %s twice", ev.id)
		return nil
	}
	l.attempted[ev.id] = true
	l.unacked[ev.id] = ev.raw
	return l.message(ev.id, ev.raw)
}

func (l *heartbeatLoad) onAck(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
	id := m.Header.Get(jetstream.MsgIDHeader)
	l.mu.Lock()
	defer l.mu.Unlock()
	if ack.Stream != l.stream {
		l.anomalies = append(l.anomalies, fmt.Sprintf("event %s acknowledged by stream %q", id, ack.Stream))
		return
	}
	l.acked[id] = true
	delete(l.unacked, id)
}

func (l *heartbeatLoad) onErr(_ jetstream.JetStream, _ *nats.Msg, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs[err.Error()]++
}

// counts returns how many ids were attempted and acknowledged, and publishes sent, so far.
func (l *heartbeatLoad) counts() (attempted, acked, sent int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.attempted), len(l.acked), l.sent
}

// run connects to the NATS at addr and publishes at rate events per second — first the events
// still unacknowledged from earlier runs, then new ones — until ctx ends or the connection is
// lost (the server was killed). It never reconnects: the next server has another address.
func (l *heartbeatLoad) run(ctx context.Context, t *testing.T, addr string, rate int) {
	nc, err := nats.Connect("nats://"+addr, nats.Name("e2e-crash-publisher"), nats.NoReconnect(),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // the kill is expected
	if err != nil {
		t.Errorf("connect the publisher to nats %s: %v", addr, err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc,
		// Room for a whole run at the offered rate: the publisher offers load, it does not wait
		// for the broker to keep up.
		jetstream.WithPublishAsyncMaxPending(rate*8),
		jetstream.WithPublishAsyncTimeout(5*time.Second),
		jetstream.WithPublishAsyncAckHandler(l.onAck),
		jetstream.WithPublishAsyncErrHandler(l.onErr),
	)
	if err != nil {
		t.Errorf("jetstream: %v", err)
		return
	}

	l.mu.Lock()
	resend := make([]string, 0, len(l.unacked))
	for id := range l.unacked {
		resend = append(resend, id)
	}
	l.mu.Unlock()
	slices.Sort(resend)

	nextMsg := func() *nats.Msg {
		for len(resend) > 0 {
			id := resend[0]
			resend = resend[1:]
			l.mu.Lock()
			raw, ok := l.unacked[id]
			l.mu.Unlock()
			if ok {
				return l.message(id, raw)
			}
		}
		return l.next(t)
	}

	start := time.Now()
	done := 0
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due := int(time.Since(start).Seconds()*float64(rate)) - done
		for range due {
			m := nextMsg()
			if m == nil {
				return
			}
			done++
			if _, err := js.PublishMsgAsync(m); err != nil {
				l.onErr(nil, m, err)
				if nc.IsClosed() || errors.Is(err, nats.ErrConnectionClosed) {
					return
				}
				continue
			}
			l.mu.Lock()
			l.sent++
			l.mu.Unlock()
		}
		if nc.IsClosed() {
			return
		}
	}
}

// registrations registers agents through the API and keeps account of the outcomes.
type registrations struct {
	mu        sync.Mutex
	names     map[string]bool   // every name sent
	ok        map[string]string // agent id → name, for each 201
	failed    map[string]int    // other outcomes: transport errors and statuses
	attempted int
}

func newRegistrations() *registrations {
	return &registrations{names: map[string]bool{}, ok: map[string]string{}, failed: map[string]int{}}
}

// run registers agents named prefix-<n> one after the other with cred until ctx ends or the
// server stops answering (it was killed).
func (r *registrations) run(ctx context.Context, t *testing.T, api *kerneltest.Kernel, cred, prefix string) {
	for i := 0; ctx.Err() == nil; i++ {
		name := fmt.Sprintf("%s-%05d", prefix, i)
		r.mu.Lock()
		r.names[name] = true
		r.attempted++
		r.mu.Unlock()
		resp, body, err := exchange(api, api.Client, http.MethodPost, "/v1/agents", agentSpec(name), cred)
		r.mu.Lock()
		switch {
		case err != nil:
			r.failed["transport error"]++
		case resp.StatusCode == http.StatusCreated:
			var a agentDoc
			if err := json.Unmarshal(body, &a); err != nil || a.ID == "" {
				t.Errorf("register %s: 201 with body %s", name, body)
			}
			r.ok[a.ID] = name
		default:
			r.failed[fmt.Sprintf("status %d", resp.StatusCode)]++
			if resp.StatusCode < 500 {
				t.Errorf("register %s: %d %s", name, resp.StatusCode, body)
			}
		}
		r.mu.Unlock()
		if err != nil {
			return // the server is gone; the next cycle starts a new one
		}
	}
}
