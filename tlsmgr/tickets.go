package tlsmgr

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"time"

	"go.uber.org/zap"
)

// Session tickets let a returning client resume without a full handshake.
// Behind a load balancer a client moves between instances, so the ticket
// keys are shared through storage: one instance makes a new key every
// ticketRotation (under a lock), every instance reads the set on each pass,
// and tickets sealed with the previous keys still open until they age out.
// The keys are applied through tls.Config's WrapSession/UnwrapSession with
// a private tls.Config holding them, so crypto/tls does the sealing.

const (
	ticketKeysKey  = "portico/session_ticket_keys.json"
	ticketRotation = 12 * time.Hour
	ticketKeep     = 3 // the current key and two before it: tickets open for 24-36 h
)

type ticketKey struct {
	Key     [32]byte  `json:"key"`
	Created time.Time `json:"created"`
}

// refreshTicketKeys loads the fleet's ticket keys, rotating them when the
// newest is older than ticketRotation.
func (m *Manager) refreshTicketKeys(ctx context.Context) {
	keys, err := m.loadTicketKeys(ctx)
	if err != nil || len(keys) == 0 || time.Since(keys[0].Created) >= ticketRotation {
		keys, err = m.rotateTicketKeys(ctx)
	}
	if err != nil {
		m.logger.Warn("session ticket keys unavailable from storage; using this instance's own", zap.Error(err))
		return
	}
	raw := make([][32]byte, len(keys))
	for i, k := range keys {
		raw[i] = k.Key
	}
	tc := &tls.Config{}
	tc.SetSessionTicketKeys(raw)
	m.tickets.Store(tc)
}

func (m *Manager) loadTicketKeys(ctx context.Context) ([]ticketKey, error) {
	data, err := m.storage.Load(ctx, ticketKeysKey)
	if err != nil {
		return nil, err
	}
	var keys []ticketKey
	if err := json.Unmarshal(data, &keys); err != nil {
		return nil, err
	}
	return keys, nil
}

func (m *Manager) rotateTicketKeys(ctx context.Context) ([]ticketKey, error) {
	const lock = "portico_ticket_keys"
	if err := m.storage.Lock(ctx, lock); err != nil {
		return nil, err
	}
	defer m.storage.Unlock(context.WithoutCancel(ctx), lock)
	keys, _ := m.loadTicketKeys(ctx)
	if len(keys) > 0 && time.Since(keys[0].Created) < ticketRotation {
		return keys, nil // another instance rotated while we waited
	}
	var k ticketKey
	if _, err := rand.Read(k.Key[:]); err != nil {
		return nil, err
	}
	k.Created = time.Now().UTC()
	keys = append([]ticketKey{k}, keys...)
	if len(keys) > ticketKeep {
		keys = keys[:ticketKeep]
	}
	data, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	if err := m.storage.Store(ctx, ticketKeysKey, data); err != nil {
		return nil, err
	}
	return keys, nil
}

var errNoTicketKeys = errors.New("no session ticket keys yet")

// WrapSession seals a session ticket with the fleet's current key.
func (m *Manager) WrapSession(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	tc := m.tickets.Load()
	if tc == nil {
		return nil, errNoTicketKeys
	}
	return tc.EncryptTicket(cs, ss)
}

// UnwrapSession opens a ticket sealed by any instance with a current or
// recent key; an unknown ticket means a full handshake, not an error.
func (m *Manager) UnwrapSession(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	tc := m.tickets.Load()
	if tc == nil {
		return nil, nil
	}
	return tc.DecryptTicket(identity, cs)
}
