package simnet

// Independent random streams derived from a run's seed with splitmix.Derive.
const (
	streamNet uint64 = 0x6e6574 + iota<<32 // jitter and loss
	streamSelect
	streamCrash
	streamTrain
)
