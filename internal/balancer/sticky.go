package balancer

import "math"

// FNV-1a 64-bit parameters.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// PickSticky chooses the candidate that owns key by weighted rendezvous hashing (see the package
// doc) among the eligible ones, with the same eligibility rules as Pick. An empty key means no
// stickiness: it is Pick.
func (b *Balancer) PickSticky(key string, cands []Candidate, skip func(agentID string) bool) (Candidate, bool) {
	if key == "" {
		return b.Pick(cands, skip)
	}
	if len(cands) == 0 {
		return Candidate{}, false
	}
	now := b.now()
	var abuf [stackCands]*agent
	agents := b.lookup(abuf[:0], cands)
	hk := hashKey(key)
	bestIdx, bestVal := -1, math.Inf(-1)
	for i := range cands {
		c, a := &cands[i], agents[i]
		if !validWeight(c.Weight) || (skip != nil && skip(c.AgentID)) {
			continue
		}
		if a != nil {
			if until := a.until.Load(); until != 0 && now < until {
				continue
			}
			b.noticeReadmit(a, c, now)
		}
		v := rendezvous(hk, c.AgentID, c.Weight*b.ramp(a, now))
		// Equal values (practically only equal IDs) go to the lower ID, whatever the order.
		if bestIdx < 0 || v > bestVal || (v == bestVal && c.AgentID < cands[bestIdx].AgentID) {
			bestIdx, bestVal = i, v
		}
	}
	if bestIdx < 0 {
		return Candidate{}, false
	}
	return cands[bestIdx], true
}

// hashKey is the FNV-1a state after key and its length, so that ("ab","c") and ("a","bc")
// differ once the agent ID is appended.
func hashKey(key string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= fnvPrime
	}
	for n := uint64(len(key)); ; n >>= 8 {
		h ^= n & 0xff
		h *= fnvPrime
		if n < 0x100 {
			break
		}
	}
	return h
}

// rendezvous is agentID's weighted rendezvous value for a key hashed to hk: the logarithm of
// w / −ln(u), u uniform in (0,1). The largest over the candidates wins an exponential race, so
// each wins with probability w / Σw; the logarithm keeps huge weights from overflowing to ties.
func rendezvous(hk uint64, agentID string, w float64) float64 {
	h := hk
	for i := 0; i < len(agentID); i++ {
		h ^= uint64(agentID[i])
		h *= fnvPrime
	}
	u := (float64(mix64(h)>>11) + 0.5) / (1 << 53)
	return math.Log(w) - math.Log(-math.Log(u))
}

// mix64 is the splitmix64 finaliser: FNV alone spreads the last bytes poorly.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
