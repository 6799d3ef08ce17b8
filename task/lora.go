package task

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/lowrank"
	"github.com/fedrank/fedrank/model"
)

// Base is a frozen pre-trained dense network: the starting point of
// low-rank fine-tuning. Hash is the SHA-256 of its weights in safetensors
// form without metadata, which names the base in every adapter model and
// update (lowrank.Spec.Base).
type Base struct {
	Sizes []int
	W     [][]float32 // per layer, input-major
	Meta  map[string]string
	Hash  [32]byte
}

// NewBase wraps weights (not copied) as a base model.
func NewBase(sizes []int, w [][]float32, meta map[string]string) (*Base, error) {
	plain, err := model.EncodeDenseSafetensors(sizes, w, nil)
	if err != nil {
		return nil, err
	}
	return &Base{Sizes: slices.Clone(sizes), W: w, Meta: meta, Hash: sha256.Sum256(plain)}, nil
}

// Encode returns the base as a safetensors file (tensors layers.{l}.weight
// of shape [out, in], with its metadata).
func (b *Base) Encode() ([]byte, error) { return model.EncodeDenseSafetensors(b.Sizes, b.W, b.Meta) }

// DecodeBase reads a base model from a safetensors file.
func DecodeBase(file []byte) (*Base, error) {
	sizes, w, meta, err := model.DecodeDenseSafetensors(file)
	if err != nil {
		return nil, err
	}
	return NewBase(sizes, w, meta)
}

// PretrainConfig is the central pre-training of a base model on a subset of
// the classes.
type PretrainConfig struct {
	Sizes   []int
	Seed    uint64  // initial weights and batch order
	Classes []uint8 // the labels trained on, e.g. 0..4
	Hyper   model.Hyper
}

// DefaultPretrain trains LeNet-300-100 on MNIST digits 0-4 for two epochs
// (batch 32, SGD with momentum, cosine): about 3 s on one core, 98% of the
// digits 0-4 right, so about half of all test digits.
func DefaultPretrain(seed uint64) PretrainConfig {
	return PretrainConfig{
		Sizes:   []int{784, 300, 100, 10},
		Seed:    seed,
		Classes: []uint8{0, 1, 2, 3, 4},
		Hyper:   model.Hyper{LR: 0.05, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 2, Batch: 32, Cosine: true},
	}
}

// pretrainVersion changes whenever Pretrain would give other weights for the
// same settings: it is part of the metadata and of the cache key.
const pretrainVersion = "1"

// metadata is the settings written into the base's safetensors metadata.
func (c PretrainConfig) metadata() map[string]string {
	cls := make([]string, len(c.Classes))
	for i, v := range c.Classes {
		cls[i] = strconv.Itoa(int(v))
	}
	sizes := make([]string, len(c.Sizes))
	for i, v := range c.Sizes {
		sizes[i] = strconv.Itoa(v)
	}
	h := c.Hyper
	return map[string]string{
		"fedrank.pretrain": pretrainVersion,
		"sizes":            strings.Join(sizes, ","),
		"seed":             strconv.FormatUint(c.Seed, 10),
		"classes":          strings.Join(cls, ","),
		"hyper": fmt.Sprintf("lr=%v momentum=%v wd=%v epochs=%d batch=%d cosine=%v",
			h.LR, h.Momentum, h.WeightDecay, h.Epochs, h.Batch, h.Cosine),
	}
}

// Pretrain trains a dense network centrally on the training images whose
// label is in cfg.Classes. Deterministic: one goroutine, seeded order.
func Pretrain(cfg PretrainConfig, train *model.Inputs) (*Base, error) {
	if err := cfg.Hyper.Validate(); err != nil {
		return nil, err
	}
	d, err := model.NewDense(cfg.Sizes, cfg.Seed)
	if err != nil {
		return nil, err
	}
	if train.Dim != cfg.Sizes[0] {
		return nil, fmt.Errorf("task: data has %d features, network expects %d", train.Dim, cfg.Sizes[0])
	}
	var keep [256]bool
	for _, c := range cfg.Classes {
		keep[c] = true
	}
	var samples []int32
	for k, l := range train.Labels {
		if keep[l] {
			samples = append(samples, int32(k))
		}
	}
	if len(samples) == 0 {
		return nil, fmt.Errorf("task: no training images of classes %v", cfg.Classes)
	}
	tr := model.NewDenseTrainer(cfg.Sizes, cfg.Hyper.Batch)
	if err := tr.Load(d.Init); err != nil {
		return nil, err
	}
	if _, err := tr.Train(train, samples, cfg.Hyper, rand.New(rand.NewPCG(cfg.Seed, 0xba5e))); err != nil {
		return nil, err
	}
	w := make([][]float32, len(tr.Weights()))
	for l, v := range tr.Weights() {
		w[l] = slices.Clone(v)
	}
	return NewBase(cfg.Sizes, w, cfg.metadata())
}

// CachedPretrain returns Pretrain's base, read from dir when a file of the
// same settings is there, else trained and written there (atomically) for
// the next run. The file is a safetensors file whose metadata holds the
// settings; a file that does not read back, or whose metadata differs, is
// replaced. dir "" skips the cache. Errors writing the cache are returned
// with the base (the base is good; only the cache failed).
func CachedPretrain(dir string, cfg PretrainConfig, train *model.Inputs) (*Base, error) {
	meta := cfg.metadata()
	if dir == "" {
		return Pretrain(cfg, train)
	}
	key := sha256.New()
	for _, k := range slices.Sorted(mapKeys(meta)) {
		fmt.Fprintf(key, "%s=%s\n", k, meta[k])
	}
	path := filepath.Join(dir, "base-"+hex.EncodeToString(key.Sum(nil))[:16]+".safetensors")
	if b, err := os.ReadFile(path); err == nil {
		if base, err := DecodeBase(b); err == nil && maps.Equal(base.Meta, meta) && slices.Equal(base.Sizes, cfg.Sizes) {
			return base, nil
		}
	}
	base, err := Pretrain(cfg, train)
	if err != nil {
		return nil, err
	}
	file, err := base.Encode()
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(path, file); err != nil {
		return base, fmt.Errorf("task: caching the base model: %w", err)
	}
	return base, nil
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".base-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Merge names of LoRAConfig.Merge.
const (
	MergeSVD    = lowrank.NameSVD
	MergeAvg    = lowrank.NameAvg
	MergeFFA    = lowrank.NameFFA
	MergeMedian = lowrank.NameMedian
	MergeFedAvg = "fedavg"
)

// LoRAConfig configures federated fine-tuning of a frozen base model.
type LoRAConfig struct {
	Name string // task name, e.g. "lora-mnist"
	// Seed seeds the adapters' initial A, shared by all peers (FFA: the
	// frozen A).
	Seed uint64
	// Merge is the aggregator the federation runs, which decides what peers
	// train: "lora-svd", "lora-avg", "lora-median" (both factors),
	// "lora-ffa" (B only), or "fedavg" (the whole dense network, the
	// baseline).
	Merge string
	// Rank is the federation's adapter rank, per layer capped at
	// min(in, out) (the 100×10 head of LeNet-300-100 at most 10).
	Rank int
	// Alpha sets the scale alpha/rank of every layer; 0 means 2·Rank (s = 2).
	Alpha float64
	// Ranks, optional, gives client c's rank (1..Rank) for heterogeneous
	// federations; nil means every client uses Rank.
	Ranks func(client int) int
	// Compression is the codec of uploaded factors: "fp32", "fp16" or "int8".
	Compression string
	// Hyper is local adapter training; DenseHyper the fedavg baseline's.
	Hyper, DenseHyper model.Hyper
	// LRDecay multiplies the learning rate once per round: lr·LRDecay^(round-1).
	LRDecay float64
	// ClipNorm clips each local step's adapter gradient to this Euclidean
	// norm (0: no clipping).
	ClipNorm float64
	// SVD tunes lora-svd's factorization (and lora-median's, back to the
	// rank).
	SVD lowrank.SVDOptions
}

// DefaultLoRA fine-tunes with rank-4 adapters uploaded in int8 and merged by
// lora-svd.
func DefaultLoRA(seed uint64) LoRAConfig {
	return LoRAConfig{
		Name:        "lora-mnist",
		Seed:        seed,
		Merge:       MergeSVD,
		Rank:        4,
		Compression: "int8",
		Hyper:       model.Hyper{LR: 0.004, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 2, Batch: 8, Cosine: true},
		DenseHyper:  model.Hyper{LR: 0.003, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 2, Batch: 8, Cosine: true},
		LRDecay:     0.99,
		ClipNorm:    5,
		// Balanced factors (√σ each): with A held at its initial norm, B
		// grows with the merged ΔW and the gradient of A with it, and local
		// training diverged within 25 rounds (lr 0.002..0.003, no clipping).
		SVD: lowrank.SVDOptions{},
	}
}

// LoRA fine-tunes a frozen base federatedly: peers train low-rank adapters
// (or, with Merge "fedavg", the whole network) and the aggregator merges
// them. Safe for concurrent use.
type LoRA struct {
	cfg     LoRAConfig
	base    *Base
	data    Data
	net     *model.LoRA
	spec    lowrank.Spec
	codec   lowrank.Codec
	initA   [][]float32    // the shared initial A (FFA: frozen)
	dense   aggregate.Spec // fedavg mode
	workers sync.Pool
	evals   sync.Pool
	flipped func() *model.Inputs // the training data with flipped labels (TrainFlipped)

	mu        sync.Mutex
	truncated []TruncationStat
}

// TruncationStat is what lora-svd's truncation dropped in one Finalize.
type TruncationStat struct {
	Round uint64
	// Dropped is the energy dropped over all layers as a fraction of the
	// merged ΔW/s energy; Layers the same per layer.
	Dropped float64
	Layers  []float64
}

// NewLoRA builds the task on a base model.
func NewLoRA(cfg LoRAConfig, base *Base, d Data) (*LoRA, error) {
	if base == nil {
		return nil, errors.New("task: a base model is required")
	}
	if err := d.check(base.Sizes[0], cfg.LRDecay); err != nil {
		return nil, err
	}
	t := &LoRA{cfg: cfg, base: base, data: d}
	t.flipped = sync.OnceValue(func() *model.Inputs { return flipLabels(d.Train) })
	sizes := base.Sizes
	t.evals.New = func() any { return model.NewEvaluator(sizes) }
	if cfg.Merge == MergeFedAvg {
		if err := cfg.DenseHyper.Validate(); err != nil {
			return nil, err
		}
		t.dense = aggregate.Spec{Seed: cfg.Seed, Sizes: slices.Clone(sizes)}
		if err := t.dense.Validate(); err != nil {
			return nil, err
		}
		t.workers.New = func() any { return model.NewDenseTrainer(sizes, cfg.DenseHyper.Batch) }
		return t, nil
	}
	switch cfg.Merge {
	case MergeSVD, MergeAvg, MergeFFA, MergeMedian:
	default:
		return nil, fmt.Errorf("task: unknown merge %q (have: %s, %s, %s, %s, %s)", cfg.Merge, MergeSVD, MergeAvg, MergeFFA, MergeMedian, MergeFedAvg)
	}
	if err := cfg.Hyper.Validate(); err != nil {
		return nil, err
	}
	if cfg.Rank < 1 || cfg.Rank > 1<<12 {
		return nil, fmt.Errorf("task: rank %d out of range 1..4096", cfg.Rank)
	}
	codec, err := lowrank.ParseCodec(cfg.Compression)
	if err != nil {
		return nil, err
	}
	alpha := cfg.Alpha
	if alpha == 0 {
		alpha = 2 * float64(cfg.Rank)
	}
	if !(alpha > 0) || math.IsInf(alpha, 0) {
		return nil, fmt.Errorf("task: alpha %v must be > 0 and finite", cfg.Alpha)
	}
	L := len(sizes) - 1
	ranks, alphas := make([]int, L), make([]float64, L)
	t.spec = lowrank.Spec{Base: base.Hash, Seed: cfg.Seed, FrozenA: cfg.Merge == MergeFFA}
	for l := range L {
		ranks[l] = min(cfg.Rank, sizes[l], sizes[l+1])
		// Keep s = alpha/rank where a layer's rank is capped: the cap is a
		// property of the layer, not a reason to scale it up.
		alphas[l] = alpha * float64(ranks[l]) / float64(cfg.Rank)
		t.spec.Layers = append(t.spec.Layers, lowrank.Layer{In: sizes[l], Out: sizes[l+1], Rank: ranks[l], Alpha: float32(alphas[l])})
	}
	if err := t.spec.Validate(); err != nil {
		return nil, err
	}
	if t.net, err = model.NewLoRA(sizes, base.W, ranks, alphas); err != nil {
		return nil, err
	}
	t.codec = codec
	t.initA = t.net.InitA(cfg.Seed)
	t.workers.New = func() any { return t.net.NewTrainer(cfg.Hyper.Batch) }
	return t, nil
}

// Info implements Task.
func (t *LoRA) Info() Info {
	in := Info{Name: t.cfg.Name, DefaultAggregator: t.cfg.Merge, Aggregators: []string{t.cfg.Merge}}
	if t.net == nil {
		in.Model = fmt.Sprintf("dense %v fine-tuned from base %x", t.base.Sizes, t.base.Hash[:4])
		for _, n := range model.LayerSizes(t.base.Sizes) {
			in.Params += n
		}
		return in
	}
	in.Model = fmt.Sprintf("lora r=%d on dense %v (base %x), %s", t.cfg.Rank, t.base.Sizes, t.base.Hash[:4], t.codec)
	for l, ly := range t.spec.Layers {
		in.Params += ly.Rank * ly.Out
		if !t.spec.FrozenA {
			in.Params += ly.Rank * t.base.Sizes[l]
		}
	}
	return in
}

// Spec is the adapter identity of the task's payloads (zero in fedavg mode).
func (t *LoRA) Spec() lowrank.Spec { return t.spec }

// Base is the frozen base model.
func (t *LoRA) Base() *Base { return t.base }

// NumClients implements Task.
func (t *LoRA) NumClients() int { return len(t.data.Parts) }

// ClientSamples implements Task.
func (t *LoRA) ClientSamples(c int) int { return len(t.data.Parts[c]) }

// InitialModel implements Task: the base itself for fedavg; otherwise the
// adapter A = the shared seeded draw, B = 0, so the model equals the base.
func (t *LoRA) InitialModel() ([]byte, error) {
	if t.net == nil {
		return t.dense.EncodeDenseModel(t.base.W), nil
	}
	f := lowrank.Factors{B: make([][]float32, len(t.spec.Layers))}
	for l, ly := range t.spec.Layers {
		f.B[l] = make([]float32, ly.Rank*ly.Out)
	}
	if !t.spec.FrozenA {
		f.A = t.initA
	}
	return t.spec.EncodeModel(f, lowrank.FP32)
}

// NewAggregator implements Task. lora-svd and lora-median aggregators
// record what truncation drops per round (Truncation).
func (t *LoRA) NewAggregator(name string) (aggregate.Aggregator, error) {
	if name != "" && name != t.cfg.Merge {
		return nil, fmt.Errorf("task %s: built for aggregator %q, not %q", t.cfg.Name, t.cfg.Merge, name)
	}
	switch t.cfg.Merge {
	case MergeFedAvg:
		return aggregate.NewFedAvg(t.dense)
	case MergeAvg:
		return lowrank.NewAvg(t.spec)
	case MergeFFA:
		return lowrank.NewFFA(t.spec)
	case MergeMedian:
		m, err := lowrank.NewMedian(t.spec, t.cfg.SVD)
		if err != nil {
			return nil, err
		}
		return &svdRecorder{truncating: m, t: t}, nil
	}
	s, err := lowrank.NewSVD(t.spec, t.cfg.SVD)
	if err != nil {
		return nil, err
	}
	return &svdRecorder{truncating: s, t: t}, nil
}

// truncating is a merge that truncates back to the rank by SVD
// (*lowrank.SVD, *lowrank.Median).
type truncating interface {
	aggregate.Aggregator
	DroppedFraction() float64
	Residuals() []lowrank.Residual
	RoundMetrics() map[string]float64
}

// svdRecorder logs each round's truncation into the task.
type svdRecorder struct {
	truncating
	t     *LoRA
	round uint64
}

func (r *svdRecorder) Begin(round uint64, global []byte) error {
	r.round = round
	return r.truncating.Begin(round, global)
}

func (r *svdRecorder) Finalize() ([]byte, error) {
	out, err := r.truncating.Finalize()
	if err != nil {
		return out, err
	}
	st := TruncationStat{Round: r.round, Dropped: r.DroppedFraction()}
	for _, x := range r.Residuals() {
		st.Layers = append(st.Layers, x.Fraction())
	}
	r.t.mu.Lock()
	r.t.truncated = append(r.t.truncated, st)
	r.t.mu.Unlock()
	return out, nil
}

// Truncation returns what lora-svd's (or lora-median's) truncation dropped
// in each Finalize so far, in order.
func (t *LoRA) Truncation() []TruncationStat {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.truncated)
}

// clientRanks is the per-layer rank of client c.
func (t *LoRA) clientRanks(c int) ([]int, error) {
	r := t.cfg.Rank
	if t.cfg.Ranks != nil {
		r = t.cfg.Ranks(c)
		if r < 1 || r > t.cfg.Rank {
			return nil, fmt.Errorf("task: client %d rank %d out of range 1..%d", c, r, t.cfg.Rank)
		}
	}
	out := make([]int, len(t.spec.Layers))
	for l, ly := range t.spec.Layers {
		out[l] = min(r, ly.Rank)
	}
	return out, nil
}

// Train implements Task: local training from the global model; the update
// is the trained factors' difference from the ones loaded, compressed (or,
// for fedavg, the trained dense weights).
func (t *LoRA) Train(job Job) ([]byte, error) { return t.train(job, t.data.Train) }

// TrainFlipped implements Attackable: Train on the client's samples with
// every label l replaced by classes-1-l.
func (t *LoRA) TrainFlipped(job Job) ([]byte, error) { return t.train(job, t.flipped()) }

func (t *LoRA) train(job Job, train *model.Inputs) ([]byte, error) {
	if err := t.data.client(job.Client); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(job.Seed, uint64(job.Client)))
	decay := math.Pow(t.cfg.LRDecay, float64(job.Round-1))
	if t.net == nil {
		tr := t.workers.Get().(*model.DenseTrainer)
		defer t.workers.Put(tr)
		w, err := t.dense.DecodeDenseModel(job.Model, nil)
		if err != nil {
			return nil, err
		}
		if err := tr.Load(w); err != nil {
			return nil, err
		}
		h := t.cfg.DenseHyper
		h.LR *= decay
		if _, err := tr.Train(train, t.data.samples(job.Client), h, rng); err != nil {
			return nil, err
		}
		return t.dense.EncodeDenseUpdate(nil, tr.Weights()), nil
	}
	global, err := t.spec.DecodeModel(job.Model)
	if err != nil {
		return nil, err
	}
	ranks, err := t.clientRanks(job.Client)
	if err != nil {
		return nil, err
	}
	start := global.Prefix(t.spec, ranks)
	A := start.A
	if t.spec.FrozenA {
		A = lowrank.Factors{A: t.initA, B: start.B}.Prefix(t.spec, ranks).A
	}
	tr := t.workers.Get().(*model.LoRATrainer)
	defer t.workers.Put(tr)
	if err := tr.Load(A, start.B, !t.spec.FrozenA); err != nil {
		return nil, err
	}
	tr.SetClip(t.cfg.ClipNorm)
	h := t.cfg.Hyper
	h.LR *= decay
	if _, err := tr.Train(train, t.data.samples(job.Client), h, rng); err != nil {
		return nil, err
	}
	trainedA, trainedB := tr.Factors()
	trained := lowrank.Factors{B: trainedB}
	if !t.spec.FrozenA {
		trained.A = trainedA
	}
	return t.spec.EncodeUpdate(nil, t.codec, start, trained)
}

// Evaluate implements Task: the base plus the global adapter on the test set.
func (t *LoRA) Evaluate(m []byte) (Eval, error) {
	if t.data.Test == nil {
		return Eval{}, ErrNoTestData
	}
	if t.net == nil {
		w, err := t.dense.DecodeDenseModel(m, nil)
		if err != nil {
			return Eval{}, err
		}
		return evaluate(&t.evals, w, model.ColumnSums(w[0], t.base.Sizes[0], t.base.Sizes[1]), t.data.Test), nil
	}
	f, err := t.spec.DecodeModel(m)
	if err != nil {
		return Eval{}, err
	}
	A := f.A
	if t.spec.FrozenA {
		A = t.initA
	}
	eff, colsum, err := t.net.Effective(A, f.B, nil, nil)
	if err != nil {
		return Eval{}, err
	}
	return evaluate(&t.evals, eff, colsum, t.data.Test), nil
}

var _ Task = (*LoRA)(nil)
