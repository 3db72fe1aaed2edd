package reqsig_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/sealbox"
)

func keysEnv(t *testing.T, opts reqsig.KeysOptions) (keyStore, *reqsig.Keys, *clock) {
	t.Helper()
	s := openSQLite(t, "")
	seed(t, s)
	c := newClock(t0)
	return s, newKeys(t, s, c, opts), c
}

func wantCode(t *testing.T, what string, err error, code errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); got != code {
		t.Errorf("%s: error %v (code %q), want code %q", what, err, got, code)
	}
}

// TestCreateRefuses checks every input Create must refuse, and who may create what.
func TestCreateRefuses(t *testing.T) {
	_, keys, _ := keysEnv(t, reqsig.KeysOptions{})
	pub, _ := mustEd25519(t)
	tests := []struct {
		name  string
		ctx   context.Context
		in    reqsig.CreateInput
		code  errs.Code
		field string
	}{
		{"no principal", context.Background(), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256}, errs.Unauthenticated, ""},
		{"no algorithm", adminOf("ten_a"), reqsig.CreateInput{}, errs.Invalid, "body.alg"},
		{"unknown algorithm", adminOf("ten_a"), reqsig.CreateInput{Alg: "rsa-pss-sha512"}, errs.Invalid, "body.alg"},
		{"hmac with a public key", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, PublicKey: pub}, errs.Invalid, "body.public_key"},
		{"ed25519 without a public key", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgEd25519}, errs.Invalid, "body.public_key"},
		{"ed25519 short key", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgEd25519, PublicKey: pub[:31]}, errs.Invalid, "body.public_key"},
		{"ed25519 zero key", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgEd25519, PublicKey: make([]byte, 32)}, errs.Invalid, "body.public_key"},
		{"expiry in the past", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, ExpiresAt: t0.Add(-time.Second)}, errs.Invalid, "body.expires_at"},
		{"control character in name", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, Name: "a\nb"}, errs.Invalid, "body.name"},
		{"blank name", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, Name: "   "}, errs.Invalid, "body.name"},
		{"name too long", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, Name: strings.Repeat("é", 101)}, errs.Invalid, "body.name"},
		{"malformed agent id", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, AgentID: "agt a"}, errs.Invalid, "body.agent_id"},
		{"unknown agent", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, AgentID: "agt_nope"}, errs.NotFound, ""},
		{"agent of another tenant", adminOf("ten_b"), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, AgentID: "agt_a"}, errs.NotFound, ""},
		{"another tenant named", adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, TenantID: "ten_b"}, errs.NotFound, ""},
		{"super admin without tenant", superAdmin(), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256}, errs.Invalid, "body.tenant"},
		{"super admin, unknown tenant", superAdmin(), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, TenantID: "ten_nope"}, errs.NotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, secret, err := keys.Create(tt.ctx, tt.in)
			wantCode(t, "Create", err, tt.code)
			if secret != "" || k.ID != "" {
				t.Errorf("a refused Create returned key %q and a secret", k.ID)
			}
			if tt.field != "" {
				if e := errs.As(err); e == nil || len(e.Fields) != 1 || e.Fields[0].Name != tt.field {
					t.Errorf("error %v, want it to name %s", err, tt.field)
				}
			}
		})
	}
}

// TestCreateHMACSealsTheSecret: the secret is returned once, stored only sealed, and opens for
// verification.
func TestCreateHMACSealsTheSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nops.db")
	s := openSQLite(t, path)
	seed(t, s)
	c := newClock(t0)
	var logs bytes.Buffer
	keys, err := reqsig.NewKeys(s, testBox(t), reqsig.KeysOptions{Now: c.Now, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	k, secret, err := keys.Create(adminOf("ten_a"), reqsig.CreateInput{Name: "ci", Alg: reqsig.AlgHMACSHA256, AgentID: "agt_a"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := reqsig.DecodeSecret(secret)
	if err != nil || len(raw) != reqsig.SecretLen {
		t.Fatalf("secret %d bytes, %v", len(raw), err)
	}
	if !reqsig.ValidID(k.ID) || k.TenantID != "ten_a" || k.AgentID != "agt_a" || k.CreatedBy != "usr_ten_a" ||
		k.Generation != 1 || !k.CreatedAt.Equal(t0) || k.Status(t0) != reqsig.StatusActive || k.PublicKey != nil {
		t.Fatalf("created key %+v", k)
	}
	if bytes.Contains(k.SealedSecret, raw) {
		t.Fatal("the sealed secret contains the secret")
	}
	// Neither the database file nor the logs hold the secret, in any encoding.
	dump := dumpTable(t, path, "request_keys")
	for _, enc := range []string{string(raw), secret, fmt.Sprintf("%x", raw), base64.RawURLEncoding.EncodeToString(raw)} {
		if strings.Contains(dump, enc) || strings.Contains(logs.String(), enc) {
			t.Fatal("the secret is readable in the database or the logs")
		}
	}
	if !strings.Contains(logs.String(), k.ID) {
		t.Fatalf("creation not logged: %s", logs.String())
	}
	m, err := keys.Lookup(context.Background(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Secret, raw) || m.PrevSecret != nil {
		t.Fatal("Lookup did not open the secret")
	}
	if strings.Contains(fmt.Sprintf("%v %+v %#v %s", m, m, m, m), string(raw)) {
		t.Fatal("Material prints its secret")
	}
	got, err := keys.Get(adminOf("ten_a"), k.ID)
	if err != nil || got.ID != k.ID {
		t.Fatalf("Get = %+v, %v", got, err)
	}
}

// dumpTable returns every row of table as text, read with a connection of its own.
func dumpTable(t *testing.T, path, table string) string {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT * FROM " + table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var b strings.Builder
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if bs, ok := v.([]byte); ok {
				b.Write(bs)
			} else {
				fmt.Fprint(&b, v)
			}
			b.WriteByte('|')
		}
	}
	return b.String()
}

// TestSealedSecretBoundToItsRow: a sealed secret copied onto another key's row does not open.
func TestSealedSecretBoundToItsRow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nops.db")
	s := openSQLite(t, path)
	seed(t, s)
	keys := newKeys(t, s, newClock(t0), reqsig.KeysOptions{})
	a, _ := createHMAC(t, keys, "")
	b, _ := createHMAC(t, keys, "")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE request_keys SET sealed_secret = ? WHERE id = ?`, a.SealedSecret, b.ID); err != nil {
		t.Fatal(err)
	}
	_, err = keys.Lookup(context.Background(), b.ID)
	wantCode(t, "Lookup of a row with another row's secret", err, errs.Internal)
	// And a box without the KEK cannot read any.
	other, err := sealbox.New(sealbox.Key{Version: "k1", Secret: bytes.Repeat([]byte{8}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := reqsig.NewKeys(s, other, reqsig.KeysOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = stranger.Lookup(context.Background(), a.ID)
	wantCode(t, "Lookup under another KEK", err, errs.Internal)
}

func TestTenancy(t *testing.T) {
	_, keys, _ := keysEnv(t, reqsig.KeysOptions{})
	k, _ := createHMAC(t, keys, "")
	_, err := keys.Get(adminOf("ten_b"), k.ID)
	wantCode(t, "Get by another tenant", err, errs.NotFound)
	_, _, err = keys.Rotate(adminOf("ten_b"), k.ID, reqsig.RotateInput{})
	wantCode(t, "Rotate by another tenant", err, errs.NotFound)
	_, err = keys.Revoke(adminOf("ten_b"), k.ID)
	wantCode(t, "Revoke by another tenant", err, errs.NotFound)
	_, err = keys.Get(adminOf("ten_a"), "rk_nope")
	wantCode(t, "Get of a malformed id", err, errs.NotFound)
	if _, err := keys.Get(superAdmin(), k.ID); err != nil {
		t.Fatalf("Get by the super admin: %v", err)
	}
	page, err := keys.List(adminOf("ten_b"), reqsig.ListInput{TenantID: "ten_a"})
	wantCode(t, "List of another tenant", err, errs.NotFound)
	if len(page.Keys) != 0 {
		t.Fatal("List of another tenant returned keys")
	}
	_, err = keys.List(context.Background(), reqsig.ListInput{})
	wantCode(t, "List without principal", err, errs.Unauthenticated)
	_, err = keys.List(superAdmin(), reqsig.ListInput{})
	wantCode(t, "List by the super admin without tenant", err, errs.Invalid)
	_, err = keys.List(adminOf("ten_a"), reqsig.ListInput{Limit: reqsig.MaxListLimit + 1})
	wantCode(t, "List with a limit too large", err, errs.Invalid)
	_, err = keys.List(adminOf("ten_a"), reqsig.ListInput{Cursor: "nope"})
	wantCode(t, "List with a foreign cursor", err, errs.Invalid)
}

func TestListPages(t *testing.T) {
	_, keys, c := keysEnv(t, reqsig.KeysOptions{})
	var ids []string
	for i := range 5 {
		c.Set(t0.Add(time.Duration(i) * time.Millisecond)) // ULIDs order by time
		k, _ := createHMAC(t, keys, "")
		ids = append(ids, k.ID)
	}
	var got []string
	cursor := ""
	for {
		page, err := keys.List(adminOf("ten_a"), reqsig.ListInput{Cursor: cursor, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page.Keys {
			got = append(got, k.ID)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Fatalf("pages %v, want %v", got, ids)
	}
	page, err := keys.List(superAdmin(), reqsig.ListInput{TenantID: "ten_b"})
	if err != nil || len(page.Keys) != 0 {
		t.Fatalf("ten_b's keys = %v, %v", page.Keys, err)
	}
}

func TestRotateRefuses(t *testing.T) {
	_, keys, c := keysEnv(t, reqsig.KeysOptions{})
	ctx := adminOf("ten_a")
	h, _ := createHMAC(t, keys, "")
	e, _ := createEd25519(t, keys)
	pub, _ := mustEd25519(t)
	for _, tt := range []struct {
		name string
		id   string
		in   reqsig.RotateInput
		code errs.Code
	}{
		{"negative grace", h.ID, reqsig.RotateInput{Grace: -time.Second}, errs.Invalid},
		{"grace over 30 days", h.ID, reqsig.RotateInput{Grace: reqsig.MaxGrace + time.Second}, errs.Invalid},
		{"hmac given a public key", h.ID, reqsig.RotateInput{PublicKey: pub}, errs.Invalid},
		{"ed25519 without a new key", e.ID, reqsig.RotateInput{}, errs.Invalid},
		{"ed25519 with the same key", e.ID, reqsig.RotateInput{PublicKey: e.PublicKey}, errs.Invalid},
		{"unknown key", "rk_01jpaz8kq3n3c0r7f4d6t0x9zz", reqsig.RotateInput{}, errs.NotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, secret, err := keys.Rotate(ctx, tt.id, tt.in)
			wantCode(t, "Rotate", err, tt.code)
			if secret != "" {
				t.Error("a refused rotation returned a secret")
			}
		})
	}
	if _, err := keys.Revoke(ctx, h.ID); err != nil {
		t.Fatal(err)
	}
	_, _, err := keys.Rotate(ctx, h.ID, reqsig.RotateInput{})
	wantCode(t, "Rotate of a revoked key", err, errs.Conflict)
	_, err = keys.Revoke(ctx, h.ID)
	wantCode(t, "second Revoke", err, errs.Conflict)

	exp, _, err := keys.Create(ctx, reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, ExpiresAt: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	c.Set(t0.Add(time.Hour))
	_, _, err = keys.Rotate(ctx, exp.ID, reqsig.RotateInput{})
	wantCode(t, "Rotate of an expired key", err, errs.Conflict)
	if got := exp.Status(t0.Add(time.Hour)); got != reqsig.StatusExpired {
		t.Errorf("Status = %q, want expired", got)
	}
}

// TestRotateGrace: the default grace is 24 h; only one previous secret is kept.
func TestRotateGrace(t *testing.T) {
	_, keys, _ := keysEnv(t, reqsig.KeysOptions{})
	ctx := adminOf("ten_a")
	k, first := createHMAC(t, keys, "")
	r1, s2, err := keys.Rotate(ctx, k.ID, reqsig.RotateInput{})
	if err != nil {
		t.Fatal(err)
	}
	if !r1.PrevValidUntil.Equal(t0.Add(reqsig.DefaultGrace)) || !r1.InGrace(t0) || r1.InGrace(t0.Add(reqsig.DefaultGrace)) {
		t.Fatalf("after one rotation: PrevValidUntil %v", r1.PrevValidUntil)
	}
	second, _ := reqsig.DecodeSecret(s2)
	if _, _, err := keys.Rotate(ctx, k.ID, reqsig.RotateInput{}); err != nil {
		t.Fatal(err)
	}
	m, err := keys.Lookup(context.Background(), k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.PrevSecret, second) || bytes.Equal(m.PrevSecret, first.Secret) || bytes.Equal(m.Secret, first.Secret) {
		t.Fatal("after two rotations the previous secret is not the second one")
	}
	if m.Key.Generation != 3 {
		t.Fatalf("generation %d, want 3", m.Key.Generation)
	}
}

// TestLookupCache: revocation and rotation through the same Keys take effect at once; another
// replica's Keys, with its own cache, sees them within its TTL.
func TestLookupCache(t *testing.T) {
	s, keys, c := keysEnv(t, reqsig.KeysOptions{CacheTTL: 2 * time.Second})
	replica := newKeys(t, s, c, reqsig.KeysOptions{CacheTTL: 2 * time.Second})
	k, _ := createHMAC(t, keys, "")
	ctx := context.Background()
	for _, ks := range []*reqsig.Keys{keys, replica} {
		if _, err := ks.Lookup(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := keys.Revoke(adminOf("ten_a"), k.ID); err != nil {
		t.Fatal(err)
	}
	m, err := keys.Lookup(ctx, k.ID)
	if err != nil || m.Key.RevokedAt.IsZero() {
		t.Fatalf("the revoking Keys still serves the key as live: %+v, %v", m.Key, err)
	}
	m, err = replica.Lookup(ctx, k.ID)
	if err != nil || !m.Key.RevokedAt.IsZero() {
		t.Fatalf("the replica's cache did not serve its entry within the TTL: %+v, %v", m.Key, err)
	}
	c.Set(t0.Add(2 * time.Second))
	m, err = replica.Lookup(ctx, k.ID)
	if err != nil || m.Key.RevokedAt.IsZero() {
		t.Fatalf("the replica still serves the key as live after its TTL: %+v, %v", m.Key, err)
	}
	if _, err := reqsig.NewKeys(s, testBox(t), reqsig.KeysOptions{CacheTTL: reqsig.MaxCacheTTL + time.Millisecond}); err == nil {
		t.Fatal("NewKeys accepted a cache TTL over 5s")
	}
	// An unknown key is not cached as unknown.
	_, err = keys.Lookup(ctx, "rk_01jpaz8kq3n3c0r7f4d6t0x9zz")
	wantCode(t, "Lookup of an unknown key", err, errs.NotFound)
}

// TestLookupCacheBounded: a full cache of live entries caches no more, and still answers.
func TestLookupCacheBounded(t *testing.T) {
	_, keys, _ := keysEnv(t, reqsig.KeysOptions{CacheTTL: time.Second, CacheSize: 1})
	a, _ := createHMAC(t, keys, "")
	b, _ := createHMAC(t, keys, "")
	for _, id := range []string{a.ID, b.ID, a.ID, b.ID} {
		if m, err := keys.Lookup(context.Background(), id); err != nil || m.Key.ID != id {
			t.Fatalf("Lookup(%s) = %s, %v", id, m.Key.ID, err)
		}
	}
}

func TestParsePublicKey(t *testing.T) {
	pub, _ := mustEd25519(t)
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	for _, text := range []string{
		pemText, "\n" + pemText + "\n",
		base64.StdEncoding.EncodeToString(pub), base64.RawStdEncoding.EncodeToString(pub),
		base64.URLEncoding.EncodeToString(pub), base64.RawURLEncoding.EncodeToString(pub),
	} {
		got, err := reqsig.ParsePublicKey(text, "body.public_key")
		if err != nil || !got.Equal(pub) {
			t.Errorf("ParsePublicKey(%q) = %x, %v", text, got, err)
		}
	}
	rsaPEM := "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAMvBdGz0d8SZ2Xa7GHVxnx2kX5b5Rj6L\nRj7l1Z6gq6H3w4X6C0mG5c6yS3Yd6cGq0Qy1x7Qm2u0kXn1m3c5fR3ECAwEAAQ==\n-----END PUBLIC KEY-----\n"
	for _, text := range []string{
		"", "AAAA", base64.StdEncoding.EncodeToString(pub[:31]), base64.StdEncoding.EncodeToString(make([]byte, 32)),
		strings.Replace(pemText, "PUBLIC KEY", "PRIVATE KEY", 2), pemText + pemText, rsaPEM,
		strings.Repeat("A", 2000), "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----",
	} {
		_, err := reqsig.ParsePublicKey(text, "body.public_key")
		e := errs.As(err)
		if e == nil || e.Code != errs.Invalid || e.Fields[0].Name != "body.public_key" {
			t.Errorf("ParsePublicKey(%.40q) error %v, want invalid body.public_key", text, err)
		}
	}
}

func TestSecretCodec(t *testing.T) {
	for _, bad := range []string{"", "short", base64.StdEncoding.EncodeToString(make([]byte, 31)), "!!!"} {
		if _, err := reqsig.DecodeSecret(bad); err == nil {
			t.Errorf("DecodeSecret(%q) succeeded", bad)
		}
	}
	raw := bytes.Repeat([]byte{0xfe}, 32)
	got, err := reqsig.DecodeSecret(reqsig.EncodeSecret(raw))
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("round trip = %x, %v", got, err)
	}
}

func TestNewKeysRefuses(t *testing.T) {
	s := openSQLite(t, "")
	box := testBox(t)
	for _, tc := range []struct {
		name   string
		store  reqsig.Store
		sealer reqsig.Sealer
		opts   reqsig.KeysOptions
	}{
		{"nil store", nil, box, reqsig.KeysOptions{}},
		{"nil sealer", s, nil, reqsig.KeysOptions{}},
		{"negative cache", s, box, reqsig.KeysOptions{CacheTTL: -1}},
		{"grace over max", s, box, reqsig.KeysOptions{DefaultGrace: reqsig.MaxGrace + 1}},
		{"negative cache size", s, box, reqsig.KeysOptions{CacheSize: -1}},
	} {
		if _, err := reqsig.NewKeys(tc.store, tc.sealer, tc.opts); err == nil {
			t.Errorf("%s: NewKeys succeeded", tc.name)
		}
	}
}
