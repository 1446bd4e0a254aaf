package account

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"gqlauth/mfa"
	"gqlauth/model"
	"gqlauth/store"
)

// Passkeys (§12): registration, discoverable sign-in, step-up and removal, over mfa's ceremonies.
// Each begun ceremony waits in webauthn_challenges (single use, mfa.ChallengeTTL), bound to the
// account and session that began it (a sign-in is bound to nothing), so that any instance
// finishes it and no other caller can.

// Ceremony kinds, as webauthn_challenges stores them.
const (
	ceremonyRegistration = "registration"
	ceremonySignIn       = "sign_in"
	ceremonyVerification = "verification"
)

const (
	// maxPasskeyName is the longest passkey name, in characters.
	maxPasskeyName = 64
	// maxPasskeys is how many passkeys one account may register.
	maxPasskeys = 20
	// maxCredentialJSON bounds a browser's credential (a registration with attestation is a few KB).
	maxCredentialJSON = 32 << 10
)

// passkeyUser is u with its passkeys, as the ceremonies see it.
func passkeyUser(u *model.User, keys []*model.Passkey) mfa.PasskeyUser {
	return mfa.PasskeyUser{ID: u.ID, Name: u.Username, Credentials: keys}
}

// passkeyMethods are the RFC 8176 amr values of a sign-in or step-up with k: the key ("hwk" for
// a device-bound credential, "swk" for a synced one, whose private key leaves the device), the
// user's presence at it ("user"), and "mfa", as user verification (a PIN or a biometric,
// unnamed by the authenticator) makes it two factors.
func passkeyMethods(k *model.Passkey) []string {
	key := model.AMRHardware
	if k.BackupEligible {
		key = model.AMRSoftware
	}
	return []string{key, model.AMRUser, model.AMRMFA}
}

// beginCeremony begins a ceremony (begin, on the relying party's ceremonies) and stores it,
// bound to the account and session of p (nil: to nothing), and returns what the client gets.
func (s *Service) beginCeremony(ctx context.Context, op, kind string, p *Principal, begin func(*mfa.Passkeys) (*mfa.Ceremony, error)) (*model.PasskeyChallenge, error) {
	pk, err := s.passkeys(ctx, op)
	if err != nil {
		return nil, err
	}
	c, err := begin(pk)
	if err != nil {
		return nil, s.check(ctx, op, err)
	}
	now := s.clock()
	row := &store.WebAuthnChallenge{
		ID: uuid.Must(uuid.NewV7()).String(), Kind: kind, SessionData: string(c.Session),
		CreatedAt: now, ExpiresAt: now.Add(mfa.ChallengeTTL),
	}
	if p != nil {
		row.UserID, row.SessionID = &p.User.ID, &p.Session.ID
	}
	if err := s.db.PutWebAuthnChallenge(ctx, row); err != nil {
		return nil, s.check(ctx, op, err)
	}
	return &model.PasskeyChallenge{ChallengeID: row.ID, Options: c.Options}, nil
}

// finishCeremony uses up the ceremony id of kind and runs finish with its session data, in one
// transaction. It returns why the ceremony was refused ("" when it was not): it was unknown,
// used, expired or begun by another account or session than p's (nil: a sign-in, begun by no
// one), or finish refused the browser's answer. A refused ceremony stays used up.
func (s *Service) finishCeremony(ctx context.Context, op, kind, id string, p *Principal, finish func(tx *store.Tx, pk *mfa.Passkeys, session []byte) (string, error)) (string, error) {
	pk, err := s.passkeys(ctx, op)
	if err != nil {
		return "", err
	}
	var refused string
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		session, err := s.takeCeremony(ctx, tx, kind, id, p)
		if err != nil || session == nil {
			refused = "passkey: no such ceremony"
			return err
		}
		why, err := finish(tx, pk, session)
		if why != "" {
			refused = "passkey: " + why
		}
		return err
	})
	if err != nil {
		return "", s.check(ctx, op, err)
	}
	return refused, nil
}

// takeCeremony uses up the ceremony id of kind in tx and returns its session data, or nil when
// it is unknown, used, expired, or was begun by another account or session than p's.
func (s *Service) takeCeremony(ctx context.Context, tx *store.Tx, kind, id string, p *Principal) ([]byte, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, nil
	}
	c, err := tx.TakeWebAuthnChallenge(ctx, kind, id)
	if isNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	if !s.clock().Before(c.ExpiresAt) {
		return nil, nil
	}
	if p != nil && (c.UserID == nil || *c.UserID != p.User.ID || c.SessionID == nil || *c.SessionID != p.Session.ID) {
		return nil, nil
	}
	return []byte(c.SessionData), nil
}

func (s *Service) passkeys(ctx context.Context, op string) (*mfa.Passkeys, error) {
	if s.cfg.MFA.Passkeys == nil {
		return nil, s.internal(ctx, op, errors.New("passkeys are not configured"))
	}
	return s.cfg.MFA.Passkeys, nil
}

// validPasskeyName checks a passkey's name: 1–64 characters of text without control characters.
func validPasskeyName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > maxPasskeyName || !model.ValidText(name) || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", model.BadInput("name", "name must be 1–64 characters without control characters")
	}
	return name, nil
}

// BeginPasskeyRegistration starts registering a passkey for the caller: the options for
// navigator.credentials.create(). It needs a recent authentication (REAUTH_WINDOW).
func (s *Service) BeginPasskeyRegistration(ctx context.Context) (*model.PasskeyChallenge, error) {
	p, err := s.RequireSession(ctx) // @recentAuth checked the recent authentication
	if err != nil {
		return nil, err
	}
	if err := s.limitUser(ctx, p.User.ID); err != nil {
		return nil, err
	}
	return s.beginCeremony(ctx, "BeginPasskeyRegistration", ceremonyRegistration, p, func(pk *mfa.Passkeys) (*mfa.Ceremony, error) {
		keys, err := s.db.Passkeys(ctx, p.User.ID)
		if err != nil {
			return nil, err
		}
		return pk.BeginRegistration(passkeyUser(p.User, keys))
	})
}

// FinishPasskeyRegistration checks the browser's new credential against the caller's ceremony
// and registers it as a passkey named name. The first second factor of the account raises this
// session to AAL2 and revokes the others (FactorAdded). A refused credential is INVALID_CODE
// (MFA_FAILED) and uses the ceremony up; a refused name does not.
func (s *Service) FinishPasskeyRegistration(ctx context.Context, challengeID, name string, credential json.RawMessage) (*model.Passkey, error) {
	p, err := s.RequireSession(ctx) // @recentAuth checked the recent authentication
	if err != nil {
		return nil, err
	}
	if name, err = validPasskeyName(name); err != nil {
		return nil, err
	}
	var key *model.Passkey
	refused, err := s.finishCeremony(ctx, "FinishPasskeyRegistration", ceremonyRegistration, challengeID, p, func(tx *store.Tx, pk *mfa.Passkeys, session []byte) (string, error) {
		if _, err := s.lockFactors(ctx, tx, p); err != nil {
			return "", err
		}
		keys, err := tx.Passkeys(ctx, p.User.ID)
		if err != nil {
			return "", err
		}
		if len(keys) >= maxPasskeys {
			return "", model.BadInput("credential", "too many passkeys; remove one first")
		}
		if len(credential) > maxCredentialJSON {
			return "credential too large", nil
		}
		created, err := pk.FinishRegistration(passkeyUser(p.User, keys), session, credential)
		if errors.Is(err, mfa.ErrPasskeyInvalid) || errors.Is(err, mfa.ErrPasskeyExcluded) {
			return "registration refused", nil
		} else if err != nil {
			return "", err
		}
		// A credential id registered to any account is refused (WebAuthn §7.1 step 22): a client
		// could claim someone else's to stand in the way of their sign-in. The insert decides, so
		// that two registrations of one id at once get one passkey and one INVALID_CODE.
		created.ID, created.UserID, created.Name, created.CreatedAt = uuid.Must(uuid.NewV7()).String(), p.User.ID, name, s.clock()
		if ok, err := tx.CreatePasskey(ctx, created); err != nil {
			return "", err
		} else if !ok {
			return "credential already registered", nil
		}
		key = created
		_, err = s.FactorAdded(ctx, tx, p, passkeyMethods(created)[0], "passkey "+name)
		return "", err
	})
	if err != nil {
		return nil, err
	}
	if refused != "" {
		return nil, s.passkeyFailed(ctx, p, refused)
	}
	return key, nil
}

// passkeyFailed records a refused registration or step-up of p (MFA_FAILED, detail says why) and
// returns INVALID_CODE.
func (s *Service) passkeyFailed(ctx context.Context, p *Principal, why string) error {
	s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeMfaFailed, p.User.ID, p.User.ID, p.Session.ID, why))
	return invalidCode()
}

// BeginPasskeySignIn starts a sign-in with a discoverable passkey: the options for
// navigator.credentials.get(), naming no account.
func (s *Service) BeginPasskeySignIn(ctx context.Context) (*model.PasskeyChallenge, error) {
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	return s.beginCeremony(ctx, "BeginPasskeySignIn", ceremonySignIn, nil, (*mfa.Passkeys).BeginSignIn)
}

// FinishPasskeySignIn signs in with a passkey's assertion: a new session at AAL2 (the passkey
// verified the user: two factors in one), SIGN_IN with detail "passkey <name>". Any refusal is
// INVALID_CODE (SIGN_IN_FAILED) and uses the ceremony up. A disabled account is refused
// (ACCOUNT_DISABLED) only once the assertion has passed, so that it tells nothing to a caller
// without the passkey; the passkey's counter has moved on by then, as it has on the device.
func (s *Service) FinishPasskeySignIn(ctx context.Context, challengeID string, credential json.RawMessage) (*model.AuthPayload, error) {
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	var (
		payload *model.AuthPayload
		owner   string
		outcome = invalidCode()
	)
	refused, err := s.finishCeremony(ctx, "FinishPasskeySignIn", ceremonySignIn, challengeID, nil, func(tx *store.Tx, pk *mfa.Passkeys, session []byte) (string, error) {
		a, why := parseAssertion(pk, credential)
		if why != "" {
			return why, nil
		}
		stored, err := tx.PasskeyByCredentialID(ctx, a.CredentialID())
		if isNotFound(err) {
			return "unknown credential", nil
		} else if err != nil {
			return "", err
		}
		owner = stored.UserID
		user, err := tx.UserByID(ctx, stored.UserID)
		if err != nil {
			return "", err
		}
		used, why, err := s.usePasskey(ctx, tx, user, func(u mfa.PasskeyUser) (*mfa.UsedPasskey, error) {
			return pk.FinishSignIn(session, a, u)
		})
		if err != nil || why != "" {
			return why, err
		}
		if user.Disabled {
			outcome = model.Forbidden(model.AuthErrorReasonAccountDisabled)
			return "account disabled", nil
		}
		payload, err = s.startSessionAt(ctx, tx, user, model.AuditEventTypeSignIn, "passkey "+used.Name, model.AuthLevelAal2, passkeyMethods(used)...)
		return "", err
	})
	if err != nil {
		return nil, err
	}
	if refused != "" {
		s.recordAlone(ctx, s.event(ctx, model.AuditEventTypeSignInFailed, "", owner, "", refused))
		return nil, outcome
	}
	return payload, nil
}

// parseAssertion parses a browser's assertion, or says why it cannot be one.
func parseAssertion(pk *mfa.Passkeys, credential json.RawMessage) (*mfa.Assertion, string) {
	if len(credential) > maxCredentialJSON {
		return nil, "credential too large"
	}
	a, err := pk.ParseAssertion(credential)
	if err != nil {
		return nil, "malformed credential"
	}
	return a, ""
}

// usePasskey checks an assertion (finish, against u's passkeys as stored in tx) and stores the
// use: the new counter, flags and lastUsedAt, by a compare-and-set on the counter, so that of two
// assertions racing with one counter value only one passes, on any instance. It returns the
// passkey, or why the assertion was refused.
func (s *Service) usePasskey(ctx context.Context, tx *store.Tx, u *model.User, finish func(mfa.PasskeyUser) (*mfa.UsedPasskey, error)) (*model.Passkey, string, error) {
	keys, err := tx.Passkeys(ctx, u.ID)
	if err != nil {
		return nil, "", err
	}
	used, err := finish(passkeyUser(u, keys))
	if errors.Is(err, mfa.ErrPasskeyInvalid) {
		return nil, "response refused", nil
	} else if err != nil {
		return nil, "", err
	}
	now := s.clock()
	used.Passkey.LastUsedAt = &now
	if ok, err := tx.UsePasskey(ctx, used.Passkey, used.OldSignCount); err != nil || !ok {
		return nil, "signature counter already used", err
	}
	return used.Passkey, "", nil
}

// BeginPasskeyVerification starts a step-up of the caller's session with one of their passkeys:
// the options for navigator.credentials.get(), listing them. Without a passkey: NOT_FOUND.
func (s *Service) BeginPasskeyVerification(ctx context.Context) (*model.PasskeyChallenge, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return nil, err
	}
	return s.beginCeremony(ctx, "BeginPasskeyVerification", ceremonyVerification, p, func(pk *mfa.Passkeys) (*mfa.Ceremony, error) {
		keys, err := s.db.Passkeys(ctx, p.User.ID)
		if err != nil {
			return nil, err
		}
		if len(keys) == 0 {
			return nil, model.NotFound("no passkey to verify with")
		}
		return pk.BeginVerification(passkeyUser(p.User, keys))
	})
}

// FinishPasskeyVerification checks a step-up's assertion against the caller's ceremony: the
// session rises to AAL2 and its recent authentication is renewed (MFA_VERIFIED), with a fresh
// token pair. Any refusal is INVALID_CODE (MFA_FAILED), uses the ceremony up, and counts toward
// RATE_LIMIT_SECOND_FACTOR_FAILURES (counted before the assertion is checked).
func (s *Service) FinishPasskeyVerification(ctx context.Context, challengeID string, credential json.RawMessage) (*model.AuthPayload, error) {
	p, err := s.RequireSession(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.LimitClient(ctx); err != nil {
		return nil, err
	}
	counted, err := s.countSecondFactor(ctx, p.User)
	if err != nil {
		return nil, err
	}
	var payload *model.AuthPayload
	refused, err := s.finishCeremony(ctx, "FinishPasskeyVerification", ceremonyVerification, challengeID, p, func(tx *store.Tx, pk *mfa.Passkeys, session []byte) (string, error) {
		a, why := parseAssertion(pk, credential)
		if why != "" {
			return why, nil
		}
		used, why, err := s.usePasskey(ctx, tx, p.User, func(u mfa.PasskeyUser) (*mfa.UsedPasskey, error) {
			return pk.FinishVerification(u, session, a)
		})
		if err != nil || why != "" {
			return why, err
		}
		if err := tx.RecordEvent(ctx, s.event(ctx, model.AuditEventTypeMfaVerified, p.User.ID, p.User.ID, p.Session.ID, "passkey "+used.Name)); err != nil {
			return "", err
		}
		payload, err = s.reauthenticated(ctx, tx, p, model.AuthLevelAal2, passkeyMethods(used)...)
		return "", err
	})
	if err != nil {
		return nil, err
	}
	if refused != "" {
		s.secondFactorFailed(ctx, p, counted)
		return nil, s.passkeyFailed(ctx, p, refused)
	}
	s.forgetFailures(ctx, p.User.Username, true)
	s.forgetSecondFactorFailures(ctx, p.User)
	return payload, nil
}

// RemovePasskey removes the caller's passkey id (MFA_REMOVED, a notice mailed) and brings the
// account's factor count up to date in the same transaction. It needs a recent authentication;
// the directive requires AAL2. Another account's passkey is NOT_FOUND, as an unknown one is.
func (s *Service) RemovePasskey(ctx context.Context, id string) (bool, error) {
	p, err := s.RequireSession(ctx) // @recentAuth checked the recent authentication
	if err != nil {
		return false, err
	}
	if err := validateID(id); err != nil {
		return false, err
	}
	err = s.db.Transact(ctx, func(tx *store.Tx) error {
		if _, err := s.lockFactors(ctx, tx, p); err != nil {
			return err
		}
		keys, err := tx.Passkeys(ctx, p.User.ID)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(keys, func(k *model.Passkey) bool { return k.ID == id })
		if i < 0 {
			return model.NotFound("no passkey with this id")
		}
		if _, err := tx.DeletePasskey(ctx, p.User.ID, id); err != nil {
			return err
		}
		return s.FactorRemoved(ctx, tx, p, "passkey "+keys[i].Name)
	})
	if err != nil {
		return false, s.check(ctx, "RemovePasskey", err)
	}
	return true, nil
}

// SweepPasskeyChallenges deletes ceremonies that expired without being finished.
func (s *Service) SweepPasskeyChallenges(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := s.db.DeleteExpiredWebAuthnChallenges(ctx, s.clock(), 1000)
		total += n
		if err != nil || n < 1000 {
			return total, err
		}
	}
}
