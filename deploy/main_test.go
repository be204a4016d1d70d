// Package deploy's tests check the deployment files against the product: every manifest
// decodes strictly into the Kubernetes API types, its probe paths, ports, flags and environment
// variables are the real binary's, every metric the alerts and the dashboard name is one the
// binary registers, and the image `make image` built is what the manifests expect.
//
// This is a module of its own so that the product's go.mod stays free of the Kubernetes API.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// binary is the challenge-stream binary built by TestMain from this checkout.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "challenge-stream-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "challenge-stream")
	// Built in the product's own module, with its go.mod and go.sum, as `make build` does.
	build := exec.Command("go", "build", "-o", binary, "./cmd/challenge-stream")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build challenge-stream:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// runFlag is one flag of `challenge-stream run`, as its -h prints it.
type runFlag struct {
	name, env, def string
}

// runFlags parses `challenge-stream run -h`: the flags, their environment variables and
// defaults, so that renaming any of them breaks these tests.
func runFlags(t *testing.T) map[string]runFlag {
	t.Helper()
	out, err := exec.Command(binary, "run", "-h").CombinedOutput()
	require.NoError(t, err, "%s", out)
	flagLine := regexp.MustCompile(`^  -([a-z0-9-]+)`)
	envRef := regexp.MustCompile(`\[\$([A-Z0-9_]+)\]`)
	defVal := regexp.MustCompile(`\(default "?([^")]*)"?\)$`)
	flags := map[string]runFlag{}
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := flagLine.FindStringSubmatch(line); m != nil {
			cur = m[1]
			flags[cur] = runFlag{name: cur}
			continue
		}
		f := flags[cur]
		if m := envRef.FindStringSubmatch(line); m != nil {
			f.env = m[1]
		}
		if m := defVal.FindStringSubmatch(line); m != nil {
			f.def = m[1]
		}
		flags[cur] = f
	}
	require.Contains(t, flags, "metrics-addr", "run -h output changed shape:\n%s", out)
	require.Contains(t, flags, "database-url")
	return flags
}

// envNames are the environment variables `run` reads, by name.
func envNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, f := range runFlags(t) {
		if f.env != "" {
			names[f.env] = true
		}
	}
	return names
}

// goRuntimeEnv are variables the Go runtime reads; manifests may set them too.
var goRuntimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GOGC": true}

// liveBinary is a running `challenge-stream run` against an unreachable database: it serves
// /metrics and the probes while its pipeline retries.
type liveBinary struct{ addr string }

// freeAddr is a localhost address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func startBinary(t *testing.T) liveBinary {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, binary, "run", "--database-url", "postgres://cs@127.0.0.1:1/db",
		"--metrics-addr", addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("challenge-stream output:\n%s", out.String())
		}
	})
	b := liveBinary{addr: addr}
	deadline := time.Now().Add(30 * time.Second)
	for b.status(t, "/livez") == 0 {
		require.True(t, time.Now().Before(deadline), "the binary never served /livez")
		time.Sleep(20 * time.Millisecond)
	}
	return b
}

var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

// status is the answer's status code, 0 when nothing answers.
func (b liveBinary) status(t *testing.T, path string) int {
	t.Helper()
	resp, err := client.Get("http://" + b.addr + path)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

func (b liveBinary) get(t *testing.T, path string) string {
	t.Helper()
	resp, err := client.Get("http://" + b.addr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, path)
	return string(body)
}

// port is the port of a host:port listen address.
func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err, addr)
	return p
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// splitYAML splits a multi-document YAML file.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(s, "")
}

// splitHostPort is net.SplitHostPort for an address the binary accepts.
func splitHostPort(addr string) (host, port string, err error) { return net.SplitHostPort(addr) }
