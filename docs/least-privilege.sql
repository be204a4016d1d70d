-- A least-privilege role for challenge-stream.
--
-- Run this once as a superuser or as the owner of the host tables, connected to the host
-- database, statement by statement (psql does that: psql -d <host database> -f least-privilege.sql).
-- The CREATE INDEX CONCURRENTLY statements refuse to run inside a transaction block, so do not
-- wrap the file in BEGIN/COMMIT or run it with psql --single-transaction.
--
-- It does three things:
--   1. creates the login role the sidecar connects as;
--   2. grants it what it reads and writes, and CREATE on the database so that on its first
--      start it creates, and owns, its own schema challenge_stream;
--   3. creates what only a table owner may create: the publication and the two indexes on
--      comments that the sidecar's queries need.
--
-- The role is called challenge_stream_sidecar; to use another name, replace it throughout.
-- Afterwards, give it a password (psql: \password challenge_stream_sidecar) and allow it in
-- pg_hba.conf. Its replication connection asks for the host database by name
-- (replication=database), so it matches pg_hba.conf lines for that database, not lines whose
-- database field is the keyword `replication`.
--
-- Start the sidecar with the default publication name (challenge_stream), or pass the name
-- used below to --publication.

-- 1. The role. REPLICATION lets it create its slot, stream from it and drop it; it grants no
-- access to any table's rows.
CREATE ROLE challenge_stream_sidecar LOGIN REPLICATION;

-- 2. Grants.
-- CONNECT (and USAGE on schema public, below) are held by PUBLIC on a default install; they
-- are granted explicitly for hosts that revoked them. CREATE on the database is for the
-- sidecar's own schema, challenge_stream, which holds the stored LSN and its migration history.
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO challenge_stream_sidecar', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO challenge_stream_sidecar;

-- The sources: the catch-up scans plays and comments; the rules read the rest.
GRANT SELECT ON public.plays, public.comments, public.tracks, public.users,
    public.aggregate_monthly_plays, public.challenges,
    public.reposts, public.saves, public.track_trending_scores, public.events, public.playlists,
    public.user_events, public.sol_purchases, public.v_usdc_purchases, public.remixes, public.follows,
    public.playlist_trending_scores, public.aggregate_user
    TO challenge_stream_sidecar;

-- The rewards and the legacy checkpoints. SELECT as well: the upserts (INSERT … ON CONFLICT DO
-- UPDATE) read the stored row, and the start-up reads the checkpoints. No DELETE.
GRANT SELECT, INSERT, UPDATE ON public.user_challenges, public.indexing_checkpoints
    TO challenge_stream_sidecar;
-- The state of the listen streak (e) and the profile completion (p): read and written in the
-- flush with the rows.
GRANT SELECT, INSERT, UPDATE ON public.challenge_listen_streak, public.challenge_profile_completion
    TO challenge_stream_sidecar;
-- The weekly trending payouts' record of paid weeks (tt, tut, tp).
GRANT SELECT, INSERT ON public.trending_results TO challenge_stream_sidecar;

-- The host's trigger on user_challenges (on_user_challenge) runs with the rights of whoever
-- writes the row, and it inserts a notification for every completed row. If your host's
-- triggers on user_challenges write other tables, grant those instead.
GRANT INSERT ON public.notification TO challenge_stream_sidecar;
GRANT USAGE ON SEQUENCE public.notification_id_seq TO challenge_stream_sidecar;

-- 3. What only the owner of the source tables can create.
-- The publication: every table a registered rule reads from the stream (README: Rules),
-- inserts and updates only (comments are edited and soft-deleted in place; deletes of plays by
-- the pruning job are not wanted), each with a column list of what the rules read plus its
-- primary key (the replica identity: without it the host's own UPDATEs on the table would
-- fail). The comment lets the sidecar check it stays exact; when an upgrade registers a rule
-- that reads more, the sidecar stops and names the ALTER PUBLICATION statement to run here.
-- (Postgres 14 has no column lists: drop the parenthesised lists.) `challenge-stream status`
-- shows what the publication carries against what the rules need.
CREATE PUBLICATION challenge_stream FOR TABLE
    public.plays (id, play_item_id),
    public.comments (comment_id, user_id, entity_id, blocknumber),
    public.users (user_id, txhash, blocknumber),
    public.tracks (track_id, txhash, owner_id, blocknumber),
    public.reposts (user_id, repost_item_id, repost_type, txhash, blocknumber),
    public.saves (user_id, save_item_id, save_type, txhash, blocknumber),
    public.track_trending_scores (track_id, type, version, time_range),
    public.events (event_id),
    public.playlists (playlist_id, txhash, playlist_owner_id, blocknumber),
    public.user_events (id, user_id, blocknumber),
    public.sol_purchases (signature, instruction_index, slot),
    public.follows (follower_user_id, followee_user_id, txhash, blocknumber)
    WITH (publish = 'insert, update');
COMMENT ON PUBLICATION challenge_stream IS 'managed by challenge-stream';

-- The sidecar looks comments up by user_id (weekly-comment rule) and ranges over blocknumber
-- (catch-up). It would create these itself at start if it owned comments; it does not, so the
-- owner builds them here, without blocking the host's writes. An existing valid btree index
-- leading with the same column, under any name, serves as well.
CREATE INDEX CONCURRENTLY IF NOT EXISTS comments_user_id_idx ON public.comments (user_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS comments_blocknumber_idx ON public.comments (blocknumber);
