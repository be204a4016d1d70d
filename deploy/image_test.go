package deploy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// ociDescriptor, ociIndex, ociManifest and ociConfig are the parts of the OCI image layout
// (image-spec v1) the checks read.
type ociDescriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
}

type ociIndex struct {
	Manifests []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	Config ociDescriptor   `json:"config"`
	Layers []ociDescriptor `json:"layers"`
}

type ociConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		User         string              `json:"User"`
		Env          []string            `json:"Env"`
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
	} `json:"config"`
}

func readBlob(t *testing.T, dir string, d ociDescriptor) []byte {
	t.Helper()
	algo, hex, ok := strings.Cut(d.Digest, ":")
	require.True(t, ok, d.Digest)
	return readFile(t, filepath.Join(dir, "blobs", algo, hex))
}

// extractLayers applies the image's layers in order into root (regular files and directories
// are all a FROM scratch image has; whiteouts cannot occur without a base).
func extractLayers(t *testing.T, dir string, layers []ociDescriptor, root string) map[string]*tar.Header {
	t.Helper()
	headers := map[string]*tar.Header{}
	for _, l := range layers {
		var r io.Reader = bytes.NewReader(readBlob(t, dir, l))
		if strings.HasSuffix(l.MediaType, "+gzip") {
			gz, err := gzip.NewReader(r)
			require.NoError(t, err)
			r = gz
		}
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			name := path.Clean("/" + h.Name)
			headers[name] = h
			dst := filepath.Join(root, filepath.FromSlash(name))
			switch h.Typeflag {
			case tar.TypeDir:
				require.NoError(t, os.MkdirAll(dst, 0o755))
			case tar.TypeReg:
				require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
				f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&os.ModePerm)
				require.NoError(t, err)
				_, err = io.Copy(f, tr)
				require.NoError(t, err)
				require.NoError(t, f.Close())
			default:
				t.Fatalf("%s: unexpected tar entry type %c in a scratch image", name, h.Typeflag)
			}
		}
	}
	return headers
}

// TestImage checks the image `make image` wrote as an OCI layout (CHALLENGE_STREAM_IMAGE_OCI):
// non-root user 65532, ENTRYPOINT challenge-stream, CMD run, the metrics port exposed, no
// shell, and a static binary that answers --version with the version make stamped.
func TestImage(t *testing.T) {
	t.Parallel()
	dir := os.Getenv("CHALLENGE_STREAM_IMAGE_OCI")
	if dir == "" {
		t.Skip("CHALLENGE_STREAM_IMAGE_OCI is not set: `make test-deploy` builds the image and sets it")
	}
	var index ociIndex
	require.NoError(t, json.Unmarshal(readFile(t, filepath.Join(dir, "index.json")), &index))
	require.Len(t, index.Manifests, 1)
	var manifest ociManifest
	require.NoError(t, json.Unmarshal(readBlob(t, dir, index.Manifests[0]), &manifest))
	var cfg ociConfig
	require.NoError(t, json.Unmarshal(readBlob(t, dir, manifest.Config), &cfg))

	require.Equal(t, "linux", cfg.OS)
	require.Equal(t, "65532:65532", cfg.Config.User, "non-root, and not in group root")
	require.Equal(t, []string{"challenge-stream"}, cfg.Config.Entrypoint)
	require.Equal(t, []string{"run"}, cfg.Config.Cmd)
	require.Contains(t, cfg.Config.ExposedPorts, port(t, runFlags(t)["metrics-addr"].def)+"/tcp")

	var pathEnv string
	for _, e := range cfg.Config.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	require.NotEmpty(t, pathEnv, "ENTRYPOINT names the binary by PATH")

	root := t.TempDir()
	headers := extractLayers(t, dir, manifest.Layers, root)
	for name := range headers {
		base := path.Base(name)
		require.NotContains(t, []string{"sh", "bash", "ash", "busybox"}, base, "the image has a shell: %s", name)
	}

	var binPath string
	for _, d := range filepath.SplitList(pathEnv) {
		if h, ok := headers[path.Join(d, cfg.Config.Entrypoint[0])]; ok {
			binPath = path.Join(d, cfg.Config.Entrypoint[0])
			require.NotZero(t, h.Mode&0o001, "user 65532 (neither owner nor group) must be able to execute %s", binPath)
			break
		}
	}
	require.NotEmpty(t, binPath, "%s not found on PATH %s", cfg.Config.Entrypoint[0], pathEnv)
	require.Contains(t, headers, "/etc/ssl/certs/ca-certificates.crt", "CA roots for sslmode=verify-full")

	local := filepath.Join(root, filepath.FromSlash(binPath))
	f, err := elf.Open(local)
	require.NoError(t, err)
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "the binary is dynamically linked: the image has no libc")
	}
	require.NoError(t, f.Close())

	out, err := exec.Command(local, "--version").Output()
	require.NoError(t, err)
	line := strings.TrimSpace(string(out))
	require.True(t, strings.HasPrefix(line, "challenge-stream "), line)
	if v := os.Getenv("CHALLENGE_STREAM_VERSION"); v != "" {
		require.True(t, strings.HasPrefix(line, "challenge-stream "+v+" "), "%q does not carry version %s", line, v)
	}
	require.NotContains(t, line, "revision unknown", "make image stamps the revision")

	runReadOnly(t, root, cfg)
}

// runReadOnly runs the image's ENTRYPOINT and CMD as its USER on its root filesystem mounted
// read-only (a private mount namespace and chroot: what a runtime with readOnlyRootFilesystem
// does, without one) against an unreachable database, and checks that it serves its probes and
// exits 0 on SIGTERM. It needs root, unshare and chroot; it skips without them.
func runReadOnly(t *testing.T, root string, cfg ociConfig) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Log("not root: skipping the read-only run")
		return
	}
	// The environment is the image's (PATH=/usr/local/bin), so the host's tools go by path.
	tools := map[string]string{}
	for _, tool := range []string{"unshare", "sh", "mount", "touch", "chroot"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Logf("no %s: skipping the read-only run", tool)
			return
		}
		tools[tool] = p
	}
	addr := freeAddr(t)
	argv := append(append([]string{}, cfg.Config.Entrypoint...), cfg.Config.Cmd...)
	script := `set -e; ` + tools["mount"] + ` --bind "$ROOT" "$ROOT"; ` + tools["mount"] + ` -o remount,ro,bind "$ROOT"; ` +
		`if ` + tools["touch"] + ` "$ROOT/probe" 2>/dev/null; then echo "root filesystem is writable" >&2; exit 3; fi; ` +
		`exec ` + tools["chroot"] + ` --userspec="$IMAGE_USER" "$ROOT" "$@"`
	cmd := exec.Command(tools["unshare"], append([]string{"-m", tools["sh"], "-c", script, "sh"}, argv...)...)
	cmd.Env = append(append([]string{}, cfg.Config.Env...),
		"ROOT="+root, "IMAGE_USER="+cfg.Config.User,
		"DATABASE_URL=postgres://cs@127.0.0.1:1/db", "CHALLENGE_STREAM_METRICS_ADDR="+addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("image output:\n%s", out.String())
		}
	})

	bin := liveBinary{addr: addr}
	deadline := time.Now().Add(30 * time.Second)
	for bin.status(t, "/livez") != http.StatusOK {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the image exited: %v", err)
		default:
		}
		require.True(t, time.Now().Before(deadline), "the image never served /livez")
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, http.StatusServiceUnavailable, bin.status(t, "/readyz"), "no database: never reached a role")
	require.Contains(t, bin.get(t, "/metrics"), "challenge_stream_build_info")
	// unshare, sh and chroot each exec the next: the process is the binary itself.
	status := string(readFile(t, fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)))
	require.Regexp(t, `(?m)^Uid:\s+65532\s`, status, "runs as the image's user")
	require.Contains(t, string(readFile(t, fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))), "challenge-stream")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		done <- err
		require.NoError(t, err, "exit status after SIGTERM")
	case <-time.After(30 * time.Second):
		t.Fatal("the image did not stop on SIGTERM")
	}
	require.Regexp(t, `"msg":"starting","version":"[^"]+","revision":"[^"]+","go_version":"go[^"]+"`, out.String(),
		"the start line names the build")
}
