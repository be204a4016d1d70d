package deploy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/challenge-stream/challenge-stream/pipeline"
)

// composeFile is the part of the Compose specification the example uses. Decoding is strict:
// a key this test does not know fails, so add it here when the example grows.
type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
	} `json:"build"`
	Command         []string          `json:"command"`
	DependsOn       map[string]any    `json:"depends_on"`
	Environment     map[string]string `json:"environment"`
	Ports           []string          `json:"ports"`
	Healthcheck     map[string]any    `json:"healthcheck"`
	Volumes         []string          `json:"volumes"`
	ReadOnly        bool              `json:"read_only"`
	User            string            `json:"user"`
	CapDrop         []string          `json:"cap_drop"`
	SecurityOpt     []string          `json:"security_opt"`
	StopGracePeriod string            `json:"stop_grace_period"`
	Restart         string            `json:"restart"`
}

func TestComposeFile(t *testing.T) {
	t.Parallel()
	const file = "compose/docker-compose.yml"
	var c composeFile
	require.NoError(t, yaml.UnmarshalStrict(readFile(t, file), &c))
	s, ok := c.Services[containerName]
	require.True(t, ok, "no %s service", containerName)
	require.Contains(t, c.Services, "postgres")
	require.Greater(t, len(c.Services), 2, "the sidecar sits beside a host API")

	require.Equal(t, []string{"run"}, s.Command)
	flags := runFlags(t)
	envs := envNames(t)
	metricsAddr := flags["metrics-addr"].def
	for name, value := range s.Environment {
		require.True(t, envs[name] || goRuntimeEnv[name], "env %s is read by neither run nor the Go runtime", name)
		if name == flags["metrics-addr"].env {
			metricsAddr = value
		}
	}
	require.Contains(t, s.Environment, flags["database-url"].env)
	require.Len(t, s.Ports, 1)
	require.Equal(t, "127.0.0.1:"+port(t, metricsAddr)+":"+port(t, metricsAddr), s.Ports[0])

	require.True(t, s.ReadOnly, "the image needs no writable path")
	require.Equal(t, "65532:65532", s.User)
	require.Equal(t, []string{"ALL"}, s.CapDrop)
	grace, err := time.ParseDuration(s.StopGracePeriod)
	require.NoError(t, err)
	require.GreaterOrEqual(t, grace, pipeline.DefaultShutdownTimeout+opsDrain)

	// The build section points at the Dockerfile and at the context `make image-context` fills.
	require.NotNil(t, s.Build)
	ctxDir := filepath.Join(filepath.Dir(file), s.Build.Context)
	require.Equal(t, filepath.Join("..", "bin", "image"), filepath.Clean(ctxDir))
	_, err = os.Stat(filepath.Clean(filepath.Join(ctxDir, s.Build.Dockerfile)))
	require.NoError(t, err, "the Dockerfile, relative to the build context")
	require.Equal(t, filepath.Join("..", "Dockerfile"), filepath.Clean(filepath.Join(ctxDir, s.Build.Dockerfile)))
}
