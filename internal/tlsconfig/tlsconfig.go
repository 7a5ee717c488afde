// Package tlsconfig turns the tls sections of canopy's configuration files
// into crypto/tls configurations: the root's listeners, a node's tree
// listener and its connections to parents, and remote-write clients. Files
// are read when the configuration is built, so a bad path fails at startup
// and names the key.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Config is one tls section. A server reads cert_file, key_file and
// client_ca_file; a client reads ca_file, cert_file and key_file (its
// client certificate), server_name and insecure_skip_verify.
type Config struct {
	// Enabled turns TLS on for a client that has nothing else to set (the
	// system's roots verify the server).
	Enabled bool `mapstructure:"enabled"`
	// CAFile verifies servers (default: the system's roots).
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are the certificate a server presents, or a
	// client's certificate for mutual TLS.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// ClientCAFile makes a server require client certificates signed by
	// one of its certificates.
	ClientCAFile string `mapstructure:"client_ca_file"`
	// ServerName overrides the name a client checks the server's
	// certificate against.
	ServerName         string `mapstructure:"server_name"`
	InsecureSkipVerify bool   `mapstructure:"insecure_skip_verify"`
}

// ClientEnabled reports whether a client should use TLS.
func (c Config) ClientEnabled() bool {
	return c.Enabled || c.CAFile != "" || c.CertFile != "" || c.ServerName != "" || c.InsecureSkipVerify
}

// ServerEnabled reports whether a server should use TLS.
func (c Config) ServerEnabled() bool { return c.CertFile != "" }

// Client builds a client configuration.
func (c Config) Client() (*tls.Config, error) {
	out := &tls.Config{ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pool, err := pool(c.CAFile, "ca_file")
		if err != nil {
			return nil, err
		}
		out.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := c.keyPair()
		if err != nil {
			return nil, err
		}
		out.Certificates = []tls.Certificate{cert}
	}
	return out, nil
}

// Server builds a server configuration; cert_file and key_file are
// required.
func (c Config) Server() (*tls.Config, error) {
	cert, err := c.keyPair()
	if err != nil {
		return nil, err
	}
	out := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCAFile != "" {
		pool, err := pool(c.ClientCAFile, "client_ca_file")
		if err != nil {
			return nil, err
		}
		out.ClientCAs = pool
		out.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return out, nil
}

func (c Config) keyPair() (tls.Certificate, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return tls.Certificate{}, errors.New("cert_file and key_file go together")
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cert_file/key_file: %w", err)
	}
	return cert, nil
}

func pool(file, key string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s %s: no PEM certificate found", key, file)
	}
	return p, nil
}
