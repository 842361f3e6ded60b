"""Infrastructure files: the cluster launcher config passes Ray's own schema, KubeRay manifests
run jobs and flags that exist, the image copies what exists; auth and dashboards stay safe."""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

INFRA = REPO_ROOT / "infra"


def job_parser(path: str):
    spec = importlib.util.spec_from_file_location("job_under_test", REPO_ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parser()


def launcher_config() -> dict:
    return yaml.safe_load((INFRA / "cluster" / "aws.yaml").read_text())


def no_secrets(text: str) -> None:
    assert not re.search(r"(?i)aws_secret|aws_access_key|password|RAY_AUTH_TOKEN=[^$\s]|\b[0-9a-f]{32,}\b", text)


def test_cluster_launcher_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = launcher_config()
    validate_config(prepare_config(config))
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in (c for c in starts if "ray start" in c):  # token auth on every node, from the mounted token
        assert "RAY_AUTH_MODE=token" in command and "RAY_AUTH_TOKEN_PATH=~/.ray/auth_token" in command
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}  # the user's own token file
    assert "--dashboard-host=127.0.0.1" in " ".join(starts)  # the dashboard is not exposed
    no_secrets((INFRA / "cluster" / "aws.yaml").read_text())


def test_launcher_nodes_use_the_scoped_security_group_and_profiles_and_spot_for_cpu_only():
    types = launcher_config()["available_node_types"]
    for name, spec in types.items():
        node = spec["node_config"]
        # set on every node: the launcher then creates no security group of its own (its default opens
        # SSH to 0.0.0.0/0) and no broad default role
        assert node["SecurityGroupIds"] == ["REPLACE_WITH_SecurityGroupId"], name
        assert node["IamInstanceProfile"]["Arn"] == ("REPLACE_WITH_HeadInstanceProfileArn" if name == "head"
                                                     else "REPLACE_WITH_WorkerInstanceProfileArn"), name
    assert types["cpu-worker"]["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
    assert "InstanceMarketOptions" not in types["gpu-worker"]["node_config"]
    assert types["gpu-worker"]["resources"]["GPU"] == 1 and types["gpu-worker"]["min_workers"] == 0


def test_aws_access_template_opens_only_ssh_from_the_given_cidr_and_scopes_s3_to_two_buckets():
    text = (INFRA / "cluster" / "aws-access.yaml").read_text()
    template = yaml.safe_load(text)
    assert "0.0.0.0/0" not in text and "::/0" not in text
    assert "SshCidr" in template["Parameters"] and "Default" not in template["Parameters"]["SshCidr"]
    resources = template["Resources"]
    ingress = resources["ClusterSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [(r["FromPort"], r["ToPort"], r["CidrIp"]) for r in ingress] == [(22, 22, {"Ref": "SshCidr"})]
    intra = resources["IntraClusterIngress"]["Properties"]  # every other port only from the group itself
    assert intra["SourceSecurityGroupId"] == intra["GroupId"]
    for role in ("HeadRole", "WorkerRole"):
        for policy in resources[role]["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                assert "s3:*" not in actions and "*" not in actions
                if any(a.startswith("s3:") for a in actions):
                    for arn in statement["Resource"]:
                        assert re.fullmatch(r"arn:aws:s3:::\$\{(CorpusBucket|ResultsBucket)\}(/\*)?", arn["Fn::Sub"])
    worker_actions = {a for p in resources["WorkerRole"]["Properties"]["Policies"]
                      for s in p["PolicyDocument"]["Statement"] for a in s["Action"]}
    assert worker_actions <= {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                              "s3:AbortMultipartUpload"}


def test_fake_multinode_config_passes_rays_schema():
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((INFRA / "cluster" / "fake-multinode.yaml").read_text())
    validate_config(config)  # prepare_config needs the provider's example.yaml, which the wheel lacks
    assert config["provider"]["type"] == "fake_multinode"
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert all(spec["min_workers"] == 0 for name, spec in types.items() if name != config["head_node_type"])


def kuberay_documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / "kuberay" / name).read_text()) if d]


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob-pretrain-ecg.yaml"])
def test_kuberay_manifests(name):
    import ray

    manifest = kuberay_documents(name)[0]
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] in ("RayCluster", "RayJob")
    spec = manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token"}  # the operator (>= 1.5.1) generates and provisions it
    no_secrets((INFRA / "kuberay" / name).read_text())
    groups = spec["workerGroupSpecs"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in groups]
    for pod in pods:
        assert pod["serviceAccountName"] == "physiofm"  # IRSA, no keys
        for container in pod["containers"]:
            for env in container.get("env", []):
                assert "value" not in env or "TOKEN" not in env["name"]  # a token only ever from a Secret
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    gpu = next(g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"])
    if manifest["kind"] == "RayJob":
        argv = shlex.split(manifest["spec"]["entrypoint"])
        assert argv[0] == "python" and (REPO_ROOT / argv[1]).is_file()
        args = job_parser(argv[1]).parse_args(argv[2:])  # every flag exists and parses
        # sized exactly to its entrypoint: one GPU worker pod per training worker, nothing to scale
        assert args.use_gpu and args.num_workers == gpu["replicas"] == gpu["minReplicas"] == gpu["maxReplicas"]
        assert not spec.get("enableInTreeAutoscaling")
    else:
        assert spec["enableInTreeAutoscaling"] is True
        assert gpu["replicas"] == gpu["minReplicas"] == 0 < gpu["maxReplicas"]  # GPUs only while asked for


def test_kuberay_head_is_reachable_only_from_its_own_cluster_and_s3_goes_through_irsa():
    policy = kuberay_documents("raycluster.yaml")[1]
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/cluster": "physiofm", "ray.io/node-type": "head"}
    assert [rule["from"] for rule in policy["spec"]["ingress"]] == [[{"podSelector": {"matchLabels": {
        "ray.io/cluster": "physiofm"}}}]]
    account = kuberay_documents("serviceaccount.yaml")[0]
    assert account["kind"] == "ServiceAccount" and account["metadata"]["name"] == "physiofm"
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def test_dockerfile_copies_what_exists_and_installs_what_pyproject_declares():
    """`docker build` cannot run on these machines (no Docker daemon): the install steps are checked
    against pyproject.toml instead."""
    import tomllib

    import ray
    from packaging.requirements import Requirement

    text = (INFRA / "docker" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, flags=re.M):
        for item in source.split():
            assert (REPO_ROOT / item).exists(), item
    declared = {Requirement(r).name: Requirement(r) for r in
                tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    installs = [line for line in re.findall(r"^RUN pip install (.+)$", text, flags=re.M)]
    packages = [word for line in installs for word in line.split() if not word.startswith(("-", "$"))]
    assert "." in packages  # the project itself, with exactly the dependencies pyproject.toml declares
    for pinned in (p for p in packages if p != "."):  # anything installed apart is a pinned dependency of ours
        requirement = Requirement(pinned)
        assert requirement.name in declared, pinned
        version = str(requirement.specifier).removeprefix("==")
        assert declared[requirement.name].specifier.contains(version), (pinned, declared[requirement.name])
    assert "torch==2.13.0" in packages
    base = re.search(r"rayproject/ray:([\d.]+)-py(\d)(\d+)", text)
    assert base.group(1) == ray.__version__ and declared["ray"].specifier.contains(base.group(1))
    assert {"default", "data", "train", "tune"} <= declared["ray"].extras  # `ray job submit` needs default
    assert "RAY_AUTH_TOKEN" not in text  # the token comes from the cluster at run time, never the image


def test_deepspeed_configs_are_plain_json_for_every_stage():
    for stage in range(4):
        config = json.loads((INFRA / "deepspeed" / f"zero{stage}.json").read_text())
        assert config["zero_optimization"]["stage"] == stage
        assert "optimizer" not in config  # the loop passes a torch AdamW (no FusedAdam JIT on CPU)


# aws.yaml's head start command in token mode, with a job submitted with the token: tests/test_platform_train.py
