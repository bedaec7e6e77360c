package egress

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/enclave-dev/enclave/internal/policy"
)

type dnsServer struct {
	*testProxy
	udp, tcp string
}

func startDNS(t *testing.T, n *policy.Network, names map[string][]netip.Addr) *dnsServer {
	t.Helper()
	tp := startProxy(t, n, names, nil)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udpDone, tcpDone := make(chan error, 1), make(chan error, 1)
	go func() { udpDone <- tp.p.ServeDNS(pc) }()
	go func() { tcpDone <- tp.p.ServeDNSTCP(l) }()
	t.Cleanup(func() {
		tp.p.Close()
		for _, ch := range []chan error{udpDone, tcpDone} {
			if err := <-ch; !errors.Is(err, ErrClosed) {
				t.Errorf("ServeDNS = %v, want ErrClosed", err)
			}
		}
	})
	return &dnsServer{testProxy: tp, udp: pc.LocalAddr().String(), tcp: l.Addr().String()}
}

func dnsQuery(t testing.TB, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x1234, RecursionDesired: true})
	b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// exchangeUDP sends msg and returns the parsed answer, or nil if none came
// within a short wait.
func (s *dnsServer) exchangeUDP(t testing.TB, msg []byte) *dnsmessage.Message {
	t.Helper()
	c, err := net.Dial("udp", s.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(msg)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatalf("answer does not parse: %v", err)
	}
	return &m
}

func (s *dnsServer) exchangeTCP(t testing.TB, msg []byte) *dnsmessage.Message {
	t.Helper()
	c, err := net.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...))
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf); err != nil {
		t.Fatal(err)
	}
	return &m
}

func answerAddrs(m *dnsmessage.Message) []string {
	var out []string
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			out = append(out, netip.AddrFrom4(r.A).String())
		} else {
			out = append(out, "non-A "+a.Header.Type.String())
		}
	}
	return out
}

func dnsPolicy() (*policy.Network, map[string][]netip.Addr) {
	n := &policy.Network{DNS: true, Allow: []policy.HostRule{
		{Host: "api.test"},
		{Host: "*.wild.test"},
		{Host: "mixed.test"},
		{Host: "private.test"},
		{Host: "local.test"},
		{Host: "127.0.0.1", Ports: []int{8080}},
		{Host: "gone.test"},
	}}
	names := map[string][]netip.Addr{
		"api.test":     addrs("192.0.2.1", "8.8.8.8", "2001:4860::1"),
		"a.wild.test":  addrs("8.8.4.4"),
		"mixed.test":   addrs("8.8.8.8", "10.0.0.1", "169.254.169.254", "::ffff:127.0.0.5"),
		"private.test": addrs("10.9.9.9"),
		"local.test":   addrs("127.0.0.1"),
		"secret.test":  addrs("8.8.8.8"),
		"many.wild.test": addrs("8.8.0.1", "8.8.0.2", "8.8.0.3", "8.8.0.4", "8.8.0.5",
			"8.8.0.6", "8.8.0.7", "8.8.0.8", "8.8.0.9", "8.8.0.10"),
	}
	return n, names
}

// The addresses above are never dialled: the DNS responder only reads them
// from the fake resolver and copies them into answers.

func TestDNSAnswers(t *testing.T) {
	n, names := dnsPolicy()
	s := startDNS(t, n, names)
	for _, tt := range []struct {
		name    string
		qname   string
		qtype   dnsmessage.Type
		rcode   dnsmessage.RCode
		answers []string
	}{
		{"allowed A", "api.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"8.8.8.8"}},
		{"case preserved", "ApI.TeSt.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"8.8.8.8"}},
		{"wildcard", "a.wild.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"8.8.4.4"}},
		{"answers capped", "many.wild.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess,
			[]string{"8.8.0.1", "8.8.0.2", "8.8.0.3", "8.8.0.4", "8.8.0.5", "8.8.0.6", "8.8.0.7", "8.8.0.8"}},
		{"private filtered", "mixed.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"8.8.8.8"}},
		{"only private", "private.test.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
		{"loopback named by policy", "local.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"127.0.0.1"}},
		{"AAAA gets nothing", "api.test.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, nil},
		{"TXT gets nothing", "api.test.", dnsmessage.TypeTXT, dnsmessage.RCodeSuccess, nil},
		{"ANY gets nothing", "api.test.", dnsmessage.TypeALL, dnsmessage.RCodeSuccess, nil},
		{"not allowed", "secret.test.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
		{"exfil label", "c2VjcmV0.attacker.test.", dnsmessage.TypeTXT, dnsmessage.RCodeRefused, nil},
		{"wildcard apex", "wild.test.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
		{"allowed but unknown", "gone.test.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"IP as name", "127.0.0.1.", dnsmessage.TypeA, dnsmessage.RCodeRefused, nil},
		{"root", ".", dnsmessage.TypeNS, dnsmessage.RCodeRefused, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, transport := range []string{"udp", "tcp"} {
				var m *dnsmessage.Message
				if transport == "udp" {
					m = s.exchangeUDP(t, dnsQuery(t, tt.qname, tt.qtype))
				} else {
					m = s.exchangeTCP(t, dnsQuery(t, tt.qname, tt.qtype))
				}
				if m == nil {
					t.Fatalf("%s: no answer", transport)
				}
				if m.RCode != tt.rcode {
					t.Errorf("%s: rcode = %v, want %v", transport, m.RCode, tt.rcode)
				}
				if got := answerAddrs(m); !slices.Equal(got, tt.answers) {
					t.Errorf("%s: answers = %v, want %v", transport, got, tt.answers)
				}
				if m.ID != 0x1234 || !m.Response || len(m.Questions) != 1 || m.Questions[0].Name.String() != tt.qname {
					t.Errorf("%s: header/question = %+v %v", transport, m.Header, m.Questions)
				}
				for _, a := range m.Answers {
					if a.Header.Name.String() != tt.qname {
						t.Errorf("answer name %q, want %q", a.Header.Name, tt.qname)
					}
				}
			}
		})
	}
	// Names off the allowlist never reach the host resolver.
	for _, asked := range s.res.Asked() {
		if !n.AllowsName(asked) {
			t.Errorf("resolver asked about %q, which the policy does not allow", asked)
		}
	}
	// Every query is on record, answered or not.
	qs := s.rec.Queries()
	if len(qs) != 2*16 {
		t.Errorf("recorded %d queries, want %d", len(qs), 2*16)
	}
	for _, q := range qs {
		if q.Name == "" || q.Type == "" || q.Rcode == "" || q.Reason == "" || q.Transport == "" {
			t.Errorf("incomplete record %+v", q)
		}
		if q.Name == "c2VjcmV0.attacker.test." && (q.Rcode != "Refused" || q.Type != "TXT") {
			t.Errorf("exfil query record = %+v", q)
		}
	}
}

func TestDNSDisabledByPolicy(t *testing.T) {
	n, names := dnsPolicy()
	n.DNS = false
	s := startDNS(t, n, names)
	m := s.exchangeUDP(t, dnsQuery(t, "api.test.", dnsmessage.TypeA))
	if m == nil || m.RCode != dnsmessage.RCodeRefused || len(m.Answers) != 0 {
		t.Fatalf("answer = %+v, want REFUSED with no data", m)
	}
	if len(s.res.Asked()) != 0 {
		t.Errorf("resolver asked %v with DNS disabled", s.res.Asked())
	}
}

func TestDNSMalformed(t *testing.T) {
	n, names := dnsPolicy()
	s := startDNS(t, n, names)
	two := func() []byte {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7})
		b.StartQuestions()
		for _, name := range []string{"api.test.", "secret.test."} {
			b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
		}
		m, _ := b.Finish()
		return m
	}()
	response := dnsQuery(t, "api.test.", dnsmessage.TypeA)
	response[2] |= 0x80 // QR: a response, not a query
	notify := dnsQuery(t, "api.test.", dnsmessage.TypeA)
	notify[2] |= 4 << 3 // opcode NOTIFY
	chaos := dnsQuery(t, "api.test.", dnsmessage.TypeA)
	chaos[len(chaos)-1] = 3 // class CH
	for _, tt := range []struct {
		name  string
		msg   []byte
		rcode dnsmessage.RCode
		none  bool // no answer at all
	}{
		{"short", []byte{1, 2, 3}, 0, true},
		{"response", response, 0, true},
		{"two questions", two, dnsmessage.RCodeFormatError, false},
		{"truncated question", dnsQuery(t, "api.test.", dnsmessage.TypeA)[:15], dnsmessage.RCodeFormatError, false},
		{"pointer loop", []byte{0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1}, dnsmessage.RCodeFormatError, false},
		{"notify opcode", notify, dnsmessage.RCodeNotImplemented, false},
		{"chaos class", chaos, dnsmessage.RCodeRefused, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := s.exchangeUDP(t, tt.msg)
			if tt.none {
				if m != nil {
					t.Errorf("answer = %+v, want none", m)
				}
				return
			}
			if m == nil || m.RCode != tt.rcode || len(m.Answers) != 0 {
				t.Errorf("answer = %+v, want rcode %v and no data", m, tt.rcode)
			}
		})
	}
	if len(s.rec.Queries()) != 7 {
		t.Errorf("recorded %d queries, want 7 (malformed ones too)", len(s.rec.Queries()))
	}
}

func TestDNSRecorderFailure(t *testing.T) {
	n, names := dnsPolicy()
	s := startDNS(t, n, names)
	s.rec.mu.Lock()
	s.rec.DNSErr = func(DNSQuery) error { return errors.New("disk full") }
	s.rec.mu.Unlock()
	m := s.exchangeUDP(t, dnsQuery(t, "api.test.", dnsmessage.TypeA))
	if m == nil || m.RCode != dnsmessage.RCodeServerFailure || len(m.Answers) != 0 {
		t.Fatalf("answer = %+v, want SERVFAIL with no data when the query cannot be recorded", m)
	}
}

func TestDNSLargeNameFitsUDP(t *testing.T) {
	n, names := dnsPolicy()
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + ".many.wild.test"
	names[long] = names["many.wild.test"]
	s := startDNS(t, n, names)
	m := s.exchangeUDP(t, dnsQuery(t, long+".", dnsmessage.TypeA))
	if m == nil || len(m.Answers) != dnsMaxAnswers {
		t.Fatalf("answer = %+v, want %d records", m, dnsMaxAnswers)
	}
}

func FuzzDNS(f *testing.F) {
	n, names := dnsPolicy()
	for _, name := range []string{"api.test.", "secret.test.", "a.wild.test.", "ApI.tEsT."} {
		for _, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeTXT, dnsmessage.TypeAAAA} {
			f.Add(dnsQuery(f, name, typ))
		}
	}
	f.Add([]byte{0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1})
	rec := &FakeRecorder{}
	res := &FakeResolver{Names: names}
	p, err := New(Config{Network: n, Recorder: rec, Resolver: res})
	if err != nil {
		f.Fatal(err)
	}
	defer p.Close()
	f.Fuzz(func(t *testing.T, msg []byte) {
		resp := p.answerDNS(msg, "udp", "fuzz")
		for _, asked := range res.Asked() {
			if !n.AllowsName(asked) {
				t.Fatalf("resolver asked about %q", asked)
			}
		}
		if resp == nil {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("own answer does not parse: %v", err)
		}
		if len(resp) > 512 {
			t.Fatalf("answer of %d bytes does not fit plain UDP", len(resp))
		}
		for _, a := range m.Answers {
			r, ok := a.Body.(*dnsmessage.AResource)
			if !ok {
				t.Fatalf("answered a non-A record %v", a.Header.Type)
			}
			ip := netip.AddrFrom4(r.A)
			if ForbiddenReason(ip) != "" && !namesIP(n, ip) {
				t.Fatalf("answered forbidden address %v", ip)
			}
			if !n.AllowsName(a.Header.Name.String()) {
				t.Fatalf("answered for name %q off the allowlist", a.Header.Name)
			}
		}
	})
}
