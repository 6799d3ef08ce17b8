package genesis

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedrank/fedrank/task"
)

// testPeers returns n deterministic Ed25519 peer IDs.
func testPeers(t testing.TB, n int, seed uint64) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		var keySeed [ed25519.SeedSize]byte
		binary.LittleEndian.PutUint64(keySeed[:], seed)
		binary.LittleEndian.PutUint64(keySeed[8:], uint64(i))
		priv := ed25519.NewKeyFromSeed(keySeed[:])
		pub, err := crypto.UnmarshalEd25519PublicKey(priv.Public().(ed25519.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = id.String()
	}
	return out
}

// sample returns a valid frl-mnist genesis of 5 members with no defaults
// filled in.
func sample(t testing.TB) *Genesis {
	t.Helper()
	p := testPeers(t, 6, 1)
	return &Genesis{
		Name:         "pilot",
		Aggregator:   p[0],
		Members:      p[1:],
		Scenario:     "frl-mnist",
		Seed:         7,
		Rounds:       30,
		PerRound:     3,
		Quorum:       2,
		RoundTimeout: Duration(2 * time.Minute),
		Bootstrap:    []string{"/ip4/127.0.0.1/tcp/4001/p2p/" + p[0]},
	}
}

// writeBase writes a random 784-16-10 base model into dir and returns its
// file name and the file's hex SHA-256.
func writeBase(t testing.TB, dir string) (string, string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := []int{784, 16, 10}
	w := make([][]float32, 2)
	for l := range w {
		w[l] = make([]float32, sizes[l]*sizes[l+1])
		for i := range w[l] {
			w[l][i] = float32(rng.NormFloat64() * 0.05)
		}
	}
	base, err := task.NewBase(sizes, w, map[string]string{"note": "test base"})
	if err != nil {
		t.Fatal(err)
	}
	file, err := base.Encode()
	if err != nil {
		t.Fatal(err)
	}
	name := "base.safetensors"
	if err := os.WriteFile(filepath.Join(dir, name), file, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(file)
	return name, hex.EncodeToString(sum[:])
}

// loraSample is sample as lora-mnist on a base written into dir.
func loraSample(t testing.TB, dir string) *Genesis {
	g := sample(t)
	g.Scenario = "lora-mnist"
	g.Task.BaseModel, g.Task.BaseModelHash = writeBase(t, dir)
	g.Task.BaseModel = filepath.Join(dir, g.Task.BaseModel)
	return g
}

// frlLoRASample is sample as frl-lora-mnist on a base written into dir.
func frlLoRASample(t testing.TB, dir string) *Genesis {
	g := loraSample(t, dir)
	g.Scenario = "frl-lora-mnist"
	return g
}
