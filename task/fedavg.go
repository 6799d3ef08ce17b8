package task

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/model"
)

// DenseConfig configures FedAvg-style training of a dense network.
type DenseConfig struct {
	Name    string
	Sizes   []int
	Seed    uint64 // seeds the initial weights
	Hyper   model.Hyper
	LRDecay float64
	// Conv, when set, makes the network this convolutional one instead of
	// the fully connected Sizes (model.LeNet).
	Conv *model.ConvArch
}

// DefaultFedAvg is the FRL reference's FedAvg baseline on MNIST (lr 0.01),
// with the same local schedule as FRL.
func DefaultFedAvg(seed uint64) DenseConfig {
	return DenseConfig{
		Name:    "fedavg-mnist",
		Sizes:   []int{784, 300, 100, 10},
		Seed:    seed,
		Hyper:   model.Hyper{LR: 0.01, Momentum: 0.9, WeightDecay: 1e-4, Epochs: 2, Batch: 8, Cosine: true},
		LRDecay: 0.999,
	}
}

// Dense trains a dense network's weights locally; peers upload their weights
// and the aggregator averages them (FedAvg). Safe for concurrent use.
type Dense struct {
	cfg     DenseConfig
	spec    aggregate.Spec
	net     *model.Dense
	data    Data
	workers sync.Pool // *model.DenseTrainer
	evals   sync.Pool
	flipped func() *model.Inputs
}

// NewDense builds the task.
func NewDense(cfg DenseConfig, d Data) (*Dense, error) {
	if err := cfg.Hyper.Validate(); err != nil {
		return nil, err
	}
	var net *model.Dense
	var err error
	if cfg.Conv != nil {
		net, err = model.NewConvDense(*cfg.Conv, cfg.Seed)
	} else {
		net, err = model.NewDense(cfg.Sizes, cfg.Seed)
	}
	if err != nil {
		return nil, err
	}
	if err := d.check(net.InputDim(), cfg.LRDecay); err != nil {
		return nil, err
	}
	spec := aggregate.Spec{Seed: cfg.Seed, Sizes: net.Sizes}
	if net.Conv != nil {
		spec = aggregate.Spec{Seed: cfg.Seed, Shapes: net.Shapes()}
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	t := &Dense{cfg: cfg, spec: spec, net: net, data: d}
	t.flipped = sync.OnceValue(func() *model.Inputs { return flipLabels(d.Train) })
	t.workers.New = func() any { return net.NewTrainer(cfg.Hyper.Batch) }
	t.evals.New = func() any { return model.NewEvaluator(net.Sizes) }
	if net.Conv != nil {
		t.evals.New = func() any { return model.NewConvEvaluator(*net.Conv) }
	}
	return t, nil
}

// Info implements Task.
func (t *Dense) Info() Info {
	m := fmt.Sprintf("dense %v", t.cfg.Sizes)
	if t.net.Conv != nil {
		m = "dense " + t.net.Conv.String()
	}
	return Info{
		Name:              t.cfg.Name,
		Model:             m,
		Params:            t.net.Params(),
		DefaultAggregator: denseAggregators[0].name,
		Aggregators:       aggregatorNames(denseAggregators),
	}
}

// denseAggregators are the aggregators of dense weights, the default first.
var denseAggregators = []namedAggregator{
	{"fedavg", func(s aggregate.Spec) (aggregate.Aggregator, error) { return aggregate.NewFedAvg(s) }},
	{"median", func(s aggregate.Spec) (aggregate.Aggregator, error) { return aggregate.NewMedian(s) }},
	{"trimmed-mean", func(s aggregate.Spec) (aggregate.Aggregator, error) {
		return aggregate.NewTrimmedMean(s, DefaultTrimFraction)
	}},
	// f and m from the round: as many Byzantine updates as Krum tolerates,
	// (k-3)/2, and the k-f best averaged.
	{"multi-krum", func(s aggregate.Spec) (aggregate.Aggregator, error) { return aggregate.NewMultiKrum(s, -1, 0) }},
}

// Spec is the network identity the task's payloads use.
func (t *Dense) Spec() aggregate.Spec { return t.spec }

// NumClients implements Task.
func (t *Dense) NumClients() int { return len(t.data.Parts) }

// ClientSamples implements Task.
func (t *Dense) ClientSamples(c int) int { return len(t.data.Parts[c]) }

// InitialModel implements Task.
func (t *Dense) InitialModel() ([]byte, error) { return t.spec.EncodeDenseModel(t.net.Init), nil }

// NewAggregator implements Task.
func (t *Dense) NewAggregator(name string) (aggregate.Aggregator, error) {
	return newAggregator(t.cfg.Name, denseAggregators, name, t.spec)
}

// Train implements Task: local SGD from the global weights; the update is
// the trained weights.
func (t *Dense) Train(job Job) ([]byte, error) { return t.train(job, t.data.Train) }

// TrainFlipped implements Attackable.
func (t *Dense) TrainFlipped(job Job) ([]byte, error) { return t.train(job, t.flipped()) }

func (t *Dense) train(job Job, train *model.Inputs) ([]byte, error) {
	if err := t.data.client(job.Client); err != nil {
		return nil, err
	}
	tr := t.workers.Get().(*model.DenseTrainer)
	defer t.workers.Put(tr)
	w, err := t.spec.DecodeDenseModel(job.Model, nil)
	if err != nil {
		return nil, err
	}
	if err := tr.Load(w); err != nil {
		return nil, err
	}
	h := t.cfg.Hyper
	h.LR *= math.Pow(t.cfg.LRDecay, float64(job.Round-1))
	rng := rand.New(rand.NewPCG(job.Seed, uint64(job.Client)))
	if _, err := tr.Train(train, t.data.samples(job.Client), h, rng); err != nil {
		return nil, err
	}
	return t.spec.EncodeDenseUpdate(nil, tr.Weights()), nil
}

// Evaluate implements Task.
func (t *Dense) Evaluate(m []byte) (Eval, error) {
	if t.data.Test == nil {
		return Eval{}, ErrNoTestData
	}
	w, err := t.spec.DecodeDenseModel(m, nil)
	if err != nil {
		return Eval{}, err
	}
	var colsum []float32 // the fully connected engine's first-layer column sums
	if t.net.Conv == nil {
		colsum = model.ColumnSums(w[0], t.cfg.Sizes[0], t.cfg.Sizes[1])
	}
	return evaluate(&t.evals, w, colsum, t.data.Test), nil
}
