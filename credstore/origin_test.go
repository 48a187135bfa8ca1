package credstore

import (
	"errors"
	"strings"
	"testing"
)

func TestParseOriginAccepted(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Origin
		str  string // canonical String()
	}{
		{"https host", "https://api.github.com",
			Origin{Scheme: "https", Host: "api.github.com"}, "https://api.github.com"},
		{"http host", "http://localhost",
			Origin{Scheme: "http", Host: "localhost"}, "http://localhost"},
		{"host is lower-cased", "https://API.GitHub.COM",
			Origin{Scheme: "https", Host: "api.github.com"}, "https://api.github.com"},
		{"https default port dropped", "https://api.github.com:443",
			Origin{Scheme: "https", Host: "api.github.com"}, "https://api.github.com"},
		{"http default port dropped", "http://127.0.0.1:80",
			Origin{Scheme: "http", Host: "127.0.0.1"}, "http://127.0.0.1"},
		{"https explicit port", "https://api.github.com:8443",
			Origin{Scheme: "https", Host: "api.github.com", Port: "8443"}, "https://api.github.com:8443"},
		{"https on port 80 is explicit", "https://api.github.com:80",
			Origin{Scheme: "https", Host: "api.github.com", Port: "80"}, "https://api.github.com:80"},
		{"http on port 443 is explicit", "http://api.github.com:443",
			Origin{Scheme: "http", Host: "api.github.com", Port: "443"}, "http://api.github.com:443"},
		{"ipv4 with port", "http://127.0.0.1:9401",
			Origin{Scheme: "http", Host: "127.0.0.1", Port: "9401"}, "http://127.0.0.1:9401"},
		{"max port", "http://127.0.0.1:65535",
			Origin{Scheme: "http", Host: "127.0.0.1", Port: "65535"}, "http://127.0.0.1:65535"},
		{"ipv6 with port", "http://[::1]:9401",
			Origin{Scheme: "http", Host: "::1", Port: "9401"}, "http://[::1]:9401"},
		{"ipv6 without port", "https://[::1]",
			Origin{Scheme: "https", Host: "::1"}, "https://[::1]"},
		{"ipv6 default port dropped", "https://[2001:db8::1]:443",
			Origin{Scheme: "https", Host: "2001:db8::1"}, "https://[2001:db8::1]"},
		{"wildcard", "https://*.example.com",
			Origin{Scheme: "https", Host: "example.com", Wildcard: true}, "https://*.example.com"},
		{"wildcard lower-cased with port", "https://*.Example.COM:8443",
			Origin{Scheme: "https", Host: "example.com", Port: "8443", Wildcard: true}, "https://*.example.com:8443"},
		{"wildcard on deeper domain", "http://*.api.example.com",
			Origin{Scheme: "http", Host: "api.example.com", Wildcard: true}, "http://*.api.example.com"},
		{"any", "*",
			Origin{Scheme: "https", Any: true}, "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOrigin(tt.in)
			if err != nil {
				t.Fatalf("ParseOrigin(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseOrigin(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if s := got.String(); s != tt.str {
				t.Fatalf("String() = %q, want %q", s, tt.str)
			}
			// The canonical form parses back to the same origin.
			again, err := ParseOrigin(got.String())
			if err != nil || again != got {
				t.Fatalf("ParseOrigin(String()) = %+v, %v; want %+v", again, err, got)
			}
		})
	}
}

func TestParseOriginRefused(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"no scheme", "api.github.com"},
		{"scheme-relative", "//api.github.com"},
		{"ftp", "ftp://api.github.com"},
		{"ws", "ws://api.github.com"},
		{"scheme only", "https://"},
		{"trailing slash", "https://api.github.com/"},
		{"path", "https://api.github.com/repos"},
		{"query", "https://api.github.com?x=1"},
		{"fragment", "https://api.github.com#top"},
		{"userinfo", "https://user@api.github.com"},
		{"userinfo with password", "https://user:pw@api.github.com"},
		{"space", "https://api github.com"},
		{"backslash", "https://api.github.com\\evil.com"},
		{"leading space", " https://api.github.com"},
		{"tab in host", "https://api.git\thub.com"},
		{"percent escape in host", "https://exa%41mple.com"},
		{"empty label", "https://api..github.com"},
		{"trailing dot", "https://api.github.com."},
		{"leading dot", "https://.github.com"},
		{"label too long", "https://" + strings.Repeat("a", 64) + ".com"},
		{"empty port", "https://api.github.com:"},
		{"port zero", "https://api.github.com:0"},
		{"port too big", "https://api.github.com:65536"},
		{"port far too big", "https://api.github.com:999999"},
		{"port not a number", "https://api.github.com:https"},
		{"negative port", "https://api.github.com:-1"},
		{"signed port", "https://api.github.com:+443"},
		{"two ports", "https://api.github.com:443:443"},
		{"unclosed ipv6", "https://[::1"},
		{"ipv6 zone", "https://[fe80::1%25eth0]"},
		{"star alone as host", "https://*"},
		{"star dot only", "https://*."},
		{"star in the middle", "https://api.*.example.com"},
		{"star glued to label", "https://*example.com"},
		{"star inside label", "https://a*.example.com"},
		{"star at the end", "https://example.*"},
		{"double wildcard", "https://*.*.example.com"},
		{"wildcard on TLD", "https://*.com"},
		{"wildcard on single label", "https://*.localhost"},
		{"wildcard on ipv4", "https://*.127.0.0.1"},
		{"wildcard on ipv4 with port", "http://*.10.0.0.1:9401"},
		{"wildcard on ipv6", "https://*.[::1]"},
		{"wildcard without scheme", "*.example.com"},
		{"double star", "**"},
		{"star with port", "*:443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseOrigin(tt.in)
			if err == nil {
				t.Fatalf("ParseOrigin(%q) = %+v, want an error", tt.in, o)
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != EINVALID || e.Field != "allowed_origins" {
				t.Fatalf("ParseOrigin(%q) error = %#v, want EINVALID on allowed_origins", tt.in, err)
			}
		})
	}
}

// Ports are canonical: "https://example.com:0443" is the default port.
func TestParseOriginLeadingZeroPortIsCanonical(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"https default port with leading zero", "https://example.com:0443", "https://example.com"},
		{"http default port with leading zero", "http://example.com:080", "http://example.com"},
		{"explicit port with leading zero", "http://127.0.0.1:09401", "http://127.0.0.1:9401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseOrigin(tt.in)
			if err != nil {
				return // refusing is fine too
			}
			if o.String() != tt.want {
				t.Fatalf("ParseOrigin(%q).String() = %q, want %q (or an error)", tt.in, o.String(), tt.want)
			}
		})
	}
}

func TestOriginMatch(t *testing.T) {
	tests := []struct {
		name   string
		origin string
		host   string
		port   string
		want   bool
	}{
		// exact hosts
		{"exact host default port", "https://api.github.com", "api.github.com", "", true},
		{"exact host explicit 443", "https://api.github.com", "api.github.com", "443", true},
		{"exact host other port", "https://api.github.com", "api.github.com", "8443", false},
		{"https does not match port 80", "https://api.github.com", "api.github.com", "80", false},
		{"other host", "https://api.github.com", "github.com", "", false},
		{"subdomain of exact host", "https://api.github.com", "x.api.github.com", "", false},
		{"suffix trick on exact host", "https://api.github.com", "evilapi.github.com", "", false},
		{"host with appended domain", "https://api.github.com", "api.github.com.evil.com", "", false},
		{"http default port", "http://localhost", "localhost", "", true},
		{"http explicit 80", "http://localhost", "localhost", "80", true},
		{"http does not match 443", "http://localhost", "localhost", "443", false},
		// explicit ports
		{"explicit port matches itself", "http://127.0.0.1:9401", "127.0.0.1", "9401", true},
		{"explicit port refuses default", "http://127.0.0.1:9401", "127.0.0.1", "", false},
		{"explicit port refuses 80", "http://127.0.0.1:9401", "127.0.0.1", "80", false},
		{"explicit port refuses other", "http://127.0.0.1:9401", "127.0.0.1", "9402", false},
		{"explicit port other host", "http://127.0.0.1:9401", "127.0.0.2", "9401", false},
		{"https on 80 matches 80", "https://api.example.com:80", "api.example.com", "80", true},
		{"https on 80 refuses default", "https://api.example.com:80", "api.example.com", "", false},
		{"https on 80 refuses 443", "https://api.example.com:80", "api.example.com", "443", false},
		{"ipv6 with port", "http://[::1]:9401", "::1", "9401", true},
		{"ipv6 with port refuses default", "http://[::1]:9401", "::1", "", false},
		{"ipv6 other address", "http://[::1]:9401", "::2", "9401", false},
		// wildcards
		{"wildcard one level", "https://*.example.com", "api.example.com", "", true},
		{"wildcard deep", "https://*.example.com", "a.b.c.example.com", "", true},
		{"wildcard explicit 443", "https://*.example.com", "api.example.com", "443", true},
		{"wildcard other port", "https://*.example.com", "api.example.com", "8443", false},
		{"wildcard not apex", "https://*.example.com", "example.com", "", false},
		{"wildcard not glued suffix", "https://*.example.com", "evilexample.com", "", false},
		{"wildcard not empty label", "https://*.example.com", ".example.com", "", false},
		{"wildcard not other domain", "https://*.example.com", "example.com.evil.net", "", false},
		{"wildcard not parent", "https://*.api.example.com", "www.example.com", "", false},
		{"wildcard with port", "https://*.example.com:8443", "api.example.com", "8443", true},
		{"wildcard with port refuses default", "https://*.example.com:8443", "api.example.com", "", false},
		// any
		{"any default port", "*", "anything.example.org", "", true},
		{"any 443", "*", "anything.example.org", "443", true},
		{"any ip default port", "*", "10.0.0.1", "", true},
		{"any refuses 80", "*", "anything.example.org", "80", false},
		{"any refuses 8443", "*", "anything.example.org", "8443", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseOrigin(tt.origin)
			if err != nil {
				t.Fatalf("ParseOrigin(%q): %v", tt.origin, err)
			}
			if got := o.Match(tt.host, tt.port); got != tt.want {
				t.Fatalf("%q.Match(%q, %q) = %v, want %v", tt.origin, tt.host, tt.port, got, tt.want)
			}
		})
	}
}

func TestParseOrigins(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    []string // canonical forms; nil with wantErr false means an empty result
		wantErr bool
	}{
		{"nil", nil, nil, false},
		{"empty", []string{}, nil, false},
		{"keeps order", []string{"https://b.example.com", "https://A.example.com:443", "http://127.0.0.1:9401"},
			[]string{"https://b.example.com", "https://a.example.com", "http://127.0.0.1:9401"}, false},
		{"one bad entry fails all", []string{"https://ok.example.com", "https://bad.example.com/path"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOrigins(tt.in)
			if tt.wantErr {
				if err == nil || ErrorCode(err) != EINVALID {
					t.Fatalf("ParseOrigins(%q) = %v, %v; want EINVALID", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseOrigins(%q): %v", tt.in, err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ParseOrigins(%q) = %v, want %v", tt.in, got, tt.want)
			}
			for i := range got {
				if got[i].String() != tt.want[i] {
					t.Fatalf("ParseOrigins(%q)[%d] = %q, want %q", tt.in, i, got[i].String(), tt.want[i])
				}
			}
		})
	}
}

func TestMatchOrigin(t *testing.T) {
	list, err := ParseOrigins([]string{"https://api.example.com", "https://*.example.com", "http://127.0.0.1:9401"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		host   string
		port   string
		want   string // "" when nothing matches
		wantOK bool
	}{
		{"first entry wins", "api.example.com", "", "https://api.example.com", true},
		{"wildcard entry", "www.example.com", "", "https://*.example.com", true},
		{"port entry", "127.0.0.1", "9401", "http://127.0.0.1:9401", true},
		{"no entry for apex", "example.com", "", "", false},
		{"no entry for port", "127.0.0.1", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, ok := MatchOrigin(list, tt.host, tt.port)
			if ok != tt.wantOK {
				t.Fatalf("MatchOrigin(%q, %q) ok = %v, want %v", tt.host, tt.port, ok, tt.wantOK)
			}
			if ok && o.String() != tt.want {
				t.Fatalf("MatchOrigin(%q, %q) = %q, want %q", tt.host, tt.port, o.String(), tt.want)
			}
			if !ok && o != (Origin{}) {
				t.Fatalf("MatchOrigin(%q, %q) = %+v with ok false, want the zero Origin", tt.host, tt.port, o)
			}
		})
	}
	if _, ok := MatchOrigin(nil, "api.example.com", ""); ok {
		t.Fatal("MatchOrigin(nil, …) matched; an empty list must admit nothing")
	}
}
