package bus_test

import (
	"regexp"
	"testing"

	"github.com/nops-kernel/nops/internal/bus"
)

// The grammar of tokens and types, as regular expressions: the oracle of the hand-written
// checks, which run on every publish and delivery.
var (
	tokenOracle = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	typeOracle  = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){2}\.v[1-9][0-9]*$`)
)

var validSeeds = []string{
	"", "a", "nops.agent.registered.v1", "nops.agent.registered.v10", "nops.agent.registered.v0",
	"nops.agent.registered.v01", "nops.agent.registered", "nops.agent..v1", "Nops.agent.x.v1",
	"nops.a_b.c9.v2", "nops.agent.registered.v1.", ".nops.agent.registered.v1", "nops.agent.registered.v",
	"nops.1agent.registered.v1", "ten_ABC-123", "ten acme", "ten.acme", "a-very-long-token-0123456789012345678901234567890123456789012345678",
	"x.y.z.v9", "x.y.z.w.v1", "é.a.b.v1",
}

func TestValidTokenAndTypeMatchTheGrammar(t *testing.T) {
	for _, s := range validSeeds {
		if got, want := bus.ValidToken(s), tokenOracle.MatchString(s); got != want {
			t.Errorf("ValidToken(%q) = %v, want %v", s, got, want)
		}
		if got, want := bus.ValidType(s), typeOracle.MatchString(s); got != want {
			t.Errorf("ValidType(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzValidTokenAndType(f *testing.F) {
	for _, s := range validSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := bus.ValidToken(s), tokenOracle.MatchString(s); got != want {
			t.Fatalf("ValidToken(%q) = %v, the grammar says %v", s, got, want)
		}
		if got, want := bus.ValidType(s), typeOracle.MatchString(s); got != want {
			t.Fatalf("ValidType(%q) = %v, the grammar says %v", s, got, want)
		}
	})
}
