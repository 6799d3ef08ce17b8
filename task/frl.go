package task

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/rankvote"
)

// FRLConfig configures Federated Rank Learning on a supermask network.
type FRLConfig struct {
	Name  string // task name, e.g. "frl-mnist"
	Sizes []int  // 784,300,100,10
	Seed  uint64 // seeds the frozen weights and initial scores
	Hyper model.Hyper
	// LRDecay multiplies the learning rate once per round: lr·LRDecay^(round-1).
	LRDecay float64
	// Codec is how a peer's rankings go on the wire: CodecPacked ("" too),
	// CodecDelta, "bucket:B" or "bucket-mask:B" (lossy; CodecBucket and
	// CodecBucketMask with B buckets). The task's aggregators take updates
	// in this codec only. ParseRankingCodec checks a name. frl-mnist's default is
	// DefaultRankingCodec; this field's, packed.
	Codec string
	// Keep is the fraction of each layer's edges a mask keeps; only rank-vote
	// fine-tuning (NewFRLLoRA) sets it, a supermask network keeps half.
	Keep float64
	// Conv, when set, makes the network this convolutional one instead of
	// the fully connected Sizes (model.LeNet, the reference's MNIST LeNet):
	// each weight layer, a convolution's kernel tensor included, is one
	// layer of edges, ranked and voted like a fully connected one.
	Conv *model.ConvArch
}

// The ranking codecs of FRLConfig.Codec.
const (
	// CodecPacked sends each layer's ranking at ceil(log2 n) bits per edge.
	CodecPacked = "packed"
	// CodecDelta sends it losslessly, coded against the ranking of the
	// global model the peer trained from (rankvote.DeltaCoder): the model
	// comes out bit for bit the same, from fewer bytes.
	CodecDelta = "delta"
	// CodecBucket ("bucket:B", 2 <= B <= 256) sends only the bucket of each
	// edge's position, of B equal buckets per layer, coded in the context
	// of its bucket in the global model: lossy, about a bit per edge at
	// B = 16. The aggregator orders each bucket's edges at random.
	CodecBucket = "bucket"
	// CodecBucketMask ("bucket-mask:B", B a multiple of 4 up to 256) is
	// CodecBucket with buckets fine near the mask's two boundaries and
	// coarse away from them (rankvote.MaskBounds, widths doubling): the
	// mask only asks on which side of a boundary an edge is.
	CodecBucketMask = "bucket-mask"

	// DefaultRankingCodec is frl-mnist's codec: the scenario's default in
	// the simulator and what `node genesis` writes. It sends about a bit
	// per edge and ends within noise of packed rankings (BENCHMARKS.md,
	// "The lossy bucket codecs"). DefaultFRL and a genesis file without
	// task.ranking_codec keep CodecPacked.
	DefaultRankingCodec = CodecBucketMask + ":16"
)

// ParseRankingCodec checks a ranking codec name and returns its kind
// (CodecPacked for "", CodecDelta, CodecBucket, CodecBucketMask) and, for
// the bucket codecs, their number of buckets.
func ParseRankingCodec(s string) (kind string, buckets int, err error) {
	switch s {
	case "", CodecPacked:
		return CodecPacked, 0, nil
	case CodecDelta:
		return CodecDelta, 0, nil
	}
	if rest, ok := strings.CutPrefix(s, CodecBucket+":"); ok {
		b, err := strconv.Atoi(rest)
		if err == nil && b >= 2 && b <= rankvote.MaxBuckets {
			return CodecBucket, b, nil
		}
	}
	if rest, ok := strings.CutPrefix(s, CodecBucketMask+":"); ok {
		b, err := strconv.Atoi(rest)
		if err == nil && b >= 4 && b <= rankvote.MaxBuckets && b%4 == 0 {
			return CodecBucketMask, b, nil
		}
	}
	return "", 0, fmt.Errorf("ranking codec %q: want %s, %s, %s:B with B in 2..%d or %s:B with B a multiple of 4 up to %d",
		s, CodecPacked, CodecDelta, CodecBucket, rankvote.MaxBuckets, CodecBucketMask, rankvote.MaxBuckets)
}

// DefaultFRL is the FRL reference's MNIST setting.
func DefaultFRL(seed uint64) FRLConfig {
	return FRLConfig{
		Name:    "frl-mnist",
		Sizes:   []int{784, 300, 100, 10},
		Seed:    seed,
		Hyper:   model.Hyper{LR: 0.4, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 2, Batch: 8, Cosine: true},
		LRDecay: 0.999,
	}
}

// Data is a task's training and test data and the clients' partition.
//
// A peer that trains has Train and Parts (one partition per client; a
// daemon's trainer is one client holding its own samples). A peer that does
// not train, such as a daemon's aggregator, builds its task with neither:
// Data{Test: test} aggregates and evaluates models, Data{} only aggregates
// them. Such a task has no clients and its Train returns ErrNoTrainData. A
// trainer without a test set leaves Test nil. Whatever has no test set
// returns ErrNoTestData from Evaluate.
type Data struct {
	Train, Test *model.Inputs
	Parts       data.Partition
}

// ErrNoTrainData is returned by Train on a task built without training data.
var ErrNoTrainData = errors.New("task: this peer has no training data (built for aggregation and evaluation only)")

// ErrNoTestData is returned by Evaluate on a task built without test data.
var ErrNoTestData = errors.New("task: this peer has no test data")

func (d Data) validate() error {
	if d.Train == nil {
		if len(d.Parts) > 0 {
			return fmt.Errorf("task: a partition of %d clients without training data", len(d.Parts))
		}
		return nil
	}
	if len(d.Parts) == 0 {
		return fmt.Errorf("task: the partition has no clients")
	}
	for c, p := range d.Parts {
		for _, k := range p {
			if k < 0 || k >= d.Train.N {
				return fmt.Errorf("task: client %d holds sample %d of a %d-sample set", c, k, d.Train.N)
			}
		}
	}
	return nil
}

// check validates what every task's constructor is given: the data, a
// network input of inputs features, and the learning-rate decay.
func (d Data) check(inputs int, lrDecay float64) error {
	if err := d.validate(); err != nil {
		return err
	}
	for _, in := range []*model.Inputs{d.Train, d.Test} {
		if in != nil && in.Dim != inputs {
			return fmt.Errorf("task: data has %d features, the network expects %d", in.Dim, inputs)
		}
	}
	if !(lrDecay > 0 && lrDecay <= 1) {
		return fmt.Errorf("task: learning-rate decay %v must be in (0,1]", lrDecay)
	}
	return nil
}

// client checks that c names one of the clients of a task that trains.
func (d Data) client(c int) error {
	if d.Train == nil {
		return ErrNoTrainData
	}
	if c < 0 || c >= len(d.Parts) {
		return fmt.Errorf("task: client %d out of range 0..%d", c, len(d.Parts)-1)
	}
	return nil
}

func (d Data) samples(c int) []int32 {
	p := d.Parts[c]
	out := make([]int32, len(p))
	for i, k := range p {
		out[i] = int32(k)
	}
	return out
}

// FRL is Federated Rank Learning: peers train the scores of a frozen random
// network and upload, per layer, the ranking of its edges; the aggregator
// votes. Safe for concurrent use.
type FRL struct {
	cfg     FRLConfig
	spec    aggregate.Spec
	net     *model.Supermask
	data    Data
	workers sync.Pool // *frlWorker
	evals   sync.Pool // *model.Evaluator
	flipped func() *model.Inputs
	codec   string     // the kind of cfg.Codec
	bounds  [][]uint32 // per layer, the bucket layout of the bucket codecs
	// adapter, when set, makes the task rank-vote fine-tuning (NewFRLLoRA):
	// net is the adapter's factor chain, and peers train its scores on the
	// frozen base.
	adapter *model.MaskedLoRA
	base    *Base
}

type frlWorker struct {
	tr     *model.SupermaskTrainer
	mt     *model.MaskedLoRATrainer // adapter tasks
	sort   rankvote.Sorter
	order  [][]uint32
	ref    [][]uint32 // the global rankings, for the codecs that code against them
	delta  rankvote.DeltaCoder
	bucket rankvote.BucketCoder
}

// NewFRL builds the task.
func NewFRL(cfg FRLConfig, d Data) (*FRL, error) {
	if err := cfg.Hyper.Validate(); err != nil {
		return nil, err
	}
	if _, _, err := ParseRankingCodec(cfg.Codec); err != nil {
		return nil, fmt.Errorf("task %s: %w", cfg.Name, err)
	}
	var net *model.Supermask
	var err error
	if cfg.Conv != nil {
		net, err = model.NewConvSupermask(*cfg.Conv, cfg.Seed)
	} else {
		net, err = model.NewSupermask(cfg.Sizes, cfg.Seed)
	}
	if err != nil {
		return nil, err
	}
	return newFRL(cfg, net, nil, nil, d)
}

// newFRL builds a ranking task on the supermask net; with adapter set, on
// the adapter's factor chain (net = adapter.Mask) over base.
func newFRL(cfg FRLConfig, net *model.Supermask, adapter *model.MaskedLoRA, base *Base, d Data) (*FRL, error) {
	if err := cfg.Hyper.Validate(); err != nil {
		return nil, err
	}
	codec, buckets, err := ParseRankingCodec(cfg.Codec)
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", cfg.Name, err)
	}
	inputs := 0
	spec := aggregate.Spec{Seed: cfg.Seed, Sizes: net.Sizes}
	if net.Conv != nil {
		inputs = net.InputDim()
		spec = aggregate.Spec{Seed: cfg.Seed, Shapes: net.Shapes()}
	} else {
		inputs = cfg.Sizes[0]
	}
	if err := d.check(inputs, cfg.LRDecay); err != nil {
		return nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	t := &FRL{cfg: cfg, spec: spec, net: net, data: d, codec: codec, adapter: adapter, base: base}
	switch codec {
	case CodecBucket:
		t.bounds = make([][]uint32, len(net.Layers))
		for l, ly := range net.Layers {
			t.bounds[l] = rankvote.UniformBounds(ly.N(), min(buckets, max(ly.N(), 1)))
		}
	case CodecBucketMask:
		t.bounds = make([][]uint32, len(net.Layers))
		for l, ly := range net.Layers {
			lo, hi := maskBoundaries(ly.On)
			t.bounds[l] = rankvote.MaskBounds(ly.N(), lo, hi, buckets/4, 2)
		}
	}
	t.flipped = sync.OnceValue(func() *model.Inputs { return flipLabels(d.Train) })
	t.workers.New = func() any {
		if adapter != nil {
			return &frlWorker{mt: adapter.NewTrainer(cfg.Hyper.Batch), order: make([][]uint32, len(net.Layers))}
		}
		return &frlWorker{tr: net.NewTrainer(cfg.Hyper.Batch), order: make([][]uint32, len(net.Layers))}
	}
	t.evals.New = func() any { return model.NewEvaluator(net.Sizes) }
	if net.Conv != nil {
		t.evals.New = func() any { return model.NewConvEvaluator(*net.Conv) }
	}
	if adapter != nil {
		t.evals.New = func() any { return model.NewEvaluator(adapter.LoRA.Sizes) }
	}
	return t, nil
}

// Info implements Task.
func (t *FRL) Info() Info {
	m := fmt.Sprintf("supermask %v", t.cfg.Sizes)
	if t.net.Conv != nil {
		m = "supermask " + t.net.Conv.String()
	}
	if t.adapter != nil {
		m = fmt.Sprintf("supermask adapters r=%d (keep %.2g) on dense %v (base %x)",
			slices.Max(t.adapter.LoRA.Ranks), t.cfg.Keep, t.base.Sizes, t.base.Hash[:4])
	}
	return Info{
		Name:              t.cfg.Name,
		Model:             m,
		Params:            t.net.Params(),
		DefaultAggregator: frlAggregators[0].name,
		Aggregators:       aggregatorNames(frlAggregators),
	}
}

// frlAggregators are the ranking aggregators, the default first: the plain
// Borda vote lets a minority of rank-reversal attackers swing the model,
// "vote-robust" drops them but not attackers who stay inside its distance
// filter, and "vote-clamp" adds the clamp that bounds what those can do to
// an edge (see BENCHMARKS.md, "Robustness").
var frlAggregators = []namedAggregator{
	{"vote-clamp", func(s aggregate.Spec) (aggregate.Aggregator, error) { return aggregate.NewClampedVote(s, 0) }},
	{"vote-robust", func(s aggregate.Spec) (aggregate.Aggregator, error) { return aggregate.NewFilteredVote(s) }},
	{"vote", func(s aggregate.Spec) (aggregate.Aggregator, error) { return aggregate.NewVote(s) }},
	{"vote-median", func(s aggregate.Spec) (aggregate.Aggregator, error) { return aggregate.NewMedianVote(s) }},
}

// Spec is the network identity (sizes and seed) the task's payloads use.
func (t *FRL) Spec() aggregate.Spec { return t.spec }

// Base is the frozen base model of rank-vote fine-tuning (NewFRLLoRA); nil
// for a plain FRL task.
func (t *FRL) Base() *Base { return t.base }

// NumClients implements Task.
func (t *FRL) NumClients() int { return len(t.data.Parts) }

// ClientSamples implements Task.
func (t *FRL) ClientSamples(c int) int { return len(t.data.Parts[c]) }

// InitialModel implements Task: the ranking of the initial scores.
func (t *FRL) InitialModel() ([]byte, error) {
	order := make([][]uint32, len(t.net.Layers))
	for l := range order {
		order[l] = t.net.Layers[l].InitOrder
	}
	return t.spec.EncodeFRLModel(order), nil
}

// NewAggregator implements Task.
//
// The aggregator takes updates in the task's ranking codec only (for the
// bucket codecs, with the task's layout): an update in another, finer
// format would carry more say than the honest peers' (aggregate.RankingFormatter).
func (t *FRL) NewAggregator(name string) (aggregate.Aggregator, error) {
	a, err := newAggregator(t.cfg.Name, frlAggregators, name, t.spec)
	if err != nil {
		return nil, err
	}
	if f, ok := a.(aggregate.RankingFormatter); ok {
		f.RequireRankingFormat(t.rankingFormat(), t.bounds)
	}
	return a, nil
}

// rankingFormat is the wire format of the task's codec.
func (t *FRL) rankingFormat() aggregate.RankingFormat {
	switch t.codec {
	case CodecDelta:
		return aggregate.FormatDelta
	case CodecBucket, CodecBucketMask:
		return aggregate.FormatBucket
	}
	return aggregate.FormatPacked
}

// encodeRanking encodes rankings order in the task's codec, coded against
// the global rankings ref when the codec needs them.
func (t *FRL) encodeRanking(order, ref [][]uint32, delta *rankvote.DeltaCoder, bucket *rankvote.BucketCoder) []byte {
	switch t.codec {
	case CodecDelta:
		return t.spec.EncodeFRLDeltaUpdate(nil, order, ref, delta)
	case CodecBucket, CodecBucketMask:
		return t.spec.EncodeFRLBucketUpdate(nil, order, ref, t.bounds, bucket)
	}
	return t.spec.EncodeFRLUpdate(make([]byte, 0, t.spec.FRLUpdateSize()), order)
}

// Train implements Task: local training from the global ranking, then the
// ranking of the trained scores.
func (t *FRL) Train(job Job) ([]byte, error) { return t.train(job, t.data.Train) }

// TrainFlipped implements Attackable.
func (t *FRL) TrainFlipped(job Job) ([]byte, error) { return t.train(job, t.flipped()) }

func (t *FRL) train(job Job, train *model.Inputs) ([]byte, error) {
	if err := t.data.client(job.Client); err != nil {
		return nil, err
	}
	w := t.workers.Get().(*frlWorker)
	defer t.workers.Put(w)
	order, err := t.spec.DecodeFRLModel(job.Model, w.order)
	if err != nil {
		return nil, err
	}
	w.order = order
	h := t.cfg.Hyper
	h.LR *= math.Pow(t.cfg.LRDecay, float64(job.Round-1))
	rng := rand.New(rand.NewPCG(job.Seed, uint64(job.Client)))
	var scores [][]float32
	if t.adapter != nil {
		if err := w.mt.Load(order); err != nil {
			return nil, err
		}
		if _, err := w.mt.Train(train, t.data.samples(job.Client), h, rng); err != nil {
			return nil, err
		}
		scores = w.mt.Scores()
	} else {
		if err := w.tr.Load(order); err != nil {
			return nil, err
		}
		if _, err := w.tr.Train(train, t.data.samples(job.Client), h, rng); err != nil {
			return nil, err
		}
		scores = w.tr.Scores()
	}
	if t.codec != CodecPacked {
		if len(w.ref) != len(order) {
			w.ref = make([][]uint32, len(order))
		}
		for l, o := range order {
			w.ref[l] = append(w.ref[l][:0], o...)
		}
	}
	for l, s := range scores {
		w.order[l] = w.sort.Argsort(s, w.order[l])
	}
	return t.encodeRanking(w.order, w.ref, &w.delta, &w.bucket), nil
}

// Evaluate implements Task.
func (t *FRL) Evaluate(m []byte) (Eval, error) {
	if t.data.Test == nil {
		return Eval{}, ErrNoTestData
	}
	order, err := t.spec.DecodeFRLModel(m, nil)
	if err != nil {
		return Eval{}, err
	}
	var eff [][]float32
	var colsum []float32
	if t.adapter != nil {
		eff, colsum, err = t.adapter.EffectiveFromRanking(order)
	} else {
		eff, colsum, err = t.net.EffectiveFromRanking(order, nil, nil)
	}
	if err != nil {
		return Eval{}, err
	}
	return evaluate(&t.evals, eff, colsum, t.data.Test), nil
}

// maskBoundaries returns where a layer's mask changes: it keeps positions
// [0, lo) and [hi, n).
func maskBoundaries(on []bool) (lo, hi int) {
	n := len(on)
	for lo < n && on[lo] {
		lo++
	}
	hi = n
	for hi > lo && on[hi-1] {
		hi--
	}
	return lo, hi
}
