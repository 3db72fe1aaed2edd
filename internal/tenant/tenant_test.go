package tenant_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/tenant"
)

// fieldNames returns the names of the offending fields of an errs.Invalid, failing the test when
// err is anything else.
func fieldNames(t *testing.T, err error) []string {
	t.Helper()
	e := errs.As(err)
	if e == nil || e.Code != errs.Invalid {
		t.Fatalf("err = %v, want errs.Invalid", err)
	}
	var names []string
	for _, f := range e.Fields {
		names = append(names, f.Name)
	}
	return names
}

func TestCreateInputValidate(t *testing.T) {
	tests := []struct {
		name string
		in   tenant.CreateInput
		bad  []string // offending fields; nil means valid
	}{
		{"minimal", tenant.CreateInput{Name: "a"}, nil},
		{"digits and dashes", tenant.CreateInput{Name: "acme-42-prod", DisplayName: "ACME (prod) — ünïcode"}, nil},
		{"leading digit allowed", tenant.CreateInput{Name: "42acme"}, nil},
		{"63 characters", tenant.CreateInput{Name: strings.Repeat("a", 63)}, nil},
		{"128 rune display name", tenant.CreateInput{Name: "a", DisplayName: strings.Repeat("é", 128)}, nil},
		{"empty name", tenant.CreateInput{}, []string{"body.name"}},
		{"64 characters", tenant.CreateInput{Name: strings.Repeat("a", 64)}, []string{"body.name"}},
		{"upper case", tenant.CreateInput{Name: "Acme"}, []string{"body.name"}},
		{"underscore", tenant.CreateInput{Name: "ac_me"}, []string{"body.name"}},
		{"dot", tenant.CreateInput{Name: "ac.me"}, []string{"body.name"}},
		{"leading dash", tenant.CreateInput{Name: "-acme"}, []string{"body.name"}},
		{"trailing dash", tenant.CreateInput{Name: "acme-"}, []string{"body.name"}},
		{"space", tenant.CreateInput{Name: "ac me"}, []string{"body.name"}},
		{"non-ascii", tenant.CreateInput{Name: "açme"}, []string{"body.name"}},
		{"display name too long", tenant.CreateInput{Name: "a", DisplayName: strings.Repeat("é", 129)}, []string{"body.display_name"}},
		{"display name control", tenant.CreateInput{Name: "a", DisplayName: "a\nb"}, []string{"body.display_name"}},
		{"display name invalid utf-8", tenant.CreateInput{Name: "a", DisplayName: "a\xffb"}, []string{"body.display_name"}},
		{"display name padded", tenant.CreateInput{Name: "a", DisplayName: " acme"}, []string{"body.display_name"}},
		{"both bad", tenant.CreateInput{Name: "A", DisplayName: "\x00"}, []string{"body.name", "body.display_name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Validate()
			if tt.bad == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				if !tenant.ValidName(tt.in.Name) {
					t.Errorf("ValidName(%q) = false", tt.in.Name)
				}
				return
			}
			if diff := cmp.Diff(tt.bad, fieldNames(t, err)); diff != "" {
				t.Errorf("offending fields (-want +got):\n%s", diff)
			}
			if tt.bad[0] == "body.name" && tenant.ValidName(tt.in.Name) {
				t.Errorf("ValidName(%q) = true", tt.in.Name)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"ten_01jz8y3w6v6r3b5q8x9k2m4n7q", true},
		{"ten_01JZ8Y3W6V6R3B5Q8X9K2M4N7Q", false}, // IDs are lower case
		{"agt_01jz8y3w6v6r3b5q8x9k2m4n7q", false},
		{"ten_01jz8y3w6v6r3b5q8x9k2m4n7", false},
		{"ten_01jz8y3w6v6r3b5q8x9k2m4n7qq", false},
		{"ten_81jz8y3w6v6r3b5q8x9k2m4n7q", false}, // overflows 128 bits
		{"ten_01jz8y3w6v6r3b5q8x9k2m4n7u", false}, // u is not Crockford base32
		{"", false},
	}
	for _, tt := range tests {
		if got := tenant.ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestStatusValid(t *testing.T) {
	for s, want := range map[tenant.Status]bool{
		tenant.StatusActive: true, tenant.StatusSuspended: true, "": false, "deleted": false, "Active": false,
	} {
		if got := s.Valid(); got != want {
			t.Errorf("Status(%q).Valid() = %v, want %v", s, got, want)
		}
	}
	if !(tenant.Tenant{Status: tenant.StatusActive}).Active() || (tenant.Tenant{Status: tenant.StatusSuspended}).Active() {
		t.Error("Active() does not follow Status")
	}
}
