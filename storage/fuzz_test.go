package storage

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to every record decoder (and keys to
// keyName): a decoder returns a value or an error wrapping ErrCorrupt, never
// panics, and what it accepts encodes to a record it decodes to the same.
func FuzzDecode(f *testing.F) {
	u := newUpdate(1, 0, 10)
	seeds := []any{
		genesisRecord{ID: "fed", FileHash: hashOf(nil)},
		u,
		OpenRound{Round: 1, ModelHash: hashOf(nil), Selected: []string{"a"}},
		Result{Round: 1, ModelHash: hashOf(nil), Rejected: map[string]int{"late": 2},
			Eval: &Eval{Accuracy: 0.5, Loss: math.NaN(), Samples: 3}},
		trainerRecord{TrainerRound: TrainerRound{Round: 1, Pending: &u}, PendingPayload: true},
	}
	for i, rec := range seeds {
		b, err := encode(rec)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
	}
	f.Add(uint8(5), be64(7))
	f.Add(uint8(3), []byte(`{"round":1,"eval":{"loss":"+Inf","accuracy":"NaN"}}`))
	f.Add(uint8(1), []byte(`{"round":1,"seq":0,"hash":null}`))

	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		_ = keyName(data)
		k := []byte{kind}
		// decode is the decoder chosen by kind; it returns the record.
		decode := func(v []byte) (any, error) {
			switch kind % 6 {
			case 0:
				return decodeGenesis(k, v)
			case 1:
				return decodeUpdate(k, v, 1, 0)
			case 2:
				return decodeOpenRound(k, v)
			case 3:
				return decodeResult(k, v, 1)
			case 4:
				return decodeTrainer(k, v)
			default:
				return decodeU64(k, v)
			}
		}
		rec, err := decode(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if kind%6 == 5 {
			return
		}
		b1, err := encode(rec)
		if err != nil {
			t.Fatalf("accepted record does not encode: %v", err)
		}
		rec2, err := decode(b1)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v\n%s", err, b1)
		}
		b2, err := encode(rec2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("encoding not stable:\n%s\n%s", b1, b2)
		}
	})
}
