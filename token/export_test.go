package token

import "gqlauth/model"

// VerifyUncached is Verify without the verified-token cache, for benchmarks of the full check.
func (t *Tokens) VerifyUncached(token string) (*Claims, model.AuthErrorReason) {
	claims, _, reason := t.verify(token)
	return claims, reason
}
