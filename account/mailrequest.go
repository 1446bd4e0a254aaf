package account

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"gqlauth/mailer"
	"gqlauth/model"
	"gqlauth/store"
)

// requestMail is the public, "always true" side of a mail that must not reveal whether an
// account has the address (a reset link, a sign-in code). It does the same thing for every
// well-formed address, known or not, and never looks the address up:
//
//   - a malformed address (not a plain address, over 254 bytes, CR, LF, NUL or any control
//     character) is BAD_USER_INPUT whatever the accounts, and nothing is counted or written;
//   - the per-IP limit of credential operations and the per-address limit of the request's
//     purpose (limitMail) are counted for every
//     well-formed address; over the per-address limit the answer is still true and nothing is
//     written;
//   - otherwise it writes one row: the request, queued for the mail's sender with the address
//     sealed (mailer.EnqueueRequest), the same job for any address.
//
// The sender looks the address up later, in the background (ResolveMailRequest), and mails or
// does nothing. So the request's database writes, and its time, are the same for a known and an
// unknown address; no time floor is needed.
func (s *Service) requestMail(ctx context.Context, kind mailer.RequestKind, email string) (bool, error) {
	if err := s.LimitClient(ctx); err != nil {
		return false, err
	}
	if err := validAddress("email", email); err != nil {
		return false, err
	}
	if err := s.limitMail(ctx, requestBudgets[kind], email); err != nil {
		if e := (*model.Error)(nil); errors.As(err, &e) && e.Code == model.ErrorCodeTooManyRequests {
			return true, nil
		}
		return false, err
	}
	m := s.cfg.Mail.Mailer
	if m == nil {
		return true, nil
	}
	req := mailer.Request{Kind: kind, To: email, IP: ClientIP(ctx), UserAgent: UserAgent(ctx)}
	err := s.db.Transact(ctx, func(tx *store.Tx) error { return m.EnqueueRequest(ctx, tx.SQLTx(), req) })
	if err != nil {
		return false, s.check(ctx, "requestMail", err)
	}
	return true, nil
}

// requestBudgets are the per-address budgets (limitMail) of the public requests.
var requestBudgets = map[mailer.RequestKind]mailer.Kind{
	mailer.RequestPasswordReset: mailer.ResetPassword,
	mailer.RequestSignInCode:    mailer.SignInCode,
}

// limitMail counts one message of kind (mailer.VerifyEmail for every verification link, a change
// of address's included; mailer.ResetPassword; mailer.SignInCode) to address and refuses it, as
// TOO_MANY_REQUESTS, over RATE_LIMIT_EMAIL_PER_ADDRESS. §11 counts messages "of any kind" per
// address, so every kind shares one budget: a stranger who asks for codes for an address can use
// up its owner's reset mail for the hour (the README says so). The kind is kept in the call so a
// per-kind budget, were the contract to allow it, would be one line here.
func (s *Service) limitMail(ctx context.Context, _ mailer.Kind, address string) error {
	return s.limitAddress(ctx, address)
}

// validAddress checks an address a flow mails to: a plain address (no display name, no
// surrounding space), at most 254 bytes, without CR, LF, NUL or other control characters.
// Anything else is BAD_USER_INPUT on field.
func validAddress(field, email string) error {
	address, err := NormalizeEmail(&email)
	if err != nil || address == nil || *address != email || mailer.ValidAddress(email) != nil {
		return model.BadInput(field, field+" is not a valid address")
	}
	return nil
}

// ResolveMailRequest is the mailer's Resolver (mailer.SetResolver): the sender's side of
// requestMail. It looks the address up and mails what the request asked for, or nothing, in one
// transaction that also marks the request done.
func (s *Service) ResolveMailRequest(ctx context.Context, req mailer.Request, complete func(*sql.Tx) error) error {
	switch req.Kind {
	case mailer.RequestPasswordReset:
		return s.resolveReset(ctx, req, complete)
	case mailer.RequestSignInCode:
		return s.resolveSignInCode(ctx, req, complete)
	}
	return fmt.Errorf("unknown mail request %q", req.Kind)
}
