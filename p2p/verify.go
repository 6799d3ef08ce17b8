package p2p

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Verify checks sig, a signature of msg, against the public key in the
// peer ID from (Ed25519 peer IDs embed their key): node.Config.Verify in the
// daemon, so that an update is checked against its authenticated sender.
func Verify(from string, msg, sig []byte) error {
	id, err := peer.Decode(from)
	if err != nil {
		return err
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("no public key in peer ID %s: %w", from, err)
	}
	ok, err := pub.Verify(msg, sig)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("signature does not verify")
	}
	return nil
}
