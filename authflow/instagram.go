package authflow

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/authproxy/authproxy/credstore"
)

// instagramExchange trades a short-lived token for a long-lived one
// (grant_type=ig_exchange_token).
func (m *Manager) instagramExchange(ctx context.Context, client *credstore.AuthClient, shortLived string) (*grant, error) {
	uri := client.Settings.LongLivedTokenURI
	if uri == "" {
		uri = DefaultInstagramLongLivedURI
	}
	return m.instagramGet(ctx, uri, url.Values{
		"grant_type":    {"ig_exchange_token"},
		"client_secret": {client.Settings.ClientSecret},
		"access_token":  {shortLived},
	})
}

// instagramRefresh renews a long-lived token (grant_type=ig_refresh_token),
// which Instagram accepts only for tokens at least a day old and not
// expired; callers check that first.
func (m *Manager) instagramRefresh(ctx context.Context, client *credstore.AuthClient, token string) (*grant, error) {
	uri := client.Settings.RefreshURI
	if uri == "" {
		uri = DefaultInstagramRefreshURI
	}
	return m.instagramGet(ctx, uri, url.Values{"grant_type": {"ig_refresh_token"}, "access_token": {token}})
}

// instagramGet calls one of Instagram's token GET endpoints. Their answer is
// {"access_token","token_type","expires_in"}, or on failure
// {"error":{"message","type","code"}} with a 4xx status.
func (m *Manager) instagramGet(ctx context.Context, uri string, q url.Values) (*grant, error) {
	m.init()
	u, err := url.Parse(uri)
	if err != nil {
		return nil, err
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := m.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var out struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
		Error       *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	jerr := json.Unmarshal(body, &out)
	if resp.StatusCode != http.StatusOK || out.Error != nil || jerr != nil || out.AccessToken == "" {
		te := &tokenError{status: resp.StatusCode}
		if out.Error != nil {
			te.code, te.description = out.Error.Type, out.Error.Message
			for _, vs := range q { // a provider may echo what it was sent
				for _, v := range vs {
					if len(v) >= 8 {
						te.description = strings.ReplaceAll(te.description, v, "[redacted]")
					}
				}
			}
		}
		if resp.StatusCode == http.StatusOK {
			te.status = http.StatusBadGateway // an answer we cannot use: try again later
		}
		return nil, te
	}
	return &grant{access: out.AccessToken, tokenType: out.TokenType, expiresIn: out.ExpiresIn}, nil
}
