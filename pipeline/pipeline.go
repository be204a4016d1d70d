package pipeline

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/challenge-stream/challenge-stream/internal/redact"
	"github.com/challenge-stream/challenge-stream/migrations"
	"github.com/challenge-stream/challenge-stream/replication"
)

// errStandby means another replica holds the leader lock: wait and try again.
var errStandby = errors.New("another replica holds the slot")

// errSlotAhead means the slot was confirmed past what we stored: someone else consumed it.
var errSlotAhead = errors.New("slot confirmed past the stored LSN")

// Run streams until ctx is cancelled, then flushes what it holds, confirms it and returns nil.
// Transient failures (network, server restart, slot in use by another replica) are retried
// forever with exponential backoff and jitter; a permanent one (wal_level, privileges, missing
// tables or columns) is returned.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	p := &pipeline{cfg: cfg, configuredSlot: cfg.Slot, log: cfg.Log.Named("pipeline")}
	p.oddities = &oddityLog{log: p.log}

	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = cfg.RetryMaxInterval
	b.MaxElapsedTime = 0 // retry forever; the default gives up after 15 minutes
	p.resetBackoff = b.Reset

	var waiting error // the session error the backoff is waiting after; nil while a session runs
	err := backoff.RetryNotify(func() error {
		waiting = nil
		err := p.session(ctx)
		switch {
		case ctx.Err() != nil && incompleteStop(err):
			return backoff.Permanent(err)
		case ctx.Err() != nil:
			return nil
		case err == nil:
			return nil
		case isPermanent(err):
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		waiting = err
		if errors.Is(err, errStandby) {
			cfg.Observe(StateChanged{State: StateStandby})
			p.log.Debug("standing by: another replica streams from the slot", zap.Duration("retry_in", wait))
			return
		}
		cfg.Observe(StateChanged{State: StateReconnecting})
		cfg.Observe(Reconnecting{Err: err})
		p.log.Warn("session ended; reconnecting", p.errFields(err, zap.Duration("retry_in", wait))...)
	})
	cfg.Observe(StateChanged{State: StateStopped})
	if ctx.Err() != nil && !isPermanent(err) && !incompleteStop(err) {
		// A stop between sessions has nothing to flush, but it says so: an exit right after a
		// SIGTERM with no word would leave the operator guessing.
		switch {
		case errors.Is(waiting, errStandby):
			p.log.Info("stopped while standing by")
		case waiting != nil:
			p.log.Info("stopped while reconnecting; nothing was pending", p.errFields(waiting)...)
		}
		return nil
	}
	// Returned, not logged: the caller reports it once (the command prints it as its last line).
	return redact.ErrorSecret(err, cfg.Database.Password)
}

// incompleteStop reports a stop that left received work unapplied: the final flush timed out,
// or a flush failed while stopping. Nothing is lost (it is replayed), but the exit is not clean.
func incompleteStop(err error) bool {
	return errors.Is(err, ErrShutdownIncomplete) || errors.Is(err, ErrStopFlushFailed)
}

type pipeline struct {
	cfg          Config
	log          *zap.Logger
	migrated     bool
	oddities     *oddityLog
	resetBackoff func()
	// unusableSlot, when set, is why the last session found the slot unusable although it
	// exists (a SlotRecreated reason): the next prepare recreates it.
	unusableSlot string
	// standingBy: the last session found the leader lock held by another replica.
	standingBy bool
	// toldPublication: what the publication carries was logged (once per process).
	toldPublication bool
	// configuredSlot is Config.Slot as given; "" lets chooseSlot name it, until slotChosen.
	configuredSlot string
	slotChosen     bool
}

// errFields describes an error for a log line: the message without secrets and, for a
// Postgres error, its SQLSTATE.
func (p *pipeline) errFields(err error, extra ...zap.Field) []zap.Field {
	fields := []zap.Field{zap.String("error", redact.Secret(err.Error(), p.cfg.Database.Password))}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		fields = append(fields, zap.String("sqlstate", pgErr.Code))
	}
	return append(fields, extra...)
}

// isPermanent reports errors that retrying cannot fix.
func isPermanent(err error) bool {
	if errors.Is(err, replication.ErrWALLevel) || errors.Is(err, replication.ErrPublication) ||
		errors.Is(err, replication.ErrNoReplicaIdentity) || errors.Is(err, replication.ErrHostTable) ||
		errors.Is(err, replication.ErrMissingColumn) || errors.Is(err, replication.ErrColumnType) ||
		errors.Is(err, replication.ErrBadTuple) || errors.Is(err, replication.ErrSlotTaken) ||
		errors.Is(err, replication.ErrSynchronousStandby) || errors.Is(err, replication.ErrServerVersion) ||
		errors.Is(err, migrations.ErrHostColumn) {
		// The same bytes would fail the same way after a reconnect: stop, and confirm nothing
		// past them, until an operator looks.
		return true
	}
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var badCert *tls.CertificateVerificationError
	if errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &badCert) {
		return true // the server's certificate will not verify on the next try either
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42501", // insufficient_privilege: e.g. no REPLICATION attribute
			"28000", "28P01", // invalid authorization / password
			"3D000", // database does not exist
			"42P01", // undefined_table
			"42703": // undefined_column
			return true
		}
	}
	return false
}
