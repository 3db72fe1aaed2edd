package bus

import "testing"

func TestMatchSubject(t *testing.T) {
	const ten, typ = "ten_x", "nops.agent.registered.v1"
	tests := []struct {
		pattern string
		want    bool
	}{
		{">", true},
		{"ten_x.>", true},
		{"ten_y.>", false},
		{"*.nops.agent.>", true},
		{"*.nops.tenant.>", false},
		{"*.nops.agent.registered.v1", true},
		{"ten_x.nops.agent.registered.v1", true},
		{"ten_x.nops.agent.registered", false},      // one token short
		{"ten_x.nops.agent.registered.v1.x", false}, // one token too many
		{"ten_x.*.*.*.*", true},
		{"ten_x.nops.agent.registered.v1.>", false}, // '>' needs at least one more token
		{"ten_x.>.v1", false},                       // invalid: '>' not last
		{"ten_x..v1", false},                        // invalid: empty token
		{"ten*.>", false},                           // invalid: wildcard inside a token
		{"", false},
	}
	for _, tt := range tests {
		if got := MatchSubject(tt.pattern, ten, typ); got != tt.want {
			t.Errorf("MatchSubject(%q) = %v, want %v", tt.pattern, got, tt.want)
		}
	}
}

func FuzzMatchSubject(f *testing.F) {
	f.Add("*.nops.agent.>", "ten_x", "nops.agent.registered.v1")
	f.Add(">", "t", "a.b.c.v1")
	f.Fuzz(func(t *testing.T, pattern, tenant, typ string) {
		got := MatchSubject(pattern, tenant, typ)
		if got && !ValidSubjectPattern(pattern) {
			t.Fatalf("invalid pattern %q matched", pattern)
		}
		if ValidToken(tenant) && ValidType(typ) && MatchSubject(">", tenant, typ) != true {
			t.Fatal("'>' does not match a valid subject")
		}
	})
}
