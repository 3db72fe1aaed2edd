package nops

import (
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

func TestAutoGrace(t *testing.T) {
	for _, tc := range []struct {
		configured, left, want time.Duration
	}{
		{time.Hour, 24 * time.Hour, time.Hour},          // far deadline: the configured grace
		{time.Hour, time.Hour, 30 * time.Minute},        // half the time left
		{time.Hour, 4 * time.Second, minAutoGrace},      // close deadline: never below the floor
		{time.Hour, -time.Minute, minAutoGrace},         // past deadline (clock skew)
		{2 * time.Second, time.Hour, 2 * time.Second},   // a short configured grace is kept
		{2 * time.Second, time.Second, 2 * time.Second}, // even when the deadline is close
		{10 * time.Minute, 10 * time.Minute, 5 * time.Minute},
	} {
		if got := autoGrace(tc.configured, tc.left); got != tc.want {
			t.Errorf("autoGrace(%s, %s) = %s, want %s", tc.configured, tc.left, got, tc.want)
		}
	}
}

// noticeClient returns a client with an API key whose announced deadlines are collected.
func noticeClient(t testing.TB) (*Client, *[]time.Time) {
	c, err := NewClient(Options{BaseURL: "http://127.0.0.1:1", APIKey: "nops_ak1_secret"})
	if err != nil {
		t.Fatal(err)
	}
	var seen []time.Time
	c.watchRotateBy(func(by time.Time) { seen = append(seen, by) })
	return c, &seen
}

func answerWith(v string) *http.Response {
	h := http.Header{}
	if v != "" {
		h.Set(HeaderAPIKeyRotateBy, v)
	}
	return &http.Response{Header: h}
}

// FuzzNoticeRotateBy feeds the deadline header what a server (or anything between) may send: a
// deadline is passed on exactly when it is an RFC 3339 time, and nothing panics.
func FuzzNoticeRotateBy(f *testing.F) {
	for _, s := range []string{"2026-11-27T09:00:00Z", "2026-11-27T09:00:00+02:00", "", "soon", "2026-13-01T00:00:00Z", "Wed, 21 Oct 2015 07:28:00 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		c, seen := noticeClient(t)
		c.noticeRotateBy(c.cred.Load(), answerWith(v))
		want, err := time.Parse(time.RFC3339, v)
		switch {
		case v == "" || err != nil:
			if len(*seen) != 0 {
				t.Fatalf("%q passed on as %v", v, *seen)
			}
		case len(*seen) != 1 || !(*seen)[0].Equal(want):
			t.Fatalf("%q passed on as %v, want %s", v, *seen, want)
		}
	})
}

// An announced deadline concerns the credential that sent the request, and only an API key.
func TestNoticeRotateByOnlyForTheCurrentKey(t *testing.T) {
	const by = "2026-11-27T09:00:00Z"
	c, seen := noticeClient(t)
	old := c.cred.Load()
	c.cred.Store(&credential{header: "X-API-Key", value: "nops_ak1_next"})
	c.noticeRotateBy(old, answerWith(by))
	if len(*seen) != 0 {
		t.Fatalf("an answer to a request sent with a replaced key was passed on")
	}
	c.noticeRotateBy(c.cred.Load(), answerWith(by))
	if len(*seen) != 1 {
		t.Fatalf("an answer to a request sent with the current key was not passed on")
	}
	b, err := NewClient(Options{BaseURL: "http://127.0.0.1:1", BearerToken: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	called := false
	b.watchRotateBy(func(time.Time) { called = true })
	b.noticeRotateBy(b.cred.Load(), answerWith(by))
	if called {
		t.Fatalf("a deadline was passed on for a bearer token")
	}
	c.watchRotateBy(nil)
	c.noticeRotateBy(c.cred.Load(), answerWith(by))
	if len(*seen) != 1 {
		t.Fatalf("passed on after watchRotateBy(nil)")
	}
}

// However many answers announce the deadline, one rotation runs at a time, and after a failed
// one the agent waits autoRotateRetry before trying again.
func TestAutoRotateSingleFlight(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A kernel that refuses the rotation: the rotation fails, and it is reported.
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"status":403,"code":"forbidden","title":"Forbidden"}`))
	}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	c, err := NewClient(Options{BaseURL: "http://" + ln.Addr().String(), APIKey: "nops_ak1_secret"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []KeyRotationEvent
	a, err := NewAgent(c, AgentConfig{Name: "a", Version: "1.0.0", Hooks: Hooks{OnKeyRotation: func(e KeyRotationEvent) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}}})
	if err != nil {
		t.Fatal(err)
	}
	by := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { c.noticeRotateBy(c.cred.Load(), answerWith(by.UTC().Format(time.RFC3339))) })
	}
	wg.Wait()
	a.rotations.Wait()
	// Announced again right after the failure: within autoRotateRetry, no new attempt.
	c.noticeRotateBy(c.cred.Load(), answerWith(by.UTC().Format(time.RFC3339)))
	a.rotations.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 1 || events[0].Err == nil || events[0].KeyID != "ak1" {
		t.Fatalf("rotation events %+v, want one failed rotation of ak1", events)
	}
	if c.APIKey() != "nops_ak1_secret" {
		t.Fatalf("the key changed after a refused rotation")
	}
}
