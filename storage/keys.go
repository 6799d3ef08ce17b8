package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Key layout of the Badger store.
//
// Every key starts with one prefix byte, so each kind of record is one
// contiguous key range that a prefix scan lists. Round and sequence numbers
// are big-endian, so byte order is numeric order: Updates is a forward scan in
// Seq order, LastResult a single reverse seek.
//
//	0x00                            format version ("1")
//	0x01                            genesis: JSON {id, file_hash}
//	0x02 hash[32] idx[4]            genesis file, chunks
//	0x03 hash[32]                   model marker: the model's length, 8 bytes
//	0x04 hash[32] idx[4]            model, chunks
//	0x05 round[8] seq[4]            update record: JSON Update (without payload)
//	0x06 round[8] hash[32] idx[4]   update payload, chunks
//	0x07                            open round: JSON OpenRound
//	0x08                            last committed round: 8 bytes
//	0x09 round[8]                   result: JSON Result
//	0x0a                            trainer round: JSON TrainerRound (+ flag)
//	0x0b hash[32] idx[4]            trainer's pending payload, chunks
//
// Records are JSON (the struct tags are the format); byte strings of any size
// (models, payloads, the genesis file) are stored raw, cut in chunks of
// chunkSize under a key that holds their SHA-256. Chunking is what lets an
// in-memory store (which refuses values above 1 MiB) and the edge profile
// (whose value log refuses values above its 64 MiB file size) hold any model.
// Because the hash is in the key, writing a blob is idempotent: a write torn
// by a crash is either completed by the next write of the same bytes or never
// referenced, since a blob is referenced (by a model marker or a record) only
// after all its chunks are written. Readers re-hash what they reassemble.
//
// Payload chunks carry their round so that Commit deletes a closed round's
// payloads with one range scan, orphans included (the payload of an AddUpdate
// whose record was never written). The trainer's pending payload has its own
// range, which no commit touches.
const (
	pVersion      byte = 0x00
	pGenesis      byte = 0x01
	pGenesisChunk byte = 0x02
	pModel        byte = 0x03
	pModelChunk   byte = 0x04
	pUpdate       byte = 0x05
	pPayloadChunk byte = 0x06
	pOpen         byte = 0x07
	pCommitted    byte = 0x08
	pResult       byte = 0x09
	pTrainer      byte = 0x0a
	pTrainerChunk byte = 0x0b
)

// formatVersion is stored under pVersion; a store written in another format
// is refused at Open rather than misread.
const formatVersion = "1"

// chunkSize bounds every raw value. Half of badger's 1 MiB in-memory limit,
// so that a few chunks share one transaction there.
const chunkSize = 512 << 10

const hashLen = sha256.Size

func key(prefix byte, parts ...[]byte) []byte {
	k := []byte{prefix}
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func modelKey(hash []byte) []byte     { return key(pModel, hash) }
func resultKey(round uint64) []byte   { return key(pResult, be64(round)) }
func updatesKey(round uint64) []byte  { return key(pUpdate, be64(round)) }
func payloadsKey(round uint64) []byte { return key(pPayloadChunk, be64(round)) }
func chunkKey(prefix []byte, i int) []byte {
	return append(bytes.Clone(prefix), be32(uint32(i))...)
}

func updateKey(round uint64, seq int) []byte {
	return key(pUpdate, be64(round), be32(uint32(seq)))
}

// Chunk prefixes: a blob's chunks are chunkKey(prefix, 0..n-1).
func genesisChunks(hash []byte) []byte { return key(pGenesisChunk, hash) }
func modelChunks(hash []byte) []byte   { return key(pModelChunk, hash) }
func trainerChunks(hash []byte) []byte { return key(pTrainerChunk, hash) }
func payloadChunks(round uint64, hash []byte) []byte {
	return key(pPayloadChunk, be64(round), hash)
}

// keyLayouts describes each key kind for keyName: its name, then its fields
// in order (r: round, 8 bytes; h: SHA-256; s: seq, 4 bytes; c: chunk index,
// 4 bytes). It mirrors the layout above.
var keyLayouts = map[byte]struct{ name, fields string }{
	pVersion:      {"version", ""},
	pGenesis:      {"genesis", ""},
	pGenesisChunk: {"genesis-file", "hc"},
	pModel:        {"model", "h"},
	pModelChunk:   {"model", "hc"},
	pUpdate:       {"update", "rs"},
	pPayloadChunk: {"payload", "rhc"},
	pOpen:         {"open-round", ""},
	pCommitted:    {"committed-round", ""},
	pResult:       {"result", "r"},
	pTrainer:      {"trainer-round", ""},
	pTrainerChunk: {"trainer-payload", "hc"},
}

// keyName renders a key (or a key prefix) for error messages:
// "update/3/0", "model/1f2e…/chunk 4"; a key that fits no layout is hex.
func keyName(k []byte) string {
	if len(k) == 0 {
		return "(empty key)"
	}
	l, ok := keyLayouts[k[0]]
	if !ok {
		return fmt.Sprintf("key %x", k)
	}
	name, rest := l.name, k[1:]
	for _, f := range l.fields {
		if len(rest) == 0 {
			break // a prefix
		}
		n := 4
		switch f {
		case 'r':
			n = 8
		case 'h':
			n = hashLen
		}
		if len(rest) < n {
			return fmt.Sprintf("key %x", k)
		}
		switch f {
		case 'r':
			name += fmt.Sprintf("/%d", binary.BigEndian.Uint64(rest))
		case 'h':
			name += "/" + hex.EncodeToString(rest[:n])
		case 's':
			name += fmt.Sprintf("/%d", binary.BigEndian.Uint32(rest))
		case 'c':
			name += fmt.Sprintf("/chunk %d", binary.BigEndian.Uint32(rest))
		}
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return fmt.Sprintf("key %x", k)
	}
	return name
}

// corrupt is the error of every record that does not decode: it names the key
// so that an operator can find (and drop) the bad record.
func corrupt(k []byte, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, keyName(k), fmt.Sprintf(format, args...))
}

// genesisRecord is what the genesis key holds; the file is a blob.
type genesisRecord struct {
	ID       string `json:"id"`
	FileHash []byte `json:"file_hash"`
}

// trainerRecord is a TrainerRound plus whether its pending update's payload
// is stored (Payload is not part of the JSON of Update).
type trainerRecord struct {
	TrainerRound
	PendingPayload bool `json:"pending_payload,omitempty"`
}

func decodeJSON(k, v []byte, rec any) error {
	if err := json.Unmarshal(v, rec); err != nil {
		return corrupt(k, "%v", err)
	}
	return nil
}

func decodeU64(k, v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, corrupt(k, "%d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func checkHash(k []byte, field string, h []byte) error {
	if len(h) != hashLen {
		return corrupt(k, "%s is %d bytes, want %d", field, len(h), hashLen)
	}
	return nil
}

func decodeGenesis(k, v []byte) (genesisRecord, error) {
	var g genesisRecord
	if err := decodeJSON(k, v, &g); err != nil {
		return g, err
	}
	if g.ID == "" {
		return g, corrupt(k, "empty federation id")
	}
	return g, checkHash(k, "file_hash", g.FileHash)
}

// decodeUpdate also checks the record against its key, so that a record
// copied under the wrong key is not served as another round's update.
func decodeUpdate(k, v []byte, round uint64, seq int) (Update, error) {
	var u Update
	if err := decodeJSON(k, v, &u); err != nil {
		return u, err
	}
	if u.Round != round || u.Seq != seq {
		return u, corrupt(k, "record says round %d seq %d", u.Round, u.Seq)
	}
	return u, checkHash(k, "hash", u.Hash)
}

func decodeOpenRound(k, v []byte) (OpenRound, error) {
	var r OpenRound
	if err := decodeJSON(k, v, &r); err != nil {
		return r, err
	}
	if r.Round == 0 {
		return r, corrupt(k, "round 0")
	}
	return r, nil
}

func decodeResult(k, v []byte, round uint64) (Result, error) {
	var r Result
	if err := decodeJSON(k, v, &r); err != nil {
		return r, err
	}
	if r.Round != round {
		return r, corrupt(k, "record says round %d", r.Round)
	}
	return r, nil
}

func decodeTrainer(k, v []byte) (trainerRecord, error) {
	var t trainerRecord
	if err := decodeJSON(k, v, &t); err != nil {
		return t, err
	}
	if t.PendingPayload {
		if t.Pending == nil {
			return t, corrupt(k, "payload flag without a pending update")
		}
		return t, checkHash(k, "pending.hash", t.Pending.Hash)
	}
	return t, nil
}

// encode marshals a record. Only a record type that json cannot marshal
// fails, which no record of this package is (Eval writes NaN and infinities
// as strings), but the error is returned rather than assumed away.
func encode(rec any) ([]byte, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("storage: encoding %T: %w", rec, err)
	}
	return b, nil
}

// jsonFloat is a float64 whose JSON form also covers NaN and ±Inf, which
// encoding/json refuses: a diverged model's loss is NaN, and refusing to
// store its evaluation would hide exactly the round an operator looks for.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	x := float64(f)
	switch {
	case math.IsNaN(x):
		return []byte(`"NaN"`), nil
	case math.IsInf(x, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(x, -1):
		return []byte(`"-Inf"`), nil
	}
	return json.Marshal(x)
}

func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case "NaN", "+Inf", "-Inf":
			x, _ := strconv.ParseFloat(s, 64)
			*f = jsonFloat(x)
			return nil
		}
		return fmt.Errorf("not a number: %q", s)
	}
	return json.Unmarshal(b, (*float64)(f))
}

// evalJSON is Eval with NaN-safe floats, and the same field names.
type evalJSON struct {
	Accuracy jsonFloat `json:"accuracy"`
	Loss     jsonFloat `json:"loss"`
	Samples  int       `json:"samples"`
}

// MarshalJSON writes NaN and infinite scores as the strings "NaN", "+Inf"
// and "-Inf" (plain numbers otherwise).
func (e Eval) MarshalJSON() ([]byte, error) {
	return json.Marshal(evalJSON{jsonFloat(e.Accuracy), jsonFloat(e.Loss), e.Samples})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (e *Eval) UnmarshalJSON(b []byte) error {
	var j evalJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*e = Eval{Accuracy: float64(j.Accuracy), Loss: float64(j.Loss), Samples: j.Samples}
	return nil
}
