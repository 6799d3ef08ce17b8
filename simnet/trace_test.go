package simnet

import (
	"container/heap"
	"context"
	"flag"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedrank/fedrank/internal/tracetest"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/wire"
)

// Golden traces of the simulator, after node's (and etcd raft's): each file
// in testdata/ is a script of commands whose printed trace is the expected
// output. The simulator runs on the fake task (fake_test.go: a model is an
// int64, the aggregate adds the payloads), on virtual time; nothing happens
// unless a command says so. Rewrite the expected output after a deliberate
// change with
//
//	go test ./simnet/ -run TestSimTraces -rewrite
//
// and review the diff. Peers are named by their index: 3 is peer-0003.
// Commands:
//
//	add-peers N [per-round=K] [quorum=Q] [rounds=R] [timeout=DUR] [net=NAME] [seed=S]
//	                         a new federation of N peers and an aggregator
//	                         (which persists to an in-memory Badger store)
//	start-round              the aggregator starts (opens round 1; later
//	                         rounds open when the one before closes)
//	deliver [drop=(a,b)]     run until every message now in flight has
//	                         arrived (everything due meanwhile happens too);
//	                         drop= loses those to or from the listed peers
//	train                    run until every training now in progress is done
//	tick DUR                 advance the clock by DUR (30s, 250ms), running
//	                         everything due
//	run-round                run until the open round closes
//	crash aggregator [after-update=N]
//	                         the aggregator crashes now (machine, timers gone;
//	                         its store stays; messages to it are lost), or
//	                         right after it persists the open round's N-th
//	                         update, before acknowledging it (as
//	                         --crash-aggregator does)
//	restart aggregator       it restarts from its store: node.Recover, node.Restore
//	partition (1,2) (3,4,5)  cut the groups apart (the aggregator is in the
//	                         first group unless a group names "agg")
//	heal                     end the partition
//	print-state              the aggregator, its store, the trainers, the cut
var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of the trace tests")

func TestSimTraces(t *testing.T) {
	tracetest.RunDir(t, *rewrite, func(t *testing.T) func(string) string {
		env := &simTraceEnv{t: t}
		t.Cleanup(env.close)
		return func(cmd string) string {
			env.out.Reset()
			if err := env.run(cmd); err != nil {
				fmt.Fprintf(&env.out, "error: %v\n", err)
			}
			return env.out.String()
		}
	})
}

type simTraceEnv struct {
	t   *testing.T
	out strings.Builder
	s   *sim
	ft  *fakeTask
}

func (e *simTraceEnv) close() {
	if e.s != nil {
		e.s.close()
		e.s = nil
	}
}

func (e *simTraceEnv) line(l string) { e.out.WriteString(l + "\n") }

var groupRE = regexp.MustCompile(`\(([^)]*)\)`)

func (e *simTraceEnv) run(cmd string) error {
	f := strings.Fields(cmd)
	args := map[string]string{}
	for _, a := range f[1:] {
		if k, v, ok := strings.Cut(a, "="); ok {
			args[k] = v
		}
	}
	if f[0] != "add-peers" && e.s == nil {
		return fmt.Errorf("no federation: add-peers first")
	}
	s := e.s
	switch f[0] {
	case "add-peers":
		return e.addPeers(f, args)
	case "start-round":
		if len(s.events) == 0 || s.events[0].kind != evStart {
			return fmt.Errorf("the aggregator has started already")
		}
		return s.next()
	case "deliver":
		drop, err := e.peers(args["drop"])
		if err != nil {
			return err
		}
		return e.runUntil(func(ev *event) bool { return ev.kind == evDeliver }, func(ev *event) bool {
			return drop[ev.to] || drop[ev.from]
		})
	case "train":
		return e.runUntil(func(ev *event) bool { return ev.kind == evTrainDone }, nil)
	case "tick":
		if len(f) != 2 {
			return fmt.Errorf("tick DURATION")
		}
		d, err := time.ParseDuration(f[1])
		if err != nil {
			return err
		}
		until := s.now + d.Nanoseconds()
		for len(s.events) > 0 && s.events[0].at <= until {
			if err := s.next(); err != nil {
				return err
			}
		}
		s.now = until
		e.line(fmt.Sprintf("now %s", s.at()))
		return nil
	case "run-round":
		r := s.cur.round
		for s.cur.round == r && !s.done {
			if len(s.events) == 0 {
				return fmt.Errorf("nothing left to run with round %d open", r)
			}
			if err := s.next(); err != nil {
				return err
			}
		}
		return nil
	case "crash":
		if len(f) < 2 || f[1] != "aggregator" {
			return fmt.Errorf("crash aggregator [after-update=N]")
		}
		if k, ok := args["after-update"]; ok {
			n, err := strconv.Atoi(k)
			if err != nil || n < 1 {
				return fmt.Errorf("after-update=%s: want a number from 1", k)
			}
			s.crashAfterUpdate = n
			e.line(fmt.Sprintf("the aggregator will crash right after persisting update %d of round %d", n, s.cur.round))
			return nil
		}
		s.crashAggregator(false)
		return nil
	case "restart":
		if len(f) != 2 || f[1] != "aggregator" {
			return fmt.Errorf("restart aggregator")
		}
		return s.restartAggregator()
	case "partition":
		return e.partition(cmd)
	case "heal":
		s.cut, s.manualCut = nil, false
		e.line("healed")
		return nil
	case "print-state":
		e.printState()
		return nil
	}
	return fmt.Errorf("unknown command %q", f[0])
}

func (e *simTraceEnv) addPeers(f []string, args map[string]string) error {
	if len(f) < 2 {
		return fmt.Errorf("add-peers N")
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return err
	}
	e.close()
	cfg := Config{Scenario: "fake", Peers: n, PerRound: min(3, n), Rounds: 2, Seed: 1,
		Aggregator: "sum", Net: "ideal", Quorum: 1, RoundTimeoutMs: 10_000, Workers: 2}
	for k, v := range args {
		switch k {
		case "per-round":
			cfg.PerRound, err = strconv.Atoi(v)
		case "rounds":
			cfg.Rounds, err = strconv.Atoi(v)
		case "quorum":
			cfg.Quorum, err = strconv.ParseFloat(v, 64)
		case "seed":
			cfg.Seed, err = strconv.ParseUint(v, 10, 64)
		case "net":
			cfg.Net = v
		case "timeout":
			var d time.Duration
			d, err = time.ParseDuration(v)
			cfg.RoundTimeoutMs = d.Milliseconds()
		default:
			return fmt.Errorf("add-peers: unknown setting %q", k)
		}
		if err != nil {
			return fmt.Errorf("add-peers %s: %v", k, err)
		}
	}
	e.ft = &fakeTask{clients: n}
	s, err := newSim(context.Background(), cfg, e.ft, nil, simOptions{trace: e.line, manualAggregator: true})
	if err != nil {
		return err
	}
	e.s = s
	m, _ := e.ft.InitialModel()
	e.line(fmt.Sprintf("%d peers, %d per round, quorum %d, %d rounds, deadline %dms; model %s = 0",
		n, cfg.PerRound, s.aggCfg.Quorum, cfg.Rounds, cfg.RoundTimeoutMs, wire.ShortHash(node.Hash(m))))
	return nil
}

// runUntil runs the simulation until every event now queued that match
// selects has been handled; those for which drop is true are lost instead.
func (e *simTraceEnv) runUntil(match, drop func(*event) bool) error {
	s := e.s
	waiting := map[*event]bool{}
	for _, ev := range s.events {
		if match(ev) {
			waiting[ev] = true
		}
	}
	for len(waiting) > 0 {
		ev := s.events[0]
		if waiting[ev] && drop != nil && drop(ev) {
			heap.Pop(&s.events)
			s.now = ev.at
			delete(waiting, ev)
			s.traceDrop(ev, "dropped")
			if ev.to == 0 {
				// Keep the lost-update accounting as the network would.
				if msg, err := wire.Unmarshal(ev.data, s.maxMsg); err == nil {
					if tr := s.updateTrack(ev.from-1, msg.GetUpdate()); tr != nil {
						tr.inFlight--
					}
				}
			}
			continue
		}
		delete(waiting, ev)
		if err := s.next(); err != nil {
			return err
		}
	}
	return nil
}

func (e *simTraceEnv) peers(list string) (map[int]bool, error) {
	out := map[int]bool{}
	list = strings.Trim(list, "()")
	if list == "" {
		return out, nil
	}
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimSpace(t)
		if t == "agg" || t == "aggregator" {
			out[0] = true
			continue
		}
		p, err := parsePeer(t, e.s.cfg.Peers)
		if err != nil {
			return nil, err
		}
		out[1+p] = true
	}
	return out, nil
}

func (e *simTraceEnv) partition(cmd string) error {
	s := e.s
	groups := groupRE.FindAllStringSubmatch(cmd, -1)
	if len(groups) < 2 {
		return fmt.Errorf("partition (a,b) (c,d) ...: at least two groups")
	}
	group := make([]int, len(s.ids)+1) // by node index; 0 = the first group
	aggGroup := 0
	for g, m := range groups {
		members, err := e.peers(m[1])
		if err != nil {
			return err
		}
		for i := range members {
			if i == 0 {
				aggGroup = g
			}
			group[i] = g
		}
	}
	s.cut, s.manualCut = make([]bool, len(s.ids)), true
	var cut []string
	for p := range s.ids {
		if group[1+p] != aggGroup {
			s.cut[p] = true
			cut = append(cut, s.ids[p])
		}
	}
	s.cur.faults |= faultPartition
	e.line("cut off from the aggregator: " + strings.Join(cut, " "))
	return nil
}

func (e *simTraceEnv) printState() {
	s := e.s
	if s.done {
		e.line(fmt.Sprintf("now %s, federation done", s.at()))
	} else {
		e.line(fmt.Sprintf("now %s, round %d open", s.at(), s.cur.round))
	}
	if a := s.nodes[0]; a.m == nil {
		e.line("aggregator: down")
	} else {
		st := a.m.Status()
		e.line(fmt.Sprintf("aggregator: round %d model %s selected [%s] accepted %d rejected %d done=%v",
			st.Round, e.model(st.ModelHash), strings.Join(st.Selected, " "), st.Accepted, st.Rejected, st.Done))
	}
	store := "store: "
	if o, ok, err := s.store.OpenRound(); err != nil {
		store += err.Error()
	} else if ok {
		us, _ := s.store.Updates(o.Round)
		var from []string
		for _, u := range us {
			from = append(from, u.From)
		}
		store += fmt.Sprintf("open round %d model %s, updates [%s]", o.Round, wire.ShortHash(o.ModelHash), strings.Join(from, " "))
	} else {
		store += "no open round"
	}
	if l, err := s.store.LastResult(); err == nil {
		store += fmt.Sprintf("; last result round %d model %s from [%s]", l.Round, e.model(l.ModelHash), strings.Join(l.AcceptedPeers, " "))
	}
	e.line(store)
	var live []string
	for p := range s.ids {
		if n := s.nodes[1+p]; n != nil {
			st := n.m.Status()
			live = append(live, fmt.Sprintf("%s (round %d, model %s)", n.id, st.Round, wire.ShortHash(st.ModelHash)))
		}
	}
	e.line(fmt.Sprintf("trainers: %d materialised %s; %d followers", len(live), strings.Join(live, ", "), len(s.ids)-len(live)))
	var cut []string
	for p, c := range s.cut {
		if c {
			cut = append(cut, s.ids[p])
		}
	}
	if len(cut) > 0 {
		e.line("cut off: " + strings.Join(cut, " "))
	}
}

// model prints a global model's hash and, when the store or the aggregator
// holds it, its value.
func (e *simTraceEnv) model(h []byte) string {
	if b, err := e.s.store.Model(h); err == nil {
		if v, err := decodeInt(b, 8); err == nil {
			return fmt.Sprintf("%s (= %d)", wire.ShortHash(h), v)
		}
	}
	return wire.ShortHash(h)
}
