package console

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// TestEveryReasonCodeIsExplained reads the reason codes from the resolver's and the
// DLQ's source, so a code added there without words here fails.
func TestEveryReasonCodeIsExplained(t *testing.T) {
	codes := map[string]bool{}
	for _, file := range []string{"../../../handlers/resolver/decision.go", "../../../handlers/fold/classify.go"} {
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok || len(vs.Names) != 1 || !strings.HasPrefix(vs.Names[0].Name, "Reason") || len(vs.Values) != 1 {
				return true
			}
			if lit, ok := vs.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				s, _ := strconv.Unquote(lit.Value)
				codes[s] = true
			}
			return true
		})
	}
	if len(codes) < 25 {
		t.Fatalf("found only %d reason codes: is the parse right?", len(codes))
	}
	for code := range codes {
		if _, ok := reasonWords[code]; !ok {
			t.Errorf("reason code %s has no explanation", code)
		}
	}
}
