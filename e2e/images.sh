#!/usr/bin/env bash
# Builds every container image the tests use, on a machine that can reach the package
# registries but no image registry:
#
#   e2e/images.sh [all]      base stand-ins, the project's images, the managed services' images
#   e2e/images.sh base       only the base-image stand-ins
#   e2e/images.sh project    datapipeline-operator:dev and pipeline-runtime:dev (needs base)
#   e2e/images.sh services   Kafka, OpenSearch, MinIO and mc stand-ins (needs base)
#   e2e/images.sh docker-up | docker-down   start / stop a Docker engine of our own
#   e2e/images.sh load-node  import the images the real-pod tests run into the real node's
#                            containerd (NODE_CONTAINERD_SOCK, from `e2e/services.sh env`)
#   e2e/images.sh list       the images and their sizes
#   e2e/images.sh fresh-build  README's first command in a fresh Debian chroot with only
#                            README's prerequisites (no Docker needed)
#
# The project's Dockerfiles keep their real FROM lines (rust:1-bookworm,
# gcr.io/distroless/cc-debian12:nonroot). Those images cannot be pulled here, so this
# script makes local stand-ins under the same tags, with the same content as far as
# Debian's packages allow (see stand-in notes below); a user with registry access pulls the
# real ones and never runs the `base` step.
#
# Stand-ins (tag: what it is made of):
#   debian:bookworm                        debootstrap --variant=minbase bookworm
#   rust:1-bookworm                        debian:bookworm + buildpack-deps:bookworm's package
#                                          list + the host's rustup toolchain (no docs, clippy
#                                          or rustfmt: the real image has the minimal profile)
#   gcr.io/distroless/cc-debian12:nonroot  the files of distroless's package list (base-files,
#                                          netbase, tzdata, libc6, libssl3, libgcc-s1, libgomp1,
#                                          libstdc++6, gcc-12-base) + CA bundle, passwd, group,
#                                          nsswitch.conf, /tmp; no shell, no zlib, no apt
# The Docker engine: Debian's docker.io (20.10) when no engine runs; BuildKit through
# DOCKER_BUILDKIT=1 with the 20.10 client when no buildx plugin is there.
#
# Caches: root filesystems as tarballs under $DATAPIPELINE_CACHE/images/ (keyed by a
# recipe version); image layers and the cargo cache mounts of the builds live in Docker's
# own store (/var/lib/docker), so a later run of the same machine rebuilds only what changed.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$E2E_DIR")
DP_CACHE=${DATAPIPELINE_CACHE:-$HOME/.cache/datapipeline}
DP_RUN=${DATAPIPELINE_RUN:-/tmp/datapipeline-services}
IMAGE_CACHE=$DP_CACHE/images
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Bumped whenever a stand-in's recipe changes, so cached root filesystems are rebuilt.
STANDIN_RECIPE=2
STANDIN_LABEL=datapipeline.e2e/stand-in

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# ------------------------------------------------------------------ docker engine

DOCKERD_DIR=$DP_RUN/docker
DOCKERD_PID=$DOCKERD_DIR/dockerd.pid
DOCKERD_LOG=$DOCKERD_DIR/dockerd.log

# shellcheck source=e2e/images/docker-client.sh
source "$E2E_DIR/images/docker-client.sh"

docker_ready() { "${DOCKER[@]}" info >/dev/null 2>&1; }

docker_up() {
  docker_ready && return 0
  command -v dockerd >/dev/null || die "no Docker engine: install Debian's docker.io (e2e/install-prerequisites.sh does)"
  mkdir -p "$DOCKERD_DIR"
  local args=(--pidfile "$DOCKERD_PID") missing
  # Privileged containers (kind's nodes) need a runc that leaves out the capabilities
  # this machine's root does not have (see e2e/images/runc-capfilter).
  missing=$("$E2E_DIR/images/runc-capfilter" --print-missing | tr '\n' ' ')
  if [[ -n $missing ]]; then
    log "this root lacks ${missing% }: containers run through e2e/images/runc-capfilter"
    args+=(--add-runtime "dp-runc=$E2E_DIR/images/runc-capfilter" --default-runtime dp-runc)
  fi
  log "starting dockerd (log: $DOCKERD_LOG)"
  setsid dockerd "${args[@]}" </dev/null >>"$DOCKERD_LOG" 2>&1 &
  disown $! 2>/dev/null || true
  local i
  for ((i = 0; i < 120; i++)); do
    docker_ready && return 0
    sleep 0.5
  done
  tail -n 40 "$DOCKERD_LOG" >&2
  die "dockerd did not answer in 60 s"
}

# Stops only an engine this script started (its pid file), never a user's.
docker_down() {
  [[ -s $DOCKERD_PID ]] || return 0
  local pid
  pid=$(<"$DOCKERD_PID")
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 150; i++)); do
    [[ -e /proc/$pid ]] || break
    sleep 0.2
  done
  rm -f "$DOCKERD_PID"
}

image_exists() { "${DOCKER[@]}" image inspect "$1" >/dev/null 2>&1; }

# A stand-in is current when it carries our label with the current recipe version.
standin_current() {
  [[ $("${DOCKER[@]}" image inspect -f "{{ index .Config.Labels \"$STANDIN_LABEL\" }}" "$1" 2>/dev/null) == "recipe-$STANDIN_RECIPE" ]]
}

# cached_tar NAME FUNCTION: $IMAGE_CACHE/NAME-rRECIPE.tar, made by FUNCTION ROOTFS_DIR once.
cached_tar() {
  local name=$1 fn=$2 tar work
  tar=$IMAGE_CACHE/$name-r$STANDIN_RECIPE.tar
  if [[ ! -s $tar ]]; then
    mkdir -p "$IMAGE_CACHE"
    work=$(mktemp -d "$IMAGE_CACHE/.work-$name.XXXXXX")
    log "building root filesystem $name"
    local t0=$SECONDS
    # stdout is the caller's result (the path): the recipe's output goes to stderr.
    "$fn" "$work/rootfs" >&2
    tar --numeric-owner -C "$work/rootfs" -cf "$work/rootfs.tar" .
    mv "$work/rootfs.tar" "$tar"
    rm -rf "$work"
    log "root filesystem $name: $((SECONDS - t0)) s, $(du -h "$tar" | cut -f1)"
  fi
  printf '%s' "$tar"
}

# import_tar TAR TAG CHANGE...: docker import with Dockerfile-style config changes.
import_tar() {
  local tar=$1 tag=$2
  shift 2
  local args=(--change "LABEL $STANDIN_LABEL=recipe-$STANDIN_RECIPE")
  local c
  for c in "$@"; do args+=(--change "$c"); done
  "${DOCKER[@]}" import "${args[@]}" "$tar" "$tag" >/dev/null
  log "imported $tag"
}

# ------------------------------------------------------------------ base stand-ins

# In a chroot: proc and a resolver, so apt-get works; always undone.
with_chroot() {
  local root=$1
  shift
  mount -t proc proc "$root/proc"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  local rc=0
  chroot "$root" "$@" || rc=$?
  umount "$root/proc" || umount -l "$root/proc"
  : >"$root/etc/resolv.conf"
  return "$rc"
}

rootfs_debian() {
  local root=$1
  debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >/dev/null
  # The official image's sources (deb822): bookworm, bookworm-updates and
  # bookworm-security, so an `apt-get install` in a Dockerfile gets the security updates
  # a user's build would get.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $DEBIAN_SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  # The official image is rebuilt with the updates released since the point release.
  with_chroot "$root" apt-get update -qq
  with_chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -qq -y upgrade >/dev/null
  # Like the official image: no apt lists or caches left behind.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
}

# buildpack-deps:bookworm is debian:bookworm plus these three package lists (curl, scm and
# the full image); rust:1-bookworm adds rustup's minimal toolchain in /usr/local.
BUILDPACK_CURL=(ca-certificates curl gnupg netbase sq wget)
BUILDPACK_SCM=(git git-lfs mercurial openssh-client subversion procps)
BUILDPACK_DEPS=(autoconf automake bzip2 dpkg-dev file g++ gcc imagemagick libbz2-dev libc6-dev
  libcurl4-openssl-dev libdb-dev libevent-dev libffi-dev libgdbm-dev libglib2.0-dev libgmp-dev
  libjpeg-dev libkrb5-dev liblzma-dev libmagickcore-dev libmagickwand-dev libmaxminddb-dev
  libncurses5-dev libncursesw5-dev libpng-dev libpq-dev libreadline-dev libsqlite3-dev
  libssl-dev libtool libwebp-dev libxml2-dev libxslt-dev libyaml-dev make patch unzip xz-utils
  zlib1g-dev default-libmysqlclient-dev)

# The Rust toolchain the host's rustup has (README's prerequisite), laid out as the
# official image lays it out: RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo.
install_host_toolchain() {
  local root=$1 toolchain
  toolchain=$(rustup default | awk '{print $1}')
  [[ -n $toolchain ]] || die "no default rustup toolchain on this machine"
  local src=${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$toolchain
  src=$(readlink -f "$src")
  mkdir -p "$root/usr/local/rustup/toolchains/$toolchain" "$root/usr/local/cargo/bin"
  tar -C "$src" --exclude=./share/doc --exclude=./share/zsh --exclude='./bin/*clippy*' \
    --exclude='./bin/*fmt*' --exclude=./bin/rust-analyzer -cf - . |
    tar -C "$root/usr/local/rustup/toolchains/$toolchain" -xf -
  cp "$(readlink -f "$(command -v rustup)")" "$root/usr/local/cargo/bin/rustup"
  local proxy
  for proxy in cargo rustc rustdoc rust-gdb rust-gdbgui rust-lldb; do
    ln -sf rustup "$root/usr/local/cargo/bin/$proxy"
  done
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$toolchain" \
    >"$root/usr/local/rustup/settings.toml"
  chmod -R a+w "$root/usr/local/rustup" "$root/usr/local/cargo"
}

rootfs_rust_builder() {
  local root=$1 debian_tar
  debian_tar=$(cached_tar debian-bookworm rootfs_debian)
  mkdir -p "$root"
  tar -C "$root" -xf "$debian_tar"
  with_chroot "$root" apt-get update -qq
  local pkgs=()
  # One apt-cache call per package inside one chroot: `sq` is not in bookworm.
  # shellcheck disable=SC2016 # expanded by the chroot's bash
  mapfile -t pkgs < <(with_chroot "$root" bash -c \
    'for p; do apt-cache show "$p" >/dev/null 2>&1 && echo "$p" || echo "skip $p" >&2; done' _ \
    "${BUILDPACK_CURL[@]}" "${BUILDPACK_SCM[@]}" "${BUILDPACK_DEPS[@]}")
  with_chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  add_site_cas "$root"
  install_host_toolchain "$root"
}

# This machine's own TLS trust anchors (a site CA in /usr/local/share/ca-certificates, as
# behind an inspecting proxy): without them cargo in a chroot or container cannot reach
# crates.io here. A user's real rust image needs the same only behind such a proxy.
add_site_cas() {
  local root=$1
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    with_chroot "$root" update-ca-certificates >/dev/null
  fi
}

# README's first command on a fresh Debian: a chroot of the debian:bookworm root filesystem
# with only what README's Prerequisites install (its apt-get line, as written, plus the
# host's rustup toolchain standing in for rustup's installer), a copy of HEAD's files (no
# build caches), and the command read from README.md, so the check follows the text.
# ca-certificates is in every Debian system but not in the minbase root filesystem.
# Not part of e2e/test.sh: a cold release build takes ~20 min on two cores.
fresh_build() {
  local debian_tar work root apt_line command
  apt_line=$(grep -o 'apt-get install build-essential[a-z0-9 -]*' "$REPO_DIR/README.md" | head -1)
  command=$(grep -m1 '^cargo run --release -p pipeline-runtime -- generate' "$REPO_DIR/README.md")
  [[ -n $apt_line && -n $command ]] || die "README.md no longer has the apt-get line or the first command"
  debian_tar=$(cached_tar debian-bookworm rootfs_debian)
  work=$(mktemp -d "$IMAGE_CACHE/.fresh.XXXXXX")
  # shellcheck disable=SC2064 # expand now: the trap must remove this run's directory
  trap "rm -rf '$work'" EXIT
  root=$work/rootfs
  mkdir -p "$root"
  tar -C "$root" -xf "$debian_tar"
  with_chroot "$root" apt-get update -qq
  with_chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates >/dev/null
  add_site_cas "$root"
  log "fresh Debian: $apt_line"
  # shellcheck disable=SC2086 # the README's words, split as a shell would
  with_chroot "$root" env DEBIAN_FRONTEND=noninteractive ${apt_line/install/install -y -qq} >/dev/null
  install_host_toolchain "$root"
  mkdir -p "$root/src"
  git -C "$REPO_DIR" archive HEAD | tar -C "$root/src" -xf -
  log "fresh Debian: $command"
  local t0=$SECONDS
  with_chroot "$root" env -i HOME=/root TERM=dumb RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -euo pipefail -c "cd /src && $command"
  log "fresh Debian: README's first command passed in $((SECONDS - t0)) s"
}

DISTROLESS_DEBS=(base-files netbase tzdata ca-certificates libc6 libssl3 libgcc-s1 libgomp1 libstdc++6 gcc-12-base)

rootfs_distroless_cc() {
  local root=$1 debs
  debs=$(mktemp -d)
  (cd "$debs" && apt-get download -qq "${DISTROLESS_DEBS[@]}" >/dev/null)
  mkdir -p "$root"
  # usr-merged like distroless (bin, lib, sbin are links into usr/).
  mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/usr/sbin" "$root/usr/lib64"
  ln -s usr/bin "$root/bin"
  ln -s usr/lib "$root/lib"
  ln -s usr/lib64 "$root/lib64"
  ln -s usr/sbin "$root/sbin"
  local deb
  for deb in "$debs"/*.deb; do
    # Through the usr-merge links, as dpkg would install them.
    dpkg-deb --fsys-tarfile "$deb" | tar -C "$root" -x --keep-directory-symlink
  done
  rm -rf "$debs"
  # The CA bundle distroless generates from ca-certificates' certificates.
  mkdir -p "$root/etc/ssl/certs"
  find "$root/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z | xargs -0 cat >"$root/etc/ssl/certs/ca-certificates.crt"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  printf 'hosts: files dns\nnetworks: files\npasswd: files\ngroup: files\n' >"$root/etc/nsswitch.conf"
  mkdir -p "$root/tmp" "$root/root" "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  chmod 700 "$root/root" "$root/home/nonroot"
  chown 65532:65532 "$root/home/nonroot"
  # Docs and man pages are not in distroless.
  rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian"
}

build_base() {
  docker_up
  local tar
  if ! standin_current debian:bookworm; then
    tar=$(cached_tar debian-bookworm rootfs_debian)
    import_tar "$tar" debian:bookworm 'CMD ["bash"]'
  fi
  if ! standin_current rust:1-bookworm; then
    tar=$(cached_tar rust-1-bookworm rootfs_rust_builder)
    import_tar "$tar" rust:1-bookworm \
      'ENV RUSTUP_HOME=/usr/local/rustup' 'ENV CARGO_HOME=/usr/local/cargo' \
      'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      'CMD ["bash"]'
  fi
  if ! standin_current gcr.io/distroless/cc-debian12:nonroot; then
    tar=$(cached_tar distroless-cc-debian12 rootfs_distroless_cc)
    import_tar "$tar" gcr.io/distroless/cc-debian12:nonroot \
      'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
      'USER 65532' 'WORKDIR /home/nonroot'
  fi
}

# ------------------------------------------------------------------ the project's images

build_project() {
  docker_up
  local spec file tag t0
  for spec in operator.Dockerfile=datapipeline-operator:dev runtime.Dockerfile=pipeline-runtime:dev; do
    file=${spec%%=*}
    tag=${spec#*=}
    t0=$SECONDS
    log "building $tag from docker/$file"
    (cd "$REPO_DIR" && "${DOCKER[@]}" build --progress=plain -f "docker/$file" -t "$tag" .) \
      >"$DP_RUN/docker/build-${tag%%:*}.log" 2>&1 || {
      tail -n 60 "$DP_RUN/docker/build-${tag%%:*}.log" >&2
      die "docker build of $tag failed (log: $DP_RUN/docker/build-${tag%%:*}.log)"
    }
    log "built $tag in $((SECONDS - t0)) s"
    # Each starts: the binary runs on its base image (a missing library fails here).
    "${DOCKER[@]}" run --rm "$tag" --help >/dev/null || die "$tag does not start"
  done
}

build_services() {
  docker_up
  "$E2E_DIR/images/services.sh"
}

# What the real-pod tests run: the project's images, the services' stand-ins, and
# debian:bookworm (the "broken runtime image" case).
NODE_IMAGES=(datapipeline-operator:dev pipeline-runtime:dev debian:bookworm)

load_node() {
  docker_up
  local sock=${NODE_CONTAINERD_SOCK:-}
  [[ -n $sock ]] || sock=$(sed -n 's/.*NODE_CONTAINERD_SOCK=\([^ ]*\).*/\1/p' < <("$E2E_DIR/services.sh" env))
  [[ -S $sock ]] || die "no containerd socket of the real node ($sock): e2e/services.sh up node"
  local images=("${NODE_IMAGES[@]}") i
  mapfile -t -O "${#images[@]}" images < <("${DOCKER[@]}" image ls --format '{{.Repository}}:{{.Tag}}' | grep '^e2e.local/')
  local t0=$SECONDS
  # One archive for all: layers shared between images are imported once.
  "${DOCKER[@]}" save "${images[@]}" | ctr -a "$sock" -n k8s.io images import - >/dev/null
  for i in "${images[@]}"; do log "loaded $i into the node"; done
  log "loaded ${#images[@]} images in $((SECONDS - t0)) s"
}

list_images() {
  "${DOCKER[@]}" image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' |
    grep -E '^(debian:bookworm|rust:1-bookworm|gcr.io/distroless|datapipeline-operator|pipeline-runtime|e2e.local/)' || true
}

main() {
  mkdir -p "$DP_RUN/docker"
  case ${1:-all} in
  all)
    build_base
    build_project
    build_services
    list_images
    ;;
  base) build_base ;;
  project) build_project ;;
  services) build_services ;;
  load-node) load_node ;;
  docker-up) docker_up ;;
  docker-down) docker_down ;;
  list) list_images ;;
  fresh-build) fresh_build ;;
  *) die "unknown command ${1}; see the header of $0" ;;
  esac
}

main "$@"
