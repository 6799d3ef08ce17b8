package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/internal/splitmix"
	"github.com/fedrank/fedrank/simnet"
)

func runShardCLI(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := runShard(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

var mnistOnce struct {
	sync.Once
	dir         string
	train, test *data.Set
	err         error
}

// realMNIST is the MNIST the simulator loads by default.
func realMNIST(t *testing.T) (dir string, train, test *data.Set) {
	t.Helper()
	m := &mnistOnce
	m.Do(func() {
		if m.dir, m.err = data.MNISTDir(""); m.err == nil {
			m.train, m.test, m.err = data.LoadMNIST(m.dir)
		}
	})
	if m.err != nil {
		t.Fatalf("loading MNIST: %v", m.err)
	}
	return m.dir, m.train, m.test
}

// simulatorSizes builds the scenario's task as `node sim` would for these
// settings and returns the number of training samples of each simulated peer.
func simulatorSizes(t *testing.T, scenario, partition string, peers int, seed uint64) []int {
	t.Helper()
	cfg, sc, err := simnet.Resolve(simnet.Config{Scenario: scenario, Peers: peers, PerRound: 1, Seed: seed, Partition: partition})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := sc.Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sizes := make([]int, tk.NumClients())
	for c := range sizes {
		sizes[c] = tk.ClientSamples(c)
	}
	return sizes
}

// summary parses a line of runShard's stdout.
func summary(t *testing.T, line string) (name string, n int, counts []int) {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 3+data.MNISTClasses || f[2] != "samples" {
		t.Fatalf("summary line %q", line)
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("summary line %q: %v", line, err)
	}
	for c, s := range f[3:] {
		k, err := strconv.Atoi(strings.TrimPrefix(s, strconv.Itoa(c)+":"))
		if err != nil {
			t.Fatalf("summary line %q: class %d: %v", line, c, err)
		}
		counts = append(counts, k)
	}
	return f[0], n, counts
}

func sameSet(t *testing.T, what string, got, want *data.Set) {
	t.Helper()
	if got.N != want.N || got.Rows != want.Rows || got.Cols != want.Cols || got.Classes != want.Classes ||
		!bytes.Equal(got.Pixels, want.Pixels) || !bytes.Equal(got.Labels, want.Labels) {
		t.Errorf("%s: got %d images of %dx%d, want %d of %dx%d; pixels equal %v, labels equal %v", what,
			got.N, got.Rows, got.Cols, want.N, want.Rows, want.Cols,
			bytes.Equal(got.Pixels, want.Pixels), bytes.Equal(got.Labels, want.Labels))
	}
}

// subset is the Set of set's images at indices, in order.
func subset(set *data.Set, indices []int) *data.Set {
	out := &data.Set{N: len(indices), Rows: set.Rows, Cols: set.Cols, Classes: set.Classes, Pixels: []uint8{}, Labels: []uint8{}}
	for _, i := range indices {
		out.Pixels = append(out.Pixels, set.Image(i)...)
		out.Labels = append(out.Labels, set.Labels[i])
	}
	return out
}

// TestShardMatchesSimulator checks that peer i's shard holds exactly the
// training images the simulator gives its peer i for the same partition,
// peers and seed: the sizes come from the simulator's own task, the images
// from the partition derived as simnet derives it.
func TestShardMatchesSimulator(t *testing.T) {
	_, train, test := realMNIST(t)
	for _, tt := range []struct {
		partition string
		peers     int
		seed      uint64
		withTest  bool
	}{
		{"dirichlet:1.0", 20, 5, true},
		{"shards:2", 7, 3, false},
	} {
		t.Run(tt.partition, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "shards")
			args := []string{"--partition", tt.partition, "--peers", strconv.Itoa(tt.peers), "--seed", strconv.FormatUint(tt.seed, 10), "--out", out}
			if tt.withTest {
				args = append(args, "--test")
			}
			code, stdout, stderr := runShardCLI(args...)
			if code != exitOK {
				t.Fatalf("exit %d, stderr:\n%s", code, stderr)
			}
			want := simulatorSizes(t, "frl-mnist", tt.partition, tt.peers, tt.seed)
			spec, err := data.ParseSpec(tt.partition)
			if err != nil {
				t.Fatal(err)
			}
			parts, err := spec.Split(train.Labels, train.Classes, tt.peers, splitmix.Nth(tt.seed, 2))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(parts.Sizes(), want) {
				t.Fatalf("the test's own split has sizes %v, the simulator's %v", parts.Sizes(), want)
			}
			// The check has teeth: another seed derivation splits differently.
			if other, _ := spec.Split(train.Labels, train.Classes, tt.peers, tt.seed); slices.Equal(other.Sizes(), want) {
				t.Fatalf("the raw seed gives the simulator's sizes too")
			}

			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			wantLines := tt.peers
			if tt.withTest {
				wantLines++
			}
			if len(lines) != wantLines {
				t.Fatalf("%d summary lines, want %d:\n%s", len(lines), wantLines, stdout)
			}
			for i, idx := range parts {
				name := fmt.Sprintf("peer-%03d", i)
				got, err := data.LoadShard(filepath.Join(out, name))
				if err != nil {
					t.Fatal(err)
				}
				shard := subset(train, idx)
				sameSet(t, name, got, shard)
				if n, k, counts := summary(t, lines[i]); n != name || k != want[i] || !slices.Equal(counts, shard.Counts()) {
					t.Errorf("summary %q, want %s with %d samples, per class %v", lines[i], name, want[i], shard.Counts())
				}
			}
			if tt.withTest {
				got, err := data.LoadTestSet(filepath.Join(out, "test"))
				if err != nil {
					t.Fatal(err)
				}
				sameSet(t, "test set", got, test)
				if n, k, counts := summary(t, lines[len(lines)-1]); n != "test" || k != test.N || !slices.Equal(counts, test.Counts()) {
					t.Errorf("summary %q of the test set", lines[len(lines)-1])
				}
			} else if _, err := os.Stat(filepath.Join(out, "test")); err == nil {
				t.Error("test set written without --test")
			}
			if !strings.Contains(stderr, fmt.Sprintf("wrote %d shards", tt.peers)) || strings.Contains(stderr, "warning") {
				t.Errorf("stderr:\n%s", stderr)
			}
		})
	}
}

// TestShardDefaultSeedIsSimulators: leaving --seed out gives the shards of
// `node sim` with its seed left out.
func TestShardDefaultSeedIsSimulators(t *testing.T) {
	for _, name := range []string{simnet.DefaultScenario, "fedavg-mnist", "lora-mnist"} {
		sc, ok := simnet.LookupScenario(name)
		if !ok {
			t.Fatalf("no scenario %s", name)
		}
		if sc.Defaults.Seed != defaultShardSeed {
			t.Errorf("scenario %s's default seed is %d, node shard's %d", name, sc.Defaults.Seed, defaultShardSeed)
		}
	}
}

// fakeMNIST writes an MNIST directory of n training and m test images
// (28x28, labels cycling through the classes) and returns it.
func fakeMNIST(t *testing.T, n, m int) string {
	t.Helper()
	set := func(k int) *data.Set {
		s := &data.Set{N: k, Rows: 28, Cols: 28, Classes: 10, Pixels: make([]uint8, k*784), Labels: make([]uint8, k)}
		for i := range s.Pixels {
			s.Pixels[i] = uint8(i / 784)
		}
		for i := range s.Labels {
			s.Labels[i] = uint8(i % 10)
		}
		return s
	}
	dir := t.TempDir()
	train := set(n)
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	if err := data.WriteShard(dir, train, all); err != nil {
		t.Fatal(err)
	}
	if err := data.WriteTestSet(dir, set(m)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestShardEmptyPeers(t *testing.T) {
	dir := fakeMNIST(t, 40, 10)
	out := t.TempDir()
	code, stdout, stderr := runShardCLI("--data", dir, "--partition", "dirichlet:0.05", "--peers", "30", "--seed", "3", "--out", out)
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	var empty []string
	for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		name, n, _ := summary(t, line)
		got, err := data.LoadShard(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.N != n {
			t.Errorf("%s: %d images, summary says %d", name, got.N, n)
		}
		if n == 0 {
			empty = append(empty, name)
		}
	}
	if len(empty) == 0 {
		t.Fatal("no empty peer: pick another seed")
	}
	if want := fmt.Sprintf("warning: the dirichlet:0.05 split left %d of 30 peers without data, and their shards empty: %s\n",
		len(empty), strings.Join(empty, ", ")); !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
}

func TestShardNamesSortInPeerOrder(t *testing.T) {
	for _, n := range []int{1, 10, 1000, 1001, 12345} {
		names := shardNames(n)
		if !slices.IsSorted(names) || names[0] != "peer-"+strings.Repeat("0", len(names[0])-5) {
			t.Errorf("%d shards: names %s ... %s", n, names[0], names[n-1])
		}
	}
	if got := shardNames(1001)[1000]; got != "peer-1000" {
		t.Errorf("peer 1000 of 1001 is %s", got)
	}
	if got := shardNames(1000)[999]; got != "peer-999" {
		t.Errorf("peer 999 of 1000 is %s", got)
	}
}

func TestShardWarnsOfStaleShards(t *testing.T) {
	dir := fakeMNIST(t, 40, 10)
	out := t.TempDir()
	if code, _, stderr := runShardCLI("--data", dir, "--partition", "iid", "--peers", "5", "--out", out); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	code, _, stderr := runShardCLI("--data", dir, "--partition", "iid", "--peers", "3", "--out", out)
	if code != exitOK || !strings.Contains(stderr, "also holds peer-003, peer-004, from an earlier run") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

func TestShardUsageErrors(t *testing.T) {
	dir := fakeMNIST(t, 40, 10)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ok := []string{"--data", dir, "--partition", "iid", "--peers", "4", "--out", out}
	with := func(extra ...string) []string { return append(slices.Clone(ok), extra...) }
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--data", dir, "--peers", "4", "--out", out}, "missing --partition"},
		{[]string{"--data", dir, "--partition", "iid", "--out", out}, "missing --peers"},
		{[]string{"--data", dir, "--partition", "iid", "--peers", "4"}, "missing --out"},
		{with("--partition", "bogus"), `invalid --partition: partition "bogus": unknown kind "bogus"`},
		{with("--partition", "dirichlet:0"), "invalid --partition: partition \"dirichlet:0\": dirichlet alpha must be > 0"},
		{with("--partition", "shards:11"), "invalid --partition: shards split: 4 clients x 11 shards needs at least as many examples, have 40 (with --peers 4)"},
		{with("--peers", "0"), "invalid --peers: 0, must be at least 1"},
		{with("--peers", "-3"), "invalid --peers: -3, must be at least 1"},
		{with("--peers", "41"), "invalid --peers: 41 peers but the training set has only 40 images"},
		{with("--peers", "many"), `invalid value "many" for flag -peers`},
		{with("--seed", "-1"), `invalid value "-1" for flag -seed`},
		{with("--out", ""), `invalid --out: "" names no directory`},
		{with("--out", file), "invalid --out: mkdir " + file},
		{with("--out", filepath.Join(file, "sub")), "invalid --out:"},
		{with("--data", filepath.Join(dir, "nope")), "invalid --data: MNIST directory"},
		{with("--bogus"), "flag provided but not defined: -bogus"},
		{with("extra"), `unexpected argument "extra"`},
	} {
		code, stdout, stderr := runShardCLI(tt.args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, tt.want) {
			t.Errorf("node shard %q: exit %d, stdout %q, stderr %q; want exit 2 and a message with %q", tt.args, code, stdout, stderr, tt.want)
		}
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("bad usage left %d entries in --out", len(entries))
	}
}

func TestShardHelp(t *testing.T) {
	code, stdout, stderr := runShardCLI("-h")
	if code != exitOK || stdout != "" {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	for _, want := range []string{"usage: node shard --partition SPEC --peers N --out DIR", "--partition spec", "--peers n", "--out dir", "--seed seed", "(default 1)", "--data", "--test"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("help lacks %q:\n%s", want, stderr)
		}
	}
}

func TestShardFailures(t *testing.T) {
	// A corrupt MNIST file: the data cannot be read, exit 1.
	dir := fakeMNIST(t, 40, 10)
	if err := os.WriteFile(filepath.Join(dir, "train-labels-idx1-ubyte"), []byte("not IDX"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runShardCLI("--data", dir, "--partition", "iid", "--peers", "4", "--out", t.TempDir())
	if code != exitFailure || stdout != "" || !strings.Contains(stderr, "train-labels-idx1-ubyte") {
		t.Errorf("corrupt data: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	// A shard that cannot be written: a file where a peer's directory goes.
	dir = fakeMNIST(t, 40, 10)
	out := t.TempDir()
	if err := os.WriteFile(filepath.Join(out, "peer-002"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runShardCLI("--data", dir, "--partition", "iid", "--peers", "4", "--out", out)
	if code != exitFailure || !strings.Contains(stderr, "peer-002") || strings.Count(stdout, "\n") != 2 {
		t.Errorf("unwritable shard: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
