package errs

import (
	"errors"
	"fmt"
	"testing"
)

func TestCodeOf(t *testing.T) {
	cause := errors.New("disk on fire")
	tests := []struct {
		name string
		err  error
		want Code
	}{
		{"nil", nil, ""},
		{"plain", cause, Internal},
		{"direct", New(NotFound, "agent %s not found", "agt_1"), NotFound},
		{"wrapped", fmt.Errorf("load: %w", Wrap(Unavailable, cause, "database unavailable")), Unavailable},
		{"field", Field("body.username", "required"), Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CodeOf(tt.err); got != tt.want {
				t.Fatalf("CodeOf = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorKeepsCauseForLogsOnly(t *testing.T) {
	cause := errors.New("pq: relation users does not exist")
	e := Wrap(Internal, cause, "could not load user")
	if !errors.Is(e, cause) {
		t.Fatal("cause not reachable through Unwrap")
	}
	if e.Message != "could not load user" {
		t.Fatalf("client message = %q", e.Message)
	}
	if got := e.Error(); got != "internal: could not load user: pq: relation users does not exist" {
		t.Fatalf("Error() = %q", got)
	}
}
