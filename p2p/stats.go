package p2p

import "sync/atomic"

// Reasons a message or connection is refused, as counted in Stats.Rejected and
// passed to Config.OnReject.
const (
	// ReasonNotMember: the sender (or, for an announcement, its author or the
	// peer that forwarded it) is not a member of the joined federation.
	ReasonNotMember = "not-member"
	// ReasonOversized: the announced length exceeds MaxMessageBytes, or an
	// announcement exceeds MaxAnnounceBytes.
	ReasonOversized = "oversized"
	// ReasonTruncated: the stream ended inside the length prefix or the message.
	ReasonTruncated = "truncated"
	// ReasonMalformed: the length prefix is not a minimal unsigned varint.
	ReasonMalformed = "malformed"
	// ReasonTrailingData: bytes followed the message (one message per stream).
	ReasonTrailingData = "trailing-data"
	// ReasonResourceLimit: the resource manager refused the stream or the
	// memory for its message (see Config.MemoryLimit, MaxMessageBytes).
	ReasonResourceLimit = "resource-limit"
	// ReasonReadError: the stream failed otherwise (deadline, reset).
	ReasonReadError = "read-error"
	// ReasonInboundFull: the message was read but Inbound stayed full until
	// the stream's deadline; the stream was reset, so the sender's Send failed.
	ReasonInboundFull = "inbound-full"
	// ReasonAnnounceInvalid: Federation.Validate rejected an announcement.
	ReasonAnnounceInvalid = "announce-invalid"
	// ReasonAnnounceIgnored: Federation.Validate returned an error wrapping
	// ErrIgnore (for example a stale round): dropped without penalising the
	// forwarder.
	ReasonAnnounceIgnored = "announce-ignored"
	// ReasonAnnounceDropped: a valid announcement arrived while Inbound was full.
	ReasonAnnounceDropped = "announce-dropped"
	// ReasonGaterRefused: the connection gater refused a connection to or from
	// a non-member (counted in Stats.GaterRefused, and passed to OnReject).
	ReasonGaterRefused = "gater-refused"
)

// rejectReasons lists the per-message reasons in a fixed order (index =
// counter slot).
var rejectReasons = [...]string{
	ReasonNotMember,
	ReasonOversized,
	ReasonTruncated,
	ReasonMalformed,
	ReasonTrailingData,
	ReasonResourceLimit,
	ReasonReadError,
	ReasonInboundFull,
	ReasonAnnounceInvalid,
	ReasonAnnounceIgnored,
	ReasonAnnounceDropped,
}

func reasonIndex(reason string) int {
	for i, r := range rejectReasons {
		if r == reason {
			return i
		}
	}
	return -1
}

// Stats is a snapshot of a host's counters since it was created.
type Stats struct {
	// GaterRefused counts connections the gater refused (dials to, and
	// secured connections from, non-members). Always 0 for Attach.
	GaterRefused uint64
	// Rejected counts refused messages by reason (the Reason* constants);
	// every reason is present, zero or not.
	Rejected map[string]uint64
	// MessagesIn and MessagesOut count direct messages delivered to Inbound
	// and sent successfully (acknowledged) by Send. A message is counted
	// before it is queued: one read from Inbound is already in Stats.
	MessagesIn, MessagesOut uint64
	// BytesIn and BytesOut count the bytes of those messages on the direct
	// protocol, length prefixes included.
	BytesIn, BytesOut uint64
	// AnnouncementsIn counts announcements delivered to Inbound (counted
	// before queued, like MessagesIn); AnnouncementsOut counts successful
	// Broadcast calls.
	AnnouncementsIn, AnnouncementsOut uint64
}

// counters are the live values behind Stats.
type counters struct {
	gaterRefused  atomic.Uint64
	rejected      [len(rejectReasons)]atomic.Uint64
	msgIn, msgOut atomic.Uint64
	bytesIn       atomic.Uint64
	bytesOut      atomic.Uint64
	announceIn    atomic.Uint64
	announceOut   atomic.Uint64
}

func (c *counters) snapshot() Stats {
	s := Stats{
		GaterRefused:     c.gaterRefused.Load(),
		Rejected:         make(map[string]uint64, len(rejectReasons)),
		MessagesIn:       c.msgIn.Load(),
		MessagesOut:      c.msgOut.Load(),
		BytesIn:          c.bytesIn.Load(),
		BytesOut:         c.bytesOut.Load(),
		AnnouncementsIn:  c.announceIn.Load(),
		AnnouncementsOut: c.announceOut.Load(),
	}
	for i, r := range rejectReasons {
		s.Rejected[r] = c.rejected[i].Load()
	}
	return s
}
