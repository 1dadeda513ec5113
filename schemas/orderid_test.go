package schemas

import (
	"encoding/json"
	"os"
	"regexp"
	"testing"

	"pgregory.net/rapid"
)

// TestOrderIDRuleIsOneRule: the JSON Schema states OrderIDPattern, and ValidOrderID
// accepts exactly what the pattern matches, on ids near the rule's edges.
func TestOrderIDRuleIsOneRule(t *testing.T) {
	b, err := os.ReadFile("event.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			OrderID struct {
				Pattern string `json:"pattern"`
			} `json:"order_id"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	if got := schema.Properties.OrderID.Pattern; got != OrderIDPattern {
		t.Fatalf("event.schema.json order_id pattern %q, want OrderIDPattern %q", got, OrderIDPattern)
	}
	re := regexp.MustCompile(OrderIDPattern)
	rapid.Check(t, func(t *rapid.T) {
		alphabet := rapid.SampledFrom([]rune("aZ09_-.é \x00/*>"))
		s := string(rapid.SliceOfN(alphabet, 0, 70).Draw(t, "id"))
		if got, want := ValidOrderID(s), re.MatchString(s); got != want {
			t.Fatalf("ValidOrderID(%q) = %v, the pattern says %v", s, got, want)
		}
	})
}
