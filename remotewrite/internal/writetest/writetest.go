// Package writetest builds remote write requests shaped like a service
// mesh's, for the tests and benchmarks of the decoder and the handler.
package writetest

import (
	"fmt"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// IstioSeries returns n Istio-shaped label sets (21 labels each, values as
// long as a real mesh's), sorted by name as senders send them.
func IstioSeries(n int) []labels.Labels {
	out := make([]labels.Labels, n)
	for i := range out {
		svc, src := i%997, (i/997)%37
		out[i] = labels.FromStrings(
			"__name__", "istio_requests_total",
			"cluster", fmt.Sprintf("cluster-%d", i%3),
			"connection_security_policy", "mutual_tls",
			"destination_app", fmt.Sprintf("svc-%d", svc),
			"destination_canonical_revision", "v1",
			"destination_canonical_service", fmt.Sprintf("svc-%d", svc),
			"destination_principal", fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/svc-%d", svc%20, svc),
			"destination_service", fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local", svc, svc%20),
			"destination_service_name", fmt.Sprintf("svc-%d", svc),
			"destination_service_namespace", fmt.Sprintf("ns-%d", svc%20),
			"destination_workload", fmt.Sprintf("svc-%d-v1", svc),
			"destination_workload_namespace", fmt.Sprintf("ns-%d", svc%20),
			"instance", fmt.Sprintf("10.%d.%d.%d:15090", i%250, (i/250)%250, src),
			"job", "kubernetes-pods",
			"reporter", "destination",
			"request_protocol", "http",
			"response_code", []string{"200", "404", "503"}[i/(997*37)%3],
			"response_flags", "-",
			"source_app", fmt.Sprintf("client-%d", src),
			"source_principal", fmt.Sprintf("spiffe://cluster.local/ns/ns-%d/sa/client-%d", src%20, src),
			"source_workload", fmt.Sprintf("client-%d-v1", src),
		)
	}
	return out
}

// RequestsV1 encodes rounds of one sample per series as snappy-compressed
// remote write 1.0 requests, perReq series per request, timestamps
// advancing by 15s per round.
func RequestsV1(tb testing.TB, series []labels.Labels, perReq, rounds int) [][]byte {
	var out [][]byte
	for r := 0; r < rounds; r++ {
		for i := 0; i < len(series); i += perReq {
			req := &prompb.WriteRequest{}
			for _, ls := range series[i:min(i+perReq, len(series))] {
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
					Labels:  prompb.FromLabels(ls, nil),
					Samples: []prompb.Sample{{Timestamp: int64(r) * 15000, Value: float64(r)}},
				})
			}
			raw, err := req.Marshal()
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, snappy.Encode(nil, raw))
		}
	}
	return out
}

// RequestsV2 is RequestsV1 in remote write 2.0.
func RequestsV2(tb testing.TB, series []labels.Labels, perReq, rounds int) [][]byte {
	var out [][]byte
	for r := 0; r < rounds; r++ {
		for i := 0; i < len(series); i += perReq {
			st := writev2.NewSymbolTable()
			req := &writev2.Request{}
			for _, ls := range series[i:min(i+perReq, len(series))] {
				req.Timeseries = append(req.Timeseries, writev2.TimeSeries{
					LabelsRefs: st.SymbolizeLabels(ls, nil),
					Samples:    []writev2.Sample{{Timestamp: int64(r) * 15000, Value: float64(r)}},
				})
			}
			req.Symbols = st.Symbols()
			raw, err := req.Marshal()
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, snappy.Encode(nil, raw))
		}
	}
	return out
}

// Series builds a 1.0 series from alternating names and values, unsorted
// and invalid ones included, with one sample per timestamp.
func Series(v float64, ts []int64, nv ...string) prompb.TimeSeries {
	s := prompb.TimeSeries{}
	for i := 0; i < len(nv); i += 2 {
		s.Labels = append(s.Labels, prompb.Label{Name: nv[i], Value: nv[i+1]})
	}
	for _, t := range ts {
		s.Samples = append(s.Samples, prompb.Sample{Timestamp: t, Value: v})
	}
	return s
}
