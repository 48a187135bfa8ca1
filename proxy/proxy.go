// Package proxy is the sidecar's forward proxy: it finds the credential a
// flow's request names, checks that the target is one the credential is
// bound to, adds the credential's header, and forwards the request upstream
// with retries, streaming the response back.
package proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/authproxy/authproxy/authflow"
	"github.com/authproxy/authproxy/credstore"
)

// Headers a flow may send to steer the sidecar. They are never forwarded.
const (
	HeaderCredential = "X-Authproxy-Credential" // names the credential (secret id)
	HeaderRetries    = "X-Authproxy-Retries"    // overrides the retry count for one request
	HeaderError      = "X-Authproxy-Error"      // set on the proxy's own error responses
)

// Error codes of the proxy's own responses (X-Authproxy-Error and the JSON
// body). They are stable: operators alert on them.
const (
	CodeBadRequest       = "bad_request"
	CodeUnknownCred      = "unknown_credential"
	CodeOriginNotAllowed = "origin_not_allowed"
	CodeNotUsable        = "credential_not_usable"
	CodeNeedsReauth      = "credential_needs_reauthorization"
	CodeUnreachable      = "upstream_unreachable"
	CodeTimeout          = "upstream_timeout"
	CodeInternal         = "internal_error"
	CodeTokenUnavailable = "token_unavailable"
)

// TokenSource supplies OAuth2 access tokens. Token returns the token to use
// for c, refreshing it first when it is expired or about to expire. Rejected
// is called when upstream answered 401 to token: it refreshes once if token
// is still the stored one and returns the new token, or "" when the 401
// should go back to the flow as it is. Both return an error wrapping
// authflow.ErrNeedsReauth when the account must be connected again.
type TokenSource interface {
	Token(ctx context.Context, c *credstore.Credential, client *credstore.AuthClient) (string, error)
	Rejected(ctx context.Context, c *credstore.Credential, client *credstore.AuthClient, token string) (string, error)
}

// Route maps an upstream host (as the flow writes it, "api.github.com" or
// "127.0.0.1:9401") to the credential used when the request names none.
type Route struct {
	Host   string `json:"host"`
	Secret string `json:"secret"`
}

// Proxy is the forward-proxy handler for flows. Its fields are its
// configuration; set them before serving and do not change them after.
type Proxy struct {
	// Store holds the credentials. Required.
	Store *credstore.Store

	// Transport sends requests upstream. nil means a transport made by
	// NewTransport with default options.
	Transport http.RoundTripper

	// Tokens supplies OAuth2 access tokens. nil means the stored access
	// token is used as it is, with no refresh.
	Tokens TokenSource

	// Routes choose a credential by upstream host for requests that name
	// none.
	Routes []Route

	// MaxRetry is the number of retries after the first attempt; a request's
	// X-Authproxy-Retries header overrides it (up to MaxRetryCap).
	MaxRetry int

	// RetryDelay is the base of the exponential backoff between attempts.
	// Zero means 250 ms.
	RetryDelay time.Duration

	// Logger receives one line per request. nil means slog.Default().
	Logger *slog.Logger

	once    sync.Once
	metrics metrics
	rp      *httputil.ReverseProxy
	routes  map[string]string
	tun     tunnels
}

// MaxRetryCap bounds X-Authproxy-Retries.
const MaxRetryCap = 10

// maxReplayBody is the largest request body kept in memory for replay;
// larger bodies stream and are not retried.
const maxReplayBody = 1 << 20

func (p *Proxy) init() {
	p.once.Do(func() {
		if p.Transport == nil {
			t, err := NewTransport(TransportOptions{})
			if err != nil {
				panic(err) // no CA file, so it cannot fail
			}
			p.Transport = t
		}
		p.MaxRetry = max(0, min(p.MaxRetry, MaxRetryCap))
		if p.RetryDelay <= 0 {
			p.RetryDelay = 250 * time.Millisecond
		}
		if p.Logger == nil {
			p.Logger = slog.Default()
		}
		p.routes = make(map[string]string, len(p.Routes))
		for _, r := range p.Routes {
			p.routes[strings.ToLower(r.Host)] = r.Secret
		}
		p.rp = &httputil.ReverseProxy{
			Rewrite:        rewrite,
			ModifyResponse: stripResponse,
			Transport:      &retryTransport{p: p},
			BufferPool:     bufferPool{},
			ErrorHandler:   p.upstreamError,
			ErrorLog:       slog.NewLogLogger(p.Logger.Handler(), slog.LevelDebug),
		}
	})
}

// exchange is what the proxy knows about one request while it is under way.
type exchange struct {
	cred    *credstore.Credential // nil when the request names none
	client  *credstore.AuthClient
	scheme  string // upstream scheme
	host    string // upstream host[:port]
	header  string // credential header name, "" for none
	value   string // credential header value
	token   string // the OAuth2 access token sent, for a 401
	body    []byte // request body kept for replay
	replay  bool   // the body (if any) can be sent again
	retries int
	tries   int
	code    string // the proxy's own error code, if it answered itself
}

type ctxKey struct{}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.init()
	start := time.Now()
	if r.Method == http.MethodConnect {
		p.tunnel(w, r, start)
		return
	}
	lw := &logWriter{ResponseWriter: w}
	ex := &exchange{retries: p.MaxRetry}
	defer func() { p.logRequest(r, ex, lw, start) }()

	if !r.URL.IsAbs() || r.URL.Host == "" || (r.URL.Scheme != "http" && r.URL.Scheme != "https") {
		p.fail(lw, ex, http.StatusBadRequest, CodeBadRequest, "this is a forward proxy: send absolute-form requests (set HTTP_PROXY to this address)")
		return
	}
	if v := r.Header.Get(HeaderRetries); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > MaxRetryCap {
			p.fail(lw, ex, http.StatusBadRequest, CodeBadRequest, HeaderRetries+" must be a whole number from 0 to "+strconv.Itoa(MaxRetryCap))
			return
		}
		ex.retries = n
	}
	id, ok := p.credentialID(r)
	if !ok {
		p.fail(lw, ex, http.StatusBadRequest, CodeBadRequest, "Proxy-Authorization must be Basic with the secret id as user name")
		return
	}
	ex.scheme, ex.host = r.URL.Scheme, r.URL.Host
	if id != "" {
		if status, code, detail := p.bind(r.Context(), ex, id, r.URL); code != "" {
			p.fail(lw, ex, status, code, detail)
			return
		}
	}
	if err := ex.keepBody(r, ex.retries > 0 || ex.token != ""); err != nil {
		p.fail(lw, ex, http.StatusBadRequest, CodeBadRequest, "could not read the request body")
		return
	}
	p.rp.ServeHTTP(lw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, ex)))
}

// credentialID returns the secret id the request names: X-Authproxy-Credential,
// else the user of Proxy-Authorization: Basic, else a route for the host;
// "" for none. ok is false when Proxy-Authorization is malformed.
func (p *Proxy) credentialID(r *http.Request) (id string, ok bool) {
	if id := r.Header.Get(HeaderCredential); id != "" {
		return id, true
	}
	if pa := r.Header.Get("Proxy-Authorization"); pa != "" {
		scheme, enc, _ := strings.Cut(pa, " ")
		if !strings.EqualFold(scheme, "Basic") || strings.TrimSpace(enc) == "" {
			return "", false
		}
		dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
		if err != nil {
			return "", false
		}
		// The password part is reserved for a caller key.
		user, _, _ := bytes.Cut(dec, []byte(":"))
		if len(user) > 0 {
			return string(user), true
		}
	}
	if len(p.routes) > 0 {
		host := strings.ToLower(r.URL.Host)
		if id, ok := p.routes[host]; ok {
			return id, true
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			return p.routes[h], true
		}
	}
	return "", true
}

// bind loads credential id, checks that it may go to u, and fills ex with the
// upstream scheme and host and the header to add. On refusal it returns the
// status, code and detail of the answer.
func (p *Proxy) bind(ctx context.Context, ex *exchange, id string, u *url.URL) (int, string, string) {
	cred, client, err := p.Store.CredentialWithClient(id)
	if err != nil {
		return http.StatusNotFound, CodeUnknownCred, "no secret with this id"
	}
	ex.cred, ex.client = cred, client
	switch cred.State {
	case credstore.StateError:
		return http.StatusServiceUnavailable, CodeNeedsReauth, "the account behind this secret must be connected again: " + cred.Error
	case credstore.StatePending:
		return http.StatusForbidden, CodeNotUsable, "this secret has no token yet: connect the account first"
	}
	origins := credstore.EffectiveOrigins(cred, client)
	if len(origins) == 0 {
		return http.StatusForbidden, CodeNotUsable, "neither this secret nor its auth client lists allowed_origins, so it may be sent nowhere"
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	o, ok := credstore.MatchOrigin(origins, host, port)
	if !ok {
		return http.StatusForbidden, CodeOriginNotAllowed, "this secret may not be sent to " + hostPort(host, port)
	}
	ex.scheme = o.Scheme
	switch cred.Type {
	case credstore.Basic:
		ex.header = "Authorization"
		ex.value = "Basic " + base64.StdEncoding.EncodeToString([]byte(cred.Fields.Username+":"+cred.Fields.Password))
	case credstore.APIKey:
		ex.header = cred.Fields.HeaderName
		if ex.header == "" {
			ex.header = client.Settings.HeaderName
		}
		ex.value = cred.Fields.HeaderValue
	case credstore.OAuth2, credstore.OAuth2Instagram:
		tok := cred.Fields.AccessToken
		if p.Tokens != nil {
			if tok, err = p.Tokens.Token(ctx, cred, client); err != nil {
				if errors.Is(err, authflow.ErrNeedsReauth) {
					return http.StatusServiceUnavailable, CodeNeedsReauth, "the account behind this secret must be connected again"
				}
				return http.StatusServiceUnavailable, CodeTokenUnavailable, "no valid access token could be obtained from the token endpoint; try again later"
			}
		}
		ex.header, ex.value, ex.token = "Authorization", "Bearer "+tok, tok
	}
	return 0, "", ""
}

func hostPort(host, port string) string {
	if port == "" {
		return host
	}
	return net.JoinHostPort(host, port)
}

// keepBody reads a body of up to maxReplayBody into memory so that it can
// be sent again, when it may be (want: retries are allowed, or an OAuth2
// 401 may be replayed); a larger one is put back together and streams,
// once.
func (ex *exchange) keepBody(r *http.Request, want bool) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		ex.replay = true
		return nil
	}
	if !want || r.ContentLength > maxReplayBody {
		return nil
	}
	var b bytes.Buffer
	if r.ContentLength > 0 {
		b.Grow(int(r.ContentLength) + 1) // +1: ReadFrom's probe for EOF
	}
	if _, err := b.ReadFrom(io.LimitReader(r.Body, maxReplayBody+1)); err != nil {
		return err
	}
	buf := b.Bytes()
	if len(buf) > maxReplayBody {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return nil
	}
	r.Body.Close()
	ex.body, ex.replay = buf, true
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.ContentLength = int64(len(buf))
	return nil
}

// rewrite shapes the outbound request: upstream URL, headers stripped, the
// credential's header set (replacing one of that name the flow sent).
func rewrite(pr *httputil.ProxyRequest) {
	ex := pr.In.Context().Value(ctxKey{}).(*exchange)
	out := pr.Out
	out.URL.Scheme, out.URL.Host = ex.scheme, ex.host
	out.Host = ""
	stripHeaders(out.Header)
	// ReverseProxy keeps "Te: trailers" (gRPC needs it) and the upgrade of
	// a protocol switch (WebSocket) on purpose; stripHeaders removed them
	// with the other hop-by-hop fields, so they are put back as it does.
	if headerHasToken(pr.In.Header, "Te", "trailers") {
		out.Header.Set("Te", "trailers")
	}
	if up := pr.In.Header.Get("Upgrade"); up != "" && headerHasToken(pr.In.Header, "Connection", "upgrade") {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", up)
	}
	if ex.header != "" {
		out.Header.Set(ex.header, ex.value)
	}
	if ex.body != nil {
		// Lets net/http resend the body when a pooled connection turns out
		// dead before anything was written, and send() replay it.
		body := ex.body
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
}

// stripResponse removes X-Authproxy-* from upstream answers: only the proxy
// itself may say X-Authproxy-Error, or a third party could pose as it.
func stripResponse(resp *http.Response) error {
	for name := range resp.Header {
		if hasPrefixFold(name, "X-Authproxy-") {
			delete(resp.Header, name)
		}
	}
	return nil
}

// fail writes the proxy's own error answer.
func (p *Proxy) fail(w http.ResponseWriter, ex *exchange, status int, code, detail string) {
	ex.code = code
	writeError(w, status, code, detail)
}

func writeError(w http.ResponseWriter, status int, code, detail string) {
	h := w.Header()
	h.Set(HeaderError, code)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	var b bytes.Buffer
	b.WriteString(`{"error":{"code":`)
	b.WriteString(strconv.Quote(code))
	b.WriteString(`,"detail":`)
	b.WriteString(strconv.Quote(detail))
	b.WriteString("}}\n")
	w.Write(b.Bytes())
}

// upstreamError answers for a request that got no response from upstream.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	ex := r.Context().Value(ctxKey{}).(*exchange)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The flow went away; nobody reads the answer.
		ex.code = "client_closed"
		w.WriteHeader(499)
		return
	}
	if errors.Is(err, errNeedsReauth) {
		p.fail(w, ex, http.StatusServiceUnavailable, CodeNeedsReauth, "the upstream refused the token and it could not be renewed: the account behind this secret must be connected again")
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		p.fail(w, ex, http.StatusGatewayTimeout, CodeTimeout, "upstream "+ex.host+" did not answer in time")
		return
	}
	p.fail(w, ex, http.StatusBadGateway, CodeUnreachable, "upstream "+ex.host+" could not be reached: "+describe(err))
}

// describe names a transport failure without quoting anything the flow sent.
func describe(err error) string {
	var op *net.OpError
	var dns *net.DNSError
	switch {
	case errors.As(err, &dns):
		return "host not found"
	case errors.As(err, &op) && op.Op == "dial":
		if op.Err != nil {
			return strings.TrimPrefix(op.Err.Error(), "connect: ")
		}
		return "connection failed"
	case strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:"):
		return "TLS handshake failed: " + err.Error()
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before a response"
	}
	return "connection failed"
}

// logRequest writes the one line per request that operators grep and alert
// on. It names the secret by id and the path without its query; never a
// header or a body.
func (p *Proxy) logRequest(r *http.Request, ex *exchange, lw *logWriter, start time.Time) {
	d := time.Since(start)
	p.metrics.observe(ex, lw.status(), d)
	secret := ""
	if ex.cred != nil {
		secret = ex.cred.ID
	}
	attrs := []slog.Attr{
		slog.String("secret", secret),
		slog.String("method", r.Method),
		slog.String("host", r.URL.Host),
		slog.String("path", r.URL.Path),
		slog.Int("status", lw.status()),
		slog.Int("attempts", ex.tries),
		slog.Duration("duration", d),
		slog.Int64("bytes", lw.n),
	}
	if ex.code != "" {
		attrs = append(attrs, slog.String("error", ex.code))
	}
	p.Logger.LogAttrs(r.Context(), slog.LevelInfo, "proxy", attrs...)
}

// logWriter counts what goes back to the flow.
type logWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (w *logWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *logWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// bufferPool gives httputil.ReverseProxy reusable copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (bufferPool) Get() []byte { return buffers.Get().(*[32 << 10]byte)[:] }

// Put takes back only buffers it gave out; a pointer to the array behind the
// slice goes back into the pool without allocating.
func (bufferPool) Put(b []byte) {
	if cap(b) == 32<<10 {
		buffers.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}
