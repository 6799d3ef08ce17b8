package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io/fs"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// backends are the configurations every behavioural test runs against.
var backends = []struct {
	name string
	opt  Options
	disk bool
}{
	{"memory", Options{InMemory: true}, false},
	{"disk", Options{}, true},
	{"disk-lowmem", Options{LowMemory: true}, true},
	{"disk-tiny", Options{Tiny: true}, true},
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openTest opens a store for the test and closes it at its end.
func openTest(t testing.TB, dir string, opt Options) *Badger {
	t.Helper()
	if opt.Logger == nil {
		opt.Logger = testLogger(t)
	}
	if opt.GCInterval == 0 {
		opt.GCInterval = -1
	}
	if opt.InMemory && !MemoryModeAvailable {
		// 32-bit: the in-memory mode is refused (TestMemoryMode); the test
		// runs on a real store in a temporary directory instead.
		opt.InMemory, dir = false, t.TempDir()
	}
	s, err := Open(dir, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func forEachBackend(t *testing.T, f func(t *testing.T, s *Badger)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			dir := ""
			if b.disk {
				dir = t.TempDir()
			}
			f(t, openTest(t, dir, b.opt))
		})
	}
}

// blob returns n deterministic pseudo-random bytes.
func blob(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

func hashOf(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// newUpdate is update seq of round with a payload of n bytes derived from both.
func newUpdate(round uint64, seq, n int) Update {
	p := blob(round<<20|uint64(seq), n)
	return Update{Round: round, Seq: seq, From: "peer-" + string(rune('a'+seq%26)),
		ModelHash: hashOf([]byte{byte(round)}), Payload: p, Samples: int64(60 + seq),
		Signature: []byte{1, 2, byte(seq)}, Hash: hashOf(p)}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want %v", err, target)
	}
}

// rawKeys lists the keys under prefix, through the raw database.
func rawKeys(t testing.TB, s *Badger, prefix []byte) [][]byte {
	t.Helper()
	var ks [][]byte
	must(t, s.db.View(func(txn *badger.Txn) error {
		ks = keys(txn, prefix)
		return nil
	}))
	return ks
}

func TestGenesis(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Badger) {
		_, _, err := s.Genesis()
		wantErr(t, err, ErrNotFound)
		file := blob(1, 3*chunkSize/2) // two chunks
		must(t, s.PutGenesis("fed-a", file))
		must(t, s.PutGenesis("fed-a", []byte("another encoding"))) // same id: no-op
		wantErr(t, s.PutGenesis("fed-b", file), ErrConflict)
		id, got, err := s.Genesis()
		must(t, err)
		if id != "fed-a" || !bytes.Equal(got, file) {
			t.Fatalf("Genesis = %q, %d bytes; want fed-a, the first file", id, len(got))
		}
		if err := s.PutGenesis("", nil); err == nil {
			t.Fatal("empty id accepted")
		}
	})
}

func TestModels(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Badger) {
		for _, n := range []int{0, 1, chunkSize, chunkSize + 1, 5*chunkSize + 7} {
			m := blob(uint64(n), n)
			h, err := s.PutModel(m)
			must(t, err)
			if !bytes.Equal(h, hashOf(m)) {
				t.Fatalf("PutModel(%d bytes) hash %x, want its SHA-256", n, h)
			}
			h2, err := s.PutModel(m) // idempotent
			must(t, err)
			if !bytes.Equal(h, h2) {
				t.Fatal("second PutModel: other hash")
			}
			got, err := s.Model(h)
			must(t, err)
			if !bytes.Equal(got, m) {
				t.Fatalf("Model(%d bytes) = %d bytes, other content", n, len(got))
			}
		}
		_, err := s.Model(hashOf([]byte("absent")))
		wantErr(t, err, ErrNotFound)
		_, err = s.Model([]byte("short"))
		wantErr(t, err, ErrNotFound)
	})
}

// TestRounds walks an aggregator through three rounds and checks every
// reader after every step.
func TestRounds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Badger) {
		if _, ok, err := s.OpenRound(); ok || err != nil {
			t.Fatalf("OpenRound on an empty store = ok %v, %v", ok, err)
		}
		_, err := s.LastResult()
		wantErr(t, err, ErrNotFound)

		model0 := blob(100, 1000)
		h0, err := s.PutModel(model0)
		must(t, err)
		open := OpenRound{Round: 1, ModelHash: h0, Selected: []string{"a", "b"}, StartedMs: 10, DeadlineMs: 20}
		must(t, s.Open(open))
		for round := uint64(1); round <= 3; round++ {
			got, ok, err := s.OpenRound()
			must(t, err)
			if !ok || !reflect.DeepEqual(got, open) {
				t.Fatalf("OpenRound = %+v, %v; want %+v", got, ok, open)
			}
			// Payload sizes: empty, one chunk, several chunks.
			var want []Update
			for seq, n := range []int{0, 700, 600 << 10, 2*chunkSize + 3} {
				u := newUpdate(round, seq, n)
				must(t, s.AddUpdate(u))
				want = append(want, u)
			}
			us, err := s.Updates(round)
			must(t, err)
			if len(us) != len(want) {
				t.Fatalf("round %d: %d updates, want %d", round, len(us), len(want))
			}
			for i := range us {
				if !bytes.Equal(us[i].Payload, want[i].Payload) {
					t.Fatalf("update %d: payload differs", i)
				}
				us[i].Payload, want[i].Payload = nil, nil
				if !reflect.DeepEqual(us[i], want[i]) {
					t.Fatalf("update %d = %+v, want %+v", i, us[i], want[i])
				}
			}

			model := blob(round, 3*chunkSize)
			res := Result{Round: round, ModelHash: hashOf(model), UpdateHashes: [][]byte{want[0].Hash, want[1].Hash},
				Advanced: true, Reason: "quorum", Accepted: 4, Rejected: map[string]int{"late": 1},
				StartedMs: int64(round), ClosedMs: int64(round) + 5}
			var next *OpenRound
			if round < 3 {
				next = &OpenRound{Round: round + 1, ModelHash: res.ModelHash, PrevModelHash: open.ModelHash}
			}
			must(t, s.Commit(Commit{Result: res, Model: model, Next: next}))

			got2, err := s.Result(round)
			must(t, err)
			last, err := s.LastResult()
			must(t, err)
			if !reflect.DeepEqual(got2, res) || !reflect.DeepEqual(last, res) {
				t.Fatalf("Result/LastResult = %+v / %+v, want %+v", got2, last, res)
			}
			m, err := s.Model(res.ModelHash)
			must(t, err)
			if !bytes.Equal(m, model) {
				t.Fatal("committed model differs")
			}
			us, err = s.Updates(round)
			if err != nil || len(us) != 0 {
				t.Fatalf("Updates of a committed round = %d, %v", len(us), err)
			}
			if next != nil {
				open = *next
			}
		}
		if _, ok, err := s.OpenRound(); ok || err != nil {
			t.Fatalf("after the last commit OpenRound = ok %v, %v", ok, err)
		}
		// The federation ended; a new round may still be opened after the last.
		must(t, s.Open(OpenRound{Round: 4, ModelHash: open.ModelHash}))
	})
}

func TestUpdatesOrderPastByteBoundary(t *testing.T) {
	s := openTest(t, "", Options{InMemory: true})
	must(t, s.Open(OpenRound{Round: 1}))
	const n = 300 // seq 256.. would sort before 1.. if the encoding were not big-endian
	for seq := range n {
		must(t, s.AddUpdate(newUpdate(1, seq, 40)))
	}
	us, err := s.Updates(1)
	must(t, err)
	if len(us) != n {
		t.Fatalf("%d updates, want %d", len(us), n)
	}
	for i, u := range us {
		if u.Seq != i || !bytes.Equal(u.Payload, newUpdate(1, i, 40).Payload) {
			t.Fatalf("update %d has seq %d", i, u.Seq)
		}
	}
}

func TestResultsOrderAndEval(t *testing.T) {
	s := openTest(t, "", Options{InMemory: true})
	for _, r := range []uint64{3, 1, 300, 256, 2} {
		must(t, s.PutResult(Result{Round: r, ModelHash: hashOf([]byte{byte(r)})}))
	}
	last, err := s.LastResult()
	must(t, err)
	if last.Round != 300 {
		t.Fatalf("LastResult round %d, want 300", last.Round)
	}
	wantErr(t, s.PutEval(7, Eval{}), ErrNotFound)
	for _, e := range []Eval{{Accuracy: 0.91, Loss: 0.3, Samples: 10000}, {Accuracy: 0.1, Loss: math.NaN(), Samples: 5},
		{Loss: math.Inf(1)}, {Loss: math.Inf(-1)}} {
		must(t, s.PutEval(256, e))
		r, err := s.Result(256)
		must(t, err)
		if r.Eval == nil || r.Eval.Accuracy != e.Accuracy || r.Eval.Samples != e.Samples ||
			!(r.Eval.Loss == e.Loss || math.IsNaN(r.Eval.Loss) && math.IsNaN(e.Loss)) {
			t.Fatalf("Eval = %+v, want %+v", r.Eval, e)
		}
	}
	// Hearing the same result again keeps the evaluation; another model conflicts.
	must(t, s.PutResult(Result{Round: 256, ModelHash: hashOf([]byte{0}), Reason: "again"}))
	r, err := s.Result(256)
	must(t, err)
	if r.Eval == nil || r.Reason != "again" {
		t.Fatalf("after PutResult again: %+v", r)
	}
	wantErr(t, s.PutResult(Result{Round: 256, ModelHash: hashOf([]byte{1})}), ErrConflict)
	_, err = s.Result(4)
	wantErr(t, err, ErrNotFound)
}

func TestTrainerRound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Badger) {
		if _, ok, err := s.TrainerRound(); ok || err != nil {
			t.Fatalf("TrainerRound on an empty store = ok %v, %v", ok, err)
		}
		u := newUpdate(5, 0, 3*chunkSize/2)
		for _, tr := range []TrainerRound{
			{Round: 5, ModelHash: hashOf([]byte("m")), Selected: true, DeadlineMs: 99, Pending: &u},
			{Round: 5, ModelHash: hashOf([]byte("m")), Selected: true, DeadlineMs: 99, Pending: &Update{Round: 5, Hash: u.Hash}, Acked: true},
			{Round: 6, Pending: func() *Update { u := newUpdate(6, 0, 10); return &u }()},
			{Round: 7},
		} {
			must(t, s.PutTrainerRound(tr))
			got, ok, err := s.TrainerRound()
			must(t, err)
			if !ok || !reflect.DeepEqual(got, tr) {
				t.Fatalf("TrainerRound = %+v (%v), want %+v", got, ok, tr)
			}
		}
		// Only the current pending payload is kept.
		if n := len(rawKeys(t, s, key(pTrainerChunk))); n != 0 {
			t.Fatalf("%d stale payload chunks", n)
		}
		bad := newUpdate(8, 0, 10)
		bad.Hash = hashOf([]byte("other"))
		wantErr(t, s.PutTrainerRound(TrainerRound{Round: 8, Pending: &bad}), ErrConflict)
	})
}

// TestConflicts: every write that contradicts the store is refused with
// ErrConflict (or ErrNotFound) and changes nothing.
func TestConflicts(t *testing.T) {
	model := blob(9, 100)
	h := hashOf(model)
	// setup: round 1 open with updates 0 and 1.
	setup := func(t *testing.T) *Badger {
		s := openTest(t, "", Options{InMemory: true, LowMemory: true})
		_, err := s.PutModel(model)
		must(t, err)
		must(t, s.Open(OpenRound{Round: 1, ModelHash: h}))
		must(t, s.AddUpdate(newUpdate(1, 0, 10)))
		must(t, s.AddUpdate(newUpdate(1, 1, 10)))
		return s
	}
	res := func(round uint64) Result { return Result{Round: round, ModelHash: h} }
	badHash := newUpdate(1, 2, 10)
	badHash.Hash = hashOf([]byte("x"))
	other := blob(10, 100)
	tests := []struct {
		name string
		op   func(s *Badger) error
		want error
	}{
		{"open while open", func(s *Badger) error { return s.Open(OpenRound{Round: 2}) }, ErrConflict},
		{"open same", func(s *Badger) error { return s.Open(OpenRound{Round: 1}) }, ErrConflict},
		{"update of another round", func(s *Badger) error { return s.AddUpdate(newUpdate(2, 2, 10)) }, ErrConflict},
		{"update seq taken", func(s *Badger) error { return s.AddUpdate(newUpdate(1, 1, 10)) }, ErrConflict},
		{"update seq gap", func(s *Badger) error { return s.AddUpdate(newUpdate(1, 3, 10)) }, ErrConflict},
		{"update seq negative", func(s *Badger) error { return s.AddUpdate(newUpdate(1, -1, 10)) }, ErrConflict},
		{"update hash", func(s *Badger) error { return s.AddUpdate(badHash) }, ErrConflict},
		{"commit other round", func(s *Badger) error { return s.Commit(Commit{Result: res(2)}) }, ErrConflict},
		{"commit next not round+1", func(s *Badger) error {
			return s.Commit(Commit{Result: res(1), Next: &OpenRound{Round: 3}})
		}, ErrConflict},
		{"commit model hash mismatch", func(s *Badger) error {
			return s.Commit(Commit{Result: res(1), Model: other})
		}, ErrConflict},
		{"commit without model hash", func(s *Badger) error { return s.Commit(Commit{Result: Result{Round: 1}}) }, ErrConflict},
		{"commit of a model not stored", func(s *Badger) error {
			return s.Commit(Commit{Result: Result{Round: 1, ModelHash: hashOf(other)}})
		}, ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := setup(t)
			wantErr(t, tc.op(s), tc.want)
			r, ok, err := s.OpenRound()
			must(t, err)
			if !ok || r.Round != 1 {
				t.Fatalf("open round now %+v %v", r, ok)
			}
			us, err := s.Updates(1)
			must(t, err)
			if len(us) != 2 {
				t.Fatalf("%d updates now, want 2", len(us))
			}
			if _, err := s.LastResult(); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a result appeared: %v", err)
			}
			if _, err := s.Model(hashOf(other)); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a refused commit stored its model: %v", err)
			}
		})
	}

	t.Run("no open round", func(t *testing.T) {
		s := openTest(t, "", Options{InMemory: true})
		wantErr(t, s.Open(OpenRound{Round: 2}), ErrConflict)
		wantErr(t, s.Open(OpenRound{Round: 0}), ErrConflict)
		wantErr(t, s.AddUpdate(newUpdate(1, 0, 1)), ErrConflict)
		wantErr(t, s.Commit(Commit{Result: res(1), Model: model}), ErrConflict)
	})
	t.Run("commit twice", func(t *testing.T) {
		s := setup(t)
		must(t, s.Commit(Commit{Result: res(1), Next: &OpenRound{Round: 2}}))
		wantErr(t, s.Commit(Commit{Result: res(1)}), ErrConflict)
		wantErr(t, s.Open(OpenRound{Round: 3}), ErrConflict) // round 2 is open
	})
}

// TestCommitDeletes: a commit deletes the closed round's records and
// payloads, orphans included, and nothing of another round.
func TestCommitDeletes(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			dir := ""
			if b.disk {
				dir = t.TempDir()
			}
			s := openTest(t, dir, b.opt)
			must(t, s.Open(OpenRound{Round: 1}))
			for seq := range 3 {
				must(t, s.AddUpdate(newUpdate(1, seq, chunkSize+10)))
			}
			// An orphan payload (an AddUpdate that crashed before its record),
			// and a payload of round 2 that must survive.
			orphan := blob(77, 10)
			must(t, s.putBlob(payloadChunks(1, hashOf(orphan)), orphan))
			later := blob(78, 10)
			must(t, s.putBlob(payloadChunks(2, hashOf(later)), later))

			model := blob(5, 10)
			must(t, s.Commit(Commit{Result: Result{Round: 1, ModelHash: hashOf(model)}, Model: model}))
			if ks := rawKeys(t, s, key(pUpdate)); len(ks) != 0 {
				t.Fatalf("%d update records left", len(ks))
			}
			ks := rawKeys(t, s, key(pPayloadChunk))
			if len(ks) != 1 || !bytes.HasPrefix(ks[0], payloadChunks(2, hashOf(later))) {
				t.Fatalf("payload keys left: %d", len(ks))
			}
			if _, ok, _ := s.OpenRound(); ok {
				t.Fatal("a round is open after a commit without Next")
			}
			must(t, s.Open(OpenRound{Round: 2}))
		})
	}
}

// TestReopen: everything written survives Close and Open, also when the
// store is reopened with the other memory profile.
func TestReopen(t *testing.T) {
	for _, tc := range []struct {
		name        string
		first, then Options
	}{
		{"default", Options{}, Options{}},
		{"lowmem", Options{LowMemory: true}, Options{LowMemory: true}},
		{"default then lowmem", Options{}, Options{LowMemory: true}},
		{"lowmem then default", Options{LowMemory: true, SyncWrites: true}, Options{}},
		{"default then tiny", Options{}, Options{Tiny: true}},
		{"tiny then lowmem", Options{Tiny: true}, Options{LowMemory: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, tc.first)
			file := blob(1, 100)
			must(t, s.PutGenesis("fed", file))
			model := blob(2, chunkSize*2+1)
			h, err := s.PutModel(model)
			must(t, err)
			must(t, s.Open(OpenRound{Round: 1, ModelHash: h}))
			must(t, s.AddUpdate(newUpdate(1, 0, 600<<10)))
			res := Result{Round: 1, ModelHash: h, Reason: "deadline"}
			must(t, s.Commit(Commit{Result: res, Next: &OpenRound{Round: 2, ModelHash: h}}))
			u := newUpdate(2, 0, 600<<10)
			must(t, s.AddUpdate(u))
			must(t, s.PutEval(1, Eval{Accuracy: 0.5}))
			tr := TrainerRound{Round: 2, Pending: &u}
			must(t, s.PutTrainerRound(tr))
			must(t, s.Close())

			s = openTest(t, dir, tc.then)
			id, f, err := s.Genesis()
			must(t, err)
			if id != "fed" || !bytes.Equal(f, file) {
				t.Fatal("genesis lost")
			}
			m, err := s.Model(h)
			must(t, err)
			if !bytes.Equal(m, model) {
				t.Fatal("model lost")
			}
			r, err := s.LastResult()
			must(t, err)
			if r.Round != 1 || r.Eval == nil || r.Eval.Accuracy != 0.5 {
				t.Fatalf("result after reopen: %+v", r)
			}
			us, err := s.Updates(2)
			must(t, err)
			if len(us) != 1 || !bytes.Equal(us[0].Payload, u.Payload) {
				t.Fatalf("updates after reopen: %d", len(us))
			}
			got, ok, err := s.TrainerRound()
			must(t, err)
			if !ok || !reflect.DeepEqual(got, tr) {
				t.Fatal("trainer round lost")
			}
			wantErr(t, s.Open(OpenRound{Round: 2}), ErrConflict)
			must(t, s.AddUpdate(newUpdate(2, 1, 10)))
		})
	}
}

func TestClose(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *Badger) {
		must(t, s.Close())
		must(t, s.Close())
		h := hashOf(nil)
		for name, err := range map[string]error{
			"PutGenesis":      s.PutGenesis("x", nil),
			"Genesis":         func() error { _, _, err := s.Genesis(); return err }(),
			"PutModel":        func() error { _, err := s.PutModel(nil); return err }(),
			"Model":           func() error { _, err := s.Model(h); return err }(),
			"AddUpdate":       s.AddUpdate(Update{Round: 1, Hash: h}),
			"Updates":         func() error { _, err := s.Updates(1); return err }(),
			"Open":            s.Open(OpenRound{Round: 1}),
			"OpenRound":       func() error { _, _, err := s.OpenRound(); return err }(),
			"Commit":          s.Commit(Commit{}),
			"PutResult":       s.PutResult(Result{Round: 1}),
			"Result":          func() error { _, err := s.Result(1); return err }(),
			"LastResult":      func() error { _, err := s.LastResult(); return err }(),
			"PutEval":         s.PutEval(1, Eval{}),
			"PutTrainerRound": s.PutTrainerRound(TrainerRound{}),
			"TrainerRound":    func() error { _, _, err := s.TrainerRound(); return err }(),
		} {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close: %v, want ErrClosed", name, err)
			}
		}
		_ = s.Size() // must not panic
	})
}

// TestCloseWaitsForCalls: Close while readers and writers run returns
// ErrClosed to the late ones and never lets Badger see a call after Close
// (it would panic).
func TestCloseWaitsForCalls(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{LowMemory: true})
	must(t, s.Open(OpenRound{Round: 1}))
	wrote := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				var err error
				if w == 0 {
					err = s.AddUpdate(newUpdate(1, i, 1000))
					if i == 3 {
						wrote <- struct{}{}
					}
				} else {
					_, err = s.Updates(1)
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	recv(t, wrote)
	must(t, s.Close())
	wg.Wait()
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{LowMemory: true})
	must(t, s.PutGenesis("fed", []byte("file")))

	_, err := Open(dir, Options{})
	wantErr(t, err, ErrLocked)
	_, err = OpenReadOnly(dir)
	wantErr(t, err, ErrLocked)
	must(t, s.Close())

	r1, err := OpenReadOnly(dir)
	must(t, err)
	defer r1.Close()
	r2, err := OpenReadOnly(dir) // readers share the lock
	must(t, err)
	defer r2.Close()
	id, _, err := r2.Genesis()
	must(t, err)
	if id != "fed" {
		t.Fatalf("read-only Genesis = %q", id)
	}
	wantErr(t, r1.PutGenesis("fed", nil), ErrReadOnly)
	wantErr(t, r1.Open(OpenRound{Round: 1}), ErrReadOnly)
	_, err = Open(dir, Options{}) // a daemon cannot start while status reads
	wantErr(t, err, ErrLocked)

	_, err = OpenReadOnly(t.TempDir())
	wantErr(t, err, fs.ErrNotExist)
	_, err = OpenReadOnly(filepath.Join(t.TempDir(), "absent"))
	wantErr(t, err, fs.ErrNotExist)
	if _, err := Open("", Options{}); err == nil {
		t.Fatal("Open of an empty dir name succeeded")
	}
}

func TestSize(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{LowMemory: true})
	before := s.Size()
	_, err := s.PutModel(blob(1, 4<<20))
	must(t, err)
	after := s.Size()
	if after-before < 4<<20 {
		t.Fatalf("Size grew by %d bytes after a 4 MiB model", after-before)
	}
	if after > 64<<20 {
		t.Fatalf("Size %d counts the sparse log files' length", after)
	}
	if MemoryModeAvailable {
		m := openTest(t, "", Options{InMemory: true})
		if m.Size() != 0 {
			t.Fatal("in-memory Size != 0")
		}
	}
}

// TestMemoryMode: the in-memory mode opens on 64-bit platforms and is
// refused with ErrNoMemoryMode on 32-bit ones.
func TestMemoryMode(t *testing.T) {
	s, err := Open("", Options{InMemory: true, GCInterval: -1, Logger: testLogger(t)})
	if MemoryModeAvailable {
		must(t, err)
		must(t, s.PutGenesis("fed", []byte("file")))
		must(t, s.Close())
		return
	}
	wantErr(t, err, ErrNoMemoryMode)
}

// TestCorrupt: a record that does not decode is ErrCorrupt naming its key,
// never a panic or a silently wrong value.
func TestCorrupt(t *testing.T) {
	model := blob(3, chunkSize+100)
	mh := hashOf(model)
	u := newUpdate(1, 0, 2*chunkSize)
	garbage := []byte("\x00garbage{")
	// flip returns the value under k with one byte changed.
	flip := func(s *Badger, k []byte) []byte {
		var v []byte
		must(t, s.db.View(func(txn *badger.Txn) (err error) { v, err = get(txn, k); return err }))
		v[len(v)/2] ^= 0x40
		return v
	}
	tests := []struct {
		name  string
		key   []byte
		value func(s *Badger) []byte // nil: delete the key
		read  func(s *Badger) error
		names string
	}{
		{"genesis record", key(pGenesis), func(*Badger) []byte { return garbage },
			func(s *Badger) error { _, _, err := s.Genesis(); return err }, "genesis"},
		{"genesis id empty", key(pGenesis), func(*Badger) []byte { return []byte(`{"id":""}`) },
			func(s *Badger) error { _, _, err := s.Genesis(); return err }, "genesis"},
		{"genesis file", chunkKey(genesisChunks(hashOf([]byte("file"))), 0), func(s *Badger) []byte {
			return flip(s, chunkKey(genesisChunks(hashOf([]byte("file"))), 0))
		}, func(s *Badger) error { _, _, err := s.Genesis(); return err }, "genesis-file/"},
		{"model marker", modelKey(mh), func(*Badger) []byte { return []byte{1, 2, 3} },
			func(s *Badger) error { _, err := s.Model(mh); return err }, "model/"},
		{"model length", modelKey(mh), func(*Badger) []byte { return be64(5) },
			func(s *Badger) error { _, err := s.Model(mh); return err }, "model/"},
		{"model chunk", chunkKey(modelChunks(mh), 1), func(s *Badger) []byte { return flip(s, chunkKey(modelChunks(mh), 1)) },
			func(s *Badger) error { _, err := s.Model(mh); return err }, "model/"},
		{"model chunk missing", chunkKey(modelChunks(mh), 0), nil,
			func(s *Badger) error { _, err := s.Model(mh); return err }, "chunk 1"},
		{"update record", updateKey(1, 0), func(*Badger) []byte { return garbage },
			func(s *Badger) error { _, err := s.Updates(1); return err }, "update/1/0"},
		{"update under another key", updateKey(1, 0), func(*Badger) []byte { return []byte(`{"round":1,"seq":4}`) },
			func(s *Badger) error { _, err := s.Updates(1); return err }, "update/1/0"},
		{"update payload", chunkKey(payloadChunks(1, u.Hash), 1), func(s *Badger) []byte {
			return flip(s, chunkKey(payloadChunks(1, u.Hash), 1))
		}, func(s *Badger) error { _, err := s.Updates(1); return err }, "payload/1/"},
		{"open round", key(pOpen), func(*Badger) []byte { return garbage },
			func(s *Badger) error { _, _, err := s.OpenRound(); return err }, "open-round"},
		{"open round null", key(pOpen), func(*Badger) []byte { return []byte("null") },
			func(s *Badger) error { return s.AddUpdate(newUpdate(1, 1, 1)) }, "open-round"},
		{"committed counter", key(pCommitted), func(*Badger) []byte { return []byte{7} },
			func(s *Badger) error {
				must(t, s.db.Update(func(txn *badger.Txn) error { return txn.Delete(key(pOpen)) }))
				return s.Open(OpenRound{Round: 2})
			}, "committed-round"},
		{"result", resultKey(1), func(*Badger) []byte { return garbage },
			func(s *Badger) error { _, err := s.Result(1); return err }, "result/1"},
		{"last result", resultKey(1), func(*Badger) []byte { return []byte(`{"round":2}`) },
			func(s *Badger) error { _, err := s.LastResult(); return err }, "result/1"},
		{"eval of corrupt result", resultKey(1), func(*Badger) []byte { return []byte(`{"round":1,"eval":{"loss":"x"}}`) },
			func(s *Badger) error { return s.PutEval(1, Eval{}) }, "result/1"},
		{"trainer round", key(pTrainer), func(*Badger) []byte { return garbage },
			func(s *Badger) error { _, _, err := s.TrainerRound(); return err }, "trainer-round"},
		{"trainer flag without update", key(pTrainer), func(*Badger) []byte { return []byte(`{"pending_payload":true}`) },
			func(s *Badger) error { _, _, err := s.TrainerRound(); return err }, "trainer-round"},
		{"trainer payload", chunkKey(trainerChunks(u.Hash), 0), func(s *Badger) []byte {
			return flip(s, chunkKey(trainerChunks(u.Hash), 0))
		}, func(s *Badger) error { _, _, err := s.TrainerRound(); return err }, "trainer-payload/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, "", Options{InMemory: true, LowMemory: true})
			must(t, s.PutGenesis("fed", []byte("file")))
			_, err := s.PutModel(model)
			must(t, err)
			must(t, s.Open(OpenRound{Round: 1}))
			must(t, s.AddUpdate(u))
			must(t, s.PutResult(Result{Round: 1, ModelHash: mh}))
			must(t, s.PutTrainerRound(TrainerRound{Round: 1, Pending: &u}))
			must(t, s.db.Update(func(txn *badger.Txn) error {
				if tc.value == nil {
					return txn.Delete(tc.key)
				}
				return txn.Set(tc.key, tc.value(s))
			}))
			err = tc.read(s)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.names) {
				t.Fatalf("err = %v, want ErrCorrupt naming %q", err, tc.names)
			}
		})
	}
}

func TestFormatVersion(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	must(t, s.db.Update(func(txn *badger.Txn) error { return txn.Set(key(pVersion), []byte("9")) }))
	must(t, s.Close())
	if _, err := Open(dir, Options{GCInterval: -1, Logger: testLogger(t)}); err == nil || !strings.Contains(err.Error(), "format version") {
		t.Fatalf("Open of a store in another format: %v", err)
	}
	// The failed Open released the directory.
	if _, err := OpenReadOnly(dir); err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("OpenReadOnly after a refused Open: %v", err)
	}
}

func TestTooLarge(t *testing.T) {
	if !MemoryModeAvailable {
		t.Skip("the in-memory store's value limit; no in-memory mode on 32-bit (TestMemoryMode)")
	}
	s := openTest(t, "", Options{InMemory: true})
	huge := make([]string, 1<<17) // a record of 1.2 MB: more than one in-memory value
	for i := range huge {
		huge[i] = "peer-000"
	}
	err := s.PutResult(Result{Round: 1, ModelHash: hashOf(nil), Selected: huge})
	wantErr(t, err, ErrTooLarge)
}

// TestGCLoop: the value-log collector runs on its period and stops at Close.
func TestGCLoop(t *testing.T) {
	var closed atomic.Bool
	ran := make(chan struct{}, 1)
	opt := Options{LowMemory: true, GCInterval: time.Millisecond, Logger: testLogger(t)}
	opt.gcHook = func() {
		if closed.Load() {
			t.Error("garbage collection after Close")
		}
		select {
		case ran <- struct{}{}:
		default:
		}
	}
	s, err := Open(t.TempDir(), opt)
	must(t, err)
	must(t, s.Open(OpenRound{Round: 1}))
	for seq := range 4 {
		must(t, s.AddUpdate(newUpdate(1, seq, 600<<10)))
	}
	recv(t, ran)
	recv(t, ran)
	must(t, s.Commit(Commit{Result: Result{Round: 1, ModelHash: hashOf(nil)}, Model: []byte{}}))
	recv(t, ran)
	must(t, s.Close())
	closed.Store(true)
	// Close waited for the loop: a late pass would have reported above.
}

// recv waits for a value on ch; the deadline only turns a hang into a failure.
func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatal("timed out")
		panic("unreachable")
	}
}

// TestLogger: Badger's info logs go to Debug, under component=badger.
func TestLogger(t *testing.T) {
	h := &recordingHandler{}
	s, err := Open(t.TempDir(), Options{Logger: slog.New(h), GCInterval: -1})
	must(t, err)
	must(t, s.Close())
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n[slog.LevelDebug] == 0 {
		t.Fatal("no Badger log at Debug level")
	}
	if h.n[slog.LevelInfo] != 0 {
		t.Fatalf("%d Badger logs at Info level", h.n[slog.LevelInfo])
	}
}

type recordingHandler struct {
	mu sync.Mutex
	n  map[slog.Level]int
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	badgerLog := false
	r.Attrs(func(a slog.Attr) bool {
		badgerLog = badgerLog || a.Key == "component" && a.Value.String() == "badger"
		return true
	})
	if badgerLog {
		h.mu.Lock()
		if h.n == nil {
			h.n = map[slog.Level]int{}
		}
		h.n[r.Level]++
		h.mu.Unlock()
	}
	return nil
}

func TestKeyName(t *testing.T) {
	h := make([]byte, 32)
	h[0] = 0xab
	hex := "ab" + strings.Repeat("00", 31)
	for k, want := range map[string]string{
		string(key(pGenesis)):                    "genesis",
		string(updateKey(3, 7)):                  "update/3/7",
		string(updatesKey(3)):                    "update/3",
		string(resultKey(12)):                    "result/12",
		string(modelKey(h)):                      "model/" + hex,
		string(chunkKey(modelChunks(h), 2)):      "model/" + hex + "/chunk 2",
		string(chunkKey(payloadChunks(4, h), 0)): "payload/4/" + hex + "/chunk 0",
		string(append(key(pResult), 1, 2)):       "key 090102",
		string([]byte{0x7f}):                     "key 7f",
		string(chunkKey(trainerChunks(h), 1)):    "trainer-payload/" + hex + "/chunk 1",
		string(chunkKey(genesisChunks(h), 0)):    "genesis-file/" + hex + "/chunk 0",
		string(append(modelKey(h), 0, 0, 0, 0)):  "key 03" + hex + "00000000",
		string(append(key(pOpen), 1)):            "key 0701",
		string(key(pCommitted)):                  "committed-round",
		string(key(pTrainer)):                    "trainer-round",
		string(key(pVersion)):                    "version",
		"":                                       "(empty key)",
	} {
		if got := keyName([]byte(k)); got != want {
			t.Errorf("keyName(%x) = %q, want %q", k, got, want)
		}
	}
}

// TestLargeModel: a model larger than a LowMemory value-log file (64 MiB,
// also Badger's largest value there) commits and reads back. (In memory,
// where values are limited to 1 MiB, TestModels covers chunking.)
func TestLargeModel(t *testing.T) {
	model := blob(64, 64<<20+1)
	s := openTest(t, t.TempDir(), Options{LowMemory: true})
	must(t, s.Open(OpenRound{Round: 1}))
	res := Result{Round: 1, ModelHash: hashOf(model)}
	must(t, s.Commit(Commit{Result: res, Model: model}))
	got, err := s.Model(res.ModelHash)
	must(t, err)
	if !bytes.Equal(got, model) {
		t.Fatal("model differs")
	}
}
