package authflow

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/authproxy/authproxy/credstore"
)

// pendingAuth is an authorization link handed out and not used yet. Its
// state parameter is the key; it is single use and expires after
// DefaultStateTTL. Pending links live in memory: a restart invalidates them,
// and the user opens a new one.
type pendingAuth struct {
	credID   string
	verifier string // PKCE; "" when the client turned PKCE off
	expires  time.Time
}

// AuthorizationURL returns the link a user opens to connect the account of
// credential id in workspace ws: the client's auth_uri with
// response_type=code, client_id, redirect_uri, scope, a random single-use
// state bound to the credential, PKCE S256 (unless the client sets pkce
// false) and the client's additional_params. Returns ENOTFOUND, or
// ECONFLICT for a credential that is not OAuth2.
func (m *Manager) AuthorizationURL(ws, id string) (string, error) {
	now := m.now()
	c, client, err := m.Store.CredentialWithClient(id)
	if err != nil || c.Workspace != ws {
		return "", credstore.Errorf(credstore.ENOTFOUND, "secret %q not found in workspace %s", id, ws)
	}
	if !c.Type.IsOAuth2() {
		return "", credstore.Errorf(credstore.ECONFLICT, "only oauth2 and oauth2_instagram secrets are connected with a link")
	}
	if m.RedirectURI == "" {
		return "", credstore.Errorf(credstore.EINTERNAL, "no redirect URI configured")
	}
	s := &client.Settings
	p := &pendingAuth{credID: id, expires: now.Add(DefaultStateTTL)}
	var opts []oauth2.AuthCodeOption
	if s.PKCE == nil || *s.PKCE {
		p.verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(p.verifier))
	}
	for k, v := range s.AdditionalParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	conf := m.oauth2Config(client, s.TokenURI)
	if client.Type == credstore.OAuth2Instagram {
		// Instagram separates scopes with commas.
		conf.Scopes = nil
		if len(s.Scopes) > 0 {
			opts = append(opts, oauth2.SetAuthURLParam("scope", strings.Join(s.Scopes, ",")))
		}
	}
	state := randomState()
	m.mu.Lock()
	for k, old := range m.states { // forget links nobody used
		if now.After(old.expires) {
			delete(m.states, k)
		}
	}
	m.states[state] = p
	m.mu.Unlock()
	return conf.AuthCodeURL(state, opts...), nil
}

// Callback completes a connection from the provider's redirect: it checks
// the state (single use, unexpired), exchanges the code once, for Instagram
// exchanges the short-lived token for a long-lived one, stores the tokens
// and sets the credential ready. On any failure the credential is left as
// it was and the error's message says what went wrong, fit to show the
// user.
func (m *Manager) Callback(ctx context.Context, q url.Values) (*credstore.Credential, error) {
	now := m.now()
	state := q.Get("state")
	m.mu.Lock()
	p := m.states[state]
	delete(m.states, state) // single use, whatever happens next
	m.mu.Unlock()
	if state == "" || p == nil {
		return nil, credstore.Errorf(credstore.EINVALID, "this authorization link is unknown or was already used; start again from a new link")
	}
	if now.After(p.expires) {
		return nil, credstore.Errorf(credstore.EINVALID, "this authorization link expired; start again from a new link")
	}
	if e := q.Get("error"); e != "" {
		msg := "the provider refused the authorization: " + clip(e, 100)
		if d := q.Get("error_description"); d != "" {
			msg += " (" + clip(d, 300) + ")"
		}
		return nil, credstore.Errorf(credstore.EINVALID, "%s", msg)
	}
	code := q.Get("code")
	if code == "" {
		return nil, credstore.Errorf(credstore.EINVALID, "the provider sent no authorization code")
	}
	cred, client, err := m.Store.CredentialWithClient(p.credID)
	if err != nil {
		return nil, credstore.Errorf(credstore.ENOTFOUND, "the secret this link was made for no longer exists")
	}
	// The exchange runs to its end even if the browser goes away: the code
	// is single use, and a half-done exchange would burn it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(m.MaxRetry+2)*(m.RequestTimeout+m.RetryDelay))
	defer cancel()
	g, err := m.exchangeCode(ctx, client, code, p.verifier)
	shortLived := ""
	if err == nil && client.Type == credstore.OAuth2Instagram {
		shortLived = g.access
		g, err = m.withRetry(ctx, func(ctx context.Context) (*grant, error) {
			return m.instagramExchange(ctx, client, shortLived)
		})
	}
	if err != nil {
		m.counters.connectFailed.Add(1)
		msg := describeTokenError(err, code, p.verifier, shortLived, client.Settings.ClientSecret)
		m.Logger.Warn("authorization code exchange failed", "secret", cred.ID, "reason", msg)
		return nil, credstore.Errorf(credstore.EUNAVAILABLE, "the authorization code could not be exchanged for a token: %s", msg)
	}
	updated, err := m.Store.UpdateCredential(cred.ID, func(c *credstore.Credential) error {
		g.apply(c, client, m.now())
		if g.refresh == "" {
			c.Fields.RefreshToken = "" // a new grant: an old refresh token belongs to the old one
		}
		c.State, c.Error = credstore.StateReady, ""
		return nil
	})
	if err != nil {
		return nil, err
	}
	m.clearBackoff(cred.ID)
	m.counters.connected.Add(1)
	m.Logger.Info("account connected", "secret", cred.ID, "type", string(cred.Type),
		"expires_at", updated.Fields.ExpiresAt.Format(time.RFC3339))
	return updated, nil
}

func randomState() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
