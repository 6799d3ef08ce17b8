package p2p

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Stream reset codes sent by the receiver so that Send can say why it failed.
const (
	codeNotMember network.StreamErrorCode = 0xfed0_0001 + iota
	codeOversized
	codeTruncated
	codeMalformed
	codeReadError
	codeInboundFull
	codeClosing
	codeTrailingData
	codeResourceLimit
)

var codeReasons = map[network.StreamErrorCode]string{
	codeNotMember:     ReasonNotMember,
	codeOversized:     ReasonOversized,
	codeTruncated:     ReasonTruncated,
	codeMalformed:     ReasonMalformed,
	codeReadError:     ReasonReadError,
	codeInboundFull:   ReasonInboundFull,
	codeClosing:       "closing",
	codeTrailingData:  ReasonTrailingData,
	codeResourceLimit: ReasonResourceLimit,
}

// reasonFor maps a read error to its reject reason and reset code.
func reasonFor(err error) (string, network.StreamErrorCode) {
	switch {
	case errors.Is(err, ErrTooLarge):
		return ReasonOversized, codeOversized
	case errors.Is(err, ErrTruncated):
		return ReasonTruncated, codeTruncated
	case errors.Is(err, ErrMalformedLength):
		return ReasonMalformed, codeMalformed
	case errors.Is(err, ErrTrailingData):
		return ReasonTrailingData, codeTrailingData
	case errors.Is(err, errResourceLimit):
		return ReasonResourceLimit, codeResourceLimit
	default:
		return ReasonReadError, codeReadError
	}
}

// handleStream serves one inbound ProtocolID stream: membership first, then
// one length-delimited message read under the stream deadline and a memory
// reservation of its announced length, then the hand-over to Inbound. Any
// failure resets the stream (so the sender's Send fails); success closes it
// (so the sender's Send returns nil).
func (x *Host) handleStream(s network.Stream) {
	remote := s.Conn().RemotePeer()
	if !x.enter() {
		_ = s.ResetWithError(codeClosing)
		return
	}
	defer x.wg.Done()
	if !x.allow.has(remote) {
		_ = s.ResetWithError(codeNotMember)
		x.reject(remote, ReasonNotMember, ErrNotMember)
		return
	}
	// Close must not wait for a slow stream: cancelling x.ctx resets it.
	stop := context.AfterFunc(x.ctx, func() { _ = s.ResetWithError(codeClosing) })
	defer stop()

	if err := s.Scope().SetService(ServiceName); err != nil {
		_ = s.ResetWithError(codeResourceLimit)
		x.reject(remote, ReasonResourceLimit, fmt.Errorf("%w: attach stream to service %s: %w", errResourceLimit, ServiceName, err))
		return
	}
	deadline := time.Now().Add(x.cfg.StreamTimeout)
	_ = s.SetDeadline(deadline)
	// Not every transport implements deadlines (mocknet does not): a timer
	// resets a stream whose message has not arrived by then.
	var timedOut atomic.Bool
	readTimer := time.AfterFunc(x.cfg.StreamTimeout, func() {
		timedOut.Store(true)
		_ = s.ResetWithError(codeReadError)
	})

	reserved := 0
	data, err := readMessage(s, x.cfg.MaxMessageBytes, func(n int) error {
		if err := s.Scope().ReserveMemory(n, network.ReservationPriorityAlways); err != nil {
			return fmt.Errorf("%w: reserve %d bytes: %w", errResourceLimit, n, err)
		}
		reserved = n
		return nil
	})
	if reserved > 0 {
		defer s.Scope().ReleaseMemory(reserved)
	}
	if err == nil {
		// One message per stream: the sender closed its write side after it.
		err = readEOF(s)
	}
	readTimer.Stop()
	if err != nil && timedOut.Load() {
		// Whatever the read saw after our reset (mocknet may show EOF), the
		// cause is the deadline.
		err = fmt.Errorf("%w (%v)", os.ErrDeadlineExceeded, err)
	}
	if err != nil {
		reason, code := reasonFor(err)
		_ = s.ResetWithError(code)
		x.reject(remote, reason, err)
		return
	}

	// Counted before it is queued, so that a consumer that received it sees
	// it in Stats; uncounted if it is not queued after all.
	wireBytes := uint64(uvarintLen(uint64(len(data))) + len(data))
	x.stats.msgIn.Add(1)
	x.stats.bytesIn.Add(wireBytes)
	uncount := func() {
		x.stats.msgIn.Add(^uint64(0))
		x.stats.bytesIn.Add(-wireBytes)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case x.inbound <- Message{From: remote.String(), Data: data}:
	case <-timer.C:
		uncount()
		_ = s.ResetWithError(codeInboundFull)
		x.reject(remote, ReasonInboundFull, errors.New("p2p: inbound queue full until the stream deadline"))
		return
	case <-x.done:
		uncount()
		_ = s.ResetWithError(codeClosing)
		return
	}
	// Close (not Reset): the sender reads EOF and knows we have the message.
	_ = s.Close()
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// Send delivers one direct message to a member: it opens a ProtocolID stream
// (dialling if needed), writes the length-delimited message, closes its write
// side and waits until the receiver has read the whole message, queued it on
// its Inbound and closed its side. So nil means the message is in the
// receiver's queue; an error means it may not be (the receiver's reason is in
// the error, wrapped in ErrRejected, when the transport carries it). The
// whole exchange is bounded by StreamTimeout and ctx.
//
// A non-member (ErrNotMember), no federation (ErrNotJoined) or an oversized
// message (ErrTooLarge) is refused before dialling.
func (x *Host) Send(ctx context.Context, to string, data []byte) error {
	pid, err := peer.Decode(to)
	if err != nil {
		return fmt.Errorf("p2p: send to %q: %w", to, err)
	}
	m := x.allow.load()
	if m == nil {
		return ErrNotJoined
	}
	if !m.has(pid) {
		return fmt.Errorf("p2p: send to %s: %w", pid, ErrNotMember)
	}
	if pid == x.self {
		return fmt.Errorf("p2p: send to self (%s)", pid)
	}
	if len(data) > x.cfg.MaxMessageBytes {
		return fmt.Errorf("p2p: send %d bytes to %s: %w (limit %d)", len(data), pid, ErrTooLarge, x.cfg.MaxMessageBytes)
	}
	if x.isClosed() {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, x.cfg.StreamTimeout)
	defer cancel()
	stopClose := context.AfterFunc(x.ctx, cancel) // Close aborts a Send
	defer stopClose()

	s, err := x.h.NewStream(ctx, pid, ProtocolID)
	if err != nil {
		return fmt.Errorf("p2p: open stream to %s: %w", pid, err)
	}
	// ctx (deadline, caller cancel, Close) aborts reads and writes.
	stopReset := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stopReset()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := s.Scope().SetService(ServiceName); err != nil {
		_ = s.Reset()
		return fmt.Errorf("p2p: send to %s: attach stream to service: %w", pid, err)
	}
	n, err := writeMessage(s, data)
	if err == nil {
		err = s.CloseWrite()
	}
	if err == nil {
		// The receiver writes nothing and closes after queueing the message.
		err = readEOF(s)
	}
	if err != nil {
		err = resetCause(s, err)
		_ = s.Reset()
		return x.sendError(ctx, pid, err)
	}
	_ = s.Close()
	x.stats.msgOut.Add(1)
	x.stats.bytesOut.Add(uint64(n))
	return nil
}

// resetCause returns the receiver's reset error if a failed write or
// CloseWrite (err) was caused by the receiver resetting the stream. go-libp2p's
// yamux wrapper converts errors to *network.StreamError (with the code) in
// Read and Write but not in CloseWrite; Read on a reset stream returns the
// converted error at once. Read cannot block long: the stream has a deadline
// and is reset when the sender's context ends.
func resetCause(s network.Stream, err error) error {
	var se *network.StreamError
	if errors.As(err, &se) {
		return err
	}
	var b [1]byte
	if _, rerr := s.Read(b[:]); errors.As(rerr, &se) {
		return rerr
	}
	return err
}

// sendError explains a failed exchange: the receiver's reset code if it sent
// one, else ctx's error if ctx ended, else err.
func (x *Host) sendError(ctx context.Context, pid peer.ID, err error) error {
	var se *network.StreamError
	if errors.As(err, &se) && se.Remote {
		if reason, ok := codeReasons[se.ErrorCode]; ok {
			return fmt.Errorf("p2p: send to %s: %w: %s", pid, ErrRejected, reason)
		}
	}
	if ctx.Err() != nil {
		if x.isClosed() {
			return ErrClosed
		}
		return fmt.Errorf("p2p: send to %s: %w (%v)", pid, ctx.Err(), err)
	}
	return fmt.Errorf("p2p: send to %s: %w", pid, err)
}
