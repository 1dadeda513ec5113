package schemas

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// example is one file of examples/ (format in examples/README.md).
type example struct {
	Name         string          `json:"-"`
	Valid        bool            `json:"-"`
	Subject      string          `json:"subject"`
	RawBody      json.RawMessage `json:"body"`
	Problems     []string        `json:"problems"`
	BeyondSchema string          `json:"beyond_schema"`
	Note         string          `json:"note"`
}

// Body is the event body: the JSON value itself, or the raw text when given as a string.
func (x example) Body(t testing.TB) []byte {
	if len(x.RawBody) > 0 && x.RawBody[0] == '"' {
		var s string
		if err := json.Unmarshal(x.RawBody, &s); err != nil {
			t.Fatalf("%s: body: %v", x.Name, err)
		}
		return []byte(s)
	}
	return x.RawBody
}

func loadExamples(t testing.TB) []example {
	t.Helper()
	var all []example
	for _, kind := range []string{"valid", "invalid"} {
		files, err := filepath.Glob(filepath.Join("examples", kind, "*.json"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no examples in examples/%s: %v", kind, err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			x := example{Name: kind + "/" + filepath.Base(f), Valid: kind == "valid"}
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&x); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if x.Subject == "" || x.RawBody == nil || x.Valid != (x.Problems == nil) {
				t.Fatalf("%s: needs subject and body, and problems exactly when invalid", f)
			}
			all = append(all, x)
		}
	}
	return all
}

func TestExamples(t *testing.T) {
	for _, x := range loadExamples(t) {
		t.Run(x.Name, func(t *testing.T) {
			e, err := Decode(x.Subject, x.Body(t))
			if x.Valid {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				if ps := e.Validate(); ps != nil {
					t.Fatalf("decoded event fails Validate: %v", ps)
				}
				return
			}
			ps, ok := err.(Problems)
			if !ok || len(ps) == 0 || e != nil {
				t.Fatalf("want Problems and no event, got %T %v", err, err)
			}
			var got []string
			for _, p := range ps {
				if !slices.Contains(got, p.Path) {
					got = append(got, p.Path)
				}
			}
			want := slices.Clone(x.Problems)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("problem paths %q, want %q\n%v", got, want, err)
			}
			t.Log(err)
		})
	}
}

var eventSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	const url = "https://github.com/orderflow/orderflow/schemas/event.schema.json"
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(EventJSONSchema))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat() // date-time is only an annotation unless asserted
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	return c.Compile(url)
})

// schemaAccepts runs the reference JSON Schema validator: slow, for tests only.
func schemaAccepts(t testing.TB, body []byte) (bool, error) {
	t.Helper()
	sch, err := eventSchema()
	if err != nil {
		t.Fatalf("compile event.schema.json: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	err = sch.Validate(doc)
	return err == nil, err
}

// bodyProblems is Decode without the subject: exactly what the schema can judge.
func bodyProblems(body []byte) Problems {
	var ps Problems
	new(Event).decodeBody(body, "", &ps)
	return ps
}

func TestSchemaAgreesWithGo(t *testing.T) {
	for _, x := range loadExamples(t) {
		t.Run(x.Name, func(t *testing.T) {
			body := x.Body(t)
			schemaOK, schemaErr := schemaAccepts(t, body)
			ps := bodyProblems(body)
			if x.BeyondSchema != "" {
				if !schemaOK || len(ps) == 0 {
					t.Fatalf("beyond_schema example: want schema to accept and Go to reject; schema: %v, Go: %v", schemaErr, ps)
				}
				return
			}
			if schemaOK != (len(ps) == 0) {
				t.Fatalf("disagree: schema: %v; Go: %v", schemaErr, ps)
			}
			// Subject problems and subject mismatches leave a body the schema accepts.
			subjectOnly := strings.HasSuffix(x.Name, "_mismatch.json") ||
				!slices.ContainsFunc(x.Problems, func(p string) bool { return p != "subject" })
			if x.Valid || subjectOnly {
				if !schemaOK {
					t.Fatalf("want the body valid: %v", schemaErr)
				}
			} else if schemaOK {
				t.Fatalf("want the body invalid")
			}
		})
	}
}
