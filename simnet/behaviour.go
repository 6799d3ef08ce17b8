package simnet

import "github.com/fedrank/fedrank/task"

// behaviour is what a simulated peer does when its protocol machine asks it to
// train (a node.Train action). It runs on the worker pool, so it must be safe
// for concurrent use and deterministic in its inputs.
//
// This is the seam for attacker peers (attack.go): an attack replaces honest
// training with its own payload (a reversed, random or crafted ranking,
// flipped, boosted or scaled weights, noise, an NDSS'21 min-max or min-sum
// update, training on flipped labels). An attack computed jointly by the
// round's attackers (rank reversal sums the rankings of min(attackers,
// per-round) honestly trained attacker clients first) gives each of them a
// behaviour sharing one per-round state, keyed by job.Round. The protocol around it (model pull, update, deadlines) stays the
// honest node.Machine: an attacker is a peer that lies in its payload, not in
// its protocol.
type behaviour interface {
	train(t task.Task, job task.Job) ([]byte, error)
}

// honest runs the task's local training.
type honest struct{}

func (honest) train(t task.Task, job task.Job) ([]byte, error) { return t.Train(job) }
