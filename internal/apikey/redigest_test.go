package apikey

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// The memStore's side of re-digests and pepper counts, as the SQL stores do them.

var (
	_ RedigestStore  = (*memStore)(nil)
	_ PepperUseStore = (*memStore)(nil)
)

func (m *memStore) RedigestAPIKeys(_ context.Context, rs []Redigest) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return 0, m.err
	}
	n := 0
	for _, r := range rs {
		k, ok := m.keys[r.ID]
		switch {
		case !ok:
		case !r.Previous && bytes.Equal(k.Hash, r.Expect):
			k.Hash, k.PepperVersion = bytes.Clone(r.Hash), r.PepperVersion
			m.keys[r.ID] = k
			n++
		case r.Previous && len(k.PrevHash) > 0 && bytes.Equal(k.PrevHash, r.Expect):
			k.PrevHash, k.PrevPepperVersion = bytes.Clone(r.Hash), r.PepperVersion
			m.keys[r.ID] = k
			n++
		}
	}
	return n, nil
}

func (m *memStore) APIKeyPepperUse(_ context.Context, now time.Time) ([]PepperUse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	by := map[string]*PepperUse{}
	use := func(v string) *PepperUse {
		if by[v] == nil {
			by[v] = &PepperUse{Version: v}
		}
		return by[v]
	}
	for _, k := range m.keys {
		live := !k.Revoked(now) && !k.Expired(now)
		if live {
			use(k.PepperVersion).Keys++
		} else {
			use(k.PepperVersion).Inactive++
		}
		if len(k.PrevHash) > 0 {
			if live && now.Before(k.PrevValidUntil) {
				use(k.PrevPepperVersion).PreviousSecrets++
			} else {
				use(k.PrevPepperVersion).Inactive++
			}
		}
	}
	var out []PepperUse
	for _, u := range by {
		out = append(out, *u)
	}
	return out, nil
}

func (m *memStore) APIKeysUsingPepper(_ context.Context, version string, now time.Time, limit int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for _, k := range m.keys {
		if k.Revoked(now) || k.Expired(now) {
			continue
		}
		if k.PepperVersion == version || (len(k.PrevHash) > 0 && k.PrevPepperVersion == version && now.Before(k.PrevValidUntil)) {
			ids = append(ids, k.ID)
		}
	}
	slices.Sort(ids)
	return ids[:min(limit, len(ids))], nil
}

// A key that verifies under an older pepper is re-digested under the current one, off the
// request path, after which the older pepper can go: a service without it still verifies the
// key, and retiring it is no longer refused.
func TestRedigestMovesKeysToTheCurrentPepper(t *testing.T) {
	v1, v2 := testPepper(t, "v1"), testPepper(t, "v2")
	h := newHarness(t, v1)
	k, raw := h.create(t, CreateInput{})
	other, otherRaw := h.create(t, CreateInput{Name: "unused"})

	rd := NewRedigester(h.store, RedigestOptions{})
	svc := h.service(t, peppersOf(t, v2, v1), Options{Redigest: rd, CacheTTL: -1})
	err := CheckRetirePepper(t.Context(), h.store, "v1", h.clk.Now())
	if !errors.Is(err, ErrPepperInUse) || !strings.Contains(err.Error(), k.ID) || !strings.Contains(err.Error(), "2 live api keys") {
		t.Fatalf("retiring v1 while two keys use it: %v", err)
	}

	if _, err := svc.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	if got := h.store.get(t, k.ID); got.PepperVersion != "v1" {
		t.Fatal("the re-digest was written on the request path")
	}
	if rd.Pending() != 1 {
		t.Fatalf("pending re-digests %d, want 1", rd.Pending())
	}
	if _, err := svc.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	if rd.Pending() != 1 {
		t.Fatalf("pending re-digests %d after a second use, want still 1", rd.Pending())
	}
	n, err := rd.Flush(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("Flush = %d, %v", n, err)
	}
	got := h.store.get(t, k.ID)
	if got.PepperVersion != "v2" || !bytes.Equal(got.Hash, v2.digest(k.ID, secretOf(t, raw))) {
		t.Fatalf("after the re-digest the key is under %s", got.PepperVersion)
	}
	// Without v1 the re-digested key verifies; the unused one does not.
	onlyV2 := h.service(t, peppersOf(t, v2), Options{CacheTTL: -1})
	if _, err := onlyV2.Verify(t.Context(), raw); err != nil {
		t.Fatalf("the re-digested key under v2 alone: %v", err)
	}
	_, err = onlyV2.Verify(t.Context(), otherRaw)
	requireRejected(t, err)
	// Retiring v1 is refused for the one key left, named.
	err = CheckRetirePepper(t.Context(), h.store, "v1", h.clk.Now())
	if !errors.Is(err, ErrPepperInUse) || !strings.Contains(err.Error(), other.ID) || strings.Contains(err.Error(), k.ID) {
		t.Fatalf("retiring v1 with one key left: %v", err)
	}
	// Revoked, that key no longer holds v1 back.
	if _, err := svc.Revoke(as(t, adminA), other.ID); err != nil {
		t.Fatal(err)
	}
	if err := CheckRetirePepper(t.Context(), h.store, "v1", h.clk.Now()); err != nil {
		t.Fatalf("retiring v1 with only a revoked key under it: %v", err)
	}
	st, err := PepperStatusOf(t.Context(), h.store, PepperRing{Peppers: peppersOf(t, v2, v1)}, nil, h.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []PepperVersionStatus{
		{PepperUse: PepperUse{Version: "v1", Inactive: 1}, State: PepperOlder},
		{PepperUse: PepperUse{Version: "v2", Keys: 1}, State: PepperCurrent},
	}
	if st.Current != "v2" || !slices.Equal(st.Versions, want) {
		t.Fatalf("status %+v, want %+v", st, want)
	}
}

// The previous secret of a rotated key, used within its grace period, is re-digested too, in
// its own slot.
func TestRedigestPreviousSecret(t *testing.T) {
	v1, v2 := testPepper(t, "v1"), testPepper(t, "v2")
	h := newHarness(t, v1)
	k, oldRaw := h.create(t, CreateInput{})
	if _, _, err := h.svc.Rotate(as(t, adminA), k.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	rd := NewRedigester(h.store, RedigestOptions{})
	svc := h.service(t, peppersOf(t, v2, v1), Options{Redigest: rd, CacheTTL: -1})
	if _, err := svc.Verify(t.Context(), oldRaw); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := h.store.get(t, k.ID)
	if got.PrevPepperVersion != "v2" || got.PepperVersion != "v1" {
		t.Fatalf("after using the previous secret: current under %s, previous under %s; want v1, v2", got.PepperVersion, got.PrevPepperVersion)
	}
	st, err := PepperStatusOf(t.Context(), h.store, PepperRing{Peppers: peppersOf(t, v2, v1)}, nil, h.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := st.Version("v2"); u.PreviousSecrets != 1 || u.Keys != 0 {
		t.Fatalf("v2 status %+v", u)
	}
	if _, err := svc.Verify(t.Context(), oldRaw); err != nil {
		t.Fatalf("the re-digested previous secret: %v", err)
	}
}

// Keys under the current pepper, or under a pending one (another replica may already hash with
// it), are not re-digested.
func TestRedigestLeavesCurrentAndPending(t *testing.T) {
	v1, v2 := testPepper(t, "v1"), testPepper(t, "v2")
	h := newHarness(t, v2)
	_, rawV2 := h.create(t, CreateInput{})
	rd := NewRedigester(h.store, RedigestOptions{})
	// This replica has v2 only added: v1 current, v2 pending.
	svc := h.service(t, peppersOf(t, v1, v2), Options{Redigest: rd, CacheTTL: -1})
	if err := svc.SetPeppers(peppersOf(t, v1, v2), "v2"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Verify(t.Context(), rawV2); err != nil {
		t.Fatal(err)
	}
	// Without pending, v2 counts as older and would be moved to v1.
	noPending := h.service(t, peppersOf(t, v2), Options{Redigest: rd, CacheTTL: -1})
	if _, err := noPending.Verify(t.Context(), rawV2); err != nil {
		t.Fatal(err)
	}
	if rd.Pending() != 0 {
		t.Fatalf("%d re-digests queued for keys under the current or a pending pepper", rd.Pending())
	}
	if err := svc.SetPeppers(peppersOf(t, v1, v2)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Verify(t.Context(), rawV2); err != nil {
		t.Fatal(err)
	}
	if rd.Pending() != 1 {
		t.Fatal("without v2 pending, its keys are not re-digested to the current v1")
	}
}

// A rotation between the verification and the write wins: the re-digest does not overwrite it.
func TestRedigestLosesToARotation(t *testing.T) {
	v1, v2 := testPepper(t, "v1"), testPepper(t, "v2")
	h := newHarness(t, v1)
	k, raw := h.create(t, CreateInput{})
	rd := NewRedigester(h.store, RedigestOptions{})
	svc := h.service(t, peppersOf(t, v2, v1), Options{Redigest: rd, CacheTTL: -1})
	if _, err := svc.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	rotated, newRaw, err := svc.Rotate(as(t, adminA), k.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n, err := rd.Flush(t.Context())
	if err != nil || n != 0 {
		t.Fatalf("Flush after a rotation = %d, %v; want 0 written", n, err)
	}
	if got := h.store.get(t, k.ID); !bytes.Equal(got.Hash, rotated.Hash) {
		t.Fatal("the re-digest overwrote the rotation")
	}
	if _, err := svc.Verify(t.Context(), newRaw); err != nil {
		t.Fatal(err)
	}
}

// SetPeppers swaps the set in use: new keys are hashed with the new current pepper, keys of a
// pepper no longer held stop verifying, and a malformed set is refused.
func TestSetPeppers(t *testing.T) {
	v1, v2 := testPepper(t, "v1"), testPepper(t, "v2")
	h := newHarness(t, v1)
	_, rawV1 := h.create(t, CreateInput{})
	svc := h.service(t, peppersOf(t, v1), Options{CacheTTL: -1})
	if err := svc.SetPeppers(peppersOf(t, v2, v1)); err != nil {
		t.Fatal(err)
	}
	k, _, err := svc.Create(as(t, adminA), CreateInput{Name: "after", Role: "VIEWER"})
	if err != nil || k.PepperVersion != "v2" {
		t.Fatalf("a key created after the swap is under %q (%v)", k.PepperVersion, err)
	}
	ps, pending := svc.Peppers()
	if ps.Current().Version != "v2" || len(pending) != 0 {
		t.Fatalf("Peppers() = %s, %v", ps, pending)
	}
	if err := svc.SetPeppers(peppersOf(t, v2)); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Verify(t.Context(), rawV1)
	requireRejected(t, err)
	for _, tt := range []struct {
		ps      Peppers
		pending []string
	}{
		{Peppers{}, nil},
		{peppersOf(t, v2, v1), []string{"v2"}},
		{peppersOf(t, v2, v1), []string{"v3"}},
	} {
		if err := svc.SetPeppers(tt.ps, tt.pending...); err == nil {
			t.Errorf("SetPeppers(%s, %v) accepted", tt.ps, tt.pending)
		}
	}
	if ps, _ := svc.Peppers(); ps.Current().Version != "v2" || len(ps.Versions()) != 1 {
		t.Fatalf("a refused set changed the peppers: %s", ps)
	}
}

// A failed write keeps its re-digests; the pending set is bounded; Run writes what is left when
// it stops.
func TestRedigester(t *testing.T) {
	v1, v2 := testPepper(t, "v1"), testPepper(t, "v2")
	h := newHarness(t, v1)
	var raws []string
	for range 3 {
		_, raw := h.create(t, CreateInput{})
		raws = append(raws, raw)
	}
	var written []int
	rd := NewRedigester(h.store, RedigestOptions{MaxPending: 2, BatchSize: 1, Interval: time.Hour,
		OnWritten: func(n int) { written = append(written, n) }})
	svc := h.service(t, peppersOf(t, v2, v1), Options{Redigest: rd, CacheTTL: -1})
	for _, raw := range raws {
		if _, err := svc.Verify(t.Context(), raw); err != nil {
			t.Fatal(err)
		}
	}
	if rd.Pending() != 2 {
		t.Fatalf("pending %d, want the bound 2", rd.Pending())
	}
	h.store.setErr(errors.New("database down"))
	if _, err := rd.Flush(t.Context()); err == nil {
		t.Fatal("Flush succeeded on a failing store")
	}
	if rd.Pending() != 2 {
		t.Fatalf("pending %d after a failed flush, want 2 kept", rd.Pending())
	}
	h.store.setErr(nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rd.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rd.Pending() != 0 || written[len(written)-1] != 2 {
		t.Fatalf("after Run stopped: pending %d, written %v", rd.Pending(), written)
	}
	if err := rd.Run(t.Context()); err == nil {
		t.Fatal("Run ran twice")
	}
}

func secretOf(t *testing.T, raw string) string {
	t.Helper()
	_, secret, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return secret
}
