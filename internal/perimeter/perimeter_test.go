package perimeter_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/perimeter"
)

func fieldNames(err error) []string {
	e := errs.As(err)
	if e == nil {
		return nil
	}
	var out []string
	for _, f := range e.Fields {
		out = append(out, f.Name)
	}
	return out
}

func TestParseOriginsRefuses(t *testing.T) {
	tests := []struct {
		name    string
		origins []string
		fields  []string
	}{
		{"empty entry", []string{""}, []string{"body.gateway_origins[0]"}},
		{"not an address", []string{"10.0.0.0/8", "example.com"}, []string{"body.gateway_origins[1]"}},
		{"host bits set", []string{"10.0.0.1/8"}, []string{"body.gateway_origins[0]"}},
		{"bad prefix length", []string{"10.0.0.0/33"}, []string{"body.gateway_origins[0]"}},
		{"IPv4-mapped prefix", []string{"::ffff:10.0.0.0/104"}, []string{"body.gateway_origins[0]"}},
		{"IPv4-mapped address", []string{"::ffff:10.0.0.1"}, []string{"body.gateway_origins[0]"}},
		{"zone", []string{"fe80::1%eth0"}, []string{"body.gateway_origins[0]"}},
		{"white space", []string{" 10.0.0.0/8"}, []string{"body.gateway_origins[0]"}},
		{"too long", []string{strings.Repeat("1", 65)}, []string{"body.gateway_origins[0]"}},
		{"every bad entry named", []string{"x", "10.0.0.0/8", "y"}, []string{"body.gateway_origins[0]", "body.gateway_origins[2]"}},
		{"too many", slices.Repeat([]string{"10.0.0.0/8"}, perimeter.MaxGatewayOrigins+1), []string{"body.gateway_origins"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := perimeter.ParseOrigins(tt.origins, "body.")
			if errs.CodeOf(err) != errs.Invalid || got != nil {
				t.Fatalf("ParseOrigins = %v, %v; want an invalid error", got, err)
			}
			if names := fieldNames(err); !slices.Equal(names, tt.fields) {
				t.Fatalf("fields %v, want %v", names, tt.fields)
			}
		})
	}
}

func TestParseOriginsCanonical(t *testing.T) {
	got, err := perimeter.ParseOrigins([]string{"2001:db8::/32", "192.0.2.7", "10.0.0.0/8", "192.0.2.7/32", "2001:DB8::1"}, "body.")
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, p := range got {
		texts = append(texts, p.String())
	}
	want := []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "2001:db8::1/128"}
	if !slices.Equal(texts, want) {
		t.Fatalf("ParseOrigins = %v, want %v (canonical, sorted, without duplicates)", texts, want)
	}
	if got, err := perimeter.ParseOrigins(nil, "body."); err != nil || len(got) != 0 {
		t.Fatalf("ParseOrigins(nil) = %v, %v", got, err)
	}
}

func TestAllowsOrigin(t *testing.T) {
	off := perimeter.Settings{TenantID: "ten_x"}
	if off.AllowsOrigin(netip.MustParseAddr("198.51.100.1")) || off.AllowsOrigin(netip.Addr{}) {
		t.Fatal("an empty allow-list admits an address: the gateway is opt-in")
	}
	s := perimeter.Settings{TenantID: "ten_x", GatewayOrigins: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}}
	for addr, want := range map[string]bool{
		"11.0.0.1": false, "2001:db9::1": false, "::ffff:11.0.0.1": false, "fe80::1%eth0": false,
		"10.1.2.3": true, "::ffff:10.1.2.3": true, "2001:db8::5": true, "2001:db8::5%eth0": true,
	} {
		if got := s.AllowsOrigin(netip.MustParseAddr(addr)); got != want {
			t.Errorf("AllowsOrigin(%s) = %v, want %v", addr, got, want)
		}
	}
	if s.AllowsOrigin(netip.Addr{}) {
		t.Error("an unknown address passes an allow-list")
	}
}

func TestCheckIfMatch(t *testing.T) {
	v0 := perimeter.Settings{TenantID: "ten_x"}
	v1 := perimeter.Settings{TenantID: "ten_x", Version: 1}
	other := perimeter.Settings{TenantID: "ten_y", Version: 1}
	if v0.ETag() == v1.ETag() || v1.ETag() == other.ETag() {
		t.Fatal("ETags of different tenants or versions are equal")
	}
	for _, h := range []string{`"nope"`, "W/" + v1.ETag(), v0.ETag(), other.ETag()} {
		err := perimeter.CheckIfMatch(h, v1)
		if errs.CodeOf(err) != errs.PreconditionFailed || !errors.Is(err, perimeter.ErrVersionConflict) {
			t.Errorf("CheckIfMatch(%s) = %v, want a precondition failure", h, err)
		}
	}
	if err := perimeter.CheckIfMatch(strings.Repeat("x", 2000), v1); errs.CodeOf(err) != errs.Invalid {
		t.Errorf("an overlong If-Match = %v, want invalid", err)
	}
	for _, h := range []string{"", "*", v1.ETag(), `"a", ` + v1.ETag()} {
		if err := perimeter.CheckIfMatch(h, v1); err != nil {
			t.Errorf("CheckIfMatch(%s) = %v, want a match", h, err)
		}
	}
}

// FuzzParseOrigins: no input panics, and whatever is accepted is canonical and accepted again
// as is.
func FuzzParseOrigins(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::ffff:1.2.3.4/128", "fe80::1%eth0", "1.2.3.4/", "", "/8", "0.0.0.0/0", "::/0"} {
		f.Add(s, "10.0.0.0/8")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		got, err := perimeter.ParseOrigins([]string{a, b}, "body.")
		if err != nil {
			if errs.CodeOf(err) != errs.Invalid {
				t.Fatalf("ParseOrigins error %v is not invalid", err)
			}
			return
		}
		var texts []string
		for _, p := range got {
			if p != p.Masked() || !p.IsValid() {
				t.Fatalf("accepted a non-canonical prefix %v", p)
			}
			texts = append(texts, p.String())
		}
		again, err := perimeter.ParseOrigins(texts, "body.")
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("canonical %v does not parse to itself: %v, %v", texts, again, err)
		}
	})
}
