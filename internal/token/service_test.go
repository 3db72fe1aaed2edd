package token_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/token"
)

var allAlgs = []string{token.AlgEdDSA, token.AlgES256, token.AlgRS256, token.AlgHS256}

func TestIssueVerifyEachAlgorithm(t *testing.T) {
	for _, alg := range allAlgs {
		t.Run(alg, func(t *testing.T) {
			clk := newClock()
			store := newFakeStore()
			svc := newService(t, store, clk, alg)

			raw, exp, err := svc.Issue(t.Context(), someClaims)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			wantExp := clk.Now().Add(testTTL)
			if !exp.Equal(wantExp) || exp.Location() != time.UTC {
				t.Errorf("expiresAt = %v, want %v UTC", exp, wantExp)
			}

			header, payload, _ := segments(t, raw)
			stored := store.all()
			if len(stored) != 1 || stored[0].Algorithm != alg || !strings.HasPrefix(stored[0].ID, "key_") {
				t.Fatalf("stored keys = %+v, want one %s key_… key", stored, alg)
			}
			wantHeader := map[string]any{"alg": alg, "kid": stored[0].ID, "typ": "at+jwt"}
			if d := cmp.Diff(wantHeader, header); d != "" {
				t.Errorf("header (-want +got):\n%s", d)
			}
			now := float64(clk.Now().Unix())
			wantPayload := map[string]any{
				"iss": testIssuer, "aud": []any{testAudience}, "sub": "usr_01", "tenant": "ten_01",
				"roles": []any{"ADMIN"}, "scope": "agents:read agents:write",
				"iat": now, "nbf": now, "exp": now + testTTL.Seconds(), "jti": payload["jti"],
			}
			if d := cmp.Diff(wantPayload, payload); d != "" {
				t.Errorf("payload (-want +got):\n%s", d)
			}
			if jti, _ := payload["jti"].(string); !regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`).MatchString(jti) {
				t.Errorf("jti = %q, want a ULID", jti)
			}

			p, err := svc.Verify(t.Context(), raw)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := principal.Principal{
				Subject: "usr_01", Tenant: "ten_01", Roles: []string{"ADMIN"},
				Scopes: []string{"agents:read", "agents:write"}, TokenID: payload["jti"].(string), ExpiresAt: wantExp,
			}
			if d := cmp.Diff(want, p); d != "" {
				t.Errorf("principal (-want +got):\n%s", d)
			}
		})
	}
}

func TestIssueMinimalClaims(t *testing.T) {
	clk := newClock()
	svc := newService(t, newFakeStore(), clk, token.AlgEdDSA)
	raw := issue(t, svc, token.Claims{Subject: "usr_root"})
	_, payload, _ := segments(t, raw)
	if _, ok := payload["tenant"]; ok {
		t.Errorf("payload has tenant %v, want it omitted when empty", payload["tenant"])
	}
	if d := cmp.Diff([]any{}, payload["roles"]); d != "" {
		t.Errorf("roles (-want +got):\n%s", d)
	}
	p, err := svc.Verify(t.Context(), raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := principal.Principal{Subject: "usr_root", ExpiresAt: clk.Now().Add(testTTL)}
	if d := cmp.Diff(want, p, cmpopts.IgnoreFields(principal.Principal{}, "TokenID")); d != "" {
		t.Errorf("principal (-want +got):\n%s", d)
	}
}

func TestIssueUniqueTokenIDs(t *testing.T) {
	svc := newService(t, newFakeStore(), newClock(), token.AlgEdDSA)
	seen := map[string]bool{}
	for range 50 {
		p, err := svc.Verify(t.Context(), issue(t, svc, someClaims))
		if err != nil {
			t.Fatal(err)
		}
		if seen[p.TokenID] {
			t.Fatalf("jti %s issued twice", p.TokenID)
		}
		seen[p.TokenID] = true
	}
}

func TestIssueRejectsInvalidClaims(t *testing.T) {
	svc := newService(t, newFakeStore(), newClock(), token.AlgEdDSA)
	for _, tc := range []struct {
		name  string
		c     token.Claims
		field string
	}{
		{"empty subject", token.Claims{}, "subject"},
		{"empty role", token.Claims{Subject: "usr_1", Roles: []string{"ADMIN", ""}}, "roles"},
		{"scope with space", token.Claims{Subject: "usr_1", Scopes: []string{"a b"}}, "scopes"},
		{"empty scope", token.Claims{Subject: "usr_1", Scopes: []string{""}}, "scopes"},
		{"scope with quote", token.Claims{Subject: "usr_1", Scopes: []string{`a"b`}}, "scopes"},
		{"scope non-ascii", token.Claims{Subject: "usr_1", Scopes: []string{"é"}}, "scopes"},
		{"token over 8 KiB", token.Claims{Subject: "usr_1", Scopes: slices.Repeat([]string{"agents:write"}, 700)}, "claims"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := svc.Issue(t.Context(), tc.c)
			e := errs.As(err)
			if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != tc.field {
				t.Fatalf("Issue error = %v, want invalid field %s", err, tc.field)
			}
		})
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	clk := newClock()
	secret := []byte(strings.Repeat("s", 32))
	for _, tc := range []struct {
		name   string
		mutate func(*token.Config)
		field  string
	}{
		{"leeway above 60s", func(c *token.Config) { c.Leeway = 61 * time.Second }, "leeway"},
		{"negative leeway", func(c *token.Config) { c.Leeway = -time.Second }, "leeway"},
		{"empty issuer", func(c *token.Config) { c.Issuer = " " }, "issuer"},
		{"empty audience", func(c *token.Config) { c.Audience = "" }, "audience"},
		{"unknown algorithm", func(c *token.Config) { c.Algorithm = "PS256" }, "algorithm"},
		{"alg none", func(c *token.Config) { c.Algorithm = "none" }, "algorithm"},
		{"zero ttl", func(c *token.Config) { c.TTL = 0 }, "ttl"},
		{"short hs256 secret", func(c *token.Config) { c.Algorithm = token.AlgHS256; c.HS256Secret = secret[:31] }, "hs256_secret"},
		{"hs256 secret with EdDSA", func(c *token.Config) { c.HS256Secret = secret }, "hs256_secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(clk, token.AlgEdDSA)
			tc.mutate(&cfg)
			store := newFakeStore()
			_, err := token.New(t.Context(), store, cfg, nil)
			e := errs.As(err)
			if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != tc.field {
				t.Fatalf("New error = %v, want invalid field %s", err, tc.field)
			}
			if n := len(store.all()); n != 0 {
				t.Errorf("store holds %d keys after a rejected config", n)
			}
		})
	}
	t.Run("nil store", func(t *testing.T) {
		if _, err := token.New(t.Context(), nil, testConfig(clk, token.AlgEdDSA), nil); err == nil {
			t.Fatal("New with a nil store succeeded")
		}
	})
}

func TestNewAcceptsLeewayOf60s(t *testing.T) {
	newService(t, newFakeStore(), newClock(), token.AlgEdDSA, func(c *token.Config) { c.Leeway = 60 * time.Second })
}

func TestNewDefaultsToEdDSA(t *testing.T) {
	store := newFakeStore()
	newService(t, store, newClock(), "")
	if k := store.all(); len(k) != 1 || k[0].Algorithm != token.AlgEdDSA {
		t.Fatalf("stored keys = %+v, want one EdDSA key", k)
	}
}

func TestNewFailsWhenStoreFails(t *testing.T) {
	clk := newClock()
	t.Run("list", func(t *testing.T) {
		store := newFakeStore()
		store.setListErr(errStoreDown)
		if _, err := token.New(t.Context(), store, testConfig(clk, token.AlgEdDSA), nil); err == nil {
			t.Fatal("New succeeded with a failing store")
		}
	})
	t.Run("reload after create", func(t *testing.T) {
		store := newFakeStore()
		store.afterCreate = func(context.Context) error { store.setListErr(errStoreDown); return nil }
		if _, err := token.New(t.Context(), store, testConfig(clk, token.AlgEdDSA), nil); err == nil {
			t.Fatal("New succeeded although the keys could not be reloaded")
		}
	})
	t.Run("create", func(t *testing.T) {
		store := newFakeStore()
		store.createErr = errStoreDown
		if _, err := token.New(t.Context(), store, testConfig(clk, token.AlgEdDSA), nil); err == nil {
			t.Fatal("New succeeded although the key could not be stored")
		}
	})
}

func TestKeyPersistence(t *testing.T) {
	for _, alg := range allAlgs {
		t.Run(alg, func(t *testing.T) {
			clk := newClock()
			store := newFakeStore()
			first := newService(t, store, clk, alg)
			raw := issue(t, first, someClaims)
			clk.Advance(time.Minute)
			second := newService(t, store, clk, alg)

			if n := len(store.all()); n != 1 {
				t.Fatalf("store holds %d keys, want the first replica's one", n)
			}
			if a, b := kidOf(t, raw), kidOf(t, issue(t, second, someClaims)); a != b {
				t.Errorf("second replica signs with %s, want %s", b, a)
			}
			if _, err := second.Verify(t.Context(), raw); err != nil {
				t.Errorf("second replica rejects the first's token: %v", err)
			}
		})
	}
}

// Replicas that start at once on one store each store a key, then must all sign with the same one.
// The store holds every CreateSigningKey until all replicas have stored theirs, so each reload sees
// every key: without the reload-and-pick-oldest step each replica would keep its own key.
func TestConcurrentNewConverges(t *testing.T) {
	const replicas = 6
	for _, alg := range []string{token.AlgEdDSA, token.AlgES256, token.AlgHS256} {
		t.Run(alg, func(t *testing.T) {
			clk := newClock()
			store := newFakeStore()
			// Every replica's first load sees the empty store, and no replica reloads before all
			// have stored their key.
			store.beforeFirstLists, store.firstLists = replicas, newBarrier(replicas)
			store.afterCreate = newBarrier(replicas).wait
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()

			svcs := make([]*token.Service, replicas)
			errCh := make(chan error, replicas)
			var wg sync.WaitGroup
			for i := range replicas {
				wg.Go(func() {
					svc, err := token.New(ctx, store, testConfig(clk, alg), nil)
					svcs[i] = svc
					errCh <- err
				})
			}
			wg.Wait()
			close(errCh)
			for err := range errCh {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
			}

			stored := store.all()
			if len(stored) != replicas {
				t.Fatalf("store holds %d keys, want %d (one per racing replica)", len(stored), replicas)
			}
			oldest := slices.MinFunc(stored, func(a, b token.SigningKey) int {
				if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
					return c
				}
				return strings.Compare(a.ID, b.ID)
			})
			for i, svc := range svcs {
				raw := issue(t, svc, someClaims)
				if kid := kidOf(t, raw); kid != oldest.ID {
					t.Errorf("replica %d signs with %s, want the oldest key %s", i, kid, oldest.ID)
				}
				for j, other := range svcs {
					if _, err := other.Verify(t.Context(), raw); err != nil {
						t.Errorf("replica %d rejects replica %d's token: %v", j, i, err)
					}
				}
			}
		})
	}
}

func TestActiveKeyIsOldestWhateverTheStoreOrder(t *testing.T) {
	clk := newClock()
	created := clk.Now().Add(-time.Hour)
	// Equal CreatedAt: the smaller ID wins. An older key of another algorithm is ignored.
	store := newFakeStore(
		newStoredKey(t, token.AlgES256, "key_0", created.Add(-time.Hour)),
		newStoredKey(t, token.AlgEdDSA, "key_B", created),
		newStoredKey(t, token.AlgEdDSA, "key_A", created),
		newStoredKey(t, token.AlgEdDSA, "key_C", created.Add(time.Second)),
	)
	for _, newestFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("newestFirst=%v", newestFirst), func(t *testing.T) {
			store.newestFirst = newestFirst
			svc := newService(t, store, clk, token.AlgEdDSA)
			if kid := kidOf(t, issue(t, svc, someClaims)); kid != "key_A" {
				t.Errorf("signs with %s, want key_A", kid)
			}
		})
	}
}

// A replica that raced at first start and picked a key that turns out not to be the oldest moves
// to the oldest one at its next reload.
func TestReloadReelectsOldestKey(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	svc := newService(t, store, clk, token.AlgEdDSA)
	before := issue(t, svc, someClaims)

	store.add(newStoredKey(t, token.AlgEdDSA, "key_EARLIER", clk.Now().Add(-time.Second)))
	if err := svc.Reload(t.Context()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if kid := kidOf(t, issue(t, svc, someClaims)); kid != "key_EARLIER" {
		t.Errorf("signs with %s after reload, want key_EARLIER", kid)
	}
	if _, err := svc.Verify(t.Context(), before); err != nil {
		t.Errorf("token of the previous active key rejected: %v", err)
	}
}

// The first token of a racing replica reaching this one makes it reload (once the rate limit
// allows), and both then sign with the same key.
func TestUnknownKIDFromRacingReplicaHealsDivergence(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	late := newService(t, store, clk, token.AlgEdDSA)
	// Another replica stored an older key after this one had reloaded.
	early := newStoredKey(t, token.AlgEdDSA, "key_EARLY", clk.Now().Add(-time.Second))
	store.add(early)
	method, priv := storedSigner(t, store, early.ID)
	raw := sign(t, method, priv, map[string]any{"kid": early.ID}, validClaims(clk))

	clk.Advance(10 * time.Second)
	if _, err := late.Verify(t.Context(), raw); err != nil {
		t.Fatalf("token of the other replica rejected: %v", err)
	}
	if kid := kidOf(t, issue(t, late, someClaims)); kid != early.ID {
		t.Errorf("signs with %s, want %s", kid, early.ID)
	}
}

func TestEarlierKeysOfOtherAlgorithmsStillVerify(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	ed := newService(t, store, clk, token.AlgEdDSA)
	hs := newService(t, store, clk, token.AlgHS256)
	edToken, hsToken := issue(t, ed, someClaims), issue(t, hs, someClaims)

	clk.Advance(time.Minute)
	es := newService(t, store, clk, token.AlgES256)
	for name, raw := range map[string]string{"EdDSA": edToken, "HS256": hsToken} {
		if _, err := es.Verify(t.Context(), raw); err != nil {
			t.Errorf("ES256 service rejects the earlier %s token: %v", name, err)
		}
	}
	if h, _, _ := segments(t, issue(t, es, someClaims)); h["alg"] != token.AlgES256 {
		t.Errorf("new service signs with %v, want ES256", h["alg"])
	}
}

func TestHS256ConfiguredSecret(t *testing.T) {
	clk := newClock()
	secret := []byte("0123456789abcdef0123456789abcdef-shared")
	withSecret := func(c *token.Config) { c.HS256Secret = secret }
	store := newFakeStore()
	a := newService(t, store, clk, token.AlgHS256, withSecret)
	b := newService(t, newFakeStore(), clk, token.AlgHS256, withSecret)

	if n := len(store.all()); n != 0 {
		t.Fatalf("store holds %d keys, want the configured secret not persisted", n)
	}
	raw := issue(t, a, someClaims)
	kid := kidOf(t, raw)
	if !regexp.MustCompile(`^hs_[0-9a-f]{16}$`).MatchString(kid) {
		t.Errorf("kid = %q, want hs_ and 16 hex digits", kid)
	}
	if strings.Contains(kid, fmt.Sprintf("%x", secret[:8])) {
		t.Errorf("kid %q reveals the secret", kid)
	}
	if _, err := b.Verify(t.Context(), raw); err != nil {
		t.Errorf("replica with the same secret rejects the token: %v", err)
	}

	other := newService(t, newFakeStore(), clk, token.AlgHS256, func(c *token.Config) { c.HS256Secret = []byte(strings.Repeat("x", 32)) })
	if kidOf(t, issue(t, other, someClaims)) == kid {
		t.Error("two secrets share one kid")
	}
	_, err := other.Verify(t.Context(), raw)
	requireRejected(t, err)
}

// The configured secret signs even when the store holds an older generated HS256 key, which still
// verifies the tokens it signed.
func TestHS256ConfiguredSecretOverridesStoredKey(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	generated := newService(t, store, clk, token.AlgHS256)
	old := issue(t, generated, someClaims)

	svc := newService(t, store, clk, token.AlgHS256, func(c *token.Config) { c.HS256Secret = []byte(strings.Repeat("k", 32)) })
	if kid := kidOf(t, issue(t, svc, someClaims)); !strings.HasPrefix(kid, "hs_") {
		t.Errorf("signs with %s, want the configured secret", kid)
	}
	if _, err := svc.Verify(t.Context(), old); err != nil {
		t.Errorf("token of the stored HS256 key rejected: %v", err)
	}
}

func TestDamagedStoredKeysAreSkipped(t *testing.T) {
	clk := newClock()
	old := clk.Now().Add(-time.Hour)
	edAsES := newStoredKey(t, token.AlgEdDSA, "key_EDASES", old)
	edAsES.Algorithm = token.AlgES256
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384DER, err := x509.MarshalPKCS8PrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	damaged := []token.SigningKey{
		{ID: "key_P384", Algorithm: token.AlgES256, Private: p384DER, CreatedAt: old},
		{ID: "key_GARBAGE", Algorithm: token.AlgEdDSA, Private: []byte("not pkcs8"), CreatedAt: old},
		edAsES,
		{ID: "key_SHORTHS", Algorithm: token.AlgHS256, Private: []byte("short"), CreatedAt: old},
		{ID: "key_PS256", Algorithm: "PS256", Private: newStoredKey(t, token.AlgEdDSA, "x", old).Private, CreatedAt: old},
		{ID: "../key_PATH", Algorithm: token.AlgEdDSA, Private: newStoredKey(t, token.AlgEdDSA, "x", old).Private, CreatedAt: old},
	}
	store := newFakeStore(damaged...)
	var logs syncBuffer
	cfg := testConfig(clk, token.AlgEdDSA)
	svc, err := token.New(t.Context(), store, cfg, newLogger(&logs))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if n := strings.Count(logs.String(), "stored signing key skipped"); n != len(damaged) {
		t.Errorf("logged %d skipped keys, want %d:\n%s", n, len(damaged), logs.String())
	}
	if strings.Contains(logs.String(), "not pkcs8") {
		t.Error("key material reached the log")
	}
	raw := issue(t, svc, someClaims)
	if kid := kidOf(t, raw); slices.ContainsFunc(damaged, func(k token.SigningKey) bool { return k.ID == kid }) {
		t.Errorf("signs with damaged key %s", kid)
	}
	if _, err := svc.Verify(t.Context(), raw); err != nil {
		t.Errorf("Verify: %v", err)
	}
	// Keys stored under the wrong algorithm verify nothing, not even what their material signs.
	_, err = svc.Verify(t.Context(), sign(t, jwtMethod("ES384"), p384, map[string]any{"kid": "key_P384"}, validClaims(clk)))
	requireRejected(t, err)
	_, err = svc.Verify(t.Context(), sign(t, jwtMethod(token.AlgEdDSA), mustPKCS8(t, edAsES.Private), map[string]any{"kid": edAsES.ID}, validClaims(clk)))
	requireRejected(t, err)

	// Each damaged key is reported once, not at every reload.
	if err := svc.Reload(t.Context()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if n := strings.Count(logs.String(), "stored signing key skipped"); n != len(damaged) {
		t.Errorf("logged %d skipped keys after a reload, want still %d", n, len(damaged))
	}
}

func TestSmallRSAKeyIsSkipped(t *testing.T) {
	clk := newClock()
	small := rsaKeyPKCS8(t, 1024)
	store := newFakeStore(token.SigningKey{ID: "key_RSA1024", Algorithm: token.AlgRS256, Private: small, CreatedAt: clk.Now().Add(-time.Hour)})
	svc := newService(t, store, clk, token.AlgEdDSA)
	_, err := svc.Verify(t.Context(), sign(t, jwtMethod(token.AlgRS256), mustPKCS8(t, small), map[string]any{"kid": "key_RSA1024"}, validClaims(clk)))
	requireRejected(t, err)
}

func TestReloadKeepsKeysWhenStoreFails(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	svc := newService(t, store, clk, token.AlgEdDSA)
	raw := issue(t, svc, someClaims)

	store.setListErr(errStoreDown)
	if err := svc.Reload(t.Context()); err == nil {
		t.Fatal("Reload succeeded with a failing store")
	}
	store.setListErr(nil)
	store.clear()
	if err := svc.Reload(t.Context()); err == nil {
		t.Fatal("Reload succeeded with no EdDSA key in the store")
	}
	if _, err := svc.Verify(t.Context(), raw); err != nil {
		t.Errorf("Verify after failed reloads: %v", err)
	}
	if kid := kidOf(t, issue(t, svc, someClaims)); kid != kidOf(t, raw) {
		t.Errorf("signs with %s after failed reloads, want %s", kid, kidOf(t, raw))
	}
}

// An unknown but well-formed kid reloads the store at most once per 10 s; Config.Now drives the
// limit, so no test waits.
func TestUnknownKIDReloadIsRateLimited(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	svc := newService(t, store, clk, token.AlgEdDSA)
	unknown := sign(t, jwtMethod(token.AlgEdDSA), mustPKCS8(t, newStoredKey(t, token.AlgEdDSA, "x", clk.Now()).Private), map[string]any{"kid": "key_UNKNOWN"}, validClaims(clk))
	calls := func() int64 { return store.listCalls.Load() }
	verifyMany := func(n int) {
		t.Helper()
		errCh := make(chan error, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				_, err := svc.Verify(t.Context(), unknown)
				errCh <- err
			})
		}
		wg.Wait()
		close(errCh)
		for err := range errCh {
			requireRejected(t, err)
		}
	}

	base := calls()
	verifyMany(20)
	if got := calls() - base; got != 0 {
		t.Fatalf("%d store loads within 10 s of New, want 0", got)
	}
	clk.Advance(10 * time.Second)
	verifyMany(50)
	if got := calls() - base; got != 1 {
		t.Fatalf("%d store loads for 50 concurrent unknown kids, want 1", got)
	}
	clk.Advance(9 * time.Second)
	verifyMany(20)
	if got := calls() - base; got != 1 {
		t.Fatalf("%d store loads 9 s after the last, want still 1", got)
	}
	clk.Advance(time.Second)
	verifyMany(20)
	if got := calls() - base; got != 2 {
		t.Fatalf("%d store loads 10 s after the last, want 2", got)
	}

	// A failing store is not retried sooner either.
	store.setListErr(errStoreDown)
	clk.Advance(10 * time.Second)
	verifyMany(20)
	if got := calls() - base; got != 3 {
		t.Fatalf("%d store loads with a failing store, want 3", got)
	}
}

func TestKeysOfOtherReplicasVerifyAfterReload(t *testing.T) {
	clk := newClock()
	store := newFakeStore()
	ed := newService(t, store, clk, token.AlgEdDSA)
	es := newService(t, store, clk, token.AlgES256)
	raw := issue(t, es, someClaims)

	_, err := ed.Verify(t.Context(), raw)
	requireRejected(t, err) // the ES256 key is unknown and a reload is not yet allowed

	clk.Advance(10 * time.Second)
	if _, err := ed.Verify(t.Context(), raw); err != nil {
		t.Fatalf("token of the other replica still rejected after the reload interval: %v", err)
	}
}

// A stored key that happens to carry the configured secret's kid never replaces the secret.
func TestStoredKeyCannotShadowConfiguredSecret(t *testing.T) {
	clk := newClock()
	withSecret := func(c *token.Config) { c.HS256Secret = []byte(strings.Repeat("c", 32)) }
	kid := kidOf(t, issue(t, newService(t, newFakeStore(), clk, token.AlgHS256, withSecret), someClaims))

	store := newFakeStore(newStoredKey(t, token.AlgHS256, kid, clk.Now().Add(-time.Hour)))
	var logs syncBuffer
	cfg := testConfig(clk, token.AlgHS256)
	withSecret(&cfg)
	svc, err := token.New(t.Context(), store, cfg, newLogger(&logs))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if !strings.Contains(logs.String(), "stored signing key skipped") {
		t.Errorf("shadowing key not reported:\n%s", logs.String())
	}
	if _, err := svc.Verify(t.Context(), issue(t, svc, someClaims)); err != nil {
		t.Errorf("token of the configured secret rejected: %v", err)
	}
	method, stored := storedSigner(t, store, kid)
	_, err = svc.Verify(t.Context(), sign(t, method, stored, map[string]any{"kid": kid}, validClaims(clk)))
	requireRejected(t, err)
}
