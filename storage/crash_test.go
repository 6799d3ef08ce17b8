package storage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// The crash test runs a writer in a child process (this test binary again,
// selecting TestCrashChild), kills it with SIGKILL right after it reports a
// chosen write as done, and checks the store it left: every write the child
// reported is there, and no commit is half visible.

const (
	crashDirEnv  = "FEDRANK_STORAGE_CRASH_DIR"
	crashModeEnv = "FEDRANK_STORAGE_CRASH_MODE" // "results": the child only writes results
)

// The child's workload: round after round, crashUpdates updates then a
// commit with a new model. Payloads and models are functions of their
// position, so the parent can check whatever it finds.
const (
	crashRounds  = 12
	crashUpdates = 4
	crashPayload = 600 << 10
	crashModelN  = 3 * chunkSize
)

func crashModel(round uint64) []byte { return blob(1e6+round, crashModelN) }

// TestCrashChild is the child of TestCrash; in a normal run it skips. It
// prints one line after each write returns (a durable write), then waits to
// be killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("the child process of TestCrash")
	}
	fail := func(err error) {
		fmt.Println("error", err)
		os.Exit(1)
	}
	// The default profile; the parent reopens with LowMemory.
	s, err := Open(dir, Options{GCInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fail(err)
	}
	if err := s.PutGenesis("fed", []byte("genesis")); err != nil {
		fail(err)
	}
	fmt.Println("genesis")
	if os.Getenv(crashModeEnv) == "results" {
		for r := uint64(1); r < 1e4; r++ {
			if err := s.PutResult(bigResult(r)); err != nil {
				fail(err)
			}
			fmt.Println("result", r)
		}
	}
	// Resume a store a previous child left.
	first, next := uint64(1), 0
	switch open, ok, err := s.OpenRound(); {
	case err != nil:
		fail(err)
	case ok:
		us, err := s.Updates(open.Round)
		if err != nil {
			fail(err)
		}
		first, next = open.Round, len(us)
		fmt.Println("resume", open.Round-1, next)
	default:
		if err := s.Open(OpenRound{Round: 1}); err != nil {
			fail(err)
		}
		fmt.Println("open 1")
	}
	for round := first; round <= crashRounds; round++ {
		for seq := next; seq < crashUpdates; seq++ {
			if err := s.AddUpdate(newUpdate(round, seq, crashPayload)); err != nil {
				fail(err)
			}
			fmt.Println("update", round, seq)
		}
		model := crashModel(round)
		c := Commit{Result: Result{Round: round, ModelHash: hashOf(model), Reason: "quorum"}, Model: model}
		if round < crashRounds {
			c.Next = &OpenRound{Round: round + 1, ModelHash: c.Result.ModelHash}
		}
		if err := s.Commit(c); err != nil {
			fail(err)
		}
		fmt.Println("commit", round)
		next = 0
	}
	fmt.Println("done")
	_, _ = io.Copy(io.Discard, os.Stdin) // until killed
	os.Exit(0)
}

// bigResult is a result of about 60 KB: below the default profile's value
// threshold (64 KiB), so it stays in the memtable, whole.
func bigResult(round uint64) Result {
	return Result{Round: round, ModelHash: hashOf(be64(round)), Selected: bigSelected()}
}

var bigSelected = sync.OnceValue(func() []string {
	peers := make([]string, 3800)
	for i := range peers {
		peers[i] = fmt.Sprintf("peer-%08d", i)
	}
	return peers
})

// crashReport is what the child said it wrote before it was killed.
type crashReport struct {
	genesis   bool
	opened    bool
	committed uint64 // last round reported committed
	updates   int    // updates reported in the round after it
	results   uint64 // results reported (mode "results")
}

func (r *crashReport) add(line string) error {
	var round uint64
	var seq int
	switch {
	case line == "genesis":
		r.genesis = true
	case line == "open 1":
		r.opened = true
	case strings.HasPrefix(line, "resume"):
		if _, err := fmt.Sscanf(line, "resume %d %d", &r.committed, &r.updates); err != nil {
			return err
		}
		r.opened = true
	case strings.HasPrefix(line, "update"):
		if _, err := fmt.Sscanf(line, "update %d %d", &round, &seq); err != nil {
			return err
		}
		if round != r.committed+1 || seq != r.updates {
			return fmt.Errorf("child reported %q after %+v", line, *r)
		}
		r.updates++
	case strings.HasPrefix(line, "result"):
		if _, err := fmt.Sscanf(line, "result %d", &round); err != nil || round != r.results+1 {
			return fmt.Errorf("child reported %q after %+v (%v)", line, *r, err)
		}
		r.results = round
	case strings.HasPrefix(line, "commit"):
		if _, err := fmt.Sscanf(line, "commit %d", &round); err != nil {
			return err
		}
		r.committed, r.updates = round, 0
	default:
		return fmt.Errorf("child: %s", line)
	}
	return nil
}

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	// Kill points, in reported lines: after the genesis, in the first
	// round, right after a commit, mid-round later, a few rounds in.
	for _, killAfter := range []int{1, 4, 7, 10, 24} {
		t.Run(fmt.Sprint("after line ", killAfter), func(t *testing.T) {
			dir := t.TempDir()
			rep := runAndKill(t, dir, killAfter, "")

			// status reads the crashed store first (Badger must replay
			// its logs, which it refuses read-only), then the daemon
			// restarts with the edge profile.
			ro, err := OpenReadOnly(dir)
			must(t, err)
			checkCrashed(t, ro, rep)
			must(t, ro.Close())
			if killAfter%2 == 1 {
				// Crash the recovered store once more, this time
				// reopening read-write directly.
				rep = runAndKill(t, dir, 3, "")
			}
			s := openTest(t, dir, Options{LowMemory: true})
			open := checkCrashed(t, s, rep)

			// The store goes on: the next update of the open round, then
			// its commit.
			if open != 0 {
				us, err := s.Updates(open)
				must(t, err)
				must(t, s.AddUpdate(newUpdate(open, len(us), 10)))
				model := crashModel(open)
				must(t, s.Commit(Commit{Result: Result{Round: open, ModelHash: hashOf(model)}, Model: model,
					Next: &OpenRound{Round: open + 1}}))
			}
		})
	}
}

// TestCrashIntoLowMemory: a store whose default-profile memtable held more
// than a LowMemory memtable can (an OOM kill, say) reopens with LowMemory.
// Badger replays the memtable's log into a memtable of the new size and
// exits the process if it does not fit.
func TestCrashIntoLowMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	if v, _ := encode(bigResult(1)); len(v) >= 64<<10 || len(v) < 50<<10 {
		t.Fatalf("bigResult is %d bytes; it must stay just below the value threshold", len(v))
	}
	dir := t.TempDir()
	rep := runAndKill(t, dir, 1+420, "results") // 420 * 60 KB > a LowMemory memtable (21.8 MB)
	s := openTest(t, dir, Options{LowMemory: true})
	if n := uint64(len(rawKeys(t, s, key(pResult)))); n < rep.results {
		t.Fatalf("%d results reported, %d stored", rep.results, n)
	}
	for _, r := range []uint64{1, rep.results / 2, rep.results} { // decoding all is slow under -race
		res, err := s.Result(r)
		must(t, err)
		if !reflect.DeepEqual(res, bigResult(r)) {
			t.Fatalf("result %d differs", r)
		}
	}
}

// runAndKill starts the child on dir and kills it once it has reported
// killAfter writes; it returns what the child reported.
func runAndKill(t *testing.T, dir string, killAfter int, mode string) crashReport {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashModeEnv+"="+mode)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	must(t, err)
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())

	var rep crashReport
	lines := bufio.NewScanner(stdout)
	for n := 0; n < killAfter; {
		if !lines.Scan() {
			_ = cmd.Wait()
			t.Fatalf("child ended after %d lines (%+v): %s", n, rep, stderr.String())
		}
		line := lines.Text()
		if line == "done" {
			break
		}
		if strings.HasPrefix(line, "=== ") || line == "PASS" {
			continue
		}
		if err := rep.add(line); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal(err, stderr.String())
		}
		n++
	}
	must(t, cmd.Process.Kill())
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Exited() {
		t.Fatalf("child was not killed: %v (%s)", err, stderr.String())
	}
	return rep
}

// checkCrashed checks a store the child left against what it reported and
// returns the open round (0 if none).
func checkCrashed(t *testing.T, s *Badger, rep crashReport) uint64 {
	t.Helper()
	if rep.genesis {
		if _, _, err := s.Genesis(); err != nil {
			t.Fatalf("reported genesis: %v", err)
		}
	}
	var committed uint64
	switch last, err := s.LastResult(); {
	case err == nil:
		committed = last.Round
	case !errors.Is(err, ErrNotFound):
		t.Fatal(err)
	}
	if committed < rep.committed {
		t.Fatalf("round %d reported committed, store has %d", rep.committed, committed)
	}
	// A commit is all there or not at all: result, model, counter, next
	// round, and no update left of the rounds it closed.
	for r := uint64(1); r <= committed; r++ {
		res, err := s.Result(r)
		must(t, err)
		m, err := s.Model(res.ModelHash)
		must(t, err)
		if !bytes.Equal(m, crashModel(r)) {
			t.Fatalf("model of round %d differs", r)
		}
		if us, err := s.Updates(r); err != nil || len(us) != 0 {
			t.Fatalf("round %d committed but %d updates left (%v)", r, len(us), err)
		}
		if ks := rawKeys(t, s, payloadsKey(r)); len(ks) != 0 {
			t.Fatalf("round %d committed but %d payload chunks left", r, len(ks))
		}
	}
	var counter uint64
	must(t, s.db.View(func(txn *badger.Txn) (err error) { counter, err = readCommitted(txn); return err }))
	if counter != committed {
		t.Fatalf("committed counter %d, last result %d", counter, committed)
	}
	open, ok, err := s.OpenRound()
	must(t, err)
	if rep.opened && committed < crashRounds && (!ok || open.Round != committed+1) {
		t.Fatalf("after %d commits the open round is %+v (%v)", committed, open, ok)
	}
	if !ok {
		return 0
	}
	us, err := s.Updates(open.Round)
	must(t, err)
	if committed == rep.committed && len(us) < rep.updates {
		t.Fatalf("%d updates of round %d reported, %d stored", rep.updates, open.Round, len(us))
	}
	for i, u := range us {
		if !bytes.Equal(u.Payload, newUpdate(open.Round, i, crashPayload).Payload) {
			t.Fatalf("update %d of round %d differs", i, open.Round)
		}
	}
	return open.Round
}
