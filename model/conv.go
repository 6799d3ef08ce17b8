package model

import (
	"fmt"
	"slices"
	"strings"
)

// Convolutional networks: a sequence of 2-D convolutions (valid, stride 1,
// each followed by a ReLU), max-pools and fully connected layers (a ReLU
// after each but the last), without biases, as in the FRL reference.
//
// Activations are stored channels-last (NHWC): pixel (y, x), channel c of
// an h×w×c map is at (y·w + x)·c + c. A convolution's kernel tensor is a
// weight layer of In = k·k·in_channels rows by Out = out_channels columns,
// input-major like a fully connected layer: the edge from input channel ci
// at kernel offset (ky, kx) to output channel co is
//
//	e = ((ky·k + kx)·in_channels + ci)·Out + co
//
// so a kernel row ky of an output pixel reads k·in_channels contiguous
// inputs against k·in_channels contiguous weight rows, and the convolution
// runs directly, without an im2col copy. Flattening before the first fully
// connected layer keeps this order (PyTorch flattens channels first: the
// same network up to a fixed permutation of that layer's input rows, which
// the random initialisation does not see).
//
// Each weight layer is one layer of edges for the supermask (fan-in In),
// its ranking, the vote and the wire formats, like a fully connected layer.

// OpKind is the kind of a ConvArch operation.
type OpKind uint8

// The operations of a ConvArch.
const (
	OpConv OpKind = iota + 1 // Size×Size convolution to Out channels, valid, stride 1, then ReLU
	OpPool                   // Size×Size max-pool, stride Size (a remainder is dropped)
	OpFC                     // fully connected to Out features; ReLU unless it is the last operation
)

// Op is one operation of a ConvArch.
type Op struct {
	Kind OpKind
	Out  int // output channels (OpConv) or features (OpFC)
	Size int // kernel (OpConv) or window (OpPool) side
}

// ConvArch is a convolutional network's shape.
type ConvArch struct {
	Name    string // "lenet"
	H, W, C int    // input height, width, channels
	Ops     []Op
}

// LeNet is the FRL reference's MNIST LeNet, the network of PyTorch's MNIST
// example: conv 1→32 3×3, ReLU, conv 32→64 3×3, ReLU, max-pool 2×2,
// flatten (9216), fc 9216→128, ReLU, fc 128→10.
func LeNet() ConvArch {
	return ConvArch{Name: "lenet", H: 28, W: 28, C: 1, Ops: []Op{
		{Kind: OpConv, Out: 32, Size: 3},
		{Kind: OpConv, Out: 64, Size: 3},
		{Kind: OpPool, Size: 2},
		{Kind: OpFC, Out: 128},
		{Kind: OpFC, Out: 10},
	}}
}

func (a ConvArch) clone() ConvArch {
	a.Ops = slices.Clone(a.Ops)
	return a
}

// InputDim is the number of input features: H·W·C.
func (a ConvArch) InputDim() int { return a.H * a.W * a.C }

// String describes the network, e.g. "lenet [28x28x1 conv32k3 conv64k3
// pool2 fc128 fc10]".
func (a ConvArch) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%dx%dx%d", a.Name, a.H, a.W, a.C)
	for _, op := range a.Ops {
		switch op.Kind {
		case OpConv:
			fmt.Fprintf(&b, " conv%dk%d", op.Out, op.Size)
		case OpPool:
			fmt.Fprintf(&b, " pool%d", op.Size)
		case OpFC:
			fmt.Fprintf(&b, " fc%d", op.Out)
		}
	}
	b.WriteString("]")
	return b.String()
}

// opPlan is an operation with its input and output dimensions.
type opPlan struct {
	Op
	ih, iw, ic int
	oh, ow, oc int
	layer      int  // weight layer index, -1 for a pool
	relu       bool // the output passes a ReLU
	// zeroGrad: the output is non-negative and its gradient is zero where it
	// is zero (a ReLU's output, or a max-pool of one).
	zeroGrad bool
}

func (p *opPlan) inLen() int  { return p.ih * p.iw * p.ic }
func (p *opPlan) outLen() int { return p.oh * p.ow * p.oc }

// plan checks the architecture and lays out its operations.
func (a ConvArch) plan() ([]opPlan, error) {
	if a.H <= 0 || a.W <= 0 || a.C <= 0 || a.H*a.W*a.C > 1<<24 {
		return nil, fmt.Errorf("model: conv input %dx%dx%d out of range", a.H, a.W, a.C)
	}
	if len(a.Ops) == 0 || a.Ops[len(a.Ops)-1].Kind != OpFC {
		return nil, fmt.Errorf("model: a conv network must end with a fully connected layer")
	}
	h, w, c := a.H, a.W, a.C
	var out []opPlan
	layers := 0
	zeroGrad := false
	seenFC := false
	for k, op := range a.Ops {
		p := opPlan{Op: op, ih: h, iw: w, ic: c, layer: -1}
		switch op.Kind {
		case OpConv:
			if seenFC {
				return nil, fmt.Errorf("model: op %d: a convolution after a fully connected layer", k)
			}
			if op.Size < 1 || op.Size > h || op.Size > w || op.Out < 1 {
				return nil, fmt.Errorf("model: op %d: conv %d channels of %dx%d on a %dx%d map", k, op.Out, op.Size, op.Size, h, w)
			}
			p.oh, p.ow, p.oc = h-op.Size+1, w-op.Size+1, op.Out
			p.layer, p.relu, p.zeroGrad = layers, true, true
			layers++
		case OpPool:
			if seenFC {
				return nil, fmt.Errorf("model: op %d: a pool after a fully connected layer", k)
			}
			if op.Size < 1 || op.Size > h || op.Size > w {
				return nil, fmt.Errorf("model: op %d: pool %dx%d on a %dx%d map", k, op.Size, op.Size, h, w)
			}
			p.oh, p.ow, p.oc = h/op.Size, w/op.Size, c
			p.zeroGrad = zeroGrad
		case OpFC:
			if op.Out < 1 {
				return nil, fmt.Errorf("model: op %d: fully connected to %d features", k, op.Out)
			}
			seenFC = true
			p.oh, p.ow, p.oc = 1, 1, op.Out
			p.layer = layers
			layers++
			p.relu = k < len(a.Ops)-1
			p.zeroGrad = p.relu
		default:
			return nil, fmt.Errorf("model: op %d has unknown kind %d", k, op.Kind)
		}
		if int64(p.inLen())*int64(max(p.oc, 1)) > 1<<31-1 {
			return nil, fmt.Errorf("model: op %d is too large", k)
		}
		// Sparse row lists index a layer's inputs (and a convolution's
		// outputs) with 16 bits.
		if p.layer >= 0 && (op.Kind == OpFC && p.inLen() > 1<<16 || p.Size*p.Size*p.ic > 1<<16 || p.oc > 1<<16) {
			return nil, fmt.Errorf("model: op %d has more than 65536 inputs or outputs", k)
		}
		zeroGrad = p.zeroGrad
		h, w, c = p.oh, p.ow, p.oc
		out = append(out, p)
	}
	if layers > 64 {
		return nil, fmt.Errorf("model: %d weight layers, at most 64", layers)
	}
	return out, nil
}

// Shapes returns each weight layer's (In, Out): (k·k·in_channels,
// out_channels) for a convolution, (inputs, outputs) for a fully connected
// layer.
func (a ConvArch) Shapes() ([][2]int, error) {
	plan, err := a.plan()
	if err != nil {
		return nil, err
	}
	var out [][2]int
	for _, p := range plan {
		switch p.Kind {
		case OpConv:
			out = append(out, [2]int{p.Size * p.Size * p.ic, p.oc})
		case OpFC:
			out = append(out, [2]int{p.inLen(), p.oc})
		}
	}
	return out, nil
}

// Classes is the number of outputs.
func (a ConvArch) Classes() int { return a.Ops[len(a.Ops)-1].Out }

// convEngine holds one goroutine's buffers for the forward and backward
// passes of a ConvArch. Nothing is allocated after newConvEngine.
type convEngine struct {
	plan []opPlan
	ops  []int // weight layer index -> op index
	maxB int
	// act[k] is the input of op k for the batch (act[0]: the images,
	// dense), act[len(plan)] the logits.
	act [][]float32
	// d[k] is the gradient of the mean loss with respect to act[k], times
	// the ReLU's derivative when op k-1 has one (d[0] is not used).
	d    [][]float32
	pidx [][]int32   // per pool op: the input index of each output's maximum
	gw   [][]float32 // per conv layer: the whole weight gradient
	wt   [][]float32 // per conv layer: its kernel transposed (Out × In)
	idx  []uint16    // sparseRows' lists
	val  []float32
	acc  []float32 // a pixel's input gradient, kernel-row order
	// A convolution's input, its non-zero entries per pixel: pixel q's are
	// nzCh[nzStart[q]:nzStart[q+1]] (channels) and nzVal (values).
	nzStart []int32
	nzCh    []uint16
	nzVal   []float32
	grow    []float32 // a fully connected layer's gradient row
	zeros   []float32
	probs   []float32
}

func newConvEngine(arch ConvArch, maxB int) *convEngine {
	plan, err := arch.plan()
	if err != nil {
		panic(err) // the network constructors checked it
	}
	n := len(plan)
	e := &convEngine{plan: plan, maxB: maxB,
		act: make([][]float32, n+1), d: make([][]float32, n+1),
		pidx: make([][]int32, n), probs: make([]float32, arch.Classes())}
	maxOut, lists, accLen, pixels, nz := 0, 0, 0, 0, 0
	for k := range plan {
		p := &plan[k]
		e.act[k] = make([]float32, maxB*p.inLen())
		if k > 0 {
			e.d[k] = make([]float32, maxB*p.inLen())
		}
		switch p.Kind {
		case OpPool:
			e.pidx[k] = make([]int32, maxB*p.outLen())
		case OpConv:
			e.ops = append(e.ops, k)
			n := p.Size * p.Size * p.ic
			e.gw = append(e.gw, make([]float32, n*p.oc))
			e.wt = append(e.wt, make([]float32, n*p.oc))
			lists = max(lists, n, p.oc, min(maxB*p.oh*p.ow, 1<<16))
			accLen = max(accLen, n)
			pixels = max(pixels, p.ih*p.iw)
			nz = max(nz, p.inLen())
		case OpFC:
			e.ops = append(e.ops, k)
			e.gw = append(e.gw, nil)
			e.wt = append(e.wt, nil)
			maxOut = max(maxOut, p.oc)
			lists = max(lists, p.inLen())
		}
	}
	last := &plan[n-1]
	e.act[n] = make([]float32, maxB*last.outLen())
	e.d[n] = make([]float32, maxB*last.outLen())
	e.grow = make([]float32, maxOut)
	e.idx = make([]uint16, 0, lists)
	e.val = make([]float32, 0, lists)
	e.acc = make([]float32, accLen)
	e.nzStart = make([]int32, pixels+1)
	e.nzCh = make([]uint16, 0, nz)
	e.nzVal = make([]float32, 0, nz)
	e.zeros = make([]float32, maxOut)
	return e
}

func (e *convEngine) batchCap() int { return e.maxB }

// forward implements netEngine; colsum is not used (the images are dense).
func (e *convEngine) forward(eff [][]float32, _ []float32, in *Inputs, imgs []int32) {
	B := len(imgs)
	dim := e.plan[0].inLen()
	x := e.act[0][:B*dim]
	for b, k := range imgs {
		xb := x[b*dim : (b+1)*dim]
		fill(xb, in.Offset)
		lo, hi := in.Ptr[k], in.Ptr[k+1]
		for p, i := range in.Idx[lo:hi] {
			xb[i] = in.Val[int(lo)+p] + in.Offset
		}
	}
	for k := range e.plan {
		p := &e.plan[k]
		switch p.Kind {
		case OpConv:
			e.convForward(p, eff[p.layer], e.act[k], e.act[k+1], B)
		case OpPool:
			e.poolForward(p, e.act[k], e.act[k+1], e.pidx[k], B)
		case OpFC:
			e.fcForward(p, eff[p.layer], e.act[k], e.act[k+1], B)
		}
	}
}

// convForward: for each output pixel, its patch's non-zero inputs against
// their kernel rows, added in input order (the vector build keeps the
// pixel's outputs in registers across them: sparseRowsVector, the same bits
// as the axpy loop). Each image's non-zero inputs are listed once per
// input pixel (nzStart, nzCh, nzVal), and a patch joins the lists of its
// pixels.
func (e *convEngine) convForward(p *opPlan, w, x, y []float32, B int) {
	K, ih, iw, ic, oh, ow, oc := p.Size, p.ih, p.iw, p.ic, p.oh, p.ow, p.oc
	inLen, outLen, row := p.inLen(), p.outLen(), p.Size*p.ic
	for b := 0; b < B; b++ {
		xb := x[b*inLen : (b+1)*inLen]
		yb := y[b*outLen : (b+1)*outLen]
		start, ch, vals := e.nzStart[:ih*iw+1], e.nzCh[:0], e.nzVal[:0]
		for q := 0; q < ih*iw; q++ {
			start[q] = int32(len(ch))
			for c, v := range xb[q*ic : (q+1)*ic] {
				if v != 0 {
					ch = append(ch, uint16(c))
					vals = append(vals, v)
				}
			}
		}
		start[ih*iw] = int32(len(ch))
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				o := yb[(oy*ow+ox)*oc : (oy*ow+ox+1)*oc]
				fill(o, 0)
				idx, val := e.idx[:cap(e.idx)], e.val[:cap(e.val)]
				n := 0
				for ky := 0; ky < K; ky++ {
					for kx := 0; kx < K; kx++ {
						q := (oy+ky)*iw + ox + kx
						lo, hi := start[q], start[q+1]
						first := uint16(ky*row + kx*ic)
						dst := idx[n : n+int(hi-lo)]
						for i, c := range ch[lo:hi] {
							dst[i] = first + c
						}
						n += copy(val[n:], vals[lo:hi])
					}
				}
				sparseRows(o, w, oc, idx[:n], val[:n])
				relu(o)
			}
		}
	}
}

// sparseRows adds val[p]·w[idx[p],:] to z (O columns) for every p, in order.
func sparseRows(z, w []float32, O int, idx []uint16, val []float32) {
	if sparseRowsVector(z, w, O, idx, val) {
		return
	}
	for p, i := range idx {
		r := int(i) * O
		axpy(val[p], w[r:r+O], z)
	}
}

func (e *convEngine) poolForward(p *opPlan, x, y []float32, idx []int32, B int) {
	S, iw, c, oh, ow := p.Size, p.iw, p.ic, p.oh, p.ow
	inLen, outLen := p.inLen(), p.outLen()
	for b := 0; b < B; b++ {
		xb := x[b*inLen : (b+1)*inLen]
		yb := y[b*outLen : (b+1)*outLen]
		ib := idx[b*outLen : (b+1)*outLen]
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				for ch := 0; ch < c; ch++ {
					at := ((oy*S)*iw+ox*S)*c + ch
					best, bi := xb[at], at
					if S == 2 {
						// The window's other three, in the same order.
						for _, j := range [3]int{at + c, at + iw*c, at + iw*c + c} {
							if xb[j] > best {
								best, bi = xb[j], j
							}
						}
					} else {
						for dy := 0; dy < S; dy++ {
							for dx := 0; dx < S; dx++ {
								j := ((oy*S+dy)*iw+ox*S+dx)*c + ch
								if xb[j] > best {
									best, bi = xb[j], j
								}
							}
						}
					}
					o := (oy*ow+ox)*c + ch
					yb[o] = best
					ib[o] = int32(bi)
				}
			}
		}
	}
}

func (e *convEngine) fcForward(p *opPlan, w, x, y []float32, B int) {
	I, O := p.inLen(), p.oc
	for b := 0; b < B; b++ {
		yb := y[b*O : (b+1)*O]
		fill(yb, 0)
		idx, val := e.idx[:0], e.val[:0]
		for i, v := range x[b*I : (b+1)*I] {
			if v != 0 {
				idx = append(idx, uint16(i))
				val = append(val, v)
			}
		}
		sparseRows(yb, w, O, idx, val)
		if p.relu {
			relu(yb)
		}
	}
}

// loss implements netEngine.
func (e *convEngine) loss(in *Inputs, imgs []int32, grad bool) (float64, int) {
	n := len(e.plan)
	return batchLoss(e.act[n], e.d[n], e.probs, e.plan[n-1].oc, in, imgs, grad)
}

// backward implements netEngine: it propagates the logits' gradient down
// to the first operation, computes the convolutions' weight gradients in
// full and leaves those of the fully connected layers to rowGrad.
func (e *convEngine) backward(eff [][]float32, _ *Inputs, imgs []int32) {
	B := len(imgs)
	for k := len(e.plan) - 1; k >= 0; k-- {
		p := &e.plan[k]
		// The input's gradient is needed below the first operation only;
		// it is zero where the input is (a ReLU's output or a pool of one).
		var dx []float32
		mask := false
		if k > 0 {
			dx = e.d[k][:B*p.inLen()]
			mask = e.plan[k-1].zeroGrad
		}
		switch p.Kind {
		case OpConv:
			e.convBackward(p, eff[p.layer], e.wt[p.layer], e.act[k], e.d[k+1], dx, e.gw[p.layer], mask, B)
		case OpPool:
			if dx != nil {
				fill(dx, 0)
				dy := e.d[k+1][:B*p.outLen()]
				outLen, inLen := p.outLen(), p.inLen()
				for b := 0; b < B; b++ {
					ib := e.pidx[k][b*outLen : (b+1)*outLen]
					for o, g := range dy[b*outLen : (b+1)*outLen] {
						dx[b*inLen+int(ib[o])] += g
					}
				}
			}
		case OpFC:
			if dx != nil {
				I, O := p.inLen(), p.oc
				w, x, dy := eff[p.layer], e.act[k], e.d[k+1]
				for b := 0; b < B; b++ {
					db := dy[b*O : (b+1)*O]
					xb := x[b*I : (b+1)*I]
					pb := dx[b*I : (b+1)*I]
					for i, v := range xb {
						if mask && v <= 0 {
							pb[i] = 0
						} else {
							pb[i] = dot(db, w[i*O:(i+1)*O])
						}
					}
				}
			}
		}
	}
}

// convBackward computes a convolution's weight gradient into gw and, if dx
// is not nil, its input's gradient (zero where mask and the input is not
// positive). Weight row r (kernel row ky, offset j in it) gathers the
// output pixels whose input at r is non-zero and adds input × the pixel's
// output gradient, pixels in order; a pixel's input gradient is
// Σ_o dy[o]·Wᵀ[o,:] over its non-zero dy, through the transposed kernel wt.
// Both are sparseRows, so the vector build keeps the accumulators in
// registers.
func (e *convEngine) convBackward(p *opPlan, w, wt, x, dy, dx, gw []float32, mask bool, B int) {
	K, iw, ic, oh, ow, oc := p.Size, p.iw, p.ic, p.oh, p.ow, p.oc
	inLen, row := p.inLen(), p.Size*p.ic
	rows := K * row
	P := oh * ow
	fill(gw, 0)
	if B*P <= 1<<16 {
		for r := 0; r < rows; r++ {
			ky, j := r/row, r%row
			idx, val := e.idx[:0], e.val[:0]
			for b := 0; b < B; b++ {
				xb := x[b*inLen : (b+1)*inLen]
				for oy := 0; oy < oh; oy++ {
					at := (oy+ky)*iw*ic + j
					for ox := 0; ox < ow; ox++ {
						if v := xb[at+ox*ic]; v != 0 {
							idx = append(idx, uint16((b*oh+oy)*ow+ox))
							val = append(val, v)
						}
					}
				}
			}
			sparseRows(gw[r*oc:(r+1)*oc], dy, oc, idx, val)
		}
	} else {
		for b := 0; b < B; b++ {
			xb := x[b*inLen : (b+1)*inLen]
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					g := dy[((b*oh+oy)*ow+ox)*oc : ((b*oh+oy)*ow+ox+1)*oc]
					for ky := 0; ky < K; ky++ {
						base := ((oy+ky)*iw + ox) * ic
						for j, v := range xb[base : base+row] {
							if v != 0 {
								r := ky*row + j
								axpy(v, g, gw[r*oc:(r+1)*oc])
							}
						}
					}
				}
			}
		}
	}
	if dx == nil {
		return
	}
	fill(dx, 0)
	// wt = Wᵀ: a row of k·k·in_channels weights per output channel.
	for r := 0; r < rows; r++ {
		for o, v := range w[r*oc : (r+1)*oc] {
			wt[o*rows+r] = v
		}
	}
	acc := e.acc[:rows]
	for b := 0; b < B; b++ {
		xb := x[b*inLen : (b+1)*inLen]
		db := dx[b*inLen : (b+1)*inLen]
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				g := dy[((b*oh+oy)*ow+ox)*oc : ((b*oh+oy)*ow+ox+1)*oc]
				idx, val := e.idx[:0], e.val[:0]
				for o, v := range g {
					if v != 0 {
						idx = append(idx, uint16(o))
						val = append(val, v)
					}
				}
				if len(idx) == 0 {
					continue
				}
				fill(acc, 0)
				sparseRows(acc, wt, rows, idx, val)
				for ky := 0; ky < K; ky++ {
					base := ((oy+ky)*iw + ox) * ic
					xr, dr, ar := xb[base:base+row], db[base:base+row], acc[ky*row:(ky+1)*row]
					for j, v := range xr {
						if !mask || v > 0 {
							dr[j] += ar[j]
						}
					}
				}
			}
		}
	}
}

// rowGrad implements netEngine.
func (e *convEngine) rowGrad(l, i, B int, _ float32) []float32 {
	k := e.ops[l]
	p := &e.plan[k]
	O := p.oc
	if p.Kind == OpConv {
		return e.gw[l][i*O : (i+1)*O]
	}
	I := p.inLen()
	x, dy := e.act[k], e.d[k+1]
	g := e.grow[:O]
	started := false
	for b := 0; b < B; b++ {
		v := x[b*I+i]
		if v == 0 {
			continue
		}
		if !started {
			scaleInto(v, dy[b*O:(b+1)*O], g)
			started = true
		} else {
			axpy(v, dy[b*O:(b+1)*O], g)
		}
	}
	if !started {
		return e.zeros[:O]
	}
	return g
}
