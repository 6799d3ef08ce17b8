package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedrank/fedrank/daemon"
	"github.com/fedrank/fedrank/genesis"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/storage"
	"github.com/fedrank/fedrank/task"
)

// lockedBuffer is a bytes.Buffer that the daemon's goroutines may log into
// while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// initHome runs `node init` on a new home listening on a free local TCP
// port and returns the home and its peer ID.
func initHome(t *testing.T) (home, id string) {
	t.Helper()
	home = filepath.Join(t.TempDir(), "home")
	code, stdout, stderr := runCLI("init", "--home", home, "--listen", "/ip4/127.0.0.1/tcp/0")
	if code != exitOK {
		t.Fatalf("node init: exit %d, stderr %s", code, stderr)
	}
	id = strings.TrimSpace(stdout)
	if strings.Count(stdout, "\n") != 1 {
		t.Errorf("node init printed %q, want one line", stdout)
	}
	if _, err := peer.Decode(id); err != nil {
		t.Fatalf("node init printed %q: %v", id, err)
	}
	return home, id
}

func TestInitTwice(t *testing.T) {
	home, id := initHome(t)
	for _, f := range []string{daemon.KeyFile, daemon.ConfigFile} {
		if _, err := os.Stat(filepath.Join(home, f)); err != nil {
			t.Error(err)
		}
	}
	key, err := os.ReadFile(filepath.Join(home, daemon.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI("init", "--home", home)
	if code != exitFailure || stdout != "" || !strings.Contains(stderr, "refusing to overwrite") {
		t.Errorf("second node init: exit %d, stdout %q, stderr %q; want exit 1 refusing to overwrite", code, stdout, stderr)
	}
	if again, _ := os.ReadFile(filepath.Join(home, daemon.KeyFile)); !bytes.Equal(again, key) {
		t.Error("the second init changed the key")
	}
	if code, stdout, _ := runCLI("id", "--home", home); code != exitOK || strings.TrimSpace(stdout) != id {
		t.Errorf("node id: exit %d, stdout %q; want %s", code, stdout, id)
	}
}

func TestDaemonCommandFlagErrors(t *testing.T) {
	home, _ := initHome(t)
	empty := t.TempDir()
	fed := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(fed, []byte("name = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"init"}, "missing --home"},
		{[]string{"init", "--home", filepath.Join(empty, "h"), "--listen", "/ip4/nope"}, "invalid --listen"},
		{[]string{"run"}, "missing --home"},
		{[]string{"run", "--home", empty}, "invalid --home"},
		{[]string{"run", "--home", home, "--log-format", "xml"}, "invalid --log-format"},
		{[]string{"run", "--home", home, "--log-level", "loud"}, "invalid --log-level"},
		{[]string{"run", "--home", home, "--bootstrap", "/ip4/127.0.0.1/tcp/1"}, "invalid --bootstrap"},
		{[]string{"run", "--home", home, "--federation", filepath.Join(empty, "none.toml")}, "invalid --federation"},
		{[]string{"run", "--home", home, "--federation", fed}, "invalid --federation"},
		{[]string{"status"}, "missing --home"},
		{[]string{"status", "--home", empty}, "invalid --home"},
		{[]string{"status", "--home", home, "extra"}, `unexpected argument "extra"`},
		{[]string{"id", "--home", empty}, "invalid --home"},
		{[]string{"export", "--home", home, "--round", "1"}, "missing --out"},
		{[]string{"export", "--home", home, "--out", "x"}, "missing --round"},
		{[]string{"export", "--home", home, "--round", "0", "--out", "x"}, "invalid --round"},
		{[]string{"export", "--home", home, "--round", "-1", "--out", "x"}, "-round"},
		{[]string{"evaluate"}, "missing --model"},
		{[]string{"evaluate", "--model", filepath.Join(empty, "none")}, "invalid --model"},
		{[]string{"evaluate", "--model", fed, "--data", filepath.Join(empty, "none")}, "invalid --data"},
	} {
		code, stdout, stderr := runCLI(tc.args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("node %q: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
	for _, cmd := range []string{"init", "run", "status", "id", "export", "evaluate"} {
		if code, _, stderr := runCLI(cmd, "-h"); code != exitOK || !strings.Contains(stderr, "usage: node "+cmd) {
			t.Errorf("node %s -h: exit %d, stderr %q", cmd, code, stderr)
		}
	}
}

// statusJSON runs `node status --json` and decodes it.
func statusJSON(t *testing.T, home string) (daemon.Status, map[string]any) {
	t.Helper()
	code, stdout, stderr := runCLI("status", "--home", home, "--json")
	if code != exitOK {
		t.Fatalf("node status --json: exit %d, stderr %s", code, stderr)
	}
	var s daemon.Status
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("node status --json: %v\n%s", err, stdout)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatal(err)
	}
	return s, m
}

func TestStatusFreshHome(t *testing.T) {
	home, id := initHome(t)
	code, stdout, stderr := runCLI("status", "--home", home)
	if code != exitOK {
		t.Fatalf("node status: exit %d, stderr %s", code, stderr)
	}
	for _, want := range []string{"peer", id, "stopped", "none", "round"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("node status does not show %q:\n%s", want, stdout)
		}
	}
	s, m := statusJSON(t, home)
	if s.Daemon.ID != id || s.Daemon.Running || s.Daemon.Federation != "" || s.Daemon.Round != 0 {
		t.Errorf("status of a fresh home: %+v", s.Daemon)
	}
	// The shape scripts rely on: report.json's fields plus "daemon".
	for _, k := range []string{"scenario", "seed", "config", "model", "rounds", "final_accuracy", "daemon"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status --json has no %q", k)
		}
	}
	if r, ok := m["rounds"].([]any); !ok || len(r) != 0 {
		t.Errorf(`status --json "rounds" = %v, want []`, m["rounds"])
	}
	d, _ := m["daemon"].(map[string]any)
	for _, k := range []string{"running", "id", "round", "done"} {
		if _, ok := d[k]; !ok {
			t.Errorf("status --json daemon has no %q: %v", k, d)
		}
	}
}

// startDaemon runs `node run` with args in the background until the returned
// stop is called, and waits for its API file. stop cancels it and returns
// its exit code.
func startDaemon(t *testing.T, home string, args ...string) (stop func() int, logs *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs = new(lockedBuffer)
	var stdout lockedBuffer
	done := make(chan int, 1)
	go func() { done <- runDaemon(ctx, append([]string{"--home", home}, args...), &stdout, logs) }()
	api := filepath.Join(home, daemon.APIFile)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(api); err == nil {
			break
		}
		select {
		case code := <-done:
			cancel()
			t.Fatalf("node run exited %d before serving its API:\n%s", code, logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("node run: no %s after 30 s:\n%s", api, logs)
		}
	}
	stopped := false
	stop = func() int {
		if stopped {
			return exitOK
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			return code
		case <-time.After(30 * time.Second):
			t.Fatalf("node run did not stop 30 s after its context was cancelled:\n%s", logs)
			return -1
		}
	}
	t.Cleanup(func() { stop() })
	return stop, logs
}

func TestRunIdle(t *testing.T) {
	home, id := initHome(t)
	stop, logs := startDaemon(t, home, "--log-format", "json")

	s, _ := statusJSON(t, home)
	if !s.Daemon.Running || s.Daemon.ID != id || s.Daemon.Federation != "" {
		t.Errorf("status of the running idle daemon: %+v", s.Daemon)
	}
	code, stdout, stderr := runCLI("status", "--home", home)
	if code != exitOK || !strings.Contains(stdout, "running") {
		t.Errorf("node status: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI("id", "--home", home)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != exitOK || lines[0] != id || len(lines) < 2 {
		t.Fatalf("node id of a running daemon: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, l := range lines[1:] {
		if !strings.HasSuffix(l, "/p2p/"+id) {
			t.Errorf("node id: address %q does not end in /p2p/%s", l, id)
		}
		if _, err := peer.AddrInfoFromString(l); err != nil {
			t.Errorf("node id: address %q: %v", l, err)
		}
	}

	if code := stop(); code != exitOK {
		t.Fatalf("node run: exit %d after cancel, want 0:\n%s", code, logs)
	}
	if !strings.Contains(logs.String(), `"level":"INFO"`) {
		t.Errorf("--log-format json: the logs are not JSON:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(home, daemon.APIFile)); err == nil {
		t.Error("the api file outlives the daemon")
	}
	s, _ = statusJSON(t, home)
	if s.Daemon.Running || s.Daemon.ID != id {
		t.Errorf("status after shutdown: %+v", s.Daemon)
	}
	if code, stdout, _ := runCLI("id", "--home", home); code != exitOK || strings.TrimSpace(stdout) != id {
		t.Errorf("node id of a stopped daemon: exit %d, stdout %q", code, stdout)
	}
}

// writeGenesis runs `node genesis` and returns the file and the federation id.
func writeGenesis(t *testing.T, agg string, members []string, extra ...string) (string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "genesis.toml")
	code, stdout, stderr := runCLI(genesisArgs(out, agg, members, extra...)...)
	if code != exitOK {
		t.Fatalf("node genesis: exit %d, stderr %s", code, stderr)
	}
	return out, strings.TrimSpace(stdout)
}

func TestRunAggregator(t *testing.T) {
	home, id := initHome(t)
	file, fed := writeGenesis(t, id, peerIDs(t, 2), "--rounds", "3")
	stop, logs := startDaemon(t, home, "--federation", file)

	s, _ := statusJSON(t, home)
	if !s.Daemon.Running || s.Daemon.Role != "aggregator" || s.Daemon.Federation != fed || s.Scenario != "frl-mnist" {
		t.Errorf("status of the running aggregator: %+v (scenario %q)", s.Daemon, s.Scenario)
	}
	if code := stop(); code != exitOK {
		t.Fatalf("node run: exit %d after cancel, want 0:\n%s", code, logs)
	}
	s, _ = statusJSON(t, home)
	if s.Daemon.Running || s.Daemon.Role != "aggregator" || s.Daemon.Federation != fed {
		t.Errorf("status from the store: %+v", s.Daemon)
	}
	// A restart without --federation resumes the store's federation.
	stop, logs = startDaemon(t, home)
	if s, _ := statusJSON(t, home); !s.Daemon.Running || s.Daemon.Federation != fed {
		t.Errorf("status after a restart: %+v", s.Daemon)
	}
	if code := stop(); code != exitOK {
		t.Fatalf("node run (restarted): exit %d after cancel, want 0:\n%s", code, logs)
	}
}

// TestExportEvaluate makes the store of a stopped aggregator that committed
// round 1 (its model: the initial one), then exports and scores it.
func TestExportEvaluate(t *testing.T) {
	home, id := initHome(t)
	file, fed := writeGenesis(t, id, peerIDs(t, 2))
	g, raw, err := genesis.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := g.BuildTask(task.Data{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := tk.InitialModel()
	if err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(filepath.Join(home, daemon.StoreDir), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := st.PutModel(m)
	if err == nil {
		err = st.PutGenesis(fed, raw)
	}
	if err == nil {
		err = st.PutResult(storage.Result{Round: 1, ModelHash: h, Advanced: true, Accepted: 2,
			Rejected: map[string]int{"late": 1}, Eval: &storage.Eval{Accuracy: 0.5, Loss: 1, Samples: 10}})
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, daemon.GenesisFile), raw, 0o600); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runCLI("status", "--home", home)
	if code != exitOK || !strings.Contains(stdout, "late 1") || !strings.Contains(stdout, "0.5000") ||
		!strings.Contains(stdout, hex.EncodeToString(h)[:12]) {
		t.Errorf("node status: exit %d, stderr %q, stdout:\n%s", code, stderr, stdout)
	}

	out := filepath.Join(t.TempDir(), "model.safetensors")
	code, stdout, stderr = runCLI("export", "--home", home, "--round", "1", "--out", out)
	if code != exitOK {
		t.Fatalf("node export: exit %d, stderr %s", code, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := "round 1 model " + hex.EncodeToString(h) + " -> " + out + " (" + strconv.Itoa(len(b)) + " bytes)\n"
	if stdout != want {
		t.Errorf("node export printed %q, want %q", stdout, want)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("exported file: %v, %v; want mode 0644", fi.Mode(), err)
	}
	if _, _, meta, err := model.DecodeDenseSafetensors(b); err != nil || meta["fedrank.federation"] != fed {
		t.Errorf("exported file: metadata %v, %v", meta, err)
	}
	if code, _, stderr := runCLI("export", "--home", home, "--round", "2", "--out", out); code != exitFailure {
		t.Errorf("node export --round 2 (no such round): exit %d, stderr %q; want 1", code, stderr)
	}

	code, stdout, stderr = runCLI("evaluate", "--model", out)
	var acc, loss float64
	var n int
	if code != exitOK {
		t.Fatalf("node evaluate: exit %d, stderr %s", code, stderr)
	}
	if k, err := fmt.Sscanf(stdout, "accuracy %f loss %f samples %d\n", &acc, &loss, &n); err != nil || k != 3 || n != 10000 || acc <= 0 || acc > 1 {
		t.Errorf("node evaluate printed %q (%v)", stdout, err)
	}
	code, stdout, stderr = runCLI("evaluate", "--model", out, "--json")
	var ej struct {
		Accuracy float64 `json:"accuracy"`
		Loss     float64 `json:"loss"`
		Samples  int     `json:"samples"`
	}
	if code != exitOK || json.Unmarshal([]byte(stdout), &ej) != nil || ej.Samples != 10000 ||
		fmt.Sprintf("%.4f %.4f", ej.Accuracy, ej.Loss) != fmt.Sprintf("%.4f %.4f", acc, loss) {
		t.Errorf("node evaluate --json: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
