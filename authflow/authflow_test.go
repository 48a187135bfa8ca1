package authflow_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/authproxy/authproxy/authflow"
	"github.com/authproxy/authproxy/authflow/oauthtest"
	"github.com/authproxy/authproxy/credstore"
)

// The tests run against a real bbolt store in t.TempDir(), the real fosite
// authorization server of oauthtest and its fake Instagram Graph API, all on
// loopback. Expiry is driven by Manager.Now, never by sleeping.

const (
	testWS = "ws-1"
	// redirectURI is on a loopback IP literal, which the fosite harness
	// accepts on any port (RFC 8252 §7.3); nothing listens there: the tests
	// stop the browser at the redirect and call Manager.Callback themselves.
	redirectURI = "http://127.0.0.1:45678/oauth/callback"
)

// ---- clock ----

// fakeClock is Manager.Now. It stands still unless moved, or follows source
// (the Instagram fake's clock) when that is set. reads counts calls, which
// lets a test see that the background refresher has scanned.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	source func() time.Time
	reads  atomic.Int64
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Now().UTC().Truncate(time.Second)}
}

func (c *fakeClock) Now() time.Time {
	c.reads.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.source != nil {
		return c.source()
	}
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// ---- logs ----

// logBuffer collects the Manager's JSON log lines; background refreshes may
// write while a test reads.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// text is the raw log plus every string value of every JSON line, decoded,
// so that a secret is found even if the encoder escaped some of it.
func (l *logBuffer) text() string {
	raw := l.String()
	var sb strings.Builder
	sb.WriteString(raw)
	for line := range strings.Lines(raw) {
		var v any
		if json.Unmarshal([]byte(line), &v) == nil {
			appendStrings(&sb, v)
		}
	}
	return sb.String()
}

func appendStrings(sb *strings.Builder, v any) {
	switch v := v.(type) {
	case string:
		sb.WriteString("\n" + v)
	case map[string]any:
		for k, x := range v {
			sb.WriteString("\n" + k)
			appendStrings(sb, x)
		}
	case []any:
		for _, x := range v {
			appendStrings(sb, x)
		}
	}
}

// ---- environment ----

// env is one Manager over one store. Every secret value the test comes
// across (client secrets, codes, tokens) is recorded, and when the test ends
// the log must hold none of them.
type env struct {
	t     *testing.T
	ctx   context.Context
	path  string
	key   []byte
	store *credstore.Store
	clock *fakeClock
	logs  *logBuffer
	m     *authflow.Manager

	smu     sync.Mutex
	secrets map[string]string // value → what it is
	servers []*oauthtest.Server
}

func newEnv(t *testing.T, configure ...func(*env)) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	e := &env{
		t:       t,
		ctx:     ctx,
		path:    filepath.Join(t.TempDir(), "store.db"),
		key:     make([]byte, credstore.KeySize),
		clock:   newClock(),
		logs:    &logBuffer{},
		secrets: map[string]string{},
	}
	// Registered first, so it runs after everything else has shut down.
	t.Cleanup(func() { e.checkLogs(t) })
	if _, err := rand.Read(e.key); err != nil {
		t.Fatal(err)
	}
	e.store = openStore(t, e.path, e.key)
	e.m = &authflow.Manager{
		Store:          e.store,
		RequestTimeout: 5 * time.Second,
		RetryDelay:     5 * time.Millisecond,
		MaxRetry:       2,
		RedirectURI:    redirectURI,
		ScanInterval:   10 * time.Millisecond,
		Now:            e.clock.Now,
		Logger:         slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range configure {
		f(e)
	}
	return e
}

func openStore(t *testing.T, path string, key []byte) *credstore.Store {
	t.Helper()
	s, err := credstore.Open(path, key)
	if err != nil {
		t.Fatalf("credstore.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// secret records values that must never reach a log line.
func (e *env) secret(what string, values ...string) {
	e.smu.Lock()
	defer e.smu.Unlock()
	for _, v := range values {
		if v != "" {
			e.secrets[v] = what
		}
	}
}

// noSecrets fails if s holds any recorded secret value.
func (e *env) noSecrets(t *testing.T, where, s string) {
	t.Helper()
	e.smu.Lock()
	defer e.smu.Unlock()
	for v, what := range e.secrets {
		if strings.Contains(s, v) {
			t.Errorf("%s holds the %s", where, what)
		}
	}
}

func (e *env) checkLogs(t *testing.T) {
	t.Helper()
	e.smu.Lock()
	servers := e.servers
	e.smu.Unlock()
	for _, srv := range servers {
		for _, r := range srv.TokenRequests() {
			e.secret("token issued by fosite", r.IssuedTokens()...)
		}
	}
	e.noSecrets(t, "the log", e.logs.text())
}

// cred reads credential id from the store and records its tokens.
func (e *env) cred(id string) *credstore.Credential {
	e.t.Helper()
	c, err := e.store.Credential(id)
	if err != nil {
		e.t.Fatalf("store.Credential(%s): %v", id, err)
	}
	e.secret("access token", c.Fields.AccessToken)
	e.secret("refresh token", c.Fields.RefreshToken)
	return c.Clone()
}

func (e *env) createClient(typ credstore.AuthType, s credstore.ClientSettings) *credstore.AuthClient {
	e.t.Helper()
	c, err := e.store.CreateAuthClient(&credstore.AuthClient{
		Type:     typ,
		Name:     string(typ) + " client",
		Scope:    credstore.Scope{Level: credstore.LevelGlobal},
		Settings: s,
	})
	if err != nil {
		e.t.Fatalf("CreateAuthClient: %v", err)
	}
	e.secret("client secret", s.ClientSecret)
	return c
}

// oauth2Client is an oauth2 auth client of the fosite harness srv.
func (e *env) oauth2Client(srv *oauthtest.Server, mod func(*credstore.ClientSettings)) *credstore.AuthClient {
	e.smu.Lock()
	e.servers = append(e.servers, srv)
	e.smu.Unlock()
	s := credstore.ClientSettings{
		ClientID:     srv.ClientID,
		ClientSecret: srv.ClientSecret,
		AuthURI:      srv.AuthURL,
		TokenURI:     srv.TokenURL,
		Scopes:       []string{"read", "write"},
	}
	if mod != nil {
		mod(&s)
	}
	return e.createClient(credstore.OAuth2, s)
}

// pendingSecret is an OAuth2 secret created without tokens.
func (e *env) pendingSecret(client *credstore.AuthClient) *credstore.Credential {
	e.t.Helper()
	c, err := e.store.CreateCredential(&credstore.Credential{
		Workspace: testWS, Name: "account", AuthClientID: client.ID, State: credstore.StatePending,
	})
	if err != nil {
		e.t.Fatalf("CreateCredential: %v", err)
	}
	return c
}

// uploadedSecret is a ready secret whose tokens were connected elsewhere.
func (e *env) uploadedSecret(client *credstore.AuthClient, f credstore.Fields) *credstore.Credential {
	e.t.Helper()
	e.secret("access token", f.AccessToken)
	e.secret("refresh token", f.RefreshToken)
	e.secret("password", f.Password)
	c, err := e.store.CreateCredential(&credstore.Credential{
		Workspace: testWS, Name: "uploaded", AuthClientID: client.ID, State: credstore.StateReady, Fields: f,
	})
	if err != nil {
		e.t.Fatalf("CreateCredential: %v", err)
	}
	return c
}

// link returns a new authorization URL for secret id.
func (e *env) link(id string) string {
	e.t.Helper()
	u, err := e.m.AuthorizationURL(testWS, id)
	if err != nil {
		e.t.Fatalf("AuthorizationURL: %v", err)
	}
	return u
}

// login plays the browser at the fosite harness for a new link of secret id
// and returns the query of the redirect to redirectURI.
func (e *env) login(srv *oauthtest.Server, id string, deny bool) url.Values {
	e.t.Helper()
	cb, err := srv.Login(e.ctx, e.link(id), "alice", deny)
	if err != nil {
		e.t.Fatalf("Login: %v", err)
	}
	return e.callbackQuery(cb)
}

func (e *env) callbackQuery(cb string) url.Values {
	e.t.Helper()
	u, err := url.Parse(cb)
	if err != nil {
		e.t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != redirectURI {
		e.t.Fatalf("provider redirected to %q, want %q", got, redirectURI)
	}
	q := u.Query()
	e.secret("authorization code", q.Get("code"))
	return q
}

// connect runs the whole authorization-code flow for secret id at srv.
func (e *env) connect(srv *oauthtest.Server, id string) *credstore.Credential {
	e.t.Helper()
	if _, err := e.m.Callback(e.ctx, e.login(srv, id, false)); err != nil {
		e.t.Fatalf("Callback: %v", err)
	}
	return e.cred(id)
}

// token calls Manager.Token with the credential as the store holds it now,
// as the proxy does.
func (e *env) token(id string) (string, error) {
	e.t.Helper()
	c, client, err := e.store.CredentialWithClient(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.m.Token(e.ctx, c, client)
}

// waitScans waits until the background refresher has run at least n whole
// scans after the call (each scan reads the clock once on entry).
func (e *env) waitScans(n int64) {
	e.t.Helper()
	base := e.clock.reads.Load()
	eventually(e.t, "background scans", func() bool { return e.clock.reads.Load() >= base+n+1 })
}

func startFosite(t *testing.T, opts oauthtest.Options) *oauthtest.Server {
	t.Helper()
	if opts.Scopes == nil {
		opts.Scopes = []string{"read", "write"}
	}
	return oauthtest.Start(t, opts)
}

// directRefresh uses refresh token rt at srv without the Manager, as a
// second copy of the sidecar holding an old token would.
func directRefresh(ctx context.Context, srv *oauthtest.Server, rt string) error {
	conf := &oauth2.Config{
		ClientID: srv.ClientID, ClientSecret: srv.ClientSecret,
		Endpoint: oauth2.Endpoint{TokenURL: srv.TokenURL, AuthStyle: oauth2.AuthStyleInHeader},
	}
	_, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	return err
}

func wantInvalidGrant(t *testing.T, err error) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("want invalid_grant from the provider, got %v", err)
	}
}

// eventually polls cond every 5 ms for at most 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := credstore.ErrorCode(err); got != code {
		t.Fatalf("error code = %q (%v), want %q", got, err, code)
	}
}

func near(got, want time.Time, tol time.Duration) bool {
	d := got.Sub(want)
	return d >= -tol && d <= tol
}

// ---- AuthorizationURL ----

func TestAuthorizationURL(t *testing.T) {
	pkceOff := false
	cases := []struct {
		name      string
		typ       credstore.AuthType
		settings  func(*credstore.ClientSettings)
		wantScope string
		wantPKCE  bool
		wantExtra url.Values
	}{
		{
			name:      "oauth2 with PKCE by default",
			typ:       credstore.OAuth2,
			wantScope: "read write admin:org",
			wantPKCE:  true,
		},
		{
			name:      "pkce false sends no challenge",
			typ:       credstore.OAuth2,
			settings:  func(s *credstore.ClientSettings) { s.PKCE = &pkceOff },
			wantScope: "read write admin:org",
		},
		{
			name: "additional_params are added",
			typ:  credstore.OAuth2,
			settings: func(s *credstore.ClientSettings) {
				s.AdditionalParams = map[string]string{"access_type": "offline", "prompt": "consent"}
			},
			wantScope: "read write admin:org",
			wantPKCE:  true,
			wantExtra: url.Values{"access_type": {"offline"}, "prompt": {"consent"}},
		},
		{
			name:      "oauth2_instagram joins scopes with commas",
			typ:       credstore.OAuth2Instagram,
			wantScope: "read,write,admin:org",
			wantPKCE:  true,
		},
		{
			name:     "no scopes, no scope parameter",
			typ:      credstore.OAuth2,
			settings: func(s *credstore.ClientSettings) { s.Scopes = nil },
			wantPKCE: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			s := credstore.ClientSettings{
				ClientID: "the-client", ClientSecret: "the-client-secret-value",
				AuthURI:  "https://provider.example/oauth/authorize?tenant=t1",
				TokenURI: "https://provider.example/oauth/token",
				Scopes:   []string{"read", "write", "admin:org"},
			}
			if tc.settings != nil {
				tc.settings(&s)
			}
			c := e.pendingSecret(e.createClient(tc.typ, s))

			raw := e.link(c.ID)
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.Scheme + "://" + u.Host + u.Path; got != "https://provider.example/oauth/authorize" {
				t.Errorf("link goes to %q, want the client's auth_uri", got)
			}
			q := u.Query()
			want := map[string]string{
				"tenant":        "t1", // auth_uri's own query is kept
				"response_type": "code",
				"client_id":     "the-client",
				"redirect_uri":  redirectURI,
				"scope":         tc.wantScope,
			}
			for k, v := range want {
				if q.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, q.Get(k), v)
				}
			}
			if tc.wantScope == "" && q.Has("scope") {
				t.Errorf("scope = %q, want none", q.Get("scope"))
			}
			if len(q.Get("state")) < 32 {
				t.Errorf("state = %q, want a long random value", q.Get("state"))
			}
			if tc.wantPKCE {
				// S256 of a verifier: 32 bytes, base64url without padding.
				if ch := q.Get("code_challenge"); len(ch) != 43 || strings.ContainsAny(ch, "+/=") {
					t.Errorf("code_challenge = %q, want 43 base64url characters", ch)
				}
				if m := q.Get("code_challenge_method"); m != "S256" {
					t.Errorf("code_challenge_method = %q, want S256", m)
				}
			} else if q.Has("code_challenge") || q.Has("code_challenge_method") {
				t.Errorf("PKCE parameters sent although pkce is false: %s", raw)
			}
			for k := range tc.wantExtra {
				if q.Get(k) != tc.wantExtra.Get(k) {
					t.Errorf("additional param %s = %q, want %q", k, q.Get(k), tc.wantExtra.Get(k))
				}
			}
			if strings.Contains(raw, "the-client-secret-value") {
				t.Error("the link holds the client secret")
			}

			// Every link has its own state.
			u2, _ := url.Parse(e.link(c.ID))
			if st := u2.Query().Get("state"); st == q.Get("state") {
				t.Errorf("two links share state %q", st)
			}
		})
	}
}

func TestAuthorizationURLRefusals(t *testing.T) {
	e := newEnv(t)
	oc := e.createClient(credstore.OAuth2, credstore.ClientSettings{
		ClientID: "c", ClientSecret: "s3cr3t-value", AuthURI: "https://p.example/auth", TokenURI: "https://p.example/token",
	})
	oauthSecret := e.pendingSecret(oc)
	bc := e.createClient(credstore.Basic, credstore.ClientSettings{})
	basicSecret := e.uploadedSecret(bc, credstore.Fields{Username: "u", Password: "basic-password"})

	cases := []struct {
		name, ws, id string
		m            *authflow.Manager
		want         []string // acceptable error codes
	}{
		{name: "secret of another workspace", ws: "ws-other", id: oauthSecret.ID, want: []string{credstore.ENOTFOUND}},
		{name: "unknown secret", ws: testWS, id: "no-such-secret", want: []string{credstore.ENOTFOUND}},
		// The doc comment says EINVALID, the code answers ECONFLICT; either
		// refuses (see the report).
		{name: "basic secret", ws: testWS, id: basicSecret.ID, want: []string{credstore.ECONFLICT, credstore.EINVALID}},
		{name: "no redirect URI configured", ws: testWS, id: oauthSecret.ID, m: &authflow.Manager{Store: e.store, Logger: e.m.Logger}, want: []string{credstore.EINTERNAL}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.m
			if m == nil {
				m = e.m
			}
			u, err := m.AuthorizationURL(tc.ws, tc.id)
			if err == nil || u != "" {
				t.Fatalf("AuthorizationURL = %q, %v; want a refusal", u, err)
			}
			code := credstore.ErrorCode(err)
			ok := false
			for _, w := range tc.want {
				ok = ok || code == w
			}
			if !ok {
				t.Fatalf("error code %q (%v), want one of %v", code, err, tc.want)
			}
		})
	}
}

// ---- the authorization-code flow against fosite ----

func TestConnectWithFosite(t *testing.T) {
	pkceOff := false
	cases := []struct {
		name         string
		server       oauthtest.Options
		settings     func(*credstore.ClientSettings)
		wantAuth     string
		wantVerifier bool
	}{
		{
			name:         "client_secret_basic with PKCE",
			wantAuth:     oauthtest.AuthMethodBasic,
			wantVerifier: true,
		},
		{
			name:         "client_secret_post",
			server:       oauthtest.Options{TokenEndpointAuthMethod: oauthtest.AuthMethodPost},
			settings:     func(s *credstore.ClientSettings) { s.TokenEndpointAuthMethod = "client_secret_post" },
			wantAuth:     oauthtest.AuthMethodPost,
			wantVerifier: true,
		},
		{
			name:     "PKCE turned off",
			server:   oauthtest.Options{PKCEOptional: true},
			settings: func(s *credstore.ClientSettings) { s.PKCE = &pkceOff },
			wantAuth: oauthtest.AuthMethodBasic,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startFosite(t, tc.server)
			e := newEnv(t)
			client := e.oauth2Client(srv, tc.settings)
			c := e.pendingSecret(client)
			other := e.pendingSecret(client)
			otherBefore := e.cred(other.ID)
			connectedAt := e.clock.Now()

			q := e.login(srv, c.ID, false)
			if q.Get("code") == "" || q.Get("error") != "" {
				t.Fatalf("no code in the callback: %v", q)
			}
			got, err := e.m.Callback(e.ctx, q)
			if err != nil {
				t.Fatalf("Callback: %v", err)
			}
			stored := e.cred(c.ID)
			if !reflect.DeepEqual(got, stored) {
				t.Errorf("Callback returned %+v, the store holds %+v", got, stored)
			}
			f := stored.Fields
			if stored.State != credstore.StateReady || stored.Error != "" {
				t.Errorf("state %q error %q, want ready", stored.State, stored.Error)
			}
			if f.AccessToken == "" || f.RefreshToken == "" || f.AccessToken == f.RefreshToken {
				t.Fatalf("tokens not stored: access %t refresh %t", f.AccessToken != "", f.RefreshToken != "")
			}
			if !strings.EqualFold(f.TokenType, "bearer") {
				t.Errorf("token_type = %q", f.TokenType)
			}
			if f.Scope != "read write" {
				t.Errorf("scope = %q, want the scope of the token response", f.Scope)
			}
			// fosite's expires_in is the 1 h lifetime, give or take its
			// rounding to a second.
			if life := f.ExpiresAt.Sub(connectedAt); life < time.Hour-2*time.Second || life > time.Hour {
				t.Errorf("expires_at is %s after connecting, want about 1h", life)
			}
			if !f.IssuedAt.Equal(connectedAt) {
				t.Errorf("issued_at = %s, want %s", f.IssuedAt, connectedAt)
			}
			info, err := srv.ValidateAccessToken(e.ctx, f.AccessToken)
			if err != nil {
				t.Fatalf("the stored access token does not validate at the provider: %v", err)
			}
			if info.Subject != "alice" || strings.Join(info.Scopes, " ") != "read write" {
				t.Errorf("token info = %+v", info)
			}

			reqs := srv.TokenRequests()
			if len(reqs) != 1 || reqs[0].GrantType != "authorization_code" || reqs[0].Status != http.StatusOK {
				t.Fatalf("token requests = %+v, want one authorization_code", reqs)
			}
			if reqs[0].ClientAuth != tc.wantAuth || reqs[0].HasCodeVerifier != tc.wantVerifier {
				t.Errorf("client auth %q verifier %t, want %q %t", reqs[0].ClientAuth, reqs[0].HasCodeVerifier, tc.wantAuth, tc.wantVerifier)
			}
			// The state was bound to c: the other pending secret is untouched.
			if o := e.cred(other.ID); !reflect.DeepEqual(o, otherBefore) {
				t.Errorf("another secret changed: %+v", o)
			}

			// The token is used as is while not due...
			tok, err := e.token(c.ID)
			if err != nil || tok != f.AccessToken {
				t.Fatalf("Token = %v, want the stored token", err)
			}
			// ...and once expired it is refreshed with the same client
			// authentication.
			e.clock.Set(f.ExpiresAt.Add(time.Second))
			tok, err = e.token(c.ID)
			if err != nil || tok == f.AccessToken {
				t.Fatalf("Token after expiry: new token %t, %v", tok != f.AccessToken, err)
			}
			e.secret("access token", tok)
			reqs = srv.TokenRequests()
			if len(reqs) != 2 || reqs[1].GrantType != "refresh_token" || reqs[1].ClientAuth != tc.wantAuth || reqs[1].Status != http.StatusOK {
				t.Fatalf("token requests = %+v, want a refresh_token grant with %s", reqs, tc.wantAuth)
			}
			if _, err := srv.ValidateAccessToken(e.ctx, tok); err != nil {
				t.Fatalf("refreshed token does not validate: %v", err)
			}
		})
	}
}

func TestCallbackFailuresLeaveSecret(t *testing.T) {
	cases := []struct {
		name string
		// connected: connect the secret first, so that a failed reconnect
		// must keep its tokens.
		connected bool
		// callback returns the query given to Callback.
		callback  func(e *env, srv *oauthtest.Server, id string) url.Values
		wantCode  string
		wantMsg   string
		codeCalls int64 // authorization_code requests the provider got
	}{
		{
			name:     "denied consent",
			callback: func(e *env, srv *oauthtest.Server, id string) url.Values { return e.login(srv, id, true) },
			wantCode: credstore.EINVALID, wantMsg: "access_denied",
		},
		{
			name:      "denied reconnect keeps the tokens",
			connected: true,
			callback:  func(e *env, srv *oauthtest.Server, id string) url.Values { return e.login(srv, id, true) },
			wantCode:  credstore.EINVALID, wantMsg: "access_denied", codeCalls: 1,
		},
		{
			name:      "replayed state",
			connected: true,
			callback: func(e *env, srv *oauthtest.Server, id string) url.Values {
				q := e.login(srv, id, false)
				if _, err := e.m.Callback(e.ctx, q); err != nil {
					e.t.Fatalf("first Callback: %v", err)
				}
				return q
			},
			wantCode: credstore.EINVALID, wantMsg: "already used", codeCalls: 2,
		},
		{
			name: "expired state",
			callback: func(e *env, srv *oauthtest.Server, id string) url.Values {
				q := e.login(srv, id, false)
				e.clock.Advance(authflow.DefaultStateTTL + time.Second)
				return q
			},
			wantCode: credstore.EINVALID, wantMsg: "expired",
		},
		{
			name: "unknown state",
			callback: func(e *env, srv *oauthtest.Server, id string) url.Values {
				q := e.login(srv, id, false)
				q.Set("state", "a-state-this-sidecar-never-issued")
				return q
			},
			wantCode: credstore.EINVALID, wantMsg: "unknown",
		},
		{
			name: "no state",
			callback: func(e *env, srv *oauthtest.Server, id string) url.Values {
				q := e.login(srv, id, false)
				q.Del("state")
				return q
			},
			wantCode: credstore.EINVALID, wantMsg: "unknown",
		},
		{
			name: "no code",
			callback: func(e *env, srv *oauthtest.Server, id string) url.Values {
				q := e.login(srv, id, false)
				q.Del("code")
				return q
			},
			wantCode: credstore.EINVALID, wantMsg: "no authorization code",
		},
		{
			name: "code refused by the provider",
			callback: func(e *env, srv *oauthtest.Server, id string) url.Values {
				q := e.login(srv, id, false)
				q.Set("code", q.Get("code")+"x")
				return q
			},
			wantCode: credstore.EUNAVAILABLE, wantMsg: "token endpoint answered 400", codeCalls: 1,
		},
		{
			name: "token endpoint down: the code is sent once",
			callback: func(e *env, srv *oauthtest.Server, id string) url.Values {
				q := e.login(srv, id, false)
				srv.SetDown(true)
				return q
			},
			wantCode: credstore.EUNAVAILABLE, wantMsg: "503", codeCalls: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startFosite(t, oauthtest.Options{})
			e := newEnv(t)
			c := e.pendingSecret(e.oauth2Client(srv, nil))
			if tc.connected {
				e.connect(srv, c.ID)
			}
			q := tc.callback(e, srv, c.ID)
			before := e.cred(c.ID)

			got, err := e.m.Callback(e.ctx, q)
			if err == nil || got != nil {
				t.Fatalf("Callback = %+v, %v; want an error", got, err)
			}
			wantCode(t, err, tc.wantCode)
			if msg := credstore.ErrorMessage(err); !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("message %q does not say %q", msg, tc.wantMsg)
			}
			e.noSecrets(t, "the error", err.Error())
			if after := e.cred(c.ID); !reflect.DeepEqual(after, before) {
				t.Errorf("the secret changed:\nbefore %+v\nafter  %+v", before, after)
			}
			if n := srv.TokenCalls("authorization_code"); n != tc.codeCalls {
				t.Errorf("authorization_code requests = %d, want %d", n, tc.codeCalls)
			}
		})
	}
}

// A state is accepted until DefaultStateTTL has passed.
func TestCallbackStateJustBeforeExpiry(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{})
	e := newEnv(t)
	c := e.pendingSecret(e.oauth2Client(srv, nil))
	q := e.login(srv, c.ID, false)
	e.clock.Advance(authflow.DefaultStateTTL - time.Second)
	if _, err := e.m.Callback(e.ctx, q); err != nil {
		t.Fatalf("Callback 1 s before the state expires: %v", err)
	}
	if got := e.cred(c.ID); got.State != credstore.StateReady {
		t.Fatalf("state = %q", got.State)
	}
}
