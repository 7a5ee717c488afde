package tlsconfig

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"

	"github.com/canopytree/canopy/internal/tlsconfig/tlstest"
)

func TestBuild(t *testing.T) {
	pki := tlstest.New(t)
	srv, err := Config{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CAFile}.Server()
	if err != nil || len(srv.Certificates) != 1 || srv.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("server: %+v %v", srv, err)
	}
	cli, err := Config{CAFile: pki.CAFile, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, ServerName: "localhost"}.Client()
	if err != nil || cli.RootCAs == nil || len(cli.Certificates) != 1 || cli.ServerName != "localhost" {
		t.Fatalf("client: %+v %v", cli, err)
	}
	if (Config{}).ClientEnabled() || (Config{}).ServerEnabled() || !(Config{Enabled: true}).ClientEnabled() || !(Config{CAFile: "x"}).ClientEnabled() {
		t.Error("enabled")
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		build func() (*tls.Config, error)
		msg   string
	}{
		{Config{CAFile: missing}.Client, "ca_file"},
		{Config{CAFile: pki.ServerKey}.Client, "no PEM certificate"},
		{Config{CertFile: pki.ClientCert}.Client, "cert_file and key_file go together"},
		{Config{CertFile: pki.ServerCert, KeyFile: pki.ClientKey}.Server, "cert_file/key_file"},
		{Config{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: missing}.Server, "client_ca_file"},
		{Config{}.Server, "cert_file and key_file"},
	} {
		if _, err := tc.build(); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v, want an error saying %q", err, tc.msg)
		}
	}
}
