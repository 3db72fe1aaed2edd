package nops

import "testing"

// TestErrorNamesTheFields: a problem's field errors are part of the error's text, so a program
// that only logs the error still says which field the kernel refused and why.
func TestErrorNamesTheFields(t *testing.T) {
	body := []byte(`{"type":"urn:nops:problem:invalid","title":"Bad Request","status":400,"code":"invalid","detail":"invalid input",` +
		`"errors":[{"name":"body.endpoint","reason":"egress to 127.0.0.1 port 18092 refused: not on the allow-list of service agents"},{"name":"body.name","reason":"required"}]}`)
	err := problemOf(400, body)
	want := "nops: 400 invalid: invalid input (body.endpoint: egress to 127.0.0.1 port 18092 refused: not on the allow-list of service agents; body.name: required)"
	if err.Error() != want {
		t.Fatalf("Error() = %q\nwant      %q", err.Error(), want)
	}
	if got := problemOf(404, []byte(`{"status":404,"code":"not_found","detail":"no such agent"}`)).Error(); got != "nops: 404 not_found: no such agent" {
		t.Fatalf("without fields: %q", got)
	}
}
