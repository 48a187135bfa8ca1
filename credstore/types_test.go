package credstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Known secret values: tests check that none of them ever shows up where it
// must not (error messages, masked reads, the file on disk).
const (
	secretPassword     = "s3cr3t-pass-123"
	secretHeaderValue  = "s3cr3t-hdr-456"
	secretClientSecret = "s3cr3t-client-789"
	secretAccessToken  = "s3cr3t-access-abc"
	secretRefreshToken = "s3cr3t-refresh-def"
	secretExtra        = "s3cr3t-extra-ghi"
)

var allSecrets = []string{secretPassword, secretHeaderValue, secretClientSecret, secretAccessToken, secretRefreshToken, secretExtra}

// codeField returns the code and field of err (an *Error), or EINTERNAL.
func codeField(err error) (string, string) {
	var e *Error
	if errors.As(err, &e) {
		return e.Code, e.Field
	}
	return ErrorCode(err), ""
}

// wantError fails unless err is an *Error with code and, if field is not
// "", that field.
func wantError(t *testing.T, err error, code, field string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s on %q", code, field)
	}
	c, f := codeField(err)
	if c != code || (field != "" && f != field) {
		t.Fatalf("got error %q (code %s, field %q), want code %s, field %q", err, c, f, code, field)
	}
}

// noSecretIn fails if s contains any known secret value.
func noSecretIn(t *testing.T, what, s string) {
	t.Helper()
	for _, v := range allSecrets {
		if strings.Contains(s, v) {
			t.Fatalf("%s contains the secret value %q: %s", what, v, s)
		}
	}
}

func validOAuth2Settings() ClientSettings {
	return ClientSettings{
		ClientID:     "my-client-id",
		ClientSecret: secretClientSecret,
		AuthURI:      "https://github.com/login/oauth/authorize",
		TokenURI:     "https://github.com/login/oauth/access_token",
	}
}

func validClient(typ AuthType) AuthClient {
	c := AuthClient{ID: "client-1", Type: typ, Name: "client " + string(typ), Scope: Scope{Level: LevelGlobal},
		AllowedOrigins: []string{"https://api.example.com"}}
	switch typ {
	case APIKey:
		c.Settings.HeaderName = "X-Api-Key"
	case OAuth2, OAuth2Instagram:
		c.Settings = validOAuth2Settings()
	}
	return c
}

func TestAuthClientValidate(t *testing.T) {
	tests := []struct {
		name   string
		typ    AuthType
		mutate func(c *AuthClient)
		field  string // "" means valid
	}{
		// valid clients of each type
		{"noauth", NoAuth, nil, ""},
		{"basic", Basic, nil, ""},
		{"api_key with default header", APIKey, nil, ""},
		{"api_key without default header", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "" }, ""},
		{"api_key lower-case header", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "x-api-key" }, ""},
		{"api_key Authorization header", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "Authorization" }, ""},
		{"oauth2", OAuth2, nil, ""},
		{"oauth2 full", OAuth2, func(c *AuthClient) {
			c.Settings.RefreshTokenURI = "https://github.com/refresh"
			c.Settings.Scopes = []string{"repo", "read:user"}
			c.Settings.TokenExpiresIn = 3600
			c.Settings.TokenEndpointAuthMethod = "client_secret_post"
		}, ""},
		{"oauth2 basic auth method", OAuth2, func(c *AuthClient) { c.Settings.TokenEndpointAuthMethod = "client_secret_basic" }, ""},
		{"oauth2_instagram", OAuth2Instagram, func(c *AuthClient) {
			c.Settings.LongLivedTokenURI = "https://graph.instagram.com/access_token"
			c.Settings.RefreshURI = "https://graph.instagram.com/refresh_access_token"
			c.Settings.RefreshMinAge = 86400
			c.Settings.RefreshBeforeExpiry = 7 * 86400
		}, ""},
		{"no origins", Basic, func(c *AuthClient) { c.AllowedOrigins = nil }, ""},
		{"name of 200 chars", Basic, func(c *AuthClient) { c.Name = strings.Repeat("n", 200) }, ""},

		// type
		{"empty type", "", nil, "type"},
		{"unknown type", "digest", nil, "type"},

		// name
		{"empty name", Basic, func(c *AuthClient) { c.Name = "" }, "name"},
		{"blank name", Basic, func(c *AuthClient) { c.Name = "   " }, "name"},
		{"name too long", Basic, func(c *AuthClient) { c.Name = strings.Repeat("n", 201) }, "name"},
		{"name with newline", Basic, func(c *AuthClient) { c.Name = "a\nb" }, "name"},
		{"name with DEL", Basic, func(c *AuthClient) { c.Name = "a\x7fb" }, "name"},

		// level and id
		{"tenant level", Basic, func(c *AuthClient) { c.Scope = Scope{Level: LevelTenant, ID: "t1"} }, ""},
		{"contract level", Basic, func(c *AuthClient) { c.Scope = Scope{Level: LevelContract, ID: "c1"} }, ""},
		{"workspace level", Basic, func(c *AuthClient) { c.Scope = Scope{Level: LevelWorkspace, ID: "ws-1_a.b"} }, ""},
		{"empty level", Basic, func(c *AuthClient) { c.Scope = Scope{} }, "relationships"},
		{"unknown level", Basic, func(c *AuthClient) { c.Scope = Scope{Level: "component"} }, "relationships"},
		{"global with id", Basic, func(c *AuthClient) { c.Scope = Scope{Level: LevelGlobal, ID: "t1"} }, "relationships"},
		{"tenant without id", Basic, func(c *AuthClient) { c.Scope = Scope{Level: LevelTenant} }, "relationships.tenant"},
		{"contract without id", Basic, func(c *AuthClient) { c.Scope = Scope{Level: LevelContract} }, "relationships.contract"},
		{"workspace without id", Basic, func(c *AuthClient) { c.Scope = Scope{Level: LevelWorkspace} }, "relationships.workspace"},
		{"workspace id with slash", Basic, func(c *AuthClient) { c.Scope = Scope{Level: LevelWorkspace, ID: "a/b"} }, "relationships.workspace"},
		{"tenant id too long", Basic, func(c *AuthClient) { c.Scope = Scope{Level: LevelTenant, ID: strings.Repeat("t", 129)} }, "relationships.tenant"},

		// origins
		{"noauth any origin", NoAuth, func(c *AuthClient) { c.AllowedOrigins = []string{"*"} }, ""},
		{"basic any origin", Basic, func(c *AuthClient) { c.AllowedOrigins = []string{"*"} }, "allowed_origins"},
		{"api_key any origin", APIKey, func(c *AuthClient) { c.AllowedOrigins = []string{"https://a.example.com", "*"} }, "allowed_origins"},
		{"oauth2 any origin", OAuth2, func(c *AuthClient) { c.AllowedOrigins = []string{"*"} }, "allowed_origins"},
		{"instagram any origin", OAuth2Instagram, func(c *AuthClient) { c.AllowedOrigins = []string{"*"} }, "allowed_origins"},
		{"origin with path", Basic, func(c *AuthClient) { c.AllowedOrigins = []string{"https://api.example.com/v1"} }, "allowed_origins"},

		// api_key header names
		{"header with space", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "X Api Key" }, "credentials.headerName"},
		{"header with colon", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "X-Api-Key:" }, "credentials.headerName"},
		{"header with CRLF", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "X-Key\r\nX-Evil" }, "credentials.headerName"},
		{"header not ascii", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "X-Schlüssel" }, "credentials.headerName"},
		{"header too long", APIKey, func(c *AuthClient) { c.Settings.HeaderName = strings.Repeat("X", 129) }, "credentials.headerName"},
		{"header Proxy-Authorization", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "Proxy-Authorization" }, "credentials.headerName"},
		{"header proxy-authorization", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "proxy-authorization" }, "credentials.headerName"},
		{"header Proxy-Foo", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "Proxy-Foo" }, "credentials.headerName"},
		{"header Host", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "Host" }, "credentials.headerName"},
		{"header host", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "host" }, "credentials.headerName"},
		{"header X-Authproxy-Foo", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "X-Authproxy-Foo" }, "credentials.headerName"},
		{"header x-authproxy-credential", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "x-authproxy-credential" }, "credentials.headerName"},
		{"header Content-Length", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "Content-Length" }, "credentials.headerName"},
		{"header Transfer-Encoding", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "transfer-encoding" }, "credentials.headerName"},
		{"header Connection", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "Connection" }, "credentials.headerName"},
		{"header TE", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "TE" }, "credentials.headerName"},
		{"header Upgrade", APIKey, func(c *AuthClient) { c.Settings.HeaderName = "Upgrade" }, "credentials.headerName"},

		// oauth2 settings
		{"oauth2 no client_id", OAuth2, func(c *AuthClient) { c.Settings.ClientID = "" }, "credentials.client_id"},
		{"oauth2 no client_secret", OAuth2, func(c *AuthClient) { c.Settings.ClientSecret = "" }, "credentials.client_secret"},
		{"oauth2 no auth_uri", OAuth2, func(c *AuthClient) { c.Settings.AuthURI = "" }, "credentials.auth_uri"},
		{"oauth2 no token_uri", OAuth2, func(c *AuthClient) { c.Settings.TokenURI = "" }, "credentials.token_uri"},
		{"instagram no client_id", OAuth2Instagram, func(c *AuthClient) { c.Settings.ClientID = "" }, "credentials.client_id"},
		{"instagram no token_uri", OAuth2Instagram, func(c *AuthClient) { c.Settings.TokenURI = "" }, "credentials.token_uri"},
		{"auth_uri ftp", OAuth2, func(c *AuthClient) { c.Settings.AuthURI = "ftp://github.com/authorize" }, "credentials.auth_uri"},
		{"auth_uri relative", OAuth2, func(c *AuthClient) { c.Settings.AuthURI = "/login/oauth/authorize" }, "credentials.auth_uri"},
		{"auth_uri no scheme", OAuth2, func(c *AuthClient) { c.Settings.AuthURI = "github.com/login/oauth/authorize" }, "credentials.auth_uri"},
		{"auth_uri javascript", OAuth2, func(c *AuthClient) { c.Settings.AuthURI = "javascript:alert(1)" }, "credentials.auth_uri"},
		{"token_uri no host", OAuth2, func(c *AuthClient) { c.Settings.TokenURI = "https://" }, "credentials.token_uri"},
		{"token_uri not a URL", OAuth2, func(c *AuthClient) { c.Settings.TokenURI = "https://exa mple.com/token" }, "credentials.token_uri"},
		{"refresh_token_uri bad", OAuth2, func(c *AuthClient) { c.Settings.RefreshTokenURI = "token" }, "credentials.refresh_token_uri"},
		{"long_lived_token_uri bad", OAuth2Instagram, func(c *AuthClient) { c.Settings.LongLivedTokenURI = "graph.instagram.com" }, "credentials.long_lived_token_uri"},
		{"refresh_uri bad", OAuth2Instagram, func(c *AuthClient) { c.Settings.RefreshURI = "file:///etc/passwd" }, "credentials.refresh_uri"},
		{"unknown auth method", OAuth2, func(c *AuthClient) { c.Settings.TokenEndpointAuthMethod = "private_key_jwt" }, "credentials.token_endpoint_auth_method"},
		{"negative token_expires_in", OAuth2, func(c *AuthClient) { c.Settings.TokenExpiresIn = -1 }, "credentials.token_expires_in"},
		{"negative refresh_min_age", OAuth2Instagram, func(c *AuthClient) { c.Settings.RefreshMinAge = -1 }, "credentials.refresh_min_age"},
		{"negative refresh_before_expiry", OAuth2Instagram, func(c *AuthClient) { c.Settings.RefreshBeforeExpiry = -5 }, "credentials.refresh_before_expiry"},
		{"empty scope", OAuth2, func(c *AuthClient) { c.Settings.Scopes = []string{"repo", ""} }, "credentials.scopes"},
		{"scope with space", OAuth2, func(c *AuthClient) { c.Settings.Scopes = []string{"repo user"} }, "credentials.scopes"},
		{"scope with newline", OAuth2, func(c *AuthClient) { c.Settings.Scopes = []string{"repo\n"} }, "credentials.scopes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validClient(tt.typ)
			if tt.mutate != nil {
				tt.mutate(&c)
			}
			err := c.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			wantError(t, err, EINVALID, tt.field)
			noSecretIn(t, "error", err.Error())
		})
	}
}

func validCredential(typ AuthType) (Credential, AuthClient) {
	client := validClient(typ)
	c := Credential{Workspace: "ws1", Name: "my " + string(typ), AuthClientID: client.ID, Type: typ, State: StateReady}
	switch typ {
	case Basic:
		c.Fields = Fields{Username: "alice", Password: secretPassword}
	case APIKey:
		c.Fields = Fields{HeaderName: "X-Other-Key", HeaderValue: secretHeaderValue}
	case OAuth2, OAuth2Instagram:
		c.Fields = Fields{AccessToken: secretAccessToken, ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
		if typ == OAuth2 {
			c.Fields.RefreshToken = secretRefreshToken
		}
	}
	return c, client
}

func TestCredentialValidate(t *testing.T) {
	tests := []struct {
		name   string
		typ    AuthType
		mutate func(c *Credential, client *AuthClient)
		field  string // "" means valid
	}{
		{"noauth", NoAuth, nil, ""},
		{"noauth any origin", NoAuth, func(c *Credential, _ *AuthClient) { c.AllowedOrigins = []string{"*"} }, ""},
		{"basic", Basic, nil, ""},
		{"api_key", APIKey, nil, ""},
		{"oauth2", OAuth2, nil, ""},
		{"oauth2_instagram", OAuth2Instagram, nil, ""},
		{"oauth2 pending without token", OAuth2, func(c *Credential, _ *AuthClient) {
			c.Fields, c.State = Fields{}, StatePending
		}, ""},
		{"oauth2 in error state", OAuth2, func(c *Credential, _ *AuthClient) {
			c.State, c.Error = StateError, "invalid_grant"
		}, ""},
		{"own origins", Basic, func(c *Credential, _ *AuthClient) {
			c.AllowedOrigins = []string{"https://*.example.com", "http://127.0.0.1:9401"}
		}, ""},

		// common rules
		{"no workspace", Basic, func(c *Credential, _ *AuthClient) { c.Workspace = "" }, "workspace"},
		{"bad workspace", Basic, func(c *Credential, _ *AuthClient) { c.Workspace = "ws 1" }, "workspace"},
		{"no name", Basic, func(c *Credential, _ *AuthClient) { c.Name = "" }, "name"},
		{"name with control", Basic, func(c *Credential, _ *AuthClient) { c.Name = "my\tsecret" }, "name"},
		{"other client id", Basic, func(c *Credential, _ *AuthClient) { c.AuthClientID = "client-2" }, "relationships.auth_client"},
		{"no client id", Basic, func(c *Credential, _ *AuthClient) { c.AuthClientID = "" }, "relationships.auth_client"},
		{"type differs from client", Basic, func(c *Credential, _ *AuthClient) { c.Type = APIKey }, "relationships.auth_client"},
		{"basic any origin", Basic, func(c *Credential, _ *AuthClient) { c.AllowedOrigins = []string{"*"} }, "allowed_origins"},
		{"oauth2 any origin", OAuth2, func(c *Credential, _ *AuthClient) { c.AllowedOrigins = []string{"*"} }, "allowed_origins"},
		{"bad origin", Basic, func(c *Credential, _ *AuthClient) { c.AllowedOrigins = []string{"https://user@example.com"} }, "allowed_origins"},
		{"empty state", Basic, func(c *Credential, _ *AuthClient) { c.State = "" }, "state"},
		{"unknown state", Basic, func(c *Credential, _ *AuthClient) { c.State = "expired" }, "state"},

		// basic
		{"basic no username", Basic, func(c *Credential, _ *AuthClient) { c.Fields.Username = "" }, "credentials.username"},
		{"basic username with colon", Basic, func(c *Credential, _ *AuthClient) { c.Fields.Username = "ali:ce" }, "credentials.username"},
		{"basic password with colon", Basic, func(c *Credential, _ *AuthClient) { c.Fields.Password = "pa:ss:" + secretPassword }, ""},
		{"basic username with CRLF", Basic, func(c *Credential, _ *AuthClient) { c.Fields.Username = "alice\r\n" }, "credentials"},
		{"basic password with LF", Basic, func(c *Credential, _ *AuthClient) { c.Fields.Password = secretPassword + "\n" }, "credentials"},
		{"basic password with NUL", Basic, func(c *Credential, _ *AuthClient) { c.Fields.Password = "a\x00" + secretPassword }, "credentials"},

		// api_key
		{"api_key header from client default", APIKey, func(c *Credential, _ *AuthClient) { c.Fields.HeaderName = "" }, ""},
		{"api_key header from credential only", APIKey, func(c *Credential, cl *AuthClient) { cl.Settings.HeaderName = "" }, ""},
		{"api_key no header anywhere", APIKey, func(c *Credential, cl *AuthClient) {
			c.Fields.HeaderName, cl.Settings.HeaderName = "", ""
		}, "credentials.headerName"},
		{"api_key invalid header", APIKey, func(c *Credential, _ *AuthClient) { c.Fields.HeaderName = "X Key" }, "credentials.headerName"},
		{"api_key reserved header over valid default", APIKey, func(c *Credential, _ *AuthClient) {
			c.Fields.HeaderName = "Proxy-Authorization"
		}, "credentials.headerName"},
		{"api_key Host header", APIKey, func(c *Credential, _ *AuthClient) { c.Fields.HeaderName = "host" }, "credentials.headerName"},
		{"api_key X-Authproxy header", APIKey, func(c *Credential, _ *AuthClient) { c.Fields.HeaderName = "X-Authproxy-Foo" }, "credentials.headerName"},
		{"api_key no value", APIKey, func(c *Credential, _ *AuthClient) { c.Fields.HeaderValue = "" }, "credentials.headerValue"},
		{"api_key value with CRLF", APIKey, func(c *Credential, _ *AuthClient) {
			c.Fields.HeaderValue = secretHeaderValue + "\r\nX-Evil: 1"
		}, "credentials.headerValue"},
		{"api_key value with LF", APIKey, func(c *Credential, _ *AuthClient) { c.Fields.HeaderValue = "\n" + secretHeaderValue }, "credentials.headerValue"},
		{"api_key value with CR", APIKey, func(c *Credential, _ *AuthClient) { c.Fields.HeaderValue = secretHeaderValue + "\r" }, "credentials.headerValue"},

		// oauth2
		{"oauth2 refresh without access", OAuth2, func(c *Credential, _ *AuthClient) { c.Fields.AccessToken = "" }, "credentials.access_token"},
		{"oauth2 expiry without access", OAuth2, func(c *Credential, _ *AuthClient) {
			c.Fields.AccessToken, c.Fields.RefreshToken = "", ""
		}, "credentials.access_token"},
		{"oauth2 access with LF", OAuth2, func(c *Credential, _ *AuthClient) { c.Fields.AccessToken = secretAccessToken + "\n" }, "credentials"},
		{"oauth2 refresh with CRLF", OAuth2, func(c *Credential, _ *AuthClient) { c.Fields.RefreshToken = secretRefreshToken + "\r\n" }, "credentials"},
		{"instagram access with CR", OAuth2Instagram, func(c *Credential, _ *AuthClient) { c.Fields.AccessToken = "\r" + secretAccessToken }, "credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, client := validCredential(tt.typ)
			if tt.mutate != nil {
				tt.mutate(&c, &client)
			}
			err := c.Validate(&client)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			wantError(t, err, EINVALID, tt.field)
			noSecretIn(t, "error", err.Error())
		})
	}
	t.Run("nil client", func(t *testing.T) {
		c, _ := validCredential(Basic)
		wantError(t, c.Validate(nil), EINVALID, "relationships.auth_client")
	})
}

func TestWorkspaceSees(t *testing.T) {
	full := &Workspace{ID: "ws1", Contract: "c1", Tenant: "t1"}
	bare := &Workspace{ID: "ws2"}
	tests := []struct {
		name  string
		ws    *Workspace
		scope Scope
		want  bool
	}{
		{"global", full, Scope{Level: LevelGlobal}, true},
		{"global from bare workspace", bare, Scope{Level: LevelGlobal}, true},
		{"own workspace", full, Scope{Level: LevelWorkspace, ID: "ws1"}, true},
		{"other workspace", full, Scope{Level: LevelWorkspace, ID: "ws2"}, false},
		{"own contract", full, Scope{Level: LevelContract, ID: "c1"}, true},
		{"other contract", full, Scope{Level: LevelContract, ID: "c2"}, false},
		{"own tenant", full, Scope{Level: LevelTenant, ID: "t1"}, true},
		{"other tenant", full, Scope{Level: LevelTenant, ID: "t2"}, false},
		{"contract id given as tenant", full, Scope{Level: LevelTenant, ID: "c1"}, false},
		{"tenant id given as contract", full, Scope{Level: LevelContract, ID: "t1"}, false},
		{"workspace id given as contract", full, Scope{Level: LevelContract, ID: "ws1"}, false},
		{"contract id given as workspace", full, Scope{Level: LevelWorkspace, ID: "c1"}, false},
		{"no contract sees no contract client", bare, Scope{Level: LevelContract, ID: "c1"}, false},
		{"no contract does not match empty id", bare, Scope{Level: LevelContract}, false},
		{"no tenant does not match empty id", bare, Scope{Level: LevelTenant}, false},
		{"bare sees its own workspace", bare, Scope{Level: LevelWorkspace, ID: "ws2"}, true},
		{"empty level", full, Scope{ID: "ws1"}, false},
		{"unknown level", full, Scope{Level: "component", ID: "ws1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.ws.Sees(tt.scope); got != tt.want {
				t.Fatalf("%+v.Sees(%+v) = %v, want %v", *tt.ws, tt.scope, got, tt.want)
			}
		})
	}
}

func TestWorkspaceValidate(t *testing.T) {
	tests := []struct {
		name  string
		ws    Workspace
		field string
	}{
		{"id only", Workspace{ID: "ws1"}, ""},
		{"with contract and tenant", Workspace{ID: "ws1", Contract: "c-1", Tenant: "t_1"}, ""},
		{"no id", Workspace{}, "workspace"},
		{"bad id", Workspace{ID: "ws/1"}, "workspace"},
		{"bad contract", Workspace{ID: "ws1", Contract: "c 1"}, "relationships.contract"},
		{"bad tenant", Workspace{ID: "ws1", Tenant: "t:1"}, "relationships.tenant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.ws.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			wantError(t, err, EINVALID, tt.field)
		})
	}
}

func TestValidateID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"simple", "ws1", true},
		{"all allowed characters", "Az09-_.", true},
		{"128 characters", strings.Repeat("a", 128), true},
		{"empty", "", false},
		{"129 characters", strings.Repeat("a", 129), false},
		{"space", "a b", false},
		{"slash", "a/b", false},
		{"colon", "a:b", false},
		{"non-ascii letter", "wé", false},
		{"newline", "a\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateID("tenant", tt.id)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateID(%q) = %v", tt.id, err)
				}
				return
			}
			wantError(t, err, EINVALID, "tenant")
		})
	}
}

func TestDecodeClientSettings(t *testing.T) {
	tests := []struct {
		name string
		typ  AuthType
		raw  string
		want ClientSettings
	}{
		{"noauth empty object", NoAuth, `{}`, ClientSettings{}},
		{"noauth null", NoAuth, `null`, ClientSettings{}},
		{"basic no body", Basic, ``, ClientSettings{}},
		{"api_key header", APIKey, `{"headerName":"X-Api-Key"}`, ClientSettings{HeaderName: "X-Api-Key"}},
		{"oauth2 all fields", OAuth2, `{"client_id":"cid","client_secret":"` + secretClientSecret + `",
			"auth_uri":"https://a.example.com/auth","token_uri":"https://a.example.com/token",
			"refresh_token_uri":"https://a.example.com/refresh","scopes":["a","b"],"token_expires_in":60,
			"token_endpoint_auth_method":"client_secret_post","pkce":false,"additional_params":{"audience":"x"}}`,
			ClientSettings{ClientID: "cid", ClientSecret: secretClientSecret, AuthURI: "https://a.example.com/auth",
				TokenURI: "https://a.example.com/token", RefreshTokenURI: "https://a.example.com/refresh",
				Scopes: []string{"a", "b"}, TokenExpiresIn: 60, TokenEndpointAuthMethod: "client_secret_post",
				PKCE: new(false), AdditionalParams: map[string]string{"audience": "x"}}},
		{"instagram extra fields", OAuth2Instagram, `{"client_id":"cid","long_lived_token_uri":"https://g.example.com/lt",
			"refresh_uri":"https://g.example.com/r","refresh_min_age":86400,"refresh_before_expiry":604800}`,
			ClientSettings{ClientID: "cid", LongLivedTokenURI: "https://g.example.com/lt", RefreshURI: "https://g.example.com/r",
				RefreshMinAge: 86400, RefreshBeforeExpiry: 604800}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeClientSettings(tt.typ, json.RawMessage(tt.raw), ClientSettings{})
			if err != nil {
				t.Fatalf("DecodeClientSettings: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("DecodeClientSettings = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeClientSettingsRefused(t *testing.T) {
	s := secretClientSecret
	tests := []struct {
		name    string
		typ     AuthType
		raw     string
		code    string
		field   string
		mention []string // words the message must contain
	}{
		{"noauth takes nothing", NoAuth, `{"client_secret":"` + s + `"}`, EMALFORMED, "credentials", []string{"client_secret"}},
		{"basic takes nothing", Basic, `{"headerName":"X-Key","client_secret":"` + s + `"}`, EMALFORMED, "credentials", []string{"headerName", "client_secret"}},
		{"api_key unknown field", APIKey, `{"headerName":"X-Key","headerValue":"` + s + `"}`, EMALFORMED, "credentials", []string{"headerValue"}},
		{"oauth2 has no instagram fields", OAuth2, `{"client_id":"cid","refresh_uri":"` + s + `"}`, EMALFORMED, "credentials", []string{"refresh_uri"}},
		{"field names are case sensitive", OAuth2, `{"Client_Secret":"` + s + `"}`, EMALFORMED, "credentials", []string{"Client_Secret"}},
		{"secret as unknown key value", OAuth2, `{"client_secret":"` + s + `","secret_copy":"` + s + `"}`, EMALFORMED, "credentials", []string{"secret_copy"}},
		{"not an object", OAuth2, `["` + s + `"]`, EMALFORMED, "credentials", nil},
		{"a string", OAuth2, `"` + s + `"`, EMALFORMED, "credentials", nil},
		{"truncated", OAuth2, `{"client_secret":"` + s + `"`, EMALFORMED, "credentials", nil},
		{"trailing garbage", OAuth2, `{"client_secret":"` + s + `"} x`, EMALFORMED, "credentials", nil},
		{"client_secret number", OAuth2, `{"client_secret":12345}`, EINVALID, "credentials.client_secret", nil},
		{"client_id object", OAuth2, `{"client_id":{"v":"` + s + `"}}`, EINVALID, "credentials.client_id", nil},
		{"scopes string", OAuth2, `{"scopes":"` + s + `"}`, EINVALID, "credentials.scopes", nil},
		{"token_expires_in string", OAuth2, `{"token_expires_in":"` + s + `"}`, EINVALID, "credentials.token_expires_in", nil},
		{"pkce string", OAuth2, `{"pkce":"` + s + `"}`, EINVALID, "credentials.pkce", nil},
		{"headerName number", APIKey, `{"headerName":42}`, EINVALID, "credentials.headerName", nil},
		{"refresh_min_age float", OAuth2Instagram, `{"refresh_min_age":1.5}`, EINVALID, "credentials.refresh_min_age", nil},
		{"unknown type", "digest", `{}`, EINVALID, "type", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := validOAuth2Settings()
			base.ClientSecret = "stored-value"
			_, err := DecodeClientSettings(tt.typ, json.RawMessage(tt.raw), base)
			wantError(t, err, tt.code, tt.field)
			noSecretIn(t, "error", err.Error())
			for _, w := range tt.mention {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not name %q", err, w)
				}
			}
			if base.ClientSecret != "stored-value" || base.ClientID != "my-client-id" {
				t.Fatalf("base was changed: %+v", base)
			}
		})
	}
}

func TestDecodeClientSettingsPatch(t *testing.T) {
	newBase := func() ClientSettings {
		b := validOAuth2Settings()
		b.Scopes = []string{"a", "b"}
		b.PKCE = new(true)
		b.AdditionalParams = map[string]string{"k": "v"}
		b.TokenExpiresIn = 120
		return b
	}
	tests := []struct {
		name   string
		raw    string
		change func(s *ClientSettings) // applied to a fresh base to get the expected result
	}{
		{"empty body keeps all", ``, func(s *ClientSettings) {}},
		{"empty object keeps all", `{}`, func(s *ClientSettings) {}},
		{"client_id only", `{"client_id":"new-id"}`, func(s *ClientSettings) { s.ClientID = "new-id" }},
		{"new secret", `{"client_secret":"rotated"}`, func(s *ClientSettings) { s.ClientSecret = "rotated" }},
		{"scopes replaced", `{"scopes":["c"]}`, func(s *ClientSettings) { s.Scopes = []string{"c"} }},
		{"additional_params replaced not merged", `{"additional_params":{"x":"1"}}`,
			func(s *ClientSettings) { s.AdditionalParams = map[string]string{"x": "1"} }},
		{"additional_params cleared", `{"additional_params":null}`, func(s *ClientSettings) { s.AdditionalParams = nil }},
		{"pkce turned off", `{"pkce":false}`, func(s *ClientSettings) { s.PKCE = new(false) }},
		{"token_expires_in", `{"token_expires_in":7200}`, func(s *ClientSettings) { s.TokenExpiresIn = 7200 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newBase()
			got, err := DecodeClientSettings(OAuth2, json.RawMessage(tt.raw), base)
			if err != nil {
				t.Fatalf("DecodeClientSettings: %v", err)
			}
			want := newBase()
			tt.change(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			// The base (the stored settings) is never changed in place.
			if !reflect.DeepEqual(base, newBase()) {
				t.Fatalf("base changed to %+v", base)
			}
		})
	}
}

func TestDecodeFields(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	expiry := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		typ  AuthType
		raw  string
		want Fields
	}{
		{"noauth empty", NoAuth, `{}`, Fields{}},
		{"noauth no body", NoAuth, ``, Fields{}},
		{"basic", Basic, `{"username":"alice","password":"` + secretPassword + `"}`,
			Fields{Username: "alice", Password: secretPassword}},
		{"api_key", APIKey, `{"headerName":"X-Key","headerValue":"` + secretHeaderValue + `"}`,
			Fields{HeaderName: "X-Key", HeaderValue: secretHeaderValue}},
		{"oauth2 expires_in", OAuth2, `{"access_token":"` + secretAccessToken + `","refresh_token":"` + secretRefreshToken +
			`","expires_in":3600,"scope":"repo","token_type":"bearer"}`,
			Fields{AccessToken: secretAccessToken, RefreshToken: secretRefreshToken, ExpiresAt: now.Add(time.Hour),
				IssuedAt: now, Scope: "repo", TokenType: "bearer"}},
		{"oauth2 expires_at", OAuth2, `{"access_token":"a","expires_at":"2030-01-02T03:04:05Z"}`,
			Fields{AccessToken: "a", ExpiresAt: expiry, IssuedAt: now}},
		{"instagram", OAuth2Instagram, `{"access_token":"a","expires_in":5184000}`,
			Fields{AccessToken: "a", ExpiresAt: now.Add(60 * 24 * time.Hour), IssuedAt: now}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeFields(tt.typ, json.RawMessage(tt.raw), Fields{}, now)
			if err != nil {
				t.Fatalf("DecodeFields: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeFieldsRefused(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		typ     AuthType
		raw     string
		codes   []string // any of these codes
		field   string
		mention []string
	}{
		{"noauth takes nothing", NoAuth, `{"password":"` + secretPassword + `"}`, []string{EMALFORMED}, "credentials", []string{"password"}},
		{"basic unknown field", Basic, `{"username":"a","headerValue":"` + secretHeaderValue + `"}`, []string{EMALFORMED}, "credentials", []string{"headerValue"}},
		{"basic wrong case", Basic, `{"Password":"` + secretPassword + `"}`, []string{EMALFORMED}, "credentials", []string{"Password"}},
		{"api_key unknown field", APIKey, `{"headerValue":"` + secretHeaderValue + `","token":"` + secretHeaderValue + `"}`, []string{EMALFORMED}, "credentials", []string{"token"}},
		{"instagram has no refresh token", OAuth2Instagram, `{"access_token":"a","refresh_token":"` + secretRefreshToken + `"}`, []string{EMALFORMED}, "credentials", []string{"refresh_token"}},
		{"oauth2 extra is not writable", OAuth2, `{"extra":{"id_token":"` + secretExtra + `"}}`, []string{EMALFORMED}, "credentials", []string{"extra"}},
		{"oauth2 issued_at is not writable", OAuth2, `{"issued_at":"2020-01-01T00:00:00Z"}`, []string{EMALFORMED}, "credentials", []string{"issued_at"}},
		{"not an object", Basic, `["` + secretPassword + `"]`, []string{EMALFORMED}, "credentials", nil},
		{"truncated", Basic, `{"password":"` + secretPassword + `"`, []string{EMALFORMED}, "credentials", nil},
		{"bare word", Basic, `{"password":` + secretPassword + `}`, []string{EMALFORMED}, "credentials", nil},
		{"two objects", Basic, `{"password":"` + secretPassword + `"}{"password":"x"}`, []string{EMALFORMED}, "credentials", nil},
		{"password not a string", Basic, `{"password":["` + secretPassword + `"]}`, []string{EINVALID}, "credentials.password", nil},
		{"username object", Basic, `{"username":{"u":"` + secretPassword + `"}}`, []string{EINVALID}, "credentials.username", nil},
		{"headerValue number", APIKey, `{"headerValue":12345}`, []string{EINVALID}, "credentials.headerValue", nil},
		{"access_token bool", OAuth2, `{"access_token":true}`, []string{EINVALID}, "credentials.access_token", nil},
		{"expires_in string", OAuth2, `{"access_token":"a","expires_in":"` + secretAccessToken + `"}`, []string{EINVALID}, "credentials.expires_in", nil},
		{"expires_in fraction", OAuth2, `{"access_token":"a","expires_in":1.5}`, []string{EINVALID}, "credentials.expires_in", nil},
		{"expires_in zero", OAuth2, `{"access_token":"a","expires_in":0}`, []string{EINVALID}, "credentials.expires_in", nil},
		{"expires_in negative", OAuth2, `{"access_token":"a","expires_in":-60}`, []string{EINVALID}, "credentials.expires_in", nil},
		{"expires_at not a time", OAuth2, `{"access_token":"a","expires_at":"` + secretAccessToken + `"}`, []string{EINVALID, EMALFORMED}, "", nil},
		{"unknown type", "digest", `{}`, []string{EINVALID}, "type", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := Fields{Username: "stored-user", Password: "stored-pass"}
			_, err := DecodeFields(tt.typ, json.RawMessage(tt.raw), base, now)
			if err == nil {
				t.Fatal("DecodeFields succeeded, want an error")
			}
			code, field := codeField(err)
			ok := false
			for _, c := range tt.codes {
				ok = ok || c == code
			}
			if !ok || (tt.field != "" && field != tt.field) {
				t.Fatalf("error %q (code %s, field %q), want one of %v on %q", err, code, field, tt.codes, tt.field)
			}
			noSecretIn(t, "error", err.Error())
			noSecretIn(t, "ErrorMessage", ErrorMessage(err))
			for _, w := range tt.mention {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not name %q", err, w)
				}
			}
			if base.Username != "stored-user" || base.Password != "stored-pass" {
				t.Fatalf("base was changed: %+v", base)
			}
		})
	}
}

// A wrongly typed expires_at is an invalid value naming the field.
func TestDecodeFieldsExpiresAtWrongTypeNamesField(t *testing.T) {
	_, err := DecodeFields(OAuth2, json.RawMessage(`{"access_token":"a","expires_at":1893456000}`), Fields{}, time.Now())
	wantError(t, err, EINVALID, "credentials.expires_at")
}

// A huge expires_in is refused rather than wrapping into the past.
func TestDecodeFieldsHugeExpiresInDoesNotWrap(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, n := range []string{"10000000000", "9223372036854775807"} {
		t.Run(n, func(t *testing.T) {
			f, err := DecodeFields(OAuth2, json.RawMessage(`{"access_token":"a","expires_in":`+n+`}`), Fields{}, now)
			if err != nil {
				wantError(t, err, EINVALID, "credentials.expires_in")
				return
			}
			if !f.ExpiresAt.After(now) {
				t.Fatalf("expires_in %s gave ExpiresAt %v, which is not after now (%v)", n, f.ExpiresAt, now)
			}
		})
	}
}

func TestDecodeFieldsPatch(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	issued := now.Add(-time.Hour)
	expiry := now.Add(time.Hour)
	oauthBase := func() Fields {
		return Fields{AccessToken: "old-access", RefreshToken: "old-refresh", ExpiresAt: expiry, IssuedAt: issued,
			Scope: "repo", TokenType: "bearer", Extra: map[string]any{"id_token": "x"}}
	}
	tests := []struct {
		name string
		typ  AuthType
		base func() Fields
		raw  string
		want func() Fields
	}{
		{"basic password only keeps username", Basic,
			func() Fields { return Fields{Username: "alice", Password: "old"} }, `{"password":"new"}`,
			func() Fields { return Fields{Username: "alice", Password: "new"} }},
		{"basic username only keeps password", Basic,
			func() Fields { return Fields{Username: "alice", Password: "old"} }, `{"username":"bob"}`,
			func() Fields { return Fields{Username: "bob", Password: "old"} }},
		{"basic empty object keeps all", Basic,
			func() Fields { return Fields{Username: "alice", Password: "old"} }, `{}`,
			func() Fields { return Fields{Username: "alice", Password: "old"} }},
		{"api_key value keeps header name", APIKey,
			func() Fields { return Fields{HeaderName: "X-Key", HeaderValue: "old"} }, `{"headerValue":"new"}`,
			func() Fields { return Fields{HeaderName: "X-Key", HeaderValue: "new"} }},
		{"oauth2 refresh only keeps access token and expiry", OAuth2, oauthBase, `{"refresh_token":"new-refresh"}`,
			func() Fields { f := oauthBase(); f.RefreshToken = "new-refresh"; return f }},
		{"oauth2 new access token resets issue time, expiry and extra", OAuth2, oauthBase, `{"access_token":"new-access"}`,
			func() Fields {
				f := oauthBase()
				f.AccessToken, f.IssuedAt, f.ExpiresAt, f.Extra = "new-access", now, time.Time{}, nil
				return f
			}},
		{"oauth2 new access token with expires_in", OAuth2, oauthBase, `{"access_token":"new-access","expires_in":60}`,
			func() Fields {
				f := oauthBase()
				f.AccessToken, f.IssuedAt, f.ExpiresAt, f.Extra = "new-access", now, now.Add(time.Minute), nil
				return f
			}},
		{"oauth2 expires_in alone moves expiry", OAuth2, oauthBase, `{"expires_in":600}`,
			func() Fields { f := oauthBase(); f.ExpiresAt = now.Add(10 * time.Minute); return f }},
		{"oauth2 scope only", OAuth2, oauthBase, `{"scope":"repo user"}`,
			func() Fields { f := oauthBase(); f.Scope = "repo user"; return f }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := tt.base()
			got, err := DecodeFields(tt.typ, json.RawMessage(tt.raw), base, now)
			if err != nil {
				t.Fatalf("DecodeFields: %v", err)
			}
			if want := tt.want(); !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			if !reflect.DeepEqual(base, tt.base()) {
				t.Fatalf("base changed to %+v", base)
			}
		})
	}
}

func TestClientSettingsMasked(t *testing.T) {
	s := validOAuth2Settings()
	s.Scopes = []string{"repo"}
	s.HeaderName = "X-Api-Key"
	m := s.Masked()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	noSecretIn(t, "masked settings", js)
	noSecretIn(t, "masked settings", fmt.Sprintf("%+v", m))
	if m.ClientSecret != Masked {
		t.Fatalf("masked client_secret = %q, want %q", m.ClientSecret, Masked)
	}
	for _, v := range []string{"my-client-id", "https://github.com/login/oauth/authorize", "https://github.com/login/oauth/access_token", "repo", "X-Api-Key"} {
		if !strings.Contains(js, v) {
			t.Fatalf("masked settings %s lack the non-secret value %q", js, v)
		}
	}
	if s.ClientSecret != secretClientSecret {
		t.Fatal("Masked changed the settings it was called on")
	}
	if got := (ClientSettings{ClientID: "x"}).Masked(); got.ClientSecret != "" {
		t.Fatalf("an unset client_secret shows as %q, want it absent", got.ClientSecret)
	}
}

func TestFieldsMasked(t *testing.T) {
	expiry := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		f    Fields
		want map[string]any
	}{
		{"empty", Fields{}, map[string]any{}},
		{"basic", Fields{Username: "alice", Password: secretPassword},
			map[string]any{"username": "alice", "password": Masked}},
		{"api_key", Fields{HeaderName: "X-Key", HeaderValue: secretHeaderValue},
			map[string]any{"headerName": "X-Key", "headerValue": Masked}},
		{"oauth2", Fields{AccessToken: secretAccessToken, RefreshToken: secretRefreshToken, TokenType: "bearer",
			Scope: "repo", ExpiresAt: expiry, IssuedAt: expiry.Add(-time.Hour), Extra: map[string]any{"id_token": secretExtra}},
			map[string]any{"access_token": Masked, "refresh_token": Masked, "token_type": "bearer", "scope": "repo",
				"expires_at": "2030-01-02T03:04:05Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.f.Masked()
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Masked() = %v, want %v", got, tt.want)
			}
			b, _ := json.Marshal(got)
			noSecretIn(t, "masked fields", string(b))
		})
	}
}

func TestCloneIsDeep(t *testing.T) {
	c, client := validCredential(OAuth2)
	c.AllowedOrigins = []string{"https://a.example.com"}
	c.Fields.Extra = map[string]any{"k": "v"}
	cp := c.Clone()
	cp.AllowedOrigins[0] = "https://evil.example.com"
	cp.Fields.Extra["k"] = "changed"
	cp.Fields.AccessToken = "changed"
	if c.AllowedOrigins[0] != "https://a.example.com" || c.Fields.Extra["k"] != "v" || c.Fields.AccessToken != secretAccessToken {
		t.Fatalf("changing a Credential clone changed the original: %+v", c)
	}

	client.Settings.Scopes = []string{"a"}
	client.Settings.AdditionalParams = map[string]string{"k": "v"}
	client.Settings.PKCE = new(true)
	ccp := client.Clone()
	ccp.AllowedOrigins[0] = "https://evil.example.com"
	ccp.Settings.Scopes[0] = "changed"
	ccp.Settings.AdditionalParams["k"] = "changed"
	*ccp.Settings.PKCE = false
	if client.AllowedOrigins[0] != "https://api.example.com" || client.Settings.Scopes[0] != "a" ||
		client.Settings.AdditionalParams["k"] != "v" || !*client.Settings.PKCE {
		t.Fatalf("changing an AuthClient clone changed the original: %+v", client)
	}
}

func TestErrors(t *testing.T) {
	plain := errors.New("open /x: " + secretPassword)
	tests := []struct {
		name    string
		err     error
		code    string
		message string
		text    string
	}{
		{"nil", nil, "", "internal error", ""},
		{"invalid", Invalid("credentials.username", "is required"), EINVALID, "is required", "invalid: credentials.username: is required"},
		{"errorf", Errorf(ENOTFOUND, "secret %q not found", "x"), ENOTFOUND, `secret "x" not found`, `not_found: secret "x" not found`},
		{"wrapped", fmt.Errorf("write: %w", Errorf(ECONFLICT, "in use")), ECONFLICT, "in use", "write: conflict: in use"},
		{"plain error is internal and hidden", plain, EINTERNAL, "internal error", plain.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorCode(tt.err); got != tt.code {
				t.Fatalf("ErrorCode = %q, want %q", got, tt.code)
			}
			if got := ErrorMessage(tt.err); got != tt.message {
				t.Fatalf("ErrorMessage = %q, want %q", got, tt.message)
			}
			if tt.err != nil && tt.err.Error() != tt.text {
				t.Fatalf("Error() = %q, want %q", tt.err.Error(), tt.text)
			}
		})
	}
}

// additional_params cannot replace a parameter the authorization flow sets.
func TestAdditionalParamsCannotOverrideTheFlow(t *testing.T) {
	for _, k := range []string{"state", "redirect_uri", "response_type", "client_id", "scope", "code_challenge", "code_challenge_method"} {
		c := &AuthClient{Type: OAuth2, Name: "x", Scope: Scope{Level: LevelGlobal}, Settings: ClientSettings{
			ClientID: "id", ClientSecret: "s", AuthURI: "https://a.example.com/auth", TokenURI: "https://a.example.com/token",
			AdditionalParams: map[string]string{k: "fixed"}}}
		err := c.Validate()
		var e *Error
		if !errors.As(err, &e) || e.Code != EINVALID || e.Field != "credentials.additional_params" {
			t.Errorf("additional_params %s: got %v, want EINVALID on credentials.additional_params", k, err)
		}
	}
	c := &AuthClient{Type: OAuth2, Name: "x", Scope: Scope{Level: LevelGlobal}, Settings: ClientSettings{
		ClientID: "id", ClientSecret: "s", AuthURI: "https://a.example.com/auth", TokenURI: "https://a.example.com/token",
		AdditionalParams: map[string]string{"access_type": "offline", "prompt": "consent"}}}
	if err := c.Validate(); err != nil {
		t.Errorf("ordinary additional_params refused: %v", err)
	}
}

// A client secret or token is never sent over plain http across a network:
// OAuth2 endpoints must be https, or http to a loopback host.
func TestOAuth2EndpointsMustBeSafe(t *testing.T) {
	cases := []struct {
		uri string
		ok  bool
	}{
		{"https://github.com/login/oauth/access_token", true},
		{"http://127.0.0.1:9401/token", true},
		{"http://[::1]:9401/token", true},
		{"http://localhost:9401/token", true},
		{"http://auth.example.com/token", false},
		{"http://10.0.0.5/token", false},
		{"ftp://auth.example.com/token", false},
	}
	for _, tc := range cases {
		c := &AuthClient{Type: OAuth2, Name: "x", Scope: Scope{Level: LevelGlobal}, Settings: ClientSettings{
			ClientID: "id", ClientSecret: "s", AuthURI: "https://a.example.com/auth", TokenURI: tc.uri}}
		err := c.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("token_uri %s: err %v, want ok=%v", tc.uri, err, tc.ok)
		}
	}
}
