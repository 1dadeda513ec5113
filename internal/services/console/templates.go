package console

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/orderflow/orderflow/schemas"
)

// pageNames are the templates/<name>.html files; each defines "content" inside the
// frame of layout.html, and all share partials.html.
var pageNames = []string{"signin", "home", "order", "confirm", "entities", "message"}

var funcs = template.FuncMap{
	"words":   func(s any) string { return words(fmt.Sprint(s)) },
	"explain": explain,
	"time": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return ""
			}
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		case *time.Time:
			if v == nil || v.IsZero() {
				return ""
			}
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		}
		return ""
	},
	"iso":          func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"observedText": observedText,
	// dict passes several values to a partial template: dict "k1" v1 "k2" v2.
	"dict": func(kv ...any) (map[string]any, error) {
		if len(kv)%2 != 0 {
			return nil, fmt.Errorf("dict: odd number of arguments")
		}
		m := make(map[string]any, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			m[fmt.Sprint(kv[i])] = kv[i+1]
		}
		return m, nil
	},
}

// observedText is a version vector in words: "platform 1, merchant 2".
func observedText(v map[schemas.Source]uint64) string {
	var parts []string
	for _, s := range schemas.Sources {
		if n, ok := v[s]; ok {
			parts = append(parts, fmt.Sprintf("%s %d", s, n))
		}
	}
	if len(parts) == 0 {
		return "nothing yet"
	}
	return strings.Join(parts, ", ")
}

func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := base.Clone()
		if err == nil {
			t, err = t.ParseFS(templateFS, "templates/"+name+".html")
		}
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}
