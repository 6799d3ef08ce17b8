package p2p

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
)

func TestCreateLoadKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	k, err := CreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %#o, want 0600", fi.Mode().Perm())
	}
	loaded, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Equals(loaded) {
		t.Fatal("loaded key differs from the created one")
	}
	id := PeerID(k)
	if !strings.HasPrefix(id, "12D3KooW") || PeerID(loaded) != id {
		t.Fatalf("peer IDs %q / %q", id, PeerID(loaded))
	}
	if PeerID(nil) != "" {
		t.Fatal("PeerID(nil) not empty")
	}

	before, _ := os.ReadFile(path)
	if _, err := CreateKey(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second CreateKey: %v, want fs.ErrExist", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("CreateKey overwrote the existing key")
	}
}

func TestLoadKeyErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask may have narrowed it
			t.Fatal(err)
		}
		return p
	}
	secp, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secpBytes, _ := crypto.MarshalPrivateKey(secp)
	good, _ := crypto.MarshalPrivateKey(testKey(t))
	tests := []struct {
		name string
		path string
		want error
	}{
		{"garbage", write("garbage", []byte("not a key at all"), 0o600), ErrBadKey},
		{"empty", write("empty", nil, 0o600), ErrBadKey},
		{"truncated", write("truncated", good[:len(good)/2], 0o600), ErrBadKey},
		{"huge", write("huge", make([]byte, maxKeyFileBytes+1), 0o600), ErrBadKey},
		{"secp256k1", write("secp", secpBytes, 0o600), ErrNotEd25519},
		{"missing", filepath.Join(dir, "missing"), fs.ErrNotExist},
		{"directory", dir, nil},
	}
	if runtime.GOOS != "windows" {
		tests = append(tests,
			struct {
				name string
				path string
				want error
			}{"world-readable", write("public", good, 0o644), ErrKeyPermissions},
			struct {
				name string
				path string
				want error
			}{"group-writable", write("group", good, 0o620), ErrKeyPermissions},
		)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := LoadKey(tc.path)
			if err == nil || k != nil {
				t.Fatalf("LoadKey accepted %s", tc.name)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}
