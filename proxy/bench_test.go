package proxy_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/authproxy/authproxy/credstore"
	"github.com/authproxy/authproxy/proxy"
)

// benchConcurrency is the number of client goroutines. The transports keep
// at least this many idle connections per host so that neither proxy pays
// for new connections (Go's default of 2 would).
const benchConcurrency = 8

// BenchmarkForwardCPU proxies the same small GET through authproxy (api_key
// credential, origin check, retries armed, one JSON log line) and through a
// bare httputil.ReverseProxy that sets a fixed header, with the same tuned
// transport and a buffer pool, in one run. It reports the process CPU per
// request spent by each proxy, net of the CPU of the client and upstream
// (measured by a direct run without a proxy), and their ratio.
//
//	go test -run '^$' -bench ForwardCPU -benchtime 20000x ./proxy/
func BenchmarkForwardCPU(b *testing.B) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	defer upstream.Close()
	up, _ := url.Parse(upstream.URL)

	st, err := credstore.Open(filepath.Join(b.TempDir(), "bench.db"), make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	client, err := st.CreateAuthClient(&credstore.AuthClient{Type: credstore.APIKey, Name: "bench",
		Scope: credstore.Scope{Level: credstore.LevelGlobal}, AllowedOrigins: []string{"http://" + up.Host}})
	if err != nil {
		b.Fatal(err)
	}
	cred, err := st.CreateCredential(&credstore.Credential{Workspace: "ws", Name: "bench", AuthClientID: client.ID,
		Fields: credstore.Fields{HeaderName: "X-Api-Key", HeaderValue: "bench-key"}, State: credstore.StateReady})
	if err != nil {
		b.Fatal(err)
	}

	newTransport := func() *http.Transport {
		t, err := proxy.NewTransport(proxy.TransportOptions{MaxIdleConnsPerHost: 4 * benchConcurrency})
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	authproxy := httptest.NewServer(&proxy.Proxy{Store: st, Transport: newTransport(), MaxRetry: 3,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	defer authproxy.Close()
	bareTransport := newTransport()
	bare := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", up.Host
			pr.Out.Header.Set("X-Api-Key", "bench-key")
		},
		Transport:  bareTransport,
		BufferPool: &pool{},
	})
	defer bare.Close()

	clientFor := func(proxyURL string) *http.Client {
		t := &http.Transport{MaxIdleConnsPerHost: 4 * benchConcurrency, MaxIdleConns: 4 * benchConcurrency}
		if proxyURL != "" {
			pu, _ := url.Parse(proxyURL)
			t.Proxy = http.ProxyURL(pu)
		}
		return &http.Client{Transport: t}
	}
	apURL, _ := url.Parse(authproxy.URL)
	apURL.User = url.User(cred.ID)
	variants := []struct {
		name   string
		client *http.Client
	}{
		{"direct", clientFor("")},
		{"bare", clientFor(bare.URL)},
		{"authproxy", clientFor(apURL.String())},
	}
	target := upstream.URL + "/v1/items?page=1"

	// Warm every path up so that connection setup is not measured.
	for _, v := range variants {
		run(b, v.client, target, 200)
	}
	cpu := make([]time.Duration, len(variants))
	n := b.N
	b.ResetTimer()
	const rounds = 3
	for range rounds {
		for i, v := range variants {
			before := processCPU()
			run(b, v.client, target, n/rounds+1)
			cpu[i] += processCPU() - before
		}
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(rounds*(n/rounds+1)) }
	direct, bareCPU, apCPU := per(cpu[0]), per(cpu[1])-per(cpu[0]), per(cpu[2])-per(cpu[0])
	b.ReportMetric(direct, "direct-cpu-µs/req")
	b.ReportMetric(bareCPU, "bare-cpu-µs/req")
	b.ReportMetric(apCPU, "authproxy-cpu-µs/req")
	if bareCPU > 0 {
		b.ReportMetric(apCPU/bareCPU, "ratio")
	}
}

// run sends n requests from benchConcurrency goroutines and checks each.
func run(b *testing.B, c *http.Client, target string, n int) {
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	for range benchConcurrency {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				resp, err := c.Get(target)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type pool struct{ p sync.Pool }

func (p *pool) Get() []byte {
	if b, ok := p.p.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, 32<<10)
}
func (p *pool) Put(b []byte) { p.p.Put(&b) }
