package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/fedrank/fedrank/p2p"
	"github.com/fedrank/fedrank/wire"
)

// syncBuffer is a log sink safe for concurrent writes and reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// count returns the number of log lines holding every one of needles.
func (b *syncBuffer) count(needles ...string) int {
	n := 0
	for line := range strings.Lines(b.String()) {
		all := true
		for _, s := range needles {
			if !strings.Contains(line, s) {
				all = false
				break
			}
		}
		if all {
			n++
		}
	}
	return n
}

// lines returns the log lines holding every one of needles.
func (b *syncBuffer) lines(needles ...string) []string {
	var out []string
	for line := range strings.Lines(b.String()) {
		all := true
		for _, s := range needles {
			all = all && strings.Contains(line, s)
		}
		if all {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// waitFor polls cond every 10 ms until it holds or within passes.
func waitFor(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// scrapeMetrics reads a Prometheus text exposition into series → value,
// the series written as the exposition writes it: `name{label="value"}`.
func scrapeMetrics(api string) (map[string]float64, error) {
	resp, err := httpClient.Get(api + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// series names a one-label series as the exposition writes it.
func series(name, reason string) string { return fmt.Sprintf("%s{reason=%q}", name, reason) }

// sumOf adds every series of the metric name.
func sumOf(m map[string]float64, name string) float64 {
	s := 0.0
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// getStatus reads the running daemon's /status.
func getStatus(api string) (Status, error) {
	var s Status
	resp, err := httpClient.Get(api + "/status")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return s, err
	}
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /status: %s: %s", resp.Status, b)
	}
	return s, json.Unmarshal(b, &s)
}

// testPeer is a libp2p host driven by the test: a member (or an outsider)
// that sends what it likes and collects what it receives.
type testPeer struct {
	h    *p2p.Host
	key  crypto.PrivKey
	id   string
	acks chan *wire.UpdateAck
}

// newTestPeer starts a host with key on 127.0.0.1, joined to federation fed
// with the given member list (what this peer believes; the daemon has its
// own), and drains its inbound messages: UpdateAcks go to acks.
func newTestPeer(t testing.TB, key crypto.PrivKey, fed string, members []string) *testPeer {
	t.Helper()
	h, err := p2p.New(t.Context(), p2p.Config{
		Key:             key,
		ListenAddrs:     []string{"/ip4/127.0.0.1/tcp/0"},
		MaxMessageBytes: 4 << 20,
		Logger:          slog.New(slog.DiscardHandler),
		StreamTimeout:   10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := h.Join(p2p.Federation{ID: fed, Members: members}); err != nil {
		t.Fatal(err)
	}
	p := &testPeer{h: h, key: key, id: h.ID(), acks: make(chan *wire.UpdateAck, 64)}
	go func() {
		for m := range h.Inbound() {
			env, err := wire.Unmarshal(m.Data, 0)
			if err != nil {
				continue
			}
			if ack := env.GetUpdateAck(); ack != nil {
				select {
				case p.acks <- ack:
				default:
				}
			}
		}
	}()
	return p
}

// nextAck waits for the next UpdateAck this peer receives.
func (p *testPeer) nextAck(t testing.TB, within time.Duration) *wire.UpdateAck {
	t.Helper()
	select {
	case a := <-p.acks:
		return a
	case <-time.After(within):
		t.Fatalf("peer %s: no UpdateAck within %v", p.id, within)
		return nil
	}
}

// connectTo dials addrs until identify completes (a member of the daemon's
// federation is admitted at once).
func (p *testPeer) connectTo(ctx context.Context, addrs []string) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return p.h.Connect(cctx, addrs)
}
