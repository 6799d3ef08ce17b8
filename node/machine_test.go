package node

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/internal/splitmix"
	"github.com/fedrank/fedrank/wire"
)

func TestConfigValidate(t *testing.T) {
	good := aggConfig(baseConfig(5))
	if err := good.Validate(); err != nil {
		t.Fatalf("valid aggregator config: %v", err)
	}
	if err := trainerConfig(baseConfig(5), "peer-01").Validate(); err != nil {
		t.Fatalf("valid trainer config: %v", err)
	}
	tests := []struct {
		field string
		edit  func(*Config)
	}{
		{"ID", func(c *Config) { c.ID = "" }},
		{"ID", func(c *Config) { c.ID = "other" }},
		{"ID", func(c *Config) { c.Role, c.ID = RoleTrainer, "stranger" }},
		{"Federation", func(c *Config) { c.Federation = "" }},
		{"Aggregator", func(c *Config) { c.Aggregator = "" }},
		{"Members", func(c *Config) { c.Members = nil }},
		{"Members", func(c *Config) { c.Members = []PeerID{"a", "a"} }},
		{"Members", func(c *Config) { c.Members = []PeerID{"a", ""} }},
		{"Members", func(c *Config) { c.Members = []PeerID{"a", aggr} }},
		{"RoundTimeoutMs", func(c *Config) { c.RoundTimeoutMs = 0 }},
		{"RetryMs", func(c *Config) { c.RetryMs = -1 }},
		{"Role", func(c *Config) { c.Role = 0 }},
		{"PerRound", func(c *Config) { c.PerRound = 0 }},
		{"PerRound", func(c *Config) { c.PerRound = 6 }},
		{"Quorum", func(c *Config) { c.Quorum = 0 }},
		{"Quorum", func(c *Config) { c.Quorum = 4 }},
		{"MinUpdates", func(c *Config) { c.MinUpdates = 0 }},
		{"MinUpdates", func(c *Config) { c.MinUpdates = 4 }},
		{"MaxUpdateBytes", func(c *Config) { c.MaxUpdateBytes = 0 }},
		{"MaxModelBytes", func(c *Config) { c.Role, c.ID, c.MaxModelBytes = RoleTrainer, "peer-00", 0 }},
		{"NewAggregator", func(c *Config) { c.NewAggregator = nil }},
		{"InitialModel", func(c *Config) { c.InitialModel = nil }},
	}
	for _, tc := range tests {
		c := good
		c.Members = slices.Clone(good.Members)
		tc.edit(&c)
		err := c.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%s: Validate() = %v, want a *ConfigError for %s", tc.field, err, tc.field)
			continue
		}
		if !strings.Contains(err.Error(), "Config."+tc.field) {
			t.Errorf("error %q does not name the field", err)
		}
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted an invalid config", tc.field)
		}
	}
	c := good
	c.NewAggregator = func() (aggregate.Aggregator, error) { return nil, errors.New("no such strategy") }
	if _, err := New(c); err == nil || !strings.Contains(err.Error(), "no such strategy") {
		t.Errorf("New with a failing NewAggregator: %v", err)
	}
}

// startAggregator returns a started aggregator over peer-00..peer-04 with
// peer-00..peer-02 selected in round 1.
func startAggregator(t *testing.T, edit func(*Config)) (*Machine, *wire.RoundStart) {
	t.Helper()
	cfg := aggConfig(baseConfig(5))
	cfg.Select = func(_ uint64, members []PeerID, k int, _ uint64) []PeerID { return members[:k] }
	if edit != nil {
		edit(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	acts := m.step(0, Start{})
	if len(acts) != 3 {
		t.Fatalf("Start: %d actions, want broadcast + deadline + announce timer: %v", len(acts), acts)
	}
	b, ok := acts[0].(Broadcast)
	if !ok || b.Msg.GetRoundStart() == nil {
		t.Fatalf("Start: first action %v, want RoundStart broadcast", acts[0])
	}
	if st, ok := acts[1].(SetTimer); !ok || st.ID != (TimerID{TimerDeadline, 1}) || st.AtMs != 1000 {
		t.Fatalf("Start: second action %v, want deadline timer at 1000", acts[1])
	}
	if st, ok := acts[2].(SetTimer); !ok || st.ID != (TimerID{TimerAnnounce, 1}) || st.AtMs != 100 {
		t.Fatalf("Start: third action %v, want announce timer at 100", acts[2])
	}
	return m, b.Msg.GetRoundStart()
}

func updateMsg(fedName string, round uint64, hash, payload []byte, samples int64) *wire.Envelope {
	return &wire.Envelope{Federation: fedName, Body: &wire.Envelope_Update{Update: &wire.Update{
		Round: round, ModelHash: hash, Payload: payload, Samples: samples}}}
}

func onlyAck(t *testing.T, acts []Action, to PeerID) *wire.UpdateAck {
	t.Helper()
	if len(acts) != 1 {
		t.Fatalf("got %d actions, want one UpdateAck: %v", len(acts), acts)
	}
	s, ok := acts[0].(Send)
	if !ok || s.To != to || s.Msg.GetUpdateAck() == nil {
		t.Fatalf("got %#v, want an UpdateAck to %s", acts[0], to)
	}
	return s.Msg.GetUpdateAck()
}

func TestUpdateRejections(t *testing.T) {
	good := enc(1)
	tests := []struct {
		name   string
		from   PeerID
		msg    func(h []byte) *wire.Envelope
		before func(t *testing.T, m *Machine, h []byte) // earlier traffic
		want   Reason
	}{
		{"wrong federation", "peer-00", func(h []byte) *wire.Envelope { return updateMsg("other", 1, h, good, 1) }, nil, RejectWrongFederation},
		{"not member", "mallory", func(h []byte) *wire.Envelope { return updateMsg(fed, 1, h, good, 1) }, nil, RejectNotMember},
		{"aggregator itself", aggr, func(h []byte) *wire.Envelope { return updateMsg(fed, 1, h, good, 1) }, nil, RejectNotMember},
		{"stale round", "peer-00", func(h []byte) *wire.Envelope { return updateMsg(fed, 0, h, good, 1) }, nil, RejectWrongRound},
		{"future round", "peer-00", func(h []byte) *wire.Envelope { return updateMsg(fed, 2, h, good, 1) }, nil, RejectWrongRound},
		{"not selected", "peer-04", func(h []byte) *wire.Envelope { return updateMsg(fed, 1, h, good, 1) }, nil, RejectNotSelected},
		{"wrong model", "peer-00", func(h []byte) *wire.Envelope { return updateMsg(fed, 1, Hash([]byte("x")), good, 1) }, nil, RejectWrongModel},
		{"no model hash", "peer-00", func(h []byte) *wire.Envelope { return updateMsg(fed, 1, nil, good, 1) }, nil, RejectWrongModel},
		{"oversized", "peer-00", func(h []byte) *wire.Envelope { return updateMsg(fed, 1, h, make([]byte, 65), 1) }, nil, RejectOversized},
		{"zero samples", "peer-00", func(h []byte) *wire.Envelope { return updateMsg(fed, 1, h, good, 0) }, nil, RejectBadSamples},
		{"negative samples", "peer-00", func(h []byte) *wire.Envelope { return updateMsg(fed, 1, h, good, -5) }, nil, RejectBadSamples},
		{"duplicate", "peer-00", func(h []byte) *wire.Envelope { return updateMsg(fed, 1, h, enc(2), 1) },
			func(t *testing.T, m *Machine, h []byte) {
				if ack := onlyAck(t, m.step(1, Recv{From: "peer-00", Msg: updateMsg(fed, 1, h, good, 1)}), "peer-00"); !ack.Accepted {
					t.Fatalf("first update rejected: %v", ack)
				}
			}, RejectDuplicate},
		{"invalid payload", "peer-00", func(h []byte) *wire.Envelope { return updateMsg(fed, 1, h, []byte("garbage"), 1) }, nil, RejectInvalidPayload},
		// Checks run in order: a stale update from a non-member is "not-member".
		{"order: member before round", "mallory", func(h []byte) *wire.Envelope { return updateMsg(fed, 9, h, good, 1) }, nil, RejectNotMember},
		{"order: round before selection", "peer-04", func(h []byte) *wire.Envelope { return updateMsg(fed, 9, h, good, 1) }, nil, RejectWrongRound},
		{"order: size before samples", "peer-00", func(h []byte) *wire.Envelope { return updateMsg(fed, 1, h, make([]byte, 65), 0) }, nil, RejectOversized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, rs := startAggregator(t, nil)
			h := rs.GetModelHash()
			if tc.before != nil {
				tc.before(t, m, h)
			}
			before := m.Status()
			ack := onlyAck(t, m.step(2, Recv{From: tc.from, Msg: tc.msg(h)}), tc.from)
			if ack.Accepted || ack.Reason != string(tc.want) {
				t.Fatalf("ack = %v, want rejected with %q", ack, tc.want)
			}
			st := m.Status()
			if st.Rejected != before.Rejected+1 || st.Accepted != before.Accepted {
				t.Fatalf("status %+v after %+v: want one more rejection, same acceptances", st, before)
			}
		})
	}
}

func TestResentUpdateIsAcknowledgedOnce(t *testing.T) {
	m, rs := startAggregator(t, nil)
	u := updateMsg(fed, 1, rs.GetModelHash(), enc(5), 3)
	for i := 0; i < 3; i++ {
		if ack := onlyAck(t, m.step(int64(i), Recv{From: "peer-01", Msg: u}), "peer-01"); !ack.Accepted {
			t.Fatalf("send %d: %v", i, ack)
		}
	}
	if st := m.Status(); st.Accepted != 1 || st.Rejected != 0 || st.Counters.Resends != 2 {
		t.Fatalf("status %+v: want 1 accepted, 0 rejected, 2 resends", st)
	}
}

func TestResendAfterCloseIsAcknowledged(t *testing.T) {
	m, rs := startAggregator(t, nil)
	h := rs.GetModelHash()
	for _, p := range []PeerID{"peer-00", "peer-01", "peer-02"} {
		m.step(1, Recv{From: p, Msg: updateMsg(fed, 1, h, enc(1), 1)})
	}
	if st := m.Status(); st.Round != 2 {
		t.Fatalf("round 1 not closed: %+v", st)
	}
	// peer-01's ack was lost: it resends after the round closed.
	if ack := onlyAck(t, m.step(2, Recv{From: "peer-01", Msg: updateMsg(fed, 1, h, enc(1), 1)}), "peer-01"); !ack.Accepted || ack.Round != 1 {
		t.Fatalf("resend after close: %v", ack)
	}
	// A different payload for the closed round is still a stale update.
	if ack := onlyAck(t, m.step(2, Recv{From: "peer-01", Msg: updateMsg(fed, 1, h, enc(2), 1)}), "peer-01"); ack.Accepted || ack.Reason != string(RejectWrongRound) {
		t.Fatalf("other payload after close: %v", ack)
	}
	if st := m.Status(); st.Rejected != 1 || st.Counters.Resends != 1 {
		t.Fatalf("status %+v", st)
	}
}

func TestFullRoundsThroughQuorum(t *testing.T) {
	cfg := baseConfig(6)
	cfg.Rounds = 3
	c := newCluster(t, cfg)
	c.start()
	if !c.finished {
		t.Fatalf("run did not finish; closed %d rounds", len(c.closed))
	}
	if len(c.closed) != 3 {
		t.Fatalf("closed %d rounds, want 3", len(c.closed))
	}
	model := int64(100)
	for i, rc := range c.closed {
		want := model
		for _, p := range rc.AcceptedPeers {
			want += int64(slices.Index(cfg.Members, p) + 1)
		}
		if rc.Round != uint64(i+1) || !rc.Advanced || rc.Reason != "quorum" || rc.Accepted != 3 || rc.Selected != 3 || len(rc.Rejected) != 0 {
			t.Fatalf("round %d closed as %+v", i+1, rc)
		}
		if got := modelValue(t, rc.Model); got != want {
			t.Fatalf("round %d model %d, want %d", rc.Round, got, want)
		}
		if !bytes.Equal(rc.ModelHash, Hash(rc.Model)) {
			t.Fatal("RoundClosed.ModelHash is not the model's hash")
		}
		// The announced result names the new model and each update used, in order.
		rr := c.results[i]
		if rr.GetRound() != rc.Round || !bytes.Equal(rr.GetModelHash(), rc.ModelHash) || rr.GetAccepted() != 3 {
			t.Fatalf("RoundResult %v does not match %+v", rr, rc)
		}
		for j, p := range rc.AcceptedPeers {
			if !bytes.Equal(rr.GetUpdateHashes()[j], Hash(enc(int64(slices.Index(cfg.Members, p)+1)))) {
				t.Fatalf("round %d update hash %d is not %s's payload", rc.Round, j, p)
			}
		}
		model = want
	}
	// Every trainer saw the last result; the deadline timers were all
	// cancelled, and the only timer left rebroadcasts the final result.
	for _, p := range cfg.Members {
		if _, ok := c.done[p]; !ok {
			t.Errorf("trainer %s not done", p)
		}
	}
	for id := range c.timers[aggr] {
		if id != (TimerID{TimerFinal, 3}) {
			t.Errorf("aggregator left timer %v", id)
		}
	}
	if st := c.m[aggr].Status(); !st.Done || st.Round != 3 {
		t.Errorf("aggregator status %+v", st)
	}
}

func TestDeadlineClosesWithFewerUpdates(t *testing.T) {
	cfg := baseConfig(5)
	cfg.Rounds = 1
	c := newCluster(t, cfg)
	var victim PeerID
	c.drop = func(f msgInFlight) bool {
		if f.msg.GetUpdate() != nil && victim == "" {
			victim = f.from // lose every update of the first trainer that sends one
		}
		return f.from == victim && f.msg.GetUpdate() != nil
	}
	c.start()
	if len(c.closed) != 0 {
		t.Fatalf("round closed before its deadline: %+v", c.closed)
	}
	c.advance(999)
	if len(c.closed) != 0 {
		t.Fatal("round closed before its deadline")
	}
	c.advance(1)
	if len(c.closed) != 1 {
		t.Fatalf("round not closed at its deadline")
	}
	rc := c.closed[0]
	if rc.Reason != "deadline" || !rc.Advanced || rc.Accepted != 2 || rc.ClosedMs != 1000 || slices.Contains(rc.AcceptedPeers, victim) {
		t.Fatalf("closed as %+v", rc)
	}
	if !c.finished {
		t.Fatal("not done after the last round")
	}
	// The victim kept resending until the deadline, then gave up.
	if st := c.m[victim].Status(); st.Counters.Resends == 0 {
		t.Errorf("victim never resent its update: %+v", st)
	}
}

func TestBelowMinUpdatesKeepsTheModel(t *testing.T) {
	cfg := baseConfig(5)
	cfg.MinUpdates = 2
	cfg.Rounds = 2
	c := newCluster(t, cfg)
	sent := 0
	c.drop = func(f msgInFlight) bool {
		if f.msg.GetUpdate() != nil && f.msg.GetUpdate().GetRound() == 1 {
			sent++
			return sent > 1 // only one update of round 1 gets through
		}
		return false
	}
	c.start()
	c.advance(1000)
	if len(c.closed) != 2 {
		t.Fatalf("closed %d rounds, want 2 (round 2 at quorum)", len(c.closed))
	}
	rc := c.closed[0]
	if rc.Advanced || rc.Accepted != 1 || !strings.Contains(rc.Reason, "MinUpdates") || modelValue(t, rc.Model) != 100 {
		t.Fatalf("round 1 closed as %+v", rc)
	}
	if rr := c.results[0]; !bytes.Equal(rr.GetModelHash(), Hash(enc(100))) || len(rr.GetUpdateHashes()) != 0 || rr.GetAccepted() != 1 {
		t.Fatalf("round 1 result %v: want the old model, no update hashes, accepted 1", rr)
	}
	// Round 2 starts from the unchanged model: trainers that already hold it train at once.
	if rc2 := c.closed[1]; !rc2.Advanced || rc2.Reason != "quorum" {
		t.Fatalf("round 2 closed as %+v", rc2)
	}
}

func TestRejectedUpdatesAreReported(t *testing.T) {
	cfg := baseConfig(5)
	cfg.Rounds = 1
	c := newCluster(t, cfg)
	c.payload = func(id PeerID, tr Train) TrainDone {
		p := enc(1)
		if id == "peer-02" || id == "peer-03" {
			p = []byte("not a number") // an invalid payload from some peers
		}
		return TrainDone{Round: tr.Round, ModelHash: tr.ModelHash, Payload: p, Samples: 1}
	}
	c.start()
	c.advance(1000)
	if len(c.closed) != 1 {
		t.Fatal("round not closed")
	}
	rc := c.closed[0]
	var bad []PeerID
	for _, p := range rc.SelectedPeers {
		if p == "peer-02" || p == "peer-03" {
			bad = append(bad, p)
		}
	}
	if len(rc.Rejected) != len(bad) || rc.Accepted != 3-len(bad) {
		t.Fatalf("closed as %+v; selected bad peers %v", rc, bad)
	}
	for _, r := range rc.Rejected {
		if r.Reason != RejectInvalidPayload || r.Detail == "" {
			t.Fatalf("rejection %+v", r)
		}
		acks := acksTo(c.sent, r.From)
		if len(acks) != 1 || acks[0].Reason != string(RejectInvalidPayload) {
			t.Fatalf("acks to %s: %v", r.From, acks)
		}
		if st := c.m[r.From].Status(); st.Counters.Nacked != 1 || st.Counters.Resends != 0 {
			t.Fatalf("rejected trainer %s: %+v (must not resend a rejected update)", r.From, st)
		}
	}
}

// trainerUnderTest is a trainer machine, peer-01 of 5, with the round-1 announcement.
func trainerUnderTest(t *testing.T, model []byte, selected ...PeerID) (*Machine, *wire.Envelope) {
	t.Helper()
	m, err := New(trainerConfig(baseConfig(5), "peer-01"))
	if err != nil {
		t.Fatal(err)
	}
	rs := &wire.Envelope{Federation: fed, Body: &wire.Envelope_RoundStart{RoundStart: &wire.RoundStart{
		Round: 1, ModelHash: Hash(model), Selected: selected, DeadlineMs: 1000}}}
	return m, rs
}

func modelResponse(hash, model []byte) *wire.Envelope {
	return &wire.Envelope{Federation: fed, Body: &wire.Envelope_ModelResponse{ModelResponse: &wire.ModelResponse{ModelHash: hash, Model: model}}}
}

func TestTrainerPullsModelByHash(t *testing.T) {
	model := enc(100)
	m, rs := trainerUnderTest(t, model, "peer-00", "peer-01")
	acts := m.step(0, Recv{From: aggr, Msg: rs})
	if len(acts) != 2 {
		t.Fatalf("RoundStart: %v, want ModelRequest + retry timer", acts)
	}
	if s, ok := acts[0].(Send); !ok || s.To != aggr || !bytes.Equal(s.Msg.GetModelRequest().GetModelHash(), Hash(model)) {
		t.Fatalf("want a ModelRequest for the round's model, got %#v", acts[0])
	}
	if st, ok := acts[1].(SetTimer); !ok || st.ID != (TimerID{TimerModelRetry, 1}) || st.AtMs != 100 {
		t.Fatalf("want a retry timer at 100 (RoundTimeoutMs/10), got %#v", acts[1])
	}

	// Bytes that do not match the hash they claim, or the hash asked for, or too many bytes: dropped.
	for i, resp := range []*wire.Envelope{
		modelResponse(Hash(model), enc(666)),
		modelResponse(Hash(enc(666)), model),
		modelResponse(Hash(make([]byte, 65)), make([]byte, 65)),
	} {
		if acts := m.step(10, Recv{From: aggr, Msg: resp}); len(acts) != 0 {
			t.Fatalf("bad response %d accepted: %v", i, acts)
		}
	}
	if got := m.Status().Counters.BadModels; got != 3 {
		t.Fatalf("BadModels = %d, want 3", got)
	}
	// A valid model that is not the round's: ignored.
	if acts := m.step(10, Recv{From: aggr, Msg: modelResponse(Hash(enc(5)), enc(5))}); len(acts) != 0 {
		t.Fatalf("unwanted model accepted: %v", acts)
	}
	// From someone else than the aggregator: ignored, even if correct.
	if acts := m.step(10, Recv{From: "peer-00", Msg: modelResponse(Hash(model), model)}); len(acts) != 0 {
		t.Fatalf("model from a non-aggregator accepted: %v", acts)
	}

	// The retry timer resends the request, with a doubled delay.
	acts = m.step(100, TimerFired{ID: TimerID{TimerModelRetry, 1}})
	if len(acts) != 2 || acts[0].(Send).Msg.GetModelRequest() == nil || acts[1].(SetTimer).AtMs != 300 {
		t.Fatalf("retry: %v", acts)
	}

	acts = m.step(150, Recv{From: aggr, Msg: modelResponse(Hash(model), model)})
	if len(acts) != 2 || acts[0] != (CancelTimer{ID: TimerID{TimerModelRetry, 1}}) {
		t.Fatalf("good response: %v", acts)
	}
	tr, ok := acts[1].(Train)
	if !ok || tr.Round != 1 || !bytes.Equal(tr.Model, model) || !bytes.Equal(tr.ModelHash, Hash(model)) {
		t.Fatalf("want Train of round 1 from the model, got %#v", acts[1])
	}

	// Training done: the update goes to the aggregator, with a resend timer.
	acts = m.step(200, TrainDone{Round: 1, ModelHash: tr.ModelHash, Payload: enc(7), Samples: 12})
	if len(acts) != 2 {
		t.Fatalf("TrainDone: %v", acts)
	}
	u := acts[0].(Send).Msg.GetUpdate()
	if u.GetRound() != 1 || !bytes.Equal(u.GetModelHash(), Hash(model)) || !bytes.Equal(u.GetPayload(), enc(7)) || u.GetSamples() != 12 {
		t.Fatalf("update %v", u)
	}
	ack := &wire.Envelope{Federation: fed, Body: &wire.Envelope_UpdateAck{UpdateAck: &wire.UpdateAck{Round: 1, Accepted: true}}}
	if acts := m.step(210, Recv{From: aggr, Msg: ack}); len(acts) != 1 || acts[0] != (CancelTimer{ID: TimerID{TimerUpdateRetry, 1}}) {
		t.Fatalf("ack: %v", acts)
	}
	if st := m.Status(); st.Counters.Acked != 1 || !bytes.Equal(st.ModelHash, Hash(model)) {
		t.Fatalf("status %+v", st)
	}
}

func TestTrainerIgnores(t *testing.T) {
	model := enc(100)
	t.Run("RoundStart from a non-aggregator", func(t *testing.T) {
		m, rs := trainerUnderTest(t, model, "peer-01")
		if acts := m.step(0, Recv{From: "peer-00", Msg: rs}); len(acts) != 0 {
			t.Fatalf("%v", acts)
		}
	})
	t.Run("RoundStart of another federation", func(t *testing.T) {
		m, rs := trainerUnderTest(t, model, "peer-01")
		rs.Federation = "other"
		if acts := m.step(0, Recv{From: aggr, Msg: rs}); len(acts) != 0 {
			t.Fatalf("%v", acts)
		}
	})
	t.Run("not selected", func(t *testing.T) {
		m, rs := trainerUnderTest(t, model, "peer-00")
		if acts := m.step(0, Recv{From: aggr, Msg: rs}); len(acts) != 0 {
			t.Fatalf("%v", acts)
		}
	})
	t.Run("repeated RoundStart", func(t *testing.T) {
		m, rs := trainerUnderTest(t, model, "peer-01")
		m.step(0, Recv{From: aggr, Msg: rs})
		if acts := m.step(1, Recv{From: aggr, Msg: rs}); len(acts) != 0 {
			t.Fatalf("%v", acts)
		}
	})
	t.Run("TrainDone of an old round", func(t *testing.T) {
		cfg := trainerConfig(baseConfig(5), "peer-01")
		cfg.InitialModel = model // holds the model already: trains at once
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, rs := trainerUnderTest(t, model, "peer-01")
		acts := m.step(0, Recv{From: aggr, Msg: rs})
		if len(acts) != 1 {
			t.Fatalf("RoundStart with the model held: %v, want Train", acts)
		}
		tr := acts[0].(Train)
		rs2 := &wire.Envelope{Federation: fed, Body: &wire.Envelope_RoundStart{RoundStart: &wire.RoundStart{
			Round: 2, ModelHash: Hash(model), Selected: []PeerID{"peer-01"}, DeadlineMs: 2000}}}
		if acts := m.step(1000, Recv{From: aggr, Msg: rs2}); len(acts) != 1 {
			t.Fatalf("round 2: %v", acts)
		}
		if acts := m.step(1100, TrainDone{Round: tr.Round, ModelHash: tr.ModelHash, Payload: enc(1), Samples: 1}); len(acts) != 0 {
			t.Fatalf("stale TrainDone sent: %v", acts)
		}
		if acts := m.step(1200, TrainDone{Round: 2, ModelHash: tr.ModelHash, Err: errTrain}); len(acts) != 0 {
			t.Fatalf("failed TrainDone sent: %v", acts)
		}
		if st := m.Status(); st.Counters.Stale != 1 || st.Counters.TrainErrors != 1 {
			t.Fatalf("counters %+v", st.Counters)
		}
	})
	t.Run("retries stop at the deadline", func(t *testing.T) {
		m, rs := trainerUnderTest(t, model, "peer-01")
		m.step(0, Recv{From: aggr, Msg: rs})
		if acts := m.step(1000, TimerFired{ID: TimerID{TimerModelRetry, 1}}); len(acts) != 0 {
			t.Fatalf("resent after the deadline: %v", acts)
		}
	})
}

func TestModelRequests(t *testing.T) {
	m, rs := startAggregator(t, nil)
	req := func(h []byte) *wire.Envelope {
		return &wire.Envelope{Federation: fed, Body: &wire.Envelope_ModelRequest{ModelRequest: &wire.ModelRequest{ModelHash: h}}}
	}
	acts := m.step(1, Recv{From: "peer-04", Msg: req(rs.GetModelHash())})
	if len(acts) != 1 || !bytes.Equal(acts[0].(Send).Msg.GetModelResponse().GetModel(), enc(100)) {
		t.Fatalf("request for the current model: %v", acts)
	}
	if acts := m.step(1, Recv{From: "peer-04", Msg: req(Hash([]byte("unknown")))}); len(acts) != 0 {
		t.Fatalf("request for an unknown model: %v", acts)
	}
	if acts := m.step(1, Recv{From: "mallory", Msg: req(rs.GetModelHash())}); len(acts) != 0 {
		t.Fatalf("request from a non-member: %v", acts)
	}
	// After round 1 closes, its model is still served (late trainers), and the new one too.
	for _, p := range []PeerID{"peer-00", "peer-01", "peer-02"} {
		m.step(2, Recv{From: p, Msg: updateMsg(fed, 1, rs.GetModelHash(), enc(1), 1)})
	}
	if st := m.Status(); st.Round != 2 {
		t.Fatalf("round 1 did not close at quorum: %+v", st)
	}
	for _, h := range [][]byte{rs.GetModelHash(), Hash(enc(103))} {
		if acts := m.step(3, Recv{From: "peer-04", Msg: req(h)}); len(acts) != 1 {
			t.Fatalf("request for %x after round 1: %v", h, acts)
		}
	}
}

func TestSilentPeersAreAnnouncedAgain(t *testing.T) {
	m, rs := startAggregator(t, nil)
	// peer-00 asks for the model, peer-01 sends its update; peer-02 stays silent.
	m.step(10, Recv{From: "peer-00", Msg: &wire.Envelope{Federation: fed, Body: &wire.Envelope_ModelRequest{
		ModelRequest: &wire.ModelRequest{ModelHash: rs.GetModelHash()}}}})
	m.step(20, Recv{From: "peer-01", Msg: updateMsg(fed, 1, rs.GetModelHash(), enc(1), 1)})
	acts := m.step(100, TimerFired{ID: TimerID{TimerAnnounce, 1}})
	if len(acts) != 2 {
		t.Fatalf("announce: %v, want one RoundStart and the next timer", acts)
	}
	if s, ok := acts[0].(Send); !ok || s.To != "peer-02" || s.Msg.GetRoundStart().GetRound() != 1 {
		t.Fatalf("announce: %#v, want the RoundStart sent to peer-02", acts[0])
	}
	if st, ok := acts[1].(SetTimer); !ok || st.AtMs != 300 {
		t.Fatalf("announce: %#v, want the next one at 300 (doubled delay)", acts[1])
	}
	// Delays double until the next would pass the deadline (100, 200, 400, 800 > 1000).
	if acts := m.step(300, TimerFired{ID: TimerID{TimerAnnounce, 1}}); len(acts) != 2 || acts[1].(SetTimer).AtMs != 700 {
		t.Fatalf("second announce: %v", acts)
	}
	if acts := m.step(700, TimerFired{ID: TimerID{TimerAnnounce, 1}}); len(acts) != 1 {
		t.Fatalf("third announce: %v, want the RoundStart and no further timer", acts)
	}
	if acts := m.step(900, TimerFired{ID: TimerID{TimerAnnounce, 1}}); len(acts) != 0 {
		t.Fatalf("announce after the last: %v", acts)
	}
}

func TestLossyDelivery(t *testing.T) {
	cfg := baseConfig(8)
	cfg.PerRound, cfg.Quorum, cfg.Rounds = 4, 4, 3
	c := newCluster(t, cfg)
	r := splitmix.Source{State: 7}
	c.drop = func(f msgInFlight) bool {
		return r.Below(100) < 30 // lose 30% of all messages, announcements included
	}
	c.start()
	for i := 0; i < 100 && !c.finished; i++ {
		c.advance(50)
	}
	if !c.finished {
		t.Fatalf("did not finish under loss; closed %d rounds", len(c.closed))
	}
	resends := 0
	for _, p := range cfg.Members {
		resends += c.m[p].Status().Counters.Resends
	}
	if resends == 0 {
		t.Fatal("no resends under loss")
	}
	quorums := 0
	for _, rc := range c.closed {
		t.Logf("round %d: %s, %d accepted, closed at %d ms", rc.Round, rc.Reason, rc.Accepted, rc.ClosedMs)
		if len(rc.Rejected) != 0 {
			t.Fatalf("round %d rejected %v: resends must not count as duplicates", rc.Round, rc.Rejected)
		}
		if rc.Reason == "quorum" {
			quorums++
		}
	}
	if quorums == 0 {
		t.Fatal("resends never completed a round before its deadline")
	}
}

func TestSelection(t *testing.T) {
	members := peers(100)
	a := SelectUniform(7, members, 10, 42)
	if b := SelectUniform(7, members, 10, 42); !slices.Equal(a, b) {
		t.Fatalf("same seed, different selections: %v vs %v", a, b)
	}
	if b := SelectUniform(7, members, 10, 43); slices.Equal(a, b) {
		t.Fatalf("different seeds, same selection %v", a)
	}
	if b := SelectUniform(8, members, 10, 42); slices.Equal(a, b) {
		t.Fatalf("different rounds, same selection %v", a)
	}
	if !slices.IsSorted(a) || len(slices.Compact(slices.Clone(a))) != 10 {
		t.Fatalf("selection not sorted and distinct: %v", a)
	}
	if got := SelectUniform(1, members[:3], 5, 1); len(got) != 3 {
		t.Fatalf("k > n: %v", got)
	}
	// Roughly uniform: every member is picked about 1000*10/100 = 100 times.
	counts := map[PeerID]int{}
	for r := uint64(1); r <= 1000; r++ {
		for _, p := range SelectUniform(r, members, 10, 9) {
			counts[p]++
		}
	}
	for _, p := range members {
		if c := counts[p]; c < 60 || c > 140 {
			t.Errorf("%s selected %d times in 1000 rounds, want about 100", p, c)
		}
	}
	// Pinned values: a change of the generator changes every experiment.
	if got := fmt.Sprint(SelectUniform(1, peers(10), 3, 1)); got != pinnedSelection {
		t.Errorf("SelectUniform(1, 10 peers, 3, 1) = %s, want %s", got, pinnedSelection)
	}
}

const pinnedSelection = "[peer-03 peer-06 peer-09]"

func TestMachinesAreDeterministic(t *testing.T) {
	run := func(seed uint64) [][]PeerID {
		cfg := baseConfig(10)
		cfg.Seed, cfg.Rounds = seed, 5
		c := newCluster(t, cfg)
		c.start()
		var sel [][]PeerID
		for _, rc := range c.closed {
			sel = append(sel, rc.SelectedPeers)
		}
		return sel
	}
	a, b, other := run(3), run(3), run(4)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("same seed, different runs:\n%v\n%v", a, b)
	}
	if fmt.Sprint(a) == fmt.Sprint(other) {
		t.Fatalf("different seeds, same selections %v", a)
	}
}

func TestBadSelectStopsTheRun(t *testing.T) {
	for name, sel := range map[string]SelectFunc{
		"too few":    func(_ uint64, m []PeerID, k int, _ uint64) []PeerID { return m[:k-1] },
		"duplicates": func(_ uint64, m []PeerID, k int, _ uint64) []PeerID { return []PeerID{m[0], m[0], m[1]} },
		"non-member": func(_ uint64, m []PeerID, k int, _ uint64) []PeerID { return []PeerID{m[0], m[1], "x"} },
	} {
		cfg := aggConfig(baseConfig(5))
		cfg.Select = sel
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		acts := m.step(0, Start{})
		if d, ok := acts[len(acts)-1].(Done); !ok || d.Err == nil || !strings.Contains(d.Err.Error(), "Config.Select") {
			t.Errorf("%s: %v, want Done with an error naming Config.Select", name, acts)
		}
	}
}

func TestFailingStrategyStopsTheRun(t *testing.T) {
	m, err := New(aggConfig(func() Config { c := baseConfig(5); c.InitialModel = []byte("bad"); return c }()))
	if err != nil {
		t.Fatal(err)
	}
	acts := m.step(0, Start{})
	if d, ok := acts[len(acts)-1].(Done); !ok || d.Err == nil || !strings.Contains(d.Err.Error(), "Begin") {
		t.Fatalf("%v, want Done with the Begin error", acts)
	}
	if !m.Status().Done {
		t.Fatal("machine not done")
	}
}

// step is Step without the Persist actions: the tests in this file check
// the protocol's messages and timers; persist_test.go checks what is
// persisted and when.
func (m *Machine) step(now int64, ev Event) []Action {
	var out []Action
	for _, a := range m.Step(now, ev) {
		if _, ok := a.(Persist); !ok {
			out = append(out, a)
		}
	}
	return out
}
