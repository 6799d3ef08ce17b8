package node

// A federation of real libp2p hosts in one process, for libp2p_test.go: each
// peer is a go-libp2p host on marcopolo/simnet (simulated UDP, real QUIC and
// TLS), the fedrank services attached to it with p2p.Attach, a node.Runtime
// and an in-memory Badger store, wired as the daemon wires them
// (daemon/run.go: Join with the aggregator-only announcement check,
// Inbound pumped into Runtime.Deliver, Sign and Verify with the host keys).
// Everything runs in a testing/synctest bubble: time is virtual, so the round
// deadlines, retries and silence timeouts cost no wall-clock time, and a slow
// machine (-race on two cores) cannot make a deadline pass early.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/p2p"
	"github.com/fedrank/fedrank/storage"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/marcopolo/simnet"
	"github.com/quic-go/quic-go"
	"go.uber.org/fx"
)

// simFedID is the federation id of the libp2p tests: hex, as p2p.Join wants.
const simFedID = "fed0000000000001"

// logSimEnv, when set, sends every peer's logs to stderr (debugging).
const logSimEnv = "FEDRANK_LIBP2P_TEST_LOG"

// Messages of Runtime's log lines that the tests count.
const (
	logSilent = "the aggregator has been silent"
)

// raceEnabled reports whether the test binary was built with -race.
var raceEnabled = sync.OnceValue(func() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
})

// runSim runs f in a synctest bubble. Under -race it runs on one P, as
// go-libp2p-pubsub's tests do, to dodge a race-detector bug with timers in
// bubbles (golang/go#78156).
func runSim(t *testing.T, f func(t *testing.T)) {
	if raceEnabled() {
		prev := runtime.GOMAXPROCS(1)
		defer runtime.GOMAXPROCS(prev)
	}
	synctest.Test(t, f)
}

// simOptions shape a simulated federation.
type simOptions struct {
	// trainers is the number of trainers (the aggregator comes on top).
	trainers int
	// ring: each trainer also connects to the next ring trainers, so that
	// announcements are forwarded along a trainer mesh as well.
	ring int
	// latency is the one-way latency of every packet.
	latency time.Duration
	// trainTime is how long trainer i trains in round r (virtual time).
	trainTime func(i int, r uint64) time.Duration
	// beforeUpdate, if set, runs in trainer i's TrainFunc after training,
	// before the update is returned (a test holds updates back with it).
	beforeUpdate func(i int, r uint64)
}

// simPeer is one peer of a simulated federation.
type simPeer struct {
	name   string // "agg", "t07": for messages
	idx    int    // trainer index; -1 for the aggregator
	id     PeerID
	key    crypto.PrivKey
	ip     net.IP
	lh     host.Host // the libp2p host (simnet + QUIC)
	host   *p2p.Host // fedrank's services on it, as in the daemon
	store  storage.Store
	rt     *Runtime
	logs   *logCounts
	runErr chan error // Run's result; nil until Run is started
}

// simFed is a federation of simPeers over one simnet.
type simFed struct {
	t        *testing.T
	opts     simOptions
	nw       *simnet.Simnet
	cut      *netCut
	agg      *simPeer
	trainers []*simPeer
	peers    []*simPeer // the aggregator first
	members  []PeerID   // the trainers' IDs, sorted (as the machine sorts them)
	edges    [][2]*simPeer
	// Cfg is the federation's machine config; start fills ID and Role per
	// peer. Tests may edit it between newSimFed and start.
	Cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
}

// simPayload is trainer i's update in round r: distinct per peer and round,
// so that the final model says which updates went into it.
func simPayload(i int, r uint64) int64 { return int64(i+1) + 1000*int64(r) }

// newSimFed builds the network and the hosts, joins them to the federation
// and connects them (each trainer to the aggregator, as bootstrap does, and
// to its ring neighbours). Nothing runs the protocol until start. Call it
// inside the bubble.
func newSimFed(t *testing.T, o simOptions) *simFed {
	t.Helper()
	if o.latency == 0 {
		o.latency = 5 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &simFed{t: t, opts: o, cut: &netCut{}, ctx: ctx, cancel: cancel,
		nw: &simnet.Simnet{LatencyFunc: simnet.StaticLatency(o.latency), Logger: slog.New(slog.DiscardHandler)}}
	t.Cleanup(f.close)
	for i := -1; i < o.trainers; i++ {
		p := &simPeer{idx: i, name: "agg", ip: simnet.IntToPublicIPv4(i + 1)}
		if i >= 0 {
			p.name = fmt.Sprintf("t%02d", i)
		}
		// Deterministic keys: the same peer IDs, hence the same selections,
		// on every run.
		var seed [32]byte
		seed[0], seed[1] = byte(i+1), byte((i+1)>>8)
		k, _, err := crypto.GenerateEd25519Key(rand.NewChaCha8(seed))
		if err != nil {
			t.Fatal(err)
		}
		p.key = k
		if p.lh, err = newSimHost(f.nw, f.cut, p.ip, k); err != nil {
			t.Fatalf("%s: libp2p host: %v", p.name, err)
		}
		p.id = p.lh.ID().String()
		p.logs = &logCounts{n: map[string]int{}}
		if p.host, err = p2p.Attach(ctx, p.lh, p2p.Config{Logger: p.logger("p2p"), StreamTimeout: 5 * time.Second}); err != nil {
			_ = p.lh.Close()
			t.Fatalf("%s: attach: %v", p.name, err)
		}
		f.peers = append(f.peers, p)
		if i < 0 {
			f.agg = p
		} else {
			f.trainers = append(f.trainers, p)
			f.members = append(f.members, p.id)
		}
	}
	slices.Sort(f.members)
	f.nw.Start()

	all := append([]PeerID{f.agg.id}, f.members...)
	aggID := f.agg.id
	for _, p := range f.peers {
		newest := new(atomic.Uint64)
		err := p.host.Join(p2p.Federation{ID: simFedID, Members: all, Validate: func(from string, b []byte) error {
			return validateSimAnnouncement(aggID, from, b, newest)
		}})
		if err != nil {
			t.Fatalf("%s: join: %v", p.name, err)
		}
	}
	for i, p := range f.trainers {
		f.edges = append(f.edges, [2]*simPeer{p, f.agg})
		for d := 1; d <= o.ring && d < len(f.trainers); d++ {
			f.edges = append(f.edges, [2]*simPeer{p, f.trainers[(i+d)%len(f.trainers)]})
		}
	}
	for _, e := range f.edges {
		f.connect(e[0], e[1])
	}
	// Announcements reach a peer once it knows the other side's topic
	// subscription: wait for that along the aggregator's edges.
	f.waitFor("topic subscriptions", 10*time.Second, func() bool {
		if len(f.agg.host.AnnouncePeers()) < len(f.trainers) {
			return false
		}
		for _, p := range f.trainers {
			if !slices.Contains(p.host.AnnouncePeers(), aggID) {
				return false
			}
		}
		return true
	})

	f.Cfg = Config{
		Federation:     simFedID,
		Aggregator:     aggID,
		Members:        slices.Clone(f.members),
		MinUpdates:     1,
		RoundTimeoutMs: 1500,
		RetryMs:        100,
		Seed:           1,
		MaxUpdateBytes: 64,
		MaxModelBytes:  64,
		NewAggregator:  func() (aggregate.Aggregator, error) { return &sumAgg{}, nil },
	}
	return f
}

// newSimHost is a go-libp2p host with QUIC over a simnet endpoint, wrapped
// so that netCut can partition the network (simlibp2p.QUICSimnet, with the
// endpoint wrapped).
func newSimHost(nw *simnet.Simnet, cut *netCut, ip net.IP, key crypto.PrivKey) (host.Host, error) {
	link := simnet.NodeBiDiLinkSettings{
		Downlink: simnet.LinkSettings{BitsPerSecond: 100_000_000},
		Uplink:   simnet.LinkSettings{BitsPerSecond: 100_000_000},
	}
	reuse := libp2p.QUICReuse(
		func(l fx.Lifecycle, srk quic.StatelessResetKey, tk quic.TokenGeneratorKey, opts ...quicreuse.Option) (*quicreuse.ConnManager, error) {
			cm, err := quicreuse.NewConnManager(srk, tk, opts...)
			if err != nil {
				return nil, err
			}
			// A conn manager passed in is not closed by the host.
			l.Append(fx.StopHook(cm.Close))
			return cm, nil
		},
		quicreuse.OverrideSourceIPSelector(func() (quicreuse.SourceIPSelector, error) { return fixedSourceIP(ip), nil }),
		quicreuse.OverrideListenUDP(func(_ string, a *net.UDPAddr) (net.PacketConn, error) {
			return &cutConn{SimConn: nw.NewEndpoint(a, link), cut: cut, self: a.IP}, nil
		}),
	)
	return libp2p.New(
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(fmt.Sprintf("/ip4/%s/udp/8000/quic-v1", ip)),
		libp2p.Transport(libp2pquic.NewTransport),
		reuse,
		// Identify's address discovery stalls synctest (x/simlibp2p).
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		// The dials refused during a partition must not mark UDP as a
		// black hole.
		libp2p.UDPBlackHoleSuccessCounter(nil),
		libp2p.IPv6BlackHoleSuccessCounter(nil),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.UserAgent("fedrank/libp2p-test"),
	)
}

type fixedSourceIP net.IP

func (f fixedSourceIP) PreferredSourceIPForDestination(*net.UDPAddr) (net.IP, error) {
	return net.IP(f), nil
}

// netCut partitions the simulated network in two: the peers whose IPs are
// cut off, and everyone else. A packet across fails to send with "no route
// to host", as when a link is down: QUIC closes the connection that sent it,
// and a dial across fails at once (mocknet's UnlinkPeers, for QUIC).
type netCut struct {
	mu  sync.Mutex
	off map[string]bool
}

func (c *netCut) set(ips []net.IP) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off = map[string]bool{}
	for _, ip := range ips {
		c.off[ip.String()] = true
	}
}

func (c *netCut) blocked(a, b net.IP) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.off) > 0 && c.off[a.String()] != c.off[b.String()]
}

// cutConn is a simnet endpoint that refuses to send across the cut.
type cutConn struct {
	*simnet.SimConn
	cut  *netCut
	self net.IP
}

func (c *cutConn) WriteTo(b []byte, to net.Addr) (int, error) {
	if u, ok := to.(*net.UDPAddr); ok && c.cut.blocked(c.self, u.IP) {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Addr: to, Err: syscall.EHOSTUNREACH}
	}
	return c.SimConn.WriteTo(b, to)
}

// validateSimAnnouncement is the daemon's announcement check
// (daemon/run.go validateAnnouncement) for the simulated federation.
func validateSimAnnouncement(aggregator, from string, b []byte, newest *atomic.Uint64) error {
	err := CheckAnnouncement(simFedID, aggregator, from, b, p2p.DefaultMaxAnnounceBytes, newest)
	if errors.Is(err, ErrStaleAnnouncement) {
		return fmt.Errorf("%w: %v", p2p.ErrIgnore, err)
	}
	return err
}

// start opens a store and a runtime per peer, with f.Cfg, and runs them:
// the trainers first, then the aggregator, whose Start opens round 1.
func (f *simFed) start() {
	t := f.t
	t.Helper()
	for _, p := range f.peers {
		dir, inMem := "", storage.MemoryModeAvailable
		if !inMem {
			dir = t.TempDir() // 32-bit: no in-memory stores
		}
		st, err := storage.Open(dir, storage.Options{InMemory: inMem, LowMemory: true, GCInterval: -1, Logger: p.logger("store")})
		if err != nil {
			t.Fatalf("%s: store: %v", p.name, err)
		}
		p.store = st
		mc := f.Cfg
		mc.Sign, mc.Verify = p.key.Sign, p2p.Verify
		rc := RuntimeConfig{Store: st, Transport: p.host, Logger: p.logger("node"), SendTimeout: 5 * time.Second}
		if p == f.agg {
			mc = aggConfig(mc)
			mc.ID, mc.Aggregator, mc.InitialModel = p.id, p.id, enc(100)
		} else {
			mc = trainerConfig(mc, p.id)
			rc.Train = f.trainFunc(p.idx)
		}
		rc.Machine = mc
		if p.rt, err = NewRuntime(rc); err != nil {
			t.Fatalf("%s: runtime: %v", p.name, err)
		}
	}
	for _, p := range append(slices.Clone(f.trainers), f.agg) {
		go func() {
			// The daemon's pump: every message from a member goes to the runtime.
			for m := range p.host.Inbound() {
				p.rt.Deliver(f.ctx, m.From, m.Data)
			}
		}()
		p.runErr = make(chan error, 1)
		go func() { p.runErr <- p.rt.Run(f.ctx) }()
	}
}

// trainFunc is trainer i's TrainFunc: it checks the model, takes
// opts.trainTime and returns simPayload.
func (f *simFed) trainFunc(i int) TrainFunc {
	return func(r uint64, model []byte) ([]byte, int64, error) {
		if _, err := dec(model); err != nil {
			return nil, 0, err
		}
		if f.opts.trainTime != nil {
			time.Sleep(f.opts.trainTime(i, r))
		}
		if f.opts.beforeUpdate != nil {
			f.opts.beforeUpdate(i, r)
		}
		return enc(simPayload(i, r)), 10, nil
	}
}

// connect dials b from a with the daemon's Connect (which waits for identify).
func (f *simFed) connect(a, b *simPeer) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	if err := a.host.Connect(ctx, b.host.Addrs()); err != nil {
		f.t.Fatalf("connect %s -> %s: %v", a.name, b.name, err)
	}
}

// partition cuts side off from the other peers: the connections across are
// closed at once and nothing crosses until heal.
func (f *simFed) partition(side []*simPeer) {
	ips := make([]net.IP, len(side))
	for i, p := range side {
		ips[i] = p.ip
	}
	f.cut.set(ips)
	for _, a := range side {
		for _, b := range f.peers {
			if !slices.Contains(side, b) {
				_ = a.lh.Network().ClosePeer(b.lh.ID())
				_ = b.lh.Network().ClosePeer(a.lh.ID())
			}
		}
	}
}

// heal lifts the partition of side and reconnects the edges it cut, as the
// daemon's bootstrap loop does: each trainer dials the aggregator and its
// neighbours again. The dial backoffs the failed dials left are cleared
// first (the link is back; a daemon would wait them out).
func (f *simFed) heal(side []*simPeer) {
	f.t.Helper()
	f.cut.set(nil)
	for _, a := range side {
		for _, b := range f.peers {
			if slices.Contains(side, b) {
				continue
			}
			for _, x := range [][2]*simPeer{{a, b}, {b, a}} {
				if sw, ok := x[0].lh.Network().(*swarm.Swarm); ok {
					sw.Backoff().Clear(x[1].lh.ID())
				}
			}
		}
	}
	for _, e := range f.edges {
		if slices.Contains(side, e[0]) != slices.Contains(side, e[1]) {
			f.connect(e[0], e[1])
		}
	}
}

// waitFor polls cond every 5 ms of virtual time until it holds, or fails
// the test after within (virtual) time.
func (f *simFed) waitFor(what string, within time.Duration, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out after %v (virtual) waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hasResult reports whether p's store holds round r's result.
func (p *simPeer) hasResult(r uint64) bool {
	_, err := p.store.Result(r)
	return err == nil
}

// waitDone waits until every peer is done and holds the last round's result.
func (f *simFed) waitDone(rounds uint64, within time.Duration) {
	f.t.Helper()
	f.waitFor(fmt.Sprintf("every peer done with round %d", rounds), within, func() bool {
		for _, p := range f.peers {
			if !p.rt.Status().Done || !p.hasResult(rounds) {
				return false
			}
		}
		return true
	})
}

// checkResults checks the aggregator's results of rounds 1..rounds against
// the selections and the sum aggregator's arithmetic, and every store's
// last result against the aggregator's; it returns the aggregator's results
// (index r-1 for round r).
func (f *simFed) checkResults(rounds uint64) []storage.Result {
	t := f.t
	t.Helper()
	idx := map[PeerID]int{}
	for _, p := range f.trainers {
		idx[p.id] = p.idx
	}
	var out []storage.Result
	value := int64(100)
	prevHash := Hash(enc(100))
	for r := uint64(1); r <= rounds; r++ {
		res, err := f.agg.store.Result(r)
		if err != nil {
			t.Fatalf("aggregator's round %d: %v", r, err)
		}
		out = append(out, res)
		if want := SelectUniform(r, f.members, f.Cfg.PerRound, f.Cfg.Seed); !slices.Equal(res.Selected, want) {
			t.Errorf("round %d selected %v, want %v", r, f.names(res.Selected), f.names(want))
		}
		if res.Accepted != len(res.AcceptedPeers) {
			t.Errorf("round %d: accepted %d, accepted peers %v", r, res.Accepted, f.names(res.AcceptedPeers))
		}
		seen := map[PeerID]bool{}
		var hashes [][]byte
		sum := int64(0)
		for _, p := range res.AcceptedPeers {
			if seen[p] || !slices.Contains(res.Selected, p) {
				t.Errorf("round %d: accepted %s twice or unselected", r, f.name(p))
			}
			seen[p] = true
			v := simPayload(idx[p], r)
			sum += v
			hashes = append(hashes, Hash(enc(v)))
		}
		if res.Advanced {
			value += sum
			if !slices.EqualFunc(res.UpdateHashes, hashes, slices.Equal) {
				t.Errorf("round %d: update hashes are not those of the accepted peers' payloads", r)
			}
		} else if len(res.UpdateHashes) != 0 || !slices.Equal(res.ModelHash, prevHash) {
			t.Errorf("round %d did not advance but changed the model: %+v", r, res)
		}
		m, err := f.agg.store.Model(res.ModelHash)
		if err != nil {
			t.Fatalf("round %d model: %v", r, err)
		}
		if v, err := dec(m); err != nil || v != value {
			t.Errorf("round %d model %d (%v), want %d: 100 plus the accepted updates so far", r, v, err, value)
		}
		prevHash = res.ModelHash
	}
	last := out[rounds-1]
	for _, p := range f.trainers {
		got, err := p.store.Result(rounds)
		if err != nil {
			t.Errorf("%s: round %d: %v", p.name, rounds, err)
			continue
		}
		if !slices.Equal(got.ModelHash, last.ModelHash) || !slices.EqualFunc(got.UpdateHashes, last.UpdateHashes, slices.Equal) {
			t.Errorf("%s: round %d result %x %x, aggregator's %x %x", p.name, rounds,
				got.ModelHash, got.UpdateHashes, last.ModelHash, last.UpdateHashes)
		}
		if s := p.rt.Status(); s.Error != "" {
			t.Errorf("%s: runtime error %s", p.name, s.Error)
		}
	}
	return out
}

func (f *simFed) byID(id PeerID) *simPeer {
	for _, p := range f.peers {
		if p.id == id {
			return p
		}
	}
	return nil
}

func (f *simFed) name(id PeerID) string {
	if p := f.byID(id); p != nil {
		return p.name
	}
	return id
}

func (f *simFed) names(ids []PeerID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = f.name(id)
	}
	slices.Sort(out)
	return out
}

// close stops the runtimes, the services, the hosts, the stores and the
// network, in that order; the bubble then checks that nothing is left.
func (f *simFed) close() {
	f.cancel()
	for _, p := range f.peers {
		if p.runErr == nil {
			continue
		}
		if err := <-p.runErr; err != nil {
			f.t.Errorf("%s: runtime: %v", p.name, err)
		}
	}
	for _, p := range f.peers {
		_ = p.host.Close()
	}
	for _, p := range f.peers {
		_ = p.lh.Close()
		if p.store != nil {
			_ = p.store.Close()
		}
	}
	f.nw.Close()
}

// logger is p's logger for component: it counts messages (logCounts) and,
// with FEDRANK_LIBP2P_TEST_LOG set, prints them.
func (p *simPeer) logger(component string) *slog.Logger {
	var next slog.Handler = slog.DiscardHandler
	if os.Getenv(logSimEnv) != "" {
		next = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	return slog.New(countingHandler{p.logs, next}).With("peer", p.name, "component", component)
}

// logCounts counts log records by message.
type logCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *logCounts) count(msg string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[msg]
}

type countingHandler struct {
	c    *logCounts
	next slog.Handler
}

// Enabled: Info and above are counted; Debug only goes to next.
func (h countingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		h.c.mu.Lock()
		h.c.n[r.Message]++
		h.c.mu.Unlock()
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.c, h.next.WithAttrs(as)}
}

func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.c, h.next.WithGroup(name)}
}
