// Package lowrank holds low-rank adapter (LoRA) factors on the wire and the
// merges that turn a round's factors into the next global adapter, each an
// aggregate.Aggregator.
//
// # What the global model is
//
// Every peer holds the same frozen base model W0 (a safetensors file; the
// Spec names it by the SHA-256 of its weights, and a model or update for
// another base is rejected). The base never travels. The global model of a
// round is an adapter: for every layer, the federation's rank R of
// components (A_j, B_j), with ΔW = s·Σ_j A_jᵀB_j and s = alpha/R, so the
// network a peer runs is W0 + ΔW (see model.LoRA for the orientation:
// factors are component-major, A r×In, B r×Out). A model is a few kilobytes
// where the dense network is a megabyte.
//
// A round: peers load the global factors (a peer of a smaller rank r_k
// takes the first r_k components of each layer), train them locally, and
// upload their factors as differences from what they loaded, compressed
// (Codec: fp32, fp16, or int8 with a scale per component). The aggregator
// reconstructs each peer's factors from the global ones it began the round
// with and merges:
//
//   - lora-avg (FedIT, Zhang et al. 2023): A and B averaged separately,
//     weighted by sample counts. Cheap and streaming, but the product of the
//     averages is not the average of the products: it misses the cross terms
//     Σ_k p_k (A_k − Ā)ᵀ(B_k − B̄).
//   - lora-ffa (FFA-LoRA, Sun et al. 2024): A is drawn from the seed shared
//     by all peers and frozen, so only B trains and travels (half the bytes
//     or less) and averaging B is exact: Σ_k p_k AᵀB_k = Aᵀ(Σ_k p_k B_k).
//   - lora-svd (exact; as FlexLoRA, Bai et al. 2024, with heterogeneous
//     ranks): the weighted sum of the products, M = Σ_k p_k A_kᵀB_k, is
//     factored back to rank R by a truncated SVD, which is the best rank-R
//     approximation; what it drops is reported per layer and round
//     (SVD.Residuals). M is never formed when the stacked rank Σr_k fits
//     under the layer's sides: thin QRs of the stacked factors reduce the
//     SVD to one of a Σr×Σr core (Factored); beyond that M is formed and a
//     randomized or dense SVD factors it (see Method and the benchmarks).
//
// The singular components come out in descending order and split between A
// and B (SVDOptions.ANorm), so a prefix of r' components is the best
// rank-r' approximation: heterogeneous ranks need nothing else. A peer's
// missing components (its rank is smaller) count as zero in every merge, as
// they were in the network it trained.
//
// Models are encoded in fp32 (the downlink is small and the merged model
// stays exact); updates in the federation's codec. All formats start with a
// magic and their full shape, and decoders reject wrong shapes, NaN and
// ±Inf, out-of-range int8 values and scales, and truncated or overlong
// payloads with errors wrapping ErrMalformed.
package lowrank
