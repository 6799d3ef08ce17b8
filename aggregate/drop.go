package aggregate

// DropReporter is implemented by the aggregators that can leave whole
// updates out of the model: "vote-robust" (FilteredVote) drops the voters
// whose distance to the consensus is an outlier, "multi-krum" (MultiKrum)
// averages only its m best-scored updates. The others use every accepted
// update (FedAvg and Vote count them all; the coordinate-wise median and
// trimmed statistics drop values, never an update), so they do not implement
// it.
type DropReporter interface {
	// Dropped returns the Update.Peer of every update that Add accepted in
	// the round of the last Finalize and that Finalize left out of the model,
	// in the order of Add (a peer that sent two updates is named twice). It
	// is nil before the first Finalize and when nothing was dropped. Begin
	// does not clear it (node.Machine begins the next round in the step
	// that finalizes one, before its driver can ask); the next Finalize
	// replaces it. The slice is the caller's.
	Dropped() []string
}

var (
	_ DropReporter = (*FilteredVote)(nil)
	_ DropReporter = (*MultiKrum)(nil)
)

// roundPeers records the peers of a round's accepted updates and, once the
// round is finalized, those left out.
type roundPeers struct {
	peers   []string // Update.Peer of the accepted updates, in the order of Add
	dropped []string
}

func (r *roundPeers) begin() { r.peers = r.peers[:0] }

func (r *roundPeers) accept(peer string) { r.peers = append(r.peers, peer) }

// finalize records as dropped the accepted updates that used(i) says the
// model left out (used nil: none, a round without updates).
func (r *roundPeers) finalize(used func(i int) bool) {
	r.dropped = nil
	for i, p := range r.peers {
		if used != nil && !used(i) {
			r.dropped = append(r.dropped, p)
		}
	}
}

// list is what Dropped returns.
func (r *roundPeers) list() []string {
	if len(r.dropped) == 0 {
		return nil
	}
	return append([]string(nil), r.dropped...)
}
