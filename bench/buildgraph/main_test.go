package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

// testdata/small.json: a link (1 s) after three independent compiles of 4, 2 and 3 CPU seconds,
// scheduled in that order.
func loadSmall(t *testing.T) map[int]*action {
	t.Helper()
	raw, err := os.ReadFile("testdata/small.json")
	if err != nil {
		t.Fatal(err)
	}
	acts, err := parseGraph(raw)
	if err != nil {
		t.Fatal(err)
	}
	return acts
}

func TestReplay(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cpus     int
		priority map[int]int // overrides by action id
		want     float64
	}{
		{name: "one CPU runs everything in turn", cpus: 1, want: 10},
		// big 0-4 and small 0-2, mid 2-5, link 5-6.
		{name: "two CPUs, biggest first", cpus: 2, want: 6},
		// mid 0-3 and small 0-2, big 2-6, link 6-7: the order the go command picks matters.
		{name: "two CPUs, biggest last", cpus: 2, priority: map[int]int{1: 2, 3: 0}, want: 7},
		{name: "more CPUs than work", cpus: 8, want: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acts := loadSmall(t)
			for id, p := range tc.priority {
				acts[id].Priority = p
			}
			if got := replay(acts, tc.cpus); got < tc.want-1e-9 || got > tc.want+1e-9 {
				t.Errorf("replay on %d CPUs = %v s, want %v s", tc.cpus, got, tc.want)
			}
		})
	}
}

func TestLongestChain(t *testing.T) {
	length, chain := longestChain(loadSmall(t))
	var names []string
	for _, a := range chain {
		names = append(names, a.name())
	}
	if got, want := strings.Join(names, " -> "), "example.com/big -> example.com/cmd (link)"; length != 5 || got != want {
		t.Errorf("longest chain = %v s %q, want 5 s %q", length, got, want)
	}
}

func TestRunReport(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out, "testdata/small.json", 2, 2, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"actions 4, CPU seconds 10.0",
		"| example.com/big | 4.0 | 40.0 % |",
		"| example.com/mid | 3.0 | 30.0 % |",
		"longest dependency chain: 5.0 CPU s",
		"replayed on 2 idle CPUs in the go command's order: 6.0 s wall",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "example.com/small |") {
		t.Errorf("-top 2 listed a third package:\n%s", out.String())
	}
}

func TestParseGraphRejectsUnknownDependency(t *testing.T) {
	if _, err := parseGraph([]byte(`[{"ID": 0, "Deps": [7]}]`)); err == nil || !strings.Contains(err.Error(), "unknown action 7") {
		t.Errorf("parseGraph = %v, want an unknown-action error", err)
	}
}
