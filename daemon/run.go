package daemon

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fedrank/fedrank/aggregate"
	"github.com/fedrank/fedrank/data"
	"github.com/fedrank/fedrank/genesis"
	"github.com/fedrank/fedrank/model"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/p2p"
	"github.com/fedrank/fedrank/storage"
	"github.com/fedrank/fedrank/task"
)

// Version is announced by identify as the agent "fedrank/<Version>"; cmd/node
// sets it from the build.
var Version = "dev"

// RunOptions are the daemon's command-line settings.
type RunOptions struct {
	// Federation is a genesis file to run (overrides the config's).
	Federation string
	// Bootstrap adds multiaddrs to dial.
	Bootstrap []string
	// LogFormat, LogLevel override the config's when not "".
	LogFormat, LogLevel string
	// Logs receives the logs (nil: os.Stderr).
	Logs io.Writer
	// Ready, if set, is called once the daemon listens and serves its API.
	Ready func(peerID string, addrs []string, api string)
}

// Edge profile settings (Config.Profile "edge"): Badger's smallest options
// (storage.Options.Tiny), a small libp2p memory budget and a soft Go memory
// limit (32 MiB: an FRL trainer on the MNIST net lives in about 20 MB of
// heap; BENCHMARKS.md, "Edge peers").
const (
	edgeLibp2pMemory = 64 << 20
	edgeGoMemLimit   = 32 << 20
)

// goMemoryLimit is the soft memory limit Run sets (0: leave the runtime's):
// none when the environment sets GOMEMLIMIT (the runtime applied it), else
// the config's, else the edge profile's.
func goMemoryLimit(cfg Config, env string) int64 {
	switch {
	case env != "":
		return 0
	case cfg.GoMemoryLimit > 0:
		return cfg.GoMemoryLimit
	case cfg.Profile == "edge":
		return edgeGoMemLimit
	}
	return 0
}

// Run runs the peer of home until ctx is done. With no federation (none in
// the options, the config or the store) it runs idle: it listens, refuses
// every peer and answers status.
func Run(ctx context.Context, home string, opt RunOptions) error {
	cfg, err := LoadConfig(filepath.Join(home, ConfigFile))
	if err != nil {
		return err
	}
	if opt.LogFormat != "" {
		cfg.Log.Format = opt.LogFormat
	}
	if opt.LogLevel != "" {
		cfg.Log.Level = opt.LogLevel
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	logs := opt.Logs
	if logs == nil {
		logs = os.Stderr
	}
	log := newLogger(logs, cfg.Log)
	edge := cfg.Profile == "edge"
	if lim := goMemoryLimit(cfg, os.Getenv("GOMEMLIMIT")); lim > 0 {
		debug.SetMemoryLimit(lim)
	}

	key, err := p2p.LoadKey(filepath.Join(home, KeyFile))
	if err != nil {
		return err
	}
	self := p2p.PeerID(key)
	log = log.With("peer", shortID(self))

	st, err := openStore(ctx, filepath.Join(home, StoreDir), storage.Options{
		LowMemory: cfg.Store.LowMemory || edge, Tiny: edge, Logger: log.With("component", "store"),
	}, log)
	if err != nil {
		return fmt.Errorf("opening the store: %w", err)
	}
	defer st.Close()

	gen, err := loadFederation(home, cfg, opt, st)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	storeSize := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fedrank_store_bytes",
		Help: "Bytes the store uses on disk."}, func() float64 { return float64(st.Size()) })
	reg.MustRegister(storeSize)

	pc := p2p.Config{
		Key:         key,
		ListenAddrs: cfg.P2P.Listen,
		UserAgent:   "fedrank/" + Version,
		ConnLow:     cfg.P2P.ConnLow, ConnHigh: cfg.P2P.ConnHigh,
		MemoryLimit: cfg.P2P.MemoryLimit,
		MDNS:        cfg.P2P.MDNS,
		Logger:      log.With("component", "p2p"),
		Registerer:  reg,
	}
	if edge && pc.MemoryLimit == 0 {
		pc.MemoryLimit = edgeLibp2pMemory
	}
	if cfg.P2P.PSKFile != "" {
		if pc.PSK, err = readPSK(resolve(home, cfg.P2P.PSKFile)); err != nil {
			return err
		}
	}
	var nc node.Config
	if gen != nil {
		if nc, err = gen.NodeConfig(self); err != nil {
			return err
		}
		pc.MaxMessageBytes = max(nc.MaxUpdateBytes, nc.ChunkBytes) + 1<<20
	}
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedrank_p2p_rejected_total",
		Help: "Connections and messages refused by the p2p layer, by reason."}, []string{"reason"})
	reg.MustRegister(rejected)
	pc.OnReject = func(from, reason string, err error) {
		rejected.WithLabelValues(reason).Inc()
		log.Warn("refused by the p2p layer", "from", from, "reason", reason, "err", err)
	}

	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := p2p.New(hctx, pc)
	if err != nil {
		return fmt.Errorf("starting libp2p: %w", err)
	}
	defer h.Close()
	peers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fedrank_connected_peers",
		Help: "Peers connected to this host."}, func() float64 { return float64(len(h.Peers())) })
	reg.MustRegister(peers)
	log.Info("libp2p host up", "id", self, "addrs", h.Addrs(), "agent", pc.UserAgent)

	d := &daemon{home: home, log: log, st: st, host: h, gen: gen, self: self}
	if gen == nil {
		log.Warn("no federation: running idle (every peer is refused)")
	} else if err := d.prepare(hctx, key, nc, cfg, reg); err != nil {
		return err
	}

	api, err := d.serveAPI(hctx, cfg.API.Address, reg)
	if err != nil {
		return err
	}
	defer os.Remove(filepath.Join(home, APIFile))
	if opt.Ready != nil {
		opt.Ready(self, h.Addrs(), api)
	}
	if gen == nil {
		<-ctx.Done()
		log.Info("shutting down")
		return nil
	}

	boot := slices.Concat(gen.Bootstrap, cfg.Bootstrap, opt.Bootstrap)
	go d.keepConnected(hctx, boot, nc)
	go func() {
		for msg := range h.Inbound() {
			d.rt.Deliver(hctx, msg.From, msg.Data)
		}
	}()
	err = d.rt.Run(hctx)
	log.Info("shutting down", "err", err)
	return err
}

// openStore opens the store, waiting a little while another process holds
// it: `node status` of a stopped daemon reads the store, and a daemon
// started at that moment waits for it rather than fail.
func openStore(ctx context.Context, dir string, opt storage.Options, log *slog.Logger) (*storage.Badger, error) {
	deadline := time.Now().Add(10 * time.Second)
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		st, err := storage.Open(dir, opt)
		if !errors.Is(err, storage.ErrLocked) || time.Now().After(deadline) {
			return st, err
		}
		log.Info("the store is in use by another process; waiting", "dir", dir)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// daemon is a running peer's parts.
type daemon struct {
	home string
	log  *slog.Logger
	st   *storage.Badger
	host *p2p.Host
	gen  *genesis.Genesis
	self string
	rt   *node.Runtime
	tk   task.Task
}

// loadFederation finds the genesis to run: the option's, the config's, or
// the one the store already serves. A store serves one federation: another
// genesis is refused. The genesis (and its base model, for lora-mnist and
// frl-lora-mnist) is copied into the home so that status and export work
// without the original.
func loadFederation(home string, cfg Config, opt RunOptions, st storage.Store) (*genesis.Genesis, error) {
	path := opt.Federation
	if path == "" && cfg.Federation != "" {
		path = resolve(home, cfg.Federation)
	}
	storedID, storedFile, err := st.Genesis()
	switch {
	case errors.Is(err, storage.ErrNotFound):
		storedID = ""
	case err != nil:
		return nil, err
	}
	if path == "" {
		if storedID == "" {
			return nil, nil
		}
		// A restarted daemon resumes the federation its store serves.
		path = filepath.Join(home, GenesisFile)
		if _, err := os.Stat(path); err != nil {
			if err := os.WriteFile(path, storedFile, 0o600); err != nil {
				return nil, err
			}
		}
	}
	g, raw, err := genesis.Load(path)
	if err != nil {
		return nil, err
	}
	id := g.ID()
	if storedID != "" && storedID != id {
		return nil, fmt.Errorf("the store serves federation %s, and %s is federation %s: a store serves one federation (use another home)", storedID, path, id)
	}
	if err := st.PutGenesis(id, raw); err != nil {
		return nil, err
	}
	if err := copyGenesis(home, path, g, raw); err != nil {
		return nil, err
	}
	return g, nil
}

// copyGenesis keeps a copy of the genesis (and of a base model it names) in
// the home.
func copyGenesis(home, path string, g *genesis.Genesis, raw []byte) error {
	dst := filepath.Join(home, GenesisFile)
	if abs, _ := filepath.Abs(path); abs != "" {
		if d, _ := filepath.Abs(dst); d == abs {
			return nil
		}
	}
	if err := os.WriteFile(dst, raw, 0o600); err != nil {
		return err
	}
	if base := g.BaseModelPath(); base != "" {
		b, err := os.ReadFile(base)
		if err != nil {
			return fmt.Errorf("genesis task.base_model: %w", err)
		}
		to := filepath.Join(home, filepath.FromSlash(g.Task.BaseModel))
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// prepare builds the task from this peer's data, joins the federation on
// the host and builds the runtime (restoring from the store).
func (d *daemon) prepare(ctx context.Context, key crypto.PrivKey, nc node.Config, cfg Config, reg prometheus.Registerer) error {
	g := d.gen
	td, err := loadData(d.home, cfg.Data, nc.Role == node.RoleTrainer)
	if err != nil {
		return err
	}
	local := genesis.Local{}
	if nc.Role == node.RoleTrainer {
		local.Rank = cfg.Train.Rank
	}
	tk, err := g.BuildLocalTask(td, local)
	if err != nil {
		return err
	}
	d.tk = tk
	init, err := tk.InitialModel()
	if err != nil {
		return err
	}
	nc.InitialModel = init
	nc.NewAggregator = func() (aggregate.Aggregator, error) { return tk.NewAggregator(g.AggregatorName) }
	nc.Sign = key.Sign
	nc.Verify = p2p.Verify

	members := append(slices.Clone(g.Members), g.Aggregator)
	aggregator := g.Aggregator
	fed := nc.Federation
	var newest atomic.Uint64 // the highest round announced so far
	if err := d.host.Join(p2p.Federation{ID: fed, Members: members, Validate: func(from string, b []byte) error {
		return validateAnnouncement(fed, aggregator, from, b, &newest)
	}}); err != nil {
		return err
	}
	flt, err := parseFaults(os.Getenv(FaultEnv))
	if err != nil {
		return err
	}
	var store storage.Store = d.st
	if flt != nil {
		d.log.Warn("fault injection is on: this process will kill itself", "at", os.Getenv(FaultEnv))
		store = faultyStore{d.st, flt}
		flt.install(d.st)
	}
	rc := node.RuntimeConfig{
		Machine:   nc,
		Store:     store,
		Transport: d.host,
		Logger:    d.log,
		Metrics:   node.NewMetrics(reg),
	}
	if nc.Role == node.RoleTrainer {
		rc.Train = func(round uint64, m []byte) ([]byte, int64, error) {
			p, err := tk.Train(task.Job{Client: 0, Round: round, Model: m, Seed: TrainSeed(g.Seed, round, d.self)})
			return p, int64(tk.ClientSamples(0)), err
		}
		if flt != nil {
			rc.Train = flt.wrapTrain(rc.Train)
		}
	}
	if td.Test != nil {
		rc.Evaluate = func(m []byte) (storage.Eval, error) {
			e, err := tk.Evaluate(m)
			return storage.Eval{Accuracy: e.Accuracy, Loss: e.Loss, Samples: e.Samples}, err
		}
	}
	if d.rt, err = node.NewRuntime(rc); err != nil {
		return err
	}
	info := tk.Info()
	d.log.Info("federation", "id", fed, "name", g.Name, "scenario", g.Scenario, "role", nc.Role.String(),
		"aggregation", info.DefaultAggregator, "model", info.Model, "params", info.Params,
		"members", len(g.Members), "rounds", g.Rounds)
	return nil
}

// loadData reads the peer's training shard (trainers) and test set (if
// configured) and converts them for the task.
func loadData(home string, dc Data, trainer bool) (task.Data, error) {
	var td task.Data
	if trainer {
		if dc.Train == "" {
			return td, errors.New("config: data.train is empty: a trainer needs its training shard (see node shard)")
		}
		set, err := data.LoadShard(resolve(home, dc.Train))
		if err != nil {
			return td, fmt.Errorf("config data.train: %w", err)
		}
		if td.Train, err = model.NewInputs(set, data.MNISTMean, data.MNISTStd); err != nil {
			return td, err
		}
		all := make([]int, set.N)
		for i := range all {
			all[i] = i
		}
		td.Parts = data.Partition{all}
	}
	if dc.Test != "" {
		set, err := data.LoadTestSet(resolve(home, dc.Test))
		if err != nil {
			return td, fmt.Errorf("config data.test: %w", err)
		}
		if td.Test, err = model.NewInputs(set, data.MNISTMean, data.MNISTStd); err != nil {
			return td, err
		}
	}
	return td, nil
}

// TrainSeed seeds a trainer's local training (task.Job.Seed): a function of
// the federation seed, the round and the peer ID, so that a retrained update
// (after a crash) is the same update. Exported so that a test can replay a
// federation's rounds.
func TrainSeed(seed, round uint64, self string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(self); i++ {
		h = (h ^ uint64(self[i])) * 1099511628211
	}
	return seed ^ round*0x9e3779b97f4a7c15 ^ h
}

// validateAnnouncement is gossipsub's check of an announcement
// (node.CheckAnnouncement); a stale one is dropped without penalty
// (p2p.ErrIgnore): it may be a late gossip of an honest peer.
func validateAnnouncement(fed, aggregator, from string, b []byte, newest *atomic.Uint64) error {
	err := node.CheckAnnouncement(fed, aggregator, from, b, p2p.DefaultMaxAnnounceBytes, newest)
	if errors.Is(err, node.ErrStaleAnnouncement) {
		return fmt.Errorf("%w: %v", p2p.ErrIgnore, err)
	}
	return err
}

// keepConnected dials the bootstrap addresses at start and whenever this
// peer has lost its connection to the aggregator (a trainer) or to every
// member (the aggregator): a restarted peer is found again.
func (d *daemon) keepConnected(ctx context.Context, boot []string, nc node.Config) {
	if len(boot) == 0 {
		return
	}
	connect := func() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := d.host.Connect(cctx, boot); err != nil && ctx.Err() == nil {
			d.log.Debug("bootstrap", "err", err)
		}
	}
	connect()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		connected := d.host.Peers()
		if nc.Role == node.RoleTrainer && !slices.Contains(connected, nc.Aggregator) || len(connected) == 0 {
			connect()
		}
	}
}

// serveAPI starts the local HTTP endpoint and writes its URL to the home's
// api file.
func (d *daemon) serveAPI(ctx context.Context, addr string, reg *prometheus.Registry) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("config api.address: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.liveStatus())
	})
	// Go's profiler, as Kubo and most Go daemons serve it (heap, CPU,
	// goroutines: `go tool pprof URL/debug/pprof/heap`). The API listens on
	// loopback unless the config says otherwise; keep it there.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /id", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, IDInfo{ID: d.self, Addrs: d.host.Addrs()})
	})
	mux.HandleFunc("GET /model", func(w http.ResponseWriter, r *http.Request) {
		b, err := modelOf(d.st, r.URL.Query().Get("round"), r.URL.Query().Get("hash"))
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, storage.ErrNotFound) {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(b)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	url := "http://" + l.Addr().String()
	if err := writeFileAtomic(filepath.Join(d.home, APIFile), []byte(url+"\n")); err != nil {
		return "", err
	}
	d.log.Info("api", "url", url)
	return url, nil
}

// IDInfo is what `node id` prints.
type IDInfo struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// modelOf reads a global model by round ("N") or by hex hash.
func modelOf(st storage.Store, round, hash string) ([]byte, error) {
	var h []byte
	switch {
	case hash != "":
		var err error
		if h, err = hex.DecodeString(hash); err != nil {
			return nil, fmt.Errorf("hash %q: %v", hash, err)
		}
	case round != "":
		n, err := strconv.ParseUint(round, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("round %q: %v", round, err)
		}
		res, err := st.Result(n)
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", n, err)
		}
		h = res.ModelHash
	default:
		return nil, errors.New("give round=N or hash=HEX")
	}
	return st.Model(h)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func newLogger(w io.Writer, c Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func readPSK(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config p2p.psk_file: %w", err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, fmt.Errorf("config p2p.psk_file %s: want 64 hex digits (a 32-byte key)", path)
	}
	return k, nil
}

func resolve(home, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(home, p)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[len(id)-8:]
	}
	return id
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func createKey(path string) (string, error) {
	k, err := p2p.CreateKey(path)
	if err != nil {
		return "", err
	}
	return p2p.PeerID(k), nil
}
