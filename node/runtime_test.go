package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/fedrank/fedrank/storage"
)

// memNet is an in-process Transport: Send and Broadcast hand the bytes to
// the receiving runtimes' Deliver, as the daemon's inbound loop does.
type memNet struct {
	mu   sync.Mutex
	rts  map[PeerID]*Runtime
	down map[PeerID]bool
}

type memPort struct {
	net  *memNet
	self PeerID
}

func (p memPort) Send(ctx context.Context, to PeerID, b []byte) error {
	p.net.mu.Lock()
	rt, down := p.net.rts[to], p.net.down[to]
	p.net.mu.Unlock()
	if rt == nil || down {
		return fmt.Errorf("%s is down", to)
	}
	rt.Deliver(ctx, p.self, b)
	return nil
}

func (p memPort) Broadcast(ctx context.Context, b []byte) error {
	p.net.mu.Lock()
	var to []PeerID
	for id := range p.net.rts {
		if id != p.self {
			to = append(to, id)
		}
	}
	p.net.mu.Unlock()
	for _, id := range to {
		p.Send(ctx, id, b)
	}
	return nil
}

func (n *memNet) set(id PeerID, rt *Runtime, down bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.rts[id], n.down[id] = rt, down
}

// runtimeCluster runs an aggregator and trainers as Runtimes over memNet,
// each with a real Badger store.
type runtimeCluster struct {
	t      *testing.T
	cfg    Config
	net    *memNet
	stores map[PeerID]storage.Store
	dirs   map[PeerID]string
	cancel map[PeerID]context.CancelFunc
	done   map[PeerID]chan error
	train  TrainFunc
	keys   map[PeerID]ed25519.PrivateKey
}

func newRuntimeCluster(t *testing.T, cfg Config, train func(self PeerID) TrainFunc) *runtimeCluster {
	c := &runtimeCluster{t: t, cfg: cfg, net: &memNet{rts: map[PeerID]*Runtime{}, down: map[PeerID]bool{}},
		stores: map[PeerID]storage.Store{}, dirs: map[PeerID]string{}, cancel: map[PeerID]context.CancelFunc{}, done: map[PeerID]chan error{},
		keys: map[PeerID]ed25519.PrivateKey{}}
	pub := map[PeerID]ed25519.PublicKey{}
	for i, id := range append([]PeerID{aggr}, cfg.Members...) {
		seed := make([]byte, ed25519.SeedSize)
		seed[0] = byte(i + 1)
		c.keys[id] = ed25519.NewKeyFromSeed(seed)
		pub[id] = c.keys[id].Public().(ed25519.PublicKey)
	}
	c.cfg.Verify = func(from PeerID, msg, sig []byte) error {
		if !ed25519.Verify(pub[from], msg, sig) {
			return errors.New("bad signature")
		}
		return nil
	}
	for _, id := range append([]PeerID{aggr}, cfg.Members...) {
		c.dirs[id] = t.TempDir()
		c.reopen(id)
		var tf TrainFunc
		if id != aggr {
			tf = train(id)
		}
		c.start(id, tf)
	}
	// Registered after the t.TempDir calls: cleanups run last-in first-out,
	// and the stores must close before their directories go.
	c.t.Cleanup(func() {
		for id, cancel := range c.cancel {
			cancel()
			<-c.done[id]
		}
		for _, st := range c.stores {
			st.Close()
		}
	})
	return c
}

func (c *runtimeCluster) config(id PeerID) Config {
	mc := trainerConfig(c.cfg, id)
	if id == aggr {
		mc = aggConfig(c.cfg)
	}
	key := c.keys[id]
	mc.Sign = func(msg []byte) ([]byte, error) { return ed25519.Sign(key, msg), nil }
	return mc
}

func (c *runtimeCluster) start(id PeerID, tf TrainFunc) {
	c.t.Helper()
	rt, err := NewRuntime(RuntimeConfig{
		Machine: c.config(id), Store: c.stores[id], Transport: memPort{c.net, id}, Train: tf,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	c.cancel[id], c.done[id] = cancel, done
	c.net.set(id, rt, false)
	go func() { done <- rt.Run(ctx) }()
}

// reopen (re)opens id's store from its directory.
func (c *runtimeCluster) reopen(id PeerID) {
	c.t.Helper()
	if st := c.stores[id]; st != nil {
		if err := st.Close(); err != nil {
			c.t.Fatal(err)
		}
	}
	st, err := storage.Open(c.dirs[id], storage.Options{GCInterval: -1})
	if err != nil {
		c.t.Fatal(err)
	}
	c.stores[id] = st
}

// crash stops id's runtime: its memory is gone, its store stays.
func (c *runtimeCluster) crash(id PeerID) {
	c.net.set(id, nil, true)
	c.cancel[id]()
	if err := <-c.done[id]; err != nil {
		c.t.Fatalf("%s: %v", id, err)
	}
	delete(c.cancel, id)
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runtimeConfig() Config {
	cfg := baseConfig(4)
	cfg.PerRound, cfg.Quorum, cfg.MinUpdates, cfg.Rounds = 3, 3, 1, 3
	cfg.RoundTimeoutMs, cfg.RetryMs = 20_000, 100
	return cfg
}

func indexTrainer(self PeerID) TrainFunc {
	return func(round uint64, model []byte) ([]byte, int64, error) {
		var i int
		fmt.Sscanf(self, "peer-%d", &i)
		return enc(int64(i + 1)), 10, nil
	}
}

// TestRuntimeRunsRounds: real runtimes and stores run three rounds; every
// store ends with the same round-3 model hash, and the aggregator's result
// lists three signed updates per round.
func TestRuntimeRunsRounds(t *testing.T) {
	c := newRuntimeCluster(t, runtimeConfig(), indexTrainer)
	agg := c.stores[aggr]
	waitFor(t, "round 3 everywhere", func() bool {
		for _, st := range c.stores {
			if r, err := st.Result(3); err != nil || len(r.ModelHash) == 0 {
				return false
			}
		}
		return true
	})
	want, err := agg.Result(3)
	if err != nil {
		t.Fatal(err)
	}
	for id, st := range c.stores {
		got, _ := st.Result(3)
		if string(got.ModelHash) != string(want.ModelHash) {
			t.Errorf("%s: round 3 model %x, aggregator's %x", id, got.ModelHash, want.ModelHash)
		}
	}
	for r := uint64(1); r <= 3; r++ {
		res, err := agg.Result(r)
		if err != nil || len(res.UpdateHashes) != 3 || !res.Advanced {
			t.Fatalf("round %d: %+v, %v", r, res, err)
		}
	}
	m, err := agg.Model(want.ModelHash)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := dec(m); v <= 100 {
		t.Errorf("final model %d, want > 100 (the sum of three rounds of updates)", v)
	}
}

// TestRuntimeAggregatorRestart: the aggregator stops after accepting two of
// a round's three updates; restarted from its store it keeps both, takes the
// third and commits the round with the model the three updates give.
func TestRuntimeAggregatorRestart(t *testing.T) {
	cfg := runtimeConfig()
	cfg.Rounds = 1
	release := make(chan struct{})
	// Selection is deterministic: find the round's three peers first.
	sel := SelectUniform(1, cfg.Members, cfg.PerRound, cfg.Seed)
	held := sel[len(sel)-1]
	train := func(self PeerID) TrainFunc {
		f := indexTrainer(self)
		return func(round uint64, model []byte) ([]byte, int64, error) {
			if self == held {
				<-release
			}
			return f(round, model)
		}
	}
	c := newRuntimeCluster(t, cfg, train)
	agg := c.stores[aggr]
	waitFor(t, "two accepted updates", func() bool {
		u, err := agg.Updates(1)
		return err == nil && len(u) == 2
	})
	c.crash(aggr)
	c.reopen(aggr)
	agg = c.stores[aggr]
	c.start(aggr, nil)
	close(release)
	waitFor(t, "round 1 committed", func() bool {
		_, err := agg.Result(1)
		return err == nil
	})
	res, _ := agg.Result(1)
	if len(res.UpdateHashes) != 3 || res.Reason != "quorum" {
		t.Fatalf("round 1 after the restart: %+v", res)
	}
	m, _ := agg.Model(res.ModelHash)
	want := int64(100)
	for _, p := range sel {
		var i int
		fmt.Sscanf(p, "peer-%d", &i)
		want += int64(i + 1)
	}
	if v, _ := dec(m); v != want {
		t.Fatalf("model after the restart %d, want %d (100 + the three updates)", v, want)
	}
}
