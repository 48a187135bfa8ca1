package admin

import (
	"html/template"
	"net/http"

	"github.com/gorilla/mux"
)

// authorize answers {"data":{"authorization_url":"…"}}: the link the
// account owner opens to connect an OAuth2 secret.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	u, err := s.Flow.AuthorizationURL(vars["ws"], vars["id"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, mediaType, map[string]any{"data": map[string]string{"authorization_url": u}})
}

// refresh renews a secret's token now and returns the secret, masked. A
// refresh the provider refused for good returns the secret in state error.
func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	c, err := s.Flow.Refresh(r.Context(), vars["ws"], vars["id"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeData(w, r, http.StatusOK, secretResource(c))
}

var callbackPage = template.Must(template.New("callback").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto">
<h1>{{.Title}}</h1>
<p>{{.Detail}}</p>
</body></html>
`))

// callback is where the provider sends the browser back. It shows a short
// page saying whether the account is connected, and if not, why. The page
// never shows a token or the code, and is not cached or sent as a referrer.
func (s *Server) callback(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	status := http.StatusOK
	page := struct{ Title, Detail string }{Title: "Account connected"}
	if c, err := s.Flow.Callback(r.Context(), r.URL.Query()); err != nil {
		var obj errorObject
		status, obj = errorResponse(err)
		if status == http.StatusInternalServerError {
			s.logger().ErrorContext(r.Context(), "oauth callback failed", "err", err)
		}
		page.Title, page.Detail = "The account was not connected", obj.Detail
	} else {
		page.Detail = "The secret \u201c" + c.Name + "\u201d is ready. You can close this window."
	}
	w.WriteHeader(status)
	_ = callbackPage.Execute(w, page) // a failed write means the browser has gone
}
