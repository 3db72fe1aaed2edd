package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	_ "modernc.org/sqlite"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// TestAuditVerifyOffline runs `nops audit verify` against a kernel's database, untouched and
// then tampered with directly in SQL, the way an attacker with database access would.
func TestAuditVerifyOffline(t *testing.T) {
	k := kerneltest.Start(t, func(c *config.Config) {
		c.Audit.CheckpointEvery = 1
		c.Audit.CheckpointInterval = config.Duration(100 * time.Millisecond)
	})
	admin := "Authorization: Bearer " + k.Token(t, "")
	for _, name := range []string{"one", "two", "three", "four"} {
		resp, body := k.Do(t, "POST", "/v1/tenants", map[string]string{"name": name}, admin)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create tenant: %d %s", resp.StatusCode, body)
		}
	}
	kerneltest.WaitFor(t, 10*time.Second, "a checkpoint of the global tree", func() bool {
		resp, body := k.Do(t, "GET", "/v1/audit/checkpoint", nil, admin)
		return resp.StatusCode == http.StatusOK && !strings.Contains(string(body), `"size":1,`)
	})
	env := map[string]string{"NOPS_DATA_DIR": k.Config.DataDir}

	code, out, errOut := runCLI(t, env, "audit", "verify", "--tree", "global")
	if code != 0 || !strings.Contains(out, "tree global: ok") {
		t.Fatalf("untampered log: exit %d\n%s%s", code, out, errOut)
	}

	db, err := sql.Open("sqlite", filepath.Join(k.Config.DataDir, kernel.SQLiteFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.ExecContext(context.Background(), `UPDATE audit_records
		SET canonical = CAST(replace(CAST(canonical AS TEXT), '"action":"tenant.create"', '"action":"tenant.resume"') AS BLOB)
		WHERE tree = 'global' AND seq = 2`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("tampered %d rows, want 1", n)
	}
	code, out, _ = runCLI(t, env, "audit", "verify", "--tree", "global")
	if code != 1 || !strings.Contains(out, "FAILED") || !strings.Contains(out, "at seq 2") {
		t.Fatalf("an edited record: exit %d, want 1 naming seq 2\n%s", code, out)
	}

	// With a verifier key that is not the kernel's, the checkpoint does not verify either.
	_, foreign, err := note.GenerateKey(rand.Reader, "someone-else")
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(t, env, "audit", "verify", "--tree", "global", "--json", "--verifier-key", foreign)
	if code != 1 || !strings.Contains(out, `"verified": false`) {
		t.Fatalf("foreign verifier key: exit %d, want 1 with an unverified checkpoint\n%s", code, out)
	}
}
