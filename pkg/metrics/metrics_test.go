package metrics

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

var descRe = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

// series returns "name{label,label}" for each collector, as the operator
// guide writes them (labels in declaration order; no braces without labels).
func series(cs []prometheus.Collector) []string {
	var out []string
	for _, c := range cs {
		ch := make(chan *prometheus.Desc, 4)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := descRe.FindStringSubmatch(d.String())
			if m == nil {
				panic("cannot read " + d.String())
			}
			s := m[1]
			if m[2] != "" {
				s += "{" + m[2] + "}"
			}
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// TestOperatorGuideListsEverySeries: the series table of
// docs/operations.md names each daemon's series, with their labels, and
// no other.
func TestOperatorGuideListsEverySeries(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	daemons := map[string][]prometheus.Collector{"backup": BackupSeries(), "volume manager": VolumeSeries(), "gateway": GatewaySeries()}
	documented := map[string][]string{}
	code := regexp.MustCompile("`(blockvault_[^`]+)`")
	for _, l := range strings.Split(string(doc), "\n") {
		cells := strings.Split(l, "|")
		if len(cells) < 4 || !strings.HasPrefix(l, "| `blockvault_") {
			continue
		}
		d := strings.TrimSpace(cells[2])
		if daemons[d] == nil {
			t.Errorf("operations.md: series of an unknown daemon %q: %s", d, l)
			continue
		}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			documented[d] = append(documented[d], m[1])
		}
	}
	for d, cs := range daemons {
		got := slices.Sorted(slices.Values(documented[d]))
		if want := series(cs); !slices.Equal(got, want) {
			t.Errorf("operations.md lists the %s's series as\n  %v\nthe code has\n  %v", d, got, want)
		}
	}
}
