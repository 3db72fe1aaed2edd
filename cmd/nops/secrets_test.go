package main

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// secretsKernel starts a kernel with an ADMIN API key and an hmac-sha256 request key of a tenant,
// and returns them with the CLI's environment (the kernel's data directory and SUPER_ADMIN token).
func secretsKernel(t *testing.T) (k *kerneltest.Kernel, env map[string]string, apiKey string, rk reqsig.SignerKey) {
	t.Helper()
	k = kerneltest.Start(t, func(c *config.Config) {
		// Reloads are triggered by the test (Kernel.Reload, as SIGHUP does).
		c.APIKeys.PepperReloadInterval = config.Duration(time.Hour)
		c.Signing.KEKReloadInterval = config.Duration(time.Hour)
	})
	token := k.Token(t, "")
	admin := "Authorization: Bearer " + token
	resp, body := k.Do(t, "POST", "/v1/tenants", map[string]string{"name": "acme"}, admin)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create tenant: %d %s", resp.StatusCode, body)
	}
	ten := fromJSON[struct {
		ID string `json:"id"`
	}](t, string(body)).ID
	resp, body = k.Do(t, "POST", "/v1/api-keys?tenant="+ten, map[string]any{"name": "ci", "role": "ADMIN"}, admin)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create api key: %d %s", resp.StatusCode, body)
	}
	apiKey = fromJSON[struct {
		Secret string `json:"secret"`
	}](t, string(body)).Secret
	resp, body = k.Do(t, "POST", "/v1/request-keys", map[string]string{"alg": "hmac-sha256", "name": "signer"}, "X-API-Key: "+apiKey)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create request key: %d %s", resp.StatusCode, body)
	}
	doc := fromJSON[struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}](t, string(body))
	secret, err := reqsig.DecodeSecret(doc.Secret)
	if err != nil {
		t.Fatal(err)
	}
	env = map[string]string{"NOPS_DATA_DIR": k.Config.DataDir, "NOPS_LOG_LEVEL": "warn", "NOPS_SERVER": k.URL, "NOPS_TOKEN": token}
	return k, env, apiKey, reqsig.SignerKey{ID: doc.ID, Alg: reqsig.AlgHMACSHA256, Secret: secret}
}

// signedWhoami sends GET /v1/auth/whoami with the API key, signed with the request key.
func signedWhoami(t *testing.T, k *kerneltest.Kernel, apiKey string, rk reqsig.SignerKey) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", k.URL+"/v1/auth/whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", apiKey)
	if err := reqsig.Sign(req, nil, rk, time.Now(), ""); err != nil {
		t.Fatal(err)
	}
	resp, err := k.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func reload(t *testing.T, k *kerneltest.Kernel) {
	t.Helper()
	if err := k.Reload(t.Context()); err != nil {
		t.Fatalf("reload: %v", err)
	}
}

// The pepper's staged rotation through the CLI against a running kernel: add, promote, a refused
// retire naming the key that still uses the old pepper, the key moving on its next use, retire;
// every step audited; the key works throughout.
func TestSecretsPepperRotation(t *testing.T) {
	k, env, apiKey, rk := secretsKernel(t)
	keyID := strings.Split(apiKey, "_")[1]
	out, _ := ok(t, env, "secrets", "pepper", "status")
	if !strings.Contains(out, "current v1") || !regexpLine(out, `v1\s+current\s+\S+\s+1\s+1\s+0\s+0`) {
		t.Fatalf("pepper status before the rotation:\n%s", out)
	}

	out, _ = ok(t, env, "secrets", "pepper", "add")
	if !strings.Contains(out, "added pepper v2 (pending)") {
		t.Fatalf("add: %s", out)
	}
	_, errOut := fails(t, env, "secrets", "pepper", "add")
	if !strings.Contains(errOut, "v2") || !strings.Contains(errOut, "not current yet") {
		t.Fatalf("a second add: %s", errOut)
	}
	reload(t, k)
	if code := signedWhoami(t, k, apiKey, rk); code != http.StatusOK {
		t.Fatalf("after add: %d", code)
	}
	out, _ = ok(t, env, "secrets", "status")
	if !regexpLine(out, `v2\s+pending`) {
		t.Fatalf("the kernel does not report v2 pending:\n%s", out)
	}

	ok(t, env, "secrets", "pepper", "promote", "v2")
	reload(t, k)
	// The key is still hashed with v1: retiring v1 is refused, naming it.
	_, errOut = fails(t, env, "secrets", "pepper", "retire", "v1")
	if !strings.Contains(errOut, keyID) || !strings.Contains(errOut, "--force") {
		t.Fatalf("retire while in use: %s", errOut)
	}
	_, errOut = fails(t, env, "secrets", "pepper", "retire", "v2")
	if !strings.Contains(errOut, "current") {
		t.Fatalf("retire of the current pepper: %s", errOut)
	}
	// Using the key moves it to v2: the first use the verified-key cache (1 s) does not answer
	// queues a new digest, written within the re-digest interval (1 s).
	kerneltest.WaitFor(t, 30*time.Second, "the key re-digested under v2", func() bool {
		if code := signedWhoami(t, k, apiKey, rk); code != http.StatusOK {
			t.Fatalf("after promote: %d", code)
		}
		out, _ := ok(t, env, "secrets", "pepper", "status")
		return regexpLine(out, `v1\s+older\s+\S+\s+0\s+0\s+0\s+0`)
	})
	out, _ = ok(t, env, "secrets", "pepper", "retire", "v1")
	if !strings.Contains(out, "retired pepper v1") {
		t.Fatalf("retire: %s", out)
	}
	reload(t, k)
	if code := signedWhoami(t, k, apiKey, rk); code != http.StatusOK {
		t.Fatalf("after retire: %d", code)
	}
	raw, err := os.ReadFile(filepath.Join(k.Config.DataDir, "apikey-pepper.json"))
	if err != nil || strings.Contains(string(raw), `"v1"`) {
		t.Fatalf("the pepper file still holds v1 (%v):\n%s", err, raw)
	}
	wantAudit(t, env, "apikey.pepper.rotate", "step=add version=v2", "step=promote version=v2 previous=v1", "step=retire version=v1")
}

// The key-encryption key's staged rotation: add, promote, a refused retire, rewrap, retire; the
// signed requests keep verifying, the CA keeps signing, the token signing key keeps opening.
func TestSecretsKEKRotation(t *testing.T) {
	k, env, apiKey, rk := secretsKernel(t)
	out, _ := ok(t, env, "secrets", "kek", "status")
	// One request-key secret, the CA's root and intermediate keys and the token signing key under k1.
	if !regexpLine(out, `k1\s+current\s+\S+\s+4\s+1\s+2\s+1`) {
		t.Fatalf("kek status before the rotation:\n%s", out)
	}
	ok(t, env, "secrets", "kek", "add")
	reload(t, k)
	ok(t, env, "secrets", "kek", "promote", "k2")
	reload(t, k)
	if code := signedWhoami(t, k, apiKey, rk); code != http.StatusOK {
		t.Fatalf("after promote: %d", code)
	}
	_, errOut := fails(t, env, "secrets", "kek", "retire", "k1")
	if !strings.Contains(errOut, "1 request_key") || !strings.Contains(errOut, "2 ca_key") || !strings.Contains(errOut, "1 signing_key") ||
		!strings.Contains(errOut, "rewrap") {
		t.Fatalf("retire before the rewrap: %s", errOut)
	}
	out, _ = ok(t, env, "secrets", "kek", "rewrap", "--batch", "1")
	if !strings.Contains(out, "rewrap under k2: 4 scanned, 4 re-sealed") {
		t.Fatalf("rewrap: %s", out)
	}
	out, _ = ok(t, env, "secrets", "kek", "rewrap")
	if !strings.Contains(out, "0 re-sealed, 4 already current") {
		t.Fatalf("second rewrap: %s", out)
	}
	ok(t, env, "secrets", "kek", "retire", "k1")
	reload(t, k)
	if code := signedWhoami(t, k, apiKey, rk); code != http.StatusOK {
		t.Fatalf("after retire: %d", code)
	}
	out, _ = ok(t, env, "secrets", "status", "-o", "json")
	st := fromJSON[secretsDoc](t, out)
	if st.KEK.Current != "k2" || len(st.KEK.Versions) != 1 || st.KEK.Versions[0].InUse != 4 || st.KEK.Versions[0].SigningKeys != 1 {
		t.Fatalf("kernel's kek status after the rotation: %+v", st.KEK)
	}
	wantAudit(t, env, "signing.kek.rotate", "step=add version=k2", "step=promote version=k2 previous=k1",
		"step=rewrap version=k2", "scanned=4 rewrapped=4", "step=retire version=k1")
	// The CA still signs with its re-sealed keys after a reload from the database: a new kernel
	// on the same data directory starts (it opens the CA's keys and the token signing key, with
	// k1 gone from the file) and verifies the request key. The first one stops before: one kernel
	// per data directory (its nonce journal is locked).
	if err := k.Close(); err != nil {
		t.Fatalf("close the first kernel: %v", err)
	}
	k2 := kerneltest.Start(t, func(c *config.Config) { c.DataDir = k.Config.DataDir })
	if code := signedWhoami(t, k2, apiKey, rk); code != http.StatusOK {
		t.Fatalf("a kernel started on the rotated files: %d", code)
	}
}

// The commands refuse what would lose keys or cannot apply, each with one clear error.
func TestSecretsRefusals(t *testing.T) {
	_, env, _, _ := secretsKernel(t)
	pepper := strings.Repeat("p", 32)
	cfgEnv := with(env, "NOPS_APIKEY_PEPPER", pepper)
	for _, args := range [][]string{{"add"}, {"promote", "v1"}, {"retire", "v0"}} {
		_, errOut := fails(t, cfgEnv, append([]string{"secrets", "pepper"}, args...)...)
		if !strings.Contains(errOut, "previous_peppers") || strings.Contains(errOut, pepper) {
			t.Fatalf("pepper %v with a configured pepper: %s", args, errOut)
		}
	}
	out, _ := ok(t, with(cfgEnv, "NOPS_APIKEY_PREVIOUS_PEPPERS", "v0:"+strings.Repeat("q", 32)), "secrets", "pepper", "status")
	if !strings.Contains(out, "(config)") || !regexpLine(out, `v0\s+older`) || strings.Contains(out, pepper) {
		t.Fatalf("pepper status from the configuration:\n%s", out)
	}
	_, errOut := fails(t, env, "secrets", "kek", "promote", "k7")
	if !strings.Contains(errOut, "k7") {
		t.Fatalf("promote of a missing key: %s", errOut)
	}
	_, errOut = fails(t, env, "secrets", "kek", "retire", "k1")
	if !strings.Contains(errOut, "current") {
		t.Fatalf("retire of the current key: %s", errOut)
	}
	_, errOut = fails(t, env, "secrets", "pepper", "retire", "v9")
	if !strings.Contains(errOut, "not in the key file") {
		t.Fatalf("retire of a missing pepper: %s", errOut)
	}
	// --force retires a key still in use, saying so, and records it as forced.
	ok(t, env, "secrets", "kek", "add")
	ok(t, env, "secrets", "kek", "promote", "k2")
	_, errOut = ok(t, env, "secrets", "kek", "retire", "k1", "--force")
	if !strings.Contains(errOut, "--force") || !strings.Contains(errOut, "request_key") {
		t.Fatalf("forced retire: %s", errOut)
	}
	wantAudit(t, env, "signing.kek.rotate", "step=retire version=k1 forced=true")
	// The remote status needs system:read.
	_, errOut = fails(t, with(env, "NOPS_TOKEN", "", "NOPS_API_KEY", "nops_ak01jabcdefghjkmnpqrstvwxyz0_"+strings.Repeat("a", 43)), "secrets", "status")
	if !strings.Contains(errOut, "401") && !strings.Contains(strings.ToLower(errOut), "unauthenticated") && !strings.Contains(errOut, "invalid") {
		t.Fatalf("remote status without a valid credential: %s", errOut)
	}
}

// wantAudit checks that the global audit log holds records of action with each reason fragment.
func wantAudit(t *testing.T, env map[string]string, action string, reasons ...string) {
	t.Helper()
	q := url.Values{"action": {action}, "limit": {"100"}}
	resp, err := http.NewRequestWithContext(t.Context(), "GET", env["NOPS_SERVER"]+"/v1/audit?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Header.Set("Authorization", "Bearer "+env["NOPS_TOKEN"])
	r, err := http.DefaultClient.Do(resp)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var page struct {
		Items []struct {
			Action string `json:"action"`
			Actor  struct {
				Principal string `json:"principal"`
			} `json:"actor"`
			Decision struct {
				Reason string `json:"reason"`
			} `json:"decision"`
		} `json:"items"`
	}
	if err := decodeJSON(mustRead(t, r), &page); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, it := range page.Items {
		if !strings.HasPrefix(it.Actor.Principal, "cli:") {
			t.Errorf("record %q has actor %q, want the operator", it.Decision.Reason, it.Actor.Principal)
		}
		all = append(all, it.Decision.Reason)
	}
	joined := strings.Join(all, "\n")
	for _, want := range reasons {
		if !strings.Contains(joined, want) {
			t.Errorf("no %s record says %q; records:\n%s", action, want, joined)
		}
	}
}

// regexpLine reports whether a line of out matches the regular expression re.
func regexpLine(out, re string) bool {
	return regexp.MustCompile(`(?m)^` + re).MatchString(out)
}

func mustRead(t *testing.T, r *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s", r.Request.URL, r.StatusCode, b)
	}
	return b
}
