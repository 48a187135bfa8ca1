package oauthtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Endpoints of the fake Instagram server, as passed to Instagram.Calls. The
// first two live on api.instagram.com in production, the others on
// graph.instagram.com; the fake serves them all from one loopback host.
const (
	IGAuthorize      = "/oauth/authorize"
	IGAccessToken    = "/oauth/access_token"
	IGExchangeToken  = "/access_token"
	IGRefreshToken   = "/refresh_access_token"
	IGMe             = "/me"
	igDenyParam      = "oauthtest_deny"
	igDefaultLongTTL = 60 * 24 * time.Hour
)

// InstagramOptions configures StartInstagram. The zero value is usable and
// follows Instagram's documented rules.
type InstagramOptions struct {
	// ClientID (the Instagram app ID, a numeric string) and ClientSecret
	// (the app secret). Random when empty.
	ClientID, ClientSecret string

	// RedirectURIs are the app's valid OAuth redirect URIs, matched
	// exactly. Empty accepts any http(s) URI on a loopback host
	// (127.0.0.1, [::1] or localhost).
	RedirectURIs []string

	// Username reported by /me. Default "oauthtest_user".
	Username string

	// ShortLivedLifetime of tokens from /oauth/access_token. Default 1 h.
	ShortLivedLifetime time.Duration
	// LongLivedLifetime of tokens from ig_exchange_token and
	// ig_refresh_token. Default 60 days (expires_in 5184000).
	LongLivedLifetime time.Duration
	// RefreshMinAge is how old a long-lived token must be before
	// ig_refresh_token accepts it. Default 24 h.
	RefreshMinAge time.Duration
	// CodeLifetime of authorization codes. Default 10 min.
	CodeLifetime time.Duration

	// InvalidateOldOnRefresh makes a successful refresh invalidate the
	// token that was refreshed. By default it stays valid until its own
	// expiry.
	InvalidateOldOnRefresh bool

	// InvalidTokenStatus is the HTTP status /me answers for a missing,
	// unknown, short-lived, revoked or expired token. Default 400, as the
	// Graph API answers OAuthException code 190; set 401 to exercise a
	// client's 401 handling.
	InvalidTokenStatus int
}

// InstagramToken describes a token issued by the fake.
type InstagramToken struct {
	LongLived bool
	IssuedAt  time.Time // on the fake clock
	ExpiresAt time.Time // on the fake clock
	Revoked   bool      // by RevokeTokens or InvalidateOldOnRefresh
}

type igCode struct {
	redirectURI string
	expires     time.Time
	used        bool
}

// Instagram is a running fake of the Instagram API's OAuth endpoints and
// its /me resource. Its clock starts at the real time and can be moved
// forward with Advance; every expiry and age rule uses it. All methods are
// safe for concurrent use.
//
// Endpoints (see the IG* constants):
//   - GET /oauth/authorize?client_id|app_id&redirect_uri&response_type=code
//     &scope&state: no login page; redirects at once to
//     redirect_uri?code=…&state=…#_ (Instagram appends "#_"). Adding
//     oauthtest_deny=1 (what Authorize does when deny is true) redirects
//     with error=access_denied&error_reason=user_denied
//     &error_description=Permissions+error&state=… instead.
//   - POST /oauth/access_token (form or multipart: client_id,
//     client_secret, grant_type=authorization_code, redirect_uri, code):
//     {"access_token":"<short-lived>","user_id":<number>}; codes are single
//     use and redirect_uri must equal the one of the authorization. Client
//     credentials must be in the body (no Basic auth). Errors: 400
//     {"error_type":"OAuthException","code":400,"error_message":…}.
//   - GET /access_token?grant_type=ig_exchange_token&client_secret
//     &access_token=<short-lived>: {"access_token","token_type":"bearer",
//     "expires_in":5184000}.
//   - GET /refresh_access_token?grant_type=ig_refresh_token
//     &access_token=<long-lived>: a new long-lived token (new string, 60 days
//     from now), only if the given one is at least RefreshMinAge old, not
//     expired and not revoked.
//   - GET /me (optionally /vNN.N/me), token in access_token or
//     "Authorization: Bearer": 200 {"id","username","token_suffix"} only for
//     a valid long-lived token.
//
// Graph errors are 400 {"error":{"message","type":"OAuthException","code",
// "error_subcode"?,"fbtrace_id"}}: code 190 for an unknown, revoked,
// short-lived-where-long-lived-is-needed or expired (subcode 463) token,
// code 100 for bad parameters, a wrong client_secret and a refresh of a token
// younger than RefreshMinAge (this last code is the fake's choice; Instagram
// documents only the rule). While SetDown(true), the three token endpoints
// answer 503 with code 2 and "is_transient":true.
type Instagram struct {
	// URL is the base URL, http://127.0.0.1:PORT.
	URL string
	// AuthURL, TokenURL, LongLivedTokenURL, RefreshURL and MeURL are URL
	// plus the IG* paths, ready for an oauth2_instagram auth client
	// (auth_uri, token_uri, long_lived_token_uri, refresh_uri) and a proxied
	// call.
	AuthURL, TokenURL, LongLivedTokenURL, RefreshURL, MeURL string
	// ClientID and ClientSecret of the app.
	ClientID, ClientSecret string
	// UserID is the app-scoped user id returned with tokens and by /me.
	UserID int64

	opts   InstagramOptions
	srv    *httptest.Server
	offset atomic.Int64 // added to time.Now()
	down   atomic.Bool

	mu     sync.Mutex
	codes  map[string]*igCode
	tokens map[string]*InstagramToken
	calls  map[string]int64

	closeOnce sync.Once
}

// StartInstagram starts the fake on 127.0.0.1 and registers its shutdown
// with t.Cleanup.
func StartInstagram(t testing.TB, opts InstagramOptions) *Instagram {
	t.Helper()
	if opts.ClientID == "" {
		n, err := rand.Int(rand.Reader, big.NewInt(1e14))
		if err != nil {
			t.Fatalf("oauthtest: %v", err)
		}
		opts.ClientID = strconv.FormatInt(1e15+n.Int64(), 10)
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = randHex(16)
	}
	if opts.Username == "" {
		opts.Username = "oauthtest_user"
	}
	if opts.ShortLivedLifetime <= 0 {
		opts.ShortLivedLifetime = time.Hour
	}
	if opts.LongLivedLifetime <= 0 {
		opts.LongLivedLifetime = igDefaultLongTTL
	}
	if opts.RefreshMinAge <= 0 {
		opts.RefreshMinAge = 24 * time.Hour
	}
	if opts.CodeLifetime <= 0 {
		opts.CodeLifetime = 10 * time.Minute
	}
	if opts.InvalidTokenStatus == 0 {
		opts.InvalidTokenStatus = http.StatusBadRequest
	}
	ig := &Instagram{
		ClientID:     opts.ClientID,
		ClientSecret: opts.ClientSecret,
		UserID:       17841400000000000 + time.Now().UnixNano()%1e9,
		opts:         opts,
		codes:        map[string]*igCode{},
		tokens:       map[string]*InstagramToken{},
		calls:        map[string]int64{},
	}
	ig.srv = httptest.NewServer(http.HandlerFunc(ig.serve))
	ig.URL = ig.srv.URL
	ig.AuthURL = ig.URL + IGAuthorize
	ig.TokenURL = ig.URL + IGAccessToken
	ig.LongLivedTokenURL = ig.URL + IGExchangeToken
	ig.RefreshURL = ig.URL + IGRefreshToken
	ig.MeURL = ig.URL + IGMe
	t.Cleanup(ig.Close)
	return ig
}

// Close stops the server. It is safe to call more than once.
func (ig *Instagram) Close() { ig.closeOnce.Do(ig.srv.Close) }

// Now returns the fake clock: the real time plus everything Advance added.
func (ig *Instagram) Now() time.Time {
	return time.Now().Add(time.Duration(ig.offset.Load()))
}

// Advance moves the fake clock forward by d (backward if d < 0).
func (ig *Instagram) Advance(d time.Duration) { ig.offset.Add(int64(d)) }

// SetDown makes the token endpoints (/oauth/access_token, /access_token,
// /refresh_access_token) answer 503 while down is true. Authorization and
// /me keep working; calls are still counted.
func (ig *Instagram) SetDown(down bool) { ig.down.Store(down) }

// Calls returns how many requests endpoint (one of the IG* constants)
// received, successful or not.
func (ig *Instagram) Calls(endpoint string) int64 {
	ig.mu.Lock()
	defer ig.mu.Unlock()
	return ig.calls[endpoint]
}

// Token returns what the fake knows about token.
func (ig *Instagram) Token(token string) (InstagramToken, bool) {
	ig.mu.Lock()
	defer ig.mu.Unlock()
	t, ok := ig.tokens[token]
	if !ok {
		return InstagramToken{}, false
	}
	return *t, true
}

// IssueLongLivedToken mints a long-lived token directly (issued now on the
// fake clock), for tests that upload tokens instead of connecting.
func (ig *Instagram) IssueLongLivedToken() string {
	ig.mu.Lock()
	defer ig.mu.Unlock()
	return ig.issueLocked(true)
}

// RevokeTokens invalidates every token issued so far (as when the user
// removes the app): /me and the token endpoints then reject them with code
// 190.
func (ig *Instagram) RevokeTokens() {
	ig.mu.Lock()
	defer ig.mu.Unlock()
	for _, t := range ig.tokens {
		t.Revoked = true
	}
}

// Authorize plays the browser for an authorization URL produced by the
// client under test (pointing at AuthURL): it GETs it (adding
// oauthtest_deny=1 when deny is true) and returns the absolute redirect
// Location without following it.
func (ig *Instagram) Authorize(ctx context.Context, authURL string, deny bool) (string, error) {
	if deny {
		u, err := url.Parse(authURL)
		if err != nil {
			return "", err
		}
		q := u.Query()
		q.Set(igDenyParam, "1")
		u.RawQuery = q.Encode()
		authURL = u.String()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := browser().Do(req)
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if loc, ok := redirectLocation(resp); ok {
		return loc, nil
	}
	return "", fmt.Errorf("oauthtest: instagram authorize answered %s: %s", resp.Status, truncate(string(body), 300))
}

var graphVersionRE = regexp.MustCompile(`^/v[0-9]+\.[0-9]+(/.*)$`)

func (ig *Instagram) serve(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if m := graphVersionRE.FindStringSubmatch(path); m != nil {
		path = m[1]
	}
	ig.mu.Lock()
	ig.calls[path]++
	ig.mu.Unlock()

	switch path {
	case IGAuthorize:
		ig.handleAuthorize(w, r)
	case IGAccessToken, IGExchangeToken, IGRefreshToken:
		if ig.down.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": map[string]any{
				"message": "Service temporarily unavailable", "type": "OAuthException",
				"code": 2, "is_transient": true, "fbtrace_id": randHex(8),
			}})
			return
		}
		switch path {
		case IGAccessToken:
			ig.handleCode(w, r)
		case IGExchangeToken:
			ig.handleExchange(w, r)
		default:
			ig.handleRefresh(w, r)
		}
	case IGMe:
		ig.handleMe(w, r)
	default:
		graphError(w, http.StatusBadRequest, 100, 0, "Unsupported get request. Object with ID '"+strings.TrimPrefix(path, "/")+"' does not exist (oauthtest)")
	}
}

func (ig *Instagram) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	clientID := q.Get("client_id")
	if clientID == "" {
		clientID = q.Get("app_id")
	}
	if clientID != ig.ClientID {
		oauthError(w, "Invalid platform app")
		return
	}
	redirect := q.Get("redirect_uri")
	ru, err := url.Parse(redirect)
	if redirect == "" || err != nil || !ig.redirectAllowed(ru) {
		oauthError(w, "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request")
		return
	}
	if q.Get("response_type") != "code" {
		oauthError(w, "Invalid response_type: must be code")
		return
	}
	v := ru.Query()
	if q.Get(igDenyParam) != "" {
		v.Set("error", "access_denied")
		v.Set("error_reason", "user_denied")
		v.Set("error_description", "Permissions error")
	} else {
		code := "AQ" + randToken(48)
		ig.mu.Lock()
		ig.codes[code] = &igCode{redirectURI: redirect, expires: ig.Now().Add(ig.opts.CodeLifetime)}
		ig.mu.Unlock()
		v.Set("code", code)
	}
	if st := q.Get("state"); st != "" {
		v.Set("state", st)
	}
	ru.RawQuery = v.Encode()
	ru.Fragment = "_"
	w.Header().Set("Location", ru.String())
	w.WriteHeader(http.StatusFound)
}

func (ig *Instagram) redirectAllowed(u *url.URL) bool {
	if len(ig.opts.RedirectURIs) > 0 {
		for _, r := range ig.opts.RedirectURIs {
			if r == u.String() {
				return true
			}
		}
		return false
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// handleCode: authorization code → short-lived token.
func (ig *Instagram) handleCode(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		oauthError(w, "Unsupported request - method type: "+strings.ToLower(r.Method))
		return
	}
	if err := r.ParseMultipartForm(1 << 20); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		oauthError(w, "Invalid request body")
		return
	}
	f := r.PostForm
	switch {
	case f.Get("client_id") != ig.ClientID:
		oauthError(w, "Invalid platform app")
		return
	case f.Get("client_secret") != ig.ClientSecret:
		oauthError(w, "Error validating client secret.")
		return
	case f.Get("grant_type") != "authorization_code":
		oauthError(w, "Invalid grant_type: must be authorization_code")
		return
	}
	code := f.Get("code")
	ig.mu.Lock()
	defer ig.mu.Unlock()
	c, ok := ig.codes[code]
	if !ok || c.used || !ig.Now().Before(c.expires) {
		oauthError(w, "Matching code was not found or was already used")
		return
	}
	if f.Get("redirect_uri") != c.redirectURI {
		oauthError(w, "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request")
		return
	}
	c.used = true
	tok := ig.issueLocked(false)
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "user_id": ig.UserID})
}

// handleExchange: ig_exchange_token, short-lived → long-lived.
func (ig *Instagram) handleExchange(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	if r.Form.Get("grant_type") != "ig_exchange_token" {
		graphError(w, http.StatusBadRequest, 100, 0, "Unsupported grant_type: must be ig_exchange_token")
		return
	}
	if r.Form.Get("client_secret") != ig.ClientSecret {
		graphError(w, http.StatusBadRequest, 100, 0, "Error validating client secret.")
		return
	}
	ig.mu.Lock()
	defer ig.mu.Unlock()
	t, ok := ig.validLocked(w, r.Form.Get("access_token"))
	if !ok {
		return
	}
	if t.LongLived {
		graphError(w, http.StatusBadRequest, 190, 0, "Invalid OAuth access token: ig_exchange_token needs a short-lived token")
		return
	}
	ig.writeLongLived(w, ig.issueLocked(true))
}

// handleRefresh: ig_refresh_token, long-lived (≥ RefreshMinAge old, not
// expired) → new long-lived.
func (ig *Instagram) handleRefresh(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	if r.Form.Get("grant_type") != "ig_refresh_token" {
		graphError(w, http.StatusBadRequest, 100, 0, "Unsupported grant_type: must be ig_refresh_token")
		return
	}
	ig.mu.Lock()
	defer ig.mu.Unlock()
	old := r.Form.Get("access_token")
	t, ok := ig.validLocked(w, old)
	if !ok {
		return
	}
	if !t.LongLived {
		graphError(w, http.StatusBadRequest, 190, 0, "Invalid OAuth access token: ig_refresh_token needs a long-lived token")
		return
	}
	if age := ig.Now().Sub(t.IssuedAt); age < ig.opts.RefreshMinAge {
		graphError(w, http.StatusBadRequest, 100, 0, fmt.Sprintf(
			"The access token cannot be refreshed yet: a long-lived token can be refreshed once it is at least %s old (this one is %s old)",
			ig.opts.RefreshMinAge, age.Round(time.Second)))
		return
	}
	tok := ig.issueLocked(true)
	if ig.opts.InvalidateOldOnRefresh {
		t.Revoked = true
	}
	ig.writeLongLived(w, tok)
}

func (ig *Instagram) handleMe(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("access_token")
	if b, ok := bearerToken(r); ok {
		token = b
	}
	ig.mu.Lock()
	defer ig.mu.Unlock()
	status := ig.opts.InvalidTokenStatus
	t, ok := ig.validStatusLocked(w, token, status)
	if !ok {
		return
	}
	if !t.LongLived {
		graphError(w, status, 190, 0, "Invalid OAuth access token: this fake's /me accepts long-lived tokens only")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":           strconv.FormatInt(ig.UserID, 10),
		"username":     ig.opts.Username,
		"token_suffix": suffix(token, 6),
	})
}

func (ig *Instagram) validLocked(w http.ResponseWriter, token string) (*InstagramToken, bool) {
	return ig.validStatusLocked(w, token, http.StatusBadRequest)
}

// validStatusLocked finds an unrevoked, unexpired token or writes a code-190
// error with status.
func (ig *Instagram) validStatusLocked(w http.ResponseWriter, token string, status int) (*InstagramToken, bool) {
	if token == "" {
		graphError(w, status, 2500, 0, "An active access token must be used to query information about the current user.")
		return nil, false
	}
	t, ok := ig.tokens[token]
	if !ok || t.Revoked {
		graphError(w, status, 190, 0, "Invalid OAuth access token - Cannot parse access token")
		return nil, false
	}
	if now := ig.Now(); !now.Before(t.ExpiresAt) {
		graphError(w, status, 190, 463, fmt.Sprintf(
			"Error validating access token: Session has expired on %s. The current time is %s.",
			t.ExpiresAt.UTC().Format(time.RFC1123), now.UTC().Format(time.RFC1123)))
		return nil, false
	}
	return t, true
}

func (ig *Instagram) issueLocked(long bool) string {
	now := ig.Now()
	ttl, prefix := ig.opts.ShortLivedLifetime, "IGQVJ"
	if long {
		ttl, prefix = ig.opts.LongLivedLifetime, "IGQWR"
	}
	tok := prefix + randToken(64)
	ig.tokens[tok] = &InstagramToken{LongLived: long, IssuedAt: now, ExpiresAt: now.Add(ttl)}
	return tok
}

func (ig *Instagram) writeLongLived(w http.ResponseWriter, tok string) {
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"token_type":   "bearer",
		"expires_in":   int64(ig.opts.LongLivedLifetime / time.Second),
	})
}

// oauthError writes the error shape of api.instagram.com/oauth/*.
func oauthError(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]any{
		"error_type": "OAuthException", "code": 400, "error_message": msg,
	})
}

// graphError writes the error shape of graph.instagram.com.
func graphError(w http.ResponseWriter, status, code, subcode int, msg string) {
	e := map[string]any{"message": msg, "type": "OAuthException", "code": code, "fbtrace_id": randHex(8)}
	if subcode != 0 {
		e["error_subcode"] = subcode
	}
	if code == 190 {
		w.Header().Set("WWW-Authenticate", `OAuth "Facebook Platform" "invalid_token" "`+strings.ReplaceAll(msg, `"`, `'`)+`"`)
	}
	writeJSON(w, status, map[string]any{"error": e})
}

func randToken(n int) string {
	b := make([]byte, n*3/4+1)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	s := base64.RawURLEncoding.EncodeToString(b)
	s = strings.NewReplacer("-", "x", "_", "Z").Replace(s)
	return s[:n]
}
