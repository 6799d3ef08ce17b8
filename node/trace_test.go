package node

import (
	"flag"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/internal/tracetest"
	"github.com/fedrank/fedrank/storage"
	"github.com/fedrank/fedrank/wire"
)

// Interaction traces, after etcd raft's: each file in testdata/ is a script of
// commands whose printed trace is the expected output. Nothing happens unless a
// command says so. Rewrite the expected output after a deliberate change with
//
//	go test ./node/ -run TestTraces -rewrite
//
// and review the diff. Commands:
//
//	federation peers=N per-round=K quorum=Q min-updates=M rounds=R timeout=MS retry=MS seed=S
//	           [chunk=BYTES] [silence=MS]
//	start                      the aggregator opens round 1
//	start-trainers             Start every trainer (arms their silence timers)
//	crash PEER                 PEER loses its memory (machine, timers, training);
//	                           messages to it are lost until it restarts
//	restart PEER               Restore PEER from what it persisted, then Start it
//	deliver [drop=(a,b)] [kinds=(update,...)]
//	                           deliver the messages in flight now (messages they
//	                           cause wait for the next deliver); drop= loses those
//	                           to or from the listed peers, kinds= delivers only
//	                           those kinds (the rest stay in flight)
//	train [garbage=(a,b)] [fail=(a)]
//	                           finish every training in progress; payload = peer
//	                           index + 1, "garbage" bytes, or an error
//	tick MS                    advance the clock by MS and fire the timers due
//	stabilize                  deliver and train until nothing is left
//	forge-model PEER           put first in flight a ModelResponse from the
//	                           aggregator to PEER claiming the current model's
//	                           hash with other bytes
//	status                     print every machine's state
var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of the trace tests")

func TestTraces(t *testing.T) {
	tracetest.RunDir(t, *rewrite, func(t *testing.T) func(string) string {
		env := &traceEnv{t: t}
		return func(cmd string) string {
			env.out.Reset()
			env.run(cmd)
			return env.out.String()
		}
	})
}

type traceEnv struct {
	t      *testing.T
	out    strings.Builder
	now    int64
	ids    []PeerID // aggregator first
	m      map[PeerID]*Machine
	queue  []msgInFlight
	timers map[PeerID]map[TimerID]int64
	trains map[PeerID]Train
	cfgs   map[PeerID]Config
	disks  map[PeerID]*memDisk
	down   map[PeerID]bool
	// crashAtCommit names a peer that crashes instead of persisting a Commit.
	crashAtCommit PeerID
}

// memDisk is what a peer persisted, applied as storage.Store applies it.
type memDisk struct {
	open    *storage.OpenRound
	last    *storage.Result
	updates []storage.Update
	models  map[string][]byte
	trainer *storage.TrainerRound
}

func (d *memDisk) model(h []byte) []byte { return d.models[string(h)] }

// persist applies p to id's disk and describes it.
func (e *traceEnv) persist(id PeerID, p Persist) string {
	d := e.disks[id]
	switch {
	case p.Open != nil:
		o := *p.Open
		d.open = &o
		return fmt.Sprintf("open round %d model %s deadline %d", o.Round, short(o.ModelHash), o.DeadlineMs)
	case p.Update != nil:
		d.updates = append(d.updates, *p.Update)
		return fmt.Sprintf("update round %d seq %d from %s payload %s", p.Update.Round, p.Update.Seq, p.Update.From, short(p.Update.Hash))
	case p.Commit != nil:
		c := p.Commit
		if c.Model != nil {
			d.models[string(Hash(c.Model))] = c.Model
		}
		r := c.Result
		d.last, d.open, d.updates = &r, c.Next, nil
		next := "none"
		if c.Next != nil {
			next = fmt.Sprintf("round %d deadline %d", c.Next.Round, c.Next.DeadlineMs)
		}
		return fmt.Sprintf("commit round %d model %s updates %d rejected %v; open %s", r.Round, short(r.ModelHash), len(r.UpdateHashes), r.Rejected, next)
	case p.Trainer != nil:
		tr := *p.Trainer
		d.trainer = &tr
		pending := "-"
		if tr.Pending != nil {
			pending = short(tr.Pending.Hash)
		}
		return fmt.Sprintf("trainer round %d selected=%v pending %s acked=%v", tr.Round, tr.Selected, pending, tr.Acked)
	case p.Result != nil:
		return fmt.Sprintf("result round %d model %s", p.Result.Round, short(p.Result.ModelHash))
	case p.Model != nil:
		d.models[string(Hash(p.Model))] = p.Model
		return fmt.Sprintf("model %s", short(Hash(p.Model)))
	}
	e.t.Fatalf("%s: empty Persist", id)
	return ""
}

// recovered is what Restore gets from id's disk.
func (e *traceEnv) recovered(id PeerID) Recovered {
	d := e.disks[id]
	rec := Recovered{Open: d.open, Last: d.last, Updates: d.updates, Trainer: d.trainer}
	switch {
	case d.open != nil:
		rec.Model, rec.PrevModel = d.model(d.open.ModelHash), d.model(d.open.PrevModelHash)
	case d.last != nil:
		rec.Model = d.model(d.last.ModelHash)
	}
	if id == aggr && rec.Model == nil && rec.Open != nil && len(rec.Open.PrevModelHash) == 0 {
		rec.Model = e.cfgs[id].InitialModel // round 1's model is the genesis model
	}
	if d.trainer != nil {
		rec.TrainerModel = d.model(d.trainer.ModelHash)
	}
	return rec
}

func (e *traceEnv) printf(format string, args ...any) { fmt.Fprintf(&e.out, format, args...) }

func (e *traceEnv) run(cmd string) {
	fields := strings.Fields(cmd)
	args := map[string]string{}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		args[k] = v
	}
	num := func(k string, def int64) int64 {
		v, ok := args[k]
		if !ok {
			return def
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			e.t.Fatalf("%s: bad %s", cmd, k)
		}
		return n
	}
	list := func(k string) []string {
		v := strings.Trim(args[k], "()")
		if v == "" {
			return nil
		}
		return strings.Split(v, ",")
	}
	switch fields[0] {
	case "federation":
		n := int(num("peers", 4))
		cfg := Config{
			Federation: fed, Aggregator: aggr, Members: peers(n),
			PerRound: int(num("per-round", 2)), Quorum: int(num("quorum", 2)), MinUpdates: int(num("min-updates", 1)),
			RoundTimeoutMs: num("timeout", 1000), RetryMs: num("retry", 0), Rounds: uint64(num("rounds", 1)),
			Seed: uint64(num("seed", 1)), MaxUpdateBytes: 64, MaxModelBytes: 64,
			NewAggregator: func() (aggregate.Aggregator, error) { return &sumAgg{}, nil },
			InitialModel:  enc(100),
		}
		cfg.ChunkBytes = int(num("chunk", 0))
		cfg.SilenceMs = num("silence", 0)
		e.m, e.timers, e.trains, e.queue, e.now = map[PeerID]*Machine{}, map[PeerID]map[TimerID]int64{}, map[PeerID]Train{}, nil, 0
		e.cfgs, e.disks, e.down = map[PeerID]Config{}, map[PeerID]*memDisk{}, map[PeerID]bool{}
		e.ids = append([]PeerID{aggr}, cfg.Members...)
		for _, id := range e.ids {
			c := trainerConfig(cfg, id)
			if id == aggr {
				c = aggConfig(cfg)
			}
			m, err := New(c)
			if err != nil {
				e.t.Fatal(err)
			}
			e.m[id], e.cfgs[id], e.disks[id] = m, c, &memDisk{models: map[string][]byte{}}
		}
		e.printf("%d trainers, model %s = %d\n", n, short(Hash(cfg.InitialModel)), 100)
	case "start":
		e.step(aggr, Start{}, "")
	case "start-trainers":
		for _, id := range e.ids[1:] {
			e.step(id, Start{}, fmt.Sprintf("%s: start", id))
		}
	case "crash":
		// The peer loses its memory: machine, timers, training in progress.
		id := fields[1]
		e.down[id] = true
		delete(e.timers, id)
		delete(e.trains, id)
		e.printf("%s crashed\n", id)
	case "restart":
		id := fields[1]
		m, err := Restore(e.cfgs[id], e.recovered(id))
		if err != nil {
			e.printf("%s: restore: %v\n", id, err)
			return
		}
		e.m[id], e.down[id] = m, false
		e.step(id, Start{}, fmt.Sprintf("%s restarted from its store", id))
	case "deliver":
		e.deliver(list("drop"), list("kinds"))
	case "deliver-crash-at-commit":
		// Deliver; the peer named crashes in the step that would commit a
		// round, after the actions before the commit and before the rest.
		e.crashAtCommit = fields[1]
		e.deliver(nil, nil)
		e.crashAtCommit = ""
	case "train":
		e.train(list("garbage"), list("fail"))
	case "tick":
		ms, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			e.t.Fatalf("%s: %v", cmd, err)
		}
		e.tick(ms)
	case "stabilize":
		for i := 0; len(e.queue) > 0 || len(e.trains) > 0; i++ {
			if i > 100 {
				e.t.Fatal("stabilize: no end")
			}
			e.deliver(nil, nil)
			e.train(nil, nil)
		}
	case "forge-model":
		h := e.m[aggr].Status().ModelHash
		forged := &wire.Envelope{Federation: fed, Body: &wire.Envelope_ModelResponse{ModelResponse: &wire.ModelResponse{ModelHash: h, Model: enc(666)}}}
		e.queue = append([]msgInFlight{{aggr, fields[1], forged}}, e.queue...)
	case "status":
		for _, id := range e.ids {
			s := e.m[id].Status()
			e.printf("%s: round %d model %s done=%v", id, s.Round, short(s.ModelHash), s.Done)
			if id == aggr {
				e.printf(" selected=%v accepted=%d rejected=%d", s.Selected, s.Accepted, s.Rejected)
			}
			v := reflect.ValueOf(s.Counters)
			for i := range v.NumField() {
				if n := v.Field(i).Int(); n != 0 {
					e.printf(" %s=%d", strings.ToLower(v.Type().Field(i).Name), n)
				}
			}
			e.printf("\n")
		}
	default:
		e.t.Fatalf("unknown command %q", cmd)
	}
}

// tick advances the clock by ms, firing the timers that fall due on the way,
// each at its own time.
func (e *traceEnv) tick(ms int64) {
	end := e.now + ms
	for {
		id, tid, at, found := nextTimer(e.timers, end)
		if !found {
			break
		}
		e.now = max(e.now, at)
		delete(e.timers[id], tid)
		e.step(id, TimerFired{ID: tid}, fmt.Sprintf("%d %s: timer %s", e.now, id, tid))
	}
	e.now = end
	e.printf("now %d\n", e.now)
}

func (e *traceEnv) deliver(drop, kinds []string) {
	batch := e.queue
	e.queue = nil
	for _, f := range batch {
		if len(kinds) > 0 && !slices.Contains(kinds, wire.Kind(f.msg)) {
			e.queue = append(e.queue, f)
			continue
		}
		if slices.Contains(drop, f.from) || slices.Contains(drop, f.to) || e.down[f.to] {
			e.printf("%s -x %s: %s\n", f.from, f.to, describe(f.msg))
			continue
		}
		e.step(f.to, Recv{From: f.from, Msg: f.msg}, fmt.Sprintf("%s <- %s: %s", f.to, f.from, describe(f.msg)))
	}
}

func (e *traceEnv) train(garbage, fail []string) {
	ids := make([]PeerID, 0, len(e.trains))
	for id := range e.trains {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		tr := e.trains[id]
		delete(e.trains, id)
		done := TrainDone{Round: tr.Round, ModelHash: tr.ModelHash, Samples: 10,
			Payload: enc(int64(slices.Index(e.ids, id)))} // peer index + 1
		switch {
		case slices.Contains(garbage, id):
			done.Payload = []byte("garbage")
		case slices.Contains(fail, id):
			done.Payload, done.Err = nil, errTrain
		}
		what := fmt.Sprintf("payload %x", done.Payload)
		if done.Err != nil {
			what = "error"
		}
		e.step(id, done, fmt.Sprintf("%s: trained round %d, %s", id, tr.Round, what))
	}
}

// step runs one event and prints the header (if any) and the actions.
func (e *traceEnv) step(id PeerID, ev Event, header string) {
	acts := e.m[id].Step(e.now, ev)
	indent := ""
	if header != "" {
		e.printf("%s\n", header)
		indent = "  "
	}
	for _, a := range acts {
		if p, ok := a.(Persist); ok && p.Commit != nil && id == e.crashAtCommit {
			e.down[id] = true
			delete(e.timers, id)
			delete(e.trains, id)
			e.printf("%s%s crashed before the commit of round %d\n", indent, id, p.Commit.Result.Round)
			return
		}
		e.printf("%s%s\n", indent, e.apply(id, a))
	}
}

func (e *traceEnv) apply(id PeerID, a Action) string {
	switch a := a.(type) {
	case Send:
		e.enqueue(id, a.To, a.Msg)
		return fmt.Sprintf("%s -> %s: %s", id, a.To, describe(a.Msg))
	case Broadcast:
		for _, p := range e.ids[1:] {
			e.enqueue(id, p, a.Msg)
		}
		return fmt.Sprintf("%s -> *: %s", id, describe(a.Msg))
	case SetTimer:
		if e.timers[id] == nil {
			e.timers[id] = map[TimerID]int64{}
		}
		e.timers[id][a.ID] = a.AtMs
		return fmt.Sprintf("%s: set timer %s at %d", id, a.ID, a.AtMs)
	case CancelTimer:
		delete(e.timers[id], a.ID)
		return fmt.Sprintf("%s: cancel timer %s", id, a.ID)
	case Train:
		e.trains[id] = a
		return fmt.Sprintf("%s: train round %d from %s", id, a.Round, short(a.ModelHash))
	case RoundClosed:
		v, _ := dec(a.Model)
		var rej []string
		for _, r := range a.Rejected {
			rej = append(rej, r.From+":"+string(r.Reason))
		}
		return fmt.Sprintf("%s: round %d closed (%s) advanced=%v model %s = %d accepted=%v rejected=%v",
			id, a.Round, a.Reason, a.Advanced, short(a.ModelHash), v, a.AcceptedPeers, rej)
	case Persist:
		return fmt.Sprintf("%s: persist %s", id, e.persist(id, a))
	case Silent:
		return fmt.Sprintf("%s: silent since %d", id, a.SinceMs)
	case Done:
		if a.Err != nil {
			return fmt.Sprintf("%s: done: %v", id, a.Err)
		}
		return fmt.Sprintf("%s: done", id)
	}
	e.t.Fatalf("unknown action %T", a)
	return ""
}

func (e *traceEnv) enqueue(from, to PeerID, m *wire.Envelope) {
	b, err := wire.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	d, err := wire.Unmarshal(b, 1<<20)
	if err != nil {
		e.t.Fatal(err)
	}
	e.queue = append(e.queue, msgInFlight{from, to, d})
}

func short(h []byte) string { return wire.ShortHash(h) }

func describe(m *wire.Envelope) string { return wire.Describe(m) }
