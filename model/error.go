package model

import "fmt"

// Error is the one error type that reaches clients. Its fields map one to one onto
// errors[].extensions; the presenter in graph does that mapping, and anything that is not an
// *Error becomes INTERNAL_SERVER_ERROR there.
type Error struct {
	Code    ErrorCode
	Reason  AuthErrorReason // auth failures only
	Message string
	// Field names the argument that broke an input rule (BAD_USER_INPUT).
	Field string
	// RequiredRole is set with INSUFFICIENT_ROLE.
	RequiredRole Role
	// RequiredAAL is set with MFA_REQUIRED.
	RequiredAAL AuthLevel
	// RetryAfter is set with TOO_MANY_REQUESTS, in seconds.
	RetryAfter int
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("%s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unauthenticated is an UNAUTHENTICATED error with the standard message for reason.
func Unauthenticated(reason AuthErrorReason) *Error {
	return &Error{Code: ErrorCodeUnauthenticated, Reason: reason, Message: authMessages[reason]}
}

// Forbidden is a FORBIDDEN error with the standard message for reason.
func Forbidden(reason AuthErrorReason) *Error {
	return &Error{Code: ErrorCodeForbidden, Reason: reason, Message: authMessages[reason]}
}

// InsufficientRole is the FORBIDDEN error of a caller whose role is below required.
func InsufficientRole(required Role) *Error {
	e := Forbidden(AuthErrorReasonInsufficientRole)
	e.RequiredRole = required
	return e
}

// MFARequired is the FORBIDDEN error of a session below the assurance level required.
func MFARequired(required AuthLevel) *Error {
	e := Forbidden(AuthErrorReasonMfaRequired)
	e.RequiredAAL = required
	return e
}

// BadInput is a BAD_USER_INPUT error about the argument field.
func BadInput(field, message string) *Error {
	return &Error{Code: ErrorCodeBadUserInput, Field: field, Message: message}
}

// NotFound is a NOT_FOUND error.
func NotFound(message string) *Error {
	return &Error{Code: ErrorCodeNotFound, Message: message}
}

// TooManyRequests is a TOO_MANY_REQUESTS error telling the client to wait retryAfter seconds.
func TooManyRequests(retryAfter int) *Error {
	return &Error{Code: ErrorCodeTooManyRequests, Message: "too many requests; try again later", RetryAfter: max(retryAfter, 1)}
}

// Unavailable is the INTERNAL_SERVER_ERROR of a dependency that does not answer (the database).
func Unavailable() *Error {
	return &Error{Code: ErrorCodeInternalServerError, Message: "service unavailable; try again shortly"}
}

// Internal is what a client sees of any unexpected failure; the cause is logged, never shown.
func Internal() *Error {
	return &Error{Code: ErrorCodeInternalServerError, Message: "internal server error"}
}

// The messages are fixed per reason so that no failure says more than its reason does
// (an unknown username and a wrong password read the same).
var authMessages = map[AuthErrorReason]string{
	AuthErrorReasonMissingToken:             "sign in required: send an access token as Authorization: Bearer <token>",
	AuthErrorReasonInvalidToken:             "the access token is invalid",
	AuthErrorReasonTokenExpired:             "the access token has expired; refresh it",
	AuthErrorReasonSessionRevoked:           "the session has ended; sign in again",
	AuthErrorReasonInvalidCredentials:       "invalid username or password",
	AuthErrorReasonInvalidRefreshToken:      "the refresh token is invalid, expired or revoked",
	AuthErrorReasonRefreshTokenReused:       "the refresh token was already used; the session has been revoked for safety",
	AuthErrorReasonInsufficientRole:         "your role does not allow this",
	AuthErrorReasonAccountDisabled:          "the account is disabled",
	AuthErrorReasonInvalidCode:              "the link or code is invalid, used or expired; ask for a new one",
	AuthErrorReasonMfaRequired:              "a second factor is required: verify it (verifyMfa) or enrol one",
	AuthErrorReasonReauthenticationRequired: "this operation needs a recent sign-in: call reauthenticate (or verifyMfa) first",
}
