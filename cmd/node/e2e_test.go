package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/daemon"
	"github.com/fedrank/fedrank/genesis"
	"github.com/fedrank/fedrank/node"
)

// The end-to-end tests build the node binary and run federations of real
// daemon processes on 127.0.0.1: each peer has its own home, key, Badger
// store and MNIST shard, and they talk over libp2p (TCP and QUIC, Noise,
// gossipsub, direct streams). They wait on conditions (the store, the status
// endpoint), never on fixed sleeps, and kill every process they started.

// buildNode builds the binary once per test run.
var buildNode = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "fedrank-e2e-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "node")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// e2eCluster is a federation of daemon processes.
type e2eCluster struct {
	t     testing.TB
	bin   string
	dir   string
	homes []string // homes[0] is the aggregator's
	ids   []string
	procs []*e2eProc
	gen   string // the genesis file
	// run, if set for peer i, is the command that runs its daemon instead
	// of bin (an emulator and a binary for another architecture).
	run map[int][]string
}

type e2eProc struct {
	cmd  *exec.Cmd
	logs *os.File
	done chan struct{}
	err  error
}

// cli runs the binary and returns its stdout; a failure fails the test.
func (c *e2eCluster) cli(args ...string) string {
	c.t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("node %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// newE2ECluster initialises n homes (home 0: the aggregator, with the test
// set; homes 1..n-1: trainers, each with shard i-1 of an IID split of
// MNIST into shardPeers) and writes their configs.
func newE2ECluster(t testing.TB, n, shardPeers int) *e2eCluster {
	bin, err := buildNode()
	if err != nil {
		t.Fatal(err)
	}
	c := &e2eCluster{t: t, bin: bin, dir: t.TempDir(), procs: make([]*e2eProc, n)}
	t.Cleanup(c.killAll)
	shards := filepath.Join(c.dir, "shards")
	c.cli("shard", "--partition", "iid", "--peers", strconv.Itoa(shardPeers), "--out", shards, "--test")
	for i := range n {
		home := filepath.Join(c.dir, fmt.Sprintf("peer%d", i))
		id := strings.TrimSpace(c.cli("init", "--home", home, "--listen", "/ip4/127.0.0.1/tcp/0"))
		c.homes, c.ids = append(c.homes, home), append(c.ids, id)
		path := filepath.Join(home, daemon.ConfigFile)
		cfg, err := daemon.LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		// A fixed port, so that a restarted peer is found where it was.
		port, err := freeTCPPort()
		if err != nil {
			t.Fatal(err)
		}
		cfg.P2P.Listen = []string{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)}
		cfg.Store.LowMemory = true
		if i == 0 {
			cfg.Data.Test = filepath.Join(shards, "test")
		} else {
			cfg.Data.Train = filepath.Join(shards, fmt.Sprintf("peer-%03d", i-1))
		}
		b, err := cfg.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// genesis writes the federation file with the aggregator as bootstrap.
func (c *e2eCluster) genesis(args ...string) {
	c.t.Helper()
	cfg, err := daemon.LoadConfig(filepath.Join(c.homes[0], daemon.ConfigFile))
	if err != nil {
		c.t.Fatal(err)
	}
	c.gen = filepath.Join(c.dir, "federation.toml")
	base := []string{"genesis", "--force", "--out", c.gen, "--aggregator", c.ids[0],
		"--members", strings.Join(c.ids[1:], ","),
		"--bootstrap", cfg.P2P.Listen[0] + "/p2p/" + c.ids[0]}
	c.cli(append(base, args...)...)
}

// start runs peer i's daemon, with extra environment variables.
func (c *e2eCluster) start(i int, env ...string) {
	c.t.Helper()
	if p := c.procs[i]; p != nil && !p.exited() {
		c.t.Fatalf("peer %d is already running", i)
	}
	logs, err := os.OpenFile(filepath.Join(c.dir, fmt.Sprintf("peer%d.log", i)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	os.Remove(filepath.Join(c.homes[i], daemon.APIFile)) // a killed daemon leaves it behind
	argv := []string{c.bin}
	if r, ok := c.run[i]; ok {
		argv = slices.Clone(r)
	}
	argv = append(argv, "run", "--home", c.homes[i], "--federation", c.gen)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &e2eProc{cmd: cmd, logs: logs, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logs.Close()
		close(p.done)
	}()
	c.procs[i] = p
	// Serving: from now on status reads the daemon, not its store.
	c.waitFor(fmt.Sprintf("peer %d's api file", i), 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(c.homes[i], daemon.APIFile))
		return err == nil || p.exited()
	})
}

func (p *e2eProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits for peer i's process to end, and reports whether a SIGKILL ended it.
func (c *e2eCluster) waitExit(i int, within time.Duration) (killed bool) {
	c.t.Helper()
	p := c.procs[i]
	select {
	case <-p.done:
	case <-time.After(within):
		c.t.Fatalf("peer %d did not exit within %v; log:\n%s", i, within, c.log(i))
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return true
	}
	return false
}

// stop ends peer i with SIGINT and checks that it shut down cleanly.
func (c *e2eCluster) stop(i int) {
	c.t.Helper()
	p := c.procs[i]
	if p == nil || p.exited() {
		return
	}
	p.cmd.Process.Signal(os.Interrupt)
	c.waitExit(i, 30*time.Second)
	if p.err != nil {
		c.t.Errorf("peer %d: %v; log:\n%s", i, p.err, c.log(i))
	}
}

func (c *e2eCluster) killAll() {
	for _, p := range c.procs {
		if p != nil && !p.exited() {
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

func (c *e2eCluster) log(i int) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("peer%d.log", i)))
	return string(b)
}

// status reads peer i's status (from the daemon or its store).
func (c *e2eCluster) status(i int) (daemon.Status, error) { return daemon.QueryStatus(c.homes[i]) }

// waitFor polls cond every 50 ms until it holds, failing after within.
func (c *e2eCluster) waitFor(what string, within time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		running := 0
		for _, p := range c.procs {
			if p != nil && !p.exited() {
				running++
			}
		}
		if running == 0 || time.Now().After(deadline) {
			var logs strings.Builder
			for i := range c.homes {
				fmt.Fprintf(&logs, "--- peer %d\n%s", i, tail(c.log(i), 30))
			}
			c.t.Fatalf("gave up waiting for %s (%d processes running, %v)\n%s", what, running, within, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// roundHashes returns peer i's model hash per closed round (1..).
func (c *e2eCluster) roundHashes(i int) []string {
	s, err := c.status(i)
	if err != nil {
		return nil
	}
	var out []string
	for _, r := range s.Rounds {
		for len(out) < int(r.Round)-1 {
			out = append(out, "") // a round this peer did not hear
		}
		out = append(out, r.ModelHash)
	}
	return out
}

// runAll starts every peer, waits until all have finished round r and the
// aggregator has evaluated it, checks that every peer holds the
// aggregator's model hash for rounds 1..r (errors start with what), and
// returns the aggregator's hashes.
func (c *e2eCluster) runAll(r int, what string) []string {
	c.t.Helper()
	for i := range c.homes {
		c.start(i)
	}
	c.waitRound(r, 120*time.Second, c.all()...)
	c.waitEval(r, 60*time.Second)
	want := c.roundHashes(0)
	for i := range c.homes {
		if got := c.roundHashes(i); !slices.Equal(got[:r], want[:r]) {
			c.t.Errorf("%speer %d's round hashes %v, aggregator's %v", what, i, got, want)
		}
	}
	return want
}

// waitEval waits until the aggregator (peer 0, which holds the test set)
// has evaluated round r's model: evaluation runs after the commit, off the
// event loop, so a result can be visible before its accuracy.
func (c *e2eCluster) waitEval(r int, within time.Duration) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("the evaluation of round %d", r), within, func() bool {
		s, err := c.status(0)
		return err == nil && len(s.Rounds) >= r && s.Rounds[r-1].Loss > 0
	})
}

// waitRound waits until every peer in peers has heard round r's result.
func (c *e2eCluster) waitRound(r int, within time.Duration, peers ...int) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("round %d at peers %v", r, peers), within, func() bool {
		for _, i := range peers {
			if h := c.roundHashes(i); len(h) < r || h[r-1] == "" {
				return false
			}
		}
		return true
	})
}

func (c *e2eCluster) all() []int {
	out := make([]int, len(c.homes))
	for i := range out {
		out[i] = i
	}
	return out
}

// metric scrapes one value from peer i's /metrics.
func (c *e2eCluster) metric(i int, name string) (float64, bool) {
	b, err := os.ReadFile(filepath.Join(c.homes[i], daemon.APIFile))
	if err != nil {
		return 0, false
	}
	resp, err := http.Get(strings.TrimSpace(string(b)) + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// selected returns the members selected in round r (as the aggregator
// selects them), as peer indexes.
func (c *e2eCluster) selected(r uint64) []int {
	c.t.Helper()
	g, _, err := genesis.Load(c.gen)
	if err != nil {
		c.t.Fatal(err)
	}
	nc, err := g.NodeConfig(c.ids[0])
	if err != nil {
		c.t.Fatal(err)
	}
	var out []int
	for _, p := range node.SelectUniform(r, nc.Members, nc.PerRound, nc.Seed) {
		out = append(out, slices.Index(c.ids, p))
	}
	return out
}

// copyDir copies a directory tree, keeping file modes (a key stays 0600).
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(to, info.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, info.Mode().Perm())
	})
}

// copyHomes copies the initialised homes (keys, configs; nothing run yet)
// so that the same federation can run twice.
func copyHomes(t testing.TB, c *e2eCluster) *e2eCluster {
	t.Helper()
	twin := *c
	twin.dir = t.TempDir()
	twin.procs = make([]*e2eProc, len(c.homes))
	twin.homes = nil
	for i, h := range c.homes {
		dst := filepath.Join(twin.dir, fmt.Sprintf("peer%d", i))
		if err := copyDir(h, dst); err != nil {
			t.Fatal(err)
		}
		twin.homes = append(twin.homes, dst)
	}
	t.Cleanup(twin.killAll)
	return &twin
}

// TestE2EFederation runs five daemon processes (an aggregator and four
// trainers, each with its own home and MNIST shard) through five FRL
// rounds twice from the same homes: once undisturbed, and once with
// SIGKILLs at the three places a crash can hurt: the aggregator after it
// accepted two of round 2's four updates, a trainer in the middle of its
// round-3 training, and the aggregator just before it writes round 4's
// commit. Every crashed peer is restarted from its store. Both runs must
// end with the same model hash for every round at every peer: no accepted
// update was lost, and each round's result is the one its updates give.
func TestE2EFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; the race run skips it")
	}
	c := newE2ECluster(t, 5, 100)
	c.genesis("--scenario", "frl-mnist", "--rounds", "5", "--per-round", "4", "--quorum", "4",
		"--round-timeout", "60s", "--retry", "300ms", "--seed", "1", "--ranking-codec", "delta")
	twin := copyHomes(t, c)

	// The undisturbed run.
	want := twin.runAll(5, "undisturbed run: ")
	s, _ := twin.status(0)
	if last := s.Rounds[len(s.Rounds)-1]; last.Accuracy < 0.5 {
		t.Errorf("round 5 accuracy %.4f on the aggregator's test set, want > 0.5 (FRL learns)", last.Accuracy)
	}
	// The trainers sent delta-coded rankings: a packed update with its
	// envelope takes more than a packed update's bytes, and trainers that
	// resend (the retry is short, and CI machines are slow) add to a
	// round's bytes, so the smallest round must be well below it (rounds
	// without resends measure 83-86%).
	packed := aggregate.Spec{Seed: 1, Sizes: []int{784, 300, 100, 10}}.FRLUpdateSize()
	smallest := math.Inf(1)
	for _, r := range s.Rounds {
		if r.Accepted > 0 {
			f := float64(r.BytesUp) / float64(r.Accepted) / float64(packed)
			t.Logf("round %d: %.1f%% of a packed update per update received", r.Round, 100*f)
			smallest = min(smallest, f)
		}
	}
	if smallest > 0.92 {
		t.Errorf("every round received %.1f%% or more of a packed update per update: not delta-coded", 100*smallest)
	}
	for i := range twin.homes {
		twin.stop(i)
	}

	// The same federation with crashes.
	c.start(0, daemon.FaultEnv+"=accepted:2:2")
	victim := c.selected(3)[0] // a trainer selected in round 3
	for i := 1; i < 5; i++ {
		if i == victim {
			c.start(i, daemon.FaultEnv+"=train:3")
		} else {
			c.start(i)
		}
	}
	if !c.waitExit(0, 120*time.Second) {
		t.Fatalf("the aggregator did not die by SIGKILL: %v\n%s", c.procs[0].err, c.log(0))
	}
	s, err := c.status(0) // from the store of the dead daemon
	if err != nil {
		t.Fatal(err)
	}
	if s.Daemon.Running || s.Daemon.Round != 2 || s.Daemon.StoreUpdates != 2 {
		t.Fatalf("after the kill in round 2: running=%v round %d with %d stored updates, want round 2 with 2",
			s.Daemon.Running, s.Daemon.Round, s.Daemon.StoreUpdates)
	}
	c.start(0, daemon.FaultEnv+"=commit:4")
	c.waitFor("the restarted aggregator to report its recovered updates", 60*time.Second, func() bool {
		v, ok := c.metric(0, "fedrank_updates_recovered_total")
		return ok && v == 2
	})
	if !c.waitExit(victim, 120*time.Second) {
		t.Fatalf("trainer %d did not die by SIGKILL: %v", victim, c.procs[victim].err)
	}
	c.start(victim)
	if !c.waitExit(0, 120*time.Second) {
		t.Fatalf("the aggregator did not die by SIGKILL before round 4's commit: %v\n%s", c.procs[0].err, c.log(0))
	}
	s, err = c.status(0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Daemon.Round != 4 || s.Daemon.StoreUpdates != 4 || len(s.Rounds) != 3 {
		t.Fatalf("after the kill at round 4's commit: round %d with %d stored updates and %d results, want round 4 with 4 and 3",
			s.Daemon.Round, s.Daemon.StoreUpdates, len(s.Rounds))
	}
	c.start(0)
	c.waitRound(5, 120*time.Second, c.all()...)
	for i := range c.homes {
		if got := c.roundHashes(i); !slices.Equal(got[:5], want[:5]) {
			t.Errorf("with crashes: peer %d's round hashes %v, the undisturbed run's %v", i, got, want)
		}
	}
	if !strings.Contains(c.log(0), `msg="recovered an open round" peer=`) {
		t.Errorf("the aggregator's log does not mention its recovery")
	}
	for i := range c.homes {
		c.stop(i)
	}
	// Every round lists the hashes of the four updates it used.
	s, _ = c.status(0)
	for _, r := range s.Rounds {
		if r.Accepted != 4 {
			t.Errorf("round %d: %d accepted updates, want 4", r.Round, r.Accepted)
		}
	}
	if _, err := hex.DecodeString(want[4]); err != nil || len(want[4]) != 64 {
		t.Errorf("round 5 hash %q is not a SHA-256", want[4])
	}
}

// TestE2ELoRA runs the same five daemons with the lora-mnist task (a base
// model pre-trained on digits 0-4, rank-8 adapters, lora-svd) for three
// rounds, with one trainer (peer 4, `[train] rank = 2` in its node config)
// training and sending rank-2 adapters, as a small board would; then it
// exports the final model and evaluates it.
func TestE2ELoRA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; the race run skips it")
	}
	c := newE2ECluster(t, 5, 100)
	c.genesis("--scenario", "lora-mnist", "--rank", "8", "--rounds", "3", "--per-round", "4", "--quorum", "4",
		"--round-timeout", "60s", "--retry", "300ms")
	editConfig(t, c.homes[4], func(cfg *daemon.Config) { cfg.Train.Rank = 2 })
	c.runAll(3, "")
	// Every round merged all four updates, the rank-2 one included, and
	// the rank-2 trainer's uploads are about a quarter of the others'.
	agg, err := c.status(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range agg.Rounds {
		if r.Accepted != 4 {
			t.Errorf("round %d: %d updates merged, want 4 (the rank-2 trainer's included)", r.Round, r.Accepted)
		}
	}
	low, full := payloadBytes(t, c.log(4)), payloadBytes(t, c.log(1))
	if len(low) != 3 || len(full) != 3 || low[0] >= full[0]/3 || low[0] < full[0]/6 {
		t.Errorf("payload bytes per round: rank-2 trainer %v, rank-8 trainer %v; want 3 rounds each, the rank-2 ones a quarter (a third to a sixth)", low, full)
	}
	out := filepath.Join(c.dir, "lora-round3.safetensors")
	c.cli("export", "--home", c.homes[0], "--round", "3", "--out", out)
	for i := range c.homes {
		c.stop(i)
	}
	line := c.cli("evaluate", "--model", out, "--data", filepath.Join(c.dir, "shards", "test"))
	var acc float64
	if _, err := fmt.Sscanf(line, "accuracy %f", &acc); err != nil {
		t.Fatalf("evaluate printed %q: %v", line, err)
	}
	s, _ := c.status(0)
	if got := s.Rounds[2].Accuracy; fmt.Sprintf("%.4f", got) != fmt.Sprintf("%.4f", acc) {
		t.Errorf("the exported model scores %.4f, the aggregator's evaluation of round 3 %.4f", acc, got)
	}
	if acc < 0.5 {
		t.Errorf("lora-mnist after 3 rounds: accuracy %.4f, want above the base's ~0.5", acc)
	}
}

// payloadBytes returns the payload sizes a trainer's log reports, one per
// local training.
func payloadBytes(t *testing.T, log string) []int {
	t.Helper()
	var out []int
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `msg="local training done"`) {
			continue
		}
		_, rest, ok := strings.Cut(line, " payload_bytes=")
		if !ok {
			t.Fatalf("a training line without payload_bytes: %s", line)
		}
		f := strings.Fields(rest)
		n, err := strconv.Atoi(f[0])
		if err != nil {
			t.Fatalf("payload_bytes in %q: %v", line, err)
		}
		out = append(out, n)
	}
	return out
}
