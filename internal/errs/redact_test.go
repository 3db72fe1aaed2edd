package errs

import (
	"errors"
	"fmt"
	"testing"
)

func TestRedact(t *testing.T) {
	cause := errors.New("dial tcp: auth failed")
	err := fmt.Errorf("connect to redis://u:s3cret@h:6379: %w", cause)
	got := Redact(err, "", "s3cret")
	if got.Error() != "connect to redis://u:[redacted]@h:6379: dial tcp: auth failed" {
		t.Fatalf("Redact = %q", got)
	}
	if !errors.Is(got, cause) {
		t.Fatal("chain lost")
	}
	if Redact(cause, "s3cret") != cause {
		t.Fatal("an error without secrets must come back unchanged")
	}
	if Redact(nil, "x") != nil {
		t.Fatal("nil must stay nil")
	}
}
