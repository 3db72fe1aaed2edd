// Package faultproxy puts a fault-injecting TCP proxy between a test and a real service, so tests
// can simulate an outage of a shared PostgreSQL, Redis or NATS without stopping it (other
// packages' tests use the same services at the same time). It is built on Toxiproxy's Go packages
// running inside the test process. Only tests import faultproxy.
//
// Usage:
//
//	p := faultproxy.New(t, services.HostPort(t, url))
//	client := connect(services.WithHost(t, url, p.Addr()))
//	p.Cut()     // outage: open connections are dropped, new ones are closed at once
//	p.Restore() // the service answers again through the same address
//
// Design: the listener stays open for the proxy's whole life, so Addr never changes and no other
// process can take the port between Cut and Restore (stopping and re-listening on the same port
// would race with every other socket opened on the machine meanwhile). An outage is a toxic on
// both directions that closes each connection's stream as soon as it sees it, which drops the open
// connections and every connection accepted during the outage.
//
// Concurrency: the methods of a Proxy may be called from any goroutine.
package faultproxy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"
)

// cutToxicType names dropToxic in Toxiproxy's registry of toxic types.
const cutToxicType = "nops_faultproxy_cut"

// Proxy is a TCP proxy on 127.0.0.1 in front of one upstream address.
type Proxy struct {
	t     testing.TB
	proxy *toxiproxy.Proxy
	addr  string

	mu  sync.Mutex
	cut bool
}

// New starts a proxy on 127.0.0.1:0 forwarding to upstream (host:port). The proxy is closed, and
// every connection through it dropped, when the test ends.
func New(t testing.TB, upstream string) *Proxy {
	t.Helper()
	// Registering a type is Toxiproxy's extension point; doing it on every New (an idempotent map
	// write under the registry's lock) keeps this package free of init-time side effects.
	toxics.Register(cutToxicType, new(dropToxic))

	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	proxy := toxiproxy.NewProxy(server, "faultproxy-"+t.Name(), "127.0.0.1:0", upstream)
	if err := proxy.Start(); err != nil {
		t.Fatalf("faultproxy: start proxy to %s: %v", upstream, err)
	}
	t.Cleanup(proxy.Stop)
	// Start returns once the listener is bound and Listen holds its real address.
	return &Proxy{t: t, proxy: proxy, addr: proxy.Listen}
}

// Addr is the proxy's host:port. It stays the same across Cut and Restore.
func (p *Proxy) Addr() string { return p.addr }

// Cut starts an outage: every open connection is dropped and every connection made until Restore
// is closed as soon as it is accepted. Cutting a cut proxy does nothing.
func (p *Proxy) Cut() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return
	}
	for _, stream := range []string{"upstream", "downstream"} {
		body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1}`, toxicName(stream), cutToxicType, stream)
		if _, err := p.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
			p.t.Fatalf("faultproxy: cut %s: %v", stream, err)
		}
	}
	p.cut = true
}

// Restore ends the outage: new connections reach the upstream again. Restoring a proxy that is
// not cut does nothing.
func (p *Proxy) Restore() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cut {
		return
	}
	for _, stream := range []string{"upstream", "downstream"} {
		if err := p.proxy.Toxics.RemoveToxic(context.Background(), toxicName(stream)); err != nil {
			p.t.Fatalf("faultproxy: restore %s: %v", stream, err)
		}
	}
	p.cut = false
}

func toxicName(stream string) string { return "cut_" + stream }

// dropToxic ends the stream it sits on at once: closing the stub's output makes Toxiproxy's link
// writer close the destination socket, and the other direction then closes the source socket.
//
// It then discards its input until that input is closed, instead of returning: a toxic that stops
// reading leaves the stub before it blocked forever on its next chunk (a leaked goroutine per
// connection). It never reads Interrupt either, so every later interrupt finds the stub closed
// and leaves the link alone; relinking a closed stub would send on a closed channel.
type dropToxic struct{}

// Pipe implements toxics.Toxic.
func (*dropToxic) Pipe(stub *toxics.ToxicStub) {
	stub.Close()
	for range stub.Input {
	}
}
