package postgres

import (
	"testing"

	"github.com/nops-kernel/nops/internal/store/storetest"
)

func TestRevocations(t *testing.T) {
	storetest.RunRevocations(t, func(t *testing.T) storetest.RevocationStore { return openDomains(t).(*Store) })
}
