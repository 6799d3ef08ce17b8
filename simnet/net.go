package simnet

import "github.com/fedrank/fedrank/internal/splitmix"

// A network profile: propagation latency (plus uniform jitter), the bandwidth
// of each node's uplink and downlink, and a message loss rate.
//
// The link model: every node has an uplink and a downlink, each a FIFO queue
// that serializes one message at a time at its bandwidth. A message of B bytes
// sent at time t by s to r
//
//	leaves s's uplink at   upEnd   = max(t, s.upFree) + B/s.up
//	holds r's downlink     from downStart = max(upStart+lat, r.downFree)
//	                       to   downEnd   = downStart + B/r.down
//	arrives at r at        max(downEnd, upEnd+lat)
//
// so a transfer runs at the slower of both links, queues behind earlier
// transfers on both (each link is busy for the message's bytes at its own
// bandwidth: concurrent slow uploads share a fast downlink), and a
// broadcast of a large model takes time on the sender's link (each copy is
// sent separately). Both queues are reserved when the message is sent. A lost message still occupies the sender's uplink (and
// its bytes are counted); it never reaches the receiver's downlink. Zero
// bandwidth means unlimited. All randomness (jitter, loss) comes from a
// generator seeded by the run's seed and drawn in event order.
type netProfile struct {
	name, desc string
	latencyNs  int64
	jitterNs   int64   // latency is uniform in [latency-jitter, latency+jitter]
	loss       float64 // probability that a message is lost
	// Bandwidths in bits per second (0 = unlimited).
	peerUp, peerDown int64
	aggUp, aggDown   int64
}

const (
	ms   = int64(1_000_000) // nanoseconds
	mbit = int64(1_000_000)
	gbit = 1000 * mbit
)

var netProfiles = []netProfile{
	{name: "ideal", desc: "0.1 ms latency, unlimited bandwidth, no loss",
		latencyNs: ms / 10},
	{name: "lan", desc: "0.5 ms latency, 1 Gbit/s links, no loss",
		latencyNs: ms / 2, peerUp: gbit, peerDown: gbit, aggUp: gbit, aggDown: gbit},
	{name: "wan", desc: "40 ms ± 10 ms latency, peers 50 Mbit/s down / 10 Mbit/s up, aggregator 1 Gbit/s, no loss",
		latencyNs: 40 * ms, jitterNs: 10 * ms, peerUp: 10 * mbit, peerDown: 50 * mbit, aggUp: gbit, aggDown: gbit},
	{name: "lossy", desc: "wan plus 5% message loss",
		latencyNs: 40 * ms, jitterNs: 10 * ms, loss: 0.05, peerUp: 10 * mbit, peerDown: 50 * mbit, aggUp: gbit, aggDown: gbit},
}

// NetProfiles lists the network profiles (--net), for `sim --list`.
func NetProfiles() []Info {
	out := make([]Info, len(netProfiles))
	for i, p := range netProfiles {
		out[i] = Info{Name: p.name, Description: p.desc}
	}
	return out
}

func lookupNet(name string) (netProfile, bool) {
	for _, p := range netProfiles {
		if p.name == name {
			return p, true
		}
	}
	return netProfile{}, false
}

// link is one node's side of the network.
type link struct {
	up, down         int64 // bits per second, 0 = unlimited
	upFree, downFree int64 // when each queue is next free (virtual ns)
}

// txNs is the time to serialize n bytes at bps bits per second.
func txNs(n int, bps int64) int64 {
	if bps <= 0 {
		return 0
	}
	bits := int64(n) * 8
	return (bits*1_000_000_000 + bps - 1) / bps
}

// network applies a profile to the nodes' links.
type network struct {
	p   netProfile
	rng *splitmix.Source
}

// send reserves the links for a message of n bytes sent at now and returns its
// arrival time, or ok=false when it is lost.
func (nw *network) send(now int64, from, to *link, n int) (arrival int64, ok bool) {
	upStart := max(now, from.upFree)
	upEnd := upStart + txNs(n, from.up)
	from.upFree = upEnd
	lat := nw.p.latencyNs
	if j := nw.p.jitterNs; j > 0 {
		lat += int64(nw.rng.Below(uint64(2*j+1))) - j
	}
	if nw.p.loss > 0 && nw.rng.Float64() < nw.p.loss {
		return 0, false
	}
	downStart := max(upStart+lat, to.downFree)
	downEnd := downStart + txNs(n, to.down)
	arrival = max(downEnd, upEnd+lat)
	// The downlink is busy for the message's bytes at its own bandwidth,
	// not until a slower sender has finished: a 1 Mbit/s upload does not
	// hold a 1 Gbit/s downlink for its whole duration (it did before, which
	// serialized every upload to the aggregator behind the slowest one).
	to.downFree = downEnd
	return arrival, true
}
