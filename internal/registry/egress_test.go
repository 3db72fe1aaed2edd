package registry_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
)

// TestEndpointsCheckedAgainstTheEgressPolicy: Register and Update refuse an endpoint whose IP
// literal the egress policy refuses, with a 400 naming body.endpoint, and write nothing.
func TestEndpointsCheckedAgainstTheEgressPolicy(t *testing.T) {
	policies := map[string]egress.Policy{
		"production default":        {},
		"loopback and private open": {AllowLoopback: true, AllowPrivate: true},
		"allow list":                {Allow: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}},
	}
	cases := []struct {
		endpoint string
		refused  map[string]bool // by policy name; a missing name means accepted
		reason   string
	}{
		{"http://169.254.169.254/", map[string]bool{"production default": true, "loopback and private open": true, "allow list": true}, "cloud metadata"},
		{"http://[fe80::1]:8080/", map[string]bool{"production default": true, "loopback and private open": true, "allow list": true}, "link-local"},
		{"http://224.0.0.1/", map[string]bool{"production default": true, "loopback and private open": true, "allow list": true}, "multicast"},
		{"http://[::ffff:169.254.169.254]/", map[string]bool{"production default": true, "loopback and private open": true, "allow list": true}, "cloud metadata"},
		{"http://127.0.0.1:8080/", map[string]bool{"production default": true, "allow list": true}, "loopback not allowed"},
		{"http://10.0.0.1/", map[string]bool{"production default": true, "allow list": true}, "private not allowed"},
		{"http://10.20.3.4/", map[string]bool{"production default": true}, "private not allowed"},
		{"https://agent.example.com/", nil, ""},
		{"https://93.184.216.34/", nil, ""},
		// Names are not resolved at registration: they are judged when dialled.
		{"http://localhost:8080/", nil, ""},
	}
	for name, pol := range policies {
		t.Run(name, func(t *testing.T) {
			store := newFakeStore(tenantA)
			svc, err := registry.NewService(store, registry.Config{TTL: testTTL, Egress: egress.AddressOnly(pol)})
			if err != nil {
				t.Fatal(err)
			}
			// An agent to update, registered with an endpoint every policy accepts.
			a, err := svc.Register(t.Context(), tenantA, validInput())
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range cases {
				in := validInput()
				in.Name = "a" + string(rune('a'+i))
				in.Endpoint = c.endpoint
				writes := store.writes
				_, regErr := svc.Register(t.Context(), tenantA, in)
				upd := validInput()
				upd.Endpoint = c.endpoint
				_, updErr := svc.Update(t.Context(), tenantA, a.ID, "*", upd)
				if !c.refused[name] {
					if regErr != nil || updErr != nil {
						t.Errorf("%s: register %v, update %v; want accepted", c.endpoint, regErr, updErr)
					}
					if got, err := svc.Update(t.Context(), tenantA, a.ID, "*", validInput()); err != nil || !got.Changed {
						t.Fatalf("restore endpoint: %v", err)
					}
					continue
				}
				for op, err := range map[string]error{"register": regErr, "update": updErr} {
					if diff := cmp.Diff([]string{"body.endpoint"}, fieldNames(t, err)); diff != "" {
						t.Errorf("%s %s: fields (-want +got):\n%s", op, c.endpoint, diff)
						continue
					}
					if r := errs.As(err).Fields[0].Reason; !strings.Contains(r, c.reason) {
						t.Errorf("%s %s: reason %q, want it to contain %q", op, c.endpoint, r, c.reason)
					}
				}
				if store.writes != writes {
					t.Errorf("%s: store written", c.endpoint)
				}
			}
		})
	}
}
