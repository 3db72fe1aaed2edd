package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// TestNoSecretsInLogs sends a password, a token, an API key and an e-mail address through the
// server in every place a client may put them, then requires that none reaches the log.
func TestNoSecretsInLogs(t *testing.T) {
	k := kerneltest.Start(t)
	token := k.Token(t, "")
	const apiKey = "nops_ak_live_5f2b8c0e9d7a4f3b"
	const email = "alice.operator@example.com"
	const wrongPassword = "hunter2-wrong-password"

	k.Do(t, "GET", "/v1/auth/whoami", nil, "Authorization: Bearer "+token)
	k.Do(t, "GET", "/v1/auth/whoami", nil, "Authorization: Bearer "+token+"x")
	k.Do(t, "GET", "/v1/auth/whoami", nil, "X-API-Key: "+apiKey)
	k.Do(t, "POST", "/v1/auth/token", map[string]string{"username": email, "password": wrongPassword})
	k.Do(t, "POST", "/v1/auth/token", map[string]string{"username": "admin", "password": wrongPassword})
	k.Do(t, "POST", "/v1/auth/token", `{"username":"admin","password":"`+wrongPassword+`"`) // malformed
	k.Do(t, "GET", "/v1/nothing?api_key="+apiKey+"&token="+token, nil)
	k.Do(t, "GET", "/health?password="+wrongPassword, nil)
	resp, _ := k.Do(t, "GET", "/v1/system/config", nil, "Authorization: Bearer "+token)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("config: %d", resp.StatusCode)
	}

	logs := k.Logs.String()
	if !strings.Contains(logs, `"msg":"http request"`) {
		t.Fatalf("no request log lines captured:\n%s", logs)
	}
	for name, secret := range map[string]string{
		"admin password":  kerneltest.AdminPassword,
		"wrong password":  wrongPassword,
		"token":           token,
		"token payload":   strings.Split(token, ".")[1],
		"token signature": strings.Split(token, ".")[2],
		"api key":         apiKey,
		"e-mail":          email,
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains the %s", name)
		}
	}
	if strings.Contains(k.Out.String(), kerneltest.AdminPassword) {
		t.Error("a configured admin password was printed")
	}
}
