package main

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunEmbedded runs every implementation on both embedded settings for a moment, at one fixed
// rate and at the maximum rate, so that the program keeps compiling and working. It checks that
// a report with numbers comes out and that nothing is left in the data directory, never how fast
// anything was.
func TestRunEmbedded(t *testing.T) {
	parent := t.TempDir()
	o := options{
		Adapters:            []string{adEmbeddedSync, adEmbeddedAsync},
		Impls:               allImpls,
		Rates:               []int{200},
		Max:                 true,
		Duration:            time.Second,
		Warmup:              100 * time.Millisecond,
		Drain:               time.Minute,
		PayloadSize:         1024,
		Publishers:          2,
		Batch:               16,
		MaxPending:          256,
		MaxBacklog:          512,
		ConsumerConcurrency: 4,
		DataDir:             parent,
		FsyncDuration:       200 * time.Millisecond,
	}
	var out bytes.Buffer
	if err := run(t.Context(), o, &out, io.Discard); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	report := out.String()
	t.Log("\n" + report)

	entries, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("the run left %d entries in its data directory", len(entries))
	}
	for _, want := range []string{"Machine: ", "Embedded NATS: nats-server ", "#### Physical limit", "#### Publish → consume", "#### Goals (issue 4)",
		"power-loss-safe maximum rate above the disk's fsync rate", "crash-safe (embedded-async)", "our layer keeps ≥ 70 %",
		"| process µs/event | Redis µs/event | total µs/event | ÷ raw total |"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// Every phase has a row with a consumed rate and latencies in milliseconds.
	for _, a := range o.Adapters {
		for _, impl := range o.Impls {
			for _, load := range []string{"200/s", "max: "} {
				row := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(a) + ` \| ` + regexp.QuoteMeta(implLabel(a, impl)) + ` \| ` + regexp.QuoteMeta(load) + `[^|]* \| [1-9][0-9]* \| [1-9][0-9]*[^|]* \|[^|]*\| [0-9.]+ ms \|`)
				if !row.MatchString(report) {
					t.Errorf("no row with numbers for %s / %s / %s", a, impl, load)
				}
			}
		}
	}
	// Every closed-loop phase has a CPU-per-event row (process CPU is measured on Linux).
	for _, a := range o.Adapters {
		for _, impl := range o.Impls {
			row := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(a) + ` \| ` + regexp.QuoteMeta(implLabel(a, impl)) + ` \| [1-9][0-9]* \| [0-9]+\.[0-9] \|  \| [0-9]+\.[0-9] \|`)
			if !row.MatchString(report) {
				t.Errorf("no CPU row for %s / %s", a, impl)
			}
		}
	}
	if !regexp.MustCompile(`(?m)^\| [0-9]+ \| [0-9]+ \| [0-9.]+ ms \|`).MatchString(report) {
		t.Error("the fsync table has no numbers")
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args     []string
		adapters string
		rates    string
		wantErr  string
	}{
		{args: nil, adapters: "embedded-sync,embedded-async", rates: "1000,2000,5000"},
		{args: []string{"-adapters", "redis, embedded-sync,redis", "-redis-url", "redis://x:6379/0", "-rates", "5000,1000"}, adapters: "embedded-sync,redis", rates: "5000,1000"},
		{args: []string{"-rates", "", "-max=true"}, adapters: "embedded-sync,embedded-async", rates: ""},
		{args: []string{"-adapters", "nats"}, wantErr: "-nats-url is required"},
		{args: []string{"-adapters", "redis"}, wantErr: "-redis-url is required"},
		{args: []string{"-adapters", "kafka"}, wantErr: "unknown name"},
		{args: []string{"-impls", "fast"}, wantErr: "unknown name"},
		{args: []string{"-rates", "0"}, wantErr: "-rates"},
		{args: []string{"-rates", "", "-max=false"}, wantErr: "nothing to measure"},
		{args: []string{"-duration", "0s"}, wantErr: "-duration"},
		{args: []string{"-batch", "1001"}, wantErr: "-batch"},
		{args: []string{"-payload", "10"}, wantErr: "-payload"},
		{args: []string{"-publishers", "0"}, wantErr: "-publishers"},
		{args: []string{"-max-backlog", "0"}, wantErr: "-max-backlog"},
		{args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFlags error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(o.Adapters, ","); got != tt.adapters {
				t.Errorf("adapters = %q, want %q", got, tt.adapters)
			}
			var rates []string
			for _, r := range o.Rates {
				rates = append(rates, strconv.Itoa(r))
			}
			if got := strings.Join(rates, ","); got != tt.rates {
				t.Errorf("rates = %q, want %q", got, tt.rates)
			}
		})
	}
}

func TestEventID(t *testing.T) {
	id := eventID("e0a1b2c3d", true, 42, 1764150000123456789)
	measured, seq, at, ok := parseEventID("e0a1b2c3d", id)
	if !ok || !measured || seq != 42 || at != 1764150000123456789 {
		t.Errorf("parseEventID(%q) = %v, %d, %d, %v", id, measured, seq, at, ok)
	}
	if measured, _, _, ok := parseEventID("e0a1b2c3d", eventID("e0a1b2c3d", false, 0, 1)); !ok || measured {
		t.Error("a warm-up id does not parse as a warm-up id")
	}
	for _, bad := range []string{"", "e0a1b2c3d", "eOTHER-m1-2", "e0a1b2c3d-x1-2", "e0a1b2c3d-m-1-2", "e0a1b2c3d-m1-", "e0a1b2c3d-m1-2x"} {
		if _, _, _, ok := parseEventID("e0a1b2c3d", bad); ok {
			t.Errorf("parseEventID(%q) accepted it", bad)
		}
	}
}

func TestRecorder(t *testing.T) {
	r := newRecorder("p", 3)
	now := time.Now().UnixNano()
	r.published([]event{{measured: true}, {measured: true}, {measured: false}}, nil)
	r.consumedID(eventID("p", true, 0, now))
	r.consumedID(eventID("p", true, 0, now)) // a redelivery
	r.consumedID(eventID("p", true, 2, now))
	r.consumedID(eventID("p", false, 0, now))
	r.consumedID(eventID("p", true, 3, now)) // beyond the capacity
	r.consumedID("someone else's")
	if got := [...]int64{r.acked.Load(), r.warmAcked.Load(), r.consumed.Load(), r.dups.Load(), r.warm.Load(), r.foreign.Load()}; got != [...]int64{2, 1, 2, 1, 1, 2} {
		t.Errorf("acked, warm acked, consumed, dups, warm, foreign = %v", got)
	}
	if n := len(r.latencies()); n != 2 {
		t.Errorf("%d latencies, want 2", n)
	}
}

func TestGoals(t *testing.T) {
	lat := func(d time.Duration) []time.Duration { return []time.Duration{d} }
	rep := report{
		o:    options{Adapters: []string{adEmbeddedSync, adEmbeddedAsync}},
		disk: &diskStats{ops: 3000, elapsed: time.Second},
		results: []result{
			{adapter: adEmbeddedSync, impl: implOurs, rate: 2000, st: phaseStats{events: 2000, acked: 2000, consumed: 2000, elapsed: time.Second, lat: lat(4 * time.Millisecond), caughtUp: true}},
			{adapter: adEmbeddedSync, impl: implOurs, st: phaseStats{acked: 5000, consumed: 5000, elapsed: time.Second}},
			{adapter: adEmbeddedSync, impl: implRaw, st: phaseStats{acked: 6000, consumed: 6000, elapsed: time.Second}},
			{adapter: adEmbeddedAsync, impl: implOurs, st: phaseStats{acked: 19000, consumed: 19000, elapsed: time.Second}},
			{adapter: adEmbeddedAsync, impl: implRaw, st: phaseStats{acked: 40000, consumed: 40000, elapsed: time.Second}},
		},
	}
	var out bytes.Buffer
	rep.writeGoals(&out)
	for _, want := range []string{
		"| power-loss-safe (embedded-sync): 2,000 events/s sustained with p95 ≤ 5.00 ms and p99 ≤ 15.00 ms | 2000 events/s, p95 4.00 ms, p99 4.00 ms | met |",
		"| power-loss-safe maximum rate above the disk's fsync rate (batching) | 5000 events/s against 3000 fdatasync/s (1.67×); raw PublishAsync 6000/s (2.00×) | met |",
		"| crash-safe (embedded-async): ≥ 20,000 events/s sustained | 19000 events/s | **not met** |",
		"| embedded-sync: our layer keeps ≥ 70 % of the raw library's maximum throughput | 5000 vs 6000 events/s (0.83×) | met |",
		"| embedded-async: our layer keeps ≥ 70 % of the raw library's maximum throughput | 19000 vs 40000 events/s (0.47×) | **not met** |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("goals lack %q:\n%s", want, out.String())
		}
	}
}
