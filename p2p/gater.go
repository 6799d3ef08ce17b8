package p2p

import (
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// membership is an immutable snapshot of the joined federation. It is swapped
// atomically by Join and read without locks by the gater, the stream handler
// and the pubsub validator.
type membership struct {
	fed     Federation
	topic   string
	members map[peer.ID]struct{}
}

func (m *membership) has(p peer.ID) bool {
	if m == nil {
		return false
	}
	_, ok := m.members[p]
	return ok
}

// allowList holds the current membership; the zero value (nothing joined)
// admits nobody.
type allowList struct {
	cur atomic.Pointer[membership]
}

func (a *allowList) load() *membership { return a.cur.Load() }

func (a *allowList) has(p peer.ID) bool { return a.cur.Load().has(p) }

// gater is the host's connmgr.ConnectionGater: it admits connections to and
// from federation members only, and refuses every peer while no federation is
// joined (an idle daemon). Addresses are not filtered (loopback and private
// ranges are allowed): membership is by peer ID, which libp2p authenticates.
type gater struct {
	allow    *allowList
	refused  *atomic.Uint64
	onRefuse func(p peer.ID)
}

var _ connmgr.ConnectionGater = (*gater)(nil)

func (g *gater) refuse(p peer.ID) bool {
	g.refused.Add(1)
	if g.onRefuse != nil {
		g.onRefuse(p)
	}
	return false
}

// InterceptPeerDial refuses to dial a non-member.
func (g *gater) InterceptPeerDial(p peer.ID) bool {
	if g.allow.has(p) {
		return true
	}
	return g.refuse(p)
}

// InterceptAddrDial allows every address of a peer that passed InterceptPeerDial.
func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

// InterceptAccept allows every inbound connection until its peer is known
// (InterceptSecured decides).
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured refuses an authenticated connection, inbound or outbound,
// whose remote peer is not a member.
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	if g.allow.has(p) {
		return true
	}
	return g.refuse(p)
}

// InterceptUpgraded allows every connection that was secured.
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
