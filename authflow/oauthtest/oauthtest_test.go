package oauthtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/authproxy/authproxy/authflow/oauthtest"
)

const callback = "http://127.0.0.1:45678/oauth/callback"

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func config(s *oauthtest.Server, style oauth2.AuthStyle) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     s.ClientID,
		ClientSecret: s.ClientSecret,
		Endpoint:     oauth2.Endpoint{AuthURL: s.AuthURL, TokenURL: s.TokenURL, AuthStyle: style},
		RedirectURL:  callback,
		Scopes:       []string{"read", "write"},
	}
}

// connect runs the full authorization-code flow with PKCE and returns the
// tokens.
func connect(t *testing.T, s *oauthtest.Server, conf *oauth2.Config) *oauth2.Token {
	t.Helper()
	ctx := ctxT(t)
	verifier := oauth2.GenerateVerifier()
	state := "state-" + oauth2.GenerateVerifier()[:16]
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))
	cb, err := s.Login(ctx, authURL, "alice", false)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	u, err := url.Parse(cb)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != callback {
		t.Fatalf("redirected to %q, want %q", got, callback)
	}
	q := u.Query()
	if q.Get("state") != state {
		t.Fatalf("state = %q, want %q", q.Get("state"), state)
	}
	if q.Get("code") == "" || q.Get("error") != "" {
		t.Fatalf("callback without code: %s", cb)
	}
	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("token response lacks a token: %+v", tok)
	}
	return tok
}

// callResource calls the resource endpoint with token and returns the status
// and decoded body.
func callResource(t *testing.T, s *oauthtest.Server, token string) (int, oauthtest.ResourceResponse) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, s.ResourceURL+"things?x=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rr oauthtest.ResourceResponse
	_ = json.NewDecoder(resp.Body).Decode(&rr)
	return resp.StatusCode, rr
}

// refresh forces a refresh_token grant with rt.
func refresh(ctx context.Context, conf *oauth2.Config, rt string) (*oauth2.Token, error) {
	return conf.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
}

func wantInvalidGrant(t *testing.T, err error) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Fatalf("want invalid_grant, got %v", err)
	}
}

func TestCodeFlowPKCEAndResource(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{Scopes: []string{"read", "write"}})
	if !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
		t.Fatalf("server not on loopback: %s", s.URL)
	}
	conf := config(s, oauth2.AuthStyleInHeader)
	tok := connect(t, s, conf)

	if ei, _ := tok.Extra("expires_in").(float64); ei < 3590 || ei > 3601 {
		t.Fatalf("expires_in = %v, want about 3600", tok.Extra("expires_in"))
	}
	if got := tok.Extra("scope"); got != "read write" {
		t.Fatalf("scope = %v", got)
	}
	status, rr := callResource(t, s, tok.AccessToken)
	if status != http.StatusOK || !rr.OK || rr.Subject != "alice" || rr.Path != "/api/things" || rr.Query != "x=1" {
		t.Fatalf("resource: %d %+v", status, rr)
	}
	if !strings.HasSuffix(tok.AccessToken, rr.TokenSuffix) {
		t.Fatalf("token_suffix %q does not match", rr.TokenSuffix)
	}
	if status, _ := callResource(t, s, tok.RefreshToken); status != http.StatusUnauthorized {
		t.Fatalf("refresh token accepted as bearer: %d", status)
	}
	if status, _ := callResource(t, s, "nonsense"); status != http.StatusUnauthorized {
		t.Fatalf("bad token: %d", status)
	}
	if n := s.TokenCalls("authorization_code"); n != 1 {
		t.Fatalf("TokenCalls(authorization_code) = %d", n)
	}
	reqs := s.TokenRequests()
	if len(reqs) != 1 || reqs[0].ClientAuth != oauthtest.AuthMethodBasic || !reqs[0].HasCodeVerifier || reqs[0].Status != 200 {
		t.Fatalf("TokenRequests = %+v", reqs)
	}
}

func TestPKCEEnforced(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{})
	conf := config(s, oauth2.AuthStyleInHeader)
	ctx := ctxT(t)

	// No challenge at all: fosite redirects with an error, no login form.
	cb, err := s.Login(ctx, conf.AuthCodeURL("state-without-pkce"), "alice", false)
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := url.Parse(cb); u.Query().Get("error") != "invalid_request" || u.Query().Get("state") != "state-without-pkce" {
		t.Fatalf("no PKCE: %s", cb)
	}

	// Wrong verifier at the token endpoint.
	verifier := oauth2.GenerateVerifier()
	cb, err = s.Login(ctx, conf.AuthCodeURL("state-wrong-verifier", oauth2.S256ChallengeOption(verifier)), "alice", false)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(cb)
	_, err = conf.Exchange(ctx, u.Query().Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier()))
	wantInvalidGrant(t, err)
}

func TestClientSecretPost(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{TokenEndpointAuthMethod: oauthtest.AuthMethodPost})
	connect(t, s, config(s, oauth2.AuthStyleInParams))
	if r := s.TokenRequests(); r[len(r)-1].ClientAuth != oauthtest.AuthMethodPost {
		t.Fatalf("TokenRequests = %+v", r)
	}
	// The client is restricted to client_secret_post: Basic is refused.
	verifier := oauth2.GenerateVerifier()
	conf := config(s, oauth2.AuthStyleInHeader)
	cb, err := s.Login(ctxT(t), conf.AuthCodeURL("state-basic-refused", oauth2.S256ChallengeOption(verifier)), "bob", false)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(cb)
	_, err = conf.Exchange(ctxT(t), u.Query().Get("code"), oauth2.VerifierOption(verifier))
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("want invalid_client, got %v", err)
	}
}

func TestRefreshRotationRejectsOldToken(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{})
	conf := config(s, oauth2.AuthStyleInHeader)
	tok := connect(t, s, conf)
	ctx := ctxT(t)

	t1, err := refresh(ctx, conf, tok.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if t1.RefreshToken == "" || t1.RefreshToken == tok.RefreshToken || t1.AccessToken == tok.AccessToken {
		t.Fatalf("refresh did not rotate: %+v", t1)
	}
	// The old access token stays valid until it expires (default).
	if st, _ := callResource(t, s, tok.AccessToken); st != http.StatusOK {
		t.Fatalf("old access token after refresh: %d", st)
	}
	t2, err := refresh(ctx, conf, t1.RefreshToken)
	if err != nil {
		t.Fatalf("second refresh: %v", err)
	}
	if n := s.TokenCalls("refresh_token"); n != 2 {
		t.Fatalf("TokenCalls(refresh_token) = %d", n)
	}

	// Reusing a rotated-out refresh token is refused, and fosite then
	// revokes the whole family, including the current refresh token and
	// its access token.
	_, err = refresh(ctx, conf, tok.RefreshToken)
	wantInvalidGrant(t, err)
	_, err = refresh(ctx, conf, t2.RefreshToken)
	wantInvalidGrant(t, err)
	if st, _ := callResource(t, s, t2.AccessToken); st != http.StatusUnauthorized {
		t.Fatalf("access token of revoked family: %d", st)
	}
}

func TestRevokeOldAccessTokenOnRefresh(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{RevokeOldAccessTokenOnRefresh: true})
	conf := config(s, oauth2.AuthStyleInHeader)
	tok := connect(t, s, conf)
	t1, err := refresh(ctxT(t), conf, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := callResource(t, s, tok.AccessToken); st != http.StatusUnauthorized {
		t.Fatalf("old access token: %d", st)
	}
	if st, _ := callResource(t, s, t1.AccessToken); st != http.StatusOK {
		t.Fatalf("new access token: %d", st)
	}
}

func TestDeny(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{})
	conf := config(s, oauth2.AuthStyleInHeader)
	cb, err := s.Login(ctxT(t), conf.AuthCodeURL("state-deny", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), "alice", true)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(cb)
	q := u.Query()
	if !strings.HasPrefix(cb, callback+"?") || q.Get("error") != "access_denied" || q.Get("state") != "state-deny" || q.Get("code") != "" {
		t.Fatalf("deny redirect: %s", cb)
	}
}

func TestWrongPasswordAndRedirectURIs(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{RedirectURIs: []string{"http://localhost:1/cb"}})
	conf := config(s, oauth2.AuthStyleInHeader)
	ctx := ctxT(t)
	authURL := conf.AuthCodeURL("state-redirect", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
	// callback is not registered: fosite refuses without redirecting.
	if _, err := s.Login(ctx, authURL, "alice", false); err == nil {
		t.Fatal("unregistered redirect_uri accepted")
	}
	s.SetRedirectURIs(callback)
	if _, err := s.LoginWithPassword(ctx, authURL, "alice", "wrong"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong password: %v", err)
	}
	if cb, err := s.Login(ctx, authURL, "alice", false); err != nil || !strings.Contains(cb, "code=") {
		t.Fatalf("after SetRedirectURIs: %q %v", cb, err)
	}
}

func TestSetDown(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{})
	conf := config(s, oauth2.AuthStyleInHeader)
	tok := connect(t, s, conf)
	ctx := ctxT(t)
	s.SetDown(true)
	_, err := refresh(ctx, conf, tok.RefreshToken)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("while down: %v", err)
	}
	// Authorization still works and the access token stays usable.
	if _, err := s.Login(ctx, conf.AuthCodeURL("state-down", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), "alice", false); err != nil {
		t.Fatalf("authorize while down: %v", err)
	}
	if st, _ := callResource(t, s, tok.AccessToken); st != http.StatusOK {
		t.Fatalf("resource while down: %d", st)
	}
	s.SetDown(false)
	// The refused request did not consume the refresh token.
	if _, err := refresh(ctx, conf, tok.RefreshToken); err != nil {
		t.Fatalf("after down: %v", err)
	}
	if n := s.TokenCalls("refresh_token"); n != 2 {
		t.Fatalf("TokenCalls(refresh_token) = %d, want 2 (503 ones count)", n)
	}
}

func TestRevokeRefreshTokens(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{})
	conf := config(s, oauth2.AuthStyleInHeader)
	a := connect(t, s, conf)
	b := connect(t, s, conf)
	ctx := ctxT(t)
	s.RevokeRefreshTokens()
	_, err := refresh(ctx, conf, a.RefreshToken)
	wantInvalidGrant(t, err)
	_, err = refresh(ctx, conf, b.RefreshToken)
	wantInvalidGrant(t, err)
	if st, _ := callResource(t, s, a.AccessToken); st != http.StatusOK {
		t.Fatalf("access token after RevokeRefreshTokens: %d", st)
	}
	// Tokens issued afterwards work.
	c := connect(t, s, conf)
	if _, err := refresh(ctx, conf, c.RefreshToken); err != nil {
		t.Fatal(err)
	}
	s.RevokeAccessTokens()
	if st, _ := callResource(t, s, a.AccessToken); st != http.StatusUnauthorized {
		t.Fatalf("access token after RevokeAccessTokens: %d", st)
	}
}

func TestNoRefreshTokens(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{NoRefreshTokens: true})
	conf := config(s, oauth2.AuthStyleInHeader)
	verifier := oauth2.GenerateVerifier()
	cb, err := s.Login(ctxT(t), conf.AuthCodeURL("state-norefresh", oauth2.S256ChallengeOption(verifier)), "alice", false)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(cb)
	tok, err := conf.Exchange(ctxT(t), u.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.RefreshToken != "" {
		t.Fatalf("token = %+v", tok)
	}
}

func TestAccessTokenExpiry(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{AccessTokenLifetime: 2 * time.Second})
	conf := config(s, oauth2.AuthStyleInHeader)
	tok := connect(t, s, conf)
	if ei, _ := tok.Extra("expires_in").(float64); ei < 1 || ei > 3 {
		t.Fatalf("expires_in = %v, want about 2", tok.Extra("expires_in"))
	}
	if st, _ := callResource(t, s, tok.AccessToken); st != http.StatusOK {
		t.Fatalf("fresh token: %d", st)
	}
	expired := false
	for i := 0; i < 80 && !expired; i++ { // at most about 8 s
		time.Sleep(100 * time.Millisecond)
		st, _ := callResource(t, s, tok.AccessToken)
		expired = st == http.StatusUnauthorized
	}
	if !expired {
		t.Fatal("access token still accepted long after its lifetime")
	}
	// The refresh token still works and yields a valid access token.
	t1, err := refresh(ctxT(t), conf, tok.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := callResource(t, s, t1.AccessToken); st != http.StatusOK {
		t.Fatalf("refreshed token: %d", st)
	}
}

// ---- Instagram ----

type igErr struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    int    `json:"code"`
		Subcode int    `json:"error_subcode"`
	} `json:"error"`
}

func getJSON(t *testing.T, method, u string, form url.Values, out any) int {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctxT(t), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s %s: %d %s", method, u, resp.StatusCode, b)
	}
	return resp.StatusCode
}

type igLong struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

func igRefresh(t *testing.T, ig *oauthtest.Instagram, tok string, out any) int {
	t.Helper()
	return getJSON(t, http.MethodGet, ig.RefreshURL+"?"+url.Values{"grant_type": {"ig_refresh_token"}, "access_token": {tok}}.Encode(), nil, out)
}

func igMe(t *testing.T, ig *oauthtest.Instagram, tok string) int {
	t.Helper()
	var v map[string]any
	return getJSON(t, http.MethodGet, ig.MeURL+"?fields=id,username&access_token="+url.QueryEscape(tok), nil, &v)
}

func TestInstagram(t *testing.T) {
	ig := oauthtest.StartInstagram(t, oauthtest.InstagramOptions{})
	ctx := ctxT(t)
	authURL := ig.AuthURL + "?" + url.Values{
		"client_id": {ig.ClientID}, "redirect_uri": {callback}, "response_type": {"code"},
		"scope": {"instagram_business_basic"}, "state": {"st-1"},
	}.Encode()

	denied, err := ig.Authorize(ctx, authURL, true)
	if err != nil {
		t.Fatal(err)
	}
	if u, _ := url.Parse(denied); u.Query().Get("error") != "access_denied" || u.Query().Get("state") != "st-1" {
		t.Fatalf("deny: %s", denied)
	}

	cb, err := ig.Authorize(ctx, authURL, false)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(cb)
	code := u.Query().Get("code")
	if code == "" || u.Query().Get("state") != "st-1" || u.Fragment != "_" {
		t.Fatalf("callback: %s", cb)
	}

	// Code → short-lived token; the code is single use.
	codeForm := url.Values{"client_id": {ig.ClientID}, "client_secret": {ig.ClientSecret},
		"grant_type": {"authorization_code"}, "redirect_uri": {callback}, "code": {code}}
	var short struct {
		AccessToken string `json:"access_token"`
		UserID      int64  `json:"user_id"`
	}
	if st := getJSON(t, http.MethodPost, ig.TokenURL, codeForm, &short); st != 200 || short.AccessToken == "" || short.UserID != ig.UserID {
		t.Fatalf("code exchange: %d %+v", st, short)
	}
	var oe struct {
		Type    string `json:"error_type"`
		Code    int    `json:"code"`
		Message string `json:"error_message"`
	}
	if st := getJSON(t, http.MethodPost, ig.TokenURL, codeForm, &oe); st != 400 || oe.Type != "OAuthException" || !strings.Contains(oe.Message, "already used") {
		t.Fatalf("code reuse: %d %+v", st, oe)
	}
	if st := igMe(t, ig, short.AccessToken); st != 400 {
		t.Fatalf("/me with short-lived token: %d", st)
	}

	// Exchange: wrong secret refused, right one gives a 60-day token.
	var e igErr
	bad := ig.LongLivedTokenURL + "?" + url.Values{"grant_type": {"ig_exchange_token"}, "client_secret": {"nope"}, "access_token": {short.AccessToken}}.Encode()
	if st := getJSON(t, http.MethodGet, bad, nil, &e); st != 400 || e.Error.Type != "OAuthException" {
		t.Fatalf("exchange with bad secret: %d %+v", st, e)
	}
	var long igLong
	good := ig.LongLivedTokenURL + "?" + url.Values{"grant_type": {"ig_exchange_token"}, "client_secret": {ig.ClientSecret}, "access_token": {short.AccessToken}}.Encode()
	if st := getJSON(t, http.MethodGet, good, nil, &long); st != 200 || long.TokenType != "bearer" || long.ExpiresIn != 5184000 || long.AccessToken == "" {
		t.Fatalf("exchange: %d %+v", st, long)
	}
	if st := igMe(t, ig, long.AccessToken); st != 200 {
		t.Fatalf("/me with long-lived token: %d", st)
	}

	// Refresh refused before 24 h.
	ig.Advance(23 * time.Hour)
	e = igErr{}
	if st := igRefresh(t, ig, long.AccessToken, &e); st != 400 || e.Error.Type != "OAuthException" || e.Error.Code == 0 {
		t.Fatalf("early refresh: %d %+v", st, e)
	}
	// Accepted after 25 h, with a fresh 60 days.
	ig.Advance(2 * time.Hour)
	var r1 igLong
	if st := igRefresh(t, ig, long.AccessToken, &r1); st != 200 || r1.ExpiresIn != 5184000 || r1.AccessToken == "" || r1.AccessToken == long.AccessToken {
		t.Fatalf("refresh after 25h: %d %+v", st, r1)
	}
	info, ok := ig.Token(r1.AccessToken)
	if !ok || !info.LongLived || info.ExpiresAt.Sub(ig.Now()) < 59*24*time.Hour {
		t.Fatalf("Token(new) = %+v %v", info, ok)
	}

	// The refreshed token expires 60 days later; the original one too.
	ig.Advance(61 * 24 * time.Hour)
	e = igErr{}
	if st := igRefresh(t, ig, r1.AccessToken, &e); st != 400 || e.Error.Code != 190 || e.Error.Subcode != 463 {
		t.Fatalf("refresh after expiry: %d %+v", st, e)
	}
	if st := igMe(t, ig, r1.AccessToken); st != 400 {
		t.Fatalf("/me after expiry: %d", st)
	}

	for ep, want := range map[string]int64{oauthtest.IGAuthorize: 2, oauthtest.IGAccessToken: 2, oauthtest.IGExchangeToken: 2, oauthtest.IGRefreshToken: 3, oauthtest.IGMe: 3} {
		if got := ig.Calls(ep); got != want {
			t.Errorf("Calls(%s) = %d, want %d", ep, got, want)
		}
	}
}

func TestInstagramSwitches(t *testing.T) {
	ig := oauthtest.StartInstagram(t, oauthtest.InstagramOptions{InvalidTokenStatus: http.StatusUnauthorized, InvalidateOldOnRefresh: true})
	tok := ig.IssueLongLivedToken()
	ig.Advance(25 * time.Hour)

	ig.SetDown(true)
	var e igErr
	if st := igRefresh(t, ig, tok, &e); st != http.StatusServiceUnavailable || e.Error.Code != 2 {
		t.Fatalf("refresh while down: %d %+v", st, e)
	}
	ig.SetDown(false)

	var r igLong
	if st := igRefresh(t, ig, tok, &r); st != 200 {
		t.Fatalf("refresh: %d", st)
	}
	if st := igMe(t, ig, tok); st != http.StatusUnauthorized {
		t.Fatalf("/me with refreshed-away token: %d", st)
	}
	// Bearer header works as well as the query parameter.
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, ig.URL+"/v21.0/me", nil)
	req.Header.Set("Authorization", "Bearer "+r.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/v21.0/me with bearer: %d", resp.StatusCode)
	}
	ig.RevokeTokens()
	if st := igMe(t, ig, r.AccessToken); st != http.StatusUnauthorized {
		t.Fatalf("/me after RevokeTokens: %d", st)
	}
}

// TestConcurrentUse exercises the server from many goroutines at once (run
// with -race): resource calls, refreshes of separate grants and redirect-URI
// changes.
func TestConcurrentUse(t *testing.T) {
	s := oauthtest.Start(t, oauthtest.Options{})
	conf := config(s, oauth2.AuthStyleInHeader)
	toks := []*oauth2.Token{connect(t, s, conf), connect(t, s, conf), connect(t, s, conf)}
	ctx := ctxT(t)
	errc := make(chan error, 64)
	for i := 0; i < 60; i++ {
		go func() {
			tok := toks[i%len(toks)]
			switch {
			case i%20 == 0:
				_, err := refresh(ctx, conf, tok.RefreshToken)
				errc <- err
			case i%20 == 1:
				s.SetRedirectURIs(callback)
				errc <- nil
			default:
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.ResourceURL, nil)
				req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("resource: %d", resp.StatusCode)
					}
				}
				errc <- err
			}
		}()
	}
	for i := 0; i < 60; i++ {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	if n := s.ResourceCalls(); n != 54 {
		t.Fatalf("ResourceCalls = %d", n)
	}
}
