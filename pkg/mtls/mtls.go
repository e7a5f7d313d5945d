// Package mtls builds the transport credentials of blockvault's gRPC
// servers and clients from PEM files: with a certificate, its key and a CA,
// a daemon serves TLS 1.3 and requires callers to present a certificate the
// CA signed (mutual TLS); a client presents its own and checks the
// server's against the same CA. With no files, connections are plaintext
// (for loopback and development).
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Files names the PEM files of one side.
type Files struct {
	Cert, Key, CA string
}

// Enabled reports whether TLS is configured.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Flags registers --tls-cert, --tls-key and --tls-ca on fs.
func Flags(fs *flag.FlagSet, f *Files) {
	fs.StringVar(&f.Cert, "tls-cert", f.Cert, "PEM certificate of this process, for mutual TLS between the daemons (with --tls-key and --tls-ca)")
	fs.StringVar(&f.Key, "tls-key", f.Key, "PEM private key of --tls-cert")
	fs.StringVar(&f.CA, "tls-ca", f.CA, "PEM CA certificate that signs every daemon's and client's certificate")
}

func (f Files) load() (tls.Certificate, *x509.CertPool, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return tls.Certificate{}, nil, errors.New("tls: give all of --tls-cert, --tls-key and --tls-ca, or none")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tls: %w", err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("tls: %s holds no PEM certificate", f.CA)
	}
	return cert, pool, nil
}

// ServerConfig is the TLS configuration of a server for f: its
// certificate, and clients must present one the CA signed. nil when f is
// empty.
func ServerConfig(f Files) (*tls.Config, error) {
	if !f.Enabled() {
		return nil, nil
	}
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}, nil
}

// ClientConfig is the TLS configuration of a client for f: its
// certificate, and servers must present one the CA signed (the caller sets
// ServerName for each server). nil when f is empty.
func ClientConfig(f Files) (*tls.Config, error) {
	if !f.Enabled() {
		return nil, nil
	}
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}, nil
}

// ServerOption returns the gRPC server option for f: mutual TLS, or none
// (plaintext) when f is empty.
func ServerOption(f Files) ([]grpc.ServerOption, error) {
	cfg, err := ServerConfig(f)
	if err != nil || cfg == nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, nil
}

// DialOption returns the gRPC dial option for f: mutual TLS, or plaintext
// when f is empty.
func DialOption(f Files) (grpc.DialOption, error) {
	cfg, err := ClientConfig(f)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}
