package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// scrape sums the _sum and _count lines of the stage histograms, by the label each series
// requires, and between takes the difference of two scrapes.
func TestScrapeStages(t *testing.T) {
	page := `# HELP http_server_request_duration_seconds Duration of HTTP server requests.
http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200",http_route="/v1/agents/{agent_id}",le="0.001"} 3
http_server_request_duration_seconds_sum{http_request_method="GET",http_response_status_code="200",http_route="/v1/agents/{agent_id}"} 0.5
http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",http_route="/v1/agents/{agent_id}"} 100
http_server_request_duration_seconds_sum{http_request_method="POST",http_response_status_code="200",http_route="/v1/auth/token"} 9
http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_code="200",http_route="/v1/auth/token"} 1
nops_reqsig_nonce_claim_duration_seconds_sum{durability="full"} 0.2
nops_reqsig_nonce_claim_duration_seconds_count{durability="full"} 100
nops_ratelimit_check_duration_seconds_sum{stage="ip",store="memory"} 0.001
nops_ratelimit_check_duration_seconds_count{stage="ip",store="memory"} 100
nops_ratelimit_check_duration_seconds_sum{stage="principal",store="memory"} 0.003
nops_ratelimit_check_duration_seconds_count{stage="principal",store="memory"} 100
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(page)) }))
	defer srv.Close()
	got, err := scrape(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]stat{
		seriesRequest:     {0.5, 100},
		seriesNonceClaim:  {0.2, 100},
		seriesLimitIP:     {0.001, 100},
		seriesLimitCaller: {0.003, 100},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %+v, want %+v", k, got[k], w)
		}
	}
	before := snapshot{hists: map[string]stat{seriesRequest: {0.1, 20}}}
	win := between(before, snapshot{hists: got})
	if m := win.stages[seriesRequest].mean(); m < 5*time.Millisecond-time.Microsecond || m > 5*time.Millisecond+time.Microsecond {
		t.Errorf("request mean over the window %s, want 5ms", m)
	}
	if _, ok := between(snapshot{}, snapshot{}).stages[seriesNonceClaim]; ok {
		t.Error("a series without requests in the window has a mean")
	}
}
