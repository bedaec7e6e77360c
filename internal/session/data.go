package session

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/gateway"
)

// DataFlow answers "where did my data go" for one session, computed from
// its audit events alone (model.call, egress, egress.end, dns, gateway), so
// it can be recomputed from an exported log.
type DataFlow struct {
	Session string      `json:"session"`
	Models  []ModelFlow `json:"models"`
	Hosts   []HostFlow  `json:"hosts"`
	// Blocked lists each distinct refusal once, with a count.
	Blocked    []BlockedFlow   `json:"blocked"`
	Redactions []RedactionFlow `json:"redactions"`
	Classified []ClassifiedHit `json:"classified"`
	// DroppedRules are egress rules removed because they would have
	// reached a model provider without the gateway.
	DroppedRules []DroppedRule `json:"dropped_rules,omitempty"`
	// Gateway is false when the session ran without the model gateway.
	Gateway bool `json:"gateway"`
}

// ModelFlow sums one model's calls.
type ModelFlow struct {
	Provider      string         `json:"provider"`
	Model         string         `json:"model"`
	Upstream      string         `json:"upstream"`
	Terms         *gateway.Terms `json:"terms,omitempty"`
	Requests      int64          `json:"requests"`
	Refused       int64          `json:"refused"`
	Partial       int64          `json:"partial"`
	RequestBytes  int64          `json:"request_bytes"`
	ResponseBytes int64          `json:"response_bytes"`
	InputTokens   int64          `json:"input_tokens"`
	OutputTokens  int64          `json:"output_tokens"`
	Redactions    int64          `json:"redactions"`
}

// HostFlow sums the egress flows to one host and port.
type HostFlow struct {
	Host      string `json:"host"`
	Port      int    `json:"port"`
	Flows     int64  `json:"flows"`
	Denied    int64  `json:"denied"`
	BytesUp   int64  `json:"bytes_up"`
	BytesDown int64  `json:"bytes_down"`
}

// BlockedFlow is one distinct refusal.
type BlockedFlow struct {
	Kind   string `json:"kind"` // "model", "egress", "dns"
	What   string `json:"what"`
	Reason string `json:"reason"`
	Count  int64  `json:"count"`
}

// RedactionFlow is one secret replaced in prompts: the rule and the
// placeholder the model saw, never the secret.
type RedactionFlow struct {
	Rule        string `json:"rule"`
	Placeholder string `json:"placeholder"`
	Model       string `json:"model"`
	Count       int64  `json:"count"`
}

// ClassifiedHit is classified content found in prompts.
type ClassifiedHit struct {
	Path   string `json:"path"`
	Level  string `json:"level"`
	Action string `json:"action"`
	Model  string `json:"model"`
	Lines  string `json:"lines"`
	Count  int64  `json:"count"`
}

type egressEvent struct {
	Host      string `json:"host"`
	Port      int    `json:"port"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Reason    string `json:"reason"`
	BytesUp   int64  `json:"bytes_up"`
	BytesDown int64  `json:"bytes_down"`
	Name      string `json:"name"`
	Type      string `json:"type"`
}

// Data computes the data flow of a session from its audit events. An event
// it cannot decode is an error naming its kind and sequence position.
func Data(session string, events []audit.Event) (*DataFlow, error) {
	d := &DataFlow{Session: session}
	models := map[string]*ModelFlow{}
	hosts := map[string]*HostFlow{}
	blocked := map[string]*BlockedFlow{}
	redact := map[string]*RedactionFlow{}
	class := map[string]*ClassifiedHit{}
	model := func(c *gateway.Call) *ModelFlow {
		k := c.Provider + "\x00" + c.Model
		m := models[k]
		if m == nil {
			m = &ModelFlow{Provider: c.Provider, Model: c.Model, Upstream: c.Upstream, Terms: c.Terms}
			models[k] = m
		}
		if m.Upstream == "" {
			m.Upstream = c.Upstream
		}
		if m.Terms == nil {
			m.Terms = c.Terms
		}
		return m
	}
	host := func(h string, port int) *HostFlow {
		k := fmt.Sprintf("%s:%d", h, port)
		x := hosts[k]
		if x == nil {
			x = &HostFlow{Host: h, Port: port}
			hosts[k] = x
		}
		return x
	}
	block := func(kind, what, reason string) {
		k := kind + "\x00" + what + "\x00" + reason
		b := blocked[k]
		if b == nil {
			b = &BlockedFlow{Kind: kind, What: what, Reason: reason}
			blocked[k] = b
		}
		b.Count++
	}
	for i, ev := range events {
		if ev.Session != "" && ev.Session != session {
			continue
		}
		bad := func(err error) error {
			return fmt.Errorf("%s event %d of session %s: %w", ev.Kind, i+1, session, err)
		}
		switch ev.Kind {
		case "gateway":
			var g struct {
				Enabled bool          `json:"enabled"`
				Dropped []DroppedRule `json:"dropped_rules"`
			}
			if err := json.Unmarshal(ev.Data, &g); err != nil {
				return nil, bad(err)
			}
			d.Gateway = d.Gateway || g.Enabled
			d.DroppedRules = append(d.DroppedRules, g.Dropped...)
		case "model.call":
			var c gateway.Call
			if err := json.Unmarshal(ev.Data, &c); err != nil {
				return nil, bad(err)
			}
			m := model(&c)
			if c.Phase == gateway.PhaseDecision {
				if c.Allow {
					m.Requests++
				} else {
					m.Refused++
					what := c.Model
					if what == "" {
						what = string(c.Family)
					}
					block("model", what+" "+c.Path, c.Reason)
				}
				for _, r := range c.Redactions {
					m.Redactions += int64(r.Count)
					k := r.Rule + "\x00" + r.Placeholder + "\x00" + c.Model
					x := redact[k]
					if x == nil {
						x = &RedactionFlow{Rule: r.Rule, Placeholder: r.Placeholder, Model: c.Model}
						redact[k] = x
					}
					x.Count += int64(r.Count)
				}
				for _, h := range c.Classification {
					lines := fmt.Sprintf("%d-%d", h.StartLine, h.EndLine)
					k := h.Path + "\x00" + h.Action + "\x00" + c.Model + "\x00" + lines
					x := class[k]
					if x == nil {
						x = &ClassifiedHit{Path: h.Path, Level: h.Level, Action: h.Action, Model: c.Model, Lines: lines}
						class[k] = x
					}
					x.Count++
				}
				continue
			}
			m.RequestBytes += c.RequestBytes
			m.ResponseBytes += c.ResponseBytes
			m.InputTokens += c.InputTokens
			m.OutputTokens += c.OutputTokens
			if c.Partial {
				m.Partial++
			}
		case "egress", "egress.end", "dns":
			var e egressEvent
			if err := json.Unmarshal(ev.Data, &e); err != nil {
				return nil, bad(err)
			}
			switch ev.Kind {
			case "egress":
				h := host(e.Host, e.Port)
				h.Flows++
				if ev.Decision == "deny" {
					h.Denied++
					block("egress", fmt.Sprintf("%s %s:%d%s", e.Method, e.Host, e.Port, e.Path), e.Reason)
				}
			case "egress.end":
				h := host(e.Host, e.Port)
				h.BytesUp += e.BytesUp
				h.BytesDown += e.BytesDown
			case "dns":
				if ev.Decision == "deny" {
					block("dns", e.Type+" "+e.Name, e.Reason)
				}
			}
		}
	}
	d.Models = sortedValues(models, func(a, b ModelFlow) int {
		return cmp.Or(cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Model, b.Model))
	})
	d.Hosts = sortedValues(hosts, func(a, b HostFlow) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.Port, b.Port))
	})
	d.Blocked = sortedValues(blocked, func(a, b BlockedFlow) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.What, b.What), cmp.Compare(a.Reason, b.Reason))
	})
	d.Redactions = sortedValues(redact, func(a, b RedactionFlow) int {
		return cmp.Or(cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Placeholder, b.Placeholder), cmp.Compare(a.Model, b.Model))
	})
	d.Classified = sortedValues(class, func(a, b ClassifiedHit) int {
		return cmp.Or(cmp.Compare(a.Path, b.Path), cmp.Compare(a.Lines, b.Lines), cmp.Compare(a.Model, b.Model), cmp.Compare(a.Action, b.Action))
	})
	return d, nil
}

func sortedValues[T any](m map[string]*T, less func(a, b T) int) []T {
	out := make([]T, 0, len(m))
	for _, v := range m {
		out = append(out, *v)
	}
	slices.SortFunc(out, less)
	return out
}
