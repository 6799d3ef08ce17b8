package wire

import (
	"encoding/hex"
	"fmt"
)

// ShortHash is the first 4 bytes of a hash in hex ("-" for none), for logs
// and traces.
func ShortHash(h []byte) string {
	if len(h) == 0 {
		return "-"
	}
	return hex.EncodeToString(h[:min(4, len(h))])
}

// shortBytes prints small byte strings in hex and large ones by length.
func shortBytes(b []byte) string {
	if len(b) <= 16 {
		return fmt.Sprintf("%x", b)
	}
	return fmt.Sprintf("<%d bytes>", len(b))
}

// Describe prints a message on one line, for the golden traces of the
// protocol (node/testdata) and of the simulator (simnet/testdata).
func Describe(m *Envelope) string {
	switch b := m.GetBody().(type) {
	case *Envelope_RoundStart:
		r := b.RoundStart
		return fmt.Sprintf("round_start round=%d model=%s selected=%v deadline=%d", r.GetRound(), ShortHash(r.GetModelHash()), r.GetSelected(), r.GetDeadlineMs())
	case *Envelope_ModelRequest:
		if off := b.ModelRequest.GetOffset(); off > 0 {
			return fmt.Sprintf("model_request model=%s offset=%d", ShortHash(b.ModelRequest.GetModelHash()), off)
		}
		return fmt.Sprintf("model_request model=%s", ShortHash(b.ModelRequest.GetModelHash()))
	case *Envelope_ModelResponse:
		r := b.ModelResponse
		if r.GetOffset() > 0 || r.GetTotalSize() != uint64(len(r.GetModel())) {
			return fmt.Sprintf("model_response model=%s offset=%d of %d bytes=%s", ShortHash(r.GetModelHash()), r.GetOffset(), r.GetTotalSize(), shortBytes(r.GetModel()))
		}
		return fmt.Sprintf("model_response model=%s bytes=%s", ShortHash(r.GetModelHash()), shortBytes(r.GetModel()))
	case *Envelope_Update:
		u := b.Update
		return fmt.Sprintf("update round=%d model=%s payload=%s samples=%d", u.GetRound(), ShortHash(u.GetModelHash()), shortBytes(u.GetPayload()), u.GetSamples())
	case *Envelope_UpdateAck:
		a := b.UpdateAck
		if a.GetAccepted() {
			return fmt.Sprintf("update_ack round=%d accepted", a.GetRound())
		}
		return fmt.Sprintf("update_ack round=%d rejected %s", a.GetRound(), a.GetReason())
	case *Envelope_RoundResult:
		r := b.RoundResult
		hs := make([]string, len(r.GetUpdateHashes()))
		for i, h := range r.GetUpdateHashes() {
			hs[i] = ShortHash(h)
		}
		return fmt.Sprintf("round_result round=%d model=%s updates=%v accepted=%d rejected=%d", r.GetRound(), ShortHash(r.GetModelHash()), hs, r.GetAccepted(), r.GetRejected())
	}
	return Kind(m)
}
