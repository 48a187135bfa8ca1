package authflow

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A provider that echoes what it was sent must not make us log or show it:
// Instagram's GET endpoints carry the token and the client secret in the
// query. Hand-written, since the Instagram fake does not echo.
func TestInstagramErrorsAreRedacted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
			"type":    "OAuthException",
			"message": "Invalid OAuth access token: " + r.URL.Query().Get("access_token") + " for secret " + r.URL.Query().Get("client_secret"),
		}})
	}))
	defer srv.Close()
	m := &Manager{}
	const token, secret = "SHORT-LIVED-TOKEN-1234", "IG-CLIENT-SECRET-5678"
	_, err := m.instagramGet(context.Background(), srv.URL, map[string][]string{
		"grant_type": {"ig_exchange_token"}, "client_secret": {secret}, "access_token": {token}})
	if err == nil {
		t.Fatal("no error from a 400")
	}
	msg := describeTokenError(err)
	if strings.Contains(msg, token) || strings.Contains(msg, secret) || strings.Contains(err.Error(), token) {
		t.Fatalf("the error quotes a secret: %s", msg)
	}
	if !strings.Contains(msg, "[redacted]") || !strings.Contains(msg, "Invalid OAuth access token") {
		t.Fatalf("the error lost its reason: %s", msg)
	}
	if !permanent(err) {
		t.Fatal("a 400 OAuthException is not permanent")
	}
}
