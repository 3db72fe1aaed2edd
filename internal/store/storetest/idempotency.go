package storetest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/idempotency"
)

// IdempotencyOptions say what the suite may check of an adapter beyond the Store contract.
type IdempotencyOptions struct {
	// CountRecords counts every record s (a store open returned) holds, live or dead. Nil for a
	// store whose records expire by themselves (Redis), where PurgeIdempotencyKeys may delete
	// nothing.
	CountRecords func(ctx context.Context, s idempotency.Store) (int, error)
}

// RunIdempotency is the conformance suite of idempotency.Store. open must return an empty store
// that no other test uses and close it through t.Cleanup. Times are relative to the wall clock
// (a Redis record really expires at its ExpiresAt), with "later" instants passed as now.
func RunIdempotency(t *testing.T, open func(t *testing.T) idempotency.Store, opts IdempotencyOptions) {
	t.Run("reserve", func(t *testing.T) { t.Parallel(); testIdemReserve(t, open) })
	t.Run("concurrent reserve", func(t *testing.T) { t.Parallel(); testIdemConcurrentReserve(t, open) })
	t.Run("scopes", func(t *testing.T) { t.Parallel(); testIdemScopes(t, open) })
	t.Run("complete", func(t *testing.T) { t.Parallel(); testIdemComplete(t, open) })
	t.Run("release", func(t *testing.T) { t.Parallel(); testIdemRelease(t, open) })
	t.Run("lock expiry", func(t *testing.T) { t.Parallel(); testIdemLockExpiry(t, open) })
	t.Run("expiry", func(t *testing.T) { t.Parallel(); testIdemExpiry(t, open) })
	t.Run("purge", func(t *testing.T) { t.Parallel(); testIdemPurge(t, open, opts) })
	t.Run("invalid input", func(t *testing.T) { t.Parallel(); testIdemInvalid(t, open) })
}

// idemTimes are the instants of one test: now (the wall clock at microsecond precision, in a
// zone other than UTC so adapters must normalise), the lock expiry and the record's expiry.
type idemTimes struct {
	now, locked, expires time.Time
}

func newIdemTimes() idemTimes {
	now := time.Now().Truncate(time.Microsecond).In(time.FixedZone("UTC-3", -3*60*60))
	return idemTimes{now: now, locked: now.Add(35 * time.Second), expires: now.Add(time.Hour)}
}

// idemRecord returns a valid reservation of key for scope, made at tt.now.
func idemRecord(scope idempotency.Scope, key, body string, tt idemTimes) idempotency.Record {
	return idempotency.Record{
		Scope:       scope,
		Key:         key,
		Fingerprint: idempotency.FingerprintRequest(http.MethodPost, "/v1/agents", "", []byte(body)),
		Token:       idempotency.NewToken(),
		State:       idempotency.InFlight,
		CreatedAt:   tt.now,
		LockedUntil: tt.locked,
		ExpiresAt:   tt.expires,
	}
}

// idemStored is what a store returns for r: times in UTC.
func idemStored(r idempotency.Record) idempotency.Record {
	r.CreatedAt, r.LockedUntil, r.ExpiresAt = stored(r.CreatedAt), stored(r.LockedUntil), stored(r.ExpiresAt)
	return r
}

var idemScope = idempotency.Scope{Tenant: "ten_01", Principal: "usr_01"}

// reserve calls ReserveIdempotencyKey and fails the test on an error.
func reserve(t *testing.T, s idempotency.Store, r idempotency.Record, now time.Time) (idempotency.Record, bool) {
	t.Helper()
	got, ok, err := s.ReserveIdempotencyKey(t.Context(), r, now)
	if err != nil {
		t.Fatalf("ReserveIdempotencyKey(%q): %v", r.Key, err)
	}
	return got, ok
}

// mustReserve reserves r and checks that it was stored as given.
func mustReserve(t *testing.T, s idempotency.Store, r idempotency.Record, now time.Time) {
	t.Helper()
	got, ok := reserve(t, s, r, now)
	if !ok {
		t.Fatalf("ReserveIdempotencyKey(%q) = false (existing %+v), want true", r.Key, got)
	}
	checkIdemRecord(t, "reserved", idemStored(r), got)
}

// mustFind reserves a different request under r's scope and key at now, which must fail and
// return the live record; it returns it.
func mustFind(t *testing.T, s idempotency.Store, scope idempotency.Scope, key string, now time.Time) idempotency.Record {
	t.Helper()
	probe := idemRecord(scope, key, "probe-"+idempotency.NewToken(), newIdemTimes())
	got, ok := reserve(t, s, probe, now)
	if ok {
		t.Fatalf("a probe reserved %q, want the live record returned", key)
	}
	return got
}

func checkIdemRecord(t *testing.T, what string, want, got idempotency.Record) {
	t.Helper()
	// Bodies are compared apart: cmp walks a large one byte by byte, slowly.
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(idempotency.Response{}, "Body")); diff != "" {
		t.Errorf("%s record (-want +got):\n%s", what, diff)
	}
	if want.Response != nil && got.Response != nil && !bytes.Equal(want.Response.Body, got.Response.Body) {
		t.Errorf("%s response body = %q, want %q", what, truncateBytes(got.Response.Body), truncateBytes(want.Response.Body))
	}
	for name, tm := range map[string]time.Time{"CreatedAt": got.CreatedAt, "LockedUntil": got.LockedUntil, "ExpiresAt": got.ExpiresAt} {
		checkUTC(t, what+" "+name, tm)
	}
}

func testIdemReserve(t *testing.T, open func(t *testing.T) idempotency.Store) {
	s := open(t)
	tt := newIdemTimes()
	first := idemRecord(idemScope, "key-1", "body", tt)
	mustReserve(t, s, first, tt.now)

	// The same request again, and another one, while the first is in flight: both get the
	// first's record, unchanged.
	for _, body := range []string{"body", "other body"} {
		again := idemRecord(idemScope, "key-1", body, tt)
		got, ok := reserve(t, s, again, tt.now.Add(time.Second))
		if ok {
			t.Fatalf("second reservation with body %q succeeded, want the first's record", body)
		}
		checkIdemRecord(t, "existing", idemStored(first), got)
	}

	// Keys are compared byte for byte: case matters, and every printable character is kept.
	odd := []string{"KEY-1", "key-1 ", `a "quoted" \ key`, strings.Repeat("~", idempotency.MaxKeyLength), " !#$%&'()*+,-./:;<=>?@[]^_`{|}"}
	for _, key := range odd {
		mustReserve(t, s, idemRecord(idemScope, key, "body", tt), tt.now)
	}
	for _, key := range odd {
		if got := mustFind(t, s, idemScope, key, tt.now); got.Key != key {
			t.Errorf("record of key %q has key %q", key, got.Key)
		}
	}
}

func testIdemConcurrentReserve(t *testing.T, open func(t *testing.T) idempotency.Store) {
	s := open(t)
	tt := newIdemTimes()
	const n = 16
	type result struct {
		rec, mine idempotency.Record
		ok        bool
		err       error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			r := idemRecord(idemScope, "contended", "body", tt)
			<-start
			got, ok, err := s.ReserveIdempotencyKey(context.Background(), r, tt.now)
			results[i] = result{rec: got, mine: r, ok: ok, err: err}
		})
	}
	close(start)
	wg.Wait()
	var winners []idempotency.Record
	for _, r := range results {
		if r.err != nil {
			t.Fatalf("ReserveIdempotencyKey: %v", r.err)
		}
		if r.ok {
			winners = append(winners, r.mine)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d of %d concurrent reservations succeeded, want exactly 1", len(winners), n)
	}
	for _, r := range results {
		checkIdemRecord(t, "returned", idemStored(winners[0]), r.rec)
	}
}

func testIdemScopes(t *testing.T, open func(t *testing.T) idempotency.Store) {
	s := open(t)
	tt := newIdemTimes()
	scopes := []idempotency.Scope{
		idemScope,
		{Tenant: "ten_02", Principal: idemScope.Principal},      // another tenant, same subject
		{Tenant: idemScope.Tenant, Principal: "key_01"},         // same tenant, another caller
		{Tenant: idempotency.GlobalTenant, Principal: "usr_01"}, // above tenants
		{Tenant: "ten_0", Principal: "1usr_01"},                 // the concatenation of the first
	}
	recs := make([]idempotency.Record, len(scopes))
	for i, sc := range scopes {
		recs[i] = idemRecord(sc, "shared-key", "body", tt)
		mustReserve(t, s, recs[i], tt.now)
	}
	// Completing one scope's record leaves the others in flight.
	resp := idempotency.Response{Status: http.StatusCreated, Body: []byte(`{"scope":0}`)}
	if err := s.CompleteIdempotencyKey(t.Context(), scopes[0], "shared-key", recs[0].Token, resp, tt.expires); err != nil {
		t.Fatalf("CompleteIdempotencyKey: %v", err)
	}
	for i, sc := range scopes {
		got := mustFind(t, s, sc, "shared-key", tt.now)
		want := idemStored(recs[i])
		if i == 0 {
			want.State, want.Response = idempotency.Completed, &resp
		}
		checkIdemRecord(t, fmt.Sprintf("scope %+v", sc), want, got)
	}
	// Another scope's token cannot release a record.
	if err := s.ReleaseIdempotencyKey(t.Context(), scopes[2], "shared-key", recs[1].Token); err != nil {
		t.Fatalf("ReleaseIdempotencyKey: %v", err)
	}
	checkIdemRecord(t, "after a foreign release", idemStored(recs[2]), mustFind(t, s, scopes[2], "shared-key", tt.now))
}

func testIdemComplete(t *testing.T, open func(t *testing.T) idempotency.Store) {
	tests := []struct {
		name string
		resp idempotency.Response
	}{
		{"json with headers", idempotency.Response{
			Status: http.StatusCreated,
			Header: http.Header{"Content-Type": {"application/json"}, "Etag": {`"r1"`}, "Location": {"/v1/agents/agt_01"}, "Vary": {"Accept", "Origin"}},
			Body:   []byte("{\"id\":\"agt_01\"}\n"),
		}},
		{"problem", idempotency.Response{
			Status: http.StatusConflict,
			Header: http.Header{"Content-Type": {"application/problem+json"}},
			Body:   []byte(`{"status":409}`),
		}},
		{"binary body", idempotency.Response{Status: http.StatusOK, Body: []byte{0x00, 0xff, 0x80, '\n', 0x00}}},
		{"no body no headers", idempotency.Response{Status: http.StatusNoContent}},
		{"large body", idempotency.Response{Status: http.StatusOK, Body: []byte(strings.Repeat("0123456789abcdef", 16<<10))}},
	}
	s := open(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tt := newIdemTimes()
			r := idemRecord(idemScope, "complete-"+tc.name, "body", tt)
			mustReserve(t, s, r, tt.now)
			expires := tt.expires.Add(time.Hour)
			if err := s.CompleteIdempotencyKey(t.Context(), r.Scope, r.Key, r.Token, tc.resp, expires); err != nil {
				t.Fatalf("CompleteIdempotencyKey: %v", err)
			}
			want := r
			want.State, want.ExpiresAt, want.Response = idempotency.Completed, expires, &tc.resp
			// A completed record is never taken over, even with its own fingerprint past its lock.
			got, ok := reserve(t, s, idemRecord(idemScope, r.Key, "body", tt), tt.locked.Add(time.Minute))
			if ok {
				t.Fatal("a completed record was taken over")
			}
			checkIdemRecord(t, "completed", idemStored(want), got)

			// Completing again, with its token or another, fails: it is no longer in flight.
			for _, token := range []string{r.Token, idempotency.NewToken()} {
				err := s.CompleteIdempotencyKey(t.Context(), r.Scope, r.Key, token, idempotency.Response{Status: 200}, expires)
				if code := errs.CodeOf(err); code != errs.Conflict {
					t.Errorf("second CompleteIdempotencyKey: error %v, want code %q", err, errs.Conflict)
				}
			}
			// Release leaves a completed record alone.
			if err := s.ReleaseIdempotencyKey(t.Context(), r.Scope, r.Key, r.Token); err != nil {
				t.Fatalf("ReleaseIdempotencyKey: %v", err)
			}
			checkIdemRecord(t, "completed after release", idemStored(want), mustFind(t, s, idemScope, r.Key, tt.now))
		})
	}

	t.Run("unknown key or token", func(t *testing.T) {
		tt := newIdemTimes()
		r := idemRecord(idemScope, "complete-unknown", "body", tt)
		mustReserve(t, s, r, tt.now)
		resp := idempotency.Response{Status: http.StatusCreated}
		for name, c := range map[string]struct{ key, token string }{
			"unknown key":   {"never-reserved", r.Token},
			"foreign token": {r.Key, idempotency.NewToken()},
		} {
			err := s.CompleteIdempotencyKey(t.Context(), idemScope, c.key, c.token, resp, tt.expires)
			if code := errs.CodeOf(err); code != errs.Conflict {
				t.Errorf("%s: CompleteIdempotencyKey error %v, want code %q", name, err, errs.Conflict)
			}
		}
		checkIdemRecord(t, "untouched", idemStored(r), mustFind(t, s, idemScope, r.Key, tt.now))
	})
}

func testIdemRelease(t *testing.T, open func(t *testing.T) idempotency.Store) {
	s := open(t)
	tt := newIdemTimes()
	r := idemRecord(idemScope, "release", "body", tt)
	mustReserve(t, s, r, tt.now)
	if err := s.ReleaseIdempotencyKey(t.Context(), r.Scope, r.Key, idempotency.NewToken()); err != nil {
		t.Fatalf("ReleaseIdempotencyKey with a foreign token: %v", err)
	}
	checkIdemRecord(t, "after a foreign release", idemStored(r), mustFind(t, s, idemScope, r.Key, tt.now))
	if err := s.ReleaseIdempotencyKey(t.Context(), r.Scope, r.Key, r.Token); err != nil {
		t.Fatalf("ReleaseIdempotencyKey: %v", err)
	}
	// Released: the same request, or another, may reserve the key at once.
	next := idemRecord(idemScope, r.Key, "another body", tt)
	mustReserve(t, s, next, tt.now)
	// The old token neither completes nor releases the new record.
	err := s.CompleteIdempotencyKey(t.Context(), r.Scope, r.Key, r.Token, idempotency.Response{Status: 201}, tt.expires)
	if code := errs.CodeOf(err); code != errs.Conflict {
		t.Errorf("CompleteIdempotencyKey with the released token: error %v, want code %q", err, errs.Conflict)
	}
	if err := s.ReleaseIdempotencyKey(t.Context(), r.Scope, r.Key, r.Token); err != nil {
		t.Fatalf("ReleaseIdempotencyKey again: %v", err)
	}
	checkIdemRecord(t, "the new record", idemStored(next), mustFind(t, s, idemScope, r.Key, tt.now))
	// Releasing what does not exist is no error.
	if err := s.ReleaseIdempotencyKey(t.Context(), idemScope, "never-reserved", idempotency.NewToken()); err != nil {
		t.Errorf("ReleaseIdempotencyKey of an unknown key: %v", err)
	}
}

func testIdemLockExpiry(t *testing.T, open func(t *testing.T) idempotency.Store) {
	s := open(t)
	tt := newIdemTimes()
	crashed := idemRecord(idemScope, "crashed", "body", tt)
	mustReserve(t, s, crashed, tt.now)

	// Up to the lock's expiry the record turns everyone away.
	got, ok := reserve(t, s, idemRecord(idemScope, crashed.Key, "body", tt), tt.locked.Add(-time.Microsecond))
	if ok {
		t.Fatal("a record was taken over before its lock expired")
	}
	checkIdemRecord(t, "locked", idemStored(crashed), got)

	// Past it, another request (another fingerprint) is still refused...
	later := tt.locked
	got, ok = reserve(t, s, idemRecord(idemScope, crashed.Key, "another body", tt), later)
	if ok {
		t.Fatal("a request with another fingerprint took over an expired lock")
	}
	checkIdemRecord(t, "expired lock, other request", idemStored(crashed), got)

	// ...and a retry of the same request takes it over.
	retryTimes := idemTimes{now: later, locked: later.Add(35 * time.Second), expires: later.Add(time.Hour)}
	retry := idemRecord(idemScope, crashed.Key, "body", retryTimes)
	mustReserve(t, s, retry, later)

	// The crashed attempt, should it come back, can neither complete nor release the record.
	err := s.CompleteIdempotencyKey(t.Context(), idemScope, crashed.Key, crashed.Token, idempotency.Response{Status: 201}, tt.expires)
	if code := errs.CodeOf(err); code != errs.Conflict {
		t.Errorf("CompleteIdempotencyKey by the attempt taken over: error %v, want code %q", err, errs.Conflict)
	}
	if err := s.ReleaseIdempotencyKey(t.Context(), idemScope, crashed.Key, crashed.Token); err != nil {
		t.Fatalf("ReleaseIdempotencyKey by the attempt taken over: %v", err)
	}
	checkIdemRecord(t, "taken over", idemStored(retry), mustFind(t, s, idemScope, crashed.Key, later))
	resp := idempotency.Response{Status: http.StatusCreated, Body: []byte("retried")}
	if err := s.CompleteIdempotencyKey(t.Context(), idemScope, crashed.Key, retry.Token, resp, retryTimes.expires); err != nil {
		t.Fatalf("CompleteIdempotencyKey by the retry: %v", err)
	}
}

func testIdemExpiry(t *testing.T, open func(t *testing.T) idempotency.Store) {
	s := open(t)
	tt := newIdemTimes()
	done := idemRecord(idemScope, "expiring", "body", tt)
	mustReserve(t, s, done, tt.now)
	resp := idempotency.Response{Status: http.StatusCreated, Body: []byte("first")}
	if err := s.CompleteIdempotencyKey(t.Context(), idemScope, done.Key, done.Token, resp, tt.expires); err != nil {
		t.Fatalf("CompleteIdempotencyKey: %v", err)
	}
	stale := idemRecord(idemScope, "stale in flight", "body", tt)
	mustReserve(t, s, stale, tt.now)

	// Just before expiry the records live; from ExpiresAt on they are dead, and any request,
	// whatever its fingerprint, starts afresh.
	if got := mustFind(t, s, idemScope, done.Key, tt.expires.Add(-time.Microsecond)); got.State != idempotency.Completed {
		t.Fatalf("record before expiry in state %q, want completed", got.State)
	}
	at := tt.expires
	fresh := idemTimes{now: at, locked: at.Add(35 * time.Second), expires: at.Add(time.Hour)}
	for _, key := range []string{done.Key, stale.Key} {
		mustReserve(t, s, idemRecord(idemScope, key, "a different body", fresh), at)
	}
}

func testIdemPurge(t *testing.T, open func(t *testing.T) idempotency.Store, opts IdempotencyOptions) {
	s := open(t)
	ctx := t.Context()
	tt := newIdemTimes()
	// Records expiring at tt.expires + i minutes, half of them completed.
	const n = 12
	recs := make([]idempotency.Record, n)
	for i := range recs {
		times := idemTimes{now: tt.now, locked: tt.locked, expires: tt.expires.Add(time.Duration(i) * time.Minute)}
		recs[i] = idemRecord(idemScope, fmt.Sprintf("purge-%02d", i), "body", times)
		mustReserve(t, s, recs[i], tt.now)
		if i%2 == 1 {
			resp := idempotency.Response{Status: 200, Body: []byte{byte(i)}}
			if err := s.CompleteIdempotencyKey(ctx, idemScope, recs[i].Key, recs[i].Token, resp, times.expires); err != nil {
				t.Fatalf("CompleteIdempotencyKey: %v", err)
			}
		}
	}
	count := func() int {
		t.Helper()
		got, err := opts.CountRecords(ctx, s)
		if err != nil {
			t.Fatalf("count records: %v", err)
		}
		return got
	}
	if opts.CountRecords != nil && count() != n {
		t.Fatalf("%d records before purging, want %d", count(), n)
	}

	// Nothing has expired yet.
	if got, err := s.PurgeIdempotencyKeys(ctx, tt.expires.Add(-time.Microsecond)); err != nil || got != 0 {
		t.Fatalf("PurgeIdempotencyKeys before any expiry = %d, %v; want 0", got, err)
	}
	// The first five expire (ExpiresAt <= now).
	cut := tt.expires.Add(4 * time.Minute)
	got, err := s.PurgeIdempotencyKeys(ctx, cut)
	if err != nil {
		t.Fatalf("PurgeIdempotencyKeys: %v", err)
	}
	if opts.CountRecords != nil {
		if got != 5 {
			t.Errorf("PurgeIdempotencyKeys = %d, want 5", got)
		}
		if c := count(); c != n-5 {
			t.Errorf("%d records after purging, want %d", c, n-5)
		}
	} else if got != 0 && got != 5 {
		t.Errorf("PurgeIdempotencyKeys = %d, want 0 (self-expiring store) or 5", got)
	}
	// The survivors are intact; the purged keys are free.
	for i, r := range recs {
		if i < 5 {
			mustReserve(t, s, idemRecord(idemScope, r.Key, "new", idemTimes{now: cut, locked: cut.Add(time.Minute), expires: cut.Add(time.Hour)}), cut)
			continue
		}
		got := mustFind(t, s, idemScope, r.Key, cut)
		if got.Token != r.Token || got.ExpiresAt.Compare(stored(r.ExpiresAt)) != 0 {
			t.Errorf("survivor %s = token %s expires %v, want %s %v", r.Key, got.Token, got.ExpiresAt, r.Token, stored(r.ExpiresAt))
		}
	}
	// Purging again finds nothing more to delete at that instant.
	if got, err := s.PurgeIdempotencyKeys(ctx, cut); err != nil || got != 0 {
		t.Errorf("second PurgeIdempotencyKeys = %d, %v; want 0", got, err)
	}
}

func testIdemInvalid(t *testing.T, open func(t *testing.T) idempotency.Store) {
	s := open(t)
	tt := newIdemTimes()
	valid := idemRecord(idemScope, "valid", "body", tt)
	tests := []struct {
		name   string
		mutate func(*idempotency.Record)
	}{
		{"empty key", func(r *idempotency.Record) { r.Key = "" }},
		{"key too long", func(r *idempotency.Record) { r.Key = strings.Repeat("k", idempotency.MaxKeyLength+1) }},
		{"control character in key", func(r *idempotency.Record) { r.Key = "a\nb" }},
		{"non-ASCII key", func(r *idempotency.Record) { r.Key = "clé" }},
		{"no tenant", func(r *idempotency.Record) { r.Scope.Tenant = "" }},
		{"no principal", func(r *idempotency.Record) { r.Scope.Principal = "" }},
		{"short token", func(r *idempotency.Record) { r.Token = "abc" }},
		{"upper-case token", func(r *idempotency.Record) { r.Token = strings.ToUpper(r.Token) }},
		{"completed", func(r *idempotency.Record) { r.State = idempotency.Completed }},
		{"with a response", func(r *idempotency.Record) { r.Response = &idempotency.Response{Status: 200} }},
		{"no created_at", func(r *idempotency.Record) { r.CreatedAt = time.Time{} }},
		{"lock not after creation", func(r *idempotency.Record) { r.LockedUntil = r.CreatedAt }},
		{"expiry not after creation", func(r *idempotency.Record) { r.ExpiresAt = r.CreatedAt.Add(-time.Second) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := valid
			tc.mutate(&r)
			_, ok, err := s.ReserveIdempotencyKey(t.Context(), r, tt.now)
			if ok || errs.CodeOf(err) != errs.Invalid {
				t.Errorf("ReserveIdempotencyKey = %v, %v; want code %q", ok, err, errs.Invalid)
			}
		})
	}
	mustReserve(t, s, valid, tt.now)
	for _, status := range []int{0, 99, 600} {
		err := s.CompleteIdempotencyKey(t.Context(), idemScope, valid.Key, valid.Token, idempotency.Response{Status: status}, tt.expires)
		if errs.CodeOf(err) != errs.Invalid {
			t.Errorf("CompleteIdempotencyKey with status %d: error %v, want code %q", status, err, errs.Invalid)
		}
	}
	checkIdemRecord(t, "after invalid completions", idemStored(valid), mustFind(t, s, idemScope, valid.Key, tt.now))
}

func truncateBytes(b []byte) []byte {
	if len(b) > 64 {
		return append(b[:64:64], "…"...)
	}
	return b
}
