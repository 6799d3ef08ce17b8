package node

import (
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
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
//	start                      the aggregator opens round 1
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
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no trace files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runTrace(t, f) })
	}
}

type traceCase struct {
	comments []string
	cmd      string
	want     string
}

func parseTrace(t *testing.T, path string) []traceCase {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var out []traceCase
	var cur traceCase
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case l == "":
		case strings.HasPrefix(l, "#"):
			cur.comments = append(cur.comments, l)
		default:
			cur.cmd = l
			if i+1 >= len(lines) || lines[i+1] != "----" {
				t.Fatalf("%s:%d: command without ---- line", path, i+1)
			}
			i += 2
			var want []string
			for ; i < len(lines) && lines[i] != ""; i++ {
				want = append(want, lines[i])
			}
			cur.want = strings.Join(want, "\n")
			out = append(out, cur)
			cur = traceCase{}
		}
	}
	return out
}

func runTrace(t *testing.T, path string) {
	cases := parseTrace(t, path)
	env := &traceEnv{t: t}
	var rewritten strings.Builder
	for _, c := range cases {
		env.out.Reset()
		env.run(c.cmd)
		got := strings.TrimRight(env.out.String(), "\n")
		if *rewrite {
			for _, l := range c.comments {
				rewritten.WriteString(l + "\n")
			}
			rewritten.WriteString(c.cmd + "\n----\n")
			if got != "" {
				rewritten.WriteString(got + "\n")
			}
			rewritten.WriteString("\n")
			continue
		}
		if got != c.want {
			t.Errorf("%s: %s\ngot:\n%s\nwant:\n%s", path, c.cmd, got, c.want)
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(rewritten.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
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
		e.m, e.timers, e.trains, e.queue, e.now = map[PeerID]*Machine{}, map[PeerID]map[TimerID]int64{}, map[PeerID]Train{}, nil, 0
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
			e.m[id] = m
		}
		e.printf("%d trainers, model %s = %d\n", n, short(Hash(cfg.InitialModel)), 100)
	case "start":
		e.step(aggr, Start{}, "")
	case "deliver":
		e.deliver(list("drop"), list("kinds"))
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
		if slices.Contains(drop, f.from) || slices.Contains(drop, f.to) {
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

func short(h []byte) string {
	if len(h) == 0 {
		return "-"
	}
	return hex.EncodeToString(h[:min(4, len(h))])
}

// describe prints a message on one line.
func describe(m *wire.Envelope) string {
	switch b := m.GetBody().(type) {
	case *wire.Envelope_RoundStart:
		r := b.RoundStart
		return fmt.Sprintf("round_start round=%d model=%s selected=%v deadline=%d", r.GetRound(), short(r.GetModelHash()), r.GetSelected(), r.GetDeadlineMs())
	case *wire.Envelope_ModelRequest:
		return fmt.Sprintf("model_request model=%s", short(b.ModelRequest.GetModelHash()))
	case *wire.Envelope_ModelResponse:
		r := b.ModelResponse
		return fmt.Sprintf("model_response model=%s bytes=%x", short(r.GetModelHash()), r.GetModel())
	case *wire.Envelope_Update:
		u := b.Update
		return fmt.Sprintf("update round=%d model=%s payload=%x samples=%d", u.GetRound(), short(u.GetModelHash()), u.GetPayload(), u.GetSamples())
	case *wire.Envelope_UpdateAck:
		a := b.UpdateAck
		if a.GetAccepted() {
			return fmt.Sprintf("update_ack round=%d accepted", a.GetRound())
		}
		return fmt.Sprintf("update_ack round=%d rejected %s", a.GetRound(), a.GetReason())
	case *wire.Envelope_RoundResult:
		r := b.RoundResult
		var hs []string
		for _, h := range r.GetUpdateHashes() {
			hs = append(hs, short(h))
		}
		return fmt.Sprintf("round_result round=%d model=%s updates=%v accepted=%d rejected=%d", r.GetRound(), short(r.GetModelHash()), hs, r.GetAccepted(), r.GetRejected())
	}
	return wire.Kind(m)
}
