package principal

import (
	"context"
	"testing"
)

func TestContextRoundTrip(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("empty context yields a principal")
	}
	p := Principal{Subject: "usr_1", Scopes: []string{"system:read"}}
	got, ok := FromContext(NewContext(context.Background(), p))
	if !ok || got.Subject != "usr_1" {
		t.Fatalf("FromContext = %+v, %v", got, ok)
	}
}

func TestHasScopes(t *testing.T) {
	p := Principal{Scopes: []string{"a", "b"}}
	for _, tt := range []struct {
		req  []string
		want bool
	}{{nil, true}, {[]string{"a"}, true}, {[]string{"a", "b"}, true}, {[]string{"c"}, false}, {[]string{"a", "c"}, false}} {
		if got := p.HasScopes(tt.req...); got != tt.want {
			t.Errorf("HasScopes(%v) = %v, want %v", tt.req, got, tt.want)
		}
	}
}
