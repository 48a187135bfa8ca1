package credstore

import (
	"bytes"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// AuthType says what the sidecar adds to a request.
type AuthType string

// The five auth types of DESIGN.md.
const (
	NoAuth          AuthType = "noauth"
	Basic           AuthType = "basic"
	APIKey          AuthType = "api_key"
	OAuth2          AuthType = "oauth2"
	OAuth2Instagram AuthType = "oauth2_instagram"
)

// IsOAuth2 reports whether t is one of the OAuth2 types.
func (t AuthType) IsOAuth2() bool { return t == OAuth2 || t == OAuth2Instagram }

func (t AuthType) valid() bool {
	switch t {
	case NoAuth, Basic, APIKey, OAuth2, OAuth2Instagram:
		return true
	}
	return false
}

// Level is where an auth client is visible (DESIGN.md, Scopes).
type Level string

// The four levels.
const (
	LevelGlobal    Level = "global"
	LevelTenant    Level = "tenant"
	LevelContract  Level = "contract"
	LevelWorkspace Level = "workspace"
)

// Scope places an auth client: Level, and for every level but global the id
// of the tenant, contract or workspace.
type Scope struct {
	Level Level  `json:"level"`
	ID    string `json:"id,omitempty"`
}

// State of a credential.
type State string

// Credential states.
const (
	StateReady   State = "ready"   // usable
	StatePending State = "pending" // an OAuth2 credential with no token yet
	StateError   State = "error"   // needs re-authorization; Credential.Error says why
)

// Masked stands in for every secret value in admin reads.
const Masked = "********"

// ClientSettings is the "credentials" attribute of an auth client. Which
// fields a type accepts is fixed by clientFields; ClientSecret is a secret
// value (encrypted at rest, never read back).
type ClientSettings struct {
	HeaderName              string            `json:"headerName,omitempty"`
	ClientID                string            `json:"client_id,omitempty"`
	ClientSecret            string            `json:"client_secret,omitempty"`
	AuthURI                 string            `json:"auth_uri,omitempty"`
	TokenURI                string            `json:"token_uri,omitempty"`
	RefreshTokenURI         string            `json:"refresh_token_uri,omitempty"`
	Scopes                  []string          `json:"scopes,omitempty"`
	TokenExpiresIn          int               `json:"token_expires_in,omitempty"`
	TokenEndpointAuthMethod string            `json:"token_endpoint_auth_method,omitempty"`
	PKCE                    *bool             `json:"pkce,omitempty"`
	AdditionalParams        map[string]string `json:"additional_params,omitempty"`
	LongLivedTokenURI       string            `json:"long_lived_token_uri,omitempty"`
	RefreshURI              string            `json:"refresh_uri,omitempty"`
	RefreshMinAge           int               `json:"refresh_min_age,omitempty"`
	RefreshBeforeExpiry     int               `json:"refresh_before_expiry,omitempty"`
}

var oauth2ClientFields = []string{"client_id", "client_secret", "auth_uri", "token_uri", "refresh_token_uri",
	"scopes", "token_expires_in", "token_endpoint_auth_method", "pkce", "additional_params"}

var clientFields = map[AuthType][]string{
	NoAuth:          nil,
	Basic:           nil,
	APIKey:          {"headerName"},
	OAuth2:          oauth2ClientFields,
	OAuth2Instagram: append(slices.Clone(oauth2ClientFields), "long_lived_token_uri", "refresh_uri", "refresh_min_age", "refresh_before_expiry"),
}

// AuthClient says how credentials of one kind are used, and for OAuth2 how
// they are obtained.
type AuthClient struct {
	ID             string         `json:"id"`
	Type           AuthType       `json:"type"`
	Name           string         `json:"name"`
	Scope          Scope          `json:"scope"`
	AllowedOrigins []string       `json:"allowed_origins,omitempty"`
	Settings       ClientSettings `json:"settings"`
	CreatedAt      time.Time      `json:"created_at"`
	UpdatedAt      time.Time      `json:"updated_at"`

	origins []Origin // parsed AllowedOrigins, set by the store
}

// Origins returns the parsed allowed origins of a client read from the store.
func (c *AuthClient) Origins() []Origin { return c.origins }

// Validate checks every rule of an auth client that does not need the store.
// Returns EINVALID naming the field.
func (c *AuthClient) Validate() error {
	if !c.Type.valid() {
		return Invalid("type", "must be one of noauth, basic, api_key, oauth2, oauth2_instagram")
	}
	if err := validateName(c.Name); err != nil {
		return err
	}
	switch c.Scope.Level {
	case LevelGlobal:
		if c.Scope.ID != "" {
			return Invalid("relationships", "a global auth client names no tenant, contract or workspace")
		}
	case LevelTenant, LevelContract, LevelWorkspace:
		if err := ValidateID("relationships."+string(c.Scope.Level), c.Scope.ID); err != nil {
			return err
		}
	default:
		return Invalid("relationships", "level must be global, tenant, contract or workspace")
	}
	if err := validateOrigins(c.AllowedOrigins, c.Type); err != nil {
		return err
	}
	s := &c.Settings
	if s.HeaderName != "" {
		if err := validateHeaderName("credentials.headerName", s.HeaderName); err != nil {
			return err
		}
	}
	if !c.Type.IsOAuth2() {
		return nil
	}
	if s.ClientID == "" {
		return Invalid("credentials.client_id", "is required")
	}
	if s.ClientSecret == "" {
		return Invalid("credentials.client_secret", "is required")
	}
	for _, u := range []struct{ field, val string }{
		{"auth_uri", s.AuthURI}, {"token_uri", s.TokenURI}, {"refresh_token_uri", s.RefreshTokenURI},
		{"long_lived_token_uri", s.LongLivedTokenURI}, {"refresh_uri", s.RefreshURI},
	} {
		if u.val == "" && (u.field == "auth_uri" || u.field == "token_uri") {
			return Invalid("credentials."+u.field, "is required")
		}
		if u.val != "" && !isSafeURL(u.val) {
			return Invalid("credentials."+u.field, "must be an absolute https URL (http only for a loopback host)")
		}
	}
	switch s.TokenEndpointAuthMethod {
	case "", "client_secret_basic", "client_secret_post":
	default:
		return Invalid("credentials.token_endpoint_auth_method", "must be client_secret_basic or client_secret_post")
	}
	for name, n := range map[string]int{"token_expires_in": s.TokenExpiresIn, "refresh_min_age": s.RefreshMinAge, "refresh_before_expiry": s.RefreshBeforeExpiry} {
		if n < 0 {
			return Invalid("credentials."+name, "must not be negative")
		}
	}
	for k := range s.AdditionalParams {
		if reservedAuthParams[k] {
			return Invalid("credentials.additional_params", "%s is set by the authorization flow itself and cannot be overridden", k)
		}
	}
	for _, sc := range s.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\r\n") {
			return Invalid("credentials.scopes", "each scope must be a non-empty word")
		}
	}
	return nil
}

// DecodeClientSettings decodes raw (a JSON object) onto base, which is the
// zero value on create and the stored settings on PATCH, so that a PATCH
// keeps what it does not name. Returns EMALFORMED for bad JSON or a field the
// type does not have.
func DecodeClientSettings(t AuthType, raw json.RawMessage, base ClientSettings) (ClientSettings, error) {
	allowed, ok := clientFields[t]
	if !ok {
		return base, Invalid("type", "must be one of noauth, basic, api_key, oauth2, oauth2_instagram")
	}
	if err := checkFields(raw, allowed); err != nil {
		return base, err
	}
	out := base.clone()
	if len(raw) == 0 {
		return out, nil
	}
	// An additional_params object given replaces the stored one (json
	// would merge it into the map); one not given is kept.
	var keys map[string]json.RawMessage
	if json.Unmarshal(raw, &keys) == nil {
		if _, given := keys["additional_params"]; given {
			out.AdditionalParams = nil
		}
	}
	if err := strictUnmarshal(raw, &out); err != nil {
		return base, err
	}
	return out, nil
}

// Masked returns the settings as the admin API shows them: every field that
// is set, with secret values replaced by Masked.
func (s ClientSettings) Masked() ClientSettings {
	out := s.clone()
	if out.ClientSecret != "" {
		out.ClientSecret = Masked
	}
	return out
}

func (s ClientSettings) clone() ClientSettings {
	s.Scopes = slices.Clone(s.Scopes)
	s.AdditionalParams = maps.Clone(s.AdditionalParams)
	if s.PKCE != nil {
		v := *s.PKCE
		s.PKCE = &v
	}
	return s
}

// Workspace is where credentials live. It belongs to at most one contract
// and one tenant, which decide what auth clients it sees.
type Workspace struct {
	ID        string    `json:"id"`
	Contract  string    `json:"contract,omitempty"`
	Tenant    string    `json:"tenant,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Validate checks the ids.
func (w *Workspace) Validate() error {
	if err := ValidateID("workspace", w.ID); err != nil {
		return err
	}
	if w.Contract != "" {
		if err := ValidateID("relationships.contract", w.Contract); err != nil {
			return err
		}
	}
	if w.Tenant != "" {
		if err := ValidateID("relationships.tenant", w.Tenant); err != nil {
			return err
		}
	}
	return nil
}

// Sees reports whether an auth client at scope is visible from w: a global
// one, or one of w itself, its contract or its tenant.
func (w *Workspace) Sees(s Scope) bool {
	switch s.Level {
	case LevelGlobal:
		return true
	case LevelWorkspace:
		return s.ID == w.ID
	case LevelContract:
		return w.Contract != "" && s.ID == w.Contract
	case LevelTenant:
		return w.Tenant != "" && s.ID == w.Tenant
	}
	return false
}

// Fields is the "credentials" attribute of a secret. Password, HeaderValue,
// AccessToken, RefreshToken and Extra are secret values.
type Fields struct {
	Username    string `json:"username,omitempty"`
	Password    string `json:"password,omitempty"`
	HeaderName  string `json:"headerName,omitempty"`
	HeaderValue string `json:"headerValue,omitempty"`

	AccessToken  string         `json:"access_token,omitempty"`
	RefreshToken string         `json:"refresh_token,omitempty"`
	TokenType    string         `json:"token_type,omitempty"`
	Scope        string         `json:"scope,omitempty"`
	ExpiresAt    time.Time      `json:"expires_at,omitzero"`
	IssuedAt     time.Time      `json:"issued_at,omitzero"`
	Extra        map[string]any `json:"extra,omitempty"`
}

var credentialFields = map[AuthType][]string{
	NoAuth:          nil,
	Basic:           {"username", "password"},
	APIKey:          {"headerName", "headerValue"},
	OAuth2:          {"access_token", "refresh_token", "expires_in", "expires_at", "scope", "token_type"},
	OAuth2Instagram: {"access_token", "expires_in", "expires_at", "scope", "token_type"},
}

// maxExpiresIn bounds an uploaded expires_in so that it cannot overflow a
// time.Duration into the past.
const maxExpiresIn = 100 * 365 * 24 * 3600

// fieldsInput is what a client may upload; expires_in is turned into
// ExpiresAt on decode.
type fieldsInput struct {
	Username     *string         `json:"username"`
	Password     *string         `json:"password"`
	HeaderName   *string         `json:"headerName"`
	HeaderValue  *string         `json:"headerValue"`
	AccessToken  *string         `json:"access_token"`
	RefreshToken *string         `json:"refresh_token"`
	ExpiresIn    *int64          `json:"expires_in"`
	ExpiresAt    json.RawMessage `json:"expires_at"`
	Scope        *string         `json:"scope"`
	TokenType    *string         `json:"token_type"`
}

// DecodeFields decodes raw (a JSON object) onto base: the zero value on
// create, the stored fields on PATCH, so that a PATCH keeps the values it
// does not name (they cannot be read back to be resent). Returns EMALFORMED
// for bad JSON or a field the type does not have.
func DecodeFields(t AuthType, raw json.RawMessage, base Fields, now time.Time) (Fields, error) {
	allowed, ok := credentialFields[t]
	if !ok {
		return base, Invalid("type", "unknown auth client type")
	}
	if err := checkFields(raw, allowed); err != nil {
		return base, err
	}
	out := base.clone()
	if len(raw) == 0 {
		return out, nil
	}
	var in fieldsInput
	if err := strictUnmarshal(raw, &in); err != nil {
		return base, err
	}
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = *src
		}
	}
	set(&out.Username, in.Username)
	set(&out.Password, in.Password)
	set(&out.HeaderName, in.HeaderName)
	set(&out.HeaderValue, in.HeaderValue)
	set(&out.Scope, in.Scope)
	set(&out.TokenType, in.TokenType)
	if in.AccessToken != nil {
		out.AccessToken = *in.AccessToken
		out.IssuedAt = now
		out.ExpiresAt = time.Time{}
		out.Extra = nil
	}
	set(&out.RefreshToken, in.RefreshToken)
	if in.ExpiresIn != nil {
		if *in.ExpiresIn <= 0 || *in.ExpiresIn > maxExpiresIn {
			return base, Invalid("credentials.expires_in", "must be a positive number of seconds, at most %d (100 years)", maxExpiresIn)
		}
		out.ExpiresAt = now.Add(time.Duration(*in.ExpiresIn) * time.Second)
	}
	if len(in.ExpiresAt) > 0 && string(in.ExpiresAt) != "null" {
		var s string
		t, err := time.Time{}, json.Unmarshal(in.ExpiresAt, &s)
		if err == nil {
			t, err = time.Parse(time.RFC3339, s)
		}
		if err != nil {
			return base, Invalid("credentials.expires_at", "must be an RFC 3339 time string such as 2026-01-02T15:04:05Z")
		}
		out.ExpiresAt = t
	}
	return out, nil
}

// Masked returns the fields as the admin API shows them: the names of the
// fields that are set, with every secret value replaced by Masked. Token
// expiry and scope are shown; tokens are not.
func (f Fields) Masked() map[string]any {
	m := map[string]any{}
	put := func(k, v string, secret bool) {
		if v == "" {
			return
		}
		if secret {
			v = Masked
		}
		m[k] = v
	}
	put("username", f.Username, false)
	put("password", f.Password, true)
	put("headerName", f.HeaderName, false)
	put("headerValue", f.HeaderValue, true)
	put("access_token", f.AccessToken, true)
	put("refresh_token", f.RefreshToken, true)
	put("token_type", f.TokenType, false)
	put("scope", f.Scope, false)
	if !f.ExpiresAt.IsZero() {
		m["expires_at"] = f.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return m
}

func (f Fields) clone() Fields {
	f.Extra = maps.Clone(f.Extra)
	return f
}

// Credential is a stored credential; the admin API calls it a secret. It
// lives in one workspace and uses one auth client.
type Credential struct {
	ID             string    `json:"id"`
	Workspace      string    `json:"workspace"`
	Name           string    `json:"name"`
	AuthClientID   string    `json:"auth_client"`
	Type           AuthType  `json:"type"` // the auth client's, fixed at creation
	AllowedOrigins []string  `json:"allowed_origins,omitempty"`
	Fields         Fields    `json:"fields"`
	State          State     `json:"state"`
	Error          string    `json:"error,omitempty"`
	RefreshedAt    time.Time `json:"refreshed_at,omitzero"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`

	origins []Origin // parsed AllowedOrigins, set by the store
}

// Origins returns the parsed allowed origins of a credential read from the
// store (its own list only; see EffectiveOrigins).
func (c *Credential) Origins() []Origin { return c.origins }

// Clone returns a deep copy that the caller may change.
func (c *Credential) Clone() *Credential {
	out := *c
	out.AllowedOrigins = slices.Clone(c.AllowedOrigins)
	out.Fields = c.Fields.clone()
	out.origins = slices.Clone(c.origins)
	return &out
}

// Clone returns a deep copy that the caller may change.
func (c *AuthClient) Clone() *AuthClient {
	out := *c
	out.AllowedOrigins = slices.Clone(c.AllowedOrigins)
	out.Settings = c.Settings.clone()
	out.origins = slices.Clone(c.origins)
	return &out
}

// Validate checks the credential against the rules of its type. client is
// the auth client it uses.
func (c *Credential) Validate(client *AuthClient) error {
	if err := ValidateID("workspace", c.Workspace); err != nil {
		return err
	}
	if err := validateName(c.Name); err != nil {
		return err
	}
	if client == nil || c.AuthClientID != client.ID {
		return Invalid("relationships.auth_client", "is required")
	}
	if c.Type != client.Type {
		return Invalid("relationships.auth_client", "must stay of type %s", c.Type)
	}
	if err := validateOrigins(c.AllowedOrigins, c.Type); err != nil {
		return err
	}
	f := &c.Fields
	switch c.Type {
	case Basic:
		if f.Username == "" {
			return Invalid("credentials.username", "is required")
		}
		if strings.Contains(f.Username, ":") {
			return Invalid("credentials.username", "must not contain a colon (RFC 7617)")
		}
		if hasCTL(f.Username) || hasCTL(f.Password) {
			return Invalid("credentials", "username and password must not contain control characters")
		}
	case APIKey:
		name := f.HeaderName
		if name == "" {
			name = client.Settings.HeaderName
		}
		if name == "" {
			return Invalid("credentials.headerName", "is required (the auth client sets no default)")
		}
		if err := validateHeaderName("credentials.headerName", name); err != nil {
			return err
		}
		if f.HeaderValue == "" {
			return Invalid("credentials.headerValue", "is required")
		}
		if hasCTL(f.HeaderValue) {
			return Invalid("credentials.headerValue", "must not contain control characters")
		}
	case OAuth2, OAuth2Instagram:
		if f.AccessToken == "" && (f.RefreshToken != "" || !f.ExpiresAt.IsZero()) {
			return Invalid("credentials.access_token", "is required when other token fields are given")
		}
		if hasCTL(f.AccessToken) || hasCTL(f.RefreshToken) {
			return Invalid("credentials", "tokens must not contain control characters")
		}
	}
	switch c.State {
	case StateReady, StatePending, StateError:
	default:
		return Invalid("state", "unknown state %q", c.State)
	}
	return nil
}

// ValidateID checks an id given by a caller (workspace, tenant, contract):
// 1 to 128 characters of letters, digits, '-', '_', '.'.
func ValidateID(field, id string) error {
	if id == "" {
		return Invalid(field, "id is required")
	}
	if len(id) > 128 {
		return Invalid(field, "id is longer than 128 characters")
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return Invalid(field, "id may only hold letters, digits, '-', '_' and '.'")
		}
	}
	return nil
}

func validateName(n string) error {
	if strings.TrimSpace(n) == "" {
		return Invalid("name", "is required")
	}
	if len(n) > 200 {
		return Invalid("name", "is longer than 200 characters")
	}
	if hasCTL(n) {
		return Invalid("name", "must not contain control characters")
	}
	return nil
}

func validateOrigins(list []string, t AuthType) error {
	for _, s := range list {
		o, err := ParseOrigin(s)
		if err != nil {
			return err
		}
		if o.Any && t != NoAuth {
			return Invalid("allowed_origins", `"*" is allowed only for noauth: a secret must be bound to named hosts`)
		}
	}
	return nil
}

// reservedAuthParams are authorization-URL parameters the flow sets; an
// additional_params entry must not replace them (a fixed state would make
// every callback fail, a redirect_uri would send codes elsewhere).
var reservedAuthParams = map[string]bool{
	"response_type": true, "client_id": true, "redirect_uri": true, "scope": true,
	"state": true, "code_challenge": true, "code_challenge_method": true,
}

// reservedHeaders may not carry an API key: the proxy strips or owns them.
var reservedHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Keep-Alive": true, "Te": true, "Trailer": true, "Upgrade": true,
}

func validateHeaderName(field, name string) error {
	if len(name) > 128 {
		return Invalid(field, "is longer than 128 characters")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return Invalid(field, "is not a valid HTTP header name")
		}
	}
	canon := http.CanonicalHeaderKey(name)
	if reservedHeaders[canon] || strings.HasPrefix(canon, "Proxy-") || strings.HasPrefix(canon, "X-Authproxy-") {
		return Invalid(field, "%s is reserved and cannot carry a credential", canon)
	}
	return nil
}

func hasCTL(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// isSafeURL admits the URLs a client secret or token may be sent to:
// https, or plain http to a loopback host (a local test or a provider
// reached through a local tunnel), never plain http across a network.
func isSafeURL(s string) bool {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return false
	}
	if u.Scheme == "https" {
		return true
	}
	if u.Scheme != "http" {
		return false
	}
	h := u.Hostname()
	ip := net.ParseIP(h)
	return h == "localhost" || ip != nil && ip.IsLoopback()
}

// checkFields refuses a JSON object with keys outside allowed. The message
// names the unknown keys, never a value.
func checkFields(raw json.RawMessage, allowed []string) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return &Error{Code: EMALFORMED, Field: "credentials", Message: "must be a JSON object"}
	}
	var unknown []string
	for k := range m {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		msg := "unknown field " + strings.Join(unknown, ", ")
		if len(allowed) == 0 {
			msg += "; this type takes no credentials ({})"
		} else {
			msg += "; this type takes " + strings.Join(allowed, ", ")
		}
		return &Error{Code: EMALFORMED, Field: "credentials", Message: msg}
	}
	return nil
}

// strictUnmarshal decodes without echoing input in the error: a json error
// message can quote the offending value, which may be a secret.
func strictUnmarshal(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		field := "credentials"
		if te, ok := err.(*json.UnmarshalTypeError); ok && te.Field != "" {
			field += "." + te.Field
			return &Error{Code: EINVALID, Field: field, Message: "has the wrong type (want " + te.Type.String() + ")"}
		}
		return &Error{Code: EMALFORMED, Field: field, Message: "is not valid JSON of the expected shape"}
	}
	return nil
}
