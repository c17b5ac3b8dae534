#!/bin/bash
# e2e stand-in for the official image's opensearch-docker-entrypoint.sh (2.x), Apache-2.0,
# Copyright OpenSearch Contributors; adapted:
#  - this image has no plugins at all (no security, performance analyzer or k-NN plugin),
#    so DISABLE_SECURITY_PLUGIN / DISABLE_INSTALL_DEMO_CONFIG /
#    DISABLE_PERFORMANCE_ANALYZER_AGENT_CLI are accepted and change nothing: the node always serves plain HTTP without authentication. Where the real image
#    would turn security on (DISABLE_SECURITY_PLUGIN unset or not "true") it says so loudly;
#  - `exec`s the node (the real script runs it as a child of bash), so SIGTERM reaches it.

# Export OpenSearch Home
export OPENSEARCH_HOME=/usr/share/opensearch
export OPENSEARCH_PATH_CONF=$OPENSEARCH_HOME/config

# As the real script (cgroup statistics inside containers).
export OPENSEARCH_JAVA_OPTS="-Dopensearch.cgroups.hierarchy.override=/ $OPENSEARCH_JAVA_OPTS"

function setupSecurityPlugin {
    SECURITY_PLUGIN="opensearch-security"
    if [ -d "$OPENSEARCH_HOME/plugins/$SECURITY_PLUGIN" ]; then
        echo "unexpected: $OPENSEARCH_HOME/plugins/$SECURITY_PLUGIN exists in the e2e stand-in" >&2
        exit 1
    fi
    echo "OpenSearch Security Plugin does not exist, disable by default"
    if [ "$DISABLE_SECURITY_PLUGIN" != "true" ]; then
        echo "WARNING (e2e stand-in): DISABLE_SECURITY_PLUGIN is not \"true\": the official image would" \
            "enable TLS and authentication here; this image has no security plugin and serves plain HTTP." >&2
    fi
}

function runOpensearch {
    # Files created by OpenSearch should always be group writable too
    umask 0002

    if [[ "$(id -u)" == "0" ]]; then
        echo "OpenSearch cannot run as root. Please start your container as another user."
        exit 1
    fi

    # Parse Docker env vars to customize OpenSearch
    #
    # e.g. Setting the env var cluster.name=testcluster
    # will cause OpenSearch to be invoked with -Ecluster.name=testcluster
    opensearch_opts=()
    while IFS='=' read -r envvar_key envvar_value
    do
        # OpenSearch settings need to have at least two dot separated lowercase
        # words, e.g. `cluster.name`, except for `processors` which we handle
        # specially
        if [[ "$envvar_key" =~ ^[a-z0-9_]+\.[a-z0-9_]+ || "$envvar_key" == "processors" ]]; then
            if [[ ! -z $envvar_value ]]; then
            opensearch_opt="-E${envvar_key}=${envvar_value}"
            opensearch_opts+=("${opensearch_opt}")
            fi
        fi
    done < <(env)

    setupSecurityPlugin
    echo "OpenSearch Performance Analyzer Plugin does not exist, disable by default"

    # Start opensearch
    exec "$@" "${opensearch_opts[@]}"
}

# Prepend "opensearch" command if no argument was provided or if the first
# argument looks like a flag (i.e. starts with a dash).
if [ $# -eq 0 ] || [ "${1:0:1}" = '-' ]; then
    set -- opensearch "$@"
fi

if [ "$1" = "opensearch" ]; then
    # If the first argument is opensearch, then run the setup script.
    runOpensearch "$@"
else
    # Otherwise, just exec the command.
    exec "$@"
fi
