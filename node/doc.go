// Package node runs the round protocol of DESIGN.md section 3.
//
// Machine is the protocol itself, built like etcd's raft: a deterministic state
// machine with no goroutines, no clock, no I/O and no randomness other than the
// seed in its Config. A driver feeds it events (Start, a message received, a timer
// fired, local training done) with the current time, and carries out the actions
// it returns (send, broadcast, set or cancel a timer, train locally) in order.
// The daemon's driver uses libp2p and the wall clock; simnet drives hundreds of
// machines over a simulated network with a virtual clock. Both run this code.
//
// Roles: one aggregator coordinates each round (selects trainers, checks and
// folds their updates, closes the round at quorum or at the deadline and
// announces the result); trainers pull the round's model by hash, train and send
// an update. See Config for the knobs and Reason for why updates are rejected.
//
// Delivery is unreliable: messages may be lost, duplicated or reordered. Round
// deadlines bound every round; trainers resend unanswered model requests and
// updates with exponential backoff until the round's deadline, and the
// aggregator acknowledges a resent identical update again without counting it
// twice.
package node
