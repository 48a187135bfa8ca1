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
// done, after the refreshes it started have ended.
func (m *Manager) Run(ctx context.Context) {
	m.init()
	t := time.NewTicker(m.ScanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.scan(ctx)
		}
	}
}

// scan renews every credential due now and waits for those refreshes.
func (m *Manager) scan(ctx context.Context) {
	now := m.now()
	sem := make(chan struct{}, refreshWorkers)
	var wg sync.WaitGroup
	for _, c := range m.Store.Credentials("") {
		if !c.Type.IsOAuth2() || c.State != credstore.StateReady {
			continue
		}
		client, err := m.Store.AuthClient(c.AuthClientID)
		if err != nil {
			continue
		}
		if c.Type == credstore.OAuth2Instagram && !c.Fields.ExpiresAt.IsZero() && !now.Before(c.Fields.ExpiresAt) {
			m.markError(c, "the long-lived Instagram token expired; connect the account again")
			continue
		}
		if !m.due(c, client, now) || m.backingOff(c.ID, now) {
			continue
		}
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
