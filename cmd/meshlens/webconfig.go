package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The web configuration file (--web.config.file) is the Prometheus
// exporter-toolkit's: TLS server certificate, minimum version, client CA
// and client-certificate policy, bcrypt basic-auth users and extra HTTP
// headers. The toolkit's web package serves HTTP with it; the OTLP/gRPC
// listener gets the same TLS and users here. Both read the file again on
// every connection (TLS) and every request (users, headers), so an edit
// takes effect without a restart. Without the file every endpoint is open.

// validateWebConfig checks the web configuration file at start, its
// certificates and password hashes included. An empty path is no file.
func validateWebConfig(path string) error {
	if path == "" {
		return nil
	}
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("--web.config.file %s: %w", path, err)
	}
	return nil
}

// serveHTTP serves srv on ln, with TLS and basic auth from the web
// configuration file at path when it is not empty.
func serveHTTP(srv *http.Server, ln net.Listener, path string, logger *slog.Logger) error {
	if path == "" {
		return srv.Serve(ln)
	}
	// The toolkit reports each listener at info; meshlens logs its own
	// start line, so keep the toolkit's to warnings and errors.
	quiet := slog.New(minLevel{logger.Handler(), slog.LevelWarn})
	return web.Serve(ln, srv, &web.FlagConfig{WebConfigFile: &path}, quiet)
}

// minLevel drops the records of a handler below a level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}

// loadWebConfig reads the web configuration file as the toolkit does:
// its defaults (TLS 1.2 to 1.3), strict YAML, file paths relative to the
// file's directory.
func loadWebConfig(path string) (*web.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c := &web.Config{
		TLSConfig:  web.TLSConfig{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13},
		HTTPConfig: web.HTTPConfig{HTTP2: true},
	}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return nil, err
	}
	c.TLSConfig.SetDirectory(filepath.Dir(path))
	return c, nil
}

// grpcServerOptions returns the options that apply the web configuration
// file at path to a gRPC server: TLS credentials when the file configures
// TLS (reloaded at every handshake) and interceptors checking the
// `authorization` metadata against the file's basic-auth users (read at
// every call). None for an empty path. Turning TLS on or off in the file
// takes a restart; a file that became invalid fails handshakes and calls.
func grpcServerOptions(path string, logger *slog.Logger) ([]grpc.ServerOption, error) {
	if path == "" {
		return nil, nil
	}
	c, err := loadWebConfig(path)
	if err != nil {
		return nil, fmt.Errorf("--web.config.file %s: %w", path, err)
	}
	var opts []grpc.ServerOption
	if c.TLSConfig.IsEnabled() {
		tc, err := web.ConfigToTLSConfig(&c.TLSConfig)
		if err != nil {
			return nil, fmt.Errorf("--web.config.file %s: %w", path, err)
		}
		tc.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := loadWebConfig(path)
			if err == nil {
				var tc *tls.Config
				if tc, err = web.ConfigToTLSConfig(&c.TLSConfig); err == nil {
					tc.NextProtos = []string{"h2"}
					return tc, nil
				}
			}
			logger.Error("web config file unusable; refusing the connection", "file", path, "err", err)
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	a := &grpcBasicAuth{path: path, logger: logger, cache: map[[32]byte]bool{}}
	opts = append(opts, grpc.ChainUnaryInterceptor(a.unary), grpc.ChainStreamInterceptor(a.stream))
	return opts, nil
}

// grpcBasicAuth checks gRPC calls against the basic-auth users of the web
// configuration file, as the toolkit checks HTTP requests.
type grpcBasicAuth struct {
	path   string
	logger *slog.Logger

	// bcryptMu runs one bcrypt comparison at a time: they are CPU-bound
	// by design.
	bcryptMu sync.Mutex
	mu       sync.Mutex
	// cache holds the outcome per hash of (user, password hash, password).
	cache map[[32]byte]bool
}

// maxAuthCache bounds the cache of comparisons; it is emptied when full.
const maxAuthCache = 1024

// fakeHash is compared against for unknown users, so that they take as
// long as known ones (bcrypt of "fakepassword", the toolkit's).
const fakeHash = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"

var errUnauthenticated = status.Error(codes.Unauthenticated, "basic auth: invalid or missing credentials")

func (a *grpcBasicAuth) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *grpcBasicAuth) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context()); err != nil {
		return err
	}
	return h(srv, ss)
}

// check admits a call when the file has no users or the call carries the
// password of one of them.
func (a *grpcBasicAuth) check(ctx context.Context) error {
	c, err := loadWebConfig(a.path)
	if err != nil {
		a.logger.Error("web config file unusable; refusing the call", "file", a.path, "err", err)
		return status.Error(codes.Internal, "web config file unusable")
	}
	if len(c.Users) == 0 {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var user, pass string
	ok := false
	for _, v := range md.Get("authorization") {
		if b64, found := strings.CutPrefix(v, "Basic "); found {
			if dec, err := base64.StdEncoding.DecodeString(b64); err == nil {
				user, pass, ok = strings.Cut(string(dec), ":")
			}
			break
		}
	}
	if !ok {
		return errUnauthenticated
	}
	hash, known := c.Users[user]
	if !known {
		hash = fakeHash
	}
	key := sha256.Sum256([]byte(user + "\x00" + string(hash) + "\x00" + pass))
	a.mu.Lock()
	match, cached := a.cache[key]
	a.mu.Unlock()
	if !cached {
		a.bcryptMu.Lock()
		match = bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass)) == nil
		a.bcryptMu.Unlock()
		a.mu.Lock()
		if len(a.cache) >= maxAuthCache {
			clear(a.cache)
		}
		a.cache[key] = match
		a.mu.Unlock()
	}
	if !known || !match {
		return errUnauthenticated
	}
	return nil
}
