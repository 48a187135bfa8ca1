package proxy

import (
	"net/http"
	"strings"
)

// hopHeaders are the hop-by-hop fields of RFC 9110 §7.6.1 (Connection and
// the fields it names, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding,
// Upgrade) plus the older Trailer of RFC 7230 §6.1. They describe one
// connection and are never forwarded.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// stripHeaders removes from h, before a request leaves for a third party:
// the hop-by-hop fields (RFC 9110 §7.6.1), including every field that
// Connection names; every Proxy-* field, since those were meant for this
// proxy (Proxy-Authorization names the credential); every X-Authproxy-*
// field, our own controls; and X-Forwarded-For, since third parties have no
// business with the flow's address.
//
// httputil.ReverseProxy removes hop-by-hop fields too, then deliberately
// puts back "Te: trailers" and a protocol upgrade; rewrite does the same
// after calling this.
func stripHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		delete(h, name)
	}
	for name := range h {
		if hasPrefixFold(name, "Proxy-") || hasPrefixFold(name, "X-Authproxy-") {
			delete(h, name)
		}
	}
	delete(h, "X-Forwarded-For")
}

// headerHasToken reports whether a comma-separated field of h lists token
// (case-insensitively), as Connection and TE do.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
