// Package natstest starts NATS servers inside the test process: a JetStream cluster of several
// servers on loopback ports chosen by the OS, for tests of replicated streams and leader
// failover. Only tests import natstest.
//
// Usage:
//
//	c := natstest.StartCluster(t, 3)     // waits until JetStream has elected a meta leader
//	b, _ := natsbus.Open(ctx, natsbus.Config{URL: c.URLs(), Replicas: 3}, nil)
//	c.Shutdown(leaderName)               // a server stops (its leaderships move first)
//
// Node 0 listens for routes on 127.0.0.1:0; the others route to it and learn about each other
// from it, so no port is ever reserved in advance. A clustered JetStream server refuses to
// start without a configured route, and node 0 cannot know another node's address before they
// exist, so its configured route is a listener owned by the Cluster that closes every
// connection (node 0 keeps retrying it, harmlessly). Every server has its own t.TempDir store
// and is shut down when the test ends.
//
// Concurrency: the methods of a Cluster may be called from any goroutine.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startTimeout bounds each wait of StartCluster: a server ready, the meta leader elected.
const startTimeout = 30 * time.Second

// Cluster is a set of clustered JetStream servers in this process.
type Cluster struct {
	t       testing.TB
	name    string
	servers []*server.Server

	mu   sync.Mutex
	down map[string]bool
}

// StartCluster starts n (≥ 2) clustered JetStream servers named <cluster>-0 … <cluster>-(n-1)
// and waits until the JetStream meta group has a leader that sees all of them.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 2 {
		t.Fatalf("natstest: a cluster needs at least 2 servers, got %d", n)
	}
	c := &Cluster{t: t, name: "nops-test", down: map[string]bool{}}
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	// After the directories' cleanups in the order of registration, so it runs before them:
	// a running server still writes to its store.
	t.Cleanup(c.shutdownAll)
	seed := c.placeholderRoute()
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("%s-%d", c.name, i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   dirs[i],
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name: c.name,
				Host: "127.0.0.1",
				Port: server.RANDOM_PORT,
			},
			DisableJetStreamBanner: true,
		}
		opts.Routes = []*url.URL{seed}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("natstest: server %d: %v", i, err)
		}
		srv.Start()
		c.mu.Lock()
		c.servers = append(c.servers, srv)
		c.mu.Unlock()
		if !srv.ReadyForConnections(startTimeout) {
			t.Fatalf("natstest: server %s not ready within %s", opts.ServerName, startTimeout)
		}
		if i == 0 {
			addr := srv.ClusterAddr()
			if addr == nil {
				t.Fatalf("natstest: server %s has no cluster address", opts.ServerName)
			}
			seed = &url.URL{Scheme: "nats-route", Host: addr.String()}
		}
	}
	c.WaitMetaLeader(n)
	return c
}

// placeholderRoute listens on 127.0.0.1:0 and closes every connection it accepts, until the
// test ends; see the package documentation.
func (c *Cluster) placeholderRoute() *url.URL {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatalf("natstest: placeholder route: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	})
	c.t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return &url.URL{Scheme: "nats-route", Host: ln.Addr().String()}
}

// WaitMetaLeader waits until a running server leads the JetStream meta group and sees peers
// JetStream servers, and returns its name.
func (c *Cluster) WaitMetaLeader(peers int) string {
	c.t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		for _, srv := range c.Running() {
			if srv.JetStreamIsLeader() && len(srv.JetStreamClusterPeers()) >= peers {
				return srv.Name()
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: no JetStream meta leader with %d peers within %s", peers, startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URLs is the comma-separated list of the servers' client URLs (all of them, running or not),
// what a client of the cluster is configured with.
func (c *Cluster) URLs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	urls := make([]string, len(c.servers))
	for i, srv := range c.servers {
		urls[i] = srv.ClientURL()
	}
	return strings.Join(urls, ",")
}

// Running returns the servers not shut down by Shutdown.
func (c *Cluster) Running() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*server.Server
	for _, srv := range c.servers {
		if !c.down[srv.Name()] {
			out = append(out, srv)
		}
	}
	return out
}

// Shutdown stops the server named name and waits until it has stopped. nats-server first hands
// over the Raft leaderships it holds, as in a rolling restart.
func (c *Cluster) Shutdown(name string) {
	c.t.Helper()
	c.mu.Lock()
	var target *server.Server
	for _, srv := range c.servers {
		if srv.Name() == name && !c.down[name] {
			target = srv
		}
	}
	if target != nil {
		c.down[name] = true
	}
	c.mu.Unlock()
	if target == nil {
		c.t.Fatalf("natstest: no running server named %q", name)
	}
	target.Shutdown()
	target.WaitForShutdown()
}

func (c *Cluster) shutdownAll() {
	c.mu.Lock()
	servers := c.servers
	c.mu.Unlock()
	for _, srv := range servers {
		srv.Shutdown()
	}
	for _, srv := range servers {
		srv.WaitForShutdown()
	}
}
