package node

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/fedrank/fedrank/wire"
)

// ErrStaleAnnouncement: an announcement of a round older than the one before
// the newest announced. A gossip layer should drop it without penalising the
// peer that forwarded it (it may be a late copy).
var ErrStaleAnnouncement = errors.New("node: stale announcement")

// CheckAnnouncement is what a member checks of a broadcast before its
// gossip layer accepts and forwards it: a decodable envelope of at most
// maxBytes, of federation fed, a RoundStart or a RoundResult, authored by
// the aggregator, and not stale (ErrStaleAnnouncement). newest is the
// highest round announced so far; it is shared by concurrent checks and
// raised by this one.
func CheckAnnouncement(fed string, aggregator, from PeerID, b []byte, maxBytes int, newest *atomic.Uint64) error {
	env, err := wire.Unmarshal(b, maxBytes)
	if err != nil {
		return err
	}
	if f := env.GetFederation(); f != fed {
		return fmt.Errorf("federation %q, not ours", f)
	}
	var round uint64
	switch body := env.GetBody().(type) {
	case *wire.Envelope_RoundStart:
		round = body.RoundStart.GetRound()
	case *wire.Envelope_RoundResult:
		round = body.RoundResult.GetRound()
	default:
		return fmt.Errorf("a %s is not an announcement", wire.Kind(env))
	}
	if from != aggregator {
		return fmt.Errorf("announcement authored by %s, not the aggregator", from)
	}
	for {
		n := newest.Load()
		if round+1 < n {
			return fmt.Errorf("%w: round %d (round %d announced)", ErrStaleAnnouncement, round, n)
		}
		if round <= n || newest.CompareAndSwap(n, round) {
			return nil
		}
	}
}
