package mailer

// DefaultBackoff is the retry schedule used when Config.Backoff is nil.
var DefaultBackoff = defaultBackoff
