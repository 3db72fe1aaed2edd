// Package netguard protects the kernel's HTTP listener against connection-level denial of
// service: a net.Listener wrapper that caps open connections per client IP and in total, cuts
// connections whose writes stall (slow readers), and the http.Server timeouts that cut slow
// writers (slowloris) and idle connections.
//
// Who may import it: internal/kernel (which wraps the API listener and applies the timeouts) and
// tests. It imports nothing of the project.
//
// # Usage
//
//	ln, _ := net.Listen("tcp", addr)
//	gl, err := netguard.NewListener(ln, netguard.Config{}, netguard.Options{Logger: l, MeterProvider: mp})
//	to, err := netguard.RecommendedTimeouts(netguard.TimeoutConfig{})
//	srv := &http.Server{Handler: h}
//	to.Apply(srv)
//	srv.Serve(gl)              // or srv.ServeTLS(gl, "", "") with srv.TLSConfig set: the caps
//	                           // apply before the TLS handshake costs anything
//
// # Connection caps
//
// The peer IP is the connection's remote address, never a header: a proxy in front makes every
// client one IP, so behind a proxy raise MaxConnsPerIP (or disable it) and cap at the proxy.
// IPv6 peers are grouped by their /64 (IPv6PrefixLen), the block one subscriber usually holds.
// A connection beyond a cap is closed at accept with an RST (SO_LINGER 0: no TIME_WAIT kept for
// it), before any byte is read, and counted in nops_conn_refused_total{reason="per_ip"|"total"};
// Accept then waits for the next connection, so http.Server never sees the refusal (an Accept
// error would make it back off). The slot is released when the connection is closed, by either
// side, once.
//
// # Slow clients
//
// A slow writer (slowloris: a header byte every few seconds) is cut by ReadHeaderTimeout, a slow
// body by ReadTimeout, an idle keep-alive connection by IdleTimeout (http.Server's own). The
// server's WriteTimeout is a deadline for the whole response, which would cut legitimate
// streaming responses (event streams, long downloads), so RecommendedTimeouts leaves it 0; slow
// readers are cut instead by WriteStallTimeout: every single Write to the connection must
// complete within it (a Write blocks only when the peer does not read and the socket buffers are
// full), however long the response lasts. A handler that needs a deadline for its whole response
// sets one with http.ResponseController.SetWriteDeadline; the earlier of the two applies.
//
// # Metrics
//
//   - nops_conn_refused_total{reason} (counter): connections closed at accept.
//   - nops_conn_open (gauge): connections open through the listener.
//
// # Concurrency
//
// A Listener is safe for concurrent use (several goroutines may Accept). One mutex guards the
// per-IP counts and the total; it is held for map updates only. A connection's release runs once
// (sync.Once), whichever of Close's callers comes first. A conn's explicit write deadline is
// guarded by its own mutex because http.Server sets deadlines and writes from different
// goroutines.
package netguard
