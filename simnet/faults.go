package simnet

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/fedrank/fedrank/internal/splitmix"
)

// Faults lists the fault injectors (their flags), for `sim --list`.
func Faults() []Info {
	return []Info{
		{"net", "network profile (--net): latency, bandwidth and loss of every link; see the network profiles"},
		{"crash", "--crash P: a selected trainer crashes with probability P when its round is announced, and restarts empty at the next announcement"},
		{"partition-net", "--partition-net 'ROUNDS:WHO;...' or @FILE: peers cut off from the aggregator for rounds ROUNDS (10-20, or 7), WHO a fraction (0.3) or peers (peer-0003,11); it heals after the last round of the window"},
		{"stragglers", "--stragglers lognormal:SIGMA | slow:FRACxFACTOR: per-peer compute speed (training time x exp(SIGMA·Z), or FACTOR times slower for a fraction FRAC of peers); slow peers miss deadlines"},
		{"churn", "--churn P: each peer is away in a round with probability P (leaves when it opens, misses its messages, comes back empty)"},
		{"crash-aggregator", "--crash-aggregator P, --crash-aggregator-at 3,7: the aggregator crashes mid-round (after persisting half a quorum of updates) and restarts from its store after --aggregator-down (default 5s); no accepted update is lost"},
	}
}

// Streams of the fault injectors, derived from the run's seed.
const (
	streamPartitionNet uint64 = 0x70617274 + iota<<32
	streamStraggler
	streamChurn
	streamAggCrash
	streamEdge
)

// isEdgePeer reports whether client c is an edge peer (Config.EdgePeers):
// a function of the seed and the client only.
func isEdgePeer(seed uint64, frac float64, c int) bool {
	if frac <= 0 {
		return false
	}
	r := splitmix.Source{State: splitmix.Derive(seed, streamEdge, uint64(c))}
	return r.Float64() < frac
}

// partitionWindow cuts peers off from the aggregator for rounds from..to.
type partitionWindow struct {
	from, to uint64
	frac     float64 // >= 0 with peers nil: a fraction of all peers, drawn from the seed
	peers    []int   // or these peers (indices)
}

// parsePartitionNet parses a --partition-net schedule (see
// Config.PartitionNet) for a run of the given peers and rounds.
func parsePartitionNet(spec string, peers, rounds int) ([]partitionWindow, error) {
	var out []partitionWindow
	for w := range strings.SplitSeq(spec, ";") {
		w = strings.TrimSpace(w)
		if w == "" {
			continue
		}
		rs, who, ok := strings.Cut(w, ":")
		if !ok {
			return nil, fmt.Errorf("window %q: want ROUNDS:WHO, e.g. 10-20:0.3 or 4:peer-0001,peer-0002", w)
		}
		from, to, err := parseRounds(strings.TrimSpace(rs), rounds)
		if err != nil {
			return nil, fmt.Errorf("window %q: %v", w, err)
		}
		pw := partitionWindow{from: from, to: to}
		if pw.frac, pw.peers, err = parseWho(who, peers); err != nil {
			return nil, fmt.Errorf("window %q: %v", w, err)
		}
		out = append(out, pw)
	}
	if len(out) == 0 && strings.TrimSpace(spec) != "" {
		return nil, fmt.Errorf("%q names no window", spec)
	}
	return out, nil
}

// parseRounds parses "7" or "10-20" (inclusive) against a run of rounds rounds.
func parseRounds(s string, rounds int) (from, to uint64, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if from, err = strconv.ParseUint(strings.TrimSpace(a), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("rounds %q: want a round (7) or a range (10-20)", s)
	}
	to = from
	if isRange {
		if to, err = strconv.ParseUint(strings.TrimSpace(b), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("rounds %q: want a round (7) or a range (10-20)", s)
		}
	}
	switch {
	case from < 1:
		return 0, 0, fmt.Errorf("round 0 does not exist (rounds count from 1)")
	case to < from:
		return 0, 0, fmt.Errorf("rounds %q: the range ends before it starts", s)
	case to > uint64(rounds):
		return 0, 0, fmt.Errorf("round %d does not exist: the run has %d rounds", to, rounds)
	}
	return from, to, nil
}

// parseWho parses the peers of a window: one fraction ("0.3", "30%") or a
// list of peers (IDs or indices, separated by commas or spaces).
func parseWho(s string, peers int) (frac float64, list []int, err error) {
	toks := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	if len(toks) == 0 {
		return 0, nil, fmt.Errorf("no peers and no fraction")
	}
	if isFraction(toks[0]) {
		if len(toks) > 1 {
			return 0, nil, fmt.Errorf("a fraction (%s) and more: give one fraction or a list of peers", toks[0])
		}
		f, err := parseFraction(toks[0])
		if err != nil {
			return 0, nil, err
		}
		return f, nil, nil
	}
	seen := map[int]bool{}
	for _, t := range toks {
		if isFraction(t) {
			return 0, nil, fmt.Errorf("%q: a fraction among peers; give one or the other", t)
		}
		p, err := parsePeer(t, peers)
		if err != nil {
			return 0, nil, err
		}
		if !seen[p] {
			seen[p] = true
			list = append(list, p)
		}
	}
	slices.Sort(list)
	return 0, list, nil
}

func isFraction(t string) bool { return strings.ContainsAny(t, ".%") }

func parseFraction(t string) (float64, error) {
	pct := strings.HasSuffix(t, "%")
	f, err := strconv.ParseFloat(strings.TrimSuffix(t, "%"), 64)
	if err != nil {
		return 0, fmt.Errorf("fraction %q: not a number", t)
	}
	if pct {
		f /= 100
	}
	if !(f >= 0 && f <= 1) {
		return 0, fmt.Errorf("fraction %s is outside [0, 1]", t)
	}
	return f, nil
}

// parsePeer reads a peer named by its ID (peer-0007) or its index (7).
func parsePeer(t string, peers int) (int, error) {
	num := strings.TrimPrefix(t, "peer-")
	p, err := strconv.Atoi(num)
	if err != nil || p < 0 || (num != t && peerID(p) != t) {
		return 0, fmt.Errorf("peer %q: want a peer ID (peer-0007) or index (7)", t)
	}
	if p >= peers {
		return 0, fmt.Errorf("peer %s does not exist: the run has %d peers (peer-0000 .. %s)", t, peers, peerID(peers-1))
	}
	return p, nil
}

// LoadPartitionSchedule reads a --partition-net schedule file and returns it
// in the one-line form Config.PartitionNet holds (so that the report's config
// carries the schedule itself). One window per line: its rounds, then a
// fraction or the peers cut off, e.g.
//
//	# rounds  who
//	10-20     0.3
//	25        peer-0001 peer-0002 7
//
// Blank lines and lines starting with '#' are skipped. The windows are
// checked against a run's peers and rounds by Config.Validate.
func LoadPartitionSchedule(r io.Reader) (string, error) {
	var windows []string
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		rs, who, _ := strings.Cut(strings.Join(strings.Fields(l), " "), " ")
		if strings.Contains(rs, ":") {
			rs, who, _ = strings.Cut(l, ":") // "10-20:0.3" works too
		}
		who = strings.Join(strings.FieldsFunc(who, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }), ",")
		if who == "" || strings.ContainsAny(rs+who, ";") {
			return "", fmt.Errorf("line %d: %q: want ROUNDS then a fraction or peers, e.g. 10-20 0.3", line, l)
		}
		windows = append(windows, strings.TrimSpace(rs)+":"+who)
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if len(windows) == 0 {
		return "", fmt.Errorf("the schedule names no window")
	}
	return strings.Join(windows, ";"), nil
}

// straggling is a parsed --stragglers setting.
type straggling struct {
	sigma        float64 // lognormal
	frac, factor float64 // slow
	lognormal    bool
}

func parseStragglers(spec string) (straggling, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "", "none":
		if arg != "" {
			break
		}
		return straggling{}, nil
	case "lognormal":
		sigma, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(sigma >= 0) || math.IsInf(sigma, 1) {
			return straggling{}, fmt.Errorf("%q: want lognormal:SIGMA with SIGMA >= 0, e.g. lognormal:0.5", spec)
		}
		return straggling{lognormal: true, sigma: sigma}, nil
	case "slow":
		fs, xs, ok := strings.Cut(arg, "x")
		if !ok {
			return straggling{}, fmt.Errorf("%q: want slow:FRACxFACTOR, e.g. slow:0.1x5 (10%% of peers 5 times slower)", spec)
		}
		frac, err := parseFraction(fs)
		if err != nil {
			return straggling{}, fmt.Errorf("%q: %v", spec, err)
		}
		factor, err := strconv.ParseFloat(xs, 64)
		if err != nil || !(factor >= 1) || math.IsInf(factor, 1) {
			return straggling{}, fmt.Errorf("%q: slowdown factor %q, want a number >= 1", spec, xs)
		}
		return straggling{frac: frac, factor: factor}, nil
	}
	return straggling{}, fmt.Errorf("unknown straggler model %q (have: lognormal:SIGMA, slow:FRACxFACTOR)", spec)
}

// speed is how many times longer than nominal client c's training takes
// (1 for everyone without stragglers). It is a function of the seed and the
// client only.
func (st straggling) speed(seed uint64, c int) float64 {
	r := splitmix.Source{State: splitmix.Derive(seed, streamStraggler, uint64(c))}
	switch {
	case st.lognormal && st.sigma > 0:
		// Box-Muller; 1-u keeps the logarithm finite.
		u1, u2 := 1-r.Float64(), r.Float64()
		z := math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
		return math.Exp(st.sigma * z)
	case st.factor > 1 && st.frac > 0:
		if r.Float64() < st.frac {
			return st.factor
		}
	}
	return 1
}

// parseRoundList parses --crash-aggregator-at: rounds separated by commas.
func parseRoundList(spec string, rounds int) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	for t := range strings.SplitSeq(spec, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		r, err := strconv.ParseUint(t, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q: want rounds separated by commas, e.g. 3,7", t)
		}
		if r < 1 || r > uint64(rounds) {
			return nil, fmt.Errorf("round %d does not exist: the run has rounds 1..%d", r, rounds)
		}
		out[r] = true
	}
	return out, nil
}

// faultPlan is the faults of a run, parsed and seeded.
type faultPlan struct {
	seed      uint64
	peers     int
	windows   []partitionWindow
	winCut    map[int][]int // window index -> peers it cuts (drawn once)
	strag     straggling
	churn     float64
	aggCrashP float64
	aggCrash  map[uint64]bool
	downMs    int64
}

func newFaultPlan(cfg Config) (*faultPlan, error) {
	f := &faultPlan{seed: cfg.Seed, peers: cfg.Peers, churn: cfg.Churn, aggCrashP: cfg.CrashAggregator,
		winCut: map[int][]int{}, downMs: cfg.AggregatorDownMs}
	if f.downMs == 0 {
		f.downMs = DefaultAggregatorDownMs
	}
	var err error
	if f.windows, err = parsePartitionNet(cfg.PartitionNet, cfg.Peers, cfg.Rounds); err != nil {
		return nil, &ConfigError{Field: "partition_net", Msg: err.Error()}
	}
	if f.strag, err = parseStragglers(cfg.Stragglers); err != nil {
		return nil, &ConfigError{Field: "stragglers", Msg: err.Error()}
	}
	if f.aggCrash, err = parseRoundList(cfg.CrashAggregatorAt, cfg.Rounds); err != nil {
		return nil, &ConfigError{Field: "crash_aggregator_at", Msg: err.Error()}
	}
	return f, nil
}

// aggregatorCrashes reports whether the aggregator is to crash in round r.
func (f *faultPlan) aggregatorCrashes(r uint64) bool {
	if f.aggCrash[r] {
		return true
	}
	if f.aggCrashP <= 0 {
		return false
	}
	s := splitmix.Source{State: splitmix.Derive(f.seed, streamAggCrash, r)}
	return s.Float64() < f.aggCrashP
}

// crashesAggregator reports whether the run can crash its aggregator (so
// that the aggregator needs a store).
func (f *faultPlan) crashesAggregator() bool { return f.aggCrashP > 0 || len(f.aggCrash) > 0 }

// away reports whether peer p is away (churn) in round r.
func (f *faultPlan) away(p int, r uint64) bool {
	if f.churn <= 0 {
		return false
	}
	s := splitmix.Source{State: splitmix.Derive(f.seed, streamChurn, r, uint64(p))}
	return s.Float64() < f.churn
}

// cutIn returns the peers the schedule cuts off from the aggregator in round
// r (nil when none), as a set of length peers.
func (f *faultPlan) cutIn(r uint64) []bool {
	var cut []bool
	for i, w := range f.windows {
		if r < w.from || r > w.to {
			continue
		}
		if cut == nil {
			cut = make([]bool, f.peers)
		}
		for _, p := range f.windowPeers(i) {
			cut[p] = true
		}
	}
	return cut
}

// windowPeers is the peers window i cuts: its list, or floor(frac × peers)
// peers drawn uniformly from the seed (once per window).
func (f *faultPlan) windowPeers(i int) []int {
	w := f.windows[i]
	if w.peers != nil {
		return w.peers
	}
	if p, ok := f.winCut[i]; ok {
		return p
	}
	k := int(math.Floor(w.frac*float64(f.peers) + 1e-9))
	idx := make([]int32, f.peers)
	for j := range idx {
		idx[j] = int32(j)
	}
	r := splitmix.Source{State: splitmix.Derive(f.seed, streamPartitionNet, uint64(i))}
	for j := range k {
		o := j + int(r.Below(uint64(f.peers-j)))
		idx[j], idx[o] = idx[o], idx[j]
	}
	out := make([]int, k)
	for j := range out {
		out[j] = int(idx[j])
	}
	slices.Sort(out)
	f.winCut[i] = out
	return out
}
