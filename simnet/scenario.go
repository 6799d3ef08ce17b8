package simnet

import (
	"fmt"
	"sort"
	"sync"

	"github.com/fedrank/fedrank/task"
)

// Scenario is a named experiment: a task builder plus the defaults of every setting.
type Scenario struct {
	Name        string
	Description string
	// Defaults holds the scenario's settings; Run fills a Config's zero fields from it.
	Defaults Config
	// Aggregators lists the aggregator names the scenario's task accepts; the first
	// is the default.
	Aggregators []string
	// Updates is the kind of update its peers send, so that Resolve can
	// reject an attack that does not fit without building the task; ""
	// leaves that check to the task when it is built.
	Updates task.UpdateKind
	// Build constructs the task for an effective (defaults filled, validated) config.
	Build func(cfg Config) (task.Task, error)
	// Hyper, optional, gives the local-training defaults (lr, momentum,
	// epochs, ...) for a config whose other settings are filled (they may
	// depend on its aggregator); Build must train with the config's values.
	// nil for a task without such settings: they stay zero and no other
	// value is accepted.
	Hyper func(cfg Config) Hyper
	// Models lists the networks the scenario offers (Config.Model), the
	// default first; nil: only its one network, and Config.Model must be
	// unset.
	Models []string
}

// Info is a name and a one-line description, for `sim --list`.
type Info struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Scenario{}
)

// RegisterScenario adds a scenario; it panics on a duplicate or unnamed one
// (a programming error, as with database/sql drivers).
func RegisterScenario(s Scenario) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if s.Name == "" || s.Build == nil {
		panic("simnet: RegisterScenario: scenario needs a name and a Build func")
	}
	if _, dup := registry[s.Name]; dup {
		panic(fmt.Sprintf("simnet: RegisterScenario: duplicate scenario %q", s.Name))
	}
	registry[s.Name] = s
}

// LookupScenario returns the scenario registered under name.
func LookupScenario(name string) (Scenario, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s, ok := registry[name]
	return s, ok
}

// Scenarios lists the registered scenarios sorted by name.
func Scenarios() []Scenario {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]Scenario, 0, len(registry))
	for _, s := range registry {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DefaultScenario is what `node sim` runs when no --scenario is given.
const DefaultScenario = "frl-mnist"
