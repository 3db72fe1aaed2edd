package postgres

import (
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func TestInvocations(t *testing.T) {
	storetest.RunInvocations(t, func(t *testing.T) storetest.InvocationStore { return openDomains(t).(*Store) })
}

// The sweeper's and the purge's statements seek their indexes instead of scanning the table.
func TestInvocationsQueryPlans(t *testing.T) {
	s := openDomains(t).(*Store)
	now := time.Now()
	for _, tc := range []struct {
		name, query, index string
		args               []any
	}{
		{"reclaimable", reclaimableQuery, "invocations_lease", []any{now, 10}},
		{"purge", purgeInvocationsQuery, "invocations_expiry", []any{now, 10}},
	} {
		if plan := queryPlan(t, s, tc.query, tc.args...); !strings.Contains(plan, tc.index) || strings.Contains(plan, "Seq Scan") {
			t.Errorf("plan of %s:\n%s", tc.name, plan)
		}
	}
}
