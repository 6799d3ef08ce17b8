// Package daemon runs a fedrank peer on its own machine: the node.Runtime
// with a libp2p host (package p2p), a Badger store (package storage), the
// federation's genesis (package genesis), this peer's own data, and a local
// HTTP endpoint for metrics, status and models. cmd/node's init, run,
// status, id and export commands are thin wrappers around it.
//
// A peer's home directory, as Kubo keeps its repo:
//
//	key           the Ed25519 identity (libp2p protobuf encoding, mode 0600)
//	config.toml   the node configuration (every default written out)
//	store/        the Badger store: genesis, models, updates, rounds
//	genesis.toml  a copy of the federation's genesis (and its base model,
//	              for lora-mnist and frl-lora-mnist), so that status
//	              and export work alone
//	api           while the daemon runs: the URL of its HTTP endpoint
package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/fedrank/fedrank/p2p"
)

// Files and directories of a home.
const (
	KeyFile     = "key"
	ConfigFile  = "config.toml"
	StoreDir    = "store"
	GenesisFile = "genesis.toml"
	APIFile     = "api"
)

// Config is a node's configuration file (config.toml). It says how this peer
// runs (addresses, data, limits); the federation's settings are the
// genesis's and every member shares them.
type Config struct {
	// Federation is the genesis file the daemon runs, relative to the home
	// ("" = none: `run --federation` names one, or the store's, or the
	// daemon runs idle).
	Federation string `toml:"federation"`
	// Bootstrap lists extra multiaddrs (with /p2p/<id>) to dial at start,
	// besides the genesis's.
	Bootstrap []string  `toml:"bootstrap"`
	P2P       P2PConfig `toml:"p2p"`
	Data      Data      `toml:"data"`
	Train     Train     `toml:"train"`
	Store     Store     `toml:"store"`
	API       API       `toml:"api"`
	Log       Log       `toml:"log"`
	// Profile "edge" selects the small-device settings (see EdgeProfile).
	Profile string `toml:"profile"`
	// GoMemoryLimit is the Go runtime's soft memory limit in bytes
	// (runtime/debug.SetMemoryLimit): 0 means the profile's (32 MiB for
	// "edge", none otherwise). The GOMEMLIMIT environment variable, when
	// set, wins over both.
	GoMemoryLimit int64 `toml:"go_memory_limit"`
}

// P2PConfig are the libp2p host's settings.
type P2PConfig struct {
	// Listen are the multiaddrs to listen on. init picks free ports once, so
	// that a restarted peer is found where it was.
	Listen []string `toml:"listen"`
	// PSKFile, optional, holds a 64-hex-digit private-network key (libp2p
	// pnet, TCP only): only peers with the same key can connect.
	PSKFile string `toml:"psk_file"`
	// MDNS finds members on the local network.
	MDNS bool `toml:"mdns"`
	// ConnLow, ConnHigh are the connection manager's watermarks.
	ConnLow  int `toml:"conn_low"`
	ConnHigh int `toml:"conn_high"`
	// MemoryLimit bounds libp2p's resource manager, in bytes (0: 1/8 of RAM,
	// within 128 MiB..1 GiB).
	MemoryLimit int64 `toml:"memory_limit"`
}

// Data points at this peer's own data.
type Data struct {
	// Train is a directory holding the peer's training shard as MNIST IDX
	// files (train-images-idx3-ubyte, train-labels-idx1-ubyte; `node shard`
	// writes them). Trainers need it.
	Train string `toml:"train"`
	// Test is a directory holding a test set (t10k-images-idx3-ubyte,
	// t10k-labels-idx1-ubyte), optional: a peer with one evaluates every
	// round's global model.
	Test string `toml:"test"`
}

// Train are this member's own training settings (genesis.Local).
type Train struct {
	// Rank, for lora-mnist members: the adapter rank this peer trains and
	// uploads, 1 up to the federation's (0 = the federation's). A small
	// board on a slow uplink trains and sends fewer components. A
	// frl-lora-mnist member refuses to start with one: its rankings would be
	// of another rank's adapters, which the vote cannot count.
	Rank int `toml:"rank"`
}

// Store configures the Badger store.
type Store struct {
	// LowMemory selects Badger's small-memory options (storage.Options).
	LowMemory bool `toml:"low_memory"`
}

// API is the local HTTP endpoint: /metrics (Prometheus), /status, /id,
// /model.
type API struct {
	// Address to listen on; port 0 picks a free port. The actual URL is
	// written to the home's api file while the daemon runs.
	Address string `toml:"address"`
}

// Log configures the daemon's logs (log/slog).
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// DefaultConfig is a new node's configuration: TCP and QUIC on the given
// ports of every interface, the API on a free local port, info logs.
func DefaultConfig(tcpPort, quicPort int) Config {
	return Config{
		P2P: P2PConfig{
			Listen: []string{
				fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", tcpPort),
				fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", quicPort),
			},
			ConnLow: 32, ConnHigh: 64,
		},
		API: API{Address: "127.0.0.1:0"},
		Log: Log{Level: "info", Format: "text"},
	}
}

// Validate checks the fields whose errors would surface late.
func (c *Config) Validate() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("config: log.format %q: want text or json", c.Log.Format)
	}
	switch c.Profile {
	case "", "edge":
	default:
		return fmt.Errorf("config: profile %q: want \"\" or \"edge\"", c.Profile)
	}
	if c.Train.Rank < 0 {
		return fmt.Errorf("config: train.rank %d: want >= 0 (0: the federation's)", c.Train.Rank)
	}
	if c.GoMemoryLimit < 0 {
		return fmt.Errorf("config: go_memory_limit %d: want bytes >= 0 (0: the profile's)", c.GoMemoryLimit)
	}
	if len(c.P2P.Listen) == 0 {
		return errors.New("config: p2p.listen: no listen address")
	}
	if c.P2P.ConnLow < 0 || c.P2P.ConnHigh < c.P2P.ConnLow {
		return fmt.Errorf("config: p2p.conn_low %d, conn_high %d: want 0 <= conn_low <= conn_high", c.P2P.ConnLow, c.P2P.ConnHigh)
	}
	if _, _, err := net.SplitHostPort(c.API.Address); err != nil {
		return fmt.Errorf("config: api.address %q: %v", c.API.Address, err)
	}
	return nil
}

// LoadConfig reads a config.toml; unknown keys are an error naming them.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var c Config
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return Config{}, fmt.Errorf("%s: unknown keys: %s", path, strings.Join(keys, ", "))
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Encode writes the configuration with every setting commented.
func (c Config) Encode() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(`# fedrank node configuration. Every setting is written out with its value;
# edit and restart the daemon. Paths are relative to this directory.
#
# federation: the genesis file to run ("" = give one with run --federation,
#   or the one the store already serves, or run idle).
# bootstrap: extra multiaddrs (ending in /p2p/<peer ID>) to dial at start.
# profile: "edge" for small devices (Badger's smallest options, a 64 MiB
#   libp2p memory limit, a 32 MiB Go memory limit).
# go_memory_limit: Go's soft memory limit in bytes (0: the profile's, 32 MiB
#   for edge, none otherwise); a GOMEMLIMIT environment variable wins.
#
# [p2p] listen: multiaddrs (TCP and QUIC); init picked free ports once.
#   psk_file: a file with a 64-hex-digit private-network key (TCP only).
#   mdns: find members on the LAN. conn_low/conn_high: connection manager
#   watermarks. memory_limit: libp2p resource manager limit in bytes (0: auto).
# [data] train: this peer's training shard (MNIST IDX files, see node shard).
#   test: a test set (t10k IDX files); with one, the peer evaluates each round.
# [train] rank: lora-mnist only (frl-lora-mnist refuses it): train and send
#   adapters of this rank, at most the federation's (0: the federation's).
# [store] low_memory: Badger's small-memory options.
# [api] address: local HTTP endpoint for /metrics, /status, /id and /model
#   (port 0: a free port, written to the file "api" while the daemon runs).
# [log] level: debug|info|warn|error. format: text|json.

`)
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Init creates a home: a new key (refusing to overwrite one) and a
// config.toml with free TCP and QUIC ports. It returns the peer ID.
func Init(home string, listen []string) (string, error) {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return "", err
	}
	keyPath := filepath.Join(home, KeyFile)
	if _, err := os.Stat(keyPath); err == nil {
		return "", fmt.Errorf("%s already holds a key: refusing to overwrite it (%w)", keyPath, fs.ErrExist)
	}
	cfgPath := filepath.Join(home, ConfigFile)
	if _, err := os.Stat(cfgPath); err == nil {
		return "", fmt.Errorf("%s exists: refusing to overwrite it (%w)", cfgPath, fs.ErrExist)
	}
	tcp, err := freePort("tcp")
	if err != nil {
		return "", err
	}
	quic, err := freePort("udp")
	if err != nil {
		return "", err
	}
	cfg := DefaultConfig(tcp, quic)
	if len(listen) > 0 {
		cfg.P2P.Listen = listen
	}
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	b, err := cfg.Encode()
	if err != nil {
		return "", err
	}
	id, err := createKey(keyPath)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return "", err
	}
	return id, nil
}

// freePort asks the kernel for a free port of network "tcp" or "udp".
func freePort(network string) (int, error) {
	if network == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

func loadKey(path string) (string, error) {
	k, err := p2p.LoadKey(path)
	if err != nil {
		return "", err
	}
	return p2p.PeerID(k), nil
}

// UpdateConfig rewrites home's config.toml with edit applied.
func UpdateConfig(home string, edit func(*Config)) error {
	path := filepath.Join(home, ConfigFile)
	c, err := LoadConfig(path)
	if err != nil {
		return err
	}
	edit(&c)
	if err := c.Validate(); err != nil {
		return err
	}
	b, err := c.Encode()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
