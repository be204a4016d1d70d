-- challenge-stream's own state. Everything the sidecar owns lives in this schema; of the host's
-- tables it only writes user_challenges and indexing_checkpoints, through their existing columns.
CREATE SCHEMA IF NOT EXISTS challenge_stream;

-- One row per replication slot: the end LSN of the last replicated transaction whose effects are
-- committed, written in the same transaction as those effects (see package checkpoints).
-- updated_at is the time of the last flush, shown by `challenge-stream status`.
CREATE TABLE challenge_stream.slot_checkpoints (
    slot_name  text PRIMARY KEY,
    lsn        pg_lsn NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
