package netguard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// attackerEnv, when set to "<addr> <slowloris connections>", makes the test binary the attacker
// process of TestDoSWellBehavedClientIsNotStarved instead of running tests (see TestMain). It
// attacks until its stdin closes, then prints its attackStats as JSON.
const attackerEnv = "NOPS_NETGUARD_DOS_ATTACKER"

// attackStats is what the attacker saw.
type attackStats struct {
	SlowCut     int64 // slowloris connections admitted, trickled on, then ended by the server
	SlowRefused int64 // slowloris connections closed at once (refused at accept) or not dialled
	Flood413    int64 // flood requests answered 413
	FloodErrors int64 // flood requests failing in transport (reset while sending the body)
	FloodOther  int64 // flood requests answered anything else
}

const (
	floodWorkers = 4
	floodBody    = 8 << 20
)

// runAttacker runs the attack described by spec until stdin closes and returns the exit code.
func runAttacker(spec string) int {
	addr, n, ok := strings.Cut(spec, " ")
	slowConns, err := strconv.Atoi(n)
	if !ok || err != nil {
		fmt.Fprintf(os.Stderr, "bad %s %q\n", attackerEnv, spec)
		return 2
	}
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	var st struct{ slowCut, slowRefused, flood413, floodErrors, floodOther atomic.Int64 }
	var wg sync.WaitGroup
	for range slowConns {
		wg.Go(func() { slowloris(ctx, addr, &st.slowCut, &st.slowRefused) })
	}
	tr := &http.Transport{
		DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}, Timeout: 10 * time.Second}).DialContext,
		DisableKeepAlives: true,
	}
	flood := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	url := "http://" + addr + "/work"
	for range floodWorkers {
		wg.Go(func() {
			for ctx.Err() == nil {
				status, err := post(ctx, flood, url, floodBody)
				switch {
				case ctx.Err() != nil:
				case err != nil:
					st.floodErrors.Add(1)
				case status == http.StatusRequestEntityTooLarge:
					st.flood413.Add(1)
				default:
					st.floodOther.Add(1)
				}
			}
		})
	}
	wg.Wait()
	out, _ := json.Marshal(attackStats{
		SlowCut: st.slowCut.Load(), SlowRefused: st.slowRefused.Load(),
		Flood413: st.flood413.Load(), FloodErrors: st.floodErrors.Load(), FloodOther: st.floodOther.Load(),
	})
	_, _ = os.Stdout.Write(out)
	return 0
}

// zeros is an endless body that allocates nothing.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func post(ctx context.Context, c *http.Client, url string, size int64) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, io.LimitReader(zeros{}, size))
	if err != nil {
		return 0, err
	}
	req.ContentLength = size
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// slowloris holds one connection at a time: request line, then a header byte every 50 ms, until
// the server cuts it; then it reconnects at its next tick.
func slowloris(ctx context.Context, addr string, cut, refused *atomic.Int64) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 5 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			refused.Add(1)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			continue
		}
		sent := 0
		_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: nops\r\nX-Slow: ")
		for err == nil {
			select {
			case <-ctx.Done():
				_ = c.Close()
				return
			case <-tick.C:
			}
			_, err = c.Write([]byte{'a'})
			sent++
		}
		_ = c.Close()
		if sent > 2 {
			cut.Add(1) // it trickled on an admitted connection until the server ended it
		} else {
			refused.Add(1) // closed at once: refused at accept
		}
	}
}
