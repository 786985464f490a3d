// Package tempo serves Grafana Tempo's HTTP query API over a traces.Reader,
// so that Grafana's Tempo data source works against meshlens unchanged.
//
// The handler serves, at the root:
//
//	GET /api/echo                          "echo" (Grafana's data source test)
//	GET /api/traces/{id}                   a trace: Tempo's Trace protobuf or its JSON ("batches")
//	GET /api/v2/traces/{id}                a TraceByIDResponse, protobuf or JSON
//	GET /api/search                        TraceQL (q) or tag (tags, minDuration, maxDuration) search
//	GET /api/search/tags                   {"tagNames": [...]}
//	GET /api/v2/search/tags                {"scopes": [{"name", "tags"}]}
//	GET /api/search/tag/{tag}/values       {"tagValues": ["..."]}
//	GET /api/v2/search/tag/{tag}/values    {"tagValues": [{"type", "value"}]}
//
// The wire formats follow Tempo's documented API; see the traceql package
// for the TraceQL subset /api/search accepts.
package tempo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshlens/meshlens/traces"
)

// Options configure the handler.
type Options struct {
	// Logger receives errors of the reader (requests answered 500). Nil
	// discards them.
	Logger *slog.Logger
	// Now is the clock for default time ranges. Nil means time.Now.
	Now func() time.Time
	// SearchWindow is the time range searched, and listed by the tag
	// endpoints, when a request gives no start. Zero means one hour.
	SearchWindow time.Duration
	// MaxSearchLimit caps the number of traces a search returns whatever
	// its limit parameter asks. Zero means no cap.
	MaxSearchLimit int
	// MaxTagValues caps the values a tag values request returns. Zero
	// means 1000.
	MaxTagValues int
}

type handler struct {
	reader traces.Reader
	opts   Options
	mux    *http.ServeMux
}

// NewHandler returns the Tempo API handler over r, serving the paths listed
// in the package documentation.
func NewHandler(r traces.Reader, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SearchWindow <= 0 {
		opts.SearchWindow = time.Hour
	}
	if opts.MaxTagValues <= 0 {
		opts.MaxTagValues = 1000
	}
	h := &handler{reader: r, opts: opts, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /api/echo", h.echo)
	h.mux.HandleFunc("GET /api/traces/{id}", h.traceV1)
	h.mux.HandleFunc("GET /api/v2/traces/{id}", h.traceV2)
	h.mux.HandleFunc("GET /api/search", h.search)
	h.mux.HandleFunc("GET /api/search/tags", h.tagsV1)
	h.mux.HandleFunc("GET /api/v2/search/tags", h.tagsV2)
	h.mux.HandleFunc("GET /api/search/tag/{tag}/values", h.tagValuesV1)
	h.mux.HandleFunc("GET /api/v2/search/tag/{tag}/values", h.tagValuesV2)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *handler) echo(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("echo"))
}

// badRequest answers 400 with the error as text, as Tempo does.
func badRequest(w http.ResponseWriter, err error) {
	http.Error(w, err.Error(), http.StatusBadRequest)
}

// fail answers a reader error: 404 for traces.ErrNotFound, 499-like
// cancellations quietly, 500 otherwise (logged).
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, traces.ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
	default:
		h.opts.Logger.Error("tempo api request failed", "path", r.URL.Path, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// timeRange reads start and end (Unix seconds). Without start, the range
// is the last SearchWindow before end (or now); without either and with
// open false, too. With open true, a request without start and end reads
// every time (trace by id).
func (h *handler) timeRange(r *http.Request, open bool) (traces.TimeRange, error) {
	q := r.URL.Query()
	parse := func(name string) (int64, bool, error) {
		s := q.Get(name)
		if s == "" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, false, fmt.Errorf("invalid %s %q: want Unix seconds", name, s)
		}
		return n, true, nil
	}
	start, hasStart, err := parse("start")
	if err != nil {
		return traces.TimeRange{}, err
	}
	end, hasEnd, err := parse("end")
	if err != nil {
		return traces.TimeRange{}, err
	}
	if open && !hasStart && !hasEnd {
		return traces.TimeRange{}, nil
	}
	var tr traces.TimeRange
	if hasEnd {
		// Every span starting within the end second.
		tr.End = uint64(end)*uint64(time.Second) + uint64(time.Second) - 1
	} else if !open {
		tr.End = uint64(h.opts.Now().UnixNano())
	}
	if hasStart {
		tr.Start = uint64(start) * uint64(time.Second)
	} else if !open {
		tr.Start = tr.End - min(tr.End, uint64(h.opts.SearchWindow))
	}
	if tr.End != 0 && tr.Start > tr.End {
		return traces.TimeRange{}, fmt.Errorf("invalid time range: start %d is after end %d", start, end)
	}
	return tr, nil
}

// positiveInt reads an optional positive integer parameter.
func positiveInt(r *http.Request, name string, def int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid %s %q: want a positive integer", name, s)
	}
	return n, nil
}

func acceptsProtobuf(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/protobuf")
}
