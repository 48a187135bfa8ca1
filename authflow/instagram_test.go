package authflow_test

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authproxy/authproxy/authflow"
	"github.com/authproxy/authproxy/authflow/oauthtest"
	"github.com/authproxy/authproxy/credstore"
)

// newInstagramEnv starts the Instagram fake and a Manager whose clock is the
// fake's.
func newInstagramEnv(t *testing.T, opts oauthtest.InstagramOptions, settings func(*credstore.ClientSettings)) (*env, *oauthtest.Instagram, *credstore.AuthClient) {
	t.Helper()
	ig := oauthtest.StartInstagram(t, opts)
	e := newEnv(t, func(e *env) { e.clock.source = ig.Now })
	s := credstore.ClientSettings{
		ClientID: ig.ClientID, ClientSecret: ig.ClientSecret,
		AuthURI: ig.AuthURL, TokenURI: ig.TokenURL,
		LongLivedTokenURI: ig.LongLivedTokenURL, RefreshURI: ig.RefreshURL,
		Scopes: []string{"instagram_business_basic", "instagram_business_content_publish"},
	}
	if settings != nil {
		settings(&s)
	}
	return e, ig, e.createClient(credstore.OAuth2Instagram, s)
}

// connectInstagram runs the connect flow at the fake and returns the stored
// secret.
func connectInstagram(e *env, ig *oauthtest.Instagram, id string) *credstore.Credential {
	e.t.Helper()
	cb, err := ig.Authorize(e.ctx, e.link(id), false)
	if err != nil {
		e.t.Fatalf("Authorize: %v", err)
	}
	if _, err := e.m.Callback(e.ctx, e.callbackQuery(cb)); err != nil {
		e.t.Fatalf("Callback: %v", err)
	}
	return e.cred(id)
}

func TestInstagramConnect(t *testing.T) {
	e, ig, client := newInstagramEnv(t, oauthtest.InstagramOptions{}, nil)
	c := e.pendingSecret(client)

	link := e.link(c.ID)
	if !strings.Contains(link, "scope=instagram_business_basic%2Cinstagram_business_content_publish") {
		t.Errorf("link does not join the scopes with commas: %s", link)
	}
	cb, err := ig.Authorize(e.ctx, link, false)
	if err != nil {
		t.Fatal(err)
	}
	q := e.callbackQuery(cb)
	got, err := e.m.Callback(e.ctx, q)
	if err != nil {
		t.Fatalf("Callback: %v", err)
	}
	cur := e.cred(c.ID)
	if !reflect.DeepEqual(got, cur) {
		t.Error("Callback did not return the stored secret")
	}
	if cur.State != credstore.StateReady {
		t.Fatalf("state = %q", cur.State)
	}
	info, ok := ig.Token(cur.Fields.AccessToken)
	if !ok || !info.LongLived || info.Revoked {
		t.Fatalf("stored token: known %t, %+v; want the long-lived token", ok, info)
	}
	if cur.Fields.RefreshToken != "" || len(cur.Fields.Extra) != 0 {
		t.Errorf("something besides the long-lived token is stored: refresh %t extra %v", cur.Fields.RefreshToken != "", cur.Fields.Extra)
	}
	if !near(cur.Fields.ExpiresAt, info.ExpiresAt, 2*time.Second) || !near(cur.Fields.ExpiresAt, ig.Now().Add(60*24*time.Hour), 5*time.Second) {
		t.Errorf("expires_at %s, want about 60 days from now (%s)", cur.Fields.ExpiresAt, info.ExpiresAt)
	}
	for ep, want := range map[string]int64{oauthtest.IGAccessToken: 1, oauthtest.IGExchangeToken: 1, oauthtest.IGRefreshToken: 0} {
		if n := ig.Calls(ep); n != want {
			t.Errorf("calls to %s = %d, want %d", ep, n, want)
		}
	}
	// A fresh long-lived token is used as is.
	if tok, err := e.token(c.ID); err != nil || tok != cur.Fields.AccessToken {
		t.Fatalf("Token = %v, want the stored token", err)
	}

	// Denied reconnect: the error says so, the secret keeps its token.
	cb, err = ig.Authorize(e.ctx, e.link(c.ID), true)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Callback(e.ctx, e.callbackQuery(cb))
	wantCode(t, err, credstore.EINVALID)
	if !strings.Contains(err.Error(), "access_denied") {
		t.Errorf("error %q does not say access_denied", err)
	}
	if after := e.cred(c.ID); !reflect.DeepEqual(after, cur) {
		t.Error("a denied reconnect changed the secret")
	}
}

func TestInstagramRefreshWindow(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		name        string
		opts        oauthtest.InstagramOptions
		settings    func(*credstore.ClientSettings)
		advance     time.Duration
		wantRefresh bool
	}{
		{name: "fresh 60-day token", advance: time.Minute},
		{name: "old enough, 30 days left", advance: 30 * day},
		{name: "old enough, under 7 days left", advance: 54 * day, wantRefresh: true},
		{
			name:    "inside the window but younger than refresh_min_age",
			opts:    oauthtest.InstagramOptions{LongLivedLifetime: 3 * day},
			advance: 23 * time.Hour,
		},
		{
			name:        "inside the window and just past refresh_min_age",
			opts:        oauthtest.InstagramOptions{LongLivedLifetime: 3 * day},
			advance:     24*time.Hour + time.Minute,
			wantRefresh: true,
		},
		{
			name:     "client refresh_before_expiry of 3 days, 6 days left",
			settings: func(s *credstore.ClientSettings) { s.RefreshBeforeExpiry = 3 * 86400 },
			advance:  54 * day,
		},
		{
			name:        "client refresh_before_expiry of 3 days, 2 days left",
			settings:    func(s *credstore.ClientSettings) { s.RefreshBeforeExpiry = 3 * 86400 },
			advance:     58 * day,
			wantRefresh: true,
		},
		{
			name:     "client refresh_min_age of 2 days, 25 h old",
			opts:     oauthtest.InstagramOptions{LongLivedLifetime: 3 * day},
			settings: func(s *credstore.ClientSettings) { s.RefreshMinAge = 2 * 86400 },
			advance:  25 * time.Hour,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, ig, client := newInstagramEnv(t, tc.opts, tc.settings)
			c := e.pendingSecret(client)
			old := connectInstagram(e, ig, c.ID)
			ig.Advance(tc.advance)

			tok, err := e.token(c.ID)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			e.secret("access token", tok)
			calls := ig.Calls(oauthtest.IGRefreshToken)
			if !tc.wantRefresh {
				if tok != old.Fields.AccessToken || calls != 0 {
					t.Fatalf("got the stored token %t, ig_refresh_token calls %d; want it and none", tok == old.Fields.AccessToken, calls)
				}
				return
			}
			if calls != 1 || tok == old.Fields.AccessToken {
				t.Fatalf("ig_refresh_token calls %d, new token %t; want 1 and a new token", calls, tok != old.Fields.AccessToken)
			}
			info, ok := ig.Token(tok)
			if !ok || !info.LongLived {
				t.Fatalf("new token: known %t %+v", ok, info)
			}
			cur := e.cred(c.ID)
			if cur.Fields.AccessToken != tok || cur.State != credstore.StateReady {
				t.Fatal("the new token is not stored")
			}
			if !near(cur.Fields.ExpiresAt, info.ExpiresAt, 2*time.Second) || !near(cur.Fields.IssuedAt, ig.Now(), 2*time.Second) {
				t.Errorf("expires_at %s issued_at %s, want %s and now", cur.Fields.ExpiresAt, cur.Fields.IssuedAt, info.ExpiresAt)
			}
			// Renewed: not due any more.
			if tok2, err := e.token(c.ID); err != nil || tok2 != tok || ig.Calls(oauthtest.IGRefreshToken) != 1 {
				t.Fatalf("Token after the refresh: %v, calls %d", err, ig.Calls(oauthtest.IGRefreshToken))
			}
		})
	}
}

func TestInstagramSingleFlight(t *testing.T) {
	e, ig, client := newInstagramEnv(t, oauthtest.InstagramOptions{}, nil)
	c := e.pendingSecret(client)
	old := connectInstagram(e, ig, c.ID)
	ig.Advance(55 * 24 * time.Hour)

	const n = 100
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			if got[i], err = e.m.Token(e.ctx, old, client); err != nil {
				t.Errorf("Token: %v", err)
			}
		})
	}
	wg.Wait()
	if calls := ig.Calls(oauthtest.IGRefreshToken); calls != 1 {
		t.Fatalf("ig_refresh_token calls = %d, want 1", calls)
	}
	cur := e.cred(c.ID)
	for i := range n {
		if got[i] != cur.Fields.AccessToken {
			t.Fatalf("caller %d did not get the stored new token", i)
		}
	}
}

func TestInstagramNeedsReauth(t *testing.T) {
	cases := []struct {
		name      string
		prepare   func(ig *oauthtest.Instagram)
		wantCalls int64 // ig_refresh_token calls
		wantMsg   string
	}{
		{
			name:    "expired token",
			prepare: func(ig *oauthtest.Instagram) { ig.Advance(61 * 24 * time.Hour) },
			wantMsg: "expired",
		},
		{
			name: "token revoked by the user",
			prepare: func(ig *oauthtest.Instagram) {
				ig.RevokeTokens()
				ig.Advance(55 * 24 * time.Hour)
			},
			wantCalls: 1, // a 400 is not retried
			wantMsg:   "OAuthException",
		},
	}
	for _, tc := range cases {
		for _, background := range []bool{false, true} {
			name := tc.name + "/on demand"
			if background {
				name = tc.name + "/background refresher"
			}
			t.Run(name, func(t *testing.T) {
				e, ig, client := newInstagramEnv(t, oauthtest.InstagramOptions{}, nil)
				c := e.pendingSecret(client)
				before := connectInstagram(e, ig, c.ID)
				tc.prepare(ig)

				if background {
					startRun(t, e.m)
					eventually(t, "state error", func() bool {
						cur, _ := e.store.Credential(c.ID)
						return cur.State == credstore.StateError
					})
				} else {
					tok, err := e.m.Token(e.ctx, before, client)
					if !errors.Is(err, authflow.ErrNeedsReauth) || tok != "" {
						t.Fatalf("Token = %q, %v; want ErrNeedsReauth", tok, err)
					}
				}
				cur := e.cred(c.ID)
				if cur.State != credstore.StateError || !strings.Contains(cur.Error, tc.wantMsg) {
					t.Fatalf("state %q error %q; want error saying %q", cur.State, cur.Error, tc.wantMsg)
				}
				e.noSecrets(t, "the secret's error", cur.Error)
				if cur.Fields.AccessToken != before.Fields.AccessToken {
					t.Error("the token changed")
				}
				if n := ig.Calls(oauthtest.IGRefreshToken); n != tc.wantCalls {
					t.Errorf("ig_refresh_token calls = %d, want %d", n, tc.wantCalls)
				}
			})
		}
	}
}

func TestInstagramTransientFailure(t *testing.T) {
	e, ig, client := newInstagramEnv(t, oauthtest.InstagramOptions{}, nil)
	c := e.pendingSecret(client)
	old := connectInstagram(e, ig, c.ID)
	ig.Advance(55 * 24 * time.Hour)
	ig.SetDown(true)
	tok, err := e.m.Token(e.ctx, old, client)
	if err != nil || tok != old.Fields.AccessToken {
		t.Fatalf("Token while the refresh endpoint is down = %v; want the still valid token", err)
	}
	if n := ig.Calls(oauthtest.IGRefreshToken); n != int64(e.m.MaxRetry+1) {
		t.Fatalf("ig_refresh_token calls = %d, want %d", n, e.m.MaxRetry+1)
	}
	if cur := e.cred(c.ID); !reflect.DeepEqual(cur, old) {
		t.Fatal("a passing failure changed the secret")
	}
	// Forced refresh of a token younger than refresh_min_age is refused
	// without calling Instagram.
	ig.SetDown(false)
	c2 := e.pendingSecret(client)
	connectInstagram(e, ig, c2.ID)
	_, err = e.m.Refresh(e.ctx, testWS, c2.ID)
	wantCode(t, err, credstore.ECONFLICT)
	if n := ig.Calls(oauthtest.IGRefreshToken); n != int64(e.m.MaxRetry+1) {
		t.Fatalf("ig_refresh_token calls = %d", n)
	}
}
