package spanblock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/bits-and-blooms/bloom/v3"
)

// The index and bloom files are small binary files read whole when a block
// is opened. Both start with a 4-byte magic and a 4-byte big-endian
// version and end with the CRC32-Castagnoli of everything before it, so a
// truncated or damaged file is refused before anything in it is used.
//
// index (version 1), after the header:
//
//	uint32 row group count
//	per row group, in file order (56 bytes):
//	  [16]byte first trace id, [16]byte last trace id,
//	  uint64 min start, uint64 max start (Unix ns),
//	  uint32 spans, uint32 traces
//
// bloom (version 1), after the header:
//
//	uint64 m (bits), uint32 k (hash functions), uint32 reserved (0),
//	ceil(m/64) uint64 words of the bloom/v3 bit set
//
// Integers are big-endian.
const (
	indexMagic   = "MLTI"
	bloomMagic   = "MLTB"
	formatV1     = 1
	headerLen    = 8
	crcLen       = 4
	rgEntryLen   = 16 + 16 + 8 + 8 + 4 + 4
	maxBloomHash = 64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// rowGroupEntry bounds one row group of data.parquet. A trace's spans are
// all in one row group, so the entries' trace id ranges do not overlap.
type rowGroupEntry struct {
	MinID, MaxID       [16]byte
	MinStart, MaxStart uint64
	Spans, Traces      uint32
}

func encodeIndex(entries []rowGroupEntry) []byte {
	b := make([]byte, 0, headerLen+4+len(entries)*rgEntryLen+crcLen)
	b = append(b, indexMagic...)
	b = binary.BigEndian.AppendUint32(b, formatV1)
	b = binary.BigEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = append(b, e.MinID[:]...)
		b = append(b, e.MaxID[:]...)
		b = binary.BigEndian.AppendUint64(b, e.MinStart)
		b = binary.BigEndian.AppendUint64(b, e.MaxStart)
		b = binary.BigEndian.AppendUint32(b, e.Spans)
		b = binary.BigEndian.AppendUint32(b, e.Traces)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// checkFrame verifies magic, version and checksum and returns the body
// between header and checksum.
func checkFrame(b []byte, magic string) ([]byte, error) {
	if len(b) < headerLen+crcLen {
		return nil, fmt.Errorf("%d bytes, shorter than header and checksum", len(b))
	}
	if string(b[:4]) != magic {
		return nil, fmt.Errorf("bad magic %q, want %q", b[:4], magic)
	}
	if v := binary.BigEndian.Uint32(b[4:8]); v != formatV1 {
		return nil, fmt.Errorf("unsupported version %d", v)
	}
	end := len(b) - crcLen
	if want, got := binary.BigEndian.Uint32(b[end:]), crc32.Checksum(b[:end], castagnoli); want != got {
		return nil, fmt.Errorf("checksum mismatch: stored %08x, computed %08x", want, got)
	}
	return b[headerLen:end], nil
}

func decodeIndex(b []byte) ([]rowGroupEntry, error) {
	body, err := checkFrame(b, indexMagic)
	if err != nil {
		return nil, err
	}
	if len(body) < 4 {
		return nil, errors.New("no row group count")
	}
	n := binary.BigEndian.Uint32(body)
	body = body[4:]
	if uint64(len(body)) != uint64(n)*rgEntryLen {
		return nil, fmt.Errorf("%d row groups need %d bytes, have %d", n, uint64(n)*rgEntryLen, len(body))
	}
	entries := make([]rowGroupEntry, n)
	for i := range entries {
		e := &entries[i]
		copy(e.MinID[:], body[0:16])
		copy(e.MaxID[:], body[16:32])
		e.MinStart = binary.BigEndian.Uint64(body[32:])
		e.MaxStart = binary.BigEndian.Uint64(body[40:])
		e.Spans = binary.BigEndian.Uint32(body[48:])
		e.Traces = binary.BigEndian.Uint32(body[52:])
		body = body[rgEntryLen:]
		switch {
		case bytes.Compare(e.MinID[:], e.MaxID[:]) > 0:
			return nil, fmt.Errorf("row group %d: first trace id %x after last %x", i, e.MinID, e.MaxID)
		case e.MinStart > e.MaxStart:
			return nil, fmt.Errorf("row group %d: min start %d after max start %d", i, e.MinStart, e.MaxStart)
		case e.Traces == 0 || e.Spans < e.Traces:
			return nil, fmt.Errorf("row group %d: %d spans in %d traces", i, e.Spans, e.Traces)
		case i > 0 && bytes.Compare(entries[i-1].MaxID[:], e.MinID[:]) >= 0:
			return nil, fmt.Errorf("row group %d: first trace id %x not after the previous group's last %x", i, e.MinID, entries[i-1].MaxID)
		}
	}
	return entries, nil
}

func encodeBloom(f *bloom.BloomFilter) []byte {
	words := f.BitSet().Words()
	nw := (f.Cap() + 63) / 64
	b := make([]byte, 0, headerLen+16+8*int(nw)+crcLen)
	b = append(b, bloomMagic...)
	b = binary.BigEndian.AppendUint32(b, formatV1)
	b = binary.BigEndian.AppendUint64(b, uint64(f.Cap()))
	b = binary.BigEndian.AppendUint32(b, uint32(f.K()))
	b = binary.BigEndian.AppendUint32(b, 0)
	for i := uint(0); i < nw; i++ {
		var w uint64
		if i < uint(len(words)) {
			w = words[i]
		}
		b = binary.BigEndian.AppendUint64(b, w)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeBloom allocates no more than the file's own size.
func decodeBloom(b []byte) (*bloom.BloomFilter, error) {
	body, err := checkFrame(b, bloomMagic)
	if err != nil {
		return nil, err
	}
	if len(body) < 16 {
		return nil, errors.New("no bloom parameters")
	}
	m, k := binary.BigEndian.Uint64(body), binary.BigEndian.Uint32(body[8:])
	body = body[16:]
	if m == 0 || m > uint64(len(body))*8 || k == 0 || k > maxBloomHash {
		return nil, fmt.Errorf("bad bloom parameters m=%d k=%d for %d bytes of bits", m, k, len(body))
	}
	nw := (m + 63) / 64
	if nw != uint64(len(body))/8 || len(body)%8 != 0 {
		return nil, fmt.Errorf("bloom of %d bits needs %d bytes, have %d", m, nw*8, len(body))
	}
	words := make([]uint64, nw)
	for i := range words {
		words[i] = binary.BigEndian.Uint64(body[8*i:])
	}
	return bloom.FromWithM(words, uint(m), uint(k)), nil
}
