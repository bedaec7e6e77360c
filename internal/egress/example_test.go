package egress_test

import (
	"context"
	"log/slog"
	"net"
	"os"

	"github.com/enclave-dev/enclave/internal/egress"
	"github.com/enclave-dev/enclave/internal/policy"
)

// logRecorder stands in for the audit log in this example.
type logRecorder struct{ log *slog.Logger }

func (r logRecorder) FlowStart(ctx context.Context, f *egress.Flow) error {
	r.log.Info("flow", "id", f.ID, "host", f.Host, "port", f.Port, "allow", f.Decision.Allow, "reason", f.Decision.Reason)
	return nil
}

func (r logRecorder) FlowEnd(ctx context.Context, f *egress.Flow) error {
	r.log.Info("flow end", "id", f.ID, "up", f.BytesUp, "down", f.BytesDown, "err", f.Err)
	return nil
}

func (r logRecorder) DNSQuery(ctx context.Context, q egress.DNSQuery) error {
	r.log.Info("dns", "name", q.Name, "type", q.Type, "rcode", q.Rcode)
	return nil
}

// The sandbox hands the host three sockets that live in the sandbox's
// network namespace; the proxy serves them all and dials out from the host.
func Example() {
	network := &policy.Network{
		DNS: true,
		Allow: []policy.HostRule{
			{Host: "registry.example.com"},
			{Host: "api.example.com", Methods: []string{"GET"}, Paths: []string{"/v1/**"}},
		},
		ByteBudget: 256 << 20,
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	p, err := egress.New(egress.Config{Network: network, Recorder: logRecorder{logger}, Logger: logger})
	if err != nil {
		logger.Error("egress", "err", err)
		return
	}
	defer p.Close()

	// In enclave these come from the sandbox; here, plain loopback sockets.
	proxyL, _ := net.Listen("tcp", "127.0.0.1:0")
	dnsUDP, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dnsTCP, _ := net.Listen("tcp", "127.0.0.1:0")
	go p.Serve(proxyL)
	go p.ServeDNS(dnsUDP)
	go p.ServeDNSTCP(dnsTCP)

	// ... run the agent with HTTP(S)_PROXY=http://127.0.0.1:PORT ...
	up, down, allowed, denied := p.Stats()
	_, _, _, _ = up, down, allowed, denied
}
