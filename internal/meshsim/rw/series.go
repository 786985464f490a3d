package rw

import (
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/encoding/protowire"
)

// SeriesSet holds series whose labels are encoded once, so requests of
// fresh samples for contiguous ranges of them can be built with little
// more than copying. It is read-only after NewSeriesSet and safe for
// concurrent use; each goroutine needs its own Scratch.
type SeriesSet struct {
	v1Labels [][]byte   // per series: the encoded TimeSeries.labels fields
	refs     [][]uint32 // per series: global symbol ids, name/value pairs
	symbols  []string   // global symbol table
	types    []uint8
	lazy     []labels.Labels // set instead of the above by NewLazySeriesSet
}

// NewLazySeriesSet keeps the label sets and encodes them into each request
// instead of once: more CPU per request, no memory per series beyond the
// label sets (tens of millions of series fit).
func NewLazySeriesSet(lsets []labels.Labels, types []uint8) *SeriesSet {
	if types == nil {
		types = make([]uint8, len(lsets))
	}
	return &SeriesSet{lazy: lsets, types: types}
}

// NewSeriesSet encodes the labels of every series. types may be nil.
func NewSeriesSet(lsets []labels.Labels, types []uint8) *SeriesSet {
	s := &SeriesSet{
		v1Labels: make([][]byte, len(lsets)),
		refs:     make([][]uint32, len(lsets)),
		types:    make([]uint8, len(lsets)),
	}
	syms := NewSymbols()
	// One backing array per kind keeps the set compact.
	var v1 []byte
	var refs []uint32
	v1Off := make([]int, len(lsets)+1)
	refOff := make([]int, len(lsets)+1)
	for i, ls := range lsets {
		v1 = appendV1Labels(v1, v1TSLabels, ls)
		ls.Range(func(l labels.Label) {
			refs = append(refs, syms.Ref(l.Name), syms.Ref(l.Value))
		})
		v1Off[i+1] = len(v1)
		refOff[i+1] = len(refs)
		if types != nil {
			s.types[i] = types[i]
		}
	}
	for i := range lsets {
		s.v1Labels[i] = v1[v1Off[i]:v1Off[i+1]:v1Off[i+1]]
		s.refs[i] = refs[refOff[i]:refOff[i+1]:refOff[i+1]]
	}
	s.symbols = syms.list
	return s
}

// Len returns the number of series.
func (s *SeriesSet) Len() int {
	if s.lazy != nil {
		return len(s.lazy)
	}
	return len(s.v1Labels)
}

// Scratch is per-goroutine state for encoding 2.0 requests.
type Scratch struct {
	local []uint32 // global symbol id -> local id + 1 (0: not yet in this request)
	used  []uint32 // global ids used in this request
	list  []string
	ts    []byte
	refs  []uint32
	lb    []byte            // labels of one series (lazy 1.0)
	syms  map[string]uint32 // symbol -> local id + 1 (lazy 2.0)
}

// NewScratch returns scratch space for s.
func (s *SeriesSet) NewScratch() *Scratch {
	return &Scratch{local: make([]uint32, len(s.symbols))}
}

// AppendV1 appends a prometheus.WriteRequest with one sample (timestamp t,
// value vals[i-lo]) for each series i in [lo, hi).
func (s *SeriesSet) AppendV1(dst []byte, lo, hi int, t int64, vals []float64) []byte {
	ss := sampleSize(t)
	sampleField := 1 + protowire.SizeVarint(uint64(ss)) + ss
	var tmp []byte
	for i := lo; i < hi; i++ {
		var lb []byte
		if s.lazy != nil {
			tmp = appendV1Labels(tmp[:0], v1TSLabels, s.lazy[i])
			lb = tmp
		} else {
			lb = s.v1Labels[i]
		}
		n := len(lb) + sampleField
		dst = protowire.AppendTag(dst, v1WriteTimeseries, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(n))
		dst = append(dst, lb...)
		dst = appendSample(dst, v1TSSamples, vals[i-lo], t)
	}
	return dst
}

// globalRefs are series i's global symbol ids; none for a lazy set.
func (s *SeriesSet) globalRefs(i int) []uint32 {
	if s.lazy != nil {
		return nil
	}
	return s.refs[i]
}

// localRef is the request-local id of a symbol, added to the request's
// table on first use (lazy sets).
func (sc *Scratch) localRef(str string) uint32 {
	id := sc.syms[str]
	if id == 0 {
		sc.list = append(sc.list, str)
		id = uint32(len(sc.list))
		sc.syms[str] = id
	}
	return id - 1
}

// AppendV2 appends an io.prometheus.write.v2.Request with one sample per
// series in [lo, hi), as AppendV1, with a symbol table of only the
// symbols those series use and their metric type as metadata.
func (s *SeriesSet) AppendV2(dst []byte, sc *Scratch, lo, hi int, t int64, vals []float64) []byte {
	sc.list = append(sc.list[:0], "")
	sc.used = sc.used[:0]
	sc.ts = sc.ts[:0]
	ss := sampleSize(t)
	if s.lazy != nil {
		if sc.syms == nil {
			sc.syms = map[string]uint32{}
		}
		clear(sc.syms)
		sc.syms[""] = 1 // symbol 0 is the empty string
	}
	for i := lo; i < hi; i++ {
		sc.refs = sc.refs[:0]
		if s.lazy != nil {
			s.lazy[i].Range(func(l labels.Label) {
				sc.refs = append(sc.refs, sc.localRef(l.Name), sc.localRef(l.Value))
			})
		}
		for _, g := range s.globalRefs(i) {
			l := sc.local[g]
			if l == 0 {
				if s.symbols[g] == "" {
					sc.refs = append(sc.refs, 0)
					continue
				}
				sc.list = append(sc.list, s.symbols[g])
				l = uint32(len(sc.list) - 1 + 1)
				sc.local[g] = l
				sc.used = append(sc.used, g)
			}
			sc.refs = append(sc.refs, l-1)
		}
		refsLen := 0
		for _, r := range sc.refs {
			refsLen += protowire.SizeVarint(uint64(r))
		}
		n := 1 + protowire.SizeVarint(uint64(refsLen)) + refsLen +
			1 + protowire.SizeVarint(uint64(ss)) + ss +
			1 + 1 + metadataSize(s.types[i])
		sc.ts = protowire.AppendTag(sc.ts, v2ReqTimeseries, protowire.BytesType)
		sc.ts = protowire.AppendVarint(sc.ts, uint64(n))
		sc.ts = appendPackedRefs(sc.ts, v2TSLabelsRefs, sc.refs)
		sc.ts = appendSample(sc.ts, v2TSSamples, vals[i-lo], t)
		sc.ts = appendMetadata(sc.ts, s.types[i])
	}
	for _, g := range sc.used {
		sc.local[g] = 0
	}
	dst = appendSymbols(dst, sc.list)
	return append(dst, sc.ts...)
}
