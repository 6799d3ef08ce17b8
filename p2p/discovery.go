package p2p

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// Connect dials bootstrap peers: each address is a multiaddr ending in
// /p2p/<peer ID> (several addresses of one peer are tried together). The
// local peer is skipped; non-members are skipped with an error (Join first).
// Addresses are kept in the peerstore permanently, so that later Sends can
// redial these peers. Peers are dialled in parallel; a peer counts as reached
// once identify has completed on the new connection, which also detects a
// remote that refused us after the security handshake. Connect returns an
// error only if no peer could be reached (nil if there was nobody to dial).
func (x *Host) Connect(ctx context.Context, addrs []string) error {
	if x.isClosed() {
		return ErrClosed
	}
	var errs []error
	byPeer := map[peer.ID]*peer.AddrInfo{}
	var order []peer.ID
	for _, s := range addrs {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("p2p: bootstrap address %q: %w", s, err))
			continue
		}
		if ai.ID == x.self {
			continue
		}
		if !x.allow.has(ai.ID) {
			errs = append(errs, fmt.Errorf("p2p: bootstrap peer %s: %w", ai.ID, ErrNotMember))
			continue
		}
		if cur, ok := byPeer[ai.ID]; ok {
			cur.Addrs = append(cur.Addrs, ai.Addrs...)
			continue
		}
		byPeer[ai.ID] = ai
		order = append(order, ai.ID)
	}
	if len(order) == 0 {
		if len(errs) == 0 {
			return nil
		}
		return fmt.Errorf("p2p: no bootstrap peer reached: %w", errors.Join(errs...))
	}

	results := make([]error, len(order))
	var wg sync.WaitGroup
	for i, id := range order {
		ai := *byPeer[id]
		x.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
		wg.Go(func() { results[i] = x.connectOne(ctx, ai) })
	}
	wg.Wait()
	reached := 0
	for i, err := range results {
		if err == nil {
			reached++
			continue
		}
		errs = append(errs, fmt.Errorf("p2p: bootstrap peer %s: %w", order[i], err))
	}
	if reached == 0 {
		return fmt.Errorf("p2p: no bootstrap peer reached: %w", errors.Join(errs...))
	}
	for _, err := range errs {
		x.log.Warn("p2p: bootstrap", "err", err)
	}
	return nil
}

// connectOne connects to one peer and waits for identify on the connection.
// host.Connect alone returns nil even when the remote's gater closed the
// connection right after the handshake (the remote decides after we do), so
// identify's outcome is what tells us the remote accepted us.
func (x *Host) connectOne(ctx context.Context, ai peer.AddrInfo) error {
	if x.h.Network().Connectedness(ai.ID) == network.Connected {
		return nil
	}
	sub, err := x.h.EventBus().Subscribe([]any{
		new(event.EvtPeerIdentificationCompleted),
		new(event.EvtPeerIdentificationFailed),
		new(event.EvtPeerConnectednessChanged),
	})
	if err != nil {
		return err
	}
	defer sub.Close()
	// An explicit connect skips the swarm's dial backoff: after a long
	// partition, failed dials would otherwise keep a healed peer away for
	// minutes (backoff grows to 5 min); the caller's ticker paces retries.
	if err := x.h.Connect(network.WithForceDirectDial(ctx, "fedrank: connect"), ai); err != nil {
		return err
	}
	for {
		select {
		case e := <-sub.Out():
			switch ev := e.(type) {
			case event.EvtPeerIdentificationCompleted:
				if ev.Peer == ai.ID {
					return nil
				}
			case event.EvtPeerIdentificationFailed:
				if ev.Peer == ai.ID {
					return fmt.Errorf("p2p: connection refused or lost during identify: %w", ev.Reason)
				}
			case event.EvtPeerConnectednessChanged:
				if ev.Peer == ai.ID && ev.Connectedness == network.NotConnected {
					return errors.New("p2p: connection closed by the peer")
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// maxMDNSPeers bounds the peers remembered from mDNS (a LAN may be noisy).
const maxMDNSPeers = 1024

// mdnsNotifee connects to members found on the local network.
type mdnsNotifee struct{ x *Host }

// HandlePeerFound implements mdns.Notifee. mDNS reports a peer once, maybe
// before Join or before the peer became a member, so every peer found is
// remembered for Join (connectMDNSPeers).
func (n mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	x := n.x
	if ai.ID == x.self {
		return
	}
	x.mdnsMu.Lock()
	if x.mdnsPeers == nil {
		x.mdnsPeers = make(map[peer.ID]peer.AddrInfo)
	}
	if _, ok := x.mdnsPeers[ai.ID]; ok || len(x.mdnsPeers) < maxMDNSPeers {
		x.mdnsPeers[ai.ID] = ai
	}
	x.mdnsMu.Unlock()
	if x.allow.has(ai.ID) {
		x.connectMDNS(ai)
	}
}

// connectMDNSPeers connects to the members among the peers mDNS found.
func (x *Host) connectMDNSPeers() {
	x.mdnsMu.Lock()
	var found []peer.AddrInfo
	for id, ai := range x.mdnsPeers {
		if x.allow.has(id) {
			found = append(found, ai)
		}
	}
	x.mdnsMu.Unlock()
	for _, ai := range found {
		x.connectMDNS(ai)
	}
}

// connectMDNS dials a member found by mDNS in the background.
func (x *Host) connectMDNS(ai peer.AddrInfo) {
	if x.h.Network().Connectedness(ai.ID) == network.Connected || !x.enter() {
		return
	}
	go func() {
		defer x.wg.Done()
		ctx, cancel := context.WithTimeout(x.ctx, x.cfg.StreamTimeout)
		defer cancel()
		if err := x.h.Connect(ctx, ai); err != nil {
			x.log.Debug("p2p: mdns connect failed", "peer", ai.ID, "err", err)
			return
		}
		x.log.Info("p2p: connected to member found by mdns", "peer", ai.ID)
	}()
}
