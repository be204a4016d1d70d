// Package buildinfo tells which build of challenge-stream is running: its version, the VCS
// revision it was built from and the Go version that built it.
//
// The Go toolchain stamps the module version and the revision into every binary built from a
// checkout (runtime/debug.ReadBuildInfo). `make build` may override both with -ldflags, e.g.
//
//	go build -ldflags "-X github.com/challenge-stream/challenge-stream/internal/buildinfo.version=v1.2.3 \
//	  -X github.com/challenge-stream/challenge-stream/internal/buildinfo.revision=$(git rev-parse HEAD)"
//
// for builds from a source tarball, where there is no VCS information to stamp.
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Set by -ldflags -X at build time; the linker can only set package-level string variables,
// which is why these two exist. Nothing writes them at run time.
var (
	version  string
	revision string
)

// Unknown stands for a value the build did not record.
const Unknown = "unknown"

// Info describes the running build.
type Info struct {
	// Version is the release version (-ldflags), else the main module's version as the Go
	// toolchain recorded it, else "dev".
	Version string
	// Revision is the VCS revision (-ldflags), else vcs.revision with "-dirty" appended when
	// the tree had local changes, else Unknown.
	Revision string
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string
}

// String is the one line `challenge-stream --version` prints.
func (i Info) String() string {
	return fmt.Sprintf("challenge-stream %s (revision %s, %s)", i.Version, i.Revision, i.GoVersion)
}

// Get returns the running binary's build information.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(bi, version, revision)
}

// resolve combines what the toolchain recorded with what -ldflags set; bi may be nil (a
// binary built without module support).
func resolve(bi *debug.BuildInfo, ldVersion, ldRevision string) Info {
	info := Info{Version: ldVersion, Revision: ldRevision, GoVersion: Unknown}
	if bi != nil {
		info.GoVersion = bi.GoVersion
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Revision == "" {
			var rev string
			var dirty bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
			if rev != "" && dirty {
				rev += "-dirty"
			}
			info.Revision = rev
		}
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	if info.Revision == "" {
		info.Revision = Unknown
	}
	return info
}
