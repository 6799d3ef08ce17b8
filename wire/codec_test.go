package wire

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
)

func sampleEnvelopes() []*Envelope {
	h := bytes.Repeat([]byte{0xab}, 32)
	return []*Envelope{
		{Federation: "fed", Body: &Envelope_RoundStart{RoundStart: &RoundStart{Round: 3, ModelHash: h, Selected: []string{"peer-0001", "peer-0007"}, DeadlineMs: 60_000}}},
		{Federation: "fed", Body: &Envelope_ModelRequest{ModelRequest: &ModelRequest{ModelHash: h}}},
		{Federation: "fed", Body: &Envelope_ModelResponse{ModelResponse: &ModelResponse{ModelHash: h, Model: []byte("model bytes")}}},
		{Federation: "fed", Body: &Envelope_Update{Update: &Update{Round: 3, ModelHash: h, Payload: []byte{1, 2, 3}, Samples: 600}}},
		{Federation: "fed", Body: &Envelope_UpdateAck{UpdateAck: &UpdateAck{Round: 3, Reason: "duplicate"}}},
		{Federation: "fed", Body: &Envelope_RoundResult{RoundResult: &RoundResult{Round: 3, ModelHash: h, UpdateHashes: [][]byte{h, h}, Accepted: 2, Rejected: 1}}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, e := range sampleEnvelopes() {
		t.Run(Kind(e), func(t *testing.T) {
			b, err := Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			b2, err := Marshal(proto.Clone(e).(*Envelope))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatal("Marshal is not deterministic")
			}
			got, err := Unmarshal(b, len(b))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, e) {
				t.Fatalf("round trip: got %v, want %v", got, e)
			}
			if Kind(got) != Kind(e) {
				t.Fatalf("kind %s, want %s", Kind(got), Kind(e))
			}
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	ok, err := Marshal(sampleEnvelopes()[3])
	if err != nil {
		t.Fatal(err)
	}
	noBody, err := proto.Marshal(&Envelope{Federation: "fed"})
	if err != nil {
		t.Fatal(err)
	}
	// Field 99 is unknown to this schema: it decodes, is discarded, and leaves no body.
	unknownBody := append([]byte(nil), noBody...)
	unknownBody = append(unknownBody, 0x9a, 0x06, 0x01, 0x00) // field 99, bytes, len 1
	tests := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"oversized", ok, len(ok) - 1, ErrTooLarge},
		{"garbage", []byte{0xff, 0xff, 0xff}, 0, ErrMalformed},
		{"truncated", ok[:len(ok)-2], 0, ErrMalformed},
		{"empty", nil, 0, ErrNoBody},
		{"federation only", noBody, 0, ErrNoBody},
		{"unknown body", unknownBody, 0, ErrNoBody},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Unmarshal(tc.in, tc.max)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Unmarshal = %v, %v; want error %v", e, err, tc.want)
			}
			if e != nil {
				t.Fatalf("Unmarshal returned a message with error %v", err)
			}
		})
	}
}

func TestUnmarshalNoLimit(t *testing.T) {
	b, err := Marshal(sampleEnvelopes()[2])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Unmarshal(b, 0); err != nil {
		t.Fatalf("max 0 must mean no limit: %v", err)
	}
}

func TestUnmarshalCopies(t *testing.T) {
	b, err := Marshal(sampleEnvelopes()[3])
	if err != nil {
		t.Fatal(err)
	}
	e, err := Unmarshal(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if !bytes.Equal(e.GetUpdate().GetPayload(), []byte{1, 2, 3}) {
		t.Fatal("decoded message aliases the input buffer")
	}
}

func TestMarshalNoBody(t *testing.T) {
	for _, e := range []*Envelope{nil, {Federation: "fed"}} {
		if _, err := Marshal(e); !errors.Is(err, ErrNoBody) {
			t.Fatalf("Marshal(%v) error = %v, want ErrNoBody", e, err)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, e := range sampleEnvelopes() {
		b, err := Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff})
	const max = 1 << 16
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(b, max)
		if err != nil {
			if e != nil {
				t.Fatal("message returned with an error")
			}
			if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoBody) {
				t.Fatalf("unclassified error: %v", err)
			}
			if len(b) > max && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("oversized input not rejected as such: %v", err)
			}
			return
		}
		if e.GetBody() == nil {
			t.Fatal("accepted an envelope without a body")
		}
		// Whatever decodes must re-encode, and the re-encoding must be a fixed point.
		b2, err := Marshal(e)
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		e2, err := Unmarshal(b2, 0)
		if err != nil {
			t.Fatalf("re-unmarshal: %v", err)
		}
		if !proto.Equal(e, e2) {
			t.Fatalf("re-decoded message differs: %v vs %v", e, e2)
		}
		b3, err := Marshal(e2)
		if err != nil || !bytes.Equal(b2, b3) {
			t.Fatalf("encoding is not a fixed point (%v)", err)
		}
	})
}
