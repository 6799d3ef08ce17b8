package daemon

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fedrank/fedrank/genesis"
	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/report"
	"github.com/fedrank/fedrank/storage"
)

// Status is what `node status --json` prints: the simulator's report
// vocabulary (report.Report: rounds with accuracy when this peer evaluates,
// accepted and rejected updates by reason, the model hash) plus the
// daemon's own state.
type Status struct {
	report.Report
	Daemon DaemonStatus `json:"daemon"`
}

// DaemonStatus is the peer's own state.
type DaemonStatus struct {
	// Running is true when the status came from the running daemon, false
	// when it was read from the store of a stopped one.
	Running    bool   `json:"running"`
	ID         string `json:"id"`
	Role       string `json:"role,omitempty"`
	Federation string `json:"federation,omitempty"`
	// Round is the open round (aggregator) or the last announced (trainer).
	Round     uint64   `json:"round"`
	ModelHash string   `json:"model_hash,omitempty"`
	Done      bool     `json:"done"`
	Peers     []string `json:"peers,omitempty"`
	// Runtime is the live runtime's snapshot (running daemons only).
	Runtime *node.RuntimeStatus `json:"runtime,omitempty"`
	// StoreUpdates counts the updates stored for the open round (aggregator).
	StoreUpdates int    `json:"store_updates"`
	StoreBytes   int64  `json:"store_bytes"`
	Error        string `json:"error,omitempty"`
}

// liveStatus is the running daemon's status.
func (d *daemon) liveStatus() Status {
	s := statusFromStore(d.st, d.gen, d.self)
	s.Daemon.Running = true
	s.Daemon.Peers = d.host.Peers()
	if d.rt != nil {
		rs := d.rt.Status()
		s.Daemon.Runtime = &rs
		s.Daemon.Role, s.Daemon.Round, s.Daemon.Done = rs.Role, rs.Round, rs.Done
		if rs.ModelHash != "" {
			s.Daemon.ModelHash = rs.ModelHash
		}
	}
	return s
}

// statusFromStore assembles the status from what the store holds.
func statusFromStore(st storage.Store, g *genesis.Genesis, self string) Status {
	s := Status{Daemon: DaemonStatus{ID: self, StoreBytes: st.Size()}}
	s.Report.Rounds = []report.RoundReport{}
	if g == nil {
		return s
	}
	s.Scenario, s.Seed, s.Config = g.Scenario, g.Seed, g
	s.Model.Name = g.Scenario
	s.Daemon.Federation = g.ID()
	switch {
	case self == g.Aggregator:
		s.Daemon.Role = node.RoleAggregator.String()
	case self != "":
		s.Daemon.Role = node.RoleTrainer.String()
	}
	last, err := st.LastResult()
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.Daemon.Error = err.Error()
		return s
	}
	if err == nil {
		for r := uint64(1); r <= last.Round; r++ {
			res, err := st.Result(r)
			if err != nil {
				continue // a trainer that missed a result
			}
			rr := report.RoundReport{
				Round: res.Round, Selected: len(res.Selected), Accepted: res.Accepted,
				RejectedByReason: res.Rejected, ModelHash: hex.EncodeToString(res.ModelHash),
				SimMs:   float64(res.ClosedMs - res.StartedMs),
				BytesUp: res.BytesUp, BytesDown: res.BytesDown,
			}
			s.BytesUpTotal += res.BytesUp
			s.BytesDownTotal += res.BytesDown
			for _, n := range res.Rejected {
				rr.Rejected += n
			}
			if e := res.Eval; e != nil {
				rr.Accuracy, rr.Loss = e.Accuracy, e.Loss
				s.FinalAccuracy = e.Accuracy
				s.BestAccuracy = max(s.BestAccuracy, e.Accuracy)
			}
			s.Rounds = append(s.Rounds, rr)
		}
		if accepted := sumAccepted(s.Rounds); accepted > 0 {
			s.BytesUpPerUpdate = float64(s.BytesUpTotal) / float64(accepted)
		}
		s.Model.Hash = hex.EncodeToString(last.ModelHash)
		s.Daemon.Round, s.Daemon.ModelHash = last.Round, s.Model.Hash
		s.Daemon.Done = g.Rounds > 0 && last.Round >= g.Rounds
	}
	if open, ok, err := st.OpenRound(); err == nil && ok {
		s.Daemon.Round = open.Round
		if ups, err := st.Updates(open.Round); err == nil {
			s.Daemon.StoreUpdates = len(ups)
		}
	}
	if tr, ok, err := st.TrainerRound(); err == nil && ok && tr.Round > s.Daemon.Round {
		s.Daemon.Round = tr.Round
	}
	return s
}

// apiURL returns the running daemon's API URL, or "" if it is not running.
func apiURL(home string) string {
	b, err := os.ReadFile(filepath.Join(home, APIFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// apiGet fetches path from the running daemon of home.
func apiGet(home, path string, v any) ([]byte, error) {
	url := apiURL(home)
	if url == "" {
		return nil, errNotRunning
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url + path)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", errNotRunning, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s%s: %s: %s", url, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if v != nil {
		return b, json.Unmarshal(b, v)
	}
	return b, nil
}

var errNotRunning = errors.New("the daemon is not running")

// QueryStatus returns the status of home's peer: from the running daemon,
// or from its store when it is stopped.
func QueryStatus(home string) (Status, error) {
	var s Status
	if _, err := apiGet(home, "/status", &s); err == nil {
		return s, nil
	} else if !errors.Is(err, errNotRunning) {
		return s, err
	}
	self, err := readPeerID(home)
	if err != nil {
		return s, err
	}
	st, err := storage.OpenReadOnly(filepath.Join(home, StoreDir))
	if errors.Is(err, fs.ErrNotExist) {
		// Initialised, never run: nothing stored yet.
		s.Daemon.ID = self
		s.Rounds = []report.RoundReport{}
		return s, nil
	}
	if err != nil {
		return s, err
	}
	defer st.Close()
	var g *genesis.Genesis
	if _, file, err := st.Genesis(); err == nil {
		if g, err = genesis.Parse(file); err != nil {
			return s, fmt.Errorf("the store's genesis: %w", err)
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return s, err
	}
	return statusFromStore(st, g, self), nil
}

// ID returns the peer ID of home and, when the daemon runs, its listen
// addresses (ending in /p2p/<id>).
func ID(home string) (IDInfo, error) {
	var info IDInfo
	if _, err := apiGet(home, "/id", &info); err == nil {
		return info, nil
	}
	id, err := readPeerID(home)
	return IDInfo{ID: id}, err
}

func readPeerID(home string) (string, error) {
	k, err := loadKey(filepath.Join(home, KeyFile))
	if err != nil {
		return "", err
	}
	return k, nil
}

func sumAccepted(rounds []report.RoundReport) int {
	n := 0
	for _, r := range rounds {
		n += r.Accepted
	}
	return n
}
