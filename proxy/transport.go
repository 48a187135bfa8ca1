package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// TransportOptions tune the shared upstream transport.
type TransportOptions struct {
	// ResponseHeaderTimeout bounds the wait for upstream response headers.
	// Zero means 60 s.
	ResponseHeaderTimeout time.Duration

	// CAFile is a PEM bundle trusted for upstream TLS in addition to the
	// system roots.
	CAFile string

	// MaxIdleConnsPerHost is the idle pool per upstream host. Zero means 256:
	// Go's default of 2 makes busy flows open a connection per request.
	MaxIdleConnsPerHost int
}

// NewTransport returns the one pooled transport every upstream request goes
// through: HTTP/2 to TLS upstreams, keep-alives, and no proxy of its own (an
// HTTP_PROXY in the sidecar's environment must not send traffic back to
// itself).
func NewTransport(o TransportOptions) (*http.Transport, error) {
	if o.ResponseHeaderTimeout <= 0 {
		o.ResponseHeaderTimeout = 60 * time.Second
	}
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = 256
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConf,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4 * o.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost:   o.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: o.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
	}, nil
}
