package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestResolve(t *testing.T) {
	t.Parallel()
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/challenge-stream/challenge-stream", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "d7bca51"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	devel := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}
	for _, tc := range []struct {
		name       string
		bi         *debug.BuildInfo
		ldVersion  string
		ldRevision string
		want       Info
	}{
		{"toolchain stamps", stamped, "", "", Info{"v1.4.0", "d7bca51-dirty", "go1.26.8"}},
		{"ldflags win", stamped, "v2.0.0", "abc", Info{"v2.0.0", "abc", "go1.26.8"}},
		{"development build", devel, "", "", Info{"dev", Unknown, "go1.26.8"}},
		{"no build info", nil, "", "", Info{"dev", Unknown, Unknown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, resolve(tc.bi, tc.ldVersion, tc.ldRevision))
		})
	}
}

func TestGet(t *testing.T) {
	t.Parallel()
	info := Get()
	require.Equal(t, runtime.Version(), info.GoVersion)
	require.NotEmpty(t, info.Version)
	require.NotEmpty(t, info.Revision)
	require.Equal(t, "challenge-stream v1 (revision r, go1.2)", Info{"v1", "r", "go1.2"}.String())
}
