package pipeline

// LeaderLockKey is the text whose hashtextextended(key, 0) is the session advisory lock held by
// the replica that streams from slot. Other commands (teardown) take it to make sure no sidecar
// is running on the slot.
func LeaderLockKey(slot string) string { return "challenge-stream:" + slot }
