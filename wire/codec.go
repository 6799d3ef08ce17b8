package wire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
)

// Errors returned by Unmarshal; test them with errors.Is.
var (
	// ErrTooLarge: the input is longer than the caller's limit. Nothing was decoded.
	ErrTooLarge = errors.New("wire: message too large")
	// ErrMalformed: the input is not a valid fedrank.v1 Envelope.
	ErrMalformed = errors.New("wire: malformed message")
	// ErrNoBody: the envelope decoded but carries no body this version knows.
	ErrNoBody = errors.New("wire: envelope has no body")
)

var (
	marshalOpts = proto.MarshalOptions{Deterministic: true}
	// Unknown fields are dropped: they could only be from a newer schema, and
	// keeping them would let a peer make us hold bytes we never look at.
	unmarshalOpts = proto.UnmarshalOptions{DiscardUnknown: true}
)

// Marshal encodes an envelope. The encoding is deterministic: the same message
// gives the same bytes (the simulator's byte counts and hashes rely on it).
// An envelope without a body is refused, as Unmarshal would refuse it.
func Marshal(e *Envelope) ([]byte, error) {
	if e == nil || e.GetBody() == nil {
		return nil, ErrNoBody
	}
	b, err := marshalOpts.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("wire: marshal %s: %w", Kind(e), err)
	}
	return b, nil
}

// Unmarshal decodes an envelope received from the network. It rejects input
// longer than max bytes (max <= 0 means no limit) before decoding anything
// (ErrTooLarge), input that is not a valid Envelope (ErrMalformed), and an
// envelope without a known body (ErrNoBody). The result shares no memory with b.
func Unmarshal(b []byte, max int) (*Envelope, error) {
	if max > 0 && len(b) > max {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), max)
	}
	e := new(Envelope)
	if err := unmarshalOpts.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if e.GetBody() == nil {
		return nil, ErrNoBody
	}
	return e, nil
}

// Kind names the body of an envelope ("round_start", "update", ...), or "none",
// for logs and traces.
func Kind(e *Envelope) string {
	switch e.GetBody().(type) {
	case *Envelope_RoundStart:
		return "round_start"
	case *Envelope_ModelRequest:
		return "model_request"
	case *Envelope_ModelResponse:
		return "model_response"
	case *Envelope_Update:
		return "update"
	case *Envelope_UpdateAck:
		return "update_ack"
	case *Envelope_RoundResult:
		return "round_result"
	default:
		return "none"
	}
}
