package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// connTransport returns the transport of a's connection to b ("tcp", "quic-v1").
func connTransport(t *testing.T, a, b *Host) string {
	t.Helper()
	pid, _ := peer.Decode(b.ID())
	conns := a.Libp2pHost().Network().ConnsToPeer(pid)
	if len(conns) == 0 {
		t.Fatalf("%s has no connection to %s", a.ID(), b.ID())
	}
	return string(conns[0].ConnState().Transport)
}

func TestSendAndBroadcast(t *testing.T) {
	for _, tr := range []struct {
		name   string
		listen []string
	}{{"tcp", tcpAddrs}, {"quic-v1", quicAddrs}} {
		for _, n := range []int{2, 3} {
			t.Run(fmt.Sprintf("%s/%d", tr.name, n), func(t *testing.T) {
				t.Parallel()
				hs := make([]*Host, n)
				for i := range hs {
					hs[i] = newTestHost(t, tr.listen, nil)
				}
				joinAll(t, nil, hs...)
				connectMesh(t, hs...)
				if got := connTransport(t, hs[0], hs[1]); got != tr.name {
					t.Fatalf("connection over %q, want %q", got, tr.name)
				}

				// Every host sends to every other one; each receiver gets its
				// messages in the order of a sender's Sends.
				for _, a := range hs {
					for _, b := range hs {
						if a == b {
							continue
						}
						msg := fmt.Sprintf("from %s to %s", a.ID(), b.ID())
						if err := a.Send(t.Context(), b.ID(), []byte(msg)); err != nil {
							t.Fatalf("Send: %v", err)
						}
						// Send returned: the message is already queued.
						select {
						case m := <-b.Inbound():
							if m.From != a.ID() || string(m.Data) != msg || m.Announcement {
								t.Fatalf("got %+v", m)
							}
						default:
							t.Fatal("Send returned before the receiver queued the message")
						}
					}
				}

				// Every host broadcasts; every other one receives it.
				for i, a := range hs {
					waitTopicPeers(t, a, slices.Delete(slices.Clone(hs), i, i+1)...)
					msg := "announce from " + a.ID()
					if err := a.Broadcast(t.Context(), []byte(msg)); err != nil {
						t.Fatalf("Broadcast: %v", err)
					}
					for _, b := range hs {
						if b != a {
							expectMsg(t, b, a, msg, true)
						}
					}
					expectEmpty(t, a) // our own announcement is not delivered back
				}

				st := hs[0].Stats()
				if st.MessagesOut != uint64(n-1) || st.MessagesIn != uint64(n-1) ||
					st.AnnouncementsOut != 1 || st.AnnouncementsIn != uint64(n-1) || st.BytesOut == 0 || st.BytesIn == 0 {
					t.Fatalf("stats %+v", st)
				}
				for r, c := range st.Rejected {
					if c != 0 {
						t.Fatalf("rejected %q: %d", r, c)
					}
				}
			})
		}
	}
}

// TestLargeMessage sends a message above libp2p's default 16 MiB stream
// memory limit: the resource manager limits follow MaxMessageBytes.
func TestLargeMessage(t *testing.T) {
	t.Parallel()
	const max = 20 << 20
	a := newTestHost(t, tcpAddrs, func(c *Config) { c.MaxMessageBytes = max })
	b := newTestHost(t, tcpAddrs, func(c *Config) { c.MaxMessageBytes = max })
	joinAll(t, nil, a, b)
	connectMesh(t, a, b)
	data := make([]byte, max)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := a.Send(t.Context(), b.ID(), data); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, b); !bytes.Equal(m.Data, data) {
		t.Fatal("large message corrupted")
	}
	err := a.Send(t.Context(), b.ID(), make([]byte, max+1))
	mustErrIs(t, err, ErrTooLarge)

	// A receiver whose whole host may use 16 MiB refuses the memory for it.
	c := newTestHost(t, tcpAddrs, func(c *Config) { c.MaxMessageBytes = max; c.MemoryLimit = 16 << 20 })
	joinAll(t, nil, a, b, c)
	connectMesh(t, a, c)
	err = a.Send(t.Context(), c.ID(), data)
	mustErrIs(t, err, ErrRejected)
	waitRejected(t, c, ReasonResourceLimit, 1)
	if err := a.Send(t.Context(), c.ID(), []byte("small")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, c, a, "small", false)
}

func TestAddrsAndPeers(t *testing.T) {
	t.Parallel()
	a := newTestHost(t, append(slices.Clone(tcpAddrs), quicAddrs...), nil)
	b := newTestHost(t, tcpAddrs, nil)
	addrs := a.Addrs()
	if len(addrs) != 2 {
		t.Fatalf("addrs %v", addrs)
	}
	for _, s := range addrs {
		if !strings.HasSuffix(s, "/p2p/"+a.ID()) || strings.Contains(s, "/tcp/0/") || strings.Contains(s, "/udp/0/") {
			t.Fatalf("address %q", s)
		}
	}
	if len(a.Peers()) != 0 {
		t.Fatal("peers before connecting")
	}
	joinAll(t, nil, a, b)
	// Bootstrap lists may include ourselves and duplicates.
	if err := b.Connect(t.Context(), append(b.Addrs(), append(addrs, addrs...)...)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(b.Peers(), []string{a.ID()}) {
		t.Fatalf("peers %v", b.Peers())
	}
	if err := b.Connect(t.Context(), b.Addrs()); err != nil {
		t.Fatalf("Connect with only ourselves: %v", err)
	}
	if err := b.Connect(t.Context(), []string{"/ip4/127.0.0.1/tcp/1"}); err == nil {
		t.Fatal("Connect with an address without /p2p/ succeeded")
	}
}

func TestSendRefusedBeforeDialling(t *testing.T) {
	t.Parallel()
	a := newTestHost(t, tcpAddrs, func(c *Config) { c.MaxAnnounceBytes = 100 })
	b := newTestHost(t, tcpAddrs, nil)
	ctx := t.Context()
	mustErrIs(t, a.Send(ctx, b.ID(), []byte("x")), ErrNotJoined)
	mustErrIs(t, a.Broadcast(ctx, []byte("x")), ErrNotJoined)
	if err := a.Send(ctx, "not-a-peer-id", []byte("x")); err == nil {
		t.Fatal("Send to a bad peer ID succeeded")
	}
	mustJoin(t, a, Federation{ID: testFedID, Members: []string{a.ID()}})
	mustErrIs(t, a.Send(ctx, b.ID(), []byte("x")), ErrNotMember)
	mustErrIs(t, a.Connect(ctx, b.Addrs()), ErrNotMember)
	mustErrIs(t, a.Broadcast(ctx, make([]byte, 101)), ErrTooLarge)
	if err := a.Send(ctx, a.ID(), []byte("x")); err == nil {
		t.Fatal("Send to self succeeded")
	}
	if st := a.Stats(); st.GaterRefused != 0 {
		t.Fatalf("refusals before dialling reached the gater: %+v", st)
	}
	if err := a.Join(Federation{ID: "not hex", Members: []string{a.ID()}}); err == nil {
		t.Fatal("Join with a non-hex ID succeeded")
	}
	if err := a.Join(Federation{ID: testFedID, Members: []string{"bogus"}}); err == nil {
		t.Fatal("Join with a bad member succeeded")
	}
}

// TestGaterRefusesNonMembers: a non-member (and anyone, for a host that has
// not joined a federation) is refused at the connection.
func TestGaterRefusesNonMembers(t *testing.T) {
	for _, tr := range []struct {
		name   string
		listen []string
	}{{"tcp", tcpAddrs}, {"quic-v1", quicAddrs}} {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			a := newTestHost(t, tr.listen, nil)
			b := newTestHost(t, tr.listen, nil)
			n := newTestHost(t, tr.listen, nil)
			idle := newTestHost(t, tr.listen, nil) // never joins
			joinAll(t, nil, a, b)
			// n believes it is a member; a does not.
			mustJoin(t, n, Federation{ID: testFedID, Members: ids(a, n, idle)})

			err := n.Connect(t.Context(), a.Addrs())
			if err == nil {
				t.Fatal("non-member connected")
			}
			waitFor(t, "a's gater refusal", func() bool { return a.Stats().GaterRefused >= 1 })
			if err := n.Send(t.Context(), a.ID(), []byte("let me in")); err == nil {
				t.Fatal("non-member's Send succeeded")
			}
			if slices.Contains(a.Peers(), n.ID()) {
				t.Fatal("a is connected to the non-member")
			}

			// An idle host refuses everyone.
			if err := n.Connect(t.Context(), idle.Addrs()); err == nil {
				t.Fatal("connected to an idle host")
			}
			waitFor(t, "idle host's gater refusal", func() bool { return idle.Stats().GaterRefused >= 1 })

			// Members still talk.
			connectMesh(t, a, b)
			if err := b.Send(t.Context(), a.ID(), []byte("member")); err != nil {
				t.Fatal(err)
			}
			expectMsg(t, a, b, "member", false)
			expectEmpty(t, a)
		})
	}
}

// rawSend opens a ProtocolID stream from "from" to "to" (bypassing Send's
// checks), writes raw bytes, closes its write side unless hold, and returns
// the error the receiver's answer gives (nil: receiver closed cleanly).
func rawSend(t *testing.T, from, to *Host, raw []byte, hold bool) error {
	t.Helper()
	pid, _ := peer.Decode(to.ID())
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	s, err := from.Libp2pHost().NewStream(ctx, pid, ProtocolID)
	if err != nil {
		t.Fatalf("NewStream: %v", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := s.Write(raw); err != nil {
		return resetCause(s, err)
	}
	if !hold {
		if err := s.CloseWrite(); err != nil {
			return resetCause(s, err)
		}
	}
	return readEOF(s)
}

// wantCode checks that err is the receiver's reset with the given code.
func wantCode(t *testing.T, err error, code network.StreamErrorCode) {
	t.Helper()
	var se *network.StreamError
	if !errors.As(err, &se) || !se.Remote || se.ErrorCode != code {
		t.Fatalf("error %v, want remote reset code %#x", err, code)
	}
}

func TestBadStreamsAreRejected(t *testing.T) {
	t.Parallel()
	const max = 1 << 10
	a := newTestHost(t, tcpAddrs, func(c *Config) {
		c.MaxMessageBytes = max
		c.StreamTimeout = time.Second // for the stalled stream
	})
	b := newTestHost(t, tcpAddrs, func(c *Config) { c.MaxMessageBytes = max })
	joinAll(t, nil, a, b)
	connectMesh(t, a, b)

	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	tests := []struct {
		name   string
		raw    []byte
		hold   bool
		reason string
		code   network.StreamErrorCode
	}{
		{"oversized prefix", appendUvarint(nil, max+1), false, ReasonOversized, codeOversized},
		{"huge prefix", appendUvarint(nil, 1<<62), false, ReasonOversized, codeOversized},
		{"truncated", append(appendUvarint(nil, 100), make([]byte, 10)...), false, ReasonTruncated, codeTruncated},
		{"empty stream", nil, false, ReasonTruncated, codeTruncated},
		{"malformed prefix", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, false, ReasonMalformed, codeMalformed},
		{"trailing data", append(frame([]byte("ok")), 0), false, ReasonTrailingData, codeTrailingData},
		{"random garbage", garbage, false, "", 0},
		{"stalled", appendUvarint(nil, 10), true, ReasonReadError, codeReadError},
	}
	for i, tc := range tests {
		before := a.Stats().Rejected
		err := rawSend(t, b, a, tc.raw, tc.hold)
		if err == nil {
			t.Fatalf("%s: accepted", tc.name)
		}
		if tc.reason != "" {
			wantCode(t, err, tc.code)
			waitRejected(t, a, tc.reason, before[tc.reason]+1)
		} else {
			waitFor(t, tc.name+" rejection", func() bool {
				var sum, sumBefore uint64
				for r, c := range a.Stats().Rejected {
					sum += c
					sumBefore += before[r]
				}
				return sum > sumBefore
			})
			for r, c := range a.Stats().Rejected {
				if c > before[r] {
					t.Logf("%s rejected as %q (%v)", tc.name, r, err)
				}
			}
		}
		// The host still serves the next good message, and only it.
		good := fmt.Sprintf("good %d", i)
		if err := b.Send(t.Context(), a.ID(), []byte(good)); err != nil {
			t.Fatalf("after %s: %v", tc.name, err)
		}
		expectMsg(t, a, b, good, false)
		expectEmpty(t, a)
	}
	if st := a.Stats(); st.MessagesIn != uint64(len(tests)) {
		t.Fatalf("stats %+v", st)
	}
}

func TestAnnouncementValidation(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []string // (author, data) pairs b's Validate saw
	validate := func(from string, data []byte) error {
		mu.Lock()
		seen = append(seen, string(data))
		mu.Unlock()
		switch {
		case bytes.HasPrefix(data, []byte("bad")):
			return errors.New("undecodable")
		case bytes.HasPrefix(data, []byte("old")):
			return fmt.Errorf("round 1 is over: %w", ErrIgnore)
		}
		return nil
	}
	var rejects sync.Map // reason -> count, through OnReject
	onReject := func(from, reason string, err error) {
		v, _ := rejects.LoadOrStore(reason, new(int))
		mu.Lock()
		*v.(*int)++
		mu.Unlock()
	}
	a := newTestHost(t, tcpAddrs, nil)
	b := newTestHost(t, tcpAddrs, func(c *Config) { c.OnReject = onReject })
	// a's own Validate accepts everything, so that the bad announcements leave it.
	mustJoin(t, a, Federation{ID: testFedID, Members: ids(a, b)})
	mustJoin(t, b, Federation{ID: testFedID, Members: ids(a, b), Validate: validate})
	connectMesh(t, a, b)
	waitTopicPeers(t, a, b)

	if err := a.Broadcast(t.Context(), []byte("bad announcement")); err != nil {
		t.Fatal(err)
	}
	waitRejected(t, b, ReasonAnnounceInvalid, 1)
	if err := a.Broadcast(t.Context(), []byte("old announcement")); err != nil {
		t.Fatal(err)
	}
	waitRejected(t, b, ReasonAnnounceIgnored, 1)
	if err := a.Broadcast(t.Context(), []byte("good announcement")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, b, a, "good announcement", true)
	expectEmpty(t, b)
	v, ok := rejects.Load(ReasonAnnounceInvalid)
	mu.Lock()
	if !ok || *v.(*int) != 1 {
		t.Errorf("OnReject saw %v invalid announcements", v)
	}
	mu.Unlock()

	// Our own Validate refuses our own bad Broadcast, uncounted.
	if err := b.Broadcast(t.Context(), []byte("bad from b")); err == nil {
		t.Fatal("Broadcast of an invalid announcement succeeded")
	}
	if got := rejected(b, ReasonAnnounceInvalid); got != 1 {
		t.Fatalf("own invalid broadcast counted: %d", got)
	}
}

// TestBackpressure: a full Inbound makes a direct message wait until the
// stream deadline and fail, and drops announcements.
func TestBackpressure(t *testing.T) {
	t.Parallel()
	a := newTestHost(t, tcpAddrs, func(c *Config) {
		c.InboundBuffer = 1
		c.StreamTimeout = time.Second
	})
	b := newTestHost(t, tcpAddrs, nil)
	joinAll(t, nil, a, b)
	connectMesh(t, a, b)
	waitTopicPeers(t, b, a)

	if err := b.Send(t.Context(), a.ID(), []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := b.Broadcast(t.Context(), []byte("dropped")); err != nil {
		t.Fatal(err)
	}
	waitRejected(t, a, ReasonAnnounceDropped, 1)
	start := time.Now()
	err := b.Send(t.Context(), a.ID(), []byte("second"))
	mustErrIs(t, err, ErrRejected)
	if !strings.Contains(err.Error(), ReasonInboundFull) || time.Since(start) < 500*time.Millisecond {
		t.Fatalf("Send failed with %v after %v", err, time.Since(start))
	}
	waitRejected(t, a, ReasonInboundFull, 1)
	expectMsg(t, a, b, "first", false)
	if err := b.Send(t.Context(), a.ID(), []byte("third")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, a, b, "third", false)
}

// TestRedial: Connect's addresses stay in the peerstore, so a Send after the
// connection dropped dials again. (No wait for the disconnection to be seen
// everywhere: gossipsub may itself redial a peer whose connection it was
// told about late.)
func TestRedial(t *testing.T) {
	t.Parallel()
	a := newTestHost(t, tcpAddrs, nil)
	b := newTestHost(t, tcpAddrs, nil)
	joinAll(t, nil, a, b)
	connectMesh(t, a, b)
	pa, _ := peer.Decode(a.ID())
	pb, _ := peer.Decode(b.ID())
	_ = b.Libp2pHost().Network().ClosePeer(pa)
	_ = a.Libp2pHost().Network().ClosePeer(pb)
	// a dialled b through Connect, whose addresses it keeps.
	if err := a.Send(t.Context(), b.ID(), []byte("again")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, b, a, "again", false)
}

// TestJoinReplacesMembership: a second Join replaces the members (closing
// connections to removed ones) and moves to the new topic.
func TestJoinReplacesMembership(t *testing.T) {
	t.Parallel()
	a := newTestHost(t, tcpAddrs, nil)
	b := newTestHost(t, tcpAddrs, nil)
	c := newTestHost(t, tcpAddrs, nil)
	joinAll(t, nil, a, b, c)
	connectMesh(t, a, b, c)

	const newFed = "beef"
	mustJoin(t, a, Federation{ID: newFed, Members: ids(a, c)})
	mustJoin(t, c, Federation{ID: newFed, Members: ids(a, c)})
	waitFor(t, "a to drop b", func() bool { return !slices.Contains(a.Peers(), b.ID()) })
	if err := b.Send(t.Context(), a.ID(), []byte("still there?")); err == nil {
		t.Fatal("removed member's Send succeeded")
	}
	mustErrIs(t, a.Send(t.Context(), b.ID(), []byte("x")), ErrNotMember)

	if got := a.ps.GetTopics(); !slices.Equal(got, []string{TopicName(newFed)}) {
		t.Fatalf("a subscribed to %v", got)
	}
	waitTopicPeers(t, a, c)
	if err := a.Broadcast(t.Context(), []byte("new topic")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, c, a, "new topic", true)
	if err := c.Send(t.Context(), a.ID(), []byte("direct")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, a, c, "direct", false)
	expectEmpty(t, b)
}

func TestPSK(t *testing.T) {
	t.Parallel()
	psk1 := bytes.Repeat([]byte{1}, PSKSize)
	psk2 := bytes.Repeat([]byte{2}, PSKSize)
	withPSK := func(psk []byte) func(*Config) {
		return func(c *Config) { c.PSK = psk }
	}
	a := newTestHost(t, tcpAddrs, withPSK(psk1))
	b := newTestHost(t, tcpAddrs, withPSK(psk1))
	c := newTestHost(t, tcpAddrs, withPSK(psk2))
	// Without listen addresses, a private host listens on TCP only.
	if got := (Config{PSK: psk1}).withDefaults().ListenAddrs; !slices.Equal(got, DefaultPrivateListenAddrs) {
		t.Fatalf("default private listen addresses %v", got)
	}
	joinAll(t, nil, a, b, c)
	connectMesh(t, a, b)
	if err := b.Send(t.Context(), a.ID(), []byte("private")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, a, b, "private", false)
	// The handshake fails on garbage, at once or at a read timeout.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := c.Connect(ctx, a.Addrs()); err == nil || slices.Contains(a.Peers(), c.ID()) {
		t.Fatalf("host with another PSK connected (%v)", err)
	}

	for _, cfg := range []Config{
		{Key: testKey(t), PSK: psk1, ListenAddrs: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}},
		{Key: testKey(t), PSK: psk1, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}},
	} {
		if _, err := New(t.Context(), cfg); !errors.Is(err, ErrPSKWithQUIC) {
			t.Fatalf("New with PSK and QUIC: %v", err)
		}
	}
	if _, err := New(t.Context(), Config{Key: testKey(t), PSK: []byte("short")}); err == nil {
		t.Fatal("New with a 5-byte PSK succeeded")
	}
}

// TestMetrics: with a Registerer, libp2p's metrics (resource manager
// included) land in it; two hosts may share one registry.
func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a := newTestHost(t, tcpAddrs, func(c *Config) { c.Registerer = reg })
	b := newTestHost(t, tcpAddrs, func(c *Config) { c.Registerer = reg })
	joinAll(t, nil, a, b)
	connectMesh(t, a, b)
	if err := a.Send(t.Context(), b.ID(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, want := range []string{"libp2p_rcmgr_streams", "libp2p_swarm_connections_opened_total"} {
		if !slices.Contains(names, want) {
			t.Errorf("metric %s missing from %v", want, names)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Key: testKey(t), ConnLow: 10, ConnHigh: 5},
		{Key: testKey(t), MaxMessageBytes: -1},
		{Key: testKey(t), MaxMessageBytes: 2 << 30},
		{Key: testKey(t), ListenAddrs: []string{"not a multiaddr"}},
		{Key: testKey(t), MemoryLimit: -1},
	} {
		if h, err := New(t.Context(), cfg); err == nil {
			h.Close()
			t.Fatalf("New accepted %+v", cfg)
		}
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	a, err := New(ctx, Config{Key: testKey(t), ListenAddrs: tcpAddrs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b := newTestHost(t, tcpAddrs, nil)
	joinAll(t, nil, a, b)
	connectMesh(t, a, b)
	if err := b.Send(t.Context(), a.ID(), []byte("queued")); err != nil {
		t.Fatal(err)
	}
	cancel() // closes a
	select {
	case <-a.done:
	case <-time.After(waitTimeout):
		t.Fatal("cancelling New's context did not close the host")
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The queued message is still readable, then the channel is closed.
	if m, ok := <-a.Inbound(); !ok || string(m.Data) != "queued" {
		t.Fatalf("got %+v, %v", m, ok)
	}
	if _, ok := <-a.Inbound(); ok {
		t.Fatal("Inbound not closed")
	}
	mustErrIs(t, a.Send(t.Context(), b.ID(), []byte("x")), ErrClosed)
	mustErrIs(t, a.Broadcast(t.Context(), []byte("x")), ErrClosed)
	mustErrIs(t, a.Join(Federation{ID: testFedID, Members: ids(a, b)}), ErrClosed)
	if err := b.Send(t.Context(), a.ID(), []byte("x")); err == nil {
		t.Fatal("Send to a closed host succeeded")
	}
}

// TestMDNS: members find each other on the LAN; a non-member found by mDNS
// is not dialled. Skipped where multicast does not work (some sandboxes).
func TestMDNS(t *testing.T) {
	t.Parallel()
	withMDNS := func(c *Config) { c.MDNS = true }
	a := newTestHost(t, tcpAddrs, withMDNS)
	b := newTestHost(t, tcpAddrs, withMDNS)
	n := newTestHost(t, tcpAddrs, withMDNS)
	joinAll(t, nil, a, b)
	mustJoin(t, n, Federation{ID: testFedID, Members: ids(n)})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !slices.Contains(a.Peers(), b.ID()) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Skip("no mDNS discovery within 5 s: multicast unavailable here?")
		}
	}
	if err := a.Send(t.Context(), b.ID(), []byte("found you")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, b, a, "found you", false)
	if slices.Contains(a.Peers(), n.ID()) || slices.Contains(n.Peers(), a.ID()) {
		t.Fatal("connected to a non-member found by mDNS")
	}
	if st := n.Stats(); st.GaterRefused != 0 {
		t.Fatalf("non-member's mDNS finds reached the gater: %+v", st)
	}
}
