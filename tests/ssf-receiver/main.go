// Command ssf-receiver is Session Ledger's test receiver for its OpenID Shared
// Signals transmitter. It speaks SSF 1.0 from the receiver's side (discovery,
// stream management, RFC 8935 push, RFC 8936 poll) and verifies every Security
// Event Token with github.com/lestrrat-go/jwx against the transmitter's JWKS, so
// the signatures are checked by a JOSE implementation the project did not write.
//
//	ssf-receiver create  -transmitter URL -token T -push-endpoint URL
//	ssf-receiver receive -transmitter URL -token T -listen ADDR -poll-endpoint URL \
//	    -push-stream ID -expect N [-verify-state S] [-timeout 60s]
//
// create prints one JSON object (the streams it created); receive prints one JSON
// line per SET received, in arrival order, and exits 0 once it has N session-revoked
// SETs by push and N by poll (and the verification SET, when asked for one).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

const (
	sessionRevoked = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	verification   = "https://schemas.openid.net/secevent/ssf/event-type/verification"
	pushMethod     = "urn:ietf:rfc:8935"
	pollMethod     = "urn:ietf:rfc:8936"
)

type config struct {
	Issuer                 string   `json:"issuer"`
	SpecVersion            string   `json:"spec_version"`
	JwksURI                string   `json:"jwks_uri"`
	DeliveryMethods        []string `json:"delivery_methods_supported"`
	ConfigurationEndpoint  string   `json:"configuration_endpoint"`
	StatusEndpoint         string   `json:"status_endpoint"`
	AddSubjectEndpoint     string   `json:"add_subject_endpoint"`
	RemoveSubjectEndpoint  string   `json:"remove_subject_endpoint"`
	VerificationEndpoint   string   `json:"verification_endpoint"`
	DefaultSubjects        string   `json:"default_subjects"`
}

type client struct {
	token string
	http  *http.Client
}

func (c *client) do(method, url string, body any, want int, out any) error {
	var reader io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		reader = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, reader)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d (want %d): %s", method, url, resp.StatusCode, want, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func discover(c *client, transmitter string) (*config, error) {
	var cfg config
	url := strings.TrimRight(transmitter, "/") + "/.well-known/ssf-configuration"
	resp, err := c.http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("discovery: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.SpecVersion != "1_0" || cfg.Issuer == "" || cfg.JwksURI == "" || cfg.ConfigurationEndpoint == "" {
		return nil, fmt.Errorf("discovery: incomplete configuration %+v", cfg)
	}
	return &cfg, nil
}

// verifier checks SETs: signature with the transmitter's JWKS, typ, and the claims
// RFC 8417 and SSF require.
type verifier struct {
	keys   jwk.Set
	issuer string
}

type received struct {
	Via              string `json:"via"`
	Jti              string `json:"jti"`
	Txn              string `json:"txn,omitempty"`
	Event            string `json:"event"`
	Session          string `json:"session,omitempty"`
	User             string `json:"user,omitempty"`
	InitiatingEntity string `json:"initiating_entity,omitempty"`
	ReasonAdmin      string `json:"reason_admin,omitempty"`
	State            string `json:"state,omitempty"`
	Alg              string `json:"alg"`
}

func (v *verifier) verify(token []byte) (*received, error) {
	payload, err := jws.Verify(token, jws.WithKeySet(v.keys))
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	msg, err := jws.Parse(token)
	if err != nil {
		return nil, err
	}
	headers := msg.Signatures()[0].ProtectedHeaders()
	if headers.Type() != "secevent+jwt" {
		return nil, fmt.Errorf("typ %q, want secevent+jwt", headers.Type())
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, err
	}
	if claims["iss"] != v.issuer {
		return nil, fmt.Errorf("iss %v, want %s", claims["iss"], v.issuer)
	}
	for _, forbidden := range []string{"sub", "exp"} {
		if _, ok := claims[forbidden]; ok {
			return nil, fmt.Errorf("claim %s must not be present", forbidden)
		}
	}
	for _, required := range []string{"jti", "iat", "aud", "sub_id"} {
		if _, ok := claims[required]; !ok {
			return nil, fmt.Errorf("claim %s missing", required)
		}
	}
	events, _ := claims["events"].(map[string]any)
	if len(events) != 1 {
		return nil, fmt.Errorf("want exactly one event, got %d", len(events))
	}
	r := &received{Jti: fmt.Sprint(claims["jti"]), Alg: headers.Algorithm().String()}
	if txn, ok := claims["txn"].(string); ok {
		r.Txn = txn
	}
	subID, _ := claims["sub_id"].(map[string]any)
	for typ, body := range events {
		r.Event = typ
		b, _ := body.(map[string]any)
		switch typ {
		case sessionRevoked:
			if subID["format"] != "complex" {
				return nil, fmt.Errorf("session-revoked sub_id format %v", subID["format"])
			}
			if s, ok := subID["session"].(map[string]any); ok {
				r.Session = fmt.Sprint(s["id"])
			}
			if u, ok := subID["user"].(map[string]any); ok {
				if u["iss"] != v.issuer {
					return nil, fmt.Errorf("user iss %v", u["iss"])
				}
				r.User = fmt.Sprint(u["sub"])
			}
			r.InitiatingEntity = fmt.Sprint(b["initiating_entity"])
			if ra, ok := b["reason_admin"].(map[string]any); ok {
				r.ReasonAdmin = fmt.Sprint(ra["en"])
			}
			if r.Txn == "" || r.User == "" || r.ReasonAdmin == "" {
				return nil, fmt.Errorf("session-revoked without txn, user or reason_admin: %s", payload)
			}
		case verification:
			r.State = fmt.Sprint(b["state"])
		default:
			return nil, fmt.Errorf("unexpected event type %s", typ)
		}
	}
	return r, nil
}

func create(args []string) error {
	fs := flag.NewFlagSet("create", flag.ExitOnError)
	transmitter := fs.String("transmitter", "", "transmitter base URL")
	token := fs.String("token", "", "receiver credential")
	pushEndpoint := fs.String("push-endpoint", "", "where the push stream delivers")
	fs.Parse(args)
	c := &client{token: *token, http: &http.Client{Timeout: 10 * time.Second}}
	cfg, err := discover(c, *transmitter)
	if err != nil {
		return err
	}
	var push, poll map[string]any
	if err := c.do("POST", cfg.ConfigurationEndpoint, map[string]any{
		"delivery":         map[string]any{"method": pushMethod, "endpoint_url": *pushEndpoint},
		"events_requested": []string{sessionRevoked},
		"description":      "test push receiver",
	}, 201, &push); err != nil {
		return err
	}
	if err := c.do("POST", cfg.ConfigurationEndpoint, map[string]any{
		"delivery":         map[string]any{"method": pollMethod},
		"events_requested": []string{sessionRevoked},
		"description":      "test poll receiver",
	}, 201, &poll); err != nil {
		return err
	}
	// Read back through the configuration endpoint, as a receiver would.
	var readBack map[string]any
	if err := c.do("GET", cfg.ConfigurationEndpoint+"?stream_id="+fmt.Sprint(push["stream_id"]), nil, 200, &readBack); err != nil {
		return err
	}
	delivered, _ := readBack["events_delivered"].([]any)
	if len(delivered) != 1 || delivered[0] != sessionRevoked {
		return fmt.Errorf("events_delivered %v", readBack["events_delivered"])
	}
	pollDelivery, _ := poll["delivery"].(map[string]any)
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"issuer":         cfg.Issuer,
		"push_stream_id": push["stream_id"],
		"poll_stream_id": poll["stream_id"],
		"poll_endpoint":  pollDelivery["endpoint_url"],
	})
}

func receive(args []string) error {
	fs := flag.NewFlagSet("receive", flag.ExitOnError)
	transmitter := fs.String("transmitter", "", "transmitter base URL")
	token := fs.String("token", "", "receiver credential")
	listen := fs.String("listen", "", "push listener address")
	pollEndpoint := fs.String("poll-endpoint", "", "the poll stream's endpoint")
	pushStream := fs.String("push-stream", "", "push stream to verify")
	expect := fs.Int("expect", 0, "session-revoked SETs expected on each stream")
	verifyState := fs.String("verify-state", "", "request a verification SET with this state")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after")
	fs.Parse(args)

	c := &client{token: *token, http: &http.Client{Timeout: 30 * time.Second}}
	cfg, err := discover(c, *transmitter)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	keys, err := jwk.Fetch(ctx, cfg.JwksURI)
	if err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	v := &verifier{keys: keys, issuer: cfg.Issuer}

	var mu sync.Mutex
	out := json.NewEncoder(os.Stdout)
	pushed, polled, verified := 0, 0, *verifyState == ""
	done := make(chan struct{})
	var once sync.Once
	record := func(r *received) {
		mu.Lock()
		defer mu.Unlock()
		out.Encode(r)
		switch {
		case r.Event == verification && r.State == *verifyState:
			verified = true
		case r.Event == sessionRevoked && r.Via == "push":
			pushed++
		case r.Event == sessionRevoked && r.Via == "poll":
			polled++
		}
		if pushed >= *expect && polled >= *expect && verified {
			once.Do(func() { close(done) })
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/events", func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		if ct := req.Header.Get("Content-Type"); ct != "application/secevent+jwt" {
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"err":"invalid_request","description":"content type %s"}`, ct)
			return
		}
		r, err := v.verify(body)
		if err != nil {
			fmt.Fprintln(os.Stderr, "push: rejected:", err)
			w.WriteHeader(400)
			json.NewEncoder(w).Encode(map[string]string{"err": "invalid_key", "description": err.Error()})
			return
		}
		r.Via = "push"
		record(r)
		w.WriteHeader(202)
	})
	server := &http.Server{Addr: *listen, Handler: mux}
	go func() {
		if err := server.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "listen:", err)
			os.Exit(2)
		}
	}()
	defer server.Close()

	if *verifyState != "" {
		if err := c.do("POST", cfg.VerificationEndpoint, map[string]any{"stream_id": *pushStream, "state": *verifyState}, 204, nil); err != nil {
			return err
		}
	}

	pollErr := make(chan error, 1)
	go func() {
		ack := []string{}
		for {
			select {
			case <-done:
				// Acknowledge what the last poll returned.
				if len(ack) > 0 {
					c.do("POST", *pollEndpoint, map[string]any{"ack": ack, "maxEvents": 0, "returnImmediately": true}, 200, nil)
				}
				pollErr <- nil
				return
			case <-ctx.Done():
				pollErr <- nil
				return
			default:
			}
			var resp struct {
				Sets          map[string]string `json:"sets"`
				MoreAvailable bool              `json:"moreAvailable"`
			}
			err := c.do("POST", *pollEndpoint, map[string]any{
				"maxEvents": 2, "returnImmediately": false, "ack": ack,
			}, 200, &resp)
			if err != nil {
				fmt.Fprintln(os.Stderr, "poll:", err)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			ack = ack[:0]
			// Map order is random: deliver in the order the SETs were issued.
			batch := make([]*received, 0, len(resp.Sets))
			for jti, set := range resp.Sets {
				r, err := v.verify([]byte(set))
				if err != nil {
					pollErr <- fmt.Errorf("poll: %s: %w", jti, err)
					return
				}
				if r.Jti != jti {
					pollErr <- fmt.Errorf("poll: key %s holds jti %s", jti, r.Jti)
					return
				}
				r.Via = "poll"
				batch = append(batch, r)
				ack = append(ack, jti)
			}
			for _, r := range batch {
				record(r)
			}
		}
	}()

	select {
	case <-done:
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		return fmt.Errorf("timed out: %d pushed, %d polled, verified %v (want %d each)", pushed, polled, verified, *expect)
	}
	return <-pollErr
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ssf-receiver create|receive [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "create":
		err = create(os.Args[2:])
	case "receive":
		err = receive(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %s", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ssf-receiver:", err)
		os.Exit(1)
	}
}
