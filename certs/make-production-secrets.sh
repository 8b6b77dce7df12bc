#!/usr/bin/env bash
# Print, as YAML, the Secrets that manifests/overlays/production expects. Nothing is sent anywhere:
#
#   certs/make-production-secrets.sh > ccr-secrets.yaml      # keep this file out of git
#   kubectl apply -f ccr-secrets.yaml
#
# Passwords and keys are generated unless given in the environment: CCR_PULL_PASSWORD,
# CCR_PUSH_PASSWORD, CCR_S3_ACCESS_KEY, CCR_S3_SECRET_KEY, CCR_HTTP_SECRET, CCR_PEER_SECRET. The
# pull account's name and password (for the nodes' containerd) go to standard error.
#
# The CCR's certificate names every address a node dials: the Service's DNS names and its ClusterIP
# (containerd dials the ClusterIP the node agent writes in hosts.toml, and checks it against the
# certificate's IP SANs). The ClusterIP is read from the Service `ccr` (apply the overlay first; its
# Pods wait for these Secrets), or given as CCR_CLUSTER_IP.
#
# ccr-htpasswd holds both accounts for the registry of the ccr Pods, behind the CCR front: nodes log
# in with the pull account (the front passes it through), the front commits with the push account.
# ccr-webhook-credentials holds one docker config.json (key config.json): the push account under
# the CCR push endpoint's host:port and under 127.0.0.1:5002 (the front's own registry), the pull
# account under the CCR front's (the warmer reads cold images through the front), plus the `auths`
# of UPSTREAM_DOCKER_CONFIG, a docker config.json of yours with the upstream accounts, if you set it
# (docs/configuration.md).
# ccr-node-pull (namespace ccr-nodes) holds a docker config.json with the pull account under the CCR
# front's host:port, which the node agent writes into each node's hosts.toml (an Authorization header
# for the front only), and the upstream accounts, which its fallback uses while the CCR is down; the
# ConfigMap ccr-ca (namespace ccr-nodes) holds the CCR's CA certificate, which the agent gives to nodes.
# ccr-front-peers holds what the CCR replicas share as peers: the secret a peer request must carry, and
# a CA of the peers' own with one certificate it issued (peers check the chain, not the name: Pod IPs
# change). The CA's key is not printed: it stays out of the cluster.
# Needs: python3 with this checkout's dependencies and bcrypt (pip install -e '.[test]'), and kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."

namespace=${NAMESPACE:-ccr-system}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

random() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
htpasswd_line() {
  python3 -c 'import sys, bcrypt; print(sys.argv[1] + ":" + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt()).decode())' "$1" "$2"
}
secret() { kubectl create secret "$@" --namespace "$namespace" --dry-run=client -o yaml; echo "---"; }

pull_password=${CCR_PULL_PASSWORD:-$(random)}
push_password=${CCR_PUSH_PASSWORD:-$(random)}
s3_access_key=${CCR_S3_ACCESS_KEY:-ccr-$(python3 -c 'import secrets; print(secrets.token_hex(6))')}
s3_secret_key=${CCR_S3_SECRET_KEY:-$(random)}
http_secret=${CCR_HTTP_SECRET:-$(random)}
peer_secret=${CCR_PEER_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}

cluster_ip=${CCR_CLUSTER_IP:-$(kubectl --namespace "$namespace" get service ccr -o 'jsonpath={.spec.clusterIP}' 2>/dev/null || true)}
if [[ -z "$cluster_ip" || "$cluster_ip" == None ]]; then
  echo "error: no ClusterIP for Service $namespace/ccr: apply manifests/overlays/production first (its Pods wait for" \
       "these Secrets), or set CCR_CLUSTER_IP; nodes dial that address and the certificate must name it" >&2
  exit 2
fi

# One certificate for both sides of the CCR (every form of both Service names, and the ClusterIP nodes
# dial), from a CA of its own: the node agent gives this CA to every node (docs/install.md).
push_names=(--ip "$cluster_ip")
for name in ccr-push "ccr-push.$namespace" "ccr-push.$namespace.svc" "ccr-push.$namespace.svc.cluster.local"; do
  push_names+=(--dns "$name")
done
PYTHONPATH=. python3 -m webhook.cli certs generate --out "$work/tls" --service ccr --namespace "$namespace" "${push_names[@]}" --days 825 >&2
PYTHONPATH=. python3 -m webhook.cli certs generate --out "$work/peers" --service ccr-front-peer --namespace "$namespace" --days 825 >&2

htpasswd_line ccr-pull "$pull_password" > "$work/pull-htpasswd"
htpasswd_line ccr-push "$push_password" > "$work/push-htpasswd"
cat "$work/pull-htpasswd" "$work/push-htpasswd" > "$work/ccr-htpasswd"
# The docker config.json ccr-webhook reads: keyed by the host:port of ccr.endpoint in
# overlays/production (https://ccr-push.<namespace>.svc:5000, and http://127.0.0.1:5002 in the front's
# container), and of ccr.registry (the front).
PUSH_PASSWORD="$push_password" PULL_PASSWORD="$pull_password" python3 - "$work/config.json" \
  "ccr-push.$namespace.svc:5000" "ccr.$namespace.svc:5000" "${UPSTREAM_DOCKER_CONFIG:-}" <<'EOF'
import base64, json, os, sys
out, push_host, front_host, upstream = sys.argv[1:]
auths = {}
if upstream:
    with open(upstream, encoding="utf-8") as handle:
        auths = json.load(handle).get("auths") or {}
    for key, entry in auths.items():
        if not isinstance(entry, dict) or not (entry.get("auth") or entry.get("identitytoken") or entry.get("password")):
            print(f"warning: {upstream}: {key} holds no inline credentials (a credential helper?); ccr-webhook cannot use it",
                  file=sys.stderr)
for host, user, password in ((push_host, "ccr-push", os.environ["PUSH_PASSWORD"]),
                             ("127.0.0.1:5002", "ccr-push", os.environ["PUSH_PASSWORD"]),
                             (front_host, "ccr-pull", os.environ["PULL_PASSWORD"])):
    auths[host] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
with open(out, "w", encoding="utf-8") as handle:
    json.dump({"auths": auths}, handle, indent=2)
nodes = {key: entry for key, entry in auths.items() if key not in (push_host, "127.0.0.1:5002")}
with open(out + ".pull", "w", encoding="utf-8") as handle:  # never the push account
    json.dump({"auths": nodes}, handle, indent=2)
EOF

secret generic ccr-registry-tls --type kubernetes.io/tls \
  --from-file=tls.crt="$work/tls/tls.crt" --from-file=tls.key="$work/tls/tls.key" --from-file=ca.crt="$work/tls/ca.crt"
secret generic ccr-htpasswd --from-file=htpasswd="$work/ccr-htpasswd"
secret generic ccr-push-htpasswd --from-file=htpasswd="$work/push-htpasswd"
secret generic ccr-registry --from-literal=http-secret="$http_secret"
secret generic ccr-s3 --from-literal=accesskey="$s3_access_key" --from-literal=secretkey="$s3_secret_key"
secret generic ccr-webhook-credentials --from-file=config.json="$work/config.json"
namespace=ccr-nodes secret generic ccr-node-pull --from-file=config.json="$work/config.json.pull"
kubectl create configmap ccr-ca --namespace ccr-nodes --from-file=ca.crt="$work/tls/ca.crt" --dry-run=client -o yaml
echo "---"
secret generic ccr-front-peers --from-literal=secret="$peer_secret" \
  --from-file=ca.crt="$work/peers/ca.crt" --from-file=tls.crt="$work/peers/tls.crt" --from-file=tls.key="$work/peers/tls.key"

echo "pull account for the nodes: ccr-pull / $pull_password (the node agent gives it to containerd: Secret ccr-node-pull)" >&2
echo "certificate for the CCR's names and ClusterIP $cluster_ip; the node agent gives its CA to every node" >&2
