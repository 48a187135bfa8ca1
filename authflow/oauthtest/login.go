package oauthtest

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// browser returns an HTTP client that does not follow redirects, like a
// browser whose navigation we stop at the redirect to the client.
func browser() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

var formRE = regexp.MustCompile(`(?is)<form\b[^>]*\baction="([^"]*)"`)

// Login plays the browser for an authorization URL produced by the client
// under test (authURL must point at s.AuthURL): it GETs the page, fills the
// login form as user with s.Password and clicks Allow, or Deny when deny is
// true. It returns the absolute URL of the redirect the server answers with —
// the client's redirect_uri with code and state, or with
// error=access_denied — without following it.
//
// If the server redirects at once (an invalid request that can still be
// reported to the client, e.g. a missing PKCE challenge), that Location is
// returned without logging in. Any other answer is an error.
func (s *Server) Login(ctx context.Context, authURL, user string, deny bool) (string, error) {
	return s.login(ctx, authURL, user, s.Password, deny)
}

// LoginWithPassword is Login with an explicit password; a wrong one makes
// the form reappear with 401, which is returned as an error.
func (s *Server) LoginWithPassword(ctx context.Context, authURL, user, password string) (string, error) {
	return s.login(ctx, authURL, user, password, false)
}

func (s *Server) login(ctx context.Context, authURL, user, password string, deny bool) (string, error) {
	c := browser()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if loc, ok := redirectLocation(resp); ok {
		return loc, nil
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("oauthtest: GET authorization URL: %s: %s", resp.Status, truncate(string(body), 300))
	}
	m := formRE.FindSubmatch(body)
	if m == nil {
		return "", fmt.Errorf("oauthtest: no login form in authorization page: %s", truncate(string(body), 300))
	}
	action, err := resp.Request.URL.Parse(html.UnescapeString(string(m[1])))
	if err != nil {
		return "", fmt.Errorf("oauthtest: bad form action: %w", err)
	}
	consent := "approve"
	if deny {
		consent = "deny"
	}
	form := url.Values{"username": {user}, "password": {password}, "consent": {consent}}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = c.Do(req)
	if err != nil {
		return "", err
	}
	body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if loc, ok := redirectLocation(resp); ok {
		return loc, nil
	}
	return "", fmt.Errorf("oauthtest: login form answered %s instead of a redirect: %s", resp.Status, truncate(string(body), 300))
}

// redirectLocation returns the absolute Location of a 3xx response.
func redirectLocation(resp *http.Response) (string, bool) {
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return "", false
	}
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", false
	}
	u, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return loc, true
	}
	return u.String(), true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
