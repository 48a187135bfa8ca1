package authflow

import (
	"fmt"
	"io"
	"sync/atomic"
)

// counters of token-endpoint outcomes, for /metrics. Labels are fixed
// words, never an id or a value.
type counters struct {
	refreshed, transient, permanent atomic.Uint64
	connected, connectFailed        atomic.Uint64
}

// WriteMetrics writes the token lifecycle counters in the Prometheus text
// format.
func (m *Manager) WriteMetrics(w io.Writer) {
	c := &m.counters
	fmt.Fprintln(w, "# HELP authproxy_token_refreshes_total Token refreshes by result: refreshed, failed_transient (will retry), failed_permanent (secret needs re-authorization).")
	fmt.Fprintln(w, "# TYPE authproxy_token_refreshes_total counter")
	fmt.Fprintf(w, "authproxy_token_refreshes_total{result=\"refreshed\"} %d\n", c.refreshed.Load())
	fmt.Fprintf(w, "authproxy_token_refreshes_total{result=\"failed_transient\"} %d\n", c.transient.Load())
	fmt.Fprintf(w, "authproxy_token_refreshes_total{result=\"failed_permanent\"} %d\n", c.permanent.Load())
	fmt.Fprintln(w, "# HELP authproxy_oauth_connects_total Accounts connected through the callback, by result.")
	fmt.Fprintln(w, "# TYPE authproxy_oauth_connects_total counter")
	fmt.Fprintf(w, "authproxy_oauth_connects_total{result=\"connected\"} %d\n", c.connected.Load())
	fmt.Fprintf(w, "authproxy_oauth_connects_total{result=\"failed\"} %d\n", c.connectFailed.Load())
}
