package authflow_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authproxy/authproxy/authflow"
	"github.com/authproxy/authproxy/authflow/oauthtest"
	"github.com/authproxy/authproxy/credstore"
)

func TestTokenRefreshesWhenDue(t *testing.T) {
	cases := []struct {
		name          string
		refreshBefore time.Duration // Manager.RefreshBefore; 0 means the default 30 s
		at            time.Duration // the clock, relative to the stored expiry
		wantRefresh   bool
	}{
		{name: "just connected", at: -59 * time.Minute},
		{name: "31 s before expiry", at: -31 * time.Second},
		{name: "30 s before expiry: the margin starts", at: -30 * time.Second, wantRefresh: true},
		{name: "1 s before expiry", at: -time.Second, wantRefresh: true},
		{name: "expired an hour ago", at: time.Hour, wantRefresh: true},
		{name: "RefreshBefore 5 min, 6 min before expiry", refreshBefore: 5 * time.Minute, at: -6 * time.Minute},
		{name: "RefreshBefore 5 min, 4 min before expiry", refreshBefore: 5 * time.Minute, at: -4 * time.Minute, wantRefresh: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startFosite(t, oauthtest.Options{})
			e := newEnv(t, func(e *env) { e.m.RefreshBefore = tc.refreshBefore })
			c := e.pendingSecret(e.oauth2Client(srv, nil))
			old := e.connect(srv, c.ID)
			e.clock.Set(old.Fields.ExpiresAt.Add(tc.at))

			tok, err := e.token(c.ID)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			e.secret("access token", tok)
			calls := srv.TokenCalls("refresh_token")
			if !tc.wantRefresh {
				if tok != old.Fields.AccessToken || calls != 0 {
					t.Fatalf("not due: got the stored token %t, refresh calls %d; want it and none", tok == old.Fields.AccessToken, calls)
				}
				if cur := e.cred(c.ID); !reflect.DeepEqual(cur, old) {
					t.Fatalf("the secret changed although nothing was due")
				}
				return
			}
			if calls != 1 {
				t.Fatalf("refresh_token requests = %d, want 1", calls)
			}
			if tok == "" || tok == old.Fields.AccessToken {
				t.Fatal("Token did not return a new access token")
			}
			// Rotation is committed before Token returns the new token.
			cur := e.cred(c.ID)
			if cur.Fields.AccessToken != tok {
				t.Fatal("the returned token is not the stored one")
			}
			if cur.Fields.RefreshToken == "" || cur.Fields.RefreshToken == old.Fields.RefreshToken {
				t.Fatal("the rotated refresh token was not stored")
			}
			now := e.clock.Now()
			if cur.State != credstore.StateReady || !cur.RefreshedAt.Equal(now) || !cur.Fields.IssuedAt.Equal(now) {
				t.Errorf("state %q refreshed_at %s issued_at %s, want ready and %s", cur.State, cur.RefreshedAt, cur.Fields.IssuedAt, now)
			}
			if life := cur.Fields.ExpiresAt.Sub(now); life < time.Hour-2*time.Second || life > time.Hour {
				t.Errorf("new token expires %s from now, want about 1h", life)
			}
			if _, err := srv.ValidateAccessToken(e.ctx, tok); err != nil {
				t.Fatalf("new access token does not validate: %v", err)
			}
			// The provider rotated: the old refresh token is dead, so
			// losing the new one would have lost the account. (Its reuse
			// also revokes the family, so this check comes last.)
			wantInvalidGrant(t, directRefresh(e.ctx, srv, old.Fields.RefreshToken))
		})
	}
}

func TestTokenSingleFlight(t *testing.T) {
	cases := []struct {
		name  string
		delay time.Duration // harness token delay
	}{
		{"callers pile up behind a slow token endpoint", 200 * time.Millisecond},
		{"callers arrive during and after the refresh", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startFosite(t, oauthtest.Options{})
			e := newEnv(t)
			client := e.oauth2Client(srv, nil)
			c := e.pendingSecret(client)
			old := e.connect(srv, c.ID)
			e.clock.Set(old.Fields.ExpiresAt.Add(time.Second))
			srv.SetTokenDelay(tc.delay)

			// Every caller holds the credential as read before the
			// refresh, like concurrent proxied requests.
			const n = 200
			got := make([]string, n)
			errs := make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					got[i], errs[i] = e.m.Token(e.ctx, old, client)
				})
			}
			close(start)
			wg.Wait()

			if calls := srv.TokenCalls("refresh_token"); calls != 1 {
				t.Fatalf("refresh_token requests = %d, want 1", calls)
			}
			cur := e.cred(c.ID)
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("caller %d: %v", i, errs[i])
				}
				if got[i] != cur.Fields.AccessToken {
					t.Fatalf("caller %d got another token than the stored new one (old one: %t)", i, got[i] == old.Fields.AccessToken)
				}
			}
			if cur.Fields.AccessToken == old.Fields.AccessToken {
				t.Fatal("not refreshed")
			}
			if _, err := srv.ValidateAccessToken(e.ctx, cur.Fields.AccessToken); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// refreshEndpoint is a hand-written token endpoint, used only where the
// response must have a shape fosite never produces (no refresh_token, no
// expires_in, non-standard fields). It checks the refresh_token grant and
// client authentication, then answers with the JSON body set by the test.
type refreshEndpoint struct {
	*httptest.Server
	clientID, clientSecret string
	wantRefresh            atomic.Value // string
	body                   atomic.Value // map[string]any
	calls                  atomic.Int64
}

func startRefreshEndpoint(t *testing.T) *refreshEndpoint {
	r := &refreshEndpoint{clientID: "hand-client", clientSecret: "hand-written-client-secret-4711"}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.calls.Add(1)
		id, secret, ok := req.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case !ok || id != r.clientID || secret != r.clientSecret:
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"invalid_client"}`))
		case req.PostFormValue("grant_type") != "refresh_token" || req.PostFormValue("refresh_token") != r.wantRefresh.Load():
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_grant"}`))
		default:
			json.NewEncoder(w).Encode(r.body.Load())
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func TestTokenResponseShapes(t *testing.T) {
	cases := []struct {
		name           string
		tokenExpiresIn int            // client's token_expires_in
		body           map[string]any // the token response
		wantRefresh    string         // stored refresh token afterwards ("" = the old one)
		wantLife       time.Duration
		wantScope      string
		wantExtra      map[string]any
	}{
		{
			name:        "no refresh_token keeps the old one",
			body:        map[string]any{"access_token": "hand-access-2", "token_type": "Bearer", "expires_in": 120},
			wantLife:    120 * time.Second,
			wantScope:   "old-scope",
			wantRefresh: "",
		},
		{
			name:        "a new refresh_token replaces the old one",
			body:        map[string]any{"access_token": "hand-access-2", "refresh_token": "hand-refresh-2", "token_type": "Bearer", "expires_in": 120},
			wantLife:    120 * time.Second,
			wantScope:   "old-scope",
			wantRefresh: "hand-refresh-2",
		},
		{
			name:           "no expires_in means the client's token_expires_in",
			tokenExpiresIn: 900,
			body:           map[string]any{"access_token": "hand-access-2", "token_type": "Bearer"},
			wantLife:       900 * time.Second,
			wantScope:      "old-scope",
		},
		{
			name:      "no expires_in and no token_expires_in means 3600 s",
			body:      map[string]any{"access_token": "hand-access-2", "token_type": "Bearer"},
			wantLife:  time.Hour,
			wantScope: "old-scope",
		},
		{
			name: "scope and non-standard fields are stored",
			body: map[string]any{
				"access_token": "hand-access-2", "token_type": "Bearer", "expires_in": 120,
				"scope": "read write admin", "id_token": "header.payload.sig", "user_id": 4711,
				"team": map[string]any{"id": "T1", "name": "Team One"},
			},
			wantLife:  120 * time.Second,
			wantScope: "read write admin",
			wantExtra: map[string]any{"id_token": "header.payload.sig", "user_id": float64(4711), "team": map[string]any{"id": "T1", "name": "Team One"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := startRefreshEndpoint(t)
			ep.wantRefresh.Store("hand-refresh-1")
			ep.body.Store(tc.body)
			e := newEnv(t)
			e.secret("access token", "hand-access-2")
			e.secret("refresh token", "hand-refresh-2")
			// token_uri points elsewhere: refreshes go to refresh_token_uri.
			client := e.createClient(credstore.OAuth2, credstore.ClientSettings{
				ClientID: ep.clientID, ClientSecret: ep.clientSecret,
				AuthURI: ep.URL + "/authorize", TokenURI: ep.URL + "/not-for-refreshes",
				RefreshTokenURI: ep.URL + "/token", TokenExpiresIn: tc.tokenExpiresIn,
			})
			now := e.clock.Now()
			c := e.uploadedSecret(client, credstore.Fields{
				AccessToken: "hand-access-1", RefreshToken: "hand-refresh-1", TokenType: "Bearer", Scope: "old-scope",
				IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Second),
			})

			tok, err := e.token(c.ID)
			if err != nil || tok != "hand-access-2" {
				t.Fatalf("Token = %q, %v; want hand-access-2", tok, err)
			}
			if n := ep.calls.Load(); n != 1 {
				t.Fatalf("token endpoint calls = %d, want 1", n)
			}
			f := e.cred(c.ID).Fields
			want := tc.wantRefresh
			if want == "" {
				want = "hand-refresh-1"
			}
			if f.RefreshToken != want {
				t.Errorf("refresh token = %q, want %q", f.RefreshToken, want)
			}
			if got := f.ExpiresAt.Sub(now); got != tc.wantLife {
				t.Errorf("expires %s after the refresh, want %s", got, tc.wantLife)
			}
			if f.Scope != tc.wantScope {
				t.Errorf("scope = %q, want %q", f.Scope, tc.wantScope)
			}
			if len(f.Extra) != len(tc.wantExtra) || (len(tc.wantExtra) > 0 && !reflect.DeepEqual(f.Extra, tc.wantExtra)) {
				t.Errorf("extra = %#v, want %#v", f.Extra, tc.wantExtra)
			}
			for _, k := range []string{"access_token", "refresh_token", "token_type", "expires_in", "scope"} {
				if _, ok := f.Extra[k]; ok {
					t.Errorf("extra holds the standard field %s", k)
				}
			}
		})
	}
}

func TestTokenWithoutRefreshTokenIsNeverRefreshed(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{NoRefreshTokens: true})
	e := newEnv(t)
	client := e.oauth2Client(srv, nil)
	connected := e.connect(srv, e.pendingSecret(client).ID)
	if connected.Fields.RefreshToken != "" {
		t.Fatal("the provider issued a refresh token")
	}
	now := e.clock.Now()
	uploaded := e.uploadedSecret(client, credstore.Fields{AccessToken: "forever-access-token", IssuedAt: now})
	// Reconnecting a secret to a grant without a refresh token drops the
	// refresh token of its former grant.
	reconnected := e.uploadedSecret(client, credstore.Fields{
		AccessToken: "former-access-token", RefreshToken: "former-refresh-token", IssuedAt: now, ExpiresAt: now.Add(time.Hour),
	})
	reconnected = e.connect(srv, reconnected.ID)
	if f := reconnected.Fields; f.RefreshToken != "" || f.AccessToken == "former-access-token" {
		t.Fatalf("after reconnecting: new access token %t, refresh token kept %t", f.AccessToken != "former-access-token", f.RefreshToken != "")
	}

	e.clock.Set(connected.Fields.ExpiresAt.Add(time.Hour))
	for _, c := range []*credstore.Credential{connected, uploaded, reconnected} {
		tok, err := e.token(c.ID)
		if err != nil || tok != c.Fields.AccessToken {
			t.Fatalf("Token = %v, want the stored token", err)
		}
		if tok, err := e.m.Rejected(e.ctx, c, client, c.Fields.AccessToken); tok != "" || err != nil {
			t.Fatalf("Rejected = %v, want no new token", err)
		}
		_, err = e.m.Refresh(e.ctx, testWS, c.ID)
		wantCode(t, err, credstore.ECONFLICT)
		if got := e.cred(c.ID); !reflect.DeepEqual(got, c) {
			t.Fatal("the secret changed")
		}
	}
	if n := srv.TokenCalls("refresh_token"); n != 0 {
		t.Fatalf("refresh_token requests = %d, want 0", n)
	}
}

func TestTokenPermanentFailure(t *testing.T) {
	cases := []struct {
		name string
		at   time.Duration // the clock, relative to the stored expiry
	}{
		{"token expired", time.Minute},
		{"token inside the margin, still valid", -10 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startFosite(t, oauthtest.Options{})
			e := newEnv(t)
			client := e.oauth2Client(srv, nil)
			c := e.pendingSecret(client)
			before := e.connect(srv, c.ID)
			srv.RevokeRefreshTokens()
			e.clock.Set(before.Fields.ExpiresAt.Add(tc.at))

			tok, err := e.m.Token(e.ctx, before, client)
			if !errors.Is(err, authflow.ErrNeedsReauth) || tok != "" {
				t.Fatalf("Token = %q, %v; want an error wrapping ErrNeedsReauth", tok, err)
			}
			e.noSecrets(t, "the error", err.Error())
			// invalid_grant is not retried (MaxRetry is 2).
			if n := srv.TokenCalls("refresh_token"); n != 1 {
				t.Fatalf("refresh_token requests = %d, want 1", n)
			}
			after := e.cred(c.ID)
			if after.State != credstore.StateError {
				t.Fatalf("state = %q, want error", after.State)
			}
			if !strings.Contains(after.Error, "invalid_grant") {
				t.Errorf("error %q does not say why", after.Error)
			}
			e.noSecrets(t, "the secret's error", after.Error)
			if after.Fields.AccessToken != before.Fields.AccessToken || after.Fields.RefreshToken != before.Fields.RefreshToken {
				t.Error("the tokens changed")
			}
		})
	}
}

// A second request that read the credential before another one's refresh
// failed for good must get ErrNeedsReauth too, not the dead token.
func TestTokenStaleCredentialAfterPermanentFailure(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{})
	e := newEnv(t)
	client := e.oauth2Client(srv, nil)
	c := e.pendingSecret(client)
	before := e.connect(srv, c.ID)
	srv.RevokeRefreshTokens()
	e.clock.Set(before.Fields.ExpiresAt.Add(time.Minute))

	if _, err := e.m.Token(e.ctx, before, client); !errors.Is(err, authflow.ErrNeedsReauth) {
		t.Fatalf("first request: %v, want ErrNeedsReauth", err)
	}
	if st := e.cred(c.ID).State; st != credstore.StateError {
		t.Fatalf("state = %q, want error", st)
	}
	// The second request holds the credential as read before the failure
	// (ready, expired); it must get ErrNeedsReauth, not the dead token, or
	// the proxy would call upstream with it instead of answering 503.
	tok, err := e.m.Token(e.ctx, before, client)
	if !errors.Is(err, authflow.ErrNeedsReauth) || tok != "" {
		t.Errorf("second request: Token = dead token %t, err %v; want \"\" and ErrNeedsReauth", tok == before.Fields.AccessToken, err)
	}
}

// The provider refuses the refresh (invalid_grant) because the user
// reconnected the account meanwhile: the store's new tokens win, no error
// state. The reconnect is injected through the Manager's real HTTP
// transport, between fosite's answer and authflow's reading of it: the
// harness cannot otherwise act inside that window.
func TestTokenPermanentFailureButStoreChangedMeanwhile(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{})
	hook := &hookTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	e := newEnv(t, func(e *env) { e.m.HTTPClient = &http.Client{Transport: hook, Timeout: 5 * time.Second} })
	client := e.oauth2Client(srv, nil)
	c := e.pendingSecret(client)
	before := e.connect(srv, c.ID)
	srv.RevokeRefreshTokens()
	// A new grant for the same account, as a reconnect through another
	// link (or another sidecar) would store.
	fresh := e.connect(srv, e.pendingSecret(client).ID)

	var once sync.Once
	hook.after = func(r *http.Response) {
		if r.StatusCode != http.StatusBadRequest {
			return
		}
		once.Do(func() {
			_, err := e.store.UpdateCredential(c.ID, func(cur *credstore.Credential) error {
				cur.Fields.AccessToken, cur.Fields.RefreshToken = fresh.Fields.AccessToken, fresh.Fields.RefreshToken
				cur.Fields.ExpiresAt = e.clock.Now().Add(time.Hour)
				return nil
			})
			if err != nil {
				t.Errorf("UpdateCredential: %v", err)
			}
		})
	}
	e.clock.Set(before.Fields.ExpiresAt.Add(time.Minute))

	tok, err := e.m.Token(e.ctx, before, client)
	if err != nil || tok != fresh.Fields.AccessToken {
		t.Fatalf("Token = %v (the reconnected token: %t); want the reconnected token", err, tok == fresh.Fields.AccessToken)
	}
	if n := srv.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh_token requests = %d, want 1", n)
	}
	after := e.cred(c.ID)
	if after.State != credstore.StateReady || after.Error != "" {
		t.Fatalf("state %q error %q, want ready", after.State, after.Error)
	}
	if after.Fields.RefreshToken != fresh.Fields.RefreshToken {
		t.Fatal("the reconnected refresh token was overwritten")
	}
}

// hookTransport is the real transport; after runs on each response before
// the caller reads it.
type hookTransport struct {
	base   http.RoundTripper
	before func(*http.Request)
	after  func(*http.Response)
}

func (h *hookTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if h.before != nil {
		h.before(r)
	}
	resp, err := h.base.RoundTrip(r)
	if err == nil && h.after != nil {
		h.after(resp)
	}
	return resp, err
}

func TestTokenTransientFailure(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{})
	e := newEnv(t) // MaxRetry 2, RetryDelay 5 ms
	attempts := int64(e.m.MaxRetry + 1)
	c := e.pendingSecret(e.oauth2Client(srv, nil))
	old := e.connect(srv, c.ID)

	// Inside the margin, still valid, endpoint down: the stored token is
	// used after MaxRetry+1 attempts.
	srv.SetDown(true)
	e.clock.Set(old.Fields.ExpiresAt.Add(-10 * time.Second))
	tok, err := e.token(c.ID)
	if err != nil || tok != old.Fields.AccessToken {
		t.Fatalf("Token = %v, want the still valid stored token", err)
	}
	if n := srv.TokenCalls("refresh_token"); n != attempts {
		t.Fatalf("refresh_token requests = %d, want %d (MaxRetry+1)", n, attempts)
	}
	for _, r := range srv.TokenRequests()[1:] {
		if r.Status != http.StatusServiceUnavailable {
			t.Fatalf("token request answered %d, want 503", r.Status)
		}
	}
	// Right after, while backing off, the endpoint is left alone.
	tok, err = e.token(c.ID)
	if err != nil || tok != old.Fields.AccessToken {
		t.Fatalf("Token while backing off = %v, want the stored token", err)
	}
	if n := srv.TokenCalls("refresh_token"); n != attempts {
		t.Fatalf("refresh_token requests while backing off = %d, want still %d", n, attempts)
	}

	// Expired and the endpoint still down: an error, but not one that
	// asks for re-authorization, and the secret stays ready.
	e.clock.Set(old.Fields.ExpiresAt.Add(time.Second))
	tok, err = e.token(c.ID)
	if err == nil || tok != "" {
		t.Fatalf("Token with an expired token and the endpoint down = %v", err)
	}
	if errors.Is(err, authflow.ErrNeedsReauth) {
		t.Fatalf("a passing failure asks for re-authorization: %v", err)
	}
	wantCode(t, err, credstore.EUNAVAILABLE)
	if n := srv.TokenCalls("refresh_token"); n != 2*attempts {
		t.Fatalf("refresh_token requests = %d, want %d", n, 2*attempts)
	}
	if cur := e.cred(c.ID); !reflect.DeepEqual(cur, old) {
		t.Fatalf("the secret changed: state %q error %q", cur.State, cur.Error)
	}

	// Expired and backing off: requests fail at once, without waiting for
	// the endpoint again.
	tok, err = e.token(c.ID)
	if err == nil || tok != "" {
		t.Fatalf("Token while backing off with an expired token = %q, %v", tok, err)
	}
	wantCode(t, err, credstore.EUNAVAILABLE)
	if n := srv.TokenCalls("refresh_token"); n != 2*attempts {
		t.Fatalf("refresh_token requests while backing off = %d, want still %d", n, 2*attempts)
	}

	// Back up, and past the backoff: the next request refreshes.
	srv.SetDown(false)
	e.clock.Set(old.Fields.ExpiresAt.Add(time.Minute))
	tok, err = e.token(c.ID)
	if err != nil || tok == "" || tok == old.Fields.AccessToken {
		t.Fatalf("Token after the endpoint came back: %v", err)
	}
	if n := srv.TokenCalls("refresh_token"); n != 2*attempts+1 {
		t.Fatalf("refresh_token requests = %d, want %d", n, 2*attempts+1)
	}
	if cur := e.cred(c.ID); cur.Fields.AccessToken != tok || cur.State != credstore.StateReady {
		t.Fatal("the new token is not stored")
	}
	if _, err := srv.ValidateAccessToken(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
}

func TestRejected(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{})
	e := newEnv(t)
	client := e.oauth2Client(srv, nil)
	c := e.pendingSecret(client)
	old := e.connect(srv, c.ID) // valid, not due

	// The stored token was refused upstream: one refresh, a new token.
	tok, err := e.m.Rejected(e.ctx, old, client, old.Fields.AccessToken)
	if err != nil || tok == "" || tok == old.Fields.AccessToken {
		t.Fatalf("Rejected(stored token) = %v, want a new token", err)
	}
	if n := srv.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh_token requests = %d, want 1", n)
	}
	cur := e.cred(c.ID)
	if cur.Fields.AccessToken != tok || cur.Fields.RefreshToken == old.Fields.RefreshToken {
		t.Fatal("the new tokens are not stored")
	}

	// A token that is no longer the stored one, or never was: the 401
	// goes back, nothing is refreshed.
	for _, stale := range []string{old.Fields.AccessToken, "a-token-never-issued"} {
		if got, err := e.m.Rejected(e.ctx, old, client, stale); got != "" || err != nil {
			t.Fatalf("Rejected(old token) = %v, want \"\"", err)
		}
	}
	if n := srv.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh_token requests = %d, want still 1", n)
	}

	// Many requests refused with the same stored token: one refresh; who
	// gets a token gets the new stored one.
	const n = 50
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			if got[i], err = e.m.Rejected(e.ctx, cur, client, cur.Fields.AccessToken); err != nil {
				t.Errorf("Rejected: %v", err)
			}
		})
	}
	wg.Wait()
	if calls := srv.TokenCalls("refresh_token"); calls != 2 {
		t.Fatalf("refresh_token requests = %d, want 2", calls)
	}
	final := e.cred(c.ID)
	for i, g := range got {
		if g != "" && g != final.Fields.AccessToken {
			t.Fatalf("request %d got a token that is not the stored one", i)
		}
	}
	if final.Fields.AccessToken == cur.Fields.AccessToken {
		t.Fatal("not refreshed")
	}
}

func TestRefresh(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{})
	e := newEnv(t)
	client := e.oauth2Client(srv, nil)
	pending := e.pendingSecret(client)
	noRefresh := e.uploadedSecret(client, credstore.Fields{AccessToken: "access-without-refresh", ExpiresAt: e.clock.Now().Add(time.Hour)})
	basic := e.uploadedSecret(e.createClient(credstore.Basic, credstore.ClientSettings{}), credstore.Fields{Username: "u", Password: "basic-secret-pw"})
	c := e.pendingSecret(client)
	old := e.connect(srv, c.ID)

	refusals := []struct {
		name, ws, id, code string
	}{
		{"another workspace", "ws-other", c.ID, credstore.ENOTFOUND},
		{"unknown secret", testWS, "nope", credstore.ENOTFOUND},
		{"basic secret", testWS, basic.ID, credstore.ECONFLICT},
		{"pending secret", testWS, pending.ID, credstore.ECONFLICT},
		{"no refresh token", testWS, noRefresh.ID, credstore.ECONFLICT},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.m.Refresh(e.ctx, tc.ws, tc.id)
			if got != nil {
				t.Fatalf("Refresh returned a secret")
			}
			wantCode(t, err, tc.code)
		})
	}
	if n := srv.TokenCalls("refresh_token"); n != 0 {
		t.Fatalf("refresh_token requests = %d, want 0", n)
	}

	// Forced, although not due: rotates.
	got, err := e.m.Refresh(e.ctx, testWS, c.ID)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	cur := e.cred(c.ID)
	if !reflect.DeepEqual(got, cur) {
		t.Error("Refresh did not return the stored secret")
	}
	if cur.Fields.AccessToken == old.Fields.AccessToken || cur.Fields.RefreshToken == old.Fields.RefreshToken {
		t.Fatal("not rotated")
	}
	if !cur.RefreshedAt.Equal(e.clock.Now()) || cur.State != credstore.StateReady {
		t.Errorf("refreshed_at %s state %q", cur.RefreshedAt, cur.State)
	}
	if n := srv.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh_token requests = %d, want 1", n)
	}

	// Endpoint down: EUNAVAILABLE after MaxRetry+1 attempts, secret kept.
	srv.SetDown(true)
	_, err = e.m.Refresh(e.ctx, testWS, c.ID)
	wantCode(t, err, credstore.EUNAVAILABLE)
	if n := srv.TokenCalls("refresh_token"); n != 1+int64(e.m.MaxRetry+1) {
		t.Fatalf("refresh_token requests = %d", n)
	}
	if now := e.cred(c.ID); !reflect.DeepEqual(now, cur) {
		t.Fatal("a failed refresh changed the secret")
	}
	srv.SetDown(false)

	// Refused for good: the secret comes back in state error.
	srv.RevokeRefreshTokens()
	got, err = e.m.Refresh(e.ctx, testWS, c.ID)
	if err != nil || got == nil || got.State != credstore.StateError || got.Error == "" {
		t.Fatalf("Refresh after revocation = %+v, %v; want the secret in state error", got, err)
	}
	e.noSecrets(t, "the secret's error", got.Error)
}

// Some providers (GitHub) answer a refused refresh with status 200 and an
// error body. The error code decides, not the status: the secret needs
// re-authorization, and the endpoint is not asked again and again.
// A hand-written endpoint, since fosite never answers errors with 200.
func TestErrorCodeInStatus200IsPermanent(t *testing.T) {
	for _, code := range []string{"invalid_grant", "bad_refresh_token"} {
		t.Run(code, func(t *testing.T) {
			ep := startRefreshEndpoint(t)
			ep.wantRefresh.Store("hand-refresh-1")
			ep.body.Store(map[string]any{"error": code, "error_description": "The refresh token passed is incorrect or expired."})
			e := newEnv(t)
			client := e.createClient(credstore.OAuth2, credstore.ClientSettings{
				ClientID: ep.clientID, ClientSecret: ep.clientSecret, AuthURI: ep.URL + "/authorize", TokenURI: ep.URL + "/token",
			})
			now := e.clock.Now()
			c := e.uploadedSecret(client, credstore.Fields{AccessToken: "hand-access-1", RefreshToken: "hand-refresh-1",
				IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Second)})
			_, err := e.token(c.ID)
			if !errors.Is(err, authflow.ErrNeedsReauth) {
				t.Fatalf("Token = %v, want ErrNeedsReauth", err)
			}
			if n := ep.calls.Load(); n != 1 {
				t.Fatalf("token endpoint calls = %d, want 1 (not retried)", n)
			}
			if cur := e.cred(c.ID); cur.State != credstore.StateError || !strings.Contains(cur.Error, code) {
				t.Fatalf("secret state %q error %q", cur.State, cur.Error)
			}
		})
	}
}

// When the store cannot take a rotated refresh token, the grant is kept in
// memory and stored before the token endpoint is asked again: the provider
// has already spent the old refresh token, so asking with it would lose the
// account.
func TestGrantKeptWhenTheStoreWriteFails(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{})
	e := newEnv(t)
	c := e.pendingSecret(e.oauth2Client(srv, nil))
	old := e.connect(srv, c.ID)

	e.store.Close() // every write now fails; reads still come from the cache
	e.clock.Set(old.Fields.ExpiresAt.Add(time.Second))
	if _, err := e.token(c.ID); err == nil {
		t.Fatal("Token succeeded although the new token could not be stored")
	}
	if n := srv.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh calls = %d, want 1", n)
	}

	reopened := openStore(t, e.path, e.key) // still holds the spent refresh token
	e.m.Store = reopened
	tok, err := e.token(c.ID)
	if err != nil || tok == old.Fields.AccessToken {
		t.Fatalf("Token after the store came back = %v", err)
	}
	if n := srv.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh calls = %d, want still 1: the kept grant is stored without asking again", n)
	}
	cur, _ := reopened.Credential(c.ID)
	if cur.Fields.AccessToken != tok || cur.Fields.RefreshToken == old.Fields.RefreshToken {
		t.Fatal("the kept grant was not stored")
	}
	if _, err := srv.ValidateAccessToken(e.ctx, tok); err != nil {
		t.Fatalf("the stored access token is not valid at the provider: %v", err)
	}
	// And the stored refresh token is the live one: the provider takes it.
	if _, err := e.m.Refresh(e.ctx, c.Workspace, c.ID); err != nil {
		t.Fatalf("refresh with the stored refresh token: %v", err)
	}
	if cur, _ := reopened.Credential(c.ID); cur.State != credstore.StateReady {
		t.Fatalf("state %q after refreshing with the kept token: %s", cur.State, cur.Error)
	}
	e.secret("access token", tok)
}
