package p2p

import (
	"errors"
	"fmt"
	"io"
)

// Errors of the length-delimited framing used on direct streams. Test them with
// errors.Is.
var (
	// ErrTooLarge: a message (or its announced length) exceeds the configured limit.
	ErrTooLarge = errors.New("p2p: message too large")
	// ErrTruncated: the stream ended before the length prefix or the message was
	// complete.
	ErrTruncated = errors.New("p2p: message truncated")
	// ErrMalformedLength: the length prefix is not a minimal unsigned varint
	// that fits in 63 bits.
	ErrMalformedLength = errors.New("p2p: malformed length prefix")
	// ErrTrailingData: bytes follow the message on a stream that carries one
	// message.
	ErrTrailingData = errors.New("p2p: data after the message")
)

// maxVarintLen is the longest unsigned varint accepted as a length prefix
// (9 bytes hold 63 bits; anything longer could not be a sane length).
const maxVarintLen = 9

// appendUvarint appends the unsigned varint encoding of v to b.
func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// readUvarint reads a minimal unsigned varint one byte at a time, so that not
// a single byte past the prefix is consumed. It returns ErrTruncated if r ends
// inside the prefix (or before it, with n == 0), ErrMalformedLength for a
// non-minimal or over-long encoding, and r's other errors unchanged.
func readUvarint(r io.Reader) (v uint64, n int, err error) {
	var b [1]byte
	var shift uint
	for n = 0; n < maxVarintLen; n++ {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return 0, n, ErrTruncated
			}
			return 0, n, err
		}
		c := b[0]
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			if c == 0 && n > 0 {
				// A trailing zero group: the same value has a shorter encoding.
				return 0, n + 1, ErrMalformedLength
			}
			return v, n + 1, nil
		}
		shift += 7
	}
	return 0, n, ErrMalformedLength
}

// writeMessage writes one message: its length as an unsigned varint, then the
// bytes. It returns the number of bytes written.
func writeMessage(w io.Writer, data []byte) (int, error) {
	// One Write for small messages (one yamux frame / QUIC packet for the
	// common case); two for large ones, to avoid copying megabytes.
	var hdr [maxVarintLen + 1]byte
	prefix := appendUvarint(hdr[:0], uint64(len(data)))
	if len(data) <= 4096 {
		buf := append(make([]byte, 0, len(prefix)+len(data)), prefix...)
		buf = append(buf, data...)
		return w.Write(buf)
	}
	n, err := w.Write(prefix)
	if err != nil {
		return n, err
	}
	m, err := w.Write(data)
	return n + m, err
}

// readMessage reads one length-delimited message from r. The length is checked
// against max before anything is allocated, so a peer cannot make us allocate
// more than max bytes (ErrTooLarge). A stream that ends early gives
// ErrTruncated; a bad prefix gives ErrMalformedLength; other read errors
// (deadline, reset) are returned wrapped. reserve, if not nil, is called with
// the announced length before the buffer is allocated (the resource manager's
// memory reservation); its error aborts the read.
func readMessage(r io.Reader, max int, reserve func(n int) error) ([]byte, error) {
	l, _, err := readUvarint(r)
	if err != nil {
		return nil, err
	}
	if max < 0 || l > uint64(max) {
		return nil, fmt.Errorf("%w: announced %d bytes, limit %d", ErrTooLarge, l, max)
	}
	n := int(l)
	if reserve != nil {
		if err := reserve(n); err != nil {
			return nil, err
		}
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: got part of %d bytes", ErrTruncated, n)
		}
		return nil, err
	}
	return buf, nil
}

// readEOF checks that r ends right after a message: it returns nil at EOF,
// ErrTrailingData if more bytes come, and r's error otherwise.
func readEOF(r io.Reader) error {
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n > 0 {
			return ErrTrailingData
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
