package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/schemas"
)

const (
	// sessionCookie holds the agent token: the session is the token.
	sessionCookie = "orderflow_console"
	// signinCookie holds the sign-in form's CSRF value (double submit).
	signinCookie = "orderflow_console_signin"
	// maxFormBytes bounds a form: a token, a reason and a version vector.
	maxFormBytes = 16 << 10
)

var (
	// errNoSession: no session cookie.
	errNoSession = errors.New("not signed in")
	// errSessionEnded: a session cookie whose token no longer verifies (expired,
	// signed by a rotated key) or is not an agent's.
	errSessionEnded = errors.New("session ended")
)

// msgSessionEnded is what an agent whose session ended reads.
const msgSessionEnded = "Your session has ended: the agent token expired or is no longer valid. Sign in again with a fresh token."

// session is a signed-in agent.
type session struct {
	token string
	id    auth.Identity
}

// csrf is the session's CSRF token: a hash of the token, so it needs no storage,
// and a page that cannot read the HttpOnly cookie cannot compute it.
func (s *session) csrf() string {
	sum := sha256.Sum256([]byte("orderflow console csrf\x00" + s.token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// chrome is the page frame for s, which may be nil (signed out).
func (s *session) chrome(title, notice, errMsg string) chrome {
	ch := chrome{Title: title, Notice: notice, Error: errMsg}
	if s != nil {
		ch.Agent, ch.CSRF = s.id.ActorID, s.csrf()
	}
	return ch
}

// session returns the request's agent: errNoSession, errSessionEnded, or another
// error when tokens cannot be checked at all (the JWKS is unreachable).
func (c *Console) session(r *http.Request) (*session, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, errNoSession
	}
	id, err := c.cfg.Tokens.Verify(r.Context(), ck.Value)
	switch {
	case errors.Is(err, auth.ErrInvalidToken):
		return nil, fmt.Errorf("%w: %v", errSessionEnded, err)
	case err != nil:
		return nil, fmt.Errorf("token keys unavailable: %w", err)
	case id.Source != schemas.SourceAgent:
		return nil, fmt.Errorf("%w: token of source %s", errSessionEnded, id.Source)
	}
	return &session{token: ck.Value, id: id}, nil
}

// page returns the agent of a page request, or answers with the sign-in page
// (coming back to this page afterwards) and false.
func (c *Console) page(w http.ResponseWriter, r *http.Request) (*session, bool) {
	s, err := c.session(r)
	switch {
	case err == nil:
		return s, true
	case errors.Is(err, errNoSession):
		c.signInPage(w, r, http.StatusUnauthorized, "", "Sign in to continue.", r.URL.RequestURI())
	case errors.Is(err, errSessionEnded):
		clearCookie(w, r, sessionCookie)
		c.signInPage(w, r, http.StatusUnauthorized, msgSessionEnded, "", r.URL.RequestURI())
	default:
		c.fail(w, nil, http.StatusServiceUnavailable, "Cannot check agent tokens now; retry in a moment", err)
	}
	return nil, false
}

// form returns the agent of a form post whose CSRF token is the session's, or
// answers and returns false. The form is parsed.
func (c *Console) form(w http.ResponseWriter, r *http.Request) (*session, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		c.render(w, http.StatusBadRequest, "message", messagePage{chrome: chrome{Title: "Bad request", Error: "The form could not be read: " + err.Error()}})
		return nil, false
	}
	s, err := c.session(r)
	switch {
	case errors.Is(err, errNoSession) || errors.Is(err, errSessionEnded):
		clearCookie(w, r, sessionCookie)
		// Nothing was done: say so, so the agent knows to send it again.
		c.signInPage(w, r, http.StatusUnauthorized, msgSessionEnded+" Nothing was sent.", "", "")
		return nil, false
	case err != nil:
		c.fail(w, nil, http.StatusServiceUnavailable, "Cannot check agent tokens now; retry in a moment", err)
		return nil, false
	}
	if !sameSecret(r.PostForm.Get("csrf"), s.csrf()) {
		c.render(w, http.StatusForbidden, "message", messagePage{
			chrome: s.chrome("Form refused", "", "This form was not sent from a console page of your session (its CSRF token is missing or wrong), so nothing was done. Reload the page and try again."),
			Back:   Prefix,
		})
		return nil, false
	}
	return s, true
}

func sameSecret(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// signInPage answers with the sign-in form and a fresh double-submit CSRF value.
func (c *Console) signInPage(w http.ResponseWriter, r *http.Request, code int, errMsg, notice, next string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	value := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{
		Name: signinCookie, Value: value, Path: Prefix, MaxAge: 3600,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	c.render(w, code, "signin", signInPage{
		chrome: chrome{Title: "Sign in", CSRF: value, Error: errMsg, Notice: notice},
		Next:   safeNext(next),
	})
}

type signInPage struct {
	chrome
	Next string
}

// safeNext keeps a redirect target inside the console, so a crafted sign-in link
// cannot send the agent elsewhere.
func safeNext(next string) string {
	if next == Prefix || (strings.HasPrefix(next, Prefix+"/") && !strings.ContainsAny(next, "\\\r\n")) {
		return next
	}
	return ""
}

func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		c.signInPage(w, r, http.StatusBadRequest, "The form could not be read: "+err.Error(), "", "")
		return
	}
	next := r.PostForm.Get("next")
	ck, err := r.Cookie(signinCookie)
	if err != nil || !sameSecret(r.PostForm.Get("csrf"), ck.Value) {
		c.signInPage(w, r, http.StatusForbidden, "This sign-in form was not sent from this console (its CSRF token is missing or wrong, or the form is over an hour old). Try again on this page.", "", next)
		return
	}
	raw := strings.TrimSpace(r.PostForm.Get("token"))
	if raw == "" {
		c.signInPage(w, r, http.StatusBadRequest, "Paste your agent token (orderflow token issue --source agent --actor YOUR_ID).", "", next)
		return
	}
	id, err := c.cfg.Tokens.Verify(r.Context(), raw)
	switch {
	case errors.Is(err, auth.ErrInvalidToken):
		c.signInPage(w, r, http.StatusUnauthorized, "This token is not valid here: "+err.Error(), "", next)
		return
	case err != nil:
		c.fail(w, nil, http.StatusServiceUnavailable, "Cannot check agent tokens now; retry in a moment", err)
		return
	case id.Source != schemas.SourceAgent:
		c.signInPage(w, r, http.StatusForbidden, fmt.Sprintf("This token is for source %s; the console needs an agent token (orderflow token issue --source agent --actor YOUR_ID).", id.Source), "", next)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: raw, Path: Prefix, Expires: id.Expires,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	clearCookie(w, r, signinCookie)
	if next = safeNext(next); next == "" {
		next = Prefix
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.form(w, r); !ok {
		return
	}
	clearCookie(w, r, sessionCookie)
	c.signInPage(w, r, http.StatusOK, "", "Signed out. The token itself stays valid until it expires: discard it if you are done.", "")
}

func clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: Prefix, MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}
