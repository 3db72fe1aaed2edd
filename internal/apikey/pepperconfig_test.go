package apikey

import (
	"slices"
	"strings"
	"testing"
)

func TestPeppersFromConfig(t *testing.T) {
	s1, s0 := strings.Repeat("a", 32), "b+/="+strings.Repeat("c", 40)
	ps, err := PeppersFromConfig("v2", strings.Repeat("z", 32), "v1:"+s1+"\n  v0:"+s0)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Current().Version != "v2" || !slices.Equal(ps.Versions(), []string{"v0", "v1", "v2"}) {
		t.Fatalf("peppers %s", ps)
	}
	if p, _ := ps.Get("v0"); string(p.Key) != s0 {
		t.Fatal("a secret with ':'-free base64 characters was cut")
	}
	if ps, err := PeppersFromConfig("v1", s1, ""); err != nil || len(ps.Versions()) != 1 {
		t.Fatalf("no previous peppers: %s, %v", ps, err)
	}
	secret := strings.Repeat("s", 32)
	for _, previous := range []string{
		"v1",                             // no secret
		":" + secret,                     // no version
		"v1:short",                       // too short
		"v 1:" + secret,                  // becomes two entries, the first without ':'
		"v2:" + secret,                   // the current version again
		"v1:" + secret + " v1:" + secret, // twice
		"bad/version:" + secret,
	} {
		_, err := PeppersFromConfig("v2", strings.Repeat("z", 32), previous)
		if err == nil {
			t.Errorf("previous %q accepted", previous)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error quotes the secret: %v", err)
		}
	}
}
