package admin

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/authproxy/authproxy/credstore"
)

// MetricsWriter is a part of the sidecar that reports counters in the
// Prometheus text format (the proxy, the OAuth2 manager).
type MetricsWriter interface {
	WriteMetrics(w io.Writer)
}

// metrics serves GET /metrics: the store's gauges and every MetricsWriter's
// counters. It holds counts only, with labels from fixed sets (type, state,
// status class, error code), never an id or a value.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	states := map[credstore.State]int{credstore.StateReady: 0, credstore.StatePending: 0, credstore.StateError: 0}
	s.Store.CredentialsWhere(func(c *credstore.Credential, _ *credstore.AuthClient) bool {
		states[c.State]++ // counted in place: nothing is kept
		return false
	})
	fmt.Fprintln(&b, "# HELP authproxy_secrets Stored secrets by state.")
	fmt.Fprintln(&b, "# TYPE authproxy_secrets gauge")
	for _, st := range []credstore.State{credstore.StateReady, credstore.StatePending, credstore.StateError} {
		fmt.Fprintf(&b, "authproxy_secrets{state=%q} %d\n", st, states[st])
	}
	fmt.Fprintln(&b, "# HELP authproxy_auth_clients Stored auth clients.")
	fmt.Fprintln(&b, "# TYPE authproxy_auth_clients gauge")
	fmt.Fprintf(&b, "authproxy_auth_clients %d\n", len(s.Store.AuthClients()))
	for _, m := range s.Metrics {
		m.WriteMetrics(&b)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(b.Bytes())
}
