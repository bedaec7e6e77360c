package policy

import "testing"

func TestScratch(t *testing.T) {
	p := Default()
	pr, err := p.Profile("")
	t.Logf("%+v %v", pr, err)
	t.Logf("%+v", p.Classification)
	t.Logf("%+v", p.Gateway)
}
