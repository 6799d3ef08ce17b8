package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Errors of the Badger store beyond those of the Store interface.
var (
	// ErrLocked: another Open (in this process or another one, e.g. a
	// running daemon) holds the store's directory.
	ErrLocked = errors.New("storage: directory in use by another open store")
	// ErrReadOnly: a write to a store opened with OpenReadOnly.
	ErrReadOnly = errors.New("storage: read-only")
	// ErrTooLarge: a record is larger than the store accepts as one value.
	ErrTooLarge = errors.New("storage: record too large")
	// ErrNoMemoryMode: Options.InMemory on a 32-bit platform (armv7).
	// Badger's in-memory tables come back corrupt there once the garbage
	// collector runs (seen under qemu-arm: a memtable flush panics with
	// slice bounds out of range in table.block; with GOGC=off it passes);
	// the on-disk store passes the same tests. The daemon never uses the
	// in-memory mode; tests on 32-bit open a temporary directory instead.
	ErrNoMemoryMode = errors.New("storage: the in-memory mode is not available on 32-bit platforms (Badger's in-memory tables are corrupted there); use a directory")
)

// DefaultGCInterval is how often the value-log garbage collector runs when
// Options.GCInterval is 0.
const DefaultGCInterval = 5 * time.Minute

// Options configure Open. The zero value is an on-disk store with Badger's
// default sizes (5 memtables of 64 MiB, a 256 MiB block cache, an unbounded
// index cache, 1 GiB value-log files) except one: values above 64 KiB go to
// the value log. Badger's default of 1 MiB would keep every 512 KiB chunk of
// a model or payload in the LSM tree, where each compaction rewrites it:
// measured over 40 rounds of 25 updates of 600 KB, that took 2 GB of
// anonymous memory against about 120 MB with 64 KiB.
type Options struct {
	// InMemory keeps everything in RAM (Open ignores dir): for tests and the
	// simulator. Size reports 0 and nothing survives Close.
	InMemory bool

	// LowMemory selects the edge profile (measured in the reference notes,
	// section 4.2): 2 memtables of 16 MiB, level-0 at 2 tables (stall at 8),
	// values above 1 KiB in the value log, 64 MiB value-log files, 8 MiB block
	// cache, 8 MiB index cache, 2 compactors, Badger metrics off. Measured
	// over 40 rounds of 25 updates of 600 KB and a 1 MiB model: about 60 MB
	// of anonymous memory (50 MB of Go heap, mostly the two memtables'
	// arenas), against about 120 MB for the default profile, plus mmapped
	// value-log pages that the kernel can reclaim. Compactions are more
	// frequent and the value-log garbage collector can reclaim deleted
	// payloads sooner (it never rewrites the active file, which is 64 MiB
	// here, 1 GiB by default). The store's contents are the same, so a store
	// can switch profile between runs.
	LowMemory bool

	// Tiny is LowMemory with a quarter of its memtables (4 MiB), caches
	// (2 MiB each) and value-log files (16 MiB): for a trainer on a small
	// board (the daemon's edge profile), which writes one update, one model
	// and one result per round. Forced on 32-bit platforms, where the
	// address space holds little else.
	Tiny bool

	// SyncWrites makes Badger fsync every transaction. Without it (the
	// default) each write method still returns only once its data is
	// durable: Badger writes through mmapped files, which survive a process
	// crash (kill -9, OOM kill) as soon as the write returns, and every write
	// method ends with one explicit DB.Sync, so a power loss is covered too.
	// That costs one sync per protocol step instead of one per transaction
	// (a Commit or a chunked model is several). One gap remains: Badger's
	// Sync syncs only the active memtable log and value-log file, and
	// without SyncWrites Badger does not sync the file it rotates away from
	// (every 64 MiB of values in LowMemory, 1 GiB otherwise; memtable logs
	// until they are flushed). A power loss within the kernel's writeback
	// delay (about 30 s) after a rotation can lose what went to the old file
	// (see also dgraph-io/badger#1954). SyncWrites closes that gap at the
	// cost of a sync per transaction; a process crash is covered either way.
	SyncWrites bool

	// Logger receives Badger's logs (its info logs at Debug level) and the
	// store's own. Nil means slog.Default().
	Logger *slog.Logger

	// GCInterval is the period of the value-log garbage collector, which
	// reclaims the space of deleted updates and replaced records. 0 means
	// DefaultGCInterval; negative disables it. It stops at Close.
	GCInterval time.Duration

	// gcHook, if set, is called after every garbage-collection pass (tests).
	gcHook func()
}

// Badger is the Store on github.com/dgraph-io/badger/v4.
//
// Writers are serialized by a mutex: each write method reads, checks and
// writes in several Badger operations (chunks first, then records), and the
// checks stay true only if no other writer runs in between. Readers run
// concurrently, each in one Badger read transaction (a consistent snapshot).
type Badger struct {
	db       *badger.DB
	dir      string // "" in memory
	readOnly bool
	sync     bool  // call db.Sync after each write method
	maxValue int64 // largest value Badger accepts under one key
	log      *slog.Logger
	gcHook   func()

	// mu guards closed. Every use of db holds it for reading, so Close
	// (which takes it for writing) waits for them, and no call touches the
	// DB after Close: Badger panics on use after close.
	mu     sync.RWMutex
	closed bool

	midWrite func(record string) // SetMidWriteHook

	wmu    sync.Mutex // serializes write methods
	stop   chan struct{}
	gcDone sync.WaitGroup
}

var _ Store = (*Badger)(nil)

// MemoryModeAvailable reports whether Options.InMemory works on this
// platform: not on 32-bit ones (see ErrNoMemoryMode).
const MemoryModeAvailable = strconv.IntSize == 64

// Open opens (creating if needed) the store in dir, or an in-memory store.
// A directory in use by another open store gives an error wrapping ErrLocked.
func Open(dir string, opt Options) (*Badger, error) {
	if !opt.InMemory && dir == "" {
		return nil, errors.New("storage: Open: empty directory (use Options.InMemory for a store in memory)")
	}
	if opt.InMemory && !MemoryModeAvailable {
		return nil, ErrNoMemoryMode
	}
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	bopt := badgerOptions(dir, opt, log)
	db, err := openDB(dir, bopt)
	if err != nil {
		return nil, err
	}
	s := newBadger(db, dir, opt, log, bopt)
	if err := s.checkVersion(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if !opt.InMemory && opt.GCInterval >= 0 {
		every := opt.GCInterval
		if every == 0 {
			every = DefaultGCInterval
		}
		s.gcDone.Add(1)
		go s.gcLoop(every)
	}
	log.Debug("storage open", "dir", dir, "in_memory", opt.InMemory, "low_memory", opt.LowMemory,
		"sync_writes", opt.SyncWrites, "memtable", bopt.MemTableSize, "value_threshold", bopt.ValueThreshold)
	return s, nil
}

// OpenReadOnly opens the store in dir for reading, e.g. for the status
// command of a stopped daemon. While a daemon holds the store it fails with
// an error wrapping ErrLocked; when dir holds no store, with one wrapping
// fs.ErrNotExist. Write methods return ErrReadOnly.
//
// A store left by a crash (kill -9, power loss) has write-ahead logs that
// must be replayed and truncated, which Badger refuses to do read-only. Then
// OpenReadOnly opens it read-write to recover it, exactly as the daemon's
// next start would; the store's contents are unchanged. Several OpenReadOnly
// may share a cleanly closed store.
func OpenReadOnly(dir string) (*Badger, error) {
	if _, err := os.Stat(filepath.Join(dir, badger.ManifestFilename)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("storage: no store in %s: %w", dir, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("storage: %w", err)
	}
	log := slog.Default()
	opt := Options{LowMemory: true, GCInterval: -1}
	bopt := badgerOptions(dir, opt, log)
	db, err := openDB(dir, bopt.WithReadOnly(true))
	if err != nil && badgerErrIs(err, badger.ErrTruncateNeeded) {
		log.Debug("storage: replaying the logs of a store that was not closed", "dir", dir)
		db, err = openDB(dir, bopt)
	}
	if err != nil {
		return nil, err
	}
	s := newBadger(db, dir, opt, log, bopt)
	s.readOnly = true
	if err := s.checkVersion(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

func newBadger(db *badger.DB, dir string, opt Options, log *slog.Logger, bopt badger.Options) *Badger {
	s := &Badger{
		db:       db,
		dir:      dir,
		sync:     !opt.InMemory && !opt.SyncWrites,
		maxValue: bopt.ValueLogFileSize,
		log:      log,
		gcHook:   opt.gcHook,
		stop:     make(chan struct{}),
	}
	if opt.InMemory {
		s.dir = ""
		s.maxValue = bopt.ValueThreshold
	}
	return s
}

// badgerOptions maps Options onto Badger's.
func badgerOptions(dir string, opt Options, log *slog.Logger) badger.Options {
	if opt.InMemory {
		dir = ""
	}
	b := badger.DefaultOptions(dir).
		WithLogger(slogBadger{log}).
		WithSyncWrites(opt.SyncWrites).
		// Writers are serialized (Badger.wmu), so transactions never
		// conflict; tracking their reads would only cost memory.
		WithDetectConflicts(false).
		WithValueThreshold(64 << 10) // see Options
	tiny := opt.Tiny || strconv.IntSize == 32
	if opt.LowMemory || tiny {
		// On 32-bit platforms (armv7) the default profile cannot run at
		// all: its 1 GiB value-log files and five 64 MiB memtables are
		// mmapped or allocated in a 3 GiB address space, and Open fails
		// with "cannot allocate memory". The edge profile fits.
		b = b.WithMemTableSize(16 << 20).
			WithNumMemtables(2).
			WithNumLevelZeroTables(2).
			WithNumLevelZeroTablesStall(8).
			WithValueThreshold(1 << 10). // must stay <= 15% of MemTableSize
			WithValueLogFileSize(64 << 20).
			WithBlockCacheSize(8 << 20). // must be > 0 while compression is on
			WithIndexCacheSize(8 << 20).
			WithNumCompactors(2). // 1 is rejected
			WithMetricsEnabled(false)
	}
	if tiny {
		// A board's trainer needs little, and a 32-bit process has 2-3 GiB
		// of address space for the heap and every mmapped log: quarter the
		// low-memory profile's memtables and caches, and its value-log
		// files. Values above 1 KiB still go to the value log, so the 15%
		// batch limit (600 KiB) never binds.
		b = b.WithMemTableSize(4 << 20).
			WithValueLogFileSize(16 << 20).
			WithBlockCacheSize(2 << 20).
			WithIndexCacheSize(2 << 20)
	}
	if opt.InMemory {
		// In memory every value lives in the LSM tree, and Badger refuses
		// values above ValueThreshold; raise it to its maximum, 1 MiB, which
		// is above chunkSize (and below 15% of both memtable sizes).
		return b.WithInMemory(true).WithValueThreshold(1 << 20)
	}
	if mt := replayMemTableSize(dir, b.MemTableSize); mt != b.MemTableSize {
		log.Debug("storage: the store's write-ahead logs come from a larger memory profile; "+
			"raising the memtable size for this run to replay them",
			"dir", dir, "memtable", mt, "profile_memtable", b.MemTableSize)
		b = b.WithMemTableSize(mt)
	}
	return b
}

// replayMemTableSize returns the memtable size needed to open dir. Badger
// replays the write-ahead log (*.mem) of every memtable that was not flushed
// when the last run ended (a crash) into a memtable of the current size, and
// exits the process if it does not fit. That happens when a store written
// with the default profile crashes (an OOM kill, say) and is reopened with
// LowMemory. A log file is created at twice its memtable's size, so a file
// larger than 2*size was written with a larger memtable: use that one for
// this run (the next flush empties the logs).
func replayMemTableSize(dir string, size int64) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return size // a new store, or Badger reports the problem
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".mem") {
			continue
		}
		if info, err := e.Info(); err == nil && info.Size() > 2*size {
			size = info.Size() / 2
		}
	}
	return size
}

// openDB is badger.Open with its directory-lock failure mapped to ErrLocked.
func openDB(dir string, bopt badger.Options) (*badger.DB, error) {
	db, err := badger.Open(bopt)
	switch {
	case err == nil:
		return db, nil
	case strings.Contains(err.Error(), "Another process is using this Badger database"):
		// Badger formats the flock error into text (y.Wrapf drops the
		// chain outside its debug mode), so the message is all there is.
		return nil, fmt.Errorf("storage: open %s: %w (%v)", dir, ErrLocked, err)
	default:
		return nil, fmt.Errorf("storage: open %s: %w", dir, err)
	}
}

// badgerErrIs reports whether err is, or was formatted from, target: Badger
// wraps many errors with fmt's %+v, which keeps only the text.
func badgerErrIs(err, target error) bool {
	return errors.Is(err, target) || strings.Contains(err.Error(), target.Error())
}

// checkVersion writes the format version into a new store and refuses a
// store of another format.
func (s *Badger) checkVersion() error {
	k := key(pVersion)
	var have []byte
	err := s.db.View(func(txn *badger.Txn) (err error) {
		have, err = get(txn, k)
		return err
	})
	switch {
	case errors.Is(err, ErrNotFound) && s.readOnly:
		return nil
	case errors.Is(err, ErrNotFound):
		return s.db.Update(func(txn *badger.Txn) error { return txn.Set(k, []byte(formatVersion)) })
	case err != nil:
		return err
	case string(have) != formatVersion:
		return fmt.Errorf("storage: format version %q, this build reads %q", have, formatVersion)
	}
	return nil
}

// ---- plumbing ---------------------------------------------------------------

// view runs fn in a read transaction.
func (s *Badger) view(fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.View(fn)
}

// write runs fn as the only writer and makes what it wrote durable. fn uses
// s.db directly (never view or write: holding mu twice deadlocks against a
// waiting Close).
func (s *Badger) write(fn func() error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.readOnly {
		return ErrReadOnly
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := fn(); err != nil {
		return err
	}
	if s.sync {
		if err := s.db.Sync(); err != nil {
			return fmt.Errorf("storage: sync: %w", err)
		}
	}
	return nil
}

// update runs fn in one read-write transaction; a transaction too large for
// Badger fails loudly with what was being written.
func (s *Badger) update(what string, fn func(txn *badger.Txn) error) error {
	err := s.db.Update(fn)
	if errors.Is(err, badger.ErrTxnTooBig) {
		return fmt.Errorf("storage: %s does not fit in one Badger transaction "+
			"(at most %d bytes and %d entries with these options): %w",
			what, s.db.MaxBatchSize(), s.db.MaxBatchCount(), err)
	}
	return err
}

// set stores a record under k, refusing one Badger would refuse (Badger
// panics on some of them).
func (s *Badger) set(txn *badger.Txn, k, v []byte) error {
	if int64(len(v)) > s.maxValue {
		return fmt.Errorf("%w: %s is %d bytes, at most %d", ErrTooLarge, keyName(k), len(v), s.maxValue)
	}
	return txn.Set(k, v)
}

func (s *Badger) setRecord(txn *badger.Txn, k []byte, rec any) error {
	v, err := encode(rec)
	if err != nil {
		return err
	}
	return s.set(txn, k, v)
}

// get returns the value under k, or ErrNotFound.
func get(txn *badger.Txn, k []byte) ([]byte, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, keyName(k))
	}
	if err != nil {
		return nil, fmt.Errorf("storage: reading %s: %w", keyName(k), err)
	}
	return item.ValueCopy(nil)
}

func has(txn *badger.Txn, k []byte) (bool, error) {
	_, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// keys returns the keys under prefix, in order.
func keys(txn *badger.Txn, prefix []byte) [][]byte {
	opt := badger.DefaultIteratorOptions
	opt.PrefetchValues = false
	opt.Prefix = prefix
	it := txn.NewIterator(opt)
	defer it.Close()
	var ks [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		ks = append(ks, it.Item().KeyCopy(nil))
	}
	return ks
}

// putBlob writes data as chunks under prefix (see the key layout). The
// chunks are blind writes of at most chunkSize, so a WriteBatch packs them
// into as few transactions as Badger allows.
func (s *Badger) putBlob(prefix, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for i := 0; i*chunkSize < len(data); i++ {
		chunk := data[i*chunkSize : min((i+1)*chunkSize, len(data))]
		if err := wb.Set(chunkKey(prefix, i), chunk); err != nil {
			return fmt.Errorf("storage: writing %s: %w", keyName(prefix), err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("storage: writing %s: %w", keyName(prefix), err)
	}
	return nil
}

// getBlob reassembles the blob under prefix and checks it against hash (the
// SHA-256 that is also in prefix); a gap or a wrong hash is ErrCorrupt naming
// the key. sizeHint presizes the buffer.
func getBlob(txn *badger.Txn, prefix, hash []byte, sizeHint int) ([]byte, error) {
	opt := badger.DefaultIteratorOptions
	opt.Prefix = prefix
	opt.PrefetchSize = 4 // chunks are large
	it := txn.NewIterator(opt)
	defer it.Close()
	data := make([]byte, 0, sizeHint)
	i := 0
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if want := chunkKey(prefix, i); !bytes.Equal(item.Key(), want) {
			return nil, corrupt(item.KeyCopy(nil), "chunk %d expected here", i)
		}
		if err := item.Value(func(v []byte) error {
			data = append(data, v...)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("storage: reading %s: %w", keyName(item.Key()), err)
		}
		i++
	}
	if got := sha256.Sum256(data); !bytes.Equal(got[:], hash) {
		return nil, corrupt(prefix, "%d bytes in %d chunks do not hash to the key", len(data), i)
	}
	return data, nil
}

func sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// ---- genesis ----------------------------------------------------------------

// PutGenesis records the federation; see Store.
func (s *Badger) PutGenesis(id string, file []byte) error {
	if id == "" {
		return errors.New("storage: PutGenesis: empty federation id")
	}
	return s.write(func() error {
		var have genesisRecord
		err := s.db.View(func(txn *badger.Txn) (err error) {
			have, err = readGenesisRecord(txn)
			return err
		})
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		case have.ID == id:
			return nil
		default:
			return fmt.Errorf("%w: the store belongs to federation %s, not %s", ErrConflict, have.ID, id)
		}
		h := sum(file)
		if err := s.putBlob(genesisChunks(h), file); err != nil {
			return err
		}
		return s.update("genesis", func(txn *badger.Txn) error {
			return s.setRecord(txn, key(pGenesis), genesisRecord{ID: id, FileHash: h})
		})
	})
}

func readGenesisRecord(txn *badger.Txn) (genesisRecord, error) {
	k := key(pGenesis)
	v, err := get(txn, k)
	if err != nil {
		return genesisRecord{}, err
	}
	return decodeGenesis(k, v)
}

// Genesis returns the recorded federation; see Store.
func (s *Badger) Genesis() (id string, file []byte, err error) {
	err = s.view(func(txn *badger.Txn) error {
		g, err := readGenesisRecord(txn)
		if err != nil {
			return err
		}
		id = g.ID
		file, err = getBlob(txn, genesisChunks(g.FileHash), g.FileHash, 0)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	return id, file, nil
}

// ---- models -----------------------------------------------------------------

// PutModel stores a model under its SHA-256; see Store.
func (s *Badger) PutModel(model []byte) ([]byte, error) {
	h := sum(model)
	if err := s.write(func() error { return s.putModel(h, model) }); err != nil {
		return nil, err
	}
	return h, nil
}

// putModel writes the chunks, then the marker that makes the model visible;
// a model already stored is not written again.
func (s *Badger) putModel(hash, model []byte) error {
	var stored bool
	if err := s.db.View(func(txn *badger.Txn) (err error) {
		stored, err = has(txn, modelKey(hash))
		return err
	}); err != nil || stored {
		return err
	}
	if err := s.putBlob(modelChunks(hash), model); err != nil {
		return err
	}
	return s.update("model marker", func(txn *badger.Txn) error {
		return s.set(txn, modelKey(hash), be64(uint64(len(model))))
	})
}

// Model returns the model with this hash; see Store.
func (s *Badger) Model(hash []byte) ([]byte, error) {
	if len(hash) != hashLen {
		return nil, fmt.Errorf("%w: model hash of %d bytes", ErrNotFound, len(hash))
	}
	var model []byte
	err := s.view(func(txn *badger.Txn) error {
		k := modelKey(hash)
		v, err := get(txn, k)
		if err != nil {
			return err
		}
		n, err := decodeU64(k, v)
		if err != nil {
			return err
		}
		// The marker only presizes the buffer (bounded: it may be corrupt).
		model, err = getBlob(txn, modelChunks(hash), hash, int(min(n, 64<<20)))
		if err == nil && uint64(len(model)) != n {
			err = corrupt(k, "%d bytes stored, marker says %d", len(model), n)
		}
		return err
	})
	return model, err
}

// ---- rounds -----------------------------------------------------------------

// readOpen returns the open round, ok false when none.
func readOpen(txn *badger.Txn) (OpenRound, bool, error) {
	k := key(pOpen)
	v, err := get(txn, k)
	if errors.Is(err, ErrNotFound) {
		return OpenRound{}, false, nil
	}
	if err != nil {
		return OpenRound{}, false, err
	}
	r, err := decodeOpenRound(k, v)
	return r, err == nil, err
}

// readCommitted returns the last committed round (0 before the first).
func readCommitted(txn *badger.Txn) (uint64, error) {
	k := key(pCommitted)
	v, err := get(txn, k)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return decodeU64(k, v)
}

// Open records the open round; see Store. It is allowed when no round is
// open and r is the round after the last committed one.
func (s *Badger) Open(r OpenRound) error {
	return s.write(func() error {
		return s.update("open round", func(txn *badger.Txn) error {
			open, ok, err := readOpen(txn)
			if err != nil {
				return err
			}
			if ok {
				return fmt.Errorf("%w: round %d is open; cannot open round %d", ErrConflict, open.Round, r.Round)
			}
			last, err := readCommitted(txn)
			if err != nil {
				return err
			}
			if r.Round != last+1 {
				return fmt.Errorf("%w: cannot open round %d: last committed round is %d", ErrConflict, r.Round, last)
			}
			return s.setRecord(txn, key(pOpen), r)
		})
	})
}

// OpenRound returns the open round; see Store.
func (s *Badger) OpenRound() (r OpenRound, ok bool, err error) {
	err = s.view(func(txn *badger.Txn) error {
		r, ok, err = readOpen(txn)
		return err
	})
	return r, ok, err
}

// AddUpdate records an accepted update; see Store.
//
// The payload is written first, under its content hash, then the record in
// its own transaction: a payload can be larger than one Badger transaction
// may be, and a payload without its record is never read (Commit deletes it
// with its round).
func (s *Badger) AddUpdate(u Update) error {
	if !bytes.Equal(sum(u.Payload), u.Hash) {
		return fmt.Errorf("%w: update %d of round %d: hash is not the payload's SHA-256", ErrConflict, u.Seq, u.Round)
	}
	if u.Seq < 0 || int64(u.Seq) > 1<<32-1 {
		return fmt.Errorf("%w: update seq %d", ErrConflict, u.Seq)
	}
	return s.write(func() error {
		if err := s.db.View(func(txn *badger.Txn) error { return checkNextUpdate(txn, u) }); err != nil {
			return err
		}
		if err := s.putBlob(payloadChunks(u.Round, u.Hash), u.Payload); err != nil {
			return err
		}
		rec := u
		rec.Payload = nil
		return s.update("update record", func(txn *badger.Txn) error {
			return s.setRecord(txn, updateKey(u.Round, u.Seq), rec)
		})
	})
}

// checkNextUpdate: u must belong to the open round and be the next in Seq
// order. Seqs are contiguous (this check is the only way in), so "next"
// means seq-1 is stored and seq is not.
func checkNextUpdate(txn *badger.Txn, u Update) error {
	open, ok, err := readOpen(txn)
	if err != nil {
		return err
	}
	if !ok || open.Round != u.Round {
		return fmt.Errorf("%w: update of round %d, but %s", ErrConflict, u.Round, openDesc(open, ok))
	}
	taken, err := has(txn, updateKey(u.Round, u.Seq))
	if err != nil {
		return err
	}
	prev := u.Seq == 0
	if !prev {
		if prev, err = has(txn, updateKey(u.Round, u.Seq-1)); err != nil {
			return err
		}
	}
	if taken || !prev {
		n := len(keys(txn, updatesKey(u.Round)))
		return fmt.Errorf("%w: update seq %d of round %d, but %d updates are stored", ErrConflict, u.Seq, u.Round, n)
	}
	return nil
}

func openDesc(open OpenRound, ok bool) string {
	if !ok {
		return "no round is open"
	}
	return fmt.Sprintf("round %d is open", open.Round)
}

// Updates returns the updates of round in Seq order, with their payloads;
// see Store. Each payload is checked against its hash.
func (s *Badger) Updates(round uint64) ([]Update, error) {
	var us []Update
	err := s.view(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.Prefix = updatesKey(round)
		it := txn.NewIterator(opt)
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.KeyCopy(nil)
			if want := updateKey(round, len(us)); !bytes.Equal(k, want) {
				it.Close()
				return corrupt(k, "update %d expected here", len(us))
			}
			var u Update
			err := item.Value(func(v []byte) (err error) {
				u, err = decodeUpdate(k, v, round, len(us))
				return err
			})
			if err != nil {
				it.Close()
				return err
			}
			us = append(us, u)
		}
		it.Close()
		for i := range us {
			p, err := getBlob(txn, payloadChunks(round, us[i].Hash), us[i].Hash, 0)
			if err != nil {
				return err
			}
			us[i].Payload = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return us, nil
}

// Commit ends the open round; see Store.
//
// The new model is written first, in its own transactions (it can exceed
// what one transaction may hold; it is content-addressed, so writing it is
// idempotent and harmless if the commit then fails). Everything else is one
// transaction: the result, the committed-round counter, the next open round
// and the deletion of the closed round's updates and payloads. A crash
// leaves all of it or none of it.
func (s *Badger) Commit(c Commit) error {
	round := c.Result.Round
	return s.write(func() error {
		if err := s.db.View(func(txn *badger.Txn) error { return checkCommit(txn, c) }); err != nil {
			return err
		}
		if c.Model != nil {
			if err := s.putModel(c.Result.ModelHash, c.Model); err != nil {
				return err
			}
		}
		return s.update(fmt.Sprintf("commit of round %d", round), func(txn *badger.Txn) error {
			if err := s.setRecord(txn, resultKey(round), c.Result); err != nil {
				return err
			}
			if err := s.set(txn, key(pCommitted), be64(round)); err != nil {
				return err
			}
			if c.Next != nil {
				if err := s.setRecord(txn, key(pOpen), *c.Next); err != nil {
					return err
				}
			} else if err := txn.Delete(key(pOpen)); err != nil {
				return err
			}
			for _, prefix := range [][]byte{updatesKey(round), payloadsKey(round)} {
				for _, k := range keys(txn, prefix) {
					if err := txn.Delete(k); err != nil {
						return err
					}
				}
			}
			return nil
		})
	})
}

func checkCommit(txn *badger.Txn, c Commit) error {
	r := c.Result
	open, ok, err := readOpen(txn)
	if err != nil {
		return err
	}
	if !ok || open.Round != r.Round {
		return fmt.Errorf("%w: commit of round %d, but %s", ErrConflict, r.Round, openDesc(open, ok))
	}
	if c.Next != nil && c.Next.Round != r.Round+1 {
		return fmt.Errorf("%w: commit of round %d opens round %d", ErrConflict, r.Round, c.Next.Round)
	}
	if len(r.ModelHash) != hashLen {
		return fmt.Errorf("%w: result of round %d has a model hash of %d bytes", ErrConflict, r.Round, len(r.ModelHash))
	}
	if c.Model != nil {
		if !bytes.Equal(sum(c.Model), r.ModelHash) {
			return fmt.Errorf("%w: result of round %d: model hash is not the model's SHA-256", ErrConflict, r.Round)
		}
		return nil
	}
	stored, err := has(txn, modelKey(r.ModelHash))
	if err != nil {
		return err
	}
	if !stored {
		return fmt.Errorf("%w: result of round %d names model %x, which is not stored (and the commit carries no model)",
			ErrNotFound, r.Round, r.ModelHash)
	}
	return nil
}

// ---- results ----------------------------------------------------------------

func readResult(txn *badger.Txn, round uint64) (Result, error) {
	k := resultKey(round)
	v, err := get(txn, k)
	if err != nil {
		return Result{}, err
	}
	return decodeResult(k, v, round)
}

// PutResult records a closed round's result; see Store. A result already
// stored for the round is replaced if it names the same model (keeping its
// evaluation when r has none); a result naming another model is ErrConflict.
func (s *Badger) PutResult(r Result) error {
	return s.write(func() error {
		return s.update("result", func(txn *badger.Txn) error {
			have, err := readResult(txn, r.Round)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			case !bytes.Equal(have.ModelHash, r.ModelHash):
				return fmt.Errorf("%w: round %d has a result with model %x, not %x",
					ErrConflict, r.Round, have.ModelHash, r.ModelHash)
			case r.Eval == nil:
				r.Eval = have.Eval
			}
			return s.setRecord(txn, resultKey(r.Round), r)
		})
	})
}

// Result returns the result of a round; see Store.
func (s *Badger) Result(round uint64) (r Result, err error) {
	err = s.view(func(txn *badger.Txn) error {
		r, err = readResult(txn, round)
		return err
	})
	return r, err
}

// LastResult returns the result of the highest round; see Store.
func (s *Badger) LastResult() (r Result, err error) {
	err = s.view(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.Prefix = key(pResult)
		opt.Reverse = true
		it := txn.NewIterator(opt)
		defer it.Close()
		it.Seek(key(pResult, be64(1<<64-1)))
		if !it.Valid() {
			return fmt.Errorf("%w: no result", ErrNotFound)
		}
		item := it.Item()
		k := item.KeyCopy(nil)
		if len(k) != 9 {
			return corrupt(k, "malformed result key")
		}
		return item.Value(func(v []byte) (err error) {
			r, err = decodeResult(k, v, binary.BigEndian.Uint64(k[1:]))
			return err
		})
	})
	return r, err
}

// PutEval attaches an evaluation to a stored result; see Store.
func (s *Badger) PutEval(round uint64, e Eval) error {
	return s.write(func() error {
		return s.update("eval", func(txn *badger.Txn) error {
			r, err := readResult(txn, round)
			if err != nil {
				return err
			}
			r.Eval = &e
			return s.setRecord(txn, resultKey(round), r)
		})
	})
}

// ---- trainer ----------------------------------------------------------------

// PutTrainerRound replaces the trainer's round state; see Store. The pending
// update's payload, if any, is stored with it (and checked against its hash:
// a mismatch is ErrConflict); the previous one is deleted.
// SetMidWriteHook sets a function that a write made of several
// transactions calls between them: after its data chunks are durable and
// before the record that refers to them is written, with the record's name
// ("trainer-round"). Crash tests kill the process there, in the middle of a
// write; nil removes it. Set it before the store is used concurrently.
func (s *Badger) SetMidWriteHook(f func(record string)) { s.midWrite = f }

func (s *Badger) PutTrainerRound(t TrainerRound) error {
	var payload, hash []byte
	if t.Pending != nil && t.Pending.Payload != nil {
		payload, hash = t.Pending.Payload, t.Pending.Hash
		if !bytes.Equal(sum(payload), hash) {
			return fmt.Errorf("%w: pending update: hash is not the payload's SHA-256", ErrConflict)
		}
	}
	return s.write(func() error {
		if err := s.putBlob(trainerChunks(hash), payload); err != nil {
			return err
		}
		if s.midWrite != nil && payload != nil {
			s.midWrite("trainer-round")
		}
		rec := trainerRecord{TrainerRound: t, PendingPayload: hash != nil}
		if t.Pending != nil {
			p := *t.Pending
			p.Payload = nil
			rec.Pending = &p
		}
		return s.update("trainer round", func(txn *badger.Txn) error {
			if err := s.setRecord(txn, key(pTrainer), rec); err != nil {
				return err
			}
			keep := trainerChunks(hash)
			for _, k := range keys(txn, key(pTrainerChunk)) {
				if hash == nil || !bytes.HasPrefix(k, keep) {
					if err := txn.Delete(k); err != nil {
						return err
					}
				}
			}
			return nil
		})
	})
}

// TrainerRound returns the trainer's round state; see Store.
func (s *Badger) TrainerRound() (t TrainerRound, ok bool, err error) {
	err = s.view(func(txn *badger.Txn) error {
		k := key(pTrainer)
		v, err := get(txn, k)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		rec, err := decodeTrainer(k, v)
		if err != nil {
			return err
		}
		t, ok = rec.TrainerRound, true
		if rec.PendingPayload {
			h := rec.Pending.Hash
			rec.Pending.Payload, err = getBlob(txn, trainerChunks(h), h, 0)
		}
		return err
	})
	if err != nil {
		return TrainerRound{}, false, err
	}
	return t, ok, nil
}

// ---- life cycle ---------------------------------------------------------------

// Size returns the bytes the store's files occupy on disk (0 in memory).
// It walks the directory rather than asking Badger, whose figure is
// refreshed once a minute (and not at all with metrics off), and it counts
// allocated blocks, since Badger's log files are sparse files created at
// twice their nominal size.
func (s *Badger) Size() int64 {
	if s.dir == "" {
		return 0
	}
	var n int64
	_ = filepath.WalkDir(s.dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			n += diskUsage(info)
		}
		return nil
	})
	return n
}

// Close stops the garbage collector and closes the database. It waits for
// the calls in progress; later calls return ErrClosed, and Close again
// returns nil.
func (s *Badger) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	s.gcDone.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("storage: close: %w", err)
	}
	return nil
}

// gcLoop runs the value-log garbage collector every period until Close.
func (s *Badger) gcLoop(every time.Duration) {
	defer s.gcDone.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.collectGarbage()
			if s.gcHook != nil {
				s.gcHook()
			}
		}
	}
}

// collectGarbage rewrites value-log files until none is worth it: Badger
// rewrites at most one file per call, and Commit's deletions free whole
// rounds of payloads at once.
func (s *Badger) collectGarbage() {
	for {
		s.mu.RLock()
		if s.closed {
			s.mu.RUnlock()
			return
		}
		err := s.db.RunValueLogGC(0.5)
		s.mu.RUnlock()
		switch {
		case err == nil:
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
		default:
			s.log.Warn("storage: value-log garbage collection", "dir", s.dir, "err", err)
		}
		return
	}
}

// slogBadger adapts slog to badger.Logger. Badger logs at info level what an
// operator rarely needs (compactions, replays), so that goes to Debug.
type slogBadger struct{ l *slog.Logger }

func (b slogBadger) logf(level slog.Level, format string, args []any) {
	if !b.l.Enabled(context.Background(), level) {
		return
	}
	b.l.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}

func (b slogBadger) Errorf(f string, a ...any)   { b.logf(slog.LevelError, f, a) }
func (b slogBadger) Warningf(f string, a ...any) { b.logf(slog.LevelWarn, f, a) }
func (b slogBadger) Infof(f string, a ...any)    { b.logf(slog.LevelDebug, f, a) }
func (b slogBadger) Debugf(f string, a ...any)   { b.logf(slog.LevelDebug-4, f, a) }
