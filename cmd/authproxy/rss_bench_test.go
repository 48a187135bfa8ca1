package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authproxy/authproxy/credstore"
)

// BenchmarkIdleRSS10k fills a data dir with 10,000 credentials (api_key and
// basic, each with its own origin), starts the sidecar on it, lets it settle
// and reports its resident memory. Target: under 20 MiB.
//
//	go test -run '^$' -bench IdleRSS -benchtime 1x ./cmd/authproxy/
//
// The binary TestMain builds has the race detector, which inflates memory
// many times, so this benchmark builds its own, as the Dockerfile does.
func BenchmarkIdleRSS10k(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "authproxy")
	// Built as the Dockerfile builds it.
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	dir := b.TempDir()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	st, err := credstore.Open(filepath.Join(dir, "authproxy.db"), key)
	if err != nil {
		b.Fatal(err)
	}
	basic, _ := st.CreateAuthClient(&credstore.AuthClient{Type: credstore.Basic, Name: "basic", Scope: credstore.Scope{Level: credstore.LevelGlobal}})
	apiKey, _ := st.CreateAuthClient(&credstore.AuthClient{Type: credstore.APIKey, Name: "key", Scope: credstore.Scope{Level: credstore.LevelGlobal},
		Settings: credstore.ClientSettings{HeaderName: "X-Api-Key"}})
	const n = 10000
	for i := range n {
		c := &credstore.Credential{Workspace: "ws" + strconv.Itoa(i%100), Name: "credential " + strconv.Itoa(i),
			AllowedOrigins: []string{fmt.Sprintf("https://api%d.example.com", i)}, State: credstore.StateReady}
		if i%2 == 0 {
			c.AuthClientID = basic.ID
			c.Fields = credstore.Fields{Username: "user" + strconv.Itoa(i), Password: "password-" + strconv.Itoa(i)}
		} else {
			c.AuthClientID = apiKey.ID
			c.Fields = credstore.Fields{HeaderValue: "key-value-" + strconv.Itoa(i)}
		}
		if _, err := st.CreateCredential(c); err != nil {
			b.Fatal(err)
		}
	}
	st.Close()

	b.ResetTimer()
	var rss float64
	for range b.N {
		rss = idleRSS(b, bin, dir, base64.StdEncoding.EncodeToString(key))
	}
	b.ReportMetric(rss, "idle-RSS-MiB")
	b.ReportMetric(n, "credentials")
}

func idleRSS(b *testing.B, bin, dir, key string) float64 {
	cmd := exec.Command(bin)
	cmd.Env = []string{"AUTHPROXY_LISTEN=127.0.0.1:0", "AUTHPROXY_ADMIN_LISTEN=127.0.0.1:0", "LOG_FORMAT=json",
		"AUTHPROXY_DATA_DIR=" + dir, "AUTHPROXY_MASTER_KEY=" + key, "AUTHPROXY_ADMIN_TOKEN=bench-admin-token-0123456789"}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), "authproxy ready") {
		if time.Now().After(deadline) {
			b.Fatalf("not ready:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), `"credentials":10000`) {
		b.Fatalf("the sidecar did not load 10,000 credentials:\n%s", logs.String())
	}
	time.Sleep(3 * time.Second) // idle: let start-up garbage be collected and a refresher scan or two run
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		b.Skipf("no /proc on %s: %v", runtime.GOOS, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmRSS in /proc status")
	return 0
}
