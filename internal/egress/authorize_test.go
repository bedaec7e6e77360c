package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/enclave-dev/enclave/internal/policy"
)

// Config.Authorize can only narrow: it is asked about allowed flows only,
// its refusal and its error both refuse before anything is dialled, and
// its policy ids are on the recorded flow.
func TestAuthorizeNarrows(t *testing.T) {
	up := startUpstream(t)
	port := up.Port()
	n := &policy.Network{Allow: []policy.HostRule{{Host: "127.0.0.1", Ports: []int{port}}}}
	var mu sync.Mutex
	var asked []string
	authorize := func(ctx context.Context, f *Flow) (Authorization, error) {
		mu.Lock()
		asked = append(asked, f.Method+" "+f.Path)
		mu.Unlock()
		if f.Method == "CONNECT" {
			return Authorization{Policies: []string{"no-tunnels"}, Reason: "no tunnels"}, nil
		}
		switch f.Path {
		case "/forbidden":
			return Authorization{Policies: []string{"no-forbidden"}, Reason: "forbidden by no-forbidden"}, nil
		case "/broken":
			return Authorization{}, errors.New("policy store unreadable")
		}
		return Authorization{Allow: true, Policies: []string{"egress-network-allowlist"}}, nil
	}
	tp := startProxy(t, n, nil, func(c *Config) { c.Authorize = authorize })
	for _, tt := range []struct {
		raw        string
		status     int
		rule       string
		policies   []string
		reachesApp bool
	}{
		{fmt.Sprintf("GET http://127.0.0.1:%d/ok HTTP/1.1\r\n\r\n", port), 200, "", []string{"egress-network-allowlist"}, true},
		{fmt.Sprintf("GET http://127.0.0.1:%d/forbidden HTTP/1.1\r\n\r\n", port), 403, RuleAuthz, []string{"no-forbidden"}, false},
		{fmt.Sprintf("GET http://127.0.0.1:%d/broken HTTP/1.1\r\n\r\n", port), 403, RuleAuthz, nil, false},
		{fmt.Sprintf("GET http://127.0.0.1:%d/ok HTTP/1.1\r\n\r\n", port+1), 403, "default-deny", nil, false},
	} {
		before := len(up.Requests())
		nstart := len(tp.rec.Starts())
		resp, body := tp.rawRequest(t, tt.raw)
		if resp.StatusCode != tt.status || (tt.rule != "" && resp.Header.Get("X-Enclave-Rule") != tt.rule) {
			t.Errorf("%q: status %d rule %q (%s), want %d %s", tt.raw, resp.StatusCode, resp.Header.Get("X-Enclave-Rule"), body, tt.status, tt.rule)
		}
		if got := len(up.Requests()) > before; got != tt.reachesApp {
			t.Errorf("%q: upstream reached = %v, want %v", tt.raw, got, tt.reachesApp)
		}
		starts := tp.rec.Starts()
		if len(starts) != nstart+1 {
			t.Fatalf("%q: %d flows recorded, want 1", tt.raw, len(starts)-nstart)
		}
		if f := starts[nstart]; !slices.Equal(f.Policies, tt.policies) || f.Decision.Allow != (tt.status == 200) {
			t.Errorf("%q: recorded policies %v allow %v, want %v", tt.raw, f.Policies, f.Decision.Allow, tt.policies)
		}
	}
	// Asked about the three flows the allowlist allowed, never the fourth.
	mu.Lock()
	if len(asked) != 3 {
		t.Errorf("Authorize asked %d times (%v), want 3", len(asked), asked)
	}
	mu.Unlock()
	// A tunnel is put to it too.
	resp, _ := tp.rawRequest(t, fmt.Sprintf("CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", port))
	if resp.StatusCode != 403 || resp.Header.Get("X-Enclave-Rule") != RuleAuthz {
		t.Errorf("CONNECT refused by Authorize: status %d rule %q, want 403 %s", resp.StatusCode, resp.Header.Get("X-Enclave-Rule"), RuleAuthz)
	}
	if d := tp.dial.Addrs(); len(d) != 1 {
		t.Errorf("dialled %v, want only the one allowed flow", d)
	}
}

// A name Config.Authorize refuses is not looked up on the host (its query
// name would reach the domain's DNS servers) and gets REFUSED.
func TestAuthorizeNarrowsDNS(t *testing.T) {
	n, names := dnsPolicy()
	tp := startProxy(t, n, names, func(c *Config) {
		c.Authorize = func(ctx context.Context, f *Flow) (Authorization, error) {
			if f.Scheme != "dns" || f.Port != 0 || f.Method != "DNS" {
				return Authorization{}, fmt.Errorf("unexpected flow %+v", f)
			}
			if f.Host == "a.wild.test" {
				return Authorization{Allow: true, Policies: []string{"egress-network-allowlist"}}, nil
			}
			return Authorization{Policies: []string{"no-wild"}, Reason: "forbidden by no-wild"}, nil
		}
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go tp.p.ServeDNS(pc)
	s := &dnsServer{testProxy: tp, udp: pc.LocalAddr().String()}
	if m := s.exchangeUDP(t, dnsQuery(t, "a.wild.test.", dnsmessage.TypeA)); m.RCode != dnsmessage.RCodeSuccess || len(answerAddrs(m)) != 1 {
		t.Errorf("permitted name: rcode %v answers %v, want one answer", m.RCode, answerAddrs(m))
	}
	if m := s.exchangeUDP(t, dnsQuery(t, "leaked-data.wild.test.", dnsmessage.TypeA)); m.RCode != dnsmessage.RCodeRefused || len(m.Answers) != 0 {
		t.Errorf("forbidden name: rcode %v answers %v, want REFUSED", m.RCode, answerAddrs(m))
	}
	if asked := tp.res.Asked(); !slices.Contains(asked, "a.wild.test") || slices.Contains(asked, "leaked-data.wild.test") {
		t.Errorf("names looked up on the host = %v, want a.wild.test and never the forbidden one", asked)
	}
	qs := tp.rec.Queries()
	if len(qs) != 2 || !strings.Contains(qs[1].Reason, "no-wild") {
		t.Errorf("recorded queries %+v, want the refusal naming no-wild", qs)
	}
}
