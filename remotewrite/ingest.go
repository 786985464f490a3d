package remotewrite

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage"

	"github.com/meshlens/meshlens/remotewrite/decode"
)

// maxAheadTime is how far in the future a sample may be, as in Prometheus's
// receiver.
const maxAheadTime = 10 * time.Minute

// Reasons a sample is rejected. They label
// meshlens_remote_write_rejected_samples_total and appear in 400 answers.
const (
	reasonInvalidSeries     = "invalid_series"
	reasonOutOfOrder        = "out_of_order"
	reasonDuplicate         = "duplicate_timestamp"
	reasonTooOld            = "too_old"
	reasonTooFarInFuture    = "too_far_in_future"
	reasonInvalidHistogram  = "invalid_histogram"
	reasonExemplarRejected  = "exemplar_rejected"
	reasonInvalidMetadata   = "invalid_metadata"
	reasonSeriesWithoutData = "series_without_samples"
)

var reasons = []string{reasonInvalidSeries, reasonOutOfOrder, reasonDuplicate, reasonTooOld, reasonTooFarInFuture, reasonInvalidHistogram, reasonExemplarRejected, reasonInvalidMetadata, reasonSeriesWithoutData}

// Stats counts what one request wrote and rejected.
type Stats struct {
	Samples, Histograms, Exemplars int
	// Rejected counts rejected samples, histograms or exemplars by reason.
	Rejected map[string]int
	// FirstInvalid describes the first rejected series and why, if any.
	FirstInvalid string
}

func (s *Stats) reject(reason string, n int) {
	if n == 0 {
		return
	}
	if s.Rejected == nil {
		s.Rejected = map[string]int{}
	}
	s.Rejected[reason] += n
}

// invalid counts n rejections and keeps the first description.
func (s *Stats) invalid(reason string, n int, format string, args ...any) {
	s.reject(reason, n)
	if s.FirstInvalid == "" {
		s.FirstInvalid = fmt.Sprintf(format, args...)
	}
}

// badRequest reports whether the sender sent data that was not stored, apart
// from exemplars (which Prometheus's receiver also drops without failing).
func (s *Stats) badRequest() bool {
	for r, n := range s.Rejected {
		if r != reasonExemplarRejected && n > 0 {
			return true
		}
	}
	return false
}

// Error describes what was rejected, for a 400 answer.
func (s *Stats) Error() string {
	var b strings.Builder
	b.WriteString("some data was rejected, the rest was written:")
	for _, r := range reasons {
		if n := s.Rejected[r]; n > 0 {
			fmt.Fprintf(&b, " %s=%d", r, n)
		}
	}
	if s.FirstInvalid != "" {
		b.WriteString("; first: ")
		b.WriteString(s.FirstInvalid)
	}
	return b.String()
}

// ErrStorage wraps failures of the storage itself; the sender should retry.
var ErrStorage = errors.New("storage failure")

// MetadataSink receives metric metadata carried by write requests.
type MetadataSink interface {
	SetMetadata(family string, m metadata.Metadata)
}

// ingester appends one request's series to one storage transaction.
type ingester struct {
	app   storage.ExemplarAppenderV2
	meta  MetadataSink
	now   time.Time
	stats Stats

	maxT      int64
	builder   labels.ScratchBuilder
	exemplars []exemplar.Exemplar
	pairs     []prompb.Label // 2.0 label refs resolved to strings, for validation.
}

func newIngester(ctx context.Context, db storage.AppendableV2, meta MetadataSink) (*ingester, error) {
	app, ok := db.AppenderV2(ctx).(storage.ExemplarAppenderV2)
	if !ok {
		return nil, fmt.Errorf("%w: appender does not accept exemplars", ErrStorage)
	}
	now := time.Now()
	return &ingester{app: app, meta: meta, now: now, maxT: timestamp.FromTime(now.Add(maxAheadTime)), builder: labels.NewScratchBuilder(32)}, nil
}

// commit commits the transaction; a failure is a storage failure.
func (in *ingester) commit() error {
	if err := in.app.Commit(); err != nil {
		return fmt.Errorf("%w: commit: %w", ErrStorage, err)
	}
	return nil
}

func (in *ingester) rollback() { _ = in.app.Rollback() }

// ingestV1 appends a remote write 1.0 request. It returns an error only for a
// storage failure; rejected data is counted in in.stats.
func (in *ingester) ingestV1(req *decode.WriteRequestV1) error {
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		ls, err := in.labels(ts.Labels)
		if err != nil {
			in.stats.invalid(reasonInvalidSeries, len(ts.Samples)+len(ts.Histograms), "series %s: %v", pairsString(ts.Labels), err)
			continue
		}
		// Prometheus sends each exemplar in a series entry of its own,
		// without samples.
		if len(ts.Samples)+len(ts.Histograms)+len(ts.Exemplars) == 0 {
			in.stats.invalid(reasonSeriesWithoutData, 1, "series %s has no samples", pairsString(ts.Labels))
			continue
		}
		var ref storage.SeriesRef
		for _, s := range ts.Samples {
			if ref, err = in.append(ref, ls, 0, s.Timestamp, s.Value, nil, nil); err != nil {
				return err
			}
		}
		for j := range ts.Histograms {
			h := &ts.Histograms[j]
			if h.IsFloatHistogram() {
				ref, err = in.append(ref, ls, 0, h.Timestamp, 0, nil, h.ToFloatHistogram())
			} else {
				ref, err = in.append(ref, ls, 0, h.Timestamp, 0, h.ToIntHistogram(), nil)
			}
			if err != nil {
				return err
			}
		}
		if len(ts.Exemplars) > 0 {
			in.exemplars = in.exemplars[:0]
			for _, e := range ts.Exemplars {
				in.exemplars = append(in.exemplars, e.ToExemplar(&in.builder, nil))
			}
			in.appendExemplars(ref, ls)
		}
	}
	for _, m := range req.Metadata {
		if m.MetricFamilyName == "" || !utf8.ValidString(m.MetricFamilyName) || !utf8.ValidString(m.Help) || !utf8.ValidString(m.Unit) {
			in.stats.invalid(reasonInvalidMetadata, 1, "metadata for %q: empty name or invalid UTF-8", m.MetricFamilyName)
			continue
		}
		in.meta.SetMetadata(m.MetricFamilyName, metadata.Metadata{Type: metricTypeV1(m.Type), Help: m.Help, Unit: m.Unit})
	}
	return nil
}

// ingestV2 appends a remote write 2.0 request, as ingestV1 does.
func (in *ingester) ingestV2(req *writev2.Request) error {
	syms := req.Symbols
	if len(syms) > 0 && syms[0] != "" {
		in.stats.invalid(reasonInvalidSeries, countV2(req), "symbols table must start with the empty string")
		return nil
	}
	lastFamily := ""
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		pairs, err := resolveRefs(in.pairs[:0], ts.LabelsRefs, syms)
		in.pairs = pairs
		if err != nil {
			in.stats.invalid(reasonInvalidSeries, len(ts.Samples)+len(ts.Histograms), "series with label refs %v: %v", ts.LabelsRefs, err)
			continue
		}
		ls, err := in.labels(pairs)
		if err != nil {
			in.stats.invalid(reasonInvalidSeries, len(ts.Samples)+len(ts.Histograms), "series %s: %v", pairsString(pairs), err)
			continue
		}
		if len(ts.Samples)+len(ts.Histograms)+len(ts.Exemplars) == 0 && ts.Metadata.Type == writev2.Metadata_METRIC_TYPE_UNSPECIFIED {
			in.stats.invalid(reasonSeriesWithoutData, 1, "series %s has no samples", pairsString(pairs))
			continue
		}
		var ref storage.SeriesRef
		for _, s := range ts.Samples {
			if ref, err = in.append(ref, ls, s.StartTimestamp, s.Timestamp, s.Value, nil, nil); err != nil {
				return err
			}
		}
		for j := range ts.Histograms {
			h := &ts.Histograms[j]
			if h.IsFloatHistogram() {
				ref, err = in.append(ref, ls, h.StartTimestamp, h.Timestamp, 0, nil, h.ToFloatHistogram())
			} else {
				ref, err = in.append(ref, ls, h.StartTimestamp, h.Timestamp, 0, h.ToIntHistogram(), nil)
			}
			if err != nil {
				return err
			}
		}
		if len(ts.Exemplars) > 0 {
			in.exemplars = in.exemplars[:0]
			for _, ep := range ts.Exemplars {
				e, err := ep.ToExemplar(&in.builder, syms)
				if err != nil {
					in.stats.reject(reasonExemplarRejected, 1)
					continue
				}
				in.exemplars = append(in.exemplars, e)
			}
			in.appendExemplars(ref, ls)
		}
		if ts.Metadata.Type != writev2.Metadata_METRIC_TYPE_UNSPECIFIED || ts.Metadata.HelpRef != 0 || ts.Metadata.UnitRef != 0 {
			family := familyName(ls.Get(model.MetricNameLabel), ts.Metadata.Type)
			if family == lastFamily {
				continue
			}
			m, err := ts.ToMetadata(syms)
			if err != nil {
				in.stats.invalid(reasonInvalidMetadata, 1, "metadata of series %s: %v", pairsString(pairs), err)
				continue
			}
			lastFamily = family
			in.meta.SetMetadata(family, m)
		}
	}
	return nil
}

// append appends one float or histogram sample, counting a rejection by
// reason. Only a storage failure is returned.
func (in *ingester) append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	if t > in.maxT {
		in.stats.invalid(reasonTooFarInFuture, 1, "series %s: sample at %d is more than %s in the future", ls, t, maxAheadTime)
		return ref, nil
	}
	newRef, err := in.app.Append(ref, ls, st, t, v, h, fh, storage.AOptions{})
	var reason string
	switch {
	case err == nil:
		if h != nil || fh != nil {
			in.stats.Histograms++
		} else {
			in.stats.Samples++
		}
		return newRef, nil
	case errors.Is(err, storage.ErrOutOfOrderSample):
		reason = reasonOutOfOrder
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		reason = reasonDuplicate
	case errors.Is(err, storage.ErrOutOfBounds), errors.Is(err, storage.ErrTooOldSample):
		reason = reasonTooOld
	case isHistogramError(err):
		reason = reasonInvalidHistogram
	default:
		return ref, fmt.Errorf("%w: append to %s: %w", ErrStorage, ls, err)
	}
	in.stats.invalid(reason, 1, "series %s: sample at %d: %v", ls, t, err)
	if newRef != 0 {
		ref = newRef
	}
	return ref, nil
}

// appendExemplars appends in.exemplars to the series; exemplars that cannot be
// stored are counted, never failing the request (as in Prometheus).
//
// ref is 0 when the request carries the exemplars apart from the series'
// samples; the storage then finds the series by its labels, and rejects the
// exemplars when it has no such series.
func (in *ingester) appendExemplars(ref storage.SeriesRef, ls labels.Labels) {
	slices.SortFunc(in.exemplars, exemplar.Compare)
	_, err := in.app.AppendExemplars(ref, ls, in.exemplars)
	failed := 0
	if err != nil {
		var pe *storage.AppendPartialError
		if errors.As(err, &pe) {
			failed = len(pe.ExemplarErrors)
		} else {
			failed = len(in.exemplars)
		}
	}
	in.stats.reject(reasonExemplarRejected, failed)
	in.stats.Exemplars += len(in.exemplars) - failed
}

func isHistogramError(err error) bool {
	var e histogram.Error
	return errors.As(err, &e)
}

// labels checks a series' label pairs as remote write requires (metric name
// present; names non-empty, unique and sorted; valid UTF-8) and builds them.
// Labels with empty values are absent in Prometheus's data model and dropped.
func (in *ingester) labels(pairs []prompb.Label) (labels.Labels, error) {
	in.builder.Reset()
	hasName := false
	for i, p := range pairs {
		if p.Name == "" {
			return labels.EmptyLabels(), errors.New("empty label name")
		}
		if i > 0 {
			switch prev := pairs[i-1].Name; {
			case p.Name == prev:
				return labels.EmptyLabels(), fmt.Errorf("duplicate label name %q", p.Name)
			case p.Name < prev:
				return labels.EmptyLabels(), fmt.Errorf("label names not sorted: %q after %q", p.Name, prev)
			}
		}
		if !utf8.ValidString(p.Name) || !utf8.ValidString(p.Value) {
			return labels.EmptyLabels(), fmt.Errorf("label %q: invalid UTF-8", strconv.Quote(p.Name))
		}
		if p.Value == "" {
			continue
		}
		if p.Name == model.MetricNameLabel {
			hasName = true
		}
		if labelsAlias {
			// The strings may alias a pooled request body (1.0) and
			// storage keeps these labels: they must own their memory.
			in.builder.Add(strings.Clone(p.Name), strings.Clone(p.Value))
			continue
		}
		in.builder.Add(p.Name, p.Value)
	}
	if !hasName {
		return labels.EmptyLabels(), errors.New("no metric name (__name__ label)")
	}
	return in.builder.Labels(), nil
}

// labelsAlias is true when labels.Labels keeps the strings it is built from
// (the slicelabels build) rather than copying them into one new string (the
// default stringlabels build, whose ScratchBuilder.Labels allocates).
var labelsAlias = reflect.TypeFor[labels.Labels]().Kind() == reflect.Slice

// resolveRefs turns 2.0 label references into name/value pairs.
func resolveRefs(dst []prompb.Label, refs []uint32, syms []string) ([]prompb.Label, error) {
	if len(refs)%2 != 0 {
		return dst, fmt.Errorf("odd number of label references (%d)", len(refs))
	}
	for i := 0; i < len(refs); i += 2 {
		n, v := refs[i], refs[i+1]
		if int(n) >= len(syms) || int(v) >= len(syms) {
			return dst, fmt.Errorf("label reference out of range of %d symbols", len(syms))
		}
		dst = append(dst, prompb.Label{Name: syms[n], Value: syms[v]})
	}
	return dst, nil
}

func countV2(req *writev2.Request) int {
	n := 0
	for _, ts := range req.Timeseries {
		n += len(ts.Samples) + len(ts.Histograms)
	}
	return n
}

// pairsString prints label pairs as sent, in {a="b", ...} form, valid UTF-8.
// It is formatted only when a message needs it.
type pairsString []prompb.Label

func (pairs pairsString) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range pairs {
		if i > 0 {
			b.WriteString(", ")
		}
		if model.LegacyValidation.IsValidLabelName(p.Name) {
			b.WriteString(p.Name)
		} else {
			b.WriteString(strconv.Quote(p.Name))
		}
		b.WriteByte('=')
		b.WriteString(strconv.Quote(p.Value))
	}
	b.WriteByte('}')
	return b.String()
}

func metricTypeV1(t prompb.MetricMetadata_MetricType) model.MetricType {
	switch t {
	case prompb.MetricMetadata_COUNTER:
		return model.MetricTypeCounter
	case prompb.MetricMetadata_GAUGE:
		return model.MetricTypeGauge
	case prompb.MetricMetadata_HISTOGRAM:
		return model.MetricTypeHistogram
	case prompb.MetricMetadata_GAUGEHISTOGRAM:
		return model.MetricTypeGaugeHistogram
	case prompb.MetricMetadata_SUMMARY:
		return model.MetricTypeSummary
	case prompb.MetricMetadata_INFO:
		return model.MetricTypeInfo
	case prompb.MetricMetadata_STATESET:
		return model.MetricTypeStateset
	}
	return model.MetricTypeUnknown
}

// familyName strips the series suffix of classic histograms and summaries so
// that 2.0 metadata is kept per metric family, as 1.0 and scrapes keep it.
func familyName(name string, t writev2.Metadata_MetricType) string {
	switch t {
	case writev2.Metadata_METRIC_TYPE_HISTOGRAM, writev2.Metadata_METRIC_TYPE_GAUGEHISTOGRAM:
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			if f, ok := strings.CutSuffix(name, s); ok {
				return f
			}
		}
	case writev2.Metadata_METRIC_TYPE_SUMMARY:
		for _, s := range []string{"_sum", "_count"} {
			if f, ok := strings.CutSuffix(name, s); ok {
				return f
			}
		}
	}
	return name
}
