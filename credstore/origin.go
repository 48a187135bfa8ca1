package credstore

import (
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Origin is one entry of an allowed_origins list: the hosts a credential is
// bound to, and the scheme used to reach them upstream.
//
// Forms accepted: "https://api.github.com", "https://*.example.com" (any
// subdomain at any depth, not the apex), "http://127.0.0.1:9401" (an explicit
// port), and "*" (any host over https; only for noauth). Paths, queries,
// user info and fragments are refused: an origin is a scheme and an authority.
type Origin struct {
	Scheme   string // "https" or "http"
	Host     string // lower case; for a wildcard, the suffix after "*."
	Port     string // explicit port, or "" for the scheme's default
	Wildcard bool   // "*.Host"
	Any      bool   // "*"
}

// ParseOrigin parses one allowed_origins entry. Returns EINVALID if it is not
// of a form above.
func ParseOrigin(s string) (Origin, error) {
	if s == "*" {
		return Origin{Scheme: "https", Any: true}, nil
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || (scheme != "https" && scheme != "http") {
		return Origin{}, Invalid("allowed_origins", "%q must start with https:// or http://", s)
	}
	if rest == "" || strings.ContainsAny(rest, "/?#@ \\") {
		return Origin{}, Invalid("allowed_origins", "%q must be a scheme and a host, with an optional port, and nothing else", s)
	}
	o := Origin{Scheme: scheme}
	host := rest
	if h, p, err := net.SplitHostPort(rest); err == nil {
		if !validPort(p) {
			return Origin{}, Invalid("allowed_origins", "%q has an invalid port", s)
		}
		n, _ := strconv.Atoi(p)
		host, o.Port = h, strconv.Itoa(n) // "0443" is "443"
	} else if strings.Count(rest, ":") > 1 && !strings.HasPrefix(rest, "[") {
		return Origin{}, Invalid("allowed_origins", "%q: an IPv6 address must be written in brackets", s)
	} else if strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]") {
		host = rest[1 : len(rest)-1]
	}
	if after, ok := strings.CutPrefix(host, "*."); ok {
		o.Wildcard = true
		host = after
	}
	host = strings.ToLower(host)
	if host == "" || strings.Contains(host, "*") || !validHost(host) {
		return Origin{}, Invalid("allowed_origins", "%q has an invalid host", s)
	}
	if o.Wildcard && (net.ParseIP(host) != nil || !strings.Contains(host, ".")) {
		return Origin{}, Invalid("allowed_origins", "%q: a wildcard must stand before a domain of at least two labels", s)
	}
	o.Host = host
	if o.Port == defaultPort(scheme) {
		o.Port = ""
	}
	return o, nil
}

// ParseOrigins parses a list with ParseOrigin.
func ParseOrigins(list []string) ([]Origin, error) {
	if len(list) == 0 {
		return nil, nil
	}
	out := make([]Origin, 0, len(list))
	for _, s := range list {
		o, err := ParseOrigin(s)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// Match reports whether a request for host and port (port "" meaning the
// default of whatever scheme the flow used) may go to this origin. host must
// be lower case, without brackets.
func (o Origin) Match(host, port string) bool {
	if o.Any {
		return port == "" || port == "443"
	}
	if port != "" && port != o.effectivePort() {
		return false
	}
	if port == "" && o.Port != "" {
		return false
	}
	if o.Wildcard {
		return len(host) > len(o.Host)+1 && strings.HasSuffix(host, o.Host) && host[len(host)-len(o.Host)-1] == '.'
	}
	return host == o.Host
}

func (o Origin) effectivePort() string {
	if o.Port != "" {
		return o.Port
	}
	return defaultPort(o.Scheme)
}

// String returns the origin in its canonical form.
func (o Origin) String() string {
	if o.Any {
		return "*"
	}
	h := o.Host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if o.Wildcard {
		h = "*." + h
	}
	if o.Port != "" {
		h += ":" + o.Port
	}
	return o.Scheme + "://" + h
}

// MatchOrigin returns the first origin in list that admits host and port.
func MatchOrigin(list []Origin, host, port string) (Origin, bool) {
	for _, o := range list {
		if o.Match(host, port) {
			return o, true
		}
	}
	return Origin{}, false
}

func defaultPort(scheme string) string {
	if scheme == "http" {
		return "80"
	}
	return "443"
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n > 0 && n < 65536
}

func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	u, err := url.Parse("http://" + h)
	if err != nil || u.Hostname() != h {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
