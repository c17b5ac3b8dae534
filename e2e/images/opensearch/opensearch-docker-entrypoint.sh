#!/bin/bash
# e2e stand-in for the official image's opensearch-docker-entrypoint.sh (2.x), Apache-2.0,
# Copyright OpenSearch Contributors; adapted:
#  - the only plugin is the security plugin (plugins/opensearch-security, config in
#    config/opensearch-security), handled as the real script does (DISABLE_SECURITY_PLUGIN=true
#    -> -Eplugins.security.disabled=true), except that the demo configuration is not
#    implemented: unless DISABLE_INSTALL_DEMO_CONFIG=true (and a configuration of your own:
#    certificates and plugins.security.* settings, config/opensearch-security/*.yml) it
#    fails where the real image would run install_demo_configuration.sh;
#  - no performance analyzer plugin (nor k-NN, SQL, ...): DISABLE_PERFORMANCE_ANALYZER_AGENT_CLI
#    is accepted and changes nothing;
#  - `exec`s the node (the real script runs it as a child of bash), so SIGTERM reaches it.

# Export OpenSearch Home
export OPENSEARCH_HOME=/usr/share/opensearch
export OPENSEARCH_PATH_CONF=$OPENSEARCH_HOME/config

# As the real script (cgroup statistics inside containers).
export OPENSEARCH_JAVA_OPTS="-Dopensearch.cgroups.hierarchy.override=/ $OPENSEARCH_JAVA_OPTS"

function setupSecurityPlugin {
    SECURITY_PLUGIN="opensearch-security"

    if [ -d "$OPENSEARCH_HOME/plugins/$SECURITY_PLUGIN" ]; then
        if [ "$DISABLE_INSTALL_DEMO_CONFIG" = "true" ]; then
            echo "Disabling execution of install_demo_configuration.sh for OpenSearch Security Plugin"
        else
            # The real script runs tools/install_demo_configuration.sh -y -i -s here (demo
            # certificates, demo users, security settings appended to opensearch.yml).
            echo "ERROR (e2e stand-in): DISABLE_INSTALL_DEMO_CONFIG is not \"true\", but this image does not" \
                "implement the security plugin's demo configuration (install_demo_configuration.sh)." \
                "Set DISABLE_INSTALL_DEMO_CONFIG=true and give a configuration of your own: certificates under" \
                "config/ with the plugins.security.ssl.* settings and the files in config/opensearch-security." \
                "For plain HTTP without authentication set DISABLE_SECURITY_PLUGIN=true as well." >&2
            exit 1
        fi

        if [ "$DISABLE_SECURITY_PLUGIN" = "true" ]; then
            echo "Disabling OpenSearch Security Plugin"
            opensearch_opt="-Eplugins.security.disabled=true"
            opensearch_opts+=("${opensearch_opt}")
        else
            echo "Enabling OpenSearch Security Plugin"
        fi
    else
        echo "OpenSearch Security Plugin does not exist, disable by default"
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
