"""deploy/ stays consistent with the code it deploys.

* every ``SEQ2GMM_*`` variable used anywhere in deploy/ is a real field of
  :class:`worker.ops.settings.Settings` (the settings ignore unknown variables, so a typo would
  otherwise be silently dropped);
* the workers get the settings production requires (Kafka bootstrap, Redis URL: the
  embedded services are dev-only) and the whole environment loads;
* every YAML file parses; Kubernetes built-in kinds validate against the Kubernetes schemas
  (kubernetes-validate ships them in its wheel: offline), compose files against the
  compose-spec schema (vendored in check-jsonschema's wheel);
* the numbers and names that must agree do: partitions / KEDA maxReplicaCount / replicas,
  grace periods / batch linger / poll interval, ports and probe paths, topics, group, model
  name, uid, torch pin; every CLI invocation parses with the real ``seq2gmm`` parser.

No network, no Docker, no cluster: ``kubectl kustomize`` is used only when kubectl is there.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from worker.cli import build_parser
from worker.ops.settings import (
    ENV_DELIMITER,
    ENV_PREFIX,
    KafkaSettings,
    MetricsSettings,
    Settings,
    load_settings,
)

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = DEPLOY / "worker.env.example"

VAR_RE = re.compile(r"\bSEQ2GMM_[A-Z0-9_]*[A-Z0-9]\b")
# Variables whose values are credentials: Secrets only, never a ConfigMap, env file or image.
SENSITIVE = ("SEQ2GMM_KAFKA__SASL_PASSWORD", "SEQ2GMM_REDIS__URL")
# Kubernetes versions the manifests must validate against (the oldest supported one and the
# newest kubernetes-validate knows).
K8S_MIN_VERSION = "1.30"


# ------------------------------------------------------------------------------ helpers


def setting_path(var: str) -> list[str]:
    """The field path of ``var`` in Settings (SEQ2GMM_A__B -> [a, b]); KeyError if none."""
    if not var.startswith(ENV_PREFIX):
        raise KeyError(f"{var} does not start with {ENV_PREFIX}")
    parts = var.removeprefix(ENV_PREFIX).lower().split(ENV_DELIMITER)
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            raise KeyError(f"{var}: {model.__name__} has no field {part!r}")
        annotation = field.annotation
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        last = i == len(parts) - 1
        if is_section and last:
            raise KeyError(f"{var} names a whole section, not a setting")
        if not is_section and not last:
            raise KeyError(f"{var}: {part!r} is a setting, not a section")
        if is_section:
            assert isinstance(annotation, type)
            model = annotation
    return parts


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings loaded from exactly ``env`` (the test process's own SEQ2GMM_* are removed)."""
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def k8s_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml_docs(path):
            yield path, doc


def k8s_one(kind: str) -> dict[str, Any]:
    """The one full manifest of ``kind`` (kustomize patches are not manifests)."""
    patches = kustomize_patch_files()
    found = [d for p, d in k8s_docs() if d.get("kind") == kind and p.resolve() not in patches]
    assert len(found) == 1, f"expected one {kind} under deploy/k8s, found {len(found)}"
    return found[0]


def kustomize_patch_files() -> set[Path]:
    out = set()
    for path, doc in k8s_docs():
        if doc.get("kind") == "Kustomization":
            out |= {(path.parent / p["path"]).resolve() for p in doc.get("patches", [])}
    return out


def is_builtin(doc: dict[str, Any]) -> bool:
    """A Kubernetes built-in kind (KEDA's CRDs and kustomize's own files are not)."""
    group = doc["apiVersion"].rpartition("/")[0]
    core = group == "" or "." not in group or group.endswith(".k8s.io")
    return core and doc.get("kind") != "Kustomization"


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [c for c in pod_spec["containers"] if c["name"] == name]
    assert len(matches) == 1, f"no container {name!r}"
    return matches[0]


def strategic_merge(base: Any, patch: Any) -> Any:
    """Enough of kustomize's strategic merge for our patches: maps merge, lists of named
    items (containers, env, volumes) merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        merged = [dict(x) for x in base]
        index = {x["name"]: i for i, x in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = strategic_merge(merged[index[item["name"]]], item)
            else:
                merged.append(item)
        return merged
    return patch


def env_of(c: dict[str, Any], configmaps: dict[str, dict[str, str]]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom, then env on top."""
    env: dict[str, str] = {}
    secrets = secret_data()
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]])
        else:
            env.update(secrets[source["secretRef"]["name"]])
    for item in c.get("env", []):
        env[item["name"]] = str(item.get("value", "from-the-downward-api"))
    return env


def configmap_data() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["data"] for _, d in k8s_docs() if d["kind"] == "ConfigMap"}


def secret_data() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["stringData"] for _, d in k8s_docs() if d["kind"] == "Secret"}


def worker_configmap() -> dict[str, str]:
    return configmap_data()["seq2gmm-worker-config"]


def parse_duration_s(text: str | int | float) -> float:
    """Compose durations: 60s, 1m30s, 500ms, 1h."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def cli(args: list[str]) -> Any:
    """Parse a seq2gmm command line with the real parser: argparse exits on an unknown flag,
    and every flag must be spelled in full (argparse would accept an abbreviation)."""
    parser: argparse.ArgumentParser = build_parser()
    parsed = parser.parse_args(args)
    known: set[str] = set()
    for word in args:
        sub = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if sub and word in sub[0].choices:
            parser = sub[0].choices[word]
            known |= {o for a in parser._actions for o in a.option_strings}
    flags = {w.partition("=")[0] for w in args if w.startswith("--")}
    assert flags <= known, f"not spelled as the parser defines them: {flags - known}"
    return parsed


# ------------------------------------------------------------------------------ compose

_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's interpolation with no variable set: ${X:-default} -> default, $$ -> $."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.groups()
        assert op is None or "?" not in op, f"${{{name}}} is required: the stack must start as is"
        return arg if op else ""

    return _INTERPOLATION.sub(sub, value)


def compose(path: Path = COMPOSE) -> dict[str, Any]:
    return interpolate(yaml.safe_load(path.read_text()))


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: str(v) for k, v in env.items()}


def seq2gmm_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the seq2gmm image (built from deploy/Dockerfile)."""
    return {
        name: s
        for name, s in doc["services"].items()
        if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def compose_topics() -> dict[str, dict[str, Any]]:
    """Topics created by the one-shot `topics` service: name -> partitions, configs."""
    service = compose()["services"]["topics"]
    script = " ".join(service.get("entrypoint", [])) + "\n" + "\n".join(service["command"])
    topics: dict[str, dict[str, Any]] = {}
    for line in script.splitlines():
        words = shlex.split(line)
        if not words or not words[0].endswith("kafka-topics.sh") or "--create" not in words:
            continue
        opts: dict[str, Any] = {"config": {}}
        for flag, value in itertools.pairwise(words):
            if flag == "--config":
                key, _, val = value.partition("=")
                opts["config"][key] = val
            elif flag.startswith("--"):
                opts[flag[2:]] = value
        topics[opts["topic"]] = opts
    assert topics, "the topics service creates no topic"
    return topics


# ------------------------------------------------------------------------------ Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "ARG":
            key, _, value = rest.partition("=")
            args.setdefault(key, value)
    return args


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ============================================================================== the tests


def test_the_setting_checker_rejects_what_is_not_a_setting() -> None:
    assert setting_path("SEQ2GMM_KAFKA__SASL_PASSWORD") == ["kafka", "sasl_password"]
    assert setting_path("SEQ2GMM_TORCH_THREADS") == ["torch_threads"]
    for bad in ("SEQ2GMM_KAFKA__BOGUS", "SEQ2GMM_KAFKA", "SEQ2GMM_DEVICE__X", "SEQ2GMM_THREADS"):
        with pytest.raises(KeyError):
            setting_path(bad)


def test_every_variable_used_in_deploy_is_a_real_setting() -> None:
    used: dict[str, set[str]] = {}
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file():
            for var in VAR_RE.findall(path.read_text()):
                used.setdefault(var, set()).add(str(path.relative_to(REPO)))
    assert len(used) > 10, "the scan found almost no SEQ2GMM_* variable"
    errors = []
    for var, files in sorted(used.items()):
        try:
            setting_path(var)
        except KeyError as exc:
            errors.append(f"{exc} (in {', '.join(sorted(files))})")
        if var.startswith(f"{ENV_PREFIX}DEV{ENV_DELIMITER}"):
            errors.append(f"{var}: embedded dev services have no place in deploy/")
    assert not errors, "\n".join(errors)


def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert {p.name for p in files} >= {"compose.yaml", "deployment.yaml", "keda.yaml"}
    for path in files:
        assert yaml_docs(path), f"{path} holds no YAML document"


# ------------------------------------------------------------------------------ env file


def env_lines(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_env_example_uses_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_lines(ENV_EXAMPLE)
    assert env, "deploy/worker.env.example is empty"
    assert not set(env) & set(SENSITIVE), "secrets belong in a secret store, not the env file"
    secrets = {
        "SEQ2GMM_KAFKA__SASL_USERNAME": "from-a-secret",
        "SEQ2GMM_KAFKA__SASL_PASSWORD": "from-a-secret",
        "SEQ2GMM_REDIS__URL": "rediss://u:p@redis:6380/0",
    }
    dumped = settings_from({**env, **secrets}, monkeypatch).model_dump()
    for key, value in env.items():
        node = dumped
        for part in setting_path(key):
            node = node[part]
        assert str(node) == value or str(node).lower() == value.lower(), key


def test_env_example_equals_the_kubernetes_configmap() -> None:
    assert env_lines(ENV_EXAMPLE) == worker_configmap()


# ------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_is_multi_stage_non_root_and_runs_the_worker() -> None:
    instructions = dockerfile_instructions()
    words = [w for w, _ in instructions]
    assert words.count("FROM") >= 2, "multi-stage: build the venv, copy it into the runtime"
    args = dockerfile_args()
    assert args.get("TORCH_VARIANT") == "cpu", "CPU by default, CUDA via --build-arg"
    assert "PYTHON_IMAGE" in args
    torch_pins = [d for d in pyproject()["project"]["dependencies"] if d.startswith("torch==")]
    assert torch_pins == [f"torch=={args['TORCH_VERSION']}"], "the image's torch = the pin"
    users = [rest for w, rest in instructions if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runs as root"
    entry = [rest for w, rest in instructions if w == "ENTRYPOINT"]
    cmd = [rest for w, rest in instructions if w == "CMD"]
    assert yaml.safe_load(entry[-1]) == ["seq2gmm"]
    assert cli(yaml.safe_load(cmd[-1])).command == "worker"
    health = [rest for w, rest in instructions if w == "HEALTHCHECK"]
    assert health and "/healthz" in health[-1]
    exposed = [rest for w, rest in instructions if w == "EXPOSE"]
    assert exposed == [str(MetricsSettings().port)]


def test_dockerfile_bakes_in_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    env = dockerfile_env()
    names = set(env) | set(dockerfile_args())
    for name in names:
        assert name not in SENSITIVE
        assert not re.search(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", name), name
    seq2gmm_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    settings_from(seq2gmm_env, monkeypatch)  # the image's own settings load
    assert seq2gmm_env.get("SEQ2GMM_METRICS__PORT") == str(MetricsSettings().port)


def test_dockerignore_admits_exactly_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore must be an allowlist"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from=" not in rest:
            sources = [w for w in shlex.split(rest) if not w.startswith("--")][:-1]
            copied |= {str(PurePosixPath(s)) for s in sources}
    assert copied, "the Dockerfile copies nothing from the context"
    assert copied <= allowed, f"copied but ignored: {copied - allowed}"
    assert pyproject()["project"]["readme"] in copied, "pip install needs the readme"
    for package in ("worker", "model"):
        assert package in copied


# ------------------------------------------------------------------------------ compose


def test_compose_files_validate_against_the_compose_spec() -> None:
    pytest.importorskip("check_jsonschema")
    files = sorted(DEPLOY.glob("compose*.yaml"))
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_kraft_kafka_redis_and_two_workers() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    kenv = compose_env(kafka)
    assert "controller" in kenv["KAFKA_PROCESS_ROLES"], "KRaft: the broker is its controller"
    assert not any("ZOOKEEPER" in k for k in kenv)
    assert kenv["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    redis_cmd = services["redis"]["command"]
    assert " ".join(redis_cmd).count("--appendonly yes") == 1, "AOF keeps the registry"
    password = redis_cmd[redis_cmd.index("--requirepass") + 1]
    assert password and password == compose_env(services["redis"])["REDISCLI_AUTH"]
    assert services["topics"]["restart"] == "no" and services["model-bootstrap"]["restart"] == "no"
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    needs = worker["depends_on"]
    for one_shot in ("topics", "model-bootstrap"):
        assert needs[one_shot]["condition"] == "service_completed_successfully"
    for service in ("kafka", "redis"):
        assert needs[service]["condition"] == "service_healthy"


def test_compose_commands_are_real_seq2gmm_commands() -> None:
    services = seq2gmm_services(compose())
    assert {"worker", "model-bootstrap"} <= set(services)
    for service in services.values():
        cli(service["command"])  # exits on an unknown subcommand or flag
    assert services["worker"]["command"] == ["worker"]
    assert services["model-bootstrap"]["command"][:2] == ["models", "demo"]


def test_compose_gives_every_seq2gmm_container_kafka_and_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = compose()
    redis_password = compose_env(doc["services"]["redis"])["REDISCLI_AUTH"]
    for name, service in seq2gmm_services(doc).items():
        settings = settings_from(compose_env(service), monkeypatch)
        assert settings.kafka.bootstrap_servers, f"{name}: no SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS"
        assert settings.redis.url is not None, f"{name}: no SEQ2GMM_REDIS__URL"
        for server in settings.kafka.bootstrap_servers.split(","):
            assert server.partition(":")[0] in doc["services"], f"{name}: {server}?"
        url = settings.redis.url.get_secret_value()
        assert re.fullmatch(rf"redis://:{re.escape(redis_password)}@redis:6379/\d+", url), name


def test_compose_topics_partitions_retention_and_dead_letters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = compose()
    topics = compose_topics()
    settings = settings_from(compose_env(doc["services"]["worker"]), monkeypatch)
    k = settings.kafka
    assert set(topics) == {k.raw_topic, k.anomalies_topic, k.dead_letter_topic}
    for name, topic in topics.items():
        assert int(topic["config"]["retention.ms"]) > 0, f"{name}: no retention.ms"
        assert int(topic["partitions"]) >= 1
        assert topic["bootstrap-server"].partition(":")[0] in doc["services"]
    raw = int(topics[k.raw_topic]["partitions"])
    assert k.num_partitions == raw, "SEQ2GMM_KAFKA__NUM_PARTITIONS = the partitions created"
    assert doc["services"]["worker"]["deploy"]["replicas"] <= raw, "idle workers"
    # dead letters keep the raw record plus headers: the DLQ must outlive the raw topic
    dlq_ms = int(topics[k.dead_letter_topic]["config"]["retention.ms"])
    assert dlq_ms >= int(topics[k.raw_topic]["config"]["retention.ms"])


def test_compose_grace_period_outlasts_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = compose()["services"]["worker"]
    settings = settings_from(compose_env(worker), monkeypatch)
    grace_s = parse_duration_s(worker["stop_grace_period"])
    assert grace_s * 1000 > settings.batching.linger_ms
    assert grace_s * 1000 >= settings.kafka.max_poll_interval_ms
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"


# ------------------------------------------------------------------------------ Kubernetes


def test_k8s_manifests_are_namespace_agnostic_and_named() -> None:
    docs = list(k8s_docs())
    assert len(docs) >= 9
    for path, doc in docs:
        assert "apiVersion" in doc and "kind" in doc, path
        if doc["kind"] == "Kustomization":
            assert "namespace" not in doc, path
            continue
        meta = doc["metadata"]
        assert "namespace" not in meta, f"{path}: set the namespace when applying"
        assert meta.get("name") or meta.get("generateName"), path


def test_k8s_builtin_kinds_validate_against_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    patches = kustomize_patch_files()
    versions = [K8S_MIN_VERSION, kv.latest_version()]
    validated = set()
    for path, doc in k8s_docs():
        if not is_builtin(doc) or path.resolve() in patches:
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(
                    f"{path.relative_to(REPO)} ({doc['kind']}, {version}): {where}: {exc.message}"
                )
        validated.add(doc["kind"])
    assert validated >= {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Job",
        "CronJob",
    }
    # the GPU variant, as kustomize builds it
    gpu = gpu_deployment()
    for version in versions:
        kv.validate(gpu, version, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", ["base", "gpu"])
def test_kustomize_builds_both_variants(overlay: str) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {d["kind"] for d in built}
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "ScaledObject"} <= kinds
    deployment = next(d for d in built if d["kind"] == "Deployment")
    limits = container(deployment["spec"]["template"]["spec"], "worker")["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == (overlay == "gpu")
    kv = pytest.importorskip("kubernetes_validate")
    for doc in built:
        if is_builtin(doc):
            kv.validate(doc, K8S_MIN_VERSION, strict=True)


def base_deployment() -> dict[str, Any]:
    return k8s_one("Deployment")


def gpu_deployment() -> dict[str, Any]:
    kustomization = yaml_docs(K8S / "gpu" / "kustomization.yaml")[0]
    merged = base_deployment()
    for patch in kustomization["patches"]:
        merged = strategic_merge(merged, yaml_docs(K8S / "gpu" / patch["path"])[0])
    for image in kustomization.get("images", []):
        for c in merged["spec"]["template"]["spec"]["containers"]:
            if c["image"].rpartition(":")[0] == image["name"]:
                c["image"] = f"{image['name']}:{image['newTag']}"
    return merged


def worker_env(deployment: dict[str, Any]) -> dict[str, str]:
    c = container(deployment["spec"]["template"]["spec"], "worker")
    return env_of(c, configmap_data())


def test_k8s_worker_gets_every_required_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    for deployment in (base_deployment(), gpu_deployment()):
        env = worker_env(deployment)
        settings = settings_from(env, monkeypatch)  # SASL also needs mechanism/user/password
        assert settings.kafka.bootstrap_servers, "SEQ2GMM_KAFKA__BOOTSTRAP_SERVERS missing"
        assert settings.redis.url is not None, "SEQ2GMM_REDIS__URL missing"
    assert settings_from(worker_env(gpu_deployment()), monkeypatch).device == "cuda"


def test_k8s_secrets_are_placeholders_and_stay_out_of_configmaps() -> None:
    configmap = worker_configmap()
    secrets = secret_data()
    for name in SENSITIVE:
        assert name not in configmap, f"{name} is a secret: Secret, not ConfigMap"
        assert name in secrets["seq2gmm-worker-secrets"]
    assert not set(configmap) & set(secrets["seq2gmm-worker-secrets"]), "set in both"
    for name, data in secrets.items():
        for key, value in data.items():
            assert "REPLACE_ME" in value, f"{name}/{key} must be a marked placeholder"
    base = yaml_docs(K8S / "base" / "kustomization.yaml")[0]
    assert not any("secret" in r for r in base["resources"]), "apply would clobber real secrets"


def test_k8s_deployment_probes_grace_and_security(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = base_deployment()
    pod = deployment["spec"]["template"]["spec"]
    worker = container(pod, "worker")
    settings = settings_from(worker_env(deployment), monkeypatch)
    assert cli(worker["args"]).command == "worker"
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports["metrics"] == settings.metrics.port
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        get = worker[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("metrics", settings.metrics.port), probe
    grace_ms = pod["terminationGracePeriodSeconds"] * 1000
    assert grace_ms > settings.batching.linger_ms
    assert grace_ms >= settings.kafka.max_poll_interval_ms
    # security
    assert pod["securityContext"]["runAsNonRoot"] is True
    users = [rest for w, rest in dockerfile_instructions() if w == "USER"]
    assert str(pod["securityContext"]["runAsUser"]) == users[-1].split(":")[0]
    sc = worker["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"
    assert settings.kafka.ssl_cafile is not None
    assert str(settings.kafka.ssl_cafile.parent) in mounts, "SSL_CAFILE is not mounted"
    # resources: torch threads = the CPU limit (else one thread per node core)
    resources = worker["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), section
    assert settings.torch_threads == int(resources["limits"]["cpu"])


def test_k8s_gpu_variant_requests_one_gpu() -> None:
    worker = container(gpu_deployment()["spec"]["template"]["spec"], "worker")
    resources = worker["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert worker["image"].endswith("-cuda")
    base = container(base_deployment()["spec"]["template"]["spec"], "worker")
    assert "nvidia.com/gpu" not in base["resources"]["limits"], "CPU variant needs no GPU"


def test_keda_scales_on_lag_up_to_the_partition_count(monkeypatch: pytest.MonkeyPatch) -> None:
    scaled = k8s_one("ScaledObject")
    deployment = base_deployment()
    settings = settings_from(worker_env(deployment), monkeypatch)
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    top = scaled["spec"]["maxReplicaCount"]
    assert 1 <= scaled["spec"].get("minReplicaCount", 0) <= top
    raw_partitions = int(compose_topics()[KafkaSettings().raw_topic]["partitions"])
    assert top <= raw_partitions, "KEDA would start workers that get no partition"
    assert top <= settings.kafka.num_partitions
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["topic"] == settings.kafka.raw_topic
    assert meta["consumerGroup"] == settings.kafka.group_id
    assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert meta["offsetResetPolicy"] == settings.kafka.auto_offset_reset
    assert int(meta["lagThreshold"]) > 0
    # its credentials exist (same Secret keys as the worker's)
    auth = k8s_one("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    secrets = secret_data()
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secrets[ref["name"]], ref


def test_pdb_and_service_select_the_worker_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = base_deployment()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = k8s_one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1
    service = k8s_one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    settings = settings_from(worker_env(deployment), monkeypatch)
    (port,) = service["spec"]["ports"]
    assert port["port"] == settings.metrics.port and port["targetPort"] == "metrics"


def test_training_job_publishes_and_promotes_the_served_model() -> None:
    job = k8s_one("Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (train,) = pod["containers"]
    args = cli(train["args"])
    assert args.command == "train"
    assert args.publish == worker_configmap()["SEQ2GMM_WORKER__MODEL"], "workers serve another"
    assert args.promote is True
    env = env_of(train, configmap_data())
    assert env.get("SEQ2GMM_REDIS__URL"), "publishing needs the registry"
    mounts = {m["mountPath"]: m for m in train["volumeMounts"]}
    out_dir, data = str(args.out), str(args.train)
    assert any(out_dir.startswith(m + "/") and not v.get("readOnly") for m, v in mounts.items())
    assert any(data.startswith(m + "/") for m in mounts), "training data is not mounted"
    assert train["securityContext"]["readOnlyRootFilesystem"] is True


def test_retrain_cronjob_gates_the_served_model_and_fails_fast_on_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker.commands.retrain import REFUSED

    cron = k8s_one("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy
    (retrain,) = pod["containers"]
    args = cli(retrain["args"])
    assert args.command == "retrain" and args.candidate is None and not args.dry_run
    assert args.name == worker_configmap()["SEQ2GMM_WORKER__MODEL"], "workers serve another"
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"] == {
        "containerName": "retrain",
        "operator": "In",
        "values": [REFUSED],
    }
    settings = settings_from(env_of(retrain, configmap_data()), monkeypatch)
    assert settings.kafka.bootstrap_servers and settings.redis.url is not None
    mounts = {m["mountPath"]: m for m in retrain["volumeMounts"]}
    assert "/tmp" in mounts and not mounts["/tmp"].get("readOnly"), "the candidate is saved there"
    assert retrain["securityContext"]["readOnlyRootFilesystem"] is True
