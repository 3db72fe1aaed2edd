package e2e

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// A nonce accepted under either nonce durability (signing.nonce_durability) is refused after a
// restart of the kernel on the same data directory: a GET, whose handler ran while its claim
// committed, and a POST, whose handler waited for it. Both with the default nonce store on
// SQLite (auto: the nonce journal under data_dir) and with the nonces in SQLite (sql).
func TestSignatureReplayAfterRestartByDurability(t *testing.T) {
	for _, tc := range []struct{ store, durability string }{
		{"auto", "full"}, {"auto", "process"}, {"sql", "full"}, {"sql", "process"},
	} {
		t.Run(tc.store+"/"+tc.durability, func(t *testing.T) {
			dataDir := t.TempDir()
			cfg := func(c *config.Config) {
				c.DataDir, c.Signing.NonceStore, c.Signing.NonceDurability = dataDir, tc.store, tc.durability
			}
			if kind := func() string { c := config.Default(); cfg(&c); return c.NonceStoreKind() }(); kind != map[string]string{"auto": "file", "sql": "sql"}[tc.store] {
				t.Fatalf("nonce store %s resolves to %s", tc.store, kind)
			}
			getNonce, postNonce := reqsig.NewNonce(), reqsig.NewNonce()
			var (
				key   reqsig.SignerKey
				admin string
				get   signed
			)
			post := func(name string) signed {
				s := signed{method: "POST", path: "/v1/agents", headers: []string{admin}, nonce: postNonce}
				s.body = []byte(`{"name":"` + name + `","version":"v1.0.0","endpoint":"https://agents.example.com/x"}`)
				return s
			}
			t.Run("first life", func(t *testing.T) {
				f := newFixture(t, cfg)
				admin = f.keys["ADMIN"]
				key = newRequestKey(t, f.k, admin, nil)
				agent := newAgent(t, f.k, admin, "durable", map[string]string{"env": "dev"}, "")
				get = signed{method: "GET", path: "/v1/agents/" + agent, headers: []string{admin}, nonce: getNonce}
				resp, body := sendSigned(t, f.k, key, get)
				mustStatus(t, resp, body, http.StatusOK)
				resp, body = sendSigned(t, f.k, key, post("first"))
				mustStatus(t, resp, body, http.StatusCreated)
			})
			if t.Failed() {
				t.FailNow()
			}
			k := kerneltest.Start(t, cfg)
			resp, body := sendSigned(t, k, key, get)
			wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "nonce already used")
			resp, body = sendSigned(t, k, key, post("second"))
			wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "nonce already used")
			resp, body = k.Do(t, "GET", "/v1/agents?limit=100", nil, admin)
			mustStatus(t, resp, body, http.StatusOK)
			if strings.Contains(string(body), `"second"`) {
				t.Fatalf("the replayed POST created its agent: %s", body)
			}
			get.nonce = ""
			resp, body = sendSigned(t, k, key, get)
			mustStatus(t, resp, body, http.StatusOK)
		})
	}
}

// A second kernel on the data directory of a running one fails to start, before it opens the
// database or the embedded bus: the nonce journal is locked by the first, which would otherwise
// accept the nonces the second accepts.
func TestSecondKernelOnDataDirRefused(t *testing.T) {
	first := kerneltest.Start(t)
	if _, err := os.Stat(filepath.Join(first.Config.DataDir, kernel.NonceJournalDir)); err != nil {
		t.Fatalf("no nonce journal under the data directory: %v", err)
	}
	cfg := first.Config
	k, err := kernel.New(t.Context(), cfg, kernel.Options{Logger: slog.New(slog.DiscardHandler), Out: io.Discard, Version: "test", Commit: "test"})
	if err == nil {
		_ = k.Close()
		t.Fatal("a second kernel started on the data directory of a running one")
	}
	if !strings.Contains(err.Error(), "one kernel per data directory") {
		t.Fatalf("second kernel: %v, want the nonce journal's lock refusal", err)
	}
	// The refusal comes before the second kernel opens the database or the embedded bus: the
	// first one goes on serving changes, and their events.
	admin := "Authorization: Bearer " + first.Token(t, "")
	newTenant(t, first, admin, "after-refusal")
}

// A replayed signed GET that an ABAC policy would deny answers as a replay (401) and is audited
// as one, once, with no policy denial: the nonce claim that commits while the policies are
// evaluated still decides first. A fresh nonce gets the policy's 403 and its audit record.
func TestReplayRefusedBeforePolicyDenial(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	agent := newAgent(t, k, admin, "guarded", map[string]string{"lock": "frozen"}, "")
	key := newRequestKey(t, k, admin, nil)
	get := signed{method: "GET", path: "/v1/agents/" + agent, headers: []string{admin}, nonce: reqsig.NewNonce()}
	resp, body := sendSigned(t, k, key, get)
	mustStatus(t, resp, body, http.StatusOK)

	resp, body = k.Do(t, "POST", "/v1/policies", map[string]any{
		"name": "frozen-unsigned-reads", "effect": "deny", "enabled": true,
		"expression": `resource.labels.?lock.orValue("") == "frozen" && request.signed`,
	}, admin)
	mustStatus(t, resp, body, http.StatusCreated)
	pollUntil(t, 10*time.Second, "the policy is in force", func() bool {
		resp, _ := sendSigned(t, k, key, signed{method: "GET", path: "/v1/agents/" + agent, headers: []string{admin}})
		return resp.StatusCode == http.StatusForbidden
	})
	denials := len(auditRecords(t, k, admin, "action=auth.authorize").Items)
	replays := countReasons(auditRecords(t, k, admin, "action=auth.authenticate"), "request signature refused: replay")

	resp, body = sendSigned(t, k, key, get) // the first request's nonce again
	wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "nonce already used")
	if got := countReasons(auditRecords(t, k, admin, "action=auth.authenticate"), "request signature refused: replay"); got != replays+1 {
		t.Fatalf("replay audited %d times, want once", got-replays)
	}
	if got := len(auditRecords(t, k, admin, "action=auth.authorize").Items); got != denials {
		t.Fatalf("the replay added %d policy denial records, want none", got-denials)
	}
}

func countReasons(p auditPage, reason string) int {
	n := 0
	for _, it := range p.Items {
		if it.Decision.Reason == reason {
			n++
		}
	}
	return n
}
