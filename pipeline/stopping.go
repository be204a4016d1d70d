package pipeline

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/challenge-stream/challenge-stream/replication"
)

// errServerStopping ends a session because the server is shutting down: the session flushes
// what it holds, confirms it and disconnects, and the retry loop reconnects once the server is
// back.
var errServerStopping = errors.New("server is shutting down")

// watchShutdown closes stopping when the server refuses a new connection with SQLSTATE 57P03
// (cannot_connect_now, "the database system is shutting down"). A smart shutdown waits for
// every client session to end and says nothing to the sessions it waits for: the flush
// connection would hold it forever. A refused connection is the only sign a client gets, so
// the sidecar tries one every interval (a short-lived, named connection that does nothing).
// A fast shutdown ends our flush session itself and needs no watch.
func watchShutdown(ctx context.Context, cfg *pgconn.Config, every time.Duration, log *zap.Logger,
	stopping chan<- struct{}, wake func()) {
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if serverStopping(ctx, cfg, every) {
			log.Info("server is shutting down; flushing and disconnecting so it can stop")
			close(stopping)
			wake()
			return
		}
	}
}

// serverStopping makes one probe connection and reports whether the server refused it because
// it is shutting down. Any other outcome says nothing about a shutdown.
func serverStopping(ctx context.Context, cfg *pgconn.Config, timeout time.Duration) bool {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(pctx, cfg)
	if err == nil {
		_ = conn.Close(pctx)
		return false
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57P03"
}

// ShutdownProbeApplicationName is the application_name of the shutdown probe's connections.
const ShutdownProbeApplicationName = "challenge-stream-probe"

// sideConfig is the configuration of a short connection of the sidecar's own beside its
// sessions (the shutdown probe, a standby's look at the leader lock), named so operators can
// tell it in pg_stat_activity.
func sideConfig(database *pgconn.Config, applicationName string) (*pgconn.Config, error) {
	cfg := database.Copy()
	cfg.RuntimeParams["application_name"] = applicationName
	if err := replication.DetectDeadPeers(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}
