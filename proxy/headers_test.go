package proxy

// The package's internal rules, tested directly: stripHeaders (the one place
// the header rules live) and retryAfter (the parsing of Retry-After). The
// end-to-end tests in proxy_test.go and retry_test.go show the same rules
// through the listener.

import (
	"net/http"
	"slices"
	"testing"
	"time"
)

func TestStripHeaders(t *testing.T) {
	cases := []struct {
		name string
		in   http.Header
		want []string // the names left, sorted
	}{
		{
			name: "hop-by-hop fields of RFC 9110 7.6.1",
			in: http.Header{
				"Connection": {"keep-alive"}, "Proxy-Connection": {"keep-alive"}, "Keep-Alive": {"timeout=5"},
				"Te": {"trailers"}, "Trailer": {"X-Sum"}, "Transfer-Encoding": {"chunked"}, "Upgrade": {"websocket"},
				"Accept": {"*/*"},
			},
			want: []string{"Accept"},
		},
		{
			name: "fields Connection names",
			in: http.Header{
				"Connection": {"X-Hop-One, x-hop-two ,close"}, "X-Hop-One": {"1"}, "X-Hop-Two": {"2"}, "X-Keep": {"3"},
			},
			want: []string{"X-Keep"},
		},
		{
			name: "Connection over several lines",
			in: http.Header{
				"Connection": {"X-A", "X-B,,"}, "X-A": {"a"}, "X-B": {"b"}, "X-C": {"c"},
			},
			want: []string{"X-C"},
		},
		{
			name: "every Proxy- field",
			in: http.Header{
				"Proxy-Authorization": {"Basic abc="}, "Proxy-Authenticate": {"x"}, "Proxy-Anything": {"y"},
				"Proxyish": {"not a Proxy- field"},
			},
			want: []string{"Proxyish"},
		},
		{
			name: "every X-Authproxy- field",
			in: http.Header{
				"X-Authproxy-Credential": {"id"}, "X-Authproxy-Retries": {"2"}, "X-Authproxy-Error": {"e"},
				"X-Authproxy-Future": {"f"}, "X-Authproxyish": {"kept"},
			},
			want: []string{"X-Authproxyish"},
		},
		{
			name: "non-canonical keys set directly",
			in: http.Header{
				"proxy-authorization": {"Basic abc="}, "x-authproxy-credential": {"id"}, "PROXY-FOO": {"x"}, "X-Keep": {"k"},
			},
			want: []string{"X-Keep"},
		},
		{
			name: "X-Forwarded-For",
			in:   http.Header{"X-Forwarded-For": {"10.0.0.1"}, "Accept": {"*/*"}},
			want: []string{"Accept"},
		},
		{
			name: "end-to-end fields kept",
			in: http.Header{
				"Authorization": {"Bearer flow"}, "Cookie": {"a=b"}, "Content-Type": {"text/plain"},
				"Idempotency-Key": {"k"}, "X-Api-Key": {"v"}, "Accept-Encoding": {"gzip"},
			},
			want: []string{"Accept-Encoding", "Authorization", "Content-Type", "Cookie", "Idempotency-Key", "X-Api-Key"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.in.Clone()
			stripHeaders(h)
			var got []string
			for k := range h {
				got = append(got, k)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("left %q, want %q", got, tc.want)
			}
			for _, k := range got {
				if !slices.Equal(h[k], tc.in[k]) {
					t.Errorf("%s changed from %q to %q", k, tc.in[k], h[k])
				}
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	date := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(http.TimeFormat) }
	cases := []struct {
		name     string
		in       string
		min, max time.Duration // the wait returned, when ok
		ok       bool
	}{
		{name: "absent: use the backoff", in: "", ok: true},
		{name: "zero: go now", in: "0", min: time.Millisecond, max: time.Millisecond, ok: true},
		{name: "one second", in: "1", min: time.Second, max: time.Second, ok: true},
		{name: "thirty seconds is the most waited", in: "30", min: 30 * time.Second, max: 30 * time.Second, ok: true},
		{name: "thirty-one seconds goes back to the flow", in: "31", ok: false},
		{name: "two minutes goes back to the flow", in: "120", ok: false},
		{name: "negative is unusable: use the backoff", in: "-5", ok: true},
		{name: "not a number or a date: use the backoff", in: "soon", ok: true},
		{name: "date ten seconds ahead", in: date(10 * time.Second), min: 8 * time.Second, max: 10 * time.Second, ok: true},
		{name: "date in the past: go now", in: date(-time.Hour), min: time.Millisecond, max: time.Millisecond, ok: true},
		{name: "date two minutes ahead goes back to the flow", in: date(2 * time.Minute), ok: false},
		// A number too large for int64 is still a number of seconds.
		{name: "seconds past int64 go back to the flow", in: "99999999999999999999", ok: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := retryAfter(tc.in)
			if ok != tc.ok {
				t.Fatalf("retryAfter(%q) ok = %v, want %v", tc.in, ok, tc.ok)
			}
			if ok && (d < tc.min || d > tc.max) {
				t.Errorf("retryAfter(%q) = %v, want between %v and %v", tc.in, d, tc.min, tc.max)
			}
		})
	}
}
