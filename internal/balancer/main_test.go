package balancer_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The package starts no goroutine, but the concurrency test does: goleak makes sure each returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
