package main

import (
	"errors"

	"github.com/challenge-stream/challenge-stream/internal/redact"
)

// redacted strips the database password from an error's text. An error that does not contain
// it is returned as it is, so sentinels and usage errors keep their meaning.
func redacted(err error, databaseURL string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if clean := redact.String(msg, databaseURL); clean != msg {
		return errors.New(clean)
	}
	return err
}
