package simnet

import (
	"fmt"
	"math"
	"strings"

	"github.com/fedrank/fedrank/task"
)

// Validate checks the generic settings of an effective config (defaults
// already filled) and reports the first bad one as a *ConfigError naming its
// JSON / flag field. Scenario-specific settings (partition, aggregator, attack)
// are checked where they are resolved.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	prob := func(p float64) bool { return p >= 0 && p <= 1 }
	switch {
	case c.Peers < 1:
		return bad("peers", "%d, must be at least 1", c.Peers)
	case c.PerRound < 1 || c.PerRound > c.Peers:
		return bad("per_round", "%d, must be in [1, peers=%d]", c.PerRound, c.Peers)
	case c.Rounds < 1:
		return bad("rounds", "%d, must be at least 1", c.Rounds)
	case !(c.Attackers >= 0 && c.Attackers < 0.5):
		return bad("attackers", "%v, must be a fraction in [0, 0.5)", c.Attackers)
	case !(c.Crash >= 0 && c.Crash < 1):
		return bad("crash", "%v, must be a probability in [0, 1)", c.Crash)
	case !(c.Quorum > 0 && c.Quorum <= 1):
		return bad("quorum", "%v, must be a fraction in (0, 1]", c.Quorum)
	case c.Workers < 0:
		return bad("workers", "%d, must be >= 0 (0 = GOMAXPROCS)", c.Workers)
	case c.RoundTimeoutMs <= 0:
		return bad("round_timeout_ms", "%d, must be > 0", c.RoundTimeoutMs)
	case !prob(c.Churn):
		return bad("churn", "%v, must be a probability in [0, 1]", c.Churn)
	case !prob(c.CrashAggregator):
		return bad("crash_aggregator", "%v, must be a probability in [0, 1]", c.CrashAggregator)
	case !prob(c.EdgePeers):
		return bad("edge_peers", "%v, must be a fraction in [0, 1]", c.EdgePeers)
	case c.EdgeRank < 0:
		return bad("edge_rank", "%d, must be >= 0 (0 = the federation's rank)", c.EdgeRank)
	case !(c.EdgeUplinkMbit >= 0) || math.IsInf(c.EdgeUplinkMbit, 1):
		return bad("edge_uplink_mbit", "%v, must be >= 0 (0 = the network profile's uplink)", c.EdgeUplinkMbit)
	case c.EdgePeers == 0 && (c.EdgeRank != 0 || c.EdgeUplinkMbit != 0):
		return bad("edge_peers", "0, but edge_rank or edge_uplink_mbit is set: say which fraction of peers are edge peers")
	case c.AggregatorDownMs < 0:
		return bad("aggregator_down_ms", "%d, must be >= 0 (0 = %d ms)", c.AggregatorDownMs, DefaultAggregatorDownMs)
	case !(c.LR >= 0) || math.IsInf(c.LR, 1):
		return bad("lr", "%v, must be a positive number", c.LR)
	case !(c.Momentum >= 0 && c.Momentum < 1):
		return bad("momentum", "%v, must be in [0, 1)", c.Momentum)
	case !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 1):
		return bad("weight_decay", "%v, must be >= 0", c.WeightDecay)
	case c.Epochs < 0:
		return bad("epochs", "%d, must be at least 1", c.Epochs)
	case c.Batch < 0:
		return bad("batch", "%d, must be at least 1", c.Batch)
	case !(c.LRDecay >= 0 && c.LRDecay <= 1):
		return bad("lr_decay", "%v, must be in (0, 1]", c.LRDecay)
	case c.LRSchedule != "" && c.LRSchedule != "cosine" && c.LRSchedule != "constant":
		return bad("lr_schedule", "%q, must be cosine or constant", c.LRSchedule)
	}
	if _, _, err := task.ParseRankingCodec(c.RankingCodec); err != nil {
		return bad("ranking_codec", "%v", err)
	}
	if _, ok := lookupNet(c.Net); !ok {
		names := make([]string, 0, len(netProfiles))
		for _, p := range netProfiles {
			names = append(names, p.name)
		}
		return bad("net", "unknown network profile %q (have: %s)", c.Net, strings.Join(names, ", "))
	}
	if _, err := newFaultPlan(*c); err != nil {
		return err
	}
	return nil
}
