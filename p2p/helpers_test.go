package p2p

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// testFedID is a federation id (hex) shared by the tests.
const testFedID = "f00d"

// waitTimeout bounds every wait on a condition; generous for -race on 2 cores.
const waitTimeout = 20 * time.Second

func testKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// tcpAddrs and quicAddrs listen on loopback only, ports chosen by the system.
var (
	tcpAddrs  = []string{"/ip4/127.0.0.1/tcp/0"}
	quicAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
)

// newTestHost starts a real host on loopback; edit adjusts the config.
func newTestHost(t testing.TB, listen []string, edit func(*Config)) *Host {
	t.Helper()
	cfg := Config{
		Key:         testKey(t),
		ListenAddrs: listen,
		UserAgent:   "fedrank/test",
		Logger:      quietLogger(),
		MemoryLimit: 256 << 20,
	}
	if edit != nil {
		edit(&cfg)
	}
	h, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

func ids(hs ...*Host) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.ID()
	}
	return out
}

// joinAll makes every host join one federation of all of them.
func joinAll(t testing.TB, validate func(string, []byte) error, hs ...*Host) {
	t.Helper()
	for _, h := range hs {
		mustJoin(t, h, Federation{ID: testFedID, Members: ids(hs...), Validate: validate})
	}
}

func mustJoin(t testing.TB, h *Host, f Federation) {
	t.Helper()
	if err := h.Join(f); err != nil {
		t.Fatalf("Join: %v", err)
	}
}

// connectMesh connects every pair of hosts.
func connectMesh(t testing.TB, hs ...*Host) {
	t.Helper()
	for i, h := range hs {
		var addrs []string
		for _, o := range hs[i+1:] {
			addrs = append(addrs, o.Addrs()...)
		}
		if len(addrs) == 0 {
			continue
		}
		if err := h.Connect(t.Context(), addrs); err != nil {
			t.Fatalf("Connect: %v", err)
		}
	}
}

// waitFor polls cond until it holds or waitTimeout passes. With P2P_DUMP=1
// in the environment a timeout also prints every goroutine's stack.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			if os.Getenv("P2P_DUMP") != "" {
				_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
			}
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitTopicPeers waits until h sees every other host subscribed to the topic,
// so that a Broadcast from h reaches them.
func waitTopicPeers(t testing.TB, h *Host, others ...*Host) {
	t.Helper()
	waitFor(t, "topic peers of "+h.ID(), func() bool {
		got := h.AnnouncePeers()
		for _, o := range others {
			if !slices.Contains(got, o.ID()) {
				return false
			}
		}
		return true
	})
}

// recv returns the next message of h's Inbound.
func recv(t testing.TB, h *Host) Message {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case m, ok := <-h.Inbound():
		if !ok {
			t.Fatal("Inbound closed")
		}
		return m
	case <-timer.C:
		t.Fatalf("no message on %s's Inbound", h.ID())
	}
	return Message{}
}

// expectMsg receives the next message and checks it.
func expectMsg(t testing.TB, h *Host, from *Host, data string, announcement bool) {
	t.Helper()
	m := recv(t, h)
	if m.From != from.ID() || string(m.Data) != data || m.Announcement != announcement {
		t.Fatalf("got %s (announcement %v) from %s, want %q (announcement %v) from %s",
			m.Data, m.Announcement, m.From, data, announcement, from.ID())
	}
}

// expectEmpty checks that nothing is queued on h's Inbound.
func expectEmpty(t testing.TB, h *Host) {
	t.Helper()
	select {
	case m := <-h.Inbound():
		t.Fatalf("unexpected message %q from %s (announcement %v)", m.Data, m.From, m.Announcement)
	default:
	}
}

func rejected(h *Host, reason string) uint64 { return h.Stats().Rejected[reason] }

// waitRejected waits until h counted at least n rejections for reason.
func waitRejected(t testing.TB, h *Host, reason string, n uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d %q rejections", n, reason), func() bool { return rejected(h, reason) >= n })
}

func mustErrIs(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}
