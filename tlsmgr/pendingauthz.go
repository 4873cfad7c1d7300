package tlsmgr

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// Why Portico watches authorizations.
//
// acmez polls an authorization (acme.Client.PollAuthorization, every 250 ms
// unless the CA sends Retry-After, for up to 5 minutes) until its status is
// valid or invalid, and looks at the challenges' "error" only then. Some CAs
// (smallstep step-ca) put the validation error on the challenge but leave
// both it and the authorization "pending": acmez then polls for the whole
// 5 minutes, hundreds of requests, reports only "authorization took too
// long" without the CA's words, and the name's other key type waits behind
// it (both orders take the same issuance lock).
//
// RFC 8555 §8.2 lets a CA that keeps retrying a validation leave it pending
// with the error of the last try, saying when it retries with Retry-After.
// So an error on a challenge Portico asked the CA to validate ends the
// polling when the CA gives no Retry-After, or when the error has stood for
// pendingErrorGrace: the authorization is then handed to acmez as
// "invalid", and acmez returns the challenge's problem document (the CA's
// words), which reaches the ledger, `portico certs` and the hint.
//
// Neither acmez nor certmagic has a hook for this (certmagic builds the
// HTTP client of its ACMEIssuer and keeps it unexported), so the watch wraps
// that client's transport; see watchAuthorizations.
const pendingErrorGrace = 30 * time.Second

// authzWatch is an http.RoundTripper in front of the CA.
type authzWatch struct {
	next   http.RoundTripper
	logger *zap.Logger
	now    func() time.Time

	mu        sync.Mutex
	initiated map[string]bool      // challenge URLs Portico asked the CA to validate
	erredAt   map[string]time.Time // when an error was first seen on each
}

// watchAuthorizations puts an authzWatch in front of iss's HTTP client. It
// reaches the client through reflection because certmagic does not export
// it; when a certmagic upgrade renames or retypes the field it reports
// false (the caller logs it, and TestPendingChallengeError fails) rather
// than touch anything else.
func watchAuthorizations(iss *certmagic.ACMEIssuer, logger *zap.Logger) bool {
	f := reflect.ValueOf(iss).Elem().FieldByName("httpClient")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*http.Client]() || f.IsNil() {
		return false
	}
	c := (*http.Client)(f.UnsafePointer())
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = &authzWatch{next: next, logger: logger, now: time.Now,
		initiated: map[string]bool{}, erredAt: map[string]time.Time{}}
	return true
}

// authzBody is what the watch reads of a challenge or authorization.
type authzBody struct {
	Status     string `json:"status"`
	Token      string `json:"token"` // set on challenges only
	Identifier *struct {
		Value string `json:"value"`
	} `json:"identifier"` // set on authorizations only
	Challenges []struct {
		Type  string          `json:"type"`
		URL   string          `json:"url"`
		Error json.RawMessage `json:"error"`
	} `json:"challenges"`
}

func (w *authzWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	payload, signed := jwsPayload(req)
	resp, err := w.next.RoundTrip(req)
	if err != nil || !signed || resp.StatusCode != http.StatusOK || !isJSON(resp.Header.Get("Content-Type")) {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var obj authzBody
	if json.Unmarshal(body, &obj) == nil {
		switch {
		case payload == "{}" && obj.Token != "":
			// the client's answer to a challenge: the CA validates now
			w.mu.Lock()
			if len(w.initiated) > 10000 { // forgotten orders: start afresh
				w.initiated, w.erredAt = map[string]bool{}, map[string]time.Time{}
			}
			w.initiated[req.URL.String()] = true
			delete(w.erredAt, req.URL.String())
			w.mu.Unlock()
		case payload == "" && obj.Identifier != nil && len(obj.Challenges) > 0:
			body = w.authorization(req, resp, obj, body)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp, nil
}

// authorization returns the body of a polled authorization: as the CA sent
// it, or marked invalid when the CA reported a failed validation of a
// challenge Portico answered and left it pending (see the top of the file).
func (w *authzWatch) authorization(req *http.Request, resp *http.Response, obj authzBody, body []byte) []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if obj.Status != "pending" {
		for _, c := range obj.Challenges {
			delete(w.initiated, c.URL)
			delete(w.erredAt, c.URL)
		}
		return body
	}
	for _, c := range obj.Challenges {
		if !w.initiated[c.URL] || len(c.Error) == 0 || string(c.Error) == "null" {
			continue
		}
		first, seen := w.erredAt[c.URL]
		if !seen {
			first = w.now()
			w.erredAt[c.URL] = first
		}
		if resp.Header.Get("Retry-After") != "" && w.now().Sub(first) < pendingErrorGrace {
			continue // the CA says it retries: let it, for a while
		}
		var raw map[string]json.RawMessage
		if json.Unmarshal(body, &raw) != nil {
			return body
		}
		raw["status"] = json.RawMessage(`"invalid"`)
		out, err := json.Marshal(raw)
		if err != nil {
			return body
		}
		delete(w.initiated, c.URL)
		delete(w.erredAt, c.URL)
		w.logger.Warn("the CA reported a failed validation but left the authorization pending; ending the wait with its error",
			zap.String("identifier", obj.Identifier.Value), zap.String("challenge_type", c.Type),
			zap.String("authorization", req.URL.String()), zap.ByteString("problem", c.Error))
		return out
	}
	return body
}

// jwsPayload returns the decoded payload of a signed ACME request ("" for
// POST-as-GET), reading a copy of the body.
func jwsPayload(req *http.Request) (string, bool) {
	if req.Method != http.MethodPost || req.GetBody == nil || !isJOSE(req.Header.Get("Content-Type")) {
		return "", false
	}
	rc, err := req.GetBody()
	if err != nil {
		return "", false
	}
	defer rc.Close()
	var jws struct {
		Payload string `json:"payload"`
	}
	if json.NewDecoder(io.LimitReader(rc, 1<<20)).Decode(&jws) != nil {
		return "", false
	}
	p, err := base64.RawURLEncoding.DecodeString(jws.Payload)
	if err != nil {
		return "", false
	}
	return string(p), true
}

func isJSON(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/json"
}

func isJOSE(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/jose+json"
}
