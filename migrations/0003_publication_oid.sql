-- The publication (pg_publication.oid) each stored position was streamed through, written with
-- the position (see package checkpoints). A publication dropped, or dropped and recreated, after
-- it leaves a slot whose changes since were decoded without it: Postgres 18 skips them with a
-- warning, older servers fail on them. A different oid, or none, says so. NULL on rows written
-- before this column existed: the next flush adopts the publication it finds.
ALTER TABLE challenge_stream.slot_checkpoints ADD COLUMN publication_oid oid;
