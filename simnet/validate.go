package simnet

import (
	"fmt"
	"strings"
)

// Validate checks the generic settings of an effective config (defaults
// already filled) and reports the first bad one as a *ConfigError naming its
// JSON / flag field. Scenario-specific settings (partition, aggregator, attack)
// are checked where they are resolved.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
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
	}
	if _, ok := lookupNet(c.Net); !ok {
		names := make([]string, 0, len(netProfiles))
		for _, p := range netProfiles {
			names = append(names, p.name)
		}
		return bad("net", "unknown network profile %q (have: %s)", c.Net, strings.Join(names, ", "))
	}
	return nil
}
