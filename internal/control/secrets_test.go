package control_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/tenant"
	"github.com/nops-kernel/nops/internal/token"
)

func kekBox(t *testing.T, current string, older ...string) *sealbox.Box {
	t.Helper()
	key := func(v string) sealbox.Key {
		return sealbox.Key{Version: v, Secret: bytes.Repeat([]byte(v[len(v)-1:]), sealbox.KeyLen)}
	}
	var ks []sealbox.Key
	for _, v := range older {
		ks = append(ks, key(v))
	}
	b, err := sealbox.New(key(current), ks...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRecordSecretStep(t *testing.T) {
	c, st, ctx := setup(t)
	err := c.RecordSecretStep(ctx, control.SecretStep{Secret: control.SecretPepper, Step: control.StepPromote, Version: "v2", Previous: "v1", Host: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	rec := lastRecord(t, st, audit.GlobalTree)
	if rec.Action != control.ActionPepperRotate || rec.Resource != "secrets/api-key-pepper" || !rec.Decision.Allowed ||
		rec.Decision.Reason != "step=promote version=v2 previous=v1 host=node-a" || rec.Actor.Principal != "usr_test" {
		t.Fatalf("record %+v", rec)
	}
	err = c.RecordSecretStep(ctx, control.SecretStep{Secret: control.SecretKEK, Step: control.StepRetire, Version: "k1", Forced: true, Detail: "in_use=3"})
	if err != nil {
		t.Fatal(err)
	}
	rec = lastRecord(t, st, audit.GlobalTree)
	if rec.Action != control.ActionKEKRotate || rec.Resource != "secrets/kek" || rec.Decision.Reason != "step=retire version=k1 forced=true in_use=3" {
		t.Fatalf("record %+v", rec)
	}
	if err := c.RecordSecretStep(ctx, control.SecretStep{Secret: "jwt"}); err == nil {
		t.Fatal("a step of an unknown secret was recorded")
	}
}

// sealedRows stores two hmac request keys (one with a previous secret), a CA root and a token
// signing key (stored by the token service), sealed under box with the associated data their
// domains use.
func sealedRows(t *testing.T, c *control.Control, st *faultyStore, ctx context.Context, box *sealbox.Box) {
	t.Helper()
	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	seal := func(text string, aad []byte) []byte {
		v, err := box.Seal([]byte(text), aad)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for i, id := range []string{"rk_01J0000000000000000000000A", "rk_01J0000000000000000000000B"} {
		k := reqsig.Key{ID: id, TenantID: ten.ID, Name: "k", Alg: reqsig.AlgHMACSHA256, CreatedBy: "usr_test",
			SealedSecret: seal("secret "+id, []byte(id)), Generation: 1, CreatedAt: time.Now()}
		if i == 1 {
			k.PrevSealedSecret, k.PrevValidUntil = seal("previous "+id, []byte(id)), time.Now().Add(time.Hour)
		}
		if err := st.CreateRequestKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	root := identity.Authority{ID: "ca_01", Kind: identity.KindRoot, CertDER: []byte("der"),
		SealedKey: seal("root key", identity.SealAAD("ca_01")), NotAfter: time.Now().Add(time.Hour), CreatedAt: time.Now()}
	if err := st.InTx(ctx, func(ctx context.Context) error {
		return st.AddCAAuthorities(ctx, "nops.test", 0, []identity.Authority{root})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := token.New(ctx, st, tokenConfig(box), nil); err != nil {
		t.Fatal(err)
	}
}

func tokenConfig(sealer token.Sealer) token.Config {
	return token.Config{Issuer: "https://nops.test", Audience: "nops", Algorithm: token.AlgEdDSA, TTL: 15 * time.Minute, Sealer: sealer}
}

// Rewrap re-seals request-signing secrets, CA keys and token signing keys with the associated data of their domain,
// records the step with its counts, and is idempotent; a value that does not open is reported
// after the others were done, and recorded.
func TestRewrap(t *testing.T) {
	c, st, ctx := setup(t)
	sealedRows(t, c, st, ctx, kekBox(t, "k1"))
	both := kekBox(t, "k2", "k1")
	var last int64
	res, err := c.Rewrap(ctx, st, both, control.RewrapOptions{Batch: 2, Host: "node-a", Progress: func(scanned, _ int64) { last = scanned }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rewrapped != 5 || res.Failed != 0 || last != 5 {
		t.Fatalf("rewrap %+v (progress %d)", res, last)
	}
	rec := lastRecord(t, st, audit.GlobalTree)
	if rec.Action != control.ActionKEKRotate || !strings.HasPrefix(rec.Decision.Reason, "step=rewrap version=k2 host=node-a scanned=5 rewrapped=5 ") {
		t.Fatalf("record %+v", rec)
	}
	k, err := st.RequestKey(ctx, "rk_01J0000000000000000000000B")
	if err != nil {
		t.Fatal(err)
	}
	onlyK2 := kekBox(t, "k2")
	if got, err := onlyK2.Open(k.PrevSealedSecret, []byte(k.ID)); err != nil || string(got) != "previous "+k.ID {
		t.Fatalf("the previous secret after the rewrap: %q, %v", got, err)
	}
	_, auths, err := st.CAAuthorities(ctx, "nops.test")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := onlyK2.Open(auths[0].SealedKey, identity.SealAAD("ca_01")); err != nil || string(got) != "root key" {
		t.Fatalf("the CA key after the rewrap: %q, %v", got, err)
	}
	// The token signing key opens under k2 alone: a token service with only k2 starts.
	if _, err := token.New(ctx, st, tokenConfig(onlyK2), nil); err != nil {
		t.Fatalf("the token signing key after the rewrap: %v", err)
	}
	if _, err := token.New(ctx, st, tokenConfig(kekBox(t, "k1")), nil); err == nil {
		t.Fatal("the token signing key still opens under k1 alone after the rewrap")
	}
	if res, err := c.Rewrap(ctx, st, both, control.RewrapOptions{}); err != nil || res.Rewrapped != 0 || res.Current != 5 {
		t.Fatalf("second rewrap: %+v, %v", res, err)
	}
	// A box without the KEK the values are under cannot move them: an error naming them.
	before := treeSize(t, st, audit.GlobalTree)
	_, err = c.Rewrap(ctx, st, kekBox(t, "k3", "k1"), control.RewrapOptions{})
	if err == nil || !strings.Contains(err.Error(), "5 sealed values do not open") || !strings.Contains(err.Error(), "ca_key/ca_01/current") {
		t.Fatalf("rewrap without the values' KEK: %v", err)
	}
	if treeSize(t, st, audit.GlobalTree) != before+1 || !strings.Contains(lastRecord(t, st, audit.GlobalTree).Decision.Reason, "failed=5") {
		t.Fatal("the failed rewrap was not recorded")
	}
}

type staticPeppers struct {
	ring    apikey.PepperRing
	created map[string]time.Time
}

func TestSecretsStatus(t *testing.T) {
	c, st, ctx := setup(t)
	sealedRows(t, c, st, ctx, kekBox(t, "k1"))
	p1, err := apikey.PepperFromConfig("v1", "0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := apikey.PepperFromConfig("v2", "fedcba9876543210fedcba9876543210")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := apikey.NewPeppers(p1, p2)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	pep := staticPeppers{ring: apikey.PepperRing{Peppers: ps, Pending: []string{"v2"}}, created: map[string]time.Time{"v1": created}}
	src := control.SecretsSource{
		Store:        st,
		PepperSource: "file",
		Peppers: func() (apikey.PepperRing, map[string]time.Time, error) {
			return pep.ring, pep.created, nil
		},
		KEK: func() (sealbox.FileInfo, error) {
			return sealbox.FileInfo{Current: "k2", Keys: []sealbox.FileKeyInfo{
				{Version: "k2", State: sealbox.StateCurrent, CreatedAt: created},
				{Version: "k3", State: sealbox.StatePending},
			}}, errFileBroken
		},
	}
	status, err := src.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if status.Pepper.Current != "v1" || status.Pepper.Source != "file" || len(status.Pepper.Versions) != 2 ||
		status.Pepper.Versions[0].State != apikey.PepperCurrent || !status.Pepper.Versions[0].CreatedAt.Equal(created) ||
		status.Pepper.Versions[1].State != apikey.PepperPending {
		t.Fatalf("pepper status %+v", status.Pepper)
	}
	want := []control.KEKVersionStatus{
		{Version: "k2", State: "current", CreatedAt: created},
		{Version: "k3", State: "pending"},
		{Version: "k1", State: "unknown", RequestKeySecrets: 3, CAKeys: 1, SigningKeys: 1},
	}
	if status.KEK.Current != "k2" || status.KEK.ReloadError != errFileBroken.Error() || len(status.KEK.Versions) != len(want) {
		t.Fatalf("kek status %+v", status.KEK)
	}
	for i, v := range want {
		if status.KEK.Versions[i] != v {
			t.Errorf("kek version %d: %+v, want %+v", i, status.KEK.Versions[i], v)
		}
	}
	if status.KEK.Versions[2].InUse() != 5 {
		t.Fatal("InUse")
	}
}

var errFileBroken = errorString("key file broken")

type errorString string

func (e errorString) Error() string { return string(e) }
