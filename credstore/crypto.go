package credstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// KeySize is the size of a master key: AES-256.
const KeySize = 32

// sealed is a secret value at rest: AES-256-GCM ciphertext (nonce first) and
// the id of the key that made it, so that keys can be rotated later by
// adding a key to the keyring and rewriting records.
type sealed struct {
	KeyID string `json:"kid"`
	Data  []byte `json:"data"`
}

// keyring holds the master keys by id; the current one seals.
type keyring struct {
	current string
	aeads   map[string]cipher.AEAD
}

// KeyID returns the public id of a master key: a hash prefix that identifies
// the key without revealing anything usable about it.
func KeyID(key []byte) string {
	h := sha256.Sum256(append([]byte("authproxy master key id\x00"), key...))
	return hex.EncodeToString(h[:6])
}

func newKeyring(key []byte) (*keyring, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("master key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	id := KeyID(key)
	return &keyring{current: id, aeads: map[string]cipher.AEAD{id: aead}}, nil
}

// seal encrypts plaintext bound to aad (the record's bucket and id, so that
// a ciphertext moved to another record fails to open).
func (k *keyring) seal(plaintext, aad []byte) (sealed, error) {
	aead := k.aeads[k.current]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return sealed{}, fmt.Errorf("nonce: %w", err)
	}
	return sealed{KeyID: k.current, Data: aead.Seal(nonce, nonce, plaintext, aad)}, nil
}

var errWrongKey = errors.New("sealed with a key that is not loaded")

func (k *keyring) open(s sealed, aad []byte) ([]byte, error) {
	aead, ok := k.aeads[s.KeyID]
	if !ok {
		return nil, fmt.Errorf("key id %s: %w", s.KeyID, errWrongKey)
	}
	n := aead.NonceSize()
	if len(s.Data) < n {
		return nil, errors.New("ciphertext too short")
	}
	pt, err := aead.Open(nil, s.Data[:n], s.Data[n:], aad)
	if err != nil {
		return nil, fmt.Errorf("decrypt (key id %s): authentication failed", s.KeyID)
	}
	return pt, nil
}
