// Package genesis reads, checks and writes a federation's genesis file: the
// TOML file that defines a federation (its members and aggregator, its task
// and the protocol's settings) and that every peer of the federation runs
// with. The SHA-256 of its canonical encoding (ID) is the federation id that
// every message carries.
//
// # File
//
// The keys are the snake_case names of Genesis's fields (see each field) and
// a [task] table of TaskParams. Parse is strict: an unknown key, a key in the
// wrong case, a value of the wrong type, a negative seed or rounds, or a
// setting that Validate refuses is an error. Zero or absent settings take
// their defaults (documented per field); Parse fills them in, so that Encode
// writes every setting out.
//
// # Federation id
//
// ID is the lower-case hex SHA-256 of
//
//	"fedrank-genesis/v1\n" + JSON
//
// where JSON is the compact JSON object (Go's encoding/json, HTML escaping
// off, no trailing newline) of the genesis with every default filled in and
// these members, in this order:
//
//	name               string
//	aggregator         string
//	members            array of strings, sorted (byte-wise ascending)
//	scenario           string
//	aggregation        string (the default's name when the file has none)
//	seed               integer
//	rounds             integer
//	per_round          integer
//	quorum             integer
//	min_updates        integer
//	round_timeout_ms   integer (milliseconds)
//	retry_ms           integer
//	silence_timeout_ms integer
//	max_update_bytes   integer
//	max_model_bytes    integer
//	chunk_bytes        integer
//	task               object: lr, momentum, weight_decay (numbers, Go's
//	                   shortest float64 form), epochs, batch (integers),
//	                   cosine (boolean), lr_decay (number), ranking_codec
//	                   (string, omitted when "packed"), rank (integer,
//	                   0 outside lora-mnist and frl-lora-mnist), compression
//	                   (string, "" outside lora-mnist), base_model_hash
//	                   (lower-case hex string, "" outside lora-mnist and
//	                   frl-lora-mnist)
//
// Two files that differ only in comments, whitespace, key order, the order of
// members, bootstrap, task.base_model (the path; the file's hash is in the
// id), a setting written out at its default versus left out, or the letter
// case of base_model_hash have the same id. Any other change is a new
// federation. Bootstrap is left out because addresses change while a
// federation does not; base_model's path because every peer may keep the file
// elsewhere.
package genesis

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/fedrank/fedrank/task"
)

// Genesis is a federation's definition: the content of its genesis file. The
// zero value of a setting means its default (see each field); Parse fills
// them in.
type Genesis struct {
	// Name is a name for people, e.g. "mnist-pilot". Part of the id, so two
	// federations of otherwise equal settings are still told apart.
	Name string `toml:"name" json:"name"`
	// Aggregator is the peer ID (libp2p, in its canonical base58 form as
	// libp2p prints it) of the peer that runs the rounds. It does not train.
	Aggregator string `toml:"aggregator" json:"aggregator"`
	// Members are the peer IDs of the trainers; the aggregator is not one of
	// them. Their order does not matter (not even to selection).
	Members []string `toml:"members" json:"members"`
	// Scenario is the task: "frl-mnist", "fedavg-mnist", "lora-mnist" or
	// "frl-lora-mnist" (the simulator's scenarios of those names).
	Scenario string `toml:"scenario" json:"scenario"`
	// AggregatorName is the aggregation strategy (TOML key "aggregation");
	// "" is the scenario's default: "vote-clamp" for frl-mnist and
	// frl-lora-mnist, "fedavg" for fedavg-mnist, "lora-svd" for lora-mnist.
	// See Aggregations.
	AggregatorName string `toml:"aggregation" json:"aggregation"`
	// Seed is the seed of the model (and of trainer selection) exactly as
	// `node sim --seed`: a genesis of seed S starts from the initial model of
	// the simulator's run of the same scenario with seed S, and selects its
	// trainers from the same stream. 0..2^63-1 (a TOML integer).
	Seed uint64 `toml:"seed" json:"seed"`
	// Rounds is the number of rounds to run; 0 runs forever.
	Rounds uint64 `toml:"rounds" json:"rounds"`
	// PerRound is the number of trainers selected per round, 1..len(Members).
	PerRound int `toml:"per_round" json:"per_round"`
	// Quorum is the number of accepted updates that closes a round before its
	// deadline, 1..PerRound; 0 means PerRound.
	Quorum int `toml:"quorum" json:"quorum"`
	// MinUpdates is the fewest accepted updates that still advance the model
	// when a round reaches its deadline, 1..Quorum; below it the round closes
	// with the model unchanged. 0 means 1.
	MinUpdates int `toml:"min_updates" json:"min_updates"`
	// RoundTimeout is the time from a round's start to its deadline, e.g.
	// "2m". Required. Every duration is a Go duration string of whole
	// milliseconds.
	RoundTimeout Duration `toml:"round_timeout" json:"round_timeout"`
	// Retry is the first delay before an unanswered message is sent again
	// (doubling after each resend); 0 means RoundTimeout/10 (whole ms, at
	// least 1ms).
	Retry Duration `toml:"retry" json:"retry"`
	// SilenceTimeout: a trainer that hears nothing from the aggregator for
	// this long reports it; 0 means 2×RoundTimeout.
	SilenceTimeout Duration `toml:"silence_timeout" json:"silence_timeout"`
	// MaxUpdateBytes bounds an update's payload; 0 means 8 MiB.
	MaxUpdateBytes int64 `toml:"max_update_bytes" json:"max_update_bytes"`
	// MaxModelBytes bounds the total size of a model transfer; 0 means 64 MiB.
	MaxModelBytes int64 `toml:"max_model_bytes" json:"max_model_bytes"`
	// ChunkBytes: models larger than this travel in chunks of this size,
	// 1..MaxModelBytes; 0 means 1 MiB.
	ChunkBytes int64 `toml:"chunk_bytes" json:"chunk_bytes"`
	// Bootstrap lists multiaddrs ending in /p2p/<peer ID> that a peer dials
	// at start. NOT part of the federation id: addresses change, a federation
	// does not, so peers may carry different bootstrap lists.
	Bootstrap []string `toml:"bootstrap" json:"bootstrap"`
	// Task holds the task's hyperparameters (TOML table [task]).
	Task TaskParams `toml:"task" json:"task"`

	// dir is the directory of the file Load read, against which a relative
	// Task.BaseModel is resolved ("" = the working directory).
	dir string
}

// TaskParams are the task's hyperparameters. A zero (or nil) setting is the
// scenario's default, from task.DefaultFRL, task.DefaultFedAvg,
// task.DefaultLoRA (for lora-mnist with aggregation "fedavg", from its
// DenseHyper: the dense baseline's local training) or task.DefaultFRLLoRA. Momentum, WeightDecay and
// Cosine are pointers because their zero is a setting of its own.
type TaskParams struct {
	// LR is the learning rate of the first local epoch of round 1, > 0.
	LR float64 `toml:"lr" json:"lr"`
	// Momentum of local SGD, [0, 1).
	Momentum *float64 `toml:"momentum" json:"momentum"`
	// WeightDecay of local SGD, >= 0.
	WeightDecay *float64 `toml:"weight_decay" json:"weight_decay"`
	// Epochs of local training per round, >= 1.
	Epochs int `toml:"epochs" json:"epochs"`
	// Batch is the local mini-batch size, >= 1.
	Batch int `toml:"batch" json:"batch"`
	// Cosine anneals the learning rate over the local epochs.
	Cosine *bool `toml:"cosine" json:"cosine"`
	// LRDecay multiplies the learning rate once per round, (0, 1].
	LRDecay float64 `toml:"lr_decay" json:"lr_decay"`

	// RankingCodec is how trainers send rankings: "packed" ("" too),
	// "delta" (lossless and about 30% smaller, coded against the round's
	// global model), "bucket:B" or "bucket-mask:B" (lossy; see
	// task.CodecBucket); frl-mnist and frl-lora-mnist only. Part of the id
	// only when not packed, so that federations made before it keep their
	// ids. A frl-mnist file without it is packed, as every file was before
	// the codecs: `node genesis` writes frl-mnist's default,
	// task.DefaultRankingCodec (bucket-mask:16), unless told otherwise. A
	// frl-lora-mnist file without it takes that default,
	// task.DefaultFRLLoRA's codec (bucket-mask:16), as the simulator does.
	RankingCodec string `toml:"ranking_codec" json:"ranking_codec"`

	// Rank is the adapters' rank, 1..4096 (per layer at most min(in, out)):
	// lora-mnist's LoRA adapters (default 4), or frl-lora-mnist's supermask
	// adapters, whose edges every member ranks (default 64, as
	// task.DefaultFRLLoRA). Other scenarios have none.
	Rank int `toml:"rank" json:"rank"`
	// Compression is the codec of uploaded adapter factors: "fp32", "fp16"
	// or "int8" (lora-mnist only; default "int8").
	Compression string `toml:"compression" json:"compression"`
	// BaseModel is the path of the pre-trained base model, a dense
	// safetensors file (task.Base.Encode), relative to the genesis file's
	// directory (lora-mnist and frl-lora-mnist, which fine-tune the same
	// base; required there, refused elsewhere). Not part of the id.
	BaseModel string `toml:"base_model" json:"base_model"`
	// BaseModelHash is the lower-case hex SHA-256 of the base model file
	// (the whole file, metadata included), checked when it is read. Part of
	// the id (lora-mnist and frl-lora-mnist; required there).
	BaseModelHash string `toml:"base_model_hash" json:"base_model_hash"`
}

// Duration is a time.Duration that TOML decodes from a Go duration string
// ("2m", "1m30s", "500ms") and encodes back as one.
type Duration time.Duration

// String is time.Duration's form without zero trailing units: "2m", "1h",
// "1h30m", "1m30s", "500ms".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%w (a Go duration such as \"2m\" or \"500ms\")", err)
	}
	*d = Duration(v)
	return nil
}

// Defaults of the transfer limits.
const (
	DefaultMaxUpdateBytes = 8 << 20
	DefaultMaxModelBytes  = 64 << 20
	DefaultChunkBytes     = 1 << 20
)

// MaxFileBytes bounds a genesis file.
const MaxFileBytes = 16 << 20

// scenario is what the genesis knows of a simulator scenario.
type scenario struct {
	aggregations []string // the first is the default
	// rankings: trainers send rankings (task.ranking_codec).
	rankings bool
	// base: the scenario fine-tunes a pre-trained base model with adapters
	// (task.rank, task.base_model, task.base_model_hash).
	base bool
	// compression: trainers upload adapter factors (task.compression).
	compression bool
}

// voteAggregations are the ranking scenarios' aggregations (task.FRL's).
var voteAggregations = []string{"vote-clamp", "vote-robust", "vote", "vote-median"}

// scenarios are the simulator's (simnet/builtin*.go) of the same names.
var scenarios = map[string]scenario{
	"frl-mnist":      {aggregations: voteAggregations, rankings: true},
	"fedavg-mnist":   {aggregations: []string{"fedavg", "median", "trimmed-mean", "multi-krum"}},
	"lora-mnist":     {aggregations: []string{task.MergeSVD, task.MergeAvg, task.MergeFFA, task.MergeMedian, task.MergeFedAvg}, base: true, compression: true},
	"frl-lora-mnist": {aggregations: voteAggregations, rankings: true, base: true},
}

// scenariosWith lists the scenarios of which has holds, sorted, for errors.
func scenariosWith(has func(scenario) bool) string {
	var names []string
	for _, n := range Scenarios() {
		if has(scenarios[n]) {
			names = append(names, n)
		}
	}
	return strings.Join(names, " and ")
}

// Scenarios lists the scenario names a genesis accepts, sorted.
func Scenarios() []string {
	names := make([]string, 0, len(scenarios))
	for n := range scenarios {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Aggregations lists the aggregation names a scenario accepts, its default
// first (nil for an unknown scenario).
func Aggregations(scenarioName string) []string {
	return slices.Clone(scenarios[scenarioName].aggregations)
}

// FineTunes reports whether a scenario fine-tunes a pre-trained base model
// (task.base_model): lora-mnist and frl-lora-mnist.
func FineTunes(scenarioName string) bool { return scenarios[scenarioName].base }

// Parse reads a genesis file, fills in the defaults and validates it.
func Parse(b []byte) (*Genesis, error) {
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("genesis: file of %d bytes exceeds %d", len(b), MaxFileBytes)
	}
	g := new(Genesis)
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(g)
	if err != nil {
		return nil, fmt.Errorf("genesis: %w", err)
	}
	for _, k := range md.Keys() {
		if !knownKeys[k.String()] {
			return nil, unknownKey(k)
		}
	}
	if u := md.Undecoded(); len(u) > 0 {
		return nil, unknownKey(u[0])
	}
	// TOML integers are signed: a negative seed or rounds would wrap.
	var signed struct {
		Seed   int64 `toml:"seed" json:"seed"`
		Rounds int64 `toml:"rounds" json:"rounds"`
	}
	if _, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&signed); err != nil {
		return nil, fmt.Errorf("genesis: %w", err)
	}
	if signed.Seed < 0 {
		return nil, &Error{Field: "seed", Msg: fmt.Sprintf("%d, must be >= 0", signed.Seed)}
	}
	if signed.Rounds < 0 {
		return nil, &Error{Field: "rounds", Msg: fmt.Sprintf("%d, must be >= 0 (0 runs forever)", signed.Rounds)}
	}
	g.fill()
	if err := g.Validate(); err != nil {
		return nil, err
	}
	return g, nil
}

// Load reads and parses the genesis file at path. It returns the file's bytes
// too, and remembers its directory: a relative Task.BaseModel is found there.
func Load(path string) (*Genesis, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("genesis: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("genesis: reading %s: %w", path, err)
	}
	g, err := Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	g.dir = filepath.Dir(path)
	return g, raw, nil
}

// BaseModelPath is where the base model file is: Task.BaseModel, relative to
// the directory of the file Load read (or to the working directory for a
// genesis from Parse). "" when the genesis names none.
func (g *Genesis) BaseModelPath() string {
	p := g.Task.BaseModel
	if p == "" || filepath.IsAbs(p) || g.dir == "" {
		return p
	}
	return filepath.Join(g.dir, p)
}

func unknownKey(k toml.Key) error {
	s := k.String()
	if !strings.Contains(s, `"`) {
		s = `"` + s + `"`
	}
	return fmt.Errorf("genesis: unknown key %s (keys are the lower-case names of the documented settings)", s)
}

// knownKeys are the TOML keys of Genesis and TaskParams, as
// toml.Key.String writes them.
var knownKeys = func() map[string]bool {
	keys := map[string]bool{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := f.Tag.Get("toml")
			if name == "" {
				continue
			}
			keys[prefix+name] = true
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, prefix+name+".")
			}
		}
	}
	walk(reflect.TypeFor[Genesis](), "")
	return keys
}()

// fill replaces the zero settings with their defaults. Settings it cannot
// resolve (an unknown scenario) stay zero for Validate to report.
func (g *Genesis) fill() {
	if len(g.Bootstrap) == 0 {
		g.Bootstrap = nil // "bootstrap = []" is no bootstrap
	}
	if g.Quorum == 0 {
		g.Quorum = g.PerRound
	}
	if g.MinUpdates == 0 {
		g.MinUpdates = 1
	}
	if g.Retry == 0 && g.RoundTimeout > 0 {
		g.Retry = Duration(max(time.Duration(g.RoundTimeout/10).Truncate(time.Millisecond), time.Millisecond))
	}
	if g.SilenceTimeout == 0 && g.RoundTimeout > 0 && g.RoundTimeout <= math.MaxInt64/2 {
		g.SilenceTimeout = 2 * g.RoundTimeout
	}
	if g.MaxUpdateBytes == 0 {
		g.MaxUpdateBytes = DefaultMaxUpdateBytes
	}
	if g.MaxModelBytes == 0 {
		g.MaxModelBytes = DefaultMaxModelBytes
	}
	if g.ChunkBytes == 0 {
		g.ChunkBytes = DefaultChunkBytes
	}
	sc, ok := scenarios[g.Scenario]
	if !ok {
		return
	}
	if g.AggregatorName == "" {
		g.AggregatorName = sc.aggregations[0]
	}
	d := defaultsOf(g.Scenario, g.AggregatorName)
	p := &g.Task
	if p.LR == 0 {
		p.LR = d.hyper.LR
	}
	if p.Momentum == nil {
		p.Momentum = ptr(d.hyper.Momentum)
	}
	if p.WeightDecay == nil {
		p.WeightDecay = ptr(d.hyper.WeightDecay)
	}
	if p.Epochs == 0 {
		p.Epochs = d.hyper.Epochs
	}
	if p.Batch == 0 {
		p.Batch = d.hyper.Batch
	}
	if p.Cosine == nil {
		p.Cosine = ptr(d.hyper.Cosine)
	}
	if p.LRDecay == 0 {
		p.LRDecay = d.lrDecay
	}
	if p.RankingCodec == "" && sc.rankings {
		p.RankingCodec = d.rankingCodec
	}
	if sc.base {
		if p.Rank == 0 {
			p.Rank = d.rank
		}
		p.BaseModelHash = strings.ToLower(p.BaseModelHash)
	}
	if sc.compression && p.Compression == "" {
		p.Compression = d.compression
	}
}

// filled returns a copy of g with the defaults filled in (g is not changed;
// the copy shares its slices).
func (g *Genesis) filled() *Genesis {
	c := *g
	c.fill()
	return &c
}

func ptr[T any](v T) *T { return &v }
