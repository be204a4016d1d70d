// Package failpoint lets fault tests kill the process at a named point of the data path, so
// they can prove what survives a crash exactly there (for "after-flush-commit": the rewards
// and the LSN are stored, the confirm is not sent).
//
// Hit is a no-op in the shipped binary: the hook is compiled in only with the build tag
// `failpoints`, which internal/tools/testbin sets when it builds the binary for e2e and fault
// tests. With the tag, CHALLENGE_STREAM_FAILPOINT=name:N makes the Nth Hit(name) log
// "failpoint reached" to stderr and SIGKILL the process, and CHALLENGE_STREAM_CLOCK sets the
// clock Now reads (the shipped binary's Now is the wall clock).
package failpoint

// EnvVar names the environment variable that arms a failpoint in a `failpoints` build.
const EnvVar = "CHALLENGE_STREAM_FAILPOINT"
