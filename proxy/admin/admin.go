// Package admin serves the admin API, through which operators upload auth
// clients, workspaces and secrets as JSON:API documents. Secret values are
// write-only: no response, error or log line ever carries one.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/authproxy/authproxy/authflow"
	"github.com/authproxy/authproxy/credstore"
)

// Server serves the admin API.
type Server struct {
	// Store holds what the API reads and writes. Required.
	Store *credstore.Store

	// Token is the admin bearer token that every call but the health probes
	// and the OAuth2 callback must present (/metrics too: Prometheus sends
	// it with bearer_token_file). An empty Token refuses every call, so that a missing
	// configuration fails closed.
	Token string

	// Logger receives one line per request and the full text of internal
	// errors. Nil means slog.Default().
	Logger *slog.Logger

	// Flow connects and refreshes OAuth2 accounts. Nil leaves out the
	// authorize, refresh and callback routes.
	Flow *authflow.Manager

	// Metrics are served with the store's gauges on GET /metrics.
	Metrics []MetricsWriter
}

// publicRoutes are the route names that need no token: probes must work
// without the secret that the rest of the API guards.
// The OAuth2 callback needs none either: a browser arrives there from the
// provider, and the single-use state it carries is the capability.
var publicRoutes = map[string]bool{"healthz": true, "readyz": true, "oauth-callback": true}

// Router returns the admin routes on a *mux.Router, so that later features
// can add routes to it. Routes added later are logged and need the token
// too, because both are middleware of the router.
func (s *Server) Router() *mux.Router {
	r := mux.NewRouter()
	r.Use(s.logRequests, s.authenticate)

	r.HandleFunc("/healthz", s.health).Methods(http.MethodGet).Name("healthz")
	r.HandleFunc("/readyz", s.health).Methods(http.MethodGet).Name("readyz")
	r.HandleFunc("/metrics", s.metrics).Methods(http.MethodGet).Name("metrics")

	r.HandleFunc("/v2/auth-clients", s.createClient).Methods(http.MethodPost)
	r.HandleFunc("/v2/auth-clients", s.listClients).Methods(http.MethodGet)
	r.HandleFunc("/v2/auth-clients/{id}", s.getClient).Methods(http.MethodGet)
	r.HandleFunc("/v2/auth-clients/{id}", s.patchClient).Methods(http.MethodPatch)
	r.HandleFunc("/v2/auth-clients/{id}", s.deleteClient).Methods(http.MethodDelete)

	r.HandleFunc("/v2/workspaces/{ws}", s.putWorkspace).Methods(http.MethodPut)
	r.HandleFunc("/v2/workspaces/{ws}", s.getWorkspace).Methods(http.MethodGet)

	r.HandleFunc("/v2/workspaces/{ws}/secrets", s.createSecret).Methods(http.MethodPost)
	r.HandleFunc("/v2/workspaces/{ws}/secrets", s.listSecrets).Methods(http.MethodGet)
	r.HandleFunc("/v2/workspaces/{ws}/secrets/{id}", s.getSecret).Methods(http.MethodGet)
	r.HandleFunc("/v2/workspaces/{ws}/secrets/{id}", s.patchSecret).Methods(http.MethodPatch)
	r.HandleFunc("/v2/workspaces/{ws}/secrets/{id}", s.deleteSecret).Methods(http.MethodDelete)

	if s.Flow != nil {
		r.HandleFunc("/v2/workspaces/{ws}/secrets/{id}/authorize", s.authorize).Methods(http.MethodPost)
		r.HandleFunc("/v2/workspaces/{ws}/secrets/{id}/refresh", s.refresh).Methods(http.MethodPost)
		r.HandleFunc("/oauth/callback", s.callback).Methods(http.MethodGet).Name("oauth-callback")
	}

	// mux runs its middleware only on matched routes, so the fallbacks are
	// wrapped by hand: they are logged, and they answer 401 before saying
	// whether a route exists.
	r.NotFoundHandler = s.logRequests(s.authenticate(http.HandlerFunc(s.routeNotFound)))
	r.MethodNotAllowedHandler = s.logRequests(s.authenticate(http.HandlerFunc(s.methodNotAllowed)))
	return r
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// ---- middleware ----

// statusRecorder remembers the status a handler wrote, for the log line.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests writes one line per request: method, route template (so that
// ids do not fan out into distinct paths), status and duration. Never a
// header or a body, which is where the secrets are. Health probes log at
// debug level, so that an orchestrator polling them does not flood the log.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		level := slog.LevelInfo
		if route := mux.CurrentRoute(r); route != nil && publicRoutes[route.GetName()] {
			level = slog.LevelDebug
		}
		s.logger().LogAttrs(r.Context(), level, "admin request",
			slog.String("method", r.Method),
			slog.String("path", routePath(r)),
			slog.Int("status", rec.status),
			slog.Duration("duration", time.Since(start)))
	})
}

// routePath is the route template of a matched request. An unmatched
// request logs a placeholder: its path is arbitrary input, and an operator
// who pastes a value into the wrong place must not find it in the log.
func routePath(r *http.Request) string {
	if route := mux.CurrentRoute(r); route != nil {
		if t, err := route.GetPathTemplate(); err == nil {
			return t
		}
	}
	return "(unmatched)"
}

// authenticate lets a request through only with the admin token, except on
// public routes.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if route := mux.CurrentRoute(r); route != nil && publicRoutes[route.GetName()] {
			next.ServeHTTP(w, r)
			return
		}
		if !s.validToken(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			s.writeError(w, r, &apiError{status: http.StatusUnauthorized, code: "unauthorized",
				detail: "send the admin token as Authorization: Bearer <token>"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// validToken compares in constant time. Both sides are hashed first so that
// the comparison also takes the same time whatever the length of the guess.
func (s *Server) validToken(header string) bool {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || s.Token == "" {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	want := sha256.Sum256([]byte(s.Token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// ---- writing ----

func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n')) // a failed write means the client has gone
}

func (s *Server) writeData(w http.ResponseWriter, r *http.Request, status int, data any) {
	s.writeJSON(w, r, status, mediaType, document{Data: data})
}

// writeError answers with the JSON:API error for err and logs internal
// errors in full, since their text is never shown.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, obj := errorResponse(err)
	if status == http.StatusInternalServerError {
		s.logger().ErrorContext(r.Context(), "admin request failed",
			"method", r.Method, "path", routePath(r), "err", err)
	}
	body, _ := json.Marshal(errorDocument{Errors: []errorObject{obj}}) // plain strings: cannot fail
	w.Header().Set("Content-Type", mediaType)
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n')) // a failed write means the client has gone
}

// ---- health and fallbacks ----

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, r, http.StatusOK, "application/json", map[string]string{"status": "ok"})
}

func (s *Server) routeNotFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, &apiError{status: http.StatusNotFound, code: credstore.ENOTFOUND, detail: "no such endpoint"})
}

func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, &apiError{status: http.StatusMethodNotAllowed, code: "method_not_allowed",
		detail: r.Method + " is not allowed on this endpoint"})
}

// ---- auth clients ----

func (s *Server) createClient(w http.ResponseWriter, r *http.Request) {
	d, err := decode[clientInput, levelRelationships](w, r, typeAuthClient)
	if err == nil && d.ID != nil {
		err = errClientID
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	c := &credstore.AuthClient{Type: d.Attributes.Type, Scope: credstore.Scope{Level: credstore.LevelGlobal}}
	if err := applyClient(c, d); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err = s.Store.CreateAuthClient(c)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v2/auth-clients/"+url.PathEscape(c.ID))
	s.writeData(w, r, http.StatusCreated, clientResource(c))
}

// errClientID refuses client-generated ids, with the status JSON:API gives.
var errClientID = &apiError{status: http.StatusForbidden, code: "forbidden", detail: "ids are assigned by the server; leave data.id out"}

// applyClient writes what a request names onto c, and leaves the rest: on
// create c is new, on PATCH it is a copy of the stored client, so that a
// PATCH keeps the fields (and secret values) it does not name.
func applyClient(c *credstore.AuthClient, d *clientData) error {
	in := &d.Attributes
	if in.Type != "" && in.Type != c.Type {
		return credstore.Invalid("type", "cannot be changed; create a new auth client")
	}
	if in.Name != nil {
		c.Name = *in.Name
	}
	settings, err := credstore.DecodeClientSettings(c.Type, in.Credentials, c.Settings)
	if err != nil {
		return err
	}
	c.Settings = settings
	if list, ok, err := origins(in.AllowedOrigins); err != nil {
		return err
	} else if ok {
		c.AllowedOrigins = list
	}
	// A relationships member, even an empty one, states the whole scope:
	// that is how a PATCH moves a client back to global.
	if d.Relationships != nil {
		scope, err := d.Relationships.scope()
		if err != nil {
			return err
		}
		c.Scope = scope
	}
	return nil
}

func (s *Server) listClients(w http.ResponseWriter, r *http.Request) {
	clients := s.Store.AuthClients()
	out := make([]resource, 0, len(clients))
	for _, c := range clients {
		out = append(out, clientResource(c))
	}
	s.writeData(w, r, http.StatusOK, out)
}

func (s *Server) getClient(w http.ResponseWriter, r *http.Request) {
	c, err := s.Store.AuthClient(mux.Vars(r)["id"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeData(w, r, http.StatusOK, clientResource(c))
}

func (s *Server) patchClient(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	d, err := decode[clientInput, levelRelationships](w, r, typeAuthClient)
	if err == nil {
		err = matchID(d.ID, id)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := s.Store.UpdateAuthClient(id, func(c *credstore.AuthClient) error { return applyClient(c, d) })
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeData(w, r, http.StatusOK, clientResource(c))
}

func (s *Server) deleteClient(w http.ResponseWriter, r *http.Request) {
	if err := s.Store.DeleteAuthClient(mux.Vars(r)["id"]); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// matchID checks a data.id against the id in the URL, as JSON:API asks of
// PATCH and PUT (409 on mismatch). A missing data.id is accepted.
func matchID(given *string, id string) error {
	if given != nil && *given != id {
		return credstore.Errorf(credstore.ECONFLICT, "data.id does not match the id in the URL")
	}
	return nil
}

// ---- workspaces ----

// putWorkspace replaces a workspace's contract and tenant: a relationship
// left out is removed, as PUT replaces the whole resource.
func (s *Server) putWorkspace(w http.ResponseWriter, r *http.Request) {
	ws := &credstore.Workspace{ID: mux.Vars(r)["ws"]}
	// A workspace has no attributes: struct{} accepts only an empty object.
	d, err := decode[struct{}, workspaceRelationships](w, r, typeWorkspace)
	if err == nil {
		err = matchID(d.ID, ws.ID)
	}
	if err == nil && d.Relationships != nil {
		ws.Contract, err = d.Relationships.Contract.id("relationships.contract", "contract")
		if err == nil {
			ws.Tenant, err = d.Relationships.Tenant.id("relationships.tenant", "tenant")
		}
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ws, created, err := s.Store.PutWorkspace(ws)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v2/workspaces/"+url.PathEscape(ws.ID))
	}
	s.writeData(w, r, status, workspaceResource(ws))
}

func (s *Server) getWorkspace(w http.ResponseWriter, r *http.Request) {
	ws, err := s.Store.Workspace(mux.Vars(r)["ws"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeData(w, r, http.StatusOK, workspaceResource(ws))
}

// ---- secrets ----

func (s *Server) createSecret(w http.ResponseWriter, r *http.Request) {
	d, err := decode[secretInput, secretRelationships](w, r, typeSecret)
	if err == nil && d.ID != nil {
		err = errClientID
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	clientID, _, err := d.Relationships.authClient()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if clientID == "" {
		s.writeError(w, r, credstore.Invalid("relationships.auth_client", "is required"))
		return
	}
	// The credential fields a secret takes depend on its auth client's type,
	// so the client is looked up before the body is decoded onto it. The
	// store checks again, with visibility, in the write transaction.
	client, err := s.Store.AuthClient(clientID)
	if err != nil {
		s.writeError(w, r, credstore.Invalid("relationships.auth_client", "auth client %q does not exist", clientID))
		return
	}
	c := &credstore.Credential{Workspace: mux.Vars(r)["ws"], AuthClientID: clientID, Type: client.Type}
	if err := applySecret(c, d, time.Now().UTC()); err != nil {
		s.writeError(w, r, err)
		return
	}
	c.State = tokenState(c)
	c, err = s.Store.CreateCredential(c)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v2/workspaces/"+url.PathEscape(c.Workspace)+"/secrets/"+url.PathEscape(c.ID))
	s.writeData(w, r, http.StatusCreated, secretResource(c))
}

// applySecret writes what a request names onto c (new on create, a copy of
// the stored secret on PATCH). Credentials merge onto the stored ones, so
// that a PATCH keeps secret values it does not name; they cannot be read
// back to be sent again.
func applySecret(c *credstore.Credential, d *secretData, now time.Time) error {
	in := &d.Attributes
	if in.Name != nil {
		c.Name = *in.Name
	}
	if id, ok, err := d.Relationships.authClient(); err != nil {
		return err
	} else if ok {
		c.AuthClientID = id
	}
	fields, err := credstore.DecodeFields(c.Type, in.Credentials, c.Fields, now)
	if err != nil {
		return err
	}
	c.Fields = fields
	// An uploaded token replaces whatever went wrong with the old one.
	if hasMember(in.Credentials, "access_token") {
		c.State, c.Error = tokenState(c), ""
	}
	if list, ok, err := origins(in.AllowedOrigins); err != nil {
		return err
	} else if ok {
		c.AllowedOrigins = list
	}
	return nil
}

// tokenState is the state of a secret whose token was just set: an OAuth2
// secret without an access token waits for the authorization flow; every
// other secret is usable at once.
func tokenState(c *credstore.Credential) credstore.State {
	if c.Type.IsOAuth2() && c.Fields.AccessToken == "" {
		return credstore.StatePending
	}
	return credstore.StateReady
}

// listSecrets lists a workspace's secrets. A workspace that does not exist
// yet has none, rather than being an error: secret URLs create workspaces.
func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) {
	creds := s.Store.Credentials(mux.Vars(r)["ws"])
	out := make([]resource, 0, len(creds))
	for _, c := range creds {
		out = append(out, secretResource(c))
	}
	s.writeData(w, r, http.StatusOK, out)
}

// secretIn returns the secret id of workspace ws. A secret of another
// workspace is ENOTFOUND, so that one workspace's URLs never reach another's.
func (s *Server) secretIn(ws, id string) (*credstore.Credential, error) {
	c, err := s.Store.Credential(id)
	if err != nil {
		return nil, err
	}
	if c.Workspace != ws {
		return nil, errSecretNotFound(id)
	}
	return c, nil
}

func errSecretNotFound(id string) error {
	return credstore.Errorf(credstore.ENOTFOUND, "secret %q not found", id)
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	c, err := s.secretIn(vars["ws"], vars["id"])
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeData(w, r, http.StatusOK, secretResource(c))
}

func (s *Server) patchSecret(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	ws, id := vars["ws"], vars["id"]
	d, err := decode[secretInput, secretRelationships](w, r, typeSecret)
	if err == nil {
		err = matchID(d.ID, id)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	now := time.Now().UTC()
	c, err := s.Store.UpdateCredential(id, func(c *credstore.Credential) error {
		if c.Workspace != ws {
			return errSecretNotFound(id)
		}
		return applySecret(c, d, now)
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeData(w, r, http.StatusOK, secretResource(c))
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	// A secret never changes workspace, so checking before deleting is safe.
	if _, err := s.secretIn(vars["ws"], vars["id"]); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.Store.DeleteCredential(vars["id"]); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
