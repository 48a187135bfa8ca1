package authflow

import (
	"context"
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
			m.mu.Lock()
			m.closing = true // no refresh starts after this: Wait is safe
			m.mu.Unlock()
			m.running.Wait()
			return
		case <-t.C:
			m.scan(ctx)
		}
	}
}

// scan starts a refresh for every credential due now, up to
// refreshWorkers at once across scans. It does not wait for them: one slow
// token endpoint must not hold up the others. A credential whose refresh is
// under way, or that found no free slot, is looked at again next scan.
func (m *Manager) scan(ctx context.Context) {
	now := m.now()
	var expired []*credstore.Credential
	due := m.Store.CredentialsWhere(func(c *credstore.Credential, client *credstore.AuthClient) bool {
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
	for _, c := range due {
		m.mu.Lock()
		busy := m.flights[c.ID] != nil
		m.mu.Unlock()
		if busy {
			continue
		}
		select {
		case m.slots <- struct{}{}:
		default:
			return // all slots busy: the rest wait for the next scan
		}
		go func() {
			defer func() { <-m.slots }()
			m.refresh(context.WithoutCancel(ctx), c.ID, c.Fields.AccessToken, false)
		}()
	}
}
