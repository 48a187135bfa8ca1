package authflow_test

import (
	"strings"
	"testing"
	"time"

	"github.com/authproxy/authproxy/authflow/oauthtest"
)

// Every env already checks its log for the secrets it came across; this test
// drives every path that logs (connect, failed exchange, refresh, passing
// and permanent failure, Instagram) and checks that they did log, so that
// the check is not vacuous.
func TestNoSecretsInLogs(t *testing.T) {
	t.Run("oauth2", func(t *testing.T) {
		srv := startFosite(t, oauthtest.Options{})
		e := newEnv(t)
		client := e.oauth2Client(srv, nil)
		c := e.pendingSecret(client)

		q := e.login(srv, c.ID, true) // denied
		if _, err := e.m.Callback(e.ctx, q); err == nil {
			t.Fatal("denied consent accepted")
		}
		q = e.login(srv, c.ID, false) // exchange fails
		srv.SetDown(true)
		if _, err := e.m.Callback(e.ctx, q); err == nil {
			t.Fatal("exchange with the endpoint down accepted")
		}
		srv.SetDown(false)
		q = e.login(srv, c.ID, false)
		q.Set("code", q.Get("code")+"x") // exchange refused
		if _, err := e.m.Callback(e.ctx, q); err == nil {
			t.Fatal("bad code accepted")
		}
		old := e.connect(srv, c.ID)

		e.clock.Set(old.Fields.ExpiresAt.Add(-10 * time.Second))
		if _, err := e.m.Refresh(e.ctx, testWS, c.ID); err != nil { // refreshed
			t.Fatal(err)
		}
		cur := e.cred(c.ID)
		e.clock.Set(cur.Fields.ExpiresAt.Add(-10 * time.Second))
		srv.SetDown(true)
		if _, err := e.token(c.ID); err != nil { // passing failure
			t.Fatal(err)
		}
		srv.SetDown(false)
		srv.RevokeRefreshTokens()
		e.clock.Set(cur.Fields.ExpiresAt.Add(time.Second))
		if _, err := e.token(c.ID); err == nil { // permanent failure
			t.Fatal("revoked refresh token accepted")
		}
		e.cred(c.ID)
		for _, r := range srv.TokenRequests() {
			e.secret("token issued by fosite", r.IssuedTokens()...)
		}

		logs := e.logs.String()
		for _, want := range []string{
			"account connected", "authorization code exchange failed", "token refreshed",
			"token refresh failed; will retry", "secret needs re-authorization",
		} {
			if !strings.Contains(logs, want) {
				t.Errorf("no %q line in the log", want)
			}
		}
		e.noSecrets(t, "the log", e.logs.text())
	})

	t.Run("instagram", func(t *testing.T) {
		e, ig, client := newInstagramEnv(t, oauthtest.InstagramOptions{}, nil)
		c := e.pendingSecret(client)
		connectInstagram(e, ig, c.ID)
		ig.Advance(55 * 24 * time.Hour)
		if _, err := e.token(c.ID); err != nil {
			t.Fatal(err)
		}
		e.cred(c.ID)
		ig.Advance(61 * 24 * time.Hour)
		if _, err := e.token(c.ID); err == nil {
			t.Fatal("expired token accepted")
		}
		logs := e.logs.String()
		for _, want := range []string{"account connected", "token refreshed", "secret needs re-authorization"} {
			if !strings.Contains(logs, want) {
				t.Errorf("no %q line in the log", want)
			}
		}
		e.noSecrets(t, "the log", e.logs.text())
	})
}
