package balancer_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/nops-kernel/nops/internal/balancer"
)

// fuzzCands turns fuzz bytes into up to 12 candidates whose weights are arbitrary float64
// values (NaN, ±Inf, negative, zero, subnormal included) and whose Stale/skip bits come from a
// mask.
func fuzzCands(raw []byte, mask uint16) []balancer.Candidate {
	var ws []float64
	for len(raw) >= 8 && len(ws) < 12 {
		ws = append(ws, math.Float64frombits(binary.LittleEndian.Uint64(raw)))
		raw = raw[8:]
	}
	cs := cands(ws...)
	for i := range cs {
		cs[i].Stale = mask&(1<<i) != 0
	}
	return cs
}

func f64s(ws ...float64) []byte {
	out := make([]byte, 0, 8*len(ws))
	for _, w := range ws {
		out = binary.LittleEndian.AppendUint64(out, math.Float64bits(w))
	}
	return out
}

// FuzzPick: whatever the weights, Pick and PickSticky return an eligible candidate exactly when
// there is one, and PickSticky answers the same for the same key.
func FuzzPick(f *testing.F) {
	f.Add(f64s(1, 2, 7), uint16(0), uint8(0), "user-1")
	f.Add(f64s(0, math.NaN(), math.Inf(1), -1), uint16(3), uint8(0), "")
	f.Add(f64s(math.SmallestNonzeroFloat64, math.MaxFloat64, 1e-300), uint16(7), uint8(2), "é\x00\xff")
	f.Add(f64s(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), uint16(0xfff), uint8(0xaa), "k")
	f.Add(f64s(math.MaxFloat64, math.MaxFloat64, 1), uint16(0), uint8(0), "huge")
	f.Fuzz(func(t *testing.T, raw []byte, stale uint16, skipMask uint8, key string) {
		cs := fuzzCands(raw, stale)
		skip := func(id string) bool {
			for i := range cs {
				if cs[i].AgentID == id {
					return i < 8 && skipMask&(1<<i) != 0
				}
			}
			return false
		}
		eligible := map[string]bool{}
		for _, c := range cs {
			if c.Weight > 0 && !math.IsInf(c.Weight, 1) && !skip(c.AgentID) {
				eligible[c.AgentID] = true
			}
		}
		for _, static := range []bool{false, true} {
			b, _ := newBalancer(t, func(c *balancer.Config) { c.Static = static })
			if len(cs) > 0 {
				b.Begin(cs[0]) // one call in flight, so the second draw happens
			}
			for range 4 {
				c, ok := b.Pick(cs, skip)
				if ok != (len(eligible) > 0) || (ok && !eligible[c.AgentID]) {
					t.Fatalf("static=%v: Pick = %q, %v; eligible %v", static, c.AgentID, ok, eligible)
				}
			}
			c1, ok1 := b.PickSticky(key, cs, skip)
			if ok1 != (len(eligible) > 0) || (ok1 && !eligible[c1.AgentID]) {
				t.Fatalf("static=%v: PickSticky = %q, %v; eligible %v", static, c1.AgentID, ok1, eligible)
			}
			if c2, _ := b.PickSticky(key, cs, skip); key != "" && c2.AgentID != c1.AgentID {
				t.Fatalf("static=%v: PickSticky(%q) = %q then %q", static, key, c1.AgentID, c2.AgentID)
			}
		}
	})
}
