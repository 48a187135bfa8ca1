// Package credstore keeps auth clients, credentials and workspaces in a bbolt
// file, with every secret value encrypted by AES-256-GCM, and serves reads
// from an in-memory cache that every write keeps in step.
package credstore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketClients    = []byte("auth_clients")
	bucketSecrets    = []byte("secrets")
	bucketWorkspaces = []byte("workspaces")
	bucketMeta       = []byte("meta")
	keyCheck         = []byte("key_check")
)

// Store is the credential store. Reads (AuthClient, Credential, …) come from
// memory and never touch bbolt; each write is one bbolt transaction, and the
// cache changes only after that transaction commits, so a failed write
// leaves nothing behind in either.
//
// Values returned by reads are shared with the cache: callers must not modify
// them (use Clone). Update functions receive a private copy.
type Store struct {
	db   *bolt.DB
	keys *keyring

	wmu sync.Mutex // serializes writers: transaction plus cache update

	mu         sync.RWMutex // guards the maps below; never held across I/O
	clients    map[string]*AuthClient
	creds      map[string]*Credential
	workspaces map[string]*Workspace
}

// Open opens (creating if needed) the store at path, encrypting with key (32
// bytes). Returns an error if another process holds the file, or if the data
// was written with a different key.
func Open(path string, key []byte) (*Store, error) {
	keys, err := newKeyring(key)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open %s: the file is locked by another process", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{db: db, keys: keys,
		clients: map[string]*AuthClient{}, creds: map[string]*Credential{}, workspaces: map[string]*Workspace{}}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	releaseMapping(db)
	return s, nil
}

// Close closes the bbolt file.
func (s *Store) Close() error { return s.db.Close() }

// KeyID returns the id of the key that seals new values.
func (s *Store) KeyID() string { return s.keys.current }

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketClients, bucketSecrets, bucketWorkspaces, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyCheck); v != nil {
			var sl sealed
			if err := json.Unmarshal(v, &sl); err != nil {
				return fmt.Errorf("read key check: %w", err)
			}
			if _, err := s.keys.open(sl, keyCheck); err != nil {
				return fmt.Errorf("the master key (id %s) does not open this data store (sealed with key id %s); start with the key it was created with", s.keys.current, sl.KeyID)
			}
		} else {
			sl, err := s.keys.seal([]byte("authproxy"), keyCheck)
			if err != nil {
				return err
			}
			if err := putJSON(meta, keyCheck, sl); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketWorkspaces).ForEach(func(k, v []byte) error {
			var w Workspace
			if err := json.Unmarshal(v, &w); err != nil {
				return fmt.Errorf("workspace %s: %w", k, err)
			}
			s.workspaces[w.ID] = &w
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketClients).ForEach(func(k, v []byte) error {
			c, err := s.decodeClient(k, v)
			if err != nil {
				return fmt.Errorf("auth client %s: %w", k, err)
			}
			s.clients[c.ID] = c
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketSecrets).ForEach(func(k, v []byte) error {
			c, err := s.decodeCredential(k, v)
			if err != nil {
				return fmt.Errorf("secret %s: %w", k, err)
			}
			s.intern(c)
			s.creds[c.ID] = c
			return nil
		})
	})
}

// intern makes c share the strings that thousands of credentials repeat
// (workspace, auth client id, type, state) with the cache's own copies, so
// that each is held in memory once. Call with s.mu held or during init.
func (s *Store) intern(c *Credential) {
	if w := s.workspaces[c.Workspace]; w != nil {
		c.Workspace = w.ID
	}
	if ac := s.clients[c.AuthClientID]; ac != nil {
		c.AuthClientID, c.Type = ac.ID, ac.Type
	}
	switch c.State {
	case StateReady:
		c.State = StateReady
	case StatePending:
		c.State = StatePending
	case StateError:
		c.State = StateError
	}
}

// NewID returns a random URL-safe id of 128 bits, so that one id tells
// nothing about another.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ---- reads ----

// AuthClient returns the auth client with id. Returns ENOTFOUND.
func (s *Store) AuthClient(id string) (*AuthClient, error) {
	s.mu.RLock()
	c := s.clients[id]
	s.mu.RUnlock()
	if c == nil {
		return nil, Errorf(ENOTFOUND, "auth client %q not found", id)
	}
	return c, nil
}

// AuthClients returns every auth client, oldest first.
func (s *Store) AuthClients() []*AuthClient {
	s.mu.RLock()
	out := make([]*AuthClient, 0, len(s.clients))
	for _, c := range s.clients {
		out = append(out, c)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *AuthClient) int { return cmpCreated(a.CreatedAt, b.CreatedAt, a.ID, b.ID) })
	return out
}

// Credential returns the credential with id, in any workspace. Returns
// ENOTFOUND.
func (s *Store) Credential(id string) (*Credential, error) {
	s.mu.RLock()
	c := s.creds[id]
	s.mu.RUnlock()
	if c == nil {
		return nil, Errorf(ENOTFOUND, "secret %q not found", id)
	}
	return c, nil
}

// CredentialWithClient returns a credential and its auth client in one
// lookup, as the proxy needs them on every request. Returns ENOTFOUND.
func (s *Store) CredentialWithClient(id string) (*Credential, *AuthClient, error) {
	s.mu.RLock()
	c := s.creds[id]
	var ac *AuthClient
	if c != nil {
		ac = s.clients[c.AuthClientID]
	}
	s.mu.RUnlock()
	if c == nil || ac == nil {
		return nil, nil, Errorf(ENOTFOUND, "secret %q not found", id)
	}
	return c, ac, nil
}

// Credentials returns the credentials of workspace ws (every credential if ws
// is ""), oldest first.
func (s *Store) Credentials(ws string) []*Credential {
	s.mu.RLock()
	out := make([]*Credential, 0)
	for _, c := range s.creds {
		if ws == "" || c.Workspace == ws {
			out = append(out, c)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Credential) int { return cmpCreated(a.CreatedAt, b.CreatedAt, a.ID, b.ID) })
	return out
}

// CredentialsWhere returns, in no order, the credentials (with their auth
// clients) for which keep returns true, without copying the whole set: the
// background refresher asks every second, and an idle sidecar should not
// make garbage doing so. keep runs under the store's read lock and must not
// call the store.
func (s *Store) CredentialsWhere(keep func(*Credential, *AuthClient) bool) []*Credential {
	var out []*Credential
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.creds {
		if client := s.clients[c.AuthClientID]; client != nil && keep(c, client) {
			out = append(out, c)
		}
	}
	return out
}

// Workspace returns the workspace with id. Returns ENOTFOUND.
func (s *Store) Workspace(id string) (*Workspace, error) {
	s.mu.RLock()
	w := s.workspaces[id]
	s.mu.RUnlock()
	if w == nil {
		return nil, Errorf(ENOTFOUND, "workspace %q not found", id)
	}
	return w, nil
}

// EffectiveOrigins returns the origins a credential may be sent to: its own
// list, or else its auth client's. Empty means it cannot be used.
func EffectiveOrigins(c *Credential, client *AuthClient) []Origin {
	if len(c.origins) > 0 {
		return c.origins
	}
	return client.origins
}

func cmpCreated(a, b time.Time, ida, idb string) int {
	if c := a.Compare(b); c != 0 {
		return c
	}
	return strings.Compare(ida, idb)
}

// ---- auth client writes ----

// CreateAuthClient validates c, gives it a new id and stores it. Returns
// EINVALID.
func (s *Store) CreateAuthClient(c *AuthClient) (*AuthClient, error) {
	c = c.Clone()
	c.ID = NewID()
	now := time.Now().UTC()
	c.CreatedAt, c.UpdatedAt = now, now
	if err := c.Validate(); err != nil {
		return nil, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writeClient(c); err != nil {
		return nil, err
	}
	return c, nil
}

// UpdateAuthClient applies fn to a copy of the auth client and stores the
// result. Its type cannot change; its scope can only change if every secret
// using it still sees it. Returns ENOTFOUND, EINVALID, ECONFLICT, or fn's
// error.
func (s *Store) UpdateAuthClient(id string, fn func(*AuthClient) error) (*AuthClient, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	old, err := s.AuthClient(id)
	if err != nil {
		return nil, err
	}
	c := old.Clone()
	if err := fn(c); err != nil {
		return nil, err
	}
	c.ID, c.CreatedAt, c.UpdatedAt = old.ID, old.CreatedAt, time.Now().UTC()
	if c.Type != old.Type {
		return nil, Invalid("type", "cannot be changed; create a new auth client")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// Every secret using the client must stay visible and valid with it
	// (an api_key secret may rely on the client's default header name).
	for _, cred := range s.Credentials("") {
		if cred.AuthClientID != id {
			continue
		}
		if w, err := s.Workspace(cred.Workspace); err != nil || !w.Sees(c.Scope) {
			return nil, Errorf(ECONFLICT, "secret %s in workspace %s uses this auth client and would no longer see it", cred.ID, cred.Workspace)
		}
		if err := cred.Validate(c); err != nil {
			return nil, Errorf(ECONFLICT, "secret %s uses this auth client and would become invalid: %s", cred.ID, ErrorMessage(err))
		}
	}
	if err := s.writeClient(c); err != nil {
		return nil, err
	}
	return c, nil
}

// DeleteAuthClient deletes an auth client no secret uses. Returns ENOTFOUND
// or ECONFLICT.
func (s *Store) DeleteAuthClient(id string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.AuthClient(id); err != nil {
		return err
	}
	n := 0
	for _, c := range s.Credentials("") {
		if c.AuthClientID == id {
			n++
		}
	}
	if n > 0 {
		return Errorf(ECONFLICT, "auth client %s is used by %d secret(s); delete them first", id, n)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketClients).Delete([]byte(id)) }); err != nil {
		return fmt.Errorf("delete auth client: %w", err)
	}
	s.mu.Lock()
	delete(s.clients, id)
	s.mu.Unlock()
	return nil
}

func (s *Store) writeClient(c *AuthClient) error {
	origins, err := ParseOrigins(c.AllowedOrigins)
	if err != nil {
		return err
	}
	c.origins = origins
	v, err := s.encodeClient(c)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketClients).Put([]byte(c.ID), v) }); err != nil {
		return fmt.Errorf("write auth client: %w", err)
	}
	s.mu.Lock()
	s.clients[c.ID] = c
	s.mu.Unlock()
	return nil
}

// ---- workspace writes ----

// PutWorkspace creates or replaces a workspace's contract and tenant. A
// change that would hide an auth client from a secret that uses it is
// refused. Returns EINVALID or ECONFLICT, and whether it was created.
func (s *Store) PutWorkspace(w *Workspace) (*Workspace, bool, error) {
	w = new(*w)
	if err := w.Validate(); err != nil {
		return nil, false, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	now := time.Now().UTC()
	w.CreatedAt, w.UpdatedAt = now, now
	old, _ := s.Workspace(w.ID)
	if old != nil {
		w.CreatedAt = old.CreatedAt
		for _, cred := range s.Credentials(w.ID) {
			client, err := s.AuthClient(cred.AuthClientID)
			if err == nil && !w.Sees(client.Scope) {
				return nil, false, Errorf(ECONFLICT, "secret %s uses auth client %s, which this workspace would no longer see", cred.ID, client.ID)
			}
		}
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketWorkspaces), []byte(w.ID), w) }); err != nil {
		return nil, false, fmt.Errorf("write workspace: %w", err)
	}
	s.mu.Lock()
	s.workspaces[w.ID] = w
	s.mu.Unlock()
	return w, old == nil, nil
}

// ---- credential writes ----

// CreateCredential validates c against its auth client, gives it a new id
// and stores it, creating its workspace (with no contract or tenant) if it
// does not exist yet, in the same transaction. Returns EINVALID.
func (s *Store) CreateCredential(c *Credential) (*Credential, error) {
	c = c.Clone()
	c.ID = NewID()
	now := time.Now().UTC()
	c.CreatedAt, c.UpdatedAt = now, now
	if err := ValidateID("workspace", c.Workspace); err != nil {
		return nil, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ws, _ := s.Workspace(c.Workspace)
	newWS := ws == nil
	if newWS {
		ws = &Workspace{ID: c.Workspace, CreatedAt: now, UpdatedAt: now}
	}
	client, err := s.visibleClient(ws, c.AuthClientID)
	if err != nil {
		return nil, err
	}
	c.Type = client.Type
	if err := c.Validate(client); err != nil {
		return nil, err
	}
	if !newWS {
		ws = nil
	}
	if err := s.writeCredential(c, ws); err != nil {
		return nil, err
	}
	return c, nil
}

// UpdateCredential applies fn to a copy of the credential and stores the
// result; fn may change the auth client to another visible one of the same
// type. Returns ENOTFOUND, EINVALID, or fn's error (unchanged, so callers can
// pass their own).
func (s *Store) UpdateCredential(id string, fn func(*Credential) error) (*Credential, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	old, err := s.Credential(id)
	if err != nil {
		return nil, err
	}
	c := old.Clone()
	if err := fn(c); err != nil {
		return nil, err
	}
	c.ID, c.Workspace, c.Type, c.CreatedAt = old.ID, old.Workspace, old.Type, old.CreatedAt
	c.UpdatedAt = time.Now().UTC()
	ws, err := s.Workspace(c.Workspace)
	if err != nil {
		return nil, err
	}
	client, err := s.visibleClient(ws, c.AuthClientID)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(client); err != nil {
		return nil, err
	}
	if err := s.writeCredential(c, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// DeleteCredential deletes a credential. Returns ENOTFOUND.
func (s *Store) DeleteCredential(id string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.Credential(id); err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSecrets).Delete([]byte(id)) }); err != nil {
		return fmt.Errorf("delete secret: %w", err)
	}
	s.mu.Lock()
	delete(s.creds, id)
	s.mu.Unlock()
	return nil
}

func (s *Store) visibleClient(ws *Workspace, clientID string) (*AuthClient, error) {
	if clientID == "" {
		return nil, Invalid("relationships.auth_client", "is required")
	}
	client, err := s.AuthClient(clientID)
	if err != nil {
		return nil, Invalid("relationships.auth_client", "auth client %q does not exist", clientID)
	}
	if !ws.Sees(client.Scope) {
		return nil, Invalid("relationships.auth_client", "auth client %q is not visible from workspace %s", clientID, ws.ID)
	}
	return client, nil
}

// writeCredential stores c, and newWS with it when not nil, in one
// transaction.
func (s *Store) writeCredential(c *Credential, newWS *Workspace) error {
	origins, err := ParseOrigins(c.AllowedOrigins)
	if err != nil {
		return err
	}
	c.origins = origins
	v, err := s.encodeCredential(c)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if newWS != nil {
			if err := putJSON(tx.Bucket(bucketWorkspaces), []byte(newWS.ID), newWS); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketSecrets).Put([]byte(c.ID), v)
	})
	if err != nil {
		return fmt.Errorf("write secret: %w", err)
	}
	s.mu.Lock()
	s.intern(c)
	s.creds[c.ID] = c
	if newWS != nil {
		s.workspaces[newWS.ID] = newWS
	}
	s.mu.Unlock()
	return nil
}

// ---- encoding ----

// clientSecrets and credentialSecrets are the parts of a record that are
// sealed; the rest of the record is stored as plain JSON with these fields
// emptied.
type clientSecrets struct {
	ClientSecret string `json:"client_secret,omitempty"`
}

type credentialSecrets struct {
	Password     string         `json:"password,omitempty"`
	HeaderValue  string         `json:"headerValue,omitempty"`
	AccessToken  string         `json:"access_token,omitempty"`
	RefreshToken string         `json:"refresh_token,omitempty"`
	Extra        map[string]any `json:"extra,omitempty"`
}

// envelope is a record as stored: the plain JSON of the record with its
// secret fields emptied, and the sealed secret fields. The plain bytes are
// part of the ciphertext's additional data, so whoever can write the file
// but lacks the key cannot change a record's origins, workspace or client
// (to send a secret elsewhere) without the record failing to open.
type envelope struct {
	Plain  json.RawMessage `json:"plain"`
	Sealed sealed          `json:"sealed"`
}

// sealRecord encodes record id of bucket: plain as JSON, pt sealed.
func (s *Store) sealRecord(bucket []byte, id string, plain any, pt any) ([]byte, error) {
	pb, err := json.Marshal(plain)
	if err != nil {
		return nil, err
	}
	sb, err := json.Marshal(pt)
	if err != nil {
		return nil, err
	}
	sl, err := s.keys.seal(sb, aad(bucket, id, pb))
	if err != nil {
		return nil, err
	}
	return json.Marshal(envelope{Plain: pb, Sealed: sl})
}

// openRecord reverses sealRecord for the record stored under key id.
func (s *Store) openRecord(bucket []byte, id string, v []byte, plain any, pt any) error {
	var env envelope
	if err := json.Unmarshal(v, &env); err != nil {
		return err
	}
	sb, err := s.keys.open(env.Sealed, aad(bucket, id, env.Plain))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(env.Plain, plain); err != nil {
		return err
	}
	return json.Unmarshal(sb, pt)
}

func (s *Store) encodeClient(c *AuthClient) ([]byte, error) {
	plain := *c
	plain.Settings.ClientSecret = ""
	return s.sealRecord(bucketClients, c.ID, &plain, clientSecrets{ClientSecret: c.Settings.ClientSecret})
}

func (s *Store) decodeClient(id, v []byte) (*AuthClient, error) {
	var c AuthClient
	var sec clientSecrets
	if err := s.openRecord(bucketClients, string(id), v, &c, &sec); err != nil {
		return nil, err
	}
	if c.ID != string(id) {
		return nil, fmt.Errorf("record holds id %q", c.ID)
	}
	c.Settings.ClientSecret = sec.ClientSecret
	var err error
	if c.origins, err = ParseOrigins(c.AllowedOrigins); err != nil {
		return nil, err
	}
	return &c, nil
}

func (s *Store) encodeCredential(c *Credential) ([]byte, error) {
	f := &c.Fields
	plain := *c
	pf := &plain.Fields
	pf.Password, pf.HeaderValue, pf.AccessToken, pf.RefreshToken, pf.Extra = "", "", "", "", nil
	return s.sealRecord(bucketSecrets, c.ID, &plain, credentialSecrets{Password: f.Password, HeaderValue: f.HeaderValue,
		AccessToken: f.AccessToken, RefreshToken: f.RefreshToken, Extra: f.Extra})
}

func (s *Store) decodeCredential(id, v []byte) (*Credential, error) {
	var c Credential
	var sec credentialSecrets
	if err := s.openRecord(bucketSecrets, string(id), v, &c, &sec); err != nil {
		return nil, err
	}
	if c.ID != string(id) {
		return nil, fmt.Errorf("record holds id %q", c.ID)
	}
	f := &c.Fields
	f.Password, f.HeaderValue, f.AccessToken, f.RefreshToken, f.Extra = sec.Password, sec.HeaderValue, sec.AccessToken, sec.RefreshToken, sec.Extra
	var err error
	if c.origins, err = ParseOrigins(c.AllowedOrigins); err != nil {
		return nil, err
	}
	return &c, nil
}

// aad binds a ciphertext to its bucket, record id and plain part.
func aad(bucket []byte, id string, plain []byte) []byte {
	h := sha256.Sum256(plain)
	out := append(append(slices.Clone(bucket), 0), id...)
	return append(append(out, 0), h[:]...)
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}
