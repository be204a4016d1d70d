package replication

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors for conditions an operator must fix; the pipeline stops on them instead of
// retrying.
var (
	ErrWALLevel          = errors.New("wal_level is not logical")
	ErrPublication       = errors.New("publication unusable")
	ErrNoReplicaIdentity = errors.New("table has no replica identity")
	ErrHostTable         = errors.New("host table missing")
	// ErrSlotTaken means a slot of our name belongs to another database or is a physical
	// slot: slot names are unique per cluster, so we can neither create ours nor use that one.
	ErrSlotTaken = errors.New("replication slot name taken")
)

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidIdentifier reports whether name is a plain lower-case Postgres identifier. Slot and
// publication names must be: the replication protocol commands take them unquoted.
func ValidIdentifier(name string) bool { return identifier.MatchString(name) }

// Querier is the part of a pgx connection or transaction the slot functions need.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CheckServer returns ErrServerVersion below MinServerVersion, ErrWALLevel unless the server
// decodes logical replication, and ErrHostTable when one of the source tables (in schema
// public) is missing.
func CheckServer(ctx context.Context, q Querier, tables []string) error {
	num, err := serverVersionNum(ctx, q)
	if err != nil {
		return err
	}
	if err := checkServerVersion(num); err != nil {
		return err
	}
	var level string
	if err := q.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("show wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("%w: it is %q; set wal_level = logical and restart Postgres", ErrWALLevel, level)
	}
	for _, table := range tables {
		var exists bool
		if err := q.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", "public."+table).Scan(&exists); err != nil {
			return fmt.Errorf("look up table %s: %w", table, err)
		}
		if !exists {
			return fmt.Errorf("%w: public.%s", ErrHostTable, table)
		}
	}
	return nil
}

// IsPublicationMissing reports the error pgoutput sends when the publication it was asked for
// does not exist as of the transaction it decodes (undefined_object): it was dropped, or
// dropped and recreated after the slot's position. The slot can never get past it.
func IsPublicationMissing(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42704" && strings.Contains(pgErr.Message, "publication")
}

// SlotInfo is what the server says about a replication slot.
type SlotInfo struct {
	Exists         bool
	Active         bool
	ActivePID      int32
	WALStatus      string // reserved, extended, unreserved or lost
	ConfirmedFlush pglogrepl.LSN
	// RetainedBytes is the WAL the slot keeps on the server's disk (current position − restart_lsn).
	RetainedBytes int64
	// LagBytes is how far the slot's confirmed position trails the server (current − confirmed_flush_lsn).
	LagBytes int64
}

// Lost reports whether the server invalidated the slot (it fell behind max_slot_wal_keep_size).
func (s SlotInfo) Lost() bool { return s.WALStatus == "lost" }

// InspectSlot reads the slot's row from pg_replication_slots; Exists is false when there is
// none in the current database. pg_replication_slots is cluster-wide: a slot of the same name
// in another database is not ours (see CheckSlotName).
func InspectSlot(ctx context.Context, q Querier, slot string) (SlotInfo, error) {
	var info SlotInfo
	var pid *int32
	var walStatus, confirmed *string
	var retained, lag *int64
	err := q.QueryRow(ctx, `SELECT active, active_pid, wal_status, confirmed_flush_lsn::text,
			(pg_current_wal_lsn() - restart_lsn)::bigint, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`, slot).
		Scan(&info.Active, &pid, &walStatus, &confirmed, &retained, &lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return SlotInfo{}, nil
	}
	if err != nil {
		return SlotInfo{}, fmt.Errorf("inspect slot %s: %w", slot, err)
	}
	info.Exists = true
	if pid != nil {
		info.ActivePID = *pid
	}
	if walStatus != nil {
		info.WALStatus = *walStatus
	}
	if confirmed != nil {
		if info.ConfirmedFlush, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return SlotInfo{}, fmt.Errorf("inspect slot %s: %w", slot, err)
		}
	}
	if retained != nil {
		info.RetainedBytes = *retained
	}
	if lag != nil {
		info.LagBytes = *lag
	}
	return info, nil
}

// CheckSlotName returns ErrSlotTaken when the name is held by a physical slot or by a logical
// slot of another database. Such a slot is never ours to use or drop.
func CheckSlotName(ctx context.Context, q Querier, slot string) error {
	var slotType string
	var database *string
	err := q.QueryRow(ctx, `SELECT slot_type, database FROM pg_replication_slots
		WHERE slot_name = $1 AND database IS DISTINCT FROM current_database()`, slot).Scan(&slotType, &database)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up slot %s: %w", slot, err)
	}
	if database == nil {
		return fmt.Errorf("%w: %s is a %s slot of this cluster; choose another name with --slot", ErrSlotTaken, slot, slotType)
	}
	return fmt.Errorf("%w: %s belongs to database %s; choose another name with --slot", ErrSlotTaken, slot, *database)
}

// DropSlot drops the slot if it exists in the current database. It fails with SQLSTATE 55006
// while another session streams from it.
func DropSlot(ctx context.Context, q Querier, slot string) error {
	_, err := q.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE slot_name = $1 AND database = current_database()`, slot)
	if err != nil {
		return fmt.Errorf("drop slot %s: %w", slot, err)
	}
	return nil
}

// DropPublication drops the publication if it exists.
func DropPublication(ctx context.Context, q Querier, publication string) error {
	if _, err := q.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{publication}.Sanitize()); err != nil {
		return fmt.Errorf("drop publication %s: %w", publication, err)
	}
	return nil
}

// ApplicationName is the replication connection's application_name: its walsender's name in
// pg_stat_replication and the name synchronous_standby_names would have to list to make it a
// synchronous standby.
const ApplicationName = "challenge-stream"

// Connect opens a logical replication connection (replication=database) to the database of
// a copy of database (which stays unchanged). Its TLS settings (sslmode, sslrootcert, …) apply
// as for any pgx connection.
func Connect(ctx context.Context, database *pgconn.Config) (*pgconn.PgConn, error) {
	cfg := database.Copy()
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = ApplicationName
	if err := DetectDeadPeers(cfg); err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open replication connection: %w", err)
	}
	return conn, nil
}

// NewSlot is a freshly created slot: the position from which its stream starts and the
// exported snapshot in which everything committed before that position is visible. The
// snapshot stays importable only while the replication connection that created it is idle.
type NewSlot struct {
	ConsistentPoint pglogrepl.LSN
	Snapshot        string
}

// SlotOptions configure CreateSlot.
type SlotOptions struct {
	// Failover creates the slot with FAILOVER on servers that support it (17+), so a physical
	// standby with sync_replication_slots keeps a copy that survives a promotion. Older servers
	// ignore it.
	Failover bool
}

// CreateSlot creates a pgoutput slot on the replication connection and exports its snapshot.
func CreateSlot(ctx context.Context, conn *pgconn.PgConn, slot string, opts SlotOptions) (NewSlot, error) {
	var res pglogrepl.CreateReplicationSlotResult
	var err error
	if opts.Failover && serverMajor(conn) >= FailoverSlotVersion/10000 {
		// pglogrepl's options have no FAILOVER; the option list syntax is 15+.
		res, err = pglogrepl.ParseCreateReplicationSlot(conn.Exec(ctx,
			"CREATE_REPLICATION_SLOT "+slot+" LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER true)"))
	} else {
		res, err = pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	}
	if err != nil {
		return NewSlot{}, fmt.Errorf("create slot %s: %w", slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return NewSlot{}, fmt.Errorf("create slot %s: consistent point: %w", slot, err)
	}
	return NewSlot{ConsistentPoint: lsn, Snapshot: res.SnapshotName}, nil
}
