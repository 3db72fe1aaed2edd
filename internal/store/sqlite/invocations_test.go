package sqlite

import (
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func TestInvocations(t *testing.T) {
	storetest.RunInvocations(t, func(t *testing.T) storetest.InvocationStore { return openMigrated(t, Config{}) })
}

// The sweeper's and the purge's statements seek their indexes instead of scanning the table.
func TestInvocationsQueryPlans(t *testing.T) {
	s := openMigrated(t, Config{})
	now := formatTime(time.Now())
	for _, tc := range []struct {
		name, query, index string
		args               []any
	}{
		{"reclaimable", reclaimableQuery, "invocations_lease", []any{now, 10}},
		{"purge", purgeInvocationsQuery, "invocations_expiry", []any{now, 10}},
	} {
		plan := strings.Join(queryPlan(t, s, tc.query, tc.args...), "\n")
		if !strings.Contains(plan, "USING INDEX "+tc.index) || strings.Contains(plan, "SCAN invocations\n") || strings.HasSuffix(plan, "SCAN invocations") {
			t.Errorf("plan of %s:\n%s", tc.name, plan)
		}
	}
}
