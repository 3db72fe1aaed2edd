package invoke_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/invoke"
)

// benchAnswer is the bench agent's ~200-byte answer (bench/invoke's agent answers alike).
var benchAnswer = bytes.Repeat([]byte("x"), 200)

// completionRecords turns a completion into its outbox records, as the kernel's OnComplete does.
func completionRecords(c invoke.Completion) ([]events.OutboxRecord, error) {
	return invoke.CompletionRecords(c)
}

// BenchmarkServe is one synchronous call through Service.Serve to a loopback agent that answers
// ~200 bytes at once, its body validated against an input schema and its completion turned into
// outbox records as the kernel does: the invoke path's CPU and allocations per call. The agent
// (an httptest server in this process) is counted too, the same in every version.
//
//	go test -run '^$' -bench Serve -benchmem -count 6 ./internal/invoke
func BenchmarkServe(b *testing.B) {
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(benchAnswer)
	}))
	defer agent.Close()
	f := &fleet{}
	f.addURL(agent.URL, `{"type":"object","required":["text"],"properties":{"text":{"type":"string","maxLength":4096}}}`)
	tr := egress.NewTransport(egress.Policy{AllowLoopback: true}, egress.TransportOptions{MaxIdleConnsPerHost: 16})
	defer tr.CloseIdleConnections()
	s, err := invoke.New(invoke.Config{}, invoke.Deps{Agents: f, Transport: tr, OnComplete: func(_ context.Context, c invoke.Completion) {
		if _, err := completionRecords(c); err != nil {
			b.Error(err)
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"text":"hello from the bench"}`)
	h := http.Header{"Content-Type": {"application/json"}, "X-Api-Key": {"nops_secret"}}
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		err := s.Serve(context.Background(), w, invoke.Request{TenantID: tenantID, Capability: "text.summarize", RequestID: "req-1", Header: h, Body: body})
		if err != nil || w.Code != http.StatusOK || w.Body.Len() != len(benchAnswer) {
			b.Fatalf("serve: %v, %d, %d bytes", err, w.Code, w.Body.Len())
		}
	}
}

// BenchmarkCompletionRecords is the completion's share alone: its two events built and encoded.
//
//	go test -run '^$' -bench CompletionRecords -benchmem -count 6 ./internal/invoke
func BenchmarkCompletionRecords(b *testing.B) {
	c := benchCompletion()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := completionRecords(c); err != nil {
			b.Fatal(err)
		}
	}
}

// benchCompletion is a typical completion of a synchronous call.
func benchCompletion() invoke.Completion {
	return invoke.Completion{
		InvocationID: invoke.NewInvocationID(), Tenant: tenantID, Capability: "text.summarize",
		AgentID: "agt_01jzzzzzzzzzzzzzzzzzzzzzzz", RequestID: "req-1", Status: 200, Outcome: invoke.OutcomeOK,
		Attempts: 1, RequestBytes: 30, ResponseBytes: 200, StartedAt: time.Now(), Duration: 700 * time.Microsecond,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
}
