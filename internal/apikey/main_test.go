package apikey

import (
	"testing"

	"go.uber.org/goleak"
)

// UsageRecorder.Run starts no goroutine of its own, but the tests run it in one: goleak makes
// sure each returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
