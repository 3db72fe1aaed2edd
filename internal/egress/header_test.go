package egress_test

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/egress"
)

func TestOutboundHeader(t *testing.T) {
	cases := []struct {
		name string
		src  http.Header
		want http.Header
	}{
		{
			name: "everything listed is stripped",
			src: http.Header{
				"Connection":          {"keep-alive, X-Hop-Secret", "x-other-hop"},
				"Proxy-Connection":    {"keep-alive"},
				"Keep-Alive":          {"timeout=5"},
				"Proxy-Authenticate":  {"Basic"},
				"Proxy-Authorization": {"Basic dXNlcjpwdw=="},
				"Te":                  {"gzip"},
				"Trailer":             {"Expires"},
				"Transfer-Encoding":   {"chunked"},
				"Upgrade":             {"websocket"},
				"Http2-Settings":      {"AAMAAABkAAQAAP__"},
				"Authorization":       {"Bearer caller-token"},
				"Cookie":              {"session=caller"},
				"X-Api-Key":           {"nops_caller_key"},
				"Signature":           {"sig1=:AAAA:"},
				"Signature-Input":     {`sig1=("@method");keyid="k"`},
				"Forwarded":           {"for=203.0.113.7"},
				"X-Forwarded-For":     {"203.0.113.7"},
				"X-Forwarded-Host":    {"evil.example"},
				"X-Forwarded-Proto":   {"https"},
				"X-Real-Ip":           {"203.0.113.7"},
				"Host":                {"evil.example"},
				"X-Hop-Secret":        {"named by Connection"},
				"X-Other-Hop":         {"named by the second Connection value"},
				"Content-Type":        {"application/json"},
				"Accept":              {"text/event-stream"},
				"X-Custom":            {"a", "b"},
			},
			want: http.Header{
				"Content-Type": {"application/json"},
				"Accept":       {"text/event-stream"},
				"X-Custom":     {"a", "b"},
			},
		},
		{
			name: "non-canonical keys are stripped too",
			src: http.Header{
				"x-api-key":       {"nops_caller_key"},
				"authorization":   {"Bearer x"},
				"x-forwarded-for": {"1.2.3.4"},
				"connection":      {"x-secret"},
				"X-SECRET":        {"s"},
				"content-type":    {"text/plain"},
			},
			want: http.Header{"Content-Type": {"text/plain"}},
		},
		{
			name: "TE: trailers is kept, other TE values are not",
			src:  http.Header{"Te": {"gzip, Trailers;q=1"}, "Connection": {"TE"}},
			want: http.Header{"Te": {"trailers"}},
		},
		{
			name: "TE without trailers is dropped",
			src:  http.Header{"Te": {"gzip, deflate"}},
			want: http.Header{},
		},
		{
			name: "Connection naming a normal header removes it",
			src:  http.Header{"Connection": {" , Content-Type ,"}, "Content-Type": {"x"}, "Accept": {"y"}},
			want: http.Header{"Accept": {"y"}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := http.Header{}
			egress.OutboundHeader(dst, c.src)
			if diff := cmp.Diff(c.want, dst); diff != "" {
				t.Errorf("OutboundHeader (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOutboundHeaderAppendsWithoutAliasing(t *testing.T) {
	src := http.Header{"X-Custom": {"from-caller"}}
	dst := http.Header{"X-Custom": {"already"}, "X-Kept": {"k"}}
	egress.OutboundHeader(dst, src)
	if diff := cmp.Diff(http.Header{"X-Custom": {"already", "from-caller"}, "X-Kept": {"k"}}, dst); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	dst2 := http.Header{}
	egress.OutboundHeader(dst2, src)
	dst2["X-Custom"][0] = "changed"
	if src["X-Custom"][0] != "from-caller" {
		t.Error("dst shares its value slice with src")
	}
}

func TestInboundHeader(t *testing.T) {
	src := http.Header{
		"Connection":                       {"X-Agent-Hop"},
		"X-Agent-Hop":                      {"1"},
		"Keep-Alive":                       {"timeout=5"},
		"Transfer-Encoding":                {"chunked"},
		"Trailer":                          {"X-Checksum"},
		"Upgrade":                          {"h2c"},
		"Proxy-Authenticate":               {"Basic"},
		"Set-Cookie":                       {"session=agent; Path=/", "other=1"},
		"set-cookie2":                      {"legacy=1"},
		"Strict-Transport-Security":        {"max-age=0"},
		"Alt-Svc":                          {`h3=":443"`},
		"Clear-Site-Data":                  {`"*"`},
		"Access-Control-Allow-Origin":      {"https://evil.example"},
		"Access-Control-Allow-Credentials": {"true"},
		"Content-Type":                     {"text/event-stream"},
		"Cache-Control":                    {"no-cache"},
		"Content-Encoding":                 {"gzip"},
		"X-Agent-Info":                     {"v1"},
	}
	dst := http.Header{}
	egress.InboundHeader(dst, src)
	want := http.Header{
		"Content-Type":     {"text/event-stream"},
		"Cache-Control":    {"no-cache"},
		"Content-Encoding": {"gzip"},
		"X-Agent-Info":     {"v1"},
	}
	if diff := cmp.Diff(want, dst); diff != "" {
		t.Errorf("InboundHeader (-want +got):\n%s", diff)
	}
}
