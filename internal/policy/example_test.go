package policy_test

import (
	"fmt"

	"github.com/enclave-dev/enclave/internal/policy"
)

func Example() {
	p, err := policy.Parse("enclave.yaml", []byte(`version: 1
profiles:
  default:
    network:
      allow:
        - host: "*.registry.example.com"
        - host: pypi.example.com
          ports: [80]
          methods: [GET]
          paths: ["/simple/**"]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	pr, _ := p.Profile("")
	for _, r := range []policy.Request{
		{Host: "cdn.registry.example.com", Port: 443, Method: "CONNECT"},
		{Host: "registry.example.com", Port: 443, Method: "CONNECT"},
		{Host: "pypi.example.com", Port: 80, Method: "GET", Path: "/simple/../upload"},
	} {
		d := pr.Network.Decide(r)
		fmt.Println(d.Allow, d.Rule, d.Reason)
	}
	// Output:
	// true network.allow[0] cdn.registry.example.com:443 is allowed
	// false default-deny host registry.example.com is not on the policy's network allowlist
	// false network.allow[1] path /simple/../upload on pypi.example.com is not allowed (allowed: /simple/**)
}

func ExampleParse_error() {
	_, err := policy.Parse("enclave.yaml", []byte(`version: 1
profiles:
  default:
    network:
      allow:
        - host: registry.example.com
          ports: [https]
`))
	fmt.Println(err)
	// Output:
	// enclave.yaml:7:19: profiles.default.network.allow[0].ports[0]: "https" is not a port number; write 443
}
