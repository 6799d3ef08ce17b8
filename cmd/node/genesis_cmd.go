package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/genesis"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/task"
)

// Defaults of `node genesis` for the settings the genesis requires.
const (
	defaultGenesisSeed     = 1 // the built-in scenarios' default seed, as node sim
	defaultRoundTimeout    = 2 * time.Minute
	defaultGenesisScenario = "frl-mnist"
)

// baseModelFile is the base model of lora-mnist and frl-lora-mnist that
// `node genesis` writes next to the genesis file.
const baseModelFile = "base.safetensors"

// flagForGenesisField maps a genesis.Error's field (the TOML key) to the flag
// of `node genesis` that sets it.
var flagForGenesisField = map[string]string{
	"name":               "name",
	"aggregator":         "aggregator",
	"members":            "members",
	"scenario":           "scenario",
	"aggregation":        "aggregation",
	"seed":               "seed",
	"rounds":             "rounds",
	"per_round":          "per-round",
	"quorum":             "quorum",
	"min_updates":        "min-updates",
	"round_timeout":      "round-timeout",
	"retry":              "retry",
	"silence_timeout":    "silence-timeout",
	"max_update_bytes":   "max-update-bytes",
	"max_model_bytes":    "max-model-bytes",
	"chunk_bytes":        "chunk-bytes",
	"bootstrap":          "bootstrap",
	"task.lr":            "lr",
	"task.epochs":        "epochs",
	"task.batch":         "batch",
	"task.rank":          "rank",
	"task.compression":   "compression",
	"task.ranking_codec": "ranking-codec",
}

func genesisSpec(name string) cmdSpec {
	return cmdSpec{
		name:     name,
		synopsis: name + " --out FILE --aggregator PEERID --members ID,ID,... [flags]",
		about: []string{
			"Writes a federation's genesis file (TOML, every setting written out and commented)",
			"and prints the federation id. Settings left out take their defaults; 0 means the",
			"default where the genesis says so. For lora-mnist and frl-lora-mnist (which fine-tune",
			"the same base) it also pre-trains the base model exactly as node sim does for the",
			"same --seed, and writes it as " + baseModelFile + " next to FILE. Refuses to overwrite",
			"FILE (or the base model) unless --force.",
		},
		required: []string{"out", "aggregator", "members"},
	}
}

// genesisOptions is the parsed command line of `node genesis`.
type genesisOptions struct {
	g       genesis.Genesis
	out     string
	dataDir string
	force   bool
}

// parseGenesis parses the flags of `node genesis` into a genesis (not yet
// validated). As parseFlags, it reports syntax errors and -h itself (stop).
func parseGenesis(c cmdSpec, args []string, stderr io.Writer) (o genesisOptions, code int, stop bool) {
	g := &o.g
	p := &g.Task
	fl := newFlags(c.name)
	var members, bootstrap string
	roundTimeout := genesis.Duration(defaultRoundTimeout)
	fl.StringVar(&o.out, "out", "", "the genesis `file` to write")
	fl.StringVar(&g.Aggregator, "aggregator", "", "the peer `ID` of the aggregator (see node init, node id)")
	fl.StringVar(&members, "members", "", "comma-separated peer `IDs` of the trainers")
	fl.StringVar(&g.Name, "name", "", "a `name` for people, part of the id (default: the scenario's name)")
	fl.StringVar(&g.Scenario, "scenario", defaultGenesisScenario, "the task: "+strings.Join(genesis.Scenarios(), ", "))
	fl.StringVar(&g.AggregatorName, "aggregation", "", "the aggregation `name` (default: the scenario's)")
	fl.Uint64Var(&g.Seed, "seed", defaultGenesisSeed, "seed of the initial model and of trainer selection, as node sim --seed")
	fl.Uint64Var(&g.Rounds, "rounds", 0, "rounds to run (0: forever)")
	fl.IntVar(&g.PerRound, "per-round", 0, "trainers selected per round (default: every member)")
	fl.IntVar(&g.Quorum, "quorum", 0, "accepted updates that close a round early (default: --per-round)")
	fl.IntVar(&g.MinUpdates, "min-updates", 0, "fewest accepted updates that advance the model at the deadline (default 1)")
	fl.TextVar(&roundTimeout, "round-timeout", roundTimeout, "time from a round's start to its deadline, a `duration`")
	fl.TextVar(&g.Retry, "retry", genesis.Duration(0), "first resend delay, a `duration` (default: --round-timeout/10)")
	fl.TextVar(&g.SilenceTimeout, "silence-timeout", genesis.Duration(0), "a trainer that hears nothing from the aggregator this long reports it, a `duration` (default: 2 x --round-timeout)")
	fl.Int64Var(&g.MaxUpdateBytes, "max-update-bytes", 0, "largest update payload accepted, `bytes` (default 8 MiB)")
	fl.Int64Var(&g.MaxModelBytes, "max-model-bytes", 0, "largest model transfer accepted, `bytes` (default 64 MiB)")
	fl.Int64Var(&g.ChunkBytes, "chunk-bytes", 0, "models larger than this travel in chunks of this many `bytes` (default 1 MiB)")
	fl.StringVar(&bootstrap, "bootstrap", "", "comma-separated `multiaddrs` ending in /p2p/<peer ID> that peers dial at start (not part of the id)")
	fl.Float64Var(&p.LR, "lr", 0, "learning rate of local training (default: the scenario's)")
	fl.IntVar(&p.Epochs, "epochs", 0, "local epochs per round (default: the scenario's)")
	fl.IntVar(&p.Batch, "batch", 0, "local mini-batch `size` (default: the scenario's)")
	fl.IntVar(&p.Rank, "rank", 0, fmt.Sprintf("adapter `rank`, lora-mnist (default %d) and frl-lora-mnist (default %d) only", task.DefaultLoRA(0).Rank, task.DefaultFRLLoRA(0).Rank))
	fl.StringVar(&p.RankingCodec, "ranking-codec", "", "how trainers send rankings, frl-mnist and frl-lora-mnist only: packed, delta (lossless, coded against the global model), bucket:B or bucket-mask:B (lossy) (default "+task.DefaultRankingCodec+")")
	fl.StringVar(&p.Compression, "compression", "", "upload codec of adapter factors, lora-mnist only: fp32, fp16 or int8 (default int8)")
	fl.StringVar(&o.dataDir, "data", "", "`dir`ectory of the MNIST IDX files to pre-train the base model of lora-mnist or frl-lora-mnist on (default: the copy shipped with the Go module)")
	fl.BoolVar(&o.force, "force", false, "overwrite FILE (and the base model) if they exist")
	given, code, stop := parseFlags(fl, c, args, stderr)
	if stop {
		return o, code, true
	}
	g.RoundTimeout = roundTimeout
	g.Members = splitList(members)
	g.Bootstrap = splitList(bootstrap)
	if !given["name"] {
		g.Name = g.Scenario
	}
	if !given["per-round"] {
		g.PerRound = len(g.Members)
	}
	if !given["ranking-codec"] && g.Scenario == "frl-mnist" {
		// Written out: a genesis without the key means packed (the
		// default of the files made before this one), and keeps its id.
		p.RankingCodec = task.DefaultRankingCodec
	}
	if o.out == "" {
		return o, usageErr(stderr, c.name, "out", `"" names no file`), true
	}
	if given["data"] && !genesis.FineTunes(g.Scenario) {
		return o, usageErr(stderr, c.name, "data", "only %s read training data (to pre-train their base model), not %s", strings.Join(fineTuning(), " and "), g.Scenario), true
	}
	return o, exitOK, false
}

// genesisError prints an invalid genesis setting in terms of the flag that
// sets it, and returns exit code 2.
func genesisError(stderr io.Writer, cmd string, err error) int {
	var ge *genesis.Error
	if !errors.As(err, &ge) {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return exitUsage
	}
	if fl, ok := flagForGenesisField[ge.Field]; ok {
		return usageErr(stderr, cmd, fl, "%s (genesis %s)", ge.Msg, ge.Field)
	}
	fmt.Fprintf(stderr, "%s: invalid genesis %s: %s\n", cmd, ge.Field, ge.Msg)
	return exitUsage
}

// runGenesis is `node genesis` (and `node federation new`).
func runGenesis(name string, args []string, stdout, stderr io.Writer) int {
	c := genesisSpec(name)
	o, code, stop := parseGenesis(c, args, stderr)
	if stop {
		return code
	}
	g := &o.g
	lora := genesis.FineTunes(g.Scenario)
	basePath := filepath.Join(filepath.Dir(o.out), baseModelFile)
	if lora {
		// Validate everything else before the pre-training; the hash is
		// filled in once the base exists.
		g.Task.BaseModel = baseModelFile
		g.Task.BaseModelHash = strings.Repeat("0", 64)
	}
	if err := g.Validate(); err != nil {
		return genesisError(stderr, name, err)
	}
	targets := []string{o.out}
	if lora {
		targets = append(targets, basePath)
	}
	for _, p := range targets {
		st, err := os.Stat(p)
		switch {
		case err == nil && st.IsDir():
			return usageErr(stderr, name, "out", "%s is a directory", p)
		case err == nil && !o.force:
			return failure(stderr, name, fmt.Errorf("%s exists: refusing to overwrite it (--force overwrites)", p))
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return failure(stderr, name, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return failure(stderr, name, err)
	}

	if lora {
		dir, err := data.MNISTDir(o.dataDir)
		if err != nil {
			return usageErr(stderr, name, "data", "%s", strings.TrimPrefix(err.Error(), "data: "))
		}
		fmt.Fprintf(stderr, "%s: pre-training the base model of %s (seed %d)...\n", name, g.Scenario, g.PretrainSeed())
		file, err := pretrainBase(dir, o.dataDir == "", g.PretrainSeed())
		if err != nil {
			return failure(stderr, name, err)
		}
		sum := sha256.Sum256(file)
		g.Task.BaseModelHash = hex.EncodeToString(sum[:])
		if err := writeFile(basePath, file, o.force); err != nil {
			return failure(stderr, name, err)
		}
	}
	b, err := g.Encode()
	if err != nil {
		return genesisError(stderr, name, err)
	}
	if err := writeFile(o.out, b, o.force); err != nil {
		return failure(stderr, name, err)
	}
	id := g.ID()
	fmt.Fprintln(stdout, id)
	what := o.out
	if lora {
		what += " and " + basePath
	}
	fmt.Fprintf(stderr, "%s: wrote %s: federation %q, %s, %d members, %d per round\n",
		name, what, g.Name, g.Scenario, len(g.Members), g.PerRound)
	return exitOK
}

// pretrainBase pre-trains the base model of lora-mnist and frl-lora-mnist
// (the simulator's lora-mnist base; they share it) on the MNIST training
// set in dir exactly as the simulator does (simnet's loraBase): the same
// inputs, task.DefaultPretrain(seed), and, for the module's own MNIST copy
// (shared), the same cache in the user's cache directory. It returns the
// safetensors file.
func pretrainBase(dir string, shared bool, seed uint64) ([]byte, error) {
	train, _, err := data.LoadMNIST(dir)
	if err != nil {
		return nil, fmt.Errorf("loading MNIST from %s: %w", dir, err)
	}
	in, err := model.NewInputs(train, data.MNISTMean, data.MNISTStd)
	if err != nil {
		return nil, err
	}
	cache := ""
	if c, err := os.UserCacheDir(); err == nil && shared {
		cache = filepath.Join(c, "fedrank", "lora-mnist")
	}
	base, err := task.CachedPretrain(cache, task.DefaultPretrain(seed), in)
	if base == nil {
		return nil, err
	}
	// An error with a base is a cache that could not be written: the base
	// is good.
	return base.Encode()
}

// fineTuning lists the scenarios that fine-tune a base model.
func fineTuning() []string {
	var out []string
	for _, n := range genesis.Scenarios() {
		if genesis.FineTunes(n) {
			out = append(out, n)
		}
	}
	return out
}

// writeFile writes b to path (mode 0644): atomically over an existing file
// with force, else only if path does not exist.
func writeFile(path string, b []byte, force bool) error {
	if force {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists: refusing to overwrite it (--force overwrites)", path)
		}
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
