package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/nops-kernel/nops/internal/telemetry"
)

// The secrets every test below tries to leak. None of them may appear in any log output.
const (
	password   = "hunter2-Sup3rS3cret"
	jwt        = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJlLWJ5dGVz"
	apiKey     = "nak_9f8e7d6c5b4a39281706aa"
	authHeader = "Bearer opaque-tok-0123456789"
	email      = "alice.smith@example.com"
)

var secrets = []string{password, jwt, apiKey, "opaque-tok-0123456789", email, "alice.smith"}

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Note     string `json:"note"`
}

func decodeLines(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		delete(m, "time")
		lines = append(lines, m)
	}
	return lines
}

func assertNoSecrets(t *testing.T, out []byte) {
	t.Helper()
	for _, s := range secrets {
		if bytes.Contains(out, []byte(s)) {
			t.Errorf("secret %q survived in log output:\n%s", s, out)
		}
	}
}

func TestLoggerRedactsSecretsInEveryPosition(t *testing.T) {
	dsn := "postgres://nops:" + password + "@db.internal:5432/nops"
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	header := http.Header{
		"Authorization": {authHeader},
		"X-Api-Key":     {apiKey},
		"Cookie":        {"session=" + jwt},
		"Accept":        {"application/json"},
	}
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		want map[string]any // the line with "time" removed
	}{
		{
			name: "secret keys at top level",
			log: func(l *slog.Logger) {
				l.Info("login", "password", password, "db_password", password, "Authorization", authHeader,
					"api_key", apiKey, "X-API-Key", apiKey, "access_token", jwt, "clientSecret", password,
					"user_id", "usr_01", "count", 3)
			},
			want: map[string]any{
				"level": "INFO", "msg": "login", "password": "[REDACTED]", "db_password": "[REDACTED]",
				"Authorization": "[REDACTED]", "api_key": "[REDACTED]", "X-API-Key": "[REDACTED]",
				"access_token": "[REDACTED]", "clientSecret": "[REDACTED]", "user_id": "usr_01", "count": float64(3),
			},
		},
		{
			name: "secret keys in nested groups",
			log: func(l *slog.Logger) {
				l.Info("request", slog.Group("http", "method", "POST",
					slog.Group("headers", "authorization", authHeader, "cookie", "sid="+apiKey, "accept", "*/*")),
					slog.Group("credentials", "user", "admin", "pw", password))
			},
			want: map[string]any{
				"level": "INFO", "msg": "request",
				"http": map[string]any{"method": "POST", "headers": map[string]any{
					"authorization": "[REDACTED]", "cookie": "[REDACTED]", "accept": "*/*"}},
				"credentials": "[REDACTED]",
			},
		},
		{
			name: "With and WithGroup attributes",
			log: func(l *slog.Logger) {
				l.With("refresh_token", jwt, "tenant", "ten_1").
					WithGroup("auth").With("secret", password, "principal", "usr_01").
					WithGroup("credentials").With("value", apiKey).
					Info("issued", "id_token", jwt, "scope", "agents:read")
			},
			want: map[string]any{
				"level": "INFO", "msg": "issued", "refresh_token": "[REDACTED]", "tenant": "ten_1",
				"auth": map[string]any{"secret": "[REDACTED]", "principal": "usr_01",
					"credentials": map[string]any{"value": "[REDACTED]", "id_token": "[REDACTED]", "scope": "[REDACTED]"}},
			},
		},
		{
			name: "strings are scrubbed",
			log: func(l *slog.Logger) {
				l.Info("contact "+email, "note", "sent to "+email+" with "+authHeader,
					"dsn", dsn, "raw", "token "+jwt+" end", "url", "https://api.example.com/x?api_key="+apiKey+"&page=2",
					"header_dump", "X-API-Key: "+apiKey, "plain", "basic checks passed")
			},
			want: map[string]any{
				"level": "INFO", "msg": "contact [REDACTED]", "note": "sent to [REDACTED] with Bearer [REDACTED]",
				"dsn": "postgres://nops:[REDACTED]@db.internal:5432/nops", "raw": "token [REDACTED] end",
				"url":         "https://api.example.com/x?api_key=[REDACTED]&page=2",
				"header_dump": "X-API-Key: [REDACTED]", "plain": "basic checks passed",
			},
		},
		{
			name: "errors, Stringers and other values",
			log: func(l *slog.Logger) {
				err := fmt.Errorf("connect %s for %s: %w", dsn, email, errors.New("refused"))
				l.Error("store down", "error", err, "target", u, "who", stringer{"user " + email},
					"req", loginRequest{Username: email, Password: password, Note: "via " + authHeader},
					"headers", header, "raw_json", json.RawMessage(`{"token":"`+jwt+`","ok":true}`),
					"bytes", []byte("key "+jwt))
			},
			want: map[string]any{
				"level": "ERROR", "msg": "store down",
				"error":  "connect postgres://nops:[REDACTED]@db.internal:5432/nops for [REDACTED]: refused",
				"target": "postgres://nops:[REDACTED]@db.internal:5432/nops",
				"who":    "user [REDACTED]",
				"req":    map[string]any{"username": "[REDACTED]", "password": "[REDACTED]", "note": "via Bearer [REDACTED]"},
				"headers": map[string]any{"Authorization": "[REDACTED]", "X-Api-Key": "[REDACTED]",
					"Cookie": "[REDACTED]", "Accept": []any{"application/json"}},
				"raw_json": map[string]any{"token": "[REDACTED]", "ok": true},
				"bytes":    "key [REDACTED]",
			},
		},
		{
			name: "LogValuer is resolved before redaction",
			log: func(l *slog.Logger) {
				l.Info("valuer", "creds", valuer{}, "wrapped", slog.AnyValue(valuer{}))
			},
			want: map[string]any{
				"level": "INFO", "msg": "valuer",
				"creds":   map[string]any{"user": "admin", "password": "[REDACTED]"},
				"wrapped": map[string]any{"user": "admin", "password": "[REDACTED]"},
			},
		},
		{
			name: "identifiers of secrets survive",
			log: func(l *slog.Logger) {
				l.Info("key used", "api_key_id", "key_01", "tokenID", "tok_01", "kid", "k1", "password_reset", true)
			},
			want: map[string]any{
				"level": "INFO", "msg": "key used", "api_key_id": "key_01", "tokenID": "tok_01", "kid": "k1",
				"password_reset": "[REDACTED]",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(telemetry.NewLogger(&buf, slog.LevelDebug))
			assertNoSecrets(t, buf.Bytes())
			lines := decodeLines(t, buf.Bytes())
			if len(lines) != 1 {
				t.Fatalf("got %d lines, want 1:\n%s", len(lines), buf.Bytes())
			}
			if diff := cmp.Diff(tt.want, lines[0]); diff != "" {
				t.Errorf("log line mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// valuer resolves to a group holding a password; redaction must see the resolved value.
type valuer struct{}

func (valuer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", "admin"), slog.String("password", password))
}

func TestIsSecretKey(t *testing.T) {
	for key, want := range map[string]bool{
		"password": true, "PASSWORD": true, "db_password": true, "passwd": true, "secret": true,
		"token": true, "access_token": true, "refresh_token": true, "id_token": true, "api_key": true,
		"apikey": true, "apiKey": true, "x-api-key": true, "X-API-Key": true, "authorization": true,
		"Authorization": true, "cookie": true, "set-cookie": true, "private_key": true, "privateKey": true,
		"client_secret": true, "credential": true, "credentials": true, "signature": true,
		"api_key_id": false, "tokenID": false, "keyIds": false, "kid": false, "user": false,
		"username": false, "route": false, "status": false, "": false,
	} {
		if got := telemetry.IsSecretKey(key); got != want {
			t.Errorf("IsSecretKey(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestScrubLeavesOrdinaryTextAlone(t *testing.T) {
	for _, s := range []string{
		"agent agt_01j9 registered in tenant ten_01j9",
		"GET /v1/agents/{id} 200 in 3ms",
		"basic checks passed",
		"ratio 3:4 at 12:00",
		"https://example.com/path?page=2",
		"nats://nats.internal:4222",
	} {
		if got := telemetry.Scrub(s); got != s {
			t.Errorf("Scrub(%q) = %q, want unchanged", s, got)
		}
	}
	if got, want := telemetry.Scrub("Authorization: Basic dXNlcjpwYXNz"), "Authorization: [REDACTED] [REDACTED]"; got != want {
		t.Errorf("Scrub(basic) = %q, want %q", got, want)
	}
}

func TestLoggerAddsTraceContext(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("test").Start(context.Background(), "op")
	defer span.End()
	sc := span.SpanContext()

	var buf bytes.Buffer
	l := telemetry.NewLogger(&buf, slog.LevelInfo)
	l.InfoContext(ctx, "with span", "k", "v")
	l.WithGroup("g").InfoContext(ctx, "in group", "k", "v")
	l.InfoContext(ctx, "explicit", "trace_id", "given")
	l.InfoContext(context.Background(), "no span")
	l.InfoContext(trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}), "invalid span")

	want := []map[string]any{
		{"level": "INFO", "msg": "with span", "k": "v", "trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()},
		{"level": "INFO", "msg": "in group", "g": map[string]any{"k": "v"}, "trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()},
		{"level": "INFO", "msg": "explicit", "trace_id": "given", "span_id": sc.SpanID().String()},
		{"level": "INFO", "msg": "no span"},
		{"level": "INFO", "msg": "invalid span"},
	}
	if diff := cmp.Diff(want, decodeLines(t, buf.Bytes())); diff != "" {
		t.Errorf("lines mismatch (-want +got):\n%s", diff)
	}
	if n := strings.Count(buf.String(), `"trace_id"`); n != 3 {
		t.Errorf("trace_id appears %d times, want 3 (never twice on a line):\n%s", n, buf.String())
	}
}

func TestLoggerLevelAndEmptyGroups(t *testing.T) {
	var buf bytes.Buffer
	l := telemetry.NewLogger(&buf, slog.LevelWarn)
	if l.Enabled(context.Background(), slog.LevelInfo) {
		t.Error("info enabled at warn level")
	}
	l.Info("dropped")
	l.WithGroup("empty").Warn("kept")
	l.Warn("nil any", "v", nil, "np", (*url.URL)(nil), "err", (*nilErr)(nil))
	want := []map[string]any{
		{"level": "WARN", "msg": "kept"},
		{"level": "WARN", "msg": "nil any", "v": nil, "np": "!PANIC in String/Error method", "err": "!PANIC in String/Error method"},
	}
	if diff := cmp.Diff(want, decodeLines(t, buf.Bytes())); diff != "" {
		t.Errorf("lines mismatch (-want +got):\n%s", diff)
	}
}

type nilErr struct{ msg string }

func (e *nilErr) Error() string { return e.msg }

func TestRedactingHandlerWrapsAnyHandler(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(telemetry.NewRedactingHandler(slog.NewTextHandler(&buf, nil)))
	l.Info("text", "password", password, "m", map[string]string{"token": jwt, "a": "b"}, "unloggable", func() {})
	assertNoSecrets(t, buf.Bytes())
	for _, want := range []string{"password=[REDACTED]", `m="{\"a\":\"b\",\"token\":\"[REDACTED]\"}"`, `unloggable="!UNLOGGABLE func()"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("output %q lacks %q", buf.String(), want)
		}
	}
}
