package admin_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/authproxy/authproxy/credstore"
	"github.com/authproxy/authproxy/proxy/admin"
)

const (
	adminToken = "admin-token-for-tests"
	mediaType  = "application/vnd.api+json"
	// none stands for "send no such header" in a request.
	none = "\x00none"
)

var testKey = bytes.Repeat([]byte{0x42}, credstore.KeySize)

// syncBuffer is a bytes.Buffer that the server's goroutines and the test
// share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness runs the real admin handler on a loopback listener over a real
// bbolt file, and keeps every response body for the no-secret test.
type harness struct {
	t      *testing.T
	dbPath string
	store  *credstore.Store
	srv    *httptest.Server
	logs   *syncBuffer
	bodies []string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, dbPath: filepath.Join(t.TempDir(), "a.db"), logs: &syncBuffer{}}
	h.open()
	t.Cleanup(h.close)
	return h
}

func (h *harness) open() {
	h.t.Helper()
	store, err := credstore.Open(h.dbPath, testKey)
	if err != nil {
		h.t.Fatalf("open store: %v", err)
	}
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := &admin.Server{Store: store, Token: adminToken, Logger: logger}
	h.store, h.srv = store, httptest.NewServer(s.Router())
}

// close stops the server (waiting for in-flight requests, so that the log
// is complete) and closes the store.
func (h *harness) close() {
	if h.srv == nil {
		return
	}
	h.srv.Close()
	if err := h.store.Close(); err != nil {
		h.t.Errorf("close store: %v", err)
	}
	h.srv = nil
}

func (h *harness) restart() {
	h.t.Helper()
	h.close()
	h.open()
}

type request struct {
	method, path, body string
	auth               string // Authorization header; "" means the admin token, none means no header
	contentType        string // "" means the JSON:API media type when there is a body; none means no header
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (h *harness) do(rq request) response {
	h.t.Helper()
	req, err := http.NewRequest(rq.method, h.srv.URL+rq.path, strings.NewReader(rq.body))
	if err != nil {
		h.t.Fatal(err)
	}
	switch rq.auth {
	case "":
		req.Header.Set("Authorization", "Bearer "+adminToken)
	case none:
	default:
		req.Header.Set("Authorization", rq.auth)
	}
	switch {
	case rq.contentType == none:
	case rq.contentType != "":
		req.Header.Set("Content-Type", rq.contentType)
	case rq.body != "":
		req.Header.Set("Content-Type", mediaType)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", rq.method, rq.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: read body: %v", rq.method, rq.path, err)
	}
	h.bodies = append(h.bodies, string(body))
	return response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

func (h *harness) call(method, path, body string) response {
	h.t.Helper()
	return h.do(request{method: method, path: path, body: body})
}

// create POSTs body to path and returns the new id.
func (h *harness) create(path, body string) string {
	h.t.Helper()
	r := h.call(http.MethodPost, path, body)
	if r.Status != http.StatusCreated {
		h.t.Fatalf("POST %s: status %d, want 201; body %s", path, r.Status, r.Body)
	}
	return r.resource(h.t).ID
}

// Default auth client credentials per type.
const (
	oauth2Settings = `{"client_id":"cid","client_secret":"csecret","auth_uri":"https://auth.example.com/authorize","token_uri":"https://auth.example.com/token"}`
	apiKeySettings = `{"headerName":"X-Api-Key"}`
)

// client creates an auth client of type typ with settings at the level
// named by rels (a relationships object, or "" for global).
func (h *harness) client(typ, settings, rels string) string {
	h.t.Helper()
	return h.create("/v2/auth-clients", doc("auth-client",
		fmt.Sprintf(`{"type":%q,"name":"client","credentials":%s,"allowed_origins":["https://api.example.com"]}`, typ, settings), rels))
}

// secret creates a secret in ws using clientID.
func (h *harness) secret(ws, clientID, creds string) string {
	h.t.Helper()
	return h.create("/v2/workspaces/"+ws+"/secrets", secretDoc(`{"name":"secret","credentials":`+creds+`}`, clientID))
}

// doc builds a JSON:API request document; empty attrs or rels are left out.
func doc(typ, attrs, rels string) string {
	s := `{"data":{"type":"` + typ + `"`
	if attrs != "" {
		s += `,"attributes":` + attrs
	}
	if rels != "" {
		s += `,"relationships":` + rels
	}
	return s + "}}"
}

func secretDoc(attrs, clientID string) string {
	return doc("auth-secret", attrs, rel("auth_client", "auth-client", clientID))
}

// rel builds a relationships object with one to-one relationship.
func rel(name, typ, id string) string {
	return fmt.Sprintf(`{%q:{"data":{"id":%q,"type":%q}}}`, name, id, typ)
}

type resource struct {
	Type          string                    `json:"type"`
	ID            string                    `json:"id"`
	Attributes    map[string]any            `json:"attributes"`
	Relationships map[string]map[string]any `json:"relationships"`
}

// relID returns the id a relationship of res names, or "" if it has none.
func (r resource) relID(name string) string {
	data, _ := r.Relationships[name]["data"].(map[string]any)
	id, _ := data["id"].(string)
	return id
}

func (r response) resource(t *testing.T) resource {
	t.Helper()
	var d struct{ Data resource }
	if err := json.Unmarshal(r.Body, &d); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
	return d.Data
}

func (r response) list(t *testing.T) []resource {
	t.Helper()
	var d struct{ Data []resource }
	if err := json.Unmarshal(r.Body, &d); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
	if d.Data == nil {
		t.Fatalf("data is not a list: %s", r.Body)
	}
	return d.Data
}

func wantStatus(t *testing.T, r response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	if status != http.StatusNoContent {
		if ct := r.Header.Get("Content-Type"); ct != mediaType {
			t.Errorf("Content-Type %q, want %q", ct, mediaType)
		}
	}
}

// wantError checks a JSON:API error response. pointer "" means the source
// is not checked.
func wantError(t *testing.T, r response, status int, code, pointer string) {
	t.Helper()
	wantStatus(t, r, status)
	var d struct {
		Errors []struct {
			Status, Code, Title, Detail string
			Source                      *struct{ Pointer string }
		}
	}
	if err := json.Unmarshal(r.Body, &d); err != nil || len(d.Errors) != 1 {
		t.Fatalf("not one JSON:API error (%v): %s", err, r.Body)
	}
	e := d.Errors[0]
	if e.Status != strconv.Itoa(status) || e.Code != code || e.Title != http.StatusText(status) || e.Detail == "" {
		t.Errorf("error %+v, want status %d code %q, a title and a detail", e, status, code)
	}
	if pointer != "" && (e.Source == nil || e.Source.Pointer != pointer) {
		t.Errorf("source %+v, want pointer %q; body %s", e.Source, pointer, r.Body)
	}
}

func TestHealth(t *testing.T) {
	h := newHarness(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		t.Run(path, func(t *testing.T) {
			r := h.do(request{method: http.MethodGet, path: path, auth: none})
			if r.Status != http.StatusOK || strings.TrimSpace(string(r.Body)) != `{"status":"ok"}` {
				t.Fatalf("got %d %s", r.Status, r.Body)
			}
		})
	}
}

func TestAuthentication(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name, auth, path string
		want             int
	}{
		{"no header", none, "/v2/auth-clients", http.StatusUnauthorized},
		{"wrong token", "Bearer not-the-token", "/v2/auth-clients", http.StatusUnauthorized},
		{"token prefix", "Bearer " + adminToken[:5], "/v2/auth-clients", http.StatusUnauthorized},
		{"token with suffix", "Bearer " + adminToken + "x", "/v2/auth-clients", http.StatusUnauthorized},
		{"empty bearer", "Bearer ", "/v2/auth-clients", http.StatusUnauthorized},
		{"basic scheme", "Basic " + adminToken, "/v2/auth-clients", http.StatusUnauthorized},
		{"bare token", adminToken, "/v2/auth-clients", http.StatusUnauthorized},
		{"no token on a secret route", none, "/v2/workspaces/ws1/secrets", http.StatusUnauthorized},
		{"no token on an unknown route", none, "/v2/nothing", http.StatusUnauthorized},
		{"right token", "Bearer " + adminToken, "/v2/auth-clients", http.StatusOK},
		{"scheme is case-insensitive", "bearer " + adminToken, "/v2/auth-clients", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do(request{method: http.MethodGet, path: tt.path, auth: tt.auth})
			if tt.want == http.StatusOK {
				wantStatus(t, r, http.StatusOK)
				return
			}
			wantError(t, r, http.StatusUnauthorized, "unauthorized", "")
			if got := r.Header.Get("WWW-Authenticate"); got != "Bearer" {
				t.Errorf("WWW-Authenticate %q, want Bearer", got)
			}
		})
	}

	t.Run("empty configured token refuses everything", func(t *testing.T) {
		srv := httptest.NewServer((&admin.Server{Store: h.store, Logger: slog.New(slog.DiscardHandler)}).Router())
		defer srv.Close()
		for _, auth := range []string{"", "Bearer ", "Bearer  "} {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/auth-clients", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("Authorization %q: status %d, want 401", auth, resp.StatusCode)
			}
		}
	})
}

func TestCreateAuthClient(t *testing.T) {
	h := newHarness(t)
	basic := func(extra string) string {
		return doc("auth-client", `{"type":"basic","name":"b","credentials":{}`+extra+`}`, "")
	}
	tests := []struct {
		name        string
		body        string
		contentType string
		status      int
		code        string
		pointer     string
		check       func(t *testing.T, res resource)
	}{
		{name: "noauth global", body: doc("auth-client", `{"type":"noauth","name":"any","credentials":{},"allowed_origins":["*"]}`, ""),
			status: 201, check: func(t *testing.T, res resource) {
				if res.Relationships != nil {
					t.Errorf("a global client has relationships: %v", res.Relationships)
				}
				if got := res.Attributes["allowed_origins"]; !reflect.DeepEqual(got, []any{"*"}) {
					t.Errorf("allowed_origins %v", got)
				}
			}},
		{name: "basic at tenant level", body: doc("auth-client", `{"type":"basic","name":"b","credentials":{}}`, rel("tenant", "tenant", "t1")),
			status: 201, check: func(t *testing.T, res resource) {
				if res.relID("tenant") != "t1" {
					t.Errorf("relationships %v", res.Relationships)
				}
				if got := res.Attributes["allowed_origins"]; !reflect.DeepEqual(got, []any{}) {
					t.Errorf("allowed_origins %v, want []", got)
				}
			}},
		{name: "api_key at contract level", body: doc("auth-client", `{"type":"api_key","name":"k","credentials":`+apiKeySettings+`}`, rel("contract", "contract", "c1")),
			status: 201, check: func(t *testing.T, res resource) {
				creds := res.Attributes["credentials"].(map[string]any)
				if creds["headerName"] != "X-Api-Key" || res.relID("contract") != "c1" {
					t.Errorf("got %+v", res)
				}
			}},
		{name: "oauth2 at workspace level masks the client secret", body: doc("auth-client", `{"type":"oauth2","name":"gh","credentials":`+oauth2Settings+`}`, rel("workspace", "workspace", "ws1")),
			status: 201, check: func(t *testing.T, res resource) {
				creds := res.Attributes["credentials"].(map[string]any)
				if creds["client_secret"] != credstore.Masked || creds["client_id"] != "cid" || res.relID("workspace") != "ws1" {
					t.Errorf("got %+v", res)
				}
			}},
		{name: "oauth2_instagram", body: doc("auth-client", `{"type":"oauth2_instagram","name":"ig","credentials":`+oauth2Settings+`}`, ""), status: 201},
		{name: "null relationship data is global", body: doc("auth-client", `{"type":"basic","name":"b"}`, `{"workspace":{"data":null}}`),
			status: 201, check: func(t *testing.T, res resource) {
				if res.Relationships != nil {
					t.Errorf("relationships %v", res.Relationships)
				}
			}},
		{name: "application/json content type", body: basic(""), contentType: "application/json; charset=utf-8", status: 201},
		{name: "no content type", body: basic(""), contentType: none, status: 201},

		{name: "text/plain content type", body: basic(""), contentType: "text/plain", status: 415, code: "unsupported_media_type"},
		{name: "empty body", body: "", status: 400, code: "malformed"},
		{name: "truncated JSON", body: `{"data":{"type":"auth-client"`, status: 400, code: "malformed"},
		{name: "syntax error", body: `{"data":{"type":"auth-client" "x"}}`, status: 400, code: "malformed"},
		{name: "two JSON values", body: basic("") + basic(""), status: 400, code: "malformed"},
		{name: "not an object", body: `[]`, status: 400, code: "malformed"},
		{name: "no data", body: `{}`, status: 400, code: "malformed"},
		{name: "data not an object", body: `{"data":"x"}`, status: 400, code: "malformed"},
		{name: "unknown top-level field", body: `{"data":{"type":"auth-client","attributes":{"type":"basic","name":"b"}},"meta":{}}`, status: 400, code: "malformed"},
		{name: "unknown data field", body: `{"data":{"type":"auth-client","links":{},"attributes":{"type":"basic","name":"b"}}}`, status: 400, code: "malformed"},
		{name: "unknown attribute", body: basic(`,"colour":"red"`), status: 400, code: "malformed"},
		{name: "unknown credentials field", body: doc("auth-client", `{"type":"basic","name":"b","credentials":{"bogus":1}}`, ""),
			status: 400, code: "malformed", pointer: "/data/attributes/credentials"},
		{name: "credentials not an object", body: doc("auth-client", `{"type":"basic","name":"b","credentials":"x"}`, ""),
			status: 400, code: "malformed", pointer: "/data/attributes/credentials"},
		{name: "unknown relationship", body: doc("auth-client", `{"type":"basic","name":"b"}`, rel("auth_client", "auth-client", "x")), status: 400, code: "malformed"},
		{name: "extra member in a relationship", body: doc("auth-client", `{"type":"basic","name":"b"}`, `{"tenant":{"data":{"id":"t1","type":"tenant"},"meta":{}}}`), status: 400, code: "malformed"},
		{name: "missing data.type", body: `{"data":{"attributes":{"type":"basic","name":"b"}}}`, status: 400, code: "malformed"},
		{name: "data.type of another resource", body: doc("auth-secret", `{"type":"basic","name":"b"}`, ""), status: 409, code: "conflict"},
		{name: "client-generated id", body: `{"data":{"type":"auth-client","id":"mine","attributes":{"type":"basic","name":"b"}}}`, status: 403, code: "forbidden"},

		{name: "unknown type", body: doc("auth-client", `{"type":"kerberos","name":"b"}`, ""), status: 422, code: "invalid", pointer: "/data/attributes/type"},
		{name: "missing type", body: doc("auth-client", `{"name":"b"}`, ""), status: 422, code: "invalid", pointer: "/data/attributes/type"},
		{name: "missing name", body: doc("auth-client", `{"type":"basic"}`, ""), status: 422, code: "invalid", pointer: "/data/attributes/name"},
		{name: "blank name", body: doc("auth-client", `{"type":"basic","name":"  "}`, ""), status: 422, code: "invalid", pointer: "/data/attributes/name"},
		{name: "name of the wrong JSON type", body: doc("auth-client", `{"type":"basic","name":5}`, ""), status: 422, code: "invalid", pointer: "/data/attributes/name"},
		{name: "oauth2 without client_id", body: doc("auth-client", `{"type":"oauth2","name":"o","credentials":{"client_secret":"s","auth_uri":"https://a.example.com","token_uri":"https://a.example.com"}}`, ""),
			status: 422, code: "invalid", pointer: "/data/attributes/credentials/client_id"},
		{name: "oauth2 with a relative token_uri", body: doc("auth-client", `{"type":"oauth2","name":"o","credentials":{"client_id":"i","client_secret":"s","auth_uri":"https://a.example.com","token_uri":"/token"}}`, ""),
			status: 422, code: "invalid", pointer: "/data/attributes/credentials/token_uri"},
		{name: "token_expires_in of the wrong JSON type", body: doc("auth-client", `{"type":"oauth2","name":"o","credentials":{"token_expires_in":"soon"}}`, ""),
			status: 422, code: "invalid", pointer: "/data/attributes/credentials/token_expires_in"},
		{name: "reserved header name", body: doc("auth-client", `{"type":"api_key","name":"k","credentials":{"headerName":"Proxy-Authorization"}}`, ""),
			status: 422, code: "invalid", pointer: "/data/attributes/credentials/headerName"},
		{name: "origin with a path", body: basic(`,"allowed_origins":["https://api.example.com/v1"]`), status: 422, code: "invalid", pointer: "/data/attributes/allowed_origins"},
		{name: "ftp origin", body: basic(`,"allowed_origins":["ftp://api.example.com"]`), status: 422, code: "invalid", pointer: "/data/attributes/allowed_origins"},
		{name: "any origin for basic", body: basic(`,"allowed_origins":["*"]`), status: 422, code: "invalid", pointer: "/data/attributes/allowed_origins"},
		{name: "origins not a list", body: basic(`,"allowed_origins":"https://api.example.com"`), status: 422, code: "invalid", pointer: "/data/attributes/allowed_origins"},
		{name: "two levels", body: doc("auth-client", `{"type":"basic","name":"b"}`, `{"tenant":{"data":{"id":"t1","type":"tenant"}},"workspace":{"data":{"id":"ws1","type":"workspace"}}}`),
			status: 422, code: "invalid", pointer: "/data/relationships"},
		{name: "relationship of the wrong type", body: doc("auth-client", `{"type":"basic","name":"b"}`, rel("workspace", "tenant", "ws1")),
			status: 422, code: "invalid", pointer: "/data/relationships/workspace"},
		{name: "relationship without id", body: doc("auth-client", `{"type":"basic","name":"b"}`, rel("contract", "contract", "")),
			status: 422, code: "invalid", pointer: "/data/relationships/contract"},
		{name: "relationship with a bad id", body: doc("auth-client", `{"type":"basic","name":"b"}`, rel("tenant", "tenant", "t 1")),
			status: 422, code: "invalid", pointer: "/data/relationships/tenant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do(request{method: http.MethodPost, path: "/v2/auth-clients", body: tt.body, contentType: tt.contentType})
			if tt.status != http.StatusCreated {
				wantError(t, r, tt.status, tt.code, tt.pointer)
				return
			}
			wantStatus(t, r, http.StatusCreated)
			res := r.resource(t)
			if res.Type != "auth-client" || len(res.ID) < 22 {
				t.Errorf("type %q id %q", res.Type, res.ID)
			}
			if loc := r.Header.Get("Location"); loc != "/v2/auth-clients/"+res.ID {
				t.Errorf("Location %q", loc)
			}
			for _, k := range []string{"type", "name", "credentials", "allowed_origins", "created_at", "updated_at"} {
				if _, ok := res.Attributes[k]; !ok {
					t.Errorf("attribute %s missing: %s", k, r.Body)
				}
			}
			if tt.check != nil {
				tt.check(t, res)
			}
		})
	}
}

func TestAuthClientReadUpdateDelete(t *testing.T) {
	h := newHarness(t)

	t.Run("empty list", func(t *testing.T) {
		r := h.call(http.MethodGet, "/v2/auth-clients", "")
		wantStatus(t, r, http.StatusOK)
		if got := strings.TrimSpace(string(r.Body)); got != `{"data":[]}` {
			t.Fatalf("got %s", got)
		}
	})

	oauth := h.client("oauth2", oauth2Settings, "")
	basic := h.client("basic", `{}`, "")
	path := "/v2/auth-clients/" + oauth

	t.Run("get", func(t *testing.T) {
		r := h.call(http.MethodGet, path, "")
		wantStatus(t, r, http.StatusOK)
		if res := r.resource(t); res.ID != oauth || res.Attributes["type"] != "oauth2" {
			t.Fatalf("got %s", r.Body)
		}
	})
	t.Run("list, oldest first", func(t *testing.T) {
		r := h.call(http.MethodGet, "/v2/auth-clients", "")
		wantStatus(t, r, http.StatusOK)
		list := r.list(t)
		if len(list) != 2 || list[0].ID != oauth || list[1].ID != basic {
			t.Fatalf("got %s", r.Body)
		}
	})
	t.Run("get unknown", func(t *testing.T) {
		wantError(t, h.call(http.MethodGet, "/v2/auth-clients/nope", ""), 404, "not_found", "")
	})

	patch := func(attrs, rels string) string { return doc("auth-client", attrs, rels) }
	tests := []struct {
		name    string
		id      string
		body    string
		status  int
		code    string
		pointer string
		check   func(t *testing.T, res resource)
	}{
		{name: "rename keeps the rest", body: patch(`{"name":"renamed"}`, ""), status: 200, check: func(t *testing.T, res resource) {
			creds := res.Attributes["credentials"].(map[string]any)
			if res.Attributes["name"] != "renamed" || creds["client_id"] != "cid" || creds["client_secret"] != credstore.Masked {
				t.Errorf("got %+v", res.Attributes)
			}
			if got := res.Attributes["allowed_origins"]; !reflect.DeepEqual(got, []any{"https://api.example.com"}) {
				t.Errorf("allowed_origins %v", got)
			}
		}},
		{name: "credentials merge: client_id only keeps client_secret", body: patch(`{"credentials":{"client_id":"cid2"}}`, ""), status: 200, check: func(t *testing.T, res resource) {
			c, err := h.store.AuthClient(oauth)
			if err != nil {
				t.Fatal(err)
			}
			if c.Settings.ClientID != "cid2" || c.Settings.ClientSecret != "csecret" || c.Settings.TokenURI == "" {
				t.Errorf("settings after PATCH: id %q, secret kept %v, token_uri %q", c.Settings.ClientID, c.Settings.ClientSecret == "csecret", c.Settings.TokenURI)
			}
		}},
		{name: "empty list clears origins", body: patch(`{"allowed_origins":[]}`, ""), status: 200, check: func(t *testing.T, res resource) {
			if got := res.Attributes["allowed_origins"]; !reflect.DeepEqual(got, []any{}) {
				t.Errorf("allowed_origins %v", got)
			}
		}},
		{name: "set origins", body: patch(`{"allowed_origins":["https://*.example.com"]}`, ""), status: 200, check: func(t *testing.T, res resource) {
			if got := res.Attributes["allowed_origins"]; !reflect.DeepEqual(got, []any{"https://*.example.com"}) {
				t.Errorf("allowed_origins %v", got)
			}
		}},
		{name: "null clears origins", body: patch(`{"allowed_origins":null}`, ""), status: 200, check: func(t *testing.T, res resource) {
			if got := res.Attributes["allowed_origins"]; !reflect.DeepEqual(got, []any{}) {
				t.Errorf("allowed_origins %v", got)
			}
		}},
		{name: "same type is accepted", body: patch(`{"type":"oauth2"}`, ""), status: 200},
		{name: "move to a workspace", body: patch(`{}`, rel("workspace", "workspace", "ws9")), status: 200, check: func(t *testing.T, res resource) {
			if res.relID("workspace") != "ws9" {
				t.Errorf("relationships %v", res.Relationships)
			}
		}},
		{name: "no relationships member keeps the scope", body: patch(`{"name":"n"}`, ""), status: 200, check: func(t *testing.T, res resource) {
			if res.relID("workspace") != "ws9" {
				t.Errorf("relationships %v", res.Relationships)
			}
		}},
		{name: "empty relationships make it global", body: patch(`{}`, `{}`), status: 200, check: func(t *testing.T, res resource) {
			if res.Relationships != nil {
				t.Errorf("relationships %v", res.Relationships)
			}
		}},
		{name: "data.id matching the URL", body: `{"data":{"type":"auth-client","id":"` + oauth + `","attributes":{"name":"n2"}}}`, status: 200},

		{name: "type change", body: patch(`{"type":"basic"}`, ""), status: 422, code: "invalid", pointer: "/data/attributes/type"},
		{name: "blank name", body: patch(`{"name":""}`, ""), status: 422, code: "invalid", pointer: "/data/attributes/name"},
		{name: "bad token_uri", body: patch(`{"credentials":{"token_uri":"nope"}}`, ""), status: 422, code: "invalid", pointer: "/data/attributes/credentials/token_uri"},
		{name: "bad origin", body: patch(`{"allowed_origins":["api.example.com"]}`, ""), status: 422, code: "invalid", pointer: "/data/attributes/allowed_origins"},
		{name: "two levels", body: patch(`{}`, `{"tenant":{"data":{"id":"t1","type":"tenant"}},"contract":{"data":{"id":"c1","type":"contract"}}}`), status: 422, code: "invalid", pointer: "/data/relationships"},
		{name: "unknown credentials field", body: patch(`{"credentials":{"username":"u"}}`, ""), status: 400, code: "malformed", pointer: "/data/attributes/credentials"},
		{name: "unknown attribute", body: patch(`{"state":"ready"}`, ""), status: 400, code: "malformed"},
		{name: "malformed JSON", body: `{"data":`, status: 400, code: "malformed"},
		{name: "data.id not matching the URL", body: `{"data":{"type":"auth-client","id":"other","attributes":{"name":"n"}}}`, status: 409, code: "conflict"},
		{name: "data.type of another resource", body: doc("workspace", "", ""), status: 409, code: "conflict"},
		{name: "unknown id", id: "nope", body: patch(`{"name":"n"}`, ""), status: 404, code: "not_found"},
	}
	for _, tt := range tests {
		t.Run("patch/"+tt.name, func(t *testing.T) {
			id := oauth
			if tt.id != "" {
				id = tt.id
			}
			r := h.call(http.MethodPatch, "/v2/auth-clients/"+id, tt.body)
			if tt.status != http.StatusOK {
				wantError(t, r, tt.status, tt.code, tt.pointer)
				return
			}
			wantStatus(t, r, http.StatusOK)
			if tt.check != nil {
				tt.check(t, r.resource(t))
			}
		})
	}

	t.Run("patch does not change what a failed patch named", func(t *testing.T) {
		c, _ := h.store.AuthClient(oauth)
		if c.Type != credstore.OAuth2 || c.Settings.TokenURI != "https://auth.example.com/token" || c.Name != "n2" {
			t.Fatalf("client after failed PATCHes: type %s, name %q, token_uri %q", c.Type, c.Name, c.Settings.TokenURI)
		}
	})

	t.Run("scope change that would strand a secret", func(t *testing.T) {
		h.secret("ws1", basic, `{"username":"u","password":"p"}`)
		r := h.call(http.MethodPatch, "/v2/auth-clients/"+basic, doc("auth-client", "", rel("workspace", "workspace", "ws2")))
		wantError(t, r, http.StatusConflict, "conflict", "")
		// The secret's own workspace is still fine.
		r = h.call(http.MethodPatch, "/v2/auth-clients/"+basic, doc("auth-client", "", rel("workspace", "workspace", "ws1")))
		wantStatus(t, r, http.StatusOK)
	})
	t.Run("delete a client in use", func(t *testing.T) {
		wantError(t, h.call(http.MethodDelete, "/v2/auth-clients/"+basic, ""), http.StatusConflict, "conflict", "")
	})
	t.Run("delete", func(t *testing.T) {
		r := h.call(http.MethodDelete, path, "")
		if r.Status != http.StatusNoContent || len(r.Body) != 0 {
			t.Fatalf("got %d %q", r.Status, r.Body)
		}
		wantError(t, h.call(http.MethodGet, path, ""), 404, "not_found", "")
		wantError(t, h.call(http.MethodDelete, path, ""), 404, "not_found", "")
	})
}

func TestWorkspaces(t *testing.T) {
	h := newHarness(t)
	wsDoc := func(rels string) string { return doc("workspace", "", rels) }
	both := `{"contract":{"data":{"id":"c1","type":"contract"}},"tenant":{"data":{"id":"t1","type":"tenant"}}}`

	tests := []struct {
		name     string
		method   string
		path     string
		body     string
		status   int
		code     string
		pointer  string
		contract string
		tenant   string
	}{
		{name: "create with contract and tenant", method: "PUT", path: "/v2/workspaces/ws1", body: wsDoc(both), status: 201, contract: "c1", tenant: "t1"},
		{name: "get", method: "GET", path: "/v2/workspaces/ws1", status: 200, contract: "c1", tenant: "t1"},
		{name: "update drops what it leaves out", method: "PUT", path: "/v2/workspaces/ws1", body: wsDoc(rel("tenant", "tenant", "t2")), status: 200, tenant: "t2"},
		{name: "create with neither", method: "PUT", path: "/v2/workspaces/ws2", body: wsDoc(""), status: 201},
		{name: "empty attributes and matching id", method: "PUT", path: "/v2/workspaces/ws2", body: `{"data":{"type":"workspace","id":"ws2","attributes":{}}}`, status: 200},
		{name: "null relationship data", method: "PUT", path: "/v2/workspaces/ws2", body: wsDoc(`{"contract":{"data":null}}`), status: 200},

		{name: "get unknown", method: "GET", path: "/v2/workspaces/nope", status: 404, code: "not_found"},
		{name: "relationship of the wrong type", method: "PUT", path: "/v2/workspaces/ws1", body: wsDoc(rel("contract", "tenant", "c1")), status: 422, code: "invalid", pointer: "/data/relationships/contract"},
		{name: "bad contract id", method: "PUT", path: "/v2/workspaces/ws1", body: wsDoc(rel("contract", "contract", "c/1")), status: 422, code: "invalid", pointer: "/data/relationships/contract"},
		{name: "bad tenant id", method: "PUT", path: "/v2/workspaces/ws1", body: wsDoc(rel("tenant", "tenant", "t 1")), status: 422, code: "invalid", pointer: "/data/relationships/tenant"},
		{name: "bad workspace id in the URL", method: "PUT", path: "/v2/workspaces/w%20s", body: wsDoc(""), status: 422, code: "invalid"},
		{name: "unknown relationship", method: "PUT", path: "/v2/workspaces/ws1", body: wsDoc(rel("workspace", "workspace", "x")), status: 400, code: "malformed"},
		{name: "an attribute", method: "PUT", path: "/v2/workspaces/ws1", body: `{"data":{"type":"workspace","attributes":{"name":"x"}}}`, status: 400, code: "malformed"},
		{name: "malformed JSON", method: "PUT", path: "/v2/workspaces/ws1", body: `{"data":{`, status: 400, code: "malformed"},
		{name: "empty body", method: "PUT", path: "/v2/workspaces/ws1", status: 400, code: "malformed"},
		{name: "data.id not matching the URL", method: "PUT", path: "/v2/workspaces/ws1", body: `{"data":{"type":"workspace","id":"ws2"}}`, status: 409, code: "conflict"},
		{name: "data.type of another resource", method: "PUT", path: "/v2/workspaces/ws1", body: doc("tenant", "", ""), status: 409, code: "conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.call(tt.method, tt.path, tt.body)
			if tt.status >= 400 {
				wantError(t, r, tt.status, tt.code, tt.pointer)
				return
			}
			wantStatus(t, r, tt.status)
			res := r.resource(t)
			if res.Type != "workspace" || res.ID != strings.TrimPrefix(tt.path, "/v2/workspaces/") ||
				res.relID("contract") != tt.contract || res.relID("tenant") != tt.tenant {
				t.Fatalf("got %s", r.Body)
			}
			if tt.contract == "" && tt.tenant == "" && res.Relationships != nil {
				t.Errorf("relationships %v, want none", res.Relationships)
			}
		})
	}

	t.Run("change that would hide a client from a secret", func(t *testing.T) {
		wantStatus(t, h.call("PUT", "/v2/workspaces/ws3", wsDoc(both)), 201)
		client := h.client("basic", `{}`, rel("contract", "contract", "c1"))
		h.secret("ws3", client, `{"username":"u"}`)
		wantError(t, h.call("PUT", "/v2/workspaces/ws3", wsDoc(rel("tenant", "tenant", "t1"))), http.StatusConflict, "conflict", "")
		// Keeping the contract is fine.
		wantStatus(t, h.call("PUT", "/v2/workspaces/ws3", wsDoc(rel("contract", "contract", "c1"))), 200)
	})
}

func TestSecrets(t *testing.T) {
	h := newHarness(t)
	basic := h.client("basic", `{}`, "")
	basic2 := h.client("basic", `{}`, rel("workspace", "workspace", "ws1"))
	apiKey := h.client("api_key", apiKeySettings, "")
	noauth := h.client("noauth", `{}`, "")
	oauth := h.client("oauth2", oauth2Settings, "")
	insta := h.client("oauth2_instagram", oauth2Settings, "")
	const base = "/v2/workspaces/ws1/secrets"

	t.Run("empty list", func(t *testing.T) {
		r := h.call(http.MethodGet, base, "")
		wantStatus(t, r, http.StatusOK)
		if got := strings.TrimSpace(string(r.Body)); got != `{"data":[]}` {
			t.Fatalf("got %s", got)
		}
	})

	create := []struct {
		name    string
		body    string
		status  int
		code    string
		pointer string
		state   string
		creds   map[string]any // the masked credentials attribute
	}{
		{name: "basic", body: secretDoc(`{"name":"s","credentials":{"username":"u","password":"p"}}`, basic), status: 201, state: "ready",
			creds: map[string]any{"username": "u", "password": credstore.Masked}},
		{name: "api_key with the client's header name", body: secretDoc(`{"name":"s","credentials":{"headerValue":"v"}}`, apiKey), status: 201, state: "ready",
			creds: map[string]any{"headerValue": credstore.Masked}},
		{name: "noauth", body: secretDoc(`{"name":"s","credentials":{}}`, noauth), status: 201, state: "ready", creds: map[string]any{}},
		{name: "noauth without credentials", body: secretDoc(`{"name":"s"}`, noauth), status: 201, state: "ready", creds: map[string]any{}},
		{name: "oauth2 without a token is pending", body: secretDoc(`{"name":"s"}`, oauth), status: 201, state: "pending", creds: map[string]any{}},
		{name: "oauth2 with a token is ready", body: secretDoc(`{"name":"s","credentials":{"access_token":"a","refresh_token":"r","expires_in":3600}}`, oauth), status: 201, state: "ready"},
		{name: "oauth2_instagram with a token", body: secretDoc(`{"name":"s","credentials":{"access_token":"a"}}`, insta), status: 201, state: "ready",
			creds: map[string]any{"access_token": credstore.Masked}},
		{name: "a workspace-level client of this workspace", body: secretDoc(`{"name":"s","credentials":{"username":"u"}}`, basic2), status: 201, state: "ready"},

		{name: "no auth_client", body: doc("auth-secret", `{"name":"s","credentials":{"username":"u"}}`, ""), status: 422, code: "invalid", pointer: "/data/relationships/auth_client"},
		{name: "null auth_client", body: doc("auth-secret", `{"name":"s"}`, `{"auth_client":{"data":null}}`), status: 422, code: "invalid", pointer: "/data/relationships/auth_client"},
		{name: "unknown auth_client", body: secretDoc(`{"name":"s"}`, "nope"), status: 422, code: "invalid", pointer: "/data/relationships/auth_client"},
		{name: "auth_client of the wrong type", body: doc("auth-secret", `{"name":"s"}`, rel("auth_client", "workspace", basic)), status: 422, code: "invalid", pointer: "/data/relationships/auth_client"},
		{name: "missing name", body: secretDoc(`{"credentials":{"username":"u"}}`, basic), status: 422, code: "invalid", pointer: "/data/attributes/name"},
		{name: "basic without username", body: secretDoc(`{"name":"s","credentials":{"password":"p"}}`, basic), status: 422, code: "invalid", pointer: "/data/attributes/credentials/username"},
		{name: "basic username with a colon", body: secretDoc(`{"name":"s","credentials":{"username":"a:b"}}`, basic), status: 422, code: "invalid", pointer: "/data/attributes/credentials/username"},
		{name: "api_key without value", body: secretDoc(`{"name":"s","credentials":{"headerName":"X-K"}}`, apiKey), status: 422, code: "invalid", pointer: "/data/attributes/credentials/headerValue"},
		{name: "password of the wrong JSON type", body: secretDoc(`{"name":"s","credentials":{"username":"u","password":7}}`, basic), status: 422, code: "invalid", pointer: "/data/attributes/credentials/password"},
		{name: "oauth2 refresh token without access token", body: secretDoc(`{"name":"s","credentials":{"refresh_token":"r"}}`, oauth), status: 422, code: "invalid", pointer: "/data/attributes/credentials/access_token"},
		{name: "oauth2 negative expires_in", body: secretDoc(`{"name":"s","credentials":{"access_token":"a","expires_in":-1}}`, oauth), status: 422, code: "invalid", pointer: "/data/attributes/credentials/expires_in"},
		{name: "bad origin", body: secretDoc(`{"name":"s","credentials":{"username":"u"},"allowed_origins":["https://x.example.com/p"]}`, basic), status: 422, code: "invalid", pointer: "/data/attributes/allowed_origins"},
		{name: "unknown credentials field", body: secretDoc(`{"name":"s","credentials":{"username":"u","headerValue":"v"}}`, basic), status: 400, code: "malformed", pointer: "/data/attributes/credentials"},
		{name: "refresh token on oauth2_instagram", body: secretDoc(`{"name":"s","credentials":{"access_token":"a","refresh_token":"r"}}`, insta), status: 400, code: "malformed", pointer: "/data/attributes/credentials"},
		{name: "type attribute", body: secretDoc(`{"name":"s","type":"basic"}`, basic), status: 400, code: "malformed"},
		{name: "unknown top-level field", body: `{"data":{"type":"auth-secret"},"included":[]}`, status: 400, code: "malformed"},
		{name: "malformed JSON", body: `{"data":{"type":"auth-secret",}}`, status: 400, code: "malformed"},
		{name: "data.type of another resource", body: doc("auth-client", `{"name":"s"}`, ""), status: 409, code: "conflict"},
		{name: "client-generated id", body: `{"data":{"type":"auth-secret","id":"x"}}`, status: 403, code: "forbidden"},
	}
	for _, tt := range create {
		t.Run("create/"+tt.name, func(t *testing.T) {
			r := h.call(http.MethodPost, base, tt.body)
			if tt.status != http.StatusCreated {
				wantError(t, r, tt.status, tt.code, tt.pointer)
				return
			}
			wantStatus(t, r, http.StatusCreated)
			res := r.resource(t)
			if res.Type != "auth-secret" || res.Attributes["state"] != tt.state || res.relID("workspace") != "ws1" || res.relID("auth_client") == "" {
				t.Errorf("got %s", r.Body)
			}
			if _, ok := res.Attributes["error"]; ok {
				t.Errorf("error attribute on a new secret: %s", r.Body)
			}
			if tt.creds != nil && !reflect.DeepEqual(res.Attributes["credentials"], tt.creds) {
				t.Errorf("credentials %v, want %v", res.Attributes["credentials"], tt.creds)
			}
			if loc := r.Header.Get("Location"); loc != base+"/"+res.ID {
				t.Errorf("Location %q", loc)
			}
		})
	}

	t.Run("415", func(t *testing.T) {
		r := h.do(request{method: http.MethodPost, path: base, body: secretDoc(`{"name":"s"}`, noauth), contentType: "application/x-www-form-urlencoded"})
		wantError(t, r, http.StatusUnsupportedMediaType, "unsupported_media_type", "")
	})

	secret := h.secret("ws1", basic, `{"username":"alice","password":"pw-1"}`)
	path := base + "/" + secret
	other := "/v2/workspaces/ws2/secrets/" + secret

	t.Run("get", func(t *testing.T) {
		r := h.call(http.MethodGet, path, "")
		wantStatus(t, r, http.StatusOK)
		res := r.resource(t)
		if res.ID != secret || res.Attributes["name"] != "secret" || res.Attributes["type"] != "basic" || res.relID("auth_client") != basic {
			t.Fatalf("got %s", r.Body)
		}
	})
	t.Run("list holds only this workspace's secrets", func(t *testing.T) {
		h.secret("ws2", basic, `{"username":"bob"}`)
		list := h.call(http.MethodGet, base, "").list(t)
		if len(list) < 2 || list[len(list)-1].ID != secret {
			t.Fatalf("list %+v", list)
		}
		for _, res := range list {
			if res.relID("workspace") != "ws1" {
				t.Errorf("secret of %s listed in ws1", res.relID("workspace"))
			}
		}
		if n := len(h.call(http.MethodGet, "/v2/workspaces/ws2/secrets", "").list(t)); n != 1 {
			t.Errorf("ws2 lists %d secrets, want 1", n)
		}
	})
	t.Run("another workspace's secret is not found", func(t *testing.T) {
		wantError(t, h.call(http.MethodGet, other, ""), 404, "not_found", "")
		wantError(t, h.call(http.MethodPatch, other, secretDoc(`{"name":"x"}`, basic)), 404, "not_found", "")
		wantError(t, h.call(http.MethodDelete, other, ""), 404, "not_found", "")
		if c, err := h.store.Credential(secret); err != nil || c.Name != "secret" {
			t.Fatalf("secret after calls from another workspace: %v", err)
		}
	})

	patch := func(attrs string) string { return doc("auth-secret", attrs, "") }
	tests := []struct {
		name    string
		path    string
		body    string
		status  int
		code    string
		pointer string
		check   func(t *testing.T, res resource, c *credstore.Credential)
	}{
		{name: "username only keeps the password", body: patch(`{"credentials":{"username":"carol"}}`), status: 200,
			check: func(t *testing.T, res resource, c *credstore.Credential) {
				if c.Fields.Username != "carol" || c.Fields.Password != "pw-1" {
					t.Errorf("fields after PATCH: username %q, password kept %v", c.Fields.Username, c.Fields.Password == "pw-1")
				}
			}},
		{name: "new password", body: patch(`{"credentials":{"password":"pw-2"}}`), status: 200,
			check: func(t *testing.T, res resource, c *credstore.Credential) {
				if c.Fields.Username != "carol" || c.Fields.Password != "pw-2" {
					t.Errorf("password not replaced")
				}
			}},
		{name: "rename", body: patch(`{"name":"renamed"}`), status: 200,
			check: func(t *testing.T, res resource, c *credstore.Credential) {
				if res.Attributes["name"] != "renamed" || c.Fields.Password != "pw-2" {
					t.Errorf("got %+v", res.Attributes)
				}
			}},
		{name: "set origins", body: patch(`{"allowed_origins":["https://api.example.com","http://127.0.0.1:9401"]}`), status: 200,
			check: func(t *testing.T, res resource, c *credstore.Credential) {
				if len(c.Origins()) != 2 {
					t.Errorf("origins %v", c.AllowedOrigins)
				}
			}},
		{name: "empty list clears origins", body: patch(`{"allowed_origins":[]}`), status: 200,
			check: func(t *testing.T, res resource, c *credstore.Credential) {
				if len(c.AllowedOrigins) != 0 || !reflect.DeepEqual(res.Attributes["allowed_origins"], []any{}) {
					t.Errorf("origins %v", c.AllowedOrigins)
				}
			}},
		{name: "switch to another visible client of the same type", body: secretDoc(`{}`, basic2), status: 200,
			check: func(t *testing.T, res resource, c *credstore.Credential) {
				if res.relID("auth_client") != basic2 || c.AuthClientID != basic2 {
					t.Errorf("auth_client %q", c.AuthClientID)
				}
			}},
		{name: "data.id matching the URL", body: `{"data":{"type":"auth-secret","id":"` + secret + `","attributes":{"name":"n"}}}`, status: 200},

		{name: "switch to a client of another type", body: secretDoc(`{}`, apiKey), status: 422, code: "invalid", pointer: "/data/relationships/auth_client"},
		{name: "switch to an unknown client", body: secretDoc(`{}`, "nope"), status: 422, code: "invalid", pointer: "/data/relationships/auth_client"},
		{name: "remove the client", body: doc("auth-secret", `{}`, `{"auth_client":{"data":null}}`), status: 422, code: "invalid", pointer: "/data/relationships/auth_client"},
		{name: "blank name", body: patch(`{"name":" "}`), status: 422, code: "invalid", pointer: "/data/attributes/name"},
		{name: "username emptied", body: patch(`{"credentials":{"username":""}}`), status: 422, code: "invalid", pointer: "/data/attributes/credentials/username"},
		{name: "origins not a list", body: patch(`{"allowed_origins":{}}`), status: 422, code: "invalid", pointer: "/data/attributes/allowed_origins"},
		{name: "unknown credentials field", body: patch(`{"credentials":{"access_token":"a"}}`), status: 400, code: "malformed", pointer: "/data/attributes/credentials"},
		{name: "unknown attribute", body: patch(`{"state":"ready"}`), status: 400, code: "malformed"},
		{name: "data.id not matching the URL", body: `{"data":{"type":"auth-secret","id":"x"}}`, status: 409, code: "conflict"},
		{name: "data.type of another resource", body: doc("auth-client", `{}`, ""), status: 409, code: "conflict"},
		{name: "unknown secret", path: base + "/nope", body: patch(`{"name":"n"}`), status: 404, code: "not_found"},
	}
	for _, tt := range tests {
		t.Run("patch/"+tt.name, func(t *testing.T) {
			p := path
			if tt.path != "" {
				p = tt.path
			}
			r := h.call(http.MethodPatch, p, tt.body)
			if tt.status != http.StatusOK {
				wantError(t, r, tt.status, tt.code, tt.pointer)
				return
			}
			wantStatus(t, r, http.StatusOK)
			c, err := h.store.Credential(secret)
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				tt.check(t, r.resource(t), c)
			}
		})
	}

	t.Run("oauth2 state follows uploaded tokens", func(t *testing.T) {
		id := h.secret("ws1", oauth, `{}`)
		p := base + "/" + id
		state := func(r response) (string, any) {
			t.Helper()
			wantStatus(t, r, http.StatusOK)
			res := r.resource(t)
			return res.Attributes["state"].(string), res.Attributes["error"]
		}
		if s, _ := state(h.call(http.MethodPatch, p, patch(`{"name":"renamed"}`))); s != "pending" {
			t.Fatalf("state %s after rename, want pending", s)
		}
		if s, _ := state(h.call(http.MethodPatch, p, patch(`{"credentials":{"access_token":"tok"}}`))); s != "ready" {
			t.Fatalf("state %s after a token, want ready", s)
		}
		// As a failed refresh would leave it.
		if _, err := h.store.UpdateCredential(id, func(c *credstore.Credential) error {
			c.State, c.Error = credstore.StateError, "invalid_grant: the refresh token was revoked"
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if s, e := state(h.call(http.MethodGet, p, "")); s != "error" || e != "invalid_grant: the refresh token was revoked" {
			t.Fatalf("state %s error %v", s, e)
		}
		if s, e := state(h.call(http.MethodPatch, p, patch(`{"name":"still broken"}`))); s != "error" || e == nil {
			t.Fatalf("a rename changed the state to %s (error %v)", s, e)
		}
		if s, e := state(h.call(http.MethodPatch, p, patch(`{"credentials":{"access_token":"new","refresh_token":"r2"}}`))); s != "ready" || e != nil {
			t.Fatalf("state %s error %v after a new token, want ready and no error", s, e)
		}
		if s, _ := state(h.call(http.MethodPatch, p, patch(`{"credentials":{"access_token":"","refresh_token":""}}`))); s != "pending" {
			t.Fatalf("state %s after the token was removed, want pending", s)
		}
	})

	t.Run("delete", func(t *testing.T) {
		r := h.call(http.MethodDelete, path, "")
		if r.Status != http.StatusNoContent || len(r.Body) != 0 {
			t.Fatalf("got %d %q", r.Status, r.Body)
		}
		wantError(t, h.call(http.MethodGet, path, ""), 404, "not_found", "")
		wantError(t, h.call(http.MethodDelete, path, ""), 404, "not_found", "")
		if _, err := h.store.Credential(secret); err == nil {
			t.Fatal("the store still holds the deleted secret")
		}
	})
}

// TestVisibility checks DESIGN.md, Scopes: a secret in a workspace may use
// a global client and clients of its tenant, contract and own workspace,
// and nothing else.
func TestVisibility(t *testing.T) {
	h := newHarness(t)
	wantStatus(t, h.call(http.MethodPut, "/v2/workspaces/ws1",
		doc("workspace", "", `{"contract":{"data":{"id":"c1","type":"contract"}},"tenant":{"data":{"id":"t1","type":"tenant"}}}`)), 201)

	level := func(l, id string) string { return rel(l, l, id) }
	tests := []struct {
		name    string
		ws      string
		rels    string
		visible bool
	}{
		{"global", "ws1", "", true},
		{"own tenant", "ws1", level("tenant", "t1"), true},
		{"own contract", "ws1", level("contract", "c1"), true},
		{"own workspace", "ws1", level("workspace", "ws1"), true},
		{"another tenant", "ws1", level("tenant", "t2"), false},
		{"another contract", "ws1", level("contract", "c2"), false},
		{"another workspace", "ws1", level("workspace", "ws2"), false},
		{"tenant id equal to the workspace's contract", "ws1", level("tenant", "c1"), false},
		{"global from a new workspace", "ws3", "", true},
		{"own workspace from a new workspace", "ws3", level("workspace", "ws3"), true},
		{"a tenant from a workspace with none", "ws3", level("tenant", "t1"), false},
		{"a contract from a workspace with none", "ws3", level("contract", "c1"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := h.client("basic", `{}`, tt.rels)
			r := h.call(http.MethodPost, "/v2/workspaces/"+tt.ws+"/secrets", secretDoc(`{"name":"s","credentials":{"username":"u"}}`, client))
			if tt.visible {
				wantStatus(t, r, http.StatusCreated)
				return
			}
			wantError(t, r, http.StatusUnprocessableEntity, "invalid", "/data/relationships/auth_client")
		})
	}
}

// TestSecretWithoutOrigins: neither the secret nor its client names an
// origin. The API accepts it; the proxy is what refuses to use it.
func TestSecretWithoutOrigins(t *testing.T) {
	h := newHarness(t)
	client := h.create("/v2/auth-clients", doc("auth-client", `{"type":"basic","name":"b"}`, ""))
	r := h.call(http.MethodPost, "/v2/workspaces/ws1/secrets", secretDoc(`{"name":"s","credentials":{"username":"u"}}`, client))
	wantStatus(t, r, http.StatusCreated)
	res := r.resource(t)
	if !reflect.DeepEqual(res.Attributes["allowed_origins"], []any{}) {
		t.Errorf("allowed_origins %v", res.Attributes["allowed_origins"])
	}
	c, ac, err := h.store.CredentialWithClient(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if o := credstore.EffectiveOrigins(c, ac); len(o) != 0 {
		t.Errorf("effective origins %v, want none", o)
	}
}

func TestRestart(t *testing.T) {
	h := newHarness(t)
	wantStatus(t, h.call(http.MethodPut, "/v2/workspaces/ws1", doc("workspace", "", rel("tenant", "tenant", "t1"))), 201)
	oauth := h.client("oauth2", oauth2Settings, rel("tenant", "tenant", "t1"))
	basic := h.client("basic", `{}`, "")
	s1 := h.secret("ws1", oauth, `{"access_token":"a","refresh_token":"r","expires_in":3600,"scope":"repo"}`)
	s2 := h.secret("ws1", basic, `{"username":"u","password":"p"}`)
	wantStatus(t, h.call(http.MethodPatch, "/v2/workspaces/ws1/secrets/"+s2, doc("auth-secret", `{"allowed_origins":["https://api.example.com"]}`, "")), 200)

	paths := []string{
		"/v2/auth-clients",
		"/v2/auth-clients/" + oauth,
		"/v2/auth-clients/" + basic,
		"/v2/workspaces/ws1",
		"/v2/workspaces/ws1/secrets",
		"/v2/workspaces/ws1/secrets/" + s1,
		"/v2/workspaces/ws1/secrets/" + s2,
	}
	before := map[string]string{}
	for _, p := range paths {
		r := h.call(http.MethodGet, p, "")
		wantStatus(t, r, http.StatusOK)
		before[p] = string(r.Body)
	}
	h.restart()
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			r := h.call(http.MethodGet, p, "")
			wantStatus(t, r, http.StatusOK)
			if string(r.Body) != before[p] {
				t.Errorf("after restart:\n%s\nbefore:\n%s", r.Body, before[p])
			}
		})
	}
	c, err := h.store.Credential(s2)
	if err != nil || c.Fields.Password != "p" {
		t.Fatalf("password after restart: err %v", err)
	}
}

func TestRoutingErrors(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"unknown route", http.MethodGet, "/v2/nothing", 404, "not_found"},
		{"unknown root route", http.MethodGet, "/", 404, "not_found"},
		{"PUT on the client list", http.MethodPut, "/v2/auth-clients", 405, "method_not_allowed"},
		{"POST on a client", http.MethodPost, "/v2/auth-clients/x", 405, "method_not_allowed"},
		{"DELETE a workspace", http.MethodDelete, "/v2/workspaces/ws1", 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do(request{method: tt.method, path: tt.path})
			wantError(t, r, tt.status, tt.code, "")
		})
	}
}

func TestBodyTooLarge(t *testing.T) {
	h := newHarness(t)
	client := h.client("basic", `{}`, "")
	secret := h.secret("ws1", client, `{"username":"u"}`)
	big := strings.Repeat("x", 2<<20)
	tests := []struct{ name, method, path, body string }{
		{"create client", http.MethodPost, "/v2/auth-clients", doc("auth-client", `{"type":"basic","name":"`+big+`"}`, "")},
		{"patch secret", http.MethodPatch, "/v2/workspaces/ws1/secrets/" + secret, doc("auth-secret", `{"credentials":{"password":"`+big+`"}}`, "")},
		{"valid document followed by padding", http.MethodPut, "/v2/workspaces/ws1", doc("workspace", "", "") + strings.Repeat(" ", 2<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, h.call(tt.method, tt.path, tt.body), http.StatusRequestEntityTooLarge, "too_large", "")
		})
	}
	t.Run("just under the limit is read", func(t *testing.T) {
		body := doc("auth-client", `{"type":"basic","name":"`+strings.Repeat("x", 1<<20-100)+`"}`, "")
		// Read whole, and refused for its value, not its size.
		wantError(t, h.call(http.MethodPost, "/v2/auth-clients", body), http.StatusUnprocessableEntity, "invalid", "/data/attributes/name")
	})
}

func TestInternalErrorIsLoggedNotShown(t *testing.T) {
	h := newHarness(t)
	// A closed bbolt file fails every write with an error the caller must
	// not see.
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	r := h.call(http.MethodPost, "/v2/auth-clients", doc("auth-client", `{"type":"basic","name":"b"}`, ""))
	wantError(t, r, http.StatusInternalServerError, "internal", "")
	if !strings.Contains(string(r.Body), `"detail":"internal error"`) || strings.Contains(string(r.Body), "database") {
		t.Errorf("body %s", r.Body)
	}
	h.srv.Close()
	logs := h.logs.String()
	if !strings.Contains(logs, "admin request failed") || !strings.Contains(logs, "database not open") {
		t.Errorf("the internal error is not logged:\n%s", logs)
	}
}

func TestRequestLog(t *testing.T) {
	h := newHarness(t)
	id := h.client("basic", `{}`, "")
	h.call(http.MethodGet, "/v2/auth-clients/"+id, "")
	h.call(http.MethodGet, "/v2/auth-clients/nope", "")
	h.do(request{method: http.MethodGet, path: "/v2/auth-clients", auth: none})
	h.call(http.MethodGet, "/v2/nothing?q=1", "")
	h.close()

	type line struct {
		Level, Msg, Method, Path string
		Status                   int
		Duration                 *int64
	}
	var got []line
	for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		var ln line
		if err := json.Unmarshal([]byte(l), &ln); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if ln.Msg != "admin request" || ln.Duration == nil {
			t.Errorf("log line %q", l)
		}
		got = append(got, ln)
	}
	want := []struct {
		method, path string
		status       int
	}{
		{"POST", "/v2/auth-clients", 201},
		{"GET", "/v2/auth-clients/{id}", 200},
		{"GET", "/v2/auth-clients/{id}", 404},
		{"GET", "/v2/auth-clients", 401},
		{"GET", "(unmatched)", 404},
	}
	if len(got) != len(want) {
		t.Fatalf("%d log lines, want %d:\n%s", len(got), len(want), h.logs.String())
	}
	for i, w := range want {
		if got[i].Method != w.method || got[i].Path != w.path || got[i].Status != w.status || got[i].Level != "INFO" {
			t.Errorf("line %d: %+v, want %+v", i, got[i], w)
		}
	}
}

// TestNoSecretInResponsesOrLogs uploads distinctive secret values, drives
// every read, list, patch and error path with them in the body, and
// searches every response body and the whole log for them.
func TestNoSecretInResponsesOrLogs(t *testing.T) {
	h := newHarness(t)
	const (
		password     = "pw-Zq8x-SECRET-basic"
		password2    = "pw-Zq8x-SECRET-patched"
		headerValue  = "hv-Zq8x-SECRET-apikey"
		clientSecret = "cs-Zq8x-SECRET-client"
		clientSec2   = "cs-Zq8x-SECRET-client-patched"
		accessToken  = "at-Zq8x-SECRET-access"
		accessToken2 = "at-Zq8x-SECRET-access-patched"
		refreshToken = "rt-Zq8x-SECRET-refresh"
	)
	secrets := []string{password, password2, headerValue, clientSecret, clientSec2, accessToken, accessToken2, refreshToken}
	oauthSettings := func(secret string) string {
		return `{"client_id":"cid","client_secret":"` + secret + `","auth_uri":"https://a.example.com/auth","token_uri":"https://a.example.com/token"}`
	}

	basic := h.client("basic", `{}`, "")
	apiKey := h.client("api_key", apiKeySettings, "")
	oauth := h.client("oauth2", oauthSettings(clientSecret), "")
	sBasic := h.secret("ws1", basic, `{"username":"u","password":"`+password+`"}`)
	sKey := h.secret("ws1", apiKey, `{"headerValue":"`+headerValue+`"}`)
	sOAuth := h.secret("ws1", oauth, `{"access_token":"`+accessToken+`","refresh_token":"`+refreshToken+`","expires_in":3600}`)
	secretPath := func(id string) string { return "/v2/workspaces/ws1/secrets/" + id }
	sdoc := func(attrs string) string { return doc("auth-secret", attrs, "") }
	cdoc := func(attrs string) string { return doc("auth-client", attrs, "") }

	calls := []request{
		// Reads and lists.
		{method: "GET", path: "/v2/auth-clients"},
		{method: "GET", path: "/v2/auth-clients/" + oauth},
		{method: "GET", path: "/v2/auth-clients/" + apiKey},
		{method: "GET", path: "/v2/workspaces/ws1/secrets"},
		{method: "GET", path: secretPath(sBasic)},
		{method: "GET", path: secretPath(sKey)},
		{method: "GET", path: secretPath(sOAuth)},
		{method: "GET", path: "/v2/workspaces/ws1"},
		// Patches that succeed.
		{method: "PATCH", path: secretPath(sBasic), body: sdoc(`{"credentials":{"username":"u2"}}`)},
		{method: "PATCH", path: secretPath(sBasic), body: sdoc(`{"credentials":{"password":"` + password2 + `"}}`)},
		{method: "PATCH", path: secretPath(sKey), body: sdoc(`{"name":"renamed","credentials":{"headerName":"X-Other"}}`)},
		{method: "PATCH", path: secretPath(sOAuth), body: sdoc(`{"credentials":{"access_token":"` + accessToken2 + `"}}`)},
		{method: "PATCH", path: "/v2/auth-clients/" + oauth, body: cdoc(`{"name":"gh","credentials":{"client_secret":"` + clientSec2 + `"}}`)},
		// Errors with secret values in the body.
		{method: "PATCH", path: secretPath(sBasic), body: sdoc(`{"credentials":{"username":"a:b","password":"` + password + `"}}`)},
		{method: "PATCH", path: secretPath(sBasic), body: sdoc(`{"credentials":{"password":"` + password + `\u0001"}}`)},
		{method: "PATCH", path: secretPath(sBasic), body: sdoc(`{"credentials":{"password":"` + password + `","bogus":"` + password + `"}}`)},
		{method: "PATCH", path: secretPath(sBasic), body: sdoc(`{"credentials":{"password":["` + password + `"]}}`)},
		{method: "PATCH", path: secretPath(sBasic), body: sdoc(`{"credentials":{"password":` + password + `}}`)},
		{method: "PATCH", path: secretPath(sBasic), body: sdoc(`{"credentials":{"password":"` + password + `" "x"}}`)},
		{method: "PATCH", path: secretPath(sBasic), body: `{"data":{"type":"auth-secret","attributes":{"credentials":{"password":"` + password},
		{method: "PATCH", path: secretPath(sBasic), body: sdoc(`{"credentials":{"password":"` + password + `"},"note":"` + password + `"}`)},
		{method: "PATCH", path: secretPath(sBasic), body: doc("auth-client", `{"credentials":{"password":"`+password+`"}}`, "")},
		{method: "PATCH", path: secretPath(sBasic), body: sdoc(`{"name":"` + password + `\n"}`)},
		{method: "PATCH", path: secretPath("nope"), body: sdoc(`{"credentials":{"password":"` + password + `"}}`)},
		{method: "PATCH", path: "/v2/workspaces/ws2/secrets/" + sBasic, body: sdoc(`{"credentials":{"password":"` + password + `"}}`)},
		{method: "PATCH", path: secretPath(sKey), body: sdoc(`{"credentials":{"headerValue":"` + headerValue + `\r\n"}}`)},
		{method: "PATCH", path: secretPath(sOAuth), body: sdoc(`{"credentials":{"access_token":"` + accessToken + `\u0000","refresh_token":"` + refreshToken + `"}}`)},
		{method: "PATCH", path: secretPath(sOAuth), body: sdoc(`{"credentials":{"access_token":"` + accessToken + `","expires_in":"` + refreshToken + `"}}`)},
		{method: "POST", path: "/v2/workspaces/ws1/secrets", body: secretDoc(`{"name":"x","credentials":{"access_token":"`+accessToken+`","refresh_token":"`+refreshToken+`"}}`, basic)},
		{method: "POST", path: "/v2/workspaces/ws9/secrets", body: secretDoc(`{"name":"x","credentials":{"headerValue":"`+headerValue+`"}}`, "nope")},
		{method: "POST", path: "/v2/auth-clients", body: cdoc(`{"type":"oauth2","name":"o","credentials":{"client_id":"i","client_secret":"` + clientSecret + `","auth_uri":"x","token_uri":"y"}}`)},
		{method: "POST", path: "/v2/auth-clients", body: cdoc(`{"type":"oauth2","name":"o","credentials":{"client_secret":"` + clientSecret + `","token_expires_in":"` + clientSecret + `"}}`)},
		{method: "PATCH", path: "/v2/auth-clients/" + oauth, body: cdoc(`{"type":"basic","credentials":{"client_secret":"` + clientSecret + `"}}`)},
		{method: "PATCH", path: "/v2/auth-clients/" + basic, body: cdoc(`{"credentials":{"password":"` + password + `"}}`)},
		{method: "POST", path: "/v2/auth-clients", body: cdoc(`{"type":"oauth2","credentials":` + oauthSettings(clientSecret) + `}`), auth: none},
		{method: "POST", path: "/v2/auth-clients", body: cdoc(`{"type":"oauth2","credentials":` + oauthSettings(clientSecret) + `}`), auth: "Bearer " + clientSecret},
		{method: "POST", path: "/v2/auth-clients", body: cdoc(`{"type":"oauth2","name":"o","credentials":` + oauthSettings(clientSecret) + `}`), contentType: "text/plain"},
		{method: "POST", path: "/v2/auth-clients", body: cdoc(`{"type":"oauth2","name":"` + strings.Repeat(clientSecret, 60000) + `"}`)},
		{method: "PUT", path: "/v2/auth-clients", body: cdoc(`{"credentials":` + oauthSettings(clientSecret) + `}`)},
		{method: "POST", path: "/v2/" + clientSecret, body: cdoc(`{"credentials":` + oauthSettings(clientSecret) + `}`)},
	}
	statuses := map[int]int{}
	for _, c := range calls {
		statuses[h.do(c).Status]++
	}
	// The calls must have reached the paths they are meant to exercise.
	for _, status := range []int{200, 400, 401, 404, 405, 409, 413, 415, 422} {
		if statuses[status] == 0 {
			t.Errorf("no call answered %d: %v", status, statuses)
		}
	}
	// The last write fails inside the store: an internal error, logged.
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	r := h.call(http.MethodPatch, secretPath(sBasic), sdoc(`{"credentials":{"password":"`+password+`"}}`))
	wantError(t, r, http.StatusInternalServerError, "internal", "")
	h.srv.Close()

	// Sanity: the values did reach the store, so their absence means
	// something. (The store reads from memory, which survives Close.)
	if c, _ := h.store.Credential(sBasic); c.Fields.Password != password2 {
		t.Fatal("the patched password is not in the store")
	}
	if c, _ := h.store.AuthClient(oauth); c.Settings.ClientSecret != clientSec2 {
		t.Fatal("the patched client secret is not in the store")
	}

	logs := h.logs.String()
	if !strings.Contains(logs, "admin request failed") || strings.Count(logs, `"msg":"admin request"`) < len(calls) {
		t.Fatalf("the log is missing lines:\n%s", logs)
	}
	for _, secret := range secrets {
		for i, body := range h.bodies {
			if strings.Contains(body, secret) {
				t.Errorf("response %d holds secret %q: %s", i, secret, body)
			}
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds secret %q", secret)
		}
	}
}
