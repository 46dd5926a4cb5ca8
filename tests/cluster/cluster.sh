#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the end-to-end tests, and by hand:
#   cluster.sh build        build etcd, kube-apiserver, kube-controller-manager and kubectl
#                           (tests/cluster/go.mod pins the release; Go's caches make a rebuild quick)
#   cluster.sh up DIR       start them on free loopback ports; DIR/kubeconfig is cluster-admin
#   cluster.sh down DIR     stop every process `up` started (by PID) and remove DIR
#   cluster.sh compact DIR  compact etcd's history to now (older watches then get 410 Gone)
#   cluster.sh restart-apiserver DIR
#                           kill kube-apiserver (as a crash would: a graceful stop keeps serving
#                           open watches for a minute) and start it again: every watch is cut,
#                           and its watch cache starts afresh
# No scheduler and no kubelet: Pods stay Pending, which is all admission needs; the controller
# manager turns Deployments, Jobs and CronJobs into Pods.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${CLUSTER_BIN:-$root/target/cluster/bin}
commands=(etcd kube-apiserver kube-controller-manager kubectl)
# The machine's Go: no toolchain download (go.mod asks for 1.26.0 or later).
export GOTOOLCHAIN=local

build() {
  local missing=0
  for c in "${commands[@]}"; do [ -x "$bin/$c" ] || missing=1; done
  # A build of another release (go.mod changed) is a missing one.
  [ "$(cat "$bin/version" 2>/dev/null)" = "$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)" ] || missing=1
  [ "${1:-}" = "--if-missing" ] && [ "$missing" = 0 ] && return 0
  mkdir -p "$bin"
  # The release go.mod pins, stamped in as Kubernetes' own build does (hack/lib/version.sh), so
  # that `kubectl version` shows it.
  local version major minor flags="" pkg
  version=$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
  major=${version#v}; major=${major%%.*}
  minor=${version#v*.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean"
  done
  # No VCS stamp: a clone may not be a git checkout Go can read.
  (cd "$here" && go build -buildvcs=false -ldflags "$flags" -o "$bin/" \
    ./etcd k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
  echo "$version" > "$bin/version"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A certificate signed by the run's CA: name, subject, and extensions (SANs, usage).
sign() {
  local name=$1 subject=$2 ext=$3
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subject" \
    -out "$pki/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" > "$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 2 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
}

kubeconfig() {
  local file=$1 user=$2
  cat > "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: local
  context: {cluster: local, user: $user}
current-context: local
EOF
}

# Starts a process in the background with its log in DIR/logs and its PID in DIR/pids.
start() {
  local name=$1
  shift
  setsid "$@" > "$dir/logs/$name.log" 2>&1 < /dev/null &
  echo "$! $name" >> "$dir/pids"
}

wait_for() {
  local what=$1 tries=$2
  shift 2
  for _ in $(seq "$tries"); do
    if "$@" > /dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "cluster.sh: $what did not come up; its log is in $dir/logs" >&2
  return 1
}

up() {
  dir=$1
  build --if-missing
  mkdir -p "$dir/logs" "$dir/pki" "$dir/etcd"
  dir=$(cd "$dir" && pwd)
  pki=$dir/pki
  : > "$dir/pids"
  local etcd_port etcd_peer api_port
  etcd_port=$(free_port)
  etcd_peer=$(free_port)
  api_port=$(free_port)
  echo "$api_port" > "$dir/port"

  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -days 2 -subj "/CN=image-mirror-webhook-test-ca" 2>/dev/null
  sign apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
  sign admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
  sign controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
  # The API server's client certificate for webhooks that ask for one (--client-ca-file).
  sign webhook-client "/CN=kube-apiserver-webhook-client" "extendedKeyUsage=clientAuth"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  kubeconfig "$dir/kubeconfig" admin
  kubeconfig "$dir/controller-manager.kubeconfig" controller-manager
  # Every webhook is sent this client certificate (`*`: any host and port).
  cat > "$dir/webhook-client.kubeconfig" <<EOF
apiVersion: v1
kind: Config
users:
- name: '*'
  user:
    client-certificate: $pki/webhook-client.crt
    client-key: $pki/webhook-client.key
EOF
  cat > "$dir/admission.yaml" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $dir/webhook-client.kubeconfig
EOF

  start etcd "$bin/etcd" --data-dir "$dir/etcd" \
    --listen-client-url "http://127.0.0.1:$etcd_port" --listen-peer-url "http://127.0.0.1:$etcd_peer"
  echo "$etcd_port" > "$dir/etcd-port"
  wait_for etcd 60 curl -sf "http://127.0.0.1:$etcd_port/health"

  # Loopback only: the kubernetes Service's endpoints cannot be a loopback address, so its
  # reconciler is off (nothing here needs it).
  apiserver=("$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --endpoint-reconciler-type none \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,MutatingAdmissionPolicy,ValidatingAdmissionPolicy \
    --admission-control-config-file "$dir/admission.yaml" \
    --allow-privileged \
    --profiling=false)
  printf '%q ' "${apiserver[@]}" > "$dir/kube-apiserver.command"
  start kube-apiserver "${apiserver[@]}"
  wait_for kube-apiserver 240 "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz

  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 \
    --leader-elect=false \
    --use-service-account-credentials \
    --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" \
    --controllers '*'
  # The default ServiceAccount, which admission needs for every Pod, comes from the controller manager.
  wait_for "the default ServiceAccount" 120 "$bin/kubectl" --kubeconfig "$dir/kubeconfig" \
    -n default get serviceaccount default
  echo "cluster up: kubectl --kubeconfig $dir/kubeconfig"
}

compact() {
  dir=$(cd "$1" && pwd)
  "$bin/etcd" compact "http://127.0.0.1:$(cat "$dir/etcd-port")"
}

restart_apiserver() {
  dir=$(cd "$1" && pwd)
  local pid
  pid=$(awk '$2 == "kube-apiserver" {p = $1} END {print p}' "$dir/pids")
  kill -9 "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  eval "start kube-apiserver $(cat "$dir/kube-apiserver.command")"
  wait_for kube-apiserver 240 "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz
}

down() {
  dir=$1
  if [ -f "$dir/pids" ]; then
    # Newest first: the controller manager, the API server, then etcd.
    tac "$dir/pids" | while read -r pid _; do
      kill "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
      alive=0
      while read -r pid _; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$dir/pids"
      [ "$alive" = 0 ] && break
      sleep 0.2
    done
    while read -r pid _; do kill -9 "$pid" 2>/dev/null || true; done < "$dir/pids"
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  build) build ;;
  up) [ -n "${2:-}" ] || { echo "usage: cluster.sh up DIR" >&2; exit 2; }; up "$2" ;;
  down) [ -n "${2:-}" ] || { echo "usage: cluster.sh down DIR" >&2; exit 2; }; down "$2" ;;
  compact) [ -n "${2:-}" ] || { echo "usage: cluster.sh compact DIR" >&2; exit 2; }; compact "$2" ;;
  restart-apiserver)
    [ -n "${2:-}" ] || { echo "usage: cluster.sh restart-apiserver DIR" >&2; exit 2; }
    restart_apiserver "$2" ;;
  *) echo "usage: cluster.sh build | up DIR | down DIR | compact DIR | restart-apiserver DIR" >&2; exit 2 ;;
esac
