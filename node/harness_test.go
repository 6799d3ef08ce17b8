package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/wire"
)

// sumAgg is a toy strategy: a model and a payload are little-endian int64s, and
// the new model is the old one plus the sum of the payloads.
type sumAgg struct {
	base, sum int64
	n         int
}

func enc(v int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(v)) }

func dec(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("want 8 bytes, got %d", len(b))
	}
	return int64(binary.LittleEndian.Uint64(b)), nil
}

func (a *sumAgg) Name() string { return "sum" }
func (a *sumAgg) Begin(_ uint64, global []byte) error {
	v, err := dec(global)
	a.base, a.sum, a.n = v, 0, 0
	return err
}
func (a *sumAgg) Add(u aggregate.Update) error {
	v, err := dec(u.Payload)
	if err != nil {
		return err
	}
	a.sum += v
	a.n++
	return nil
}
func (a *sumAgg) Len() int { return a.n }
func (a *sumAgg) Finalize() ([]byte, error) {
	if a.n == 0 {
		return nil, aggregate.ErrNoUpdates
	}
	return enc(a.base + a.sum), nil
}

const (
	fed  = "test-fed"
	aggr = "agg"
)

func peers(n int) []PeerID {
	out := make([]PeerID, n)
	for i := range out {
		out[i] = fmt.Sprintf("peer-%02d", i)
	}
	return out
}

func baseConfig(n int) Config {
	return Config{
		Federation:     fed,
		Aggregator:     aggr,
		Members:        peers(n),
		PerRound:       3,
		Quorum:         3,
		MinUpdates:     1,
		RoundTimeoutMs: 1000,
		Rounds:         2,
		Seed:           1,
		MaxUpdateBytes: 64,
		MaxModelBytes:  64,
		NewAggregator:  func() (aggregate.Aggregator, error) { return &sumAgg{}, nil },
		InitialModel:   enc(100),
	}
}

func aggConfig(cfg Config) Config {
	cfg.ID, cfg.Role = aggr, RoleAggregator
	return cfg
}

func trainerConfig(cfg Config, id PeerID) Config {
	cfg.ID, cfg.Role = id, RoleTrainer
	cfg.InitialModel = nil // trainers pull every model, round 1 included
	return cfg
}

type msgInFlight struct {
	from, to PeerID
	msg      *wire.Envelope
}

// cluster is a synchronous in-memory federation, after etcd raft's test network:
// nothing happens unless the test delivers messages, runs training or moves time.
type cluster struct {
	t        *testing.T
	now      int64
	cfg      Config
	m        map[PeerID]*Machine
	queue    []msgInFlight
	timers   map[PeerID]map[TimerID]int64
	trains   map[PeerID]Train
	closed   []RoundClosed
	results  []*wire.RoundResult
	done     map[PeerID]Done
	drop     func(f msgInFlight) bool            // nil: deliver everything
	payload  func(id PeerID, tr Train) TrainDone // nil: payload = index of the peer + 1
	sent     []msgInFlight                       // everything sent, for assertions
	finished bool
}

func newCluster(t *testing.T, cfg Config) *cluster {
	t.Helper()
	c := &cluster{t: t, cfg: cfg, m: map[PeerID]*Machine{}, timers: map[PeerID]map[TimerID]int64{},
		trains: map[PeerID]Train{}, done: map[PeerID]Done{}}
	a, err := New(aggConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	c.m[aggr] = a
	for _, p := range cfg.Members {
		tm, err := New(trainerConfig(cfg, p))
		if err != nil {
			t.Fatal(err)
		}
		c.m[p] = tm
	}
	return c
}

func (c *cluster) step(id PeerID, ev Event) {
	c.t.Helper()
	c.apply(id, c.m[id].Step(c.now, ev))
}

func (c *cluster) apply(id PeerID, acts []Action) {
	c.t.Helper()
	for _, a := range acts {
		switch a := a.(type) {
		case Send:
			c.enqueue(id, a.To, a.Msg)
		case Broadcast:
			for _, p := range c.cfg.Members {
				c.enqueue(id, p, a.Msg)
			}
		case SetTimer:
			if c.timers[id] == nil {
				c.timers[id] = map[TimerID]int64{}
			}
			c.timers[id][a.ID] = a.AtMs
		case CancelTimer:
			delete(c.timers[id], a.ID)
		case Train:
			c.trains[id] = a
		case RoundClosed:
			c.closed = append(c.closed, a)
		case Persist, Silent:
		case Done:
			c.done[id] = a
			if id == aggr {
				c.finished = true
			}
		default:
			c.t.Fatalf("unknown action %T", a)
		}
	}
}

// enqueue sends through the real codec, as drivers do.
func (c *cluster) enqueue(from, to PeerID, e *wire.Envelope) {
	c.t.Helper()
	b, err := wire.Marshal(e)
	if err != nil {
		c.t.Fatal(err)
	}
	d, err := wire.Unmarshal(b, 1<<20)
	if err != nil {
		c.t.Fatal(err)
	}
	f := msgInFlight{from, to, d}
	c.sent = append(c.sent, f)
	if rr := d.GetRoundResult(); rr != nil && from == aggr && to == c.cfg.Members[0] {
		c.results = append(c.results, rr)
	}
	c.queue = append(c.queue, f)
}

// stabilize delivers messages and runs training until nothing is left to do.
func (c *cluster) stabilize() {
	c.t.Helper()
	for len(c.queue) > 0 || len(c.trains) > 0 {
		for len(c.queue) > 0 {
			f := c.queue[0]
			c.queue = c.queue[1:]
			if c.drop != nil && c.drop(f) {
				continue
			}
			c.step(f.to, Recv{From: f.from, Msg: f.msg})
		}
		ids := make([]PeerID, 0, len(c.trains))
		for id := range c.trains {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			tr := c.trains[id]
			delete(c.trains, id)
			c.step(id, c.trainDone(id, tr))
		}
	}
}

func (c *cluster) trainDone(id PeerID, tr Train) TrainDone {
	if c.payload != nil {
		return c.payload(id, tr)
	}
	return TrainDone{Round: tr.Round, ModelHash: tr.ModelHash, Payload: enc(int64(slices.Index(c.cfg.Members, id) + 1)), Samples: 10}
}

// advance moves time forward by ms, firing every timer that falls due on the
// way at its own time (stabilizing after each), then stabilizes.
func (c *cluster) advance(ms int64) {
	c.t.Helper()
	end := c.now + ms
	for {
		id, tid, at, found := nextTimer(c.timers, end)
		if !found {
			break
		}
		c.now = max(c.now, at)
		delete(c.timers[id], tid)
		c.step(id, TimerFired{ID: tid})
		c.stabilize()
	}
	c.now = end
	c.stabilize()
}

func (c *cluster) start() {
	c.t.Helper()
	c.step(aggr, Start{})
	c.stabilize()
}

func modelValue(t *testing.T, b []byte) int64 {
	t.Helper()
	v, err := dec(b)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func acksTo(sent []msgInFlight, to PeerID) []*wire.UpdateAck {
	var out []*wire.UpdateAck
	for _, f := range sent {
		if ack := f.msg.GetUpdateAck(); ack != nil && f.to == to {
			out = append(out, ack)
		}
	}
	return out
}

var errTrain = errors.New("training failed")

// nextTimer finds the earliest timer due by end: earliest first, then by
// peer, then by timer name, so that test runs replay exactly.
func nextTimer(timers map[PeerID]map[TimerID]int64, end int64) (id PeerID, tid TimerID, at int64, found bool) {
	for p, ts := range timers {
		for t, a := range ts {
			if a > end {
				continue
			}
			if !found || a < at || (a == at && (p < id || (p == id && t.String() < tid.String()))) {
				found, id, tid, at = true, p, t, a
			}
		}
	}
	return id, tid, at, found
}
