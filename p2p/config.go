package p2p

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied by New and Attach to the zero fields of Config.
const (
	DefaultMaxMessageBytes  = 8 << 20
	DefaultMaxAnnounceBytes = 64 << 10
	DefaultConnLow          = 32
	DefaultConnHigh         = 64
	DefaultStreamTimeout    = 30 * time.Second
	DefaultInboundBuffer    = 256
	DefaultUserAgent        = "fedrank"

	// PSKSize is the length of a private-network key.
	PSKSize = 32

	// MDNSServiceName is the mDNS service name fedrank peers advertise.
	MDNSServiceName = "fedrank"
)

// maxMessageLimit caps MaxMessageBytes: one message is held in memory whole.
const maxMessageLimit = 1 << 30

// DefaultListenAddrs are used when Config.ListenAddrs is empty and there is no
// PSK: TCP and QUIC on every interface, ports chosen by the system.
var DefaultListenAddrs = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}

// DefaultPrivateListenAddrs are used when Config.ListenAddrs is empty and a PSK
// is set: QUIC cannot run on a private network, so TCP only.
var DefaultPrivateListenAddrs = []string{"/ip4/0.0.0.0/tcp/0"}

// ErrPSKWithQUIC is returned when a PSK is configured together with a UDP
// (QUIC) listen address: libp2p's private networks work over TCP only.
var ErrPSKWithQUIC = errors.New("p2p: a private network (PSK) cannot listen on QUIC; use TCP listen addresses only")

// Config configures a Host. The zero value of every field but Key (required by
// New) selects the documented default.
type Config struct {
	// Key is the host's identity (see CreateKey/LoadKey). Required by New;
	// ignored by Attach, whose host already has one.
	Key crypto.PrivKey
	// ListenAddrs are multiaddrs to listen on. Default DefaultListenAddrs
	// (DefaultPrivateListenAddrs with a PSK). Only TCP and QUIC (quic-v1)
	// transports are configured. Ignored by Attach.
	ListenAddrs []string
	// PSK, if set, is a 32-byte private-network key (libp2p pnet): only hosts
	// with the same key can connect. QUIC does not support private networks,
	// so with a PSK every listen address must be TCP (ErrPSKWithQUIC otherwise).
	// Ignored by Attach.
	PSK []byte
	// UserAgent is announced to peers by identify, e.g. "fedrank/1.2.0".
	// Default DefaultUserAgent. Ignored by Attach.
	UserAgent string
	// MaxMessageBytes is the largest direct message (Send and the stream
	// handler). Default DefaultMaxMessageBytes, at most 1 GiB.
	MaxMessageBytes int
	// MaxAnnounceBytes is the largest announcement (Broadcast and gossipsub).
	// Default DefaultMaxAnnounceBytes. gossipsub's wire limit is set a little
	// above it (room for the signature and headers); every member must use the
	// same value or larger announcements are dropped by the smaller peers.
	MaxAnnounceBytes int
	// ConnLow and ConnHigh are the connection manager's watermarks: above
	// ConnHigh connections it trims back to ConnLow. Defaults 32 and 64.
	// Ignored by Attach.
	ConnLow, ConnHigh int
	// MemoryLimit is the resource manager's memory limit for the whole host,
	// in bytes; the other limits are scaled from it (rcmgr ScalingLimitConfig.Scale).
	// 0 selects libp2p's autoscaled defaults (1/8 of RAM, within 128 MiB..1 GiB).
	// Either way the direct protocol gets its own service and protocol limits
	// sized from MaxMessageBytes. Ignored by Attach.
	MemoryLimit int64
	// MDNS enables mDNS discovery on the local network (service name
	// MDNSServiceName); members found are connected to.
	MDNS bool
	// Logger receives the host's logs. Default slog.Default().
	Logger *slog.Logger
	// StreamTimeout bounds one direct message's stream, on both sides:
	// opening, writing and the acknowledgement for Send; reading and
	// queueing for the handler. Default DefaultStreamTimeout.
	StreamTimeout time.Duration
	// InboundBuffer is the capacity of the Inbound channel. Default
	// DefaultInboundBuffer.
	InboundBuffer int
	// OnReject, if set, is called for every refused message and gater
	// refusal, with the remote peer ID, the Reason* constant and the error
	// (nil for gater refusals). It runs synchronously on libp2p goroutines
	// (gater callbacks included): it must be fast and safe for concurrent use.
	OnReject func(from, reason string, err error)
	// Registerer, if set, receives libp2p's Prometheus metrics (swarm,
	// identify, resource manager...). If nil, libp2p metrics are disabled.
	// Ignored by Attach.
	Registerer prometheus.Registerer
}

// withDefaults returns c with the zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if len(c.ListenAddrs) == 0 {
		if len(c.PSK) > 0 {
			c.ListenAddrs = DefaultPrivateListenAddrs
		} else {
			c.ListenAddrs = DefaultListenAddrs
		}
	}
	if c.UserAgent == "" {
		c.UserAgent = DefaultUserAgent
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxAnnounceBytes == 0 {
		c.MaxAnnounceBytes = DefaultMaxAnnounceBytes
	}
	if c.ConnLow == 0 && c.ConnHigh == 0 {
		c.ConnLow, c.ConnHigh = DefaultConnLow, DefaultConnHigh
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.StreamTimeout == 0 {
		c.StreamTimeout = DefaultStreamTimeout
	}
	if c.InboundBuffer == 0 {
		c.InboundBuffer = DefaultInboundBuffer
	}
	return c
}

// validate checks a Config after withDefaults. forNew adds the checks that
// only matter when New builds the host.
func (c *Config) validate(forNew bool) error {
	if c.MaxMessageBytes < 0 || c.MaxMessageBytes > maxMessageLimit {
		return fmt.Errorf("p2p: MaxMessageBytes %d out of range (1..%d)", c.MaxMessageBytes, maxMessageLimit)
	}
	if c.MaxAnnounceBytes < 0 || c.MaxAnnounceBytes > maxMessageLimit {
		return fmt.Errorf("p2p: MaxAnnounceBytes %d out of range (1..%d)", c.MaxAnnounceBytes, maxMessageLimit)
	}
	if c.StreamTimeout < 0 {
		return fmt.Errorf("p2p: StreamTimeout %v is negative", c.StreamTimeout)
	}
	if c.InboundBuffer < 0 {
		return fmt.Errorf("p2p: InboundBuffer %d is negative", c.InboundBuffer)
	}
	if !forNew {
		return nil
	}
	if c.Key == nil {
		return errors.New("p2p: Config.Key is required")
	}
	if c.ConnLow < 0 || c.ConnHigh < 1 || c.ConnLow > c.ConnHigh {
		return fmt.Errorf("p2p: ConnLow %d and ConnHigh %d: need 0 <= ConnLow <= ConnHigh, ConnHigh >= 1", c.ConnLow, c.ConnHigh)
	}
	if c.MemoryLimit < 0 {
		return fmt.Errorf("p2p: MemoryLimit %d is negative", c.MemoryLimit)
	}
	if len(c.PSK) != 0 && len(c.PSK) != PSKSize {
		return fmt.Errorf("p2p: PSK is %d bytes, want %d", len(c.PSK), PSKSize)
	}
	for _, s := range c.ListenAddrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("p2p: listen address %q: %w", s, err)
		}
		if len(c.PSK) > 0 {
			if _, err := a.ValueForProtocol(ma.P_UDP); err == nil {
				return fmt.Errorf("%w (got %s)", ErrPSKWithQUIC, s)
			}
		}
	}
	return nil
}
