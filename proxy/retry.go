package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sethvargo/go-retry"

	"github.com/authproxy/authproxy/authflow"
)

// maxRetryAfter is the longest Retry-After the proxy waits out; a longer one
// goes back to the flow as it is, to decide for itself.
const maxRetryAfter = 30 * time.Second

// maxBackoff caps one wait between attempts, so that ten retries cannot
// hold a flow for minutes.
const maxBackoff = 10 * time.Second

// retryTransport sends one outbound request, retrying what is safe to
// retry:
//   - a connection that failed before anything was sent, for any method;
//   - 408, 423, 429, 500, 502, 503, 504 for GET, HEAD, OPTIONS, PUT, DELETE
//     and for any request carrying an Idempotency-Key,
//
// and only while the body (if any) can be sent again. Delays grow
// exponentially from Proxy.RetryDelay with jitter; Retry-After replaces the
// delay when it is at most maxRetryAfter.
type retryTransport struct{ p *Proxy }

// statusError carries a retryable response between attempts.
type statusError struct{ code int }

func (e statusError) Error() string { return "upstream answered " + strconv.Itoa(e.code) }

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := req.Context().Value(ctxKey{}).(*exchange)
	resp, err := t.send(req, ex)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || ex.token == "" || t.p.Tokens == nil {
		return resp, err
	}
	// A 401 to an OAuth2 token: if that token is still the stored one,
	// refresh once, and replay once when the body can be sent again. Never
	// loop.
	tok, rerr := t.p.Tokens.Rejected(req.Context(), ex.cred, ex.client, ex.token)
	if errors.Is(rerr, authflow.ErrNeedsReauth) {
		discard(resp.Body)
		return nil, errNeedsReauth // the proxy answers 503 for itself
	}
	if rerr != nil || tok == "" || !ex.replay {
		return resp, nil
	}
	discard(resp.Body)
	ex.token, ex.value = tok, "Bearer "+tok
	again := req.Clone(req.Context()) // send gives it a fresh body
	again.Header.Set(ex.header, ex.value)
	return t.send(again, ex)
}

// errNeedsReauth ends a request whose token was refused upstream and could
// not be renewed: the account must be connected again.
var errNeedsReauth = errors.New("credential needs re-authorization")

// send sends req with the retries its method and body allow.
func (t *retryTransport) send(req *http.Request, ex *exchange) (*http.Response, error) {
	idempotent := isIdempotent(req)
	var (
		resp     *http.Response
		override time.Duration
	)
	// attempt sends the request once; again says whether another attempt
	// may follow.
	attempt := func(ctx context.Context) (again bool, err error) {
		ex.tries++
		out := req
		if ex.tries > 1 {
			out = req.Clone(ctx)
			if ex.body != nil {
				out.Body, _ = out.GetBody()
			}
		}
		resp, err = t.p.Transport.RoundTrip(out)
		if err != nil {
			return ex.replay && neverSent(err), err
		}
		last := ex.tries > ex.retries
		if last || !ex.replay || !idempotent || !retryableStatus(resp.StatusCode) {
			return false, nil
		}
		d, ok := retryAfter(resp.Header.Get("Retry-After"))
		if !ok {
			return false, nil // longer than we wait: the flow decides
		}
		override = d
		code := resp.StatusCode
		discard(resp.Body)
		resp = nil
		return true, statusError{code: code}
	}
	// The first attempt runs outside go-retry: most requests need no second
	// one, and the backoff is built only when one does.
	again, err := attempt(req.Context())
	if again && ex.retries > 0 {
		base := retry.WithCappedDuration(maxBackoff, retry.WithJitterPercent(20, retry.NewExponential(t.p.RetryDelay)))
		backoff := retry.WithMaxRetries(uint64(ex.retries), retry.BackoffFunc(func() (time.Duration, bool) {
			d, stop := base.Next()
			if override > 0 {
				d, override = override, 0
			}
			return d, stop
		}))
		first := true
		err = retry.Do(req.Context(), backoff, func(ctx context.Context) error {
			if first { // the attempt already made above
				first = false
				return retry.RetryableError(err)
			}
			again, err := attempt(ctx)
			if again {
				return retry.RetryableError(err)
			}
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func isIdempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header.Get("Idempotency-Key") != ""
}

func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusLocked, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// neverSent reports whether err shows the request never left: the
// connection could not be made (refused, unreachable, name not resolved:
// lookups fail inside the dial). A pooled connection found dead before
// anything was written is retried by net/http itself, through GetBody.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retryAfter parses Retry-After (delay-seconds or an HTTP date, RFC 9110
// §10.2.3). It returns 0, true when the header is absent or unusable (use
// the backoff), and false when the wait is longer than maxRetryAfter.
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, true
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); errors.Is(err, strconv.ErrRange) {
		return 0, false // a number of seconds too large to hold: far past our limit
	} else if err == nil {
		if secs < 0 {
			return 0, true
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return 0, false
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
		if d > maxRetryAfter {
			return 0, false
		}
	} else {
		return 0, true
	}
	if d <= 0 {
		d = time.Millisecond // "now": go at once, but through the backoff's loop
	}
	return d, true
}

// discard reads a little of a body we will not forward, so that the
// connection can be reused, and closes it.
func discard(body io.ReadCloser) {
	io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}
