package lowrank

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"
)

// Term is one peer's adapter of one layer, in float64: its weight P (a sample
// count; weights are normalised by their sum) and factors A (r×In) and B
// (r×Out), component-major. The term's ΔW/s is AᵀB (In×Out).
type Term struct {
	P    float64
	A, B []float64
}

// Method is how MergeSVD factors the weighted sum M = Σ_k p_k A_kᵀB_k.
type Method uint8

const (
	// Auto picks the fastest exact method, or Randomized when the target
	// rank is small against the sum's (see MergeSVD).
	Auto Method = iota
	// Factored is exact and never forms M: with the stacked factors
	// P = [p_1A_1; ...] (Σr×In) and Q = [B_1; ...] (Σr×Out), thin QRs
	// Pᵀ = Q₁R₁ and Qᵀ = Q₂R₂ give M = Q₁(R₁R₂ᵀ)Q₂ᵀ, and the SVD of the
	// Σr×Σr core gives M's. Cost O((In+Out)·(Σr)²). Needs Σr ≤ min(In, Out).
	Factored
	// Dense forms M (In·Out·Σr) and takes its thin SVD: exact, O(In·Out·min(In,Out)).
	Dense
	// Randomized forms M and takes a randomized SVD (Halko, Martinsson and
	// Tropp 2011): a Gaussian sketch of R+Oversample columns and PowerIters
	// power iterations. Cost O(In·Out·(Σr + (R+Oversample)·(2·PowerIters+2))).
	// Exact when R+Oversample reaches M's rank; otherwise the residual it
	// reports is still exact for the factors it returns.
	Randomized
)

func (m Method) String() string {
	switch m {
	case Auto:
		return "auto"
	case Factored:
		return "factored"
	case Dense:
		return "dense"
	case Randomized:
		return "randomized"
	}
	return fmt.Sprintf("method(%d)", uint8(m))
}

// SVDOptions tunes MergeSVD.
type SVDOptions struct {
	Method     Method
	Oversample int    // extra sketch columns of Randomized (default 10)
	PowerIters int    // power iterations of Randomized (default 2)
	Seed       uint64 // seeds Randomized's sketch
	// ANorm, when > 0, gives every returned A component the norm ANorm and
	// puts the rest of σ_j in B (A_j = ANorm·u_j, B_j = σ_j/ANorm·v_j), so
	// training that continues from the merged factors keeps the gradient
	// scale of a fresh adapter. 0 splits σ_j evenly (√σ_j each).
	ANorm float64
}

func (o SVDOptions) withDefaults() SVDOptions {
	if o.Oversample <= 0 {
		o.Oversample = 10
	}
	if o.PowerIters <= 0 {
		o.PowerIters = 2
	}
	return o
}

// Residual is the energy (squared Frobenius norm) of a merged ΔW/s that
// truncation to the target rank dropped, and the total energy.
type Residual struct {
	Dropped, Total float64
}

// Fraction is Dropped/Total (0 for an all-zero sum).
func (r Residual) Fraction() float64 {
	if r.Total <= 0 {
		return 0
	}
	return r.Dropped / r.Total
}

// deadTol is the singular value, relative to the largest, below which a
// component counts as zero (it is returned as zero factors and flagged).
const deadTol = 1e-10

// MergeSVD returns rank-R factors A (R×In) and B (R×Out) whose product AᵀB
// is the best rank-R approximation (Eckart–Young) of
//
//	M = Σ_k p_k·A_kᵀB_k / Σ_k p_k
//
// ordered by descending singular value, so the first r' components are the
// best rank-r' approximation for any r' ≤ R. Components whose singular value
// is zero (M has a smaller rank than R) come back as zero factors, and dead[j]
// is set for them. It also returns the residual energy truncation dropped
// and the method it used. Auto picks Factored when Σr_k ≤ min(In, Out),
// else Randomized when R+Oversample ≤ min(In, Out)/4, else Dense.
func MergeSVD(in, out, R int, terms []Term, opt SVDOptions) (A, B []float64, dead []bool, res Residual, used Method, err error) {
	opt = opt.withDefaults()
	if in <= 0 || out <= 0 || R < 0 || R > min(in, out) {
		return nil, nil, nil, res, 0, fmt.Errorf("lowrank: merge of a %d×%d layer to rank %d", in, out, R)
	}
	var weight float64
	kr := 0
	for k, t := range terms {
		if !(t.P > 0) || math.IsInf(t.P, 0) {
			return nil, nil, nil, res, 0, fmt.Errorf("lowrank: term %d has weight %v", k, t.P)
		}
		if len(t.A)%in != 0 || len(t.B)%out != 0 || len(t.A)/in != len(t.B)/out {
			return nil, nil, nil, res, 0, fmt.Errorf("lowrank: term %d has %d A and %d B values for a %d×%d layer", k, len(t.A), len(t.B), in, out)
		}
		weight += t.P
		kr += len(t.B) / out
	}
	A, B = make([]float64, R*in), make([]float64, R*out)
	dead = make([]bool, R)
	if kr == 0 {
		for j := range dead {
			dead[j] = true
		}
		return A, B, dead, res, Auto, nil
	}
	// Pt (In×Σr) and Qt (Out×Σr): column c is one component of one term.
	Pt, Qt := mat.NewDense(in, kr, nil), mat.NewDense(out, kr, nil)
	c := 0
	for _, t := range terms {
		w := t.P / weight
		for j := range len(t.B) / out {
			for i := range in {
				Pt.Set(i, c, w*t.A[j*in+i])
			}
			for o := range out {
				Qt.Set(o, c, t.B[j*out+o])
			}
			c++
		}
	}
	m := opt.Method
	if m == Auto {
		switch {
		case kr <= min(in, out):
			m = Factored
		case R+opt.Oversample <= min(in, out)/4:
			m = Randomized
		default:
			m = Dense
		}
	}
	var U, V *mat.Dense // In×k, Out×k
	var sig []float64
	switch m {
	case Factored:
		if kr > min(in, out) {
			return nil, nil, nil, res, m, fmt.Errorf("lowrank: factored merge needs Σr = %d ≤ min(%d, %d)", kr, in, out)
		}
		q1, r1 := thinQR(Pt)
		q2, r2 := thinQR(Qt)
		var core mat.Dense
		core.Mul(r1, r2.T())
		var svd mat.SVD
		if !svd.Factorize(&core, mat.SVDThin) {
			return nil, nil, nil, res, m, fmt.Errorf("lowrank: SVD of the %d×%d core did not converge", kr, kr)
		}
		sig = svd.Values(nil)
		var uc, vc mat.Dense
		svd.UTo(&uc)
		svd.VTo(&vc)
		k := min(R, len(sig))
		U, V = mulCols(q1, &uc, k), mulCols(q2, &vc, k)
		for _, s := range sig {
			res.Total += s * s
		}
	case Dense, Randomized:
		var M mat.Dense
		M.Mul(Pt, Qt.T())
		if m == Dense {
			var svd mat.SVD
			if !svd.Factorize(&M, mat.SVDThin) {
				return nil, nil, nil, res, m, fmt.Errorf("lowrank: SVD of the %d×%d sum did not converge", in, out)
			}
			sig = svd.Values(nil)
			var u, v mat.Dense
			svd.UTo(&u)
			svd.VTo(&v)
			k := min(R, len(sig))
			U, V = colsOf(&u, k), colsOf(&v, k)
			for _, s := range sig {
				res.Total += s * s
			}
		} else {
			U, V, sig, err = randomizedSVD(&M, R, opt)
			if err != nil {
				return nil, nil, nil, res, m, err
			}
			res.Total = mat.Norm(&M, 2) // Frobenius for a matrix
			res.Total *= res.Total
		}
	default:
		return nil, nil, nil, res, m, fmt.Errorf("lowrank: unknown merge method %d", m)
	}
	kept := 0.0
	top := 0.0
	if len(sig) > 0 {
		top = sig[0]
	}
	for j := range R {
		if j >= len(sig) || sig[j] <= deadTol*top || sig[j] == 0 {
			dead[j] = true
			continue
		}
		s := sig[j]
		kept += s * s
		ca, cb := math.Sqrt(s), math.Sqrt(s)
		if opt.ANorm > 0 {
			ca, cb = opt.ANorm, s/opt.ANorm
		}
		for i := range in {
			A[j*in+i] = ca * U.At(i, j)
		}
		for o := range out {
			B[j*out+o] = cb * V.At(o, j)
		}
	}
	res.Dropped = max(0, res.Total-kept)
	return A, B, dead, res, m, nil
}

// thinQR returns the thin QR factors of a (m×n, m ≥ n): Q m×n with
// orthonormal columns and R n×n upper triangular.
func thinQR(a *mat.Dense) (q, r *mat.Dense) {
	m, n := a.Dims()
	g := mat.DenseCopyOf(a)
	raw := g.RawMatrix()
	tau := make([]float64, n)
	work := []float64{0}
	lapack64.Geqrf(raw, tau, work, -1)
	work = make([]float64, max(int(work[0]), 1))
	lapack64.Geqrf(raw, tau, work, len(work))
	r = mat.NewDense(n, n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			r.Set(i, j, raw.Data[i*raw.Stride+j])
		}
	}
	work = []float64{0}
	lapack64.Orgqr(raw, tau, work, -1)
	work = make([]float64, max(int(work[0]), 1))
	lapack64.Orgqr(raw, tau, work, len(work))
	return mat.NewDense(m, n, raw.Data), r
}

// mulCols returns q·x[:, :k].
func mulCols(q, x *mat.Dense, k int) *mat.Dense {
	var out mat.Dense
	out.Mul(q, x.Slice(0, x.RawMatrix().Rows, 0, k))
	return &out
}

func colsOf(x *mat.Dense, k int) *mat.Dense {
	r, _ := x.Dims()
	return mat.DenseCopyOf(x.Slice(0, r, 0, k))
}

// randomizedSVD returns the leading R singular triplets of M by a Gaussian
// sketch with power iterations (re-orthonormalised at every step).
func randomizedSVD(M *mat.Dense, R int, opt SVDOptions) (U, V *mat.Dense, sig []float64, err error) {
	in, out := M.Dims()
	l := min(R+opt.Oversample, in, out)
	rng := rand.New(rand.NewPCG(opt.Seed, 0x5ad5eed))
	omega := mat.NewDense(out, l, nil)
	raw := omega.RawMatrix()
	for k := range raw.Data {
		raw.Data[k] = rng.NormFloat64()
	}
	var Y, Z mat.Dense
	Y.Mul(M, omega)
	Q, _ := thinQR(&Y)
	for range opt.PowerIters {
		Z.Reset()
		Z.Mul(M.T(), Q)
		Qz, _ := thinQR(&Z)
		Y.Reset()
		Y.Mul(M, Qz)
		Q, _ = thinQR(&Y)
	}
	var small mat.Dense // l×Out
	small.Mul(Q.T(), M)
	var svd mat.SVD
	if !svd.Factorize(&small, mat.SVDThin) {
		return nil, nil, nil, fmt.Errorf("lowrank: SVD of the %d×%d sketch did not converge", l, out)
	}
	sig = svd.Values(nil)
	var ub, v mat.Dense
	svd.UTo(&ub)
	svd.VTo(&v)
	k := min(R, len(sig))
	return mulCols(Q, &ub, k), colsOf(&v, k), sig[:k], nil
}
