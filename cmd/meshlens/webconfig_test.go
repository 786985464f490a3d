package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshlens/meshlens/internal/peers"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and localhost
// and a client certificate, written as PEM files into dir.
type testPKI struct {
	dir        string
	pool       *x509.CertPool
	clientCert tls.Certificate
}

func newTestPKI(t *testing.T, dir string) *testPKI {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meshlens test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.crt", "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".crt", "CERTIFICATE", der)
		write(name+".key", "EC PRIVATE KEY", kder)
	}
	leaf("server", 2, x509.ExtKeyUsageServerAuth)
	leaf("client", 3, x509.ExtKeyUsageClientAuth)
	p := &testPKI{dir: dir, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	if p.clientCert, err = tls.LoadX509KeyPair(filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")); err != nil {
		t.Fatal(err)
	}
	return p
}

// webConfig is what a test writes into the web configuration file.
type webConfig struct {
	users             map[string]string // user → password, hashed when written
	minVersion        string            // TLS12 when empty
	requireClientCert bool
}

// write writes the file at path, with the certificate paths relative to
// its directory (the toolkit resolves them there).
func (c webConfig) write(t *testing.T, path string) {
	t.Helper()
	minVersion := c.minVersion
	if minVersion == "" {
		minVersion = "TLS12"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: %s\n", minVersion)
	if c.requireClientCert {
		b.WriteString("  client_ca_file: ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n")
	}
	b.WriteString("http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n    X-Frame-Options: deny\n")
	if len(c.users) > 0 {
		b.WriteString("basic_auth_users:\n")
		for u, p := range c.users {
			h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "  %s: %q\n", u, h)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startWebServer runs meshlens with the YAML configuration cfg (none when
// empty) and the web configuration file webFile, until the test ends. Its
// URL is https.
func startWebServer(t *testing.T, cfg, webFile string) *testServer {
	t.Helper()
	return startMain(t, cfg, "", func(m *Main) { m.WebConfigFile = webFile })
}

// tlsClient is an HTTPS client trusting pool, presenting cert when not
// nil, with TLS versions up to maxVersion (any when 0). It opens a new
// connection per request, so that each sees the current web config.
func tlsClient(pool *x509.CertPool, cert *tls.Certificate, maxVersion uint16) *http.Client {
	tc := &tls.Config{RootCAs: pool, MaxVersion: maxVersion}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
}

// request sends a request with basic auth (none when user is empty) and
// returns the response, its body read.
func request(c *http.Client, method, u, user, pass string, body []byte) (*http.Response, string, error) {
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// queryVector runs an instant query as user and returns the result's
// length, failing on anything but a successful vector.
func queryVector(t *testing.T, c *http.Client, base, user, pass, q string) int {
	t.Helper()
	resp, body, err := request(c, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(q), user, pass, nil)
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	var env struct {
		Status string `json:"status"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &env); resp.StatusCode != http.StatusOK || err != nil || env.Status != "success" {
		t.Fatalf("query %s: %d %v %s", q, resp.StatusCode, err, body)
	}
	return len(env.Data.Result)
}

// TestWebConfigHTTP serves the HTTP API over TLS with basic auth from a web
// configuration file, and changes the file while the server runs.
func TestWebConfigHTTP(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	webFile := filepath.Join(dir, "web.yml")
	webConfig{users: map[string]string{"alice": "s3cret"}}.write(t, webFile)
	s := startWebServer(t, "", webFile)
	c := tlsClient(pki.pool, nil, 0)
	query := s.URL + "/api/v1/query?query=1"

	// Plain HTTP on the TLS listener is answered 400 by net/http, never
	// by the API.
	if resp, body, err := request(&http.Client{Timeout: 10 * time.Second}, http.MethodGet, "http://"+s.Addr()+"/api/v1/query?query=1", "alice", "s3cret", nil); err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("plain HTTP on the TLS listener: 200 %s", body)
	}
	// A client that does not trust the CA fails the handshake.
	if _, _, err := request(tlsClient(x509.NewCertPool(), nil, 0), http.MethodGet, query, "alice", "s3cret", nil); err == nil {
		t.Error("HTTPS without the CA succeeded")
	}
	// The file's TLS 1.2 minimum refuses TLS 1.1.
	if _, _, err := request(tlsClient(pki.pool, nil, tls.VersionTLS11), http.MethodGet, query, "alice", "s3cret", nil); err == nil {
		t.Error("TLS 1.1 accepted with min_version TLS12")
	}
	for _, tc := range []struct{ name, user, pass string }{
		{"no credentials", "", ""},
		{"wrong password", "alice", "wrong"},
		{"unknown user", "mallory", "s3cret"},
	} {
		resp, body, err := request(c, http.MethodGet, query, tc.user, tc.pass, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("%s: %d %q %s, want 401 asking for basic auth", tc.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
	}
	resp, body, err := request(c, http.MethodGet, query, "alice", "s3cret", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("query as alice: %v %v %s", err, resp, body)
	}
	if h := resp.Header.Get("X-Content-Type-Options"); h != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want the file's nosniff", h)
	}

	// Remote write needs the same credentials.
	now := time.Now()
	write := prompb.TimeSeries{
		Labels:  []prompb.Label{{Name: "__name__", Value: "webconfig_test_gauge"}, {Name: "cluster", Value: "east"}},
		Samples: []prompb.Sample{{Value: 42, Timestamp: now.UnixMilli()}},
	}
	if resp, _, err := request(c, http.MethodPost, s.URL+"/api/v1/write", "alice", "wrong", v1BodyFor(t, write)); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("remote write with a wrong password: %v %v, want 401", err, resp)
	}
	if n := queryVector(t, c, s.URL, "alice", "s3cret", "webconfig_test_gauge"); n != 0 {
		t.Fatalf("a refused write stored %d series", n)
	}
	if resp, body, err := request(c, http.MethodPost, s.URL+"/api/v1/write", "alice", "s3cret", v1BodyFor(t, write)); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("remote write as alice: %v %v %s, want 204", err, resp, body)
	}
	if n := queryVector(t, c, s.URL, "alice", "s3cret", `webconfig_test_gauge{cluster="east"} == 42`); n != 1 {
		t.Fatalf("written sample: %d series, want 1", n)
	}

	// Replacing alice by bob takes effect at the next request.
	webConfig{users: map[string]string{"bob": "hunter2"}}.write(t, webFile)
	if resp, _, err := request(c, http.MethodGet, query, "alice", "s3cret", nil); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("alice after her removal: %v %v, want 401", err, resp)
	}
	if n := queryVector(t, c, s.URL, "bob", "hunter2", "webconfig_test_gauge"); n != 1 {
		t.Errorf("bob after his addition: %d series, want 1", n)
	}

	// Requiring client certificates (and TLS 1.3) takes effect at the
	// next connection.
	webConfig{users: map[string]string{"bob": "hunter2"}, minVersion: "TLS13", requireClientCert: true}.write(t, webFile)
	if _, _, err := request(c, http.MethodGet, query, "bob", "hunter2", nil); err == nil {
		t.Error("no client certificate accepted with RequireAndVerifyClientCert")
	}
	if _, _, err := request(tlsClient(pki.pool, &pki.clientCert, tls.VersionTLS12), http.MethodGet, query, "bob", "hunter2", nil); err == nil {
		t.Error("TLS 1.2 accepted with min_version TLS13")
	}
	withCert := tlsClient(pki.pool, &pki.clientCert, 0)
	if resp, _, err := request(withCert, http.MethodGet, query, "bob", "wrong", nil); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("client certificate with a wrong password: %v %v, want 401", err, resp)
	}
	if n := queryVector(t, withCert, s.URL, "bob", "hunter2", "webconfig_test_gauge"); n != 1 {
		t.Errorf("with a client certificate: %d series, want 1", n)
	}
}

// TestWebConfigBadFile stops start-up on a web configuration file that
// cannot be used, naming the file.
func TestWebConfigBadFile(t *testing.T) {
	dir := t.TempDir()
	newTestPKI(t, dir)
	for _, tc := range []struct{ name, content, want string }{
		{"missing", "", "no such file"},
		{"unknown field", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  certfile: x\n", "certfile"},
		{"missing certificate", "tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n", "nope.crt"},
		{"plain password", "basic_auth_users:\n  alice: s3cret\n", "hash"},
		{"client CA without policy", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n", "Client Auth"},
		{"unknown TLS version", "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS99\n", "TLS99"},
		{"header not allowed", "http_server_config:\n  headers:\n    Server: meshlens\n", "Server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yml")
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			m := NewMain()
			if err := m.ParseFlags([]string{"--listen=127.0.0.1:0", "--data-dir=" + t.TempDir(), "--log.level=warn", "--web.config.file=" + path}); err != nil {
				t.Fatal(err)
			}
			m.Stderr = testLog{t}
			err := m.Open()
			if err == nil {
				m.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), "--web.config.file "+path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v, want an error naming --web.config.file %s and %q", err, path, tc.want)
			}
		})
	}
}

// TestWebConfigOTLPGRPC applies the web configuration file's TLS and users
// to the OTLP/gRPC listener.
func TestWebConfigOTLPGRPC(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	webFile := filepath.Join(dir, "web.yml")
	webConfig{users: map[string]string{"collector": "otlp-pass"}}.write(t, webFile)
	s := startWebServer(t, "traces:\n  otlp_grpc:\n    address: 127.0.0.1:0\n", webFile)
	addr := s.traces.otlpGRPCAddr()

	export := func(creds credentials.TransportCredentials, user, pass, service string) (ptrace.Traces, error) {
		t.Helper()
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", service)
		span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		var id [16]byte
		rand.Read(id[:])
		span.SetTraceID(id)
		span.SetSpanID([8]byte{1, 2, 3, 4, 5, 6, 7, 8})
		span.SetName("GET /cart")
		start := time.Now().Add(-time.Second)
		span.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
		span.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(10 * time.Millisecond)))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if user != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
		}
		_, err = ptraceotlp.NewGRPCClient(conn).Export(ctx, ptraceotlp.NewExportRequestFromTraces(td))
		return td, err
	}
	trusting := credentials.NewTLS(&tls.Config{RootCAs: pki.pool})
	for _, tc := range []struct {
		name       string
		creds      credentials.TransportCredentials
		user, pass string
		want       codes.Code
	}{
		{"plaintext", insecure.NewCredentials(), "collector", "otlp-pass", codes.Unavailable},
		{"untrusted server", credentials.NewTLS(&tls.Config{RootCAs: x509.NewCertPool()}), "collector", "otlp-pass", codes.Unavailable},
		{"no credentials", trusting, "", "", codes.Unauthenticated},
		{"wrong password", trusting, "collector", "wrong", codes.Unauthenticated},
		{"unknown user", trusting, "mallory", "otlp-pass", codes.Unauthenticated},
	} {
		if _, err := export(tc.creds, tc.user, tc.pass, "refused"); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
	td, err := export(trusting, "collector", "otlp-pass", "checkout")
	if err != nil {
		t.Fatalf("export with the file's user: %v", err)
	}
	id := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).TraceID()
	c := tlsClient(pki.pool, nil, 0)
	eventually(t, 10*time.Second, "the exported trace in the Tempo API", func() bool {
		resp, body, err := request(c, http.MethodGet, s.URL+"/api/traces/"+fmt.Sprintf("%x", id[:]), "collector", "otlp-pass", nil)
		return err == nil && resp.StatusCode == http.StatusOK && strings.Contains(body, "checkout")
	})

	// Requiring client certificates takes effect at the next connection.
	webConfig{users: map[string]string{"collector": "otlp-pass"}, requireClientCert: true}.write(t, webFile)
	if _, err := export(trusting, "collector", "otlp-pass", "refused"); status.Code(err) != codes.Unavailable {
		t.Errorf("no client certificate: %v, want %s", err, codes.Unavailable)
	}
	withCert := credentials.NewTLS(&tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.clientCert}})
	if _, err := export(withCert, "collector", "wrong", "refused"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("client certificate with a wrong password: %v, want %s", err, codes.Unauthenticated)
	}
	if _, err := export(withCert, "collector", "otlp-pass", "checkout"); err != nil {
		t.Errorf("client certificate and password: %v", err)
	}
}

// TestWebConfigRealPrometheus runs the pinned Prometheus remote-writing to
// meshlens over TLS with a client certificate and basic auth, configured
// with Prometheus's own basic_auth and tls_config.
func TestWebConfigRealPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real Prometheus; not in -short")
	}
	bin := peers.Need(t, peers.Prometheus)
	target := istioTarget(t)

	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	webFile := filepath.Join(dir, "web.yml")
	webConfig{users: map[string]string{"prometheus": "remote-write-pass"}, requireClientCert: true}.write(t, webFile)
	s := startWebServer(t, "", webFile)

	cfg := fmt.Sprintf(`
global:
  scrape_interval: 1s
  external_labels:
    cluster: east
scrape_configs:
  - job_name: istio-mesh
    static_configs:
      - targets: [%q]
remote_write:
  - url: %s/api/v1/write
    basic_auth:
      username: prometheus
      password: remote-write-pass
    tls_config:
      ca_file: %s
      cert_file: %s
      key_file: %s
    queue_config: {batch_send_deadline: 500ms}
`, target.Listener.Addr().String(), s.URL,
		filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"))
	runPrometheus(t, bin, dir, cfg)

	c := tlsClient(pki.pool, &pki.clientCert, 0)
	eventually(t, 60*time.Second, "series from Prometheus over TLS", func() bool {
		return queryVector(t, c, s.URL, "prometheus", "remote-write-pass", `pilot_xds{cluster="east",job="istio-mesh"}`) == 1
	})
	if n := queryVector(t, c, s.URL, "prometheus", "remote-write-pass", `istio_requests_total{cluster="east",response_flags="UO"} == 7`); n != 1 {
		t.Errorf(`istio_requests_total{response_flags="UO"} == 7: %d series, want 1`, n)
	}
}
