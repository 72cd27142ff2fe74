// Package htk is the Go client of the htk process-tracking API: the gRPC
// clients generated from htk's protos (package
// htk.dev/client/go/gen/htk/processes/v1), connected through Envoy with the
// caller's bearer token on every call.
//
//	client, err := htk.Dial("http://localhost:8080", os.Getenv("HTK_TOKEN"))
//	if err != nil { ... }
//	defer client.Close()
//	page, err := client.Processes.ListProcesses(ctx, &processesv1.ListProcessesRequest{Status: "running"})
//
// Errors are gRPC statuses: status.Code(err) is codes.NotFound,
// codes.InvalidArgument, codes.Unauthenticated, ... as each RPC's comment in
// the protos lists.
package htk

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	processesv1 "htk.dev/client/go/gen/htk/processes/v1"
)

// Client holds one connection to htk and the generated service clients on it.
type Client struct {
	// Processes lists, reads, creates and updates processes.
	Processes processesv1.ProcessServiceClient
	// Tasks lists, reads and completes the tasks of human steps.
	Tasks processesv1.TaskServiceClient
	// Webhooks subscribes URLs to the organization's events and shows and
	// replays what was sent to them (scope webhooks:manage).
	Webhooks processesv1.WebhookServiceClient
	// Trust manages the trust policies that let CI jobs trade their OIDC
	// token for a short-lived htk token (scope tokens:manage), and makes
	// that trade (ExchangeToken, which ignores the token Dial was given).
	Trust processesv1.TrustServiceClient

	conn *grpc.ClientConn
}

// Dial connects to the htk at rawURL (its HTTP address, e.g.
// "http://localhost:8080": native gRPC is served on the same port) and sends
// token with every call. An http:// URL is plain HTTP/2, an https:// URL uses
// TLS with the system's roots. The connection is made lazily, on the first
// call.
func Dial(rawURL, token string) (*Client, error) {
	target, transport, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(transport),
		grpc.WithPerRPCCredentials(bearerToken{token: token, secure: transport.Info().SecurityProtocol == "tls"}),
	)
	if err != nil {
		return nil, fmt.Errorf("htk: cannot connect to %s: %w", rawURL, err)
	}
	return &Client{
		Processes: processesv1.NewProcessServiceClient(conn),
		Tasks:     processesv1.NewTaskServiceClient(conn),
		Webhooks:  processesv1.NewWebhookServiceClient(conn),
		Trust:     processesv1.NewTrustServiceClient(conn),
		conn:      conn,
	}, nil
}

// Close closes the connection; calls in flight fail with codes.Canceled.
func (c *Client) Close() error {
	return c.conn.Close()
}

func parseURL(rawURL string) (string, credentials.TransportCredentials, error) {
	parsed, err := url.Parse(rawURL)
	if err != nil {
		return "", nil, fmt.Errorf("htk: the URL %q is malformed: %w", rawURL, err)
	}
	if parsed.Host == "" || (parsed.Path != "" && parsed.Path != "/") {
		return "", nil, fmt.Errorf("htk: the URL %q must be scheme://host[:port], e.g. http://localhost:8080", rawURL)
	}
	switch parsed.Scheme {
	case "http":
		return hostPort(parsed, "80"), insecure.NewCredentials(), nil
	case "https":
		return hostPort(parsed, "443"), credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}), nil
	default:
		return "", nil, fmt.Errorf("htk: the URL %q must start with http:// or https://", rawURL)
	}
}

func hostPort(parsed *url.URL, defaultPort string) string {
	if parsed.Port() != "" {
		return parsed.Host
	}
	return net.JoinHostPort(parsed.Hostname(), defaultPort)
}

// bearerToken sends `authorization: Bearer <token>` with every call.
type bearerToken struct {
	token  string
	secure bool
}

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity lets an http:// URL carry the token in clear
// text: that is the caller's choice of URL, as it is with curl.
func (b bearerToken) RequireTransportSecurity() bool {
	return b.secure
}
