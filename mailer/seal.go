package mailer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// sendArgs is a queued message as River stores it (JSON in river_job.args). The recipient, the
// kind and the Message-ID are in the clear; everything else is in Sealed.
type sendArgs struct {
	To        string `json:"to"`
	Mail      Kind   `json:"mail"`
	MessageID string `json:"message_id"`
	// Sealed is a random 12-byte nonce followed by the AES-256-GCM ciphertext of secretParts,
	// authenticated together with the fields above.
	Sealed []byte `json:"sealed"`
}

// Kind is the River job kind.
func (sendArgs) Kind() string { return "gqlauth.mail" }

type secretParts struct {
	Link      string        `json:"link,omitempty"`
	Code      string        `json:"code,omitempty"`
	ExpiresIn time.Duration `json:"expires_in,omitempty"`
	Detail    string        `json:"detail,omitempty"`
}

// sealer seals the secret parts of queued messages under a key derived from the server secret
// (HKDF-SHA256, as the signing keys are), so that neither the job table nor a dump of it holds a
// token or code in the clear.
type sealer struct{ aead cipher.AEAD }

func newSealer(secret []byte) (*sealer, error) {
	key, err := hkdf.Key(sha256.New, secret, nil, "gqlauth mail-args encryption v1", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

// additionalData binds a sealed blob to its recipient, kind and Message-ID: one copied into
// another job does not open.
func (a *sendArgs) additionalData() []byte {
	return fmt.Appendf(nil, "gqlauth mail v1\x00%s\x00%s\x00%s", a.To, a.Mail, a.MessageID)
}

// seal turns a checked message into job arguments with a new Message-ID.
func (m *Mailer) seal(msg Message) (*sendArgs, error) {
	id := make([]byte, 16)
	rand.Read(id)
	args := &sendArgs{To: msg.To, Mail: msg.Kind, MessageID: hex.EncodeToString(id) + "@" + m.msgIDDom}
	plain, err := json.Marshal(secretParts{Link: msg.Link, Code: msg.Code, ExpiresIn: msg.ExpiresIn, Detail: msg.Detail})
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, m.sealer.aead.NonceSize())
	randRead(nonce)
	args.Sealed = m.sealer.aead.Seal(nonce, nonce, plain, args.additionalData())
	return args, nil
}

// open returns the message a job holds.
func (m *Mailer) open(args *sendArgs) (Message, error) {
	n := m.sealer.aead.NonceSize()
	if len(args.Sealed) < n {
		return Message{}, errors.New("sealed message parts are truncated")
	}
	plain, err := m.sealer.aead.Open(nil, args.Sealed[:n], args.Sealed[n:], args.additionalData())
	if err != nil {
		return Message{}, errors.New("sealed message parts do not open (another secret, or altered)")
	}
	var p secretParts
	if err := json.Unmarshal(plain, &p); err != nil {
		return Message{}, err
	}
	return Message{Kind: args.Mail, To: args.To, Link: p.Link, Code: p.Code, ExpiresIn: p.ExpiresIn, Detail: p.Detail}, nil
}

func randRead(b []byte) { rand.Read(b) } // never fails (crypto/rand panics instead)
