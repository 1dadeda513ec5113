// Package httpjson writes the JSON answers of orderflow's HTTP services, so every
// route answers with one content type, no caching, and one error shape:
// {"error": "..."}.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
}

// Write answers code with v as JSON.
func Write(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers code with msg as the error.
func WriteError(w http.ResponseWriter, code int, msg string) {
	Write(w, code, Error{Error: msg})
}
