package p2p

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// attachMock starts n mocknet hosts with the fedrank services attached.
func attachMock(t *testing.T, n int, edit func(*Config)) (mocknet.Mocknet, []*Host) {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { _ = mn.Close() })
	hs := make([]*Host, n)
	for i := range hs {
		lh, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{Logger: quietLogger()}
		if edit != nil {
			edit(&cfg)
		}
		h, err := Attach(t.Context(), lh, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		hs[i] = h
	}
	return mn, hs
}

// TestMocknetNonMemberRejectedPerMessage: mocknet has no gater, so a
// non-member gets a connection; each of its messages is still refused.
func TestMocknetNonMemberRejectedPerMessage(t *testing.T) {
	t.Parallel()
	mn, hs := attachMock(t, 3, nil)
	a, b, n := hs[0], hs[1], hs[2]
	joinAll(t, nil, a, b)
	// n believes it is a member.
	mustJoin(t, n, Federation{ID: testFedID, Members: ids(a, b, n)})
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(a.Peers(), n.ID()) {
		t.Fatal("mocknet did not connect the non-member")
	}

	// Direct message: refused by the stream handler.
	if err := n.Send(t.Context(), a.ID(), []byte("direct from outsider")); err == nil {
		t.Fatal("non-member's Send succeeded")
	}
	waitRejected(t, a, ReasonNotMember, 1)

	// Announcement: refused by the validator (the forwarder and author are
	// not members), not delivered.
	waitTopicPeers(t, n, a)
	if err := n.Broadcast(t.Context(), []byte("announce from outsider")); err != nil {
		t.Fatal(err)
	}
	waitRejected(t, a, ReasonNotMember, 2)

	// Members still talk, and only their messages arrive.
	if err := b.Send(t.Context(), a.ID(), []byte("direct from member")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, a, b, "direct from member", false)
	waitTopicPeers(t, b, a)
	if err := b.Broadcast(t.Context(), []byte("announce from member")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, a, b, "announce from member", true)
	expectEmpty(t, a)
	if st := a.Stats(); st.GaterRefused != 0 || st.MessagesIn != 1 || st.AnnouncementsIn != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestAttachLeavesHostOpen: closing an attached Host stops our services only.
func TestAttachLeavesHostOpen(t *testing.T) {
	t.Parallel()
	mn, hs := attachMock(t, 2, nil)
	a, b := hs[0], hs[1]
	joinAll(t, nil, a, b)
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	var lh host.Host = a.Libp2pHost()
	if _, err := mn.ConnectPeers(lh.ID(), b.Libp2pHost().ID()); err != nil {
		t.Fatalf("underlying host closed with the attached services: %v", err)
	}
	if err := b.Send(t.Context(), a.ID(), []byte("x")); err == nil {
		t.Fatal("Send to closed services succeeded")
	}
}

// TestMocknetStalledStream: mocknet streams ignore deadlines; the handler's
// own timer still ends a stream whose message never comes.
func TestMocknetStalledStream(t *testing.T) {
	t.Parallel()
	mn, hs := attachMock(t, 2, func(c *Config) { c.StreamTimeout = 300 * time.Millisecond })
	a, b := hs[0], hs[1]
	joinAll(t, nil, a, b)
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	if err := rawSend(t, b, a, appendUvarint(nil, 10), true); err == nil {
		t.Fatal("stalled stream accepted")
	}
	waitRejected(t, a, ReasonReadError, 1)
	if err := b.Send(t.Context(), a.ID(), []byte("next")); err != nil {
		t.Fatal(err)
	}
	expectMsg(t, a, b, "next", false)
}
