package tsdb

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/client"
	"go.yaml.in/yaml/v3"
)

// BucketConfig is objstore's bucket configuration, the document Thanos tools
// take with --objstore.config: the provider type (FILESYSTEM, S3, GCS,
// AZURE, …), the provider's own settings, and a key prefix that every
// object name gets. It is objstore's own type.
type BucketConfig = client.BucketConfig

// knownProviders are the types objstore/client knows, so that a valid type
// this binary lacks gets a different error from a typo.
var knownProviders = []objstore.ObjProvider{
	objstore.FILESYSTEM, objstore.GCS, objstore.S3, objstore.AZURE, objstore.SWIFT,
	objstore.COS, objstore.ALIYUNOSS, objstore.BOS, objstore.OCI, objstore.OBS,
}

// NewBucket opens the bucket that confYAML ({type, config, prefix}, as
// objstore/client.NewBucket reads it) describes, as OpenBucket does.
// The configuration may hold secrets: errors never quote it.
func NewBucket(confYAML []byte, logger *slog.Logger, reg prometheus.Registerer) (objstore.InstrumentedBucket, error) {
	conf, err := ParseBucketConfig(confYAML)
	if err != nil {
		return nil, err
	}
	return OpenBucket(conf, logger, reg)
}

// ParseBucketConfig decodes a bucket configuration document strictly.
// The configuration may hold secrets: errors never quote it.
func ParseBucketConfig(confYAML []byte) (BucketConfig, error) {
	var conf BucketConfig
	dec := yaml.NewDecoder(bytes.NewReader(confYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&conf); err != nil {
		if errors.Is(err, io.EOF) {
			return conf, errors.New("bucket configuration is empty")
		}
		return conf, fmt.Errorf("parse bucket configuration: %w", err)
	}
	return conf, nil
}

// OpenBucket opens the bucket conf describes. Its operations are counted in
// objstore_bucket_* metrics registered with reg (nil registers nothing).
// The configuration may hold secrets: errors never quote it.
func OpenBucket(conf BucketConfig, logger *slog.Logger, reg prometheus.Registerer) (objstore.InstrumentedBucket, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conf.Type = objstore.ObjProvider(strings.ToUpper(string(conf.Type)))
	if conf.Type == "" {
		return nil, errors.New("bucket configuration: type is missing")
	}
	if !slices.Contains(knownProviders, conf.Type) {
		return nil, fmt.Errorf("bucket type %q is not supported (known types: %s)", conf.Type, joinProviders(knownProviders))
	}
	bkt, err := newClientBucket(logger.With("component", "bucket", "type", string(conf.Type)), conf.Type, conf.Config)
	if err != nil {
		return nil, fmt.Errorf("bucket type %s: %w", conf.Type, err)
	}
	bkt = objstore.NewPrefixedBucket(bkt, conf.Prefix)
	return objstore.WrapWithMetrics(bkt, reg, bkt.Name()), nil
}

func joinProviders(ps []objstore.ObjProvider) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = string(p)
	}
	return strings.Join(names, ", ")
}
