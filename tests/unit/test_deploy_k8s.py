"""The Kubernetes path (``deploy/k8s``), checked offline since no cluster runs here: every resource
validates against the Kubernetes schemas (strict: an unknown field fails), the pieces refer to
each other correctly (Services select their Deployments' pods, autoscalers target Deployments
that exist, the gateway's backends are those Services, every secret it reads is one the Secret
holds), the gateway runs our command with options it accepts, and each model pod is ready only
after a real prediction."""

from __future__ import annotations

import copy
import importlib
import re
import tomllib

import kubernetes_validate
import pytest
import yaml

from mnist_mlops.serve.gateway import cli as gateway_cli
from tests.helpers import PROJECT_ROOT

K8S = PROJECT_ROOT / "deploy" / "k8s"
KUBERNETES = "1.33.0"
EXAMPLE_SECRETS = "secrets.example.yaml"
RAY_SERVICE = "rayservice.yaml"  # the Ray path: instead of the variants' Deployments, not in the kustomization


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def resources() -> list[dict]:
    """Every resource ``kubectl apply -k deploy/k8s`` creates, in the kustomization's namespace."""
    found = []
    for name in kustomization()["resources"]:
        for document in yaml.safe_load_all((K8S / name).read_text()):
            if document:
                found.append(document)
    return found


def of_kind(kind: str) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in resources() if r["kind"] == kind}


def containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


def test_every_resource_validates_against_the_kubernetes_schemas():
    every = resources() + list(yaml.safe_load_all((K8S / EXAMPLE_SECRETS).read_text()))
    kinds = {r["kind"] for r in every}
    assert {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "Secret"} <= kinds
    for resource in every:
        kubernetes_validate.validate(resource, KUBERNETES, strict=True)
    broken = copy.deepcopy(of_kind("Deployment")["mnist-gateway"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_example_secret():
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {EXAMPLE_SECRETS, RAY_SERVICE}
    images = {entry["name"] for entry in kustomization()["images"]}
    used = {c["image"].split(":")[0] for d in of_kind("Deployment").values() for c in containers(d)}
    assert used == images


def test_services_select_their_deployments_and_autoscalers_target_them():
    deployments = of_kind("Deployment")
    for name, service in of_kind("Service").items():
        pods = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pods.items(), name
        ports = {p["name"] for c in containers(deployments[name]) for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for name, autoscaler in of_kind("HorizontalPodAutoscaler").items():
        target = autoscaler["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, name
        assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
    assert set(of_kind("HorizontalPodAutoscaler")) == set(deployments)


def gateway_args() -> list[str]:
    (container,) = containers(of_kind("Deployment")["mnist-gateway"])
    assert container["command"] == ["mnist-gateway"]
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "mnist-gateway" in scripts
    return container["args"]


def test_the_gateway_runs_our_command_with_backends_that_are_the_variants_services():
    args = gateway_cli.build_parser().parse_args(gateway_args())  # exits on an option it does not know
    services, namespace = of_kind("Service"), kustomization()["namespace"]
    split = dict(part.split("=") for part in args.split.split(","))
    backends = dict(args.backend)
    assert set(backends) == set(split)
    for alias, url in backends.items():
        host, port = re.fullmatch(r"http://([\w.-]+):(\d+)", url).groups()
        name = host.removesuffix(f".{namespace}.svc")
        assert name == f"mnist-{alias}" and int(port) in {p["port"] for p in services[name]["spec"]["ports"]}


def test_every_secret_the_gateway_reads_is_in_the_secret_and_none_is_written_here():
    (example,) = yaml.safe_load_all((K8S / EXAMPLE_SECRETS).read_text())
    held = set(example["stringData"])
    gateway = of_kind("Deployment")["mnist-gateway"]["spec"]["template"]["spec"]
    wanted = {
        entry["valueFrom"]["secretKeyRef"]["key"]
        for entry in gateway["containers"][0]["env"]
        if "valueFrom" in entry and entry["valueFrom"]["secretKeyRef"]["name"] == example["metadata"]["name"]
    }
    wanted |= {item["key"] for v in gateway["volumes"] if "secret" in v for item in v["secret"]["items"]}
    assert wanted and wanted <= held
    assert not of_kind("Secret"), "a Secret with values must not be applied from git"
    for value in example["stringData"].values():
        assert "REPLACE" in value or "gateway-keys" in value or value == "gateway"
    for entry in gateway["containers"][0]["env"]:
        if re.search("PASSWORD|SECRET|LOG", entry["name"]):
            assert "valueFrom" in entry, f"{entry['name']} holds a literal value"


def test_each_model_pod_is_ready_only_after_answering_a_real_prediction():
    for alias in ("champion", "challenger"):
        (model,) = containers(of_kind("Deployment")[f"mnist-{alias}"])
        probe = model["readinessProbe"]["exec"]["command"]
        script = probe[-1]
        assert probe[:2] == ["python", "-c"] and "/invocations" in script and "serving_input_example.json" in script
        assert 'answer["predictions"][0]["label"]' in script
        compile(script, "readiness", "exec")  # the probe is Python that runs
        assert model["livenessProbe"]["httpGet"]["path"] == "/ping"
        assert model["resources"]["requests"]["cpu"] and model["resources"]["limits"]["memory"]


def test_the_rayservice_alternative_passes_ray_serves_schema_and_kubernetes_pod_schemas():
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    (service,) = yaml.safe_load_all((K8S / RAY_SERVICE).read_text())
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    (application,) = config.applications
    module, name = application.import_path.split(":")
    builder = getattr(importlib.import_module(module), name)
    builder(application.args)  # builds the application with these arguments (nothing runs)
    (deployment,) = application.deployments
    assert deployment.name == "RegistryModel"
    AutoscalingConfig(**deployment.autoscaling_config)  # Ray's own checks: min <= initial <= max ...
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "ray"}, "template": template}
        kubernetes_validate.validate(pod_template, KUBERNETES, strict=True)
    (example,) = yaml.safe_load_all((K8S / EXAMPLE_SECRETS).read_text())
    for template in templates:
        for entry in template["spec"]["containers"][0]["env"]:
            if "valueFrom" in entry:
                assert entry["valueFrom"]["secretKeyRef"]["key"] in example["stringData"]
    # The gateway in front routes to KubeRay's Serve Service (<name>-serve-svc) with --ray_serve_url.
    words, args = iter(gateway_args()), []
    for word in words:
        if word == "--backend":
            next(words)  # the Services of the variants' Deployments: not on this path
        else:
            args.append(word)
    url = f"http://{service['metadata']['name']}-serve-svc.{service['metadata']['namespace']}.svc:8000"
    assert f"--ray_serve_url {url}" in (K8S / RAY_SERVICE).read_text()
    parsed = gateway_cli.build_parser().parse_args([*args, "--engine", "ray", "--ray_serve_url", url])
    gateway_cli.settings_from(parsed).check()
