package credstore

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ---- helpers ----

func randKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// openStore opens the store at path and closes it when the test ends
// (closing twice is harmless).
func openStore(t *testing.T, path string, key []byte) *Store {
	t.Helper()
	s, err := Open(path, key)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t *testing.T) (*Store, string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	key := randKey(t)
	return openStore(t, path, key), path, key
}

// reopen closes s and opens the same file again with key.
func reopen(t *testing.T, s *Store, path string, key []byte) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openStore(t, path, key)
}

func clientInput(typ AuthType, scope Scope) *AuthClient {
	c := validClient(typ)
	c.ID = ""
	c.Scope = scope
	c.Name = fmt.Sprintf("%s client at %s %s", typ, scope.Level, scope.ID)
	return &c
}

func mustCreateClient(t *testing.T, s *Store, typ AuthType, scope Scope) *AuthClient {
	t.Helper()
	c, err := s.CreateAuthClient(clientInput(typ, scope))
	if err != nil {
		t.Fatalf("CreateAuthClient(%s, %+v): %v", typ, scope, err)
	}
	return c
}

func credInput(ws string, client *AuthClient) *Credential {
	c, _ := validCredential(client.Type)
	c.Workspace = ws
	c.AuthClientID = client.ID
	c.Type = ""
	return &c
}

func mustCreateCred(t *testing.T, s *Store, ws string, client *AuthClient) *Credential {
	t.Helper()
	c, err := s.CreateCredential(credInput(ws, client))
	if err != nil {
		t.Fatalf("CreateCredential(%s, %s): %v", ws, client.ID, err)
	}
	return c
}

func mustPutWorkspace(t *testing.T, s *Store, w Workspace) *Workspace {
	t.Helper()
	out, _, err := s.PutWorkspace(&w)
	if err != nil {
		t.Fatalf("PutWorkspace(%+v): %v", w, err)
	}
	return out
}

// snapshot renders everything the store holds (secret values included) so
// that two states can be compared.
func snapshot(t *testing.T, s *Store) string {
	t.Helper()
	type entry struct {
		Value   any
		Origins []string
	}
	origins := func(list []Origin) []string {
		var out []string
		for _, o := range list {
			out = append(out, o.String())
		}
		return out
	}
	var all []entry
	for _, c := range s.AuthClients() {
		all = append(all, entry{c, origins(c.Origins())})
	}
	for _, c := range s.Credentials("") {
		all = append(all, entry{c, origins(c.Origins())})
	}
	s.mu.RLock()
	ids := make([]string, 0, len(s.workspaces))
	for id := range s.workspaces {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	slices.Sort(ids)
	for _, id := range ids {
		w, err := s.Workspace(id)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, entry{Value: w})
	}
	b, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sameState fails unless the store's cache and, after a reopen, its file both
// hold exactly the state want (a snapshot). It returns the reopened store.
func sameState(t *testing.T, s *Store, path string, key []byte, want string) *Store {
	t.Helper()
	if got := snapshot(t, s); got != want {
		t.Fatalf("cache changed:\n got %s\nwant %s", got, want)
	}
	s = reopen(t, s, path, key)
	if got := snapshot(t, s); got != want {
		t.Fatalf("file changed:\n got %s\nwant %s", got, want)
	}
	return s
}

func checkID(t *testing.T, id string) {
	t.Helper()
	if len(id) != 22 {
		t.Fatalf("id %q has %d characters, want 22", id, len(id))
	}
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) != 16 {
		t.Fatalf("id %q is not 16 bytes of URL-safe base64: %v", id, err)
	}
}

// rawRecord reads one record of a closed store file as JSON fields.
func rawRecord(t *testing.T, path, bucket, id string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte(bucket)).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("no record %s/%s", bucket, id)
		}
		return json.Unmarshal(v, &m)
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// writeRawRecord replaces one record of a closed store file.
func writeRawRecord(t *testing.T, path, bucket, id string, m map[string]json.RawMessage) {
	t.Helper()
	v, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucket)).Put([]byte(id), v) }); err != nil {
		t.Fatal(err)
	}
}

// rawKeys lists the keys of a bucket of a closed store file.
func rawKeys(t *testing.T, path, bucket string) []string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var keys []string
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

var (
	global   = Scope{Level: LevelGlobal}
	errFnErr = errors.New("fn refused")
)

// ---- ids ----

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 2000 {
		id := NewID()
		checkID(t, id)
		if strings.ContainsAny(id, "+/=") {
			t.Fatalf("id %q is not URL-safe", id)
		}
		if seen[id] {
			t.Fatalf("NewID returned %q twice", id)
		}
		seen[id] = true
	}
}

func TestCreatedIDsAreRandomAndDistinct(t *testing.T) {
	s, _, _ := newStore(t)
	ids := map[string]bool{}
	in := clientInput(Basic, global)
	var client *AuthClient
	for range 5 {
		c, err := s.CreateAuthClient(in) // the same input every time
		if err != nil {
			t.Fatal(err)
		}
		checkID(t, c.ID)
		if ids[c.ID] {
			t.Fatalf("auth client id %q given twice", c.ID)
		}
		ids[c.ID] = true
		client = c
	}
	if in.ID != "" {
		t.Fatalf("CreateAuthClient changed its input: ID %q", in.ID)
	}
	cin := credInput("ws1", client)
	for range 5 {
		c, err := s.CreateCredential(cin)
		if err != nil {
			t.Fatal(err)
		}
		checkID(t, c.ID)
		if ids[c.ID] {
			t.Fatalf("id %q given twice", c.ID)
		}
		ids[c.ID] = true
	}
	if cin.ID != "" || cin.Type != "" {
		t.Fatalf("CreateCredential changed its input: %+v", cin)
	}
}

// ---- auth clients ----

func TestAuthClientCRUD(t *testing.T) {
	for _, typ := range []AuthType{NoAuth, Basic, APIKey, OAuth2, OAuth2Instagram} {
		t.Run(string(typ), func(t *testing.T) {
			s, _, _ := newStore(t)
			in := clientInput(typ, global)
			in.AllowedOrigins = []string{"https://API.example.com:443", "http://127.0.0.1:9401"}
			c, err := s.CreateAuthClient(in)
			if err != nil {
				t.Fatalf("CreateAuthClient: %v", err)
			}
			checkID(t, c.ID)
			if c.CreatedAt.IsZero() || !c.UpdatedAt.Equal(c.CreatedAt) {
				t.Fatalf("times not set: created %v updated %v", c.CreatedAt, c.UpdatedAt)
			}
			if c.Type != typ || c.Name != in.Name || c.Settings.ClientSecret != in.Settings.ClientSecret {
				t.Fatalf("created %+v from %+v", c, in)
			}
			if got := originStrings(c.Origins()); !slices.Equal(got, []string{"https://api.example.com", "http://127.0.0.1:9401"}) {
				t.Fatalf("Origins() = %v", got)
			}

			got, err := s.AuthClient(c.ID)
			if err != nil || got.ID != c.ID || got.Name != c.Name {
				t.Fatalf("AuthClient(%s) = %+v, %v", c.ID, got, err)
			}
			if list := s.AuthClients(); len(list) != 1 || list[0].ID != c.ID {
				t.Fatalf("AuthClients() = %v", list)
			}

			up, err := s.UpdateAuthClient(c.ID, func(a *AuthClient) error {
				a.Name = "renamed"
				a.AllowedOrigins = []string{"https://*.example.org"}
				return nil
			})
			if err != nil {
				t.Fatalf("UpdateAuthClient: %v", err)
			}
			if up.ID != c.ID || up.Name != "renamed" || !up.CreatedAt.Equal(c.CreatedAt) || up.UpdatedAt.Before(c.UpdatedAt) {
				t.Fatalf("updated %+v", up)
			}
			if got, _ := s.AuthClient(c.ID); got.Name != "renamed" || originStrings(got.Origins())[0] != "https://*.example.org" {
				t.Fatalf("read after update %+v %v", got, got.Origins())
			}

			if err := s.DeleteAuthClient(c.ID); err != nil {
				t.Fatalf("DeleteAuthClient: %v", err)
			}
			if _, err := s.AuthClient(c.ID); ErrorCode(err) != ENOTFOUND {
				t.Fatalf("AuthClient after delete: %v, want ENOTFOUND", err)
			}
			if len(s.AuthClients()) != 0 {
				t.Fatal("AuthClients() not empty after delete")
			}
			if err := s.DeleteAuthClient(c.ID); ErrorCode(err) != ENOTFOUND {
				t.Fatalf("second DeleteAuthClient: %v, want ENOTFOUND", err)
			}
			if _, err := s.UpdateAuthClient(c.ID, func(*AuthClient) error { return nil }); ErrorCode(err) != ENOTFOUND {
				t.Fatalf("UpdateAuthClient after delete: %v, want ENOTFOUND", err)
			}
		})
	}
}

func originStrings(list []Origin) []string {
	out := []string{}
	for _, o := range list {
		out = append(out, o.String())
	}
	return out
}

func TestCreateAuthClientInvalidLeavesNothing(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *AuthClient)
		field  string
	}{
		{"no name", func(c *AuthClient) { c.Name = "" }, "name"},
		{"bad type", func(c *AuthClient) { c.Type = "digest" }, "type"},
		{"any origin for oauth2", func(c *AuthClient) { c.AllowedOrigins = []string{"*"} }, "allowed_origins"},
		{"origin with path", func(c *AuthClient) { c.AllowedOrigins = []string{"https://a.example.com/x"} }, "allowed_origins"},
		{"no client secret", func(c *AuthClient) { c.Settings.ClientSecret = "" }, "credentials.client_secret"},
		{"bad level", func(c *AuthClient) { c.Scope = Scope{Level: "org", ID: "x"} }, "relationships"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path, key := newStore(t)
			in := clientInput(OAuth2, global)
			tt.mutate(in)
			c, err := s.CreateAuthClient(in)
			wantError(t, err, EINVALID, tt.field)
			if c != nil {
				t.Fatalf("CreateAuthClient returned %+v with an error", c)
			}
			noSecretIn(t, "error", err.Error())
			if len(s.AuthClients()) != 0 {
				t.Fatal("a refused auth client is in the cache")
			}
			s = reopen(t, s, path, key)
			if len(s.AuthClients()) != 0 {
				t.Fatal("a refused auth client is in the file")
			}
		})
	}
}

func TestUpdateAuthClientRefusals(t *testing.T) {
	tests := []struct {
		name  string
		fn    func(c *AuthClient) error
		code  string
		field string
		isErr error
	}{
		{"type change", func(c *AuthClient) error { c.Type = APIKey; return nil }, EINVALID, "type", nil},
		{"type change to oauth2", func(c *AuthClient) error { c.Type = OAuth2; c.Settings = validOAuth2Settings(); return nil }, EINVALID, "type", nil},
		{"invalid name", func(c *AuthClient) error { c.Name = " "; return nil }, EINVALID, "name", nil},
		{"any origin", func(c *AuthClient) error { c.AllowedOrigins = []string{"*"}; return nil }, EINVALID, "allowed_origins", nil},
		{"fn error is returned unchanged", func(c *AuthClient) error {
			c.Name = "changed before failing"
			c.AllowedOrigins[0] = "https://evil.example.com"
			return errFnErr
		}, "", "", errFnErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path, key := newStore(t)
			c := mustCreateClient(t, s, Basic, global)
			mustCreateCred(t, s, "ws1", c)
			before := snapshot(t, s)
			got, err := s.UpdateAuthClient(c.ID, tt.fn)
			if got != nil {
				t.Fatalf("UpdateAuthClient returned %+v with an error", got)
			}
			if tt.isErr != nil {
				if err != tt.isErr {
					t.Fatalf("UpdateAuthClient error = %v, want fn's error unchanged", err)
				}
			} else {
				wantError(t, err, tt.code, tt.field)
			}
			sameState(t, s, path, key, before)
		})
	}
}

func TestUpdateAuthClientScope(t *testing.T) {
	tests := []struct {
		name     string
		newScope Scope
		used     bool   // a secret in ws1 uses the client
		code     string // "" means allowed
	}{
		{"unused to any workspace", Scope{Level: LevelWorkspace, ID: "elsewhere"}, false, ""},
		{"used to own workspace", Scope{Level: LevelWorkspace, ID: "ws1"}, true, ""},
		{"used to own contract", Scope{Level: LevelContract, ID: "c1"}, true, ""},
		{"used to own tenant", Scope{Level: LevelTenant, ID: "t1"}, true, ""},
		{"used to global", global, true, ""},
		{"used to other workspace", Scope{Level: LevelWorkspace, ID: "ws2"}, true, ECONFLICT},
		{"used to other contract", Scope{Level: LevelContract, ID: "c2"}, true, ECONFLICT},
		{"used to other tenant", Scope{Level: LevelTenant, ID: "t2"}, true, ECONFLICT},
		{"used to contract id as tenant", Scope{Level: LevelTenant, ID: "c1"}, true, ECONFLICT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path, key := newStore(t)
			mustPutWorkspace(t, s, Workspace{ID: "ws1", Contract: "c1", Tenant: "t1"})
			mustPutWorkspace(t, s, Workspace{ID: "ws2", Contract: "c2", Tenant: "t2"})
			c := mustCreateClient(t, s, Basic, Scope{Level: LevelTenant, ID: "t1"})
			if tt.used {
				mustCreateCred(t, s, "ws1", c)
			}
			before := snapshot(t, s)
			up, err := s.UpdateAuthClient(c.ID, func(a *AuthClient) error { a.Scope = tt.newScope; return nil })
			if tt.code == "" {
				if err != nil {
					t.Fatalf("UpdateAuthClient: %v", err)
				}
				if up.Scope != tt.newScope {
					t.Fatalf("scope = %+v, want %+v", up.Scope, tt.newScope)
				}
				s = reopen(t, s, path, key)
				if got, _ := s.AuthClient(c.ID); got.Scope != tt.newScope {
					t.Fatalf("scope after reopen = %+v, want %+v", got.Scope, tt.newScope)
				}
				return
			}
			wantError(t, err, tt.code, "")
			sameState(t, s, path, key, before)
		})
	}
}

// An auth client change that would leave a secret invalid (an api_key
// secret relying on the client's default header name) is refused.
func TestUpdateAuthClientKeepsItsSecretsValid(t *testing.T) {
	s, _, _ := newStore(t)
	c := mustCreateClient(t, s, APIKey, global) // default header X-Api-Key
	in := credInput("ws1", c)
	in.Fields.HeaderName = "" // relies on the client's default
	cred, err := s.CreateCredential(in)
	if err != nil {
		t.Fatal(err)
	}
	up, err := s.UpdateAuthClient(c.ID, func(a *AuthClient) error { a.Settings.HeaderName = ""; return nil })
	if err != nil {
		return // refusing the update is correct
	}
	stored, _ := s.Credential(cred.ID)
	if verr := stored.Clone().Validate(up); verr != nil {
		t.Fatalf("UpdateAuthClient accepted a change that makes secret %s invalid: %v", cred.ID, verr)
	}
}

func TestDeleteAuthClientInUse(t *testing.T) {
	s, path, key := newStore(t)
	c := mustCreateClient(t, s, Basic, global)
	other := mustCreateClient(t, s, Basic, global)
	cred1 := mustCreateCred(t, s, "ws1", c)
	cred2 := mustCreateCred(t, s, "ws2", c)
	before := snapshot(t, s)

	err := s.DeleteAuthClient(c.ID)
	wantError(t, err, ECONFLICT, "")
	s = sameState(t, s, path, key, before)

	// An unused client next to it can go.
	if err := s.DeleteAuthClient(other.ID); err != nil {
		t.Fatalf("DeleteAuthClient(unused): %v", err)
	}
	// Once no secret uses it, it can be deleted.
	if err := s.DeleteCredential(cred1.ID); err != nil {
		t.Fatal(err)
	}
	wantError(t, s.DeleteAuthClient(c.ID), ECONFLICT, "")
	if err := s.DeleteCredential(cred2.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAuthClient(c.ID); err != nil {
		t.Fatalf("DeleteAuthClient after its secrets are gone: %v", err)
	}
	s = reopen(t, s, path, key)
	if len(s.AuthClients()) != 0 || len(s.Credentials("")) != 0 {
		t.Fatalf("after deletes the file still holds %d clients and %d secrets", len(s.AuthClients()), len(s.Credentials("")))
	}
}

// ---- workspaces ----

func TestPutWorkspace(t *testing.T) {
	s, path, key := newStore(t)
	w, created, err := s.PutWorkspace(&Workspace{ID: "ws1", Contract: "c1"})
	if err != nil || !created {
		t.Fatalf("PutWorkspace (new) = %+v, %v, %v", w, created, err)
	}
	if w.ID != "ws1" || w.Contract != "c1" || w.Tenant != "" || w.CreatedAt.IsZero() {
		t.Fatalf("PutWorkspace (new) = %+v", w)
	}
	w2, created, err := s.PutWorkspace(&Workspace{ID: "ws1", Contract: "c2", Tenant: "t1", CreatedAt: time.Unix(1, 0)})
	if err != nil || created {
		t.Fatalf("PutWorkspace (replace) = %+v, %v, %v", w2, created, err)
	}
	if w2.Contract != "c2" || w2.Tenant != "t1" || !w2.CreatedAt.Equal(w.CreatedAt) {
		t.Fatalf("PutWorkspace (replace) = %+v; want contract c2, tenant t1, created %v", w2, w.CreatedAt)
	}
	if got, err := s.Workspace("ws1"); err != nil || got.Contract != "c2" {
		t.Fatalf("Workspace(ws1) = %+v, %v", got, err)
	}
	if _, err := s.Workspace("nope"); ErrorCode(err) != ENOTFOUND {
		t.Fatalf("Workspace(nope) = %v, want ENOTFOUND", err)
	}
	s = reopen(t, s, path, key)
	if got, err := s.Workspace("ws1"); err != nil || got.Contract != "c2" || got.Tenant != "t1" || !got.CreatedAt.Equal(w.CreatedAt) {
		t.Fatalf("Workspace(ws1) after reopen = %+v, %v", got, err)
	}
}

func TestPutWorkspaceInvalid(t *testing.T) {
	tests := []struct {
		name  string
		ws    Workspace
		field string
	}{
		{"no id", Workspace{}, "workspace"},
		{"bad id", Workspace{ID: "a b"}, "workspace"},
		{"bad contract", Workspace{ID: "ws1", Contract: "c/1"}, "relationships.contract"},
		{"bad tenant", Workspace{ID: "ws1", Tenant: "t 1"}, "relationships.tenant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path, key := newStore(t)
			_, _, err := s.PutWorkspace(&tt.ws)
			wantError(t, err, EINVALID, tt.field)
			sameState(t, s, path, key, "null")
		})
	}
}

func TestPutWorkspaceThatHidesAUsedClient(t *testing.T) {
	tests := []struct {
		name  string
		scope Scope
		next  Workspace
		code  string // "" means allowed
	}{
		{"contract client, contract changed", Scope{Level: LevelContract, ID: "c1"}, Workspace{ID: "ws1", Contract: "c2", Tenant: "t1"}, ECONFLICT},
		{"contract client, contract removed", Scope{Level: LevelContract, ID: "c1"}, Workspace{ID: "ws1", Tenant: "t1"}, ECONFLICT},
		{"tenant client, tenant changed", Scope{Level: LevelTenant, ID: "t1"}, Workspace{ID: "ws1", Contract: "c1", Tenant: "t2"}, ECONFLICT},
		{"tenant client, tenant removed", Scope{Level: LevelTenant, ID: "t1"}, Workspace{ID: "ws1", Contract: "c1"}, ECONFLICT},
		{"tenant client, contract changed", Scope{Level: LevelTenant, ID: "t1"}, Workspace{ID: "ws1", Contract: "c2", Tenant: "t1"}, ""},
		{"contract client, tenant removed", Scope{Level: LevelContract, ID: "c1"}, Workspace{ID: "ws1", Contract: "c1"}, ""},
		{"global client, all removed", global, Workspace{ID: "ws1"}, ""},
		{"workspace client, all removed", Scope{Level: LevelWorkspace, ID: "ws1"}, Workspace{ID: "ws1"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path, key := newStore(t)
			mustPutWorkspace(t, s, Workspace{ID: "ws1", Contract: "c1", Tenant: "t1"})
			c := mustCreateClient(t, s, APIKey, tt.scope)
			mustCreateCred(t, s, "ws1", c)
			// A secret elsewhere that uses a client ws1 never sees does not matter.
			mustCreateCred(t, s, "ws9", mustCreateClient(t, s, Basic, Scope{Level: LevelWorkspace, ID: "ws9"}))
			before := snapshot(t, s)
			next := tt.next
			w, _, err := s.PutWorkspace(&next)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("PutWorkspace: %v", err)
				}
				if w.Contract != tt.next.Contract || w.Tenant != tt.next.Tenant {
					t.Fatalf("PutWorkspace = %+v, want %+v", w, tt.next)
				}
				return
			}
			wantError(t, err, tt.code, "")
			sameState(t, s, path, key, before)
		})
	}
}

// ---- credentials ----

func TestCredentialCRUD(t *testing.T) {
	for _, typ := range []AuthType{NoAuth, Basic, APIKey, OAuth2, OAuth2Instagram} {
		t.Run(string(typ), func(t *testing.T) {
			s, path, key := newStore(t)
			client := mustCreateClient(t, s, typ, global)
			in := credInput("ws1", client)
			in.AllowedOrigins = []string{"https://api.example.com:8443"}
			c, err := s.CreateCredential(in)
			if err != nil {
				t.Fatalf("CreateCredential: %v", err)
			}
			checkID(t, c.ID)
			if c.Type != typ || c.Workspace != "ws1" || c.AuthClientID != client.ID || c.CreatedAt.IsZero() {
				t.Fatalf("created %+v", c)
			}
			if !reflect.DeepEqual(c.Fields, in.Fields) {
				t.Fatalf("fields %+v, want %+v", c.Fields, in.Fields)
			}

			got, err := s.Credential(c.ID)
			if err != nil || got.ID != c.ID {
				t.Fatalf("Credential(%s) = %+v, %v", c.ID, got, err)
			}
			gc, gac, err := s.CredentialWithClient(c.ID)
			if err != nil || gc.ID != c.ID || gac.ID != client.ID {
				t.Fatalf("CredentialWithClient(%s) = %+v, %+v, %v", c.ID, gc, gac, err)
			}
			if got := originStrings(EffectiveOrigins(gc, gac)); !slices.Equal(got, []string{"https://api.example.com:8443"}) {
				t.Fatalf("EffectiveOrigins = %v", got)
			}
			for _, ws := range []string{"ws1", ""} {
				if list := s.Credentials(ws); len(list) != 1 || list[0].ID != c.ID {
					t.Fatalf("Credentials(%q) = %v", ws, list)
				}
			}
			if list := s.Credentials("ws2"); len(list) != 0 {
				t.Fatalf("Credentials(ws2) = %v", list)
			}

			up, err := s.UpdateCredential(c.ID, func(c *Credential) error {
				c.Name = "renamed"
				c.AllowedOrigins = nil
				return nil
			})
			if err != nil {
				t.Fatalf("UpdateCredential: %v", err)
			}
			if up.Name != "renamed" || up.ID != c.ID || !up.CreatedAt.Equal(c.CreatedAt) || !reflect.DeepEqual(up.Fields, c.Fields) {
				t.Fatalf("updated %+v", up)
			}
			// With no list of its own, the secret uses its client's origins.
			_, gac, _ = s.CredentialWithClient(c.ID)
			if got := originStrings(EffectiveOrigins(up, gac)); !slices.Equal(got, []string{"https://api.example.com"}) {
				t.Fatalf("EffectiveOrigins after clearing = %v", got)
			}
			s = reopen(t, s, path, key)
			if got, err := s.Credential(c.ID); err != nil || got.Name != "renamed" || !reflect.DeepEqual(got.Fields, c.Fields) {
				t.Fatalf("after reopen: %+v, %v", got, err)
			}

			if err := s.DeleteCredential(c.ID); err != nil {
				t.Fatalf("DeleteCredential: %v", err)
			}
			if _, err := s.Credential(c.ID); ErrorCode(err) != ENOTFOUND {
				t.Fatalf("Credential after delete: %v", err)
			}
			if _, _, err := s.CredentialWithClient(c.ID); ErrorCode(err) != ENOTFOUND {
				t.Fatalf("CredentialWithClient after delete: %v", err)
			}
			if err := s.DeleteCredential(c.ID); ErrorCode(err) != ENOTFOUND {
				t.Fatalf("second DeleteCredential: %v", err)
			}
			if _, err := s.UpdateCredential(c.ID, func(*Credential) error { return nil }); ErrorCode(err) != ENOTFOUND {
				t.Fatalf("UpdateCredential after delete: %v", err)
			}
			s = reopen(t, s, path, key)
			if len(s.Credentials("")) != 0 {
				t.Fatal("deleted secret came back after reopen")
			}
			if _, err := s.Workspace("ws1"); err != nil {
				t.Fatalf("workspace went away with its secret: %v", err)
			}
		})
	}
}

func TestCreateCredentialCreatesWorkspace(t *testing.T) {
	s, path, key := newStore(t)
	client := mustCreateClient(t, s, Basic, global)
	if _, err := s.Workspace("new-ws"); ErrorCode(err) != ENOTFOUND {
		t.Fatalf("workspace exists before: %v", err)
	}
	c := mustCreateCred(t, s, "new-ws", client)
	w, err := s.Workspace("new-ws")
	if err != nil || w.Contract != "" || w.Tenant != "" {
		t.Fatalf("Workspace(new-ws) = %+v, %v", w, err)
	}
	// An existing workspace is kept as it is.
	mustPutWorkspace(t, s, Workspace{ID: "old-ws", Contract: "c1", Tenant: "t1"})
	mustCreateCred(t, s, "old-ws", client)
	s = reopen(t, s, path, key)
	if w, err := s.Workspace("new-ws"); err != nil || w.ID != "new-ws" {
		t.Fatalf("after reopen Workspace(new-ws) = %+v, %v", w, err)
	}
	if w, err := s.Workspace("old-ws"); err != nil || w.Contract != "c1" || w.Tenant != "t1" {
		t.Fatalf("after reopen Workspace(old-ws) = %+v, %v", w, err)
	}
	if _, err := s.Credential(c.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if keys := rawKeys(t, path, "workspaces"); !slices.Equal(keys, []string{"new-ws", "old-ws"}) {
		t.Fatalf("workspaces in the file: %v", keys)
	}
}

func TestCreateCredentialClientVisibility(t *testing.T) {
	tests := []struct {
		name  string
		ws    string // ws1 exists (contract c1, tenant t1); others do not
		scope Scope
		ok    bool
	}{
		{"global", "ws1", global, true},
		{"own workspace", "ws1", Scope{Level: LevelWorkspace, ID: "ws1"}, true},
		{"own contract", "ws1", Scope{Level: LevelContract, ID: "c1"}, true},
		{"own tenant", "ws1", Scope{Level: LevelTenant, ID: "t1"}, true},
		{"other workspace", "ws1", Scope{Level: LevelWorkspace, ID: "ws2"}, false},
		{"other contract", "ws1", Scope{Level: LevelContract, ID: "c2"}, false},
		{"other tenant", "ws1", Scope{Level: LevelTenant, ID: "t2"}, false},
		{"workspace id as contract", "ws1", Scope{Level: LevelContract, ID: "ws1"}, false},
		{"new workspace, global", "ws-new", global, true},
		{"new workspace, its own", "ws-new", Scope{Level: LevelWorkspace, ID: "ws-new"}, true},
		{"new workspace, a contract", "ws-new", Scope{Level: LevelContract, ID: "c1"}, false},
		{"new workspace, a tenant", "ws-new", Scope{Level: LevelTenant, ID: "t1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path, key := newStore(t)
			mustPutWorkspace(t, s, Workspace{ID: "ws1", Contract: "c1", Tenant: "t1"})
			client := mustCreateClient(t, s, Basic, tt.scope)
			before := snapshot(t, s)
			c, err := s.CreateCredential(credInput(tt.ws, client))
			if tt.ok {
				if err != nil {
					t.Fatalf("CreateCredential: %v", err)
				}
				if _, err := s.Credential(c.ID); err != nil {
					t.Fatal(err)
				}
				return
			}
			wantError(t, err, EINVALID, "relationships.auth_client")
			sameState(t, s, path, key, before)
		})
	}
}

func TestCreateCredentialInvalidLeavesNothing(t *testing.T) {
	tests := []struct {
		name   string
		typ    AuthType
		mutate func(c *Credential)
		field  string
	}{
		{"no auth client", Basic, func(c *Credential) { c.AuthClientID = "" }, "relationships.auth_client"},
		{"unknown auth client", Basic, func(c *Credential) { c.AuthClientID = NewID() }, "relationships.auth_client"},
		{"bad workspace id", Basic, func(c *Credential) { c.Workspace = "ws new" }, "workspace"},
		{"no name", Basic, func(c *Credential) { c.Name = "" }, "name"},
		{"username with colon", Basic, func(c *Credential) { c.Fields.Username = "a:b" }, "credentials.username"},
		{"password with CRLF", Basic, func(c *Credential) { c.Fields.Password = secretPassword + "\r\n" }, "credentials"},
		{"header value with LF", APIKey, func(c *Credential) { c.Fields.HeaderValue = secretHeaderValue + "\n" }, "credentials.headerValue"},
		{"reserved header", APIKey, func(c *Credential) { c.Fields.HeaderName = "Proxy-Authorization" }, "credentials.headerName"},
		{"any origin", OAuth2, func(c *Credential) { c.AllowedOrigins = []string{"*"} }, "allowed_origins"},
		{"refresh token only", OAuth2, func(c *Credential) { c.Fields.AccessToken = "" }, "credentials.access_token"},
		{"no state", OAuth2, func(c *Credential) { c.State = "" }, "state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path, key := newStore(t)
			client := mustCreateClient(t, s, tt.typ, global)
			before := snapshot(t, s)
			in := credInput("ws-new", client)
			tt.mutate(in)
			_, err := s.CreateCredential(in)
			wantError(t, err, EINVALID, tt.field)
			noSecretIn(t, "error", err.Error())
			s = sameState(t, s, path, key, before)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if keys := rawKeys(t, path, "workspaces"); len(keys) != 0 {
				t.Fatalf("workspaces left in the file: %v", keys)
			}
			if keys := rawKeys(t, path, "secrets"); len(keys) != 0 {
				t.Fatalf("secrets left in the file: %v", keys)
			}
		})
	}
}

func TestUpdateCredentialFnErrorChangesNothing(t *testing.T) {
	s, path, key := newStore(t)
	client := mustCreateClient(t, s, OAuth2, global)
	in := credInput("ws1", client)
	in.AllowedOrigins = []string{"https://api.example.com"}
	in.Fields.Extra = map[string]any{"id_token": secretExtra}
	c, err := s.CreateCredential(in)
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)
	got, err := s.UpdateCredential(c.ID, func(c *Credential) error {
		// Scribble over everything the copy shares with its original, then fail.
		c.Name = "changed"
		c.Fields.AccessToken = "changed"
		c.Fields.Extra["id_token"] = "changed"
		c.AllowedOrigins[0] = "https://evil.example.com"
		c.State = StateError
		return errFnErr
	})
	if err != errFnErr {
		t.Fatalf("UpdateCredential error = %v, want fn's error unchanged", err)
	}
	if got != nil {
		t.Fatalf("UpdateCredential returned %+v with an error", got)
	}
	sameState(t, s, path, key, before)
}

func TestUpdateCredentialInvalidChangesNothing(t *testing.T) {
	tests := []struct {
		name  string
		fn    func(s *Store, c *Credential)
		field string
	}{
		{"username with colon", func(_ *Store, c *Credential) { c.Fields.Username = "a:b" }, "credentials.username"},
		{"empty name", func(_ *Store, c *Credential) { c.Name = "" }, "name"},
		{"any origin", func(_ *Store, c *Credential) { c.AllowedOrigins = []string{"*"} }, "allowed_origins"},
		{"bad state", func(_ *Store, c *Credential) { c.State = "broken" }, "state"},
		{"no auth client", func(_ *Store, c *Credential) { c.AuthClientID = "" }, "relationships.auth_client"},
		{"unknown auth client", func(_ *Store, c *Credential) { c.AuthClientID = "nope" }, "relationships.auth_client"},
		{"invisible auth client", func(s *Store, c *Credential) { c.AuthClientID = clientNamed(s, "invisible").ID }, "relationships.auth_client"},
		{"auth client of another type", func(s *Store, c *Credential) { c.AuthClientID = clientNamed(s, "apikey").ID }, "relationships.auth_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path, key := newStore(t)
			client := mustCreateClient(t, s, Basic, global)
			inv := clientInput(Basic, Scope{Level: LevelWorkspace, ID: "ws2"})
			inv.Name = "invisible"
			if _, err := s.CreateAuthClient(inv); err != nil {
				t.Fatal(err)
			}
			ak := clientInput(APIKey, global)
			ak.Name = "apikey"
			if _, err := s.CreateAuthClient(ak); err != nil {
				t.Fatal(err)
			}
			c := mustCreateCred(t, s, "ws1", client)
			before := snapshot(t, s)
			_, err := s.UpdateCredential(c.ID, func(c *Credential) error { tt.fn(s, c); return nil })
			wantError(t, err, EINVALID, tt.field)
			noSecretIn(t, "error", err.Error())
			sameState(t, s, path, key, before)
		})
	}
}

func clientNamed(s *Store, name string) *AuthClient {
	for _, c := range s.AuthClients() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestUpdateCredentialSwitchesClient(t *testing.T) {
	s, path, key := newStore(t)
	mustPutWorkspace(t, s, Workspace{ID: "ws1", Tenant: "t1"})
	a := mustCreateClient(t, s, Basic, global)
	b := mustCreateClient(t, s, Basic, Scope{Level: LevelTenant, ID: "t1"})
	c := mustCreateCred(t, s, "ws1", a)
	if _, err := s.UpdateCredential(c.ID, func(c *Credential) error { c.AuthClientID = b.ID; return nil }); err != nil {
		t.Fatalf("UpdateCredential to a visible client of the same type: %v", err)
	}
	s = reopen(t, s, path, key)
	if _, ac, err := s.CredentialWithClient(c.ID); err != nil || ac.ID != b.ID {
		t.Fatalf("CredentialWithClient after switch = %v, %v", ac, err)
	}
	// a is free now; b is in use.
	if err := s.DeleteAuthClient(a.ID); err != nil {
		t.Fatal(err)
	}
	wantError(t, s.DeleteAuthClient(b.ID), ECONFLICT, "")
}

func TestUpdateCredentialCannotMoveOrRetype(t *testing.T) {
	s, path, key := newStore(t)
	client := mustCreateClient(t, s, Basic, global)
	c := mustCreateCred(t, s, "ws1", client)
	created := c.CreatedAt
	_, _ = s.UpdateCredential(c.ID, func(x *Credential) error {
		x.ID = "other-id"
		x.Workspace = "ws2"
		x.Type = APIKey
		x.CreatedAt = time.Unix(0, 0)
		return nil
	})
	s = reopen(t, s, path, key)
	got, err := s.Credential(c.ID)
	if err != nil {
		t.Fatalf("secret %s is gone: %v", c.ID, err)
	}
	if got.Workspace != "ws1" || got.Type != Basic || !got.CreatedAt.Equal(created) {
		t.Fatalf("secret changed identity: %+v", got)
	}
	if _, err := s.Credential("other-id"); ErrorCode(err) != ENOTFOUND {
		t.Fatalf("Credential(other-id) = %v, want ENOTFOUND", err)
	}
	if len(s.Credentials("ws2")) != 0 {
		t.Fatal("a secret moved to ws2")
	}
}

func TestListsAreOrdered(t *testing.T) {
	s, _, _ := newStore(t)
	client := mustCreateClient(t, s, Basic, global)
	for range 6 {
		mustCreateClient(t, s, NoAuth, global)
		mustCreateCred(t, s, "ws1", client)
	}
	clients := s.AuthClients()
	if !slices.IsSortedFunc(clients, func(a, b *AuthClient) int { return cmpCreated(a.CreatedAt, b.CreatedAt, a.ID, b.ID) }) {
		t.Fatal("AuthClients() is not oldest first")
	}
	creds := s.Credentials("ws1")
	if len(creds) != 6 || !slices.IsSortedFunc(creds, func(a, b *Credential) int { return cmpCreated(a.CreatedAt, b.CreatedAt, a.ID, b.ID) }) {
		t.Fatalf("Credentials(ws1) has %d entries or is not oldest first", len(creds))
	}
}

// ---- persistence and keys ----

// populate stores one client and one secret of every type, with every secret
// value set, plus a workspace with a contract and tenant.
func populate(t *testing.T, s *Store) {
	t.Helper()
	mustPutWorkspace(t, s, Workspace{ID: "ws1", Contract: "c1", Tenant: "t1"})
	for _, typ := range []AuthType{NoAuth, Basic, APIKey, OAuth2, OAuth2Instagram} {
		c := mustCreateClient(t, s, typ, Scope{Level: LevelContract, ID: "c1"})
		in := credInput("ws1", c)
		in.Name = "visible-name-" + string(typ)
		in.AllowedOrigins = []string{"https://" + strings.ReplaceAll(string(typ), "_", "-") + ".example.com"}
		if typ.IsOAuth2() {
			in.Fields.Extra = map[string]any{"id_token": secretExtra}
			in.Fields.Scope = "repo"
			in.Fields.TokenType = "bearer"
		}
		if _, err := s.CreateCredential(in); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPersistence(t *testing.T) {
	s, path, key := newStore(t)
	populate(t, s)
	before := snapshot(t, s)
	if !strings.Contains(before, secretPassword) || !strings.Contains(before, secretExtra) {
		t.Fatal("test setup: snapshot lacks the secret values")
	}
	s = reopen(t, s, path, key)
	if got := snapshot(t, s); got != before {
		t.Fatalf("after reopen:\n got %s\nwant %s", got, before)
	}
	// Spot checks on decrypted values.
	for _, c := range s.Credentials("ws1") {
		switch c.Type {
		case Basic:
			if c.Fields.Password != secretPassword {
				t.Fatalf("password after reopen = %q", c.Fields.Password)
			}
		case APIKey:
			if c.Fields.HeaderValue != secretHeaderValue {
				t.Fatalf("headerValue after reopen = %q", c.Fields.HeaderValue)
			}
		case OAuth2:
			if c.Fields.AccessToken != secretAccessToken || c.Fields.RefreshToken != secretRefreshToken {
				t.Fatalf("tokens after reopen = %q, %q", c.Fields.AccessToken, c.Fields.RefreshToken)
			}
		}
		if len(c.AllowedOrigins) > 0 && len(c.Origins()) != len(c.AllowedOrigins) {
			t.Fatalf("origins not parsed after reopen: %v", c.Origins())
		}
		if _, ac, err := s.CredentialWithClient(c.ID); err != nil || (ac.Type.IsOAuth2() && ac.Settings.ClientSecret != secretClientSecret) {
			t.Fatalf("client after reopen = %+v, %v", ac, err)
		}
	}
	if s.KeyID() != KeyID(key) {
		t.Fatalf("KeyID() = %q, want %q", s.KeyID(), KeyID(key))
	}
}

func TestOpenWithAnotherKey(t *testing.T) {
	s, path, key := newStore(t)
	populate(t, s)
	before := snapshot(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	other := randKey(t)
	s2, err := Open(path, other)
	if err == nil {
		s2.Close()
		t.Fatal("Open with another key succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "master key") {
		t.Fatalf("error %q does not mention the master key", msg)
	}
	for _, k := range [][]byte{key, other} {
		for _, form := range []string{string(k), hex.EncodeToString(k), strings.ToUpper(hex.EncodeToString(k)),
			base64.StdEncoding.EncodeToString(k), base64.RawStdEncoding.EncodeToString(k),
			base64.URLEncoding.EncodeToString(k), base64.RawURLEncoding.EncodeToString(k), fmt.Sprint(k)} {
			if strings.Contains(msg, form) {
				t.Fatalf("error %q contains a key", msg)
			}
		}
	}
	noSecretIn(t, "error", msg)
	// The failed attempt left the file intact and unlocked.
	s = openStore(t, path, key)
	if got := snapshot(t, s); got != before {
		t.Fatalf("after a wrong-key attempt:\n got %s\nwant %s", got, before)
	}
}

func TestOpenEmptyStoreWithAnotherKey(t *testing.T) {
	s, path, _ := newStore(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(path, randKey(t)); err == nil {
		s2.Close()
		t.Fatal("Open of an empty store with another key succeeded; the key check must refuse it")
	}
}

func TestOpenBadKeyLength(t *testing.T) {
	tests := []struct {
		name string
		key  []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"aes-128 size", make([]byte, 16)},
		{"aes-192 size", make([]byte, 24)},
		{"31 bytes", make([]byte, 31)},
		{"33 bytes", make([]byte, 33)},
		{"64 bytes", make([]byte, 64)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.db")
			s, err := Open(path, tt.key)
			if err == nil {
				s.Close()
				t.Fatalf("Open with a %d-byte key succeeded", len(tt.key))
			}
		})
	}
}

func TestOpenLockedFile(t *testing.T) {
	t.Parallel()
	_, path, key := newStore(t)
	s2, err := Open(path, key)
	if err == nil {
		s2.Close()
		t.Fatal("a second Open of a file in use succeeded")
	}
	if !strings.Contains(err.Error(), "lock") {
		t.Fatalf("error %q does not say the file is locked", err)
	}
}

// ---- encryption at rest ----

func TestSecretsAreEncryptedAtRest(t *testing.T) {
	s, path, key := newStore(t)
	populate(t, s)
	// Rewrite some values through updates too, so old and new pages are both on disk.
	for _, c := range s.Credentials("ws1") {
		if c.Type == Basic {
			if _, err := s.UpdateCredential(c.ID, func(c *Credential) error { c.Fields.Password = secretPassword + "-v2"; return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The test reads the right file: non-secret values are there in clear.
	for _, v := range []string{"visible-name-basic", "visible-name-oauth2", "alice", "X-Other-Key", "my-client-id", "https://api.example.com"} {
		if !bytes.Contains(raw, []byte(v)) {
			t.Fatalf("the file lacks the non-secret value %q; is it the store file?", v)
		}
	}
	for _, v := range allSecrets {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), hex.EncodeToString([]byte(v))} {
			if bytes.Contains(raw, []byte(form)) {
				t.Fatalf("the file holds the secret value %q in clear (as %q)", v, form)
			}
		}
	}
	if bytes.Contains(raw, key) || bytes.Contains(raw, []byte(base64.StdEncoding.EncodeToString(key))) {
		t.Fatal("the file holds the master key")
	}
}

// ---- ciphertexts are bound to their record ----

func TestCiphertextBoundToRecord(t *testing.T) {
	tests := []struct {
		name   string
		bucket string
		ids    func(s *Store) (from, to string)
		tamper bool // false: rewrite the record unchanged (control)
	}{
		{"control: secret rewritten unchanged", "secrets", twoSecrets, false},
		{"secret sealed blob moved to another secret", "secrets", twoSecrets, true},
		{"control: client rewritten unchanged", "auth_clients", twoClients, false},
		{"client sealed blob moved to another client", "auth_clients", twoClients, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path, key := newStore(t)
			ca := mustCreateClient(t, s, OAuth2, global)
			cb, err := s.CreateAuthClient(clientInput(OAuth2, global))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.UpdateAuthClient(cb.ID, func(c *AuthClient) error { c.Settings.ClientSecret = "b-client-secret"; return nil }); err != nil {
				t.Fatal(err)
			}
			mustCreateCred(t, s, "ws1", ca)
			inB := credInput("ws1", ca)
			inB.Fields.AccessToken = "b-access-token"
			if _, err := s.CreateCredential(inB); err != nil {
				t.Fatal(err)
			}
			from, to := tt.ids(s)
			before := snapshot(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			src := rawRecord(t, path, tt.bucket, from)
			dst := rawRecord(t, path, tt.bucket, to)
			if len(src["sealed"]) == 0 || len(dst["sealed"]) == 0 {
				t.Fatalf("records lack a sealed field: %v", dst)
			}
			if tt.tamper {
				dst["sealed"] = src["sealed"]
			}
			writeRawRecord(t, path, tt.bucket, to, dst)

			s2, err := Open(path, key)
			if !tt.tamper {
				if err != nil {
					t.Fatalf("Open after an unchanged rewrite: %v", err)
				}
				defer s2.Close()
				if got := snapshot(t, s2); got != before {
					t.Fatalf("state changed by an unchanged rewrite:\n got %s\nwant %s", got, before)
				}
				return
			}
			if err == nil {
				defer s2.Close()
				t.Fatalf("Open succeeded with a sealed blob moved from %s to %s", from, to)
			}
			noSecretIn(t, "error", err.Error())
		})
	}
}

func twoSecrets(s *Store) (string, string) {
	l := s.Credentials("ws1")
	return l[0].ID, l[1].ID
}

func twoClients(s *Store) (string, string) {
	l := s.AuthClients()
	return l[0].ID, l[1].ID
}

// ---- concurrency ----

func TestConcurrentReadsSeeCompleteValues(t *testing.T) {
	s, _, _ := newStore(t)
	client := mustCreateClient(t, s, Basic, global)
	in := credInput("ws1", client)
	in.Fields = Fields{Username: "user-0", Password: "pass-0"}
	in.AllowedOrigins = []string{"https://h0.example.com"}
	c, err := s.CreateCredential(in)
	if err != nil {
		t.Fatal(err)
	}
	const writers, updates, readers = 4, 25, 8

	// check fails unless one credential value is a complete version: its
	// username, password, name and origins all carry the same number.
	check := func(c *Credential) error {
		n, ok := strings.CutPrefix(c.Fields.Username, "user-")
		if !ok || c.Fields.Password != "pass-"+n {
			return fmt.Errorf("torn value: username %q, password %q", c.Fields.Username, c.Fields.Password)
		}
		if len(c.AllowedOrigins) != 1 || c.AllowedOrigins[0] != "https://h"+n+".example.com" {
			return fmt.Errorf("torn value: username %q, origins %v", c.Fields.Username, c.AllowedOrigins)
		}
		if o := c.Origins(); len(o) != 1 || o[0].Host != "h"+n+".example.com" {
			return fmt.Errorf("torn value: username %q, parsed origins %v", c.Fields.Username, o)
		}
		return nil
	}

	var done atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, readers+writers)
	for r := range readers {
		wg.Go(func() {
			for !done.Load() || reads.Load() < readers {
				var got *Credential
				if r%2 == 0 {
					x, err := s.Credential(c.ID)
					if err != nil {
						errs <- err
						return
					}
					got = x
				} else {
					x, ac, err := s.CredentialWithClient(c.ID)
					if err != nil {
						errs <- err
						return
					}
					if ac.ID != client.ID {
						errs <- fmt.Errorf("CredentialWithClient gave client %s, want %s", ac.ID, client.ID)
						return
					}
					got = x
				}
				if err := check(got); err != nil {
					errs <- err
					return
				}
				for _, l := range s.Credentials("ws1") {
					if err := check(l); err != nil {
						errs <- err
						return
					}
				}
				reads.Add(1)
				runtime.Gosched() // let the writers in
			}
		})
	}
	var ww sync.WaitGroup
	for w := range writers {
		ww.Go(func() {
			for i := range updates {
				n := fmt.Sprint(1 + w*updates + i)
				_, err := s.UpdateCredential(c.ID, func(c *Credential) error {
					c.Fields.Username, c.Fields.Password = "user-"+n, "pass-"+n
					c.AllowedOrigins = []string{"https://h" + n + ".example.com"}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	ww.Wait()
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d reads during %d updates", reads.Load(), writers*updates)
	final, _ := s.Credential(c.ID)
	if err := check(final); err != nil || final.Fields.Username == "user-0" {
		t.Fatalf("final value %q: %v", final.Fields.Username, err)
	}
}

func TestConcurrentUpdatesAreNotLost(t *testing.T) {
	s, path, key := newStore(t)
	client := mustCreateClient(t, s, Basic, global)
	in := credInput("ws1", client)
	in.Fields.Username = "0"
	c, err := s.CreateCredential(in)
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 5, 20
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				_, err := s.UpdateCredential(c.ID, func(c *Credential) error {
					var n int
					fmt.Sscan(c.Fields.Username, &n)
					c.Fields.Username = fmt.Sprint(n + 1)
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s = reopen(t, s, path, key)
	got, _ := s.Credential(c.ID)
	if want := fmt.Sprint(workers * each); got.Fields.Username != want {
		t.Fatalf("counter = %s after %s increments: updates were lost", got.Fields.Username, want)
	}
}

// Whoever can write the file but lacks the key cannot rebind a secret to
// another host: the plain part of a record is authenticated with it.
func TestPlainPartIsAuthenticated(t *testing.T) {
	s, path, key := newStore(t)
	client := mustCreateClient(t, s, Basic, global)
	in := credInput("ws1", client)
	in.AllowedOrigins = []string{"https://api.example.com"}
	c, err := s.CreateCredential(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rec := rawRecord(t, path, "secrets", c.ID)
	var plain map[string]any
	if err := json.Unmarshal(rec["plain"], &plain); err != nil {
		t.Fatalf("record has no plain part: %v", err)
	}
	if plain["allowed_origins"] == nil {
		t.Fatalf("plain part lacks allowed_origins: %s", rec["plain"])
	}
	plain["allowed_origins"] = []string{"https://attacker.example.net"}
	rec["plain"], _ = json.Marshal(plain)
	writeRawRecord(t, path, "secrets", c.ID, rec)
	if s2, err := Open(path, key); err == nil {
		got, _ := s2.Credential(c.ID)
		s2.Close()
		t.Fatalf("Open accepted a record whose origins were rewritten: %v", got.AllowedOrigins)
	}
}
