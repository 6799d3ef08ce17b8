package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Errors of LoadKey; test them with errors.Is.
var (
	// ErrBadKey: the key file does not hold a libp2p protobuf-encoded private key.
	ErrBadKey = errors.New("p2p: not a libp2p private key file")
	// ErrNotEd25519: the key file holds a valid key of another type.
	ErrNotEd25519 = errors.New("p2p: key is not Ed25519")
	// ErrKeyPermissions: the key file is readable or writable by group or others.
	ErrKeyPermissions = errors.New("p2p: key file is accessible by group or others (chmod 600)")
)

// maxKeyFileBytes bounds what LoadKey reads: an encoded Ed25519 key is 68 bytes.
const maxKeyFileBytes = 4 << 10

// CreateKey generates a new Ed25519 identity and writes it to path in the libp2p
// protobuf encoding (crypto.MarshalPrivateKey) with mode 0600. It never
// overwrites: if path exists the error wraps fs.ErrExist and the file is left
// untouched. A partly written file is removed.
func CreateKey(path string) (crypto.PrivKey, error) {
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("p2p: generate key: %w", err)
	}
	b, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("p2p: encode key: %w", err)
	}
	// O_EXCL makes "refuse to overwrite" atomic: no check-then-create race.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("p2p: create key file: %w", err)
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("p2p: write key file: %w", werr)
	}
	syncDir(filepath.Dir(path))
	return priv, nil
}

// syncDir makes a new directory entry durable; best effort (not every
// platform can fsync a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// LoadKey reads a key written by CreateKey. It refuses (ErrKeyPermissions) a
// file whose mode grants any permission to group or others (mode&0o077 != 0):
// a private key readable by other users is treated as an error, not a
// warning, because the peer ID is the node's only credential. The check is
// skipped on Windows, where Unix modes mean nothing. A file that is not a
// libp2p private key gives ErrBadKey; a key of another type ErrNotEd25519.
func LoadKey(path string) (crypto.PrivKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("p2p: open key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("p2p: stat key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadKey, path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o", ErrKeyPermissions, path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("p2p: read key file: %w", err)
	}
	if len(b) > maxKeyFileBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadKey, path, maxKeyFileBytes)
	}
	priv, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKey, path, err)
	}
	if priv.Type() != cryptopb.KeyType_Ed25519 {
		return nil, fmt.Errorf("%w: %s holds a %s key", ErrNotEd25519, path, priv.Type())
	}
	return priv, nil
}

// PeerID returns the libp2p peer ID (base58 "12D3KooW...") of a private key,
// or "" if k is nil or unusable.
func PeerID(k crypto.PrivKey) string {
	if k == nil {
		return ""
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return ""
	}
	return id.String()
}
