package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binPath is the sidecar built once for the end-to-end tests, which run it
// as a real process: its flags, environment, signals and files are part of
// what they test.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "authproxy-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "authproxy")
	out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sidecar is a running authproxy process.
type sidecar struct {
	t         *testing.T
	cmd       *exec.Cmd
	dataDir   string
	proxyAddr string
	adminURL  string
	token     string
	logs      *syncBuffer
	exited    chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSidecar runs the binary on loopback ports chosen by the kernel, with
// JSON logs, and waits for its ready line.
func startSidecar(t *testing.T, dataDir string, env ...string) *sidecar {
	t.Helper()
	cmd := exec.Command(binPath)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"AUTHPROXY_LISTEN=127.0.0.1:0",
		"AUTHPROXY_ADMIN_LISTEN=127.0.0.1:0",
		"AUTHPROXY_DATA_DIR=" + dataDir,
		"LOG_FORMAT=json",
		"AUTHPROXY_UPSTREAM_RETRY_DELAY=1",
	}, env...)
	pr, pw := io.Pipe()
	logs := &syncBuffer{}
	cmd.Stderr = io.MultiWriter(pw, logs)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sidecar{t: t, cmd: cmd, dataDir: dataDir, logs: logs, exited: make(chan error, 1)}
	go func() { err := cmd.Wait(); pw.Close(); s.exited <- err }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-s.exited
		}
	})
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "authproxy ready" {
				ready <- line
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case line := <-ready:
		s.proxyAddr = line["proxy"].(string)
		s.adminURL = "http://" + line["admin"].(string)
	case err := <-s.exited:
		t.Fatalf("sidecar exited before ready: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("sidecar not ready in 30 s:\n%s", logs.String())
	}
	s.token = os.Getenv("NO_SUCH_VARIABLE")
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "AUTHPROXY_ADMIN_TOKEN="); ok {
			s.token = v
		}
	}
	if s.token == "" {
		b, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
		if err != nil {
			t.Fatal(err)
		}
		s.token = strings.TrimSpace(string(b))
	}
	return s
}

// stop sends sig and waits for the process to end.
func (s *sidecar) stop(sig os.Signal) error {
	s.t.Helper()
	s.cmd.Process.Signal(sig)
	select {
	case err := <-s.exited:
		return err
	case <-time.After(40 * time.Second):
		s.cmd.Process.Kill()
		s.t.Fatalf("sidecar did not stop on %v", sig)
		return nil
	}
}

// admin calls the admin API and decodes the JSON answer.
func (s *sidecar) admin(method, path string, body any) (int, map[string]any, string) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.adminURL+path, rd)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out, string(raw)
}

// client returns an HTTP client that uses the sidecar as its proxy,
// naming secret as the proxy user.
func (s *sidecar) client(secret string) *http.Client {
	u := &url.URL{Scheme: "http", Host: s.proxyAddr}
	if secret != "" {
		u.User = url.User(secret)
	}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}, Timeout: 30 * time.Second}
}

func dataID(t *testing.T, doc map[string]any) string {
	t.Helper()
	d, ok := doc["data"].(map[string]any)
	if !ok {
		t.Fatalf("no data in %v", doc)
	}
	return d["id"].(string)
}

// setupBasic creates a global basic client bound to origin and a secret
// with the given password in workspace ws1, and returns the secret id.
func (s *sidecar) setupBasic(origin, user, password string) string {
	s.t.Helper()
	st, doc, raw := s.admin("POST", "/v2/auth-clients", map[string]any{"data": map[string]any{"type": "auth-client",
		"attributes": map[string]any{"type": "basic", "name": "upstream", "credentials": map[string]any{}, "allowed_origins": []string{origin}}}})
	if st != 201 {
		s.t.Fatalf("create client: %d %s", st, raw)
	}
	clientID := dataID(s.t, doc)
	st, doc, raw = s.admin("POST", "/v2/workspaces/ws1/secrets", map[string]any{"data": map[string]any{"type": "auth-secret",
		"attributes":    map[string]any{"name": "demo", "credentials": map[string]any{"username": user, "password": password}},
		"relationships": map[string]any{"auth_client": map[string]any{"data": map[string]any{"id": clientID, "type": "auth-client"}}}}})
	if st != 201 {
		s.t.Fatalf("create secret: %d %s", st, raw)
	}
	return dataID(s.t, doc)
}

// upstream records what it received.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	auth []string
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.auth = append(u.auth, r.Header.Get("Authorization"))
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, "hello from upstream")
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) lastAuth() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.auth) == 0 {
		return ""
	}
	return u.auth[len(u.auth)-1]
}

func get(t *testing.T, c *http.Client, target string) (int, string) {
	t.Helper()
	resp, err := c.Get(target)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The whole path through the real binary: generated key and token, admin
// API, a proxied call from Go and from curl, a clean stop, a restart that
// keeps everything, and no secret in logs, admin answers or the data file.
func TestSidecarEndToEndAndRestart(t *testing.T) {
	const user, password = "alice", "e2e-pass-Zq81xv"
	dir := t.TempDir()
	up := newUpstream(t, nil)
	sc := startSidecar(t, dir)
	secret := sc.setupBasic(up.URL, user, password)
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))

	if st, body := get(t, sc.client(secret), up.URL+"/v1/items?token=query-value"); st != 200 || body != "hello from upstream" {
		t.Fatalf("proxied GET: %d %q", st, body)
	}
	if got := up.lastAuth(); got != want {
		t.Fatalf("upstream got Authorization %q, want %q", got, want)
	}
	if _, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command("curl", "-sS", "--max-time", "20", "-x", "http://"+secret+":@"+sc.proxyAddr, up.URL+"/curl").CombinedOutput()
		if err != nil || string(out) != "hello from upstream" {
			t.Fatalf("curl through the sidecar: %v %q", err, out)
		}
		if got := up.lastAuth(); got != want {
			t.Fatalf("upstream got Authorization %q from curl's request, want %q", got, want)
		}
	}
	st, _, getRaw := sc.admin("GET", "/v2/workspaces/ws1/secrets/"+secret, nil)
	if st != 200 || !strings.Contains(getRaw, `"password":"********"`) {
		t.Fatalf("admin read: %d %s", st, getRaw)
	}
	metrics := scrape(t, sc)
	for _, want := range []string{`authproxy_requests_total{type="basic",code="2xx"} 2`, `authproxy_secrets{state="ready"} 1`,
		`authproxy_auth_clients 1`, `authproxy_request_duration_seconds_count 2`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, metrics)
		}
	}
	getRaw2 := getRaw + metrics
	for _, name := range []string{"master.key", "admin.token", "authproxy.db"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", name, err, fi.Mode().Perm())
		}
	}
	if err := sc.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, sc.logs.String())
	}
	logs := sc.logs.String()

	sc2 := startSidecar(t, dir)
	if st, body := get(t, sc2.client(secret), up.URL+"/again"); st != 200 || body != "hello from upstream" {
		t.Fatalf("proxied GET after restart: %d %q", st, body)
	}
	if got := up.lastAuth(); got != want {
		t.Fatalf("after restart upstream got %q, want %q", got, want)
	}
	if st, _, raw := sc2.admin("GET", "/v2/workspaces/ws1/secrets/"+secret, nil); st != 200 || raw != getRaw {
		t.Fatalf("admin read after restart: %d\n got %s\nwant %s", st, raw, getRaw)
	}
	sc2.stop(syscall.SIGTERM)
	logs += sc2.logs.String()

	key, _ := os.ReadFile(filepath.Join(dir, "master.key"))
	db, _ := os.ReadFile(filepath.Join(dir, "authproxy.db"))
	for _, secretValue := range []string{password, strings.TrimSpace(string(key)), sc.token, "query-value",
		base64.StdEncoding.EncodeToString([]byte(user + ":" + password))} {
		if strings.Contains(logs, secretValue) {
			t.Errorf("the log holds a secret value %q", secretValue)
		}
		if strings.Contains(getRaw2, secretValue) {
			t.Errorf("the admin answer or the metrics hold a secret value %q", secretValue)
		}
	}
	if bytes.Contains(db, []byte(password)) {
		t.Error("the data file holds the password in clear")
	}
	if !strings.Contains(logs, filepath.Join(dir, "master.key")) || !strings.Contains(logs, filepath.Join(dir, "admin.token")) {
		t.Errorf("the log does not say where the generated key and token are:\n%s", logs)
	}
	if n := strings.Count(logs, `"msg":"proxy"`); n < 3 {
		t.Errorf("want a log line per proxied request, found %d", n)
	}
}

// scrape reads /metrics with the admin token, as a Prometheus server
// configured with bearer_token_file would; without it the answer is 401.
func scrape(t *testing.T, sc *sidecar) string {
	t.Helper()
	if resp, err := http.Get(sc.adminURL + "/metrics"); err != nil || resp.StatusCode != 401 {
		t.Fatalf("metrics without the token: %v %v", err, resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", sc.adminURL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+sc.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(b)
}

// SIGTERM stops accepting new connections but lets a request in flight
// finish.
func TestSIGTERMDrainsInFlight(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-time.After(20 * time.Second):
		}
		io.WriteString(w, "finished")
	})
	sc := startSidecar(t, t.TempDir())
	secret := sc.setupBasic(up.URL, "u", "p-drain")
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := sc.client(secret).Get(up.URL + "/slow")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode, body: string(b)}
	}()
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("request never reached upstream")
	}
	sc.cmd.Process.Signal(syscall.SIGTERM)
	// The listener closes: a new connection is refused (bounded wait).
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: sc.proxyAddr}), DisableKeepAlives: true}, Timeout: time.Second}
		_, err := c.Get(up.URL + "/new")
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy still accepts new requests after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	r := <-done
	if r.err != nil || r.status != 200 || r.body != "finished" {
		t.Fatalf("in-flight request: %+v", r)
	}
	select {
	case err := <-sc.exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after drain")
	}
}

// A bad value stops start-up with a message naming the variable, and never
// quoting a secret.
func TestBadConfigStopsStartup(t *testing.T) {
	tests := []struct {
		name, env, want string
	}{
		{"retry count not a number", "AUTHPROXY_UPSTREAM_MAX_RETRY=lots", "AUTHPROXY_UPSTREAM_MAX_RETRY"},
		{"short master key", "AUTHPROXY_MASTER_KEY=c2hvcnQta2V5LXZhbHVl", "AUTHPROXY_MASTER_KEY"},
		{"short admin token", "AUTHPROXY_ADMIN_TOKEN=tiny-token", "AUTHPROXY_ADMIN_TOKEN"},
		{"log format", "LOG_FORMAT=xml", "LOG_FORMAT"},
		{"request timeout", "REQUEST_TIMEOUT=-5", "REQUEST_TIMEOUT"},
		{"missing CA file", "AUTHPROXY_UPSTREAM_CA_FILE=/nonexistent/ca.pem", "AUTHPROXY_UPSTREAM_CA_FILE"},
		{"public URL", "AUTHPROXY_PUBLIC_URL=ftp://x", "AUTHPROXY_PUBLIC_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binPath)
			cmd.Env = []string{"AUTHPROXY_DATA_DIR=" + t.TempDir(), "AUTHPROXY_LISTEN=127.0.0.1:0", "AUTHPROXY_ADMIN_LISTEN=127.0.0.1:0", tt.env}
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("start-up succeeded with %s", tt.env)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("message does not name %s: %s", tt.want, out)
			}
			_, value, _ := strings.Cut(tt.env, "=")
			if strings.Contains(tt.env, "KEY") || strings.Contains(tt.env, "TOKEN") {
				if strings.Contains(string(out), value) {
					t.Fatalf("message quotes the secret value: %s", out)
				}
			}
		})
	}
}
