package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	o, err := parse([]string{"-mode", "kill,ldm", "-rounds", "3"})
	if err != nil || len(o.modes) != 2 || o.rounds != 3 {
		t.Fatalf("parse = %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-mode", "crash"}, {"-rounds", "0"}, {"-after", "0s"}, {"extra"}} {
		if _, err := parse(bad); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

// TestRunOneRound runs a short round against the machine's nats-server: the report has its row
// and nothing acknowledged is lost by a graceful shutdown of the leader.
func TestRunOneRound(t *testing.T) {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Skip("nats-server not installed")
	}
	o := options{server: bin, modes: []string{"term"}, rounds: 1, before: 300 * time.Millisecond, after: 2 * time.Second, ackWait: time.Second}
	var out bytes.Buffer
	if err := run(t.Context(), o, &out, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	rows := 0
	for line := range strings.SplitSeq(out.String(), "\n") {
		if strings.HasPrefix(line, "| term | 1 |") {
			rows++
			if !strings.HasSuffix(line, "| 0 |") {
				t.Errorf("acknowledged messages lost: %s", line)
			}
		}
	}
	if rows != 1 {
		t.Fatalf("report without its row:\n%s", out.String())
	}
}
