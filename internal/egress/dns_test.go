package egress_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is a minimal authoritative DNS responder on UDP 127.0.0.1:0 for one name. It answers
// A and AAAA queries for that name with what answer returns for the n-th A query (n from 1), and
// NXDOMAIN for any other name. It exists so tests can make a name resolve differently from one
// lookup to the next (DNS rebinding) without touching the machine's resolver.
type dnsServer struct {
	name    string // fully qualified, lower case, with the trailing dot
	answer  func(n int64) []netip.Addr
	pc      net.PacketConn
	queries atomic.Int64 // A queries answered
	wg      sync.WaitGroup
}

func startDNS(t *testing.T, name string, answer func(n int64) []netip.Addr) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{name: strings.ToLower(name) + ".", answer: answer, pc: pc}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		_ = pc.Close()
		s.wg.Wait()
	})
	return s
}

// resolver returns a pure-Go resolver that sends every query to s.
func (s *dnsServer) resolver() *net.Resolver {
	addr := s.pc.LocalAddr().String()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", addr)
		},
	}
}

func (s *dnsServer) serve() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return // closed by the test's cleanup
		}
		if resp, ok := s.respond(buf[:n]); ok {
			_, _ = s.pc.WriteTo(resp, from)
		}
	}
}

func (s *dnsServer) respond(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	known := strings.ToLower(q.Name.String()) == s.name
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil, false
	}
	if known && (q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeAAAA) {
		var addrs []netip.Addr
		if q.Type == dnsmessage.TypeA {
			addrs = s.answer(s.queries.Add(1))
		} else {
			// AAAA answers come from the same list as the latest A answer, so a test controls
			// both families with one function.
			addrs = s.answer(s.queries.Load())
		}
		rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}
		for _, a := range addrs {
			var err error
			switch {
			case q.Type == dnsmessage.TypeA && a.Is4():
				err = b.AResource(rr, dnsmessage.AResource{A: a.As4()})
			case q.Type == dnsmessage.TypeAAAA && a.Is6():
				err = b.AAAAResource(rr, dnsmessage.AAAAResource{AAAA: a.As16()})
			}
			if err != nil {
				return nil, false
			}
		}
	}
	resp, err := b.Finish()
	return resp, err == nil
}
