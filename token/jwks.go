package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
)

// JWKS is the RFC 7517 key set of the published public keys.
func (r *KeyRing) JWKS() []map[string]string {
	out := []map[string]string{}
	for _, row := range r.Keys() {
		if k := r.key(row.Kid); k != nil {
			jwk := publicJWK(k.public)
			jwk["kid"], jwk["alg"], jwk["use"] = k.kid, k.alg, "sig"
			out = append(out, jwk)
		}
	}
	return out
}

// publicJWK is the public key as the members of a JWK (RFC 7518 §6, RFC 8037).
func publicJWK(public crypto.PublicKey) map[string]string {
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := public.(type) {
	case *ecdsa.PublicKey:
		point, _ := k.ECDH() // P-256: 0x04 || X || Y, 32 bytes each
		raw := point.Bytes()
		return map[string]string{"kty": "EC", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])}
	case ed25519.PublicKey:
		return map[string]string{"kty": "OKP", "crv": "Ed25519", "x": b64(k)}
	case *rsa.PublicKey:
		return map[string]string{"kty": "RSA", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	}
	return map[string]string{}
}

// thumbprint is the RFC 7638 JWK thumbprint of a public key: SHA-256 over its required members in
// lexicographic order, base64url. It makes a good kid: derived, unique, checkable by anyone.
func thumbprint(public crypto.PublicKey) string {
	jwk := publicJWK(public)
	var members []string
	switch jwk["kty"] {
	case "EC":
		members = []string{"crv", "kty", "x", "y"}
	case "OKP":
		members = []string{"crv", "kty", "x"}
	case "RSA":
		members = []string{"e", "kty", "n"}
	}
	buf := []byte{'{'}
	for i, m := range members {
		if i > 0 {
			buf = append(buf, ',')
		}
		name, _ := json.Marshal(m)
		value, _ := json.Marshal(jwk[m])
		buf = append(append(append(buf, name...), ':'), value...)
	}
	sum := sha256.Sum256(append(buf, '}'))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
