// Package p2p is the libp2p side of a fedrank peer daemon: it moves bytes
// between authenticated federation members and refuses everyone else. The
// protocol logic lives in package node, which consumes the raw messages (by
// convention one encoded wire.Envelope each).
//
// # Identity
//
// A peer's identity is an Ed25519 key stored in the libp2p protobuf encoding
// with mode 0600 (CreateKey, LoadKey); its peer ID (PeerID) is how the
// federation's genesis names members.
//
// # Host
//
// New builds a libp2p host: TCP and QUIC (TCP only on a private network, see
// Config.PSK), Noise and TLS, yamux, a resource manager with limits for our
// protocol, a connection manager, identify announcing Config.UserAgent, and
// a connection gater that admits federation members only. Attach runs the
// same services on an existing host (tests over mocknet), without the gater.
//
// Nothing talks to anyone until Join sets the federation: its member list is
// enforced twice, by the gater at connection time (New only) and on every
// message (both). Connect dials bootstrap members; mDNS finds members on a
// LAN when Config.MDNS is set.
//
// # Two kinds of messages
//
// Direct messages (Send) travel on their own stream of ProtocolID
// "/fedrank/msg/1.0.0": an unsigned-varint length, the bytes, the sender's
// write side closed; the receiver reads exactly one message of at most
// Config.MaxMessageBytes under a deadline and a resource-manager memory
// reservation, queues it, and closes its side, which is the acknowledgement
// Send waits for. Any failure resets the stream with a code naming the
// reason, which Send reports (wrapped in ErrRejected): 0xfed00001 not a
// member, 0xfed00002 oversized, 0xfed00003 truncated, 0xfed00004 malformed
// length prefix, 0xfed00005 read error or deadline, 0xfed00006 Inbound full,
// 0xfed00007 receiver closing, 0xfed00008 data after the message,
// 0xfed00009 resource limit.
//
// Announcements (Broadcast) are small messages published with gossipsub on
// the topic TopicName(federation ID), flood publishing on, signed by their
// author (StrictSign). A validator rejects announcements whose author or
// forwarder is not a member, that exceed Config.MaxAnnounceBytes, or that
// Federation.Validate refuses.
//
// Both kinds arrive on Inbound, with the authenticated sender. Every refusal
// is counted by reason in Stats and reported to Config.OnReject.
package p2p
