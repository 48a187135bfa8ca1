package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// loadOrCreate returns the contents of path, creating it first (mode 0600,
// with n random bytes in standard base64) if it does not exist. created says
// whether it did.
func loadOrCreate(path string, n int) (value string, created bool, err error) {
	data, err := os.ReadFile(path)
	if err == nil {
		v := strings.TrimSpace(string(data))
		if v == "" {
			return "", false, fmt.Errorf("%s is empty", path)
		}
		return v, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", false, err
	}
	v := base64.StdEncoding.EncodeToString(b)
	// O_EXCL: two sidecars started on one data dir must not both write a key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", false, err
	}
	if _, err := f.WriteString(v + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", false, err
	}
	if err := f.Close(); err != nil {
		return "", false, err
	}
	return v, true, nil
}
