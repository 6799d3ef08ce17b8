package p2p

import (
	"context"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
)

// TopicName is the gossipsub topic of a federation's announcements.
func TopicName(federationID string) string {
	return "/fedrank/" + federationID + "/announce/1"
}

// switchTopic joins topic (validator, subscription, reader) and then leaves
// the previous one. Called with joinMu held.
func (x *Host) switchTopic(topic string) error {
	if err := x.ps.RegisterTopicValidator(topic, x.validateAnnouncement); err != nil {
		return fmt.Errorf("p2p: register validator for %s: %w", topic, err)
	}
	t, err := x.ps.Join(topic)
	if err != nil {
		_ = x.ps.UnregisterTopicValidator(topic)
		return fmt.Errorf("p2p: join topic %s: %w", topic, err)
	}
	sub, err := t.Subscribe()
	if err != nil {
		_ = t.Close()
		_ = x.ps.UnregisterTopicValidator(topic)
		return fmt.Errorf("p2p: subscribe to %s: %w", topic, err)
	}
	if !x.enter() {
		sub.Cancel()
		_ = t.Close()
		return ErrClosed
	}
	go x.readAnnouncements(sub)

	oldTopic, oldSub := x.topic.Swap(t), x.sub
	x.sub = sub
	if oldSub != nil {
		oldSub.Cancel()
	}
	if oldTopic != nil {
		name := oldTopic.String()
		// Cancel was received by pubsub's event loop before it returned, so
		// the topic has no subscription left and Close succeeds.
		if err := oldTopic.Close(); err != nil {
			x.log.Warn("p2p: leaving topic", "topic", name, "err", err)
		}
		_ = x.ps.UnregisterTopicValidator(name)
	}
	return nil
}

// validateAnnouncement is the topic's gossipsub validator. from is the peer
// that forwarded the message (ourselves for our own Broadcast).
func (x *Host) validateAnnouncement(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	m := x.allow.load()
	if m == nil || msg.GetTopic() != m.topic {
		return pubsub.ValidationIgnore // a message of a topic we are leaving
	}
	author := msg.GetFrom()
	local := from == x.self && author == x.self
	if !local {
		if !m.has(from) {
			x.reject(from, ReasonNotMember, fmt.Errorf("%w: forwarder %s", ErrNotMember, from))
			return pubsub.ValidationReject
		}
		if !m.has(author) {
			x.reject(from, ReasonNotMember, fmt.Errorf("%w: author %s (forwarded by %s)", ErrNotMember, author, from))
			return pubsub.ValidationReject
		}
	}
	if len(msg.Data) > x.cfg.MaxAnnounceBytes {
		if !local {
			x.reject(author, ReasonOversized, fmt.Errorf("%w: announcement of %d bytes, limit %d", ErrTooLarge, len(msg.Data), x.cfg.MaxAnnounceBytes))
		}
		return pubsub.ValidationReject
	}
	if v := m.fed.Validate; v != nil {
		if err := v(author.String(), msg.Data); err != nil {
			if errors.Is(err, ErrIgnore) {
				if !local {
					x.reject(author, ReasonAnnounceIgnored, err)
				}
				return pubsub.ValidationIgnore
			}
			if !local {
				x.reject(author, ReasonAnnounceInvalid, err)
			}
			return pubsub.ValidationReject
		}
	}
	return pubsub.ValidationAccept
}

// readAnnouncements moves validated announcements from sub to Inbound until
// sub is cancelled or the host closes. A full Inbound drops the announcement
// (gossipsub must not be blocked by a slow consumer).
func (x *Host) readAnnouncements(sub *pubsub.Subscription) {
	defer x.wg.Done()
	for {
		msg, err := sub.Next(x.ctx)
		if err != nil {
			return
		}
		author := msg.GetFrom()
		if author == x.self {
			continue // our own Broadcast, delivered back by pubsub
		}
		// Counted before it is queued, so that a consumer that received it
		// sees it in Stats; uncounted if dropped.
		x.stats.announceIn.Add(1)
		select {
		case x.inbound <- Message{From: author.String(), Data: msg.Data, Announcement: true}:
		default:
			x.stats.announceIn.Add(^uint64(0))
			x.reject(author, ReasonAnnounceDropped, errors.New("p2p: inbound queue full"))
		}
	}
}

// Broadcast publishes an announcement on the federation's topic. Flood
// publishing is on, so it goes at once to every connected member subscribed
// to the topic (see AnnouncePeers), without waiting for the gossipsub mesh;
// members then forward it along the mesh. Our own Validate runs first and its
// error is returned. An announcement larger than MaxAnnounceBytes gives
// ErrTooLarge.
func (x *Host) Broadcast(ctx context.Context, data []byte) error {
	if len(data) > x.cfg.MaxAnnounceBytes {
		return fmt.Errorf("p2p: broadcast %d bytes: %w (limit %d)", len(data), ErrTooLarge, x.cfg.MaxAnnounceBytes)
	}
	if x.isClosed() {
		return ErrClosed
	}
	t := x.topic.Load()
	if t == nil {
		return ErrNotJoined
	}
	if err := t.Publish(ctx, data); err != nil {
		return fmt.Errorf("p2p: broadcast on %s: %w", t, err)
	}
	x.stats.announceOut.Add(1)
	return nil
}

// AnnouncePeers returns the connected peers known to be subscribed to the
// federation's topic: those a Broadcast reaches directly.
func (x *Host) AnnouncePeers() []string {
	t := x.topic.Load()
	if t == nil {
		return nil
	}
	return peerStrings(t.ListPeers())
}
