package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
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
// then tampered with directly in SQL, the way an attacker with database access would: each case
// must exit 1 naming the first bad sequence number. (Every tampering kind, on both adapters, is
// in internal/store/storetest/audit_tamper.go; this checks the command around it.)
func TestAuditVerifyOffline(t *testing.T) {
	cases := []struct {
		name, sql string
		seq       int
	}{
		// seq 2 is a tenant.create (the kernel writes identity.ca.create first); tamper fails loudly if not.
		{"edit", `UPDATE audit_records SET canonical = CAST(replace(CAST(canonical AS TEXT), '"action":"tenant.create"', '"action":"tenant.resume"') AS BLOB) WHERE tree = 'global' AND seq = 2`, 2},
		{"delete", `DELETE FROM audit_records WHERE tree = 'global' AND seq = 1`, 1},
		{"truncate the tail", `DELETE FROM audit_records WHERE tree = 'global' AND seq >= 3`, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, env := auditedKernel(t)
			code, out, errOut := runCLI(t, env, "audit", "verify", "--tree", "global")
			if code != 0 || !strings.Contains(out, "tree global: ok") {
				t.Fatalf("untampered log: exit %d\n%s%s", code, out, errOut)
			}
			tamper(t, k, tc.sql)
			code, out, _ = runCLI(t, env, "audit", "verify", "--tree", "global")
			if code != 1 || !strings.Contains(out, "FAILED") || !strings.Contains(out, fmt.Sprintf("at seq %d:", tc.seq)) {
				t.Fatalf("exit %d, want 1 naming seq %d\n%s", code, tc.seq, out)
			}
		})
	}
}

// auditedKernel starts a kernel, writes four more records to the global audit tree (after those
// the kernel writes at its first start, such as identity.ca.create) and waits for a signed
// checkpoint covering the whole tree.
func auditedKernel(t *testing.T) (*kerneltest.Kernel, map[string]string) {
	t.Helper()
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
	var size int
	// The running kernel writes too (checkpoints, the degraded-mode write probe every second):
	// wait for its lock instead of failing with SQLITE_BUSY.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(k.Config.DataDir, kernel.SQLiteFile)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM audit_records WHERE tree = 'global'`).Scan(&size); err != nil {
		t.Fatal(err)
	}
	if size < 4 {
		t.Fatalf("the global tree holds %d records, want at least the 4 written", size)
	}
	kerneltest.WaitFor(t, 10*time.Second, "a checkpoint of the whole global tree", func() bool {
		resp, body := k.Do(t, "GET", "/v1/audit/checkpoint", nil, admin)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), fmt.Sprintf(`"size":%d,`, size))
	})
	return k, map[string]string{"NOPS_DATA_DIR": k.Config.DataDir}
}

func tamper(t *testing.T, k *kerneltest.Kernel, query string) {
	t.Helper()
	// The running kernel writes too (checkpoints, the degraded-mode write probe every second):
	// wait for its lock instead of failing with SQLITE_BUSY.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(k.Config.DataDir, kernel.SQLiteFile)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.ExecContext(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n < 1 {
		t.Fatalf("tampering changed no row: %s", query)
	}
}

// TestAuditVerifyForeignKey: with a verifier key that is not the kernel's, an untouched log's
// checkpoint does not verify, and the command says so.
func TestAuditVerifyForeignKey(t *testing.T) {
	_, env := auditedKernel(t)
	_, foreign, err := note.GenerateKey(rand.Reader, "someone-else")
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCLI(t, env, "audit", "verify", "--tree", "global", "--json", "--verifier-key", foreign)
	if code != 1 || !strings.Contains(out, `"verified": false`) {
		t.Fatalf("foreign verifier key: exit %d, want 1 with an unverified checkpoint\n%s", code, out)
	}
}
