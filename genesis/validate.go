package genesis

import (
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedrank/fedrank/lowrank"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/task"
)

// Error is an invalid genesis setting.
type Error struct {
	Field string // the TOML key, e.g. "per_round" or "task.rank"
	Msg   string
}

func (e *Error) Error() string { return fmt.Sprintf("genesis: %s: %s", e.Field, e.Msg) }

func fieldErr(field, format string, args ...any) error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate reports the first invalid setting as an *Error naming its TOML
// key. Zero settings are checked at their defaults, so a Genesis built in
// code need not fill them in.
func (g *Genesis) Validate() error {
	f := g.filled()
	if f.Name == "" {
		return fieldErr("name", "empty")
	}
	if !utf8.ValidString(f.Name) {
		return fieldErr("name", "not valid UTF-8")
	}
	if err := checkPeerID(f.Aggregator); err != nil {
		return fieldErr("aggregator", "%v", err)
	}
	if len(f.Members) == 0 {
		return fieldErr("members", "no members")
	}
	seen := make(map[string]bool, len(f.Members))
	for i, m := range f.Members {
		if err := checkPeerID(m); err != nil {
			return fieldErr("members", "member %d: %v", i, err)
		}
		if seen[m] {
			return fieldErr("members", "%s listed twice", m)
		}
		if m == f.Aggregator {
			return fieldErr("members", "%s is the aggregator; the aggregator does not train", m)
		}
		seen[m] = true
	}
	sc, ok := scenarios[f.Scenario]
	if !ok {
		return fieldErr("scenario", "unknown scenario %q (have: %s)", f.Scenario, strings.Join(Scenarios(), ", "))
	}
	if !contains(sc.aggregations, f.AggregatorName) {
		return fieldErr("aggregation", "%q is not an aggregation of %s (have: %s)", f.AggregatorName, f.Scenario, strings.Join(sc.aggregations, ", "))
	}
	if f.Seed > math.MaxInt64 {
		return fieldErr("seed", "%d, must be at most %d (a TOML integer)", f.Seed, int64(math.MaxInt64))
	}
	if f.Rounds > math.MaxInt64 {
		return fieldErr("rounds", "%d, must be at most %d (a TOML integer)", f.Rounds, int64(math.MaxInt64))
	}
	if f.PerRound < 1 || f.PerRound > len(f.Members) {
		return fieldErr("per_round", "%d, must be in 1..len(members) = 1..%d", f.PerRound, len(f.Members))
	}
	if f.Quorum < 1 || f.Quorum > f.PerRound {
		return fieldErr("quorum", "%d, must be in 1..per_round = 1..%d", f.Quorum, f.PerRound)
	}
	if f.MinUpdates < 1 || f.MinUpdates > f.Quorum {
		return fieldErr("min_updates", "%d, must be in 1..quorum = 1..%d", f.MinUpdates, f.Quorum)
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"round_timeout", f.RoundTimeout}, {"retry", f.Retry}, {"silence_timeout", f.SilenceTimeout}} {
		if d.v <= 0 {
			return fieldErr(d.name, "%v, must be > 0", d.v)
		}
		if time.Duration(d.v)%time.Millisecond != 0 {
			return fieldErr(d.name, "%v is not a whole number of milliseconds", d.v)
		}
	}
	if f.SilenceTimeout <= f.RoundTimeout {
		// An unselected trainer hears nothing while a round runs to its
		// deadline: a shorter silence timeout would cry wolf every round.
		return fieldErr("silence_timeout", "%v, must be longer than round_timeout %v", f.SilenceTimeout, f.RoundTimeout)
	}
	for _, b := range []struct {
		name string
		v    int64
	}{{"max_update_bytes", f.MaxUpdateBytes}, {"max_model_bytes", f.MaxModelBytes}} {
		if b.v <= 0 || b.v > math.MaxInt32 {
			return fieldErr(b.name, "%d, must be in 1..%d", b.v, math.MaxInt32)
		}
	}
	if f.ChunkBytes < 1 || f.ChunkBytes > f.MaxModelBytes {
		return fieldErr("chunk_bytes", "%d, must be in 1..max_model_bytes = 1..%d", f.ChunkBytes, f.MaxModelBytes)
	}
	for i, a := range f.Bootstrap {
		info, err := peer.AddrInfoFromString(a)
		if err != nil {
			return fieldErr("bootstrap", "entry %d %q: %v (want a multiaddr ending in /p2p/<peer ID>)", i, a, err)
		}
		if len(info.Addrs) == 0 {
			return fieldErr("bootstrap", "entry %d %q has no address to dial, only a peer ID", i, a)
		}
	}
	return f.Task.validate(f.Scenario, sc)
}

func (p *TaskParams) validate(scenarioName string, sc scenario) error {
	h := p.hyper()
	switch {
	case !(h.LR > 0) || math.IsInf(h.LR, 0):
		return fieldErr("task.lr", "%v, must be > 0 and finite", h.LR)
	case !(h.Momentum >= 0 && h.Momentum < 1):
		return fieldErr("task.momentum", "%v, must be in [0, 1)", h.Momentum)
	case !(h.WeightDecay >= 0) || math.IsInf(h.WeightDecay, 0):
		return fieldErr("task.weight_decay", "%v, must be >= 0 and finite", h.WeightDecay)
	case h.Epochs < 1:
		return fieldErr("task.epochs", "%d, must be >= 1", h.Epochs)
	case h.Batch < 1:
		return fieldErr("task.batch", "%d, must be >= 1", h.Batch)
	case !(p.LRDecay > 0 && p.LRDecay <= 1):
		return fieldErr("task.lr_decay", "%v, must be in (0, 1]", p.LRDecay)
	}
	if err := h.Validate(); err != nil { // anything model adds later
		return fieldErr("task", "%v", err)
	}
	if _, _, err := task.ParseRankingCodec(p.RankingCodec); err != nil {
		return fieldErr("task.ranking_codec", "%v", err)
	}
	if p.RankingCodec != "" && !sc.rankings {
		return fieldErr("task.ranking_codec", "only %s send rankings, not %s", scenariosWith(func(s scenario) bool { return s.rankings }), scenarioName)
	}
	if p.Compression != "" && !sc.compression {
		return fieldErr("task.compression", "only %s uploads adapter factors, not %s", scenariosWith(func(s scenario) bool { return s.compression }), scenarioName)
	}
	if !sc.base {
		for _, s := range []struct {
			name string
			set  bool
		}{{"task.rank", p.Rank != 0}, {"task.base_model", p.BaseModel != ""}, {"task.base_model_hash", p.BaseModelHash != ""}} {
			if s.set {
				return fieldErr(s.name, "only %s have it, not %s", scenariosWith(func(s scenario) bool { return s.base }), scenarioName)
			}
		}
		return nil
	}
	if p.Rank < 1 || p.Rank > 4096 {
		return fieldErr("task.rank", "%d, must be in 1..4096", p.Rank)
	}
	if sc.compression {
		if _, err := lowrank.ParseCodec(p.Compression); err != nil {
			return fieldErr("task.compression", "%q, must be fp32, fp16 or int8", p.Compression)
		}
	}
	if p.BaseModel == "" {
		return fieldErr("task.base_model", "empty; %s fine-tunes a base model (a dense safetensors file)", scenarioName)
	}
	if p.BaseModelHash == "" {
		return fieldErr("task.base_model_hash", "empty; %s needs the SHA-256 of the base model file", scenarioName)
	}
	if b, err := hex.DecodeString(p.BaseModelHash); err != nil || len(b) != 32 {
		return fieldErr("task.base_model_hash", "%q is not a hex SHA-256 (64 hex digits)", p.BaseModelHash)
	}
	return nil
}

// hyper is the local training of filled-in parameters.
func (p *TaskParams) hyper() model.Hyper {
	h := model.Hyper{LR: p.LR, Epochs: p.Epochs, Batch: p.Batch}
	if p.Momentum != nil {
		h.Momentum = *p.Momentum
	}
	if p.WeightDecay != nil {
		h.WeightDecay = *p.WeightDecay
	}
	if p.Cosine != nil {
		h.Cosine = *p.Cosine
	}
	return h
}

// checkPeerID accepts a libp2p peer ID in the canonical form libp2p prints
// (peer.ID.String): the node machine compares peer IDs as strings.
func checkPeerID(s string) error {
	if s == "" {
		return fmt.Errorf("empty peer ID")
	}
	id, err := peer.Decode(s)
	if err != nil {
		return fmt.Errorf("%q is not a libp2p peer ID: %v", s, err)
	}
	if c := id.String(); c != s {
		return fmt.Errorf("peer ID %q is not in its canonical form %q", s, c)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// defaults are a scenario's default task settings.
type defaults struct {
	hyper        model.Hyper
	lrDecay      float64
	rank         int
	compression  string
	rankingCodec string
}

func defaultsOf(scenarioName, aggregation string) defaults {
	switch scenarioName {
	case "frl-mnist":
		c := task.DefaultFRL(0)
		// Packed, not the simulator's default: see TaskParams.RankingCodec.
		return defaults{hyper: c.Hyper, lrDecay: c.LRDecay, rankingCodec: task.CodecPacked}
	case "frl-lora-mnist":
		c := task.DefaultFRLLoRA(0)
		return defaults{hyper: c.Hyper, lrDecay: c.LRDecay, rank: c.Rank, rankingCodec: c.Codec}
	case "fedavg-mnist":
		c := task.DefaultFedAvg(0)
		return defaults{hyper: c.Hyper, lrDecay: c.LRDecay}
	case "lora-mnist":
		c := task.DefaultLoRA(0)
		h := c.Hyper
		if aggregation == task.MergeFedAvg {
			h = c.DenseHyper
		}
		return defaults{hyper: h, lrDecay: c.LRDecay, rank: c.Rank, compression: c.Compression}
	}
	return defaults{}
}
