package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/enclave-dev/enclave/internal/audit"
	"github.com/enclave-dev/enclave/internal/session"
)

const dataAbout = `Data shows where a session's data went, from the audit log: per model, the
requests, bytes and tokens sent and received, the provider's upstream and
agreed data terms; per network host, the flows and bytes; what was blocked
and why; which secrets were redacted (rule and placeholder, never the
secret) and which classified files were found in prompts.
SESSION is an id, a unique part of one, or "last".`

func (e *Env) dataCmd(ctx context.Context, args []string) error {
	fs := e.newFlagSet("data", "data [flags] SESSION", dataAbout, "    enclave data last\n    enclave data --json s-20261124-150405-a1b2c3")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, s, err := e.sessionArg(ctx, fs, false)
	if err != nil {
		return err
	}
	defer st.Close()
	var evs []audit.Event
	f := audit.Filter{Session: s.ID, Kinds: []string{"gateway", "model.call", "egress", "egress.end", "dns"}}
	if err := audit.Records(ctx, st.store, f, func(r audit.Record) error {
		evs = append(evs, r.Event)
		return nil
	}); err != nil {
		return err
	}
	d, err := session.Data(s.ID, evs)
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(d)
	}
	return writeData(e, d)
}

func writeData(e *Env, d *session.DataFlow) error {
	w := e.Stdout
	fmt.Fprintf(w, "session %s\n", d.Session)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nmodels:")
	if !d.Gateway {
		fmt.Fprintln(w, "  none: the session ran without the model gateway")
	} else if len(d.Models) == 0 {
		fmt.Fprintln(w, "  no model calls")
	} else {
		fmt.Fprintln(tw, "  MODEL\tPROVIDER\tUPSTREAM\tREQUESTS\tREFUSED\tSENT\tRECEIVED\tTOKENS IN/OUT\tREDACTED\tTERMS")
		for _, m := range d.Models {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%s\t%s\t%d/%d\t%d\t%s\n", orDash(m.Model), orDash(m.Provider), orDash(m.Upstream),
				m.Requests, m.Refused, humanBytes(m.RequestBytes), humanBytes(m.ResponseBytes), m.InputTokens, m.OutputTokens, m.Redactions, terms(m))
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\nnetwork hosts:")
	if len(d.Hosts) == 0 {
		fmt.Fprintln(w, "  none")
	} else {
		fmt.Fprintln(tw, "  HOST\tFLOWS\tDENIED\tSENT\tRECEIVED")
		for _, h := range d.Hosts {
			fmt.Fprintf(tw, "  %s:%d\t%d\t%d\t%s\t%s\n", h.Host, h.Port, h.Flows, h.Denied, humanBytes(h.BytesUp), humanBytes(h.BytesDown))
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\nblocked:")
	if len(d.Blocked) == 0 {
		fmt.Fprintln(w, "  nothing")
	}
	for _, b := range d.Blocked {
		times := ""
		if b.Count > 1 {
			times = fmt.Sprintf(" (%d times)", b.Count)
		}
		fmt.Fprintf(w, "  %-6s %s%s: %s\n", b.Kind, b.What, times, b.Reason)
	}
	for _, r := range d.DroppedRules {
		fmt.Fprintf(w, "  rule   %s\n", r.Reason)
	}
	fmt.Fprintln(w, "\nredacted secrets:")
	if len(d.Redactions) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, r := range d.Redactions {
		fmt.Fprintf(w, "  %s: %d times as %s, to %s\n", r.Rule, r.Count, r.Placeholder, orDash(r.Model))
	}
	fmt.Fprintln(w, "\nclassified content in prompts:")
	if len(d.Classified) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, c := range d.Classified {
		fmt.Fprintf(w, "  %s lines %s (%s): %s, %d times, to %s\n", c.Path, c.Lines, c.Level, c.Action, c.Count, orDash(c.Model))
	}
	return nil
}

func terms(m session.ModelFlow) string {
	if m.Terms == nil {
		return "not stated"
	}
	var parts []string
	if m.Terms.TrainsOnInputs {
		parts = append(parts, "trains on inputs")
	} else {
		parts = append(parts, "no training")
	}
	if m.Terms.Retention != "" {
		parts = append(parts, "retention "+m.Terms.Retention)
	}
	if m.Terms.Region != "" {
		parts = append(parts, "region "+m.Terms.Region)
	}
	return strings.Join(parts, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
