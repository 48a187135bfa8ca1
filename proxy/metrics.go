package proxy

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/authproxy/authproxy/credstore"
)

// Label values of the proxy's metrics. Every label is one of these fixed
// enumerations, never an id, a host, a path or a value, so that no secret
// and no unbounded set of series can reach a metric.
var (
	metricTypes  = [...]string{"none", "noauth", "basic", "api_key", "oauth2", "oauth2_instagram"}
	metricErrors = [...]string{CodeBadRequest, CodeUnknownCred, CodeOriginNotAllowed, CodeNotUsable,
		CodeNeedsReauth, CodeUnreachable, CodeTimeout, CodeInternal, "client_closed"}
	durationBuckets = [...]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
)

// metrics counts what the proxy did, lock-free.
type metrics struct {
	requests [len(metricTypes)][6]atomic.Uint64 // by auth type and status class (index 1..5; 0 for anything else)
	errors   [len(metricErrors)]atomic.Uint64
	attempts atomic.Uint64
	buckets  [len(durationBuckets)]atomic.Uint64 // non-cumulative; summed when written
	count    atomic.Uint64
	sumMicro atomic.Uint64
}

func (m *metrics) observe(ex *exchange, status int, d time.Duration) {
	t := 0
	if ex.cred != nil {
		t = typeIndex(ex.cred.Type)
	}
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	m.requests[t][class].Add(1)
	if ex.code != "" {
		for i, c := range metricErrors {
			if c == ex.code {
				m.errors[i].Add(1)
				break
			}
		}
	}
	m.attempts.Add(uint64(ex.tries))
	secs := d.Seconds()
	for i, le := range durationBuckets {
		if secs <= le {
			m.buckets[i].Add(1)
			break
		}
	}
	m.count.Add(1)
	m.sumMicro.Add(uint64(d.Microseconds()))
}

func typeIndex(t credstore.AuthType) int {
	for i, name := range metricTypes {
		if string(t) == name {
			return i
		}
	}
	return 0
}

// WriteMetrics writes the proxy's counters in the Prometheus text format.
func (p *Proxy) WriteMetrics(w io.Writer) {
	m := &p.metrics
	fmt.Fprintln(w, "# HELP authproxy_requests_total Requests served by the proxy listener, by auth type of the credential used (none when unnamed) and status class.")
	fmt.Fprintln(w, "# TYPE authproxy_requests_total counter")
	for t, name := range metricTypes {
		for class := range 6 {
			if v := m.requests[t][class].Load(); v > 0 {
				label := "other"
				if class > 0 {
					label = fmt.Sprintf("%dxx", class)
				}
				fmt.Fprintf(w, "authproxy_requests_total{type=%q,code=%q} %d\n", name, label, v)
			}
		}
	}
	fmt.Fprintln(w, "# HELP authproxy_proxy_errors_total Answers the proxy gave itself, by X-Authproxy-Error code.")
	fmt.Fprintln(w, "# TYPE authproxy_proxy_errors_total counter")
	for i, code := range metricErrors {
		fmt.Fprintf(w, "authproxy_proxy_errors_total{error=%q} %d\n", code, m.errors[i].Load())
	}
	fmt.Fprintln(w, "# HELP authproxy_upstream_attempts_total Upstream attempts, retries included.")
	fmt.Fprintln(w, "# TYPE authproxy_upstream_attempts_total counter")
	fmt.Fprintf(w, "authproxy_upstream_attempts_total %d\n", m.attempts.Load())
	fmt.Fprintln(w, "# HELP authproxy_request_duration_seconds Time from request to the end of the response.")
	fmt.Fprintln(w, "# TYPE authproxy_request_duration_seconds histogram")
	var cum uint64
	for i, le := range durationBuckets {
		cum += m.buckets[i].Load()
		fmt.Fprintf(w, "authproxy_request_duration_seconds_bucket{le=\"%g\"} %d\n", le, cum)
	}
	n := m.count.Load()
	fmt.Fprintf(w, "authproxy_request_duration_seconds_bucket{le=\"+Inf\"} %d\n", n)
	fmt.Fprintf(w, "authproxy_request_duration_seconds_sum %g\n", float64(m.sumMicro.Load())/1e6)
	fmt.Fprintf(w, "authproxy_request_duration_seconds_count %d\n", n)
}
