package genesis

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"

	"github.com/fedrank/fedrank/task"
)

// idPrefix versions the canonical encoding.
const idPrefix = "fedrank-genesis/v1\n"

// canonical is the identity of a federation, in the order and form of the
// package documentation. Changing it changes every federation id: bump
// idPrefix's version with it.
type canonical struct {
	Name             string        `json:"name"`
	Aggregator       string        `json:"aggregator"`
	Members          []string      `json:"members"`
	Scenario         string        `json:"scenario"`
	Aggregation      string        `json:"aggregation"`
	Seed             uint64        `json:"seed"`
	Rounds           uint64        `json:"rounds"`
	PerRound         int           `json:"per_round"`
	Quorum           int           `json:"quorum"`
	MinUpdates       int           `json:"min_updates"`
	RoundTimeoutMs   int64         `json:"round_timeout_ms"`
	RetryMs          int64         `json:"retry_ms"`
	SilenceTimeoutMs int64         `json:"silence_timeout_ms"`
	MaxUpdateBytes   int64         `json:"max_update_bytes"`
	MaxModelBytes    int64         `json:"max_model_bytes"`
	ChunkBytes       int64         `json:"chunk_bytes"`
	Task             canonicalTask `json:"task"`
}

type canonicalTask struct {
	LR            float64 `json:"lr"`
	Momentum      float64 `json:"momentum"`
	WeightDecay   float64 `json:"weight_decay"`
	Epochs        int     `json:"epochs"`
	Batch         int     `json:"batch"`
	Cosine        bool    `json:"cosine"`
	LRDecay       float64 `json:"lr_decay"`
	Rank          int     `json:"rank"`
	Compression   string  `json:"compression"`
	BaseModelHash string  `json:"base_model_hash"`
	RankingCodec  string  `json:"ranking_codec,omitempty"` // only when not packed: older ids stay
}

// Canonical returns the bytes whose SHA-256 is the federation id (see the
// package documentation): every setting but Bootstrap and Task.BaseModel,
// defaults filled in, members sorted, durations in milliseconds.
func (g *Genesis) Canonical() []byte {
	f := g.filled()
	h := f.Task.hyper()
	c := canonical{
		Name:             f.Name,
		Aggregator:       f.Aggregator,
		Members:          slices.Sorted(slices.Values(f.Members)),
		Scenario:         f.Scenario,
		Aggregation:      f.AggregatorName,
		Seed:             f.Seed,
		Rounds:           f.Rounds,
		PerRound:         f.PerRound,
		Quorum:           f.Quorum,
		MinUpdates:       f.MinUpdates,
		RoundTimeoutMs:   ms(f.RoundTimeout),
		RetryMs:          ms(f.Retry),
		SilenceTimeoutMs: ms(f.SilenceTimeout),
		MaxUpdateBytes:   f.MaxUpdateBytes,
		MaxModelBytes:    f.MaxModelBytes,
		ChunkBytes:       f.ChunkBytes,
		Task: canonicalTask{
			LR: h.LR, Momentum: h.Momentum, WeightDecay: h.WeightDecay,
			Epochs: h.Epochs, Batch: h.Batch, Cosine: h.Cosine, LRDecay: f.Task.LRDecay,
			Rank: f.Task.Rank, Compression: f.Task.Compression, BaseModelHash: f.Task.BaseModelHash,
		},
	}
	if k, _, _ := task.ParseRankingCodec(f.Task.RankingCodec); k != task.CodecPacked {
		c.Task.RankingCodec = f.Task.RankingCodec
	}
	if c.Members == nil {
		c.Members = []string{}
	}
	var buf bytes.Buffer
	buf.WriteString(idPrefix)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		// Only a NaN or infinite float fails, which Validate refuses; keep
		// such a genesis apart from every valid one.
		buf.Reset()
		buf.WriteString(idPrefix + "invalid: " + err.Error())
		return buf.Bytes()
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// ID is the federation id: the lower-case hex SHA-256 of Canonical.
func (g *Genesis) ID() string {
	sum := sha256.Sum256(g.Canonical())
	return hex.EncodeToString(sum[:])
}

func ms(d Duration) int64 { return time.Duration(d).Milliseconds() }
