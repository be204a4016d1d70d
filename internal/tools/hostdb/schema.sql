-- The host database of SPEC §2, as far as challenge-stream touches it. The real tables have many
-- more columns; the extra columns here (and their order) make sure nothing depends on column
-- positions.

CREATE TYPE challengetype AS ENUM ('boolean', 'numeric', 'aggregate', 'trending');

CREATE TABLE users (
    blockhash      varchar,
    user_id        integer NOT NULL,
    handle         varchar,
    handle_lc      varchar,
    wallet         varchar,
    name           text,
    bio            varchar,
    profile_picture       varchar,
    profile_picture_sizes varchar,
    cover_photo           varchar,
    cover_photo_sizes     varchar,
    is_current     boolean NOT NULL,
    is_verified    boolean NOT NULL DEFAULT false,
    is_deactivated boolean NOT NULL DEFAULT false,
    blocknumber    integer,
    created_at     timestamp NOT NULL DEFAULT now(),
    updated_at     timestamp NOT NULL DEFAULT now(),
    txhash         varchar NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, txhash)
);

-- Follows are versioned like reposts (p reads the follower's count).
CREATE TABLE follows (
    blockhash        varchar,
    blocknumber      integer,
    follower_user_id integer NOT NULL,
    followee_user_id integer NOT NULL,
    is_current       boolean NOT NULL,
    is_delete        boolean NOT NULL,
    created_at       timestamp NOT NULL DEFAULT now(),
    txhash           varchar NOT NULL DEFAULT '',
    slot             integer,
    PRIMARY KEY (follower_user_id, followee_user_id, txhash)
);
CREATE INDEX follows_blocknumber_idx ON follows (blocknumber);
CREATE INDEX users_blocknumber_idx ON users (blocknumber);

-- The profile completion's seven steps per user (p), derived from the profile and its activity.
CREATE TABLE challenge_profile_completion (
    user_id             integer PRIMARY KEY,
    profile_description boolean NOT NULL,
    profile_name        boolean NOT NULL,
    profile_picture     boolean NOT NULL,
    profile_cover_photo boolean NOT NULL,
    follows             boolean NOT NULL,
    reposts             boolean NOT NULL,
    favorites           boolean NOT NULL
);

CREATE TABLE tracks (
    blockhash   varchar,
    title       text,
    track_id    integer NOT NULL,
    genre       varchar,
    is_current  boolean NOT NULL,
    is_delete   boolean NOT NULL,
    owner_id    integer NOT NULL,
    pinned_comment_id integer,
    is_unlisted boolean NOT NULL DEFAULT false,
    is_available boolean NOT NULL DEFAULT true,
    stem_of     jsonb,
    blocknumber integer,
    created_at  timestamp NOT NULL DEFAULT now(),
    updated_at  timestamp NOT NULL DEFAULT now(),
    txhash      varchar NOT NULL DEFAULT '',
    PRIMARY KEY (track_id, txhash)
);
CREATE INDEX tracks_owner_id_idx ON tracks (owner_id);
CREATE INDEX tracks_blocknumber_idx ON tracks (blocknumber);

-- Playlists and albums, versioned like tracks (first playlist, fp).
CREATE TABLE playlists (
    blockhash         varchar,
    blocknumber       integer,
    playlist_id       integer NOT NULL,
    playlist_owner_id integer NOT NULL,
    is_album          boolean NOT NULL DEFAULT false,
    is_private        boolean NOT NULL DEFAULT false,
    playlist_name     varchar,
    is_current        boolean NOT NULL,
    is_delete         boolean NOT NULL,
    created_at        timestamp NOT NULL DEFAULT now(),
    updated_at        timestamp NOT NULL DEFAULT now(),
    txhash            varchar NOT NULL DEFAULT '',
    PRIMARY KEY (playlist_id, txhash)
);
CREATE INDEX playlists_owner_idx ON playlists (playlist_owner_id);
CREATE INDEX playlists_blocknumber_idx ON playlists (blocknumber);

-- The mobile flag and the referrer of a profile (m, r, rv, rd), versioned like users.
CREATE TABLE user_events (
    id             serial PRIMARY KEY,
    blockhash      varchar,
    blocknumber    integer,
    is_current     boolean NOT NULL,
    user_id        integer NOT NULL,
    referrer       integer,
    is_mobile_user boolean NOT NULL DEFAULT false,
    slot           integer
);
CREATE INDEX user_events_user_id_idx ON user_events (user_id);
CREATE INDEX user_events_blocknumber_idx ON user_events (blocknumber);

-- USDC purchases (b, s): the indexer inserts a purchase and sets is_valid once the content's
-- price is indexed; v_usdc_purchases is the host's view of the valid ones, with the content's
-- current owner as seller (the production view carries more columns).
CREATE TABLE sol_purchases (
    signature         varchar NOT NULL,
    instruction_index integer NOT NULL,
    amount            bigint NOT NULL,
    slot              bigint NOT NULL,
    content_type      varchar NOT NULL,
    content_id        integer NOT NULL,
    buyer_user_id     integer NOT NULL,
    is_valid          boolean,
    created_at        timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (signature, instruction_index)
);
CREATE INDEX sol_purchases_slot_idx ON sol_purchases (slot);
CREATE VIEW v_usdc_purchases AS
SELECT sp.signature, sp.slot, sp.buyer_user_id,
       CASE sp.content_type WHEN 'track' THEN t.owner_id ELSE p.playlist_owner_id END AS seller_user_id,
       sp.amount, sp.content_type, sp.content_id, sp.created_at
FROM sol_purchases sp
LEFT JOIN tracks t ON sp.content_type = 'track' AND t.track_id = sp.content_id AND t.is_current = true
LEFT JOIN playlists p ON sp.content_type IN ('album', 'playlist') AND p.playlist_id = sp.content_id
    AND p.is_current = true
WHERE sp.is_valid IS TRUE;

-- Reposts and saves are versioned like tracks: a repost and its undo are rows with is_current
-- moving to the latest.
CREATE TYPE reposttype AS ENUM ('track', 'playlist', 'album');
CREATE TYPE savetype AS ENUM ('track', 'playlist', 'album');

CREATE TABLE reposts (
    blockhash           varchar,
    blocknumber         integer,
    user_id             integer NOT NULL,
    repost_item_id      integer NOT NULL,
    repost_type         reposttype NOT NULL,
    is_current          boolean NOT NULL,
    is_delete           boolean NOT NULL,
    created_at          timestamp NOT NULL,
    txhash              varchar NOT NULL DEFAULT '',
    slot                integer,
    is_repost_of_repost boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, repost_item_id, repost_type, txhash)
);
CREATE INDEX repost_item_id_idx ON reposts (repost_item_id, repost_type);

CREATE TABLE saves (
    blockhash         varchar,
    blocknumber       integer,
    user_id           integer NOT NULL,
    save_item_id      integer NOT NULL,
    save_type         savetype NOT NULL,
    is_current        boolean NOT NULL,
    is_delete         boolean NOT NULL,
    created_at        timestamp NOT NULL,
    txhash            varchar NOT NULL DEFAULT '',
    slot              integer,
    is_save_of_repost boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, save_item_id, save_type, txhash)
);
CREATE INDEX save_item_id_idx ON saves (save_item_id, save_type);
CREATE INDEX reposts_blocknumber_idx ON reposts (blocknumber);
CREATE INDEX saves_blocknumber_idx ON saves (blocknumber);

-- A remix's parent tracks (cs).
CREATE TABLE remixes (
    parent_track_id integer NOT NULL,
    child_track_id  integer NOT NULL,
    PRIMARY KEY (parent_track_id, child_track_id)
);

-- Written by the platform's trending job: hourly upserts guarded by score IS DISTINCT, and
-- deletes of dropped rows.
-- The playlists' ranking and the follower counts the weekly payouts read (tt, tut, tp), and
-- their record of paid weeks.
CREATE TABLE playlist_trending_scores (
    playlist_id integer NOT NULL,
    type        varchar NOT NULL,
    version     varchar NOT NULL,
    time_range  varchar NOT NULL,
    score       double precision NOT NULL,
    created_at  timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (playlist_id, type, version, time_range)
);
CREATE TABLE aggregate_user (
    user_id         integer PRIMARY KEY,
    follower_count  bigint NOT NULL DEFAULT 0,
    following_count bigint NOT NULL DEFAULT 0
);
CREATE TABLE trending_results (
    user_id integer NOT NULL,
    id      varchar,
    rank    integer NOT NULL,
    type    varchar NOT NULL,
    version varchar NOT NULL,
    week    date NOT NULL,
    PRIMARY KEY (rank, type, version, week)
);

CREATE TABLE track_trending_scores (
    track_id   integer NOT NULL,
    type       varchar NOT NULL,
    genre      varchar,
    version    varchar NOT NULL,
    time_range varchar NOT NULL,
    score      double precision NOT NULL,
    created_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (track_id, type, version, time_range)
);
CREATE INDEX track_trending_scores_ranking_idx
    ON track_trending_scores (type, version, time_range, score DESC);

CREATE TYPE event_type AS ENUM ('remix_contest', 'live_event', 'new_release');
CREATE TYPE event_entity_type AS ENUM ('track', 'collection', 'user');

CREATE TABLE events (
    event_id    integer PRIMARY KEY,
    event_type  event_type NOT NULL,
    user_id     integer NOT NULL,
    entity_type event_entity_type,
    entity_id   integer,
    end_date    timestamp,
    is_deleted  boolean NOT NULL DEFAULT false,
    event_data  jsonb,
    created_at  timestamp NOT NULL DEFAULT now(),
    updated_at  timestamp NOT NULL DEFAULT now(),
    txhash      text NOT NULL DEFAULT '',
    blockhash   text NOT NULL DEFAULT '',
    blocknumber integer
);
CREATE INDEX events_user_id_idx ON events (user_id);

-- Column order deliberately differs from the SPEC's listing.
CREATE TABLE plays (
    created_at   timestamp NOT NULL DEFAULT now(),
    id           serial PRIMARY KEY,
    source       varchar,
    user_id      integer,
    slot         integer,
    play_item_id integer NOT NULL,
    updated_at   timestamp NOT NULL DEFAULT now(),
    city         varchar,
    region       varchar,
    country      varchar,
    signature    varchar
);
CREATE INDEX plays_item_idx ON plays (play_item_id);

-- The listen streak's state (e), one row per user with a counted listen.
CREATE TABLE challenge_listen_streak (
    user_id          integer PRIMARY KEY,
    last_listen_date timestamp,
    listen_streak    integer NOT NULL
);

CREATE TABLE aggregate_plays (
    play_item_id integer PRIMARY KEY,
    count        bigint NOT NULL
);

CREATE TABLE aggregate_monthly_plays (
    play_item_id integer NOT NULL,
    "timestamp"  date NOT NULL,
    count        integer NOT NULL,
    country      text NOT NULL DEFAULT '',
    PRIMARY KEY (play_item_id, "timestamp", country)
);

-- The host's trigger: keeps the aggregates in the same transaction as the play.
CREATE FUNCTION on_play() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO aggregate_plays (play_item_id, count) VALUES (NEW.play_item_id, 1)
    ON CONFLICT (play_item_id) DO UPDATE SET count = aggregate_plays.count + 1;
    INSERT INTO aggregate_monthly_plays (play_item_id, "timestamp", country, count)
    VALUES (NEW.play_item_id, date_trunc('month', NEW.created_at)::date, coalesce(NEW.country, ''), 1)
    ON CONFLICT (play_item_id, "timestamp", country)
    DO UPDATE SET count = aggregate_monthly_plays.count + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER on_play AFTER INSERT ON plays FOR EACH ROW EXECUTE FUNCTION on_play();

CREATE TABLE comments (
    comment_id        integer PRIMARY KEY,
    text              text NOT NULL,
    user_id           integer NOT NULL,
    entity_id         integer NOT NULL,
    entity_type       text NOT NULL,
    track_timestamp_s integer,
    created_at        timestamp NOT NULL DEFAULT now(),
    updated_at        timestamp NOT NULL DEFAULT now(),
    is_delete         boolean NOT NULL DEFAULT false,
    is_visible        boolean NOT NULL DEFAULT true,
    is_edited         boolean NOT NULL DEFAULT false,
    is_members_only   boolean NOT NULL DEFAULT false,
    txhash            text NOT NULL DEFAULT '',
    blockhash         text NOT NULL DEFAULT '',
    blocknumber       integer
);

CREATE TABLE challenges (
    id             varchar PRIMARY KEY,
    type           challengetype NOT NULL,
    amount         varchar NOT NULL,
    active         boolean NOT NULL,
    step_count     integer,
    starting_block integer,
    weekly_pool    integer,
    cooldown_days  integer
);

INSERT INTO challenges (id, type, amount, active, step_count, cooldown_days) VALUES
    ('p1', 'numeric', '25', true, 250, 7),
    ('p2', 'numeric', '100', true, 1000, 7),
    ('p3', 'numeric', '1000', true, 10000, 7),
    ('c', 'aggregate', '1', true, 2147483647, 7);

-- The full-rescan rules the sidecar also streams (RULES.md). They start inactive here so the
-- tests of p and c see only p and c rows; hostdb.ActivateRules switches them on.
INSERT INTO challenges (id, type, amount, active, step_count, cooldown_days) VALUES
    ('v', 'boolean', '5', false, 1, 7),
    ('t', 'boolean', '100', false, 1, 7),
    ('cp', 'boolean', '100', false, 1, 7),
    ('w', 'boolean', '1000', false, 1, 7);

-- The rest of the loop's incremental rules (RULES.md), inactive like the ones above.
INSERT INTO challenges (id, type, amount, active, step_count, starting_block, cooldown_days) VALUES
    ('u', 'numeric', '1', false, 3, 0, 7),
    ('fp', 'boolean', '2', false, 1, 0, 7),
    ('m', 'boolean', '1', false, 1, NULL, 7),
    ('r', 'boolean', '1', false, 1, NULL, 7),
    ('rv', 'boolean', '1', false, 1, NULL, 7),
    ('rd', 'boolean', '1', false, 1, NULL, 7),
    ('b', 'boolean', '1', false, 1, NULL, 7),
    ('s', 'boolean', '5', false, 1, NULL, 7),
    ('e', 'numeric', '1', false, 7, NULL, 0),
    ('cs', 'boolean', '1', false, 1, NULL, 7),
    ('p', 'numeric', '1', false, 7, NULL, 7),
    ('tt', 'trending', '1000', false, 1, NULL, 0),
    ('tut', 'trending', '1000', false, 1, NULL, 0),
    ('tp', 'trending', '100', false, 1, NULL, 0);

CREATE TABLE user_challenges (
    challenge_id          varchar NOT NULL REFERENCES challenges (id),
    user_id               integer NOT NULL,
    specifier             varchar NOT NULL,
    is_complete           boolean NOT NULL,
    current_step_count    integer,
    completed_blocknumber integer,
    amount                integer NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    completed_at          timestamp,
    PRIMARY KEY (challenge_id, specifier)
);

CREATE TABLE notification (
    id         serial PRIMARY KEY,
    user_id    integer NOT NULL,
    specifier  varchar NOT NULL,
    type       varchar NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The host's trigger: every write of a complete row costs a notification insert, which is why
-- the sidecar skips upserts that would not change the row.
CREATE FUNCTION on_user_challenge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_complete THEN
        INSERT INTO notification (user_id, specifier, type)
        VALUES (NEW.user_id, NEW.specifier, 'challenge_reward');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER on_user_challenge AFTER INSERT OR UPDATE ON user_challenges
    FOR EACH ROW EXECUTE FUNCTION on_user_challenge();

CREATE TABLE indexing_checkpoints (
    tablename       varchar PRIMARY KEY,
    last_checkpoint integer NOT NULL,
    signature       varchar
);
