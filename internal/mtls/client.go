package mtls

import (
	"crypto/tls"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ClientConfig is the configuration of kernel → agent calls over mTLS: it presents the SVID of
// source (read at every handshake, so renewal needs no new transport), verifies the server's
// X509-SVID against bundle and accepts only the SPIFFE ID expected, the one of the registered
// agent. Hostnames are not checked: the SPIFFE ID is the server's identity. No session cache is
// set, so every connection is verified in full.
func ClientConfig(source x509svid.Source, bundle x509bundle.Source, expected spiffeid.ID) *tls.Config {
	c := tlsconfig.MTLSClientConfig(source, bundle, tlsconfig.AuthorizeID(expected))
	c.MinVersion = tls.VersionTLS13
	return c
}
