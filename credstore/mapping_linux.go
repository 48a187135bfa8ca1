package credstore

import (
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// releaseMapping drops from this process the pages of bbolt's file mapping
// that loading the cache touched. Every record now lives in the cache, so
// they need not stay resident: an idle sidecar with 10,000 credentials would
// otherwise carry the whole file in its RSS. bbolt maps the file read-only
// and shared (PROT_READ, MAP_SHARED), so MADV_DONTNEED only unmaps the pages
// here; bbolt faults them back from the page cache or the file when it next
// reads them. Failure is harmless and ignored.
func releaseMapping(db *bolt.DB) {
	var size int64
	if db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }) != nil || size <= 0 {
		return
	}
	info := db.Info()
	syscall.Syscall(syscall.SYS_MADVISE, info.Data, uintptr(size), syscall.MADV_DONTNEED)
}
