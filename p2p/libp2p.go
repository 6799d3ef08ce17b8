package p2p

// The libp2p host is built through github.com/libp2p/go-libp2p/config and
// the transport, security, muxer and peerstore packages directly, not
// through the root package github.com/libp2p/go-libp2p (libp2p.New): the
// root package's defaults.go references the WebRTC (pion/*), WebTransport
// and WebSocket transports, so importing it links them into every binary
// although fedrank uses TCP and QUIC only. Measured on go-libp2p v0.51.0,
// cmd/node stripped (-trimpath -ldflags "-s -w", CGO_ENABLED=0):
// linux/arm GOARM=7 26,542,242 -> 22,937,762 bytes, linux/arm64
// 26,149,026 -> 22,544,546 bytes. TestNodeDoesNotLinkUnusedTransports keeps it
// that way.
//
// libp2pConfig mirrors what libp2p.New(opts...) did for v0.51.0 with the
// options New used to pass (Identity, ListenAddrStrings, Security noise and
// tls, Muxer yamux, Transport tcp [and quic], ResourceManager,
// ConnectionManager, ConnectionGater, UserAgent, DisableRelay,
// PrivateNetwork, PrometheusRegisterer or DisableMetrics) followed by
// libp2p.FallbackDefaults. With those options set, the only fallbacks that
// still apply are the in-memory peerstore and the UDP and IPv6 black-hole
// success counters; the multiaddr DNS resolver is the swarm's own default
// in both cases. defaultServiceLimits copies libp2p.SetDefaultServiceLimits.
// TestLibp2pConfigMatchesNew and TestDefaultServiceLimitsMatchLibp2p compare
// both with the root package's; re-check them when upgrading go-libp2p, as
// config.Config is documented as not a stable interface. (The config package
// itself still imports p2p/transport/webrtc, for one function type; that
// links only its package initialisers, not pion's WebRTC stack.)

import (
	"fmt"

	"github.com/libp2p/go-libp2p/config"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/transport"
	"github.com/libp2p/go-libp2p/p2p/host/autonat"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/fx"
)

// newLibp2pHost builds and starts the libp2p host for New. On error the
// peerstore it made is closed; rm and cm are left to the caller, as with
// libp2p.New.
func newLibp2pHost(cfg Config, rm network.ResourceManager, cm connmgr.ConnManager, g connmgr.ConnectionGater) (host.Host, error) {
	lc, err := libp2pConfig(cfg, rm, cm, g)
	if err != nil {
		return nil, err
	}
	h, err := lc.NewNode()
	if err != nil {
		_ = lc.Peerstore.Close() // idempotent; libp2p.New would leak it
		return nil, err
	}
	return h, nil
}

// libp2pConfig is the config.Config libp2p.New would have built from New's
// options and FallbackDefaults (see the comment at the top of this file).
func libp2pConfig(cfg Config, rm network.ResourceManager, cm connmgr.ConnManager, g connmgr.ConnectionGater) (*config.Config, error) {
	listen := make([]ma.Multiaddr, 0, len(cfg.ListenAddrs))
	for _, s := range cfg.ListenAddrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, err
		}
		listen = append(listen, a)
	}
	lc := &config.Config{
		PeerKey:     cfg.Key,
		ListenAddrs: listen,
		SecurityTransports: []config.Security{
			{ID: noise.ID, Constructor: noise.New},
			{ID: libp2ptls.ID, Constructor: libp2ptls.New},
		},
		Muxers:          []tptu.StreamMuxer{{ID: yamux.ID, Muxer: yamux.DefaultTransport}},
		Transports:      []fx.Option{transportOption(tcp.NewTCPTransport)},
		ResourceManager: rm,
		ConnManager:     cm,
		ConnectionGater: g,
		UserAgent:       cfg.UserAgent,
		RelayCustom:     true, // DisableRelay
		Relay:           false,
		// FallbackDefaults: defaultUDPBlackHoleDetector and
		// defaultIPv6BlackHoleDetector.
		UDPBlackHoleSuccessCounter:        &swarm.BlackHoleSuccessCounter{N: 100, MinSuccesses: 5, Name: "UDP"},
		CustomUDPBlackHoleSuccessCounter:  true,
		IPv6BlackHoleSuccessCounter:       &swarm.BlackHoleSuccessCounter{N: 100, MinSuccesses: 5, Name: "IPv6"},
		CustomIPv6BlackHoleSuccessCounter: true,
	}
	if len(cfg.PSK) > 0 {
		lc.PSK = pnet.PSK(cfg.PSK)
	} else {
		lc.Transports = append(lc.Transports, transportOption(quic.NewTransport))
	}
	if cfg.Registerer != nil {
		lc.PrometheusRegisterer = cfg.Registerer
	} else {
		lc.DisableMetrics = true
	}
	// FallbackDefaults: DefaultPeerstore. Last, so that nothing above can
	// fail and leak it.
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		return nil, fmt.Errorf("peerstore: %w", err)
	}
	lc.Peerstore = ps
	return lc, nil
}

// transportOption is libp2p.Transport(constructor) without transport
// options: the fx provider config.NewNode collects into its transport group.
func transportOption(constructor any) fx.Option {
	return fx.Provide(fx.Annotate(
		constructor,
		fx.ParamTags(),
		fx.As(new(transport.Transport)),
		fx.ResultTags(`group:"transport"`),
	))
}

// defaultServiceLimits is libp2p.SetDefaultServiceLimits (v0.51.0): the
// resource-manager limits for identify, ping, autonat, holepunch and the
// circuit v2 relay protocols.
func defaultServiceLimits(lim *rcmgr.ScalingLimitConfig) {
	// identify
	lim.AddServiceLimit(
		identify.ServiceName,
		rcmgr.BaseLimit{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 4 << 20},
		rcmgr.BaseLimitIncrease{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 4 << 20},
	)
	lim.AddServicePeerLimit(
		identify.ServiceName,
		rcmgr.BaseLimit{StreamsInbound: 16, StreamsOutbound: 16, Streams: 32, Memory: 1 << 20},
		rcmgr.BaseLimitIncrease{},
	)
	for _, id := range [...]protocol.ID{identify.ID, identify.IDPush} {
		lim.AddProtocolLimit(
			id,
			rcmgr.BaseLimit{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 4 << 20},
			rcmgr.BaseLimitIncrease{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 4 << 20},
		)
		lim.AddProtocolPeerLimit(
			id,
			rcmgr.BaseLimit{StreamsInbound: 16, StreamsOutbound: 16, Streams: 32, Memory: 32 * (256<<20 + 16<<10)},
			rcmgr.BaseLimitIncrease{},
		)
	}

	// ping
	addServiceAndProtocolLimit(lim,
		ping.ServiceName, ping.ID,
		rcmgr.BaseLimit{StreamsInbound: 64, StreamsOutbound: 64, Streams: 64, Memory: 4 << 20},
		rcmgr.BaseLimitIncrease{StreamsInbound: 64, StreamsOutbound: 64, Streams: 64, Memory: 4 << 20},
	)
	addServicePeerAndProtocolPeerLimit(lim,
		ping.ServiceName, ping.ID,
		rcmgr.BaseLimit{StreamsInbound: 2, StreamsOutbound: 3, Streams: 4, Memory: 32 * (256<<20 + 16<<10)},
		rcmgr.BaseLimitIncrease{},
	)

	// autonat
	addServiceAndProtocolLimit(lim,
		autonat.ServiceName, autonat.AutoNATProto,
		rcmgr.BaseLimit{StreamsInbound: 64, StreamsOutbound: 64, Streams: 64, Memory: 4 << 20},
		rcmgr.BaseLimitIncrease{StreamsInbound: 4, StreamsOutbound: 4, Streams: 4, Memory: 2 << 20},
	)
	addServicePeerAndProtocolPeerLimit(lim,
		autonat.ServiceName, autonat.AutoNATProto,
		rcmgr.BaseLimit{StreamsInbound: 2, StreamsOutbound: 2, Streams: 2, Memory: 1 << 20},
		rcmgr.BaseLimitIncrease{},
	)

	// holepunch
	addServiceAndProtocolLimit(lim,
		holepunch.ServiceName, holepunch.Protocol,
		rcmgr.BaseLimit{StreamsInbound: 32, StreamsOutbound: 32, Streams: 64, Memory: 4 << 20},
		rcmgr.BaseLimitIncrease{StreamsInbound: 8, StreamsOutbound: 8, Streams: 16, Memory: 4 << 20},
	)
	addServicePeerAndProtocolPeerLimit(lim,
		holepunch.ServiceName, holepunch.Protocol,
		rcmgr.BaseLimit{StreamsInbound: 2, StreamsOutbound: 2, Streams: 2, Memory: 1 << 20},
		rcmgr.BaseLimitIncrease{},
	)

	// relay/v2
	lim.AddServiceLimit(
		relayv2.ServiceName,
		rcmgr.BaseLimit{StreamsInbound: 256, StreamsOutbound: 256, Streams: 256, Memory: 16 << 20},
		rcmgr.BaseLimitIncrease{StreamsInbound: 256, StreamsOutbound: 256, Streams: 256, Memory: 16 << 20},
	)
	lim.AddServicePeerLimit(
		relayv2.ServiceName,
		rcmgr.BaseLimit{StreamsInbound: 64, StreamsOutbound: 64, Streams: 64, Memory: 1 << 20},
		rcmgr.BaseLimitIncrease{},
	)

	// circuit protocols, both client and service
	for _, proto := range [...]protocol.ID{circuit.ProtoIDv2Hop, circuit.ProtoIDv2Stop} {
		lim.AddProtocolLimit(
			proto,
			rcmgr.BaseLimit{StreamsInbound: 640, StreamsOutbound: 640, Streams: 640, Memory: 16 << 20},
			rcmgr.BaseLimitIncrease{StreamsInbound: 640, StreamsOutbound: 640, Streams: 640, Memory: 16 << 20},
		)
		lim.AddProtocolPeerLimit(
			proto,
			rcmgr.BaseLimit{StreamsInbound: 128, StreamsOutbound: 128, Streams: 128, Memory: 32 << 20},
			rcmgr.BaseLimitIncrease{},
		)
	}
}

func addServiceAndProtocolLimit(lim *rcmgr.ScalingLimitConfig, service string, proto protocol.ID, limit rcmgr.BaseLimit, increase rcmgr.BaseLimitIncrease) {
	lim.AddServiceLimit(service, limit, increase)
	lim.AddProtocolLimit(proto, limit, increase)
}

func addServicePeerAndProtocolPeerLimit(lim *rcmgr.ScalingLimitConfig, service string, proto protocol.ID, limit rcmgr.BaseLimit, increase rcmgr.BaseLimitIncrease) {
	lim.AddServicePeerLimit(service, limit, increase)
	lim.AddProtocolPeerLimit(proto, limit, increase)
}
