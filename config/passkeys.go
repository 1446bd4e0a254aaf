package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"gqlauth/mfa"
)

// Passkeys is the relying party of the passkey ceremonies (§12).
type Passkeys struct {
	mfa.PasskeyConfig
	// Guessed: neither WEBAUTHN_RP_ID nor a PUBLIC_URL on a domain name is set, so passkeys are
	// for http://localhost:<PORT> (development); the server logs it at start.
	Guessed bool
	// Skipped are default origins (PUBLIC_URL, CORS_ALLOWED_ORIGINS) that cannot run ceremonies
	// for the RP ID (another site, plain http); the server logs them at start.
	Skipped []string
}

// loadPasskeys reads WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS. What is set explicitly must be right (an
// IP address as RP ID, an origin outside it: one clear error); the defaults take what fits.
func loadPasskeys(get func(name, def string) string, publicURL string, corsOrigins []string, port int) (Passkeys, error) {
	p := Passkeys{PasskeyConfig: mfa.PasskeyConfig{RPID: get("WEBAUTHN_RP_ID", ""), DisplayName: get("APP_NAME", "gqlauth")}}
	if p.RPID != "" {
		if err := mfa.ValidateRPID(p.RPID); err != nil {
			return p, fmt.Errorf("WEBAUTHN_RP_ID: %v", err)
		}
	} else {
		// The host of PUBLIC_URL, unless it is an IP address (WebAuthn refuses those).
		if u, err := url.Parse(publicURL); publicURL != "" && err == nil && mfa.ValidateRPID(u.Hostname()) == nil {
			p.RPID = u.Hostname()
		} else {
			p.RPID, p.Guessed = "localhost", true
		}
	}
	if raw := get("WEBAUTHN_ORIGINS", ""); raw != "" {
		for _, o := range strings.Split(raw, ",") {
			if o = strings.TrimRight(strings.TrimSpace(o), "/"); o == "" {
				continue
			}
			if err := mfa.ValidateOrigin(p.RPID, o); err != nil {
				return p, fmt.Errorf("WEBAUTHN_ORIGINS: %v", err)
			}
			p.Origins = append(p.Origins, o)
		}
		if len(p.Origins) == 0 {
			return p, errors.New("WEBAUTHN_ORIGINS: no origin given")
		}
		return p, nil
	}
	for _, o := range append([]string{publicURL}, corsOrigins...) {
		switch {
		case o == "":
		case mfa.ValidateOrigin(p.RPID, o) == nil:
			p.Origins = append(p.Origins, o)
		default:
			p.Skipped = append(p.Skipped, o)
		}
	}
	switch {
	case len(p.Origins) > 0:
	case p.RPID == "localhost":
		p.Origins = []string{"http://localhost:" + strconv.Itoa(port)}
	default:
		return p, fmt.Errorf("WEBAUTHN_ORIGINS: none of PUBLIC_URL and CORS_ALLOWED_ORIGINS is an https:// origin on %s or a subdomain of it; set WEBAUTHN_ORIGINS", p.RPID)
	}
	return p, nil
}
