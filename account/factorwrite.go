package account

import (
	"context"

	"gqlauth/model"
	"gqlauth/store"
)

// lockFactors starts, in tx, every transaction that writes a second factor of p's user (TOTP
// enrolment and confirmation, passkey registration and removal, TOTP removal, new recovery
// codes): it locks the user's row, so that factor changes of one user take turns, and then
// checks again, under that lock, that p's session is still live. The guard decided when the
// request began; a first enrolment elsewhere (which revokes the other sessions under the same
// lock), an admin's resetUserMfa or a sign-out may have ended the session since, and a revoked
// session must write nothing. It returns the user as locked.
func (s *Service) lockFactors(ctx context.Context, tx *store.Tx, p *Principal) (*model.User, error) {
	u, err := tx.LockUser(ctx, p.User.ID)
	if err != nil {
		return nil, err
	}
	sess, _, err := tx.LockSession(ctx, p.Session.ID)
	if isNotFound(err) || (err == nil && (sess.UserID != u.ID || !sess.Live(s.clock()))) {
		return nil, model.Unauthenticated(model.AuthErrorReasonSessionRevoked)
	}
	if err != nil {
		return nil, err
	}
	return u, nil
}

// pendingElsewhere refuses, in tx (under lockFactors), to replace a pending TOTP enrolment that
// another live session of p's user started: replacing it silently would let one session swap the
// secret another is about to confirm. A pending enrolment of a session that has ended (or from
// before enrolments named their session) is replaced. The owner who meets a thief's pending
// enrolment signs the other sessions out (logout(scope: OTHERS)) and enrols again.
func (s *Service) pendingElsewhere(ctx context.Context, tx *store.Tx, p *Principal) error {
	f, err := tx.TOTPFactorOf(ctx, p.User.ID)
	if isNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if f.ConfirmedAt != nil || f.SessionID == nil || *f.SessionID == p.Session.ID {
		return nil
	}
	other, _, err := tx.LockSession(ctx, *f.SessionID)
	if isNotFound(err) || (err == nil && !other.Live(s.clock())) {
		return nil
	} else if err != nil {
		return err
	}
	return model.BadInput("totp", "another of your sessions has a TOTP enrolment pending: confirm it there, or sign the other sessions out (logout(scope: OTHERS)) and enrol again")
}
