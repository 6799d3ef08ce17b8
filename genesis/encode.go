package genesis

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/fedrank/fedrank/task"
)

const header = `# Genesis of a fedrank federation.
#
# This file defines one federation: who takes part (the aggregator and the
# member trainers, by libp2p peer ID), what they learn (the scenario, its
# aggregation and hyperparameters) and how its rounds run. Every peer of the
# federation runs with the same file.
#
# The federation id, carried by every message, is the SHA-256 of a canonical
# encoding of every setting below except bootstrap and task.base_model (see
# the Go package github.com/fedrank/fedrank/genesis). Comments, whitespace,
# key order and the order of members do not change it; any other edit makes
# a new federation, whose peers do not talk to this one's.
#
# Durations are Go duration strings ("90s", "2m", "1h30m") of whole
# milliseconds; sizes are in bytes.
`

// Encode writes the genesis, its defaults filled in, as a commented TOML file
// with the settings in a fixed order; Parse reads it back to an equal Genesis
// of the same ID. An invalid genesis is not written.
func (g *Genesis) Encode() ([]byte, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	f := g.filled()
	e := &encoder{}
	e.buf.WriteString(header)
	e.printf("#\n# federation id: %s\n", f.ID())

	e.key("A name for people. Part of the id.", "name", e.str(f.Name))
	e.key(fmt.Sprintf("The task, a simulator scenario: %s.", strings.Join(quoteAll(Scenarios()), ", ")),
		"scenario", e.str(f.Scenario))
	e.key(fmt.Sprintf("The aggregation strategy; %s accepts %s\n(the first is its default).",
		f.Scenario, strings.Join(quoteAll(Aggregations(f.Scenario)), ", ")),
		"aggregation", e.str(f.AggregatorName))
	e.key("Seeds the initial model and trainer selection exactly as `node sim --seed`:\n"+
		"the same scenario and seed start from the simulator's initial model. 0..2^63-1.",
		"seed", strconv.FormatUint(f.Seed, 10))
	e.key("Rounds to run; 0 runs forever.", "rounds", strconv.FormatUint(f.Rounds, 10))

	e.key("The peer that runs the rounds (selection, aggregation). It does not train.",
		"aggregator", e.str(f.Aggregator))
	var ms strings.Builder
	ms.WriteString("[\n")
	for _, m := range f.Members {
		ms.WriteString("  " + e.str(m) + ",\n")
	}
	ms.WriteString("]")
	e.key("The trainers. Order does not matter (not even to selection).", "members", ms.String())
	e.key("Trainers selected per round, 1..len(members).", "per_round", strconv.Itoa(f.PerRound))
	e.key("Accepted updates that close a round before its deadline, 1..per_round.",
		"quorum", strconv.Itoa(f.Quorum))
	e.key("Fewest accepted updates that still advance the model at the deadline, 1..quorum;\n"+
		"below it the round closes with the model unchanged.", "min_updates", strconv.Itoa(f.MinUpdates))
	e.key("Time from a round's start to its deadline.", "round_timeout", e.str(f.RoundTimeout.String()))
	e.key("First delay before an unanswered message is sent again; it doubles after\n"+
		"each resend (default round_timeout/10).", "retry", e.str(f.Retry.String()))
	e.key("A trainer that hears nothing from the aggregator this long reports it\n"+
		"(default 2 x round_timeout).", "silence_timeout", e.str(f.SilenceTimeout.String()))
	e.key("Largest update payload accepted (default 8 MiB).", "max_update_bytes", strconv.FormatInt(f.MaxUpdateBytes, 10))
	e.key("Largest model transfer accepted, all chunks together (default 64 MiB).",
		"max_model_bytes", strconv.FormatInt(f.MaxModelBytes, 10))
	e.key("Models larger than this travel in chunks of this size (default 1 MiB).",
		"chunk_bytes", strconv.FormatInt(f.ChunkBytes, 10))
	var bs strings.Builder
	bs.WriteString("[")
	for i, a := range f.Bootstrap {
		if i == 0 {
			bs.WriteString("\n")
		}
		bs.WriteString("  " + e.str(a) + ",\n")
	}
	bs.WriteString("]")
	e.key("Multiaddrs ending in /p2p/<peer ID> that a peer dials at start. NOT part of\n"+
		"the id: addresses change, the federation does not.", "bootstrap", bs.String())

	p := f.Task
	e.buf.WriteString("\n# The task's hyperparameters (a setting left out takes the scenario's default).\n[task]\n")
	e.key("Learning rate of the first local epoch of round 1.", "lr", e.float(p.LR))
	e.key("Momentum of local SGD, [0, 1).", "momentum", e.float(*p.Momentum))
	e.key("Weight decay of local SGD.", "weight_decay", e.float(*p.WeightDecay))
	e.key("Local epochs per round.", "epochs", strconv.Itoa(p.Epochs))
	e.key("Local mini-batch size.", "batch", strconv.Itoa(p.Batch))
	e.key("Anneal the learning rate over the local epochs (cosine).", "cosine", strconv.FormatBool(*p.Cosine))
	e.key("Learning-rate factor per round, (0, 1].", "lr_decay", e.float(p.LRDecay))
	sc := scenarios[f.Scenario]
	if k, _, _ := task.ParseRankingCodec(p.RankingCodec); k != task.CodecPacked || sc.rankings {
		leftOut := `"packed". Part of the id only when not packed.`
		if d := defaultsOf(f.Scenario, f.AggregatorName).rankingCodec; d != task.CodecPacked {
			leftOut = strconv.Quote(d) + "."
		}
		e.key(`How trainers send rankings: "packed", "delta" (lossless, coded against the global model),
"bucket:B" or "bucket-mask:B" (lossy). Left out: `+leftOut,
			"ranking_codec", e.str(cmp.Or(p.RankingCodec, task.CodecPacked)))
	}
	if sc.base {
		if sc.rankings {
			e.key("Rank of the supermask adapters whose edges every member ranks (per layer at\n"+
				"most min(in, out)).", "rank", strconv.Itoa(p.Rank))
		} else {
			e.key("Adapter rank.", "rank", strconv.Itoa(p.Rank))
		}
		if sc.compression {
			e.key(`Codec of uploaded adapter factors: "fp32", "fp16" or "int8".`, "compression", e.str(p.Compression))
		}
		e.key("The pre-trained base model (dense safetensors), relative to this file's\n"+
			"directory. Not part of the id.", "base_model", e.str(p.BaseModel))
		e.key("SHA-256 of the base model file, checked when it is read. Part of the id.",
			"base_model_hash", e.str(p.BaseModelHash))
	}
	if e.err != nil {
		return nil, e.err
	}
	return e.buf.Bytes(), nil
}

type encoder struct {
	buf bytes.Buffer
	err error
}

func (e *encoder) printf(format string, args ...any) { fmt.Fprintf(&e.buf, format, args...) }

// key writes a blank line, the comment (one # line per line) and key = value.
func (e *encoder) key(comment, key, value string) {
	e.buf.WriteString("\n")
	for line := range strings.SplitSeq(comment, "\n") {
		e.buf.WriteString("# " + line + "\n")
	}
	e.buf.WriteString(key + " = " + value + "\n")
}

// str is s as a TOML basic string.
func (e *encoder) str(s string) string {
	if !utf8.ValidString(s) {
		if e.err == nil {
			e.err = fmt.Errorf("genesis: %q is not valid UTF-8", s)
		}
		return `""`
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// float is v as a TOML float that reads back as the same float64.
func (e *encoder) float(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		if e.err == nil {
			e.err = fmt.Errorf("genesis: %v is not a finite number", v)
		}
		return "0.0"
	}
	s := strconv.FormatFloat(v, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return s
}

func quoteAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strconv.Quote(s)
	}
	return out
}
