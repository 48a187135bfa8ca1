package proxy_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authproxy/authproxy/credstore"
	"github.com/authproxy/authproxy/proxy"
)

// statusThen answers first with status (and header, body) for the first
// `times` requests, then 200 "ok".
func statusThen(status, times int, header http.Header, body string) respondFunc {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		if n <= times {
			for k, v := range header {
				w.Header()[k] = v
			}
			w.WriteHeader(status)
			io.WriteString(w, body)
			return
		}
		io.WriteString(w, "ok")
	}
}

// always answers status with a body naming the attempt.
func always(status int) respondFunc {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(status)
		io.WriteString(w, "attempt "+strconv.Itoa(n))
	}
}

// TestRetries checks which upstream answers are retried, for which
// methods, how often, and what the flow gets back.
func TestRetries(t *testing.T) {
	e := newEnv(t)
	e.start() // MaxRetry 3, RetryDelay 1 ms
	type tc struct {
		name         string
		method       string
		header       http.Header
		body         string
		respond      respondFunc
		wantStatus   int
		wantBody     string
		wantAttempts int
	}
	cases := []tc{
		{name: "GET 503 twice then 200", method: "GET", respond: statusThen(503, 2, nil, "busy"),
			wantStatus: 200, wantBody: "ok", wantAttempts: 3},
		{name: "POST without Idempotency-Key is not retried", method: "POST", body: "order=1", respond: always(503),
			wantStatus: 503, wantBody: "attempt 1", wantAttempts: 1},
		{name: "POST with Idempotency-Key is retried", method: "POST", body: "order=1",
			header: http.Header{"Idempotency-Key": {"k-123"}}, respond: statusThen(503, 1, nil, "busy"),
			wantStatus: 200, wantBody: "ok", wantAttempts: 2},
		{name: "PATCH without Idempotency-Key is not retried", method: "PATCH", body: "x", respond: always(502),
			wantStatus: 502, wantBody: "attempt 1", wantAttempts: 1},
		{name: "PUT is retried", method: "PUT", body: "v=1", respond: statusThen(502, 1, nil, "bad gateway"),
			wantStatus: 200, wantBody: "ok", wantAttempts: 2},
		{name: "DELETE is retried", method: "DELETE", respond: statusThen(504, 1, nil, "timeout"),
			wantStatus: 200, wantBody: "ok", wantAttempts: 2},
		{name: "HEAD is retried", method: "HEAD", respond: statusThen(500, 1, nil, ""),
			wantStatus: 200, wantBody: "", wantAttempts: 2},
		{name: "OPTIONS is retried", method: "OPTIONS", respond: statusThen(503, 1, nil, ""),
			wantStatus: 200, wantBody: "ok", wantAttempts: 2},
		{name: "429 with Retry-After 1 is retried after it", method: "GET",
			respond:    statusThen(429, 1, http.Header{"Retry-After": {"1"}}, "slow down"),
			wantStatus: 200, wantBody: "ok", wantAttempts: 2},
		{name: "429 with Retry-After 120 goes back as it is", method: "GET",
			respond:    statusThen(429, 1, http.Header{"Retry-After": {"120"}}, "slow down"),
			wantStatus: 429, wantBody: "slow down", wantAttempts: 1},
		{name: "503 with Retry-After past 30 s as a date goes back as it is", method: "GET",
			respond:    statusThen(503, 1, http.Header{"Retry-After": {time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}}, "later"),
			wantStatus: 503, wantBody: "later", wantAttempts: 1},
		{name: "X-Authproxy-Retries 0 means one attempt", method: "GET", header: http.Header{proxy.HeaderRetries: {"0"}},
			respond: always(503), wantStatus: 503, wantBody: "attempt 1", wantAttempts: 1},
		{name: "X-Authproxy-Retries 1 means two attempts", method: "GET", header: http.Header{proxy.HeaderRetries: {"1"}},
			respond: always(503), wantStatus: 503, wantBody: "attempt 2", wantAttempts: 2},
		{name: "X-Authproxy-Retries above MaxRetry", method: "GET", header: http.Header{proxy.HeaderRetries: {"5"}},
			respond: always(503), wantStatus: 503, wantBody: "attempt 6", wantAttempts: 6},
		{name: "exhausted retries return the last response", method: "GET", respond: always(503),
			wantStatus: 503, wantBody: "attempt 4", wantAttempts: 4},
	}
	for _, code := range []int{408, 423, 429, 500, 502, 503, 504} {
		cases = append(cases, tc{name: "GET " + strconv.Itoa(code) + " is retried", method: "GET",
			respond: statusThen(code, 1, nil, "no"), wantStatus: 200, wantBody: "ok", wantAttempts: 2})
	}
	for _, code := range []int{400, 401, 403, 404, 409, 501} {
		cases = append(cases, tc{name: "GET " + strconv.Itoa(code) + " is not retried", method: "GET",
			respond: always(code), wantStatus: code, wantBody: "attempt 1", wantAttempts: 1})
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := newUpstream(t, false, c.respond)
			cred := e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{u.origin("http")}})
			path := "/retry/" + strconv.Itoa(i)
			fr := flowRequest{method: c.method, url: "http://" + u.hostPort() + path + "?q=" + queryMarker, header: c.header, user: cred.ID}
			if c.body != "" {
				fr.body = []byte(c.body)
			}
			resp := e.doGo(t, fr)
			if resp.status != c.wantStatus || string(resp.body) != c.wantBody {
				t.Errorf("flow got %d %q, want %d %q", resp.status, resp.body, c.wantStatus, c.wantBody)
			}
			if resp.header.Get(proxy.HeaderError) != "" {
				t.Errorf("an upstream answer came back as the proxy's own error")
			}
			seen := u.to(path)
			if len(seen) != c.wantAttempts {
				t.Errorf("upstream saw %d attempts, want %d", len(seen), c.wantAttempts)
			}
			for _, s := range seen {
				if string(s.body) != c.body || s.method != c.method || s.header.Get("Authorization") != basicValue {
					t.Errorf("attempt got %s body %q Authorization %q", s.method, s.body, s.header.Get("Authorization"))
				}
			}
			if l := e.logFor(t, path); l["attempts"] != float64(c.wantAttempts) || l["status"] != float64(c.wantStatus) {
				t.Errorf("log line %v, want attempts %d status %d", l, c.wantAttempts, c.wantStatus)
			}
		})
	}
}

// TestRetryAfterReplacesBackoff shows that Retry-After, when short enough,
// replaces the backoff: the proxy's RetryDelay is an hour, so the retry can
// only happen within the flow's timeout if the upstream's wait was used.
func TestRetryAfterReplacesBackoff(t *testing.T) {
	e := newEnv(t)
	e.start(func(p *proxy.Proxy) { p.RetryDelay, p.MaxRetry = time.Hour, 1 })
	cases := []struct {
		name       string
		retryAfter func() string
	}{
		{"delay-seconds", func() string { return "1" }},
		{"zero", func() string { return "0" }},
		{"HTTP date", func() string { return time.Now().Add(time.Second).UTC().Format(http.TimeFormat) }},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 1 {
					w.Header().Set("Retry-After", c.retryAfter())
					w.WriteHeader(http.StatusTooManyRequests)
					return
				}
				io.WriteString(w, "ok")
			})
			cred := e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{u.origin("http")}})
			path := "/retry-after/" + strconv.Itoa(i)
			resp := e.doGo(t, flowRequest{method: "GET", url: "http://" + u.hostPort() + path, user: cred.ID})
			if resp.status != http.StatusOK || string(resp.body) != "ok" || u.count() != 2 {
				t.Errorf("flow got %d %q after %d attempts, want 200 \"ok\" after 2", resp.status, resp.body, u.count())
			}
		})
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	return port
}

// TestRetryConnectionRefused checks that a connection that could not be
// made is retried for any method, then reported as the proxy's 502.
func TestRetryConnectionRefused(t *testing.T) {
	e := newEnv(t)
	e.start()
	target := "127.0.0.1:" + closedPort(t)
	cred := e.credential(t, credSpec{typ: credstore.APIKey, credOrigins: []string{"http://" + target}})
	cases := []struct {
		name         string
		method       string
		header       http.Header
		body         string
		wantAttempts int
	}{
		{name: "GET", method: "GET", wantAttempts: 4},
		{name: "POST without Idempotency-Key", method: "POST", body: "never sent", wantAttempts: 4},
		{name: "X-Authproxy-Retries 0", method: "GET", header: http.Header{proxy.HeaderRetries: {"0"}}, wantAttempts: 1},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := "/refused/" + strconv.Itoa(i)
			fr := flowRequest{method: c.method, url: "http://" + target + path + "?q=" + queryMarker, header: c.header, user: cred.ID}
			if c.body != "" {
				fr.body = []byte(c.body)
			}
			resp := e.doGo(t, fr)
			wantProxyError(t, resp, http.StatusBadGateway, proxy.CodeUnreachable)
			if l := e.logFor(t, path); l["attempts"] != float64(c.wantAttempts) || l["error"] != proxy.CodeUnreachable {
				t.Errorf("log line %v, want %d attempts", l, c.wantAttempts)
			}
		})
	}
}

// hidingReader hides its length from net/http, so the body goes chunked.
type hidingReader struct{ r io.Reader }

func (h hidingReader) Read(p []byte) (int, error) { return h.r.Read(p) }

// TestRequestBodies checks that a body of up to 1 MiB is replayed intact on
// retry, and that a larger one streams through intact, once.
func TestRequestBodies(t *testing.T) {
	e := newEnv(t)
	e.start()
	random := func(n int) []byte {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	const mib = 1 << 20
	cases := []struct {
		name         string
		method       string
		header       http.Header
		size         int
		chunked      bool
		respond      respondFunc
		wantStatus   int
		wantAttempts int
	}{
		{name: "1 MiB with Content-Length is replayed", method: "POST", header: http.Header{"Idempotency-Key": {"k-1"}},
			size: mib, respond: statusThen(503, 1, nil, "busy"), wantStatus: 200, wantAttempts: 2},
		{name: "1 MiB chunked is replayed", method: "PUT", size: mib, chunked: true,
			respond: statusThen(503, 2, nil, "busy"), wantStatus: 200, wantAttempts: 3},
		{name: "over 1 MiB with Content-Length streams once", method: "PUT", size: mib + 1,
			respond: always(503), wantStatus: 503, wantAttempts: 1},
		{name: "over 1 MiB chunked streams once", method: "POST", header: http.Header{"Idempotency-Key": {"k-2"}},
			size: 2*mib + 17, chunked: true, respond: always(503), wantStatus: 503, wantAttempts: 1},
		{name: "over 1 MiB succeeds", method: "PUT", size: 3 * mib, chunked: true,
			respond: answer, wantStatus: 200, wantAttempts: 1},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := newUpstream(t, false, c.respond)
			cred := e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{u.origin("http")}})
			path := "/bodies/" + strconv.Itoa(i)
			body := random(c.size)
			want := sha256.Sum256(body)
			var r io.Reader = bytes.NewReader(body)
			if c.chunked {
				r = hidingReader{r}
			}
			req, err := http.NewRequest(c.method, "http://"+u.hostPort()+path, r)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range c.header {
				req.Header[k] = v
			}
			resp := e.send(t, req, cred.ID)
			if resp.status != c.wantStatus {
				t.Fatalf("flow got %d %q, want %d", resp.status, resp.body, c.wantStatus)
			}
			seen := u.to(path)
			if len(seen) != c.wantAttempts {
				t.Errorf("upstream saw %d attempts, want %d", len(seen), c.wantAttempts)
			}
			for n, s := range seen {
				if sha256.Sum256(s.body) != want {
					t.Errorf("attempt %d: upstream got %d bytes that differ from the %d sent", n+1, len(s.body), len(body))
				}
			}
			if l := e.logFor(t, path); l["attempts"] != float64(c.wantAttempts) {
				t.Errorf("log line %v, want %d attempts", l, c.wantAttempts)
			}
		})
	}
}

// TestUpstreamHeaderTimeout checks that an upstream that does not answer
// within ResponseHeaderTimeout gets the proxy's 504, without a retry (the
// request was sent).
func TestUpstreamHeaderTimeout(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	var once sync.Once
	u := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	tr, err := proxy.NewTransport(proxy.TransportOptions{ResponseHeaderTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e.start(func(p *proxy.Proxy) { p.Transport = tr })
	// Registered last so that it runs first: the upstream handler, and the
	// proxy handler waiting on it, return before their listeners close.
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	cred := e.credential(t, credSpec{typ: credstore.OAuth2, credOrigins: []string{u.origin("http")}})
	for _, method := range []string{"GET", "POST"} {
		t.Run(method, func(t *testing.T) {
			path := "/slow/" + strings.ToLower(method)
			resp := e.doGo(t, flowRequest{method: method, url: "http://" + u.hostPort() + path + "?q=" + queryMarker, user: cred.ID})
			wantProxyError(t, resp, http.StatusGatewayTimeout, proxy.CodeTimeout)
			if n := len(u.to(path)); n != 1 {
				t.Errorf("upstream saw %d attempts, want 1", n)
			}
			if l := e.logFor(t, path); l["attempts"] != float64(1) || l["status"] != float64(504) {
				t.Errorf("log line %v", l)
			}
		})
	}
}
