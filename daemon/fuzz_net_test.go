package daemon

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"github.com/fedrank/fedrank/p2p"
	"sync/atomic"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/wire"
)

// Fuzzers of the daemon's own checks of network bytes: gossipsub's
// announcement validator and the update signature check. Run one with, e.g.,
//
//	go test -run x -fuzz FuzzValidateAnnouncement -fuzztime 30s ./daemon/

// FuzzValidateAnnouncement: any bytes from any author never panic the
// validator, and it passes exactly the decodable RoundStart and RoundResult
// envelopes of our federation authored by the aggregator.
func FuzzValidateAnnouncement(f *testing.F) {
	const fed, agg, limit = "feed", "the-aggregator", 1 << 10
	enc := func(e *wire.Envelope) []byte {
		b, err := wire.Marshal(e)
		if err != nil {
			panic(err)
		}
		return b
	}
	start := enc(&wire.Envelope{Federation: fed, Body: &wire.Envelope_RoundStart{RoundStart: &wire.RoundStart{Round: 3, ModelHash: []byte{1, 2}, Selected: []string{"a"}}}})
	f.Add(start, true)
	f.Add(start, false)
	f.Add(enc(&wire.Envelope{Federation: fed, Body: &wire.Envelope_RoundResult{RoundResult: &wire.RoundResult{Round: 3}}}), true)
	f.Add(enc(&wire.Envelope{Federation: "other", Body: &wire.Envelope_RoundResult{RoundResult: &wire.RoundResult{Round: 3}}}), true)
	f.Add(enc(&wire.Envelope{Federation: fed, Body: &wire.Envelope_Update{Update: &wire.Update{Round: 3, Payload: []byte("x")}}}), true)
	f.Add(enc(&wire.Envelope{Federation: fed, Body: &wire.Envelope_RoundStart{RoundStart: &wire.RoundStart{Selected: []string{string(make([]byte, 2000))}}}}), true)
	f.Add([]byte{0x0a, 0x04, 'f', 'e', 'e', 'd'}, true)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, b []byte, fromAggregator bool) {
		from := "someone"
		if fromAggregator {
			from = agg
		}
		// A fresh newest round per input: staleness is TestValidateAnnouncementStale's.
		err := node.CheckAnnouncement(fed, agg, from, b, limit, new(atomic.Uint64))
		env, derr := wire.Unmarshal(b, limit)
		want := derr == nil && env.GetFederation() == fed && fromAggregator &&
			(env.GetRoundStart() != nil || env.GetRoundResult() != nil)
		if (err == nil) != want {
			t.Fatalf("validateAnnouncement = %v; decode error %v, from the aggregator %v", err, derr, fromAggregator)
		}
	})
}

// FuzzVerifyPeer: any signature and message never panic the check, and
// only the signer's own signature of the message verifies (Ed25519
// signatures are deterministic and Go's verification is strict, so there is
// exactly one).
func FuzzVerifyPeer(f *testing.F) {
	priv, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	if err != nil {
		f.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		f.Fatal(err)
	}
	msg := node.SignedUpdate("fed", 1, []byte("model"), []byte("payload"))
	sig, err := priv.Sign(msg)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(msg, sig, 0)
	f.Add(msg, sig[:63], 0)
	f.Add(msg[1:], sig, 0)
	f.Add(msg, make([]byte, 64), 0)
	f.Add(msg, sig, 1)
	f.Add(msg, sig, 2)
	f.Fuzz(func(t *testing.T, m, s []byte, who int) {
		from := id.String()
		who = (who%3 + 3) % 3
		switch who {
		case 1:
			from = "not a peer id"
		case 2:
			from = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N" // an RSA-style ID: no key inside
		}
		err := p2p.Verify(from, m, s)
		if err != nil {
			return
		}
		if who != 0 {
			t.Fatalf("verified a signature for %q", from)
		}
		want, err := priv.Sign(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(s, want) {
			t.Fatalf("verified a signature that is not the signer's")
		}
	})
}

// TestValidateAnnouncementStale: announcements older than the round before
// the newest one seen are ignored (p2p.ErrIgnore), not rejected.
func TestValidateAnnouncementStale(t *testing.T) {
	const fed, agg = "fed", "agg"
	var newest atomic.Uint64
	start := func(r uint64) []byte {
		b, _ := wire.Marshal(&wire.Envelope{Federation: fed, Body: &wire.Envelope_RoundStart{RoundStart: &wire.RoundStart{Round: r}}})
		return b
	}
	for _, r := range []uint64{1, 2, 5, 4} {
		if err := validateAnnouncement(fed, agg, agg, start(r), &newest); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
	}
	if err := validateAnnouncement(fed, agg, agg, start(3), &newest); !errors.Is(err, p2p.ErrIgnore) {
		t.Fatalf("round 3 after round 5: %v, want p2p.ErrIgnore", err)
	}
	if got := newest.Load(); got != 5 {
		t.Fatalf("newest %d, want 5", got)
	}
}
