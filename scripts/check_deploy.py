#!/usr/bin/env python3
"""Static checks of deploy/ that need Python: run by scripts/check-deploy inside its venv
(PyYAML, kubernetes-validate). Each check names the file and what is wrong; the exit code
is 1 when any failed.

- every YAML and JSON file under deploy/ parses;
- every STREAMEDGE_<SECTION>__<KEY> variable set anywhere in deploy/ names a key of
  config/default.toml, with a value of the key's type (the node refuses to start otherwise);
- the compose file: variables (all in .env.example, required ones empty there), mounted
  files, build context, per-node UDP ranges, grace periods;
- the Kubernetes manifests: rendered from the kustomizations, validated against the
  Kubernetes schemas (strict), and cross-checked (selectors, ports, probes, Secret keys,
  grace period against preStop + server.shutdown_grace);
- the Dockerfile: JSON-form instructions, the dependency layer's stubs against the
  workspace, the build context (.dockerignore) against what the build reads;
- the systemd unit: config variables and TimeoutStopSec.
"""

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# Kubernetes versions the manifests must validate against: the oldest still commonly run,
# and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]

errors: list[str] = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# --- configuration keys ---------------------------------------------------------------------

DEFAULTS = tomllib.loads((ROOT / "config/default.toml").read_text())


def parse_duration(s: str) -> float:
    """Seconds in a humantime duration as the config writes them ("30s", "500ms", "10m")."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", s):
        if m.start() != pos:
            raise ValueError(s)
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(s)
    return total


def env_value(raw: str):
    """As the node reads an override: a TOML literal when it is one, else a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def check_env(where: str, name: str, value):
    """`value` None: set from elsewhere (a Secret, a field reference): only the name is checked."""
    if not name.startswith("STREAMEDGE_") or name == "STREAMEDGE_CONFIG":
        return
    path = name[len("STREAMEDGE_"):].lower().split("__")
    node = DEFAULTS
    for part in path:
        if not isinstance(node, dict) or part not in node:
            fail(where, f"{name} names no key of config/default.toml ({'.'.join(path)}): the node would refuse to start")
            return
        node = node[part]
    if isinstance(node, dict):
        fail(where, f"{name} names a section, not a key")
        return
    if value is None:
        return
    v = env_value(str(value))
    ok = {
        str: True,  # the node retries a non-string literal as the string it was written as
        bool: isinstance(v, bool),
        int: isinstance(v, int) and not isinstance(v, bool),
        float: isinstance(v, (int, float)) and not isinstance(v, bool),
        list: isinstance(v, list),
    }[type(node)]
    if not ok:
        fail(where, f"{name}={value!r} is not a {type(node).__name__} like config/default.toml's {'.'.join(path)}")
        return
    if isinstance(node, str) and re.fullmatch(r"\d+(ms|s|m|h|d)", node):
        try:
            parse_duration(str(v))
        except ValueError:
            fail(where, f"{name}={value!r} is not a duration")


def effective(env: dict, key: str):
    """The value of `section.key` given these STREAMEDGE_* overrides (strings)."""
    name = "STREAMEDGE_" + key.upper().replace(".", "__")
    if name in env and env[name] is not None:
        return env_value(str(env[name]))
    node = DEFAULTS
    for part in key.split("."):
        node = node[part]
    return node


def shutdown_grace(env: dict) -> float:
    return parse_duration(effective(env, "server.shutdown_grace"))


# --- every YAML / JSON file parses ----------------------------------------------------------

def check_parse():
    for p in sorted(DEPLOY.rglob("*")):
        if not p.is_file():
            continue
        try:
            if p.suffix in (".yml", ".yaml"):
                list(yaml.safe_load_all(p.read_text()))
            elif p.suffix == ".json":
                json.loads(p.read_text())
        except (yaml.YAMLError, json.JSONDecodeError) as e:
            fail(rel(p), f"does not parse: {e}")


# --- docker compose -------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose/docker-compose.yml"
ENV_EXAMPLE = DEPLOY / "compose/.env.example"
VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
DUMMY_SECRET = "x" * 40  # stands for a value the user writes into .env
DUMMY_IP = "192.0.2.10"


def read_env_file(p: Path) -> dict:
    out = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            fail(rel(p), f"line {n} is not NAME=value")
            continue
        k, v = line.split("=", 1)
        out[k.strip()] = v
    return out


def interpolate(obj, env: dict, used: dict):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?message} (and $$), recording each variable
    and whether it is required. Unset required variables get a stand-in value."""
    if isinstance(obj, dict):
        return {k: interpolate(v, env, used) for k, v in obj.items()}
    if isinstance(obj, list):
        return [interpolate(v, env, used) for v in obj]
    if not isinstance(obj, str):
        return obj

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        required = op in (":?", "?")
        used[name] = used.get(name, False) or required
        val = env.get(name, "")
        if op in (":-", "-") and val == "":
            return arg
        if required and val == "":
            if not arg.strip():
                fail(rel(COMPOSE), f"${{{name}:?}} needs a message saying where to set it")
            return DUMMY_IP if name.endswith("_IP") else DUMMY_SECRET
        return val

    return VAR.sub(sub, obj)


def port_range(s: str):
    m = re.fullmatch(r"(\d+)-(\d+)", s)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_compose():
    raw = yaml.safe_load(COMPOSE.read_text())
    example = read_env_file(ENV_EXAMPLE)
    used: dict = {}
    doc = interpolate(raw, example, used)
    where = rel(COMPOSE)
    for name, required in sorted(used.items()):
        if name not in example:
            fail(where, f"${{{name}}} is not listed in {rel(ENV_EXAMPLE)}")
        elif required and example[name] != "":
            fail(rel(ENV_EXAMPLE), f"{name} is required and must be empty here (no secret in the repository)")
    for name in example:
        if name not in used:
            fail(rel(ENV_EXAMPLE), f"{name} is not used by the compose file")
    base = COMPOSE.parent
    services = doc.get("services", {})
    nodes, ranges, ids = [], [], set()
    for sname, svc in services.items():
        w = f"{where}: services.{sname}"
        build = svc.get("build")
        if build:
            ctx = (base / build["context"]).resolve()
            if not (ctx / build.get("dockerfile", "Dockerfile")).is_file():
                fail(w, f"no Dockerfile at {build.get('dockerfile')} in the build context {build['context']}")
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith((".", "/")) and not (base / src).exists():
                fail(w, f"mounts {src}, which does not exist")
        envs = svc.get("environment", {}) or {}
        if isinstance(envs, list):
            envs = dict(e.split("=", 1) for e in envs)
        for k, v in envs.items():
            check_env(w, k, v)
        if svc.get("image") != "streamedge:local" or svc.get("command"):
            continue
        nodes.append(sname)
        envs = {**image_env(), **envs}
        grace = shutdown_grace(envs)
        sgp = parse_duration(str(svc.get("stop_grace_period", "10s")))
        if sgp <= grace:
            fail(w, f"stop_grace_period {sgp:.0f}s must exceed server.shutdown_grace ({grace:.0f}s)")
        node_id = envs.get("STREAMEDGE_SERVER__NODE_ID")
        if not node_id or node_id in ids:
            fail(w, "needs its own STREAMEDGE_SERVER__NODE_ID")
        ids.add(node_id)
        r = port_range(str(envs.get("STREAMEDGE_MEDIA__UDP_PORT_RANGE", "")))
        if not r:
            fail(w, "needs STREAMEDGE_MEDIA__UDP_PORT_RANGE (FIRST-LAST) to publish its media ports")
            continue
        want = f"{r[0]}-{r[1]}:{r[0]}-{r[1]}/udp"
        if want not in [str(p) for p in svc.get("ports", [])]:
            fail(w, f"must publish its media range as {want!r} (same ports inside and out)")
        for other, orange in ranges:
            if r[0] <= orange[1] and orange[0] <= r[1]:
                fail(w, f"media UDP range {r} overlaps {other}'s {orange}")
        ranges.append((sname, r))
        if not envs.get("STREAMEDGE_MEDIA__ADVERTISE_URL"):
            fail(w, "needs STREAMEDGE_MEDIA__ADVERTISE_URL (other nodes relay its streams)")
    if len(nodes) < 2:
        fail(where, f"expected several streamedge nodes, found {nodes}")
    # nginx's upstream lists exactly the nodes.
    conf = (base / "nginx/nginx.conf").read_text()
    upstream = sorted(re.findall(r"^\s*server\s+([\w.-]+):8080\b", conf, re.M))
    if upstream != sorted(nodes):
        fail(rel(base / "nginx/nginx.conf"), f"upstream servers {upstream} differ from the compose nodes {sorted(nodes)}")
    prom = yaml.safe_load((base / "prometheus/prometheus.yml").read_text())
    targets = sorted(t for sc in prom["scrape_configs"] for st in sc.get("static_configs", []) for t in st["targets"])
    if targets != sorted(f"{n}:9090" for n in nodes):
        fail(rel(base / "prometheus/prometheus.yml"), f"targets {targets} are not every node's admin port")


# --- Kubernetes -----------------------------------------------------------------------------

K8S = DEPLOY / "kubernetes"
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "configMapGenerator", "images",
                    "patches"}


def kustomize(d: Path) -> list:
    """Renders the subset of kustomize these manifests use (resources, namespace, labels
    without selectors, configMapGenerator from env files or literals, with merge, images,
    JSON 6902 patches with add/replace); anything else is reported, so the checker cannot
    silently skip a feature."""
    k = yaml.safe_load((d / "kustomization.yaml").read_text())
    where = rel(d / "kustomization.yaml")
    for field in set(k) - KUSTOMIZE_FIELDS:
        fail(where, f"field {field!r} is not understood by scripts/check_deploy.py: extend it")
    docs = []
    for r in k.get("resources", []):
        p = (d / r).resolve()
        if p.is_dir():
            docs += kustomize(p)
        elif p.is_file():
            docs += [x for x in yaml.safe_load_all(p.read_text()) if x]
        else:
            fail(where, f"resource {r} does not exist")
    for gen in k.get("configMapGenerator", []):
        data = {}
        for e in gen.get("envs", []):
            data.update(read_env_file(d / e))
        for lit in gen.get("literals", []):
            key, val = lit.split("=", 1)
            data[key] = val
        if gen.get("behavior") == "merge":
            old = [x for x in docs if x["kind"] == "ConfigMap" and x["metadata"]["name"] == gen["name"]]
            if not old:
                fail(where, f"configMapGenerator {gen['name']} merges into a ConfigMap the resources do not make")
            for x in old:
                x["data"].update(data)
            continue
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data,
                     "_generated": True})
    for patch in k.get("patches", []):
        t = patch.get("target", {})
        ops = yaml.safe_load(patch["patch"]) if "patch" in patch else None
        if not isinstance(ops, list) or set(patch) - {"target", "patch"}:
            fail(where, "only inline JSON 6902 patches with a target are understood by the checker")
            continue
        hits = [x for x in docs if x["kind"] == t.get("kind") and x["metadata"]["name"] == t.get("name")]
        if not hits:
            fail(where, f"patch target {t} matches nothing")
        for x in hits:
            for op in ops:
                json_patch(where, x, op)
    for doc in docs:
        md = doc.setdefault("metadata", {})
        if "namespace" in k and doc["kind"] != "Namespace":
            md["namespace"] = k["namespace"]
        for lab in k.get("labels", []):
            md.setdefault("labels", {}).update(lab["pairs"])
            if lab.get("includeSelectors"):
                fail(where, "labels with includeSelectors are not understood by the checker")
    for img in k.get("images", []):
        for doc in docs:
            for c in pod_spec(doc).get("containers", []) if pod_spec(doc) else []:
                if c["image"].split(":")[0] == img["name"]:
                    c["image"] = f"{img.get('newName', img['name'])}:{img.get('newTag', 'latest')}"
    return docs


def json_patch(where: str, doc: dict, op: dict):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    node = doc
    try:
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        last = parts[-1]
        if op["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), op["value"])
        elif op["op"] == "add" or (op["op"] == "replace" and last in node):
            node[last] = op["value"]
        else:
            fail(where, f"patch op {op['op']} on {op['path']} is not understood by the checker")
    except (KeyError, IndexError, ValueError, TypeError):
        fail(where, f"patch path {op['path']} does not exist")


def pod_spec(doc):
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    return None


def check_servicemonitor(w: str, sm: dict):
    """No schema ships for the CRD; check what the Prometheus Operator needs of the fields
    used here."""
    allowed_spec = {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels"}
    allowed_ep = {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings", "metricRelabelings", "honorLabels"}
    spec = sm.get("spec", {})
    for f in set(spec) - allowed_spec:
        fail(w, f"spec.{f} is not a ServiceMonitor field this checker knows")
    if not spec.get("selector", {}).get("matchLabels"):
        fail(w, "spec.selector.matchLabels is required")
    for i, ep in enumerate(spec.get("endpoints", [])):
        for f in set(ep) - allowed_ep:
            fail(w, f"spec.endpoints[{i}].{f} is not an endpoint field this checker knows")
        if "interval" in ep and not re.fullmatch(r"\d+(ms|s|m|h)", ep["interval"]):
            fail(w, f"spec.endpoints[{i}].interval {ep['interval']!r} is not a Prometheus duration")
    if not spec.get("endpoints"):
        fail(w, "spec.endpoints is empty")


def check_kubernetes():
    secret_example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    secret_keys = set(secret_example.get("stringData", {})) | set(secret_example.get("data", {}))
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(secret_example, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(rel(K8S / "secret.example.yaml"), f"invalid for Kubernetes {version}: {e.message}")
    for top in (K8S, K8S / "base", K8S / "media-hostnetwork"):
        docs = kustomize(top)
        where = rel(top)
        by_kind: dict = {}
        for doc in docs:
            by_kind.setdefault(doc["kind"], []).append(doc)
            name = f"{where}: {doc['kind']}/{doc['metadata'].get('name')}"
            if doc["kind"] == "ServiceMonitor":
                check_servicemonitor(name, doc)
                continue
            clean = {k: v for k, v in doc.items() if not k.startswith("_")}
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(clean, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    fail(name, f"invalid for Kubernetes {version} at {path}: {e.message}")
                except kubernetes_validate.SchemaNotFoundError:
                    fail(name, f"no Kubernetes {version} schema for {doc['apiVersion']} {doc['kind']}")
        if top != K8S / "base" and "ServiceMonitor" not in by_kind:
            fail(where, "the ServiceMonitor is missing")
        if top == K8S / "base" and "ServiceMonitor" in by_kind:
            fail(where, "base/ must not need the Prometheus Operator's CRD")
        check_k8s_refs(where, by_kind, secret_keys)
        compare_with_kubectl(top, docs)


def compare_with_kubectl(top: Path, docs: list):
    """Where kubectl is installed, its kustomize must render the same objects as the
    checker's renderer (ConfigMap name hashes aside): what was validated is what applies."""
    if not shutil.which("kubectl"):
        return
    r = subprocess.run(["kubectl", "kustomize", str(top)], capture_output=True, text=True)
    if r.returncode != 0:
        fail(rel(top), f"kubectl kustomize failed: {r.stderr.strip()}")
        return
    unhash = lambda text: re.sub(r"(streamedge-config)-[a-z0-9]{10}\b", r"\1", text)
    theirs = [x for x in yaml.safe_load_all(unhash(r.stdout)) if x]
    ours = [{k: v for k, v in d.items() if not k.startswith("_")} for d in docs]
    key = lambda d: (d["kind"], d["metadata"]["name"])
    theirs_by, ours_by = {key(d): d for d in theirs}, {key(d): d for d in ours}
    if set(theirs_by) != set(ours_by):
        fail(rel(top), f"kubectl kustomize renders {sorted(theirs_by)}, the checker {sorted(ours_by)}")
        return
    for k in sorted(ours_by):
        if json.dumps(ours_by[k], sort_keys=True) != json.dumps(theirs_by[k], sort_keys=True):
            fail(rel(top), f"{k[0]}/{k[1]} renders differently in kubectl kustomize and the checker")


def check_k8s_refs(where: str, by_kind: dict, secret_keys: set):
    [dep] = by_kind["Deployment"]
    [svc] = by_kind["Service"]
    w = f"{where}: Deployment/{dep['metadata']['name']}"
    tmpl = dep["spec"]["template"]
    pod_labels = tmpl["metadata"]["labels"]
    spec = tmpl["spec"]
    [c] = spec["containers"]
    cports = {p["name"]: p["containerPort"] for p in c["ports"]}
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    # Environment (over the image's): every config key exists; Secret keys are in
    # secret.example.yaml.
    env = image_env()
    for ef in c.get("envFrom", []):
        cm = configmaps.get(ef.get("configMapRef", {}).get("name"))
        if cm is None:
            fail(w, f"envFrom names a ConfigMap the kustomization does not make: {ef}")
            continue
        for k, v in cm["data"].items():
            check_env(f"{where}: ConfigMap {cm['metadata']['name']}", k, v)
            env[k] = v
    defined = set()
    for e in c.get("env", []):
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "")):
            if ref not in defined:
                fail(w, f"{e['name']} refers to $({ref}), which is not defined before it (Kubernetes would leave it as is)")
        defined.add(e["name"])
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            if ref["name"] != "streamedge-secrets" or ref["key"] not in secret_keys:
                fail(w, f"{e['name']} reads {ref['name']}/{ref['key']}, not a key of secret.example.yaml")
            check_env(w, e["name"], None)
        elif "value" in e:
            # A field reference such as $(POD_IP) stands for an address.
            value = re.sub(r"\$\([A-Za-z_][A-Za-z0-9_]*\)", DUMMY_IP, e["value"])
            check_env(w, e["name"], value)
            env[e["name"]] = value
        else:
            check_env(w, e["name"], None)
    if spec.get("hostNetwork") and effective(env, "media.enabled") is not True:
        fail(w, "hostNetwork is only there for media: media.enabled should be true")
    if effective(env, "media.enabled") is True:
        if not effective(env, "media.public_ips") and not spec.get("hostNetwork"):
            fail(w, "media on Kubernetes needs hostNetwork or media.public_ips (README.md)")
        if not effective(env, "media.udp_port_range"):
            fail(w, "media needs media.udp_port_range (the ports to open)")
    # Probes on the admin listener.
    admin_port = int(str(effective(env, "server.admin_listen")).rsplit(":", 1)[1])
    if cports.get("admin") != admin_port:
        fail(w, f"container port `admin` must be server.admin_listen's port {admin_port}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        g = c.get(probe, {}).get("httpGet", {})
        if g.get("path") != path or g.get("port") not in ("admin", admin_port):
            fail(w, f"{probe} must be GET {path} on the admin port")
    # Draining: preStop sleep, then the node's own shutdown_grace, inside the grace period.
    grace = shutdown_grace(env)
    pre = c.get("lifecycle", {}).get("preStop", {})
    cmd = pre.get("exec", {}).get("command", [])
    sleep = float(cmd[1]) if len(cmd) == 2 and cmd[0] == "sleep" else pre.get("sleep", {}).get("seconds", 0)
    drain_delay = parse_duration(effective(env, "server.drain_delay"))
    if sleep != drain_delay:
        fail(w, f"preStop sleeps {sleep}s; expected server.drain_delay ({drain_delay:.0f}s)")
    tgps = spec.get("terminationGracePeriodSeconds", 30)
    if tgps <= sleep + grace:
        fail(w, f"terminationGracePeriodSeconds {tgps} must exceed preStop ({sleep:.0f}s) + server.shutdown_grace ({grace:.0f}s)")
    # Security context.
    sc = c.get("securityContext", {})
    if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]):
        fail(w, "container securityContext: readOnlyRootFilesystem, no privilege escalation, drop ALL")
    if not spec.get("securityContext", {}).get("runAsNonRoot"):
        fail(w, "pod securityContext: runAsNonRoot")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    if "/var/lib/streamedge" not in mounts:
        fail(w, "/var/lib/streamedge (the image's writable directory) needs a volume under a read-only root")
    # Service → pods → ports; PDB, HPA, ServiceMonitor → their targets.
    if not set(svc["spec"]["selector"].items()) <= set(pod_labels.items()):
        fail(where, "the Service's selector does not select the Deployment's pods")
    for p in svc["spec"]["ports"]:
        if p["targetPort"] not in cports and p["targetPort"] not in cports.values():
            fail(where, f"Service port {p['name']} targets {p['targetPort']}, not a container port")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not set(pdb["spec"]["selector"]["matchLabels"].items()) <= set(pod_labels.items()):
            fail(where, "the PodDisruptionBudget does not select the Deployment's pods")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        t = hpa["spec"]["scaleTargetRef"]
        if (t["kind"], t["name"]) != ("Deployment", dep["metadata"]["name"]):
            fail(where, f"the HorizontalPodAutoscaler targets {t}")
        if not c.get("resources", {}).get("requests", {}).get("cpu"):
            fail(w, "the HorizontalPodAutoscaler scales on CPU: the container needs a CPU request")
    for sm in by_kind.get("ServiceMonitor", []):
        if not set(sm["spec"]["selector"]["matchLabels"].items()) <= set(svc["metadata"].get("labels", {}).items()):
            fail(where, "the ServiceMonitor does not select the Service")
        svc_ports = {p["name"] for p in svc["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in svc_ports or ep.get("path", "/metrics") != "/metrics":
                fail(where, "the ServiceMonitor must scrape /metrics on a named Service port")
        if svc["metadata"]["name"] != "streamedge":
            fail(where, "the alert rules expect job=\"streamedge\": the Service's name")


# --- Dockerfile -----------------------------------------------------------------------------

def dockerfile_instructions(p: Path):
    lines, cur = [], ""
    for line in p.read_text().splitlines():
        if not cur and (line.lstrip().startswith("#") or not line.strip()):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        lines.append((cur + line).strip())
        cur = ""
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]


def dockerignored(path: str, patterns: list) -> bool:
    """Docker's rules, for the plain patterns used here: last match wins, `!` re-includes,
    a pattern matching a directory excludes everything below it."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        pats = [pat] + ([pat[3:]] if pat.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(pre, pt) for pre in prefixes for pt in pats):
            excluded = not neg
    return excluded


def image_env() -> dict:
    """STREAMEDGE_* variables the image sets (ENV of deploy/Dockerfile's last stage)."""
    env = {}
    for op, args in dockerfile_instructions(DEPLOY / "Dockerfile"):
        if op == "FROM":
            env = {}
        elif op == "ENV":
            env.update(re.findall(r"(STREAMEDGE_\w+)=(\S+)", args))
    return env


def check_dockerfile():
    p = DEPLOY / "Dockerfile"
    where = rel(p)
    ins = dockerfile_instructions(p)
    for op, args in ins:
        body = args
        if op == "HEALTHCHECK" and " CMD " in f" {args} ":
            body = args.split("CMD", 1)[1].strip()
        if op in ("CMD", "ENTRYPOINT", "HEALTHCHECK") and body.startswith("["):
            try:
                v = json.loads(body)
                assert isinstance(v, list) and all(isinstance(x, str) for x in v)
            except (json.JSONDecodeError, AssertionError):
                fail(where, f"{op} is not a JSON array of strings: {body}")
    # Build context: what the build copies and what the compiler reads must not be ignored.
    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.strip().startswith("#")]
    needed = {"Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs", "config/default.toml"}
    for op, args in ins:
        if op == "COPY" and "--from" not in args:
            for src in args.split()[:-1]:
                if src != ".":
                    needed.add(src.rstrip("/"))
    for rs in (ROOT / "src").rglob("*.rs"):
        for inc in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', rs.read_text()):
            needed.add(str((rs.parent / inc).resolve().relative_to(ROOT)))
    for n in sorted(needed):
        if not (ROOT / n).exists():
            fail(where, f"the build needs {n}, which does not exist")
        elif dockerignored(n, patterns):
            fail(".dockerignore", f"excludes {n}, which the build needs")
    for n in ("target", ".git", "deploy/compose/.env"):
        if not dockerignored(n, patterns):
            fail(".dockerignore", f"should exclude {n}")
    # The dependency layer: every workspace member's manifest copied, every target cargo
    # must see stubbed (else `cargo build` fails on a missing file before compiling).
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    text = p.read_text()
    for member in cargo["workspace"]["members"]:
        if member == ".":
            continue
        if f"COPY {member}/Cargo.toml {member}/" not in text:
            fail(where, f"the dependency layer must copy {member}/Cargo.toml (workspace member)")
        m = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        for b in m.get("bin", []):
            if f"> {member}/{b['path']}" not in text:
                fail(where, f"the dependency layer must stub {member}/{b['path']}")
        if (ROOT / member / "src/lib.rs").exists() and f"{member}/src/lib.rs" not in text:
            fail(where, f"the dependency layer must stub {member}/src/lib.rs")
    for b in cargo.get("bench", []):
        path = b.get("path", f"benches/{b['name']}.rs")
        if f"> {path}" not in text:
            fail(where, f"the dependency layer must stub {path} ([[bench]] {b['name']})")
    # Environment and exposed ports.
    env = {}
    for op, args in ins:
        if op == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", args):
                check_env(where, k, v)
                env[k] = v
    expose = " ".join(a for op, a in ins if op == "EXPOSE").split()
    r = env.get("STREAMEDGE_MEDIA__UDP_PORT_RANGE")
    if r and f"{r}/udp" not in expose:
        fail(where, f"EXPOSE must list the media range {r}/udp")
    for key in ("server.listen", "server.admin_listen"):
        port = str(effective(env, key)).rsplit(":", 1)[1]
        if f"{port}/tcp" not in expose and port not in expose:
            fail(where, f"EXPOSE must list {key}'s port {port}")
    if effective(env, "persist.local_outbox_dir") != "/var/lib/streamedge/outbox":
        fail(where, "persist.local_outbox_dir must be under /var/lib/streamedge (the writable directory)")


# --- systemd --------------------------------------------------------------------------------

def check_systemd():
    p = DEPLOY / "systemd/streamedge.service"
    where = rel(p)
    env, timeout = {}, None
    for line in p.read_text().splitlines():
        if line.startswith("Environment="):
            k, v = line[len("Environment="):].split("=", 1)
            check_env(where, k, v.replace("%S", "/var/lib"))
            env[k] = v
        elif line.startswith("TimeoutStopSec="):
            timeout = parse_duration(line.split("=", 1)[1] + ("s" if line[-1].isdigit() else ""))
    grace = shutdown_grace(env)
    if timeout is None or timeout <= grace:
        fail(where, f"TimeoutStopSec must exceed server.shutdown_grace ({grace:.0f}s)")
    if "StateDirectory=streamedge" not in p.read_text():
        fail(where, "needs StateDirectory=streamedge (the outbox lives there)")


def main():
    for check in (check_parse, check_compose, check_kubernetes, check_dockerfile, check_systemd):
        try:
            check()
        except Exception as e:  # a malformed file the checks did not expect
            fail(check.__name__, f"{type(e).__name__}: {e}")
    for e in errors:
        print(f"  {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
