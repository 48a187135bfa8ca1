package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/authproxy/authproxy/credstore"
)

// mediaType is the JSON:API media type that every response carries.
const mediaType = "application/vnd.api+json"

// maxBody bounds a request body, so that one upload cannot exhaust memory.
const maxBody = 1 << 20

// Resource types of the JSON:API documents.
const (
	typeAuthClient = "auth-client"
	typeSecret     = "auth-secret"
	typeWorkspace  = "workspace"
)

// ---- requests ----

// request is a JSON:API request document with a single resource. The
// decoder refuses unknown members at every level, so A and R list exactly
// what an endpoint accepts.
type request[A, R any] struct {
	Data *requestData[A, R] `json:"data"`
}

type requestData[A, R any] struct {
	Type          string  `json:"type"`
	ID            *string `json:"id"`
	Attributes    A       `json:"attributes"`
	Relationships *R      `json:"relationships"`
}

// resourceID is a JSON:API resource identifier object.
type resourceID struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// relationship is a to-one JSON:API relationship; null data names nothing.
type relationship struct {
	Data *resourceID `json:"data"`
}

// id returns the id that rel names, or "" when rel is absent or its data is
// null. typ is the resource type it must name; field names rel in errors.
func (rel *relationship) id(field, typ string) (string, error) {
	if rel == nil || rel.Data == nil {
		return "", nil
	}
	if rel.Data.Type != typ {
		return "", credstore.Invalid(field, "data.type must be %q", typ)
	}
	if rel.Data.ID == "" {
		return "", credstore.Invalid(field, "data.id is required")
	}
	return rel.Data.ID, nil
}

// clientInput holds the attributes an auth client request may carry. Type
// empty means "not given" (a PATCH keeps the stored type).
type clientInput struct {
	Type           credstore.AuthType `json:"type"`
	Name           *string            `json:"name"`
	Credentials    json.RawMessage    `json:"credentials"`
	AllowedOrigins json.RawMessage    `json:"allowed_origins"`
}

// levelRelationships place an auth client; none means global.
type levelRelationships struct {
	Tenant    *relationship `json:"tenant"`
	Contract  *relationship `json:"contract"`
	Workspace *relationship `json:"workspace"`
}

// scope returns the scope the relationships name: global when they name
// none, and EINVALID when they name more than one.
func (l *levelRelationships) scope() (credstore.Scope, error) {
	scope := credstore.Scope{Level: credstore.LevelGlobal}
	for _, lv := range []struct {
		level credstore.Level
		rel   *relationship
	}{
		{credstore.LevelTenant, l.Tenant},
		{credstore.LevelContract, l.Contract},
		{credstore.LevelWorkspace, l.Workspace},
	} {
		field := "relationships." + string(lv.level)
		id, err := lv.rel.id(field, string(lv.level))
		if err != nil {
			return scope, err
		}
		if id == "" {
			continue
		}
		// Validated here so that the error names the relationship, not a bare
		// level name that the error mapping could not place in the body.
		if err := credstore.ValidateID(field, id); err != nil {
			return scope, err
		}
		if scope.Level != credstore.LevelGlobal {
			return scope, credstore.Invalid("relationships", "name at most one of tenant, contract and workspace")
		}
		scope = credstore.Scope{Level: lv.level, ID: id}
	}
	return scope, nil
}

type clientData = requestData[clientInput, levelRelationships]

// secretInput holds the attributes a secret request may carry.
type secretInput struct {
	Name           *string         `json:"name"`
	Credentials    json.RawMessage `json:"credentials"`
	AllowedOrigins json.RawMessage `json:"allowed_origins"`
}

type secretRelationships struct {
	AuthClient *relationship `json:"auth_client"`
}

type secretData = requestData[secretInput, secretRelationships]

// authClient returns the auth client the relationships name, and whether
// they name one at all (a PATCH may leave it out). rel may be nil.
func (rel *secretRelationships) authClient() (string, bool, error) {
	if rel == nil || rel.AuthClient == nil {
		return "", false, nil
	}
	id, err := rel.AuthClient.id("relationships.auth_client", typeAuthClient)
	return id, true, err
}

type workspaceRelationships struct {
	Contract *relationship `json:"contract"`
	Tenant   *relationship `json:"tenant"`
}

// origins decodes an allowed_origins attribute: absent is "not given" (nil,
// false); null and [] clear the list.
func origins(raw json.RawMessage) ([]string, bool, error) {
	if len(raw) == 0 {
		return nil, false, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, true, credstore.Invalid("allowed_origins", "must be a list of strings")
	}
	if len(list) == 0 {
		list = nil
	}
	return list, true, nil
}

// hasMember reports whether the JSON object raw has the member name.
func hasMember(raw json.RawMessage, name string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	_, ok := m[name]
	return ok
}

// decode reads a JSON:API request document for resource type typ. It
// accepts JSON or JSON:API media types (or none), bounds the body to maxBody
// and refuses unknown members, trailing data and a mismatched data.type
// (409, as JSON:API asks).
func decode[A, R any](w http.ResponseWriter, r *http.Request, typ string) (*requestData[A, R], error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && mt != mediaType) {
			return nil, &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
				detail: "send the body as application/vnd.api+json or application/json"}
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	var doc request[A, R]
	if err := dec.Decode(&doc); err != nil {
		return nil, decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, fmt.Errorf("read body: %w", err)
		}
		return nil, credstore.Errorf(credstore.EMALFORMED, "the body must hold exactly one JSON object")
	}
	switch d := doc.Data; {
	case d == nil:
		return nil, credstore.Errorf(credstore.EMALFORMED, "the body must hold a data object")
	case d.Type == "":
		return nil, credstore.Errorf(credstore.EMALFORMED, "data.type is required")
	case d.Type != typ:
		return nil, credstore.Errorf(credstore.ECONFLICT, "data.type must be %q at this endpoint", typ)
	}
	return doc.Data, nil
}

// decodeError turns a json decoding error into an application error whose
// message never quotes the input: syntax and type errors can quote values,
// and a value may be a secret. Only offsets, paths and member names are kept.
func decodeError(err error) error {
	var (
		syntax    *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		tooLarge  *http.MaxBytesError
		malformed = func(format string, args ...any) error {
			return credstore.Errorf(credstore.EMALFORMED, format, args...)
		}
	)
	switch {
	case errors.As(err, &tooLarge):
		return fmt.Errorf("read body: %w", err)
	case errors.Is(err, io.EOF):
		return malformed("the body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return malformed("the body ends in the middle of a JSON value")
	case errors.As(err, &syntax):
		return malformed("the body is not valid JSON (syntax error at byte %d)", syntax.Offset)
	case errors.As(err, &typeErr):
		path := strings.TrimPrefix(typeErr.Field, "data.")
		if attr, ok := strings.CutPrefix(path, "attributes."); ok {
			return credstore.Invalid(attr, "must be %s", jsonKind(typeErr.Type))
		}
		return malformed("%s must be %s", typeErr.Field, jsonKind(typeErr.Type))
	}
	// encoding/json reports unknown members only as text: `json: unknown
	// field "name"`, with the name quoted by %q. A member name is not a
	// secret value, and naming it is what makes the error useful.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if len(name) > 80 {
			name = name[:80] + "…"
		}
		return malformed("unknown field %s", name)
	}
	return fmt.Errorf("decode body: %w", err)
}

// jsonKind names the JSON kind that a Go type decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "of another JSON type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Struct, reflect.Map, reflect.Pointer:
		return "an object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "of another JSON type"
}

// ---- responses ----

type document struct {
	Data any `json:"data"`
}

type resource struct {
	Type          string                  `json:"type"`
	ID            string                  `json:"id"`
	Attributes    any                     `json:"attributes,omitempty"`
	Relationships map[string]relationship `json:"relationships,omitempty"`
}

func link(typ, id string) relationship {
	return relationship{Data: &resourceID{ID: id, Type: typ}}
}

// clientView is an auth client as the API shows it: secret values masked.
type clientView struct {
	Type           credstore.AuthType       `json:"type"`
	Name           string                   `json:"name"`
	Credentials    credstore.ClientSettings `json:"credentials"`
	AllowedOrigins []string                 `json:"allowed_origins"`
	CreatedAt      time.Time                `json:"created_at"`
	UpdatedAt      time.Time                `json:"updated_at"`
}

func clientResource(c *credstore.AuthClient) resource {
	res := resource{Type: typeAuthClient, ID: c.ID, Attributes: clientView{
		Type:           c.Type,
		Name:           c.Name,
		Credentials:    c.Settings.Masked(),
		AllowedOrigins: nonNil(c.AllowedOrigins),
		CreatedAt:      c.CreatedAt,
		UpdatedAt:      c.UpdatedAt,
	}}
	if c.Scope.Level != credstore.LevelGlobal {
		res.Relationships = map[string]relationship{string(c.Scope.Level): link(string(c.Scope.Level), c.Scope.ID)}
	}
	return res
}

// secretView is a secret as the API shows it: which credential fields are
// set, never their values.
type secretView struct {
	Name           string             `json:"name"`
	Type           credstore.AuthType `json:"type"`
	State          credstore.State    `json:"state"`
	Error          string             `json:"error,omitempty"`
	Credentials    map[string]any     `json:"credentials"`
	AllowedOrigins []string           `json:"allowed_origins"`
	CreatedAt      time.Time          `json:"created_at"`
	UpdatedAt      time.Time          `json:"updated_at"`
	RefreshedAt    time.Time          `json:"refreshed_at,omitzero"`
}

func secretResource(c *credstore.Credential) resource {
	return resource{Type: typeSecret, ID: c.ID,
		Attributes: secretView{
			Name:           c.Name,
			Type:           c.Type,
			State:          c.State,
			Error:          c.Error,
			Credentials:    c.Fields.Masked(),
			AllowedOrigins: nonNil(c.AllowedOrigins),
			CreatedAt:      c.CreatedAt,
			UpdatedAt:      c.UpdatedAt,
			RefreshedAt:    c.RefreshedAt,
		},
		Relationships: map[string]relationship{
			"auth_client": link(typeAuthClient, c.AuthClientID),
			"workspace":   link(typeWorkspace, c.Workspace),
		},
	}
}

func workspaceResource(w *credstore.Workspace) resource {
	res := resource{Type: typeWorkspace, ID: w.ID, Relationships: map[string]relationship{}}
	if w.Contract != "" {
		res.Relationships["contract"] = link("contract", w.Contract)
	}
	if w.Tenant != "" {
		res.Relationships["tenant"] = link("tenant", w.Tenant)
	}
	return res
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}

// ---- errors ----

// apiError is an error that the HTTP layer raises itself (authentication,
// routing, media type), so it carries its own status and code.
type apiError struct {
	status int
	code   string
	detail string
}

func (e *apiError) Error() string { return e.detail }

type errorDocument struct {
	Errors []errorObject `json:"errors"`
}

type errorObject struct {
	Status string       `json:"status"`
	Code   string       `json:"code"`
	Title  string       `json:"title"`
	Detail string       `json:"detail"`
	Source *errorSource `json:"source,omitempty"`
}

type errorSource struct {
	Pointer string `json:"pointer"`
}

// errorResponse is the one place that maps an error to a status and a
// JSON:API error object. Only credstore messages (written to be safe to
// show) and this package's own messages reach the caller; anything else is
// "internal error", and the caller logs it.
func errorResponse(err error) (int, errorObject) {
	status, code, detail := http.StatusInternalServerError, credstore.EINTERNAL, "internal error"
	var (
		ae       *apiError
		tooLarge *http.MaxBytesError
		ce       *credstore.Error
	)
	switch {
	case errors.As(err, &ae):
		status, code, detail = ae.status, ae.code, ae.detail
	case errors.As(err, &tooLarge):
		status, code, detail = http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the body is larger than %d MiB", maxBody>>20)
	case errors.As(err, &ce):
		switch ce.Code {
		case credstore.EMALFORMED:
			status = http.StatusBadRequest
		case credstore.EINVALID:
			status = http.StatusUnprocessableEntity
		case credstore.ENOTFOUND:
			status = http.StatusNotFound
		case credstore.ECONFLICT:
			status = http.StatusConflict
		case credstore.EUNAVAILABLE:
			status = http.StatusBadGateway
		}
		if status != http.StatusInternalServerError {
			code, detail = ce.Code, ce.Message
			if ce.Field != "" {
				detail = ce.Field + ": " + ce.Message
			}
		}
	}
	obj := errorObject{Status: fmt.Sprint(status), Code: code, Title: http.StatusText(status), Detail: detail}
	if ce != nil && status != http.StatusInternalServerError {
		if p := pointer(ce.Field); p != "" {
			obj.Source = &errorSource{Pointer: p}
		}
	}
	return status, obj
}

// pointer turns a credstore field name ("credentials.username",
// "relationships.auth_client") into a JSON pointer into the request
// document, or "" for a field that is not in the body (a URL parameter).
func pointer(field string) string {
	if field == "" {
		return ""
	}
	path := "/" + strings.ReplaceAll(field, ".", "/")
	top, _, _ := strings.Cut(field, ".")
	switch top {
	case "relationships":
		return "/data" + path
	case "type", "name", "credentials", "allowed_origins", "state":
		return "/data/attributes" + path
	}
	return ""
}
