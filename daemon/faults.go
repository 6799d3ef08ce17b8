package daemon

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/fedrank/fedrank/node"
	"github.com/fedrank/fedrank/storage"
)

// FaultEnv names the environment variable that makes the daemon kill
// itself with SIGKILL at a chosen point of the protocol: crash tests use it
// to stop a real process exactly where they mean to (kill -9 from outside
// cannot aim at "after the second update of round 3"). The daemon logs a
// warning when it is set; it is never set in production. Values:
//
//	accepted:R:N   after the N-th accepted update of round R is persisted
//	commit:R       just before the commit of round R is written
//	train:R        when local training for round R starts
//	pending:R      in the middle of the trainer's write of round R's
//	               update: its payload is on disk, the record pointing
//	               at it is not
type faults struct {
	kind     string
	round    uint64
	n        int
	accepted int
	armed    bool // pending: the trainer is writing round R's update
}

// FaultEnv is the variable's name.
const FaultEnv = "FEDRANK_TEST_KILL_AT"

func parseFaults(s string) (*faults, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ":")
	f := &faults{kind: parts[0]}
	bad := fmt.Errorf("%s=%q: want accepted:R:N, commit:R, train:R or pending:R", FaultEnv, s)
	if len(parts) < 2 {
		return nil, bad
	}
	r, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return nil, bad
	}
	f.round = r
	switch {
	case f.kind == "accepted" && len(parts) == 3:
		if f.n, err = strconv.Atoi(parts[2]); err != nil || f.n < 1 {
			return nil, bad
		}
	case (f.kind == "commit" || f.kind == "train" || f.kind == "pending") && len(parts) == 2:
	default:
		return nil, bad
	}
	return f, nil
}

func (f *faults) kill() {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}

// faultyStore kills the process around the store writes the faults name.
type faultyStore struct {
	*storage.Badger
	f *faults
}

func (s faultyStore) AddUpdate(u storage.Update) error {
	if err := s.Badger.AddUpdate(u); err != nil {
		return err
	}
	if s.f.kind == "accepted" && u.Round == s.f.round {
		if s.f.accepted++; s.f.accepted == s.f.n {
			s.f.kill()
		}
	}
	return nil
}

// PutTrainerRound arms the store's mid-write hook (see install) for the
// write of round R's pending update.
func (s faultyStore) PutTrainerRound(t storage.TrainerRound) error {
	s.f.armed = s.f.kind == "pending" && t.Round == s.f.round && t.Pending != nil
	defer func() { s.f.armed = false }()
	return s.Badger.PutTrainerRound(t)
}

// install sets st's mid-write hook, which kills the process in the middle
// of an armed write.
func (f *faults) install(st *storage.Badger) {
	st.SetMidWriteHook(func(string) {
		if f.armed {
			f.kill()
		}
	})
}

func (s faultyStore) Commit(c storage.Commit) error {
	if s.f.kind == "commit" && c.Result.Round == s.f.round {
		s.f.kill()
	}
	return s.Badger.Commit(c)
}

func (f *faults) wrapTrain(train node.TrainFunc) node.TrainFunc {
	return func(round uint64, model []byte) ([]byte, int64, error) {
		if f.kind == "train" && round == f.round {
			f.kill()
		}
		return train(round, model)
	}
}
