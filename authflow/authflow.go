// Package authflow obtains and renews OAuth2 tokens for credentials in the
// store: the authorization-code flow with PKCE and state, proactive and
// on-demand refresh with one token-endpoint call per credential at a time,
// refresh-token rotation committed before use, and Instagram's long-lived
// tokens.
package authflow

import (
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/authproxy/authproxy/credstore"
)

// ErrNeedsReauth means the account behind a credential must be connected
// again: its refresh failed for good (invalid_grant or another 4xx that
// will not heal) and the credential is in state "error".
var ErrNeedsReauth = errors.New("credential needs re-authorization")

// Defaults of the Manager's fields.
const (
	DefaultRefreshBefore = 30 * time.Second
	DefaultStateTTL      = 10 * time.Minute
	defaultScanInterval  = time.Second
	maxBackoff           = 15 * time.Minute
)

// Instagram defaults (DESIGN.md, oauth2_instagram).
const (
	DefaultInstagramLongLivedURI = "https://graph.instagram.com/access_token"
	DefaultInstagramRefreshURI   = "https://graph.instagram.com/refresh_access_token"
	DefaultRefreshMinAge         = 86400  // s: Instagram refuses to refresh younger tokens
	DefaultRefreshBeforeExpiry   = 604800 // s: refresh once under 7 days remain
	defaultTokenExpiresIn        = 3600   // s, when a token response has no expires_in
)

// Manager runs the OAuth2 side of the sidecar. Its fields are its
// configuration; set them before first use and do not change them after.
type Manager struct {
	// Store holds the credentials and their auth clients. Required.
	Store *credstore.Store

	// HTTPClient calls token endpoints. nil means a client with
	// RequestTimeout and no proxy.
	HTTPClient *http.Client

	// RequestTimeout bounds one token-endpoint request (REQUEST_TIMEOUT).
	// Zero means 10 s.
	RequestTimeout time.Duration

	// RetryDelay is the wait between token-endpoint attempts
	// (REQUEST_RETRY_DELAY); MaxRetry the attempts after the first
	// (REQUEST_MAX_RETRY). Only network errors and 5xx are retried.
	RetryDelay time.Duration
	MaxRetry   int

	// RefreshBefore is how long before expiry an OAuth2 token is renewed
	// (AUTHPROXY_REFRESH_BEFORE). Zero means 30 s.
	RefreshBefore time.Duration

	// RedirectURI is the callback address registered with providers:
	// AUTHPROXY_PUBLIC_URL + "/oauth/callback". Required for
	// AuthorizationURL.
	RedirectURI string

	// ScanInterval is how often the background refresher looks for tokens
	// due for renewal. Zero means 1 s.
	ScanInterval time.Duration

	// Now is the clock. nil means time.Now.
	Now func() time.Time

	// Logger receives refresh and connect events, never a token. nil means
	// slog.Default().
	Logger *slog.Logger

	once     sync.Once
	mu       sync.Mutex
	flights  map[string]*flight       // refreshes under way, by credential id
	states   map[string]*pendingAuth  // authorization links not yet used
	retryAt  map[string]backoff       // background refresher's waits after failures
	pending  map[string]unstoredGrant // grants whose store write failed
	running  sync.WaitGroup           // refreshes under way, which Run waits for
	closing  bool                     // set when Run ends: no new refreshes
	slots    chan struct{}            // bounds the background refresher's refreshes
	counters counters
}

type backoff struct {
	at    time.Time
	delay time.Duration
}

func (m *Manager) init() {
	m.once.Do(func() {
		if m.RequestTimeout <= 0 {
			m.RequestTimeout = 10 * time.Second
		}
		if m.RefreshBefore <= 0 {
			m.RefreshBefore = DefaultRefreshBefore
		}
		if m.ScanInterval <= 0 {
			m.ScanInterval = defaultScanInterval
		}
		if m.Now == nil {
			m.Now = time.Now
		}
		if m.Logger == nil {
			m.Logger = slog.Default()
		}
		if m.HTTPClient == nil {
			m.HTTPClient = &http.Client{
				Timeout:       m.RequestTimeout,
				Transport:     &http.Transport{ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second, MaxIdleConnsPerHost: 16},
				CheckRedirect: NoRedirects,
			}
		}
		m.slots = make(chan struct{}, refreshWorkers)
		m.flights = map[string]*flight{}
		m.states = map[string]*pendingAuth{}
		m.retryAt = map[string]backoff{}
		m.pending = map[string]unstoredGrant{}
	})
}

// NoRedirects is the CheckRedirect of token-endpoint clients: a 307 or 308
// would send the client secret or a refresh token on to another address.
func NoRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func (m *Manager) now() time.Time {
	m.init()
	return m.Now()
}
