package data

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Partition kinds, as written in a Spec.
const (
	KindIID       = "iid"
	KindDirichlet = "dirichlet"
	KindShards    = "shards"
)

const specSyntax = `want one of "iid", "dirichlet:ALPHA" (ALPHA > 0, e.g. dirichlet:1.0) or "shards:K" (K shards per client, e.g. shards:2)`

// Spec names a partitioner and its parameter, in a form fit for a flag:
// "iid", "dirichlet:1.0" or "shards:2". The zero Spec is invalid. *Spec
// implements flag.Value.
type Spec struct {
	Kind   string  // KindIID, KindDirichlet or KindShards
	Alpha  float64 // Dirichlet concentration (Kind == KindDirichlet)
	Shards int     // shards per client (Kind == KindShards)
}

// ParseSpec parses "iid", "dirichlet:ALPHA" or "shards:K". The kind is case
// insensitive and space around the parts is ignored.
func ParseSpec(s string) (Spec, error) {
	kind, arg, hasArg := strings.Cut(strings.TrimSpace(s), ":")
	kind, arg = strings.ToLower(strings.TrimSpace(kind)), strings.TrimSpace(arg)
	var spec Spec
	switch kind {
	case KindIID:
		if hasArg {
			return Spec{}, fmt.Errorf("data: partition %q: iid takes no parameter", s)
		}
		spec = Spec{Kind: KindIID}
	case KindDirichlet:
		if arg == "" {
			return Spec{}, fmt.Errorf("data: partition %q: dirichlet needs a concentration, e.g. dirichlet:1.0", s)
		}
		a, err := strconv.ParseFloat(arg, 64)
		if err != nil {
			return Spec{}, fmt.Errorf("data: partition %q: dirichlet alpha %q is not a number", s, arg)
		}
		spec = Spec{Kind: KindDirichlet, Alpha: a}
	case KindShards:
		if arg == "" {
			return Spec{}, fmt.Errorf("data: partition %q: shards needs the number of shards per client, e.g. shards:2", s)
		}
		k, err := strconv.Atoi(arg)
		if err != nil {
			return Spec{}, fmt.Errorf("data: partition %q: shards per client %q is not an integer", s, arg)
		}
		spec = Spec{Kind: KindShards, Shards: k}
	case "":
		if strings.TrimSpace(s) == "" {
			return Spec{}, fmt.Errorf("data: empty partition spec; %s", specSyntax)
		}
		return Spec{}, fmt.Errorf("data: partition %q: no kind before the colon; %s", s, specSyntax)
	default:
		return Spec{}, fmt.Errorf("data: partition %q: unknown kind %q; %s", s, kind, specSyntax)
	}
	if err := spec.Validate(); err != nil {
		return Spec{}, fmt.Errorf("data: partition %q: %w", s, err)
	}
	return spec, nil
}

// Validate reports whether s names a partitioner with a usable parameter.
func (s Spec) Validate() error {
	switch s.Kind {
	case KindIID:
		return nil
	case KindDirichlet:
		if math.IsInf(s.Alpha, 0) {
			return fmt.Errorf("dirichlet alpha must be finite, got %v", s.Alpha)
		}
		if !(s.Alpha > 0) {
			return fmt.Errorf("dirichlet alpha must be > 0, got %v", s.Alpha)
		}
		return nil
	case KindShards:
		if s.Shards <= 0 {
			return fmt.Errorf("shards per client must be > 0, got %d", s.Shards)
		}
		return nil
	case "":
		return fmt.Errorf("no partition kind; %s", specSyntax)
	default:
		return fmt.Errorf("unknown partition kind %q; %s", s.Kind, specSyntax)
	}
}

// String returns the canonical text of s, which ParseSpec reads back to s:
// "iid", "dirichlet:1.0", "shards:2". The zero Spec gives "".
func (s Spec) String() string {
	switch s.Kind {
	case KindDirichlet:
		a := strconv.FormatFloat(s.Alpha, 'g', -1, 64)
		if !strings.ContainsAny(a, ".eIN") { // integral: write 1.0, not 1
			a += ".0"
		}
		return KindDirichlet + ":" + a
	case KindShards:
		return KindShards + ":" + strconv.Itoa(s.Shards)
	default:
		return s.Kind
	}
}

// Set parses v into s, for flag.Var.
func (s *Spec) Set(v string) error {
	spec, err := ParseSpec(v)
	if err != nil {
		return err
	}
	*s = spec
	return nil
}

// Split partitions examples with the given labels among clients with the
// partitioner s names: IID over len(labels) examples, Dirichlet with
// s.Alpha over classes, or Shards with s.Shards per client.
func (s Spec) Split(labels []uint8, classes, clients int, seed uint64) (Partition, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	switch s.Kind {
	case KindIID:
		return IID(len(labels), clients, seed)
	case KindDirichlet:
		return Dirichlet(labels, classes, clients, s.Alpha, seed)
	default: // KindShards, by Validate
		return Shards(labels, clients, s.Shards, seed)
	}
}
