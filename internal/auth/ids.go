package auth

import (
	"strings"

	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/attribute"
)

// NewUserID returns a fresh user ID: "usr_" followed by a lower-case ULID.
func NewUserID() string { return "usr_" + strings.ToLower(ulid.Make().String()) }

func reasonAttr(reason string) attribute.Set {
	return attribute.NewSet(attribute.String("reason", reason))
}
