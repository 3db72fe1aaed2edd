package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/keyfile"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// secretsStatus is the part of GET /v1/admin/secrets/status the test reads.
type secretsStatus struct {
	Pepper secretStatus `json:"api_key_pepper"`
	KEK    secretStatus `json:"kek"`
}

type secretStatus struct {
	Current     string `json:"current"`
	ReloadError string `json:"reload_error"`
	Versions    []struct {
		Version string `json:"version"`
		State   string `json:"state"`
		InUse   int64  `json:"in_use"`
		// SigningKeys counts the token signing keys sealed under the version (the KEK's only).
		SigningKeys int64 `json:"signing_keys"`
	} `json:"versions"`
}

// state returns the state of version ("" when absent) and how many stored items use it.
func (s secretStatus) state(version string) (string, int64) {
	for _, v := range s.Versions {
		if v.Version == version {
			return v.State, v.InUse
		}
	}
	return "", 0
}

// versions lists the versions, each as version=state:in_use.
func (s secretStatus) String() string {
	var parts []string
	for _, v := range s.Versions {
		parts = append(parts, fmt.Sprintf("%s=%s:%d", v.Version, v.State, v.InUse))
	}
	return "current " + s.Current + " [" + strings.Join(parts, " ") + "]"
}

// rotationReplica is one kernel of the test with its own copy of the secret files.
type rotationReplica struct {
	name string
	k    *kerneltest.Kernel
	dir  string // holds pepper.json and kek.json
}

func (r rotationReplica) pepperFile() string { return filepath.Join(r.dir, "pepper.json") }
func (r rotationReplica) kekFile() string    { return filepath.Join(r.dir, "kek.json") }

// rotationClient is one tenant credential pair the load uses: an ADMIN API key and an
// hmac-sha256 request key.
type rotationClient struct {
	apiKey string
	signer reqsig.SignerKey
}

// Two replicas share PostgreSQL, each with its own copy of the pepper file and the key file, as
// separate machines would. While several clients send API-key-authenticated, hmac-signed requests
// to both without pause, the pepper and the key-encryption key go through the staged rotation
// with the real `nops secrets` commands: add (the file copied to both) → promote (on A first,
// then on B: an overlap where the replicas disagree on the current version) → the keys move (API
// keys re-digested as they are used; `kek rewrap`) → retire. Not one request fails, and afterwards
// the old versions are gone from both files and nothing stored names them.
func TestSecretRotationAcrossReplicas(t *testing.T) {
	dbURL := services.Postgres(t)
	bin := buildNops(t)
	replica := func(name string) rotationReplica {
		return rotationReplica{name: name, dir: t.TempDir()}
	}
	a, b := replica("a"), replica("b")
	start := func(r *rotationReplica) {
		r.k = kerneltest.Start(t, func(c *config.Config) {
			c.Database.URL = dbURL
			c.APIKeys.PepperFile, c.Signing.KEKFile = r.pepperFile(), r.kekFile()
			c.APIKeys.PepperReloadInterval = config.Duration(100 * time.Millisecond)
			c.Signing.KEKReloadInterval = config.Duration(100 * time.Millisecond)
			c.Log.Level = "info"
		})
	}
	start(&a) // generates the files
	distribute(t, a, b)
	start(&b)
	replicas := []rotationReplica{a, b}

	// cli runs `nops secrets …` on replica a's machine: its files, the shared database.
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"secrets"}, args...)...)
		cmd.Env = append(nopsEnv(t.TempDir()),
			"NOPS_DATABASE_URL="+dbURL, "NOPS_APIKEY_PEPPER_FILE="+a.pepperFile(), "NOPS_SIGNING_KEK_FILE="+a.kekFile(),
			"NOPS_LOG_LEVEL=warn")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("nops secrets %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		t.Logf("nops secrets %s:\n%s", strings.Join(args, " "), stdout.String())
		return stdout.String()
	}

	admin := "Authorization: Bearer " + a.k.Token(t, "")
	tenant := newTenant(t, a.k, admin, "rotation")
	const nClients = 4
	clients := make([]rotationClient, nClients)
	for i := range clients {
		_, header := newKey(t, a.k, admin, tenant, "ADMIN", nil)
		clients[i].apiKey = strings.TrimPrefix(header, "X-API-Key: ")
		clients[i].signer = newRequestKey(t, a.k, header, nil)
	}
	// Every request of the tenant must carry a valid signature: an unsigned one is refused on
	// both replicas, so the load below really exercises the request keys.
	resp, body := a.k.Do(t, "PUT", "/v1/tenants/"+tenant+"/perimeter",
		map[string]any{"require_signatures": true, "gateway_origins": []string{}}, admin)
	mustStatus(t, resp, body, http.StatusOK)
	for _, r := range replicas {
		kerneltest.WaitFor(t, 10*time.Second, "replica "+r.name+" requiring signatures", func() bool {
			resp, _ := r.k.Do(t, "GET", "/v1/auth/whoami", nil, "X-API-Key: "+clients[0].apiKey)
			return resp.StatusCode == http.StatusUnauthorized
		})
	}

	status := func(r rotationReplica) secretsStatus {
		t.Helper()
		resp, body := r.k.Do(t, "GET", "/v1/admin/secrets/status", nil, admin)
		mustStatus(t, resp, body, http.StatusOK)
		return decode[secretsStatus](t, body)
	}
	waitAll := func(what string, cond func(s secretsStatus) bool, rs ...rotationReplica) {
		t.Helper()
		for _, r := range rs {
			var last secretsStatus
			kerneltest.WaitFor(t, 30*time.Second, "replica "+r.name+": "+what, func() bool {
				last = status(r)
				return cond(last)
			})
			t.Logf("replica %s: %s — pepper %s; kek %s", r.name, what, last.Pepper, last.KEK)
		}
	}

	load := startRotationLoad(replicas, clients)
	defer load.stop()
	// progress waits until both replicas served more requests, so every step overlaps with load.
	progress := func() {
		t.Helper()
		load.waitServed(t, 2*nClients)
	}
	progress()

	// 1. Add: the new versions reach both replicas; nothing uses them yet.
	if out := cli("pepper", "add"); !strings.Contains(out, "added pepper v2") {
		t.Fatalf("pepper add: %s", out)
	}
	if out := cli("kek", "add"); !strings.Contains(out, "added key k2") {
		t.Fatalf("kek add: %s", out)
	}
	distribute(t, a, b)
	waitAll("v2 and k2 pending", func(s secretsStatus) bool {
		p, _ := s.Pepper.state("v2")
		k, _ := s.KEK.state("k2")
		return p == "pending" && k == "pending"
	}, a, b)
	progress()

	// 2. Promote on a first: during the overlap a hashes and seals with the new versions, b with
	// the old ones, and each accepts the other's.
	cli("pepper", "promote", "v2")
	cli("kek", "promote", "k2")
	waitAll("v2 and k2 current", func(s secretsStatus) bool { return s.Pepper.Current == "v2" && s.KEK.Current == "k2" }, a)
	if s := status(b); s.Pepper.Current != "v1" || s.KEK.Current != "k1" {
		t.Fatalf("replica b promoted before its file changed: %s, %s", s.Pepper, s.KEK)
	}
	// Credentials made on a now are hashed with v2 and sealed under k2; b, still on v1 and k1,
	// verifies them (it holds both since the add).
	_, header := newKey(t, a.k, admin, tenant, "ADMIN", nil)
	fresh := rotationClient{apiKey: strings.TrimPrefix(header, "X-API-Key: ")}
	resp, body = sendSigned(t, a.k, clients[0].signer, signed{method: "POST", path: "/v1/request-keys", headers: []string{header},
		body: []byte(`{"alg":"hmac-sha256","name":"during the overlap"}`)})
	mustStatus(t, resp, body, http.StatusCreated)
	created := decode[struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}](t, body)
	secret, err := reqsig.DecodeSecret(created.Secret)
	if err != nil {
		t.Fatal(err)
	}
	fresh.signer = reqsig.SignerKey{ID: created.ID, Alg: reqsig.AlgHMACSHA256, Secret: secret}
	if err := signedWhoami(b.k.URL, fresh); err != nil {
		t.Fatalf("replica b, before its promotion, with credentials made by a after its own: %v", err)
	}
	progress()
	distribute(t, a, b)
	waitAll("v2 and k2 current", func(s secretsStatus) bool { return s.Pepper.Current == "v2" && s.KEK.Current == "k2" }, b)
	progress()

	// 3. Move what uses the old versions: API keys as they are used; sealed values by a rewrap.
	waitAll("no API key under v1", func(s secretsStatus) bool {
		_, n := s.Pepper.state("v1")
		return n == 0
	}, a)
	if out := cli("kek", "rewrap"); !strings.Contains(out, "0 failed") || strings.Contains(out, " 0 re-sealed") {
		t.Fatalf("rewrap: %s", out)
	}
	waitAll("nothing sealed under k1", func(s secretsStatus) bool {
		_, n := s.KEK.state("k1")
		return n == 0
	}, a)
	progress()

	// 4. Retire: refused for the current versions, done for the old ones, distributed.
	cli("pepper", "retire", "v1")
	cli("kek", "retire", "k1")
	distribute(t, a, b)
	waitAll("v1 and k1 retired", func(s secretsStatus) bool {
		return len(s.Pepper.Versions) == 1 && len(s.KEK.Versions) == 1 && s.Pepper.ReloadError == "" && s.KEK.ReloadError == ""
	}, a, b)
	progress()
	progress()
	total, failures := load.stop()

	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed during the rotation; first: %s", len(failures), total, strings.Join(failures[:min(5, len(failures))], "; "))
	}
	t.Logf("%d requests, 0 failed, across the rotation (served: a %d, b %d)", total, load.served[0].Load(), load.served[1].Load())
	for i, r := range replicas {
		if load.served[i].Load() == 0 {
			t.Errorf("replica %s served no request", r.name)
		}
		for _, f := range []string{r.pepperFile(), r.kekFile()} {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(raw), `"v1"`) || strings.Contains(string(raw), `"k1"`) {
				t.Errorf("%s still holds a retired version:\n%s", f, raw)
			}
		}
		s := status(r)
		// The token signing keys moved with the other sealed values: sealed under k2 now.
		if len(s.KEK.Versions) != 1 || s.KEK.Versions[0].Version != "k2" || s.KEK.Versions[0].SigningKeys < 1 {
			t.Errorf("replica %s: no token signing key sealed under k2: %+v", r.name, s.KEK.Versions)
		}
		for _, sec := range []secretStatus{s.Pepper, s.KEK} {
			for _, v := range sec.Versions {
				if v.State != "current" {
					t.Errorf("replica %s: version %s (%s) is still named: %s", r.name, v.Version, v.State, sec)
				}
			}
		}
		// The clients' keys still work on both replicas after the rotation.
		for _, c := range clients {
			if err := signedWhoami(r.k.URL, c); err != nil {
				t.Errorf("replica %s after the rotation: %v", r.name, err)
			}
		}
	}
	// Every step is in the audit trail, by the operator, with the versions.
	page := auditRecords(t, a.k, admin, "action=apikey.pepper.rotate")
	var reasons []string
	for _, it := range page.Items {
		reasons = append(reasons, it.Decision.Reason)
	}
	page = auditRecords(t, a.k, admin, "action=signing.kek.rotate")
	for _, it := range page.Items {
		reasons = append(reasons, it.Decision.Reason)
	}
	all := strings.Join(reasons, "\n")
	for _, want := range []string{"step=add version=v2", "step=promote version=v2 previous=v1", "step=retire version=v1",
		"step=add version=k2", "step=promote version=k2 previous=k1", "step=rewrap version=k2", "step=retire version=k1"} {
		if !strings.Contains(all, want) {
			t.Errorf("no audit record says %q; records:\n%s", want, all)
		}
	}
}

// distribute copies from's secret files onto to's, atomically as a deployment tool would.
func distribute(t *testing.T, from, to rotationReplica) {
	t.Helper()
	for _, name := range []string{"pepper.json", "kek.json"} {
		raw, err := os.ReadFile(filepath.Join(from.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := keyfile.Write(filepath.Join(to.dir, name), raw, 0o600, true); err != nil {
			t.Fatal(err)
		}
	}
}

// rotationLoad sends requests from every client to both replicas in turn until stopped.
type rotationLoad struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	served   [2]atomic.Int64
	total    atomic.Int64
	mu       sync.Mutex
	failures []string
}

func startRotationLoad(replicas []rotationReplica, clients []rotationClient) *rotationLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &rotationLoad{cancel: cancel}
	for i, c := range clients {
		l.wg.Go(func() {
			for n := i; ctx.Err() == nil; n++ {
				r := n % len(replicas)
				err := signedWhoami(replicas[r].k.URL, c)
				l.total.Add(1)
				if err != nil {
					l.mu.Lock()
					l.failures = append(l.failures, fmt.Sprintf("replica %s: %v", replicas[r].name, err))
					l.mu.Unlock()
				} else {
					l.served[r].Add(1)
				}
				// A short pause between requests keeps the machine for the kernels' own work.
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return l
}

// waitServed waits until each replica served at least n more requests.
func (l *rotationLoad) waitServed(t *testing.T, n int64) {
	t.Helper()
	from := [2]int64{l.served[0].Load(), l.served[1].Load()}
	kerneltest.WaitFor(t, 30*time.Second, "requests served by both replicas", func() bool {
		return l.served[0].Load() >= from[0]+n && l.served[1].Load() >= from[1]+n
	})
}

// stop ends the load and returns the number of requests sent and the failures.
func (l *rotationLoad) stop() (int64, []string) {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total.Load(), slices.Clone(l.failures)
}

var rotationHTTP = &http.Client{Timeout: 30 * time.Second}

// signedWhoami sends GET /v1/auth/whoami with the client's API key, signed with its request key,
// and returns an error unless the answer is 200 naming the key.
func signedWhoami(base string, c rotationClient) error {
	req, err := http.NewRequestWithContext(context.Background(), "GET", base+"/v1/auth/whoami", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", c.apiKey)
	if err := reqsig.Sign(req, nil, c.signer, time.Now(), ""); err != nil {
		return err
	}
	resp, err := rotationHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var who struct {
		Subject string `json:"subject"`
	}
	if err := json.Unmarshal(body, &who); err != nil || !strings.Contains(c.apiKey, who.Subject) || who.Subject == "" {
		return fmt.Errorf("whoami answered %s", body)
	}
	return nil
}
