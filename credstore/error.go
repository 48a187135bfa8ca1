package credstore

import (
	"errors"
	"fmt"
)

// Error codes shared by the store, the admin API and the proxy. Each HTTP
// layer maps them to statuses in one place.
const (
	EINVALID   = "invalid"   // a value fails validation (422)
	ENOTFOUND  = "not_found" // the named thing does not exist (404)
	ECONFLICT  = "conflict"  // the write contradicts stored state (409)
	EINTERNAL  = "internal"  // anything else; details go to the log only
	EMALFORMED = "malformed" // a body that cannot be parsed (400)
)

// Error is the application error: a machine code, a readable message that is
// safe to show to an operator (it never contains a secret value), and, for
// EINVALID, the field at fault.
type Error struct {
	Code    string
	Field   string
	Message string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an EINVALID error naming field.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Code: EINVALID, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err if it is (or wraps) an *Error, and
// EINTERNAL otherwise.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err == nil {
		return ""
	}
	return EINTERNAL
}

// ErrorMessage returns the readable message of err if it is an *Error, and
// "internal error" otherwise, so that unexpected errors (which may quote
// anything) are never shown to callers.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// EUNAVAILABLE: a service the operation depends on (a token endpoint) did
// not answer usefully; trying again later may work (502).
const EUNAVAILABLE = "unavailable"
