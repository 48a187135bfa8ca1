package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/authproxy/authproxy/credstore"
	"github.com/authproxy/authproxy/proxy"
)

// TestHTTP2ToTLSUpstreams checks that the shared transport speaks HTTP/2 to
// a TLS upstream that offers it, while the flow speaks plain HTTP/1.1 to
// the sidecar.
func TestHTTP2ToTLSUpstreams(t *testing.T) {
	protos := make(chan string, 4)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos <- r.Proto
		io.WriteString(w, "over "+r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	e := newEnv(t)
	tr, err := proxy.NewTransport(proxy.TransportOptions{CAFile: writeCA(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	e.start(func(p *proxy.Proxy) { p.Transport = tr })
	c := e.credential(t, credSpec{typ: credstore.Basic, credOrigins: []string{"https://" + srv.Listener.Addr().String()}})
	resp := e.doGo(t, flowRequest{method: http.MethodGet, url: "http://" + srv.Listener.Addr().String() + "/h2", user: c.ID})
	if resp.status != http.StatusOK {
		t.Fatalf("status %d %s", resp.status, resp.body)
	}
	if got := <-protos; got != "HTTP/2.0" {
		t.Fatalf("upstream saw %s, want HTTP/2.0", got)
	}
}
