package rw

// A minimal decoder of remote-write requests, for tests of the encoders
// and of the load generator. It is not used to receive data.

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// DecodedSeries is a series as Decode returns it.
type DecodedSeries struct {
	Labels    string // sorted name="value" pairs
	T         []int64
	V         []float64
	Exemplars []string
	Type      uint64
}

// fields walks the fields of a message.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		default:
			return fmt.Errorf("unexpected wire type %d", typ)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func fmtLabels(pairs [][2]string) string {
	sort.Slice(pairs, func(a, b int) bool { return pairs[a][0] < pairs[b][0] })
	var sb strings.Builder
	for i, p := range pairs {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%s=%q", p[0], p[1])
	}
	return sb.String()
}

func decodeSample(v []byte) (t int64, val float64, err error) {
	err = fields(v, func(num protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
		switch num {
		case 1:
			val = math.Float64frombits(x)
		case 2:
			t = int64(x)
		}
		return nil
	})
	return
}

func decodeV1(b []byte) ([]DecodedSeries, error) {
	var out []DecodedSeries
	err := fields(b, func(num protowire.Number, _ protowire.Type, v []byte, _ uint64) error {
		if num != 1 {
			return fmt.Errorf("unexpected WriteRequest field %d", num)
		}
		var s DecodedSeries
		var pairs [][2]string
		err := fields(v, func(num protowire.Number, _ protowire.Type, v []byte, _ uint64) error {
			switch num {
			case 1:
				var p [2]string
				if err := fields(v, func(num protowire.Number, _ protowire.Type, v []byte, _ uint64) error {
					p[num-1] = string(v)
					return nil
				}); err != nil {
					return err
				}
				pairs = append(pairs, p)
			case 2:
				t, val, err := decodeSample(v)
				if err != nil {
					return err
				}
				s.T = append(s.T, t)
				s.V = append(s.V, val)
			case 3:
				var ex [][2]string
				var ev float64
				var et int64
				if err := fields(v, func(num protowire.Number, _ protowire.Type, v []byte, x uint64) error {
					switch num {
					case 1:
						var p [2]string
						_ = fields(v, func(num protowire.Number, _ protowire.Type, v []byte, _ uint64) error {
							p[num-1] = string(v)
							return nil
						})
						ex = append(ex, p)
					case 2:
						ev = math.Float64frombits(x)
					case 3:
						et = int64(x)
					}
					return nil
				}); err != nil {
					return err
				}
				s.Exemplars = append(s.Exemplars, fmt.Sprintf("%s %g %d", fmtLabels(ex), ev, et))
			default:
				return fmt.Errorf("unexpected TimeSeries field %d", num)
			}
			return nil
		})
		s.Labels = fmtLabels(pairs)
		out = append(out, s)
		return err
	})
	return out, err
}

func unpackRefs(v []byte) ([]uint64, error) {
	var refs []uint64
	for len(v) > 0 {
		x, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		refs = append(refs, x)
		v = v[n:]
	}
	return refs, nil
}

func decodeV2(b []byte) ([]DecodedSeries, error) {
	var syms []string
	var raw [][]byte
	if err := fields(b, func(num protowire.Number, _ protowire.Type, v []byte, _ uint64) error {
		switch num {
		case 4:
			syms = append(syms, string(v))
		case 5:
			raw = append(raw, v)
		default:
			return fmt.Errorf("unexpected Request field %d", num)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if len(syms) == 0 || syms[0] != "" {
		return nil, fmt.Errorf("symbol table must start with the empty string")
	}
	resolve := func(refs []uint64) ([][2]string, error) {
		if len(refs)%2 != 0 {
			return nil, fmt.Errorf("odd number of label refs")
		}
		var pairs [][2]string
		for i := 0; i < len(refs); i += 2 {
			if refs[i] >= uint64(len(syms)) || refs[i+1] >= uint64(len(syms)) {
				return nil, fmt.Errorf("symbol ref out of range")
			}
			pairs = append(pairs, [2]string{syms[refs[i]], syms[refs[i+1]]})
		}
		return pairs, nil
	}
	var out []DecodedSeries
	for _, r := range raw {
		var s DecodedSeries
		err := fields(r, func(num protowire.Number, _ protowire.Type, v []byte, _ uint64) error {
			switch num {
			case 1:
				refs, err := unpackRefs(v)
				if err != nil {
					return err
				}
				pairs, err := resolve(refs)
				if err != nil {
					return err
				}
				s.Labels = fmtLabels(pairs)
			case 2:
				t, val, err := decodeSample(v)
				if err != nil {
					return err
				}
				s.T = append(s.T, t)
				s.V = append(s.V, val)
			case 4:
				var ex [][2]string
				var ev float64
				var et int64
				if err := fields(v, func(num protowire.Number, _ protowire.Type, v []byte, x uint64) error {
					switch num {
					case 1:
						refs, err := unpackRefs(v)
						if err != nil {
							return err
						}
						ex, err = resolve(refs)
						return err
					case 2:
						ev = math.Float64frombits(x)
					case 3:
						et = int64(x)
					}
					return nil
				}); err != nil {
					return err
				}
				s.Exemplars = append(s.Exemplars, fmt.Sprintf("%s %g %d", fmtLabels(ex), ev, et))
			case 5:
				return fields(v, func(num protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
					if num == 1 {
						s.Type = x
					}
					return nil
				})
			default:
				return fmt.Errorf("unexpected TimeSeries field %d", num)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Decode decodes an uncompressed request of the protocol named by the
// Content-Type header value.
func Decode(raw []byte, contentType string) ([]DecodedSeries, error) {
	if strings.Contains(contentType, "io.prometheus.write.v2.Request") {
		return decodeV2(raw)
	}
	return decodeV1(raw)
}
