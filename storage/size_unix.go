//go:build unix

package storage

import (
	"io/fs"
	"syscall"
)

// diskUsage is the space a file occupies: its allocated blocks, which for
// Badger's sparse log files is far less than their length.
func diskUsage(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return info.Size()
}
