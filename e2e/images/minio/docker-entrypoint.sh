#!/bin/sh
# e2e stand-in for quay.io/minio/minio's /usr/bin/docker-entrypoint.sh: prepends `minio`
# to the arguments unless they already start with it (the real script also switches user
# through MINIO_USERNAME/MINIO_GROUPNAME, which this image does not implement).
if [ "${1:-}" != "minio" ] && [ -n "${1:-}" ]; then
  set -- minio "$@"
fi
exec "$@"
