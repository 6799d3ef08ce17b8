package sweep

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/fedrank/fedrank/simnet"
)

// Cell is one run of a sweep.
type Cell struct {
	Index int    // position in the sweep, from 0
	Grid  string // the name of its grid
	// Config is the effective config (simnet.Resolve's), which the cell runs
	// with Workers set to its share of the cores.
	Config simnet.Config
	// Hash identifies Config, Workers aside: the name of the cell's cache file.
	Hash string
	// Group identifies Config, Workers and Seed aside: the cells of a group
	// differ by seed only.
	Group string
	// Given are the values of the axes that made the cell, by field.
	Given map[string]any
	// Explicit are the fields the sweep sets (in a base or an axis), as
	// against those the scenario's defaults fill in.
	Explicit []string
}

// Label describes the cell by its axes, e.g. "frl-mnist vote reverse 20%
// crash=0.1 seed 3".
func (c Cell) Label() string {
	var fields []string
	for _, f := range labelOrder {
		if _, ok := c.Given[f]; ok {
			fields = append(fields, f)
		}
	}
	if l := Label(c.Config, fields, " "); l != "" {
		return l
	}
	return fmt.Sprintf("cell %d", c.Index+1)
}

// Label describes a config by the values of fields, joined by sep: the
// named axes' values as they are ("vote", "20%"), the seed as "seed 3",
// any other field as "field=value".
func Label(c simnet.Config, fields []string, sep string) string {
	var parts []string
	for _, f := range fields {
		v := displayValue(f, c)
		switch {
		case v == "":
			continue
		case f == "seed":
			v = "seed " + v
		case !slices.ContainsFunc(namedAxes, func(a struct{ key, field string }) bool { return a.field == f }):
			v = f + "=" + v
		}
		parts = append(parts, v)
	}
	return strings.Join(parts, sep)
}

// displayValue is a field's value as labels and Markdown tables show it:
// a fraction of attackers as a percentage ("" for none), no attack as
// "no attack".
func displayValue(field string, c simnet.Config) string {
	switch field {
	case "attack":
		if c.Attackers == 0 {
			return "no attack"
		}
	case "attackers":
		if c.Attackers == 0 {
			return ""
		}
		return strconv.FormatFloat(100*c.Attackers, 'g', 4, 64) + "%"
	}
	return formatValue(fieldValue(c, field))
}

// hashIgnored are the fields that never change a run's results (simnet's
// Config documents Workers so); the cache does not tell them apart.
var hashIgnored = []string{"workers"}

// hashVersion changes when what a cached cell holds changes meaning.
const hashVersion = "fedrank sweep cell v1\n"

// Hash identifies an effective config, the fields of hashIgnored aside: the
// SHA-256 of its canonical JSON (keys sorted, zero values left out, so that
// a field added to simnet.Config with a zero default leaves the hashes of
// existing cells alone), in 24 hex digits.
func Hash(cfg simnet.Config) string {
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(fmt.Sprintf("sweep: encoding a config: %v", err)) // simnet.Config always encodes
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(fmt.Sprintf("sweep: decoding a config: %v", err))
	}
	for k, v := range m {
		if slices.Contains(hashIgnored, k) || isZero(v) {
			delete(m, k)
		}
	}
	canon, err := json.Marshal(m) // map keys are sorted
	if err != nil {
		panic(fmt.Sprintf("sweep: encoding a config: %v", err))
	}
	sum := sha256.Sum256(append([]byte(hashVersion), canon...))
	return hex.EncodeToString(sum[:12])
}

// GroupHash identifies the group of an effective config: Hash with the seed left out.
func GroupHash(cfg simnet.Config) string {
	cfg.Seed = 0
	return Hash(cfg)
}

func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case float64:
		return x == 0
	case bool:
		return !x
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

// Cells expands the sweep into its cells (those that pass the filters of
// Only), resolves each with
// simnet.Resolve and checks it: an error is a *FieldError naming where the
// file gives the bad value, and the cell. Cells with the same effective
// config are run once (a fraction of 0 makes every attack the same cell).
func (s *Spec) Cells() ([]Cell, error) {
	var cells []Cell
	seen := map[string]bool{}
	for _, g := range s.Grids {
		var cfg simnet.Config
		for _, st := range g.Base {
			setField(&cfg, st.Field, st.Value)
		}
		idx := make([]int, len(g.Axes))
		for {
			c := cfg
			given := map[string]any{}
			keys := map[string]string{} // field -> where the file gives it
			for _, st := range g.Base {
				keys[st.Field] = st.Key
			}
			for i, a := range g.Axes {
				v := a.Values[idx[i]]
				setField(&c, a.Field, v)
				given[a.Field] = v
				keys[a.Field] = a.Key
			}
			if c.Attackers == 0 {
				// No attackers, no attack: the baseline of every attack.
				c.Attack = ""
				if _, ok := given["attack"]; ok {
					given["attack"] = ""
				}
			}
			keep := true
			for _, f := range s.filters {
				_, set := keys[f.field]
				keep = keep && f.pass(c, set)
			}
			var cell Cell
			if keep {
				var err error
				if cell, err = resolveCell(c, g, keys, given); err != nil {
					return nil, err
				}
				for _, f := range s.filters {
					keep = keep && f.pass(cell.Config, true)
				}
			}
			if keep && !seen[cell.Hash] {
				seen[cell.Hash] = true
				cell.Index = len(cells)
				cells = append(cells, cell)
			}
			// The next combination: the last axis turns fastest.
			i := len(idx) - 1
			for ; i >= 0; i-- {
				if idx[i]++; idx[i] < len(g.Axes[i].Values) {
					break
				}
				idx[i] = 0
			}
			if i < 0 {
				break
			}
		}
	}
	return cells, nil
}

func resolveCell(c simnet.Config, g Grid, keys map[string]string, given map[string]any) (Cell, error) {
	where := func(field string) string {
		if k, ok := keys[field]; ok {
			return k
		}
		return g.Path + "base." + field // not given: the scenario's default is wrong
	}
	describe := func() string {
		parts := []string{}
		if g.Path != "" {
			parts = append(parts, "grid "+g.Name)
		}
		for _, f := range labelOrder {
			if v, ok := given[f]; ok {
				parts = append(parts, f+"="+formatValue(v))
			}
		}
		if len(parts) == 0 {
			return ""
		}
		return " (in the cell " + strings.Join(parts, " ") + ")"
	}
	eff, _, err := simnet.Resolve(c)
	if err != nil {
		var ce *simnet.ConfigError
		if errors.As(err, &ce) {
			return Cell{}, fieldErr(where(ce.Field), "%s%s", ce.Msg, describe())
		}
		return Cell{}, fieldErr("", "%v%s", err, describe())
	}
	// A zero the scenario's default replaces is a setting quietly ignored.
	cv, ev := reflect.ValueOf(c), reflect.ValueOf(eff)
	for field, key := range keys {
		f := configFields[field]
		if !cv.Field(f.index).IsZero() || ev.Field(f.index).IsZero() {
			continue
		}
		if field == "attack" && c.Attackers == 0 {
			continue
		}
		return Cell{}, fieldErr(key, "%s would mean the scenario's default (%v); leave %s out to use it%s",
			zeroText(f.typ), formatValue(ev.Field(f.index).Interface()), field, describe())
	}
	var explicit []string
	for _, f := range labelOrder {
		if _, ok := keys[f]; ok {
			explicit = append(explicit, f)
		}
	}
	return Cell{Grid: g.Name, Config: eff, Hash: Hash(eff), Group: GroupHash(eff), Given: given, Explicit: explicit}, nil
}

func zeroText(t reflect.Type) string {
	if t.Kind() == reflect.String {
		return `""`
	}
	return "0"
}

func setField(c *simnet.Config, field string, v any) {
	f := configFields[field]
	reflect.ValueOf(c).Elem().Field(f.index).Set(reflect.ValueOf(v))
}

// fieldValue is the value of a Config field by JSON name.
func fieldValue(c simnet.Config, field string) any {
	return reflect.ValueOf(c).Field(configFields[field].index).Interface()
}

// Only restricts the sweep to the cells whose field has one of values:
// the command line's --only. A cell without attackers passes a filter on
// attack (it is the baseline of every attack). Cells filtered out are not
// resolved, so that a filter can leave out what this build cannot run.
func (s *Spec) Only(field string, values []any) error {
	if _, ok := configFields[field]; !ok {
		return fmt.Errorf("unknown setting %q (have: %s)", field, strings.Join(fieldOrder, ", "))
	}
	if len(values) == 0 {
		return errors.New("no value")
	}
	s.filters = append(s.filters, filter{field, values})
	return nil
}

// filter is one Only.
type filter struct {
	field  string
	values []any
}

// pass reports whether c passes f; given says whether c's field is set
// (else c holds no value of it yet: it passes until resolved).
func (f filter) pass(c simnet.Config, given bool) bool {
	if f.field == "attack" && c.Attackers == 0 || !given {
		return true
	}
	v := fieldValue(c, f.field)
	return slices.ContainsFunc(f.values, func(x any) bool { return equalValue(x, v) })
}

func equalValue(a, b any) bool {
	if fa, ok := a.(float64); ok {
		if fb, ok := b.(float64); ok {
			return math.Abs(fa-fb) < 1e-12
		}
	}
	return reflect.DeepEqual(a, b)
}
