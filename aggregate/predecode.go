package aggregate

import (
	"bytes"
	"hash/maphash"
	"sync"

	"github.com/fedrank/fedrank/rankvote"
)

// A Predecoder decodes a round's coded FRL updates (delta- or
// bucket-coded) on other goroutines, ahead of the aggregator: what it
// decodes, the aggregator's Add takes instead of decoding the payload on
// its own, serial, path. Decoding is a function of the payload and the
// global model alone, so the rankings are the same either way, bit for bit:
// a payload the Predecoder did not see, or could not decode, the aggregator
// decodes itself (and rejects with its own error). The simulator calls
// Decode on its training pool right after a peer's update is made, as a
// daemon's aggregator would decode updates as they arrive while other
// peers still train.
//
// A Predecoder is safe for concurrent use. It keeps what it decoded until
// the aggregator takes it or begins a round on another global model.
type Predecoder struct {
	spec   Spec
	seed   maphash.Seed
	coders sync.Pool // *predecodeCoders

	mu     sync.Mutex
	global []byte // the model of the entries; nil: none yet
	ref    *predecodeRef
	done   map[uint64][]predecoded // by maphash of the payload
	free   [][][]uint32            // rankings buffers to reuse
	hits   int                     // updates taken decoded
	bounds [][]uint32              // the federation's bucket layouts (nil: any)
}

type predecodeRef struct {
	once  sync.Once
	ranks [][]uint32
	err   error
}

type predecoded struct {
	payload []byte
	ranks   [][]uint32
}

type predecodeCoders struct {
	delta  rankvote.DeltaCoder
	bucket rankvote.BucketCoder
}

// Predecoding is implemented by the aggregators that take decoded
// rankings from a Predecoder: the ranking aggregators.
type Predecoding interface {
	// Predecoder returns the aggregator's Predecoder (the same one every
	// time, made on the first call).
	Predecoder() *Predecoder
}

func newPredecoder(spec Spec) *Predecoder {
	p := &Predecoder{spec: spec, seed: maphash.MakeSeed(), done: map[uint64][]predecoded{}}
	p.coders.New = func() any { return new(predecodeCoders) }
	return p
}

// Decode decodes payload, an update coded against the global model global,
// and keeps its rankings for the aggregator. Anything else (a packed
// update, a payload that does not decode) it ignores.
func (p *Predecoder) Decode(global, payload []byte) {
	if !isCodedFRLUpdate(payload) {
		return
	}
	p.mu.Lock()
	if !bytes.Equal(p.global, global) {
		p.reset(global)
	}
	ref := p.ref
	var dst [][]uint32
	if n := len(p.free); n > 0 {
		dst, p.free = p.free[n-1], p.free[:n-1]
	}
	p.mu.Unlock()
	ref.once.Do(func() { ref.ranks, ref.err = p.spec.DecodeFRLModel(global, nil) })
	if ref.err != nil {
		return
	}
	c := p.coders.Get().(*predecodeCoders)
	ranks, err := p.spec.decodeFRLUpdateAgainst(payload, dst, ref.ranks, &c.delta, &c.bucket, p.bounds, false)
	p.coders.Put(c)
	if err != nil {
		return
	}
	h := maphash.Bytes(p.seed, payload)
	p.mu.Lock()
	if p.ref == ref { // not a model of an earlier round
		p.done[h] = append(p.done[h], predecoded{payload: bytes.Clone(payload), ranks: ranks})
	}
	p.mu.Unlock()
}

// reset drops the entries and starts on global; p.mu is held.
func (p *Predecoder) reset(global []byte) {
	for h, es := range p.done {
		for _, e := range es {
			p.free = append(p.free, e.ranks)
		}
		delete(p.done, h)
	}
	p.global = bytes.Clone(global)
	p.ref = new(predecodeRef)
}

// take removes and returns the rankings of payload decoded against global,
// or nil.
func (p *Predecoder) take(global, payload []byte) [][]uint32 {
	h := maphash.Bytes(p.seed, payload)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !bytes.Equal(p.global, global) {
		return nil
	}
	es := p.done[h]
	for i, e := range es {
		if bytes.Equal(e.payload, payload) {
			p.hits++
			es[i] = es[len(es)-1]
			if es = es[:len(es)-1]; len(es) == 0 {
				delete(p.done, h)
			} else {
				p.done[h] = es
			}
			return e.ranks
		}
	}
	return nil
}

// Hits is the number of updates the aggregator took decoded.
func (p *Predecoder) Hits() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits
}

// recycle gives back rankings that take returned, once used.
func (p *Predecoder) recycle(ranks [][]uint32) {
	p.mu.Lock()
	p.free = append(p.free, ranks)
	p.mu.Unlock()
}
