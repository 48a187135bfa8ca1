//go:build !linux

package credstore

import bolt "go.etcd.io/bbolt"

// releaseMapping is a no-op where MADV_DONTNEED is not known to be safe on
// bbolt's mapping.
func releaseMapping(*bolt.DB) {}
