package deploy

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/challenge-stream/challenge-stream/pipeline"
)

const (
	containerName = "challenge-stream"
	imageUser     = 65532 // USER in the Dockerfile
	// opsDrain is how long `run` waits for in-flight scrapes after the final flush
	// (opsShutdownTimeout in cmd/challenge-stream).
	opsDrain = 5 * time.Second
)

// manifests is one file's objects, decoded strictly.
type manifests struct {
	deployments []*appsv1.Deployment
	pdbs        []*policyv1.PodDisruptionBudget
	podMonitors []*monitoringv1.PodMonitor
}

// decode decodes every document of a manifest file into its API type; an unknown kind or an
// unknown field anywhere fails.
func decode(t *testing.T, path string) manifests {
	t.Helper()
	var m manifests
	for i, doc := range splitYAML(readFile(t, path)) {
		var tm metav1.TypeMeta
		require.NoError(t, yaml.Unmarshal(doc, &tm), "%s document %d", path, i)
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			d := &appsv1.Deployment{}
			m.deployments, obj = append(m.deployments, d), d
		case "policy/v1 PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			m.pdbs, obj = append(m.pdbs, p), p
		case "monitoring.coreos.com/v1 PodMonitor":
			p := &monitoringv1.PodMonitor{}
			m.podMonitors, obj = append(m.podMonitors, p), p
		default:
			t.Fatalf("%s document %d: unexpected %s %s", path, i, tm.APIVersion, tm.Kind)
		}
		require.NoError(t, yaml.UnmarshalStrict(doc, obj), "%s document %d", path, i)
	}
	return m
}

// ourContainer is the challenge-stream container of a pod template.
func ourContainer(t *testing.T, spec corev1.PodSpec) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == containerName {
			return c
		}
	}
	t.Fatalf("no container named %s", containerName)
	return corev1.Container{}
}

// checkContainer checks our container against the real binary: command, flags, environment
// names, the listen port, the probe routes, and the security settings the image needs.
func checkContainer(t *testing.T, bin liveBinary, spec corev1.PodSpec) {
	t.Helper()
	c := ourContainer(t, spec)
	flags := runFlags(t)
	envs := envNames(t)

	require.NotEmpty(t, c.Args)
	require.Equal(t, "run", c.Args[0], "the image's ENTRYPOINT is the binary; args start with the command")
	for _, a := range c.Args[1:] {
		name := a
		for len(name) > 0 && name[0] == '-' {
			name = name[1:]
		}
		if i := strings.IndexByte(name, '='); i >= 0 {
			name = name[:i]
		}
		require.Contains(t, flags, name, "argument %q is no flag of run", a)
	}

	metricsAddr := flags["metrics-addr"].def
	var dbURL *corev1.EnvVar
	for i, e := range c.Env {
		require.True(t, envs[e.Name] || goRuntimeEnv[e.Name], "env %s is read by neither run nor the Go runtime", e.Name)
		if e.Name == flags["metrics-addr"].env {
			metricsAddr = e.Value
		}
		if e.Name == flags["database-url"].env {
			dbURL = &c.Env[i]
		}
	}
	require.NotNil(t, dbURL, "%s must be set", flags["database-url"].env)
	require.Empty(t, dbURL.Value, "the database URL carries a password: take it from a Secret")
	require.NotNil(t, dbURL.ValueFrom)
	require.NotNil(t, dbURL.ValueFrom.SecretKeyRef)

	// The listener must take the pod IP, and the named port must be its port.
	host, _, _ := splitHostPort(metricsAddr)
	require.NotContains(t, []string{"127.0.0.1", "localhost", "::1"}, host, "the kubelet probes the pod IP, not localhost")
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	resolve := func(p corev1.HTTPGetAction) string {
		if p.Port.StrVal != "" {
			n, ok := ports[p.Port.StrVal]
			require.True(t, ok, "probe port %q is not a named port of the container", p.Port.StrVal)
			return strconv.Itoa(int(n))
		}
		return strconv.Itoa(p.Port.IntValue())
	}
	for name, probe := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		require.NotNil(t, probe, name)
		require.NotNil(t, probe.HTTPGet, name)
		require.Equal(t, port(t, metricsAddr), resolve(*probe.HTTPGet), "%s probe port", name)
	}
	// The routes are the binary's: liveness answers 200 while the pipeline retries, readiness
	// is a real route (503 until the pipeline reaches a role), never a 404.
	require.Equal(t, http.StatusOK, bin.status(t, c.LivenessProbe.HTTPGet.Path), "liveness path")
	require.Contains(t, []int{http.StatusOK, http.StatusServiceUnavailable}, bin.status(t, c.ReadinessProbe.HTTPGet.Path), "readiness path")
	require.NotEqual(t, c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)

	sc := c.SecurityContext
	require.NotNil(t, sc)
	require.True(t, *sc.RunAsNonRoot)
	require.EqualValues(t, imageUser, *sc.RunAsUser)
	require.True(t, *sc.ReadOnlyRootFilesystem)
	require.False(t, *sc.AllowPrivilegeEscalation)
	require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)

	req, lim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
	require.False(t, req.IsZero(), "memory request")
	require.False(t, lim.IsZero(), "memory limit")
	require.GreaterOrEqual(t, lim.Cmp(*req), 0)
	require.False(t, c.Resources.Requests.Cpu().IsZero(), "cpu request")

	require.NotNil(t, spec.TerminationGracePeriodSeconds)
	require.GreaterOrEqual(t, time.Duration(*spec.TerminationGracePeriodSeconds)*time.Second, pipeline.DefaultShutdownTimeout+opsDrain,
		"the grace period must cover the final flush and the listener's drain")
}

// checkPodMonitor checks that a PodMonitor scrapes /metrics on our named port of the pods.
func checkPodMonitor(t *testing.T, bin liveBinary, pm *monitoringv1.PodMonitor, tmpl corev1.PodTemplateSpec) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	require.NoError(t, err)
	require.True(t, sel.Matches(labels.Set(tmpl.Labels)), "the PodMonitor selects no pod of the Deployment")
	c := ourContainer(t, tmpl.Spec)
	require.Len(t, pm.Spec.PodMetricsEndpoints, 1)
	ep := pm.Spec.PodMetricsEndpoints[0]
	require.NotNil(t, ep.Port)
	var found bool
	for _, p := range c.Ports {
		found = found || p.Name == *ep.Port
	}
	require.True(t, found, "PodMonitor port %q is not a port of our container", *ep.Port)
	require.Contains(t, bin.get(t, ep.Path), "challenge_stream_build_info")
	var job bool
	for _, r := range ep.RelabelConfigs {
		job = job || (r.TargetLabel == "job" && r.Replacement != nil && *r.Replacement == "challenge-stream")
	}
	require.True(t, job, `the alert rules select job="challenge-stream"`)
}

func TestSidecarManifest(t *testing.T) {
	bin := startBinary(t)
	m := decode(t, "kubernetes/sidecar.yaml")
	require.Len(t, m.deployments, 1)
	require.Len(t, m.podMonitors, 1)
	d := m.deployments[0]
	require.Greater(t, len(d.Spec.Template.Spec.Containers), 1, "the sidecar sits beside the host API's container")
	checkContainer(t, bin, d.Spec.Template.Spec)
	checkPodMonitor(t, bin, m.podMonitors[0], d.Spec.Template)
}

func TestStandaloneManifest(t *testing.T) {
	bin := startBinary(t)
	m := decode(t, "kubernetes/standalone.yaml")
	require.Len(t, m.deployments, 1)
	require.Len(t, m.pdbs, 1)
	require.Len(t, m.podMonitors, 1)
	d := m.deployments[0]
	require.EqualValues(t, 2, *d.Spec.Replicas, "one leader, one hot standby")
	require.Len(t, d.Spec.Template.Spec.Containers, 1)
	checkContainer(t, bin, d.Spec.Template.Spec)
	checkPodMonitor(t, bin, m.podMonitors[0], d.Spec.Template)

	// One pod at a time and never a third: the rollout needs no lock to make progress, since a
	// standby is ready.
	require.Equal(t, appsv1.RollingUpdateDeploymentStrategyType, d.Spec.Strategy.Type)
	ru := d.Spec.Strategy.RollingUpdate
	require.NotNil(t, ru)
	require.Equal(t, 0, ru.MaxSurge.IntValue())
	require.Equal(t, 1, ru.MaxUnavailable.IntValue())

	pdb := m.pdbs[0]
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	require.NoError(t, err)
	require.True(t, sel.Matches(labels.Set(d.Spec.Template.Labels)), "the PodDisruptionBudget covers no pod")
	require.NotNil(t, pdb.Spec.MaxUnavailable)
	require.Equal(t, 1, pdb.Spec.MaxUnavailable.IntValue())

	slot := flagEnv(t, "slot")
	for _, e := range ourContainer(t, d.Spec.Template.Spec).Env {
		if e.Name == slot {
			require.Equal(t, pipeline.DefaultName, e.Value, "the alert rules' postgres_exporter selectors name this slot")
		}
	}
}

// TestStrictDecodingRejectsUnknownFields keeps the strictness honest: a misspelt field fails.
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	t.Parallel()
	doc := []byte("apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: x\n          readinesProbe: {}\n")
	require.ErrorContains(t, yaml.UnmarshalStrict(doc, &appsv1.Deployment{}), "readinesProbe")
}

// flagEnv is the environment variable of a run flag.
func flagEnv(t *testing.T, flag string) string {
	t.Helper()
	f, ok := runFlags(t)[flag]
	require.True(t, ok, flag)
	require.NotEmpty(t, f.env, flag)
	return f.env
}
