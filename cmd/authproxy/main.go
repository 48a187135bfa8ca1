// Command authproxy runs the sidecar: the forward proxy for flows and the
// admin API, over one encrypted credential store.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/lmittmann/tint"

	"github.com/authproxy/authproxy/authflow"
	"github.com/authproxy/authproxy/credstore"
	"github.com/authproxy/authproxy/proxy"
	"github.com/authproxy/authproxy/proxy/admin"
)

// drainTimeout bounds how long shutdown waits for in-flight requests.
const drainTimeout = 30 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "authproxy:", err)
		os.Exit(1)
	}
}

// run starts the sidecar and serves until ctx is done, then drains and
// closes.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := loadConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	slog.SetDefault(log)

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("AUTHPROXY_DATA_DIR: %w", err)
	}
	key := cfg.MasterKey
	if key == nil {
		path := filepath.Join(cfg.DataDir, "master.key")
		v, created, err := loadOrCreate(path, credstore.KeySize)
		if err != nil {
			return fmt.Errorf("master key file: %w", err)
		}
		if key, err = base64.StdEncoding.DecodeString(v); err != nil || len(key) != credstore.KeySize {
			return fmt.Errorf("master key file %s does not hold base64 of %d bytes", path, credstore.KeySize)
		}
		log.Warn("AUTHPROXY_MASTER_KEY is not set: using a key file next to the data; set the variable from a secret store in production",
			"path", path, "created", created)
	}
	token := cfg.AdminToken
	if token == "" {
		path := filepath.Join(cfg.DataDir, "admin.token")
		v, created, err := loadOrCreate(path, 32)
		if err != nil {
			return fmt.Errorf("admin token file: %w", err)
		}
		token = v
		log.Info("admin token read from file (AUTHPROXY_ADMIN_TOKEN is not set)", "path", path, "created", created)
	}

	store, err := credstore.Open(filepath.Join(cfg.DataDir, "authproxy.db"), key)
	if err != nil {
		return err
	}
	defer store.Close()
	// Loading decoded every record; give that garbage back to the OS so an
	// idle sidecar stays small.
	debug.FreeOSMemory()

	transport, err := proxy.NewTransport(proxy.TransportOptions{
		ResponseHeaderTimeout: cfg.UpstreamTimeout,
		CAFile:                cfg.UpstreamCAFile,
	})
	if err != nil {
		return fmt.Errorf("AUTHPROXY_UPSTREAM_CA_FILE: %w", err)
	}
	proxyLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("AUTHPROXY_LISTEN: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		proxyLn.Close()
		return fmt.Errorf("AUTHPROXY_ADMIN_LISTEN: %w", err)
	}
	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = "http://" + browserAddr(adminLn.Addr().(*net.TCPAddr))
	}
	// Token endpoints are reached like upstreams (same CA bundle, no proxy
	// of our own), but never through a redirect: a 307 would resend the
	// client secret or a refresh token elsewhere.
	tokenTransport, err := proxy.NewTransport(proxy.TransportOptions{CAFile: cfg.UpstreamCAFile, MaxIdleConnsPerHost: 16})
	if err != nil {
		return fmt.Errorf("AUTHPROXY_UPSTREAM_CA_FILE: %w", err)
	}
	flow := &authflow.Manager{
		Store:          store,
		HTTPClient:     &http.Client{Transport: tokenTransport, Timeout: cfg.RequestTimeout, CheckRedirect: authflow.NoRedirects},
		RequestTimeout: cfg.RequestTimeout,
		RetryDelay:     cfg.RequestRetryDelay,
		MaxRetry:       cfg.RequestMaxRetry,
		RefreshBefore:  cfg.RefreshBefore,
		RedirectURI:    publicURL + "/oauth/callback",
		Logger:         log,
	}
	px := &proxy.Proxy{
		Store:      store,
		Tokens:     flow,
		Transport:  transport,
		Routes:     cfg.Routes,
		MaxRetry:   cfg.UpstreamMaxRetry,
		RetryDelay: cfg.UpstreamRetryDelay,
		Logger:     log,
	}
	adm := &admin.Server{Store: store, Token: token, Logger: log, Flow: flow, Metrics: []admin.MetricsWriter{px, flow}}

	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	servers := []*http.Server{
		{Handler: px, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: errLog},
		{Handler: adm.Router(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: errLog},
	}
	errc := make(chan error, 2)
	for i, ln := range []net.Listener{proxyLn, adminLn} {
		go func() { errc <- servers[i].Serve(ln) }()
	}
	refreshCtx, stopRefresher := context.WithCancel(context.Background())
	refresherDone := make(chan struct{})
	go func() { flow.Run(refreshCtx); close(refresherDone) }()
	log.Info("authproxy ready", "proxy", proxyLn.Addr().String(), "admin", adminLn.Addr().String(),
		"redirect_uri", flow.RedirectURI, "data_dir", cfg.DataDir, "key_id", store.KeyID(), "credentials", len(store.Credentials("")))

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: draining in-flight requests", "timeout", drainTimeout)
	case serveErr = <-errc:
		log.Error("listener failed", "err", serveErr)
	}
	dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	var shutdownErr error
	for _, s := range servers {
		if err := s.Shutdown(dctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			shutdownErr = errors.Join(shutdownErr, err)
		}
	}
	px.CloseTunnels()
	stopRefresher()
	<-refresherDone
	if shutdownErr != nil {
		log.Warn("drain did not finish", "err", shutdownErr)
	}
	log.Info("stopped")
	if serveErr != nil {
		return fmt.Errorf("listener failed: %w", serveErr)
	}
	return nil
}

// browserAddr is the admin listener's address as a browser on this host
// reaches it: a wildcard address becomes localhost.
func browserAddr(a *net.TCPAddr) string {
	if a.IP.IsUnspecified() {
		return net.JoinHostPort("localhost", strconv.Itoa(a.Port))
	}
	return a.String()
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	return slog.New(tint.NewHandler(w, &tint.Options{Level: cfg.LogLevel, TimeFormat: time.TimeOnly}))
}
