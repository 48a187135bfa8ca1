package proxy

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// tunnels tracks CONNECT tunnels so that shutdown can close them: a hijacked
// connection is invisible to http.Server.Shutdown.
type tunnels struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (t *tunnels) add(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = map[net.Conn]struct{}{}
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tunnels) remove(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// CloseTunnels closes every open CONNECT tunnel and refuses new ones. Call
// it after http.Server.Shutdown has drained ordinary requests.
func (p *Proxy) CloseTunnels() {
	p.tun.mu.Lock()
	defer p.tun.mu.Unlock()
	p.tun.closed = true
	for c := range p.tun.conns {
		c.Close()
	}
}

// tunnel serves CONNECT: a byte pipe to the named host, unchanged. Nothing
// is injected; the flow speaks TLS to the upstream itself.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, start time.Time) {
	lw := &logWriter{ResponseWriter: w}
	ex := &exchange{tries: 1}
	defer func() { p.logRequest(r, ex, lw, start) }()
	if _, _, err := net.SplitHostPort(r.Host); err != nil {
		p.fail(lw, ex, http.StatusBadRequest, CodeBadRequest, "CONNECT needs host:port")
		return
	}
	up, err := net.DialTimeout("tcp", r.Host, 10*time.Second)
	if err != nil {
		p.fail(lw, ex, http.StatusBadGateway, CodeUnreachable, "upstream "+r.Host+" could not be reached: "+describe(err))
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		p.fail(lw, ex, http.StatusInternalServerError, CodeInternal, "this connection cannot be tunnelled")
		return
	}
	if !p.tun.add(conn) {
		conn.Close()
		up.Close()
		return
	}
	defer p.tun.remove(conn)
	lw.code = http.StatusOK
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n")); err != nil {
		conn.Close()
		up.Close()
		return
	}
	done := make(chan int64, 2)
	go func() {
		// Bytes the client sent after the CONNECT line are buffered in brw.
		io.Copy(up, io.MultiReader(io.LimitReader(brw, int64(brw.Reader.Buffered())), conn))
		closeWrite(up)
		done <- 0 // bytes to the upstream are not counted, only bytes back
	}()
	go func() {
		n, _ := io.Copy(conn, up)
		closeWrite(conn)
		done <- n
	}()
	for range 2 {
		lw.n += <-done
	}
	conn.Close()
	up.Close()
	p.Logger.Log(r.Context(), slog.LevelDebug, "tunnel closed", "host", r.Host)
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	} else {
		c.Close()
	}
}
