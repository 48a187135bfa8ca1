package authflow

import (
	"context"
	"sync"
	"time"

	"github.com/authproxy/authproxy/credstore"
)

// refreshWorkers bounds the background refreshes under way at once.
const refreshWorkers = 4

// Run is the background refresher: every ScanInterval it renews the tokens
// that are due (DESIGN.md: 30 s before expiry for oauth2; Instagram's
// window) without waiting for traffic, and marks expired Instagram tokens as
// needing re-authorization. A credential whose refresh failed for a passing
// reason waits a growing delay before the next try. Run returns when ctx is
// done, after every refresh under way (its own and on-demand ones) has
// ended, so that a rotated refresh token is stored before the store closes:
// stop serving requests before cancelling ctx.
func (m *Manager) Run(ctx context.Context) {
	m.init()
	t := time.NewTicker(m.ScanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.running.Wait()
			return
		case <-t.C:
			m.scan(ctx)
		}
	}
}

// scan renews every credential due now and waits for those refreshes.
func (m *Manager) scan(ctx context.Context) {
	now := m.now()
	var expired []*credstore.Credential
	due := m.Store.DueCredentials(func(c *credstore.Credential, client *credstore.AuthClient) bool {
		if !c.Type.IsOAuth2() || c.State != credstore.StateReady {
			return false
		}
		if c.Type == credstore.OAuth2Instagram && !c.Fields.ExpiresAt.IsZero() && !now.Before(c.Fields.ExpiresAt) {
			expired = append(expired, c)
			return false
		}
		return m.due(c, client, now) && !m.backingOff(c.ID, now)
	})
	for _, c := range expired {
		m.markError(c, "the long-lived Instagram token expired; connect the account again")
	}
	sem := make(chan struct{}, refreshWorkers)
	var wg sync.WaitGroup
	for _, c := range due {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			m.refresh(ctx, c.ID, c.Fields.AccessToken, false)
		})
	}
	wg.Wait()
}
