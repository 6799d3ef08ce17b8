package daemon

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/genesis"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/storage"
	"github.com/fedrank/fedrank/task"
)

// Export returns the global model after round as a dense safetensors file:
// the plain network the model computes (task.Exporter), with the
// federation, round and model hash in its metadata. It reads the running
// daemon's API, or the store of a stopped one; the peer must hold that
// round's model (the aggregator holds every round's; a trainer those it
// trained from).
func Export(home string, round uint64) ([]byte, error) {
	raw, err := apiGet(home, "/model?round="+strconv.FormatUint(round, 10), nil)
	if errors.Is(err, errNotRunning) {
		raw, err = modelFromStore(home, round)
	}
	if err != nil {
		return nil, err
	}
	g, _, err := genesis.Load(filepath.Join(home, GenesisFile))
	if err != nil {
		return nil, fmt.Errorf("the federation's genesis: %w", err)
	}
	tk, err := g.BuildTask(task.Data{})
	if err != nil {
		return nil, err
	}
	ex, ok := tk.(task.Exporter)
	if !ok {
		return nil, fmt.Errorf("task %s cannot export its model", tk.Info().Name)
	}
	sizes, w, err := ex.DenseWeights(raw)
	if err != nil {
		return nil, fmt.Errorf("round %d's model: %w", round, err)
	}
	return model.EncodeDenseSafetensors(sizes, w, map[string]string{
		"fedrank.federation": g.ID(),
		"fedrank.scenario":   g.Scenario,
		"fedrank.round":      strconv.FormatUint(round, 10),
		"fedrank.model_hash": fmt.Sprintf("%x", node.Hash(raw)),
	})
}

func modelFromStore(home string, round uint64) ([]byte, error) {
	st, err := storage.OpenReadOnly(filepath.Join(home, StoreDir))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return modelOf(st, strconv.FormatUint(round, 10), "")
}

// Evaluate scores a dense safetensors file (as Export writes) on the test
// set in testDir (t10k IDX files; "" = the MNIST copy of the Go module).
func Evaluate(file []byte, testDir string) (task.Eval, error) {
	sizes, w, _, err := model.DecodeDenseSafetensors(file)
	if err != nil {
		return task.Eval{}, err
	}
	var set *data.Set
	if testDir == "" {
		dir, err := data.MNISTDir("")
		if err != nil {
			return task.Eval{}, err
		}
		_, set, err = data.LoadMNIST(dir)
		if err != nil {
			return task.Eval{}, err
		}
	} else if set, err = data.LoadTestSet(testDir); err != nil {
		return task.Eval{}, err
	}
	test, err := model.NewInputs(set, data.MNISTMean, data.MNISTStd)
	if err != nil {
		return task.Eval{}, err
	}
	cfg := task.DefaultFedAvg(1)
	cfg.Sizes = sizes
	dense, err := task.NewDense(cfg, task.Data{Test: test})
	if err != nil {
		return task.Eval{}, err
	}
	return dense.Evaluate(dense.Spec().EncodeDenseModel(w))
}
