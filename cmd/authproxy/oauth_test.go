package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/authproxy/authproxy/authflow/oauthtest"
)

// oauthSetup is a sidecar with one oauth2 secret connected to a fosite
// authorization server through the real authorization-code flow.
type oauthSetup struct {
	sc       *sidecar
	srv      *oauthtest.Server
	clientID string // auth client id
	secret   string // secret id
	codes    []string
}

// connectOAuth creates an oauth2 auth client for srv and a pending secret,
// then plays the browser: authorization link, login, callback.
func connectOAuth(t *testing.T, sc *sidecar, srv *oauthtest.Server) *oauthSetup {
	t.Helper()
	o := &oauthSetup{sc: sc, srv: srv}
	st, doc, raw := sc.admin("POST", "/v2/auth-clients", map[string]any{"data": map[string]any{"type": "auth-client",
		"attributes": map[string]any{"type": "oauth2", "name": "fosite", "allowed_origins": []string{srv.URL},
			"credentials": map[string]any{"client_id": srv.ClientID, "client_secret": srv.ClientSecret,
				"auth_uri": srv.AuthURL, "token_uri": srv.TokenURL, "scopes": []string{"read", "write"}}}}})
	if st != 201 {
		t.Fatalf("create oauth2 client: %d %s", st, raw)
	}
	o.clientID = dataID(t, doc)
	st, doc, raw = sc.admin("POST", "/v2/workspaces/ws1/secrets", map[string]any{"data": map[string]any{"type": "auth-secret",
		"attributes":    map[string]any{"name": "alice at fosite", "credentials": map[string]any{}},
		"relationships": map[string]any{"auth_client": map[string]any{"data": map[string]any{"id": o.clientID, "type": "auth-client"}}}}})
	if st != 201 || !strings.Contains(raw, `"state":"pending"`) {
		t.Fatalf("create pending secret: %d %s", st, raw)
	}
	o.secret = dataID(t, doc)
	o.connect(t)
	return o
}

// connect runs the browser part of the flow and checks the callback page.
func (o *oauthSetup) connect(t *testing.T) {
	t.Helper()
	st, doc, raw := o.sc.admin("POST", "/v2/workspaces/ws1/secrets/"+o.secret+"/authorize", nil)
	if st != 200 {
		t.Fatalf("authorize: %d %s", st, raw)
	}
	authURL := doc["data"].(map[string]any)["authorization_url"].(string)
	cb, err := o.srv.Login(context.Background(), authURL, "alice", false)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	cu, _ := url.Parse(cb)
	o.codes = append(o.codes, cu.Query().Get("code"))
	resp, err := http.Get(cb) // the browser follows the redirect to the sidecar
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "Account connected") {
		t.Fatalf("callback page: %d %s", resp.StatusCode, page)
	}
}

// secretDoc reads the secret through the admin API.
func (o *oauthSetup) secretDoc(t *testing.T) (map[string]any, string) {
	t.Helper()
	st, doc, raw := o.sc.admin("GET", "/v2/workspaces/ws1/secrets/"+o.secret, nil)
	if st != 200 {
		t.Fatalf("read secret: %d %s", st, raw)
	}
	return doc["data"].(map[string]any)["attributes"].(map[string]any), raw
}

// call makes one proxied GET to the provider's resource endpoint, which
// answers 200 only for a valid access token it issued.
func (o *oauthSetup) call(t *testing.T, c *http.Client) (int, http.Header, string) {
	t.Helper()
	resp, err := c.Get(o.srv.ResourceURL + "items")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// expireStoredToken makes the stored token look expired (the provider still
// honours it), as if the sidecar had slept past its expiry.
func (o *oauthSetup) expireStoredToken(t *testing.T) {
	t.Helper()
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	st, _, raw := o.sc.admin("PATCH", "/v2/workspaces/ws1/secrets/"+o.secret, map[string]any{"data": map[string]any{
		"type": "auth-secret", "attributes": map[string]any{"credentials": map[string]any{"expires_at": past}}}})
	if st != 200 {
		t.Fatalf("expire token: %d %s", st, raw)
	}
}

// fastOAuthEnv keeps token-endpoint retries short for tests.
var fastOAuthEnv = []string{"REQUEST_RETRY_DELAY=10", "REQUEST_MAX_RETRY=2", "REQUEST_TIMEOUT=5000"}

// Connect an account through the real flow, call through the proxy with the
// Bearer token, then 1,000 concurrent requests arriving when the token has
// expired: one token-endpoint call, 1,000 successes.
func TestOAuth2ConnectAndConcurrentRefresh(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{AccessTokenLifetime: time.Hour})
	sc := startSidecar(t, t.TempDir(), fastOAuthEnv...)
	o := connectOAuth(t, sc, srv)
	attrs, _ := o.secretDoc(t)
	if attrs["state"] != "ready" {
		t.Fatalf("state after callback: %v", attrs)
	}
	c := sc.client(o.secret)
	if st, _, body := o.call(t, c); st != 200 {
		t.Fatalf("proxied call with the connected token: %d %s", st, body)
	}
	if n := srv.TokenCalls("authorization_code"); n != 1 {
		t.Fatalf("code exchanges: %d, want 1", n)
	}

	o.expireStoredToken(t)
	before := srv.TokenCalls("refresh_token")
	const n = 1000
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: sc.proxyAddr, User: url.User(o.secret)}),
		MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}
	cc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			resp, err := cc.Get(srv.ResourceURL + "concurrent")
			code := 0
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
			}
			mu.Lock()
			statuses[code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if statuses[200] != n {
		t.Fatalf("statuses of %d concurrent requests: %v", n, statuses)
	}
	if got := srv.TokenCalls("refresh_token") - before; got != 1 {
		t.Fatalf("token-endpoint refresh calls: %d, want exactly 1", got)
	}
	attrs, _ = o.secretDoc(t)
	if attrs["refreshed_at"] == nil {
		t.Fatalf("admin read shows no refresh time: %v", attrs)
	}
	sc.stop(syscall.SIGTERM)
}

// A refresh rotates the refresh token; the process is killed right after.
// On restart the next refresh must use the rotated token, which the
// provider (rejecting reuse of old refresh tokens) accepts.
func TestCrashAfterRotationKeepsTheNewRefreshToken(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{AccessTokenLifetime: time.Hour})
	dir := t.TempDir()
	sc := startSidecar(t, dir, fastOAuthEnv...)
	o := connectOAuth(t, sc, srv)

	st, _, raw := sc.admin("POST", "/v2/workspaces/ws1/secrets/"+o.secret+"/refresh", nil)
	if st != 200 || !strings.Contains(raw, `"state":"ready"`) {
		t.Fatalf("forced refresh: %d %s", st, raw)
	}
	sc.cmd.Process.Signal(syscall.SIGKILL)
	<-sc.exited

	sc2 := startSidecar(t, dir, fastOAuthEnv...)
	o.sc = sc2
	st, _, raw = sc2.admin("POST", "/v2/workspaces/ws1/secrets/"+o.secret+"/refresh", nil)
	if st != 200 || !strings.Contains(raw, `"state":"ready"`) {
		t.Fatalf("refresh after SIGKILL and restart: %d %s\n%s", st, raw, sc2.logs.String())
	}
	if got := srv.TokenCalls("refresh_token"); got != 2 {
		t.Fatalf("refresh calls: %d, want 2", got)
	}
	for _, r := range srv.TokenRequests() {
		if r.GrantType == "refresh_token" && r.Status != 200 {
			t.Fatalf("a refresh was refused (%d): an old refresh token was reused", r.Status)
		}
	}
	if st, _, body := o.call(t, sc2.client(o.secret)); st != 200 {
		t.Fatalf("proxied call after restart: %d %s", st, body)
	}
	sc2.stop(syscall.SIGTERM)
}

// A revoked refresh token puts the secret in state error, visible in the
// admin API, and the proxy answers 503 without calling upstream.
func TestRevokedRefreshTokenNeedsReauthorization(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{AccessTokenLifetime: time.Hour})
	sc := startSidecar(t, t.TempDir(), fastOAuthEnv...)
	o := connectOAuth(t, sc, srv)
	srv.RevokeRefreshTokens()
	o.expireStoredToken(t)
	resourceBefore := srv.ResourceCalls()
	c := sc.client(o.secret)
	st, h, body := o.call(t, c)
	if st != 503 || h.Get("X-Authproxy-Error") != "credential_needs_reauthorization" {
		t.Fatalf("request with a dead refresh token: %d %s %s", st, h.Get("X-Authproxy-Error"), body)
	}
	attrs, _ := o.secretDoc(t)
	if attrs["state"] != "error" || !strings.Contains(attrs["error"].(string), "invalid_grant") {
		t.Fatalf("secret after a refused refresh: %v", attrs)
	}
	if st, h, _ := o.call(t, c); st != 503 || h.Get("X-Authproxy-Error") != "credential_needs_reauthorization" {
		t.Fatalf("second request: %d", st)
	}
	if got := srv.ResourceCalls() - resourceBefore; got != 0 {
		t.Fatalf("upstream was called %d times for a secret needing re-authorization", got)
	}
	if got := srv.TokenCalls("refresh_token"); got != 1 {
		t.Fatalf("refresh attempts: %d, want 1 (invalid_grant is not retried)", got)
	}
	// Connecting the account again heals it.
	o.connect(t)
	if st, _, body := o.call(t, c); st != 200 {
		t.Fatalf("after reconnecting: %d %s", st, body)
	}
	sc.stop(syscall.SIGTERM)
}

// With the token endpoint down, requests keep succeeding while the token
// is valid; when it comes back, the token is refreshed.
func TestTokenEndpointDownThenBack(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{AccessTokenLifetime: 4 * time.Second})
	sc := startSidecar(t, t.TempDir(), append(fastOAuthEnv, "AUTHPROXY_REFRESH_BEFORE=3")...)
	o := connectOAuth(t, sc, srv)
	srv.SetDown(true)
	c := sc.client(o.secret)
	// Inside the refresh margin but before expiry: every refresh fails and
	// every request still succeeds with the valid token.
	for i := range 5 {
		if st, _, body := o.call(t, c); st != 200 {
			t.Fatalf("request %d while the token endpoint is down: %d %s", i, st, body)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if srv.TokenCalls("refresh_token") == 0 {
		t.Fatal("no refresh was attempted inside the margin")
	}
	attrs, _ := o.secretDoc(t)
	if attrs["state"] != "ready" {
		t.Fatalf("a passing failure changed the state: %v", attrs)
	}
	srv.SetDown(false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		attrs, _ = o.secretDoc(t)
		if attrs["refreshed_at"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refresh after the endpoint came back: %v", attrs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st, _, body := o.call(t, c); st != 200 {
		t.Fatalf("after the endpoint came back: %d %s", st, body)
	}
	sc.stop(syscall.SIGTERM)
}

// A 401 to the stored token: refresh once, replay once, never loop.
func TestUpstream401RefreshesOnceAndReplays(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{AccessTokenLifetime: time.Hour, RevokeOldAccessTokenOnRefresh: true})
	sc := startSidecar(t, t.TempDir(), fastOAuthEnv...)
	o := connectOAuth(t, sc, srv)
	srv.RevokeAccessTokens() // the provider forgets the token before its expiry
	c := sc.client(o.secret)
	before := srv.ResourceCalls()
	if st, _, body := o.call(t, c); st != 200 {
		t.Fatalf("after a 401 and a refresh: %d %s", st, body)
	}
	if got := srv.TokenCalls("refresh_token"); got != 1 {
		t.Fatalf("refresh calls: %d, want 1", got)
	}
	if got := srv.ResourceCalls() - before; got != 2 {
		t.Fatalf("upstream calls: %d, want 2 (the 401 and the replay)", got)
	}
	// A 401 on a request whose body is too large to keep: the token is
	// still refreshed, but the request is not replayed; the flow gets the
	// 401 and its next request works.
	srv.RevokeAccessTokens()
	big := strings.Repeat("x", 2<<20)
	resp, err := c.Post(srv.ResourceURL+"big", "text/plain", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("X-Authproxy-Error") != "" {
		t.Fatalf("unreplayable request after a 401: %d %q, want the upstream's 401", resp.StatusCode, resp.Header.Get("X-Authproxy-Error"))
	}
	if got := srv.TokenCalls("refresh_token"); got != 2 {
		t.Fatalf("refresh calls: %d, want 2 (the 401 still renews the token)", got)
	}
	if st, _, body := o.call(t, c); st != 200 {
		t.Fatalf("next request with the renewed token: %d %s", st, body)
	}
	// Now the token is revoked and so is its refresh token: after one
	// refresh attempt the proxy answers 503 itself, no loop.
	srv.RevokeAccessTokens()
	srv.RevokeRefreshTokens()
	before = srv.ResourceCalls()
	st, h, _ := o.call(t, c)
	if st != 503 || h.Get("X-Authproxy-Error") != "credential_needs_reauthorization" {
		t.Fatalf("want 503 credential_needs_reauthorization, got %d %q", st, h.Get("X-Authproxy-Error"))
	}
	if got := srv.ResourceCalls() - before; got != 1 {
		t.Fatalf("upstream calls: %d, want 1", got)
	}
	sc.stop(syscall.SIGTERM)
}

// Client secrets, access and refresh tokens and authorization codes never
// reach the logs, the admin API or the data file in clear.
func TestNoOAuthSecretAnywhere(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{AccessTokenLifetime: time.Hour})
	dir := t.TempDir()
	sc := startSidecar(t, dir, append(fastOAuthEnv, "LOG_LEVEL=debug")...)
	o := connectOAuth(t, sc, srv)
	var answers strings.Builder
	c := sc.client(o.secret)
	o.call(t, c)
	_, raw := o.secretDoc(t)
	answers.WriteString(raw)
	st, _, raw := sc.admin("POST", "/v2/workspaces/ws1/secrets/"+o.secret+"/refresh", nil)
	answers.WriteString(raw)
	if st != 200 {
		t.Fatalf("refresh: %d %s", st, raw)
	}
	_, _, raw = sc.admin("GET", "/v2/auth-clients/"+o.clientID, nil)
	answers.WriteString(raw)
	_, _, raw = sc.admin("GET", "/v2/workspaces/ws1/secrets", nil)
	answers.WriteString(raw)
	// A replayed callback shows an error page; it must not echo the code.
	resp, err := http.Get(sc.adminURL + "/oauth/callback?state=bogus&code=" + o.codes[0])
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers.Write(b)
	}
	srv.RevokeRefreshTokens()
	o.expireStoredToken(t)
	_, _, body := o.call(t, c) // error state, with its reason
	answers.WriteString(body)
	_, raw = o.secretDoc(t)
	answers.WriteString(raw)
	metrics := scrape(t, sc)
	answers.WriteString(metrics)
	for _, want := range []string{`authproxy_token_refreshes_total{result="refreshed"} 1`,
		`authproxy_token_refreshes_total{result="failed_permanent"} 1`, `authproxy_oauth_connects_total{result="connected"} 1`,
		`authproxy_proxy_errors_total{error="credential_needs_reauthorization"} 1`, `authproxy_secrets{state="error"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, metrics)
		}
	}
	sc.stop(syscall.SIGTERM)

	// Every token the provider issued, read from its own records.
	values := append([]string{srv.ClientSecret}, o.codes...)
	for _, r := range srv.TokenRequests() {
		values = append(values, r.IssuedTokens()...)
	}
	if len(values) < 4 {
		t.Fatalf("too few known secret values to search for: %d", len(values))
	}
	db, _ := os.ReadFile(filepath.Join(dir, "authproxy.db"))
	logs := sc.logs.String()
	for _, v := range values {
		if v == "" {
			continue
		}
		if strings.Contains(logs, v) {
			t.Errorf("the log holds a secret value ending %q", v[len(v)-4:])
		}
		if strings.Contains(answers.String(), v) {
			t.Errorf("an admin or proxy answer holds a secret value ending %q", v[len(v)-4:])
		}
		if strings.Contains(string(db), v) {
			t.Errorf("the data file holds a secret value ending %q in clear", v[len(v)-4:])
		}
	}
	var sanity map[string]any
	if json.Unmarshal([]byte(raw), &sanity) != nil {
		t.Fatalf("admin answer is not JSON: %s", raw)
	}
}

// Denied consent and a replayed callback show a page that says what went
// wrong, and leave the secret as it was.
func TestCallbackFailuresLeaveSecretAlone(t *testing.T) {
	srv := oauthtest.Start(t, oauthtest.Options{AccessTokenLifetime: time.Hour})
	sc := startSidecar(t, t.TempDir(), fastOAuthEnv...)
	o := connectOAuth(t, sc, srv)
	_, connected := o.secretDoc(t)

	page := func(u string) (int, string) { return get(t, http.DefaultClient, u) }
	// Denied consent.
	_, doc, _ := sc.admin("POST", "/v2/workspaces/ws1/secrets/"+o.secret+"/authorize", nil)
	authURL := doc["data"].(map[string]any)["authorization_url"].(string)
	cb, err := srv.Login(context.Background(), authURL, "alice", true)
	if err != nil {
		t.Fatal(err)
	}
	st, body := page(cb)
	if st == 200 || !strings.Contains(body, "access_denied") || !strings.Contains(body, "not connected") {
		t.Fatalf("denied consent page: %d %s", st, body)
	}
	// A callback used twice: the second is refused.
	_, doc, _ = sc.admin("POST", "/v2/workspaces/ws1/secrets/"+o.secret+"/authorize", nil)
	cb, err = srv.Login(context.Background(), doc["data"].(map[string]any)["authorization_url"].(string), "alice", false)
	if err != nil {
		t.Fatal(err)
	}
	if st, body := page(cb); st != 200 {
		t.Fatalf("first use of the callback: %d %s", st, body)
	}
	_, afterFirst := o.secretDoc(t)
	st, body = page(cb)
	if st == 200 || !strings.Contains(body, "already used") {
		t.Fatalf("replayed callback page: %d %s", st, body)
	}
	if _, now := o.secretDoc(t); now != afterFirst {
		t.Fatalf("a replayed callback changed the secret:\n%s\n%s", afterFirst, now)
	}
	if got := srv.TokenCalls("authorization_code"); got != 2 {
		t.Fatalf("code exchanges: %d, want 2 (the replay must not reach the provider)", got)
	}
	if connected == afterFirst {
		t.Fatal("reconnecting did not change the stored token expiry")
	}
	sc.stop(syscall.SIGTERM)
}
