"""The deployable infrastructure under infra/: parsed, validated with the platforms' own
checks where a package provides them, and checked to agree with the project and with itself.

What checks what:

- every YAML file under infra/ parses (``yaml.safe_load_all``);
- ``infra/cluster.yaml`` passes Ray's own cluster-launcher validation, as ``ray up`` runs it
  before it talks to the cloud: ``prepare_config`` (fills in the provider's defaults, checks
  the Docker settings) then ``validate_config`` (``ray/autoscaler/ray-schema.json`` and the
  node-type checks), both from ``ray.autoscaler._private.util`` of the installed Ray; broken
  copies of it fail that validation;
- the core Kubernetes objects (PersistentVolumeClaim, Secret, Service, Deployment,
  StatefulSet) pass Kubernetes' own OpenAPI schemas in strict mode (unknown fields are
  errors), from the PyPI package ``kubernetes-validate`` (a dev dependency; it ships the
  schemas of Kubernetes 1.25 to 1.37 and works offline), for the oldest and the newest
  Kubernetes it knows; every pod template inside the KubeRay objects passes the same schema
  (as a core/v1 PodTemplate);
- the KubeRay objects (RayCluster, RayJob) pass a JSON schema written here of the KubeRay v1
  fields we rely on, checked against the Go API types of ray-project/kuberay
  (``ray-operator/apis/ray/v1``). The CRDs' own OpenAPI schemas could not be used: no package
  on the registries reachable here ships them. Checked: PyPI has no ``kuberay`` distribution
  (``pip index versions kuberay``: none), the KubeRay Python clients are installed from the
  KubeRay repository, not PyPI, and hold no schemas; the ``ray`` wheel has no CRD (no
  ``openAPIV3Schema`` anywhere in it); ``kubernetes-validate`` covers built-in kinds only;
  the npm ``@kubernetes-models/*`` family has no KubeRay package; Debian has none
  (``apt-cache search kuberay``). The CRDs ship inside the KubeRay Helm chart and the Go
  module ``github.com/ray-project/kuberay/ray-operator``; a CI with a Kubernetes API server
  can add ``kubectl apply --dry-run=server`` against the installed operator;
- the Dockerfiles, checked as text: the Ray base image at the installed Ray version, PyTorch
  at the Makefile's version, the project installed with the code and conf/ copied in;
- the pieces agree: image tags, the shared volume and ``output_dir``, the MLflow address and
  the server's allowed hosts (with MLflow's own host check), Secret names and keys, Service
  selectors and ports, and every ``python -m jobs.*`` command (entrypoints, README) loads with
  the project's own config loader.
"""
from __future__ import annotations

import copy
import importlib.util
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml
from kubernetes_validate.utils import all_versions

from pipeline.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
NAMESPACE = "sidbp"
SHARED_MOUNT = "/mnt/shared"
REGISTRY = "registry.example.com"   # the placeholder registry of every manifest (README: sed it)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
# the settings the Makefile exports for jobs, which the image and runtime_env.yaml must repeat
JOB_ENV = ("RAY_USAGE_STATS_ENABLED", "RAY_DATA_DISABLE_PROGRESS_BARS", "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK")
K8S_VERSIONS = sorted({all_versions()[0], all_versions()[-1]})  # the oldest and newest Kubernetes known


def pinned(name: str) -> str:
    """The version that pyproject.toml pins with `name==...` (extras allowed)."""
    for dep in PYPROJECT["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==(\S+)", dep.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject.toml pins no {name}==")


def load_docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests(folder: str) -> list[tuple[str, int, dict]]:
    return [(str(p.relative_to(INFRA)), i, doc)
            for p in sorted((INFRA / folder).glob("*.yaml")) for i, doc in enumerate(load_docs(p))]


K8S_DOCS = manifests("kuberay") + manifests("mlflow")
RAY_DOCS = [d for d in K8S_DOCS if d[2]["apiVersion"].startswith("ray.io/")]
CORE_DOCS = [d for d in K8S_DOCS if not d[2]["apiVersion"].startswith("ray.io/")]


def one(kind: str, name: str | None = None) -> dict:
    found = [d for _, _, d in K8S_DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''} under infra/, found {len(found)}"
    return found[0]


def doc_id(item) -> str:
    path, index, doc = item
    return f"{path}#{index}:{doc['kind']}/{doc['metadata']['name']}"


# ---------------------------------------------------------------------------- every YAML file

EXPECTED_FILES = ["runtime_env.yaml", "cluster.yaml", "kuberay/storage.yaml", "kuberay/raycluster.yaml",
                  "kuberay/rayjob-train.yaml", "kuberay/rayjob-sweep.yaml", "mlflow/secrets.example.yaml",
                  "mlflow/postgres.yaml", "mlflow/mlflow.yaml", "Dockerfile", "mlflow/Dockerfile", "README.md"]


def test_infra_has_every_file():
    missing = [f for f in EXPECTED_FILES if not (INFRA / f).is_file()]
    assert not missing, f"missing under infra/: {missing}"


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.yaml")), ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_parses(path):
    docs = load_docs(path)
    assert docs, f"{path} holds no document"
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


# ------------------------------------------------------------------- Ray cluster launcher

def ray_cluster_validate(config: dict) -> dict:
    """What `ray up` does with the file before it talks to the cloud provider."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((INFRA / "cluster.yaml").read_text())


def test_cluster_yaml_passes_ray_validation(cluster):
    prepared = ray_cluster_validate(cluster)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_cluster_head_runs_no_training_and_gpu_workers_have_gpus(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must advertise no CPUs (no Train workers there)"
    assert "GPU" not in head["resources"]
    start = " ".join(cluster["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "ray start --head" in start
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no GPU worker node type"
    for name, t in gpu_types.items():
        assert t["max_workers"] >= 1
        assert re.match(r"(g[4-6]|p[3-5])", t["node_config"]["InstanceType"]), name
        assert t["docker"]["worker_image"] == f"{REGISTRY}/sidbp:{VERSION}-gpu", name
    assert cluster["docker"]["image"] == f"{REGISTRY}/sidbp:{VERSION}-cpu"


def test_cluster_nodes_share_storage_at_the_output_dir(cluster):
    run_options = cluster["docker"]["run_options"]
    host_dirs = [opt.split()[1].split(":")[0] for opt in run_options
                 if opt.startswith("-v ") and opt.split()[1].endswith(f":{SHARED_MOUNT}")]
    assert len(host_dirs) == 1, f"the containers must mount the shared file system at {SHARED_MOUNT}"
    init = " ".join(cluster["initialization_commands"])
    assert re.search(rf"mount -t nfs4 .* \S+:/ {re.escape(host_dirs[0])}(\s|$)", init), \
        f"the hosts must mount the shared file system at {host_dirs[0]}"


def drop(path: str):
    def change(c):
        *parents, last = path.split(".")
        node = c
        for key in parents:
            node = node[key]
        del node[last]
    return change


def put(path: str, value):
    def change(c):
        *parents, last = path.split(".")
        node = c
        for key in parents:
            node = node[key]
        node[last] = value
    return change


BROKEN_CLUSTERS = {
    "node type without resources": drop("available_node_types.gpu.resources"),
    "negative GPU count": put("available_node_types.gpu.resources", {"CPU": 4, "GPU": -1}),
    "unknown node-type field": put("available_node_types.gpu.instance_type", "g5.xlarge"),
    "unknown top-level field": put("max_worker", 8),
    "head type not among the node types": put("head_node_type", "head-node"),
    "node_config not a mapping": put("available_node_types.gpu.node_config", ["g5.xlarge"]),
    "min_workers above max_workers": put("available_node_types.gpu.min_workers", 100),
    "docker image without a container name": drop("docker.container_name"),
}


@pytest.mark.parametrize("change", BROKEN_CLUSTERS.values(), ids=BROKEN_CLUSTERS.keys())
def test_broken_cluster_yaml_fails_ray_validation(cluster, change):
    broken = copy.deepcopy(cluster)
    change(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError, AssertionError)):
        ray_cluster_validate(broken)


# ------------------------------------------------------------------------ runtime_env.yaml

def test_runtime_env_is_a_valid_ray_runtime_env():
    from ray.runtime_env import RuntimeEnv

    data = yaml.safe_load((INFRA / "runtime_env.yaml").read_text())
    env = RuntimeEnv(**data)
    assert env["working_dir"] == "."
    assert {".venv/", ".git/", "runs/", "mlflow.db"} <= set(data["excludes"])
    makefile = dict(re.findall(r"^export (\w+) \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M))
    assert {k: data["env_vars"][k] for k in JOB_ENV} == {k: makefile[k] for k in JOB_ENV}
    with pytest.raises(TypeError):  # the same check rejects a malformed runtime env
        RuntimeEnv(**{**data, "env_vars": {"RAY_USAGE_STATS_ENABLED": 0}})


# ---------------------------------------------------------------------------- Dockerfiles

def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, continuations joined."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^\s*(\w+)\s+(.*)$", text, re.M)]


def arg_defaults(instructions) -> dict[str, str]:
    args = {}
    for op, rest in instructions:
        if op == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args.setdefault(key, value)
    return args


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


def test_dockerfile_builds_on_the_pinned_ray_and_installs_the_project():
    ins = dockerfile(INFRA / "Dockerfile")
    args = arg_defaults(ins)
    froms = [rest for op, rest in ins if op == "FROM"]
    assert len(froms) == 1
    assert substitute(froms[0], args) == f"rayproject/ray:{ray.__version__}-py311"
    assert args["RAY_VERSION"] == ray.__version__ == pinned("ray")
    assert "RAY_TAG_SUFFIX" in froms[0], "the CUDA variant must be a build argument"
    assert substitute(froms[0], {**args, "RAY_TAG_SUFFIX": "-gpu"}) == f"rayproject/ray:{ray.__version__}-py311-gpu"
    torch_spec = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert args["TORCH_VERSION"] == torch_spec
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert re.search(r"pip install [^&]*\"torch==\$\{TORCH_VERSION\}\" --index-url \"\$\{TORCH_INDEX_URL\}\"", runs)
    assert re.search(r"pip install [^&]*-e \.", runs), "the project must be pip-installed"
    copied = " ".join(rest for op, rest in ins if op == "COPY")
    packages = sorted({p.split(".")[0] for p in PYPROJECT["tool"]["setuptools"]["packages"]})
    for needed in ["pyproject.toml", "README.md", "conf", *packages]:
        assert re.search(rf"(^|\s){re.escape(needed)}(\s|$)", copied), f"the image must COPY {needed}"
    workdir = [rest for op, rest in ins if op == "WORKDIR"]
    assert workdir and workdir[-1].startswith("/"), "WORKDIR must be set, so `python -m jobs.train` runs there"
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for op, rest in ins if op == "ENV")))
    runtime_env = yaml.safe_load((INFRA / "runtime_env.yaml").read_text())["env_vars"]
    assert {k: env.get(k) for k in JOB_ENV} == {k: runtime_env[k] for k in JOB_ENV}
    label = " ".join(rest for op, rest in ins if op == "LABEL")
    assert f'org.opencontainers.image.version="{VERSION}"' in label


def test_mlflow_dockerfile_is_the_pinned_mlflow_with_postgres_and_s3_clients():
    ins = dockerfile(INFRA / "mlflow" / "Dockerfile")
    args = arg_defaults(ins)
    froms = [substitute(rest, args) for op, rest in ins if op == "FROM"]
    assert froms == [f"ghcr.io/mlflow/mlflow:v{pinned('mlflow')}"]
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert re.search(r'"psycopg2(-binary)?==[\d.]+"', runs) and re.search(r'"boto3==[\d.]+"', runs)
    image = containers(one("Deployment", "mlflow")["spec"]["template"])[0]["image"]
    assert image == f"{REGISTRY}/sidbp-mlflow:{pinned('mlflow')}"


# -------------------------------------------------------- Kubernetes objects, Kubernetes' schema

@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("item", CORE_DOCS, ids=doc_id)
def test_core_objects_pass_the_kubernetes_schema(item, version):
    _, _, doc = item
    kubernetes_validate.validate(doc, version, strict=True)
    assert doc["metadata"]["namespace"] == NAMESPACE


def test_core_kinds_are_all_there():
    kinds = {d["kind"] for _, _, d in CORE_DOCS}
    assert {"PersistentVolumeClaim", "Secret", "Service", "Deployment", "StatefulSet"} <= kinds


BROKEN_CORE = {
    "unknown container field": ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0]
                                .update(imagee="x")),
    "replicas as text": ("Deployment", lambda d: d["spec"].update(replicas="one")),
    "access mode not a list": ("PersistentVolumeClaim", lambda d: d["spec"].update(accessModes="ReadWriteMany")),
    "port as text": ("Service", lambda d: d["spec"]["ports"][0].update(port="http")),
}


@pytest.mark.parametrize("kind, change", BROKEN_CORE.values(), ids=BROKEN_CORE.keys())
def test_broken_core_objects_fail_the_kubernetes_schema(kind, change):
    doc = copy.deepcopy(next(d for _, _, d in CORE_DOCS if d["kind"] == kind))
    change(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


# --------------------------------------------------------------------- KubeRay: RayCluster, RayJob

def int_at_least(n: int) -> dict:
    return {"type": "integer", "minimum": n}


OBJ = {"type": "object"}
DNS_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# the pod template in full is checked against Kubernetes' PodTemplateSpec below
POD_TEMPLATE = {"type": "object", "required": ["spec"],
                "properties": {"spec": {"type": "object", "required": ["containers"]}}}
HEAD_GROUP = {
    "type": "object", "additionalProperties": False, "required": ["rayStartParams", "template"],
    "properties": {
        # the head runs the drivers, no Train workers: Ray gives it no CPUs
        "rayStartParams": {**STRING_MAP, "required": ["num-cpus"], "properties": {"num-cpus": {"const": "0"}}},
        "template": POD_TEMPLATE,
        "serviceType": {"type": "string"}, "headService": OBJ, "enableIngress": {"type": "boolean"},
        "resources": STRING_MAP, "labels": STRING_MAP,
    },
}
WORKER_GROUP = {
    "type": "object", "additionalProperties": False,
    "required": ["groupName", "replicas", "minReplicas", "maxReplicas", "template"],
    "properties": {
        "groupName": DNS_LABEL, "replicas": int_at_least(0), "minReplicas": int_at_least(0),
        "maxReplicas": int_at_least(1), "numOfHosts": int_at_least(1), "rayStartParams": STRING_MAP,
        "template": POD_TEMPLATE, "scaleStrategy": OBJ, "suspend": {"type": "boolean"},
        "idleTimeoutSeconds": int_at_least(0), "resources": STRING_MAP, "labels": STRING_MAP,
    },
}
GPU_GROUP = {  # a worker group whose containers have nvidia.com/gpu limits
    "required": ["template"],
    "properties": {"template": {"required": ["spec"], "properties": {"spec": {
        "required": ["containers"],
        "properties": {"containers": {"contains": {
            "required": ["resources"],
            "properties": {"resources": {"required": ["limits"], "properties": {"limits": {
                "required": ["nvidia.com/gpu"],
                "properties": {"nvidia.com/gpu": {"type": ["string", "integer"], "pattern": "^[1-9][0-9]*$"}},
            }}}},
        }}},
    }}}},
}
CLUSTER_SPEC = {
    "type": "object", "additionalProperties": False,
    "required": ["rayVersion", "headGroupSpec", "workerGroupSpecs"],
    "properties": {
        "rayVersion": {"const": ray.__version__},
        "headGroupSpec": HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "minItems": 1, "items": WORKER_GROUP, "contains": GPU_GROUP},
        "enableInTreeAutoscaling": {"type": "boolean"}, "autoscalerOptions": OBJ,
        "headServiceAnnotations": STRING_MAP, "suspend": {"type": "boolean"},
        "gcsFaultToleranceOptions": OBJ, "managedBy": {"type": "string"},
    },
}
METADATA = {"type": "object", "required": ["name", "namespace"],
            "properties": {"name": DNS_LABEL, "namespace": {"const": NAMESPACE}}}
RAY_CLUSTER = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {"apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayCluster"},
                   "metadata": METADATA, "spec": CLUSTER_SPEC},
}
RAY_JOB = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayJob"}, "metadata": METADATA,
        "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["entrypoint", "shutdownAfterJobFinishes", "rayClusterSpec"],
            "properties": {
                "entrypoint": {"type": "string", "pattern": r"^python -m jobs\.(train|sweep)( |$)"},
                "shutdownAfterJobFinishes": {"const": True},
                "ttlSecondsAfterFinished": int_at_least(0), "activeDeadlineSeconds": int_at_least(1),
                "backoffLimit": int_at_least(0), "rayClusterSpec": CLUSTER_SPEC,
                "runtimeEnvYAML": {"type": "string"},
                "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
                "submitterPodTemplate": POD_TEMPLATE, "submitterConfig": OBJ, "clusterSelector": STRING_MAP,
                "metadata": STRING_MAP, "jobId": {"type": "string"}, "entrypointResources": {"type": "string"},
                "entrypointNumCpus": {"type": "number"}, "entrypointNumGpus": {"type": "number"},
                "suspend": {"type": "boolean"}, "managedBy": {"type": "string"}, "deletionStrategy": OBJ,
            },
        },
    },
}
KUBERAY_SCHEMAS = {"RayCluster": RAY_CLUSTER, "RayJob": RAY_JOB}


def kuberay_validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(KUBERAY_SCHEMAS[doc["kind"]]).validate(doc)


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def ray_groups(doc: dict) -> list[tuple[str, dict]]:
    """(group name, group spec) of the head ("head") and every worker group."""
    spec = cluster_spec(doc)
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]


def containers(template: dict) -> list[dict]:
    return template["spec"]["containers"]


def has_gpu(template: dict) -> bool:
    return any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in containers(template))


def test_kuberay_objects_are_there():
    kinds = sorted((d["kind"], d["metadata"]["name"]) for _, _, d in RAY_DOCS)
    assert kinds == [("RayCluster", "sidbp"), ("RayJob", "sidbp-sweep"), ("RayJob", "sidbp-train")]


@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_kuberay_objects_pass_the_kuberay_v1_schema(item):
    kuberay_validate(item[2])


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_ray_pod_templates_pass_the_kubernetes_schema(item, version):
    _, _, doc = item
    for group, spec in ray_groups(doc):
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate",
                        "metadata": {"name": f"{doc['metadata']['name']}-{group}"}, "template": spec["template"]}
        kubernetes_validate.validate(pod_template, version, strict=True)


def test_a_broken_ray_pod_template_fails_the_kubernetes_schema():
    doc = copy.deepcopy(one("RayJob", "sidbp-train"))
    template = cluster_spec(doc)["workerGroupSpecs"][0]["template"]
    containers(template)[0]["volumeMount"] = containers(template)[0].pop("volumeMounts")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"},
                                      "template": template}, K8S_VERSIONS[-1], strict=True)


def no_gpu_limits(doc):
    for group in cluster_spec(doc)["workerGroupSpecs"]:
        for c in containers(group["template"]):
            for part in c["resources"].values():
                part.pop("nvidia.com/gpu", None)


BROKEN_RAYJOBS = {
    "entrypoint misspelled": lambda d: d["spec"].update(entryPoint=d["spec"].pop("entrypoint")),
    "cluster kept after the job": lambda d: d["spec"].update(shutdownAfterJobFinishes=False),
    "head runs training": lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]
    .update({"num-cpus": "4"}),
    "no GPU worker group": no_gpu_limits,
    "old API version": lambda d: d.update(apiVersion="ray.io/v1alpha1"),
    "another Ray version": lambda d: d["spec"]["rayClusterSpec"].update(rayVersion="2.9.0"),
    "not a project job": lambda d: d["spec"].update(entrypoint="python train.py"),
    "another namespace": lambda d: d["metadata"].update(namespace="default"),
}


@pytest.mark.parametrize("change", BROKEN_RAYJOBS.values(), ids=BROKEN_RAYJOBS.keys())
def test_broken_rayjobs_fail_the_kuberay_schema(change):
    doc = copy.deepcopy(one("RayJob", "sidbp-train"))
    change(doc)
    with pytest.raises(jsonschema.ValidationError):
        kuberay_validate(doc)


# ------------------------------------------------------------------ the pieces agree

@pytest.mark.parametrize("item", RAY_DOCS, ids=doc_id)
def test_ray_pods_use_the_project_images_shared_volume_and_mlflow(item):
    _, _, doc = item
    pvc = one("PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    service = one("Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    expected_uri = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port}"
    for group, spec in ray_groups(doc):
        template = spec["template"]
        variant = "gpu" if has_gpu(template) else "cpu"
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in template["spec"]["volumes"] if "persistentVolumeClaim" in v}
        for c in containers(template):
            assert c["image"] == f"{REGISTRY}/sidbp:{VERSION}-{variant}", (group, c["image"])
            mounted = {m["mountPath"]: claims.get(m["name"]) for m in c["volumeMounts"]}
            assert mounted.get(SHARED_MOUNT) == pvc["metadata"]["name"], f"{group}: {SHARED_MOUNT} is not the PVC"
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("MLFLOW_TRACKING_URI") == expected_uri, group
        if variant == "gpu":
            assert group != "head", "the head needs no GPU"
            for c in containers(template):
                limits, requests = c["resources"]["limits"], c["resources"].get("requests", {})
                assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"]


def entrypoint_config(doc: dict):
    """The job module and the loaded config of a RayJob's entrypoint."""
    words = shlex.split(doc["spec"]["entrypoint"])
    assert words[:2] == ["python", "-m"]
    assert importlib.util.find_spec(words[2]) is not None, f"no module {words[2]}"
    return words[2], load_config(words[3:])


def gpu_workers(doc: dict) -> int:
    return sum(g["replicas"] for g in cluster_spec(doc)["workerGroupSpecs"] if has_gpu(g["template"]))


def test_train_rayjob_runs_the_smoke_training_on_gpus_into_the_shared_volume():
    doc = one("RayJob", "sidbp-train")
    module, cfg = entrypoint_config(doc)
    assert module == "jobs.train"
    assert "experiment=smoke" in doc["spec"]["entrypoint"].split()
    assert cfg.train.use_gpu and cfg.train.num_workers >= 1
    assert cfg.output_dir.startswith(SHARED_MOUNT + "/")
    assert cfg.ray.address is None, "inside a Ray job RAY_ADDRESS gives the cluster"
    assert gpu_workers(doc) >= cfg.train.num_workers, "one GPU pod per Train worker"


def test_sweep_rayjob_runs_the_smoke_sweep_with_a_gpu_per_concurrent_trial():
    doc = one("RayJob", "sidbp-sweep")
    module, cfg = entrypoint_config(doc)
    assert module == "jobs.sweep"
    assert "experiment=sweep_smoke" in doc["spec"]["entrypoint"].split()
    assert cfg.train.use_gpu and cfg.train.num_workers >= 1
    assert cfg.output_dir.startswith(SHARED_MOUNT + "/")
    assert gpu_workers(doc) >= cfg.sweep.max_concurrent_trials * cfg.train.num_workers


def test_entrypoint_overrides_are_checked_by_the_config_loader():
    doc = copy.deepcopy(one("RayJob", "sidbp-train"))
    doc["spec"]["entrypoint"] += " train.num_wrokers=2"
    with pytest.raises(ConfigError):
        entrypoint_config(doc)


def test_gpu_pods_leave_cpus_to_ray_data():
    for _, _, doc in RAY_DOCS:
        if doc["kind"] != "RayJob":
            continue
        _, cfg = entrypoint_config(doc)
        for group, spec in ray_groups(doc):
            if has_gpu(spec["template"]):
                cpus = float(containers(spec["template"])[0]["resources"]["limits"]["cpu"])
                assert cpus >= cfg.train.cpus_per_worker + 1, (doc["metadata"]["name"], group)


def mlflow_args() -> list[str]:
    return containers(one("Deployment", "mlflow")["spec"]["template"])[0]["args"]


def mlflow_flag(name: str) -> str:
    values = [a.split("=", 1)[1] for a in mlflow_args() if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"mlflow server needs one --{name}=..."
    return values[0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy's, on importing mlflow.server
def test_mlflow_server_admits_the_host_the_jobs_use_and_no_other():
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = [h.strip() for h in mlflow_flag("allowed-hosts").split(",")]
    uris = {e["value"] for _, _, doc in RAY_DOCS for _, spec in ray_groups(doc)
            for c in containers(spec["template"]) for e in c.get("env", []) if e["name"] == "MLFLOW_TRACKING_URI"}
    assert uris
    for uri in uris:
        assert is_allowed_host_header(allowed, urlparse(uri).netloc), f"the server would refuse {uri}"
    assert is_allowed_host_header(allowed, "localhost:5000"), "kubectl port-forward sends localhost:5000"
    assert not is_allowed_host_header(allowed, "attacker.example.com:5000")


def test_mlflow_server_uses_postgres_and_serves_s3_artifacts():
    args = mlflow_args()
    assert "--serve-artifacts" in args
    assert mlflow_flag("artifacts-destination").startswith("s3://")
    assert mlflow_flag("host") == "0.0.0.0"
    container = containers(one("Deployment", "mlflow")["spec"]["template"])[0]
    env = {e["name"]: e for e in container["env"]}
    db = urlparse(env["MLFLOW_BACKEND_STORE_URI"]["value"])
    assert db.scheme == "postgresql+psycopg2"
    postgres = one("Service", "mlflow-postgres")
    assert db.hostname == postgres["metadata"]["name"] and db.port == postgres["spec"]["ports"][0]["port"]
    names = list(env)  # a $(VAR) reference needs VAR defined earlier in the list
    for var in re.findall(r"\$\((\w+)\)", env["MLFLOW_BACKEND_STORE_URI"]["value"]):
        assert var in names[:names.index("MLFLOW_BACKEND_STORE_URI")], var
    assert f"--port={mlflow_service_target_port()}" in args


def mlflow_service_target_port() -> int:
    service = one("Service", "mlflow")
    target = service["spec"]["ports"][0]["targetPort"]
    ports = {p["name"]: p["containerPort"] for p in containers(one("Deployment", "mlflow")["spec"]["template"])[0]
             ["ports"]}
    return ports[target] if isinstance(target, str) else target


@pytest.mark.parametrize("service, workload", [("mlflow", ("Deployment", "mlflow")),
                                                ("mlflow-postgres", ("StatefulSet", "mlflow-postgres"))])
def test_services_select_their_pods_and_ports(service, workload):
    svc, app = one("Service", service), one(*workload)
    labels = app["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert app["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p.get("name") for c in containers(app["spec"]["template"]) for p in c.get("ports", [])}
    for port in svc["spec"]["ports"]:
        assert not isinstance(port["targetPort"], str) or port["targetPort"] in port_names
    if workload[0] == "StatefulSet":
        assert app["spec"]["serviceName"] == service


def test_every_secret_the_pods_read_is_defined():
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for _, _, d in CORE_DOCS if d["kind"] == "Secret"}
    readme = (INFRA / "README.md").read_text()
    refs = 0
    for _, _, doc in CORE_DOCS:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod["containers"] + pod.get("initContainers", []):
            for source in c.get("envFrom", []):
                name = source["secretRef"]["name"]
                assert name in secrets, name
                refs += 1
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs += 1
                    assert ref["name"] in secrets, ref["name"]
                    if not ref.get("optional"):
                        assert ref["key"] in secrets[ref["name"]], f"{ref['name']} has no key {ref['key']}"
                        assert f"--from-literal={ref['key']}=" in readme, f"README does not create {ref['key']}"
    assert refs >= 3
    for name in secrets:
        assert f"create secret generic {name}" in readme, f"README does not create the Secret {name}"


# ----------------------------------------------------------------------------- README

def readme_commands() -> list[str]:
    """The shell commands in infra/README.md's code blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", (INFRA / "README.md").read_text(), re.S)
    text = re.sub(r"\s*\\\n\s*", " ", "\n".join(blocks))
    return [line.split(" #")[0].strip() for line in text.splitlines() if line.strip()]


def test_readme_goes_from_a_fresh_cluster_to_a_finished_sweep():
    joined = "\n".join(readme_commands())

    def in_order(patterns: list[str]) -> None:
        """Each pattern matches a command after the previous one's."""
        start = 0
        for pattern in patterns:
            m = re.compile(pattern, re.M).search(joined, start)
            assert m, f"infra/README.md has no command matching {pattern!r} after the previous step"
            start = m.end()

    in_order([
        r"^docker build -f infra/Dockerfile .*-t \$REGISTRY/sidbp:" + re.escape(VERSION) + r"-gpu \.$",
        r"^docker push \$REGISTRY/sidbp:" + re.escape(VERSION) + "-gpu$",
        r"^helm install kuberay-operator kuberay/kuberay-operator --version \d+\.\d+\.\d+ ",
        rf"^kubectl create namespace {NAMESPACE}$",
        r"^kubectl apply -f infra/kuberay/storage\.yaml$",
        r"^kubectl apply -f infra/mlflow/postgres\.yaml$",
        r"^kubectl apply -f infra/mlflow/mlflow\.yaml$",
        r"^kubectl apply -f infra/kuberay/rayjob-train\.yaml$",
        rf"^kubectl -n {NAMESPACE} get rayjob sidbp-train",
        rf"^kubectl -n {NAMESPACE} logs -f job/sidbp-train",
        rf"^kubectl -n {NAMESPACE} port-forward svc/mlflow 5000:5000",
        r"^kubectl apply -f infra/kuberay/rayjob-sweep\.yaml$",
        rf"^kubectl -n {NAMESPACE} get rayjob sidbp-sweep",
    ])
    in_order([r"^kubectl apply -f infra/kuberay/raycluster\.yaml$",
              r"^ray job submit --address \S+ --runtime-env infra/runtime_env\.yaml -- python -m jobs\.train "])
    in_order([r"^ray up -y infra/cluster\.yaml$",
              r"^ray job submit --address \S+ --runtime-env infra/runtime_env\.yaml -- "
              r"python -m jobs\.train experiment=smoke",
              r"^ray job submit --address \S+ --runtime-env infra/runtime_env\.yaml -- "
              r"python -m jobs\.sweep experiment=sweep_smoke",
              r"^ray down -y infra/cluster\.yaml$"])


def test_readme_names_every_file_and_placeholder_and_says_what_was_not_run():
    readme = (INFRA / "README.md").read_text()
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file() and p.name != "README.md"):
        assert f"`{path.relative_to(INFRA)}`" in readme, f"README does not describe {path.relative_to(INFRA)}"
    placeholders = set()
    for path in INFRA.rglob("*.yaml"):
        placeholders |= set(re.findall(r"[\w.-]*REPLACE_ME|registry\.example\.com", path.read_text()))
    assert placeholders
    for token in placeholders:
        assert re.search(rf"sed -i \"s#{re.escape(token)}#", readme), f"README does not replace {token}"
    assert "no image was built and no cluster was started" in readme


def test_readme_job_commands_load_with_the_project_config():
    jobs = [c[c.index("python -m jobs."):] for c in readme_commands() if "python -m jobs." in c]
    assert len(jobs) >= 3
    for command in jobs:
        words = shlex.split(command)
        assert importlib.util.find_spec(words[2]) is not None, command
        cfg = load_config(words[3:])
        assert cfg.output_dir.startswith(SHARED_MOUNT + "/"), command
