package main

import (
	"errors"

	"github.com/challenge-stream/challenge-stream/internal/redact"
)

// redacted strips the database password from an error's text.
func redacted(err error, databaseURL string) error {
	if err == nil {
		return nil
	}
	return errors.New(redact.String(err.Error(), databaseURL))
}
