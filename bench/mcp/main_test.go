package main

import (
	"slices"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	o, err := parse([]string{"-duration", "2s", "-kinds", "invoke,mcp-raw"})
	if err != nil || o.duration != 2*time.Second || !slices.Equal(o.kinds, []string{"invoke", "mcp-raw"}) {
		t.Fatalf("parse = %+v, %v", o, err)
	}
	for _, args := range [][]string{{"-kinds", "mcp-raw"}, {"-kinds", "invoke,grpc"}, {"-rounds", "0"}} {
		if _, err := parse(args); err == nil {
			t.Errorf("parse(%v) accepted", args)
		}
	}
}

func TestPercentilesAndMean(t *testing.T) {
	ds := []time.Duration{4, 1, 3, 2}
	if pct(ds, 50) != 2 || pct(ds, 99) != 4 || mean(ds) != 2 || pct(nil, 50) != 0 || mean(nil) != 0 {
		t.Fatalf("pct/mean of %v", ds)
	}
}
