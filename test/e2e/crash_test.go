package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/consumers"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// Crash harness parameters (issue 4, "Failure behaviour").
const (
	crashCycles     = 10
	crashRate       = 2500 // heartbeat events offered per second
	crashRegistrars = 1    // HTTP clients registering agents at once
	// crashSettleLimit bounds the wait for the projection to catch up after the last restart.
	// It only matters when something is wrong: a correct kernel settles well before.
	crashSettleLimit = 3 * time.Minute
)

// crashWindow is how long load runs before the kill of cycle c: 1.5 to 3 s, varied so that the
// kills land at different points of the kernel's work.
func crashWindow(c int) time.Duration {
	return 1500*time.Millisecond + time.Duration((c*3)%4)*500*time.Millisecond
}

// TestCrashRecoveryKill9 runs the real nops binary (SQLite and embedded JetStream with the
// default durability, sync) under two loads — heartbeat events published straight to its NATS
// with unique ids, and agent registrations through the API — and kill -9s it mid-load, then
// restarts it on the same data directory, ten times. At the end the event-stats projection must
// hold every acknowledged event (0 lost) exactly once (0 duplicate effects), and every committed
// registration's outbox event must have been applied exactly once, including those of
// registrations committed just before a kill whose response never arrived.
func TestCrashRecoveryKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("the crash harness builds and kills the nops binary ten times")
	}
	// Runs alongside the other long tests marked parallel (TestRotationUnderLoad waits on
	// certificate lifetimes most of its two minutes): the package's wall time is what CI pays.
	t.Parallel()
	bin := buildNops(t)
	dataDir := t.TempDir()
	// A short ack wait redelivers the events a killed kernel had fetched and not acknowledged
	// within seconds of the restart instead of 30 s: sooner settled, and more redeliveries for
	// the inbox to absorb.
	env := nopsEnv(dataDir, "NOPS_BUS_ACK_WAIT=5s")
	client := &http.Client{
		Transport: kerneltest.NewContractTransport(t, http.DefaultTransport.(*http.Transport).Clone()),
		Timeout:   30 * time.Second,
	}
	t.Cleanup(client.CloseIdleConnections)
	// The registrations under load skip the contract check: it would cost the test more CPU than
	// the kernel spends on them, on a machine the kernel shares with the test.
	loadClient := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(loadClient.CloseIdleConnections)

	srv := startNops(t, bin, "run-00", env)
	readyTimes := []time.Duration{srv.waitReady(t, client)}
	api := srv.api(client)
	admin := "Authorization: Bearer " + api.Token(t, "")
	tenant := newTenant(t, api, admin, "crash")
	_, key := newKey(t, api, admin, tenant, "ADMIN", nil)
	resp, body := api.Do(t, http.MethodPost, "/v1/agents", agentSpec("heartbeat-source"), key)
	mustStatus(t, resp, body, http.StatusCreated)
	source := decode[agentDoc](t, body)

	hb := newHeartbeatLoad(tenant, source.ID)
	regs := newRegistrations()
	regs.names[source.Name] = true
	regs.ok[source.ID] = source.Name

	var loadTime time.Duration
	for cycle := 1; cycle <= crashCycles; cycle++ {
		attempted0, acked0, sent0 := hb.counts()
		regs.mu.Lock()
		ok0 := len(regs.ok)
		regs.mu.Unlock()

		hb.prepare(t, crashRate*int(crashWindow(cycle)/time.Second+1))
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		start := time.Now()
		natsAddr, cycleAPI := srv.natsAddr, srv.api(loadClient)
		wg.Go(func() { hb.run(ctx, t, natsAddr, crashRate) })
		for w := range crashRegistrars {
			wg.Go(func() { regs.run(ctx, t, cycleAPI, key, fmt.Sprintf("c%02d-w%d", cycle, w)) })
		}
		select {
		case <-time.After(crashWindow(cycle)):
		case <-srv.exited:
			cancel()
			wg.Wait()
			t.Fatalf("cycle %d: nops server exited under load (%v); log:\n%s", cycle, srv.exitErr, srv.logTail(40))
		}
		srv.kill(t)
		window := time.Since(start)
		loadTime += window
		cancel()
		wg.Wait()

		attempted, acked, sent := hb.counts()
		regs.mu.Lock()
		ok := len(regs.ok)
		regs.mu.Unlock()
		srv = startNops(t, bin, fmt.Sprintf("run-%02d", cycle), env)
		ready := srv.waitReady(t, client)
		readyTimes = append(readyTimes, ready)
		t.Logf("cycle %2d: load %v: %d publishes (%d new ids, %.0f/s offered), %d acknowledged (%.0f/s), %d registrations answered 201; kill -9; ready again %v after restart",
			cycle, window.Round(time.Millisecond), sent-sent0, attempted-attempted0, float64(sent-sent0)/window.Seconds(),
			acked-acked0, float64(acked-acked0)/window.Seconds(), ok-ok0, ready.Round(time.Millisecond))
		if t.Failed() {
			t.FailNow()
		}
	}

	attempted, acked, sent := hb.counts()
	hb.mu.Lock()
	ackedIDs, attemptedIDs := maps.Clone(hb.acked), maps.Clone(hb.attempted)
	anomalies, pubErrs := slices.Clone(hb.anomalies), maps.Clone(hb.errs)
	hb.mu.Unlock()
	regs.mu.Lock()
	okAgents, names, regFailed, regAttempted := maps.Clone(regs.ok), maps.Clone(regs.names), maps.Clone(regs.failed), regs.attempted
	regs.mu.Unlock()
	t.Logf("load over %d kill -9 restarts in %v of load: %d publishes (%.0f/s offered), %d distinct event ids, %d acknowledged (%.0f/s); publish failures %v",
		crashCycles, loadTime.Round(time.Millisecond), sent, float64(sent)/loadTime.Seconds(), attempted, acked, float64(acked)/loadTime.Seconds(), pubErrs)
	t.Logf("registrations: %d sent, %d answered 201, other outcomes %v", regAttempted, len(okAgents), regFailed)
	t.Logf("time to ready (start, then after each kill): %v", roundAll(readyTimes))
	for _, a := range anomalies {
		t.Errorf("publisher: %s", a)
	}

	// Settle: the kernel that runs now consumes what is left, then is stopped cleanly.
	api = srv.api(client)
	admin = "Authorization: Bearer " + api.Token(t, "")
	agents := listAgents(t, api, key)
	hbType, regType := string(events.TypeAgentHeartbeat), string(events.TypeAgentRegistered)
	var hbCount, regCount int64
	settleStart := time.Now()
	settled := false
	var deadLetters int64
	for prev := [2]int64{-1, -1}; time.Since(settleStart) < crashSettleLimit; {
		var idle bool
		idle, deadLetters = eventStatsIdle(t, api, admin)
		hbCount, regCount = statCount(t, api, key, hbType), statCount(t, api, key, regType)
		// The outbox drained too: after a kill -9 the restarted relay takes the lease over only
		// when the dead holder's expires (outbox.lease_ttl), and only then marks as published the
		// rows the dead process had published without marking them.
		backlog := metricValue(t, api, "nops_outbox_backlog")
		if idle && backlog == 0 && regCount == int64(len(agents)) && hbCount >= int64(acked) && prev == [2]int64{hbCount, regCount} {
			settled = true
			break
		}
		prev = [2]int64{hbCount, regCount}
		time.Sleep(250 * time.Millisecond) // polling with a deadline
	}
	t.Logf("projection settled=%v after %v: %s %d, %s %d", settled, time.Since(settleStart).Round(time.Millisecond), hbType, hbCount, regType, regCount)
	if deadLetters != 0 {
		t.Errorf("%d dead letters after the crash cycles, want 0: every event was valid", deadLetters)
	}
	srv.stop(t)

	db := openReadOnly(t, filepath.Join(dataDir, kernel.SQLiteFile))
	inbox := queryStrings(t, db, `SELECT event_id FROM inbox WHERE consumer = ?`, consumers.EventStatsName)
	stats := map[string]int64{}
	rows, err := db.Query(`SELECT type, count FROM event_stats WHERE tenant = ?`, tenant)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var typ string
		var n int64
		if err := rows.Scan(&typ, &n); err != nil {
			t.Fatal(err)
		}
		stats[typ] = n
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	outboxIDs := queryStrings(t, db, `SELECT id FROM outbox`)
	regEvents := queryStrings(t, db, `SELECT id FROM outbox WHERE tenant = ? AND type = ?`, tenant, regType)
	unsent := queryStrings(t, db, `SELECT id FROM outbox WHERE tenant = ? AND type = ? AND published_at IS NULL`, tenant, regType)
	if stats[hbType] != hbCount || stats[regType] != regCount {
		t.Errorf("the database's projection (%s %d, %s %d) differs from what the API read before the stop (%d, %d)",
			hbType, stats[hbType], regType, stats[regType], hbCount, regCount)
	}

	// (a) 0 lost: every acknowledged event was applied, and the count is between what was
	// acknowledged and what was attempted (an event whose acknowledgement the kill swallowed may
	// be stored too).
	var lost []string
	for id := range ackedIDs {
		if !inbox[id] {
			lost = append(lost, id)
		}
	}
	slices.Sort(lost)
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged events never applied by %s (lost), e.g. %v", len(lost), len(ackedIDs), consumers.EventStatsName, lost[:min(5, len(lost))])
	}
	if n := stats[hbType]; n < int64(len(ackedIDs)) || n > int64(len(attemptedIDs)) {
		t.Errorf("%s counted %d, want between %d acknowledged and %d attempted", hbType, n, len(ackedIDs), len(attemptedIDs))
	}

	// (b) 0 duplicate effects: the projection counted each applied event once — its count is the
	// number of distinct event ids the inbox holds for the test's events.
	applied := 0
	var phantom []string
	for id := range inbox {
		switch {
		case attemptedIDs[id]:
			applied++
		case !outboxIDs[id]:
			phantom = append(phantom, id)
		}
	}
	if stats[hbType] != int64(applied) {
		t.Errorf("%s counted %d for %d distinct applied events: %d duplicate effects", hbType, stats[hbType], applied, stats[hbType]-int64(applied))
	}
	slices.Sort(phantom)
	if len(phantom) > 0 {
		t.Errorf("the inbox holds %d events neither published by the test nor in the outbox, e.g. %v", len(phantom), phantom[:min(5, len(phantom))])
	}

	// (c) the outbox: every registration that answered 201 exists; every agent's registration
	// event was published and applied exactly once, answered or not.
	for id, name := range okAgents {
		if agents[id] != name {
			t.Errorf("agent %s (%s) answered 201 and is not in the registry", id, name)
		}
	}
	for id, name := range agents {
		if !names[name] {
			t.Errorf("agent %s (%s) in the registry was never registered by the test", id, name)
		}
	}
	if len(unsent) > 0 {
		t.Errorf("%d %s outbox events never published, e.g. %v", len(unsent), regType, firstKeys(unsent, 5))
	}
	if len(regEvents) != len(agents) {
		t.Errorf("%d %s outbox events for %d agents in the registry", len(regEvents), regType, len(agents))
	}
	var unapplied []string
	for id := range regEvents {
		if !inbox[id] {
			unapplied = append(unapplied, id)
		}
	}
	slices.Sort(unapplied)
	if len(unapplied) > 0 {
		t.Errorf("%d %s events in the outbox never applied, e.g. %v", len(unapplied), regType, unapplied[:min(5, len(unapplied))])
	}
	if stats[regType] != int64(len(agents)) {
		t.Errorf("%s counted %d for %d agents in the registry", regType, stats[regType], len(agents))
	}
	t.Logf("verified: %d acknowledged of %d attempted events, %d applied once each (inbox), %d lost; %d agents (%d answered 201), %d %s events applied once each",
		len(ackedIDs), len(attemptedIDs), applied, len(lost), len(agents), len(okAgents), len(regEvents), regType)
}

// eventStatsIdle reports whether the event-stats consumer has nothing left to deliver or settle,
// and how many dead letters the kernel holds.
func eventStatsIdle(t *testing.T, api *kerneltest.Kernel, admin string) (bool, int64) {
	t.Helper()
	resp, body := api.Do(t, http.MethodGet, "/v1/events/consumers", nil, admin)
	mustStatus(t, resp, body, http.StatusOK)
	list := decode[struct {
		Items []struct {
			Name       string `json:"name"`
			Created    bool   `json:"created"`
			Pending    int64  `json:"pending"`
			AckPending int64  `json:"ack_pending"`
		} `json:"items"`
		DeadLetters int64 `json:"dead_letters"`
	}](t, body)
	for _, c := range list.Items {
		if c.Name == consumers.EventStatsName {
			return c.Created && c.Pending == 0 && c.AckPending == 0, list.DeadLetters
		}
	}
	t.Fatalf("no %s consumer in %s", consumers.EventStatsName, body)
	return false, 0
}

// listAgents returns id → name of every agent of cred's tenant, through the API's pages.
func listAgents(t *testing.T, api *kerneltest.Kernel, cred string) map[string]string {
	t.Helper()
	out := map[string]string{}
	cursor := ""
	for {
		path := "/v1/agents?limit=500"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		resp, body := api.Do(t, http.MethodGet, path, nil, cred)
		mustStatus(t, resp, body, http.StatusOK)
		page := decode[struct {
			Items      []agentDoc `json:"items"`
			NextCursor string     `json:"next_cursor"`
		}](t, body)
		for _, a := range page.Items {
			out[a.ID] = a.Name
		}
		if page.NextCursor == "" {
			return out
		}
		cursor = page.NextCursor
	}
}

// openReadOnly opens a stopped kernel's SQLite database without writing to it.
func openReadOnly(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=query_only(1)")
	if err != nil {
		t.Fatalf("open %s read-only: %v", path, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Ping(); err != nil {
		t.Fatalf("open %s read-only: %v", path, err)
	}
	return db
}

// queryStrings returns the set of the first column of query's rows.
func queryStrings(t *testing.T, db *sql.DB, query string, args ...any) map[string]bool {
	t.Helper()
	rows, err := db.Query(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		out[s] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

func firstKeys(m map[string]bool, n int) []string {
	keys := slices.Sorted(maps.Keys(m))
	return keys[:min(n, len(keys))]
}

func roundAll(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.Round(time.Millisecond).String()
	}
	return strings.Join(s, " ")
}
