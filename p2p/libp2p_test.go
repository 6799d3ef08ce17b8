package p2p

import (
	"bytes"
	"fmt"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/config"
	"github.com/libp2p/go-libp2p/core/pnet"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	noise "github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/prometheus/client_golang/prometheus"
)

// TestDefaultServiceLimitsMatchLibp2p: defaultServiceLimits is a copy of
// libp2p.SetDefaultServiceLimits.
func TestDefaultServiceLimitsMatchLibp2p(t *testing.T) {
	var got, want rcmgr.ScalingLimitConfig
	defaultServiceLimits(&got)
	libp2p.SetDefaultServiceLimits(&want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaultServiceLimits differs from libp2p.SetDefaultServiceLimits:\n got %+v\nwant %+v", got, want)
	}
}

// TestLibp2pConfigMatchesNew: libp2pConfig is the config.Config libp2p.New
// builds from the options New used to pass plus libp2p.FallbackDefaults.
// Every field is compared, so a default added by a go-libp2p upgrade fails
// here.
func TestLibp2pConfigMatchesNew(t *testing.T) {
	psk := bytes.Repeat([]byte{7}, PSKSize)
	for _, tc := range []struct {
		name string
		psk  []byte
		reg  prometheus.Registerer
	}{
		{"plain", nil, nil},
		{"psk", psk, nil},
		{"registerer", nil, prometheus.NewRegistry()},
		{"psk+registerer", psk, prometheus.NewRegistry()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Key: testKey(t), PSK: tc.psk, Registerer: tc.reg}.withDefaults()
			rm, err := newResourceManager(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer rm.Close()
			cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh)
			if err != nil {
				t.Fatal(err)
			}
			defer cm.Close()
			g := &gater{}

			got, err := libp2pConfig(cfg, rm, cm, g)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Peerstore.Close()

			// The options host.go passed to libp2p.New before it stopped
			// importing the root package.
			opts := []libp2p.Option{
				libp2p.Identity(cfg.Key),
				libp2p.ListenAddrStrings(cfg.ListenAddrs...),
				libp2p.Security(noise.ID, noise.New),
				libp2p.Security(libp2ptls.ID, libp2ptls.New),
				libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
				libp2p.Transport(tcp.NewTCPTransport),
				libp2p.ResourceManager(rm),
				libp2p.ConnectionManager(cm),
				libp2p.ConnectionGater(g),
				libp2p.UserAgent(cfg.UserAgent),
				libp2p.DisableRelay(),
			}
			if len(cfg.PSK) > 0 {
				opts = append(opts, libp2p.PrivateNetwork(pnet.PSK(cfg.PSK)))
			} else {
				opts = append(opts, libp2p.Transport(quic.NewTransport))
			}
			if cfg.Registerer != nil {
				opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
			} else {
				opts = append(opts, libp2p.DisableMetrics())
			}
			var want config.Config
			if err := want.Apply(append(opts, libp2p.FallbackDefaults)...); err != nil {
				t.Fatal(err)
			}
			defer want.Peerstore.Close()

			// Fields that cannot be compared with DeepEqual: compare them,
			// then clear them in both.
			if reflect.TypeOf(got.Peerstore) != reflect.TypeOf(want.Peerstore) {
				t.Errorf("Peerstore: %T, want %T", got.Peerstore, want.Peerstore)
			}
			got.Peerstore, want.Peerstore = nil, nil
			if g, w := fxStrings(got.Transports), fxStrings(want.Transports); !slices.Equal(g, w) {
				t.Errorf("Transports:\n got %q\nwant %q", g, w)
			}
			got.Transports, want.Transports = nil, nil
			if g, w := securityStrings(got.SecurityTransports), securityStrings(want.SecurityTransports); !slices.Equal(g, w) {
				t.Errorf("SecurityTransports: %q, want %q", g, w)
			}
			got.SecurityTransports, want.SecurityTransports = nil, nil
			// PeerKey, ListenAddrs, Muxers, the managers, the gater, the
			// registerer, the black-hole counters and every flag.
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("config differs from libp2p.New's:\n got %+v\nwant %+v", *got, want)
			}
		})
	}
}

func fxStrings[T fmt.Stringer](opts []T) []string {
	out := make([]string, len(opts))
	for i, o := range opts {
		out[i] = o.String()
	}
	return out
}

func securityStrings(secs []config.Security) []string {
	out := make([]string, len(secs))
	for i, s := range secs {
		out[i] = fmt.Sprintf("%s %v", s.ID, reflect.ValueOf(s.Constructor).Pointer())
	}
	return out
}

// TestNodeDoesNotLinkUnusedTransports keeps the root package
// github.com/libp2p/go-libp2p, whose defaults pull in the WebRTC (pion),
// WebTransport and WebSocket transports, out of the node binary (see
// libp2p.go). The config package still imports p2p/transport/webrtc for one
// type, so pion stays in the import graph; what matters is what the linker
// keeps, hence the symbol check.
func TestNodeDoesNotLinkUnusedTransports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	const main = "github.com/fedrank/fedrank/cmd/node"
	out, err := exec.Command(goTool, "list", "-deps", main).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", main, err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		switch {
		case pkg == "github.com/libp2p/go-libp2p",
			strings.HasPrefix(pkg, "github.com/libp2p/go-libp2p/p2p/transport/webtransport"),
			strings.HasPrefix(pkg, "github.com/libp2p/go-libp2p/p2p/transport/websocket"),
			strings.HasPrefix(pkg, "github.com/quic-go/webtransport-go"),
			strings.HasPrefix(pkg, "github.com/gorilla/websocket"):
			t.Errorf("%s depends on %s", main, pkg)
		}
	}
	if testing.Short() {
		t.Skip("-short: skipping the build and symbol check")
	}
	bin := t.TempDir() + "/node"
	build := exec.Command(goTool, "build", "-o", bin, main)
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", main, err, b)
	}
	syms, err := exec.Command(goTool, "tool", "nm", bin).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	// Before the change, 600-odd symbols of package pion/webrtc/v4 and the
	// libp2p WebRTC transport's constructor were linked; now neither is.
	var bad []string
	for line := range strings.Lines(string(syms)) {
		if strings.Contains(line, "github.com/pion/webrtc/v4.") ||
			strings.Contains(line, "github.com/libp2p/go-libp2p/p2p/transport/webrtc.New") ||
			strings.Contains(line, "github.com/libp2p/go-libp2p/p2p/transport/webrtc.(*WebRTCTransport)") {
			bad = append(bad, strings.TrimSpace(line))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s links %d WebRTC symbols, e.g. %s", main, len(bad), bad[:min(5, len(bad))])
	}
}
