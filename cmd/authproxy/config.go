package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/authproxy/authproxy/credstore"
	"github.com/authproxy/authproxy/proxy"
)

// config is everything the sidecar reads at start-up. Each setting comes
// from its environment variable, and a flag of the same meaning overrides
// it. The master key and admin token have no flags: a command line is
// visible to every user of the machine.
type config struct {
	Listen             string
	AdminListen        string
	DataDir            string
	MasterKey          []byte // nil: generated into DataDir
	AdminToken         string // "": generated into DataDir
	UpstreamTimeout    time.Duration
	UpstreamMaxRetry   int
	UpstreamRetryDelay time.Duration
	UpstreamCAFile     string
	ConfigFile         string
	LogLevel           slog.Level
	LogFormat          string
	RequestTimeout     time.Duration
	RequestRetryDelay  time.Duration
	RequestMaxRetry    int
	PublicURL          string // "": http:// + the admin listener's address
	RefreshBefore      time.Duration

	Routes []proxy.Route // from ConfigFile
}

// setting is one row of the README's table: variable, flag, default, and
// how to parse it into the config.
type setting struct {
	env, flag, def, usage string
	set                   func(c *config, v string) error
}

var settings = []setting{
	{"AUTHPROXY_LISTEN", "listen", ":3128", "proxy listener for flows", func(c *config, v string) error { c.Listen = v; return nonEmpty(v) }},
	{"AUTHPROXY_ADMIN_LISTEN", "admin-listen", "127.0.0.1:9090", "admin API listener", func(c *config, v string) error { c.AdminListen = v; return nonEmpty(v) }},
	{"AUTHPROXY_DATA_DIR", "data-dir", "./data", "holds authproxy.db and generated key and token files", func(c *config, v string) error { c.DataDir = v; return nonEmpty(v) }},
	{"AUTHPROXY_MASTER_KEY", "", "", "base64 of 32 bytes; encrypts secret values at rest", func(c *config, v string) error {
		if v == "" {
			return nil
		}
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		if err != nil || len(k) != credstore.KeySize {
			return fmt.Errorf("must be the standard base64 of exactly %d bytes (openssl rand -base64 32)", credstore.KeySize)
		}
		c.MasterKey = k
		return nil
	}},
	{"AUTHPROXY_ADMIN_TOKEN", "", "", "bearer token for the admin API", func(c *config, v string) error {
		if v != "" && len(v) < 16 {
			return fmt.Errorf("must be at least 16 characters")
		}
		c.AdminToken = v
		return nil
	}},
	{"AUTHPROXY_UPSTREAM_TIMEOUT", "upstream-timeout", "60000", "ms until upstream response headers", func(c *config, v string) error { return millis(&c.UpstreamTimeout, v, 1) }},
	{"AUTHPROXY_UPSTREAM_MAX_RETRY", "upstream-max-retry", "3", "retries after the first attempt", func(c *config, v string) error { return count(&c.UpstreamMaxRetry, v, proxy.MaxRetryCap) }},
	{"AUTHPROXY_UPSTREAM_RETRY_DELAY", "upstream-retry-delay", "250", "ms, base of exponential backoff with jitter", func(c *config, v string) error { return millis(&c.UpstreamRetryDelay, v, 1) }},
	{"AUTHPROXY_UPSTREAM_CA_FILE", "upstream-ca-file", "", "extra CA bundle (PEM) for upstream TLS", func(c *config, v string) error { c.UpstreamCAFile = v; return nil }},
	{"AUTHPROXY_CONFIG", "config", "", "optional config file (JSON, see configs/)", func(c *config, v string) error { c.ConfigFile = v; return nil }},
	{"LOG_LEVEL", "log-level", "info", "debug, info, warn or error", func(c *config, v string) error { return c.LogLevel.UnmarshalText([]byte(v)) }},
	{"LOG_FORMAT", "log-format", "text", "text (tint) or json", func(c *config, v string) error {
		if v != "text" && v != "json" {
			return fmt.Errorf("must be text or json")
		}
		c.LogFormat = v
		return nil
	}},
	{"AUTHPROXY_PUBLIC_URL", "public-url", "", "base URL users' browsers reach the admin listener at; the OAuth2 redirect URI is this + /oauth/callback", func(c *config, v string) error {
		if v == "" {
			return nil
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("must be an absolute http or https URL without query")
		}
		c.PublicURL = strings.TrimSuffix(v, "/")
		return nil
	}},
	{"AUTHPROXY_REFRESH_BEFORE", "refresh-before", "30", "seconds before expiry an OAuth2 token is renewed", func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("must be a whole number of seconds, at least 1")
		}
		c.RefreshBefore = time.Duration(n) * time.Second
		return nil
	}},
	{"REQUEST_TIMEOUT", "request-timeout", "10000", "ms, timeout of one token-endpoint request", func(c *config, v string) error { return millis(&c.RequestTimeout, v, 1) }},
	{"REQUEST_RETRY_DELAY", "request-retry-delay", "5000", "ms between token-endpoint attempts", func(c *config, v string) error { return millis(&c.RequestRetryDelay, v, 0) }},
	{"REQUEST_MAX_RETRY", "request-max-retry", "3", "token-endpoint attempts after the first", func(c *config, v string) error { return count(&c.RequestMaxRetry, v, 100) }},
}

// loadConfig reads the environment through getenv, then flags from args.
// A bad value is an error naming the variable (or flag) and what it wants.
func loadConfig(args []string, getenv func(string) string, usage io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("authproxy", flag.ContinueOnError)
	fs.SetOutput(usage)
	flagVals := map[string]*string{}
	for _, s := range settings {
		if s.flag != "" {
			flagVals[s.env] = fs.String(s.flag, "", fmt.Sprintf("%s (env %s, default %q)", s.usage, s.env, s.def))
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, s := range settings {
		v, name := getenv(s.env), s.env
		if s.flag != "" && given[s.flag] {
			v, name = *flagVals[s.env], "-"+s.flag
		}
		if v == "" {
			v = s.def
		}
		if err := s.set(c, v); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	if c.ConfigFile != "" {
		routes, err := readConfigFile(c.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("AUTHPROXY_CONFIG: %w", err)
		}
		c.Routes = routes
	}
	return c, nil
}

// fileConfig is the optional config file (configs/authproxy.example.json).
type fileConfig struct {
	Routes []proxy.Route `json:"routes"`
}

func readConfigFile(path string) ([]proxy.Route, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var fc fileConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	seen := map[string]bool{}
	for i, r := range fc.Routes {
		if r.Host == "" || strings.ContainsAny(r.Host, "/ ") || r.Secret == "" {
			return nil, fmt.Errorf("%s: routes[%d] needs a host (host or host:port) and a secret id", path, i)
		}
		h := strings.ToLower(r.Host)
		if seen[h] {
			return nil, fmt.Errorf("%s: routes[%d]: host %s is routed twice", path, i, r.Host)
		}
		seen[h] = true
	}
	return fc.Routes, nil
}

func nonEmpty(v string) error {
	if v == "" {
		return fmt.Errorf("must not be empty")
	}
	return nil
}

func millis(d *time.Duration, v string, min int) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < min {
		return fmt.Errorf("must be a whole number of milliseconds, at least %d", min)
	}
	*d = time.Duration(n) * time.Millisecond
	return nil
}

func count(dst *int, v string, max int) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > max {
		return fmt.Errorf("must be a whole number from 0 to %d", max)
	}
	*dst = n
	return nil
}
