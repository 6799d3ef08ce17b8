package p2p

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
)

const (
	// ProtocolID is the direct-message protocol: one unsigned-varint
	// length-delimited message per stream, acknowledged by the receiver
	// closing its side after reading it.
	ProtocolID protocol.ID = "/fedrank/msg/1.0.0"
	// ServiceName is the resource-manager service our streams are attached to.
	ServiceName = "fedrank"

	// announceOverhead is the room gossipsub's wire limit leaves above
	// MaxAnnounceBytes for the RPC framing, topic, author, seqno and signature.
	announceOverhead = 4 << 10
)

// Errors returned by Host methods; test them with errors.Is.
var (
	// ErrClosed: the host was closed.
	ErrClosed = errors.New("p2p: host closed")
	// ErrNotJoined: no federation has been joined yet (see Join).
	ErrNotJoined = errors.New("p2p: no federation joined")
	// ErrNotMember: the peer is not a member of the joined federation.
	ErrNotMember = errors.New("p2p: peer is not a federation member")
	// ErrRejected: the receiver refused the message; the error text names its
	// reason when the transport carries it (yamux and QUIC do, mocknet does not).
	ErrRejected = errors.New("p2p: message rejected by the receiver")
	// ErrIgnore may be wrapped by Federation.Validate's error to drop an
	// announcement without penalising the peer that forwarded it (gossipsub
	// ValidationIgnore), for example an announcement of a stale round.
	ErrIgnore = errors.New("p2p: announcement ignored")

	// errResourceLimit marks a refusal by the resource manager.
	errResourceLimit = errors.New("p2p: resource limit")
)

// Federation is the membership a host enforces and the topic it joins.
type Federation struct {
	// ID is the federation id, in hex. The announcement topic is TopicName(ID).
	ID string
	// Members are the peer IDs allowed to talk to us: the trainers and the
	// aggregator. Every other peer is refused, by the connection gater and
	// again per message. It normally includes the local peer; it need not.
	Members []string
	// Validate, if set, checks an announcement from a member (its author,
	// as a peer ID string) before gossipsub accepts and forwards it: decode,
	// federation id, stale round... A non-nil error rejects it (gossipsub
	// ValidationReject, which lowers the forwarder's score); an error wrapping
	// ErrIgnore drops it without penalty. Validate also runs on our own
	// Broadcast, whose error it then returns. It runs concurrently on pubsub
	// goroutines: it must be safe for concurrent use.
	Validate func(from string, data []byte) error
}

// Message is a message from a federation member.
type Message struct {
	// From is the sender's peer ID: the stream's authenticated remote peer
	// for a direct message, the signing author for an announcement.
	From string
	// Data is the message as sent (one encoded wire.Envelope, by convention).
	Data []byte
	// Announcement tells a gossipsub announcement (Broadcast) from a direct
	// message (Send).
	Announcement bool
}

// Host is the libp2p side of a fedrank peer: it moves bytes between
// authenticated federation members and refuses everyone else. All methods
// are safe for concurrent use.
type Host struct {
	h     host.Host
	owned bool // created by New: Close closes h
	cfg   Config
	log   *slog.Logger
	self  peer.ID

	allow allowList
	stats counters

	// ctx is the services' lifetime, cancelled by Close.
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() bool // unregisters the AfterFunc on New/Attach's ctx
	ps     *pubsub.PubSub
	mdns   mdns.Service

	mdnsMu    sync.Mutex
	mdnsPeers map[peer.ID]peer.AddrInfo // every peer mDNS reported

	// joinMu serialises Join and Close around the topic state.
	joinMu sync.Mutex
	topic  atomic.Pointer[pubsub.Topic]
	sub    *pubsub.Subscription

	inbound chan Message
	done    chan struct{} // closed by Close

	// mu guards closed and the wait group's Add, so that Close's Wait never
	// races an Add from a new stream handler.
	mu       sync.Mutex
	closed   bool
	wg       sync.WaitGroup
	closeErr error
	once     sync.Once
}

// New builds a libp2p host from cfg and starts the fedrank services on it:
// TCP and QUIC transports (TCP only with a PSK), Noise and TLS security,
// yamux, a resource manager with limits for ProtocolID, a connection manager,
// a connection gater that admits federation members only (nobody until
// Join), identify with cfg.UserAgent, gossipsub, and mDNS if asked. Relay,
// hole punching and NAT port mapping are off; libp2p metrics are off unless
// cfg.Registerer is set.
//
// The host runs until Close is called or ctx is cancelled, whichever comes
// first. It refuses every peer until Join.
func New(ctx context.Context, cfg Config) (*Host, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(true); err != nil {
		return nil, err
	}
	self, err := peer.IDFromPrivateKey(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("p2p: peer ID of Config.Key: %w", err)
	}
	x := newHost(cfg, self)
	g := &gater{allow: &x.allow, refused: &x.stats.gaterRefused, onRefuse: func(p peer.ID) {
		x.log.Debug("p2p: gater refused peer", "peer", p)
		if x.cfg.OnReject != nil {
			x.cfg.OnReject(p.String(), ReasonGaterRefused, nil)
		}
	}}
	rm, err := newResourceManager(cfg)
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	h, err := newLibp2pHost(cfg, rm, cm, g)
	if err != nil {
		// config.NewNode closes rm and cm on some failure paths only; both
		// Close methods are idempotent.
		_ = cm.Close()
		_ = rm.Close()
		return nil, fmt.Errorf("p2p: new libp2p host: %w", err)
	}
	x.owned = true
	if err := x.start(ctx, h); err != nil {
		_ = h.Close()
		return nil, err
	}
	x.log.Info("p2p: host started", "peer", x.self, "addrs", x.Addrs(),
		"psk", len(cfg.PSK) > 0, "max_message", cfg.MaxMessageBytes, "max_announce", cfg.MaxAnnounceBytes,
		"conn_low", cfg.ConnLow, "conn_high", cfg.ConnHigh, "memory_limit", cfg.MemoryLimit)
	return x, nil
}

// Attach starts the fedrank services (gossipsub, the direct protocol at
// Join, mDNS if asked) on an existing host, for example a mocknet host in
// tests. The host-construction fields of cfg (Key, ListenAddrs, PSK,
// UserAgent, ConnLow/ConnHigh, MemoryLimit, Registerer) are ignored, and
// there is no connection gater: non-members can connect, but every message
// is still checked. Close stops the services and leaves h open.
func Attach(ctx context.Context, h host.Host, cfg Config) (*Host, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(false); err != nil {
		return nil, err
	}
	x := newHost(cfg, h.ID())
	if err := x.start(ctx, h); err != nil {
		return nil, err
	}
	return x, nil
}

func newHost(cfg Config, self peer.ID) *Host {
	return &Host{
		cfg:     cfg,
		self:    self,
		log:     cfg.Logger.With("self", self.String()),
		inbound: make(chan Message, cfg.InboundBuffer),
		done:    make(chan struct{}),
	}
}

// newResourceManager builds libp2p's default scaled limits plus limits for
// our service and protocol sized from MaxMessageBytes: up to 16 concurrent
// messages per peer and memory for 2 messages per peer, 8 in all.
func newResourceManager(cfg Config) (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	defaultServiceLimits(&limits) // libp2p.SetDefaultServiceLimits
	maxMsg := int64(cfg.MaxMessageBytes)
	total := rcmgr.BaseLimit{StreamsInbound: 256, StreamsOutbound: 256, Streams: 512, Memory: max(64<<20, 8*maxMsg)}
	perPeer := rcmgr.BaseLimit{StreamsInbound: 16, StreamsOutbound: 16, Streams: 32, Memory: max(16<<20, 2*maxMsg)}
	limits.AddServiceLimit(ServiceName, total, rcmgr.BaseLimitIncrease{})
	limits.AddServicePeerLimit(ServiceName, perPeer, rcmgr.BaseLimitIncrease{})
	limits.AddProtocolLimit(ProtocolID, total, rcmgr.BaseLimitIncrease{})
	limits.AddProtocolPeerLimit(ProtocolID, perPeer, rcmgr.BaseLimitIncrease{})
	// One stream holds one whole message.
	limits.StreamBaseLimit.Memory = max(limits.StreamBaseLimit.Memory, maxMsg)

	var concrete rcmgr.ConcreteLimitConfig
	if cfg.MemoryLimit > 0 {
		// AutoScale's system FD limit is the FD budget it scales with; reuse it.
		fds := int(limits.AutoScale().ToPartialLimitConfig().System.FD)
		scaled := limits.Scale(cfg.MemoryLimit, fds)
		// Scale never goes below the base limits (128 MiB for the system);
		// the system memory limit is exactly what was asked.
		concrete = rcmgr.PartialLimitConfig{
			System: rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(cfg.MemoryLimit)},
		}.Build(scaled)
	} else {
		concrete = limits.AutoScale()
	}
	var opts []rcmgr.Option
	if cfg.Registerer != nil {
		str, err := rcmgr.NewStatsTraceReporter()
		if err != nil {
			return nil, fmt.Errorf("p2p: resource manager metrics: %w", err)
		}
		opts = append(opts, rcmgr.WithTraceReporter(str))
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(concrete), opts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	return rm, nil
}

// start runs the services shared by New and Attach on h.
func (x *Host) start(ctx context.Context, h host.Host) error {
	x.h = h
	x.ctx, x.cancel = context.WithCancel(context.Background())
	ps, err := pubsub.NewGossipSub(x.ctx, h,
		// Off by default in v0.19: without it a Broadcast made before the
		// mesh forms (first heartbeat) reaches nobody.
		pubsub.WithFloodPublish(true),
		pubsub.WithMaxMessageSize(x.cfg.MaxAnnounceBytes+announceOverhead),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		// Non-members get no gossip, grafts or IWANT answers from us.
		pubsub.WithPeerFilter(func(p peer.ID, _ string) bool { return x.allow.has(p) }),
		pubsub.WithLogger(x.log.With("component", "pubsub")),
	)
	if err != nil {
		x.cancel()
		return fmt.Errorf("p2p: gossipsub: %w", err)
	}
	x.ps = ps
	if x.cfg.MDNS {
		svc := mdns.NewMdnsService(h, MDNSServiceName, mdnsNotifee{x})
		if err := svc.Start(); err != nil {
			x.cancel()
			return fmt.Errorf("p2p: mdns: %w", err)
		}
		x.mdns = svc
	}
	x.stop = context.AfterFunc(ctx, func() { _ = x.Close() })
	return nil
}

// enter registers a goroutine that Close must wait for; it returns false if
// the host is closed.
func (x *Host) enter() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return false
	}
	x.wg.Add(1)
	return true
}

// reject counts a refused message and reports it.
func (x *Host) reject(from peer.ID, reason string, err error) {
	if i := reasonIndex(reason); i >= 0 {
		x.stats.rejected[i].Add(1)
	}
	x.log.Debug("p2p: message rejected", "peer", from, "reason", reason, "err", err)
	if x.cfg.OnReject != nil {
		x.cfg.OnReject(from.String(), reason, err)
	}
}

// Join sets the federation: its members become the only peers the gater
// admits and the stream handler and announcement validator accept; the host
// joins the federation's announcement topic and serves ProtocolID.
// Connections to peers that are not members are closed.
//
// Joining again replaces the membership (and the Validate function) at once;
// if the federation ID changed, the host moves to the new topic, leaving the
// old one after the new one is joined. On error the previous federation
// stays in force.
func (x *Host) Join(f Federation) error {
	if f.ID == "" {
		return errors.New("p2p: federation ID is empty")
	}
	if _, err := hex.DecodeString(f.ID); err != nil {
		return fmt.Errorf("p2p: federation ID %q is not hex: %w", f.ID, err)
	}
	m := &membership{topic: TopicName(f.ID), members: make(map[peer.ID]struct{}, len(f.Members))}
	for _, s := range f.Members {
		id, err := peer.Decode(s)
		if err != nil {
			return fmt.Errorf("p2p: federation member %q: %w", s, err)
		}
		m.members[id] = struct{}{}
	}
	m.fed = f
	m.fed.Members = slices.Clone(f.Members)

	x.joinMu.Lock()
	defer x.joinMu.Unlock()
	if x.isClosed() {
		return ErrClosed
	}
	old := x.allow.cur.Swap(m)
	if old == nil || old.topic != m.topic {
		if err := x.switchTopic(m.topic); err != nil {
			x.allow.cur.Store(old)
			return err
		}
	}
	x.h.SetStreamHandler(ProtocolID, x.handleStream)
	for _, p := range x.h.Network().Peers() {
		if !m.has(p) {
			x.log.Info("p2p: closing connection to non-member", "peer", p)
			_ = x.h.Network().ClosePeer(p)
		}
	}
	if x.mdns != nil {
		x.connectMDNSPeers()
	}
	x.log.Info("p2p: joined federation", "federation", f.ID, "members", len(m.members), "topic", m.topic)
	return nil
}

// ID returns the host's peer ID.
func (x *Host) ID() string { return x.self.String() }

// Addrs returns the host's listen multiaddrs, each ending in /p2p/<ID>, with
// the actual ports when listening on port 0 and one address per interface
// when listening on 0.0.0.0.
func (x *Host) Addrs() []string {
	mas, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: x.self, Addrs: x.h.Addrs()})
	if err != nil {
		return nil
	}
	out := make([]string, len(mas))
	for i, a := range mas {
		out[i] = a.String()
	}
	return out
}

// Inbound returns the messages from members, direct and announcements, in
// arrival order per kind. The channel is buffered (Config.InboundBuffer).
// When it is full, a direct message's stream handler waits up to the stream
// deadline and then resets the stream (the sender's Send fails: backpressure);
// an announcement is dropped and counted (ReasonAnnounceDropped). The channel
// is closed by Close.
func (x *Host) Inbound() <-chan Message { return x.inbound }

// Peers returns the peers we have at least one connection to.
func (x *Host) Peers() []string { return peerStrings(x.h.Network().Peers()) }

// Stats returns a snapshot of the host's counters.
func (x *Host) Stats() Stats { return x.stats.snapshot() }

// Libp2pHost returns the underlying libp2p host, for diagnostics and tests.
func (x *Host) Libp2pHost() host.Host { return x.h }

func peerStrings(ids []peer.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

func (x *Host) isClosed() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.closed
}

// Close stops the services, aborts streams in flight, waits for the stream
// handlers and the announcement reader, closes Inbound and, for a host made
// by New, closes the libp2p host. It is idempotent: later calls return the
// first call's result.
func (x *Host) Close() error {
	x.once.Do(func() {
		x.joinMu.Lock()
		x.mu.Lock()
		x.closed = true
		x.mu.Unlock()
		x.joinMu.Unlock()

		close(x.done)
		x.cancel() // stops gossipsub, the reader, and resets streams in flight
		if x.stop != nil {
			x.stop()
		}
		x.h.RemoveStreamHandler(ProtocolID)
		var errs []error
		if x.mdns != nil {
			errs = append(errs, x.mdns.Close())
		}
		x.wg.Wait()
		close(x.inbound)
		if x.owned {
			errs = append(errs, x.h.Close())
		}
		x.closeErr = errors.Join(errs...)
		x.log.Info("p2p: host closed")
	})
	return x.closeErr
}
