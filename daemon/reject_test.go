package daemon

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/genesis"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/p2p"
	"github.com/fedrank/fedrank/task"
	"github.com/fedrank/fedrank/wire"
)

// The metrics a refusal is counted in, and the log line's message for each.
const (
	updatesRejected  = "fedrank_updates_rejected_total"  // node.Reason of an update, logged "update rejected"
	messagesRejected = "fedrank_messages_rejected_total" // undecodable or foreign message, "message rejected"
	p2pRejected      = "fedrank_p2p_rejected_total"      // p2p.Reason*, "refused by the p2p layer"
)

var rejectLogMsg = map[string]string{
	updatesRejected:  `msg="update rejected"`,
	messagesRejected: `msg="message rejected"`,
	p2pRejected:      `msg="refused by the p2p layer"`,
}

// shardSamples is the size of the members' synthetic training shard, the
// sample count their updates claim.
const shardSamples = 16

// rejectEnv is a running aggregator daemon, as the test sees it.
type rejectEnv struct {
	api    string // the HTTP API's URL
	aggID  string
	aggPID peer.ID
	addrs  []string // its libp2p addresses
	logs   *syncBuffer
	fed    string
	model  []byte         // round 1's model hash
	maxMsg int            // the daemon's direct-message limit
	maxUpd int            // genesis max_update_bytes
	expect map[string]int // the round's update rejections so far, by reason
}

// TestDaemonRejects runs a real aggregator daemon (libp2p host, Badger
// store, runtime, HTTP API) and attacks it over the network with every kind
// of bad input: a non-member connecting and getting a message relayed, bad
// updates from a member (wrong round, model or federation, bad signatures,
// unselected sender, bad sample count, oversized or invalid payload, a
// second update), bad framing on the direct protocol and undecodable
// messages. Each must be refused with a log line naming the reason and a
// metric, and leave the daemon serving; the round then completes with the
// members' valid updates and its result counts the rejections by reason.
func TestDaemonRejects(t *testing.T) {
	start := time.Now()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Keys: the aggregator's home, four members, an outsider.
	home := filepath.Join(dir, "aggregator")
	aggID, err := Init(home, []string{"/ip4/127.0.0.1/tcp/0"})
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]crypto.PrivKey, 4)
	ids := make([]string, len(keys))
	for i := range keys {
		if keys[i], err = p2p.CreateKey(filepath.Join(dir, fmt.Sprintf("member%d.key", i))); err != nil {
			t.Fatal(err)
		}
		ids[i] = p2p.PeerID(keys[i])
	}
	outsiderKey, err := p2p.CreateKey(filepath.Join(dir, "outsider.key"))
	if err != nil {
		t.Fatal(err)
	}

	const maxUpdate = 1 << 20 // an frl-mnist update is 586,717 bytes
	g := genesis.Genesis{
		Name:           "reject-test",
		Aggregator:     aggID,
		Members:        ids,
		Scenario:       "frl-mnist",
		Seed:           1,
		Rounds:         1,
		PerRound:       3,
		Quorum:         3,
		RoundTimeout:   genesis.Duration(60 * time.Second),
		MaxUpdateBytes: maxUpdate,
	}
	gb, err := g.Encode()
	if err != nil {
		t.Fatal(err)
	}
	genPath := filepath.Join(dir, "federation.toml")
	if err := os.WriteFile(genPath, gb, 0o600); err != nil {
		t.Fatal(err)
	}
	gen, err := genesis.Parse(gb)
	if err != nil {
		t.Fatal(err)
	}
	fed := gen.ID()
	nc, err := gen.NodeConfig(aggID)
	if err != nil {
		t.Fatal(err)
	}
	// Round 1's selection, as the aggregator makes it: a, b, c are selected,
	// u is not.
	sel := node.SelectUniform(1, nc.Members, nc.PerRound, nc.Seed)
	idx := func(id string) int { return slices.Index(ids, id) }
	ia, ib, ic := idx(sel[0]), idx(sel[1]), idx(sel[2])
	iu := slices.IndexFunc(ids, func(id string) bool { return !slices.Contains(sel, id) })

	// Train the members' updates while the daemon starts.
	type trained struct {
		payloads [][]byte // a, a (another seed), b, c
		init     []byte
		spec     aggregate.Spec
		err      error
	}
	trainedC := make(chan trained, 1)
	go func() {
		var tr trained
		defer func() { trainedC <- tr }()
		in, err := syntheticInputs(shardSamples)
		if err != nil {
			tr.err = err
			return
		}
		tk, err := gen.BuildTask(task.Data{Train: in, Parts: data.Partition{seq(shardSamples)}})
		if err != nil {
			tr.err = err
			return
		}
		if tr.init, tr.err = tk.InitialModel(); tr.err != nil {
			return
		}
		tr.spec = tk.(*task.FRL).Spec()
		// Train is safe for concurrent use.
		tr.payloads = make([][]byte, 4)
		errs := make([]error, 4)
		var wg sync.WaitGroup
		for i := range tr.payloads {
			wg.Go(func() {
				tr.payloads[i], errs[i] = tk.Train(task.Job{Client: 0, Round: 1, Model: tr.init, Seed: 100 + uint64(i)})
			})
		}
		wg.Wait()
		tr.err = errors.Join(errs...)
	}()

	// The daemon.
	logs := &syncBuffer{}
	type readyInfo struct {
		id, api string
		addrs   []string
	}
	readyC := make(chan readyInfo, 1)
	runErr := make(chan error, 1)
	go func() {
		runErr <- Run(ctx, home, RunOptions{Federation: genPath, Logs: logs,
			Ready: func(id string, addrs []string, api string) { readyC <- readyInfo{id, api, addrs} }})
	}()
	var ready readyInfo
	select {
	case ready = <-readyC:
	case err := <-runErr:
		t.Fatalf("Run returned before it was ready: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("the daemon is not ready after 20 s\n%s", logs)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs)
		}
	})
	if ready.id != aggID {
		t.Fatalf("Ready reports peer %s, want %s", ready.id, aggID)
	}
	aggPID, err := peer.Decode(aggID)
	if err != nil {
		t.Fatal(err)
	}
	e := &rejectEnv{api: ready.api, aggID: aggID, aggPID: aggPID, addrs: ready.addrs, logs: logs, fed: fed,
		// The direct-message limit as Run sizes it (p2p.Config.MaxMessageBytes).
		maxMsg: max(nc.MaxUpdateBytes, nc.ChunkBytes) + 1<<20, maxUpd: maxUpdate, expect: map[string]int{}}
	waitFor(t, "round 1 open", 10*time.Second, func() bool {
		s, err := getStatus(e.api)
		return err == nil && s.Daemon.Round == 1 && s.Daemon.ModelHash != ""
	})
	st := e.status(t)
	if st.Daemon.Role != "aggregator" || st.Daemon.Federation != fed || st.Daemon.Done {
		t.Fatalf("status: role %q, federation %q, done %v", st.Daemon.Role, st.Daemon.Federation, st.Daemon.Done)
	}
	if e.model, err = hex.DecodeString(st.Daemon.ModelHash); err != nil {
		t.Fatal(err)
	}
	t.Logf("daemon ready in %v", time.Since(start).Round(time.Millisecond))

	// The peers. The adversary a is a selected member; it also admits the
	// outsider, to relay its announcements to the daemon.
	everyone := append(slices.Clone(ids), aggID)
	outsiderID := p2p.PeerID(outsiderKey)
	a := newTestPeer(t, keys[ia], fed, append(slices.Clone(everyone), outsiderID))
	b := newTestPeer(t, keys[ib], fed, everyone)
	c := newTestPeer(t, keys[ic], fed, everyone)
	u := newTestPeer(t, keys[iu], fed, everyone)
	// The outsider believes it is a member.
	x := newTestPeer(t, outsiderKey, fed, []string{outsiderID, aggID, a.id})
	for _, p := range []*testPeer{a, b, c, u} {
		if err := p.connectTo(ctx, e.addrs); err != nil {
			t.Fatalf("member %s cannot connect to the daemon: %v", p.id, err)
		}
	}

	var tr trained
	select {
	case tr = <-trainedC:
	case <-time.After(30 * time.Second):
		t.Fatal("training the updates takes more than 30 s")
	}
	if tr.err != nil {
		t.Fatal(tr.err)
	}
	if !slices.Equal(node.Hash(tr.init), e.model) {
		t.Fatalf("round 1's model %x is not the task's initial model %x", e.model, node.Hash(tr.init))
	}
	payloadA, payloadA2, payloadB, payloadC := tr.payloads[0], tr.payloads[1], tr.payloads[2], tr.payloads[3]
	t.Logf("peers up and updates trained (%d bytes each) at %v", len(payloadA), time.Since(start).Round(time.Millisecond))

	// (1) A non-member.
	t.Run("non-member/connection", func(t *testing.T) {
		// The gater may refuse more than one connection attempt of one Connect.
		e.expectRejectedN(t, p2pRejected, p2p.ReasonGaterRefused, x.id, false, func() {
			if err := x.connectTo(ctx, e.addrs); err == nil {
				t.Error("the outsider connected to the daemon")
			}
		})
		if slices.Contains(x.h.Peers(), aggID) {
			t.Error("the outsider holds a connection to the daemon")
		}
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		defer scancel()
		if s, err := x.h.Libp2pHost().NewStream(sctx, e.aggPID, p2p.ProtocolID); err == nil {
			s.Reset()
			t.Error("the outsider opened a stream to the daemon")
		}
		if err := x.h.Send(sctx, aggID, e.update(1, e.model, payloadA, shardSamples, x.key)); err == nil {
			t.Error("the outsider's Send succeeded")
		}
	})
	t.Run("non-member/relayed-announcement", func(t *testing.T) {
		// The outsider gets in through a member that admits it: its
		// announcements reach the daemon through a's gossipsub, and are
		// refused for their author.
		if err := x.connectTo(ctx, a.h.Addrs()); err != nil {
			t.Fatalf("the outsider cannot reach the relaying member: %v", err)
		}
		waitFor(t, "a to see the outsider on the topic", 10*time.Second, func() bool {
			return slices.Contains(x.h.AnnouncePeers(), a.id) && slices.Contains(a.h.AnnouncePeers(), aggID)
		})
		n := 0
		e.expectRejectedPolling(t, p2pRejected, p2p.ReasonNotMember, func() {
			n++
			msg := e.envelope(fed, &wire.Envelope{Body: &wire.Envelope_RoundStart{RoundStart: &wire.RoundStart{
				Round: 1, ModelHash: sha(fmt.Sprint("forged model ", n)), Selected: []string{x.id}, DeadlineMs: time.Now().Add(time.Hour).UnixMilli()}}})
			if err := x.h.Broadcast(ctx, msg); err != nil {
				t.Fatalf("outsider broadcast: %v", err)
			}
		})
		e.checkRound(t, 1)
	})
	t.Run("member/forged-announcement", func(t *testing.T) {
		// A member is admitted but is not the aggregator: its RoundStart is
		// refused by the daemon's announcement check.
		waitFor(t, "the daemon on a's topic", 10*time.Second, func() bool { return slices.Contains(a.h.AnnouncePeers(), aggID) })
		n := 0
		e.expectRejectedPolling(t, p2pRejected, p2p.ReasonAnnounceInvalid, func() {
			n++
			msg := e.envelope(fed, &wire.Envelope{Body: &wire.Envelope_RoundStart{RoundStart: &wire.RoundStart{
				Round: 2, ModelHash: sha(fmt.Sprint("forged ", n)), Selected: []string{a.id}, DeadlineMs: time.Now().Add(time.Hour).UnixMilli()}}})
			if err := a.h.Broadcast(ctx, msg); err != nil {
				t.Fatalf("member broadcast: %v", err)
			}
		})
		e.checkRound(t, 1)
	})

	// (2) Updates from a member that the protocol refuses.
	otherFed := hex.EncodeToString(sha("another federation"))
	updates := []struct {
		name, reason string
		from         *testPeer
		msg          func() []byte
	}{
		{"wrong-round/future", string(node.RejectWrongRound), a, func() []byte { return e.update(2, e.model, payloadA, shardSamples, a.key) }},
		{"wrong-round/stale", string(node.RejectWrongRound), a, func() []byte { return e.update(0, e.model, payloadA, shardSamples, a.key) }},
		{"wrong-model", string(node.RejectWrongModel), a, func() []byte { return e.update(1, sha("another model"), payloadA, shardSamples, a.key) }},
		{"not-selected", string(node.RejectNotSelected), u, func() []byte { return e.update(1, e.model, payloadA, shardSamples, u.key) }},
		{"bad-signature/other-key", string(node.RejectBadSignature), a, func() []byte { return e.update(1, e.model, payloadA, shardSamples, b.key) }},
		{"bad-signature/garbage", string(node.RejectBadSignature), a, func() []byte {
			sig := make([]byte, 64)
			rand.Read(sig)
			return e.updateSig(fed, 1, e.model, payloadA, shardSamples, sig)
		}},
		{"bad-signature/none", string(node.RejectBadSignature), a, func() []byte { return e.updateSig(fed, 1, e.model, payloadA, shardSamples, nil) }},
		{"bad-signature/other-federation", string(node.RejectBadSignature), a, func() []byte {
			// Signed for another federation, replayed in ours.
			sig, err := a.key.Sign(node.SignedUpdate(otherFed, 1, e.model, node.Hash(payloadA)))
			if err != nil {
				t.Fatal(err)
			}
			return e.updateSig(fed, 1, e.model, payloadA, shardSamples, sig)
		}},
		{"bad-samples/zero", string(node.RejectBadSamples), a, func() []byte { return e.update(1, e.model, payloadA, 0, a.key) }},
		{"bad-samples/negative", string(node.RejectBadSamples), a, func() []byte { return e.update(1, e.model, payloadA, -shardSamples, a.key) }},
		{"oversized-payload", string(node.RejectOversized), a, func() []byte {
			return e.update(1, e.model, append(slices.Clone(payloadA), make([]byte, e.maxUpd+1-len(payloadA))...), shardSamples, a.key)
		}},
		{"invalid-ranking/duplicate-index", string(node.RejectInvalidPayload), a, func() []byte {
			order, err := tr.spec.DecodeFRLUpdate(payloadA, nil)
			if err != nil {
				t.Fatal(err)
			}
			order[0][1] = order[0][0] // one edge twice, another never: not a permutation
			bad := tr.spec.EncodeFRLUpdate(nil, order)
			if _, err := tr.spec.DecodeFRLUpdate(bad, nil); !errors.Is(err, aggregate.ErrMalformed) {
				t.Fatalf("the corrupted ranking decodes: %v", err)
			}
			return e.update(1, e.model, bad, shardSamples, a.key)
		}},
		{"invalid-ranking/truncated", string(node.RejectInvalidPayload), a, func() []byte {
			return e.update(1, e.model, payloadA[:len(payloadA)-1], shardSamples, a.key)
		}},
		{"invalid-ranking/garbage", string(node.RejectInvalidPayload), a, func() []byte {
			junk := make([]byte, 1000)
			rand.Read(junk)
			return e.update(1, e.model, junk, shardSamples, a.key)
		}},
	}
	for _, tc := range updates {
		t.Run("update/"+tc.name, func(t *testing.T) {
			e.expectRejected(t, updatesRejected, tc.reason, tc.from.id, func() {
				if err := tc.from.h.Send(ctx, aggID, tc.msg()); err != nil {
					t.Fatalf("send: %v", err)
				}
			})
			if ack := tc.from.nextAck(t, 10*time.Second); ack.GetAccepted() || ack.GetReason() != tc.reason {
				t.Errorf("ack: accepted %v, reason %q; want a rejection for %q", ack.GetAccepted(), ack.GetReason(), tc.reason)
			}
			e.expect[tc.reason]++
		})
	}
	t.Run("update/wrong-federation", func(t *testing.T) {
		// Another federation's envelope is dropped before the protocol sees
		// it (no ack, not one of the round's rejections).
		e.expectRejected(t, messagesRejected, "wrong-federation", a.id, func() {
			if err := a.h.Send(ctx, aggID, e.updateSig(otherFed, 1, e.model, payloadA, shardSamples,
				mustSign(a.key, node.SignedUpdate(otherFed, 1, e.model, node.Hash(payloadA))))); err != nil {
				t.Fatalf("send: %v", err)
			}
		})
	})

	// (3) Framing on the direct protocol, from a member.
	frame := func(msg []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(msg))), msg...) }
	validMsg := e.update(1, sha("not our model"), []byte("x"), 1, a.key)
	framing := []struct {
		name, metric, reason string
		bytes                []byte
	}{
		{"oversized", p2pRejected, p2p.ReasonOversized, binary.AppendUvarint(nil, uint64(e.maxMsg+1))},
		{"oversized-huge", p2pRejected, p2p.ReasonOversized, binary.AppendUvarint(nil, 1<<62)},
		{"truncated-message", p2pRejected, p2p.ReasonTruncated, frame(validMsg)[:len(validMsg)/2]},
		{"truncated-prefix", p2pRejected, p2p.ReasonTruncated, []byte{0x80}},
		{"empty-stream", p2pRejected, p2p.ReasonTruncated, nil},
		{"malformed-prefix", p2pRejected, p2p.ReasonMalformed, repeat(0xff, 12)},
		{"non-minimal-prefix", p2pRejected, p2p.ReasonMalformed, []byte{0x81, 0x00, 'x'}},
		{"trailing-data", p2pRejected, p2p.ReasonTrailingData, append(frame(validMsg), 0)},
		// Frames that carry no envelope: refused by the runtime.
		{"not-protobuf", messagesRejected, "malformed", frame([]byte{0x0a, 0x40, 'x'})},
		{"not-protobuf/bad-wire-type", messagesRejected, "malformed", frame([]byte{0x0f, 0xff, 0xff})},
		{"empty-message", messagesRejected, "no-body", frame(nil)},
		{"unknown-fields-only", messagesRejected, "no-body", frame([]byte{0xf8, 0x06, 0x01})}, // field 111 = 1
	}
	for _, tc := range framing {
		t.Run("frame/"+tc.name, func(t *testing.T) {
			e.expectRejected(t, tc.metric, tc.reason, a.id, func() {
				err := e.rawStream(ctx, a, tc.bytes)
				if tc.metric == p2pRejected && err == nil {
					t.Error("the daemon acknowledged a badly framed message")
				}
				if tc.metric == messagesRejected && err != nil {
					t.Errorf("a well-framed message was refused by the p2p layer: %v", err)
				}
			})
		})
	}
	t.Run("frame/random-garbage", func(t *testing.T) {
		// Random bytes: each stream is refused exactly once, by the p2p
		// layer (framing) or by the runtime (the frame is no envelope of ours).
		rng := mrand.New(mrand.NewPCG(7, 8))
		for i := range 16 {
			junk := make([]byte, 1+rng.IntN(300))
			for k := range junk {
				junk[k] = byte(rng.Uint32())
			}
			before := e.scrape(t)
			n0 := streamRefusals(before)
			err := e.rawStream(ctx, a, junk)
			var m map[string]float64
			waitFor(t, fmt.Sprintf("garbage stream %d to be refused", i), 10*time.Second, func() bool {
				m = e.scrape(t)
				return streamRefusals(m) >= n0+1
			})
			if got := streamRefusals(m); got != n0+1 {
				t.Errorf("garbage stream %d (%x): %v refusals, want 1", i, junk, got-n0)
			}
			if m[series(messagesRejected, "malformed")]+m[series(messagesRejected, "no-body")]+m[series(messagesRejected, "wrong-federation")] >
				before[series(messagesRejected, "malformed")]+before[series(messagesRejected, "no-body")]+before[series(messagesRejected, "wrong-federation")] {
				if err != nil {
					t.Errorf("garbage stream %d framed fine but was reset: %v", i, err)
				}
			} else if err == nil {
				t.Errorf("garbage stream %d was refused by the p2p layer, but the sender saw no reset", i)
			}
			e.checkServing(t)
		}
	})
	t.Run("send/not-protobuf", func(t *testing.T) {
		// The same through p2p.Send: the frame is fine, the daemon takes it
		// and the runtime refuses it.
		e.expectRejected(t, messagesRejected, "malformed", a.id, func() {
			if err := a.h.Send(ctx, aggID, []byte("\x0a\x7fnot an envelope")); err != nil {
				t.Fatalf("send: %v", err)
			}
		})
	})
	// Nothing so far was accepted.
	if s := e.status(t); s.Daemon.Runtime.Accepted != 0 || s.Daemon.Round != 1 {
		t.Fatalf("before the valid updates: accepted %d, round %d", s.Daemon.Runtime.Accepted, s.Daemon.Round)
	}

	// A valid update is accepted; the same one again is acknowledged again
	// (a lost ack); a different second one is refused.
	t.Run("update/valid", func(t *testing.T) {
		e.sendValid(t, ctx, a, payloadA)
	})
	t.Run("update/resend-identical", func(t *testing.T) {
		before := e.scrape(t)
		if err := a.h.Send(ctx, aggID, e.update(1, e.model, payloadA, shardSamples, a.key)); err != nil {
			t.Fatal(err)
		}
		if ack := a.nextAck(t, 10*time.Second); !ack.GetAccepted() {
			t.Errorf("the identical resend was refused: %q", ack.GetReason())
		}
		m := e.scrape(t)
		if sumOf(m, updatesRejected) != sumOf(before, updatesRejected) {
			t.Errorf("the identical resend counted as a rejection")
		}
		// Acknowledged again, not accepted again.
		if got, want := m["fedrank_updates_accepted_total"], before["fedrank_updates_accepted_total"]; got != want {
			t.Errorf("fedrank_updates_accepted_total went from %v to %v on an identical resend", want, got)
		}
		if s := e.status(t); s.Daemon.Runtime.Accepted != 1 {
			t.Errorf("runtime status: %d updates accepted, want 1", s.Daemon.Runtime.Accepted)
		}
		if s := e.status(t); s.Daemon.StoreUpdates != 1 {
			t.Errorf("the store holds %d updates of the open round, want 1", s.Daemon.StoreUpdates)
		}
	})
	t.Run("update/second-different", func(t *testing.T) {
		reason := string(node.RejectDuplicate)
		e.expectRejected(t, updatesRejected, reason, a.id, func() {
			if err := a.h.Send(ctx, aggID, e.update(1, e.model, payloadA2, shardSamples, a.key)); err != nil {
				t.Fatal(err)
			}
		})
		if ack := a.nextAck(t, 10*time.Second); ack.GetAccepted() || ack.GetReason() != reason {
			t.Errorf("ack: accepted %v, reason %q", ack.GetAccepted(), ack.GetReason())
		}
		e.expect[reason]++
	})

	// The other selected members complete the round.
	e.sendValid(t, ctx, b, payloadB)
	e.sendValid(t, ctx, c, payloadC)
	waitFor(t, "round 1's result", 10*time.Second, func() bool {
		s, err := getStatus(e.api)
		return err == nil && len(s.Rounds) == 1 && s.Daemon.Done
	})
	s := e.status(t)
	r := s.Rounds[0]
	if r.Round != 1 || r.Accepted != 3 || r.Selected != 3 {
		t.Errorf("round 1: round %d, selected %d, accepted %d; want 1, 3, 3", r.Round, r.Selected, r.Accepted)
	}
	if !maps.Equal(r.RejectedByReason, e.expect) {
		t.Errorf("round 1 rejected by reason %v, want %v", r.RejectedByReason, e.expect)
	}
	total := 0
	for _, n := range e.expect {
		total += n
	}
	if r.Rejected != total {
		t.Errorf("round 1 rejected %d, want %d", r.Rejected, total)
	}
	if lr := s.Daemon.Runtime.LastResult; lr == nil || !lr.Advanced || lr.Reason != "quorum" ||
		!slices.Equal(lr.AcceptedPeers, []string{a.id, b.id, c.id}) {
		t.Errorf("last result %+v: want advanced by quorum with a, b, c", lr)
	}
	if !maps.Equal(s.Daemon.Runtime.RejectedByReason, e.expect) {
		t.Errorf("runtime rejected by reason %v, want %v", s.Daemon.Runtime.RejectedByReason, e.expect)
	}
	m := e.scrape(t)
	for reason, n := range e.expect {
		if got := m[series(updatesRejected, reason)]; got != float64(n) {
			t.Errorf("%s = %v, want %d", series(updatesRejected, reason), got, n)
		}
	}
	if got := sumOf(m, updatesRejected); got != float64(total) {
		t.Errorf("%s sums to %v, want %d", updatesRejected, got, total)
	}
	if got := m[`fedrank_rounds_closed_total{advanced="true"}`]; got != 1 {
		t.Errorf("rounds closed (advanced) = %v, want 1", got)
	}
	t.Logf("round 1 closed at %v: %+v", time.Since(start).Round(time.Millisecond), r.RejectedByReason)

	// Stop: Run returns nil.
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20 s of the cancellation")
	}
	if _, err := os.Stat(filepath.Join(home, APIFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the api file is left behind: %v", err)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// expectRejected runs send once and waits until the refusal is counted in
// metric{reason} and logged (a warning naming the reason, and the sender
// when from is not ""); then checks that the daemon still serves.
func (e *rejectEnv) expectRejected(t *testing.T, metric, reason, from string, send func()) {
	t.Helper()
	e.expectRejectedN(t, metric, reason, from, true, send)
}

// expectRejectedN is expectRejected; exact requires the metric to grow by
// exactly one, else by at least one.
func (e *rejectEnv) expectRejectedN(t *testing.T, metric, reason, from string, exact bool, send func()) {
	t.Helper()
	key := series(metric, reason)
	before := e.scrape(t)[key]
	needles := []string{rejectLogMsg[metric], "reason=" + reason + " "}
	if from != "" {
		needles = append(needles, "from="+from)
	}
	logsBefore := e.logs.count(needles...)
	send()
	waitFor(t, key+" to grow", 10*time.Second, func() bool { return e.scrape(t)[key] >= before+1 })
	waitFor(t, "the log line "+strings.Join(needles, " … "), 5*time.Second, func() bool {
		return e.logs.count(needles...) > logsBefore
	})
	if got := e.scrape(t)[key]; exact && got != before+1 {
		t.Errorf("%s grew by %v, want 1", key, got-before)
	}
	if l := e.logs.lines(needles...); len(l) > 0 {
		t.Logf("%s", l[len(l)-1])
	}
	e.checkServing(t)
}

// expectRejectedPolling calls send every 200 ms until metric{reason} grows
// (for gossip, which may drop a message before the mesh forms).
func (e *rejectEnv) expectRejectedPolling(t *testing.T, metric, reason string, send func()) {
	t.Helper()
	key := series(metric, reason)
	before := e.scrape(t)[key]
	needles := []string{rejectLogMsg[metric], "reason=" + reason + " "}
	logsBefore := e.logs.count(needles...)
	deadline := time.Now().Add(10 * time.Second)
	for next := time.Now(); e.scrape(t)[key] < before+1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not grow within 10 s", key)
		}
		if time.Now().After(next) {
			send()
			next = time.Now().Add(200 * time.Millisecond)
		}
	}
	waitFor(t, "the log line", 5*time.Second, func() bool { return e.logs.count(needles...) > logsBefore })
	if l := e.logs.lines(needles...); len(l) > 0 {
		t.Logf("%s", l[len(l)-1])
	}
	e.checkServing(t)
}

// sendValid sends p's update properly signed, and waits for its acceptance.
func (e *rejectEnv) sendValid(t *testing.T, ctx context.Context, p *testPeer, payload []byte) {
	t.Helper()
	before := e.scrape(t)["fedrank_updates_accepted_total"]
	if err := p.h.Send(ctx, e.aggID, e.update(1, e.model, payload, shardSamples, p.key)); err != nil {
		t.Fatal(err)
	}
	if ack := p.nextAck(t, 10*time.Second); !ack.GetAccepted() || ack.GetRound() != 1 {
		t.Fatalf("a valid update of %s: ack accepted %v, reason %q, round %d", p.id, ack.GetAccepted(), ack.GetReason(), ack.GetRound())
	}
	if got := e.scrape(t)["fedrank_updates_accepted_total"]; got != before+1 {
		t.Errorf("fedrank_updates_accepted_total grew by %v, want 1", got-before)
	}
	if n := e.logs.count(`msg="update accepted"`, "from="+p.id); n == 0 {
		t.Error("no log line for the accepted update")
	}
}

func (e *rejectEnv) scrape(t testing.TB) map[string]float64 {
	t.Helper()
	m, err := scrapeMetrics(e.api)
	if err != nil {
		t.Fatalf("the daemon stopped serving metrics: %v", err)
	}
	return m
}

func (e *rejectEnv) status(t testing.TB) Status {
	t.Helper()
	s, err := getStatus(e.api)
	if err != nil {
		t.Fatalf("the daemon stopped serving status: %v", err)
	}
	return s
}

// checkServing: status answers, from the running daemon, whose runtime has
// not stopped.
func (e *rejectEnv) checkServing(t testing.TB) {
	t.Helper()
	s, err := getStatus(e.api)
	switch {
	case err != nil:
		t.Fatalf("status: %v", err)
	case !s.Daemon.Running || s.Daemon.Runtime == nil:
		t.Fatalf("status is not the running daemon's: %+v", s.Daemon)
	case s.Daemon.Runtime.Error != "":
		t.Fatalf("the runtime stopped: %s", s.Daemon.Runtime.Error)
	}
}

// checkRound: the daemon still runs round r, not done.
func (e *rejectEnv) checkRound(t testing.TB, r uint64) {
	t.Helper()
	s, err := getStatus(e.api)
	if err != nil {
		t.Fatal(err)
	}
	if s.Daemon.Round != r || s.Daemon.Done || s.Daemon.ModelHash != hex.EncodeToString(e.model) {
		t.Fatalf("status: round %d, done %v, model %s; want round %d of model %x", s.Daemon.Round, s.Daemon.Done, s.Daemon.ModelHash, r, e.model)
	}
}

// update encodes an Update of our federation signed with key.
func (e *rejectEnv) update(round uint64, modelHash, payload []byte, samples int64, key crypto.PrivKey) []byte {
	sig := mustSign(key, node.SignedUpdate(e.fed, round, modelHash, node.Hash(payload)))
	return e.updateSig(e.fed, round, modelHash, payload, samples, sig)
}

// updateSig encodes an Update of federation fed with signature sig.
func (e *rejectEnv) updateSig(fed string, round uint64, modelHash, payload []byte, samples int64, sig []byte) []byte {
	return e.envelope(fed, &wire.Envelope{Body: &wire.Envelope_Update{Update: &wire.Update{
		Round: round, ModelHash: modelHash, Payload: payload, Samples: samples, Signature: sig}}})
}

func (e *rejectEnv) envelope(fed string, env *wire.Envelope) []byte {
	env.Federation = fed
	b, err := wire.Marshal(env)
	if err != nil {
		panic(err) // the test's own envelopes always have a body
	}
	return b
}

// rawStream opens a direct-protocol stream from p to the daemon, writes b
// as is, closes its write side and reads the receiver's answer: nil when it
// closed the stream (it took the message), the reset error when it refused.
func (e *rejectEnv) rawStream(ctx context.Context, p *testPeer, b []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := p.h.Libp2pHost().NewStream(ctx, e.aggPID, p2p.ProtocolID)
	if err != nil {
		return fmt.Errorf("open a stream to the daemon: %w", err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(10 * time.Second))
	// The receiver may reset before it has read everything: write errors
	// are its answer, read below.
	if len(b) > 0 {
		s.Write(b)
	}
	s.CloseWrite()
	_, err = io.ReadAll(s)
	return err
}

// streamRefusals counts the refusals of direct messages: the p2p layer's
// (framing) and the runtime's (decoding), not announcements or connections.
func streamRefusals(m map[string]float64) float64 {
	n := sumOf(m, messagesRejected)
	for _, r := range []string{p2p.ReasonOversized, p2p.ReasonTruncated, p2p.ReasonMalformed, p2p.ReasonTrailingData,
		p2p.ReasonResourceLimit, p2p.ReasonReadError, p2p.ReasonInboundFull} {
		n += m[series(p2pRejected, r)]
	}
	return n
}

// mustSign signs msg (Ed25519 signing does not fail).
func mustSign(key crypto.PrivKey, msg []byte) []byte {
	sig, err := key.Sign(msg)
	if err != nil {
		panic(err)
	}
	return sig
}

func sha(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func repeat(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// syntheticInputs is n random 28x28 images of random labels: enough for a
// trainer to produce real (if meaningless) rankings.
func syntheticInputs(n int) (*model.Inputs, error) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	set := &data.Set{N: n, Rows: 28, Cols: 28, Classes: 10, Pixels: make([]uint8, n*28*28), Labels: make([]uint8, n)}
	for i := range set.Pixels {
		if rng.IntN(4) == 0 {
			set.Pixels[i] = uint8(rng.IntN(256))
		}
	}
	for i := range set.Labels {
		set.Labels[i] = uint8(rng.IntN(10))
	}
	return model.NewInputs(set, data.MNISTMean, data.MNISTStd)
}
