package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authproxy/authproxy/credstore"
	"github.com/authproxy/authproxy/proxy"
)

// Values every test credential carries. None of them may ever show up in a
// log line or in an error body the proxy writes; env.audit checks that after
// every test. The query marker stands for whatever a flow puts in a query
// string, which the log line must leave out too.
const (
	basicUser       = "flow-user"
	secretPassword  = "pw-Zq81-secret-password"
	secretHeaderVal = "key-Hm27-secret-header-value"
	secretAccess    = "tok-Vx55-secret-access-token"
	secretRefresh   = "rt-Pd40-secret-refresh-token"
	secretClient    = "cs-Lb62-secret-client-secret"
	queryMarker     = "qs-Jw93-query-value"
)

var basicValue = "Basic " + base64.StdEncoding.EncodeToString([]byte(basicUser+":"+secretPassword))

var neverShown = map[string]string{
	"password":             secretPassword,
	"api key header value": secretHeaderVal,
	"access token":         secretAccess,
	"refresh token":        secretRefresh,
	"client secret":        secretClient,
	"query string value":   queryMarker,
	"basic header value":   strings.TrimPrefix(basicValue, "Basic "),
}

// ---- the proxy under test ----

// env is one proxy on a loopback listener, over a real store in a temporary
// directory, logging JSON into one buffer for the whole test.
type env struct {
	t    *testing.T
	st   *credstore.Store
	logs *logSink
	p    *proxy.Proxy
	srv  *httptest.Server

	proxied atomic.Int64 // requests sent to the proxy; each must log one line

	mu        sync.Mutex
	errBodies []string // bodies of the proxy's own error answers
}

// newEnv opens the store. Create credentials, then call start.
func newEnv(t *testing.T) *env {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	st, err := credstore.Open(filepath.Join(t.TempDir(), "authproxy.db"), key)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	e := &env{t: t, st: st, logs: newLogSink()}
	// Registered before start's cleanup, so it runs after the listener has
	// closed and every handler has returned.
	t.Cleanup(e.audit)
	return e
}

// start serves the proxy with the test defaults (1 ms retry delay, 3
// retries, a transport from proxy.NewTransport), changed by configure.
func (e *env) start(configure ...func(*proxy.Proxy)) {
	e.t.Helper()
	tr, err := proxy.NewTransport(proxy.TransportOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	p := &proxy.Proxy{
		Store:      e.st,
		Logger:     slog.New(slog.NewJSONHandler(e.logs, nil)),
		RetryDelay: time.Millisecond,
		MaxRetry:   3,
		Transport:  tr,
	}
	for _, f := range configure {
		f(p)
	}
	e.p = p
	e.srv = httptest.NewUnstartedServer(p)
	e.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	e.srv.Start()
	e.t.Cleanup(func() {
		e.srv.Close()
		p.CloseTunnels()
		if t, ok := p.Transport.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
	})
}

// audit checks, once the test is over, that every request sent to the proxy
// logged exactly one well-formed line, and that no secret value and no query
// string reached the log or an error body.
func (e *env) audit() {
	t := e.t
	want := int(e.proxied.Load())
	lines := e.logs.await(5*time.Second, func(l []logLine) bool { return len(l) >= want })
	if len(lines) != want {
		t.Errorf("%d log lines for %d proxied requests:\n%s", len(lines), want, e.logs.String())
	}
	for _, l := range lines {
		checkLogLine(t, l)
	}
	e.mu.Lock()
	all := e.logs.String() + "\n" + strings.Join(e.errBodies, "\n")
	e.mu.Unlock()
	for what, v := range neverShown {
		if strings.Contains(all, v) {
			t.Errorf("the %s appears in the proxy's logs or error bodies", what)
		}
	}
}

// checkLogLine checks the shape of the one line per request.
func checkLogLine(t *testing.T, l logLine) {
	t.Helper()
	if l["msg"] != "proxy" {
		t.Errorf("log line with msg %v, want \"proxy\": %v", l["msg"], l)
		return
	}
	for _, k := range []string{"secret", "method", "host", "path"} {
		if _, ok := l[k].(string); !ok {
			t.Errorf("log line field %s = %#v, want a string: %v", k, l[k], l)
		}
	}
	for _, k := range []string{"status", "attempts", "duration", "bytes"} {
		if n, ok := l[k].(float64); !ok || n < 0 {
			t.Errorf("log line field %s = %#v, want a non-negative number: %v", k, l[k], l)
		}
	}
	if p, _ := l["path"].(string); strings.Contains(p, "?") {
		t.Errorf("log line path %q holds a query", p)
	}
}

// logFor returns the one log line of the request to path.
func (e *env) logFor(t *testing.T, path string) logLine {
	t.Helper()
	match := func(l logLine) bool { return l["path"] == path }
	lines := e.logs.await(5*time.Second, func(ls []logLine) bool { return count(ls, match) > 0 })
	var found []logLine
	for _, l := range lines {
		if match(l) {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d log lines for path %s, want 1:\n%s", len(found), path, e.logs.String())
	}
	return found[0]
}

func count(ls []logLine, match func(logLine) bool) int {
	n := 0
	for _, l := range ls {
		if match(l) {
			n++
		}
	}
	return n
}

// ---- the log buffer ----

type logLine map[string]any

// logSink is the buffer the proxy logs into. Writes come from handler
// goroutines; await lets a test wait for them without sleeping.
type logSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	written chan struct{} // closed and replaced after every write
}

func newLogSink() *logSink { return &logSink{written: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.buf.Write(p)
	close(s.written)
	s.written = make(chan struct{})
	return n, err
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// await returns the log lines as soon as ok accepts them, or when timeout
// has passed.
func (s *logSink) await(timeout time.Duration, ok func([]logLine) bool) []logLine {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		text, written := s.buf.String(), s.written
		s.mu.Unlock()
		lines := parseLines(text)
		if ok(lines) {
			return lines
		}
		select {
		case <-written:
		case <-deadline.C:
			return lines
		}
	}
}

func parseLines(text string) []logLine {
	var out []logLine
	for _, raw := range strings.Split(strings.TrimSpace(text), "\n") {
		if raw == "" {
			continue
		}
		var l logLine
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			l = logLine{"msg": "NOT JSON: " + raw}
		}
		out = append(out, l)
	}
	return out
}

// ---- credentials ----

// credSpec describes a credential and the auth client it uses, both global.
type credSpec struct {
	typ           credstore.AuthType
	clientOrigins []string
	credOrigins   []string
	clientHeader  string // api_key: the auth client's default header name
	credHeader    string // api_key: the credential's own header name
	state         credstore.State
	stateError    string
}

// credential stores an auth client and a credential of s.typ holding the
// secret values above. An api_key credential with no header name anywhere
// gets X-Api-Key.
func (e *env) credential(t *testing.T, s credSpec) *credstore.Credential {
	t.Helper()
	client := &credstore.AuthClient{
		Type:           s.typ,
		Name:           "client " + string(s.typ),
		Scope:          credstore.Scope{Level: credstore.LevelGlobal},
		AllowedOrigins: s.clientOrigins,
	}
	cred := &credstore.Credential{
		Workspace:      "ws1",
		Name:           "secret " + string(s.typ),
		AllowedOrigins: s.credOrigins,
		State:          credstore.StateReady,
	}
	switch s.typ {
	case credstore.Basic:
		cred.Fields.Username, cred.Fields.Password = basicUser, secretPassword
	case credstore.APIKey:
		client.Settings.HeaderName = s.clientHeader
		cred.Fields.HeaderName = s.credHeader
		if s.clientHeader == "" && s.credHeader == "" {
			cred.Fields.HeaderName = "X-Api-Key"
		}
		cred.Fields.HeaderValue = secretHeaderVal
	case credstore.OAuth2:
		client.Settings = credstore.ClientSettings{
			ClientID:     "flow-app",
			ClientSecret: secretClient,
			AuthURI:      "https://auth.example.com/authorize",
			TokenURI:     "https://auth.example.com/token",
		}
		cred.Fields.AccessToken, cred.Fields.RefreshToken = secretAccess, secretRefresh
	}
	if s.state != "" {
		cred.State, cred.Error = s.state, s.stateError
		if s.state == credstore.StatePending {
			cred.Fields.AccessToken, cred.Fields.RefreshToken = "", ""
		}
	}
	ac, err := e.st.CreateAuthClient(client)
	if err != nil {
		t.Fatalf("create auth client: %v", err)
	}
	cred.AuthClientID = ac.ID
	c, err := e.st.CreateCredential(cred)
	if err != nil {
		t.Fatalf("create credential: %v", err)
	}
	return c
}

// credentialHeader is what the upstream must receive for a credential made
// by env.credential with default header names ("" for noauth).
func credentialHeader(typ credstore.AuthType) (name, value string) {
	switch typ {
	case credstore.Basic:
		return "Authorization", basicValue
	case credstore.APIKey:
		return "X-Api-Key", secretHeaderVal
	case credstore.OAuth2:
		return "Authorization", "Bearer " + secretAccess
	}
	return "", ""
}

// ---- upstreams ----

// upstream is a loopback server that records every request it gets.
type upstream struct {
	srv *httptest.Server

	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	method, path, rawPath, query, host string
	header                             http.Header
	body                               []byte
	tls                                bool
}

// respondFunc answers the n-th request (from 1) an upstream got.
type respondFunc func(w http.ResponseWriter, r *http.Request, n int)

// answer is the default upstream answer: 200, X-Upstream: yes, and a body
// naming the path.
func answer(w http.ResponseWriter, r *http.Request, _ int) {
	w.Header().Set("X-Upstream", "yes")
	io.WriteString(w, "upstream answered "+r.URL.Path)
}

func newUpstream(t *testing.T, useTLS bool, respond respondFunc) *upstream {
	t.Helper()
	if respond == nil {
		respond = answer
	}
	u := &upstream{}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("upstream: read body: %v", err)
		}
		u.mu.Lock()
		u.seen = append(u.seen, seenRequest{
			method: r.Method, path: r.URL.Path, rawPath: r.URL.EscapedPath(), query: r.URL.RawQuery,
			host: r.Host, header: r.Header.Clone(), body: body, tls: r.TLS != nil,
		})
		n := len(u.seen)
		u.mu.Unlock()
		respond(w, r, n)
	}))
	u.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshakes refused on purpose
	if useTLS {
		u.srv.StartTLS()
	} else {
		u.srv.Start()
	}
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) hostPort() string { return u.srv.Listener.Addr().String() }

func (u *upstream) port() string {
	_, p, _ := net.SplitHostPort(u.hostPort())
	return p
}

func (u *upstream) origin(scheme string) string { return scheme + "://" + u.hostPort() }

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// to returns the requests the upstream got for path.
func (u *upstream) to(path string) []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []seenRequest
	for _, s := range u.seen {
		if s.path == path {
			out = append(out, s)
		}
	}
	return out
}

// one returns the only request the upstream got for path.
func (u *upstream) one(t *testing.T, path string) seenRequest {
	t.Helper()
	got := u.to(path)
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests for %s, want 1", len(got), path)
	}
	return got[0]
}

// writeCA writes the certificate of a TLS test server to a PEM file.
func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// loopbackDial resolves every host name to 127.0.0.1, and port 443 to
// tlsPort, so that origins with real-looking names can be tested on this
// machine without DNS.
func loopbackDial(tr *http.Transport, tlsPort string) {
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if net.ParseIP(host) == nil {
			host = "127.0.0.1"
			if port == "443" && tlsPort != "" {
				port = tlsPort
			}
		}
		return dial(ctx, network, net.JoinHostPort(host, port))
	}
}

// ---- flows: real clients configured with the proxy ----

type flowRequest struct {
	method string
	url    string
	header http.Header
	body   []byte
	user   string // secret id in the user part of the proxy URL; "" for none
}

type flowResponse struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) proxyURL(user string) *url.URL {
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	if user != "" {
		u.User = url.UserPassword(user, "")
	}
	return u
}

// client returns a net/http client whose transport goes through the proxy,
// naming user in Proxy-Authorization, and trusting roots for https targets.
func (e *env) client(t *testing.T, user string, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{Proxy: http.ProxyURL(e.proxyURL(user))}
	if roots != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// send sends req through the proxy with a net/http client.
func (e *env) send(t *testing.T, req *http.Request, user string) flowResponse {
	t.Helper()
	e.proxied.Add(1)
	resp, err := e.client(t, user, nil).Do(req)
	if err != nil {
		t.Fatalf("%s %s through the proxy: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return e.received(t, flowResponse{status: resp.StatusCode, header: resp.Header, body: body})
}

// doGo sends a flow request with net/http.
func (e *env) doGo(t *testing.T, fr flowRequest) flowResponse {
	t.Helper()
	var body io.Reader
	if fr.body != nil {
		body = bytes.NewReader(fr.body)
	}
	req, err := http.NewRequest(fr.method, fr.url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range fr.header {
		req.Header[k] = vs
	}
	return e.send(t, req, fr.user)
}

// cleanEnv is the environment for child processes without proxy variables,
// which could otherwise send loopback traffic around the proxy.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if lk := strings.ToLower(k); lk == "no_proxy" || strings.HasSuffix(lk, "_proxy") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// doCurl sends a flow request with curl -x.
func (e *env) doCurl(t *testing.T, fr flowRequest) flowResponse {
	t.Helper()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	dir := t.TempDir()
	headFile, bodyFile := filepath.Join(dir, "head"), filepath.Join(dir, "body")
	args := []string{"-sS", "--max-time", "20", "-x", e.proxyURL(fr.user).String(), "-X", fr.method,
		"-D", headFile, "-o", bodyFile, "-w", "%{http_code}"}
	for k, vs := range fr.header {
		for _, v := range vs {
			args = append(args, "-H", k+": "+v)
		}
	}
	if fr.body != nil {
		in := filepath.Join(dir, "request")
		if err := os.WriteFile(in, fr.body, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--data-binary", "@"+in)
	}
	args = append(args, fr.url)
	cmd := exec.Command(curl, args...)
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	e.proxied.Add(1)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl: %v: %s", err, stderr.String())
	}
	status, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("curl status %q: %v", out, err)
	}
	head, err := os.ReadFile(headFile)
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(bodyFile)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return e.received(t, flowResponse{status: status, header: lastHeaderBlock(t, string(head)), body: body})
}

// lastHeaderBlock parses the final header block curl -D wrote.
func lastHeaderBlock(t *testing.T, dump string) http.Header {
	t.Helper()
	blocks := strings.Split(strings.TrimSpace(dump), "\r\n\r\n")
	r := textproto.NewReader(bufio.NewReader(strings.NewReader(blocks[len(blocks)-1] + "\r\n\r\n")))
	if _, err := r.ReadLine(); err != nil {
		t.Fatalf("curl header dump: %v", err)
	}
	h, err := r.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("curl header dump: %v", err)
	}
	return http.Header(h)
}

const pythonFlow = `
import base64, json, sys
import requests
spec = json.loads(sys.argv[1])
s = requests.Session()
s.trust_env = False
r = s.request(spec["method"], spec["url"], headers=spec["headers"],
              data=base64.b64decode(spec["body"]) if spec["body"] else None,
              proxies={"http": spec["proxy"], "https": spec["proxy"]},
              timeout=20, allow_redirects=False)
print(json.dumps({"status": r.status_code, "headers": dict(r.headers),
                  "body": base64.b64encode(r.content).decode()}))
`

var (
	pythonOnce sync.Once
	pythonErr  error
)

// doPython sends a flow request with Python requests.
func (e *env) doPython(t *testing.T, fr flowRequest) flowResponse {
	t.Helper()
	pythonOnce.Do(func() {
		cmd := exec.Command("python3", "-c", "import requests")
		cmd.Env = cleanEnv()
		pythonErr = cmd.Run()
	})
	if pythonErr != nil {
		t.Skipf("python3 with requests is not available: %v", pythonErr)
	}
	headers := map[string]string{}
	for k := range fr.header {
		headers[k] = fr.header.Get(k)
	}
	spec, err := json.Marshal(map[string]any{
		"method": fr.method, "url": fr.url, "headers": headers,
		"body": base64.StdEncoding.EncodeToString(fr.body), "proxy": e.proxyURL(fr.user).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("python3", "-c", pythonFlow, string(spec))
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	e.proxied.Add(1)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python requests: %v: %s", err, stderr.String())
	}
	var res struct {
		Status  int               `json:"status"`
		Headers map[string]string `json:"headers"`
		Body    []byte            `json:"body"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	h := http.Header{}
	for k, v := range res.Headers {
		h.Set(k, v)
	}
	return e.received(t, flowResponse{status: res.Status, header: h, body: res.Body})
}

// received checks the shape of the proxy's own error answers and keeps
// their bodies for audit.
func (e *env) received(t *testing.T, r flowResponse) flowResponse {
	t.Helper()
	code := r.header.Get(proxy.HeaderError)
	if code == "" {
		return r
	}
	e.mu.Lock()
	e.errBodies = append(e.errBodies, string(r.body))
	e.mu.Unlock()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error answer Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Error *struct {
			Code   string `json:"code"`
			Detail string `json:"detail"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Error == nil {
		t.Errorf("error body %q is not {\"error\":{\"code\",\"detail\"}}: %v", r.body, err)
		return r
	}
	if body.Error.Code != code {
		t.Errorf("error body code %q, header %s %q", body.Error.Code, proxy.HeaderError, code)
	}
	if body.Error.Detail == "" {
		t.Errorf("error body %q has no detail", r.body)
	}
	return r
}

// wantProxyError checks that r is the proxy's own answer with status and
// code.
func wantProxyError(t *testing.T, r flowResponse, status int, code string) {
	t.Helper()
	if r.status != status || r.header.Get(proxy.HeaderError) != code {
		t.Errorf("got %d %s=%q (%s), want %d %q", r.status, proxy.HeaderError,
			r.header.Get(proxy.HeaderError), r.body, status, code)
	}
}

// ---- tests ----

// TestAuthTypesAndNaming sends a request with every client, naming the
// credential every way, for every static auth type and OAuth2 with a stored
// token, and checks what the upstream got and what came back.
func TestAuthTypesAndNaming(t *testing.T) {
	e := newEnv(t)
	types := []credstore.AuthType{credstore.NoAuth, credstore.Basic, credstore.APIKey, credstore.OAuth2}
	ups := map[credstore.AuthType]*upstream{}
	creds := map[credstore.AuthType]*credstore.Credential{}
	var routes []proxy.Route
	for _, typ := range types {
		u := newUpstream(t, false, nil)
		c := e.credential(t, credSpec{typ: typ, credOrigins: []string{u.origin("http")}})
		ups[typ], creds[typ] = u, c
		routes = append(routes, proxy.Route{Host: u.hostPort(), Secret: c.ID})
	}
	e.start(func(p *proxy.Proxy) { p.Routes = routes })

	clients := []struct {
		name string
		do   func(*env, *testing.T, flowRequest) flowResponse
	}{
		{"net-http", (*env).doGo},
		{"curl", (*env).doCurl},
		{"python-requests", (*env).doPython},
	}
	namings := []struct {
		name  string
		apply func(fr *flowRequest, id string)
	}{
		{"proxy-url-user", func(fr *flowRequest, id string) { fr.user = id }},
		{"credential-header", func(fr *flowRequest, id string) { fr.header.Set(proxy.HeaderCredential, id) }},
		{"route", func(*flowRequest, string) {}},
	}
	for _, cl := range clients {
		t.Run(cl.name, func(t *testing.T) {
			t.Parallel()
			for _, nm := range namings {
				t.Run(nm.name, func(t *testing.T) {
					for _, typ := range types {
						t.Run(string(typ), func(t *testing.T) {
							t.Parallel()
							u, c := ups[typ], creds[typ]
							path := "/matrix/" + cl.name + "/" + nm.name
							fr := flowRequest{
								method: http.MethodPost,
								url:    "http://" + u.hostPort() + path + "?q=" + queryMarker + "&n=1",
								header: http.Header{"Content-Type": {"text/plain"}, "X-Flow": {"kept"}},
								body:   []byte("payload of " + path),
							}
							nm.apply(&fr, c.ID)
							resp := cl.do(e, t, fr)

							if resp.status != http.StatusOK || string(resp.body) != "upstream answered "+path {
								t.Fatalf("client got %d %q, want 200 from upstream", resp.status, resp.body)
							}
							if resp.header.Get("X-Upstream") != "yes" {
								t.Errorf("client did not get the upstream's headers: %v", resp.header)
							}
							got := u.one(t, path)
							if got.method != http.MethodPost || got.query != "q="+queryMarker+"&n=1" ||
								string(got.body) != "payload of "+path || got.header.Get("X-Flow") != "kept" {
								t.Errorf("upstream got %s %s?%s body %q X-Flow %q",
									got.method, got.path, got.query, got.body, got.header.Get("X-Flow"))
							}
							if got.host != u.hostPort() {
								t.Errorf("upstream Host = %q, want %q", got.host, u.hostPort())
							}
							name, value := credentialHeader(typ)
							if name == "" {
								for _, h := range []string{"Authorization", "X-Api-Key"} {
									if v := got.header.Get(h); v != "" {
										t.Errorf("noauth: upstream got %s: %q", h, v)
									}
								}
							} else if v := got.header.Values(name); len(v) != 1 || v[0] != value {
								t.Errorf("upstream %s = %q, want the credential's", name, v)
							}
							for _, h := range []string{"Proxy-Authorization", proxy.HeaderCredential} {
								if v := got.header.Get(h); v != "" {
									t.Errorf("upstream got %s: %q", h, v)
								}
							}
						})
					}
				})
			}
		})
	}
}

// TestAPIKeyHeaderName checks where an api_key credential's header name
// comes from and that it replaces a header of that name the flow sent.
func TestAPIKeyHeaderName(t *testing.T) {
	e := newEnv(t)
	u := newUpstream(t, false, nil)
	e.start()
	cases := []struct {
		name         string
		clientHeader string
		credHeader   string
		flowSends    http.Header
		wantHeader   string
	}{
		{name: "credential's own name", credHeader: "X-Api-Key", wantHeader: "X-Api-Key"},
		{name: "auth client's default name", clientHeader: "X-Default-Key", wantHeader: "X-Default-Key"},
		{name: "credential's name beats the client's default", clientHeader: "X-Default-Key", credHeader: "X-Own-Key", wantHeader: "X-Own-Key"},
		{name: "lower-case name is sent canonical", credHeader: "x-lower-key", wantHeader: "X-Lower-Key"},
		{name: "replaces a header of the same name the flow sent", credHeader: "X-Api-Key",
			flowSends: http.Header{"X-Api-Key": {"flow-own-value", "second-flow-value"}}, wantHeader: "X-Api-Key"},
		{name: "replaces the flow's header from the client's default", clientHeader: "Authorization",
			flowSends: http.Header{"Authorization": {"Bearer flow-own"}}, wantHeader: "Authorization"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.credential(t, credSpec{typ: credstore.APIKey, clientHeader: tc.clientHeader, credHeader: tc.credHeader,
				credOrigins: []string{u.origin("http")}})
			path := "/apikey/" + string(rune('a'+i))
			h := http.Header{}
			for k, v := range tc.flowSends {
				h[k] = v
			}
			resp := e.doGo(t, flowRequest{method: http.MethodGet, url: "http://" + u.hostPort() + path, header: h, user: c.ID})
			if resp.status != http.StatusOK {
				t.Fatalf("got %d %s", resp.status, resp.body)
			}
			got := u.one(t, path).header
			if v := got.Values(tc.wantHeader); len(v) != 1 || v[0] != secretHeaderVal {
				t.Errorf("upstream %s = %q, want only the secret value", tc.wantHeader, v)
			}
			for _, other := range []string{"X-Api-Key", "X-Default-Key", "X-Own-Key"} {
				if other != tc.wantHeader && got.Get(other) != "" && tc.flowSends.Get(other) == "" {
					t.Errorf("upstream got an unexpected %s", other)
				}
			}
		})
	}
}

// TestOriginSchemeRewrite sends http:// to a credential bound to an https
// origin: the request goes out over TLS, trusted through the CA option;
// without it the proxy reports the upstream unreachable.
func TestOriginSchemeRewrite(t *testing.T) {
	u := newUpstream(t, true, nil)
	ca := writeCA(t, u.srv)
	cases := []struct {
		name       string
		opts       proxy.TransportOptions
		wantStatus int
		wantCode   string
	}{
		{"CA option trusts the upstream", proxy.TransportOptions{CAFile: ca}, http.StatusOK, ""},
		{"system roots only refuse the upstream", proxy.TransportOptions{}, http.StatusBadGateway, proxy.CodeUnreachable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tr, err := proxy.NewTransport(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			e.start(func(p *proxy.Proxy) { p.Transport = tr })
			c := e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{u.origin("https")}})
			path := "/tls/" + strings.ReplaceAll(tc.name, " ", "-")
			resp := e.doGo(t, flowRequest{method: http.MethodGet, url: "http://" + u.hostPort() + path + "?q=" + queryMarker, user: c.ID})
			if tc.wantCode != "" {
				wantProxyError(t, resp, tc.wantStatus, tc.wantCode)
				if n := len(u.to(path)); n != 0 {
					t.Errorf("upstream got %d requests", n)
				}
				return
			}
			if resp.status != tc.wantStatus {
				t.Fatalf("got %d %s", resp.status, resp.body)
			}
			got := u.one(t, path)
			if !got.tls || got.header.Get("Authorization") != basicValue || got.query != "q="+queryMarker {
				t.Errorf("upstream got tls=%v Authorization=%q query=%q", got.tls, got.header.Get("Authorization"), got.query)
			}
		})
	}
}

// TestOrigins checks which targets a credential may be sent to: exact and
// wildcard origins, the auth client's list when the secret has none, and
// "*" for noauth. Host names resolve to this machine (loopbackDial).
func TestOrigins(t *testing.T) {
	plain := newUpstream(t, false, nil)
	secure := newUpstream(t, true, nil)
	other := newUpstream(t, false, nil)
	p := plain.port()
	e := newEnv(t)
	tr, err := proxy.NewTransport(proxy.TransportOptions{CAFile: writeCA(t, secure.srv)})
	if err != nil {
		t.Fatal(err)
	}
	loopbackDial(tr, secure.port())
	e.start(func(px *proxy.Proxy) { px.Transport = tr })

	wildcard := credSpec{typ: credstore.APIKey, credOrigins: []string{"http://*.example.com:" + p}}
	cases := []struct {
		name     string
		spec     credSpec
		target   string // scheme://host:port of the flow's URL
		reach    *upstream
		wantTLS  bool
		wantCode string // "" for success
	}{
		{name: "exact origin", spec: credSpec{typ: credstore.Basic, credOrigins: []string{plain.origin("http")}},
			target: "http://127.0.0.1:" + p, reach: plain},
		{name: "exact origin, other port refused", spec: credSpec{typ: credstore.Basic, credOrigins: []string{plain.origin("http")}},
			target: other.origin("http"), reach: other, wantCode: proxy.CodeOriginNotAllowed},
		{name: "exact origin, other host refused", spec: credSpec{typ: credstore.Basic, credOrigins: []string{plain.origin("http")}},
			target: "http://localhost:" + p, reach: plain, wantCode: proxy.CodeOriginNotAllowed},
		{name: "wildcard, subdomain", spec: wildcard, target: "http://api.example.com:" + p, reach: plain},
		{name: "wildcard, deeper subdomain", spec: wildcard, target: "http://a.b.example.com:" + p, reach: plain},
		{name: "wildcard, upper-case host", spec: wildcard, target: "http://API.Example.COM:" + p, reach: plain},
		{name: "wildcard refuses the apex", spec: wildcard, target: "http://example.com:" + p, reach: plain, wantCode: proxy.CodeOriginNotAllowed},
		{name: "wildcard refuses a look-alike", spec: wildcard, target: "http://evilexample.com:" + p, reach: plain, wantCode: proxy.CodeOriginNotAllowed},
		{name: "wildcard refuses a suffix attack", spec: wildcard, target: "http://api.example.com.evil.test:" + p, reach: plain, wantCode: proxy.CodeOriginNotAllowed},
		{name: "wildcard refuses another port", spec: wildcard, target: "http://api.example.com:" + other.port(), reach: other, wantCode: proxy.CodeOriginNotAllowed},
		{name: "https wildcard turns http into https", spec: credSpec{typ: credstore.OAuth2, credOrigins: []string{"https://*.example.com"}},
			target: "http://api.example.com", reach: secure, wantTLS: true},
		{name: "auth client's origins when the secret has none", spec: credSpec{typ: credstore.Basic, clientOrigins: []string{plain.origin("http")}},
			target: plain.origin("http"), reach: plain},
		{name: "secret's origins replace the client's", spec: credSpec{typ: credstore.Basic, clientOrigins: []string{plain.origin("http")}, credOrigins: []string{other.origin("http")}},
			target: plain.origin("http"), reach: plain, wantCode: proxy.CodeOriginNotAllowed},
		{name: "noauth star, any host over https", spec: credSpec{typ: credstore.NoAuth, credOrigins: []string{"*"}},
			target: "http://anything.example.com", reach: secure, wantTLS: true},
		{name: "noauth star refuses a non-default port", spec: credSpec{typ: credstore.NoAuth, credOrigins: []string{"*"}},
			target: "http://anything.example.com:" + p, reach: plain, wantCode: proxy.CodeOriginNotAllowed},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.credential(t, tc.spec)
			path := "/origins/" + string(rune('a'+i))
			resp := e.doGo(t, flowRequest{method: http.MethodGet, url: tc.target + path + "?q=" + queryMarker, user: c.ID})
			if tc.wantCode != "" {
				wantProxyError(t, resp, http.StatusForbidden, tc.wantCode)
				if n := len(tc.reach.to(path)); n != 0 {
					t.Errorf("refused request reached the upstream %d times", n)
				}
				return
			}
			if resp.status != http.StatusOK {
				t.Fatalf("got %d %s", resp.status, resp.body)
			}
			got := tc.reach.one(t, path)
			if got.tls != tc.wantTLS {
				t.Errorf("upstream tls = %v, want %v", got.tls, tc.wantTLS)
			}
			if name, value := credentialHeader(tc.spec.typ); name != "" && got.header.Get(name) != value {
				t.Errorf("upstream %s = %q", name, got.header.Get(name))
			}
		})
	}
}

// TestProxyErrors checks the proxy's own answers: status, X-Authproxy-Error,
// the JSON body, and that nothing reached the upstream.
func TestProxyErrors(t *testing.T) {
	e := newEnv(t)
	u := newUpstream(t, false, nil)
	e.start()
	bound := []string{u.origin("http")}
	basicB64 := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }

	cases := []struct {
		name       string
		spec       *credSpec // credential named by X-Authproxy-Credential; nil for none
		header     http.Header
		user       string // in the proxy URL
		target     string // default: the upstream
		originForm bool   // send "GET /" to the proxy itself
		wantStatus int
		wantCode   string
	}{
		{name: "origin not allowed", spec: &credSpec{typ: credstore.Basic, credOrigins: []string{"http://127.0.0.1:1"}},
			wantStatus: 403, wantCode: proxy.CodeOriginNotAllowed},
		{name: "https-only origin refuses another host", spec: &credSpec{typ: credstore.OAuth2, credOrigins: []string{"https://api.github.com"}},
			wantStatus: 403, wantCode: proxy.CodeOriginNotAllowed},
		{name: "no allowed_origins anywhere", spec: &credSpec{typ: credstore.Basic},
			wantStatus: 403, wantCode: proxy.CodeNotUsable},
		{name: "noauth with no allowed_origins", spec: &credSpec{typ: credstore.NoAuth},
			wantStatus: 403, wantCode: proxy.CodeNotUsable},
		{name: "unknown secret id in the header", header: http.Header{proxy.HeaderCredential: {credstore.NewID()}},
			wantStatus: 404, wantCode: proxy.CodeUnknownCred},
		{name: "unknown secret id in the proxy URL", user: credstore.NewID(),
			wantStatus: 404, wantCode: proxy.CodeUnknownCred},
		{name: "oauth2 pending", spec: &credSpec{typ: credstore.OAuth2, credOrigins: bound, state: credstore.StatePending},
			wantStatus: 403, wantCode: proxy.CodeNotUsable},
		{name: "oauth2 in error", spec: &credSpec{typ: credstore.OAuth2, credOrigins: bound, state: credstore.StateError, stateError: "invalid_grant: the refresh token was revoked"},
			wantStatus: 503, wantCode: proxy.CodeNeedsReauth},
		{name: "Proxy-Authorization not Basic", header: http.Header{"Proxy-Authorization": {"Bearer " + secretAccess}},
			wantStatus: 400, wantCode: proxy.CodeBadRequest},
		{name: "Proxy-Authorization bad base64", header: http.Header{"Proxy-Authorization": {"Basic %%%not-base64"}},
			wantStatus: 400, wantCode: proxy.CodeBadRequest},
		// "Basic" with nothing after it is malformed, not "no credential".
		{name: "Proxy-Authorization scheme only", header: http.Header{"Proxy-Authorization": {"Basic"}},
			wantStatus: 400, wantCode: proxy.CodeBadRequest},
		{name: "Proxy-Authorization naming an unknown id", header: http.Header{"Proxy-Authorization": {basicB64("no-such-secret:")}},
			wantStatus: 404, wantCode: proxy.CodeUnknownCred},
		{name: "origin-form request", originForm: true,
			wantStatus: 400, wantCode: proxy.CodeBadRequest},
		{name: "retries not a number", header: http.Header{proxy.HeaderRetries: {"lots"}},
			wantStatus: 400, wantCode: proxy.CodeBadRequest},
		{name: "retries negative", header: http.Header{proxy.HeaderRetries: {"-1"}},
			wantStatus: 400, wantCode: proxy.CodeBadRequest},
		{name: "retries over the cap", header: http.Header{proxy.HeaderRetries: {"11"}},
			wantStatus: 400, wantCode: proxy.CodeBadRequest},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := "/errors/" + string(rune('a'+i))
			h := http.Header{}
			for k, v := range tc.header {
				h[k] = v
			}
			if tc.spec != nil {
				h.Set(proxy.HeaderCredential, e.credential(t, *tc.spec).ID)
			}
			var resp flowResponse
			if tc.originForm {
				e.proxied.Add(1)
				r, err := http.Get(e.srv.URL + path + "?q=" + queryMarker)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(r.Body)
				r.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				resp = e.received(t, flowResponse{status: r.StatusCode, header: r.Header, body: body})
			} else {
				resp = e.doGo(t, flowRequest{method: http.MethodGet, url: "http://" + u.hostPort() + path + "?q=" + queryMarker, header: h, user: tc.user})
			}
			wantProxyError(t, resp, tc.wantStatus, tc.wantCode)
			if n := len(u.to(path)); n != 0 {
				t.Errorf("upstream got %d requests", n)
			}
			if l := e.logFor(t, path); l["status"] != float64(tc.wantStatus) || l["error"] != tc.wantCode {
				t.Errorf("log line %v, want status %d error %s", l, tc.wantStatus, tc.wantCode)
			}
		})
	}
}

// TestHeadersStripped checks that hop-by-hop, Proxy-*, X-Authproxy-* and
// forwarding headers the flow sent do not reach the upstream, while its
// end-to-end headers do.
func TestHeadersStripped(t *testing.T) {
	e := newEnv(t)
	u := newUpstream(t, false, nil)
	e.start()
	c := e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{u.origin("http")}})

	cases := []struct {
		name  string
		user  string
		extra http.Header
	}{
		{name: "credential in the proxy URL", user: c.ID},
		{name: "credential in the header", extra: http.Header{proxy.HeaderCredential: {c.ID}}},
		{name: "no credential"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := "/strip/" + string(rune('a'+i))
			h := http.Header{
				"Connection":           {"X-Hop-One, x-hop-two, Keep-Alive"},
				"X-Hop-One":            {"1"},
				"X-Hop-Two":            {"2"},
				"Keep-Alive":           {"timeout=5"},
				"Te":                   {"deflate"},
				"Upgrade":              {"websocket"}, // not named by Connection: no upgrade
				"Proxy-Connection":     {"keep-alive"},
				"Proxy-Custom":         {"for the proxy"},
				proxy.HeaderRetries:    {"2"},
				"X-Authproxy-Anything": {"ours"},
				"X-Forwarded-For":      {"10.1.2.3"},
				"Forwarded":            {"for=10.1.2.3"},
				"X-Keep":               {"end-to-end"},
				"Accept":               {"application/json"},
			}
			for k, v := range tc.extra {
				h[k] = v
			}
			resp := e.doGo(t, flowRequest{method: http.MethodGet, url: "http://" + u.hostPort() + path, header: h, user: tc.user})
			if resp.status != http.StatusOK {
				t.Fatalf("got %d %s", resp.status, resp.body)
			}
			got := u.one(t, path).header
			for _, name := range []string{"Connection", "X-Hop-One", "X-Hop-Two", "Keep-Alive", "Te", "Upgrade",
				"Proxy-Connection", "Proxy-Custom", "Proxy-Authorization", proxy.HeaderRetries, proxy.HeaderCredential,
				"X-Authproxy-Anything", "X-Forwarded-For", "Forwarded"} {
				if v, ok := got[name]; ok {
					t.Errorf("upstream got %s: %q", name, v)
				}
			}
			for k, v := range got {
				if strings.HasPrefix(k, "Proxy-") || strings.HasPrefix(k, "X-Authproxy-") || strings.HasPrefix(k, "X-Forwarded-") {
					t.Errorf("upstream got %s: %q", k, v)
				}
			}
			if got.Get("X-Keep") != "end-to-end" || got.Get("Accept") != "application/json" {
				t.Errorf("end-to-end headers lost: %v", got)
			}
		})
	}
}

// TestNoCredentialForwardedUnchanged checks that a request naming no
// credential goes through like any forward proxy: nothing added, its own
// Authorization kept, plain http kept.
func TestNoCredentialForwardedUnchanged(t *testing.T) {
	e := newEnv(t)
	u := newUpstream(t, false, nil)
	e.start()
	e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{u.origin("http")}}) // bound there, but not named
	path := "/unnamed"
	resp := e.doGo(t, flowRequest{
		method: http.MethodPut,
		url:    "http://" + u.hostPort() + path + "?q=" + queryMarker,
		header: http.Header{"Authorization": {"Bearer flow-own"}, "X-Custom": {"mine"}, "Content-Type": {"application/json"}},
		body:   []byte(`{"flow":"body"}`),
	})
	if resp.status != http.StatusOK || string(resp.body) != "upstream answered "+path {
		t.Fatalf("got %d %q", resp.status, resp.body)
	}
	got := u.one(t, path)
	if got.tls || got.method != http.MethodPut || got.query != "q="+queryMarker || string(got.body) != `{"flow":"body"}` {
		t.Errorf("upstream got tls=%v %s ?%s %q", got.tls, got.method, got.query, got.body)
	}
	if v := got.header.Values("Authorization"); len(v) != 1 || v[0] != "Bearer flow-own" {
		t.Errorf("upstream Authorization = %q, want the flow's own", v)
	}
	if got.header.Get("X-Custom") != "mine" || got.header.Get("X-Api-Key") != "" {
		t.Errorf("upstream headers %v", got.header)
	}
	if l := e.logFor(t, path); l["secret"] != "" || l["status"] != float64(200) {
		t.Errorf("log line %v", l)
	}
}

// TestConnectTunnel checks that CONNECT is a byte pipe: the flow speaks TLS
// to the upstream itself and nothing is injected, even with a credential
// named in the proxy URL.
func TestConnectTunnel(t *testing.T) {
	e := newEnv(t)
	u := newUpstream(t, true, nil)
	e.start()
	c := e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{u.origin("https")}})
	roots := x509.NewCertPool()
	roots.AddCert(u.srv.Certificate())
	cl := e.client(t, c.ID, roots)

	req, err := http.NewRequest(http.MethodGet, "https://"+u.hostPort()+"/tunnel?q="+queryMarker, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Flow", "through the tunnel")
	e.proxied.Add(1) // the CONNECT
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("GET through CONNECT: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "upstream answered /tunnel" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, err)
	}
	got := u.one(t, "/tunnel")
	if !got.tls || got.header.Get("X-Flow") != "through the tunnel" || got.query != "q="+queryMarker {
		t.Errorf("upstream got tls=%v %v", got.tls, got.header)
	}
	for _, h := range []string{"Authorization", "Proxy-Authorization", "X-Api-Key"} {
		if v := got.header.Get(h); v != "" {
			t.Errorf("upstream got %s: %q through a tunnel", h, v)
		}
	}

	// The tunnel logs its line when it closes.
	cl.CloseIdleConnections()
	isConnect := func(l logLine) bool { return l["method"] == http.MethodConnect }
	lines := e.logs.await(5*time.Second, func(ls []logLine) bool { return count(ls, isConnect) > 0 })
	if count(lines, isConnect) != 1 {
		t.Fatalf("no single CONNECT log line:\n%s", e.logs.String())
	}
	for _, l := range lines {
		if isConnect(l) && (l["host"] != u.hostPort() || l["status"] != float64(200) || l["secret"] != "" || l["bytes"] == float64(0)) {
			t.Errorf("CONNECT log line %v", l)
		}
	}
}

// TestResponseStreaming checks that the flow gets what the upstream flushed
// while the upstream is still writing.
func TestResponseStreaming(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	u := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {
		io.WriteString(w, "first\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("upstream flush: %v", err)
		}
		select {
		case <-release:
			io.WriteString(w, "second\n")
		case <-r.Context().Done():
		}
	})
	e.start()
	// Registered last so that it runs first: the upstream handler, and the
	// proxy handler waiting on it, return before their listeners close.
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	c := e.credential(t, credSpec{typ: credstore.APIKey, credOrigins: []string{u.origin("http")}})

	req, err := http.NewRequest(http.MethodGet, "http://"+u.hostPort()+"/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		resp  *http.Response
		br    *bufio.Reader
		first string
		err   error
	}
	got := make(chan result, 1)
	e.proxied.Add(1)
	cl := e.client(t, c.ID, nil)
	go func() {
		resp, err := cl.Do(req)
		if err != nil {
			got <- result{err: err}
			return
		}
		br := bufio.NewReader(resp.Body)
		s, err := br.ReadString('\n')
		got <- result{resp, br, s, err}
	}()
	var br *bufio.Reader
	select {
	case r := <-got:
		if r.err != nil || r.first != "first\n" {
			t.Fatalf("first chunk %q, %v", r.first, r.err)
		}
		defer r.resp.Body.Close()
		br = r.br
	case <-time.After(10 * time.Second):
		t.Fatal("the first chunk did not reach the flow while the upstream was still writing")
	}
	releaseOnce.Do(func() { close(release) })
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
	if l := e.logFor(t, "/stream"); l["bytes"] != float64(len("first\nsecond\n")) {
		t.Errorf("log line bytes %v, want %d", l["bytes"], len("first\nsecond\n"))
	}
}

// TestLogLine checks the fields of the one line per request.
func TestLogLine(t *testing.T) {
	e := newEnv(t)
	u := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "created")
	})
	e.start()
	c := e.credential(t, credSpec{typ: credstore.OAuth2, credOrigins: []string{u.origin("http")}})
	resp := e.doGo(t, flowRequest{method: http.MethodPost, url: "http://" + u.hostPort() + "/log/line?q=" + queryMarker + "&token=" + secretAccess,
		body: []byte("x"), user: c.ID})
	if resp.status != http.StatusCreated {
		t.Fatalf("got %d %s", resp.status, resp.body)
	}
	l := e.logFor(t, "/log/line")
	want := logLine{"msg": "proxy", "level": "INFO", "secret": c.ID, "method": "POST", "host": u.hostPort(),
		"path": "/log/line", "status": float64(201), "attempts": float64(1), "bytes": float64(len("created"))}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("log %s = %#v, want %#v", k, l[k], v)
		}
	}
	if d, ok := l["duration"].(float64); !ok || d <= 0 {
		t.Errorf("log duration = %#v, want a positive number", l["duration"])
	}
	if _, ok := l["error"]; ok {
		t.Errorf("log line of a success has an error: %v", l)
	}
}

// TestTargetPreserved checks that the path and query reach the upstream
// byte for byte, escapes included.
func TestTargetPreserved(t *testing.T) {
	e := newEnv(t)
	u := newUpstream(t, false, nil)
	e.start()
	c := e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{u.origin("http")}})
	cases := []struct {
		name, target, wantPath, wantQuery string
	}{
		{"plain", "/v1/items?q=" + queryMarker, "/v1/items", "q=" + queryMarker},
		{"escaped slash", "/v1/a%2Fb/c", "/v1/a%2Fb/c", ""},
		{"escaped space and unicode", "/v1/a%20b/%C3%A9", "/v1/a%20b/%C3%A9", ""},
		{"repeated and empty parameters", "/v1/list?a=1&a=2&b=&c", "/v1/list", "a=1&a=2&b=&c"},
		{"escaped query", "/v1/search?q=a%26b%3Dc&x=%2B", "/v1/search", "q=a%26b%3Dc&x=%2B"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.doGo(t, flowRequest{method: http.MethodGet, url: "http://" + u.hostPort() + tc.target, user: c.ID})
			if resp.status != http.StatusOK {
				t.Fatalf("got %d %s", resp.status, resp.body)
			}
			var found bool
			for _, s := range u.to(mustUnescape(t, tc.wantPath)) {
				if s.rawPath == tc.wantPath && s.query == tc.wantQuery {
					found = true
				}
			}
			if !found {
				t.Errorf("upstream did not get %s?%s; it got %v", tc.wantPath, tc.wantQuery, u.to(mustUnescape(t, tc.wantPath)))
			}
		})
	}
}

func mustUnescape(t *testing.T, p string) string {
	t.Helper()
	s, err := url.PathUnescape(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOriginIPv6 checks an origin with an IPv6 literal.
func TestOriginIPv6(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	u := &upstream{}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, seenRequest{method: r.Method, path: r.URL.Path, host: r.Host, header: r.Header.Clone()})
		u.mu.Unlock()
		answer(w, r, 0)
	}))
	u.srv.Listener.Close()
	u.srv.Listener = l
	u.srv.Start()
	t.Cleanup(u.srv.Close)

	e := newEnv(t)
	e.start()
	c := e.credential(t, credSpec{typ: credstore.APIKey, credOrigins: []string{u.origin("http")}})
	resp := e.doGo(t, flowRequest{method: http.MethodGet, url: "http://" + u.hostPort() + "/v6", user: c.ID})
	if resp.status != http.StatusOK {
		t.Fatalf("got %d %s", resp.status, resp.body)
	}
	if got := u.one(t, "/v6"); got.header.Get("X-Api-Key") != secretHeaderVal || got.host != u.hostPort() {
		t.Errorf("upstream got Host %q X-Api-Key %q", got.host, got.header.Get("X-Api-Key"))
	}
}

// TestConnectErrors checks the proxy's own answers to a CONNECT it cannot
// serve, sent over a raw connection so that the answer can be read.
func TestConnectErrors(t *testing.T) {
	e := newEnv(t)
	e.start()
	cases := []struct {
		name       string
		authority  string
		wantStatus int
		wantCode   string
	}{
		{"closed port", "127.0.0.1:" + closedPort(t), http.StatusBadGateway, proxy.CodeUnreachable},
		{"no port", "example.com", http.StatusBadRequest, proxy.CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			e.proxied.Add(1)
			if _, err := io.WriteString(conn, "CONNECT "+tc.authority+" HTTP/1.1\r\nHost: "+tc.authority+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			r, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
			r.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			wantProxyError(t, e.received(t, flowResponse{status: r.StatusCode, header: r.Header, body: body}), tc.wantStatus, tc.wantCode)
		})
	}
}

// TestUpgradeAndTrailersKept checks the two hop-by-hop exceptions that
// httputil.ReverseProxy makes on purpose and the proxy keeps: a protocol
// upgrade (WebSocket) and "Te: trailers" (gRPC).
func TestUpgradeAndTrailersKept(t *testing.T) {
	e := newEnv(t)
	u := newUpstream(t, false, nil)
	e.start()
	c := e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{u.origin("http")}})
	h := http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"websocket"}, "Te": {"trailers, deflate"}}
	resp := e.doGo(t, flowRequest{method: http.MethodGet, url: "http://" + u.hostPort() + "/upgrade", header: h, user: c.ID})
	if resp.status != http.StatusOK {
		t.Fatalf("got %d %s", resp.status, resp.body)
	}
	got := u.one(t, "/upgrade").header
	if got.Get("Upgrade") != "websocket" || !strings.EqualFold(got.Get("Connection"), "Upgrade") || got.Get("Te") != "trailers" {
		t.Fatalf("upstream got Upgrade %q Connection %q Te %q", got.Get("Upgrade"), got.Get("Connection"), got.Get("Te"))
	}
	if got.Get("Authorization") == "" {
		t.Fatal("the credential was not added to an upgrade request")
	}
}

// TestUpstreamCannotPoseAsTheProxy checks that an upstream's own
// X-Authproxy-* headers never reach the flow, so that X-Authproxy-Error
// always means the proxy itself answered.
func TestUpstreamCannotPoseAsTheProxy(t *testing.T) {
	e := newEnv(t)
	u := newUpstream(t, false, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("X-Authproxy-Error", proxy.CodeNeedsReauth)
		w.Header().Set("X-Authproxy-Other", "x")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	e.start()
	c := e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{u.origin("http")}})
	resp := e.doGo(t, flowRequest{method: http.MethodPost, url: "http://" + u.hostPort() + "/pose", user: c.ID})
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want the upstream's 503", resp.status)
	}
	if v := resp.header.Get("X-Authproxy-Error"); v != "" {
		t.Fatalf("the flow saw X-Authproxy-Error %q from the upstream", v)
	}
	if v := resp.header.Get("X-Authproxy-Other"); v != "" {
		t.Fatalf("the flow saw X-Authproxy-Other %q from the upstream", v)
	}
}
