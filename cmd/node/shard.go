package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/internal/splitmix"
)

// Seeds of `node shard`, kept equal to the simulator's so that the shards of
// a seed are the partition `node sim` trains on with that seed.
const (
	// defaultShardSeed is the seed of the built-in MNIST scenarios, which
	// `node sim` uses when --seed is left out.
	defaultShardSeed uint64 = 1
	// partitionStream is simnet's seedPartition: the simulator splits the
	// training set with splitmix.Nth(seed, partitionStream) (simnet/builtin.go,
	// mnistData). TestShardMatchesSimulator checks the two agree.
	partitionStream uint64 = 2
)

// Names in the --out directory.
const (
	shardPrefix = "peer-"
	testSetDir  = "test"
)

// shardOptions is the parsed command line of `node shard`.
type shardOptions struct {
	spec    data.Spec
	peers   int
	out     string
	seed    uint64
	dataDir string
	test    bool
}

// parseShard parses the flags of `node shard`. As parseSim, it prints syntax
// errors, missing flags and -h itself, and returns a bad value as a
// *usageError for the caller to print.
func parseShard(args []string, stderr io.Writer) (shardOptions, error) {
	o := shardOptions{seed: defaultShardSeed}
	var partition string
	fs := flag.NewFlagSet("node shard", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&partition, "partition", "", "data partition `spec`, as node sim takes it: iid, dirichlet:ALPHA or shards:K (required)")
	fs.IntVar(&o.peers, "peers", 0, "number `n` of peers, one shard each (required)")
	fs.StringVar(&o.out, "out", "", "`dir`ectory to write peer-000, peer-001, ... into (required)")
	fs.Uint64Var(&o.seed, "seed", defaultShardSeed, "`seed` of the split: node sim with the same --seed, --partition and --peers trains on these shards")
	fs.StringVar(&o.dataDir, "data", "", "`dir`ectory of the MNIST IDX files (default: the copy shipped with the Go module)")
	fs.BoolVar(&o.test, "test", false, "also write the MNIST test set into DIR/test")

	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if errors.Is(err, flag.ErrHelp) {
		shardUsage(fs, stderr)
		return o, err
	}
	if err == nil {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for _, name := range []string{"partition", "peers", "out"} {
			if !given[name] {
				err = fmt.Errorf("missing --%s", name)
				break
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "node shard: %v\nRun 'node shard -h' for the flags.\n", err)
		return o, err
	}
	if o.spec, err = data.ParseSpec(partition); err != nil {
		return o, &usageError{"partition", strings.TrimPrefix(err.Error(), "data: ")}
	}
	if o.peers < 1 {
		return o, &usageError{"peers", fmt.Sprintf("%d, must be at least 1", o.peers)}
	}
	if o.out == "" {
		return o, &usageError{"out", `"" names no directory`}
	}
	return o, nil
}

var shardCmd = cmdSpec{
	name:     "node shard",
	synopsis: "node shard --partition SPEC --peers N --out DIR [flags]",
	about: []string{
		"Splits the MNIST training set among N peers exactly as `node sim` does for the",
		"same --partition, --peers and --seed, and writes each peer's share as MNIST IDX",
		"files (train-images-idx3-ubyte, train-labels-idx1-ubyte) into DIR/peer-000,",
		"DIR/peer-001, ...: the data directories of daemon members. Prints one line per",
		"shard: its directory, its samples and its samples per class.",
	},
}

func shardUsage(fs *flag.FlagSet, w io.Writer) { cmdUsage(fs, shardCmd, w) }

// runShard is `node shard`.
func runShard(args []string, stdout, stderr io.Writer) int {
	o, err := parseShard(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if ue := (*usageError)(nil); errors.As(err, &ue) {
		fmt.Fprintf(stderr, "node shard: %v\n", ue)
		return exitUsage
	}
	if err != nil {
		return exitUsage // parseShard has said what is wrong
	}
	if err := checkWritableDir(o.out); err != nil {
		fmt.Fprintf(stderr, "node shard: invalid --out: %v\n", err)
		return exitUsage
	}
	dir, err := data.MNISTDir(o.dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "node shard: invalid --data: %s\n", strings.TrimPrefix(err.Error(), "data: "))
		return exitUsage
	}
	train, test, err := data.LoadMNIST(dir)
	if err != nil {
		fmt.Fprintf(stderr, "node shard: %v\n", err)
		return exitFailure
	}
	if o.peers > train.N {
		fmt.Fprintf(stderr, "node shard: invalid --peers: %d peers but the training set has only %d images\n", o.peers, train.N)
		return exitUsage
	}
	parts, err := o.spec.Split(train.Labels, train.Classes, o.peers, splitmix.Nth(o.seed, partitionStream))
	if err != nil {
		fmt.Fprintf(stderr, "node shard: invalid --partition: %s (with --peers %d)\n", strings.TrimPrefix(err.Error(), "data: "), o.peers)
		return exitUsage
	}

	names := shardNames(o.peers)
	line := shardLiner(len(names[len(names)-1]), slices.Max(append(parts.Sizes(), test.N)))
	var empty []string
	total := 0
	for i, idx := range parts {
		if err := data.WriteShard(filepath.Join(o.out, names[i]), train, idx); err != nil {
			fmt.Fprintf(stderr, "node shard: %v\n", err)
			return exitFailure
		}
		counts := make([]int, train.Classes)
		for _, j := range idx {
			counts[train.Labels[j]]++
		}
		fmt.Fprintln(stdout, line(names[i], len(idx), counts))
		if len(idx) == 0 {
			empty = append(empty, names[i])
		}
		total += len(idx)
	}
	if len(empty) > 0 {
		fmt.Fprintf(stderr, "node shard: warning: the %s split left %d of %d peers without data, and their shards empty: %s\n",
			o.spec, len(empty), o.peers, strings.Join(empty, ", "))
	}
	if o.test {
		if err := data.WriteTestSet(filepath.Join(o.out, testSetDir), test); err != nil {
			fmt.Fprintf(stderr, "node shard: %v\n", err)
			return exitFailure
		}
		fmt.Fprintln(stdout, line(testSetDir, test.N, test.Counts()))
	}
	if stale := staleShards(o.out, names); len(stale) > 0 {
		fmt.Fprintf(stderr, "node shard: warning: %s also holds %s, from an earlier run with more peers\n",
			o.out, strings.Join(stale, ", "))
	}
	what := fmt.Sprintf("%d shards (%d of the %d training images)", o.peers, total, train.N)
	if o.test {
		what += fmt.Sprintf(" and the test set (%d images)", test.N)
	}
	fmt.Fprintf(stderr, "node shard: wrote %s in %s\n", what, o.out)
	return exitOK
}

// shardNames are the directory names of n shards: peer-000, peer-001, ...,
// with as many digits as the last one needs (three at least), so that they
// sort in peer order.
func shardNames(n int) []string {
	digits := max(3, len(strconv.Itoa(n-1)))
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%0*d", shardPrefix, digits, i)
	}
	return names
}

// shardLiner returns the formatter of the summary lines: a shard's name, its
// number of samples and its samples per class, as
// "peer-007  612 samples  0:61  1:70 ...", in columns wide enough for names
// of nameWidth bytes and counts up to maxCount.
func shardLiner(nameWidth, maxCount int) func(name string, n int, counts []int) string {
	w := len(strconv.Itoa(maxCount))
	return func(name string, n int, counts []int) string {
		var b strings.Builder
		fmt.Fprintf(&b, "%-*s  %*d samples ", nameWidth, name, w, n)
		for c, k := range counts {
			fmt.Fprintf(&b, " %d:%-*d", c, w, k)
		}
		return strings.TrimRight(b.String(), " ")
	}
}

// staleShards lists the peer-* directories in out that this run did not
// write, which a member could take for a current shard.
func staleShards(out string, written []string) []string {
	entries, err := os.ReadDir(out)
	if err != nil {
		return nil
	}
	ours := make(map[string]bool, len(written))
	for _, name := range written {
		ours[name] = true
	}
	var stale []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), shardPrefix) && !ours[e.Name()] {
			stale = append(stale, e.Name())
		}
	}
	return stale
}
