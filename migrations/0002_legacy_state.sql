-- challenge-stream's view of the legacy checkpoints in the host's indexing_checkpoints (see
-- package checkpoints), one row per checkpoint name:
--   last_written  the value the row had right after challenge-stream last wrote it. A flush that
--                 finds the host row elsewhere knows someone else wrote it: the polling job is
--                 still running.
--   held_since    set while the rules the checkpoint belongs to are inactive: like the polling
--                 job, challenge-stream then leaves the checkpoint where it was, and derives the
--                 gap from there when the rules are active again. NULL while active.
CREATE TABLE challenge_stream.legacy_checkpoints (
    tablename    text PRIMARY KEY,
    last_written bigint,
    held_since   timestamptz
);
