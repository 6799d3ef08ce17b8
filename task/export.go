package task

import (
	"errors"
	"slices"
)

// errConvExport: the export format is a fully connected stack.
var errConvExport = errors.New("task: export covers fully connected networks only, not a convolutional one")

// Exporter turns an encoded global model into the weights of the plain dense
// network it computes: fully connected, ReLU, no biases, layer l of
// sizes[l]×sizes[l+1] weights stored input-major (edge i*out+o), as
// model.Dense. model.EncodeDenseSafetensors writes them as a file that any
// dense implementation of that network (PyTorch's nn.Linear stack without
// bias, or this module's Dense task) loads and scores as the task's Evaluate
// does. FRL (rank-vote fine-tuning too), Dense and LoRA implement it; the
// returned slices are the caller's.
type Exporter interface {
	DenseWeights(m []byte) (sizes []int, w [][]float32, err error)
}

var (
	_ Exporter = (*FRL)(nil)
	_ Exporter = (*Dense)(nil)
	_ Exporter = (*LoRA)(nil)
)

// DenseWeights implements Exporter: the effective weights of the global
// ranking, the frozen signed constants times the model's mask; for
// rank-vote fine-tuning (NewFRLLoRA), the base with the masked adapters
// merged, W0 + s·(M_A ⊙ A)ᵀ(M_B ⊙ Bt) per layer.
func (t *FRL) DenseWeights(m []byte) ([]int, [][]float32, error) {
	if t.net.Conv != nil {
		return nil, nil, errConvExport
	}
	order, err := t.spec.DecodeFRLModel(m, nil)
	if err != nil {
		return nil, nil, err
	}
	if t.adapter != nil {
		w, _, err := t.adapter.EffectiveFromRanking(order)
		if err != nil {
			return nil, nil, err
		}
		return slices.Clone(t.base.Sizes), w, nil
	}
	eff, _, err := t.net.EffectiveFromRanking(order, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	return slices.Clone(t.net.Sizes), eff, nil
}

// DenseWeights implements Exporter: the model's weights.
func (t *Dense) DenseWeights(m []byte) ([]int, [][]float32, error) {
	if t.net.Conv != nil {
		return nil, nil, errConvExport
	}
	w, err := t.spec.DecodeDenseModel(m, nil)
	if err != nil {
		return nil, nil, err
	}
	return slices.Clone(t.net.Sizes), w, nil
}

// DenseWeights implements Exporter: the base with the global adapter merged,
// W0 + (alpha/r)·AᵀB per layer; in fedavg mode the model's dense weights.
func (t *LoRA) DenseWeights(m []byte) ([]int, [][]float32, error) {
	sizes := slices.Clone(t.base.Sizes)
	if t.net == nil {
		w, err := t.dense.DecodeDenseModel(m, nil)
		if err != nil {
			return nil, nil, err
		}
		return sizes, w, nil
	}
	f, err := t.spec.DecodeModel(m)
	if err != nil {
		return nil, nil, err
	}
	A := f.A
	if t.spec.FrozenA {
		A = t.initA
	}
	w, _, err := t.net.Effective(A, f.B, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	return sizes, w, nil
}
