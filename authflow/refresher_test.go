package authflow_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authproxy/authproxy/authflow"
	"github.com/authproxy/authproxy/authflow/oauthtest"
	"github.com/authproxy/authproxy/credstore"
)

// startRun runs the background refresher until the returned stop is
// called; stop waits (at most 5 s) for Run to return.
func startRun(t *testing.T, m *authflow.Manager) (stop func(), done <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan struct{})
	go func() {
		m.Run(ctx)
		close(ch)
	}()
	stop = func() {
		cancel()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after its context was cancelled")
		}
	}
	t.Cleanup(func() {
		cancel()
		<-ch
	})
	return stop, ch
}

func TestRunRefreshesInTheBackground(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{})
	e := newEnv(t) // ScanInterval 10 ms
	c := e.pendingSecret(e.oauth2Client(srv, nil))
	old := e.connect(srv, c.ID)
	stop, _ := startRun(t, e.m)

	// Not due: scans leave it alone.
	e.waitScans(3)
	if n := srv.TokenCalls("refresh_token"); n != 0 {
		t.Fatalf("refresh_token requests before the margin = %d", n)
	}

	// Inside the margin, without any Token call: renewed.
	e.clock.Set(old.Fields.ExpiresAt.Add(-20 * time.Second))
	eventually(t, "the background refresh", func() bool {
		cur, _ := e.store.Credential(c.ID)
		return cur.Fields.AccessToken != old.Fields.AccessToken
	})
	cur := e.cred(c.ID)
	if cur.Fields.RefreshToken == old.Fields.RefreshToken || cur.State != credstore.StateReady {
		t.Fatal("the refresh token was not rotated in the store")
	}
	if _, err := srv.ValidateAccessToken(e.ctx, cur.Fields.AccessToken); err != nil {
		t.Fatal(err)
	}
	// The new token is not due: no more calls.
	e.waitScans(3)
	if n := srv.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh_token requests = %d, want 1", n)
	}

	// Cancelling its context stops it (stop fails the test if Run does
	// not return).
	stop()
}

func TestRunBacksOffAfterTransientFailures(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{})
	e := newEnv(t, func(e *env) { e.m.RetryDelay = 5 * time.Millisecond }) // backoff starts at 1 s
	attempts := int64(e.m.MaxRetry + 1)
	c := e.pendingSecret(e.oauth2Client(srv, nil))
	old := e.connect(srv, c.ID)
	srv.SetDown(true)
	e.clock.Set(old.Fields.ExpiresAt.Add(-25 * time.Second))
	startRun(t, e.m)

	calls := func() int64 { return srv.TokenCalls("refresh_token") }
	eventually(t, "the first failed refresh", func() bool { return calls() == attempts })
	// The clock starts 25 s before expiry; each failure doubles the wait
	// (1 s, 2 s, 4 s, 8 s), measured on the Manager's clock.
	steps := []struct {
		advance time.Duration
		want    int64 // refresh_token requests after a few more scans
	}{
		{0, attempts},                           // waiting 1 s
		{900 * time.Millisecond, attempts},      // 0.9 s: still waiting
		{200 * time.Millisecond, 2 * attempts},  // 1.1 s: one more try; now waiting 2 s
		{1500 * time.Millisecond, 2 * attempts}, // 1.5 s of 2 s
		{600 * time.Millisecond, 3 * attempts},  // 2.1 s: another try; now waiting 4 s
		{3500 * time.Millisecond, 3 * attempts}, // 3.5 s of 4 s
		{600 * time.Millisecond, 4 * attempts},  // 4.1 s: another try; now waiting 8 s
		{7 * time.Second, 4 * attempts},         // 7 s of 8 s (10.7 s before expiry)
	}
	for i, s := range steps {
		e.clock.Advance(s.advance)
		if s.want > calls() {
			eventually(t, "a retry after the backoff", func() bool { return calls() >= s.want })
		}
		e.waitScans(3)
		if got := calls(); got != s.want {
			t.Fatalf("step %d: refresh_token requests = %d, want %d", i, got, s.want)
		}
	}
	// Back up: the next try after the wait succeeds.
	srv.SetDown(false)
	e.clock.Advance(2 * time.Second)
	eventually(t, "the refresh after the endpoint came back", func() bool {
		cur, _ := e.store.Credential(c.ID)
		return cur.Fields.AccessToken != old.Fields.AccessToken
	})
	if cur := e.cred(c.ID); cur.State != credstore.StateReady {
		t.Fatalf("state = %q", cur.State)
	}
}

// Run's doc: it "returns when ctx is done, after the refreshes it started
// have ended". cmd/authproxy closes the store as soon as Run has returned,
// so a refresh still under way then cannot store the refresh token the
// provider has just rotated, and the account is lost.
func TestRunWaitsForItsRefreshesBeforeReturning(t *testing.T) {
	srv := startFosite(t, oauthtest.Options{})
	started := make(chan struct{}, 1)
	var armed atomic.Bool
	// The real transport, observed: it tells when the refresh request has
	// left, so that the test can stop Run while it is under way.
	hook := &hookTransport{
		base: http.DefaultTransport.(*http.Transport).Clone(),
		before: func(*http.Request) {
			if armed.Load() {
				select {
				case started <- struct{}{}:
				default:
				}
			}
		},
	}
	e := newEnv(t, func(e *env) { e.m.HTTPClient = &http.Client{Transport: hook, Timeout: 5 * time.Second} })
	c := e.pendingSecret(e.oauth2Client(srv, nil))
	old := e.connect(srv, c.ID)

	srv.SetTokenDelay(300 * time.Millisecond)
	armed.Store(true)
	stop, _ := startRun(t, e.m)
	e.clock.Set(old.Fields.ExpiresAt.Add(-10 * time.Second))
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the background refresh did not start")
	}
	stop()

	// Run must wait for the refresh it started: when it returns, the
	// rotated refresh token is in the store.
	if cur := e.cred(c.ID); cur.Fields.RefreshToken == old.Fields.RefreshToken {
		t.Errorf("Run returned before its refresh ended: the store still holds the old refresh token")
	}

	// What follows shows the consequence. Close the store, as
	// cmd/authproxy does once Run has returned, and let the flight end.
	e.store.Close()
	eventually(t, "the refresh to end", func() bool {
		l := e.logs.String()
		return strings.Contains(l, "token refreshed") || strings.Contains(l, "could not be stored")
	})
	if n := srv.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh_token requests = %d, want 1", n)
	}
	// Restart: the stored refresh token must still work.
	store := openStore(t, e.path, e.key)
	m := &authflow.Manager{Store: store, RedirectURI: redirectURI, Now: e.clock.Now, Logger: e.m.Logger, MaxRetry: 0, RetryDelay: time.Millisecond}
	got, err := m.Refresh(e.ctx, testWS, c.ID)
	if err != nil {
		t.Fatalf("Refresh after restart: %v", err)
	}
	e.secret("access token", got.Fields.AccessToken)
	e.secret("refresh token", got.Fields.RefreshToken)
	if got.State != credstore.StateReady {
		// Otherwise the rotated-in token was lost and the account needs
		// re-authorization after a graceful restart.
		t.Errorf("after a graceful restart the secret is in state %q: %s", got.State, got.Error)
	}
}
