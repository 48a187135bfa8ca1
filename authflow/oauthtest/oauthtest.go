// Package oauthtest starts, inside a Go test and on loopback only, the
// providers that the token-refreshing proxy talks to:
//
//   - [Start]: a real OAuth 2.0 authorization server built from
//     github.com/ory/fosite (authorization-code grant with PKCE S256,
//     refresh_token grant with rotation and reuse detection, token
//     introspection). The protocol logic is fosite's; this package only adds a
//     small HTML login/consent page, test switches and counters around it.
//   - [StartInstagram]: a fake Instagram API (authorization window,
//     code → short-lived token, ig_exchange_token, ig_refresh_token, /me) with
//     a controllable clock.
//
// Both servers listen on 127.0.0.1 through net/http/httptest and are closed by
// t.Cleanup.
package oauthtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/storage"
	"golang.org/x/crypto/bcrypt"
)

// Paths served by [Server].
const (
	AuthPath     = "/oauth2/auth"
	TokenPath    = "/oauth2/token"
	ResourcePath = "/api/"
)

// Client authentication methods accepted at the token endpoint.
const (
	AuthMethodBasic = "client_secret_basic"
	AuthMethodPost  = "client_secret_post"
)

// DefaultRedirectURIs are registered for the client when
// Options.RedirectURIs is empty. fosite implements RFC 8252 §7.3 for loopback
// IP literals: a registered http://127.0.0.1/PATH (or http://[::1]/PATH)
// matches a requested redirect_uri with the same path on any port. The host
// name "localhost" gets no such treatment and must match exactly.
var DefaultRedirectURIs = []string{
	"http://127.0.0.1/oauth/callback",
	"http://[::1]/oauth/callback",
}

// Options configures [Start]. The zero value is usable.
type Options struct {
	// ClientID and ClientSecret of the single registered confidential
	// client. Random when empty.
	ClientID, ClientSecret string

	// RedirectURIs registered for the client; see DefaultRedirectURIs for
	// the default and the loopback port rule. They can be replaced later
	// with Server.SetRedirectURIs.
	RedirectURIs []string

	// Scopes the client may request. Nil allows any scope. All requested
	// scopes are granted when the user approves.
	Scopes []string

	// AccessTokenLifetime is the lifetime of access tokens (expires_in).
	// Default 1 h. fosite rounds the expiry to a whole second, so
	// expires_in may differ from it by one second.
	AccessTokenLifetime time.Duration

	// RefreshTokenLifetime is the lifetime of refresh tokens. Zero uses
	// fosite's default (30 days); negative means they never expire.
	RefreshTokenLifetime time.Duration

	// TokenEndpointAuthMethod restricts client authentication at the token
	// endpoint to AuthMethodBasic or AuthMethodPost. Empty accepts both.
	TokenEndpointAuthMethod string

	// PKCEOptional lets authorization requests without PKCE through. By
	// default PKCE is required and only S256 is accepted (plain is always
	// refused).
	PKCEOptional bool

	// NoRefreshTokens makes the server issue no refresh token at all (the
	// client is not allowed the refresh_token grant), like a provider whose
	// tokens never need refreshing.
	NoRefreshTokens bool

	// RevokeOldAccessTokenOnRefresh makes a refresh also revoke the access
	// token issued together with the refresh token being used (fosite's
	// MemoryStore default). By default the old access token stays valid
	// until it expires, as with most providers.
	RevokeOldAccessTokenOnRefresh bool

	// Password that the login form accepts for every non-empty user name.
	// Default "password". Server.Login fills it in.
	Password string
}

// TokenRequest records one request received by the token endpoint.
type TokenRequest struct {
	Time      time.Time
	GrantType string // form value grant_type
	// ClientAuth is AuthMethodBasic when an Authorization: Basic header was
	// sent, AuthMethodPost when client_secret was in the form, "none"
	// otherwise.
	ClientAuth      string
	HasCodeVerifier bool // a code_verifier form value was sent
	Status          int  // HTTP status answered

	// AccessToken and RefreshToken issued in the answer ("" when none),
	// so that tests can search logs and files for them.
	AccessToken, RefreshToken string
}

// IssuedTokens returns the non-empty tokens issued in the answer.
func (r TokenRequest) IssuedTokens() []string {
	var out []string
	for _, t := range []string{r.AccessToken, r.RefreshToken} {
		if t != "" {
			out = append(out, t)
		}
	}
	return out
}

// Server is a running fosite authorization server with one registered
// confidential client, plus a resource endpoint that accepts the access tokens
// it issued. All methods are safe for concurrent use.
type Server struct {
	// URL is the base URL, http://127.0.0.1:PORT.
	URL string
	// AuthURL is the authorization endpoint (GET shows the login form).
	AuthURL string
	// TokenURL is the token endpoint (authorization_code and
	// refresh_token grants).
	TokenURL string
	// ResourceURL is the prefix under which ResourceHandler is mounted
	// (URL + "/api/"); any path below it is served.
	ResourceURL string
	// ClientID and ClientSecret of the registered client.
	ClientID, ClientSecret string
	// Password accepted by the login form.
	Password string

	srv      *httptest.Server
	provider fosite.OAuth2Provider
	store    *memStore
	client   *fosite.DefaultClient
	authMeth string

	// mu serializes everything that reads or writes fosite's MemoryStore
	// except introspection, which takes the read lock. The MemoryStore is
	// not entirely race-free on its own (RevokeRefreshToken writes the
	// refresh-token map under another mutex), so the lock also keeps tests
	// built with -race clean.
	mu sync.RWMutex

	down       atomic.Bool
	tokenDelay atomic.Int64

	cmu            sync.Mutex
	tokenCalls     map[string]int64
	tokenRequests  []TokenRequest
	authorizeCalls int64
	resourceCalls  int64

	closeOnce sync.Once
}

// memStore wraps fosite's MemoryStore to make access-token revocation on
// refresh optional.
type memStore struct {
	*storage.MemoryStore
	revokeOldAccessToken bool
}

// RotateRefreshToken is called by fosite's refresh handler before it stores
// the new token pair. The used refresh token is always deactivated (so its
// reuse is detected); the old access token is revoked only on request.
func (m *memStore) RotateRefreshToken(ctx context.Context, requestID string, refreshTokenSignature string) error {
	if m.revokeOldAccessToken {
		return m.MemoryStore.RotateRefreshToken(ctx, requestID, refreshTokenSignature)
	}
	return m.MemoryStore.RevokeRefreshToken(ctx, requestID)
}

// Start starts the authorization server on 127.0.0.1 and registers its
// shutdown with t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := newServer(opts)
	if err != nil {
		t.Fatalf("oauthtest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func newServer(opts Options) (*Server, error) {
	if opts.ClientID == "" {
		opts.ClientID = "client-" + randHex(6)
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = randHex(20)
	}
	if len(opts.RedirectURIs) == 0 {
		opts.RedirectURIs = DefaultRedirectURIs
	}
	if opts.AccessTokenLifetime <= 0 {
		opts.AccessTokenLifetime = time.Hour
	}
	if opts.Password == "" {
		opts.Password = "password"
	}
	switch opts.TokenEndpointAuthMethod {
	case "", AuthMethodBasic, AuthMethodPost:
	default:
		return nil, fmt.Errorf("unsupported TokenEndpointAuthMethod %q", opts.TokenEndpointAuthMethod)
	}

	hash, err := bcrypt.GenerateFromPassword([]byte(opts.ClientSecret), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	grants := []string{"authorization_code", "refresh_token"}
	if opts.NoRefreshTokens {
		grants = []string{"authorization_code"}
	}
	client := &fosite.DefaultClient{
		ID:            opts.ClientID,
		Secret:        hash,
		RedirectURIs:  append([]string(nil), opts.RedirectURIs...),
		GrantTypes:    grants,
		ResponseTypes: []string{"code"},
		Scopes:        append([]string(nil), opts.Scopes...),
	}

	scopeStrategy := fosite.ExactScopeStrategy
	if opts.Scopes == nil {
		scopeStrategy = func([]string, string) bool { return true }
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	cfg := &fosite.Config{
		AccessTokenLifespan:            opts.AccessTokenLifetime,
		RefreshTokenLifespan:           opts.RefreshTokenLifetime,
		AuthorizeCodeLifespan:          10 * time.Minute,
		GlobalSecret:                   secret,
		HashCost:                       bcrypt.MinCost,
		ScopeStrategy:                  scopeStrategy,
		AudienceMatchingStrategy:       fosite.DefaultAudienceMatchingStrategy,
		EnforcePKCE:                    !opts.PKCEOptional,
		EnablePKCEPlainChallengeMethod: false,
		// Issue refresh tokens whatever the scope (no "offline" needed).
		RefreshTokenScopes:         []string{},
		SendDebugMessagesToClients: true,
	}
	if opts.RefreshTokenLifetime == 0 {
		cfg.RefreshTokenLifespan = 30 * 24 * time.Hour
	}
	// Set lazily-initialized fields now: fosite's getters assign them on
	// first use, which would race under concurrent introspection.
	cfg.ClientSecretsHasher = &fosite.BCrypt{Config: cfg}

	st := &memStore{MemoryStore: storage.NewMemoryStore(), revokeOldAccessToken: opts.RevokeOldAccessTokenOnRefresh}
	var fclient fosite.Client = client
	if opts.TokenEndpointAuthMethod != "" {
		fclient = &fosite.DefaultOpenIDConnectClient{DefaultClient: client, TokenEndpointAuthMethod: opts.TokenEndpointAuthMethod}
	}
	st.Clients[client.ID] = fclient

	provider := compose.Compose(cfg, st, compose.NewOAuth2HMACStrategy(cfg),
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2PKCEFactory,
		compose.OAuth2TokenIntrospectionFactory,
	)

	s := &Server{
		ClientID:     opts.ClientID,
		ClientSecret: opts.ClientSecret,
		Password:     opts.Password,
		provider:     provider,
		store:        st,
		client:       client,
		authMeth:     opts.TokenEndpointAuthMethod,
		tokenCalls:   map[string]int64{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(AuthPath, s.handleAuthorize)
	mux.HandleFunc(TokenPath, s.handleToken)
	mux.Handle(ResourcePath, s.ResourceHandler())
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	s.AuthURL = s.URL + AuthPath
	s.TokenURL = s.URL + TokenPath
	s.ResourceURL = s.URL + ResourcePath
	return s, nil
}

// Close stops the server. It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(s.srv.Close)
}

// SetRedirectURIs replaces the client's registered redirect URIs, for a
// client whose callback address is only known after Start.
func (s *Server) SetRedirectURIs(uris ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *s.client
	c.RedirectURIs = append([]string(nil), uris...)
	s.client = &c
	var fc fosite.Client = &c
	if s.authMeth != "" {
		fc = &fosite.DefaultOpenIDConnectClient{DefaultClient: &c, TokenEndpointAuthMethod: s.authMeth}
	}
	s.store.Clients[c.ID] = fc
}

// SetDown makes the token endpoint answer 503 (temporarily_unavailable)
// while down is true. Requests are still counted. The authorization endpoint
// keeps working.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// SetTokenDelay makes the token endpoint wait d before handling each request
// (outside any lock), e.g. so that concurrent callers pile up behind one
// refresh. Zero removes the delay.
func (s *Server) SetTokenDelay(d time.Duration) { s.tokenDelay.Store(int64(d)) }

// TokenCalls returns how many requests the token endpoint received with the
// given grant_type ("authorization_code", "refresh_token", …), including
// failed ones and those answered 503 by SetDown. An empty grant counts all.
func (s *Server) TokenCalls(grant string) int64 {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if grant == "" {
		var n int64
		for _, v := range s.tokenCalls {
			n += v
		}
		return n
	}
	return s.tokenCalls[grant]
}

// TokenRequests returns a copy of the log of token-endpoint requests, oldest
// first. It holds no secrets.
func (s *Server) TokenRequests() []TokenRequest {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return append([]TokenRequest(nil), s.tokenRequests...)
}

// AuthorizeCalls returns how many requests the authorization endpoint
// received (form display and form submission each count).
func (s *Server) AuthorizeCalls() int64 {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.authorizeCalls
}

// ResourceCalls returns how many requests the resource endpoint received,
// authorized or not.
func (s *Server) ResourceCalls() int64 {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.resourceCalls
}

// RevokeRefreshTokens invalidates every refresh token issued so far: using
// one afterwards gets invalid_grant. Access tokens are left alone (see
// RevokeAccessTokens). Tokens issued later are not affected.
func (s *Server) RevokeRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx := context.Background()
	sigs := make([]string, 0, len(s.store.RefreshTokens))
	for sig := range s.store.RefreshTokens {
		sigs = append(sigs, sig)
	}
	for _, sig := range sigs {
		_ = s.store.DeleteRefreshTokenSession(ctx, sig)
	}
}

// RevokeAccessTokens invalidates every access token issued so far, so the
// resource endpoint answers 401 to them although they have not expired.
func (s *Server) RevokeAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx := context.Background()
	sigs := make([]string, 0, len(s.store.AccessTokens))
	for sig := range s.store.AccessTokens {
		sigs = append(sigs, sig)
	}
	for _, sig := range sigs {
		_ = s.store.DeleteAccessTokenSession(ctx, sig)
	}
}

// TokenInfo describes a valid access token.
type TokenInfo struct {
	Subject   string
	Scopes    []string
	ExpiresAt time.Time
}

// ValidateAccessToken checks token with fosite's introspection: it must be an
// access token issued by this server, unexpired and not revoked.
func (s *Server) ValidateAccessToken(ctx context.Context, token string) (TokenInfo, error) {
	if token == "" {
		return TokenInfo{}, errors.New("empty token")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	use, ar, err := s.provider.IntrospectToken(ctx, token, fosite.AccessToken, new(fosite.DefaultSession))
	if err != nil {
		return TokenInfo{}, err
	}
	// fosite falls back to refresh-token introspection; a refresh token is
	// no bearer credential.
	if use != fosite.AccessToken {
		return TokenInfo{}, fmt.Errorf("token is a %s, not an access token", use)
	}
	info := TokenInfo{Scopes: append([]string(nil), ar.GetGrantedScopes()...)}
	if sess := ar.GetSession(); sess != nil {
		info.Subject = sess.GetSubject()
		info.ExpiresAt = sess.GetExpiresAt(fosite.AccessToken)
	}
	return info, nil
}

// ResourceResponse is the JSON body ResourceHandler answers with 200.
type ResourceResponse struct {
	OK          bool   `json:"ok"`
	TokenSuffix string `json:"token_suffix"` // last 6 characters of the token
	Subject     string `json:"subject"`
	Scope       string `json:"scope"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	Query       string `json:"query,omitempty"`
	Body        string `json:"body,omitempty"` // request body, up to 64 KiB
}

// ResourceHandler returns a fake protected API: it answers 200 with a
// ResourceResponse only for "Authorization: Bearer <token>" where token is
// a currently valid access token of this server (see ValidateAccessToken),
// and 401 with a WWW-Authenticate header and {"error":"invalid_token"}
// otherwise. It is mounted at ResourceURL.
func (s *Server) ResourceHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.cmu.Lock()
		s.resourceCalls++
		s.cmu.Unlock()
		token, ok := bearerToken(r)
		var info TokenInfo
		var err error
		if ok {
			info, err = s.ValidateAccessToken(r.Context(), token)
		} else {
			err = errors.New("no bearer token")
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": err.Error()})
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		writeJSON(w, http.StatusOK, ResourceResponse{
			OK:          true,
			TokenSuffix: suffix(token, 6),
			Subject:     info.Subject,
			Scope:       strings.Join(info.Scopes, " "),
			Method:      r.Method,
			Path:        r.URL.Path,
			Query:       r.URL.RawQuery,
			Body:        string(body),
		})
	})
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:]), true
	}
	return "", false
}

// handleToken wraps fosite's token endpoint with counting, SetDown and
// SetTokenDelay.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	form, _ := url.ParseQuery(string(body))
	rec := TokenRequest{
		Time:            time.Now(),
		GrantType:       form.Get("grant_type"),
		ClientAuth:      "none",
		HasCodeVerifier: form.Get("code_verifier") != "",
	}
	if _, _, ok := r.BasicAuth(); ok {
		rec.ClientAuth = AuthMethodBasic
	} else if form.Get("client_secret") != "" {
		rec.ClientAuth = AuthMethodPost
	}
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		var issued struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		if json.Unmarshal(sw.body.Bytes(), &issued) == nil {
			rec.AccessToken, rec.RefreshToken = issued.AccessToken, issued.RefreshToken
		}
		s.cmu.Lock()
		s.tokenCalls[rec.GrantType]++
		rec.Status = sw.status
		s.tokenRequests = append(s.tokenRequests, rec)
		s.cmu.Unlock()
	}()

	if d := time.Duration(s.tokenDelay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if s.down.Load() {
		writeJSON(sw, http.StatusServiceUnavailable, map[string]string{
			"error":             "temporarily_unavailable",
			"error_description": "the token endpoint is down (oauthtest SetDown)",
		})
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	ctx := r.Context()
	ar, err := s.provider.NewAccessRequest(ctx, r, new(fosite.DefaultSession))
	if err != nil {
		s.provider.WriteAccessError(ctx, sw, ar, err)
		return
	}
	resp, err := s.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		s.provider.WriteAccessError(ctx, sw, ar, err)
		return
	}
	s.provider.WriteAccessResponse(ctx, sw, ar, resp)
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in</h1>
<p>Client <b>{{.ClientID}}</b> asks for access{{if .Scopes}} with scopes <b>{{.Scopes}}</b>{{end}}.</p>
{{if .Error}}<p class="error">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}">
<label>User <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit" name="consent" value="approve">Allow</button>
<button type="submit" name="consent" value="deny">Deny</button>
</form>
</body></html>
`))

// handleAuthorize: GET validates the request with fosite and shows the login
// form; POST (the form, whose action repeats the query) logs in and either
// approves (fosite issues the code and redirects) or denies
// (fosite redirects with error=access_denied).
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	s.cmu.Lock()
	s.authorizeCalls++
	s.cmu.Unlock()
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx := r.Context()
	ar, err := s.provider.NewAuthorizeRequest(ctx, r)
	if err != nil {
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	showForm := func(status int, msg string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_ = loginPage.Execute(w, map[string]any{
			"ClientID": ar.GetClient().GetID(),
			"Scopes":   strings.Join(ar.GetRequestedScopes(), " "),
			"Error":    msg,
			"Action":   template.URL(AuthPath + "?" + r.URL.RawQuery),
		})
	}
	if r.Method == http.MethodGet {
		showForm(http.StatusOK, "")
		return
	}
	switch r.PostForm.Get("consent") {
	case "deny":
		s.provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrAccessDenied.WithHint("The resource owner denied the request."))
		return
	case "approve":
	default:
		showForm(http.StatusBadRequest, "choose Allow or Deny")
		return
	}
	user := r.PostForm.Get("username")
	if user == "" || r.PostForm.Get("password") != s.Password {
		showForm(http.StatusUnauthorized, "wrong user name or password")
		return
	}
	for _, scope := range ar.GetRequestedScopes() {
		ar.GrantScope(scope)
	}
	for _, aud := range ar.GetRequestedAudience() {
		ar.GrantAudience(aud)
	}
	resp, err := s.provider.NewAuthorizeResponse(ctx, ar, &fosite.DefaultSession{Subject: user, Username: user})
	if err != nil {
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	s.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
}

type statusWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer // a copy of what was written
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func suffix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
