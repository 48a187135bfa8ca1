package authflow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sethvargo/go-retry"
	"golang.org/x/oauth2"

	"github.com/authproxy/authproxy/credstore"
)

// flight is one refresh of one credential under way; everyone who needs that
// credential renewed meanwhile waits for it instead of calling the token
// endpoint again.
type flight struct {
	done  chan struct{}
	force bool // started to renew whatever the expiry
	cred  *credstore.Credential
	err   error
}

// errChanged aborts a store update whose credential changed while a token
// request was under way.
var errChanged = errors.New("credential changed meanwhile")

// Token returns the access token to send for c (the proxy's TokenSource).
// A token inside the refresh margin or expired is renewed first, once for
// all concurrent callers. If renewal fails for a passing reason while the
// token is still valid, the token is used. Returns an error wrapping
// ErrNeedsReauth when only connecting the account again can help.
func (m *Manager) Token(ctx context.Context, c *credstore.Credential, client *credstore.AuthClient) (string, error) {
	now := m.now()
	f := &c.Fields
	if c.State == credstore.StateError {
		return "", ErrNeedsReauth
	}
	if c.Type == credstore.OAuth2Instagram && !f.ExpiresAt.IsZero() && !now.Before(f.ExpiresAt) {
		m.markError(c, "the long-lived Instagram token expired; connect the account again")
		return "", ErrNeedsReauth
	}
	if !m.due(c, client, now) {
		return f.AccessToken, nil
	}
	valid := f.ExpiresAt.IsZero() || now.Before(f.ExpiresAt)
	if m.backingOff(c.ID, now) {
		// The token endpoint failed a moment ago: do not make every request
		// wait for it again. A valid token is used; an expired one fails at
		// once until the background refresher's next try.
		if valid {
			return f.AccessToken, nil
		}
		return "", credstore.Errorf(credstore.EUNAVAILABLE, "the token expired and the token endpoint is failing; retrying in the background")
	}
	fresh, err := m.refresh(ctx, c.ID, f.AccessToken, false)
	switch {
	case err == nil && fresh.State == credstore.StateError:
		return "", ErrNeedsReauth // another caller's refresh failed for good
	case err == nil:
		return fresh.Fields.AccessToken, nil
	case errors.Is(err, ErrNeedsReauth):
		return "", err
	case valid:
		return f.AccessToken, nil
	}
	return "", err
}

// Rejected is called when upstream answered 401 to token. If token is
// still the stored one, the credential is refreshed once and the new token
// returned for one replay; otherwise "" (the 401 goes back to the flow).
func (m *Manager) Rejected(ctx context.Context, c *credstore.Credential, client *credstore.AuthClient, token string) (string, error) {
	cur, err := m.Store.Credential(c.ID)
	if err != nil || cur.Fields.AccessToken != token || !m.refreshable(cur, client, m.now(), true) {
		return "", nil
	}
	fresh, err := m.refresh(ctx, c.ID, token, true)
	if err != nil {
		return "", err
	}
	if fresh.Fields.AccessToken == token {
		return "", nil
	}
	return fresh.Fields.AccessToken, nil
}

// Refresh renews credential id of workspace ws now, whatever its expiry
// (POST …/secrets/{id}/refresh). Returns ENOTFOUND, ECONFLICT when it cannot
// be refreshed (no refresh token, or an Instagram token too young or
// expired), EUNAVAILABLE when the token endpoint failed for a passing
// reason; a permanent failure returns the credential in state error.
func (m *Manager) Refresh(ctx context.Context, ws, id string) (*credstore.Credential, error) {
	c, client, err := m.Store.CredentialWithClient(id)
	if err != nil || c.Workspace != ws {
		return nil, credstore.Errorf(credstore.ENOTFOUND, "secret %q not found in workspace %s", id, ws)
	}
	if !c.Type.IsOAuth2() {
		return nil, credstore.Errorf(credstore.ECONFLICT, "only oauth2 and oauth2_instagram secrets are refreshed")
	}
	if !m.refreshable(c, client, m.now(), true) {
		return nil, credstore.Errorf(credstore.ECONFLICT, "%s", m.whyNot(c, client))
	}
	fresh, err := m.refresh(ctx, id, c.Fields.AccessToken, true)
	if errors.Is(err, ErrNeedsReauth) {
		return m.Store.Credential(id)
	}
	return fresh, err
}

// due reports whether c should be renewed now: an oauth2 token with a
// refresh token, inside RefreshBefore of its expiry; an Instagram token at
// least refresh_min_age old with less than refresh_before_expiry left and not
// yet expired.
func (m *Manager) due(c *credstore.Credential, client *credstore.AuthClient, now time.Time) bool {
	f := &c.Fields
	if !m.refreshable(c, client, now, false) {
		return false
	}
	if c.Type == credstore.OAuth2Instagram {
		_, before := instagramWindow(client)
		return f.ExpiresAt.Sub(now) < before
	}
	return !now.Before(f.ExpiresAt.Add(-m.RefreshBefore))
}

// refreshable reports whether c can be renewed at all: ready, with a token,
// and for oauth2 a refresh token and a known expiry (a token without either
// is a "forever" token, unless forced); for Instagram, old enough and not
// expired.
func (m *Manager) refreshable(c *credstore.Credential, client *credstore.AuthClient, now time.Time, force bool) bool {
	f := &c.Fields
	if f.AccessToken == "" || c.State == credstore.StatePending {
		return false
	}
	if c.State == credstore.StateError && !force {
		return false
	}
	switch c.Type {
	case credstore.OAuth2:
		return f.RefreshToken != "" && (force || !f.ExpiresAt.IsZero())
	case credstore.OAuth2Instagram:
		minAge, _ := instagramWindow(client)
		return !f.ExpiresAt.IsZero() && now.Before(f.ExpiresAt) && now.Sub(f.IssuedAt) >= minAge
	}
	return false
}

func (m *Manager) whyNot(c *credstore.Credential, client *credstore.AuthClient) string {
	f := &c.Fields
	switch {
	case f.AccessToken == "":
		return "this secret has no token yet: connect the account first"
	case c.Type == credstore.OAuth2:
		return "this secret has no refresh token, so it is never refreshed"
	case !f.ExpiresAt.IsZero() && !m.now().Before(f.ExpiresAt):
		return "the Instagram token has expired and cannot be refreshed; connect the account again"
	}
	minAge, _ := instagramWindow(client)
	return fmt.Sprintf("Instagram refreshes only tokens at least %s old", minAge)
}

func instagramWindow(client *credstore.AuthClient) (minAge, before time.Duration) {
	s := &client.Settings
	minAge, before = DefaultRefreshMinAge*time.Second, DefaultRefreshBeforeExpiry*time.Second
	if s.RefreshMinAge > 0 {
		minAge = time.Duration(s.RefreshMinAge) * time.Second
	}
	if s.RefreshBeforeExpiry > 0 {
		before = time.Duration(s.RefreshBeforeExpiry) * time.Second
	}
	return minAge, before
}

// refresh renews credential id, unless its access token is no longer seen
// (someone renewed it meanwhile) or, when not forced, it is no longer due.
// Concurrent calls for one id share one token-endpoint call. The refresh
// runs to its end even if ctx is cancelled, so that a rotated refresh token
// is always stored.
func (m *Manager) refresh(ctx context.Context, id, seen string, force bool) (*credstore.Credential, error) {
	m.init()
	for joined := 0; ; joined++ {
		m.mu.Lock()
		if m.closing {
			m.mu.Unlock()
			return nil, credstore.Errorf(credstore.EUNAVAILABLE, "shutting down")
		}
		f := m.flights[id]
		if f == nil {
			f = &flight{done: make(chan struct{}), force: force}
			m.flights[id] = f
			m.running.Add(1)
			go m.fly(f, id, seen, force)
		}
		m.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// A caller that must renew (a 401, an operator's refresh) and joined
		// a flight that renewed nothing (it was started for a stale token or
		// found the token not due) starts one of its own, once.
		if force && !f.force && joined == 0 && f.err == nil && f.cred != nil && f.cred.Fields.AccessToken == seen {
			continue
		}
		return f.cred, f.err
	}
}

func (m *Manager) fly(f *flight, id, seen string, force bool) {
	defer m.running.Done()
	defer func() {
		m.mu.Lock()
		delete(m.flights, id)
		m.mu.Unlock()
		close(f.done)
	}()
	budget := time.Duration(m.MaxRetry+1)*(m.RequestTimeout+m.RetryDelay) + 5*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	f.cred, f.err = m.renew(ctx, id, seen, force)
}

func (m *Manager) renew(ctx context.Context, id, seen string, force bool) (*credstore.Credential, error) {
	cred, client, err := m.Store.CredentialWithClient(id)
	if err != nil {
		return nil, err
	}
	now := m.now()
	if cred.State == credstore.StateError && !force {
		// A refresh that ran meanwhile failed for good.
		return nil, fmt.Errorf("%w: %s", ErrNeedsReauth, cred.Error)
	}
	if cred.Fields.AccessToken != seen || !(force || m.due(cred, client, now)) {
		return cred, nil
	}
	if !m.refreshable(cred, client, now, force) {
		return cred, credstore.Errorf(credstore.ECONFLICT, "%s", m.whyNot(cred, client))
	}
	if u, ok := m.unstored(id, cred, client); ok {
		return u, nil
	}
	g, err := m.withRetry(ctx, func(ctx context.Context) (*grant, error) {
		if cred.Type == credstore.OAuth2Instagram {
			return m.instagramRefresh(ctx, client, cred.Fields.AccessToken)
		}
		return m.refreshGrant(ctx, client, cred.Fields.RefreshToken)
	})
	if err != nil {
		return m.refreshFailed(id, cred, client, err)
	}
	return m.commit(id, cred, client, g, m.now())
}

// commit stores grant g, obtained at `at` by renewing cred, unless the
// stored tokens changed meanwhile. The new refresh token is committed before
// the new access token is handed to anyone: a crash after the commit loses
// nothing. If the write fails, the grant is kept in memory and committed
// before the next token-endpoint call for this credential, since the
// provider may already have spent the old refresh token.
func (m *Manager) commit(id string, cred *credstore.Credential, client *credstore.AuthClient, g *grant, at time.Time) (*credstore.Credential, error) {
	updated, err := m.Store.UpdateCredential(id, func(c *credstore.Credential) error {
		if !sameTokens(c, cred) {
			return errChanged
		}
		g.apply(c, client, at)
		c.State, c.Error, c.RefreshedAt = credstore.StateReady, "", at.UTC()
		return nil
	})
	m.mu.Lock()
	if err == nil || errors.Is(err, errChanged) {
		delete(m.pending, id)
	} else {
		m.pending[id] = unstoredGrant{g: g, base: cred, at: at}
	}
	m.mu.Unlock()
	if errors.Is(err, errChanged) {
		return m.Store.Credential(id)
	}
	if err != nil {
		m.Logger.Error("refreshed token could not be stored; kept in memory and stored before the next refresh", "secret", id, "err", err)
		return nil, err
	}
	m.clearBackoff(id)
	m.counters.refreshed.Add(1)
	m.Logger.Info("token refreshed", "secret", id, "type", string(cred.Type),
		"expires_at", updated.Fields.ExpiresAt.UTC().Format(time.RFC3339), "rotated", updated.Fields.RefreshToken != cred.Fields.RefreshToken)
	return updated, nil
}

// unstoredGrant is a grant whose commit failed.
type unstoredGrant struct {
	g    *grant
	base *credstore.Credential // the credential it renewed
	at   time.Time
}

// unstored commits a grant kept in memory after a failed write, if it
// renewed the tokens still stored. ok says whether it was committed.
func (m *Manager) unstored(id string, cred *credstore.Credential, client *credstore.AuthClient) (*credstore.Credential, bool) {
	m.mu.Lock()
	u, ok := m.pending[id]
	m.mu.Unlock()
	if !ok || !sameTokens(u.base, cred) {
		return nil, false
	}
	updated, err := m.commit(id, cred, client, u.g, u.at)
	return updated, err == nil
}

// refreshFailed handles a refresh that failed after its retries. A
// permanent failure first re-reads the store, in case the tokens changed
// meanwhile; otherwise it puts the credential in state error.
func (m *Manager) refreshFailed(id string, cred *credstore.Credential, client *credstore.AuthClient, err error) (*credstore.Credential, error) {
	msg := describeTokenError(err, cred.Fields.AccessToken, cred.Fields.RefreshToken, client.Settings.ClientSecret)
	if !permanent(err) {
		m.counters.transient.Add(1)
		d := m.noteFailure(id)
		m.Logger.Warn("token refresh failed; will retry", "secret", id, "reason", msg, "retry_in", d)
		return nil, credstore.Errorf(credstore.EUNAVAILABLE, "token refresh failed: %s", msg)
	}
	m.counters.permanent.Add(1)
	if cur, err := m.Store.Credential(id); err == nil && !sameTokens(cur, cred) {
		return cur, nil
	}
	m.markError(cred, "token refresh failed: "+msg)
	return nil, fmt.Errorf("%w: %s", ErrNeedsReauth, msg)
}

// markError puts c in state error with a readable reason, unless its tokens
// changed meanwhile.
func (m *Manager) markError(c *credstore.Credential, reason string) {
	if c.State == credstore.StateError {
		return
	}
	_, err := m.Store.UpdateCredential(c.ID, func(cur *credstore.Credential) error {
		if !sameTokens(cur, c) || cur.State == credstore.StateError {
			return errChanged // renewed meanwhile, or already marked
		}
		cur.State, cur.Error = credstore.StateError, reason
		return nil
	})
	if err == nil {
		m.Logger.Warn("secret needs re-authorization", "secret", c.ID, "reason", reason)
	}
}

func sameTokens(a, b *credstore.Credential) bool {
	return a.Fields.AccessToken == b.Fields.AccessToken && a.Fields.RefreshToken == b.Fields.RefreshToken
}

func (m *Manager) backingOff(id string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.retryAt[id]
	return ok && now.Before(b.at)
}

// noteFailure records a passing failure and returns how long the
// background refresher waits before the next try: growing from RetryDelay
// (at least 1 s) up to maxBackoff.
func (m *Manager) noteFailure(id string) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.retryAt[id]
	if b.delay == 0 {
		b.delay = max(m.RetryDelay, time.Second)
	} else {
		b.delay = min(2*b.delay, maxBackoff)
	}
	b.at = m.Now().Add(b.delay)
	m.retryAt[id] = b
	return b.delay
}

func (m *Manager) clearBackoff(id string) {
	m.mu.Lock()
	delete(m.retryAt, id)
	m.mu.Unlock()
}

// grant is a token-endpoint answer.
type grant struct {
	access, refresh, tokenType, scope string
	expiresIn                         int64 // seconds; 0 when not given
	extra                             map[string]any
}

// apply writes g into c: a missing refresh token keeps the old one, a
// missing expires_in means the client's token_expires_in.
func (g *grant) apply(c *credstore.Credential, client *credstore.AuthClient, now time.Time) {
	f := &c.Fields
	f.AccessToken = g.access
	if g.refresh != "" {
		f.RefreshToken = g.refresh
	}
	if g.tokenType != "" {
		f.TokenType = g.tokenType
	}
	if g.scope != "" {
		f.Scope = g.scope
	}
	exp := g.expiresIn
	if exp <= 0 {
		exp = int64(client.Settings.TokenExpiresIn)
		if exp <= 0 {
			exp = defaultTokenExpiresIn
		}
	}
	f.IssuedAt = now.UTC()
	f.ExpiresAt = now.Add(time.Duration(exp) * time.Second).UTC()
	f.Extra = g.extra
}

// tokenError is a token endpoint's refusal.
type tokenError struct {
	status            int
	code, description string
}

func (e *tokenError) Error() string {
	s := "token endpoint answered " + strconv.Itoa(e.status)
	if e.code != "" {
		s += ": " + e.code
	}
	if e.description != "" {
		s += " (" + e.description + ")"
	}
	return s
}

// permanentCodes are RFC 6749 error codes (and GitHub's bad_refresh_token,
// which it sends with status 200) that no retry will heal.
var permanentCodes = map[string]bool{
	"invalid_grant": true, "invalid_client": true, "unauthorized_client": true,
	"unsupported_grant_type": true, "invalid_scope": true, "invalid_request": true,
	"bad_refresh_token": true,
}

// permanent reports whether err will not heal by retrying: an OAuth error
// code that says so, whatever the HTTP status (some providers answer errors
// with 200), or a 4xx other than 408 and 429 without a code saying
// temporarily_unavailable.
func permanent(err error) bool {
	var te *tokenError
	if !errors.As(err, &te) {
		return false
	}
	if permanentCodes[te.code] {
		return true
	}
	return te.status >= 400 && te.status < 500 && te.status != 408 && te.status != 429 && te.code != "temporarily_unavailable"
}

// withRetry calls f, retrying network errors and 5xx (REQUEST_RETRY_DELAY,
// REQUEST_MAX_RETRY).
func (m *Manager) withRetry(ctx context.Context, f func(context.Context) (*grant, error)) (*grant, error) {
	b := retry.WithMaxRetries(uint64(max(m.MaxRetry, 0)), retry.NewConstant(max(m.RetryDelay, time.Millisecond)))
	return retry.DoValue(ctx, b, func(ctx context.Context) (*grant, error) {
		g, err := f(ctx)
		if err != nil && !permanent(err) {
			return nil, retry.RetryableError(err)
		}
		return g, err
	})
}

// oauth2Config builds the x/oauth2 configuration of client with tokenURL.
func (m *Manager) oauth2Config(client *credstore.AuthClient, tokenURL string) *oauth2.Config {
	s := &client.Settings
	style := oauth2.AuthStyleInHeader
	if s.TokenEndpointAuthMethod == "client_secret_post" || client.Type == credstore.OAuth2Instagram {
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID:     s.ClientID,
		ClientSecret: s.ClientSecret,
		Endpoint:     oauth2.Endpoint{AuthURL: s.AuthURI, TokenURL: tokenURL, AuthStyle: style},
		RedirectURL:  m.RedirectURI,
		Scopes:       s.Scopes,
	}
}

// refreshGrant runs the refresh_token grant at refresh_token_uri (or
// token_uri).
func (m *Manager) refreshGrant(ctx context.Context, client *credstore.AuthClient, refreshToken string) (*grant, error) {
	uri := client.Settings.RefreshTokenURI
	if uri == "" {
		uri = client.Settings.TokenURI
	}
	ctx, body := m.capture(ctx)
	tok, err := m.oauth2Config(client, uri).TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return nil, tokenErr(err)
	}
	return grantFrom(tok, *body), nil
}

// exchangeCode runs the authorization_code grant. It is never retried
// unless the request provably never reached the server: a code is single
// use.
func (m *Manager) exchangeCode(ctx context.Context, client *credstore.AuthClient, code, verifier string) (*grant, error) {
	b := retry.WithMaxRetries(uint64(max(m.MaxRetry, 0)), retry.NewConstant(max(m.RetryDelay, time.Millisecond)))
	return retry.DoValue(ctx, b, func(ctx context.Context) (*grant, error) {
		var opts []oauth2.AuthCodeOption
		if verifier != "" {
			opts = append(opts, oauth2.VerifierOption(verifier))
		}
		ctx, body := m.capture(ctx)
		tok, err := m.oauth2Config(client, client.Settings.TokenURI).Exchange(ctx, code, opts...)
		if err != nil {
			if neverSent(err) {
				return nil, retry.RetryableError(err)
			}
			return nil, tokenErr(err)
		}
		return grantFrom(tok, *body), nil
	})
}

// capture makes the token client keep the raw body of the response to the
// request made with the returned context, so that fields x/oauth2 does not
// expose by name are stored too.
type captureKey struct{}

func (m *Manager) capture(ctx context.Context) (context.Context, *[]byte) {
	m.init()
	var body []byte
	ctx = context.WithValue(ctx, captureKey{}, &body)
	return context.WithValue(ctx, oauth2.HTTPClient, &http.Client{
		Timeout:   m.HTTPClient.Timeout,
		Transport: captureTransport{base: m.HTTPClient.Transport},
	}), &body
}

type captureTransport struct{ base http.RoundTripper }

func (t captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if dst, ok := r.Context().Value(captureKey{}).(*[]byte); ok {
		data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		*dst = data
		resp.Body = io.NopCloser(bytes.NewReader(data))
	}
	return resp, nil
}

var knownTokenFields = map[string]bool{"access_token": true, "refresh_token": true, "token_type": true, "expires_in": true, "scope": true}

func grantFrom(tok *oauth2.Token, raw []byte) *grant {
	g := &grant{access: tok.AccessToken, refresh: tok.RefreshToken, tokenType: tok.TokenType, expiresIn: tok.ExpiresIn}
	if g.expiresIn == 0 && !tok.Expiry.IsZero() {
		g.expiresIn = int64(time.Until(tok.Expiry).Round(time.Second) / time.Second)
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) == nil {
		if s, ok := m["scope"].(string); ok {
			g.scope = s
		}
		for k, v := range m {
			if !knownTokenFields[k] {
				if g.extra == nil {
					g.extra = map[string]any{}
				}
				g.extra[k] = v
			}
		}
	}
	return g
}

// tokenErr turns an x/oauth2 error into a *tokenError when the endpoint
// answered, keeping only the status and RFC 6749 error fields: the error's
// own text may quote the whole response body.
func tokenErr(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return &tokenError{status: re.Response.StatusCode, code: re.ErrorCode, description: re.ErrorDescription}
	}
	return err
}

// describeTokenError is a readable reason that is safe to store and log:
// only status, error code and description, with any of secrets that a
// provider echoed cut out.
func describeTokenError(err error, secrets ...string) string {
	var te *tokenError
	var s string
	switch {
	case errors.As(err, &te):
		s = te.Error()
	case errors.Is(err, context.DeadlineExceeded):
		s = "token endpoint did not answer in time"
	case neverSent(err):
		s = "token endpoint unreachable"
	default:
		var ue *url.Error
		if errors.As(err, &ue) {
			s = "token endpoint request failed"
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s = "token endpoint did not answer in time"
			}
		} else {
			s = "token endpoint answer unusable"
		}
	}
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// neverSent reports whether err shows the request never left: the
// connection could not be made (name lookups fail inside the dial too).
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
